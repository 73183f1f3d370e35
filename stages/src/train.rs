//! `train`: fit the `ngram` classifier on the training split (plus reference augmentation),
//! early-stop on validation macro-F1, calibrate the temperature on validation, and write a
//! self-contained model artifact (burn record + `model.json`).

use std::collections::BTreeSet;

use classifier::ann::SearchConfig;
use classifier::augment::reference_examples;
use classifier::calibrate::{METHODS, fit_calibration};
use classifier::features::{FeatureConfig, FeatureMatrix};
use classifier::model::{TrainConfig, TrainData, train};
use classifier::predict::{FORMAT, ModelMeta, save, titles_for};
use classifier::transformer::TuneConfig;
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clean::load_taxonomy;
use crate::records::Records;

/// Params of `train` (config sections `[model]` and `[training]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainParams {
    /// Model kind: `ngram`, or `ensemble` (ngram + bi-encoder retrieval; needs an `encoder`
    /// input).
    pub model_kind: String,
    /// Ensemble: longest token sequence the encoder reads (design: 128).
    pub encoder_max_seq_length: usize,
    /// Ensemble: validation rows used to fit the mixing weights and the calibration.
    pub retrieval_fit_rows: usize,
    /// Ensemble: add the distinct training titles and duty clauses to the retrieval indexes.
    pub retrieval_index_records: bool,
    /// Ensemble: also fine-tune the encoder as a transformer classifier and mix it in (its
    /// weight fitted on validation like the others).
    pub ensemble_transformer: bool,
    /// Ensemble: indexes with more entries than this are searched through an HNSW graph
    /// instead of exactly (0: always).
    pub exact_search_limit: usize,
    /// Ensemble: HNSW `efConstruction` (neighbours considered while building the graph).
    pub ann_ef_construction: usize,
    /// Ensemble: nearest entries an HNSW search returns per query (HNSW `ef`).
    pub ann_candidates: usize,
    /// Transformer: top encoder layers fine-tuned (the rest frozen).
    pub transformer_train_layers: usize,
    /// Transformer: examples per forward pass (design: 16).
    pub transformer_batch_size: usize,
    /// Transformer: forward passes per optimiser step.
    pub transformer_grad_accumulation: usize,
    /// Transformer: peak learning rate of the encoder layers (design: 2e-5).
    pub transformer_lr: f64,
    /// Transformer: peak learning rate of the classification head.
    pub transformer_lr_head: f64,
    /// Transformer: share of the steps spent warming up.
    pub transformer_warmup: f64,
    /// Transformer: AdamW weight decay.
    pub transformer_weight_decay: f32,
    /// Transformer: passes over the sample at most (design: 3).
    pub transformer_epochs: usize,
    /// Transformer: wall-clock training budget in seconds (0: none).
    pub transformer_max_seconds: f64,
    /// Transformer: rows to train on: a stratified subsample of the records plus every
    /// reference example (0: all).
    pub transformer_max_examples: usize,
    /// Transformer: tokens per text.
    pub transformer_max_seq_length: usize,
    /// Transformer: validation rows scored at each early-stopping check.
    pub transformer_eval_rows: usize,
    /// Transformer: early-stopping checks over the planned run.
    pub transformer_evaluations: usize,
    /// Transformer: checks without improvement before stopping.
    pub transformer_patience: usize,
    /// Hash buckets of the feature table.
    pub buckets: usize,
    /// Word n-gram order.
    pub word_ngrams: usize,
    /// Shortest character n-gram (0: none).
    pub minn: usize,
    /// Longest character n-gram.
    pub maxn: usize,
    /// Character n-grams of the duties as well as the title.
    pub duties_char_ngrams: bool,
    /// Shares of the bag for title features, duties words and duties character n-grams
    /// (`[]`: plain mean over all features).
    pub field_weights: Vec<f32>,
    /// Embedding dimension.
    pub dim: usize,
    /// Hidden layer width (0: linear head).
    pub hidden: usize,
    /// Maximum epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Embedding learning rate (Adagrad).
    pub lr_embedding: f64,
    /// Head learning rate (Adam).
    pub lr_head: f64,
    /// Label smoothing.
    pub label_smoothing: f32,
    /// Early stopping patience in epochs.
    pub early_stopping_patience: usize,
    /// Seed.
    pub seed: u64,
    /// Add training examples from the reference file (when one is given).
    pub reference_augmentation: bool,
    /// Times each reference example is repeated per epoch.
    pub augmentation_repeats: u32,
    /// Calibration fitted on validation: `isotonic` (NLL temperature, then a top-label
    /// isotonic map), `ece` (the temperature minimising calibration error) or `nll` (classic
    /// temperature scaling).
    pub calibration: String,
}

