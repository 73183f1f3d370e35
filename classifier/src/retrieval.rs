//! The `retrieval` (bi-encoder) scorer and the `ensemble` that mixes it with the ngram model
//! (design `5-bi-cross-encoder.md`, first stage).
//!
//! A pretrained sentence encoder embeds two indexes:
//!
//! | index | entries | queried with |
//! |---|---|---|
//! | titles | ISCO unit titles, the "examples of occupations classified here", and each distinct title of the training records (with its most frequent code) | the record's title |
//! | duties | the definitions' lead sentences and task lists, and each distinct clause of the training records' duties (with its most frequent code) | each clause of the record's duties |
//!
//! A class scores the best cosine of its entries in each index (exact matrix search, chunked
//! through burn's matmul; an index with more than `exact_search_limit` entries is searched
//! through an HNSW graph instead, see [`crate::ann`]); for the duties, the
//! mean over the record's clauses (its `;`-separated tasks, see [`crate::text::clauses`]) of
//! each clause's best cosine, since records list tasks the way the index holds them, one by
//! one. The two scores mix with
//! `title_weight` (a record without duties uses the title score alone) and become retrieval
//! probabilities with a softmax at `temperature`. The ensemble is
//! `p = (1 - weight) * p_base + weight * p_retrieval`, where `p_base` is the ngram model's
//! probabilities, or — when the ensemble also has a fine-tuned transformer —
//! `(1 - transformer_weight) * p_ngram + transformer_weight * p_transformer`; its log is what
//! the usual calibration (temperature + isotonic) is fitted on, so grades and fallback work
//! unchanged. `transformer_weight`, then `title_weight`, `temperature` and `weight` are fitted
//! on the validation split.
//!
//! Vectors are cached by a hash of their text ([`EmbeddingCache`]), saved with the model and
//! reused by the next training run or fine-tune with the same encoder, so only new texts are
//! embedded.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ann::{Ann, SearchConfig};
use crate::encoder::{ENCODER_FILES, Encoder};
use crate::error::Error;

/// One index: unit vectors with their class.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// Entry texts (normalised).
    pub texts: Vec<String>,
    /// Class index of each entry (into the model's labels).
    pub class: Vec<u32>,
    /// Where each entry came from: `reference` or `record`.
    pub source: Vec<String>,
    /// `[entries, dim]` row-major, L2-normalised; empty while an HNSW graph holds them (see
    /// [`Index::vector`] and [`Index::detach_graph`]), so a large index is kept once.
    pub vectors: Vec<f32>,
    /// The HNSW graph over the vectors when the index is searched approximately (see
    /// [`Retrieval::prepare_search`]).
    pub ann: Option<std::sync::Arc<Ann>>,
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
    fn nearest(&self, queries: &[f32], dim: usize, k: usize) -> Vec<Vec<(u32, f32)>> {
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
                    crate::predict::top_k(s, k)
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
    let device = crate::model::device();
    let keys = Tensor::<2>::from_data(TensorData::new(index.vectors.clone(), [n, dim]), &device)
        .transpose();
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

/// Fitted mixing parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Weight of the title score against the duties score.
    pub title_weight: f32,
    /// Softmax temperature of the retrieval scores.
    pub temperature: f32,
    /// Weight of retrieval in the ensemble (0: ngram only).
    pub weight: f32,
    /// Weight of a fine-tuned transformer against the ngram model in the base the retrieval
    /// is mixed into (0: none).
    #[serde(default)]
    pub transformer_weight: f32,
}

/// `retrieval/index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexMeta {
    dim: usize,
    max_seq_length: usize,
    encoder_fingerprint: String,
    mix: Mix,
    cache_file: String,
    titles: Vec<(String, u32, String)>,
    duties: Vec<(String, u32, String)>,
    /// Absent in models from before approximate search: the defaults.
    #[serde(default)]
    search: SearchConfig,
}

/// Cached sentence vectors keyed by a hash of the text (and the encoder).
#[derive(Debug, Clone, Default)]
pub struct EmbeddingCache {
    /// Width of the vectors.
    pub dim: usize,
    map: HashMap<[u8; 16], Vec<f32>>,
    /// A shared on-disk cache consulted before embedding (see [`DiskCache`]).
    disk: Option<std::sync::Arc<DiskCache>>,
    /// Keys embedded here since the last [`flush`](Self::flush), for the disk cache.
    added: Vec<[u8; 16]>,
}

fn key(text: &str) -> [u8; 16] {
    let h = blake3::hash(text.as_bytes());
    h.as_bytes()[..16].try_into().expect("16 bytes")
}

impl EmbeddingCache {
    /// An empty cache.
    pub fn new(dim: usize) -> Self {
        EmbeddingCache {
            dim,
            ..Default::default()
        }
    }

    /// Consults (and, on [`flush`](Self::flush), feeds) a shared on-disk cache.
    pub fn attach(&mut self, disk: std::sync::Arc<DiskCache>) {
        if disk.dim == self.dim {
            self.disk = Some(disk);
        }
    }

