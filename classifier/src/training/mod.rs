//! Training: [`fit`] builds a model of any kind from records, [`fine_tune`] continues one on
//! reviewers' corrections. Both return a [`Fitted`] model — its description, its typed parts
//! and a typed summary — that the caller saves where it wants.
//!
//! | module | job |
//! |---|---|
//! | [`spec`] | [`FitSpec`] (nesting each part's config) and [`FineTuneSpec`], and the flat configuration layout |
//! | [`data`] | labelled examples, the files training reads, progress |
//! | [`bi_encoder`] | the retrieval's sentence encoder trained on the office's pairs (MultipleNegativesRanking with hard negatives) |
//! | [`cascade`] | an ensemble's cascade: the n-gram confidence threshold and the calibration of the rows under it |
//! | [`title_only`] | an ensemble's calibration and cascade threshold for titles it never saw, given without duties |
//! | [`ensemble`] | the retrieval half: indexes, embedding, the mix and its calibration; its extension by corrections |
//! | [`transformer`] | the fine-tuned encoder and its calibration |
//! | [`finetune`] | continuing a model on corrections |
//! | [`reranker`] | the cross-encoder re-ranker trained on the model's own confusions, and where it joins the model |
//!
//! Every kind trains the n-gram network first (fastText-style, early-stopped on validation
//! macro-F1, with reference augmentation), then the kind's other parts; the calibration of
//! the last part that decides is the model's. The network is taken from the model the run
//! wrote last time instead when that one was trained on exactly the same examples, validation
//! records and settings ([`crate::artifact::NgramTraining`]), and so is a fine-tuned encoder
//! ([`crate::artifact::TransformerTraining`]): the later parts' settings and inputs do not
//! train them again.

pub mod bi_encoder;
pub mod cascade;
pub mod data;
pub mod ensemble;
pub mod finetune;
pub mod refit;
pub mod reranker;
pub mod spec;
pub mod title_only;
pub mod transformer;

use std::collections::BTreeSet;

use serde::Serialize;

pub use bi_encoder::{EncoderTrainReport, EncoderTrainSpec, TrainedEncoder, train_encoder};
pub use data::{Examples, Files, Progress, Silent, encode, fit_sample, labelled_features};
pub use finetune::{FineTuneSummary, fine_tune};
pub use reranker::{RerankerTrainReport, RerankerTrainSpec, TrainedReranker, train_reranker};
pub use spec::{EnsembleConfig, FineTuneSpec, FitSpec};

use crate::Taxonomy;
use crate::artifact::{
    Calibrated, CascadeFit, FORMAT, FitSample, Model, ModelKind, ModelMeta, NgramTraining,
    titles_for,
};
use crate::augment::reference_examples;
use crate::calibrate::fit_calibration;
use crate::error::Error;
use crate::features::FeatureMatrix;
use crate::model::{TrainData, train};

/// What [`fit`] did, for the run record and the stage report.
#[derive(Debug, Clone, Serialize)]
pub struct FitSummary {
    /// Training records.
    pub train_records: usize,
    /// Reference examples added.
    pub augmentation_examples: usize,
    /// Classes (codes) learned.
    pub classes: usize,
    /// Epochs the n-gram network ran.
    pub epochs_run: usize,
    /// Its best epoch (kept).
    pub best_epoch: usize,
    /// Its validation macro-F1 there.
    pub validation_macro_f1: f64,
    /// Seconds it trained.
    pub train_seconds: f64,
    /// Whether the network is the one the previous run trained, its examples and settings
    /// being the same (see [`NgramTraining`]).
    pub ngram_reused: bool,
    /// The model's calibration temperature.
    pub temperature: f64,
    /// Validation ECE of the raw softmax.
    pub validation_ece_before: f64,
    /// Validation ECE after calibration.
    pub validation_ece_after: f64,
    /// Validation rows the calibration was fitted on (none fitted below
    /// [`crate::calibrate::MIN_FIT_ROWS`]).
    pub calibration_rows: usize,
    /// The retrieval half, for an ensemble.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<ensemble::EnsembleSummary>,
    /// The fine-tuned encoder, when the model has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transformer: Option<transformer::TransformerSummary>,
    /// The cascade of an ensemble, as fitted on validation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadeFit>,
    /// The refit with validation (`refit = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refit: Option<refit::RefitSummary>,
}

