//! Approximate nearest-neighbour search for large retrieval indexes: an HNSW graph (crate
//! `instant-distance`) over the unit vectors of one [`crate::retrieval::Index`].
//!
//! Exact search (one matmul per chunk of queries against every entry) is the default and is
//! what the ensemble is fitted and measured with. Its cost grows with the index: an office
//! whose records give more than [`SearchConfig::exact_limit`] distinct titles or duty clauses
//! gets an HNSW graph for that index instead, built when the model is trained or fine-tuned and
//! saved with it (`retrieval/ann-<index>.cbor`), so loading the model does not rebuild it.
//! The graph holds the index's vectors; the index keeps no second copy in memory
//! ([`crate::retrieval::Index::vector`]).
//!
//! | search | a query costs | per-class scores |
//! |---|---|---|
//! | exact | one cosine per entry | the best cosine of every class |
//! | HNSW | about `candidates` × log(entries) cosines | the best cosine of each class among the `candidates` nearest entries; a class with no entry among them gets the lowest cosine found (an upper bound of its true best) |
//!
//! Classes far from the query add little once the scores pass through the retrieval softmax
//! (temperature 0.05–0.1), which is why the nearest few hundred entries are enough; BENCHMARKS.md
//! compares both on the same model.

use std::path::Path;

use instant_distance::{Builder, Hnsw, Point, PointId, Search};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// When and how an index is searched approximately (saved with the model).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// Indexes with more entries than this get an HNSW graph (0: every index does).
    pub exact_limit: usize,
    /// Neighbours considered while building the graph (HNSW `efConstruction`).
    pub ef_construction: usize,
    /// Nearest entries returned per query (HNSW `ef`): the per-class scores come from these.
    pub candidates: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            exact_limit: 200_000,
            ef_construction: 100,
            candidates: 200,
        }
    }
}

impl SearchConfig {
    /// Checks the values; the message names the config key.
    pub fn validate(&self) -> Result<(), String> {
        if self.ef_construction == 0 {
            return Err("`ann_ef_construction` must be at least 1".into());
        }
        if self.candidates == 0 {
            return Err("`ann_candidates` must be at least 1".into());
        }
        Ok(())
    }

    /// Whether an index of `entries` entries is searched through a graph.
    pub fn approximate(&self, entries: usize) -> bool {
        entries > self.exact_limit
    }
}

/// One unit vector, the graph's point type (cosine distance).
#[derive(Clone)]
struct Row(Box<[f32]>);

impl Point for Row {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

impl Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|x| x.to_le_bytes()).collect();
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Row;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the little-endian f32 bytes of a vector")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Row, E> {
                if !b.len().is_multiple_of(4) {
                    return Err(E::custom("vector bytes are not a multiple of 4"));
                }
                Ok(Row(b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, b: Vec<u8>) -> Result<Row, E> {
                self.visit_bytes(&b)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// `a · b`, vectorised when the CPU has AVX2 and FMA.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

/// Sixteen independent partial sums, so the loop vectorises without reassociating floats.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((a, x), y) in acc.iter_mut().zip(x).zip(y) {
            *a += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// An HNSW graph over an index's vectors.
pub struct Ann {
    hnsw: Hnsw<Row>,
    /// Entry (row of the index) of each graph point.
    entry: Vec<u32>,
    /// Graph point of each entry (the inverse of `entry`).
    point: Vec<u32>,
    dim: usize,
}

impl std::fmt::Debug for Ann {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ann")
            .field("entries", &self.entry.len())
            .field("dim", &self.dim)
            .finish()
    }
}

/// What `ann-<index>.cbor` holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    dim: usize,
    entry: Vec<u32>,
    hnsw: Hnsw<Row>,
}

impl Ann {
    /// Builds the graph over `vectors` (`[entries, dim]`, unit length). Points get their
    /// layers from `seed`; insertion runs in parallel, so two builds may link a few points
    /// differently.
    pub fn build(vectors: &[f32], dim: usize, cfg: &SearchConfig, seed: u64) -> Ann {
        let points: Vec<Row> = vectors
            .chunks_exact(dim)
            .map(|r| Row(r.to_vec().into_boxed_slice()))
            .collect();
        let (hnsw, pids) = Builder::default()
            .ef_construction(cfg.ef_construction)
            .ef_search(cfg.candidates)
            .seed(seed)
            .build_hnsw(points);
        let point: Vec<u32> = pids.iter().map(|p| p.into_inner()).collect();
        Ann {
            hnsw,
            entry: invert(&point),
            point,
            dim,
        }
    }

    /// The vector of an entry (the graph holds the index's vectors; see
    /// [`crate::retrieval::Index::vector`]).
    pub fn vector(&self, entry: usize) -> &[f32] {
        &self.hnsw[PointId::from(self.point[entry])].0
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entry.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.entry.is_empty()
    }

    /// The nearest entries of each query `[queries, dim]` as `(entry, cosine)`, best first
    /// (up to the configured `candidates`).
    pub fn search(&self, queries: &[f32]) -> Vec<Vec<(u32, f32)>> {
        queries
            .par_chunks(self.dim)
            .map_init(Search::default, |search, q| {
                let q = Row(q.to_vec().into_boxed_slice());
                self.hnsw
                    .search(&q, search)
                    .map(|it| (self.entry[it.pid.into_inner() as usize], 1.0 - it.distance))
                    .collect()
            })
            .collect()
    }

