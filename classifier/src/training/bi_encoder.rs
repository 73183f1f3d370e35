//! Training the retrieval's sentence encoder on the office's own data, the way
//! sentence-transformers' MultipleNegativesRankingLoss does, so that titles phrased unlike
//! the records land next to the titles of their code.
//!
//! **Pairs.** Everything comes from the training split and the reference classification
//! (never from evaluation files):
//!
//! | kind | anchor | positive |
//! |---|---|---|
//! | [`PairKind::TitleTitle`] | a distinct title (records' titles with their majority code, the reference's unit titles and example occupations) | another title of the same code |
//! | [`PairKind::TitleGroup`] | a distinct title | the unit group's title and the lead sentence of its definition |
//! | [`PairKind::ClauseClause`] | a distinct duty clause (records' clauses, the reference's tasks) | another clause of the same code |
//!
//! Titles with no other title of their code pair with their group; the group text is also
//! the positive for a share of the others (`group_share`), so the reference's wording anchors
//! every code. Duty clauses keep the duties index (searched clause by clause) aligned with the
//! same encoder.
//!
//! **Loss.** For a batch of B pairs, every anchor is scored (cosine × `scale`) against every
//! positive in the batch — and against every mined hard negative when there are any — and
//! cross-entropy pushes it to its own positive. The other pairs' positives are the in-batch
//! negatives, so a batch never holds two pairs of one code (nor a hard negative of a code
//! another pair is anchored in): they would be false negatives.
//!
//! **Hard negatives** (`hard_negatives`): before training, the base encoder embeds every
//! candidate text once, and each anchor gets, among the three texts of another code nearest
//! to it, one at random — the retrieval's own confusions, mined with the retrieval's encoder.
//!
//! **CPU budget.** As for the transformer: only the top `train_layers` layers learn (the
//! embeddings and the layers below run without a graph), AdamW with linear warm-up and decay,
//! the schedule planned from the pace of the first steps to end inside `max_seconds`, and the
//! best checkpoint by validation in-batch accuracy (validation records' titles against titles
//! of their code from the training split) is the one kept. A step's texts are encoded in
//! length-sorted chunks: padding a batch of short titles to its longest
//! definition would more than double the matrix products, which are most of a step.
//!
//! The result is an encoder directory in the standard layout (`config.json`,
//! `model.safetensors` with Hugging Face tensor names and every tensor the base file has,
//! `tokenizer.json`, the sentence-transformers files of the base, and `modules.json` and the
//! pooling config where the base has none), loadable by [`Encoder::load`] and by
//! sentence-transformers alike.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::data::{Examples, Progress};
use super::ensemble::{reference_entries, titles_and_clauses};
use crate::Taxonomy;
use crate::augment::parse_definition;
use crate::encoder::{Encoder, EncoderLayer};
use crate::error::Error;
use crate::retrieval::{DiskCache, EmbeddingCache, split_text};
use crate::rng::Rng;
use crate::text::normalize;

/// How the encoder is trained (`[encoder_training]`; saved with the encoder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderTrainSpec {
    /// Top transformer layers that learn (capped at the encoder's depth; the embeddings never
    /// do).
    pub train_layers: usize,
    /// Pairs per batch (each anchor's in-batch negatives are the other pairs' positives).
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Share of the planned steps spent warming the learning rate up.
    pub warmup: f64,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Cosine similarities are multiplied by this before the softmax (sentence-transformers'
    /// default is 20).
    pub scale: f32,
    /// Passes over the pairs at most.
    pub epochs: usize,
    /// Pairs drawn (0: every anchor once).
    pub max_pairs: usize,
    /// Share of the pairs that are duty clauses.
    pub clause_share: f64,
    /// Share of the title anchors whose positive is their unit group's text even when other
    /// titles of the code exist.
    pub group_share: f64,
    /// Mine one hard negative per anchor with the base encoder.
    pub hard_negatives: bool,
    /// Tokens per text.
    pub max_seq_length: usize,
    /// Wall-clock budget in seconds (0: none); the schedule is planned to end inside it.
    pub max_seconds: f64,
    /// Validation pairs scored at each check.
    pub eval_pairs: usize,
    /// Checks over the planned run (the best checkpoint is kept).
    pub evaluations: usize,
    /// Seed of the pairs, the batches and the hard negatives' draw.
    pub seed: u64,
    /// Where the encoder trains (see [`crate::device`]).
    pub device: crate::device::DeviceChoice,
    /// The float type of its products there (see [`crate::device`]).
    pub precision: crate::device::Precision,
}

impl Default for EncoderTrainSpec {
    fn default() -> Self {
        EncoderTrainSpec {
            train_layers: 6,
            batch_size: 64,
            lr: 5e-5,
            warmup: 0.1,
            weight_decay: 0.01,
            scale: 20.0,
            epochs: 1,
            max_pairs: 80_000,
            clause_share: 0.25,
            group_share: 0.2,
            hard_negatives: true,
            max_seq_length: 32,
            max_seconds: 600.0,
            eval_pairs: 2_000,
            evaluations: 5,
            seed: 42,
            device: crate::device::DeviceChoice::Auto,
            precision: crate::device::Precision::Fp32,
        }
    }
}