    /// Writes the vectors embedded since the last flush to the attached disk cache, so other
    /// stages (and later runs) with the same encoder find them. Returns how many.
    pub fn flush(&mut self) -> Result<usize, Error> {
        let Some(disk) = &self.disk else {
            return Ok(0);
        };
        let added = std::mem::take(&mut self.added);
        let rows: Vec<(&[u8; 16], &[f32])> = added
            .iter()
            .filter_map(|k| self.map.get(k).map(|v| (k, v.as_slice())))
            .collect();
        disk.write(&rows)?;
        Ok(rows.len())
    }

    /// Number of cached vectors.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Vectors `[texts, dim]` for texts, embedding (once per distinct text) only those not
    /// cached. Returns the vectors and how many texts were embedded.
    pub fn embed(
        &mut self,
        enc: &Encoder,
        texts: &[String],
        progress: &dyn Fn(usize, usize),
    ) -> Result<(Vec<f32>, usize), Error> {
        let mut missing: Vec<&str> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for t in texts {
            let k = key(t);
            if !self.map.contains_key(&k) && seen.insert(k) {
                match self.disk.as_ref().and_then(|d| d.get(&k)) {
                    Some(v) => {
                        self.map.insert(k, v);
                    }
                    None => missing.push(t),
                }
            }
        }
        let n = missing.len();
        if n > 0 {
            let v = enc.embed(&missing, 64, true, &|done| progress(done, n))?;
            for (t, row) in missing.iter().zip(v.chunks(self.dim)) {
                let k = key(t);
                self.map.insert(k, row.to_vec());
                if self.disk.is_some() {
                    self.added.push(k);
                }
            }
        }
        let mut out = Vec::with_capacity(texts.len() * self.dim);
        for t in texts {
            out.extend_from_slice(&self.map[&key(t)]);
        }
        Ok((out, n))
    }

