//! A model in use: inference with calibrated confidence, grades, hierarchical fallback,
//! top-k alternatives, explanations and an LRU cache for repeated texts. The model's parts
//! and its files are [`crate::artifact`]'s.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::agreement::Parts;
use crate::artifact::{Agreement, Calibrated, Cascade, Model, ModelMeta, TitleOnly};
use crate::calibrate::softmax_rows;
use crate::error::Error;
use crate::model::Trained;
use crate::rank::top_k;

/// How much more likely to be right a coarser group must be than the finer code for the
/// fallback to take it: less is the rounding of summed `f32` probabilities, not a gain.
const NO_GAIN: f64 = 1e-6;

/// Inference settings (config section `[inference]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// Below this 4-digit probability, fall back to the 3-digit group, then 2-digit.
    pub confidence_threshold: f64,
    /// Coarsest level the fallback may return (1–4).
    pub min_level: usize,
    /// Grade thresholds: very_high, high, medium, low (below low: very_low).
    pub grades: [f64; 4],
    /// Predictions whose confidence is under this go to the review queue.
    pub review_threshold: f64,
    /// Alternatives returned.
    pub top_k: usize,
    /// Entries of the LRU cache for single predictions.
    pub cache_size: usize,
    /// Similar past records (nearest titles in the retrieval index, with their codes) shown
    /// to reviewers in the review queue and `to_review.csv`; models with a retrieval index
    /// (`ensemble`) only. 0 turns it off.
    pub similar: usize,
    /// Whether a record no unit group codes at `confidence_threshold` (when `min_level`
    /// allows a coarser code) goes to the review queue too, whatever its confidence and
    /// whatever level it is coded at: the office wants four digits, and a coder can often
    /// give them.
    pub review_fallbacks: bool,
    /// Whether an ensemble with a cascade codes the rows its n-gram network is sure of
    /// without embedding them (see [`crate::artifact::Cascade`]); `false` runs every part on
    /// every row.
    pub cascade: bool,
    /// Whether a model with a re-ranker re-reads the candidates of the rows under its
    /// threshold (see [`crate::reranker`]); `false` codes without it.
    pub rerank: bool,
    /// Whether an ensemble with a calibration of its own for titles it never saw, given
    /// without duties, uses it (see [`crate::artifact::TitleOnly`]); `false` calibrates them
    /// like every other row.
    pub title_only_calibration: bool,
    /// Whether an unseen title's confidence is also capped by how far the ensemble's parts
    /// agree on its code, when the model has that cap (see [`crate::agreement`]); `false`
    /// keeps the confidence of the calibration alone.
    pub title_only_agreement: bool,
    /// Where the model's encoders embed (see [`crate::device`]); the n-gram network runs on
    /// the CPU.
    pub device: crate::device::DeviceChoice,
    /// The float type of the encoders' products there (see [`crate::device`]).
    pub precision: crate::device::Precision,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            confidence_threshold: 0.9,
            min_level: 2,
            grades: [0.9, 0.8, 0.7, 0.5],
            review_threshold: 0.5,
            top_k: 3,
            cache_size: 10_000,
            similar: 3,
            review_fallbacks: true,
            cascade: true,
            rerank: true,
            title_only_calibration: true,
            title_only_agreement: true,
            device: crate::device::DeviceChoice::Auto,
            precision: crate::device::Precision::Fp32,
        }
    }
}

/// Most alternatives or similar records one prediction may carry.
pub const MAX_ALTERNATIVES: usize = 50;

impl InferenceConfig {
    /// Checks the values, so a bad threshold is refused where it is configured instead of
    /// failing (or silently misgrading) while coding. The message starts with the key.
    pub fn validate(&self) -> Result<(), String> {
        let prob = |key: &str, v: f64| {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "`{key}` is {v}, but it is a probability: give a number from 0 to 1"
                ))
            }
        };
        prob("confidence_threshold", self.confidence_threshold)?;
        prob("review_threshold", self.review_threshold)?;
        for g in self.grades {
            prob("grades", g)?;
        }
        if self.grades.windows(2).any(|w| w[0] < w[1]) {
            return Err(format!(
                "`grades` {:?} must go down: the thresholds of very_high, high, medium and low, in that order",
                self.grades
            ));
        }
        if !(1..=4).contains(&self.min_level) {
            return Err(format!(
                "`min_level` is {}, but ISCO-08 codes have 1 to 4 digits: give 1, 2, 3 or 4",
                self.min_level
            ));
        }
        if !(1..=MAX_ALTERNATIVES).contains(&self.top_k) {
            return Err(format!(
                "`top_k` is {}; give 1 to {MAX_ALTERNATIVES} alternatives",
                self.top_k
            ));
        }
        if self.similar > MAX_ALTERNATIVES {
            return Err(format!(
                "`similar` is {}; give at most {MAX_ALTERNATIVES} (0 turns it off)",
                self.similar
            ));
        }
        crate::device::place(self.device, self.precision)?;
        Ok(())
    }

    /// Grade of a confidence.
    pub fn grade(&self, p: f64) -> Grade {
        let g = self.grades;
        if p >= g[0] {
            Grade::VeryHigh
        } else if p >= g[1] {
            Grade::High
        } else if p >= g[2] {
            Grade::Medium
        } else if p >= g[3] {
            Grade::Low
        } else {
            Grade::VeryLow
        }
    }
}

/// How sure the model is of a code, by the configured thresholds (`[inference] grades`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// At or above the first threshold.
    VeryHigh,
    /// At or above the second.
    High,
    /// At or above the third.
    Medium,
    /// At or above the fourth.
    Low,
    /// Below every threshold.
    VeryLow,
}

impl Grade {
    /// Every grade, most confident first.
    pub const ALL: [Grade; 5] = [
        Grade::VeryHigh,
        Grade::High,
        Grade::Medium,
        Grade::Low,
        Grade::VeryLow,
    ];

    /// The name used in tables, the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::VeryHigh => "very_high",
            Grade::High => "high",
            Grade::Medium => "medium",
            Grade::Low => "low",
            Grade::VeryLow => "very_low",
        }
    }
}

