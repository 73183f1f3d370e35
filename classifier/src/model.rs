//! The `ngram` model: embedding bag over hashed features -> (optional hidden layer) ->
//! linear -> softmax, trained with burn.
//!
//! The embedding table is large (buckets × dim) and each example touches a few hundred of its
//! rows, so it is trained sparsely: the bag (the mean of the rows, or their field-weighted sum,
//! see [`crate::features`]) is computed in plain Rust, the dense head runs in burn with
//! autodiff and Adam, burn returns the gradient with respect to the bag, and only the touched
//! rows are updated (row-wise Adagrad, deterministic: each batch's touches are linked per row
//! in batch order, and rows are updated in parallel, never raced). At save time the table goes
//! into the burn module and its record like any other parameter.
//!
//! Coding many texts ([`Trained::text_logits`]) featurises on the fly instead of building a
//! feature matrix, and sums each distinct duties word's character n-gram rows once: those
//! n-grams are most of a record's features but come from a small vocabulary.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::features::{FeatureConfig, FeatureMatrix, group_counts, split_fields};
use crate::rng::Rng;

/// Largest embedding table (buckets × dim floats) and widest layer the n-gram models may ask
/// for. The default model uses 16.8 M floats (64 MB); 1 Gi floats (4 GiB, more with the
/// optimiser's state) is far beyond anything that helps and still fits these machines, while
/// a typo such as `dim = 100000000000` would otherwise abort the process while allocating.
const MAX_TABLE_FLOATS: usize = 1 << 30;
const MAX_WIDTH: usize = 8192;

/// Refuses model sizes that cannot be allocated, naming the key.
pub fn check_model_size(buckets: usize, dim: usize, hidden: usize) -> Result<(), String> {
    if dim > MAX_WIDTH {
        return Err(format!("`dim` is {dim}; give at most {MAX_WIDTH}"));
    }
    if hidden > MAX_WIDTH {
        return Err(format!(
            "`hidden` is {hidden}; give at most {MAX_WIDTH} (0: linear head)"
        ));
    }
    match buckets.checked_mul(dim) {
        Some(n) if n <= MAX_TABLE_FLOATS => Ok(()),
        _ => Err(format!(
            "`buckets` × `dim` = {buckets} × {dim} floats is more than the {MAX_TABLE_FLOATS} an embedding table may hold; lower `buckets` or `dim`"
        )),
    }
}

/// Network and training hyper-parameters (saved with the model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Embedding dimension.
    pub dim: usize,
    /// Hidden layer width (0: the head is linear, and explanations are exact).
    pub hidden: usize,
    /// Maximum epochs.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Adagrad learning rate of the embedding rows.
    pub lr_embedding: f64,
    /// Adam learning rate of the head.
    pub lr_head: f64,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f32,
    /// Stop after this many epochs without a better validation macro-F1.
    pub early_stopping_patience: usize,
    /// Seed for initialisation and shuffling.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            dim: 64,
            hidden: 0,
            epochs: 8,
            batch_size: 256,
            lr_embedding: 0.2,
            lr_head: 0.01,
            label_smoothing: 0.1,
            early_stopping_patience: 2,
            seed: 42,
        }
    }
}

/// The burn module: embedding table plus head.
#[derive(Module, Debug)]
pub struct NgramNet {
    /// `[buckets, dim]`.
    pub embedding: Param<Tensor<2>>,
    /// Optional hidden layer.
    pub hidden: Option<Linear>,
    /// Output layer `[dim or hidden, classes]`.
    pub out: Linear,
}

/// The dense part of the network, trained by burn's autodiff.
#[derive(Module, Debug)]
pub struct Head {
    /// Optional hidden layer.
    pub hidden: Option<Linear>,
    /// Output layer.
    pub out: Linear,
}