impl EncoderTrainSpec {
    /// Checks the values, naming the key of the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        super::spec::positive(&[
            ("batch_size", self.batch_size),
            ("epochs", self.epochs),
            ("max_seq_length", self.max_seq_length),
            ("train_layers", self.train_layers),
            ("evaluations", self.evaluations),
            ("eval_pairs", self.eval_pairs),
        ])?;
        if self.batch_size < 2 {
            return Err(
                "`batch_size` must be at least 2: in-batch negatives need other pairs".into(),
            );
        }
        for (k, v) in [
            ("clause_share", self.clause_share),
            ("group_share", self.group_share),
            ("warmup", self.warmup),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("`{k}` must be between 0 and 1, not {v}"));
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("`lr` must be a positive number, not {}", self.lr));
        }
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(format!(
                "`scale` must be a positive number, not {}",
                self.scale
            ));
        }
        if self.max_seconds < 0.0 {
            return Err("`max_seconds` must be 0 (no budget) or positive".into());
        }
        self.precision.check_training()?;
        crate::device::place(self.device, self.precision)?;
        Ok(())
    }
}

/// What a training pair pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairKind {
    /// A title and another title of its code.
    TitleTitle,
    /// A title and its unit group's title and definition.
    TitleGroup,
    /// A duty clause and another clause of its code.
    ClauseClause,
}

/// One pair: indices into [`Pairs::texts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// The text that is scored against the candidates.
    pub anchor: u32,
    /// The candidate it must rank first.
    pub positive: u32,
    /// A near text of another code, when mined.
    pub negative: Option<u32>,
    /// The anchor's code (index into [`Pairs::codes`]).
    pub code: u32,
    /// What it pairs.
    pub kind: PairKind,
}

/// The texts and pairs of a training run.
#[derive(Debug, Clone, Default)]
pub struct Pairs {
    /// Distinct texts.
    pub texts: Vec<String>,
    /// Code of each text (index into `codes`).
    pub text_code: Vec<u32>,
    /// Whether each text is a duty clause (else a title or a group text).
    pub clause: Vec<bool>,
    /// The codes, sorted.
    pub codes: Vec<String>,
    /// The pairs.
    pub pairs: Vec<Pair>,
}

/// Texts interned once, with their code.
#[derive(Default)]
struct Table {
    texts: Vec<String>,
    code: Vec<u32>,
    clause: Vec<bool>,
    ids: HashMap<String, u32>,
}

impl Table {
    fn id(&mut self, text: &str, code: u32, clause: bool) -> u32 {
        if let Some(&i) = self.ids.get(text) {
            return i;
        }
        let i = self.texts.len() as u32;
        self.texts.push(text.to_string());
        self.code.push(code);
        self.clause.push(clause);
        self.ids.insert(text.to_string(), i);
        i
    }
}

/// Candidate pools per code: the texts of one kind (titles or clauses).
type Pools = BTreeMap<u32, Vec<u32>>;

/// The unit group's text that title anchors pair with: its title and its definition's lead.
fn group_text(title: &str, definition: &str) -> String {
    let (lead, _, _) = parse_definition(definition);
    normalize(&format!("{title}. {lead}"))
}

