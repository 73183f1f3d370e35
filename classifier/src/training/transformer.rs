//! The fine-tuned encoder of a `transformer` model (or of an ensemble with one): fine-tune
//! the pretrained encoder as a classifier within the configured budget, then calibrate its
//! logits on validation.
//!
//! The validation examples are shuffled once (seeded): the first `transformer_eval_rows`
//! labelled ones drive early stopping, the next `retrieval_fit_rows` fit the calibration, so
//! the calibration is not fitted on the rows the checkpoint was chosen on.
//!
//! Fine-tuning is the slowest part of training (its budget is minutes), so a training run
//! whose sample, early-stopping rows, encoder and settings are those of the model it wrote
//! last time takes that model's encoder and only calibrates it again.

use std::path::Path;

use serde::Serialize;

use super::data::{Examples, Progress, encode};
use super::spec::FitSpec;
use crate::artifact::TransformerTraining;
use crate::calibrate::{Calibration, fit_calibration};
use crate::encoder::Encoder;
use crate::error::Error;
use crate::transformer::{FineTuned, TuneReport, fine_tune, stratified_sample};

/// What fine-tuning the transformer did, for the run record.
#[derive(Debug, Clone, Serialize)]
pub struct TransformerSummary {
    /// The pretrained encoder's directory.
    pub encoder: String,
    /// Validation rows the calibration was fitted on.
    pub calibration_rows: usize,
    /// Validation rows early stopping scored.
    pub early_stopping_rows: usize,
    /// Records in the training sample.
    pub sample_records: usize,
    /// Reference examples in the training sample.
    pub sample_reference_examples: usize,
    /// The fine-tuning run.
    pub report: TuneReport,
    /// Whether the fine-tuned encoder is the one the previous run trained, what its
    /// fine-tuning reads being the same (see [`TransformerTraining`]).
    pub reused: bool,
}

impl TransformerSummary {
    /// One line for the stage report.
    pub fn line(&self) -> String {
        let r = &self.report;
        format!(
            "transformer: {} layers fine-tuned on {} rows, {} steps ({} examples) in {:.0}s ({:.1}s per 1,000 examples), stopped by {}; best validation accuracy {:.4} at step {}{}",
            r.train_layers,
            r.sample_rows,
            r.steps,
            r.examples,
            r.seconds,
            r.seconds_per_1000_examples,
            r.stopped_by,
            r.best_validation_accuracy,
            r.best_step,
            if self.reused {
                " (the previous run's encoder: same sample and settings)"
            } else {
                ""
            },
        )
    }
}

/// Fine-tunes the encoder in `dir` on the training texts and fits the calibration. `texts`
/// are the training records (the first `records`) followed by the reference examples: the
/// records are subsampled (stratified) to fit `transformer_max_examples`, the reference
/// examples are all kept — they are what teaches occupations the records never showed.
/// When the model in `previous` (the one this training run wrote last time) was fine-tuned on
/// exactly the same, its encoder is taken and only calibrated again.
#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    dir: &Path,
    previous: Option<&Path>,
    spec: &FitSpec,
    labels: &[String],
    texts: &[String],
    y: &[u32],
    records: usize,
    va: Examples<'_>,
    progress: &dyn Progress,
) -> Result<
    (
        FineTuned,
        Calibration,
        TransformerSummary,
        TransformerTraining,
    ),
    Error,
