//! One retrieval index (entry texts, their classes and sources, unit vectors, an optional
//! HNSW graph) and the exact scoring of queries against it.

use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ann::Ann;

/// Where an index entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntrySource {
    /// The ISCO reference: a unit group's title, an example occupation, a task.
    Reference,
    /// A past record's title or duty clause, with the code it was most often given.
    Record,
    /// A reviewer's correction.
    Correction,
}

impl EntrySource {
    /// The name used in tables and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EntrySource::Reference => "reference",
            EntrySource::Record => "record",
            EntrySource::Correction => "correction",
        }
    }
}

impl std::fmt::Display for EntrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One index: unit vectors with their class.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// Entry texts (normalised).
    pub texts: Vec<String>,
    /// Class index of each entry (into the model's labels).
    pub class: Vec<u32>,
    /// Where each entry came from.
    pub source: Vec<EntrySource>,
    /// `[entries, dim]` row-major, L2-normalised; empty while an HNSW graph holds them (see
    /// [`Index::vector`] and [`Index::detach_graph`]), so a large index is kept once.
    pub vectors: Vec<f32>,
    /// The HNSW graph over the vectors when the index is searched approximately (see
    /// [`Retrieval::prepare_search`]).
    pub ann: Option<std::sync::Arc<Ann>>,
    /// The vectors as the `[dim, entries]` matrix exact search multiplies by, built on first
    /// use and kept while the vectors stay the same.
    pub keys: KeyMatrix,
}

/// The key matrix of an exact search, kept between searches: building it copies and
/// transposes every vector of the index, which for one query costs far more than the search
/// itself. It is rebuilt when the vectors it was built from change (another allocation or
/// length); a clone of the index starts without one.
#[derive(Default)]
pub struct KeyMatrix(std::sync::Mutex<Option<(usize, usize, Tensor<2>)>>);

impl Clone for KeyMatrix {
    fn clone(&self) -> Self {
        KeyMatrix::default()
    }
}

impl std::fmt::Debug for KeyMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMatrix")
    }
}

impl KeyMatrix {
    /// The `[dim, entries]` matrix of `vectors` (`[entries, dim]`).
    fn get(&self, vectors: &[f32], entries: usize, dim: usize) -> Tensor<2> {
        let id = (vectors.as_ptr() as usize, vectors.len());
        let mut slot = self.0.lock().expect("key matrix");
        if let Some((ptr, len, t)) = slot.as_ref()
            && (*ptr, *len) == id
        {
            return t.clone();
        }
        let mut transposed = vec![0f32; vectors.len()];
        for (e, row) in vectors.chunks(dim).enumerate() {
            for (d, &x) in row.iter().enumerate() {
                transposed[d * entries + e] = x;
            }
        }
        let t = Tensor::<2>::from_data(
            TensorData::new(transposed, [dim, entries]),
            &crate::model::device(),
        );
        *slot = Some((id.0, id.1, t.clone()));
        t
    }
}

impl Index {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.class.len()
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.class.is_empty()
    }

    /// The vector of entry `i`, from `vectors` or from the graph holding them.
    pub fn vector(&self, i: usize) -> &[f32] {
        match &self.ann {
            Some(ann) if self.vectors.is_empty() => ann.vector(i),
            _ => {
                let d = self.vectors.len() / self.len().max(1);
                &self.vectors[i * d..(i + 1) * d]
            }
        }
    }

    /// Drops the HNSW graph, moving the vectors it holds back into `vectors`; call before
    /// changing the entries ([`Retrieval::prepare_search`] builds a new graph).
    pub fn detach_graph(&mut self) {
        if let Some(ann) = self.ann.take()
            && self.vectors.is_empty()
        {
            self.vectors = (0..self.len())
                .flat_map(|i| ann.vector(i).iter().copied())
                .collect();
        }
    }

    /// The nearest entries of each query `[queries, dim]` as `(entry, cosine)`, best first,
    /// at most `k` per query (and at most the graph's `candidates` when it has one).
    pub(crate) fn nearest(&self, queries: &[f32], dim: usize, k: usize) -> Vec<Vec<(u32, f32)>> {
        if let Some(ann) = &self.ann {
            let mut out = ann.search(queries);
            out.iter_mut().for_each(|v| v.truncate(k));
            return out;
        }
        let mut out = Vec::with_capacity(queries.len() / dim.max(1));
        exact_sims(queries, self, dim, |sims, n| {
            let part: Vec<Vec<(u32, f32)>> = sims
                .par_chunks(n)
                .map(|s| {
                    crate::rank::top_k(s, k)
                        .into_iter()
                        .map(|j| (j as u32, s[j]))
                        .collect()
                })
                .collect();
            out.extend(part);
        });
        out
    }
}