    /// Writes the cache (`[16-byte key][dim f32]` records).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let mut keys: Vec<&[u8; 16]> = self.map.keys().collect();
        keys.sort();
        let mut bytes = Vec::with_capacity(8 + keys.len() * (16 + 4 * self.dim));
        bytes.extend_from_slice(&(self.dim as u64).to_le_bytes());
        for k in keys {
            bytes.extend_from_slice(k);
            for x in &self.map[k] {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        std::fs::write(path, bytes).map_err(|e| io(path, e))
    }

    /// Reads a cache written by [`save`](Self::save); `None` if absent or of another width.
    pub fn load(path: &Path, dim: usize) -> Option<EmbeddingCache> {
        let bytes = std::fs::read(path).ok()?;
        let d = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
        if d != dim {
            return None;
        }
        let rec = 16 + 4 * dim;
        let mut map = HashMap::new();
        for r in bytes[8..].chunks_exact(rec) {
            let k: [u8; 16] = r[..16].try_into().ok()?;
            let v = r[16..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            map.insert(k, v);
        }
        Some(EmbeddingCache {
            dim,
            map,
            ..Default::default()
        })
    }

    /// Merges another cache into this one.
    pub fn extend(&mut self, other: EmbeddingCache) {
        if other.dim == self.dim {
            self.map.extend(other.map);
        }
    }
}

/// Sentence vectors shared on disk by every stage that uses the same encoder (one directory
/// per encoder fingerprint, e.g. `<store>/shared/embeddings/<fingerprint>/`): `evaluate`,
/// `promote` and `predict` of an ensemble embed a test or input row once, not once per stage
/// and model. Entries are keyed by a hash of the text, so results are the same with or without
/// the cache, and no stage key depends on it; deleting the directory only costs time.
///
/// The directory holds immutable segments (`<hash>.seg`: dim, count, the keys, then the
/// vectors), written atomically; opening reads only the keys, and vectors are read on demand.
/// Past [`MAX_SEGMENTS`] the segments are merged into one (open readers keep their file
/// handles, so a merge under them is safe).
#[derive(Debug)]
pub struct DiskCache {
    dir: std::path::PathBuf,
    dim: usize,
    files: Vec<std::fs::File>,
    /// key -> (segment, byte offset of its vector).
    index: HashMap<[u8; 16], (usize, u64)>,
}

/// Segments kept before they are merged.
pub const MAX_SEGMENTS: usize = 16;

impl DiskCache {
    /// Opens (creating) a cache directory for vectors of width `dim`. Unreadable or foreign
    /// segments are skipped.
    pub fn open(dir: &Path, dim: usize) -> Result<DiskCache, Error> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut cache = DiskCache {
            dir: dir.to_path_buf(),
            dim,
            files: Vec::new(),
            index: HashMap::new(),
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        paths.sort();
        for p in &paths {
            cache.add_segment(p);
        }
        if paths.len() > MAX_SEGMENTS {
            cache.compact(&paths)?;
        }
        Ok(cache)
    }

    /// Number of vectors on disk.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn add_segment(&mut self, path: &Path) -> Option<()> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).ok()?;
        let mut head = [0u8; 16];
        f.read_exact(&mut head).ok()?;
        let dim = u64::from_le_bytes(head[..8].try_into().ok()?) as usize;
        let n = u64::from_le_bytes(head[8..].try_into().ok()?) as usize;
        if dim != self.dim {
            return None;
        }
        let mut keys = vec![0u8; n * 16];
        f.read_exact(&mut keys).ok()?;
        let seg = self.files.len();
        let base = 16 + 16 * n as u64;
        for (i, k) in keys.chunks_exact(16).enumerate() {
            let k: [u8; 16] = k.try_into().ok()?;
            self.index.insert(k, (seg, base + (i * dim * 4) as u64));
        }
        self.files.push(f);
        Some(())
    }

    /// The vector of a key, if on disk.
    pub fn get(&self, k: &[u8; 16]) -> Option<Vec<f32>> {
        use std::os::unix::fs::FileExt;
        let &(seg, off) = self.index.get(k)?;
        let mut buf = vec![0u8; self.dim * 4];
        self.files[seg].read_exact_at(&mut buf, off).ok()?;
        Some(
            buf.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        )
    }

    /// Writes one segment with these vectors (atomically: a temporary file, then a rename)
    /// and returns its path (`None` when there is nothing to write).
    pub fn write(&self, rows: &[(&[u8; 16], &[f32])]) -> Result<Option<std::path::PathBuf>, Error> {
        if rows.is_empty() {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(16 + rows.len() * (16 + 4 * self.dim));
        bytes.extend_from_slice(&(self.dim as u64).to_le_bytes());
        bytes.extend_from_slice(&(rows.len() as u64).to_le_bytes());
        for (k, _) in rows {
            bytes.extend_from_slice(&k[..]);
        }
        for (_, v) in rows {
            for x in *v {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        let name = blake3::hash(&bytes).to_hex();
        let path = self.dir.join(format!("{}.seg", &name[..32]));
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", &name[..32], std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        Ok(Some(path))
    }

    /// Merges every segment into one and removes the old ones.
    fn compact(&self, paths: &[std::path::PathBuf]) -> Result<(), Error> {
        let mut keys: Vec<&[u8; 16]> = self.index.keys().collect();
        keys.sort();
        let vectors: Vec<Vec<f32>> = keys.iter().filter_map(|k| self.get(k)).collect();
        if vectors.len() != keys.len() {
            return Ok(()); // a segment could not be read back; leave things as they are
        }
        let rows: Vec<(&[u8; 16], &[f32])> = keys
            .into_iter()
            .zip(&vectors)
            .map(|(k, v)| (k, v.as_slice()))
            .collect();
        let merged = self.write(&rows)?;
        for p in paths.iter().filter(|p| Some(*p) != merged.as_ref()) {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

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
fn clause_means(scores: &[f32], owner: &[usize], has: &[bool], classes: usize) -> Vec<f32> {
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

/// An index entry near a query (see [`Retrieval::similar`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    /// The entry's normalised text.
    pub text: String,
    /// Its class (index into the model's labels).
    pub class: u32,
    /// `record` (a past record's title) or `reference` (the ISCO reference).
    pub source: String,
    /// Cosine similarity to the query.
    pub similarity: f32,
}

/// The retrieval half of an ensemble model: encoder, both indexes and the mixing weights.
pub struct Retrieval {
    /// The encoder.
    pub encoder: Encoder,
    /// Title index.
    pub titles: Index,
    /// Duties index.
    pub duties: Index,
    /// Mixing parameters.
    pub mix: Mix,
    /// Vectors of texts seen so far (index entries and past queries).
    pub cache: std::sync::Mutex<EmbeddingCache>,
    /// File name of the saved cache (it carries the encoder's fingerprint).
    pub cache_file: String,
    /// When the indexes are searched through an HNSW graph.
    pub search: SearchConfig,
}

/// Class scores of both channels for normalised texts: `(title [q, c], duties [q, c], has_duties)`.
pub struct Scores {
    /// Best title cosine per class.
    pub title: Vec<f32>,
    /// Best duties cosine per class.
    pub duties: Vec<f32>,
    /// Whether each text has duties.
    pub has_duties: Vec<bool>,
    /// Classes.
    pub classes: usize,
}

impl Scores {
    /// Retrieval probabilities `[q, c]` under a mix.
    pub fn probabilities(&self, mix: &Mix) -> Vec<f32> {
        let c = self.classes;
        let mut out = vec![0f32; self.title.len()];
        out.par_chunks_mut(c).enumerate().for_each(|(i, o)| {
            let a = if self.has_duties[i] {
                mix.title_weight
            } else {
                1.0
            };
            let t = &self.title[i * c..(i + 1) * c];
            let d = &self.duties[i * c..(i + 1) * c];
            let mut m = f32::NEG_INFINITY;
            for k in 0..c {
                o[k] = (a * t[k] + (1.0 - a) * d[k]) / mix.temperature;
                m = m.max(o[k]);
            }
            let mut s = 0f32;
            for v in o.iter_mut() {
                *v = (*v - m).exp();
                s += *v;
            }
            o.iter_mut().for_each(|v| *v /= s);
        });
        out
    }
}

impl Retrieval {
    /// Scores normalised texts against both indexes. The duties are queried clause by clause
    /// (see [`crate::text::clauses`]): a class's duties score is the mean over the clauses of
    /// its best cosine to each, so a record whose duties list several tasks is matched task by
    /// task, as the index holds them.
    pub fn scores(&self, texts: &[String], classes: usize) -> Result<Scores, Error> {
        let d = self.encoder.dim();
        let mut titles = Vec::with_capacity(texts.len());
        let mut clause_texts = Vec::new();
        let mut owner = Vec::new();
        let mut has_duties = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            let (ti, du) = split_text(t);
            titles.push(ti.to_string());
            let before = owner.len();
            for c in crate::text::clauses(du) {
                clause_texts.push(c.to_string());
                owner.push(i);
            }
            has_duties.push(owner.len() > before);
        }
        let mut cache = self.cache.lock().expect("embedding cache");
        let (tv, _) = cache.embed(&self.encoder, &titles, &|_, _| {})?;
        let (cv, _) = cache.embed(&self.encoder, &clause_texts, &|_, _| {})?;
        // Keep the cache from growing without bound in a long-running service (vectors
        // embedded so far go to the disk cache first, when one is attached).
        if cache.len() > 200_000 {
            cache.flush()?;
            cache.map.clear();
        }
        drop(cache);
        let title = class_max(&tv, &self.titles, d, classes);
        let csc = class_max(&cv, &self.duties, d, classes);
        Ok(Scores {
            title,
            duties: clause_means(&csc, &owner, &has_duties, classes),
            has_duties,
            classes,
        })
    }

    /// Attaches the shared disk cache for this model's encoder under `root` (one directory
    /// per encoder fingerprint; see [`DiskCache`]). Returns how many vectors it holds.
    pub fn attach_shared_cache(&self, root: &Path) -> Result<usize, Error> {
        let name = self
            .cache_file
            .trim_start_matches("cache-")
            .trim_end_matches(".bin");
        let disk = DiskCache::open(&root.join(name), self.encoder.dim())?;
        let n = disk.len();
        self.cache
            .lock()
            .expect("embedding cache")
            .attach(std::sync::Arc::new(disk));
        Ok(n)
    }

    /// Writes the vectors embedded since the last flush to the attached disk cache.
    pub fn flush_shared_cache(&self) -> Result<usize, Error> {
        self.cache.lock().expect("embedding cache").flush()
    }

    /// The `k` title-index entries nearest to each text's title — past records' titles with
    /// the code they were most often given, and the reference's titles — for reviewers
    /// ("similar past records"). Per text, best first.
    pub fn similar(&self, texts: &[String], k: usize) -> Result<Vec<Vec<Neighbour>>, Error> {
        if texts.is_empty() || self.titles.is_empty() || k == 0 {
            return Ok(vec![Vec::new(); texts.len()]);
        }
        let titles: Vec<String> = texts.iter().map(|t| split_text(t).0.to_string()).collect();
        let (qv, _) = self.cache.lock().expect("embedding cache").embed(
            &self.encoder,
            &titles,
            &|_, _| {},
        )?;
        let ix = &self.titles;
        Ok(ix
            .nearest(&qv, self.encoder.dim(), k)
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|(j, similarity)| Neighbour {
                        text: ix.texts[j as usize].clone(),
                        class: ix.class[j as usize],
                        source: ix.source[j as usize].clone(),
                        similarity,
                    })
                    .collect()
            })
            .collect())
    }

    /// Builds (or drops) each index's HNSW graph as [`Self::search`] says for its size; call
    /// after the indexes change. Returns the seconds it took.
    pub fn prepare_search(&mut self) -> f64 {
        let started = std::time::Instant::now();
        let d = self.encoder.dim();
        let cfg = self.search;
        for ix in [&mut self.titles, &mut self.duties] {
            ix.detach_graph();
            if cfg.approximate(ix.len()) {
                ix.ann = Some(std::sync::Arc::new(Ann::build(&ix.vectors, d, &cfg, 42)));
                // The graph keeps the vectors; one copy is enough.
                ix.vectors = Vec::new();
            }
        }
        started.elapsed().as_secs_f64()
    }

    /// The ensemble's uncalibrated logits (log of the mixed probabilities) of normalised
    /// texts, given the base probabilities of the same texts (the ngram model's, or its mix
    /// with a transformer, see [`mix_probabilities`]).
    pub fn ensemble_logits(
        &self,
        p_base: &[f32],
        texts: &[String],
        classes: usize,
    ) -> Result<Vec<f32>, Error> {
        let s = self.scores(texts, classes)?;
        Ok(mix_log(
            p_base,
            &s.probabilities(&self.mix),
            self.mix.weight,
        ))
    }

    /// Writes `dir/retrieval/`: the encoder files, `index.json`, `index.bin` and the cache.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        let r = dir.join("retrieval");
        let enc_dir = r.join("encoder");
        std::fs::create_dir_all(enc_dir.join("1_Pooling")).map_err(|e| io(&enc_dir, e))?;
        for f in ENCODER_FILES
            .iter()
            .chain(&["1_Pooling/config.json", "sentence_bert_config.json"])
        {
            let from = self.encoder.dir.join(f);
            if from.is_file() {
                let to = enc_dir.join(f);
                // Hard link when possible: the weights are large and never modified.
                if std::fs::hard_link(&from, &to).is_err() {
                    std::fs::copy(&from, &to).map_err(|e| io(&to, e))?;
                }
            }
        }
        let entries = |ix: &Index| -> Vec<(String, u32, String)> {
            ix.texts
                .iter()
                .zip(&ix.class)
                .zip(&ix.source)
                .map(|((t, c), s)| (t.clone(), *c, s.clone()))
                .collect()
        };
        let meta = IndexMeta {
            dim: self.encoder.dim(),
            max_seq_length: self.encoder.max_seq_length,
            encoder_fingerprint: self.encoder.fingerprint()?,
            mix: self.mix,
            cache_file: self.cache_file.clone(),
            titles: entries(&self.titles),
            duties: entries(&self.duties),
            search: self.search,
        };
        let p = r.join("index.json");
        std::fs::write(&p, serde_json::to_vec(&meta).expect("index serialises"))
            .map_err(|e| io(&p, e))?;
        let p = r.join("index.bin");
        let bytes: Vec<u8> = [&self.titles, &self.duties]
            .into_iter()
            .flat_map(|ix| (0..ix.len()).flat_map(|i| ix.vector(i)))
            .flat_map(|x| x.to_le_bytes())
            .collect();
        std::fs::write(&p, bytes).map_err(|e| io(&p, e))?;
        for (name, ix) in [("titles", &self.titles), ("duties", &self.duties)] {
            if let Some(ann) = &ix.ann {
                ann.save(&r.join(format!("ann-{name}.cbor")))?;
            }
        }
        self.cache
            .lock()
            .expect("embedding cache")
            .save(&r.join(&self.cache_file))
    }

    /// Whether a model directory has a retrieval part.
    pub fn present(dir: &Path) -> bool {
        dir.join("retrieval").join("index.json").is_file()
    }

    /// Reads `dir/retrieval/`.
    pub fn load(dir: &Path) -> Result<Retrieval, Error> {
        let r = dir.join("retrieval");
        let p = r.join("index.json");
        let meta: IndexMeta = serde_json::from_slice(&std::fs::read(&p).map_err(|e| io(&p, e))?)
            .map_err(|e| Error::File {
                path: p.clone(),
                message: format!("is not a retrieval index ({e}); retrain the model"),
            })?;
        let encoder = Encoder::load(&r.join("encoder"), meta.max_seq_length)?;
        let d = meta.dim;
        if encoder.dim() != d {
            return Err(Error::File {
                path: p,
                message: format!(
                    "says vectors have {d} dimensions but the encoder gives {}",
                    encoder.dim()
                ),
            });
        }
        let bp = r.join("index.bin");
        let bytes = std::fs::read(&bp).map_err(|e| io(&bp, e))?;
        let all: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let nt = meta.titles.len();
        if all.len() != (nt + meta.duties.len()) * d {
            return Err(Error::File {
                path: bp,
                message: "does not match index.json; retrain the model".into(),
            });
        }
        let search = meta.search;
        let build = |name: &str, entries: Vec<(String, u32, String)>, v: &[f32]| {
            let mut ix = Index {
                vectors: v.to_vec(),
                ..Default::default()
            };
            for (t, c, s) in entries {
                ix.texts.push(t);
                ix.class.push(c);
                ix.source.push(s);
            }
            // The graph saved with the model; one missing (copied by hand?) is rebuilt.
            if search.approximate(ix.len()) {
                let p = r.join(format!("ann-{name}.cbor"));
                let ann = if p.is_file() {
                    Ann::load(&p, ix.len(), d)?
                } else {
                    tracing::warn!("{} is missing; rebuilding the search graph", p.display());
                    Ann::build(&ix.vectors, d, &search, 42)
                };
                ix.ann = Some(std::sync::Arc::new(ann));
                ix.vectors = Vec::new();
            }
            Ok::<Index, Error>(ix)
        };
        let titles = build("titles", meta.titles, &all[..nt * d])?;
        let duties = build("duties", meta.duties, &all[nt * d..])?;
        let cache = EmbeddingCache::load(&r.join(&meta.cache_file), d)
            .unwrap_or_else(|| EmbeddingCache::new(d));
        Ok(Retrieval {
            cache_file: meta.cache_file,
            encoder,
            titles,
            duties,
            mix: meta.mix,
            cache: std::sync::Mutex::new(cache),
            search,
        })
    }
}

/// `(1 - weight) * a + weight * b`, element-wise.
pub fn mix_probabilities(a: &[f32], b: &[f32], weight: f32) -> Vec<f32> {
    a.par_iter()
        .zip(b.par_iter())
        .map(|(x, y)| (1.0 - weight) * x + weight * y)
        .collect()
}

/// Accuracy and mean log-likelihood of `(1 - weight) * a + weight * b` on labelled rows.
fn score_mix(a: &[f32], b: &[f32], weight: f32, y: &[u32], c: usize) -> (f64, f64) {
    let n = y.len();
    let (correct, ll) = (0..n)
        .into_par_iter()
        .map(|i| {
            let row = |k: usize| (1.0 - weight) * a[i * c + k] + weight * b[i * c + k];
            let mut arg = 0;
            let mut m = f32::NEG_INFINITY;
            for k in 0..c {
                let v = row(k);
                if v > m {
                    m = v;
                    arg = k;
                }
            }
            let yi = y[i] as usize;
            ((arg == yi) as usize, (row(yi).max(1e-12) as f64).ln())
        })
        .reduce(|| (0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    (correct as f64 / n.max(1) as f64, ll / n.max(1) as f64)
}

/// The weight in `0..=1` (steps of 0.05) that mixes `b` into `a` best on labelled rows
/// (accuracy, ties: log-likelihood). Returns the weight and its accuracy.
pub fn fit_weight(a: &[f32], b: &[f32], y: &[u32], classes: usize) -> (f32, f64) {
    let mut best = (0f32, f64::NEG_INFINITY, f64::NEG_INFINITY);
    for wi in 0..=20 {
        let w = wi as f32 * 0.05;
        let (acc, ll) = score_mix(a, b, w, y, classes);
        if acc > best.1 || (acc == best.1 && ll > best.2) {
            best = (w, acc, ll);
        }
    }
    (best.0, best.1)
}

/// Mixes ngram probabilities with retrieval probabilities and returns the log (the ensemble's
/// "logits", calibrated downstream).
pub fn mix_log(p_ngram: &[f32], p_ret: &[f32], weight: f32) -> Vec<f32> {
    p_ngram
        .par_iter()
        .zip(p_ret.par_iter())
        .map(|(a, b)| ((1.0 - weight) * a + weight * b).max(1e-12).ln())
        .collect()
}

/// Fits `title_weight`, `temperature` and `weight` on labelled validation scores by grid
/// search on accuracy (ties: higher mean log-likelihood), with the retrieval mixed into the
/// base probabilities `p_base`. Returns the mix (`transformer_weight` 0; the caller sets it)
/// and its accuracy.
pub fn fit_mix(p_base: &[f32], scores: &Scores, y: &[u32]) -> (Mix, f64) {
    let c = scores.classes;
    let mut best: Option<(f64, f64, Mix)> = None;
    for &title_weight in &[0.3f32, 0.4, 0.5, 0.6, 0.7] {
        for &temperature in &[0.01f32, 0.02, 0.03, 0.05, 0.07, 0.1] {
            let base = Mix {
                title_weight,
                temperature,
                weight: 0.0,
                transformer_weight: 0.0,
            };
            let pr = scores.probabilities(&base);
            for wi in 0..=16 {
                let weight = wi as f32 * 0.05;
                let (acc, ll) = score_mix(p_base, &pr, weight, y, c);
                let mix = Mix { weight, ..base };
                if best
                    .as_ref()
                    .is_none_or(|(ba, bl, _)| acc > *ba || (acc == *ba && ll > *bl))
                {
                    best = Some((acc, ll, mix));
                }
            }
        }
    }
    let (acc, _, mix) = best.expect("grid is not empty");
    (mix, acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_max_takes_the_best_entry_per_class() {
        let ix = Index {
            texts: vec!["a".into(), "b".into(), "c".into()],
            class: vec![0, 1, 1],
            source: vec!["reference".into(); 3],
            vectors: vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8],
            ann: None,
        };
        let q = [0.6f32, 0.8, 1.0, 0.0];
        let s = class_max(&q, &ix, 2, 3);
        let r = |v: f32| (v * 1000.0).round() / 1000.0;
        assert_eq!(
            s.iter().map(|&v| r(v)).collect::<Vec<_>>(),
            vec![0.6, 1.0, -1.0, 1.0, 0.6, -1.0]
        );
    }

    #[test]
    fn clause_scores_are_averaged_per_text() {
        // Text 0 has two clauses, text 1 none, text 2 one.
        let scores = [0.2, 0.8, 0.6, 0.4, 0.9, 0.1];
        let m = clause_means(&scores, &[0, 0, 2], &[true, false, true], 2);
        let want = [0.4, 0.6, -1.0, -1.0, 0.9, 0.1];
        for (a, b) in m.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{m:?}");
        }
    }

    #[test]
    fn mix_is_fitted_towards_the_better_scorer() {
        // ngram always says class 0; retrieval knows the truth: the fit must weight it.
        let c = 2;
        let y = vec![1u32, 1, 0, 1];
        let p_ngram: Vec<f32> = y.iter().flat_map(|_| [0.6f32, 0.4]).collect();
        let title: Vec<f32> = y
            .iter()
            .flat_map(|&k| if k == 1 { [0.1f32, 0.9] } else { [0.9, 0.1] })
            .collect();
        let scores = Scores {
            duties: vec![-1.0; title.len()],
            title,
            has_duties: vec![false; 4],
            classes: c,
        };
        let (mix, acc) = fit_mix(&p_ngram, &scores, &y);
        assert_eq!(acc, 1.0);
        assert!(mix.weight > 0.2, "{mix:?}");
        let no = fit_mix(
            &p_ngram,
            &Scores {
                title: vec![0.5; 8],
                ..scores
            },
            &y,
        );
        assert!(no.1 < 1.0);
    }

    #[test]
    fn duties_are_scored_clause_by_clause() {
        let d = tempfile::tempdir().unwrap();
        let words = ["nurse", "give", "care", "drive", "bus", "cook", "meals"];
        crate::encoder::write_random_encoder(d.path(), &words, 16, 1, 5).unwrap();
        let encoder = Encoder::load(d.path(), 0).unwrap();
        let mut cache = EmbeddingCache::new(16);
        let entries: Vec<String> = vec!["give care".into(), "drive bus".into(), "nurse".into()];
        let (v, _) = cache.embed(&encoder, &entries, &|_, _| {}).unwrap();
        let index = |rows: std::ops::Range<usize>, class: Vec<u32>| Index {
            texts: entries[rows.clone()].to_vec(),
            source: vec!["reference".into(); class.len()],
            vectors: v[rows.start * 16..rows.end * 16].to_vec(),
            class,
            ann: None,
        };
        let r = Retrieval {
            encoder,
            titles: index(2..3, vec![0]),
            duties: index(0..2, vec![0, 1]),
            mix: Mix {
                title_weight: 0.5,
                temperature: 0.02,
                weight: 0.5,
                transformer_weight: 0.0,
            },
            cache: std::sync::Mutex::new(cache),
            cache_file: "cache-x.bin".into(),
            search: SearchConfig::default(),
        };
        let texts: Vec<String> = [
            crate::text::record_text("Nurse", "Give care; cook meals"),
            crate::text::record_text("Nurse", "give care"),
            crate::text::record_text("Nurse", ""),
        ]
        .into();
        let s = r.scores(&texts, 2).unwrap();
        assert_eq!(s.has_duties, [true, true, false]);
        // Each clause's best cosine per class, averaged over the two clauses.
        let (q, _) = r
            .cache
            .lock()
            .unwrap()
            .embed(
                &r.encoder,
                &["give care".to_string(), "cook meals".to_string()],
                &|_, _| {},
            )
            .unwrap();
        let per_clause = class_max(&q, &r.duties, 16, 2);
        for k in 0..2 {
            let want = (per_clause[k] + per_clause[2 + k]) / 2.0;
            assert!((s.duties[k] - want).abs() < 1e-5, "{:?}", s.duties);
        }
        // One clause: its own best cosine (the entry itself).
        assert!((s.duties[2] - 1.0).abs() < 1e-5);
        assert_eq!(s.duties[4..], [-1.0, -1.0]);
    }

    #[test]
    fn cache_round_trips_and_embeds_only_new_texts() {
        let d = tempfile::tempdir().unwrap();
        crate::encoder::write_random_encoder(d.path(), &["nurse", "driver"], 16, 1, 3).unwrap();
        let enc = Encoder::load(d.path(), 0).unwrap();
        let mut cache = EmbeddingCache::new(enc.dim());
        let texts: Vec<String> = vec!["nurse".into(), "driver".into(), "nurse".into()];
        let (v, n) = cache.embed(&enc, &texts, &|_, _| {}).unwrap();
        assert_eq!(n, 2);
        assert_eq!(v[..16], v[32..48]);
        let p = d.path().join("cache.bin");
        cache.save(&p).unwrap();
        let mut back = EmbeddingCache::load(&p, 16).unwrap();
        let (v2, n2) = back
            .embed(
                &enc,
                &["driver".to_string(), "bus driver".to_string()],
                &|_, _| {},
            )
            .unwrap();
        assert_eq!(n2, 1);
        assert_eq!(v2[..16], v[16..32]);
        assert!(EmbeddingCache::load(&p, 8).is_none());
    }

    #[test]
    fn disk_cache_is_shared_between_caches_and_merges_segments() {
        let d = tempfile::tempdir().unwrap();
        crate::encoder::write_random_encoder(d.path(), &["nurse", "driver"], 16, 1, 3).unwrap();
        let enc = Encoder::load(d.path(), 0).unwrap();
        let shared = d.path().join("shared");
        let texts: Vec<String> = vec!["nurse".into(), "driver".into()];
        // A first stage embeds and flushes; a second one (a fresh in-memory cache) embeds
        // nothing and gets the same vectors.
        let mut a = EmbeddingCache::new(16);
        a.attach(std::sync::Arc::new(DiskCache::open(&shared, 16).unwrap()));
        let (va, na) = a.embed(&enc, &texts, &|_, _| {}).unwrap();
        assert_eq!(na, 2);
        assert_eq!(a.flush().unwrap(), 2);
        assert_eq!(a.flush().unwrap(), 0, "flushed once");
        let mut b = EmbeddingCache::new(16);
        b.attach(std::sync::Arc::new(DiskCache::open(&shared, 16).unwrap()));
        let (vb, nb) = b
            .embed(
                &enc,
                &["driver".into(), "nurse".into(), "bus driver".into()],
                &|_, _| {},
            )
            .unwrap();
        assert_eq!(nb, 1, "only the new text is embedded");
        assert_eq!(vb[..16], va[16..32]);
        assert_eq!(vb[16..32], va[..16]);
        assert_eq!(b.flush().unwrap(), 1);
        // Another width ignores the directory's segments.
        assert!(DiskCache::open(&shared, 8).unwrap().is_empty());
        // Past MAX_SEGMENTS, opening merges them into one with every vector.
        let disk = DiskCache::open(&shared, 16).unwrap();
        for i in 0..MAX_SEGMENTS {
            let k = key(&format!("text {i}"));
            disk.write(&[(&k, &[i as f32; 16][..])]).unwrap();
        }
        let merged = DiskCache::open(&shared, 16).unwrap();
        assert_eq!(merged.len(), 3 + MAX_SEGMENTS);
        assert_eq!(merged.get(&key("text 5")).unwrap(), vec![5.0; 16]);
        let segments = std::fs::read_dir(&shared).unwrap().count();
        assert_eq!(segments, 1);
        let again = DiskCache::open(&shared, 16).unwrap();
        assert_eq!(again.get(&key("nurse")).unwrap(), va[..16].to_vec());
    }

    #[test]
    fn approximate_search_scores_like_exact_search_and_is_saved_with_the_model() {
        let d = tempfile::tempdir().unwrap();
        let words = [
            "nurse", "care", "bus", "driver", "cook", "chef", "meals", "teacher", "school",
            "clerk", "office", "welder", "metal",
        ];
        crate::encoder::write_random_encoder(d.path(), &words, 16, 1, 5).unwrap();
        let encoder = Encoder::load(d.path(), 0).unwrap();
        let mut cache = EmbeddingCache::new(16);
        // Two-word entries of four classes (class 4 has none).
        let mut texts = Vec::new();
        let mut class = Vec::new();
        for (i, a) in words.iter().enumerate() {
            for (j, b) in words.iter().enumerate().skip(i + 1) {
                texts.push(format!("{a} {b}"));
                class.push(((i + j) % 4) as u32);
            }
        }
        let (v, _) = cache.embed(&encoder, &texts, &|_, _| {}).unwrap();
        let n = texts.len();
        let index_vectors = v.clone();
        let index = Index {
            source: vec!["record".into(); n],
            texts,
            class,
            vectors: v,
            ann: None,
        };
        let mut r = Retrieval {
            encoder,
            titles: index.clone(),
            duties: index,
            mix: Mix {
                title_weight: 0.5,
                temperature: 0.05,
                weight: 0.5,
                transformer_weight: 0.0,
            },
            cache: std::sync::Mutex::new(cache),
            cache_file: "cache-x.bin".into(),
            search: SearchConfig::default(),
        };
        let queries: Vec<String> = [
            ("Nurse", "care; meals"),
            ("bus driver", "school bus"),
            ("chef", ""),
            ("welder", "metal; office clerk"),
        ]
        .iter()
        .map(|(t, d)| crate::text::record_text(t, d))
        .collect();
        let exact = r.scores(&queries, 5).unwrap();
        let exact_similar = r.similar(&queries, 3).unwrap();
        assert!(r.titles.ann.is_none() && r.prepare_search() >= 0.0);
        assert!(r.titles.ann.is_none(), "under the limit: exact");
        // Every index approximate; the graph returns all entries, so the scores are exact
        // too (a class without entries stays at -1).
        r.search = SearchConfig {
            exact_limit: 0,
            ef_construction: 50,
            candidates: n,
        };
        r.prepare_search();
        assert!(r.titles.ann.is_some() && r.duties.ann.is_some());
        // The graph holds the vectors, once.
        assert!(r.titles.vectors.is_empty());
        assert_eq!(r.titles.vector(5), &index_vectors[5 * 16..6 * 16]);
        let check = |r: &Retrieval| {
            let s = r.scores(&queries, 5).unwrap();
            for (a, b) in s.title.iter().zip(&exact.title) {
                assert!((a - b).abs() < 1e-5, "{:?} vs {:?}", s.title, exact.title);
            }
            for (a, b) in s.duties.iter().zip(&exact.duties) {
                assert!((a - b).abs() < 1e-5, "{:?} vs {:?}", s.duties, exact.duties);
            }
            assert!(s.title.chunks(5).all(|row| row[4] == -1.0));
            let sim = r.similar(&queries, 3).unwrap();
            for (a, b) in sim.iter().zip(&exact_similar) {
                assert_eq!(a.len(), 3);
                for (x, y) in a.iter().zip(b) {
                    assert!((x.similarity - y.similarity).abs() < 1e-5);
                }
            }
        };
        check(&r);
        // Saved with the model and read back without rebuilding.
        let m = tempfile::tempdir().unwrap();
        r.save(m.path()).unwrap();
        assert!(m.path().join("retrieval/ann-titles.cbor").is_file());
        assert!(m.path().join("retrieval/ann-duties.cbor").is_file());
        let back = Retrieval::load(m.path()).unwrap();
        assert_eq!(back.search, r.search);
        assert!(back.titles.ann.is_some() && back.titles.vectors.is_empty());
        check(&back);
        // Fewer candidates than entries: classes outside them get the lowest cosine found,
        // an upper bound of their true best (built on one thread, so the graph, and whether
        // it finds the true nearest entries, does not vary from run to run).
        r.search.candidates = 20;
        crate::ann::tests::one_thread(|| r.prepare_search());
        r.titles.detach_graph();
        assert_eq!(
            r.titles.vectors, index_vectors,
            "the graph gave its vectors back"
        );
        crate::ann::tests::one_thread(|| r.prepare_search());
        let s = r.scores(&queries, 5).unwrap();
        for (row, ex) in s.title.chunks(5).zip(exact.title.chunks(5)) {
            let best = ex.iter().cloned().fold(f32::MIN, f32::max);
            assert!((row.iter().cloned().fold(f32::MIN, f32::max) - best).abs() < 1e-5);
            for k in 0..4 {
                assert!(row[k] >= ex[k] - 1e-5, "{row:?} vs {ex:?}");
            }
        }
    }
}
