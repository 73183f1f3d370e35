//! The `transformer` model kind: a pretrained encoder fine-tuned as an ISCO classifier
//! (the design's RoBERTa path), with a training budget that keeps it practical on a CPU.
//!
//! The network is the encoder, mean (or CLS) pooling and a linear head over the label set,
//! trained with cross-entropy and AdamW (decoupled weight decay), a linear warm-up and a
//! linear decay, optional gradient accumulation, and early stopping on the accuracy of a
//! fixed validation sample. The head has its own, larger learning rate: it starts from random
//! weights while the encoder only needs nudging.
//!
//! What keeps it inside a CPU budget, each a [`TuneConfig`] field:
//!
//! | knob | effect |
//! |---|---|
//! | `train_layers` | only the top N transformer layers (and the head) learn; the embeddings and lower layers run forward only, without a graph |
//! | `max_examples` | a stratified subsample of the training rows (every class keeps at least one row; the `train` stage subsamples only the records and keeps every reference example) |
//! | `max_seq_length` | tokens per text |
//! | `max_seconds` | wall-clock budget: after the first optimiser steps are timed, the schedule (warm-up, decay, evaluations) is planned to end inside it, and training stops at it regardless |
//!
//! The result is a normal encoder directory (weights written back as safetensors) plus the
//! head, so the fine-tuned encoder can also serve retrieval.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams};
use burn::store::ModuleRecord;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::encoder::{Encoder, EncoderLayer};
use crate::error::Error;
use crate::rng::Rng;
use crate::training::bi_encoder::Stopped;

/// Fine-tuning settings (saved with the model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuneConfig {
    /// Top transformer layers that learn (the rest and the embeddings are frozen); capped at
    /// the encoder's depth.
    pub train_layers: usize,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// Forward passes per optimiser step.
    pub grad_accumulation: usize,
    /// Peak learning rate of the encoder layers (the design's 2e-5 suits full runs; a CPU
    /// budget of minutes needs more).
    pub lr: f64,
    /// Peak learning rate of the (new) classification head.
    pub lr_head: f64,
    /// Share of the planned steps spent warming the learning rate up.
    pub warmup: f64,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Passes over the (sub)sample at most.
    pub epochs: usize,
    /// Wall-clock budget in seconds (0: none).
    pub max_seconds: f64,
    /// Stratified subsample of the training rows (0: all).
    pub max_examples: usize,
    /// Tokens per text.
    pub max_seq_length: usize,
    /// Validation rows scored at each evaluation.
    pub eval_rows: usize,
    /// Evaluations over the planned run (early stopping checks).
    pub evaluations: usize,
    /// Stop after this many evaluations without a better validation accuracy.
    pub patience: usize,
    /// Seed of the subsample, the order and the head.
    pub seed: u64,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            train_layers: 2,
            batch_size: 16,
            grad_accumulation: 1,
            lr: 1e-4,
            lr_head: 3e-3,
            warmup: 0.1,
            weight_decay: 0.01,
            epochs: 3,
            max_seconds: 600.0,
            max_examples: 50_000,
            max_seq_length: 64,
            eval_rows: 1000,
            evaluations: 6,
            patience: 3,
            seed: 42,
        }
    }
}

/// The trainable top of the network: the last layers and the head.
#[derive(Module, Debug)]
struct Top {
    layers: Vec<EncoderLayer>,
    head: Linear,
}

/// The classification head alone (saved next to the encoder directory).
#[derive(Module, Debug)]
struct HeadRecord {
    out: Linear,
}

/// One validation check during fine-tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Optimiser steps so far.
    pub step: usize,
    /// Training examples seen so far.
    pub examples: usize,
    /// Seconds since the start.
    pub seconds: f64,
    /// Mean training loss since the previous check.
    pub loss: f64,
    /// Accuracy on the validation sample.
    pub validation_accuracy: f64,
}

/// What fine-tuning did (goes into the model's training summary).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TuneReport {
    /// Rows in the (sub)sample.
    pub sample_rows: usize,
    /// Layers that learned.
    pub train_layers: usize,
    /// Optimiser steps planned (after timing the first ones against the budget).
    pub planned_steps: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Training examples seen.
    pub examples: usize,
    /// Seconds spent (including evaluations).
    pub seconds: f64,
    /// Seconds of training per 1,000 examples (evaluations excluded).
    pub seconds_per_1000_examples: f64,
    /// Best validation accuracy and the step it was reached at.
    pub best_validation_accuracy: f64,
    /// Step of the best checkpoint (the one kept).
    pub best_step: usize,
    /// Why it stopped.
    pub stopped_by: Stopped,
    /// Every validation check.
    pub checkpoints: Vec<Checkpoint>,
}

