//! `model_kind = "transformer"` in `train`: fine-tune the `encoder` input as a classifier
//! within the configured budget, then calibrate its logits on validation.
//!
//! The validation split is shuffled once (seeded): its first `transformer_eval_rows` labelled
//! rows drive early stopping, the next `retrieval_fit_rows` fit the calibration, so the
//! calibration is not fitted on the rows the checkpoint was chosen on.

use classifier::calibrate::{Calibration, fit_calibration};
use classifier::encoder::Encoder;
use classifier::transformer::{FineTuned, fine_tune, stratified_sample};
use runner::{StageContext, StageError};
use serde_json::{Value, json};

use crate::records::Records;
use crate::train::{TrainParams, encode};

/// Fine-tunes the encoder on the training texts and fits the calibration. `texts` are the
/// training records (the first `records`) followed by the reference examples: the records
/// are subsampled (stratified) to fit `transformer_max_examples`, the reference examples are
/// all kept — they are what teaches occupations the records never showed. Returns the
/// model, its calibration and the metrics for the run record.
pub fn build(
    ctx: &StageContext<'_>,
    p: &TrainParams,
    labels: &[String],
    texts: &[String],
    y: &[u32],
    records: usize,
    va: &Records,
) -> Result<(FineTuned, Calibration, Value), StageError> {
    let dir = crate::ensemble::encoder_dir(ctx)?;
    let mut cfg = p.tune_config();
    let encoder = Encoder::load(&dir, cfg.max_seq_length)?;
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

    let y_va = encode(labels, &va.isco_code);
    let mut idx: Vec<usize> = (0..va.len()).filter(|&i| y_va[i].is_some()).collect();
    classifier::Rng::new(p.seed).shuffle(&mut idx);
    let (stop_rows, rest) = idx.split_at(cfg.eval_rows.min(idx.len() / 2));
    let cal_rows = &rest[..p.retrieval_fit_rows.min(rest.len())];
    let pick = |rows: &[usize]| -> (Vec<String>, Vec<u32>) {
        rows.iter()
            .map(|&i| (va.text[i].clone(), y_va[i].expect("labelled")))
            .unzip()
    };
    let (stop_texts, stop_y) = pick(stop_rows);
    let (cal_texts, cal_y) = pick(cal_rows);
    if stop_texts.is_empty() || cal_texts.is_empty() {
        return Err(
            "model_kind = \"transformer\" needs labelled validation records (for early stopping and calibration); the validation split has none with a trained code".to_string().into(),
        );
    }

    let progress = ctx.progress;
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
    let cal = fit_calibration(&logits, &cal_y, labels.len(), &p.calibration);
    let m = json!({
        "encoder": dir.display().to_string(),
        "calibration_rows": cal_y.len(),
        "early_stopping_rows": stop_y.len(),
        "sample_records": rows.len() - reference,
        "sample_reference_examples": reference,
        "report": report,
    });
    Ok((ft, cal, m))
}

/// One line for the stage report.
pub fn summary(m: &Value) -> String {
    let r = &m["report"];
    format!(
        "transformer: {} layers fine-tuned on {} rows, {} steps ({} examples) in {:.0}s ({:.1}s per 1,000 examples), stopped by {}; best validation accuracy {:.4} at step {}",
        r["train_layers"],
        r["sample_rows"],
        r["steps"],
        r["examples"],
        r["seconds"].as_f64().unwrap_or(0.0),
        r["seconds_per_1000_examples"].as_f64().unwrap_or(0.0),
        r["stopped_by"].as_str().unwrap_or("?"),
        r["best_validation_accuracy"].as_f64().unwrap_or(0.0),
        r["best_step"],
    )
}