impl Head {
    /// Creates a head.
    pub fn new(dim: usize, hidden: usize, classes: usize, device: &Device) -> Head {
        let (hidden, inner) = if hidden > 0 {
            (Some(LinearConfig::new(dim, hidden).init(device)), hidden)
        } else {
            (None, dim)
        };
        Head {
            hidden,
            out: LinearConfig::new(inner, classes).init(device),
        }
    }

    /// Logits of bags `[batch, dim]`.
    pub fn forward(&self, h: Tensor<2>) -> Tensor<2> {
        let h = match &self.hidden {
            Some(l) => Relu::new().forward(l.forward(h)),
            None => h,
        };
        self.out.forward(h)
    }
}

/// Mean of the embedding rows of `feats` (or their sum weighted by `weights`, see
/// [`crate::features`]), written into `out` (zeros when empty).
#[inline]
pub fn bag(table: &[f32], dim: usize, feats: &[u32], weights: Option<&[f32]>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { bag_avx2(table, dim, feats, weights, out) };
            return;
        }
    }
    bag_scalar(table, dim, feats, weights, out);
}

/// The same loop compiled for AVX2, so the row sums vectorise 8 floats wide; chosen at run
/// time, so the binary still runs on older x86-64 CPUs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bag_avx2(
    table: &[f32],
    dim: usize,
    feats: &[u32],
    weights: Option<&[f32]>,
    out: &mut [f32],
) {
    bag_scalar(table, dim, feats, weights, out)
}

#[inline(always)]
fn bag_scalar(table: &[f32], dim: usize, feats: &[u32], weights: Option<&[f32]>, out: &mut [f32]) {
    out.fill(0.0);
    if feats.is_empty() {
        return;
    }
    if let Some(weights) = weights {
        for (&f, &w) in feats.iter().zip(weights) {
            axpy_scalar(out, &table[f as usize * dim..(f as usize + 1) * dim], w);
        }
        return;
    }
    for &f in feats {
        let row = &table[f as usize * dim..(f as usize + 1) * dim];
        for (o, r) in out.iter_mut().zip(row) {
            *o += r;
        }
    }
    let s = 1.0 / feats.len() as f32;
    for o in out.iter_mut() {
        *o *= s;
    }
}

/// FNV-1a for the per-word maps of [`Trained::text_logits`]: short keys, millions of
/// lookups, no untrusted-key concerns (std's SipHash costs a third of the coding time there).
#[derive(Default, Clone, Copy)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        if self.0 == 0 {
            self.0 = 0xcbf2_9ce4_8422_2325;
        }
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

/// `y += a * x`, vectorised when the CPU has AVX2 and FMA.
#[inline]
fn axpy(y: &mut [f32], x: &[f32], a: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { axpy_avx2(y, x, a) };
            return;
        }
    }
    axpy_scalar(y, x, a);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(y: &mut [f32], x: &[f32], a: f32) {
    axpy_scalar(y, x, a)
}

#[inline(always)]
fn axpy_scalar(y: &mut [f32], x: &[f32], a: f32) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += xv * a;
    }
}

/// Bags of many rows `[rows.len(), dim]`, in parallel.
pub fn bags(table: &[f32], dim: usize, x: &FeatureMatrix, rows: &[usize]) -> Vec<f32> {
    let mut h = vec![0f32; rows.len() * dim];
    bags_into(table, dim, x, rows, &mut h);
    h
}

/// [`bags`] into a buffer of `rows.len() * dim` floats.
fn bags_into(table: &[f32], dim: usize, x: &FeatureMatrix, rows: &[usize], h: &mut [f32]) {
    h.par_chunks_mut(dim)
        .zip(rows.par_iter())
        .for_each(|(o, &r)| bag(table, dim, x.row(r), x.row_weights(r), o));
}

