//! Training the cross-encoder re-ranker ([`crate::reranker`]) for a trained model, and
//! fitting where it joins the model.
//!
//! **Queries.** From the training split and the reference only (never from evaluation
//! files): each distinct record text with its code — a share of them (`title_share`) as the
//! title alone, the way titles-only files arrive — and the reference's titles (unit titles,
//! example occupations).
//!
//! **Hard negatives.** The model itself (as it codes, cascade included) scores every query;
//! its most probable codes other than the right one are the negatives. They are the
//! confusions the re-ranker will be asked to settle, so it learns exactly those.
//!
//! **Loss.** Each query is read with its code's text and `negatives` of those codes' texts;
//! cross-entropy over the group's scores pushes the right code first (listwise, as
//! sentence-transformers' cross-encoder training with hard negatives does).
//!
//! **CPU budget.** As for the bi-encoder: only the top `train_layers` layers and the head
//! learn, AdamW with linear warm-up and decay planned from the pace of the first steps to
//! end inside `max_seconds`; the checkpoint with the best validation accuracy (validation
//! records ranked among their candidates by the re-ranker alone) is kept.
//!
//! **Fit.** On the validation sample the model's mix was fitted on, the rows are coded by
//! the model; a grid of confidence thresholds and score weights is searched for the
//! accuracy of re-ranking the rows under the threshold (ties: the lower log-loss, then the
//! lower threshold). When no setting beats the model alone, the threshold is 0 and the
//! re-ranker never runs.
//!
//! **Fine-tune.** A fine-tuned model carries its base's re-ranker with the new codes' texts
//! ([`carry_reranker`]); [`tune_reranker`] then trains it further, from where it was, on the
//! corrections and as many replayed records, and fits it again, so a correction's code can be
//! re-read without training the cross-encoder from the start.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::bi_encoder::{Stopped, linear_schedule};
use super::data::{Examples, Progress, fit_sample};
use super::ensemble::reference_entries;
use crate::Taxonomy;
use crate::artifact::ModelMeta;
use crate::augment::parse_definition;
use crate::encoder::{Encoder, EncoderLayer, PairTokens};
use crate::error::Error;
use crate::predict::{InferenceConfig, Predictor};
use crate::reranker::{
    CrossEncoder, RerankerFit, RerankerFitReport, ScoreHead, candidates_of, rerank_row,
};
use crate::retrieval::split_text;
use crate::rng::Rng;
use crate::text::normalize;

/// How the re-ranker is trained (`[reranker_training]`; saved with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RerankerTrainSpec {
    /// Top transformer layers that learn (with the head; the embeddings never do).
    pub train_layers: usize,
    /// Codes re-read per row at inference (the model's most probable ones).
    pub candidates: usize,
    /// Wrong codes read with each training query (drawn from its candidates).
    pub negatives: usize,
    /// Queries per optimiser step.
    pub batch_queries: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Share of the planned steps spent warming the learning rate up.
    pub warmup: f64,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Tokens per record–code pair (the longer text is cut first).
    pub max_seq_length: usize,
    /// Training queries drawn at most.
    pub max_queries: usize,
    /// Share of the records' queries that are the title alone.
    pub title_share: f64,
    /// Wall-clock budget of training in seconds (0: none).
    pub max_seconds: f64,
    /// Passes over the queries at most.
    pub epochs: usize,
    /// Validation queries scored at each check.
    pub eval_queries: usize,
    /// Checks over the planned run (the best checkpoint is kept).
    pub evaluations: usize,
    /// Highest confidence threshold tried by the fit.
    pub max_threshold: f64,
    /// A confidence threshold set by hand instead of fitted (only the weight is then fitted,
    /// and the re-ranker runs under it even where it does not gain on validation).
    pub threshold: Option<f64>,
    /// Seed of the queries, the negatives and the batches.
    pub seed: u64,
    /// Where it trains (see [`crate::device`]).
    pub device: crate::device::DeviceChoice,
    /// The float type of its products there (see [`crate::device`]).
    pub precision: crate::device::Precision,
}

impl Default for RerankerTrainSpec {
    fn default() -> Self {
        RerankerTrainSpec {
            train_layers: 6,
            candidates: 5,
            negatives: 3,
            batch_queries: 8,
            lr: 3e-5,
            warmup: 0.1,
            weight_decay: 0.01,
            max_seq_length: 48,
            max_queries: 20_000,
            title_share: 0.5,
            max_seconds: 600.0,
            epochs: 1,
            eval_queries: 300,
            evaluations: 5,
            max_threshold: 0.9,
            threshold: None,
            seed: 42,
            device: crate::device::DeviceChoice::Auto,
            precision: crate::device::Precision::Fp32,
        }
    }
}