/// A fine-tuned encoder with its classification head.
pub struct FineTuned {
    /// The encoder (its top layers fine-tuned).
    pub encoder: Encoder,
    head: Linear,
    classes: usize,
}

/// Up to `max` row indices, stratified by class: each class keeps its share (at least one).
pub fn stratified_sample(y: &[u32], max: usize, seed: u64) -> Vec<usize> {
    if max == 0 || max >= y.len() {
        return (0..y.len()).collect();
    }
    let classes = y.iter().max().map_or(0, |&m| m as usize + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &c) in y.iter().enumerate() {
        by_class[c as usize].push(i);
    }
    let frac = max as f64 / y.len() as f64;
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(max + classes);
    for rows in &mut by_class {
        if rows.is_empty() {
            continue;
        }
        rng.shuffle(rows);
        let k = ((rows.len() as f64 * frac).round() as usize).max(1);
        out.extend_from_slice(&rows[..k.min(rows.len())]);
    }
    out.sort_unstable();
    out
}

fn accuracy(logits: &[f32], y: &[u32], classes: usize) -> f64 {
    let pred = crate::model::argmax_rows(logits, classes);
    pred.iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len().max(1) as f64
}

/// Batches of row indices: shuffled, then sorted by length within windows of 50 batches so
/// padding stays small, then the batches shuffled again.
fn batches(order: &[usize], lens: &[usize], batch: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for window in order.chunks(batch * 50) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| lens[i]);
        out.extend(w.chunks(batch).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut out);
    out
}