/// Exact cosines of queries against every entry, chunk by chunk of queries (one burn matmul
/// each): `f(sims [m, entries], entries)` per chunk, in query order.
fn exact_sims(queries: &[f32], index: &Index, dim: usize, mut f: impl FnMut(&[f32], usize)) {
    let n = index.len();
    if queries.is_empty() || n == 0 {
        return;
    }
    if queries.len() / dim <= FEW_QUERIES {
        // A handful of queries (the service codes one record at a time): one pass over the
        // entries, a dot product each. A matrix product would first pack the whole key
        // matrix, which costs more than the search itself at this size.
        // Each entry is read once for all the queries: the scan is bound by memory.
        let qs: Vec<&[f32]> = queries.chunks(dim).collect();
        let m = qs.len();
        let by_entry: Vec<f32> = index
            .vectors
            .par_chunks(dim)
            .with_min_len(1024)
            .flat_map_iter(|e| qs.iter().map(move |q| crate::ann::dot(e, q)))
            .collect();
        let mut sims = vec![0f32; m * n];
        for (e, row) in by_entry.chunks(m).enumerate() {
            for (q, &v) in row.iter().enumerate() {
                sims[q * n + e] = v;
            }
        }
        f(&sims, n);
        return;
    }
    let device = crate::model::device();
    let keys = index.keys.get(&index.vectors, n, dim);
    let rows_per = (64 * 1024 * 1024 / (n * 4)).clamp(16, 4096);
    for chunk in queries.chunks(rows_per * dim) {
        let m = chunk.len() / dim;
        let sims = Tensor::<2>::from_data(TensorData::new(chunk.to_vec(), [m, dim]), &device)
            .matmul(keys.clone())
            .into_data()
            .try_to_vec::<f32>()
            .expect("float similarities");
        f(&sims, n);
    }
}

/// Queries searched by dot products rather than a matrix product.
const FEW_QUERIES: usize = 4;

/// Splits a normalised model text (`title | duties`) into its title and duties.
pub fn split_text(text: &str) -> (&str, &str) {
    match text.split_once('|') {
        Some((t, d)) => (t.trim(), d.trim()),
        None => (text.trim(), ""),
    }
}

/// Best cosine per class `[queries, classes]` (−1 where a class has no entry). With an HNSW
/// graph, the best among the nearest entries it returns; a class with entries but none among
/// them gets the lowest cosine returned, which bounds its true best from above when the graph
/// found the true nearest entries (see [`crate::ann`]).
pub fn class_max(queries: &[f32], index: &Index, dim: usize, classes: usize) -> Vec<f32> {
    let q = queries.len() / dim.max(1);
    let mut out = vec![-1f32; q * classes];
    if q == 0 || index.is_empty() {
        return out;
    }
    if let Some(ann) = &index.ann {
        let mut has_entry = vec![false; classes];
        index
            .class
            .iter()
            .for_each(|&c| has_entry[c as usize] = true);
        out.par_chunks_mut(classes)
            .zip(ann.search(queries))
            .for_each(|(o, hits)| {
                if let Some(&(_, floor)) = hits.last() {
                    for (o, &h) in o.iter_mut().zip(&has_entry) {
                        if h {
                            *o = floor;
                        }
                    }
                }
                for (e, v) in hits {
                    let c = index.class[e as usize] as usize;
                    if v > o[c] {
                        o[c] = v;
                    }
                }
            });
        return out;
    }
    let mut done = 0;
    exact_sims(queries, index, dim, |sims, n| {
        let m = sims.len() / n;
        out[done * classes..(done + m) * classes]
            .par_chunks_mut(classes)
            .zip(sims.par_chunks(n))
            .for_each(|(o, s)| {
                for (j, &v) in s.iter().enumerate() {
                    let c = index.class[j] as usize;
                    if v > o[c] {
                        o[c] = v;
                    }
                }
            });
        done += m;
    });
    out
}

/// Per text, the mean of its clauses' class scores (`scores` `[clauses, classes]`, `owner`
/// the text of each clause); −1 for a text without clauses.
pub(crate) fn clause_means(
    scores: &[f32],
    owner: &[usize],
    has: &[bool],
    classes: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; has.len() * classes];
    let mut count = vec![0u32; has.len()];
    for (k, &i) in owner.iter().enumerate() {
        count[i] += 1;
        let o = &mut out[i * classes..(i + 1) * classes];
        for (o, s) in o.iter_mut().zip(&scores[k * classes..(k + 1) * classes]) {
            *o += s;
        }
    }
    for (i, o) in out.chunks_mut(classes).enumerate() {
        if count[i] == 0 {
            o.fill(-1.0);
        } else {
            let n = count[i] as f32;
            o.iter_mut().for_each(|v| *v /= n);
        }
    }
    out
}