impl RerankerTrainSpec {
    /// Checks the values, naming the key of the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        super::spec::positive(&[
            ("train_layers", self.train_layers),
            ("candidates", self.candidates),
            ("negatives", self.negatives),
            ("batch_queries", self.batch_queries),
            ("max_seq_length", self.max_seq_length),
            ("epochs", self.epochs),
            ("eval_queries", self.eval_queries),
            ("evaluations", self.evaluations),
        ])?;
        if self.candidates < 2 {
            return Err("`candidates` must be at least 2: one code alone is not re-ranked".into());
        }
        if self.negatives >= self.candidates {
            return Err(format!(
                "`negatives` ({}) must be below `candidates` ({}): they are drawn from the candidates other than the right code",
                self.negatives, self.candidates
            ));
        }
        for (k, v) in [
            ("title_share", self.title_share),
            ("warmup", self.warmup),
            ("max_threshold", self.max_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("`{k}` must be between 0 and 1, not {v}"));
            }
        }
        if let Some(t) = self.threshold
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(format!(
                "`threshold` must be above 0 and at most 1, not {t}; leave it out to fit it on validation"
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("`lr` must be a positive number, not {}", self.lr));
        }
        if self.max_seconds < 0.0 {
            return Err("`max_seconds` must be 0 (no budget) or positive".into());
        }
        self.precision.check_training()?;
        crate::device::place(self.device, self.precision)?;
        Ok(())
    }
}

/// One training or validation query: a text, its code's class and its candidates' classes.
#[derive(Debug, Clone)]
struct Query {
    text: String,
    class: usize,
    /// The model's most probable classes other than `class`.
    others: Vec<usize>,
}

/// The text read for each code: its unit group's title and the lead of its definition
/// (the model's title when the reference lacks the group).
pub fn code_texts(labels: &[String], meta: &ModelMeta, tax: &Taxonomy) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|code| {
            let text = match tax.group(code) {
                Some(g) if !g.title.is_empty() => {
                    let (lead, _, _) = parse_definition(&g.definition);
                    normalize(&format!("{}. {lead}", g.title))
                }
                _ => normalize(meta.titles.get(code).map(String::as_str).unwrap_or(code)),
            };
            (code.clone(), text)
        })
        .collect()
}

/// The layers and the head that learn.
#[derive(Module, Debug)]
struct Tuned {
    layers: Vec<EncoderLayer>,
    head: ScoreHead,
}

/// Scores `[pairs]` of one padded batch: the frozen layers without a graph on `plain`, the
/// tuned ones on `device` (with a graph when `differentiable`).
fn forward(
    enc: &Encoder,
    frozen: usize,
    tuned: &Tuned,
    rows: &[&PairTokens],
    plain: &Device,
    device: &Device,
    differentiable: bool,
) -> Tensor<1> {
    let ids: Vec<&[u32]> = rows.iter().map(|r| r.ids.as_slice()).collect();
    let types: Vec<&[u32]> = rows.iter().map(|r| r.types.as_slice()).collect();
    let model = enc.model();
    let inp = enc.batch(&ids, plain);
    let seg = enc.segments(&types, plain);
    let h = model.embed_typed(inp.ids, inp.positions, seg);
    let h = model.layers(h, inp.pad.clone(), 0..frozen, enc.precision());
    let (mut x, pad) = if differentiable {
        (
            Tensor::<3>::from_data(h.into_data(), device),
            Tensor::from_data(inp.pad.into_data(), device),
        )
    } else {
        (h, inp.pad)
    };
    let bias = model.position_bias_on(x.dims()[1], &x.device());
    for layer in &tuned.layers {
        x = layer.forward(
            x,
            pad.clone(),
            bias.clone(),
            differentiable,
            enc.precision(),
        );
    }
    tuned.head.forward(x)
}

/// Share of queries whose right code the re-ranker alone scores above all its candidates.
fn rank_accuracy(enc: &Encoder, frozen: usize, tuned: &Tuned, tokens: &[Vec<PairTokens>]) -> f64 {
    let dev = enc.device().clone();
    let mut right = 0usize;
    for toks in tokens {
        let rows: Vec<&PairTokens> = toks.iter().collect();
        let s = forward(enc, frozen, tuned, &rows, &dev, &dev, false)
            .into_data()
            .try_to_vec::<f32>()
            .expect("float scores");
        // The right code is read first.
        if s[1..].iter().all(|&v| v < s[0]) {
            right += 1;
        }
    }
    right as f64 / tokens.len().max(1) as f64
}