impl std::fmt::Display for Grade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The part of a model that decided a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The n-gram network (an `ngram` model, or the first step of an ensemble's cascade).
    Ngram,
    /// The whole ensemble: n-gram network, retrieval (and a transformer when it has one).
    Ensemble,
    /// A fine-tuned transformer.
    Transformer,
    /// The cross-encoder re-ranker, on rows the model before it was unsure of.
    Reranker,
}

impl Step {
    /// Every step, in cascade order.
    pub const ALL: [Step; 4] = [
        Step::Ngram,
        Step::Ensemble,
        Step::Transformer,
        Step::Reranker,
    ];

    /// The name used in tables, the API and run records.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Ngram => "ngram",
            Step::Ensemble => "ensemble",
            Step::Transformer => "transformer",
            Step::Reranker => "reranker",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Calibrated probabilities of rows and the step that decided each.
pub struct Scored {
    /// `[rows, classes]`.
    pub probabilities: Vec<f32>,
    /// Per row.
    pub steps: Vec<Step>,
}

/// One alternative code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    /// 4-digit code.
    pub isco_code: crate::taxonomy::IscoCode,
    /// Its title.
    pub title: String,
    /// Calibrated probability.
    pub confidence: f64,
}

/// How many texts [`Predictor::predict`] scores at a time: enough rows for the network's
/// matrix products and the encoder's batches to run at full speed, few enough that the
/// probabilities of one chunk stay small. A caller coding a large file in chunks of this
/// size codes every row exactly as one call over the whole file would.
pub const PREDICT_CHUNK: usize = 16_384;

/// A coded record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The code returned (4 digits, or fewer after fallback).
    pub isco_code: crate::taxonomy::IscoCode,
    /// Its level (number of digits).
    pub level: usize,
    /// Its title.
    pub title: String,
    /// Probability of the returned code (summed over its unit groups after fallback).
    pub confidence: f64,
    /// Confidence grade.
    pub grade: Grade,
    /// Whether a coarser code was returned.
    pub is_fallback: bool,
    /// Whether a human should look at it.
    pub needs_review: bool,
    /// Which part of the model decided it.
    pub decided_by: Step,
    /// Top-k unit groups.
    pub alternatives: Vec<Alternative>,
}

/// A past record (or reference title) similar to a query, for reviewers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Similar {
    /// Its normalised title.
    pub text: String,
    /// The code it was given (a past record's most frequent code).
    pub isco_code: crate::taxonomy::IscoCode,
    /// That code's title.
    pub title: String,
    /// Where the entry came from.
    pub source: crate::retrieval::EntrySource,
    /// Cosine similarity of the titles.
    pub similarity: f64,
}

/// Contribution of the text's features to one class's logit. For the linear head the
/// contributions plus the bias equal the logit exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    /// The explained code.
    pub isco_code: crate::taxonomy::IscoCode,
    /// Its logit (before temperature).
    pub logit: f64,
    /// The output bias of that class.
    pub bias: f64,
    /// Per feature: (feature label, word index, contribution).
    pub features: Vec<(String, usize, f64)>,
    /// Per word of the text: (word, summed contribution).
    pub words: Vec<(String, f64)>,
    /// Whether the contributions are exact (linear head).
    pub exact: bool,
}

impl Explanation {
    /// The `n` tokens with the largest contributions, largest first. A word is two features
    /// (one of its field, one shared by title and duties) and may occur more than once; the
    /// features of one token are summed, so a token is listed once with all it gave.
    pub fn top_tokens(&self, n: usize) -> Vec<(String, f64)> {
        let mut sums: Vec<(String, f64)> = Vec::new();
        for (label, _, v) in &self.features {
            match sums.iter_mut().find(|(l, _)| l == label) {
                Some((_, sum)) => *sum += v,
                None => sums.push((label.clone(), *v)),
            }
        }
        sums.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        sums.truncate(n);
        sums
    }
}

/// Calibrated probabilities `[rows, classes]` of logits: softmax at the temperature, then
/// the isotonic map.
pub fn calibrated(logits: &[f32], classes: usize, cal: &Calibrated) -> Vec<f32> {
    cal.probabilities(logits, classes)
}

/// Calibrated probabilities `[rows, classes]` of logits, each row with `usual` or, where
/// `apart` is set, with `own`.
fn calibrated_by(
    logits: &[f32],
    classes: usize,
    apart: &[bool],
    usual: &Calibrated,
    own: &Calibrated,
) -> Vec<f32> {
    let rows = set_rows(apart);
    if rows.is_empty() {
        return calibrated(logits, classes, usual);
    }
    if rows.len() == apart.len() {
        return calibrated(logits, classes, own);
    }
    let mut p = calibrated(logits, classes, usual);
    let q = calibrated(&gather(logits, classes, &rows), classes, own);
    for (k, &i) in rows.iter().enumerate() {
        p[i * classes..(i + 1) * classes].copy_from_slice(&q[k * classes..(k + 1) * classes]);
    }
    p
}

/// The rows `rows` of a `[_, classes]` matrix, in that order.
fn gather(m: &[f32], classes: usize, rows: &[usize]) -> Vec<f32> {
    rows.iter()
        .flat_map(|&i| m[i * classes..(i + 1) * classes].iter().copied())
        .collect()
}

/// The rows where `apart` is set.
fn set_rows(apart: &[bool]) -> Vec<usize> {
    (0..apart.len()).filter(|&i| apart[i]).collect()
}