    /// Writes the graph (with its vectors) to `path`.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let io = |e: std::io::Error| Error::Io {
            action: "write",
            path: path.to_path_buf(),
            source: e,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::new(file);
        // Serialise through a borrowed view so the graph is not cloned.
        #[derive(Serialize)]
        struct View<'a> {
            dim: usize,
            entry: &'a [u32],
            hnsw: &'a Hnsw<Row>,
        }
        ciborium::into_writer(
            &View {
                dim: self.dim,
                entry: &self.entry,
                hnsw: &self.hnsw,
            },
            &mut w,
        )
        .map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: format!("could not be written ({e}); check the disk and retrain"),
        })?;
        std::io::Write::flush(&mut w).map_err(io)
    }

    /// Reads a graph written by [`save`](Self::save) for an index of `entries` vectors of
    /// `dim` dimensions.
    pub fn load(path: &Path, entries: usize, dim: usize) -> Result<Ann, Error> {
        let file = std::fs::File::open(path).map_err(|e| Error::Io {
            action: "read",
            path: path.to_path_buf(),
            source: e,
        })?;
        let bad = |what: String| Error::File {
            path: path.to_path_buf(),
            message: format!("{what}; retrain the model (or delete the file to search exactly)"),
        };
        let saved: Saved = ciborium::from_reader(std::io::BufReader::new(file))
            .map_err(|e| bad(format!("is not a search graph ({e})")))?;
        if saved.dim != dim || saved.entry.len() != entries {
            return Err(bad(format!(
                "holds {} vectors of {} dimensions but the index has {entries} of {dim}",
                saved.entry.len(),
                saved.dim
            )));
        }
        let point = invert(&saved.entry);
        if saved.entry.iter().any(|&e| e as usize >= entries) {
            return Err(bad("maps its points to entries inconsistently".into()));
        }
        Ok(Ann {
            hnsw: saved.hnsw,
            entry: saved.entry,
            point,
            dim,
        })
    }
}

/// The inverse of a permutation of `0..n`.
fn invert(perm: &[u32]) -> Vec<u32> {
    let mut inv = vec![0u32; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        if let Some(slot) = inv.get_mut(p as usize) {
            *slot = i as u32;
        }
    }
    inv
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Unit vectors in clusters, as sentence embeddings are.
    fn vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::Rng::new(seed);
        let centres: Vec<f32> = (0..20 * dim).map(|_| rng.unit() as f32 - 0.5).collect();
        let mut out = Vec::with_capacity(n * dim);
        for i in 0..n {
            let c = &centres[(i % 20) * dim..(i % 20 + 1) * dim];
            let mut v: Vec<f32> = c
                .iter()
                .map(|x| x + 0.3 * (rng.unit() as f32 - 0.5))
                .collect();
            let norm = dot(&v, &v).sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            out.extend(v);
        }
        out
    }

    /// Runs `f` on a one-thread rayon pool (a deterministic graph build).
    pub(crate) fn one_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a thread pool")
            .install(f)
    }

    fn exact_top(vs: &[f32], q: &[f32], dim: usize, k: usize) -> Vec<u32> {
        let mut s: Vec<(f32, u32)> = vs
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| (dot(v, q), i as u32))
            .collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0));
        s.into_iter().take(k).map(|(_, i)| i).collect()
    }

    #[test]
    fn dot_matches_a_plain_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.01).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }

    #[test]
    fn search_finds_the_exact_nearest_entries() {
        let dim = 24;
        let vs = vectors(3000, dim, 1);
        let cfg = SearchConfig {
            exact_limit: 0,
            ef_construction: 100,
            candidates: 200,
        };
        // One thread: a parallel build links points in a different order from run to run,
        // and this test's recall should not vary with it.
        let ann = one_thread(|| Ann::build(&vs, dim, &cfg, 7));
        let queries = vectors(100, dim, 2);
        let found = ann.search(&queries);
        let mut hits = 0;
        for (q, got) in queries.chunks_exact(dim).zip(&found) {
            assert_eq!(got.len(), 200);
            // Best first, with the entry's own cosine.
            assert!(got.windows(2).all(|w| w[0].1 >= w[1].1 - 1e-6));
            let (e, s) = got[0];
            assert!((dot(&vs[e as usize * dim..(e as usize + 1) * dim], q) - s).abs() < 1e-5);
            let truth = exact_top(&vs, q, dim, 10);
            hits += truth
                .iter()
                .filter(|t| got.iter().any(|(e, _)| e == *t))
                .count();
        }
        let recall = hits as f64 / 1000.0;
        assert!(recall > 0.98, "recall@10 {recall}");
    }

    #[test]
    fn graph_round_trips_through_its_file() {
        let dim = 8;
        let vs = vectors(500, dim, 3);
        let ann = Ann::build(&vs, dim, &SearchConfig::default(), 1);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ann-titles.cbor");
        ann.save(&p).unwrap();
        let back = Ann::load(&p, 500, dim).unwrap();
        let q = vectors(5, dim, 4);
        assert_eq!(ann.search(&q), back.search(&q));
        // The graph hands back each entry's own vector.
        for e in [0, 17, 499] {
            assert_eq!(back.vector(e), &vs[e * dim..(e + 1) * dim]);
        }
        let err = Ann::load(&p, 499, dim).unwrap_err().to_string();
        assert!(
            err.contains("ann-titles.cbor") && err.contains("retrain"),
            "{err}"
        );
        std::fs::write(&p, b"not cbor").unwrap();
        let err = Ann::load(&p, 500, dim).unwrap_err().to_string();
        assert!(err.contains("is not a search graph"), "{err}");
    }

    #[test]
    fn only_indexes_over_the_limit_are_approximate() {
        let cfg = SearchConfig {
            exact_limit: 10,
            ..Default::default()
        };
        assert!(!cfg.approximate(10));
        assert!(cfg.approximate(11));
        assert!(
            SearchConfig {
                candidates: 0,
                ..cfg
            }
            .validate()
            .unwrap_err()
            .contains("ann_candidates")
        );
    }
}
