//! The retrieval half of `model_kind = "ensemble"` (used by `train` and `fine-tune`): build
//! the title and duties indexes, embed them (reusing the vectors the stage's previous model
//! saved for the same encoder), fit the mixing weights and the calibration on validation.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use classifier::Taxonomy;
use classifier::augment::{parse_definition, singular};
use classifier::calibrate::{Calibration, fit_calibration, softmax_rows};
use classifier::encoder::Encoder;
use classifier::model::Trained;
use classifier::predict::Predictor;
use classifier::retrieval::{
    EmbeddingCache, Index, Mix, Retrieval, fit_mix, fit_weight, mix_log, mix_probabilities,
    split_text,
};
use classifier::text::normalize;
use classifier::transformer::FineTuned;
use runner::{StageContext, StageError};
use serde_json::{Value, json};

use crate::records::Records;
use crate::train::{TrainParams, encode};

/// The encoder directory behind a stage's `encoder` input files.
pub fn encoder_dir(ctx: &StageContext<'_>) -> Result<PathBuf, StageError> {
    let files = ctx.inputs.get("encoder").cloned().unwrap_or_default();
    files
        .iter()
        .find(|f| f.file_name().is_some_and(|n| n == "model.safetensors"))
        .and_then(|f| f.parent().map(Path::to_path_buf))
        .ok_or_else(|| {
            "model_kind = \"ensemble\" and \"transformer\" need the `encoder` input to list a pretrained encoder's files (config.json, model.safetensors, tokenizer.json), e.g. `encoder = \"models/pretrained/all-MiniLM-L6-v2/*.*\"`; run `isco-dag models fetch minilm` to download one".to_string().into()
        })
}

/// Where stages share sentence vectors: `<store>/shared/embeddings/<encoder fingerprint>/`
/// (see [`classifier::retrieval::DiskCache`]; safe to delete).
pub fn shared_cache_root(ctx: &StageContext<'_>) -> PathBuf {
    ctx.store.shared_dir("embeddings")
}

/// Attaches the shared embedding cache to an ensemble model (other kinds have no encoder
/// vectors to share). A cache that cannot be opened only costs time, so it is a warning.
pub fn attach_shared_cache(ctx: &StageContext<'_>, pred: &Predictor) {
    if let Some(r) = pred.retrieval()
        && let Err(e) = r.attach_shared_cache(&shared_cache_root(ctx))
    {
        tracing::warn!("the shared embedding cache is not used: {e}");
    }
}

/// Writes the vectors an ensemble model embedded to the shared cache and returns how many it
/// had to compute (`None` for other kinds).
pub fn flush_shared_cache(pred: &Predictor) -> Option<usize> {
    let r = pred.retrieval()?;
    Some(r.flush_shared_cache().unwrap_or_else(|e| {
        tracing::warn!("could not write to the shared embedding cache: {e}");
        0
    }))
}

/// Vectors saved by this stage's previous model for the same encoder, if any.
fn previous_cache(ctx: &StageContext<'_>, file: &str, dim: usize) -> EmbeddingCache {
    let mut cache = EmbeddingCache::new(dim);
    let prev = ctx
        .previous
        .get("model")
        .and_then(|o| ctx.store.checkout(o).ok());
    if let Some(dir) = prev
        && let Some(c) = EmbeddingCache::load(&dir.join("retrieval").join(file), dim)
    {
        cache.extend(c);
    }
    cache
}

/// (normalised text, code) pairs.
type Entries = Vec<(String, String)>;

/// Reference entries of both indexes: titles and duties.
fn reference_entries(tax: &Taxonomy) -> (Entries, Entries) {
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
            titles.push((normalize(&t), g.code.clone()));
        }
        for d in tasks.iter().chain(std::iter::once(&lead)) {
            duties.push((normalize(d), g.code.clone()));
        }
    }
    titles.retain(|(t, _)| !t.is_empty());
    duties.retain(|(t, _)| !t.is_empty());
    titles.sort();
    titles.dedup();
    duties.sort();
    duties.dedup();
    (titles, duties)
}

/// Index entries from the records' (text, code) pairs: each distinct non-empty text once,
/// with its most frequent code (ties: the smallest), sorted.
fn majority_entries<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String, &'static str)> {
    let mut votes: HashMap<&str, BTreeMap<&str, usize>> = HashMap::new();
    for (t, c) in pairs.filter(|(t, _)| !t.is_empty()) {
        *votes.entry(t).or_default().entry(c).or_default() += 1;
    }
    let mut out: Vec<(String, String, &'static str)> = Vec::with_capacity(votes.len());
    for (t, v) in votes {
        let best = v
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(c, _)| *c)
            .expect("a vote");
        out.push((t.to_string(), best.to_string(), "record"));
    }
    out.sort();
    out
}

