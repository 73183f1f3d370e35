//! `fine-tune`: continue training a model on the coders' corrections.
//!
//! Starts from the base model (the one `train` produced and `promote` made `best`), trains on
//! the corrections (repeated `corrections_repeats` times per epoch) plus a seeded replay
//! sample of the original training split, so the model learns the corrections without
//! forgetting the historical records, for a few epochs at lower learning rates (at least
//! `min_steps` optimiser steps, so a handful of corrections still counts). Codes the base
//! model has never seen get new output rows, imprinted from their corrections' mean
//! representation (weight imprinting) so they compete from the first step. The calibration
//! is refitted on the validation split, and the result is a complete model artifact like
//! `train`'s.
//!
//! The result depends only on the base model, the accumulated corrections and the params, so
//! running the fine-tune pipeline again without new corrections executes nothing.

use std::collections::BTreeSet;

use classifier::Rng;
use classifier::calibrate::{METHODS, fit_calibration, softmax_rows};
use classifier::features::FeatureMatrix;
use classifier::model::{TrainConfig, TrainData, train};
use classifier::predict::{InferenceConfig, ModelMeta, Predictor, save, titles_for};
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clean::load_taxonomy;
use crate::error::Error;
use crate::records::Records;
use crate::train::{encode, labelled_features};

/// Params of `fine-tune` (config section `[finetune]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineTuneParams {
    /// Passes over the corrections and the replay sample.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Adagrad learning rate of the embedding rows (the base model's `train` used 0.2).
    pub lr_embedding: f64,
    /// Adam learning rate of the head (the base model's `train` used 0.01).
    pub lr_head: f64,
    /// Label smoothing.
    pub label_smoothing: f32,
    /// Times each correction is seen per epoch.
    pub corrections_repeats: u32,
    /// Records sampled from the original training split and replayed (0: none).
    pub replay_size: usize,
    /// Fewest optimisation steps: small correction sets get more epochs, so that a handful
    /// of corrections still moves the model.
    pub min_steps: usize,
    /// Seed for the replay sample and shuffling.
    pub seed: u64,
    /// Calibration refitted on validation: `isotonic`, `ece` or `nll` (see `train`).
    pub calibration: String,
}

impl Default for FineTuneParams {
    fn default() -> Self {
        FineTuneParams {
            epochs: 3,
            batch_size: 256,
            lr_embedding: 0.1,
            lr_head: 0.003,
            label_smoothing: 0.1,
            corrections_repeats: 4,
            replay_size: 20_000,
            min_steps: 200,
            seed: 42,
            calibration: "isotonic".into(),
        }
    }
}

/// The `fine-tune` stage kind.
pub struct FineTune;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "model",
        required: true,
        many: false,
        help: "base model to start from (train.model)",
    },
    InputDecl {
        name: "corrections",
        required: true,
        many: false,
        help: "corrections to learn (corrections.train)",
    },
    InputDecl {
        name: "replay",
        required: false,
        many: false,
        help: "original training records to replay (split.train)",
    },
    InputDecl {
        name: "validation",
        required: false,
        many: false,
        help: "validation records to refit the calibration on (split.validation)",
    },
    InputDecl {
        name: "reference",
        required: false,
        many: false,
        help: "ISCO-08 reference CSV, for the titles of new codes",
    },
];

const OUTPUTS: &[OutputDecl] = &[OutputDecl {
    name: "model",
    file: "model",
    dir: true,
}];

impl Stage for FineTune {
    runner::stage_metadata!("fine-tune", version "5", "continue training the base model on corrections plus a replay sample", INPUTS, OUTPUTS, FineTuneParams);
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        let v = runner::stage::typed_params::<FineTuneParams>(raw)?;
        let p: FineTuneParams = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        if p.epochs == 0 || p.batch_size == 0 || p.corrections_repeats == 0 {
            return Err("epochs, batch_size and corrections_repeats must be positive".into());
        }
        if !METHODS.contains(&p.calibration.as_str()) {
            return Err(format!(
                "calibration `{}` is not known; use {}",
                p.calibration,
                METHODS.join(", ")
            ));
        }
        Ok(v)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let p: FineTuneParams = ctx.params()?;
        let base = Predictor::load(ctx.input("model")?, InferenceConfig::default())?;
        if base.meta.kind == "transformer" {
            return Err(
                "fine-tune continues `ngram` and `ensemble` models; the base model is a fine-tuned transformer. Re-run `train` instead: the `corrections` stage writes records with the corrected codes (apply_to_records), which a transformer pipeline can train on".to_string().into(),
            );
        }
        let corr_path = ctx.input("corrections")?;
        let corr = Records::read(corr_path)?;
        if corr.is_empty() {
            return Err(Error::Empty(format!(
                "{}: there are no corrections to fine-tune on; drop corrections CSV files (job_title, duties_description, corrected_isco_code) into the folder the `corrections` stage reads, e.g. data/corrections/",
                corr_path.display()
            ))
            .into());
        }
        let replay_all = match ctx.input_opt("replay") {
            Some(path) => Records::read(path)?,
            None => Records::default(),
        };
        let mut rng = Rng::new(p.seed);
        let mut pick: Vec<usize> = (0..replay_all.len()).collect();
        rng.shuffle(&mut pick);
        pick.truncate(p.replay_size);
        pick.sort_unstable();

        let old_labels = base.meta.labels.clone();
        let labels: Vec<String> = old_labels
            .iter()
            .chain(&corr.isco_code)
            .chain(pick.iter().map(|&i| &replay_all.isco_code[i]))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let new_codes: Vec<&String> = labels
            .iter()
            .filter(|l| old_labels.binary_search(l).is_err())
            .collect();