/// The rows in `a` or `b` (each ascending), ascending and once each.
fn merged(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut all: Vec<usize> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// For each of `n` rows, its position in `rows` (`usize::MAX` when it is not there).
fn positions(rows: &[usize], n: usize) -> Vec<usize> {
    let mut at = vec![usize::MAX; n];
    for (k, &i) in rows.iter().enumerate() {
        at[i] = k;
    }
    at
}

/// A loaded model ready to code records.
pub struct Predictor {
    /// Metadata.
    pub meta: ModelMeta,
    model: Model,
    /// Output weights `[in, classes]` row-major, for explanations.
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    /// Inference settings.
    pub config: InferenceConfig,
    cache: Mutex<HashMap<String, (Prediction, u64)>>,
    tick: std::sync::atomic::AtomicU64,
    label_index: HashMap<String, usize>,
    /// Per level (index = digits, 1..=3): group codes and each label's group index.
    groups: Vec<(Vec<String>, Vec<usize>)>,
    /// The cross-encoder re-ranker, when the model has one (`reranker/`).
    reranker: Option<crate::reranker::CrossEncoder>,
    /// The title index's texts, when the model calibrates unseen titles apart.
    known_titles: Option<HashSet<String>>,
}

impl Predictor {
    /// Loads an artifact directory.
    pub fn load(dir: &Path, config: InferenceConfig) -> Result<Predictor, Error> {
        let (device, precision) =
            crate::device::place(config.device, config.precision).map_err(Error::Model)?;
        let (meta, mut model) = Model::load_on(dir, &device)?;
        model.set_precision(precision)?;
        let reranker = match &meta.reranker {
            Some(fit) => {
                let d = dir.join("reranker");
                if !d.is_dir() {
                    return Err(Error::File {
                        path: d,
                        message: "is missing: model.json describes a re-ranker; copy the whole model directory, or re-run `train-reranker`".into(),
                    });
                }
                let mut cross =
                    crate::reranker::CrossEncoder::load_on(&d, fit.max_seq_length, &device)?;
                cross.encoder_mut().set_precision(precision);
                Some(cross)
            }
            None => None,
        };
        let mut p = Self::from_parts(meta, model, config);
        p.reranker = reranker;
        Ok(p)
    }

    /// The re-ranker this predictor uses: the model's, unless `[inference] rerank = false`
    /// or its fit found it never pays (threshold 0).
    pub fn reranker(
        &self,
    ) -> Option<(
        &crate::reranker::CrossEncoder,
        &crate::reranker::RerankerFit,
    )> {
        match (&self.reranker, &self.meta.reranker) {
            (Some(r), Some(fit)) if self.config.rerank && fit.threshold > 0.0 => Some((r, fit)),
            _ => None,
        }
    }

    /// Codes without the model's re-ranker from now on (training a new one starts from the
    /// model as it codes without it).
    pub fn drop_reranker(&mut self) {
        self.reranker = None;
        self.meta.reranker = None;
    }

    /// The model's parts.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The retrieval half, for ensembles.
    pub fn retrieval(&self) -> Option<&crate::retrieval::Retrieval> {
        self.model.retrieval()
    }

    /// A predictor from a model in memory.
    pub fn from_parts(meta: ModelMeta, model: Model, config: InferenceConfig) -> Predictor {
        let net = model.net();
        let out_w = net
            .head
            .out
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("float weights");
        let out_b = net
            .head
            .out
            .bias
            .as_ref()
            .map(|b| b.val().into_data().try_to_vec::<f32>().expect("float bias"))
            .unwrap_or_else(|| vec![0.0; meta.labels.len()]);
        let label_index = meta
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect();
        let groups = level_groups(&meta.labels);
        let known_titles = match (&meta.title_only, model.retrieval()) {
            (Some(_), Some(r)) => Some(r.titles.texts.iter().cloned().collect()),
            _ => None,
        };
        Predictor {
            groups,
            known_titles,
            meta,
            model,
            out_w,
            out_b,
            config,
            cache: Mutex::new(HashMap::new()),
            tick: std::sync::atomic::AtomicU64::new(0),
            label_index,
            reranker: None,
        }
    }

    /// The network (for fine-tuning).
    pub fn net(&self) -> &Trained {
        self.model.net()
    }

    /// Class index of a code, if it is a label.
    pub fn class_of(&self, code: &str) -> Option<usize> {
        self.label_index.get(code).copied()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.meta.labels.len()
    }

    /// Title of a code at any level.
    pub fn title(&self, code: &str) -> &str {
        self.meta.titles.get(code).map(String::as_str).unwrap_or("")
    }

    /// Logits of the ngram network alone `[texts, classes]`.
    pub fn ngram_logits(&self, texts: &[String]) -> Vec<f32> {
        self.model.net().text_logits(&self.meta.features, texts)
    }

    /// Raw (uncalibrated) logits `[texts, classes]` of normalised texts: the ngram network's,
    /// for a transformer its head's, for an ensemble the log of its mixed probabilities
    /// (ngram, or ngram mixed with a transformer, then retrieval; see [`crate::retrieval`]).
    pub fn logits(&self, texts: &[String]) -> Vec<f32> {
        self.logits_of(self.ensemble_parts(texts).as_ref(), texts)
    }

    /// [`Predictor::logits`] of `texts`, taking an ensemble's from `parts` (what
    /// [`Predictor::ensemble_parts`] said of the same texts).
    fn logits_of(&self, parts: Option<&Result<Parts, Vec<f32>>>, texts: &[String]) -> Vec<f32> {
        match parts {
            Some(Ok(parts)) => parts.ensemble_logits.clone(),
            Some(Err(base)) => base.iter().map(|v| v.max(1e-12).ln()).collect(),
            None => match &self.model {
                Model::Transformer { transformer, .. } => self
                    .transformer_logits(transformer, texts)
                    .unwrap_or_else(|| self.ngram_logits(texts)),
                _ => self.ngram_logits(texts),
            },
        }
    }

    /// A fine-tuned transformer's logits of `texts`; `None` (logged) when it fails.
    fn transformer_logits(
        &self,
        t: &crate::transformer::FineTuned,
        texts: &[String],
    ) -> Option<Vec<f32>> {
        t.logits(texts)
            .inspect_err(|e| tracing::error!("the transformer failed, coding without it: {e}"))
            .ok()
    }

    /// What an ensemble's parts say of `texts`: `None` for another kind of model; the base
    /// probabilities (the n-gram network's, mixed with a transformer's if it has one) when
    /// the retrieval fails (logged), so the caller codes without it.
    fn ensemble_parts(&self, texts: &[String]) -> Option<Result<Parts, Vec<f32>>> {
        let Model::Ensemble {
            retrieval,
            transformer,
            ..
        } = &self.model
        else {
            return None;
        };
        let c = self.classes();
        let ngram_logits = self.ngram_logits(texts);
        let mut p = softmax_rows(&ngram_logits, c, 1.0);
        if let Some(t) = transformer
            .as_ref()
            .and_then(|t| self.transformer_logits(t, texts))
        {
            p = crate::retrieval::mix_probabilities(
                &p,
                &softmax_rows(&t, c, 1.0),
                retrieval.mix.transformer_weight,
            );
        }
        Some(match retrieval.parts(&p, texts, c) {
            Ok((retrieval, ensemble_logits)) => Ok(Parts {
                ngram_logits,
                retrieval,
                ensemble_logits,
            }),
            Err(e) => {
                tracing::error!("retrieval failed, coding without it: {e}");
                Err(p)
            }
        })
    }

    /// The step that decides every row when no cascade is used.
    fn whole_model_step(&self) -> Step {
        match self.model {
            Model::Ngram { .. } => Step::Ngram,
            Model::Transformer { .. } => Step::Transformer,
            Model::Ensemble { .. } => Step::Ensemble,
        }
    }

    /// The cascade this predictor uses: an ensemble's, unless `[inference] cascade = false`.
    pub fn cascade(&self) -> Option<&Cascade> {
        match self.model {
            Model::Ensemble { .. } if self.config.cascade => self.meta.cascade.as_ref(),
            _ => None,
        }
    }

    /// Calibrated probabilities `[texts, classes]`.
    pub fn probabilities(&self, texts: &[String]) -> Vec<f32> {
        self.score(texts).probabilities
    }

    /// Calibrated probabilities `[texts, classes]` with the step that decided each row: with
    /// a cascade, the n-gram network's own calibrated probabilities for the rows it is sure
    /// of, the whole ensemble's (calibrated on such rows) for the others.
    pub fn score(&self, texts: &[String]) -> Scored {
        let mut scored = self.score_without_reranker(texts);
        if let Some((cross, fit)) = self.reranker() {
            let c = self.classes();
            let rows: Vec<usize> = scored
                .probabilities
                .chunks(c)
                .enumerate()
                .filter(|(_, r)| (r.iter().cloned().fold(0f32, f32::max) as f64) < fit.threshold)
                .map(|(i, _)| i)
                .collect();
            if !rows.is_empty() {
                match crate::reranker::rerank_rows(
                    cross,
                    &mut scored.probabilities,
                    c,
                    &self.meta.labels,
                    texts,
                    &rows,
                    fit.candidates,
                    fit.weight as f32,
                ) {
                    Ok(()) => rows.iter().for_each(|&i| scored.steps[i] = Step::Reranker),
                    Err(e) => tracing::error!("the re-ranker failed, coding without it: {e}"),
                }
            }
        }
        scored
    }

    /// The calibration of unseen titles without duties this predictor uses: an ensemble's,
    /// unless `[inference] title_only_calibration = false`.
    pub fn title_only(&self) -> Option<&TitleOnly> {
        match (&self.known_titles, &self.meta.title_only) {
            (Some(_), Some(part)) if self.config.title_only_calibration => Some(part),
            _ => None,
        }
    }

    /// Per text, whether it is a title alone that is not in the title index (such rows take
    /// [`Predictor::title_only`]'s calibration); `None` when that is not used.
    pub fn unseen_titles(&self, texts: &[String]) -> Option<Vec<bool>> {
        self.title_only()?;
        let known = self.known_titles.as_ref()?;
        Some(
            texts
                .iter()
                .map(|t| crate::retrieval::bare_title(t).is_some_and(|t| !known.contains(t)))
                .collect(),
        )
    }

    /// [`Predictor::score`] before the re-ranker.
    fn score_without_reranker(&self, texts: &[String]) -> Scored {
        let c = self.classes();
        let apart = self.unseen_titles(texts);
        let part = self.title_only();
        let Some(cascade) = self.cascade() else {
            let whole = Calibrated {
                temperature: self.meta.temperature,
                isotonic: self.meta.isotonic.clone(),
            };
            let parts = self.ensemble_parts(texts);
            let logits = self.logits_of(parts.as_ref(), texts);
            let mut probabilities = match (&apart, part) {
                (Some(rows), Some(part)) => calibrated_by(&logits, c, rows, &whole, &part.whole),
                _ => calibrated(&logits, c, &whole),
            };
            if let (Some(apart), Some(Ok(parts))) = (&apart, &parts) {
                // `parts` holds every row, each at its own position.
                let rows = set_rows(apart);
                self.by_agreement(&rows, parts, &rows, &mut probabilities);
            }
            return Scored {
                probabilities,
                steps: vec![self.whole_model_step(); texts.len()],
            };
        };
        // Unseen titles without duties go through the cascade fitted on such rows.
        let own = part.map(|p| &p.cascade).unwrap_or(cascade);
        let apart = apart.unwrap_or_else(|| vec![false; texts.len()]);
        let mut p = calibrated_by(
            &self.ngram_logits(texts),
            c,
            &apart,
            &cascade.ngram,
            &own.ngram,
        );
        let mut steps = vec![Step::Ngram; texts.len()];
        let deferred: Vec<usize> = p
            .chunks(c)
            .enumerate()
            .filter(|&(i, row)| {
                let threshold = if apart[i] {
                    own.threshold
                } else {
                    cascade.threshold
                };
                row.iter().cloned().fold(0f32, f32::max) < threshold as f32
            })
            .map(|(i, _)| i)
            .collect();
        // The ensemble runs on the deferred rows and, for the cap by the parts' agreement,
        // on the unseen titles without duties: once on both, in the rows' order.
        let capped = match self.agreement() {
            Some(_) => set_rows(&apart),
            None => Vec::new(),
        };
        let run = merged(&deferred, &capped);
        if !run.is_empty() {
            let sub: Vec<String> = run.iter().map(|&i| texts[i].clone()).collect();
            let parts = self.ensemble_parts(&sub);
            let logits = self.logits_of(parts.as_ref(), &sub);
            let at = positions(&run, texts.len());
            let of_deferred: Vec<usize> = deferred.iter().map(|&i| at[i]).collect();
            let sub_apart: Vec<bool> = deferred.iter().map(|&i| apart[i]).collect();
            let q = calibrated_by(
                &gather(&logits, c, &of_deferred),
                c,
                &sub_apart,
                &cascade.deferred,
                &own.deferred,
            );
            for (k, &i) in deferred.iter().enumerate() {
                p[i * c..(i + 1) * c].copy_from_slice(&q[k * c..(k + 1) * c]);
                steps[i] = Step::Ensemble;
            }
            if let Some(Ok(parts)) = &parts {
                let of_capped: Vec<usize> = capped.iter().map(|&i| at[i]).collect();
                self.by_agreement(&capped, parts, &of_capped, &mut p);
            }
        }
        Scored {
            probabilities: p,
            steps,
        }
    }

    /// The cap of unseen titles' confidence by their parts' agreement this predictor uses,
    /// with the calibration of such titles it belongs to: the model's, unless `[inference]
    /// title_only_agreement = false`.
    fn agreement(&self) -> Option<(&TitleOnly, &Agreement)> {
        self.title_only()
            .filter(|_| self.config.title_only_agreement)
            .and_then(|part| Some((part, part.agreement.as_ref()?)))
    }

    /// Caps the confidence of the rows `rows` of `p` (unseen titles without duties) by how
    /// far the ensemble's parts agree on their codes, when the model's calibration of such
    /// titles has that cap ([`crate::agreement`]). `parts` is what the ensemble's parts said
    /// of a set of texts, `at` the position of each of `rows` in it.
    fn by_agreement(&self, rows: &[usize], parts: &Parts, at: &[usize], p: &mut [f32]) {
        let Some((part, agreement)) = self.agreement() else {
            return;
        };
        if rows.is_empty() {
            return;
        }
        let c = self.classes();
        let parts = Parts {
            ngram_logits: gather(&parts.ngram_logits, c, at),
            retrieval: gather(&parts.retrieval, c, at),
            ensemble_logits: gather(&parts.ensemble_logits, c, at),
        };
        let mut q = gather(p, c, rows);
        crate::agreement::apply(
            agreement,
            &parts,
            &part.cascade.ngram,
            &part.whole,
            &mut q,
            c,
        );
        for (k, &i) in rows.iter().enumerate() {
            p[i * c..(i + 1) * c].copy_from_slice(&q[k * c..(k + 1) * c]);
        }
    }

    /// Codes normalised texts (`title | duties`, see [`crate::text::record_text`]).
    pub fn predict(&self, texts: &[String]) -> Vec<Prediction> {
        use rayon::prelude::*;
        let c = self.classes();
        let mut out = Vec::with_capacity(texts.len());
        if self.cascade().is_some() || self.reranker().is_some() || self.title_only().is_some() {
            for chunk in texts.chunks(PREDICT_CHUNK) {
                let scored = self.score(chunk);
                let preds: Vec<Prediction> = scored
                    .probabilities
                    .par_chunks(c)
                    .zip(scored.steps.par_iter())
                    .map(|(p, &step)| Prediction {
                        decided_by: step,
                        ..self.decide(p)
                    })
                    .collect();
                out.extend(preds);
            }
            return out;
        }
        let inv_t = (1.0 / self.meta.temperature) as f32;
        for chunk in texts.chunks(PREDICT_CHUNK) {
            // Softmax, calibration and decision row by row on a small buffer, so the
            // probability matrix is never written out and read back.
            let logits = self.logits(chunk);
            let preds: Vec<Prediction> = logits
                .par_chunks(c)
                .map_init(
                    || vec![0f32; c],
                    |p, row| {
                        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0f32;
                        for (v, x) in p.iter_mut().zip(row) {
                            *v = ((x - m) * inv_t).exp();
                            sum += *v;
                        }
                        // Same arithmetic as `softmax_rows`, so both paths agree exactly.
                        p.iter_mut().for_each(|v| *v /= sum);
                        if let Some(iso) = &self.meta.isotonic {
                            iso.apply_row(p);
                        }
                        self.decide(p)
                    },
                )
                .collect();
            out.extend(preds);
        }
        out
    }

    /// Codes one text through the LRU cache.
    pub fn predict_one(&self, text: &str) -> Prediction {
        use std::sync::atomic::Ordering;
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        if let Some((p, t)) = self.cache.lock().expect("cache").get_mut(text) {
            *t = tick;
            return p.clone();
        }
        let p = self.predict(&[text.to_string()]).remove(0);
        let mut cache = self.cache.lock().expect("cache");
        if self.config.cache_size > 0 {
            if cache.len() >= self.config.cache_size {
                // Evict the least recently used half in one pass.
                let mut ticks: Vec<u64> = cache.values().map(|(_, t)| *t).collect();
                ticks.sort_unstable();
                let cut = ticks[ticks.len() / 2];
                cache.retain(|_, (_, t)| *t > cut);
            }
            cache.insert(text.to_string(), (p.clone(), tick));
        }
        p
    }

    /// The `k` past records (and reference titles) whose titles are nearest to each text's,
    /// with their codes; `None` when the model has no retrieval index (only `ensemble` models
    /// have one).
    pub fn similar(&self, texts: &[String], k: usize) -> Option<Result<Vec<Vec<Similar>>, Error>> {
        let r = self.model.retrieval()?;
        Some(r.similar(texts, k).map(|rows| {
            rows.into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|n| {
                            let code = self.meta.labels[n.class as usize].clone();
                            Similar {
                                text: n.text,
                                title: self.title(&code).to_string(),
                                isco_code: code.into(),
                                source: n.source,
                                similarity: n.similarity as f64,
                            }
                        })
                        .collect()
                })
                .collect()
        }))
    }

    /// Turns one row of probabilities into a decision (grade, fallback, alternatives).
    pub fn decide(&self, p: &[f32]) -> Prediction {
        let cfg = &self.config;
        let idx = top_k(p, cfg.top_k.max(1));
        let alternatives: Vec<Alternative> = idx
            .iter()
            .map(|&i| Alternative {
                isco_code: self.meta.labels[i].clone().into(),
                title: self.title(&self.meta.labels[i]).to_string(),
                confidence: p[i] as f64,
            })
            .collect();
        let best = &self.meta.labels[idx[0]];
        let mut code = best.clone();
        let mut conf = p[idx[0]] as f64;
        let mut level = best.len();
        // No unit group is sure enough and a coarser level may be tried: the row is one the
        // office wants a coder to look at (`review_fallbacks`), whatever level it ends at.
        let unsure = conf < cfg.confidence_threshold && cfg.min_level.max(1) < best.len();
        if unsure {
            for digits in (cfg.min_level.max(1)..best.len()).rev() {
                // Sum probabilities per group at this level; take the best group.
                let (codes, of) = &self.groups[digits];
                let mut sums = vec![0f64; codes.len()];
                for (i, &g) in of.iter().enumerate() {
                    sums[g] += p[i] as f64;
                }
                let (g, s) = sums
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(g, s)| (g, *s))
                    .expect("labels exist");
                // A coarser group that is no likelier to be right than the finer code only
                // loses digits: keep the finer code unless the group gains confidence.
                if s > conf + NO_GAIN {
                    code = codes[g].clone();
                    conf = s;
                    level = digits;
                }
                if s >= cfg.confidence_threshold {
                    break;
                }
            }
        }
        Prediction {
            title: self.title(&code).to_string(),
            is_fallback: level < best.len(),
            needs_review: conf < cfg.review_threshold || (cfg.review_fallbacks && unsure),
            grade: cfg.grade(conf),
            isco_code: code.into(),
            level,
            confidence: conf,
            alternatives,
            decided_by: self.whole_model_step(),
        }
    }

    /// Exact per-feature contributions to `code`'s logit (linear head); with a hidden layer,
    /// gradient-times-input contributions of the bag, marked inexact.
    pub fn explain(&self, text: &str, code: &str) -> Option<Explanation> {
        let c = self.class_of(code)?;
        let classes = self.classes();
        let net = self.model.net();
        let dim = net.dim;
        let named = self.meta.features.named_features(text);
        let exact = net.head.hidden.is_none();
        // For an ensemble this explains its ngram half.
        let logit = self.ngram_logits(&[text.to_string()])[c] as f64;
        let bias = self.out_b[c] as f64;
        let mut features = Vec::with_capacity(named.len());
        for f in &named {
            let row = &net.table[f.id as usize * dim..(f.id as usize + 1) * dim];
            let contrib: f64 = if exact {
                row.iter()
                    .enumerate()
                    .map(|(d, e)| *e as f64 * self.out_w[d * classes + c] as f64)
                    .sum::<f64>()
                    * f.weight as f64
            } else {
                0.0
            };
            features.push((f.label.clone(), f.word, contrib));
        }
        let words_text: Vec<&str> = crate::text::words(text).collect();
        let mut words: Vec<(String, f64)> =
            words_text.iter().map(|w| (w.to_string(), 0.0)).collect();
        for (_, w, v) in &features {
            if let Some(slot) = words.get_mut(*w) {
                slot.1 += v;
            }
        }
        Some(Explanation {
            isco_code: code.into(),
            logit,
            bias,
            features,
            words,
            exact,
        })
    }
}