/// Builds the training pairs from the training split and the reference (see the module doc).
pub fn build_pairs(spec: &EncoderTrainSpec, tr: Examples<'_>, tax: &Taxonomy) -> Pairs {
    let (ref_titles, ref_clauses) = reference_entries(tax);
    let (rec_titles, rec_clauses) = titles_and_clauses(tr);
    let codes: Vec<String> = ref_titles
        .iter()
        .chain(&rec_titles)
        .chain(&ref_clauses)
        .chain(&rec_clauses)
        .map(|(_, c, _)| c.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let code_of = |c: &str| {
        codes
            .binary_search_by(|x| x.as_str().cmp(c))
            .expect("a code") as u32
    };
    let mut table = Table::default();
    let mut titles: Pools = BTreeMap::new();
    let mut clauses: Pools = BTreeMap::new();
    for (entries, pool, is_clause) in [
        (ref_titles.iter().chain(&rec_titles), &mut titles, false),
        (ref_clauses.iter().chain(&rec_clauses), &mut clauses, true),
    ] {
        for (t, c, _) in entries {
            let k = code_of(c);
            let before = table.texts.len();
            let i = table.id(t, k, is_clause);
            if table.texts.len() > before {
                pool.entry(k).or_default().push(i);
            }
        }
    }
    let mut groups: HashMap<u32, u32> = HashMap::new();
    for g in tax.units() {
        if g.title.is_empty() {
            continue;
        }
        if let Ok(k) = codes.binary_search(&g.code) {
            let text = group_text(&g.title, &g.definition);
            if !text.is_empty() {
                groups.insert(k as u32, table.id(&text, k as u32, false));
            }
        }
    }

    let mut rng = Rng::keyed(spec.seed, "encoder pairs");
    let mut title_pairs = Vec::new();
    for (&k, pool) in &titles {
        for &a in pool {
            let other = || pool.iter().filter(|&&p| p != a).count() > 0;
            let group = groups.get(&k).copied();
            let use_group = group.is_some() && (!other() || rng.unit() < spec.group_share);
            let positive = if use_group {
                group
            } else if other() {
                let mut p = pool[rng.below(pool.len())];
                while p == a {
                    p = pool[rng.below(pool.len())];
                }
                Some(p)
            } else {
                None
            };
            if let Some(p) = positive.filter(|&p| p != a) {
                title_pairs.push(Pair {
                    anchor: a,
                    positive: p,
                    negative: None,
                    code: k,
                    kind: if use_group {
                        PairKind::TitleGroup
                    } else {
                        PairKind::TitleTitle
                    },
                });
            }
        }
    }
    let mut clause_pairs = Vec::new();
    for (&k, pool) in &clauses {
        if pool.len() < 2 {
            continue;
        }
        for &a in pool {
            let mut p = pool[rng.below(pool.len())];
            while p == a {
                p = pool[rng.below(pool.len())];
            }
            clause_pairs.push(Pair {
                anchor: a,
                positive: p,
                negative: None,
                code: k,
                kind: PairKind::ClauseClause,
            });
        }
    }
    rng.shuffle(&mut title_pairs);
    rng.shuffle(&mut clause_pairs);
    if spec.max_pairs > 0 {
        let want_clauses =
            ((spec.max_pairs as f64 * spec.clause_share).round() as usize).min(clause_pairs.len());
        let want_titles = (spec.max_pairs - want_clauses).min(title_pairs.len());
        // A share one side cannot fill goes to the other.
        let want_clauses = (spec.max_pairs - want_titles).min(clause_pairs.len());
        title_pairs.truncate(want_titles);
        clause_pairs.truncate(want_clauses);
    } else {
        let want = (title_pairs.len() as f64 * spec.clause_share
            / (1.0 - spec.clause_share).max(1e-9))
        .round() as usize;
        clause_pairs.truncate(want.min(clause_pairs.len()));
    }
    let mut pairs = title_pairs;
    pairs.extend(clause_pairs);
    rng.shuffle(&mut pairs);
    Pairs {
        texts: table.texts,
        text_code: table.code,
        clause: table.clause,
        codes,
        pairs,
    }
}

/// Batches of pair indices in `order` where no two pairs share a code and no hard negative
/// has the code of another pair in the batch (both would be false negatives). Pairs that
/// conflict wait for a later batch; a last partial batch is kept when it has two pairs or more.
pub fn code_free_batches(p: &Pairs, order: &[usize], batch: usize) -> Vec<Vec<usize>> {
    let neg_code = |i: usize| p.pairs[i].negative.map(|n| p.text_code[n as usize]);
    let mut queue: std::collections::VecDeque<usize> = order.iter().copied().collect();
    let mut out = Vec::new();
    while !queue.is_empty() {
        let mut cur: Vec<usize> = Vec::with_capacity(batch);
        let mut anchors: HashSet<u32> = HashSet::new();
        let mut negs: HashSet<u32> = HashSet::new();
        let mut skipped = Vec::new();
        while cur.len() < batch {
            let Some(i) = queue.pop_front() else { break };
            let c = p.pairs[i].code;
            let n = neg_code(i);
            if anchors.contains(&c) || negs.contains(&c) || n.is_some_and(|n| anchors.contains(&n))
            {
                skipped.push(i);
                continue;
            }
            anchors.insert(c);
            negs.extend(n);
            cur.push(i);
        }
        // Pairs that did not fit wait at the front, in their order.
        for &i in skipped.iter().rev() {
            queue.push_front(i);
        }
        if cur.len() < 2 {
            // What is left cannot share a batch.
            break;
        }
        out.push(cur);
    }
    out
}

/// Mines one hard negative per pair: among the three texts of the anchor's kind (titles or
/// clauses) nearest to it under `encoder` with another code, one at random. `vectors` are the
/// base encoder's normalised vectors of every text.
fn mine_negatives(p: &mut Pairs, vectors: &[f32], dim: usize, device: &Device, seed: u64) {
    for clause in [false, true] {
        // Candidates: the texts of this kind (group texts count as titles).
        let cands: Vec<u32> = (0..p.texts.len() as u32)
            .filter(|&i| p.clause[i as usize] == clause)
            .collect();
        let pairs: Vec<usize> = (0..p.pairs.len())
            .filter(|&i| (p.pairs[i].kind == PairKind::ClauseClause) == clause)
            .collect();
        if cands.len() < 2 || pairs.is_empty() {
            continue;
        }
        let mut cv = Vec::with_capacity(cands.len() * dim);
        for &c in &cands {
            cv.extend_from_slice(&vectors[c as usize * dim..(c as usize + 1) * dim]);
        }
        let ct =
            Tensor::<2>::from_data(TensorData::new(cv, [cands.len(), dim]), device).transpose();
        for chunk in pairs.chunks(256) {
            let mut av = Vec::with_capacity(chunk.len() * dim);
            for &i in chunk {
                let a = p.pairs[i].anchor as usize;
                av.extend_from_slice(&vectors[a * dim..(a + 1) * dim]);
            }
            let s = Tensor::<2>::from_data(TensorData::new(av, [chunk.len(), dim]), device)
                .matmul(ct.clone())
                .into_data()
                .try_to_vec::<f32>()
                .expect("float similarities");
            for (row, &i) in s.chunks(cands.len()).zip(chunk) {
                let pair = p.pairs[i];
                let mut top: [(f32, u32); 3] = [(f32::NEG_INFINITY, u32::MAX); 3];
                for (j, &sim) in row.iter().enumerate() {
                    let t = cands[j];
                    if sim <= top[2].0
                        || t == pair.anchor
                        || t == pair.positive
                        || p.text_code[t as usize] == pair.code
                    {
                        continue;
                    }
                    top[2] = (sim, t);
                    top.sort_by(|a, b| b.0.total_cmp(&a.0));
                }
                let found: Vec<u32> = top
                    .iter()
                    .filter(|x| x.1 != u32::MAX)
                    .map(|x| x.1)
                    .collect();
                if !found.is_empty() {
                    let mut rng = Rng::keyed(seed ^ i as u64, "hard negative");
                    p.pairs[i].negative = Some(found[rng.below(found.len())]);
                }
            }
        }
    }
}

/// Validation pairs: validation records' titles against a training title of their code (or
/// the group text when the code has no other title).
fn validation_pairs(spec: &EncoderTrainSpec, train: &Pairs, va: Examples<'_>) -> Pairs {
    let mut pools: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for pair in &train.pairs {
        if pair.kind != PairKind::ClauseClause {
            pools.entry(pair.code).or_default().push(pair.positive);
        }
    }
    let mut table = Table::default();
    let mut rng = Rng::keyed(spec.seed, "encoder validation");
    let mut rows: Vec<usize> = (0..va.len()).collect();
    rng.shuffle(&mut rows);
    let mut pairs = Vec::new();
    let mut seen = HashSet::new();
    for i in rows {
        if pairs.len() >= spec.eval_pairs {
            break;
        }
        let (title, _) = split_text(&va.text[i]);
        let Ok(k) = train.codes.binary_search(&va.isco_code[i]) else {
            continue;
        };
        let Some(pool) = pools.get(&(k as u32)) else {
            continue;
        };
        if title.is_empty() || !seen.insert(title.to_string()) {
            continue;
        }
        let p = pool[rng.below(pool.len())];
        if train.texts[p as usize] == title {
            continue;
        }
        let a = table.id(title, k as u32, false);
        let pt = table.id(&train.texts[p as usize], k as u32, false);
        pairs.push(Pair {
            anchor: a,
            positive: pt,
            negative: None,
            code: k as u32,
            kind: PairKind::TitleTitle,
        });
    }
    Pairs {
        texts: table.texts,
        text_code: table.code,
        clause: table.clause,
        codes: train.codes.clone(),
        pairs,
    }
}

/// Why training stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// Every planned epoch ran.
    Epochs,
    /// The wall-clock budget ended it.
    Budget,
    /// Validation stopped improving for the configured number of checks.
    #[serde(alias = "early stopping")]
    EarlyStopping,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Stopped::Epochs => "epochs",
            Stopped::Budget => "budget",
            Stopped::EarlyStopping => "early stopping",
        })
    }
}