impl FitSummary {
    /// Lines for the stage report.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{} records + {} reference examples, {} classes; best epoch {}/{} (validation macro-F1 {:.4}) in {:.1}s{}; {}",
            self.train_records,
            self.augmentation_examples,
            self.classes,
            self.best_epoch,
            self.epochs_run,
            self.validation_macro_f1,
            self.train_seconds,
            if self.ngram_reused {
                " (the previous run's network: same examples and settings)"
            } else {
                ""
            },
            self.calibration_line()
        )];
        out.extend(self.retrieval.as_ref().map(|r| r.line()));
        out.extend(self.transformer.as_ref().map(|t| t.line()));
        out.extend(self.cascade.as_ref().map(cascade_line));
        out.extend(
            self.retrieval
                .as_ref()
                .and_then(|r| r.title_only.as_ref())
                .map(title_only_line),
        );
        out.extend(self.refit.as_ref().map(refit::RefitSummary::line));
        out
    }

    /// What the calibration is: its temperature and validation ECE, or why none was fitted.
    fn calibration_line(&self) -> String {
        if self.calibration_rows < crate::calibrate::MIN_FIT_ROWS {
            format!(
                "not calibrated: {} validation rows, fewer than the {} a calibration is fitted on, so confidences are the network's own, uncalibrated; give more records (validation ECE {:.4})",
                self.calibration_rows,
                crate::calibrate::MIN_FIT_ROWS,
                self.validation_ece_before
            )
        } else {
            format!(
                "temperature {:.2}, validation ECE {:.4} -> {:.4}",
                self.temperature, self.validation_ece_before, self.validation_ece_after
            )
        }
    }
}

/// The stage report's line about the calibration of unseen titles without duties.
pub fn title_only_line(f: &crate::artifact::TitleOnlyFit) -> String {
    let rows = match f.external_rows {
        0 => format!("{} validation titles", f.rows),
        n => format!(
            "{} validation titles and {n} titles coded outside the records",
            f.rows - n
        ),
    };
    let mut line = format!(
        "unseen titles without duties: {rows}, accuracy {:.4}; mean confidence {:.4} (ECE {:.4}) with their own calibration against {:.4} (ECE {:.4}) with that of records with duties",
        f.accuracy,
        f.confidence,
        f.ece,
        f.confidence_with_duties_calibration,
        f.ece_with_duties_calibration
    );
    if let Some(a) = &f.agreement {
        line.push_str(&format!(
            "; capped by their parts' agreement, {:.1} % of them at confidence >= 0.9 ({:.1} % right) against {:.1} % ({:.1} % right), ECE {:.4} against {:.4}",
            100.0 * a.share_conf_90,
            100.0 * a.accuracy_conf_90,
            100.0 * a.share_conf_90_before,
            100.0 * a.accuracy_conf_90_before,
            a.ece,
            a.ece_before
        ));
    }
    line
}

/// The stage report's line about a cascade.
pub fn cascade_line(c: &CascadeFit) -> String {
    format!(
        "cascade: the n-gram network alone decides {:.1} % of {} validation rows, accuracy {:.4} against {:.4} for the whole ensemble on every row (allowed loss {})",
        100.0 * c.first_step_share,
        c.rows,
        c.accuracy,
        c.accuracy_full,
        c.max_loss
    )
}

/// A trained model with its description and what training did.
pub struct Fitted<S> {
    /// `model.json` (its `summary` holds the training summary under `metrics`; add
    /// provenance before saving).
    pub meta: ModelMeta,
    /// The parts.
    pub model: Model,
    /// What training did.
    pub summary: S,
}

impl<S> Fitted<S> {
    /// Writes the artifact directory.
    pub fn save(&self, dir: &std::path::Path) -> Result<(), Error> {
        self.model.save(dir, &self.meta)
    }
}