impl Default for TrainParams {
    fn default() -> Self {
        let f = FeatureConfig::default();
        let t = TrainConfig::default();
        let tc = TuneConfig::default();
        let sc = SearchConfig::default();
        TrainParams {
            model_kind: "ngram".into(),
            encoder_max_seq_length: 128,
            retrieval_fit_rows: 5000,
            retrieval_index_records: true,
            ensemble_transformer: false,
            exact_search_limit: sc.exact_limit,
            ann_ef_construction: sc.ef_construction,
            ann_candidates: sc.candidates,
            transformer_train_layers: tc.train_layers,
            transformer_batch_size: tc.batch_size,
            transformer_grad_accumulation: tc.grad_accumulation,
            transformer_lr: tc.lr,
            transformer_lr_head: tc.lr_head,
            transformer_warmup: tc.warmup,
            transformer_weight_decay: tc.weight_decay,
            transformer_epochs: tc.epochs,
            transformer_max_seconds: tc.max_seconds,
            transformer_max_examples: tc.max_examples,
            transformer_max_seq_length: tc.max_seq_length,
            transformer_eval_rows: tc.eval_rows,
            transformer_evaluations: tc.evaluations,
            transformer_patience: tc.patience,
            buckets: f.buckets,
            word_ngrams: f.word_ngrams,
            minn: f.minn,
            maxn: f.maxn,
            // The duties' character n-grams carry unseen occupations; field weights keep them
            // from drowning the title (BENCHMARKS.md, session 6).
            duties_char_ngrams: true,
            field_weights: vec![2.0, 1.5, 1.0],
            dim: t.dim,
            hidden: t.hidden,
            epochs: t.epochs,
            batch_size: t.batch_size,
            lr_embedding: t.lr_embedding,
            lr_head: t.lr_head,
            label_smoothing: t.label_smoothing,
            early_stopping_patience: t.early_stopping_patience,
            seed: t.seed,
            reference_augmentation: true,
            augmentation_repeats: 2,
            calibration: "isotonic".into(),
        }
    }
}

impl TrainParams {
    /// The featuriser config.
    pub fn features(&self) -> FeatureConfig {
        FeatureConfig {
            buckets: self.buckets,
            word_ngrams: self.word_ngrams,
            minn: self.minn,
            maxn: self.maxn,
            duties_char_ngrams: self.duties_char_ngrams,
            field_weights: <[f32; 3]>::try_from(&self.field_weights[..]).ok(),
        }
    }