/// For each level of 0–3 digits, the groups the labels fall in and each label's group.
fn level_groups(labels: &[String]) -> Vec<(Vec<String>, Vec<usize>)> {
    (0..4)
        .map(|digits| {
            let mut codes: Vec<String> = Vec::new();
            let mut of = Vec::with_capacity(labels.len());
            for l in labels {
                let g = &l[..digits.min(l.len())];
                let i = match codes.iter().position(|c| c == g) {
                    Some(i) => i,
                    None => {
                        codes.push(g.to_string());
                        codes.len() - 1
                    }
                };
                of.push(i);
            }
            (codes, of)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::FORMAT;
    use crate::features::{FeatureConfig, FeatureMatrix};
    use crate::model::TrainConfig;
    use crate::model::{TrainData, train};

    #[test]
    fn a_token_is_listed_once_with_all_its_features_gave() {
        let e = Explanation {
            isco_code: "6111".into(),
            logit: 1.0,
            bias: 0.0,
            features: vec![
                ("market".into(), 3, 0.15),
                ("at market".into(), 2, 0.2),
                ("market".into(), 3, 0.1),
                ("selling".into(), 0, -0.3),
                ("grower".into(), 1, 0.01),
            ],
            words: vec![],
            exact: true,
        };
        let top = e.top_tokens(3);
        let labels: Vec<&str> = top.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["selling", "market", "at market"]);
        assert!((top[1].1 - 0.25).abs() < 1e-12);
    }

    #[test]
    fn rows_run_once_are_found_again_in_the_order_they_were_run() {
        let deferred = [1, 4, 6];
        let capped = [0, 4, 5];
        let run = merged(&deferred, &capped);
        assert_eq!(run, vec![0, 1, 4, 5, 6]);
        let at = positions(&run, 8);
        assert_eq!(at[4], 2);
        assert_eq!(at[7], usize::MAX);
        // A matrix of the run rows, each row filled with its own row number.
        let m: Vec<f32> = run.iter().flat_map(|&i| [i as f32; 3]).collect();
        let of_capped: Vec<usize> = capped.iter().map(|&i| at[i]).collect();
        assert_eq!(
            gather(&m, 3, &of_capped),
            vec![0., 0., 0., 4., 4., 4., 5., 5., 5.]
        );
        assert_eq!(set_rows(&[false, true, true]), vec![1, 2]);
    }

    fn tiny() -> Predictor {
        tiny_with(FeatureConfig {
            buckets: 4096,
            ..Default::default()
        })
    }

    fn tiny_with(fc: FeatureConfig) -> Predictor {
        let texts: Vec<String> = [
            "nurse | caring for patients",
            "cook | preparing meals",
            "chef | cooking food",
            "baker | baking bread",
        ]
        .iter()
        .cycle()
        .take(200)
        .map(|s| s.to_string())
        .collect();
        let labels = vec!["2221".to_string(), "5120".to_string(), "7512".to_string()];
        let y: Vec<u32> = texts
            .iter()
            .map(|t| {
                if t.starts_with("nurse") {
                    0
                } else if t.starts_with("baker") {
                    2
                } else {
                    1
                }
            })
            .collect();
        let tc = TrainConfig {
            dim: 8,
            epochs: 5,
            batch_size: 32,
            ..Default::default()
        };
        let x = FeatureMatrix::build(&fc, &texts);
        let net = train(
            &TrainData {
                x: &x,
                y: &y,
                repeats: None,
                val: None,
            },
            &fc,
            &tc,
            3,
            None,
            &|_, _, _| {},
        )
        .unwrap();
        let meta = ModelMeta {
            format: FORMAT,
            kind: crate::artifact::ModelKind::Ngram,
            titles: [
                ("2221", "Nursing professionals"),
                ("222", "Nursing and midwifery professionals"),
                ("5120", "Cooks"),
            ]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
            reference_units: Default::default(),
            labels,
            features: fc,
            train: tc,
            temperature: 1.0,
            isotonic: None,
            transformer: None,
            reranker: None,
            fit_sample: None,
            cascade: None,
            title_only: None,
            ngram_training: None,
            transformer_training: None,
            summary: serde_json::Value::Null,
        };
        Predictor::from_parts(meta, Model::Ngram { net }, InferenceConfig::default())
    }

    #[test]
    fn inference_config_refuses_values_that_mean_nothing() {
        let ok = InferenceConfig::default();
        assert!(ok.validate().is_ok());
        let bad = |f: &dyn Fn(&mut InferenceConfig)| {
            let mut c = InferenceConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(&|c| c.confidence_threshold = f64::NAN).starts_with("`confidence_threshold`"));
        assert!(bad(&|c| c.review_threshold = 2.0).starts_with("`review_threshold`"));
        assert!(bad(&|c| c.min_level = 7).starts_with("`min_level`"));
        assert!(bad(&|c| c.grades = [0.5, 0.7, 0.8, 0.9]).starts_with("`grades`"));
        assert!(bad(&|c| c.top_k = 0).starts_with("`top_k`"));
    }

    #[test]
    fn learns_saves_and_loads_identically() {
        let p = tiny();
        let out = p.predict(&[
            "nurse | caring for patients".into(),
            "baker | baking bread".into(),
        ]);
        assert_eq!(out[0].alternatives[0].isco_code, "2221");
        assert_eq!(out[1].alternatives[0].isco_code, "7512");
        let dir = tempfile::tempdir().unwrap();
        p.model().save(dir.path(), &p.meta).unwrap();
        let q = Predictor::load(dir.path(), InferenceConfig::default()).unwrap();
        assert_eq!(p.logits(&["cook".into()]), q.logits(&["cook".into()]));
        // A mismatched record is refused with the file named.
        let mut meta = p.meta.clone();
        meta.train.dim = 9;
        std::fs::write(
            dir.path().join("model.json"),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        let e = Predictor::load(dir.path(), InferenceConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("model.bpk") && e.contains("does not match model.json"),
            "{e}"
        );
    }

    #[test]
    fn titles_coded_elsewhere_are_kept_beside_the_description() {
        use crate::artifact::{Model, TitleOnly};
        let p = tiny();
        // A description as earlier builds wrote it: the titles listed in `model.json`.
        let part: TitleOnly = serde_json::from_value(serde_json::json!({
            "whole": { "temperature": 1.0 },
            "cascade": {
                "ngram": { "temperature": 1.0 },
                "threshold": 0.9,
                "deferred": { "temperature": 1.0 },
                "fit": { "rows": 2, "max_loss": 0.002, "first_step_share": 0.5, "accuracy": 1.0,
                         "accuracy_full": 1.0, "deferred_rows": 0 }
            },
            "fit": { "rows": 2, "external_rows": 2, "accuracy": 1.0, "ece_with_duties_calibration": 0.1,
                     "ece": 0.0, "confidence_with_duties_calibration": 0.9, "confidence": 1.0 },
            "external": [
                { "title": "bread baker", "code": "7512" },
                { "title": "night nurse", "code": "2221" }
            ]
        }))
        .unwrap();
        assert_eq!(part.external.len(), 2);
        let mut meta = p.meta.clone();
        meta.title_only = Some(part.clone());
        let dir = tempfile::tempdir().unwrap();
        p.model().save(dir.path(), &meta).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("model.json")).unwrap()).unwrap();
        assert!(json["title_only"].get("external").is_none(), "{json}");
        let titles = dir.path().join("title_only_titles.parquet");
        assert!(titles.is_file());
        let read = Model::read_meta(dir.path()).unwrap();
        assert_eq!(read.title_only, Some(part.clone()));
        // The earlier layout is read too.
        std::fs::remove_file(&titles).unwrap();
        let mut inline = json.clone();
        inline["title_only"]["external"] = serde_json::to_value(&part.external).unwrap();
        std::fs::write(
            dir.path().join("model.json"),
            serde_json::to_vec(&inline).unwrap(),
        )
        .unwrap();
        assert_eq!(Model::read_meta(dir.path()).unwrap().title_only, Some(part));
        // A model without such titles leaves no table behind.
        p.model().save(dir.path(), &meta).unwrap();
        assert!(titles.is_file());
        p.model().save(dir.path(), &p.meta).unwrap();
        assert!(!titles.exists());
    }

    #[test]
    fn coding_with_the_word_cache_matches_the_training_bags() {
        for field_weights in [None, Some([2.0, 1.5, 1.0])] {
            let fc = FeatureConfig {
                buckets: 4096,
                duties_char_ngrams: true,
                field_weights,
                ..Default::default()
            };
            let p = tiny_with(fc.clone());
            let texts: Vec<String> = [
                "nurse | caring for caring patients",
                "chef baker | baking meals",
                "",
                "| only duties here",
                "cook",
            ]
            .map(String::from)
            .to_vec();
            let fast = p.net().text_logits(&fc, &texts);
            let x = FeatureMatrix::build(&fc, &texts);
            let slow = p.net().logits(&x, &(0..texts.len()).collect::<Vec<_>>());
            assert_eq!(fast.len(), slow.len());
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b} ({field_weights:?})");
            }
        }
    }

    #[test]
    fn explanations_sum_to_the_logit() {
        let weighted = tiny_with(FeatureConfig {
            buckets: 4096,
            duties_char_ngrams: true,
            field_weights: Some([2.0, 1.5, 1.0]),
            ..Default::default()
        });
        for (p, text) in [tiny(), weighted].iter().flat_map(|p| {
            [
                "nurse | caring for patients",
                "chef baker | baking meals",
                "",
            ]
            .map(|t| (p, t))
        }) {
            for code in ["2221", "5120", "7512"] {
                let e = p.explain(text, code).unwrap();
                let sum: f64 = e.features.iter().map(|f| f.2).sum::<f64>() + e.bias;
                assert!(e.exact);
                assert!(
                    (sum - e.logit).abs() < 1e-4,
                    "{text} {code}: {sum} vs {}",
                    e.logit
                );
                let by_word: f64 = e.words.iter().map(|w| w.1).sum::<f64>() + e.bias;
                assert!((by_word - e.logit).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn fallback_and_grades_follow_the_thresholds() {
        let mut p = tiny();
        let labels = p.meta.labels.clone();
        let probs = |a: f32, b: f32, c: f32| vec![a, b, c];
        let _ = labels;
        // Confident: 4-digit, very_high.
        let d = p.decide(&probs(0.95, 0.03, 0.02));
        assert_eq!(
            (
                d.isco_code.as_str(),
                d.level,
                d.is_fallback,
                d.grade.as_str()
            ),
            ("2221", 4, false, "very_high")
        );
        // Unsure between codes of different major groups: no coarser group is likelier than
        // 5120, so it keeps its four digits, and still goes to review.
        let d = p.decide(&probs(0.2, 0.45, 0.35));
        assert_eq!(
            (d.isco_code.as_str(), d.level, d.is_fallback),
            ("5120", 4, false)
        );
        assert!((d.confidence - 0.45).abs() < 1e-6);
        assert!(d.needs_review);
        assert_eq!(d.grade, Grade::VeryLow);
        assert!(p.decide(&probs(0.1, 0.6, 0.3)).needs_review);
        p.config.review_fallbacks = false;
        assert!(!p.decide(&probs(0.1, 0.6, 0.3)).needs_review);
        p.config.review_fallbacks = true;
        // Lower threshold: the 4-digit code stands, graded by the configured cut-offs.
        p.config.confidence_threshold = 0.6;
        let d = p.decide(&probs(0.75, 0.15, 0.10));
        assert_eq!(
            (d.isco_code.as_str(), d.grade.as_str(), d.needs_review),
            ("2221", "medium", false)
        );
        p.config.confidence_threshold = 0.9;
        let d = p.decide(&probs(0.82, 0.1, 0.08));
        assert_eq!((d.isco_code.as_str(), d.level), ("2221", 4));
        assert_eq!(d.grade, Grade::High);
        assert_eq!(d.alternatives.len(), 3);

        // Codes that share groups: the fallback takes the finest group that passes, or,
        // when none does, the finest code no coarser group is likelier than.
        p.meta.labels = ["2221", "2222", "2211"].map(String::from).to_vec();
        p.groups = level_groups(&p.meta.labels);
        let coded = |p: &Predictor, a, b, c| {
            let d = p.decide(&probs(a, b, c));
            (d.isco_code.as_str().to_string(), d.level, d.is_fallback)
        };
        // 222 sums 0.93: three digits.
        assert_eq!(coded(&p, 0.5, 0.43, 0.07), ("222".into(), 3, true));
        // 222 sums 0.6 and 22 0.99: two digits.
        assert_eq!(coded(&p, 0.35, 0.25, 0.39), ("22".into(), 2, true));
        // 222 sums 0.7, 22 the same: three digits, the most that 0.7 buys.
        assert_eq!(coded(&p, 0.4, 0.3, 0.0), ("222".into(), 3, true));
        // 2211 alone in 221, and 22 adds only a little: two digits, since it is likelier.
        assert_eq!(coded(&p, 0.05, 0.05, 0.6), ("22".into(), 2, true));
        // Nothing coarser adds anything: four digits.
        assert_eq!(coded(&p, 0.0, 0.0, 0.6), ("2211".into(), 4, false));
        // A coarser code at high confidence still goes to review, unless told otherwise.
        assert!(p.decide(&probs(0.5, 0.43, 0.07)).needs_review);
        p.config.review_fallbacks = false;
        assert!(!p.decide(&probs(0.5, 0.43, 0.07)).needs_review);
        // min_level 4 allows no fallback: the row goes to review only under review_threshold.
        p.config.review_fallbacks = true;
        p.config.min_level = 4;
        assert!(!p.decide(&probs(0.0, 0.0, 0.6)).needs_review);
    }

    #[test]
    fn rows_set_apart_take_their_own_calibration_and_the_others_keep_theirs() {
        let logits = vec![2.0f32, 0.0, 0.0, 1.0, 3.0, 0.0, 0.5, 0.5, 4.0];
        let usual = Calibrated {
            temperature: 1.0,
            isotonic: None,
        };
        let own = Calibrated {
            temperature: 3.0,
            isotonic: None,
        };
        let mixed = calibrated_by(&logits, 3, &[false, true, false], &usual, &own);
        let a = calibrated(&logits, 3, &usual);
        let b = calibrated(&logits, 3, &own);
        assert_eq!(&mixed[0..3], &a[0..3]);
        assert_eq!(&mixed[3..6], &b[3..6]);
        assert_eq!(&mixed[6..9], &a[6..9]);
        assert!(
            mixed[4] < a[4],
            "a higher temperature lowers the top probability"
        );
        assert_eq!(calibrated_by(&logits, 3, &[false; 3], &usual, &own), a);
        assert_eq!(calibrated_by(&logits, 3, &[true; 3], &usual, &own), b);
    }
}