/// One validation check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankerCheckpoint {
    /// Optimiser steps so far.
    pub step: usize,
    /// Seconds since the start.
    pub seconds: f64,
    /// Mean training loss since the previous check.
    pub loss: f64,
    /// Validation accuracy of the re-ranker alone among the candidates.
    pub validation_accuracy: f64,
}

/// What training the re-ranker did (written beside it as `training.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankerTrainReport {
    /// The settings.
    pub spec: RerankerTrainSpec,
    /// Training queries (records' texts, records' titles, reference titles).
    pub queries: usize,
    /// Seconds the model took to find the queries' negatives.
    pub mining_seconds: f64,
    /// Validation queries.
    pub validation_queries: usize,
    /// Layers that learned.
    pub train_layers: usize,
    /// Optimiser steps planned.
    pub planned_steps: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Queries trained on (counting repeats).
    pub queries_seen: usize,
    /// Seconds of training per 1,000 queries (checks excluded).
    pub seconds_per_1000_queries: f64,
    /// Validation accuracy before training.
    pub validation_before: f64,
    /// The best validation accuracy, at `best_step` (the weights kept).
    pub validation_after: f64,
    /// Step of the best check.
    pub best_step: usize,
    /// Why it stopped.
    pub stopped_by: Stopped,
    /// Seconds spent fitting the threshold and weight.
    pub fit_seconds: f64,
    /// Seconds in all.
    pub seconds: f64,
    /// Every check.
    pub checkpoints: Vec<RerankerCheckpoint>,
}

impl RerankerTrainReport {
    /// A line for the stage report.
    pub fn line(&self, fit: &RerankerFit) -> String {
        format!(
            "{} queries, top {} layers, {} of {} planned steps in {:.0}s ({:.1}s per 1,000 queries, stopped by {}); validation ranking accuracy {:.4} -> {:.4}; threshold {:.2}, weight {:.2}: {} of {} validation rows re-ranked, accuracy {:.4} -> {:.4}",
            self.queries,
            self.train_layers,
            self.steps,
            self.planned_steps,
            self.seconds,
            self.seconds_per_1000_queries,
            self.stopped_by,
            self.validation_before,
            self.validation_after,
            fit.threshold,
            fit.weight,
            fit.fit.reranked_rows,
            fit.fit.rows,
            fit.fit.accuracy_before,
            fit.fit.accuracy_after
        )
    }
}

/// A trained re-ranker with where it joins the model.
pub struct TrainedReranker {
    /// The cross-encoder.
    pub cross: CrossEncoder,
    /// The fitted threshold and weight.
    pub fit: RerankerFit,
    /// What training did.
    pub report: RerankerTrainReport,
}

/// Copies a directory tree (the model the re-ranker joins) file by file.
fn copy_tree(from: &Path, to: &Path, skip: &str) -> Result<(), Error> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            action: "copy",
            path: p,
            source,
        }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for e in std::fs::read_dir(from).map_err(io(from))? {
        let e = e.map_err(io(from))?;
        let name = e.file_name();
        if name == skip {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type().map_err(io(&src))?.is_dir() {
            copy_tree(&src, &dst, "")?;
        } else {
            std::fs::copy(&src, &dst).map_err(io(&src))?;
        }
    }
    Ok(())
}

impl TrainedReranker {
    /// Writes `out`: the model of `model_dir` with the re-ranker in `reranker/` (and its
    /// `training.json`) and the fit in `model.json`. `out` may be `model_dir` itself.
    pub fn save(&self, model_dir: &Path, out: &Path) -> Result<(), Error> {
        if model_dir != out {
            copy_tree(model_dir, out, "reranker")?;
        }
        let dir = out.join("reranker");
        // Written beside and swapped in: a re-ranker trained further in place was loaded
        // from the directory it replaces.
        let fresh = out.join("reranker.new");
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).map_err(io("remove", &fresh))?;
        }
        self.cross.save(&fresh)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
        }
        std::fs::rename(&fresh, &dir).map_err(io("rename", &fresh))?;
        let mut meta = crate::artifact::Model::read_meta(out)?;
        meta.reranker = Some(self.fit.clone());
        crate::artifact::Model::write_meta(out, &meta)?;
        let path = dir.join("training.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&self.report).expect("report serialises"),
        )
        .map_err(io("write", &path))?;
        Ok(())
    }
}

