//! The `retrieval` (bi-encoder) scorer and the `ensemble` that mixes it with the ngram model
//! (the first stage of a bi-encoder / cross-encoder coder).
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
//!
//! | module | job |
//! |---|---|
//! | [`index`] | an index's entries and vectors, exact and HNSW search, per-class scores |
//! | [`cache`] | the in-memory and the shared on-disk embedding caches |
//! | [`mix`] | the channels' probabilities, the mixing weights and their fit |

mod cache;
mod index;
mod mix;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ann::{Ann, SearchConfig};
use crate::device::Precision;
use crate::encoder::{ENCODER_FILES, Encoder};
use crate::error::Error;

use cache::io;
pub use cache::{DiskCache, EmbeddingCache, MAX_SEGMENTS};
use index::clause_means;
pub use index::{EntrySource, Index, bare_title, class_max, split_text};
pub use mix::{Mix, Scores, fit_mix, fit_weight, mix_log, mix_probabilities};

/// `retrieval/index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexMeta {
    dim: usize,
    max_seq_length: usize,
    encoder_fingerprint: String,
    mix: Mix,
    cache_file: String,
    titles: Vec<(String, u32, EntrySource)>,
    duties: Vec<(String, u32, EntrySource)>,
    /// Absent in models from before approximate search: the defaults.
    #[serde(default)]
    search: SearchConfig,
    /// The precision the index and the cache were embedded at (absent: fp32).
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    precision: Precision,
}

/// An index entry near a query (see [`Retrieval::similar`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    /// The entry's normalised text.
    pub text: String,
    /// Its class (index into the model's labels).
    pub class: u32,
    /// `record` (a past record's title) or `reference` (the ISCO reference).
    pub source: EntrySource,
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

/// Distinct texts in first-seen order, each with its row.
#[derive(Default)]
struct Distinct<'a> {
    texts: Vec<String>,
    rows: std::collections::HashMap<&'a str, usize>,
}

impl<'a> Distinct<'a> {
    /// The row of `text`, adding it when new.
    fn row(&mut self, text: &'a str) -> usize {
        let next = self.texts.len();
        let r = *self.rows.entry(text).or_insert(next);
        if r == next {
            self.texts.push(text.to_string());
        }
        r
    }
}