/// Fine-tunes `encoder` on texts with class indices, checking on the validation texts.
/// `progress(step, planned, message)` reports along the way.
#[allow(clippy::too_many_arguments)]
pub fn fine_tune(
    mut encoder: Encoder,
    texts: &[String],
    y: &[u32],
    val_texts: &[String],
    val_y: &[u32],
    classes: usize,
    cfg: &TuneConfig,
    progress: &dyn Fn(usize, usize, &str),
) -> Result<(FineTuned, TuneReport), Error> {
    let started = Instant::now();
    if texts.is_empty() || classes == 0 {
        return Err(Error::Model(
            "there are no training examples for the transformer".into(),
        ));
    }
    if cfg.batch_size == 0 || cfg.grad_accumulation == 0 || cfg.epochs == 0 {
        return Err(Error::Model(
            "transformer batch_size, grad_accumulation and epochs must be positive".into(),
        ));
    }
    let depth = encoder.config.num_hidden_layers;
    let k = cfg.train_layers.clamp(1, depth.max(1)).min(depth);
    let frozen = depth - k;
    let d = encoder.dim();

    let sample = stratified_sample(y, cfg.max_examples, cfg.seed);
    let refs: Vec<&str> = sample.iter().map(|&i| texts[i].as_str()).collect();
    let ids = encoder.tokenize(&refs)?;
    let ys: Vec<u32> = sample.iter().map(|&i| y[i]).collect();
    let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
    let n = ids.len();

    // The validation sample, fixed for the whole run.
    let mut vrows: Vec<usize> = (0..val_texts.len()).collect();
    let mut rng = Rng::new(cfg.seed ^ 0x5eed);
    rng.shuffle(&mut vrows);
    vrows.truncate(cfg.eval_rows.max(1));
    let v_texts: Vec<String> = vrows.iter().map(|&i| val_texts[i].clone()).collect();
    let v_y: Vec<u32> = vrows.iter().map(|&i| val_y[i]).collect();

    let ad = encoder.device().clone().autodiff();
    ad.seed(cfg.seed);
    let plain = encoder.device().clone();
    let mut top = Top {
        layers: encoder.model().encoder.layers[frozen..].to_vec(),
        head: LinearConfig::new(d, classes).init(&plain),
    }
    .fork(&ad)
    .train();
    let opt_cfg = AdamWConfig::new().with_weight_decay(cfg.weight_decay);
    let mut opt_layers = opt_cfg.init();
    let mut opt_head = opt_cfg.init();
    let mut acc_layers = GradientsAccumulator::new();
    let mut acc_head = GradientsAccumulator::new();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);

    let per_epoch = n.div_ceil(cfg.batch_size).div_ceil(cfg.grad_accumulation);
    let epoch_steps = per_epoch * cfg.epochs;
    let mut planned = epoch_steps;
    let mut planned_fixed = cfg.max_seconds <= 0.0;
    let mut eval_every = (planned / cfg.evaluations.max(1)).max(1);
    let mut step = 0usize;
    let mut passes = 0usize;
    let mut examples = 0usize;
    let mut train_seconds = 0.0;
    let mut loss_sum = 0.0;
    let mut loss_n = 0usize;
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut best: Option<(f64, usize, Top)> = None;
    let mut since_best = 0usize;
    let mut stopped_by = Stopped::Epochs;
    let timing_steps = 20;
    let mut mix_ids = Rng::new(cfg.seed);
    let lr_at = |step: usize, planned: usize, peak: f64| -> f64 {
        let warm = ((planned as f64 * cfg.warmup).round() as usize).max(1);
        if step < warm {
            peak * (step + 1) as f64 / warm as f64
        } else {
            peak * ((planned.saturating_sub(step)) as f64 / (planned - warm).max(1) as f64).max(0.0)
        }
    };

    'epochs: for _epoch in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        mix_ids.shuffle(&mut order);
        for batch in batches(&order, &lens, cfg.batch_size, &mut mix_ids) {
            let t0 = Instant::now();
            let rows: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
            let b = rows.len();
            // Frozen part: forward only, no graph.
            let inp = encoder.batch(&rows, &plain);
            let mut h = encoder.model().embed(inp.ids, inp.positions);
            h = encoder
                .model()
                .layers(h, inp.pad.clone(), 0..frozen, encoder.precision());
            let dims = h.dims();
            let mut x = Tensor::<3>::from_data(h.into_data(), &ad);
            let pad = Tensor::from_data(inp.pad.into_data(), &ad);
            let keep = Tensor::<2>::from_data(inp.keep.into_data(), &ad);
            let bias = encoder.model().position_bias_on(x.dims()[1], &ad);
            for layer in &top.layers {
                x = layer.forward(x, pad.clone(), bias.clone(), true, encoder.precision());
            }
            debug_assert_eq!(x.dims(), dims);
            let pooled = encoder.pool(x, keep);
            let logits = top.head.forward(pooled);
            let target: Vec<i64> = batch.iter().map(|&i| ys[i] as i64).collect();
            let target = Tensor::<1, Int>::from_data(TensorData::new(target, [b]), &ad);
            let loss = loss_fn.forward(logits, target);
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            loss_n += 1;
            let mut grads = loss.backward();
            let gl = GradientsParams::from_module(&mut grads, &top.layers);
            let gh = GradientsParams::from_module(&mut grads, &top.head);
            acc_layers.accumulate(&top.layers, gl);
            acc_head.accumulate(&top.head, gh);
            passes += 1;
            examples += b;
            if passes.is_multiple_of(cfg.grad_accumulation) {
                let lr = lr_at(step, planned, cfg.lr);
                let lr_h = lr_at(step, planned, cfg.lr_head);
                let Top { layers, head } = top;
                let layers = opt_layers.step(lr, layers, acc_layers.grads());
                let head = opt_head.step(lr_h, head, acc_head.grads());
                top = Top { layers, head };
                step += 1;
            }
            train_seconds += t0.elapsed().as_secs_f64();

            let stepped = passes.is_multiple_of(cfg.grad_accumulation);
            // Plan the schedule against the budget once the first steps are timed.
            if !planned_fixed && stepped && step == timing_steps {
                let per_step = train_seconds / step as f64;
                // Evaluations cost about as much as forward passes over their rows.
                let eval_cost = per_step * (cfg.evaluations * v_texts.len()) as f64
                    / (3 * cfg.batch_size * cfg.grad_accumulation) as f64;
                let left = cfg.max_seconds * 0.95 - started.elapsed().as_secs_f64() - eval_cost;
                let fit = step + (left.max(0.0) / per_step) as usize;
                planned = epoch_steps.min(fit.max(step + 1));
                eval_every = (planned / cfg.evaluations.max(1)).max(1);
                planned_fixed = true;
            }

            let over_budget =
                cfg.max_seconds > 0.0 && started.elapsed().as_secs_f64() >= cfg.max_seconds;
            let done = step >= planned;
            if stepped && (step.is_multiple_of(eval_every) || done || over_budget) {
                let model = top.valid();
                let acc = accuracy(
                    &logits_with(&encoder, frozen, &model, &v_texts)?,
                    &v_y,
                    classes,
                );
                checkpoints.push(Checkpoint {
                    step,
                    examples,
                    seconds: started.elapsed().as_secs_f64(),
                    loss: loss_sum / loss_n.max(1) as f64,
                    validation_accuracy: acc,
                });
                loss_sum = 0.0;
                loss_n = 0;
                progress(
                    step,
                    planned,
                    &format!("step {step}/{planned}: validation accuracy {acc:.4}"),
                );
                // Re-plan with the measured pace (evaluations included): the first steps
                // run slower than the rest, so the first plan is cautious.
                if cfg.max_seconds > 0.0 && !done && !over_budget {
                    let elapsed = started.elapsed().as_secs_f64();
                    let left = cfg.max_seconds * 0.97 - elapsed;
                    let fit = step + (left.max(0.0) / (elapsed / step as f64)) as usize;
                    planned = epoch_steps.min(fit.max(step + 1));
                }
                if best.as_ref().is_none_or(|(b, _, _)| acc > *b) {
                    best = Some((acc, step, model));
                    since_best = 0;
                } else {
                    since_best += 1;
                }
                if since_best >= cfg.patience.max(1) {
                    stopped_by = Stopped::EarlyStopping;
                    break 'epochs;
                }
            }
            if over_budget {
                stopped_by = Stopped::Budget;
                break 'epochs;
            }
            if done {
                stopped_by = if planned < epoch_steps {
                    Stopped::Budget
                } else {
                    Stopped::Epochs
                };
                break 'epochs;
            }
        }
    }
    let (best_acc, best_step, best_top) = match best {
        Some(b) => b,
        None => {
            let model = top.valid();
            let acc = accuracy(
                &logits_with(&encoder, frozen, &model, &v_texts)?,
                &v_y,
                classes,
            );
            (acc, step, model)
        }
    };
    let mut model = encoder.model().clone();
    for (slot, layer) in model.encoder.layers[frozen..]
        .iter_mut()
        .zip(best_top.layers)
    {
        *slot = layer;
    }
    encoder.set_model(model);
    let report = TuneReport {
        sample_rows: n,
        train_layers: k,
        planned_steps: planned,
        steps: step,
        examples,
        seconds: started.elapsed().as_secs_f64(),
        seconds_per_1000_examples: train_seconds * 1000.0 / examples.max(1) as f64,
        best_validation_accuracy: best_acc,
        best_step,
        stopped_by,
        checkpoints,
    };
    Ok((
        FineTuned {
            encoder,
            head: best_top.head,
            classes,
        },
        report,
    ))
}

