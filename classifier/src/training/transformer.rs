//! The fine-tuned encoder of a `transformer` model (or of an ensemble with one): fine-tune
//! the pretrained encoder as a classifier within the configured budget, then calibrate its
//! logits on validation.
//!
//! The validation examples are shuffled once (seeded): the first `transformer_eval_rows`
//! labelled ones drive early stopping, the next `retrieval_fit_rows` fit the calibration, so
//! the calibration is not fitted on the rows the checkpoint was chosen on.

use std::path::Path;

use serde::Serialize;

use super::data::{Examples, Progress, encode};
use super::spec::FitSpec;
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
}

impl TransformerSummary {
    /// One line for the stage report.
    pub fn line(&self) -> String {
        let r = &self.report;
        format!(
            "transformer: {} layers fine-tuned on {} rows, {} steps ({} examples) in {:.0}s ({:.1}s per 1,000 examples), stopped by {}; best validation accuracy {:.4} at step {}",
            r.train_layers,
            r.sample_rows,
            r.steps,
            r.examples,
            r.seconds,
            r.seconds_per_1000_examples,
            r.stopped_by,
            r.best_validation_accuracy,
            r.best_step,
        )
    }
}

/// Fine-tunes the encoder in `dir` on the training texts and fits the calibration. `texts`
/// are the training records (the first `records`) followed by the reference examples: the
/// records are subsampled (stratified) to fit `transformer_max_examples`, the reference
/// examples are all kept — they are what teaches occupations the records never showed.
#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    dir: &Path,
    spec: &FitSpec,
    labels: &[String],
    texts: &[String],
    y: &[u32],
    records: usize,
    va: Examples<'_>,
    progress: &dyn Progress,
) -> Result<(FineTuned, Calibration, TransformerSummary), Error> {
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

    progress.start(1, "fine-tuning the transformer");
    let (ft, report) = fine_tune(
        encoder,
        &texts,
        &y,
        &stop_texts,
        &stop_y,
        labels.len(),
        &cfg,
        &|_, _, msg| progress.message(msg),
    )?;
    progress.start(1, "calibrating the transformer on validation");
    let logits = ft.logits(&cal_texts)?;
    let cal = fit_calibration(&logits, &cal_y, labels.len(), spec.calibration);
    let summary = TransformerSummary {
        encoder: dir.display().to_string(),
        calibration_rows: cal_y.len(),
        early_stopping_rows: stop_y.len(),
        sample_records: rows.len() - reference,
        sample_reference_examples: reference,
        report,
    };
    Ok((ft, cal, summary))
}