/// A trained network in inference form.
#[derive(Debug, Clone)]
pub struct Trained {
    /// Embedding table, row-major `[buckets, dim]`.
    pub table: Vec<f32>,
    /// Dimension.
    pub dim: usize,
    /// Dense head on a plain (non-autodiff) device.
    pub head: Head,
    /// Epochs actually run.
    pub epochs_run: usize,
    /// Best validation macro-F1 and its epoch.
    pub best_val_macro_f1: f64,
    /// Epoch of the best validation score (1-based).
    pub best_epoch: usize,
    /// Seconds spent.
    pub train_seconds: f64,
}

/// The compute device: burn's flex CPU backend (libtorch with the `tch` feature).
pub fn device() -> Device {
    #[cfg(feature = "tch")]
    #[allow(deprecated)]
    {
        Device::libtorch()
    }
    #[cfg(not(feature = "tch"))]
    {
        Device::flex()
    }
}

impl Trained {
    /// Logits `[rows, classes]` (row-major) of the given rows.
    pub fn logits(&self, x: &FeatureMatrix, rows: &[usize]) -> Vec<f32> {
        self.head_logits(rows.len(), |h, start| {
            let chunk = &rows[start..start + h.len() / self.dim];
            bags_into(&self.table, self.dim, x, chunk, h);
        })
    }

    /// Logits `[texts, classes]` of normalised texts, featurised on the fly: no feature matrix
    /// is built, so coding many rows touches only their bags.
    pub fn text_logits(&self, features: &FeatureConfig, texts: &[String]) -> Vec<f32> {
        if features.duties_char_ngrams && features.minn > 0 {
            return self.text_logits_word_cache(features, texts);
        }
        self.head_logits(texts.len(), |h, start| {
            let chunk = &texts[start..start + h.len() / self.dim];
            h.par_chunks_mut(self.dim)
                .zip(chunk.par_iter())
                .for_each_init(
                    || (Vec::new(), Vec::new()),
                    |(ids, w), (o, t)| {
                        features.features(t, ids, w);
                        let w = (!w.is_empty()).then_some(&w[..]);
                        bag(&self.table, self.dim, ids, w, o);
                    },
                );
        })
    }

    /// [`Trained::text_logits`] when the duties' character n-grams are features: they are
    /// most of a record's features but come from a small vocabulary, so each distinct duties
    /// word's n-gram rows are summed once and records add the sums of their words. The bag
    /// is the same as the training one up to the order of float additions.
    fn text_logits_word_cache(&self, features: &FeatureConfig, texts: &[String]) -> Vec<f32> {
        let dim = self.dim;
        let words: Vec<&str> = texts
            .par_chunks(2048)
            .map(|chunk| {
                let mut m = HashSet::with_hasher(FnvBuild::default());
                for t in chunk {
                    m.extend(crate::text::words(split_fields(t).1));
                }
                m
            })
            .reduce(HashSet::default, |a, b| {
                let (mut big, small) = if a.len() >= b.len() { (a, b) } else { (b, a) };
                big.extend(small);
                big
            })
            .into_iter()
            .collect();
        // Sum and count of each word's n-gram rows.
        let mut sums = vec![0f32; words.len() * dim];
        let counts: Vec<u32> = sums
            .par_chunks_mut(dim)
            .zip(words.par_iter())
            .map_init(Vec::new, |ids, (o, w)| {
                features.duties_word_chars(w, ids);
                for &f in ids.iter() {
                    axpy(
                        o,
                        &self.table[f as usize * dim..(f as usize + 1) * dim],
                        1.0,
                    );
                }
                ids.len() as u32
            })
            .collect();
        let index: HashMap<&str, usize, FnvBuild> =
            words.iter().enumerate().map(|(i, w)| (*w, i)).collect();
        self.head_logits(texts.len(), |h, start| {
            let chunk = &texts[start..start + h.len() / dim];
            h.par_chunks_mut(dim).zip(chunk.par_iter()).for_each_init(
                || (Vec::new(), Vec::new(), Vec::new()),
                |(ids, groups, w), (o, t)| {
                    let dw = features.features_but_duties_chars(t, ids, groups);
                    let slots: Vec<usize> = dw.iter().map(|x| index[x]).collect();
                    let mut n = group_counts(groups);
                    n[2] = slots.iter().map(|&i| counts[i] as usize).sum();
                    let share = features.shares(&n);
                    w.clear();
                    w.extend(groups.iter().map(|&g| share[g as usize]));
                    bag(&self.table, dim, ids, Some(w), o);
                    for &i in &slots {
                        axpy(o, &sums[i * dim..(i + 1) * dim], share[2]);
                    }
                },
            );
        })
    }