/// Logits of texts through the frozen lower layers of `encoder` and the given top.
fn logits_with(
    encoder: &Encoder,
    frozen: usize,
    top: &Top,
    texts: &[String],
) -> Result<Vec<f32>, Error> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = encoder.tokenize(&refs)?;
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let classes = top.head.weight.val().dims()[1];
    let mut out = vec![0f32; ids.len() * classes];
    let dev = encoder.device();
    for chunk in order.chunks(64) {
        let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
        let inp = encoder.batch(&rows, dev);
        let mut h = encoder.model().embed(inp.ids, inp.positions);
        h = encoder
            .model()
            .layers(h, inp.pad.clone(), 0..frozen, encoder.precision());
        let bias = encoder.model().position_bias(h.dims()[1]);
        for layer in &top.layers {
            h = layer.forward(h, inp.pad.clone(), bias.clone(), false, encoder.precision());
        }
        let l = top
            .head
            .forward(encoder.pool(h, inp.keep))
            .into_data()
            .try_to_vec::<f32>()
            .expect("float logits");
        for (k, &i) in chunk.iter().enumerate() {
            out[i * classes..(i + 1) * classes].copy_from_slice(&l[k * classes..(k + 1) * classes]);
        }
    }
    Ok(out)
}

impl FineTuned {
    /// Number of classes of the head.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Logits `[texts, classes]` of normalised texts.
    pub fn logits(&self, texts: &[String]) -> Result<Vec<f32>, Error> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let pooled = self.encoder.embed(&refs, 64, false, &|_| {})?;
        let d = self.encoder.dim();
        let mut out = Vec::with_capacity(texts.len() * self.classes);
        for chunk in pooled.chunks(4096 * d) {
            let m = chunk.len() / d;
            let x = Tensor::<2>::from_data(
                TensorData::new(chunk.to_vec(), [m, d]),
                self.encoder.device(),
            );
            out.extend(
                self.head
                    .forward(x)
                    .into_data()
                    .try_to_vec::<f32>()
                    .expect("float logits"),
            );
        }
        Ok(out)
    }

    /// Writes `dir/transformer/`: `encoder/` (an encoder directory) and `head.bpk`.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        let t = dir.join("transformer");
        self.encoder.save(&t.join("encoder"))?;
        crate::record::save_record(
            HeadRecord {
                out: self.head.clone(),
            },
            &t.join("head.bpk"),
        )
    }

    /// Whether a model directory has a fine-tuned transformer.
    pub fn present(dir: &Path) -> bool {
        dir.join("transformer").join("head.bpk").is_file()
    }

    /// Reads `dir/transformer/` for a head over `classes` labels (on the CPU).
    pub fn load(dir: &Path, classes: usize, max_seq_length: usize) -> Result<FineTuned, Error> {
        Self::load_on(dir, classes, max_seq_length, &crate::model::device())
    }

    /// [`FineTuned::load`] with the encoder and head on `device`.
    pub fn load_on(
        dir: &Path,
        classes: usize,
        max_seq_length: usize,
        device: &burn::tensor::Device,
    ) -> Result<FineTuned, Error> {
        let t = dir.join("transformer");
        let encoder = Encoder::load_on(&t.join("encoder"), max_seq_length, device)?;
        let p = t.join("head.bpk");
        let record = ModuleRecord::load(&p).map_err(|e| Error::File {
            path: p.clone(),
            message: format!("could not read the burn record: {e}; retrain the model"),
        })?;
        let shell = HeadRecord {
            out: LinearConfig::new(encoder.dim(), classes).init(encoder.device()),
        };
        let head = shell
            .try_load_record(record)
            .map_err(|e| Error::File {
                path: p.clone(),
                message: format!("does not match model.json ({classes} classes): {e}"),
            })?
            .out;
        Ok(FineTuned {
            encoder,
            head,
            classes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::write_random_encoder;

    #[test]
    fn stratified_sample_keeps_every_class() {
        let y: Vec<u32> = (0..1000)
            .map(|i| if i < 990 { 0 } else { 1 + i % 3 })
            .collect();
        let s = stratified_sample(&y, 100, 1);
        assert!(s.len() >= 100 && s.len() <= 104, "{}", s.len());
        for c in 0..4 {
            assert!(s.iter().any(|&i| y[i] == c), "class {c} lost");
        }
        assert_eq!(stratified_sample(&y, 0, 1).len(), 1000);
    }

    #[test]
    fn fine_tuning_learns_and_the_saved_model_predicts_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let enc_dir = dir.path().join("enc");
        let words = [
            "nurse", "ward", "patients", "driver", "bus", "route", "baker", "bread", "oven",
        ];
        write_random_encoder(&enc_dir, &words, 32, 2, 3).unwrap();
        let encoder = Encoder::load(&enc_dir, 16).unwrap();
        let base = [
            ("nurse | patients ward", 0u32),
            ("bus driver | route", 1),
            ("baker | bread oven", 2),
            ("ward nurse | patients", 0),
            ("driver | bus route", 1),
            ("bread baker | oven", 2),
        ];
        let texts: Vec<String> = (0..20)
            .flat_map(|_| base.iter().map(|(t, _)| t.to_string()))
            .collect();
        let y: Vec<u32> = (0..20).flat_map(|_| base.iter().map(|(_, c)| *c)).collect();
        let cfg = TuneConfig {
            train_layers: 1,
            batch_size: 8,
            lr: 1e-3,
            lr_head: 1e-2,
            epochs: 6,
            max_seconds: 0.0,
            eval_rows: 6,
            evaluations: 3,
            patience: 10,
            ..TuneConfig::default()
        };
        let (ft, report) = fine_tune(
            encoder,
            &texts,
            &y,
            &texts[..6],
            &y[..6],
            3,
            &cfg,
            &|_, _, _| {},
        )
        .unwrap();
        assert_eq!(report.stopped_by, Stopped::Epochs);
        assert!(report.best_validation_accuracy > 0.9, "{report:?}");
        let l = ft.logits(&texts[..6]).unwrap();
        assert!(accuracy(&l, &y[..6], 3) > 0.9);
        let out = dir.path().join("model");
        ft.save(&out).unwrap();
        assert!(FineTuned::present(&out));
        let back = FineTuned::load(&out, 3, 16).unwrap();
        let l2 = back.logits(&texts[..6]).unwrap();
        let diff = crate::max_abs_diff(&l, &l2);
        assert!(diff < 1e-4, "saved model differs by {diff}");
    }
}