        let mut texts: Vec<String> = corr.text.clone();
        let mut codes: Vec<String> = corr.isco_code.clone();
        let mut repeats = vec![p.corrections_repeats; corr.len()];
        for &i in &pick {
            texts.push(replay_all.text[i].clone());
            codes.push(replay_all.isco_code[i].clone());
            repeats.push(1);
        }
        let y: Vec<u32> = encode(&labels, &codes)
            .into_iter()
            .map(|c| c.expect("every code is in the label set"))
            .collect();
        let fc = base.meta.features.clone();
        let examples: usize = repeats.iter().map(|&r| r as usize).sum();
        let steps_per_epoch = examples.div_ceil(p.batch_size).max(1);
        let epochs = p.epochs.max(p.min_steps.div_ceil(steps_per_epoch));
        let tc = TrainConfig {
            epochs,
            batch_size: p.batch_size,
            lr_embedding: p.lr_embedding,
            lr_head: p.lr_head,
            label_smoothing: p.label_smoothing,
            early_stopping_patience: epochs,
            seed: p.seed,
            ..base.meta.train.clone()
        };
        ctx.progress.start(epochs as u64, "featurising");
        let x = FeatureMatrix::build(&fc, &texts);
        // New codes: an output row each, imprinted from their corrections.
        let rows_by_class: Vec<(usize, Vec<usize>)> = new_codes
            .iter()
            .map(|code| {
                let c = labels.binary_search(code).expect("label");
                let rows = (0..corr.len())
                    .filter(|&i| &corr.isco_code[i] == *code)
                    .collect();
                (c, rows)
            })
            .collect();
        let init = base
            .net()
            .with_labels(&old_labels, &labels)
            .imprint(&x, &rows_by_class);
        let progress = ctx.progress;
        let net = train(
            &TrainData {
                x: &x,
                y: &y,
                repeats: Some(&repeats),
                val: None,
            },
            &fc,
            &tc,
            labels.len(),
            Some(&init),
            &|e, _, _| {
                progress.inc(1);
                progress.message(&format!("epoch {e}"));
            },
        )?;

        // An ensemble keeps its retrieval half, with the corrections' titles added.
        let base_dir = ctx.input("model")?;
        let retrieval = match base.retrieval() {
            Some(_) => Some(crate::ensemble::extend_for_finetune(
                base_dir,
                &crate::ensemble::shared_cache_root(ctx),
                &old_labels,
                &labels,
                &corr,
            )?),
            None => None,
        };
        // Refit the calibration on validation (the base model's otherwise).
        let (temperature, isotonic, ece) = match ctx.input_opt("validation") {
            Some(path) => {
                let va = Records::read(path)?;
                let (vx, vy) = labelled_features(&fc, &labels, &va);
                let rows: Vec<usize> = (0..vx.rows()).collect();
                let logits = match &retrieval {
                    // The ensemble on the validation sample the base model was fitted on
                    // (those queries are in its embedding cache).
                    Some((r, _)) => {
                        let fit_rows = base.meta.summary["metrics"]["retrieval"]["fit_rows"]
                            .as_u64()
                            .unwrap_or(5000) as usize;
                        let seed = base.meta.train.seed;
                        let (texts, y) = crate::ensemble::fit_sample(&va, &labels, seed, fit_rows);
                        let x = FeatureMatrix::build(&fc, &texts);
                        let all: Vec<usize> = (0..x.rows()).collect();
                        (
                            r.ensemble_logits(
                                &softmax_rows(&net.logits(&x, &all), labels.len(), 1.0),
                                &texts,
                                labels.len(),
                            )?,
                            y,
                        )
                    }
                    None => (net.logits(&vx, &rows), vy),
                };
                let cal = fit_calibration(&logits.0, &logits.1, labels.len(), &p.calibration);
                (
                    cal.temperature,
                    cal.isotonic,
                    Some((cal.ece_before, cal.ece_after)),
                )
            }
            None => (base.meta.temperature, base.meta.isotonic.clone(), None),
        };
        let tax = load_taxonomy(ctx)?;
        let mut titles = base.meta.titles.clone();
        titles.extend(titles_for(&labels, &tax));
        let base_object = ctx
            .artifacts
            .get("model")
            .and_then(|v| v.first())
            .map(|o| o.id.clone());
        let mut metrics = json!({
            "base_model": base_object,
            "corrections": corr.len(),
            "replay_records": pick.len(),
            "classes": labels.len(),
            "new_classes": new_codes.len(),
            "epochs_run": net.epochs_run,
            "train_seconds": net.train_seconds,
            "temperature": temperature,
            "validation_ece_before": ece.map(|e| e.0),
            "validation_ece_after": ece.map(|e| e.1),
        });
        let meta = ModelMeta {
            labels: labels.clone(),
            train: tc,
            temperature,
            isotonic,
            titles,
            transformer: None,
            summary: json!({"run_id": ctx.run_id, "stage": ctx.id, "trained_at": chrono::Utc::now().to_rfc3339(), "fine_tuned_from": base.meta.summary, "metrics": metrics}),
            ..base.meta.clone()
        };
        save(&ctx.output("model"), &net, &meta)?;
        if let Some((r, m)) = &retrieval {
            r.save(&ctx.output("model"))?;
            metrics["retrieval"] = m.clone();
        }
        Ok(StageReport {
            summary: vec![format!(
                "{} corrections x{} + {} replayed records, {} epochs in {:.1}s; {} classes ({} new: {})",
                corr.len(),
                p.corrections_repeats,
                pick.len(),
                net.epochs_run,
                net.train_seconds,
                labels.len(),
                new_codes.len(),
                new_codes
                    .iter()
                    .take(8)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )],
            metrics,
        })
    }
}