    /// Runs the head over `n` bags, 8,192 at a time; `fill(h, start)` writes the bags of rows
    /// `start..` into `h`.
    fn head_logits(&self, n: usize, fill: impl Fn(&mut [f32], usize)) -> Vec<f32> {
        let device = self.head.out.weight.val().device();
        let mut out: Vec<f32> = Vec::new();
        for start in (0..n).step_by(8192) {
            let len = (n - start).min(8192);
            let mut h = vec![0f32; len * self.dim];
            fill(&mut h, start);
            let h = Tensor::<2>::from_data(TensorData::new(h, [len, self.dim]), &device);
            let l = self
                .head
                .forward(h)
                .into_data()
                .try_into_vec::<f32>()
                .expect("float logits");
            if out.is_empty() && len == n {
                // One chunk (the common case when predicting): hand the buffer over.
                return l;
            }
            if out.capacity() == 0 {
                out.reserve_exact(n * (l.len() / len.max(1)));
            }
            out.extend_from_slice(&l);
        }
        out
    }

    /// Packs the network into a burn module (for its record).
    pub fn to_module(&self) -> NgramNet {
        let device = self.head.out.weight.val().device();
        let rows = self.table.len() / self.dim;
        NgramNet {
            embedding: Param::from_tensor(Tensor::<2>::from_data(
                TensorData::new(self.table.clone(), [rows, self.dim]),
                &device,
            )),
            hidden: self.head.hidden.clone(),
            out: self.head.out.clone(),
        }
    }

    /// Unpacks a module loaded from a record.
    pub fn from_module(m: NgramNet) -> Trained {
        let e = m.embedding.val();
        let [_, dim] = e.dims();
        Trained {
            table: e.into_data().try_to_vec::<f32>().expect("float table"),
            dim,
            head: Head {
                hidden: m.hidden,
                out: m.out,
            },
            epochs_run: 0,
            best_val_macro_f1: 0.0,
            best_epoch: 0,
            train_seconds: 0.0,
        }
    }

    /// The same network over another label set (fine-tune): output rows of labels in both
    /// sets are kept, rows of labels only in `new_labels` start at zero weights with the
    /// lowest existing bias (so a new class takes no mass until it is trained), and rows of
    /// labels missing from `new_labels` are dropped.
    pub fn with_labels(&self, old_labels: &[String], new_labels: &[String]) -> Trained {
        let (inner, old_c, w, b) = self.out_params();
        let floor = b.iter().cloned().fold(f32::INFINITY, f32::min);
        let floor = if floor.is_finite() { floor } else { 0.0 };
        let new_c = new_labels.len();
        let mut nw = vec![0f32; inner * new_c];
        let mut nb = vec![floor; new_c];
        for (j, l) in new_labels.iter().enumerate() {
            if let Ok(o) = old_labels.binary_search(l) {
                for i in 0..inner {
                    nw[i * new_c + j] = w[i * old_c + o];
                }
                nb[j] = b[o];
            }
        }
        self.with_out(nw, nb, inner, new_c)
    }

