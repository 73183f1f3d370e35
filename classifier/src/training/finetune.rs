//! Continuing a model on reviewers' corrections.
//!
//! Starts from the base model, trains on the corrections (repeated `corrections_repeats`
//! times per epoch) plus a seeded replay sample of the original training records, so the
//! model learns the corrections without forgetting the historical records, for a few epochs
//! at lower learning rates (at least `min_steps` optimiser steps, so a handful of
//! corrections still counts). Codes the base model has never seen get new output rows,
//! imprinted from their corrections' mean representation (weight imprinting) so they compete
//! from the first step. An ensemble keeps its retrieval half, with the corrections added to
//! its indexes. The calibration is refitted on validation — for an ensemble on the same
//! validation sample the base model was fitted on, whose queries its cache holds.
//!
//! The result depends only on the base model, the corrections, the replay records and the
//! spec.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::cascade::fit_cascade;
use super::data::{Examples, Progress, encode, fit_sample, labelled_features};
use super::ensemble::{ExtensionSummary, extend};
use super::{FineTuneSpec, Fitted};
use crate::Taxonomy;
use crate::artifact::{
    Calibrated, CascadeFit, FitSample, Model, ModelMeta, TitleOnlyFit, titles_for,
};
use crate::calibrate::{fit_calibration, softmax_rows};
use crate::error::Error;
use crate::features::FeatureMatrix;
use crate::model::{TrainConfig, TrainData, train};
use crate::rng::Rng;

/// What [`fine_tune`] did, for the run record and the stage report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FineTuneSummary {
    /// Corrections learned.
    pub corrections: usize,
    /// Times each was seen per epoch.
    #[serde(skip)]
    pub corrections_repeats: u32,
    /// Replayed training records.
    pub replay_records: usize,
    /// Classes of the result.
    pub classes: usize,
    /// Classes the base model did not have.
    pub new_classes: usize,
    /// Their codes.
    #[serde(skip)]
    pub new_codes: Vec<String>,
    /// Epochs run.
    pub epochs_run: usize,
    /// Seconds of training.
    pub train_seconds: f64,
    /// The calibration temperature.
    pub temperature: f64,
    /// Validation rows the calibration was refitted on (without validation records: none).
    pub calibration_rows: Option<usize>,
    /// Validation ECE before calibration (without validation records: none).
    pub validation_ece_before: Option<f64>,
    /// Validation ECE after it.
    pub validation_ece_after: Option<f64>,
    /// The refitted cascade of an ensemble.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadeFit>,
    /// The refitted calibration of unseen titles without duties.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title_only: Option<TitleOnlyFit>,
    /// The extension of an ensemble's indexes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<ExtensionSummary>,
    /// The base model was refitted with validation, so nothing was fitted on validation
    /// again (its network had learned those records): its calibrations and cascade are kept.
    pub base_refitted: bool,
}

impl FineTuneSummary {
    /// One line for the stage report.
    pub fn line(&self) -> String {
        let new = match self.new_classes {
            0 => "none new".to_string(),
            n => {
                let shown = self.new_codes.iter().take(8).map(String::as_str);
                let more = if n > 8 { " …" } else { "" };
                format!("{n} new: {}{more}", shown.collect::<Vec<_>>().join(" "))
            }
        };
        let refitted = if self.base_refitted {
            "; the base model was refitted with validation, so what it fitted on validation is kept"
        } else {
            ""
        };
        format!(
            "{} {} x{} + {} replayed records, {} epochs in {:.1}s; {} classes ({new}){refitted}",
            self.corrections,
            if self.corrections == 1 {
                "correction"
            } else {
                "corrections"
            },
            self.corrections_repeats,
            self.replay_records,
            self.epochs_run,
            self.train_seconds,
            self.classes,
        )
    }
}