> {
    let mut cfg = spec.tune_config();
    let (device, precision) =
        crate::device::place(spec.device, spec.precision).map_err(Error::Model)?;
    let mut encoder = Encoder::load_on(dir, cfg.max_seq_length, &device)?;
    encoder.set_precision(precision);
    let reference = texts.len() - records;
    let mut rows = if cfg.max_examples == 0 {
        (0..records).collect()
    } else {
        stratified_sample(
            &y[..records],
            cfg.max_examples.saturating_sub(reference).max(1),
            cfg.seed,
        )
    };
    rows.extend(records..texts.len());
    let texts: Vec<String> = rows.iter().map(|&i| texts[i].clone()).collect();
    let y: Vec<u32> = rows.iter().map(|&i| y[i]).collect();
    cfg.max_examples = 0;

    let y_va = encode(labels, va.isco_code);
    let mut idx: Vec<usize> = (0..va.len()).filter(|&i| y_va[i].is_some()).collect();
    crate::Rng::new(spec.train.seed).shuffle(&mut idx);
    let (stop_rows, rest) = idx.split_at(cfg.eval_rows.min(idx.len() / 2));
    let cal_rows = &rest[..spec.ensemble.fit_rows.min(rest.len())];
    let pick = |rows: &[usize]| -> (Vec<String>, Vec<u32>) {
        rows.iter()
            .map(|&i| (va.text[i].clone(), y_va[i].expect("labelled")))
            .unzip()
    };
    let (stop_texts, stop_y) = pick(stop_rows);
    let (cal_texts, cal_y) = pick(cal_rows);
    if stop_texts.is_empty() || cal_texts.is_empty() {
        return Err(Error::NoLabelledValidation {
            kind: spec.kind,
            needed_for: "early stopping and calibration",
        });
    }

    let key = tuning_key(
        &encoder.fingerprint()?,
        &format!("{device:?}"),
        &cfg,
        labels.len(),
        (&texts, &y),
        (&stop_texts, &stop_y),
    );
    let previous = previous.and_then(|p| previous_encoder(p, &key, labels.len(), &cfg, &device));
    let reused = previous.is_some();
    let (ft, report) = match previous {
        Some((mut ft, report)) => {
            progress.message(
                "the fine-tuned encoder is the previous run's: its sample and settings are unchanged",
            );
            // As the pretrained encoder was set before fine-tuning would have started.
            ft.encoder.set_precision(precision);
            (ft, report)
        }
        None => {
            progress.start(1, "fine-tuning the transformer");
            fine_tune(
                encoder,
                &texts,
                &y,
                &stop_texts,
                &stop_y,
                labels.len(),
                &cfg,
                &|_, _, msg| progress.message(msg),
            )?
        }
    };
    progress.start(1, "calibrating the transformer on validation");
    let logits = ft.logits(&cal_texts)?;
    let cal = fit_calibration(&logits, &cal_y, labels.len(), spec.calibration);
    let summary = TransformerSummary {
        encoder: dir.display().to_string(),
        calibration_rows: cal_y.len(),
        early_stopping_rows: stop_y.len(),
        sample_records: rows.len() - reference,
        sample_reference_examples: reference,
        report: report.clone(),
        reused,
    };
    Ok((ft, cal, summary, TransformerTraining { key, report }))
}

/// The digest of everything fine-tuning reads (see [`TransformerTraining`]): the pretrained
/// encoder (its files and precision, [`Encoder::fingerprint`]), the device, the settings, the
/// classes, the training sample and the early-stopping rows.
fn tuning_key(
    encoder: &str,
    device: &str,
    cfg: &crate::transformer::TuneConfig,
    classes: usize,
    sample: (&[String], &[u32]),
    stop: (&[String], &[u32]),
) -> String {
    let mut d = super::TrainingDigest::new("isco-dag fine-tuned encoder");
    d.field(encoder.as_bytes());
    d.field(device.as_bytes());
    d.settings(cfg);
    d.field(&(classes as u64).to_le_bytes());
    for (name, (texts, y)) in [("sample", sample), ("early stopping", stop)] {
        d.field(name.as_bytes());
        for (t, c) in texts.iter().zip(y) {
            d.field(t.as_bytes());
            d.field(&c.to_le_bytes());
        }
    }
    d.finish()
}

/// The fine-tuned encoder of the model a training run wrote last time and what its
/// fine-tuning did, when it was fine-tuned on exactly what this run would (`key`); anything
/// else means fine-tuning it, and a damaged one is only logged.
fn previous_encoder(
    dir: &Path,
    key: &str,
    classes: usize,
    cfg: &crate::transformer::TuneConfig,
    device: &burn::tensor::Device,
) -> Option<(FineTuned, TuneReport)> {
    let meta = crate::artifact::Model::read_meta(dir).ok()?;
    let t = meta.transformer_training.filter(|t| t.key == key)?;
    match FineTuned::load_on(dir, classes, cfg.max_seq_length, device) {
        Ok(ft) => Some((ft, t.report)),
        Err(e) => {
            tracing::warn!("the previous run's fine-tuned encoder is trained again: {e}");
            None
        }
    }
}