    /// The output layer as (inputs, classes, row-major weights `[inputs, classes]`, bias).
    fn out_params(&self) -> (usize, usize, Vec<f32>, Vec<f32>) {
        let out = &self.head.out;
        let [inner, classes] = out.weight.val().dims();
        let w = out
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("float weights");
        let b = out
            .bias
            .as_ref()
            .map(|b| b.val().into_data().try_to_vec::<f32>().expect("float bias"))
            .unwrap_or_else(|| vec![0.0; classes]);
        (inner, classes, w, b)
    }

    /// The same network with another output layer.
    fn with_out(&self, w: Vec<f32>, b: Vec<f32>, inner: usize, classes: usize) -> Trained {
        let device = self.head.out.weight.val().device();
        let mut head = self.head.clone();
        head.out.weight = Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(w, [inner, classes]),
            &device,
        ));
        head.out.bias = Some(Param::from_tensor(Tensor::<1>::from_data(
            TensorData::new(b, [classes]),
            &device,
        )));
        Trained {
            head,
            ..self.clone()
        }
    }

    /// Weight imprinting for classes that have no trained output row yet: each class in
    /// `rows_by_class` gets, as its output row, the mean of its examples' inputs to the
    /// output layer (bag, through the hidden layer if any), scaled to the mean norm of the
    /// other rows, and the mean bias. A new class then scores its own examples well from
    /// the first step instead of starting from zero.
    pub fn imprint(&self, x: &FeatureMatrix, rows_by_class: &[(usize, Vec<usize>)]) -> Trained {
        let device = self.head.out.weight.val().device();
        let (inner, classes, mut w, mut b) = self.out_params();
        let new: std::collections::HashSet<usize> = rows_by_class.iter().map(|(c, _)| *c).collect();
        let old: Vec<usize> = (0..classes).filter(|c| !new.contains(c)).collect();
        if old.is_empty() {
            return self.clone();
        }
        let col_norm = |w: &[f32], c: usize| -> f32 {
            (0..inner)
                .map(|i| w[i * classes + c].powi(2))
                .sum::<f32>()
                .sqrt()
        };
        let mean_norm = old.iter().map(|&c| col_norm(&w, c)).sum::<f32>() / old.len() as f32;
        let mean_bias = old.iter().map(|&c| b[c]).sum::<f32>() / old.len() as f32;
        for (c, rows) in rows_by_class {
            if rows.is_empty() {
                continue;
            }
            let h = bags(&self.table, self.dim, x, rows);
            let h = Tensor::<2>::from_data(TensorData::new(h, [rows.len(), self.dim]), &device);
            let h = match &self.head.hidden {
                Some(l) => Relu::new().forward(l.forward(h)),
                None => h,
            };
            let h = h
                .into_data()
                .try_to_vec::<f32>()
                .expect("float activations");
            let mut proto = vec![0f32; inner];
            for r in h.chunks(inner) {
                proto.iter_mut().zip(r).for_each(|(p, v)| *p += v);
            }
            let norm = proto.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm == 0.0 {
                continue;
            }
            for (i, v) in proto.iter().enumerate() {
                w[i * classes + c] = v / norm * mean_norm;
            }
            b[*c] = mean_bias;
        }
        self.with_out(w, b, inner, classes)
    }

    /// An empty module of the right shapes, to load a record into.
    pub fn empty_module(buckets: usize, cfg: &TrainConfig, classes: usize) -> NgramNet {
        let device = device();
        let head = Head::new(cfg.dim, cfg.hidden, classes, &device);
        NgramNet {
            embedding: Param::from_tensor(Tensor::<2>::zeros([buckets, cfg.dim], &device)),
            hidden: head.hidden,
            out: head.out,
        }
    }
}

/// What to train on.
pub struct TrainData<'a> {
    /// Training features.
    pub x: &'a FeatureMatrix,
    /// Class index of each training row.
    pub y: &'a [u32],
    /// Per-row sampling weight (repeats), e.g. to up-weight corrections.
    pub repeats: Option<&'a [u32]>,
    /// Validation features and labels, for early stopping.
    pub val: Option<(&'a FeatureMatrix, &'a [u32])>,
}