impl Retrieval {
    /// Scores normalised texts against both indexes. The duties are queried clause by clause
    /// (see [`crate::text::clauses`]): a class's duties score is the mean over the clauses of
    /// its best cosine to each, so a record whose duties list several tasks is matched task by
    /// task, as the index holds them.
    pub fn scores(&self, texts: &[String], classes: usize) -> Result<Scores, Error> {
        let d = self.encoder.dim();
        // Each distinct title and clause is embedded and searched once: in a batch of records
        // the same titles and duty clauses come back again and again.
        let mut titles = Distinct::default();
        let mut clauses = Distinct::default();
        let mut title_row = Vec::with_capacity(texts.len());
        let mut clause_row = Vec::new();
        let mut owner = Vec::new();
        let mut has_duties = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            let (ti, du) = split_text(t);
            title_row.push(titles.row(ti));
            let before = owner.len();
            for c in crate::text::clauses(du) {
                clause_row.push(clauses.row(c));
                owner.push(i);
            }
            has_duties.push(owner.len() > before);
        }
        // Titles and clauses in one call: the encoder packs them into as few passes as it
        // can, and one record's title and clauses make one pass.
        let n_titles = titles.texts.len();
        let mut all = titles.texts;
        all.append(&mut clauses.texts);
        let mut tv = self.embed_shared(&all)?;
        let cv = tv.split_off(n_titles * d);
        let mut cache = self.cache.lock().expect("embedding cache");
        // Keep the cache from growing without bound in a long-running service (vectors
        // embedded so far go to the disk cache first, when one is attached).
        if cache.len() > 200_000 {
            cache.flush()?;
            cache.map.clear();
        }
        drop(cache);
        let distinct_titles = class_max(&tv, &self.titles, d, classes);
        let mut title = Vec::with_capacity(texts.len() * classes);
        for &r in &title_row {
            title.extend_from_slice(&distinct_titles[r * classes..(r + 1) * classes]);
        }
        let csc = class_max(&cv, &self.duties, d, classes);
        Ok(Scores {
            title,
            duties: clause_means(&csc, &clause_row, &owner, &has_duties, classes),
            has_duties,
            classes,
        })
    }

    /// Vectors of texts through the cache, embedding the missing ones with the cache
    /// unlocked, so that requests served at once embed side by side rather than one after
    /// another.
    fn embed_shared(&self, texts: &[String]) -> Result<Vec<f32>, Error> {
        let missing = self.cache.lock().expect("embedding cache").missing(texts);
        let fresh = if missing.is_empty() {
            Vec::new()
        } else {
            let refs: Vec<&str> = missing.iter().map(String::as_str).collect();
            self.encoder.embed(&refs, 32, true, &|_| {})?
        };
        let mut cache = self.cache.lock().expect("embedding cache");
        cache.insert(&missing, &fresh);
        // Embeds again only what another request cleared from the cache meanwhile.
        Ok(cache.embed(&self.encoder, texts, &|_, _| {})?.0)
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
        let qv = self.embed_shared(&titles)?;
        let ix = &self.titles;
        Ok(ix
            .nearest(&qv, self.encoder.dim(), k)
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|(j, similarity)| Neighbour {
                        text: ix.texts[j as usize].clone(),
                        class: ix.class[j as usize],
                        source: ix.source[j as usize],
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
        Ok(self.parts(p_base, texts, classes)?.1)
    }

    /// The retrieval's own probabilities of `texts` under the fitted mix, and the ensemble
    /// logits [`Retrieval::ensemble_logits`] makes of them.
    pub fn parts(
        &self,
        p_base: &[f32],
        texts: &[String],
        classes: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), Error> {
        let p = self.scores(texts, classes)?.probabilities(&self.mix);
        let logits = mix_log(p_base, &p, self.mix.weight);
        Ok((p, logits))
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
        let entries = |ix: &Index| -> Vec<(String, u32, EntrySource)> {
            ix.texts
                .iter()
                .zip(&ix.class)
                .zip(&ix.source)
                .map(|((t, c), s)| (t.clone(), *c, *s))
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
            precision: self.encoder.precision(),
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
            .save(&r, &self.cache_file)
    }

    /// Whether a model directory has a retrieval part.
    pub fn present(dir: &Path) -> bool {
        dir.join("retrieval").join("index.json").is_file()
    }

    /// Reads `dir/retrieval/` (the encoder on the CPU).
    pub fn load(dir: &Path) -> Result<Retrieval, Error> {
        Self::load_on(dir, &crate::model::device())
    }

    /// [`Retrieval::load`] with the encoder on `device`.
    pub fn load_on(dir: &Path, device: &burn::tensor::Device) -> Result<Retrieval, Error> {
        let r = dir.join("retrieval");
        let p = r.join("index.json");
        let meta: IndexMeta = serde_json::from_slice(&std::fs::read(&p).map_err(|e| io(&p, e))?)
            .map_err(|e| Error::File {
                path: p.clone(),
                message: format!("is not a retrieval index ({e}); retrain the model"),
            })?;
        let encoder = Encoder::load_on(&r.join("encoder"), meta.max_seq_length, device)?;
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
        let build = |name: &str, entries: Vec<(String, u32, EntrySource)>, v: &[f32]| {
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
        let cache =
            EmbeddingCache::load(&r, &meta.cache_file, d).unwrap_or_else(|| EmbeddingCache::new(d));
        let mut retrieval = Retrieval {
            cache_file: meta.cache_file,
            encoder,
            titles,
            duties,
            mix: meta.mix,
            cache: std::sync::Mutex::new(cache),
            search,
        };
        // The encoder loads in fp32; vectors cached at another precision are not its own.
        if !meta.precision.is_fp32() {
            retrieval.renew_cache()?;
        }
        Ok(retrieval)
    }

    /// Sets the float type the queries are embedded at (see [`crate::device`]). The index
    /// keeps the vectors it was built with; the cache follows the encoder, so a text's vector
    /// is always the one this precision gives, never one cached at another.
    pub fn set_precision(&mut self, precision: Precision) -> Result<(), Error> {
        if precision != self.encoder.precision() {
            self.encoder.set_precision(precision);
            self.renew_cache()?;
        }
        Ok(())
    }

    /// An empty cache named after the encoder as it now embeds.
    fn renew_cache(&mut self) -> Result<(), Error> {
        self.cache_file = format!("cache-{}.bin", self.encoder.fingerprint()?);
        *self.cache.get_mut().expect("embedding cache") = EmbeddingCache::new(self.encoder.dim());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::cache::key;
    use super::*;

    #[test]
    fn class_max_takes_the_best_entry_per_class() {
        let ix = Index {
            texts: vec!["a".into(), "b".into(), "c".into()],
            class: vec![0, 1, 1],
            source: vec![EntrySource::Reference; 3],
            vectors: vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8],
            ann: None,
            keys: Default::default(),
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
    fn many_queries_search_as_one_query_at_a_time_does() {
        // Eight 3-d entries, classes interleaved so that grouping them reorders the columns;
        // entries 1 and 6 are the same vector in different classes (6 in the lower class).
        let vectors: Vec<f32> = [
            [1.0, 0.0, 0.0],
            [0.0, 0.6, 0.8],
            [0.6, 0.8, 0.0],
            [0.0, 0.0, 1.0],
            [0.8, 0.0, 0.6],
            [0.0, 1.0, 0.0],
            [0.0, 0.6, 0.8],
            [0.48, 0.64, 0.6],
        ]
        .concat();
        let ix = Index {
            texts: (0..8).map(|i| i.to_string()).collect(),
            class: vec![2, 1, 0, 2, 1, 3, 0, 3],
            source: vec![EntrySource::Reference; 8],
            vectors,
            ann: None,
            keys: Default::default(),
        };
        // Six queries: more than the dot-product path takes, so one matrix product.
        let q: Vec<f32> = [
            [0.0, 0.6, 0.8],
            [1.0, 0.0, 0.0],
            [0.6, 0.0, 0.8],
            [0.0, 0.8, 0.6],
            [0.36, 0.48, 0.8],
            [0.0, 0.0, 1.0],
        ]
        .concat();
        let all = class_max(&q, &ix, 3, 5);
        let near = ix.nearest(&q, 3, 2);
        for (i, one) in q.chunks(3).enumerate() {
            let want = class_max(one, &ix, 3, 5);
            for (a, b) in all[i * 5..(i + 1) * 5].iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "query {i}: {all:?} against {want:?}");
            }
            assert_eq!(all[i * 5 + 4], -1.0, "a class without entries stays at -1");
            let one_near = ix.nearest(one, 3, 2);
            let ids = |v: &[(u32, f32)]| v.iter().map(|h| h.0).collect::<Vec<_>>();
            assert_eq!(ids(&near[i]), ids(&one_near[0]), "query {i}");
        }
        // The tie between entries 1 and 6 goes to the lower entry on both paths.
        assert_eq!(near[0][0].0, 1);
        assert_eq!(near[0][1].0, 6);
    }

    #[test]
    fn clause_scores_are_averaged_per_text() {
        // Text 0 has two clauses, text 1 none, text 2 one.
        let scores = [0.2, 0.8, 0.6, 0.4, 0.9, 0.1];
        let m = clause_means(&scores, &[0, 1, 2], &[0, 0, 2], &[true, false, true], 2);
        // A clause that comes back is scored once and counted each time.
        let again = clause_means(
            &scores[..4],
            &[0, 1, 1],
            &[0, 0, 2],
            &[true, false, true],
            2,
        );
        assert_eq!(again[4..], scores[2..4]);
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
            source: vec![EntrySource::Reference; class.len()],
            vectors: v[rows.start * 16..rows.end * 16].to_vec(),
            class,
            ann: None,
            keys: Default::default(),
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

        // Queries at another precision: the index keeps its vectors, the cache starts anew
        // under the encoder's new fingerprint, and the scores barely move.
        let mut r = r;
        let index_vectors = r.duties.vectors.clone();
        r.set_precision(Precision::Bf16).unwrap();
        let bf16_file = format!("cache-{}.bin", r.encoder.fingerprint().unwrap());
        assert_eq!(r.cache_file, bf16_file);
        assert_eq!(r.cache.lock().unwrap().len(), 0);
        assert_eq!(r.duties.vectors, index_vectors);
        let half = r.scores(&texts, 2).unwrap();
        assert!(crate::max_abs_diff(&half.duties, &s.duties) < 1e-2);
        // Saved, the model says what its cache holds; loaded (in fp32), it does not use it.
        let m = tempfile::tempdir().unwrap();
        r.save(m.path()).unwrap();
        let back = Retrieval::load(m.path()).unwrap();
        assert_eq!(back.encoder.precision(), Precision::Fp32);
        assert_ne!(back.cache_file, bf16_file);
        assert_eq!(
            back.cache_file,
            format!("cache-{}.bin", back.encoder.fingerprint().unwrap())
        );
        assert_eq!(back.cache.lock().unwrap().len(), 0);
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
        cache.save(d.path(), "cache.bin").unwrap();
        let mut back = EmbeddingCache::load(d.path(), "cache.bin", 16).unwrap();
        let (v2, n2) = back
            .embed(
                &enc,
                &["driver".to_string(), "bus driver".to_string()],
                &|_, _| {},
            )
            .unwrap();
        assert_eq!(n2, 1);
        assert_eq!(v2[..16], v[16..32]);
        assert!(EmbeddingCache::load(d.path(), "cache.bin", 8).is_none());
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
            source: vec![EntrySource::Record; n],
            texts,
            class,
            vectors: v,
            ann: None,
            keys: Default::default(),
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
