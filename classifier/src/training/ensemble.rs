//! The retrieval half of an `ensemble`: build the title and duties indexes, embed them
//! (reusing the vectors the previous model saved for the same encoder, and the shared
//! cache), fit the mixing weights and the calibration on validation; and, for a fine-tune,
//! extend the base model's indexes with the corrections.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::cascade::fit_cascade;
use super::data::{Examples, Files, Progress, fit_sample};
use super::spec::FitSpec;
use super::title_only;
use crate::Taxonomy;
use crate::ann::SearchConfig;
use crate::artifact::{Calibrated, Cascade, TitleOnly, TitleOnlyFit};
use crate::augment::{parse_definition, singular};
use crate::calibrate::{Calibration, fit_calibration, softmax_rows};
use crate::encoder::Encoder;
use crate::error::Error;
use crate::model::Trained;
use crate::retrieval::{
    DiskCache, EmbeddingCache, EntrySource, Index, Mix, Retrieval, fit_mix, fit_weight, mix_log,
    mix_probabilities, split_text,
};
use crate::text::normalize;
use crate::transformer::FineTuned;

/// How each index is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMethod {
    /// Every entry is compared.
    Exact,
    /// Through an HNSW graph.
    Hnsw,
}

/// How both indexes are searched, with the settings.
#[derive(Debug, Clone, Serialize)]
pub struct SearchSummary {
    /// The title index.
    pub titles: SearchMethod,
    /// The duties index.
    pub duties: SearchMethod,
    /// The settings.
    pub config: SearchConfig,
}

fn search_summary(r: &Retrieval) -> SearchSummary {
    let how = |ix: &Index| {
        if ix.ann.is_some() {
            SearchMethod::Hnsw
        } else {
            SearchMethod::Exact
        }
    };
    SearchSummary {
        titles: how(&r.titles),
        duties: how(&r.duties),
        config: r.search,
    }
}

/// What building the retrieval half did, for the run record.
#[derive(Debug, Clone, Serialize)]
pub struct EnsembleSummary {
    /// The pretrained encoder's directory.
    pub encoder: String,
    /// Its fingerprint (names the embedding caches).
    pub encoder_fingerprint: String,
    /// Entries of the title index.
    pub title_entries: usize,
    /// Entries of the duties index.
    pub duty_entries: usize,
    /// Texts embedded by this run (not found in a cache).
    pub embedded_now: usize,
    /// Vectors written to the shared cache.
    pub shared_cache_written: usize,
    /// Index texts.
    pub index_texts: usize,
    /// Vectors the previous model's cache held.
    pub cached_before: usize,
    /// Vectors the model's cache holds.
    pub cached_after: usize,
    /// Seconds spent embedding the indexes.
    pub index_seconds: f64,
    /// How the indexes are searched.
    pub search: SearchSummary,
    /// Seconds spent building search graphs.
    pub search_graph_seconds: f64,
    /// Validation rows the mix and calibration were fitted on.
    pub fit_rows: usize,
    /// Seconds spent scoring them with retrieval.
    pub fit_scoring_seconds: f64,
    /// The fitted mix.
    pub mix: Mix,
    /// The fit of the calibration of unseen titles without duties (absent: not fitted).
    pub title_only: Option<TitleOnlyFit>,
    /// Accuracy of the n-gram model on those rows.
    pub fit_accuracy_ngram: f64,
    /// Accuracy of the transformer, when there is one.
    pub fit_accuracy_transformer: Option<f64>,
    /// Accuracy of retrieval alone.
    pub fit_accuracy_retrieval: f64,
    /// Accuracy of the ensemble.
    pub fit_accuracy_ensemble: f64,
    /// Seconds in all.
    pub seconds: f64,
}

impl EnsembleSummary {
    /// One line for the stage report.
    pub fn line(&self) -> String {
        format!(
            "retrieval: {} title + {} duty entries ({} texts embedded now, {} vectors cached before) in {:.1}s; mix ({}) on {} validation rows: ngram {:.4}, retrieval {:.4}, ensemble {:.4}",
            self.title_entries,
            self.duty_entries,
            self.embedded_now,
            self.cached_before,
            self.index_seconds,
            self.mix,
            self.fit_rows,
            self.fit_accuracy_ngram,
            self.fit_accuracy_retrieval,
            self.fit_accuracy_ensemble,
        )
    }
}