/// Carries the re-ranker of the model in `base` to the model written in `out` (a fine-tune
/// of it), with the texts of codes `meta` has that it lacked. Returns whether there was one.
pub fn carry_reranker(
    base: &Path,
    out: &Path,
    meta: &ModelMeta,
    tax: &Taxonomy,
) -> Result<bool, Error> {
    let from = base.join("reranker");
    if meta.reranker.is_none() || !from.is_dir() {
        return Ok(false);
    }
    let to = out.join("reranker");
    copy_tree(&from, &to, "")?;
    let p = to.join("code_texts.json");
    let mut texts: BTreeMap<String, String> = std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    for (code, text) in code_texts(&meta.labels, meta, tax) {
        texts.entry(code).or_insert(text);
    }
    std::fs::write(
        &p,
        serde_json::to_vec_pretty(&texts).expect("a map serialises"),
    )
    .map_err(|source| Error::Io {
        action: "write",
        path: p,
        source,
    })?;
    Ok(true)
}

/// Trains the re-ranker of the fine-tuned model in `model_dir` (carried there by
/// [`carry_reranker`]) further, for `seconds`, on the corrections as queries (each as its
/// text and as its title alone) with as many replayed records again, so that it learns the
/// codes the corrections bring and keeps the others. Hard negatives are the fine-tuned
/// model's own confusions; the other settings (a threshold set by hand among them) are
/// those it was trained with. With validation records the threshold and weight are fitted
/// again, otherwise kept. `None` when the model has no re-ranker or `seconds` is 0; the
/// caller writes the result over the model's own re-ranker.
pub fn tune_reranker(
    model_dir: &Path,
    seconds: f64,
    corrections: Examples<'_>,
    replay: Examples<'_>,
    validation: Option<Examples<'_>>,
    progress: &dyn Progress,
) -> Result<Option<TrainedReranker>, Error> {
    let started = Instant::now();
    let dir = model_dir.join("reranker");
    if seconds <= 0.0 || !dir.is_dir() {
        return Ok(None);
    }
    let mut predictor = Predictor::load(model_dir, InferenceConfig::default())?;
    let Some(kept) = predictor.meta.reranker.clone() else {
        return Ok(None);
    };
    predictor.drop_reranker();
    // The settings it was trained with; a re-ranker saved without them trains with the defaults.
    let mut spec = std::fs::read(dir.join("training.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<RerankerTrainReport>(&b).ok())
        .map(|r| r.spec)
        .unwrap_or_default();
    spec.max_seconds = seconds;
    let (device, precision) = crate::device::place(spec.device, spec.precision)
        .map_err(|e| Error::Model(format!("[reranker_training] {e}")))?;
    let mut cross = CrossEncoder::load_on(&dir, kept.max_seq_length, &device)?;
    cross.encoder_mut().set_precision(precision);
    let labels = predictor.meta.labels.clone();
    let mut rng = Rng::keyed(spec.seed, "reranker corrections");
    let mut texts = record_queries(corrections, &labels, 0.0, &mut rng);
    let titles = record_queries(corrections, &labels, 1.0, &mut rng);
    let mut seen: HashSet<String> = texts.iter().map(|(t, _)| t.clone()).collect();
    texts.extend(titles.into_iter().filter(|(t, _)| seen.insert(t.clone())));
    let mut replayed = record_queries(replay, &labels, spec.title_share, &mut rng);
    replayed.retain(|(t, _)| !seen.contains(t));
    rng.shuffle(&mut replayed);
    replayed.truncate(texts.len());
    texts.extend(replayed);
    rng.shuffle(&mut texts);
    let (vtexts, fit_on) = match validation {
        Some(v) => {
            let mut vrng = Rng::keyed(spec.seed, "reranker validation");
            let mut vt = record_queries(v, &labels, spec.title_share, &mut vrng);
            vt.retain(|(t, _)| !seen.contains(t));
            vrng.shuffle(&mut vt);
            vt.truncate(spec.eval_queries);
            (vt, FitOn::Validation(v))
        }
        None => (Vec::new(), FitOn::Kept(kept)),
    };
    fit_cross(
        &predictor, cross, &texts, &vtexts, fit_on, &spec, started, progress,
    )
    .map(Some)
}

/// Queries of labelled examples: their text or (a `title_share` of them) their title.
fn record_queries(
    ex: Examples<'_>,
    labels: &[String],
    title_share: f64,
    rng: &mut Rng,
) -> Vec<(String, usize)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (t, c) in ex.text.iter().zip(ex.isco_code) {
        let Ok(k) = labels.binary_search(c) else {
            continue;
        };
        let text = if rng.unit() < title_share {
            split_text(t).0.to_string()
        } else {
            t.clone()
        };
        if !text.is_empty() && seen.insert(text.clone()) {
            out.push((text, k));
        }
    }
    out
}

/// The model's most probable classes of each text other than its own, `k` of them.
fn mine(
    predictor: &Predictor,
    texts: &[(String, usize)],
    k: usize,
    progress: &dyn Progress,
) -> Vec<Query> {
    let c = predictor.classes();
    let mut out = Vec::with_capacity(texts.len());
    progress.start(texts.len() as u64, "finding the queries' hard negatives");
    for chunk in texts.chunks(2_048) {
        let t: Vec<String> = chunk.iter().map(|(t, _)| t.clone()).collect();
        let p = predictor.score(&t).probabilities;
        for ((text, class), row) in chunk.iter().zip(p.chunks(c)) {
            let others: Vec<usize> = candidates_of(row, k + 1)
                .into_iter()
                .filter(|&j| j != *class)
                .take(k)
                .collect();
            out.push(Query {
                text: text.clone(),
                class: *class,
                others,
            });
        }
        progress.inc(chunk.len() as u64);
    }
    out
}

/// Token rows of a query: its code first, then `others`.
fn query_tokens(
    cross: &CrossEncoder,
    labels: &[String],
    q: &Query,
    others: &[usize],
) -> Result<Vec<PairTokens>, Error> {
    let pairs: Vec<(&str, &str)> = std::iter::once(q.class)
        .chain(others.iter().copied())
        .map(|j| (q.text.as_str(), cross.code_text(&labels[j])))
        .collect();
    cross.tokenize(&pairs)
}

/// Trains a re-ranker for the model in `model_dir`, starting from the encoder in `base`
/// (see the module doc).
pub fn train_reranker(
    model_dir: &Path,
    base: &Path,
    spec: &RerankerTrainSpec,
    train: Examples<'_>,
    validation: Examples<'_>,
    tax: &Taxonomy,
    progress: &dyn Progress,
) -> Result<TrainedReranker, Error> {
    let started = Instant::now();
    spec.validate()
        .map_err(|e| Error::Model(format!("[reranker_training] {e}")))?;
    let (device, precision) = crate::device::place(spec.device, spec.precision)
        .map_err(|e| Error::Model(format!("[reranker_training] {e}")))?;
    let config = InferenceConfig {
        device: spec.device,
        ..InferenceConfig::default()
    };
    let mut predictor = Predictor::load(model_dir, config)?;
    // The model as it codes without a re-ranker (a model that has one is re-trained).
    predictor.drop_reranker();
    let labels = predictor.meta.labels.clone();
    let mut encoder = Encoder::load_on(base, spec.max_seq_length, &device)?;
    encoder.set_precision(precision);
    let cross = CrossEncoder::from_encoder(encoder, code_texts(&labels, &predictor.meta, tax))?;

    // Queries: records' texts and titles, the reference's titles.
    let mut rng = Rng::keyed(spec.seed, "reranker queries");
    let mut texts = record_queries(train, &labels, spec.title_share, &mut rng);
    let (ref_titles, _) = reference_entries(tax);
    let mut seen: HashSet<String> = texts.iter().map(|(t, _)| t.clone()).collect();
    for (t, c, _) in ref_titles {
        if let Ok(k) = labels.binary_search(&c)
            && seen.insert(t.clone())
        {
            texts.push((t, k));
        }
    }
    rng.shuffle(&mut texts);
    texts.truncate(spec.max_queries);
    let mut vrng = Rng::keyed(spec.seed, "reranker validation");
    let mut vtexts = record_queries(validation, &labels, spec.title_share, &mut vrng);
    vtexts.retain(|(t, _)| !seen.contains(t));
    vrng.shuffle(&mut vtexts);
    vtexts.truncate(spec.eval_queries);

    fit_cross(
        &predictor,
        cross,
        &texts,
        &vtexts,
        FitOn::Validation(validation),
        spec,
        started,
        progress,
    )
}

/// Where a trained cross-encoder's threshold and weight come from.
enum FitOn<'a> {
    /// Fitted on these validation examples (see the module doc).
    Validation(Examples<'a>),
    /// Kept as they were (a further training without validation records).
    Kept(RerankerFit),
}

/// Trains `cross` for `predictor` (coding without a re-ranker) on the training queries
/// `texts`, keeping the checkpoint that ranks `vtexts` best, then fits where it joins the
/// model. `started` is when the budget began.
#[allow(clippy::too_many_arguments)]
fn fit_cross(
    predictor: &Predictor,
    mut cross: CrossEncoder,
    texts: &[(String, usize)],
    vtexts: &[(String, usize)],
    fit_on: FitOn<'_>,
    spec: &RerankerTrainSpec,
    started: Instant,
    progress: &dyn Progress,
) -> Result<TrainedReranker, Error> {
    let labels = predictor.meta.labels.clone();
    let t_mine = Instant::now();
    let mut queries = mine(predictor, texts, spec.candidates - 1, progress);
    queries.retain(|q| q.others.len() >= spec.negatives);
    if queries.len() < 2 {
        return Err(Error::Model(
            "there are too few training queries for the re-ranker: it needs records of at least two codes; add records or a reference file".into(),
        ));
    }
    let val = mine(predictor, vtexts, spec.candidates - 1, progress);
    let mining_seconds = t_mine.elapsed().as_secs_f64();
    let vtokens: Vec<Vec<PairTokens>> = val
        .iter()
        .map(|q| query_tokens(&cross, &labels, q, &q.others))
        .collect::<Result<_, _>>()?;

    let depth = cross.encoder().config.num_hidden_layers;
    let k = spec.train_layers.clamp(1, depth);
    let frozen = depth - k;
    let plain = cross.encoder().device().clone();
    let ad = plain.clone().autodiff();
    ad.seed(spec.seed);
    let base_tuned = Tuned {
        layers: cross.encoder().model().encoder.layers[frozen..].to_vec(),
        head: cross.head().clone(),
    };
    let enc = cross.encoder();
    let t_check = Instant::now();
    let validation_before = rank_accuracy(enc, frozen, &base_tuned, &vtokens);
    // What one validation check costs: the budget keeps room for the one that closes training.
    let mut check_seconds = t_check.elapsed().as_secs_f64();
    let mut tuned = base_tuned.clone().fork(&ad).train();
    let mut opt = AdamWConfig::new()
        .with_weight_decay(spec.weight_decay)
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);

    let g = spec.negatives + 1;
    let per_epoch = queries.len().div_ceil(spec.batch_queries);
    let epoch_steps = per_epoch * spec.epochs;
    let mut planned = epoch_steps;
    let mut planned_fixed = spec.max_seconds <= 0.0;
    let mut eval_every = (planned / spec.evaluations).max(1);
    let lr_at = |step: usize, planned: usize| linear_schedule(spec.lr, spec.warmup, step, planned);
    let timing_steps = 5;
    let (mut step, mut seen_q, mut train_seconds) = (0usize, 0usize, 0.0f64);
    let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
    let mut checkpoints = Vec::new();
    let mut best: (f64, usize, Tuned) = (validation_before, 0, base_tuned);
    let mut stopped_by = Stopped::Epochs;
    let mut order_rng = Rng::keyed(spec.seed, "reranker batches");
    progress.start(planned as u64, "training the re-ranker");
    'outer: for _ in 0..spec.epochs {
        let mut order: Vec<usize> = (0..queries.len()).collect();
        order_rng.shuffle(&mut order);
        for b in order.chunks(spec.batch_queries) {
            let t0 = Instant::now();
            let mut rows: Vec<PairTokens> = Vec::with_capacity(b.len() * g);
            for &i in b {
                let q = &queries[i];
                let mut others = q.others.clone();
                order_rng.shuffle(&mut others);
                others.truncate(spec.negatives);
                rows.extend(query_tokens(&cross, &labels, q, &others)?);
            }
            let refs: Vec<&PairTokens> = rows.iter().collect();
            let s = forward(cross.encoder(), frozen, &tuned, &refs, &plain, &ad, true)
                .reshape([b.len(), g]);
            let target =
                Tensor::<1, Int>::from_data(TensorData::new(vec![0i64; b.len()], [b.len()]), &ad);
            let loss = loss_fn.forward(s, target);
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            loss_n += 1;
            let mut grads = loss.backward();
            let gp = GradientsParams::from_module(&mut grads, &tuned);
            tuned = opt.step(lr_at(step, planned), tuned, gp);
            step += 1;
            seen_q += b.len();
            train_seconds += t0.elapsed().as_secs_f64();
            progress.inc(1);
            if !planned_fixed && step == timing_steps {
                // The planned run holds `evaluations` checks besides its steps.
                let per_step = train_seconds / step as f64;
                let left = spec.max_seconds * 0.9
                    - started.elapsed().as_secs_f64()
                    - spec.evaluations as f64 * check_seconds;
                planned =
                    epoch_steps.min((step + (left.max(0.0) / per_step) as usize).max(step + 1));
                eval_every = (planned / spec.evaluations).max(1);
                planned_fixed = true;
                progress.start(planned as u64, "training the re-ranker");
                progress.inc(step as u64);
            }
            let over_budget =
                spec.max_seconds > 0.0 && started.elapsed().as_secs_f64() >= spec.max_seconds;
            let done = step >= planned;
            if step.is_multiple_of(eval_every) || done || over_budget {
                let model = tuned.valid();
                let t_check = Instant::now();
                let acc = rank_accuracy(cross.encoder(), frozen, &model, &vtokens);
                check_seconds = t_check.elapsed().as_secs_f64();
                checkpoints.push(RerankerCheckpoint {
                    step,
                    seconds: started.elapsed().as_secs_f64(),
                    loss: loss_sum / loss_n.max(1) as f64,
                    validation_accuracy: acc,
                });
                (loss_sum, loss_n) = (0.0, 0);
                progress.message(&format!(
                    "step {step}/{planned}: validation ranking accuracy {acc:.4}"
                ));
                if acc >= best.0 || val.is_empty() {
                    best = (acc, step, model);
                }
                if spec.max_seconds > 0.0 && !done && !over_budget {
                    // Steps that fit, each with its share of the checks, beside the check that
                    // will close them; none: this check closes training.
                    let left =
                        spec.max_seconds * 0.93 - started.elapsed().as_secs_f64() - check_seconds;
                    let per_step = train_seconds / step as f64 + check_seconds / eval_every as f64;
                    planned = epoch_steps.min(step + (left.max(0.0) / per_step) as usize);
                    if planned == step {
                        stopped_by = Stopped::Budget;
                        break 'outer;
                    }
                }
            }
            if over_budget || done {
                stopped_by = if over_budget || planned < epoch_steps {
                    Stopped::Budget
                } else {
                    Stopped::Epochs
                };
                break 'outer;
            }
        }
    }
    let (best_acc, best_step, best_tuned) = best;
    let mut model = cross.encoder().model().clone();
    for (slot, layer) in model.encoder.layers[frozen..]
        .iter_mut()
        .zip(best_tuned.layers)
    {
        *slot = layer;
    }
    cross.encoder_mut().set_model(model);
    cross.set_head(best_tuned.head);

    let t_fit = Instant::now();
    let sample = predictor
        .meta
        .fit_sample()
        .unwrap_or(crate::artifact::FitSample {
            rows: 5_000,
            seed: predictor.meta.train.seed,
        });
    let fit = match fit_on {
        FitOn::Validation(validation) => {
            progress.start(1, "fitting where the re-ranker joins the model");
            let (vt, vy) = fit_sample(validation, &labels, sample.seed, sample.rows);
            fit_threshold(predictor, &cross, &vt, &vy, spec)?
        }
        FitOn::Kept(fit) => fit,
    };
    let fit_seconds = t_fit.elapsed().as_secs_f64();
    let report = RerankerTrainReport {
        spec: spec.clone(),
        queries: queries.len(),
        mining_seconds,
        validation_queries: val.len(),
        train_layers: k,
        planned_steps: planned,
        steps: step,
        queries_seen: seen_q,
        seconds_per_1000_queries: train_seconds * 1000.0 / seen_q.max(1) as f64,
        validation_before,
        validation_after: best_acc,
        best_step,
        stopped_by,
        fit_seconds,
        seconds: started.elapsed().as_secs_f64(),
        checkpoints,
    };
    Ok(TrainedReranker { cross, fit, report })
}