/// One validation check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncoderCheckpoint {
    /// Optimiser steps so far.
    pub step: usize,
    /// Seconds since the start.
    pub seconds: f64,
    /// Mean training loss since the previous check.
    pub loss: f64,
    /// In-batch accuracy of the validation pairs.
    pub validation_accuracy: f64,
}

/// What training the encoder did (written beside it as `training.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncoderTrainReport {
    /// The settings.
    pub spec: EncoderTrainSpec,
    /// Pairs of each kind.
    pub pairs: BTreeMap<PairKind, usize>,
    /// Pairs with a mined hard negative.
    pub hard_negatives: usize,
    /// Seconds spent embedding with the base encoder and mining.
    pub mining_seconds: f64,
    /// Vectors the base encoder computed for mining (the rest came from the shared cache).
    pub mining_embedded: usize,
    /// Validation pairs.
    pub validation_pairs: usize,
    /// Layers that learned.
    pub train_layers: usize,
    /// Optimiser steps planned (after timing the first ones against the budget).
    pub planned_steps: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Pairs trained on (counting repeats).
    pub pairs_seen: usize,
    /// Seconds of training per 1,000 pairs (checks excluded).
    pub seconds_per_1000_pairs: f64,
    /// Validation in-batch accuracy of the base encoder.
    pub validation_before: f64,
    /// The best validation in-batch accuracy, at `best_step` (the weights kept).
    pub validation_after: f64,
    /// Step of the best check.
    pub best_step: usize,
    /// Why it stopped.
    pub stopped_by: Stopped,
    /// Seconds in all.
    pub seconds: f64,
    /// Every check.
    pub checkpoints: Vec<EncoderCheckpoint>,
}

impl EncoderTrainReport {
    /// A line for the stage report.
    pub fn line(&self) -> String {
        format!(
            "{} pairs ({} with a hard negative), top {} layers, {} of {} planned steps in {:.0}s ({:.1}s per 1,000 pairs, stopped by {}); validation in-batch accuracy {:.4} -> {:.4}",
            self.pairs.values().sum::<usize>(),
            self.hard_negatives,
            self.train_layers,
            self.steps,
            self.planned_steps,
            self.seconds,
            self.seconds_per_1000_pairs,
            self.stopped_by,
            self.validation_before,
            self.validation_after
        )
    }
}

/// The layers that learn.
#[derive(Module, Debug)]
struct Top {
    layers: Vec<EncoderLayer>,
}

/// One way through the encoder: the frozen part (no graph) on `plain`, then `top` on
/// `device` (with a graph when it is an autodiff device and `differentiable`).
struct Pass<'a> {
    encoder: &'a Encoder,
    frozen: usize,
    top: &'a Top,
    plain: &'a Device,
    device: &'a Device,
    differentiable: bool,
}

/// Texts per forward pass when [`Pass::vectors`] runs a length-sorted batch in chunks.
const LENGTH_CHUNK: usize = 32;