/// Continues `base` on `corrections` (plus a sample of `replay`), refitting the calibration
/// on `validation` when given (the base model's otherwise).
#[allow(clippy::too_many_arguments)]
pub fn fine_tune(
    spec: &FineTuneSpec,
    base_meta: &ModelMeta,
    base: Model,
    corrections: Examples<'_>,
    replay: Examples<'_>,
    validation: Option<Examples<'_>>,
    tax: &Taxonomy,
    shared_cache: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Fitted<FineTuneSummary>, Error> {
    if matches!(base, Model::Transformer { .. }) {
        return Err(Error::CannotFineTune { kind: base.kind() });
    }
    if corrections.is_empty() {
        return Err(Error::NoCorrections);
    }
    // A refitted base network learned the validation records: a calibration or cascade
    // fitted on them would read rows it has seen and trust it too much, so the model is
    // fine-tuned as without validation rows.
    let base_refitted = base_meta
        .ngram_training
        .as_ref()
        .is_some_and(|t| t.refit.is_some());
    let validation = if base_refitted { None } else { validation };
    let mut rng = Rng::new(spec.seed);
    let mut pick: Vec<usize> = (0..replay.len()).collect();
    rng.shuffle(&mut pick);
    pick.truncate(spec.replay_size);
    pick.sort_unstable();

    let old_labels = &base_meta.labels;
    let labels: Vec<String> = old_labels
        .iter()
        .chain(corrections.isco_code)
        .chain(pick.iter().map(|&i| &replay.isco_code[i]))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let new_codes: Vec<String> = labels
        .iter()
        .filter(|l| old_labels.binary_search(l).is_err())
        .cloned()
        .collect();

    let mut texts: Vec<String> = corrections.text.to_vec();
    let mut codes: Vec<String> = corrections.isco_code.to_vec();
    let mut repeats = vec![spec.corrections_repeats; corrections.len()];
    for &i in &pick {
        texts.push(replay.text[i].clone());
        codes.push(replay.isco_code[i].clone());
        repeats.push(1);
    }
    let y: Vec<u32> = encode(&labels, &codes)
        .into_iter()
        .map(|c| c.expect("every code is in the label set"))
        .collect();
    let fc = base_meta.features.clone();
    let examples: usize = repeats.iter().map(|&r| r as usize).sum();
    let steps_per_epoch = examples.div_ceil(spec.batch_size).max(1);
    let epochs = spec.epochs.max(spec.min_steps.div_ceil(steps_per_epoch));
    let tc = TrainConfig {
        epochs,
        batch_size: spec.batch_size,
        lr_embedding: spec.lr_embedding,
        lr_head: spec.lr_head,
        label_smoothing: spec.label_smoothing,
        early_stopping_patience: epochs,
        seed: spec.seed,
        ..base_meta.train.clone()
    };
    progress.start(epochs as u64, "featurising");
    let x = FeatureMatrix::build(&fc, &texts);
    // New codes: an output row each, imprinted from their corrections.
    let rows_by_class: Vec<(usize, Vec<usize>)> = new_codes
        .iter()
        .map(|code| {
            let c = labels.binary_search(code).expect("label");
            let rows = (0..corrections.len())
                .filter(|&i| &corrections.isco_code[i] == code)
                .collect();
            (c, rows)
        })
        .collect();
    let init = base
        .net()
        .with_labels(old_labels, &labels)
        .imprint(&x, &rows_by_class);
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

    // An ensemble keeps its retrieval half, with the corrections added.
    let fit_sample_of_base = base_meta.fit_sample();
    let retrieval = match base {
        Model::Ensemble { retrieval, .. } => Some(extend(
            *retrieval,
            shared_cache,
            old_labels,
            &labels,
            corrections,
        )?),
        Model::Ngram { .. } | Model::Transformer { .. } => None,
    };
    let (temperature, isotonic, ece, calibration_rows, cascade, title_only) = match validation {
        Some(va) => {
            // The n-gram network's own calibration on every labelled validation row: the
            // model's calibration for an `ngram` model, an ensemble cascade's first step.
            let (vx, vy) = labelled_features(&fc, &labels, va);
            let rows: Vec<usize> = (0..vx.rows()).collect();
            let ngram_logits = net.logits(&vx, &rows);
            let ngram_cal = fit_calibration(&ngram_logits, &vy, labels.len(), spec.calibration);
            match &retrieval {
                // The ensemble on the validation sample the base model was fitted on (those
                // queries are in its embedding cache).
                Some((r, _)) => {
                    let sample = fit_sample_of_base.unwrap_or(FitSample {
                        rows: super::EnsembleConfig::default().fit_rows,
                        seed: base_meta.train.seed,
                    });
                    let (texts, y) = fit_sample(va, &labels, sample.seed, sample.rows);
                    let x = FeatureMatrix::build(&fc, &texts);
                    let all: Vec<usize> = (0..x.rows()).collect();
                    let sample_ngram = net.logits(&x, &all);
                    let p = softmax_rows(&sample_ngram, labels.len(), 1.0);
                    let logits = r.ensemble_logits(&p, &texts, labels.len())?;
                    let cal = fit_calibration(&logits, &y, labels.len(), spec.calibration);
                    let max_loss = base_meta
                        .cascade
                        .as_ref()
                        .map(|c| c.fit.max_loss)
                        .unwrap_or(super::EnsembleConfig::default().cascade_max_loss);
                    let cascade = fit_cascade(
                        &sample_ngram,
                        Calibrated {
                            temperature: ngram_cal.temperature,
                            isotonic: ngram_cal.isotonic,
                        },
                        &logits,
                        Calibrated {
                            temperature: cal.temperature,
                            isotonic: cal.isotonic.clone(),
                        },
                        &y,
                        labels.len(),
                        max_loss,
                        spec.calibration,
                    );
                    // Titles the fine-tuned model never saw, when the base model calibrated
                    // them apart: refitted on the same kind of rows against the extended
                    // title index.
                    let title_only = match &base_meta.title_only {
                        Some(base_part) => super::title_only::fit(
                            &super::title_only::Scorer {
                                net: &net,
                                features: &fc,
                                transformer: None,
                                retrieval: r,
                            },
                            va,
                            &base_part.external,
                            &labels,
                            &Calibrated {
                                temperature: cal.temperature,
                                isotonic: cal.isotonic.clone(),
                            },
                            &super::title_only::Settings {
                                min_rows: 1,
                                max_rows: sample.rows,
                                seed: sample.seed,
                                max_loss: base_part.cascade.fit.max_loss,
                                method: spec.calibration,
                            },
                        )?,
                        None => None,
                    };
                    (
                        cal.temperature,
                        cal.isotonic,
                        Some((cal.ece_before, cal.ece_after)),
                        Some(y.len()),
                        Some(cascade),
                        title_only,
                    )
                }
                None => (
                    ngram_cal.temperature,
                    ngram_cal.isotonic,
                    Some((ngram_cal.ece_before, ngram_cal.ece_after)),
                    Some(vy.len()),
                    None,
                    None,
                ),
            }
        }
        // A refitted base keeps everything it fitted on validation, as the refitted model
        // itself does: those fits read a network that had not seen the records they were
        // fitted on, which neither the refitted network nor this one can be.
        None if base_refitted => (
            base_meta.temperature,
            base_meta.isotonic.clone(),
            None,
            None,
            base_meta.cascade.clone(),
            base_meta.title_only.clone(),
        ),
        // Without validation rows the base model's calibration stays; an ensemble's cascade
        // cannot (its first step's network changed), so every row goes through the whole model;
        // nor can the calibration of unseen titles (fitted on the base model's scores).
        None => (
            base_meta.temperature,
            base_meta.isotonic.clone(),
            None,
            None,
            None,
            None,
        ),
    };
    let mut titles = base_meta.titles.clone();
    titles.extend(titles_for(&labels, tax));
    let (model, retrieval_summary) = match retrieval {
        Some((retrieval, s)) => (
            Model::Ensemble {
                net,
                retrieval: Box::new(retrieval),
                transformer: None,
            },
            Some(s),
        ),
        None => (Model::Ngram { net }, None),
    };
    let summary = FineTuneSummary {
        corrections: corrections.len(),
        corrections_repeats: spec.corrections_repeats,
        replay_records: pick.len(),
        classes: labels.len(),
        new_classes: new_codes.len(),
        new_codes,
        epochs_run: model.net().epochs_run,
        train_seconds: model.net().train_seconds,
        temperature,
        calibration_rows,
        validation_ece_before: ece.map(|e| e.0),
        validation_ece_after: ece.map(|e| e.1),
        retrieval: retrieval_summary,
        base_refitted,
        cascade: cascade.as_ref().map(|c| c.fit.clone()),
        title_only: title_only.as_ref().map(|t| t.fit.clone()),
    };
    let meta = ModelMeta {
        kind: model.kind(),
        labels,
        train: tc,
        temperature,
        isotonic,
        titles,
        transformer: None,
        // The sample a later fine-tune of this model must draw again.
        fit_sample: fit_sample_of_base.filter(|_| model.retrieval().is_some()),
        cascade: cascade.clone(),
        title_only,
        // The network is the base model's continued on the corrections: no training run
        // from records would compute it.
        ngram_training: None,
        transformer_training: None,
        summary: serde_json::json!({
            "fine_tuned_from": base_meta.summary,
            "metrics": summary,
        }),
        ..base_meta.clone()
    };
    Ok(Fitted {
        meta,
        model,
        summary,
    })
}

#[cfg(test)]
mod summary_tests {
    use super::FineTuneSummary;

    #[test]
    fn the_report_line_says_none_new_or_lists_the_new_codes() {
        let mut s = FineTuneSummary {
            corrections: 1,
            corrections_repeats: 4,
            replay_records: 10,
            classes: 44,
            epochs_run: 12,
            train_seconds: 1.25,
            ..FineTuneSummary::default()
        };
        assert_eq!(
            s.line(),
            "1 correction x4 + 10 replayed records, 12 epochs in 1.2s; 44 classes (none new)"
        );
        s.corrections = 9;
        s.new_codes = (0..9).map(|i| format!("211{i}")).collect();
        s.new_classes = 9;
        assert!(
            s.line()
                .ends_with("(9 new: 2110 2111 2112 2113 2114 2115 2116 2117 …)"),
            "{}",
            s.line()
        );
    }
}