/// Trains a model of `spec.kind` on `train`, early-stopped and calibrated on `validation`.
pub fn fit(
    spec: &FitSpec,
    train_set: Examples<'_>,
    validation: Examples<'_>,
    tax: &Taxonomy,
    files: &Files<'_>,
    progress: &dyn Progress,
) -> Result<Fitted<FitSummary>, Error> {
    let fc = &spec.features;
    let tc = &spec.train;
    let mut texts = train_set.text.to_vec();
    let mut codes = train_set.isco_code.to_vec();
    let mut repeats = vec![1u32; texts.len()];
    let mut augmented = 0;
    if spec.reference_augmentation && tax.has_reference() {
        for (t, c) in reference_examples(tax, tc.seed) {
            texts.push(t);
            codes.push(c);
            repeats.push(spec.augmentation_repeats.max(1));
            augmented += 1;
        }
    }
    let labels: Vec<String> = codes
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let y: Vec<u32> = encode(&labels, &codes)
        .into_iter()
        .map(|c| c.expect("label"))
        .collect();
    let key = ngram_key(fc, tc, &labels, &texts, &codes, &repeats, validation);
    let (vx, vy) = labelled_features(fc, &labels, validation);
    let previous = files
        .reusable_model()
        .and_then(|dir| previous_net(dir, &key));
    let ngram_reused = previous.is_some();
    let net = match previous {
        Some(net) => {
            progress.message(
                "the n-gram network is the previous run's: its examples and settings are unchanged",
            );
            net
        }
        None => {
            progress.start(tc.epochs as u64, "featurising");
            let x = FeatureMatrix::build(fc, &texts);
            train(
                &TrainData {
                    x: &x,
                    y: &y,
                    repeats: Some(&repeats),
                    val: Some((&vx, &vy)),
                },
                fc,
                tc,
                labels.len(),
                None,
                &|e, _, s| {
                    progress.inc(1);
                    progress.message(&format!("epoch {e}: validation macro-F1 {s:.4}"));
                },
            )?
        }
    };
    let mut ngram_training = NgramTraining {
        key,
        epochs_run: net.epochs_run,
        best_epoch: net.best_epoch,
        validation_macro_f1: net.best_val_macro_f1,
        train_seconds: net.train_seconds,
        refit: None,
    };

    // Calibration on validation, replaced by the calibration of the part that decides.
    let rows: Vec<usize> = (0..vx.rows()).collect();
    let c = labels.len();
    let mut cal = fit_calibration(&net.logits(&vx, &rows), &vy, c, spec.calibration);
    let ngram_calibration = Calibrated {
        temperature: cal.temperature,
        isotonic: cal.isotonic.clone(),
    };
    let fine_tuned = if spec.has_transformer() {
        let dir = files
            .encoder
            .ok_or(Error::MissingEncoder { kind: spec.kind })?;
        let (ft, cal_t, s, training) = transformer::build(
            dir,
            files.reusable_model(),
            spec,
            &labels,
            &texts,
            &y,
            train_set.len(),
            validation,
            progress,
        )?;
        cal = cal_t;
        Some((ft, s, training))
    } else {
        None
    };
    let (fine_tuned, transformer_summary, transformer_training) = match fine_tuned {
        Some((ft, s, t)) => (Some(ft), Some(s), Some(t)),
        None => (None, None, None),
    };
    let (model, retrieval_summary, cascade, title_only) = match spec.kind {
        ModelKind::Ngram => (Model::Ngram { net }, None, None, None),
        ModelKind::Transformer => (
            Model::Transformer {
                net,
                transformer: fine_tuned.expect("a transformer model fine-tunes its encoder"),
            },
            None,
            None,
            None,
        ),
        ModelKind::Ensemble => {
            let (retrieval, cal_e, cascade, title_only, s) = ensemble::build(
                spec,
                files,
                &labels,
                tax,
                train_set,
                validation,
                &net,
                fine_tuned.as_ref(),
                &ngram_calibration,
                progress,
            )?;
            cal = cal_e;
            (
                Model::Ensemble {
                    net,
                    retrieval: Box::new(retrieval),
                    transformer: fine_tuned,
                },
                Some(s),
                Some(cascade),
                title_only,
            )
        }
    };
    let mut model = model;
    let refit = if spec.refit && spec.kind != ModelKind::Transformer {
        let first = refit::FirstTraining {
            key: &ngram_training.key,
            texts: &texts,
            y: &y,
            repeats: &repeats,
            best_epoch: ngram_training.best_epoch,
        };
        let s = refit::refit_model(
            &mut model, &first, spec, train_set, validation, &labels, tax, files, progress,
        )?;
        ngram_training.refit = Some(s.training.clone());
        Some(s)
    } else {
        None
    };
    // The first training's numbers: a refitted network has no validation of its own.
    let summary = FitSummary {
        train_records: train_set.len(),
        augmentation_examples: augmented,
        classes: c,
        epochs_run: ngram_training.epochs_run,
        best_epoch: ngram_training.best_epoch,
        validation_macro_f1: ngram_training.validation_macro_f1,
        train_seconds: ngram_training.train_seconds,
        ngram_reused,
        temperature: cal.temperature,
        validation_ece_before: cal.ece_before,
        validation_ece_after: cal.ece_after,
        calibration_rows: cal.rows,
        retrieval: retrieval_summary,
        transformer: transformer_summary,
        cascade: cascade.as_ref().map(|c| c.fit.clone()),
        refit,
    };
    let meta = ModelMeta {
        format: FORMAT,
        kind: spec.kind,
        titles: titles_for(&labels, tax),
        reference_units: tax.units().map(|g| g.code.as_str().into()).collect(),
        labels,
        features: fc.clone(),
        train: tc.clone(),
        temperature: cal.temperature,
        isotonic: cal.isotonic,
        transformer: spec.has_transformer().then(|| spec.tune_config()),
        fit_sample: summary.retrieval.as_ref().map(|r| FitSample {
            rows: r.fit_rows,
            seed: tc.seed,
        }),
        cascade,
        reranker: None,
        title_only,
        ngram_training: Some(ngram_training),
        transformer_training,
        summary: serde_json::json!({ "metrics": summary }),
    };
    Ok(Fitted {
        meta,
        model,
        summary,
    })
}