    /// The network/training config.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            dim: self.dim,
            hidden: self.hidden,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr_embedding: self.lr_embedding,
            lr_head: self.lr_head,
            label_smoothing: self.label_smoothing,
            early_stopping_patience: self.early_stopping_patience,
            seed: self.seed,
        }
    }

    /// When an ensemble's indexes are searched approximately.
    pub fn search_config(&self) -> SearchConfig {
        SearchConfig {
            exact_limit: self.exact_search_limit,
            ef_construction: self.ann_ef_construction,
            candidates: self.ann_candidates,
        }
    }

    /// The transformer's fine-tuning config.
    pub fn tune_config(&self) -> TuneConfig {
        TuneConfig {
            train_layers: self.transformer_train_layers,
            batch_size: self.transformer_batch_size,
            grad_accumulation: self.transformer_grad_accumulation,
            lr: self.transformer_lr,
            lr_head: self.transformer_lr_head,
            warmup: self.transformer_warmup,
            weight_decay: self.transformer_weight_decay,
            epochs: self.transformer_epochs,
            max_seconds: self.transformer_max_seconds,
            max_examples: self.transformer_max_examples,
            max_seq_length: self.transformer_max_seq_length,
            eval_rows: self.transformer_eval_rows,
            evaluations: self.transformer_evaluations,
            patience: self.transformer_patience,
            seed: self.seed,
        }
    }

    /// Whether this model kind reads the param `key`. Every kind trains the n-gram network
    /// (a transformer calibrates against it, an ensemble mixes it in); only an ensemble reads
    /// the retrieval keys, and only a transformer (or an ensemble with one) the
    /// `transformer_*` keys.
    pub fn reads(&self, key: &str) -> bool {
        const ENSEMBLE: [&str; 7] = [
            "encoder_max_seq_length",
            "retrieval_fit_rows",
            "retrieval_index_records",
            "ensemble_transformer",
            "exact_search_limit",
            "ann_ef_construction",
            "ann_candidates",
        ];
        let ensemble = self.model_kind == "ensemble";
        if ENSEMBLE.contains(&key) {
            return ensemble;
        }
        if key.starts_with("transformer_") {
            return self.model_kind == "transformer" || (ensemble && self.ensemble_transformer);
        }
        true
    }

    fn check(&self) -> Result<(), String> {
        if !KINDS.contains(&self.model_kind.as_str()) {
            return Err(format!(
                "model_kind `{}` is not known; use `ngram`, `ensemble` or `transformer`",
                self.model_kind
            ));
        }
        if self.model_kind == "transformer"
            && (self.transformer_batch_size == 0
                || self.transformer_grad_accumulation == 0
                || self.transformer_epochs == 0
                || self.transformer_max_seq_length < 8
                || self.transformer_eval_rows == 0)
        {
            return Err("transformer_batch_size, transformer_grad_accumulation, transformer_epochs and transformer_eval_rows must be positive and transformer_max_seq_length at least 8".into());
        }
        if self.model_kind == "ensemble" && self.retrieval_fit_rows < 100 {
            return Err("retrieval_fit_rows must be at least 100".into());
        }
        self.search_config().validate()?;
        if self.buckets == 0 || self.dim == 0 || self.batch_size == 0 || self.epochs == 0 {
            return Err("buckets, dim, batch_size and epochs must be positive".into());
        }
        crate::check_model_size(self.buckets, self.dim, self.hidden)?;
        if !METHODS.contains(&self.calibration.as_str()) {
            return Err(format!(
                "calibration `{}` is not known; use `isotonic`, `ece` or `nll`",
                self.calibration
            ));
        }
        if !self.field_weights.is_empty()
            && (self.field_weights.len() != 3
                || self
                    .field_weights
                    .iter()
                    .any(|w| !w.is_finite() || *w < 0.0)
                || self.field_weights.iter().sum::<f32>() <= 0.0)
        {
            return Err(format!(
                "field_weights {:?} must be empty (plain mean) or three non-negative shares [title, duties words, duties characters] that are not all 0",
                self.field_weights
            ));
        }
        if self.minn > self.maxn {
            return Err(format!(
                "minn ({}) must not exceed maxn ({})",
                self.minn, self.maxn
            ));
        }
        Ok(())
    }
}

/// Model kinds `train` builds.
pub const KINDS: [&str; 3] = ["ngram", "ensemble", "transformer"];

/// The `train` stage kind.
pub struct Train;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "train",
        required: true,
        many: false,
        help: "training records (split.train)",
    },
    InputDecl {
        name: "validation",
        required: true,
        many: false,
        help: "validation records (split.validation)",
    },
    InputDecl {
        name: "reference",
        required: false,
        many: false,
        help: "ISCO-08 reference CSV for titles and augmentation",
    },
    InputDecl {
        name: "encoder",
        required: false,
        many: true,
        help: "files of a pretrained encoder directory (config.json, model.safetensors, tokenizer.json; `isco-dag models fetch minilm`) for model_kind = \"ensemble\" or \"transformer\"",
    },
];

const OUTPUTS: &[OutputDecl] = &[OutputDecl {
    name: "model",
    file: "model",
    dir: true,
}];

/// Class indices of codes (codes outside `labels` are dropped from validation scoring).
pub fn encode(labels: &[String], codes: &[String]) -> Vec<Option<u32>> {
    codes
        .iter()
        .map(|c| labels.binary_search(c).ok().map(|i| i as u32))
        .collect()
}

/// Features and class indices of the records whose code is a label (validation scoring and
/// calibration; records of other codes cannot be scored and are left out).
pub fn labelled_features(
    fc: &FeatureConfig,
    labels: &[String],
    records: &Records,
) -> (FeatureMatrix, Vec<u32>) {
    let (idx, y): (Vec<usize>, Vec<u32>) = encode(labels, &records.isco_code)
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (i, c)))
        .unzip();
    let texts: Vec<String> = idx.iter().map(|&i| records.text[i].clone()).collect();
    (FeatureMatrix::build(fc, &texts), y)
}

