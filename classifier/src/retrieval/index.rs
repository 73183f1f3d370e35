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
        f.pad(self.as_str())
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
/// itself. Its columns are the entries grouped by class (each class's entries side by side,
/// in index order within the class), so the best cosine per class is a maximum over a
/// contiguous run of a row rather than a scattered update per entry. It is rebuilt when the
/// vectors or classes it was built from change (another allocation or length); a clone of the
/// index starts without one.
#[derive(Default)]
pub struct KeyMatrix(std::sync::Mutex<Option<std::sync::Arc<Keys>>>);

/// A built key matrix and how its columns map to the index's entries.
struct Keys {
    /// What it was built from: the vectors' and classes' addresses and lengths.
    built_from: [usize; 4],
    /// `[dim, entries]`, columns grouped by class.
    matrix: Tensor<2>,
    /// The entry of each column.
    entry: Vec<u32>,
    /// `(class, first column, end column)` of each class with entries, in column order.
    runs: Vec<(u32, usize, usize)>,
}

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
    /// The key matrix of `index` (its vectors are `[entries, dim]`).
    fn get(&self, index: &Index, dim: usize) -> std::sync::Arc<Keys> {
        let (vectors, class) = (&index.vectors, &index.class);
        let built_from = [
            vectors.as_ptr() as usize,
            vectors.len(),
            class.as_ptr() as usize,
            class.len(),
        ];
        let mut slot = self.0.lock().expect("key matrix");
        if let Some(keys) = slot.as_ref()
            && keys.built_from == built_from
        {
            return keys.clone();
        }
        let entries = class.len();
        let mut entry: Vec<u32> = (0..entries as u32).collect();
        // Stable: within a class the entries keep their index order.
        entry.sort_by_key(|&e| class[e as usize]);
        let mut runs: Vec<(u32, usize, usize)> = Vec::new();
        for (j, &e) in entry.iter().enumerate() {
            let c = class[e as usize];
            match runs.last_mut() {
                Some((last, _, end)) if *last == c => *end = j + 1,
                _ => runs.push((c, j, j + 1)),
            }
        }
        let mut transposed = vec![0f32; vectors.len()];
        for (j, &e) in entry.iter().enumerate() {
            let row = &vectors[e as usize * dim..(e as usize + 1) * dim];
            for (d, &x) in row.iter().enumerate() {
                transposed[d * entries + j] = x;
            }
        }
        let matrix = Tensor::<2>::from_data(
            TensorData::new(transposed, [dim, entries]),
            &crate::model::device(),
        );
        let keys = std::sync::Arc::new(Keys {
            built_from,
            matrix,
            entry,
            runs,
        });
        *slot = Some(keys.clone());
        keys
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
        exact_sims(queries, self, dim, |sims, n, columns| {
            let part: Vec<Vec<(u32, f32)>> = sims
                .par_chunks(n)
                .map_init(Vec::new, |by_entry, s| {
                    // Back in entry order first, so that ties go to the lower entry as
                    // they always have, whatever order the columns are in.
                    let s = columns.in_entry_order(s, by_entry);
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

/// Which entry each column of a block of similarities is.
enum Columns<'a> {
    /// Column `j` is entry `j`.
    Entries,
    /// The columns of a [`KeyMatrix`], grouped by class.
    Keys(&'a Keys),
}

impl Columns<'_> {
    /// One row of similarities in entry order (`buf` holds it when the columns are not).
    fn in_entry_order<'s>(&self, row: &'s [f32], buf: &'s mut Vec<f32>) -> &'s [f32] {
        match self {
            Columns::Entries => row,
            Columns::Keys(k) => {
                buf.resize(row.len(), 0.0);
                for (&e, &v) in k.entry.iter().zip(row) {
                    buf[e as usize] = v;
                }
                buf
            }
        }
    }
}

/// Exact cosines of queries against every entry, chunk by chunk of queries (one burn matmul
/// each): `f(sims [m, entries], entries, columns)` per chunk, in query order.
fn exact_sims(
    queries: &[f32],
    index: &Index,
    dim: usize,
    mut f: impl FnMut(&[f32], usize, Columns<'_>),
) {
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
        f(&sims, n, Columns::Entries);
        return;
    }
    let device = crate::model::device();
    let keys = index.keys.get(index, dim);
    let rows_per = (64 * 1024 * 1024 / (n * 4)).clamp(16, 4096);
    for chunk in queries.chunks(rows_per * dim) {
        let m = chunk.len() / dim;
        let sims = Tensor::<2>::from_data(TensorData::new(chunk.to_vec(), [m, dim]), &device)
            .matmul(keys.matrix.clone())
            .into_data();
        // Read in place: a copy of a block this size costs as much as scanning it.
        f(
            sims.as_slice::<f32>().expect("float similarities"),
            n,
            Columns::Keys(&keys),
        );
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

/// The title of a normalised model text that is a title alone (no duties).
pub fn bare_title(text: &str) -> Option<&str> {
    let (title, duties) = split_text(text);
    (duties.is_empty() && !title.is_empty()).then_some(title)
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
    exact_sims(queries, index, dim, |sims, n, columns| {
        let m = sims.len() / n;
        out[done * classes..(done + m) * classes]
            .par_chunks_mut(classes)
            .zip(sims.par_chunks(n))
            .for_each(|(o, s)| match columns {
                Columns::Entries => {
                    for (j, &v) in s.iter().enumerate() {
                        let c = index.class[j] as usize;
                        if v > o[c] {
                            o[c] = v;
                        }
                    }
                }
                Columns::Keys(keys) => {
                    for &(c, from, to) in &keys.runs {
                        let best = max_of(&s[from..to]);
                        if best > o[c as usize] {
                            o[c as usize] = best;
                        }
                    }
                }
            });
        done += m;
    });
    out
}

/// The largest value of a non-empty slice, in lanes the compiler vectorises (a plain fold
/// over `f32::max` stays scalar: its order of operations is fixed).
fn max_of(s: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut blocks = s.chunks_exact(LANES);
    for b in &mut blocks {
        for (a, &v) in acc.iter_mut().zip(b) {
            *a = if v > *a { v } else { *a };
        }
    }
    let mut best = blocks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
    for a in acc {
        if a > best {
            best = a;
        }
    }
    best
}

/// Per text, the mean of its clauses' class scores: `scores` `[distinct clauses, classes]`,
/// for clause `k` its row `row[k]` and its text `owner[k]`; −1 for a text without clauses.
pub(crate) fn clause_means(
    scores: &[f32],
    row: &[usize],
    owner: &[usize],
    has: &[bool],
    classes: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; has.len() * classes];
    let mut count = vec![0u32; has.len()];
    for (&r, &i) in row.iter().zip(owner) {
        count[i] += 1;
        let o = &mut out[i * classes..(i + 1) * classes];
        for (o, s) in o.iter_mut().zip(&scores[r * classes..(r + 1) * classes]) {
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