/// What extending the indexes for a fine-tune did, for the run record.
#[derive(Debug, Clone, Serialize)]
pub struct ExtensionSummary {
    /// How the indexes are searched.
    pub search: SearchSummary,
    /// Seconds spent building search graphs.
    pub search_graph_seconds: f64,
    /// Correction titles added to the title index.
    pub correction_titles_added: usize,
    /// Correction duty clauses added to the duties index.
    pub correction_clauses_added: usize,
    /// Whether the base ensemble's transformer was dropped (it has no outputs for new codes).
    pub transformer_dropped: bool,
    /// Texts embedded now.
    pub embedded_now: usize,
    /// Vectors the base model's cache held.
    pub cached_before: usize,
    /// Entries of the title index.
    pub title_entries: usize,
    /// Entries of the duties index.
    pub duty_entries: usize,
    /// Seconds in all.
    pub seconds: f64,
}

/// Vectors saved by the previous model in `dir` for the same encoder, if any.
fn previous_cache(dir: Option<&Path>, file: &str, dim: usize) -> EmbeddingCache {
    let mut cache = EmbeddingCache::new(dim);
    if let Some(dir) = dir
        && let Some(c) = EmbeddingCache::load(&dir.join("retrieval"), file, dim)
    {
        cache.extend(c);
    }
    cache
}

/// (normalised text, code, source) entries of an index.
pub(super) type Entries = Vec<(String, String, EntrySource)>;

/// The records' entries of both indexes: each distinct title and each distinct duty clause
/// with its majority code.
pub(super) fn titles_and_clauses(tr: Examples<'_>) -> (Entries, Entries) {
    let pairs = || {
        tr.text
            .iter()
            .zip(tr.isco_code)
            .map(|(t, c)| (split_text(t), c))
    };
    let titles = majority_entries(pairs().map(|((title, _), c)| (title, c.as_str())));
    let clauses =
        majority_entries(pairs().flat_map(|((_, duties), c)| {
            crate::text::clauses(duties).map(move |cl| (cl, c.as_str()))
        }));
    (titles, clauses)
}

/// Reference entries of both indexes: titles and duties.
pub(super) fn reference_entries(tax: &Taxonomy) -> (Entries, Entries) {
    let mut titles = Vec::new();
    let mut duties = Vec::new();
    for g in tax.units() {
        let (lead, tasks, examples) = parse_definition(&g.definition);
        let mut ts = examples;
        if !g.title.is_empty() {
            ts.push(g.title.clone());
            ts.push(singular(&g.title));
        }
        for t in ts {
            titles.push((normalize(&t), g.code.clone(), EntrySource::Reference));
        }
        for d in tasks.iter().chain(std::iter::once(&lead)) {
            duties.push((normalize(d), g.code.clone(), EntrySource::Reference));
        }
    }
    for e in [&mut titles, &mut duties] {
        e.retain(|(t, _, _)| !t.is_empty());
        e.sort();
        e.dedup();
    }
    (titles, duties)
}

/// Index entries from the records' (text, code) pairs: each distinct non-empty text once,
/// with its most frequent code (ties: the smallest), sorted.
fn majority_entries<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Entries {
    let mut votes: HashMap<&str, BTreeMap<&str, usize>> = HashMap::new();
    for (t, c) in pairs.filter(|(t, _)| !t.is_empty()) {
        *votes.entry(t).or_default().entry(c).or_default() += 1;
    }
    let mut out: Entries = Vec::with_capacity(votes.len());
    for (t, v) in votes {
        let best = v
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(c, _)| *c)
            .expect("a vote");
        out.push((t.to_string(), best.to_string(), EntrySource::Record));
    }
    out.sort();
    out
}

/// An index (without vectors) of the entries whose code is a label, and their texts.
fn index_of(entries: Entries, labels: &[String]) -> (Index, Vec<String>) {
    let mut ix = Index::default();
    for (t, c, src) in entries {
        if let Ok(k) = labels.binary_search(&c) {
            ix.texts.push(t);
            ix.class.push(k as u32);
            ix.source.push(src);
        }
    }
    let texts = ix.texts.clone();
    (ix, texts)
}