impl Stage for Train {
    runner::stage_metadata!("train", version "7", "train the ngram classifier (and for an ensemble its retrieval half, for a transformer the fine-tuned encoder), calibrate it, write the model artifact", INPUTS, OUTPUTS, TrainParams);
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        let mut v = runner::stage::typed_params::<TrainParams>(raw)?;
        let p = serde_json::from_value::<TrainParams>(v.clone()).map_err(|e| e.to_string())?;
        p.check()?;
        // The key holds only what this model kind reads: a transformer setting must not
        // re-train an ngram model. (The run reads the rest back as defaults it never uses.)
        if let serde_json::Value::Object(m) = &mut v {
            m.retain(|k, _| p.reads(k));
        }
        Ok(v)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let p: TrainParams = ctx.params()?;
        let tr = Records::read(ctx.input("train")?)?;
        let va = Records::read(ctx.input("validation")?)?;
        let tax = load_taxonomy(ctx)?;
        let fc = p.features();
        let tc = p.train_config();

        let mut texts = tr.text.clone();
        let mut codes = tr.isco_code.clone();
        let mut repeats = vec![1u32; texts.len()];
        let mut augmented = 0;
        if p.reference_augmentation && tax.has_reference() {
            for (t, c) in reference_examples(&tax, p.seed) {
                texts.push(t);
                codes.push(c);
                repeats.push(p.augmentation_repeats.max(1));
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
        ctx.progress.start(tc.epochs as u64, "featurising");
        let x = FeatureMatrix::build(&fc, &texts);
        let (vx, vy) = labelled_features(&fc, &labels, &va);
        let progress = ctx.progress;
        let net = train(
            &TrainData {
                x: &x,
                y: &y,
                repeats: Some(&repeats),
                val: Some((&vx, &vy)),
            },
            &fc,
            &tc,
            labels.len(),
            None,
            &|e, _, s| {
                progress.inc(1);
                progress.message(&format!("epoch {e}: validation macro-F1 {s:.4}"));
            },
        )?;

        // Calibration on validation.
        let rows: Vec<usize> = (0..vx.rows()).collect();
        let c = labels.len();
        let mut cal = fit_calibration(&net.logits(&vx, &rows), &vy, c, &p.calibration);
        let transformer = if p.model_kind == "transformer"
            || (p.model_kind == "ensemble" && p.ensemble_transformer)
        {
            let (ft, cal_t, m) =
                crate::transformer::build(ctx, &p, &labels, &texts, &y, tr.len(), &va)?;
            cal = cal_t;
            Some((ft, m))
        } else {
            None
        };
        let ensemble = if p.model_kind == "ensemble" {
            let ft = transformer.as_ref().map(|(t, _)| t);
            let (r, cal_e, m) = crate::ensemble::build(ctx, &p, &labels, &tax, &tr, &va, &net, ft)?;
            cal = cal_e;
            Some((r, m))
        } else {
            None
        };
        let (temperature, ece_before, ece_after) = (cal.temperature, cal.ece_before, cal.ece_after);
        let mut metrics = json!({
            "train_records": tr.len(),
            "augmentation_examples": augmented,
            "classes": c,
            "epochs_run": net.epochs_run,
            "best_epoch": net.best_epoch,
            "validation_macro_f1": net.best_val_macro_f1,
            "train_seconds": net.train_seconds,
            "temperature": temperature,
            "validation_ece_before": ece_before,
            "validation_ece_after": ece_after,
        });
        if let Some((_, m)) = &ensemble {
            metrics["retrieval"] = m.clone();
        }
        if let Some((_, m)) = &transformer {
            metrics["transformer"] = m.clone();
        }
        let meta = ModelMeta {
            format: FORMAT,
            kind: p.model_kind.clone(),
            titles: titles_for(&labels, &tax),
            labels,
            features: fc,
            train: tc,
            temperature,
            isotonic: cal.isotonic,
            transformer: transformer.is_some().then(|| p.tune_config()),
            summary: json!({"run_id": ctx.run_id, "stage": ctx.id, "trained_at": chrono::Utc::now().to_rfc3339(), "metrics": metrics}),
        };
        save(&ctx.output("model"), &net, &meta)?;
        let mut summary = Vec::new();
        if let Some((r, m)) = &ensemble {
            r.save(&ctx.output("model"))?;
            summary.push(crate::ensemble::summary(m));
        }
        if let Some((t, m)) = &transformer {
            t.save(&ctx.output("model"))?;
            summary.push(crate::transformer::summary(m));
        }
        Ok(StageReport {
            summary: vec![format!(
                "{} records + {} reference examples, {} classes; best epoch {}/{} (validation macro-F1 {:.4}) in {:.1}s; temperature {:.2}, validation ECE {:.4} -> {:.4}",
                tr.len(),
                augmented,
                c,
                net.best_epoch,
                net.epochs_run,
                net.best_val_macro_f1,
                net.train_seconds,
                temperature,
                ece_before,
                ece_after
            )]
            .into_iter()
            .chain(summary)
            .collect(),
            metrics,
        })
    }
}