fn index_of(
    entries: Vec<(String, String, &'static str)>,
    labels: &[String],
) -> (Index, Vec<String>) {
    let mut ix = Index::default();
    let mut texts = Vec::new();
    for (t, c, src) in entries {
        if let Ok(k) = labels.binary_search(&c) {
            ix.texts.push(t.clone());
            ix.class.push(k as u32);
            ix.source.push(src.to_string());
            texts.push(t);
        }
    }
    (ix, texts)
}

/// The seeded sample of labelled validation records an ensemble's mix and calibration are
/// fitted on: (texts, class indices). `train` and `fine-tune` draw the same sample, so the
/// fine-tune finds its queries in the base model's embedding cache.
pub fn fit_sample(
    va: &Records,
    labels: &[String],
    seed: u64,
    rows: usize,
) -> (Vec<String>, Vec<u32>) {
    let y_all = encode(labels, &va.isco_code);
    let mut idx: Vec<usize> = (0..va.len()).filter(|&i| y_all[i].is_some()).collect();
    classifier::Rng::new(seed).shuffle(&mut idx);
    idx.truncate(rows);
    idx.sort_unstable();
    let texts = idx.iter().map(|&i| va.text[i].clone()).collect();
    let y = idx.iter().map(|&i| y_all[i].expect("labelled")).collect();
    (texts, y)
}

/// Builds the retrieval half and fits the ensemble on validation.
#[allow(clippy::too_many_arguments)]
pub fn build(
    ctx: &StageContext<'_>,
    p: &TrainParams,
    labels: &[String],
    tax: &Taxonomy,
    tr: &Records,
    va: &Records,
    net: &Trained,
    transformer: Option<&FineTuned>,
) -> Result<(Retrieval, Calibration, Value), StageError> {
    let started = Instant::now();
    let dir = encoder_dir(ctx)?;
    let encoder = Encoder::load(&dir, p.encoder_max_seq_length)?;
    let fp = encoder.fingerprint()?;
    let d = encoder.dim();
    let cache_file = format!("cache-{fp}.bin");
    let mut cache = previous_cache(ctx, &cache_file, d);
    let cached_before = cache.len();
    match classifier::retrieval::DiskCache::open(&shared_cache_root(ctx).join(&fp), d) {
        Ok(disk) => cache.attach(std::sync::Arc::new(disk)),
        Err(e) => tracing::warn!("the shared embedding cache is not used: {e}"),
    }

    let (ref_titles, ref_duties) = reference_entries(tax);
    let mut title_entries: Vec<(String, String, &'static str)> = ref_titles
        .into_iter()
        .map(|(t, c)| (t, c, "reference"))
        .collect();
    let mut duty_entries: Vec<(String, String, &'static str)> = ref_duties
        .into_iter()
        .map(|(t, c)| (t, c, "reference"))
        .collect();
    if p.retrieval_index_records {
        let pairs = || {
            tr.text
                .iter()
                .zip(&tr.isco_code)
                .map(|(t, c)| (split_text(t), c))
        };
        title_entries.extend(majority_entries(
            pairs().map(|((title, _), c)| (title, c.as_str())),
        ));
        duty_entries.extend(majority_entries(pairs().flat_map(|((_, duties), c)| {
            classifier::text::clauses(duties).map(move |cl| (cl, c.as_str()))
        })));
    }
    let (mut titles, title_texts) = index_of(title_entries, labels);
    let (mut duties, duty_texts) = index_of(duty_entries, labels);

    let progress = ctx.progress;
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

    let (texts, y) = fit_sample(va, labels, p.seed, p.retrieval_fit_rows);

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
        search: p.search_config(),
    };
    let search_graph_seconds = retrieval.prepare_search();
    progress.start(1, "scoring validation with retrieval");
    let t1 = Instant::now();
    let scores = retrieval.scores(&texts, c)?;
    let fit_seconds = t1.elapsed().as_secs_f64();
    let x = classifier::features::FeatureMatrix::build(&p.features(), &texts);
    let rows: Vec<usize> = (0..x.rows()).collect();
    let p_ngram = softmax_rows(&net.logits(&x, &rows), c, 1.0);
    let ngram_acc = accuracy(&p_ngram, &y, c);
    let retrieval_acc = |mix: &Mix| accuracy(&scores.probabilities(mix), &y, c);
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
    let cal = fit_calibration(&logits, &y, c, &p.calibration);
    let cached_after = retrieval.cache.lock().expect("cache").len();
    let shared_written = retrieval.flush_shared_cache().unwrap_or_else(|e| {
        tracing::warn!("could not write to the shared embedding cache: {e}");
        0
    });
    let m = json!({
        "encoder": dir.display().to_string(),
        "encoder_fingerprint": fp,
        "title_entries": retrieval.titles.class.len(),
        "duty_entries": retrieval.duties.class.len(),
        "embedded_now": n1 + n2,
        "shared_cache_written": shared_written,
        "index_texts": all,
        "cached_before": cached_before,
        "cached_after": cached_after,
        "index_seconds": index_seconds,
        "search": search_summary(&retrieval),
        "search_graph_seconds": search_graph_seconds,
        "fit_rows": y.len(),
        "fit_scoring_seconds": fit_seconds,
        "mix": mix,
        "fit_accuracy_ngram": ngram_acc,
        "fit_accuracy_transformer": transformer_acc,
        "fit_accuracy_retrieval": retrieval_acc(&mix),
        "fit_accuracy_ensemble": ens_acc,
        "seconds": started.elapsed().as_secs_f64(),
    });
    Ok((retrieval, cal, m))
}

/// How each index is searched, for the run record: `exact` or `hnsw`.
fn search_summary(r: &Retrieval) -> Value {
    let how = |ix: &Index| if ix.ann.is_some() { "hnsw" } else { "exact" };
    json!({ "titles": how(&r.titles), "duties": how(&r.duties), "config": r.search })
}

fn accuracy(p: &[f32], y: &[u32], c: usize) -> f64 {
    let argmax = classifier::model::argmax_rows(p, c);
    argmax.iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len().max(1) as f64
}

/// One line for the stage report.
pub fn summary(m: &Value) -> String {
    format!(
        "retrieval: {} title + {} duty entries ({} texts embedded now, {} vectors cached before) in {:.1}s; mix {} on {} validation rows: ngram {:.4}, retrieval {:.4}, ensemble {:.4}",
        m["title_entries"],
        m["duty_entries"],
        m["embedded_now"],
        m["cached_before"],
        m["index_seconds"].as_f64().unwrap_or(0.0),
        m["mix"],
        m["fit_rows"],
        m["fit_accuracy_ngram"].as_f64().unwrap_or(0.0),
        m["fit_accuracy_retrieval"].as_f64().unwrap_or(0.0),
        m["fit_accuracy_ensemble"].as_f64().unwrap_or(0.0),
    )
}

/// The retrieval half of a fine-tuned ensemble: the base model's indexes over the new label
/// set plus one title entry per correction (only texts not in the base model's cache are
/// embedded). The mix is kept.
pub fn extend_for_finetune(
    base_dir: &Path,
    shared_cache: &Path,
    old_labels: &[String],
    labels: &[String],
    corr: &Records,
) -> Result<(Retrieval, Value), StageError> {
    let started = Instant::now();
    let mut r = Retrieval::load(base_dir)?;
    // Corrections usually come from the review queue, whose rows `predict` embedded already.
    if let Err(e) = r.attach_shared_cache(shared_cache) {
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
        let mut seen: std::collections::HashSet<&str> =
            ix.texts.iter().map(String::as_str).collect();
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
            .zip(&corr.isco_code)
            .map(|(t, c)| (split_text(t), c))
    };
    let new_titles = new_entries(&r.titles, &mut pairs().map(|((t, _), c)| (t, c)));
    let new_clauses = new_entries(
        &r.duties,
        &mut pairs().flat_map(|((_, d), c)| classifier::text::clauses(d).map(move |cl| (cl, c))),
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
            .extend(entries.iter().map(|_| "correction".to_string()));
        ix.texts.extend(texts);
        ix.class.extend(entries.iter().map(|(_, k)| *k));
    }
    if let Err(e) = r.flush_shared_cache() {
        tracing::warn!("the shared embedding cache was not updated: {e}");
    }
    // New entries: the graphs (of indexes over the limit) are built again.
    let search_graph_seconds = r.prepare_search();
    let m = json!({
        "search": search_summary(&r),
        "search_graph_seconds": search_graph_seconds,
        "correction_titles_added": new_titles.len(),
        "correction_clauses_added": new_clauses.len(),
        "transformer_dropped": transformer_dropped,
        "embedded_now": embedded,
        "cached_before": cached_before,
        "title_entries": r.titles.class.len(),
        "duty_entries": r.duties.class.len(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    Ok((r, m))
}