/// A digest of what a part's training reads ([`NgramTraining`], its transformer twin): the
/// part's name, the build and its [`crate::model::TRAINING_VERSION`], then each field given,
/// length-prefixed so that no two different inputs run together into the same bytes.
pub(super) struct TrainingDigest(blake3::Hasher);

impl TrainingDigest {
    pub(super) fn new(part: &str) -> TrainingDigest {
        let mut d = TrainingDigest(blake3::Hasher::new());
        d.field(part.as_bytes());
        d.field(env!("CARGO_PKG_VERSION").as_bytes());
        d.field(&crate::model::TRAINING_VERSION.to_le_bytes());
        d
    }

    pub(super) fn field(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// A setting, as its JSON.
    pub(super) fn settings<T: Serialize>(&mut self, settings: &T) {
        self.field(&serde_json::to_vec(settings).expect("training settings serialise"));
    }

    pub(super) fn finish(self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// The digest of everything the n-gram network's training reads (see [`NgramTraining`]): the
/// featuriser and training settings, the label map, every example with its code and repeat
/// count, and the validation records it is early-stopped on.
fn ngram_key(
    fc: &crate::features::FeatureConfig,
    tc: &crate::model::TrainConfig,
    labels: &[String],
    texts: &[String],
    codes: &[String],
    repeats: &[u32],
    validation: Examples<'_>,
) -> String {
    let mut d = TrainingDigest::new("isco-dag ngram network");
    d.settings(fc);
    d.settings(tc);
    for l in labels {
        d.field(l.as_bytes());
    }
    d.field(b"examples");
    for ((t, c), r) in texts.iter().zip(codes).zip(repeats) {
        d.field(t.as_bytes());
        d.field(c.as_bytes());
        d.field(&r.to_le_bytes());
    }
    d.field(b"validation");
    for (t, c) in validation.text.iter().zip(validation.isco_code) {
        d.field(t.as_bytes());
        d.field(c.as_bytes());
    }
    d.finish()
}

/// The n-gram network of the model a training run wrote last time, when it was trained on
/// exactly what this run would train it on (`key`). Anything else — no such model, another
/// key, a file that cannot be read — means training it: the cost is time, not correctness,
/// so a damaged previous model is only logged.
fn previous_net(dir: &std::path::Path, key: &str) -> Option<crate::model::Trained> {
    let meta = Model::read_meta(dir).ok()?;
    // A refitted model's network is the refit, not the network this key trained.
    let training = meta.ngram_training.as_ref()?;
    if training.key != key || training.refit.is_some() {
        return None;
    }
    match Model::load_net(dir, &meta) {
        Ok(net) => Some(net),
        Err(e) => {
            tracing::warn!("the previous run's n-gram network is trained again: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> (Vec<String>, Vec<String>) {
        let mut text = Vec::new();
        let mut code = Vec::new();
        for i in 0..30 {
            text.push(format!("staff nurse {i} | caring for patients on ward {i}"));
            code.push("2221".to_string());
            text.push(format!("line cook {i} | preparing meals in kitchen {i}"));
            code.push("5120".to_string());
        }
        (text, code)
    }

    fn spec() -> FitSpec {
        let mut s = FitSpec::default();
        s.features.buckets = 4096;
        s.train.dim = 8;
        s.train.epochs = 2;
        s
    }

    /// A refit trains the network again on the training and validation examples for the
    /// epochs early stopping chose and keeps the calibration fitted before; a later run takes
    /// the refitted network from the previous model, never as the first training's.
    #[test]
    fn a_refit_trains_again_with_validation_and_keeps_the_calibration() {
        let (text, code) = data();
        let (tr, va) = (
            Examples::new(&text[..40], &code[..40]),
            Examples::new(&text[40..], &code[40..]),
        );
        let tax = Taxonomy::codes_only();
        let plain = fit(&spec(), tr, va, &tax, &Files::default(), &Silent).unwrap();
        let mut on = spec();
        on.refit = true;
        assert!(
            !spec().reads("refit"),
            "a model without a refit keeps its key"
        );
        assert!(on.reads("refit"));
        let refit = fit(&on, tr, va, &tax, &Files::default(), &Silent).unwrap();
        assert_eq!(refit.meta.temperature, plain.meta.temperature);
        assert_eq!(refit.meta.isotonic, plain.meta.isotonic);
        assert_eq!(refit.summary.best_epoch, plain.summary.best_epoch);
        let r = refit.summary.refit.as_ref().unwrap();
        assert_eq!(r.training.validation_records, 20);
        assert_eq!(r.training.examples, 60);
        assert_eq!(r.training.epochs, plain.summary.best_epoch);
        assert!(!r.reused);
        assert_ne!(refit.model.net().table, plain.model.net().table);
        assert_eq!(
            refit.meta.ngram_training.as_ref().unwrap().refit.as_ref(),
            Some(&r.training)
        );

        let dir = tempfile::tempdir().unwrap();
        refit.save(dir.path()).unwrap();
        let files = Files {
            previous_model: Some(dir.path()),
            ..Files::default()
        };
        let again = fit(&on, tr, va, &tax, &files, &Silent).unwrap();
        assert!(!again.summary.ngram_reused, "the first network is not kept");
        assert!(again.summary.refit.as_ref().unwrap().reused);
        assert_eq!(again.model.net().table, refit.model.net().table);
        let off = fit(&spec(), tr, va, &tax, &files, &Silent).unwrap();
        assert!(!off.summary.ngram_reused);
        assert_eq!(off.model.net().table, plain.model.net().table);
    }

    /// A training run given exactly what the previous one trained the network on takes that
    /// network; a change to anything its training reads trains it again, and a previous model
    /// that cannot be read only costs the time.
    #[test]
    fn the_previous_network_is_taken_only_for_the_same_examples_and_settings() {
        let (text, code) = data();
        let (tr, va) = (
            Examples::new(&text[..40], &code[..40]),
            Examples::new(&text[40..], &code[40..]),
        );
        let tax = Taxonomy::codes_only();
        let dir = tempfile::tempdir().unwrap();
        let first = fit(&spec(), tr, va, &tax, &Files::default(), &Silent).unwrap();
        assert!(!first.summary.ngram_reused);
        first.save(dir.path()).unwrap();
        let files = Files {
            previous_model: Some(dir.path()),
            ..Files::default()
        };

        let mut calibration_only = spec();
        calibration_only.calibration = crate::calibrate::CalibrationMethod::Ece;
        let again = fit(&calibration_only, tr, va, &tax, &files, &Silent).unwrap();
        assert!(again.summary.ngram_reused);
        assert_eq!(again.model.net().table, first.model.net().table);
        assert_eq!(again.summary.best_epoch, first.summary.best_epoch);
        assert_eq!(again.meta.ngram_training, first.meta.ngram_training);

        let mut other_lr = spec();
        other_lr.train.lr_embedding *= 1.5;
        let mut text2 = text.clone();
        text2[0] = text[0].replace("nurse", "nurse practitioner");
        let mut code2 = code.clone();
        code2[1] = "2221".into();
        for (s, tr, va) in [
            (other_lr, tr, va),
            (spec(), Examples::new(&text2[..40], &code[..40]), va),
            (spec(), Examples::new(&text[..40], &code2[..40]), va),
            (spec(), tr, Examples::new(&text2[..20], &code[..20])),
        ] {
            let f = fit(&s, tr, va, &tax, &files, &Silent).unwrap();
            assert!(!f.summary.ngram_reused);
            assert_ne!(
                f.meta.ngram_training.unwrap().key,
                first.meta.ngram_training.as_ref().unwrap().key
            );
        }

        let forced = Files {
            forced: true,
            ..files
        };
        let f = fit(&spec(), tr, va, &tax, &forced, &Silent).unwrap();
        assert!(!f.summary.ngram_reused, "forced: trained again");
        assert_eq!(f.model.net().table, first.model.net().table, "the same");

        std::fs::write(dir.path().join("model.bpk"), b"not a record").unwrap();
        let damaged = fit(&spec(), tr, va, &tax, &files, &Silent).unwrap();
        assert!(!damaged.summary.ngram_reused);
        assert_eq!(
            damaged.model.net().table,
            first.model.net().table,
            "trained again, the same"
        );
    }
}