fn accuracy(p: &[f32], y: &[u32], c: usize) -> f64 {
    let argmax = crate::model::argmax_rows(p, c);
    argmax.iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len().max(1) as f64
}

/// Builds the retrieval half and fits the ensemble on validation.
#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    spec: &FitSpec,
    files: &Files<'_>,
    labels: &[String],
    tax: &Taxonomy,
    tr: Examples<'_>,
    va: Examples<'_>,
    net: &Trained,
    transformer: Option<&FineTuned>,
    ngram_calibration: &Calibrated,
    progress: &dyn Progress,
) -> Result<
    (
        Retrieval,
        Calibration,
        Cascade,
        Option<TitleOnly>,
        EnsembleSummary,
    ),
    Error,
> {
    let started = Instant::now();
    let dir = files
        .encoder
        .ok_or(Error::MissingEncoder { kind: spec.kind })?;
    let (device, precision) =
        crate::device::place(spec.device, spec.precision).map_err(Error::Model)?;
    let mut encoder = Encoder::load_on(dir, spec.ensemble.max_seq_length, &device)?;
    encoder.set_precision(precision);
    let fp = encoder.fingerprint()?;
    let d = encoder.dim();
    let cache_file = format!("cache-{fp}.bin");
    let mut cache = previous_cache(files.previous_model, &cache_file, d);
    let cached_before = cache.len();
    if let Some(root) = files.shared_cache {
        match DiskCache::open(&root.join(&fp), d) {
            Ok(disk) => cache.attach(Arc::new(disk)),
            Err(e) => tracing::warn!("the shared embedding cache is not used: {e}"),
        }
    }

    let (mut title_entries, mut duty_entries) = reference_entries(tax);
    if spec.ensemble.index_records {
        let (t, d) = titles_and_clauses(tr);
        title_entries.extend(t);
        duty_entries.extend(d);
    }
    let (mut titles, title_texts) = index_of(title_entries, labels);
    let (mut duties, duty_texts) = index_of(duty_entries, labels);

    let all = title_texts.len() + duty_texts.len();
    progress.start(1, "embedding the retrieval index");
    let t0 = Instant::now();
    let (tv, n1) = cache.embed(&encoder, &title_texts, &|done, n| {
        progress.message(&format!("embedding titles {done}/{n}"))
    })?;
    let (dv, n2) = cache.embed(&encoder, &duty_texts, &|done, n| {
        progress.message(&format!("embedding duties {done}/{n}"))
    })?;
    titles.vectors = tv;
    duties.vectors = dv;
    let index_seconds = t0.elapsed().as_secs_f64();

    let (texts, y) = fit_sample(va, labels, spec.train.seed, spec.ensemble.fit_rows);

    let c = labels.len();
    let mut retrieval = Retrieval {
        encoder,
        titles,
        duties,
        mix: Mix {
            title_weight: 0.5,
            temperature: 0.02,
            weight: 0.0,
            transformer_weight: 0.0,
        },
        cache: Mutex::new(cache),
        cache_file,
        search: spec.ensemble.search,
    };
    let search_graph_seconds = retrieval.prepare_search();
    progress.start(1, "scoring validation with retrieval");
    let t1 = Instant::now();
    let scores = retrieval.scores(&texts, c)?;
    let fit_seconds = t1.elapsed().as_secs_f64();
    let x = crate::features::FeatureMatrix::build(&spec.features, &texts);
    let rows: Vec<usize> = (0..x.rows()).collect();
    let ngram_logits = net.logits(&x, &rows);
    let p_ngram = softmax_rows(&ngram_logits, c, 1.0);
    let ngram_acc = accuracy(&p_ngram, &y, c);
    // With a transformer: its weight against the ngram model first, then the retrieval mix.
    let (p_base, transformer_weight, transformer_acc) = match transformer {
        Some(t) => {
            let pt = softmax_rows(&t.logits(&texts)?, c, 1.0);
            let (w, _) = fit_weight(&p_ngram, &pt, &y, c);
            (
                mix_probabilities(&p_ngram, &pt, w),
                w,
                Some(accuracy(&pt, &y, c)),
            )
        }
        None => (p_ngram.clone(), 0.0, None),
    };
    let (mut mix, ens_acc) = fit_mix(&p_base, &scores, &y);
    mix.transformer_weight = transformer_weight;
    retrieval.mix = mix;
    let logits = mix_log(&p_base, &scores.probabilities(&mix), mix.weight);
    let cal = fit_calibration(&logits, &y, c, spec.calibration);
    let cascade = fit_cascade(
        &ngram_logits,
        ngram_calibration.clone(),
        &logits,
        Calibrated {
            temperature: cal.temperature,
            isotonic: cal.isotonic.clone(),
        },
        &y,
        c,
        spec.ensemble.cascade_max_loss,
        spec.calibration,
    );
    let title_only = if spec.ensemble.title_only_calibration {
        progress.start(1, "fitting the calibration of unseen titles without duties");
        title_only::fit(
            &title_only::Scorer {
                net,
                features: &spec.features,
                transformer: transformer.map(|t| (t, mix.transformer_weight)),
                retrieval: &retrieval,
            },
            va,
            files.external_titles,
            labels,
            &Calibrated {
                temperature: cal.temperature,
                isotonic: cal.isotonic.clone(),
            },
            &title_only::Settings {
                min_rows: spec.ensemble.title_only_min_rows,
                max_rows: spec.ensemble.fit_rows,
                seed: spec.train.seed,
                max_loss: spec.ensemble.cascade_max_loss,
                method: spec.calibration,
            },
        )?
    } else {
        None
    };
    let cached_after = retrieval.cache.lock().expect("cache").len();
    let shared_cache_written = retrieval.flush_shared_cache().unwrap_or_else(|e| {
        tracing::warn!("could not write to the shared embedding cache: {e}");
        0
    });
    let summary = EnsembleSummary {
        encoder: dir.display().to_string(),
        encoder_fingerprint: fp,
        title_entries: retrieval.titles.len(),
        duty_entries: retrieval.duties.len(),
        embedded_now: n1 + n2,
        shared_cache_written,
        index_texts: all,
        cached_before,
        cached_after,
        index_seconds,
        search: search_summary(&retrieval),
        search_graph_seconds,
        fit_rows: y.len(),
        fit_scoring_seconds: fit_seconds,
        mix,
        title_only: title_only.as_ref().map(|t| t.fit.clone()),
        fit_accuracy_ngram: ngram_acc,
        fit_accuracy_transformer: transformer_acc,
        fit_accuracy_retrieval: accuracy(&scores.probabilities(&mix), &y, c),
        fit_accuracy_ensemble: ens_acc,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((retrieval, cal, cascade, title_only, summary))
}

/// Builds a fitted ensemble's indexes again with validation's titles and duty clauses (a
/// refit, see [`super::refit`]): the reference entries and each distinct title and clause of
/// the training and validation records together, with its majority code over both. Only the
/// texts no cache holds are embedded. Returns how many title and clause entries were added.
pub(super) fn index_validation(
    r: &mut Retrieval,
    tax: &Taxonomy,
    labels: &[String],
    tr: Examples<'_>,
    va: Examples<'_>,
) -> Result<(usize, usize), Error> {
    let text: Vec<String> = tr.text.iter().chain(va.text).cloned().collect();
    let code: Vec<String> = tr.isco_code.iter().chain(va.isco_code).cloned().collect();
    let (mut title_entries, mut duty_entries) = reference_entries(tax);
    let (t, d) = titles_and_clauses(Examples::new(&text, &code));
    title_entries.extend(t);
    duty_entries.extend(d);
    let (mut titles, title_texts) = index_of(title_entries, labels);
    let (mut duties, duty_texts) = index_of(duty_entries, labels);
    {
        let mut cache = r.cache.lock().expect("cache");
        titles.vectors = cache.embed(&r.encoder, &title_texts, &|_, _| {})?.0;
        duties.vectors = cache.embed(&r.encoder, &duty_texts, &|_, _| {})?.0;
    }
    let added = (
        titles.len().saturating_sub(r.titles.len()),
        duties.len().saturating_sub(r.duties.len()),
    );
    r.titles = titles;
    r.duties = duties;
    r.prepare_search();
    if let Err(e) = r.flush_shared_cache() {
        tracing::warn!("could not write to the shared embedding cache: {e}");
    }
    Ok(added)
}

/// The retrieval half of a fine-tuned ensemble: the base model's indexes over the new label
/// set plus the corrections' titles and duty clauses (only texts not in a cache are
/// embedded). The mix is kept.
pub(super) fn extend(
    mut r: Retrieval,
    shared_cache: Option<&Path>,
    old_labels: &[String],
    labels: &[String],
    corr: Examples<'_>,
) -> Result<(Retrieval, ExtensionSummary), Error> {
    let started = Instant::now();
    // Corrections usually come from the review queue, whose rows `predict` embedded already.
    if let Some(root) = shared_cache
        && let Err(e) = r.attach_shared_cache(root)
    {
        tracing::warn!("the shared embedding cache is not used: {e}");
    }
    // A transformer in the base ensemble has no outputs for the corrections' new codes; the
    // fine-tuned ensemble is ngram + retrieval.
    let transformer_dropped = r.mix.transformer_weight > 0.0;
    r.mix.transformer_weight = 0.0;
    let remap = |ix: &mut Index| {
        for c in ix.class.iter_mut() {
            *c = labels
                .binary_search(&old_labels[*c as usize])
                .expect("fine-tuning keeps every old label") as u32;
        }
    };
    remap(&mut r.titles);
    remap(&mut r.duties);
    // The corrections' titles join the title index and their duties' clauses the duties
    // index, each text once (an entry already there keeps its code).
    let new_entries = |ix: &Index, texts: &mut dyn Iterator<Item = (&str, &String)>| {
        let mut seen: HashSet<&str> = ix.texts.iter().map(String::as_str).collect();
        let mut out: Vec<(String, u32)> = Vec::new();
        for (t, c) in texts {
            if !t.is_empty() && seen.insert(t) {
                let k = labels
                    .binary_search(c)
                    .expect("correction codes are labels");
                out.push((t.to_string(), k as u32));
            }
        }
        out
    };
    let pairs = || {
        corr.text
            .iter()
            .zip(corr.isco_code)
            .map(|(t, c)| (split_text(t), c))
    };
    let new_titles = new_entries(&r.titles, &mut pairs().map(|((t, _), c)| (t, c)));
    let new_clauses = new_entries(
        &r.duties,
        &mut pairs().flat_map(|((_, d), c)| crate::text::clauses(d).map(move |cl| (cl, c))),
    );
    let cached_before = r.cache.lock().expect("cache").len();
    let mut embedded = 0;
    for (ix, entries) in [(&mut r.titles, &new_titles), (&mut r.duties, &new_clauses)] {
        // A graph holds the vectors of a large index; they are extended, then graphed again.
        ix.detach_graph();
        let texts: Vec<String> = entries.iter().map(|(t, _)| t.clone()).collect();
        let (v, n) = r
            .cache
            .lock()
            .expect("cache")
            .embed(&r.encoder, &texts, &|_, _| {})?;
        embedded += n;
        ix.vectors.extend(v);
        ix.source
            .extend(entries.iter().map(|_| EntrySource::Correction));
        ix.texts.extend(texts);
        ix.class.extend(entries.iter().map(|(_, k)| *k));
    }
    if let Err(e) = r.flush_shared_cache() {
        tracing::warn!("the shared embedding cache was not updated: {e}");
    }
    // New entries: the graphs (of indexes over the limit) are built again.
    let search_graph_seconds = r.prepare_search();
    let summary = ExtensionSummary {
        search: search_summary(&r),
        search_graph_seconds,
        correction_titles_added: new_titles.len(),
        correction_clauses_added: new_clauses.len(),
        transformer_dropped,
        embedded_now: embedded,
        cached_before,
        title_entries: r.titles.len(),
        duty_entries: r.duties.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((r, summary))
}