/// Accuracy and mean log-loss of rows of probabilities.
fn score_rows(p: &[f32], y: &[u32], c: usize) -> (usize, f64) {
    let mut right = 0;
    let mut nll = 0.0;
    for (row, &t) in p.chunks(c).zip(y) {
        if candidates_of(row, 1).first() == Some(&(t as usize)) {
            right += 1;
        }
        nll -= (row[t as usize].max(1e-12) as f64).ln();
    }
    (right, nll)
}

/// The threshold and weight (see the module doc) on the validation sample.
fn fit_threshold(
    predictor: &Predictor,
    cross: &CrossEncoder,
    texts: &[String],
    y: &[u32],
    spec: &RerankerTrainSpec,
) -> Result<RerankerFit, Error> {
    let c = predictor.classes();
    let labels = &predictor.meta.labels;
    let p = predictor.score(texts).probabilities;
    let conf: Vec<f32> = p
        .chunks(c)
        .map(|r| r.iter().cloned().fold(0f32, f32::max))
        .collect();
    let (right_before, _) = score_rows(&p, y, c);
    let n = y.len().max(1);
    // Every row any threshold could re-rank is scored once.
    let limit = spec.threshold.unwrap_or(spec.max_threshold);
    let pool: Vec<usize> = (0..y.len()).filter(|&i| (conf[i] as f64) < limit).collect();
    let cands: Vec<Vec<usize>> = pool
        .iter()
        .map(|&i| candidates_of(&p[i * c..(i + 1) * c], spec.candidates))
        .collect();
    let pairs: Vec<(&str, &str)> = pool
        .iter()
        .zip(&cands)
        .flat_map(|(&i, cs)| {
            cs.iter()
                .map(move |&j| (texts[i].as_str(), cross.code_text(&labels[j])))
        })
        .collect();
    let scores = cross.scores(&pairs)?;
    let recall = pool
        .iter()
        .zip(&cands)
        .filter(|(i, cs)| cs.contains(&(y[**i] as usize)))
        .count() as f64
        / pool.len().max(1) as f64;
    // Per pooled row: (right before, right after, nll before, nll after) for each weight.
    const WEIGHTS: [f32; 7] = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0];
    // (right, negative log-likelihood) of a row's true code.
    type Outcome = (bool, f64);
    let mut per_row: Vec<(bool, f64, Vec<Outcome>)> = Vec::with_capacity(pool.len());
    let mut at = 0;
    for (&i, cs) in pool.iter().zip(&cands) {
        let row = &p[i * c..(i + 1) * c];
        let s = &scores[at..at + cs.len()];
        at += cs.len();
        let t = y[i] as usize;
        let before = (
            candidates_of(row, 1).first() == Some(&t),
            -(row[t].max(1e-12) as f64).ln(),
        );
        let after = WEIGHTS
            .iter()
            .map(|&w| {
                let mut q = row.to_vec();
                rerank_row(&mut q, cs, s, w);
                (
                    candidates_of(&q, 1).first() == Some(&t),
                    -(q[t].max(1e-12) as f64).ln(),
                )
            })
            .collect();
        per_row.push((before.0, before.1, after));
    }
    let thresholds: Vec<f64> = match spec.threshold {
        Some(t) => vec![t],
        None => (1..=18)
            .map(|k| k as f64 * 0.05)
            .filter(|&t| t <= spec.max_threshold + 1e-9)
            .collect(),
    };
    // (gain in right rows, -nll change, -threshold) is maximised.
    let mut best: Option<(i64, f64, f64, f32)> = None;
    for &t in &thresholds {
        for (wi, &w) in WEIGHTS.iter().enumerate() {
            let (mut gain, mut dnll) = (0i64, 0.0);
            for (k, &i) in pool.iter().enumerate() {
                if (conf[i] as f64) >= t {
                    continue;
                }
                let (rb, nb, after) = &per_row[k];
                gain += after[wi].0 as i64 - *rb as i64;
                dnll += nb - after[wi].1;
            }
            let better = match best {
                None => true,
                Some((g, d, bt, _)) => {
                    gain > g
                        || (gain == g && (dnll > d + 1e-9 || ((dnll - d).abs() <= 1e-9 && t < bt)))
                }
            };
            if better {
                best = Some((gain, dnll, t, w));
            }
        }
    }
    let (gain, _, mut threshold, mut weight) = best.unwrap_or((0, 0.0, 0.0, 0.0));
    if gain <= 0 && spec.threshold.is_none() {
        // The re-ranker does not pay on validation: it never runs.
        threshold = 0.0;
        weight = 0.0;
    }
    let under: Vec<usize> = (0..pool.len())
        .filter(|&k| (conf[pool[k]] as f64) < threshold)
        .collect();
    let wi = WEIGHTS.iter().position(|&w| w == weight);
    let rb = under.iter().filter(|&&k| per_row[k].0).count();
    let ra = match wi {
        Some(wi) => under.iter().filter(|&&k| per_row[k].2[wi].0).count(),
        None => rb,
    };
    let m = under.len().max(1) as f64;
    Ok(RerankerFit {
        threshold,
        weight: weight as f64,
        candidates: spec.candidates,
        max_seq_length: spec.max_seq_length,
        fit: RerankerFitReport {
            rows: y.len(),
            reranked_rows: under.len(),
            accuracy_before: right_before as f64 / n as f64,
            accuracy_after: (right_before as i64 + ra as i64 - rb as i64) as f64 / n as f64,
            reranked_accuracy_before: rb as f64 / m,
            reranked_accuracy_after: ra as f64 / m,
            candidate_recall: recall,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_name_their_key() {
        let s = RerankerTrainSpec {
            negatives: 5,
            candidates: 5,
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().contains("negatives"));
        let s = RerankerTrainSpec {
            title_share: 2.0,
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().contains("title_share"));
        assert!(RerankerTrainSpec::default().validate().is_ok());
    }
}