impl Pass<'_> {
    /// Normalised sentence vectors of token rows, in their order.
    fn vectors(&self, rows: &[&[u32]]) -> Tensor<2> {
        // Each text is encoded on its own (mean pooling over its own tokens), so texts can be
        // grouped freely: sorted by length and run in chunks, a batch of short titles and long
        // definitions pads each text to the length of its neighbours, not to the longest text
        // of the batch. That is most of the cost of a step, which is matrix products over
        // padded tokens.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| rows[i].len());
        let parts: Vec<Tensor<2>> = order
            .chunks(LENGTH_CHUNK)
            .map(|c| self.padded(&c.iter().map(|&i| rows[i]).collect::<Vec<_>>()))
            .collect();
        let sorted = Tensor::cat(parts, 0);
        let mut back = vec![0i64; rows.len()];
        for (pos, &i) in order.iter().enumerate() {
            back[i] = pos as i64;
        }
        let back = Tensor::<1, Int>::from_data(TensorData::new(back, [rows.len()]), self.device);
        sorted.select(0, back)
    }

    /// [`Pass::vectors`] of one batch padded to its longest row.
    fn padded(&self, rows: &[&[u32]]) -> Tensor<2> {
        let model = self.encoder.model();
        let inp = self.encoder.batch(rows, self.plain);
        let h = model.embed(inp.ids, inp.positions);
        let precision = self.encoder.precision();
        let h = model.layers(h, inp.pad.clone(), 0..self.frozen, precision);
        let (mut x, pad, keep) = if self.differentiable {
            (
                Tensor::<3>::from_data(h.into_data(), self.device),
                Tensor::from_data(inp.pad.into_data(), self.device),
                Tensor::<2>::from_data(inp.keep.into_data(), self.device),
            )
        } else {
            (h, inp.pad, inp.keep)
        };
        let bias = model.position_bias_on(x.dims()[1], &x.device());
        for layer in &self.top.layers {
            x = layer.forward(x, pad.clone(), bias.clone(), self.differentiable, precision);
        }
        let v = self.encoder.pool(x, keep);
        let norm = v.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
        v / norm
    }
}

/// Cross-entropy of anchors against [positives; negatives] with the diagonal as the target.
fn mnr_scores(a: Tensor<2>, p: Tensor<2>, n: Option<Tensor<2>>, scale: f32) -> Tensor<2> {
    let cands = match n {
        Some(n) => Tensor::cat(vec![p, n], 0),
        None => p,
    };
    a.matmul(cands.transpose()) * scale
}

/// In-batch top-1 accuracy of validation pairs (batches of `batch` without repeated codes).
fn in_batch_accuracy(
    encoder: &Encoder,
    frozen: usize,
    top: &Top,
    v: &Pairs,
    ids: &[Vec<u32>],
    batch: usize,
) -> f64 {
    let order: Vec<usize> = (0..v.pairs.len()).collect();
    let dev = encoder.device().clone();
    let pass = Pass {
        encoder,
        frozen,
        top,
        plain: &dev,
        device: &dev,
        differentiable: false,
    };
    let mut right = 0usize;
    let mut n = 0usize;
    for b in code_free_batches(v, &order, batch) {
        let a: Vec<&[u32]> = b
            .iter()
            .map(|&i| ids[v.pairs[i].anchor as usize].as_slice())
            .collect();
        let p: Vec<&[u32]> = b
            .iter()
            .map(|&i| ids[v.pairs[i].positive as usize].as_slice())
            .collect();
        let m = a.len();
        let all = pass.vectors(&[a, p].concat());
        let av = all.clone().slice(0..m);
        let pv = all.slice(m..2 * m);
        let s = mnr_scores(av, pv, None, 1.0);
        let best = s
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .expect("int argmax");
        right += best
            .iter()
            .enumerate()
            .filter(|(i, j)| *i as i64 == **j)
            .count();
        n += b.len();
    }
    right as f64 / n.max(1) as f64
}

/// An encoder trained on the office's pairs, with what training did.
pub struct TrainedEncoder {
    /// The encoder (its top layers trained); [`Encoder::save`] writes it.
    pub encoder: Encoder,
    /// What training did.
    pub report: EncoderTrainReport,
}

impl TrainedEncoder {
    /// Writes the encoder directory and `training.json` beside its files.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        self.encoder.save(dir)?;
        let p = dir.join("training.json");
        std::fs::write(
            &p,
            serde_json::to_vec_pretty(&self.report).expect("report serialises"),
        )
        .map_err(|source| Error::Io {
            action: "write",
            path: p,
            source,
        })
    }
}