/// Macro-F1 over the classes present in `y` (shared with evaluation).
pub fn macro_f1(y: &[u32], pred: &[u32], classes: usize) -> f64 {
    let mut tp = vec![0u32; classes];
    let mut fp = vec![0u32; classes];
    let mut fnn = vec![0u32; classes];
    for (&t, &p) in y.iter().zip(pred) {
        if t == p {
            tp[t as usize] += 1;
        } else {
            fp[p as usize] += 1;
            fnn[t as usize] += 1;
        }
    }
    let mut sum = 0.0;
    let mut n = 0;
    for c in 0..classes {
        if tp[c] + fnn[c] == 0 {
            continue;
        }
        n += 1;
        let denom = 2 * tp[c] + fp[c] + fnn[c];
        if denom > 0 {
            sum += 2.0 * tp[c] as f64 / denom as f64;
        }
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Argmax of each row of row-major logits.
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<u32> {
    logits
        .chunks(classes)
        .map(|r| {
            let mut best = 0;
            for (i, v) in r.iter().enumerate() {
                if *v > r[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// The version of what [`train`] and the featuriser compute from the same examples and
/// settings. A model keeps it in its training digest, so a network from before a change to
/// either is never taken for one trained now: raise it with any such change.
pub const TRAINING_VERSION: u32 = 1;

/// Trains a network from scratch (`init = None`) or continues from a trained one (fine-tune;
/// the head may have gained rows for new classes).
pub fn train(
    data: &TrainData<'_>,
    features: &FeatureConfig,
    cfg: &TrainConfig,
    classes: usize,
    init: Option<&Trained>,
    progress: &dyn Fn(usize, usize, f64),
) -> Result<Trained, Error> {
    let started = Instant::now();
    let n = data.x.rows();
    if n == 0 {
        return Err(Error::Model("there are no training examples".into()));
    }
    let dim = cfg.dim;
    let buckets = features.buckets;
    let ad = device().autodiff();
    ad.seed(cfg.seed);
    let mut rng = Rng::new(cfg.seed);
    let (mut table, mut head) = match init {
        Some(t) => (t.table.clone(), t.head.clone().fork(&ad).train()),
        None => {
            let scale = 1.0 / dim as f64;
            let table: Vec<f32> = (0..buckets * dim)
                .map(|_| ((rng.unit() * 2.0 - 1.0) * scale) as f32)
                .collect();
            (table, Head::new(dim, cfg.hidden, classes, &ad))
        }
    };
    let mut accum = vec![0f32; buckets];
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new()
        .with_smoothing((cfg.label_smoothing > 0.0).then_some(cfg.label_smoothing))
        .init(&ad);

    let mut order: Vec<usize> = match data.repeats {
        Some(r) => (0..n)
            .flat_map(|i| std::iter::repeat_n(i, r[i].max(1) as usize))
            .collect(),
        None => (0..n).collect(),
    };
    let steps_per_epoch = order.len().div_ceil(cfg.batch_size);
    let total_steps = (steps_per_epoch * cfg.epochs).max(1);
    let mut best: Option<(f64, usize, Vec<f32>, Head)> = None;
    let mut since_best = 0;
    let mut step = 0usize;
    let mut epochs_run = 0;
    // The batch's touches of embedding rows, grouped by row without sorting: `contrib[n]` is
    // (example in the batch, weight) of the n-th touch, `next[n]` the next touch of the same
    // row (`NONE` ends it), `first[row]` its first touch; `touched` lists the rows in use.
    const NONE: u32 = u32::MAX;
    let mut contrib: Vec<(u32, f32)> = Vec::new();
    let mut rows_of: Vec<u32> = Vec::new();
    let mut next: Vec<u32> = Vec::new();
    let mut first: Vec<u32> = vec![NONE; buckets];
    let mut touched: Vec<u32> = Vec::new();
    for epoch in 1..=cfg.epochs {
        epochs_run = epoch;
        rng.shuffle(&mut order);
        let mut loss_sum = 0.0;
        for batch in order.chunks(cfg.batch_size) {
            let decay = 1.0 - step as f64 / total_steps as f64;
            step += 1;
            let b = batch.len();
            let h = bags(&table, dim, data.x, batch);
            let h = Tensor::<2>::from_data(TensorData::new(h, [b, dim]), &ad).require_grad();
            let y: Vec<i64> = batch.iter().map(|&i| data.y[i] as i64).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(y, [b]), &ad);
            let logits = head.forward(h.clone());
            let loss = loss_fn.forward(logits, y);
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            let grads = loss.backward();
            let gh = h
                .grad(&grads)
                .expect("the bag is tracked")
                .into_data()
                .try_to_vec::<f32>()
                .expect("float gradient");
            let gp = GradientsParams::from_grads(grads, &head);
            head = optim.step(cfg.lr_head * decay.max(0.05), head, gp);

            // Sparse row-wise Adagrad on the touched embedding rows.
            contrib.clear();
            rows_of.clear();
            for (k, &i) in batch.iter().enumerate() {
                let row = data.x.row(i);
                let mean = 1.0 / row.len() as f32;
                let weights = data.x.row_weights(i);
                for (j, &f) in row.iter().enumerate() {
                    rows_of.push(f);
                    contrib.push((k as u32, weights.map_or(mean, |w| w[j])));
                }
            }
            // Linked backwards, so each row's list runs in batch order (deterministic sums).
            next.clear();
            next.resize(contrib.len(), NONE);
            touched.clear();
            for n in (0..contrib.len()).rev() {
                let f = rows_of[n] as usize;
                if first[f] == NONE {
                    touched.push(f as u32);
                }
                next[n] = first[f];
                first[f] = n as u32;
            }
            let lr = (cfg.lr_embedding * decay.max(0.05)) as f32;
            let table_ptr = SyncPtr(table.as_mut_ptr());
            let accum_ptr = SyncPtr(accum.as_mut_ptr());
            let (contrib, next, heads, gh) = (&contrib, &next, &first, &gh);
            touched.par_iter().for_each_init(
                || vec![0f32; dim],
                |g, &f| {
                    let f = f as usize;
                    g.fill(0.0);
                    let mut n = heads[f];
                    while n != NONE {
                        let (k, w) = contrib[n as usize];
                        axpy(g, &gh[k as usize * dim..(k as usize + 1) * dim], w);
                        n = next[n as usize];
                    }
                    let sq: f32 = g.iter().map(|v| v * v).sum::<f32>() / dim as f32;
                    // SAFETY: `touched` holds each row once, so no two tasks touch the same
                    // table row or accumulator slot.
                    unsafe {
                        let a = &mut *accum_ptr.get().add(f);
                        *a += sq;
                        let denom = a.sqrt() + 1e-8;
                        let row = std::slice::from_raw_parts_mut(table_ptr.get().add(f * dim), dim);
                        for (r, gv) in row.iter_mut().zip(g.iter()) {
                            *r -= lr * gv / denom;
                        }
                    }
                },
            );
            for &f in touched.iter() {
                first[f as usize] = NONE;
            }
        }
        let mean_loss = loss_sum / steps_per_epoch as f64;
        let score = match data.val {
            Some((vx, vy)) if vx.rows() > 0 => {
                let t = Trained {
                    table: Vec::new(),
                    dim,
                    head: head.valid(),
                    epochs_run,
                    best_val_macro_f1: 0.0,
                    best_epoch: 0,
                    train_seconds: 0.0,
                };
                let rows: Vec<usize> = (0..vx.rows()).collect();
                let logits = logits_with(&t, &table, vx, &rows);
                macro_f1(vy, &argmax_rows(&logits, classes), classes)
            }
            _ => -mean_loss,
        };
        progress(epoch, cfg.epochs, score);
        tracing::info!(epoch, mean_loss, score, "epoch done");
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, epoch, table.clone(), head.valid()));
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= cfg.early_stopping_patience {
                break;
            }
        }
    }
    let (score, epoch, table, head) = best.expect("at least one epoch ran");
    Ok(Trained {
        table,
        dim,
        head,
        epochs_run,
        best_val_macro_f1: score.max(0.0),
        best_epoch: epoch,
        train_seconds: started.elapsed().as_secs_f64(),
    })
}

fn logits_with(t: &Trained, table: &[f32], x: &FeatureMatrix, rows: &[usize]) -> Vec<f32> {
    let device = t.head.out.weight.val().device();
    let mut out = Vec::new();
    for chunk in rows.chunks(8192) {
        let h = bags(table, t.dim, x, chunk);
        let h = Tensor::<2>::from_data(TensorData::new(h, [chunk.len(), t.dim]), &device);
        out.extend(
            t.head
                .forward(h)
                .into_data()
                .try_to_vec::<f32>()
                .expect("float logits"),
        );
    }
    out
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: used only for disjoint row updates, see the comment at the use site.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_labels_keeps_known_rows_and_adds_silent_new_ones() {
        let device = device();
        let t = Trained {
            table: vec![0.5; 4 * 2],
            dim: 2,
            head: Head::new(2, 0, 2, &device),
            epochs_run: 0,
            best_val_macro_f1: 0.0,
            best_epoch: 0,
            train_seconds: 0.0,
        };
        let old = vec!["1111".to_string(), "3333".to_string()];
        let new = vec!["1111".to_string(), "2222".to_string(), "3333".to_string()];
        let x = FeatureMatrix::build(
            &FeatureConfig {
                buckets: 4,
                ..FeatureConfig::default()
            },
            &["a b".to_string()],
        );
        let before = t.logits(&x, &[0]);
        let grown = t.with_labels(&old, &new);
        let after = grown.logits(&x, &[0]);
        assert_eq!(after.len(), 3);
        assert!((after[0] - before[0]).abs() < 1e-6);
        assert!((after[2] - before[1]).abs() < 1e-6);
        let bias = t.head.out.bias.as_ref().unwrap().val().into_data();
        let floor = bias.iter::<f32>().fold(f32::INFINITY, f32::min);
        assert!(
            (after[1] - floor).abs() < 1e-6,
            "a new class starts at the lowest bias"
        );
        let shrunk = grown.with_labels(&new, &old);
        assert_eq!(shrunk.logits(&x, &[0]), before);
    }

    /// Continuing from a trained network (fine-tuning) trains its output layer too, also
    /// after the layer was rebuilt for a new label set.
    #[test]
    fn continued_training_moves_the_head() {
        let fc = FeatureConfig {
            buckets: 1 << 10,
            ..FeatureConfig::default()
        };
        let texts: Vec<String> = ["nurse ward", "welder pipe", "nurse night", "welder arc"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        let x = FeatureMatrix::build(&fc, &texts);
        let y = [0u32, 1, 0, 1];
        let cfg = TrainConfig {
            dim: 8,
            epochs: 2,
            batch_size: 2,
            ..TrainConfig::default()
        };
        let data = TrainData {
            x: &x,
            y: &y,
            repeats: None,
            val: None,
        };
        let first = train(&data, &fc, &cfg, 2, None, &|_, _, _| {}).unwrap();
        let labels = ["1".to_string(), "2".to_string()];
        for init in [first.clone(), first.with_labels(&labels, &labels)] {
            let frozen_table = TrainConfig {
                lr_embedding: 0.0,
                ..cfg.clone()
            };
            let next = train(&data, &fc, &frozen_table, 2, Some(&init), &|_, _, _| {}).unwrap();
            assert_ne!(next.out_params().2, init.out_params().2, "the head learnt");
        }
    }
}