/// Trains the encoder in `base` on pairs from `train` and the reference, checking on
/// `validation` (see the module doc). `shared_cache` is where the base encoder's vectors are
/// shared between stages (hard-negative mining reads and adds to it).
pub fn train_encoder(
    base: &Path,
    spec: &EncoderTrainSpec,
    train: Examples<'_>,
    validation: Examples<'_>,
    tax: &Taxonomy,
    shared_cache: Option<&Path>,
    progress: &dyn Progress,
) -> Result<TrainedEncoder, Error> {
    let started = Instant::now();
    spec.validate()
        .map_err(|e| Error::Model(format!("[encoder_training] {e}")))?;
    let (device, precision) = crate::device::place(spec.device, spec.precision)
        .map_err(|e| Error::Model(format!("[encoder_training] {e}")))?;
    let mut encoder = Encoder::load_on(base, spec.max_seq_length, &device)?;
    encoder.set_precision(precision);
    progress.start(1, "building the encoder's training pairs");
    let mut pairs = build_pairs(spec, train, tax);
    if pairs.pairs.len() < 2 {
        return Err(Error::Model(
            "there are too few training pairs for the encoder: it needs at least two codes with titles; add records or a reference file".into(),
        ));
    }
    let val = validation_pairs(spec, &pairs, validation);
    let d = encoder.dim();
    let plain = encoder.device().clone();

    // Hard negatives, mined with the base encoder (its vectors shared with other stages).
    let t_mine = Instant::now();
    let mut mining_embedded = 0;
    if spec.hard_negatives {
        let mut cache = EmbeddingCache::new(d);
        if let Some(root) = shared_cache {
            match DiskCache::open(&root.join(encoder.fingerprint()?), d) {
                Ok(disk) => cache.attach(Arc::new(disk)),
                Err(e) => tracing::warn!("the shared embedding cache is not used: {e}"),
            }
        }
        progress.start(1, "embedding the pairs' texts for hard negatives");
        let (v, n) = cache.embed(&encoder, &pairs.texts, &|done, n| {
            progress.message(&format!("embedding for hard negatives {done}/{n}"))
        })?;
        mining_embedded = n;
        if let Err(e) = cache.flush() {
            tracing::warn!("could not write to the shared embedding cache: {e}");
        }
        progress.message("mining hard negatives");
        mine_negatives(&mut pairs, &v, d, &plain, spec.seed);
    }
    let mining_seconds = t_mine.elapsed().as_secs_f64();

    let refs: Vec<&str> = pairs.texts.iter().map(String::as_str).collect();
    let ids = encoder.tokenize(&refs)?;
    let vrefs: Vec<&str> = val.texts.iter().map(String::as_str).collect();
    let vids = encoder.tokenize(&vrefs)?;

    let depth = encoder.config.num_hidden_layers;
    let k = spec.train_layers.min(depth).max(1).min(depth);
    let frozen = depth - k;
    let ad = plain.clone().autodiff();
    ad.seed(spec.seed);
    let base_top = Top {
        layers: encoder.model().encoder.layers[frozen..].to_vec(),
    };
    let validation_before = if val.pairs.len() >= 2 {
        in_batch_accuracy(&encoder, frozen, &base_top, &val, &vids, spec.batch_size)
    } else {
        0.0
    };
    let mut top = base_top.clone().fork(&ad).train();
    let mut opt = AdamWConfig::new()
        .with_weight_decay(spec.weight_decay)
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);

    let mut order_rng = Rng::keyed(spec.seed, "encoder batches");
    let epoch_batches = |rng: &mut Rng| {
        let mut order: Vec<usize> = (0..pairs.pairs.len()).collect();
        rng.shuffle(&mut order);
        code_free_batches(&pairs, &order, spec.batch_size)
    };
    let mut epoch = epoch_batches(&mut order_rng);
    let per_epoch = epoch.len().max(1);
    let epoch_steps = per_epoch * spec.epochs;
    let mut planned = epoch_steps;
    let mut planned_fixed = spec.max_seconds <= 0.0;
    let mut eval_every = (planned / spec.evaluations).max(1);
    let lr_at = |step: usize, planned: usize| linear_schedule(spec.lr, spec.warmup, step, planned);
    let timing_steps = 10;
    let mut step = 0usize;
    let mut pairs_seen = 0usize;
    let mut train_seconds = 0.0;
    let mut loss_sum = 0.0;
    let mut loss_n = 0usize;
    let mut checkpoints = Vec::new();
    let mut best: (f64, usize, Top) = (validation_before, 0, base_top);
    let mut stopped_by = Stopped::Epochs;
    progress.start(planned as u64, "training the encoder");
    let mut e = 0;
    'outer: loop {
        for b in std::mem::take(&mut epoch) {
            let t0 = Instant::now();
            let rows = |f: &dyn Fn(&Pair) -> u32| -> Vec<&[u32]> {
                b.iter()
                    .map(|&i| ids[f(&pairs.pairs[i]) as usize].as_slice())
                    .collect()
            };
            // Anchors, positives and negatives in one call, so that its length sort spans
            // all three.
            let mut texts = rows(&|p| p.anchor);
            texts.extend(rows(&|p| p.positive));
            texts.extend(
                b.iter()
                    .filter_map(|&i| pairs.pairs[i].negative.map(|n| ids[n as usize].as_slice())),
            );
            let all = Pass {
                encoder: &encoder,
                frozen,
                top: &top,
                plain: &plain,
                device: &ad,
                differentiable: true,
            }
            .vectors(&texts);
            let m = b.len();
            let a = all.clone().slice(0..m);
            let p = all.clone().slice(m..2 * m);
            let n = (texts.len() > 2 * m).then(|| all.slice(2 * m..texts.len()));
            let scores = mnr_scores(a, p, n, spec.scale);
            let target: Vec<i64> = (0..b.len() as i64).collect();
            let target = Tensor::<1, Int>::from_data(TensorData::new(target, [b.len()]), &ad);
            let loss = loss_fn.forward(scores, target);
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            loss_n += 1;
            let mut grads = loss.backward();
            let g = GradientsParams::from_module(&mut grads, &top);
            top = opt.step(lr_at(step, planned), top, g);
            step += 1;
            pairs_seen += b.len();
            train_seconds += t0.elapsed().as_secs_f64();
            progress.inc(1);

            if !planned_fixed && step == timing_steps {
                let per_step = train_seconds / step as f64;
                let left = spec.max_seconds * 0.95 - started.elapsed().as_secs_f64();
                let fit = step + (left.max(0.0) / per_step) as usize;
                planned = epoch_steps.min(fit.max(step + 1));
                eval_every = (planned / spec.evaluations).max(1);
                planned_fixed = true;
                progress.start(planned as u64, "training the encoder");
                progress.inc(step as u64);
            }
            let over_budget =
                spec.max_seconds > 0.0 && started.elapsed().as_secs_f64() >= spec.max_seconds;
            let done = step >= planned;
            if step.is_multiple_of(eval_every) || done || over_budget {
                let model = top.valid();
                let acc = if val.pairs.len() >= 2 {
                    in_batch_accuracy(&encoder, frozen, &model, &val, &vids, spec.batch_size)
                } else {
                    // No validation pairs: the last weights are kept.
                    f64::INFINITY
                };
                checkpoints.push(EncoderCheckpoint {
                    step,
                    seconds: started.elapsed().as_secs_f64(),
                    loss: loss_sum / loss_n.max(1) as f64,
                    validation_accuracy: if acc.is_finite() { acc } else { 0.0 },
                });
                loss_sum = 0.0;
                loss_n = 0;
                progress.message(&format!(
                    "step {step}/{planned}: validation in-batch accuracy {:.4}",
                    if acc.is_finite() { acc } else { 0.0 }
                ));
                if acc >= best.0 {
                    best = (acc, step, model);
                }
                // Re-plan with the measured pace (checks included).
                if spec.max_seconds > 0.0 && !done && !over_budget {
                    let elapsed = started.elapsed().as_secs_f64();
                    let left = spec.max_seconds * 0.97 - elapsed;
                    let fit = step + (left.max(0.0) / (elapsed / step as f64)) as usize;
                    planned = epoch_steps.min(fit.max(step + 1));
                }
            }
            if over_budget {
                stopped_by = Stopped::Budget;
                break 'outer;
            }
            if done {
                stopped_by = if planned < epoch_steps {
                    Stopped::Budget
                } else {
                    Stopped::Epochs
                };
                break 'outer;
            }
        }
        e += 1;
        if e >= spec.epochs {
            break;
        }
        epoch = epoch_batches(&mut order_rng);
    }
    let (best_acc, best_step, best_top) = best;
    let mut model = encoder.model().clone();
    for (slot, layer) in model.encoder.layers[frozen..]
        .iter_mut()
        .zip(best_top.layers)
    {
        *slot = layer;
    }
    encoder.set_model(model);
    let mut kinds: BTreeMap<PairKind, usize> = BTreeMap::new();
    for p in &pairs.pairs {
        *kinds.entry(p.kind).or_default() += 1;
    }
    let report = EncoderTrainReport {
        spec: spec.clone(),
        pairs: kinds,
        hard_negatives: pairs.pairs.iter().filter(|p| p.negative.is_some()).count(),
        mining_seconds,
        mining_embedded,
        validation_pairs: val.pairs.len(),
        train_layers: k,
        planned_steps: planned,
        steps: step,
        pairs_seen,
        seconds_per_1000_pairs: train_seconds * 1000.0 / pairs_seen.max(1) as f64,
        validation_before,
        validation_after: if best_acc.is_finite() { best_acc } else { 0.0 },
        best_step,
        stopped_by,
        seconds: started.elapsed().as_secs_f64(),
        checkpoints,
    };
    Ok(TrainedEncoder { encoder, report })
}

/// The learning rate at `step` of `planned`: linear warm-up over the `warmup` share of the
/// steps to `lr`, then linear decay to 0 (the schedule both encoders' trainings use).
pub(crate) fn linear_schedule(lr: f64, warmup: f64, step: usize, planned: usize) -> f64 {
    let warm = ((planned as f64 * warmup).round() as usize).max(1);
    if step < warm {
        lr * (step + 1) as f64 / warm as f64
    } else {
        lr * (planned.saturating_sub(step) as f64 / (planned - warm).max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taxonomy::Group;

    fn tax() -> Taxonomy {
        Taxonomy::from_groups([
            Group {
                code: "2211".into(),
                title: "Generalist medical practitioners".into(),
                definition: "Generalist medical practitioners diagnose and treat illness.".into(),
            },
            Group {
                code: "7115".into(),
                title: "Carpenters and joiners".into(),
                definition: "Carpenters cut and shape timber.".into(),
            },
            Group {
                code: "5120".into(),
                title: "Cooks".into(),
                definition: "Cooks prepare meals.".into(),
            },
        ])
    }

    fn records() -> (Vec<String>, Vec<String>) {
        let rows = [
            ("family doctor | see patients ; prescribe drugs", "2211"),
            (
                "general practitioner | see patients ; refer to specialists",
                "2211",
            ),
            ("carpenter | cut timber ; fit doors", "7115"),
            ("joiner | make window frames ; fit doors", "7115"),
            ("chef | cook meals ; plan menus", "5120"),
            ("line cook | prepare vegetables ; cook meals", "5120"),
        ];
        (
            rows.iter().map(|r| r.0.to_string()).collect(),
            rows.iter().map(|r| r.1.to_string()).collect(),
        )
    }

    #[test]
    fn pairs_come_from_titles_groups_and_clauses_of_one_code() {
        let (t, c) = records();
        let spec = EncoderTrainSpec {
            max_pairs: 0,
            clause_share: 0.5,
            ..Default::default()
        };
        let p = build_pairs(&spec, Examples::new(&t, &c), &tax());
        assert!(!p.pairs.is_empty());
        for pair in &p.pairs {
            assert_ne!(pair.anchor, pair.positive);
            assert_eq!(p.text_code[pair.anchor as usize], pair.code);
            assert_eq!(p.text_code[pair.positive as usize], pair.code);
        }
        let kinds: BTreeSet<PairKind> = p.pairs.iter().map(|x| x.kind).collect();
        assert!(kinds.contains(&PairKind::ClauseClause));
        assert!(kinds.len() >= 2, "{kinds:?}");
    }

    #[test]
    fn batches_never_repeat_a_code_and_keep_every_pair() {
        let mut p = Pairs {
            texts: (0..40).map(|i| format!("t{i}")).collect(),
            text_code: (0..40).map(|i| i % 5).collect(),
            clause: vec![false; 40],
            codes: (0..5).map(|c| c.to_string()).collect(),
            pairs: Vec::new(),
        };
        for i in 0..20u32 {
            p.pairs.push(Pair {
                anchor: i,
                positive: i + 20,
                negative: Some((i + 1) % 40),
                code: i % 5,
                kind: PairKind::TitleTitle,
            });
        }
        let order: Vec<usize> = (0..20).collect();
        let batches = code_free_batches(&p, &order, 4);
        let mut seen = 0;
        for b in &batches {
            let codes: HashSet<u32> = b.iter().map(|&i| p.pairs[i].code).collect();
            assert_eq!(codes.len(), b.len());
            for &i in b {
                let n = p.text_code[p.pairs[i].negative.unwrap() as usize];
                assert!(!codes.contains(&n) || n == p.pairs[i].code);
            }
            seen += b.len();
        }
        assert!(seen >= 10, "{seen} of 20 pairs batched");
    }

    #[test]
    fn bad_settings_name_their_key() {
        let s = EncoderTrainSpec {
            batch_size: 1,
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().contains("batch_size"));
        let s = EncoderTrainSpec {
            clause_share: 1.5,
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().contains("clause_share"));
    }

    #[test]
    fn length_sorted_chunks_embed_as_one_padded_batch() {
        let dir = tempfile::tempdir().unwrap();
        let words = [
            "family", "doctor", "cook", "see", "patients", "cut", "timber",
        ];
        crate::encoder::write_random_encoder(dir.path(), &words, 32, 2, 5).unwrap();
        let enc = Encoder::load(dir.path(), 32).unwrap();
        let texts: Vec<String> = (0..70)
            .map(|i| {
                words
                    .iter()
                    .cycle()
                    .skip(i)
                    .take(1 + i % 9)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ids = enc.tokenize(&refs).unwrap();
        let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let top = Top {
            layers: enc.model().encoder.layers[1..].to_vec(),
        };
        let dev = enc.device().clone();
        let pass = Pass {
            encoder: &enc,
            frozen: 1,
            top: &top,
            plain: &dev,
            device: &dev,
            differentiable: false,
        };
        let chunked = pass.vectors(&rows).into_data();
        let whole = pass.padded(&rows).into_data();
        chunked.assert_approx_eq::<f32>(&whole, burn::tensor::Tolerance::absolute(1e-5));
    }

    #[test]
    fn training_learns_and_the_saved_encoder_embeds_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let words = [
            "family",
            "doctor",
            "general",
            "practitioner",
            "carpenter",
            "joiner",
            "chef",
            "line",
            "cook",
            "see",
            "patients",
            "prescribe",
            "drugs",
            "refer",
            "to",
            "specialists",
            "cut",
            "timber",
            "fit",
            "doors",
            "make",
            "window",
            "frames",
            "meals",
            "plan",
            "menus",
            "prepare",
            "vegetables",
            "medical",
            "practitioners",
            "carpenters",
            "and",
            "joiners",
            "cooks",
        ];
        crate::encoder::write_random_encoder(&base, &words, 32, 2, 7).unwrap();
        // A tensor the burn model does not hold (BERT's pooler): saved encoders keep it.
        let weights = base.join("model.safetensors");
        let bytes = std::fs::read(&weights).unwrap();
        let pooler = [0.5f32; 4]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>();
        {
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut all = st.tensors();
            all.push((
                "pooler.dense.bias".into(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &pooler)
                    .unwrap(),
            ));
            safetensors::tensor::serialize_to_file(all, None, &weights).unwrap();
        }
        let (t, c) = records();
        let spec = EncoderTrainSpec {
            batch_size: 3,
            epochs: 30,
            lr: 1e-3,
            max_seconds: 0.0,
            hard_negatives: true,
            max_pairs: 0,
            ..Default::default()
        };
        let trained = train_encoder(
            &base,
            &spec,
            Examples::new(&t, &c),
            Examples::new(&t, &c),
            &tax(),
            None,
            &super::super::Silent,
        )
        .unwrap();
        let r = &trained.report;
        assert!(r.steps > 0 && r.hard_negatives > 0);
        let first = r.checkpoints.first().unwrap().loss;
        let last = r.checkpoints.last().unwrap().loss;
        assert!(last < first, "loss {first} -> {last}");
        let out = dir.path().join("trained");
        trained.save(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(
            &std::fs::read(out.join("model.safetensors")).unwrap(),
        )
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
        assert!(
            st.iter()
                .any(|n| n == "encoder.layer.0.attention.self.query.weight"),
            "Hugging Face names: {st:?}"
        );
        assert!(
            st.iter().any(|n| n == "pooler.dense.bias"),
            "the base's other tensors are kept: {st:?}"
        );
        // sentence-transformers' module list, with the pooling it was saved with.
        let modules: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("modules.json")).unwrap()).unwrap();
        assert_eq!(modules[1]["path"], "1_Pooling", "{modules}");
        let pooling: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("1_Pooling/config.json")).unwrap())
                .unwrap();
        assert_eq!(pooling["pooling_mode_mean_tokens"], true, "{pooling}");
        let again = Encoder::load(&out, spec.max_seq_length).unwrap();
        let texts = ["family doctor", "chef", "joiner fit doors"];
        let a = trained.encoder.embed(&texts, 8, true, &|_| {}).unwrap();
        let b = again.embed(&texts, 8, true, &|_| {}).unwrap();
        assert_eq!(a, b, "identical embeddings after save and load");
        let before = Encoder::load(&base, spec.max_seq_length)
            .unwrap()
            .embed(&texts, 8, true, &|_| {})
            .unwrap();
        assert_ne!(a, before, "training changed the encoder");
    }
}
