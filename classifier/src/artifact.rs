//! A trained model on disk: its kind, its description (`model.json`) and its parts.
//!
//! A model artifact is a directory:
//!
//! | file | content | kinds |
//! |---|---|---|
//! | `model.bpk` | the burn record (burnpack) of the ngram network: embedding table and head | all |
//! | `model.json` | [`ModelMeta`]: kind, label map, featuriser and network config, calibration, titles, training summary | all |
//! | `retrieval/` | encoder, title and duties indexes, mixing weights, embedding cache | `ensemble` |
//! | `transformer/` | the fine-tuned encoder and its classification head | `transformer`, `ensemble` with a transformer |
//! | `title_only_titles.parquet` | the titles coded outside the records that the calibration of unseen titles was fitted on (`title`, `code`; see [`TitleOnly::external`]) | an `ensemble` given such titles |
//! | `reranker/` | a cross-encoder that re-reads the best codes of the rows the model is unsure of ([`crate::reranker`]; written by `train-reranker`) | any, when `model.json` has `reranker` |
//!
//! [`Model`] holds exactly the parts of its kind, so a kind without its parts (or with parts
//! that mean nothing for it) cannot be built; loading reads `model.json` first, builds a
//! network of exactly those shapes, and loads each record strictly (a missing or mis-shaped
//! tensor is an error naming the file).

use std::collections::BTreeMap;
use std::path::Path;

use artifacts::table::{Column, Table};
use burn::module::Module;
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::features::FeatureConfig;
pub use crate::kind::ModelKind;
use crate::model::{NgramNet, TrainConfig, Trained};
use crate::retrieval::Retrieval;
use crate::taxonomy::Taxonomy;
use crate::transformer::{FineTuned, TuneConfig};

/// The validation sample an ensemble's mix and calibration were fitted on: a fine-tune
/// draws the same sample, so its queries are in the base model's embedding cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitSample {
    /// Labelled validation rows drawn.
    pub rows: usize,
    /// Seed of the draw.
    pub seed: u64,
}

/// A calibration as the model keeps it: a softmax temperature, then a top-label isotonic
/// map when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibrated {
    /// Softmax temperature.
    pub temperature: f64,
    /// Top-label isotonic map applied after it.
    #[serde(default)]
    pub isotonic: Option<crate::calibrate::Isotonic>,
}

impl Calibrated {
    /// Calibrated probabilities `[rows, classes]` of row-major logits.
    pub fn probabilities(&self, logits: &[f32], classes: usize) -> Vec<f32> {
        let mut p = crate::calibrate::softmax_rows(logits, classes, self.temperature);
        if let Some(iso) = &self.isotonic {
            use rayon::prelude::*;
            p.par_chunks_mut(classes).for_each(|r| iso.apply_row(r));
        }
        p
    }
}

/// How an ensemble codes most rows with its cheap part. The n-gram network codes every row;
/// a row whose calibrated n-gram confidence reaches `threshold` keeps that answer, and only
/// the others are embedded and scored by the whole ensemble. The threshold is the lowest
/// that costs at most `max_loss` of accuracy against the whole ensemble on the validation
/// sample the mix was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cascade {
    /// The n-gram network's own calibration, fitted on validation.
    pub ngram: Calibrated,
    /// Rows whose calibrated n-gram confidence is at least this stop at the first step.
    pub threshold: f64,
    /// The ensemble's calibration on the rows it decides (those the first step passes on).
    pub deferred: Calibrated,
    /// What the fit measured on the validation sample.
    pub fit: CascadeFit,
}

/// The cascade's fit on the validation sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeFit {
    /// Validation rows.
    pub rows: usize,
    /// Accuracy the cascade may give up against the whole ensemble.
    pub max_loss: f64,
    /// Share of the rows the first step decided.
    pub first_step_share: f64,
    /// Accuracy of the cascade.
    pub accuracy: f64,
    /// Accuracy of the whole ensemble on every row.
    pub accuracy_full: f64,
    /// Rows the deferred calibration was fitted on (0: the ensemble's own calibration).
    pub deferred_rows: usize,
}

/// How an ensemble codes a record that has a title and no duties, when that title is not an
/// entry of its title index (the records it was trained on and the reference titles).
///
/// The ensemble's calibration and its cascade's threshold are fitted on validation records,
/// which have duties; on a title alone the same scores mean less (the duties carry much of
/// the evidence), so those confidences would run high. This part is fitted on the validation
/// records whose titles the model never saw, with their duties removed: the cascade's
/// n-gram calibration and threshold, and the ensemble's calibration with and without the
/// cascade. Titles the model saw keep the ensemble's calibration.
///
/// Titles coded outside the records (see [`crate::titles`]), when training is given them,
/// join those rows: they are kept here so that fine-tuning refits the part on them too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TitleOnly {
    /// The ensemble's calibration on every such row (when no cascade is used).
    pub whole: Calibrated,
    /// The cascade for such rows.
    pub cascade: Cascade,
    /// What the fit measured.
    pub fit: TitleOnlyFit,
    /// Titles coded outside the records that the part was fitted on besides validation's.
    /// They are kept in `title_only_titles.parquet` beside `model.json` (tens of thousands
    /// of titles would otherwise make up most of the description); a description that lists
    /// them itself is read as well.
    #[serde(default, skip_serializing)]
    pub external: Vec<crate::titles::LabelledTitle>,
    /// A cap on such a title's confidence from how far its parts agree on its code (absent
    /// in a model without one: such a model keeps the confidence above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<Agreement>,
}

/// A cap on an unseen title's confidence from how sure each part of the ensemble is of the
/// code it gets (see [`crate::agreement`]).
///
/// Each part's probability of the chosen code is calibrated on the fit rows (the n-gram
/// network's by the part's cascade calibration, the retrieval's by `retrieval`, the whole
/// ensemble's by the part's calibration without the cascade); the least of the three is the
/// row's score, `isotonic` maps it to the share of fit rows with that score coded right, and
/// the row's confidence is the lower of that share and the calibration's. The chosen code
/// does not change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    /// The retrieval's calibration on such rows (of its probabilities alone).
    pub retrieval: Calibrated,
    /// From the least calibrated probability of the chosen code to the cap.
    pub isotonic: crate::calibrate::Isotonic,
}

/// The fit of [`Agreement`] on the title-only rows, through the cascade: their confidence
/// without the cap and with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementFit {
    /// Rows fitted on.
    pub rows: usize,
    /// Their expected calibration error without the cap and with it.
    pub ece_before: f64,
    /// See `ece_before`.
    pub ece: f64,
    /// Share of them coded at confidence ≥ 0.9 without the cap, and how many of those are
    /// right.
    pub share_conf_90_before: f64,
    /// See `share_conf_90_before`.
    pub accuracy_conf_90_before: f64,
    /// The same with the cap.
    pub share_conf_90: f64,
    /// See `share_conf_90`.
    pub accuracy_conf_90: f64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The fit of [`TitleOnly`] on unseen titles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TitleOnlyFit {
    /// Rows fitted on: validation records whose titles are not in the title index (their
    /// titles alone), and `external_rows` titles coded outside the records.
    pub rows: usize,
    /// Of `rows`, the titles coded outside the records (not in the title index either).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub external_rows: usize,
    /// Accuracy of the whole ensemble on them.
    pub accuracy: f64,
    /// Their expected calibration error under the calibration fitted on records with
    /// duties, the one they would get without this part.
    pub ece_with_duties_calibration: f64,
    /// Their expected calibration error under this part's calibration.
    pub ece: f64,
    /// Mean confidence under the calibration fitted on records with duties.
    pub confidence_with_duties_calibration: f64,
    /// Mean confidence under this part's calibration.
    pub confidence: f64,
    /// What the cap of [`TitleOnly::agreement`] does to the same rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<AgreementFit>,
}

/// How a model's n-gram network was trained. `key` is a digest of everything its training
/// read — the examples with their codes and repeats, the validation records it was
/// early-stopped on, the featuriser and training settings, and the build — so a training run
/// that would compute the same network takes it from the model it wrote last time instead
/// (see [`crate::training::fit`]): a change to what only the later parts read (the
/// calibration, the retrieval, titles coded elsewhere) does not train it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NgramTraining {
    /// blake3 of the training's inputs (hex).
    pub key: String,
    /// Epochs it ran.
    pub epochs_run: usize,
    /// Its best epoch (kept).
    pub best_epoch: usize,
    /// Its validation macro-F1 there.
    pub validation_macro_f1: f64,
    /// Seconds it trained.
    pub train_seconds: f64,
    /// The network kept when the model was refitted: trained again on the training and
    /// validation records (see [`RefitTraining`]). The model's network is that one, and
    /// this one (which every fit on validation read) is not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refit: Option<RefitTraining>,
}

/// The n-gram network of a refitted model: after early stopping and every fit on
/// validation, trained again from scratch on the training examples and the validation
/// records together, for the epochs early stopping chose. `key` is a digest of the first
/// training's key, so a run that would refit the same network takes it from the previous
/// model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefitTraining {
    /// blake3 of what the refit reads (hex).
    pub key: String,
    /// Examples it trained on: the training records, the reference examples and the
    /// validation records.
    pub examples: usize,
    /// The validation records among them.
    pub validation_records: usize,
    /// Epochs it ran (the first training's best epoch).
    pub epochs: usize,
    /// Seconds it trained.
    pub train_seconds: f64,
}

/// How a model's fine-tuned encoder (`transformer/`) was trained: `key` is a digest of
/// everything its fine-tuning read — the pretrained encoder's files, the training sample, the
/// validation rows it was early-stopped on, its settings and the build — so a training run
/// that would fine-tune it on the same takes it from the model it wrote last time and only
/// calibrates it again, as [`NgramTraining`] does for the n-gram network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerTraining {
    /// blake3 of the fine-tuning's inputs (hex).
    pub key: String,
    /// What the fine-tuning did.
    pub report: crate::transformer::TuneReport,
}

/// `model.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    /// Format version of the artifact.
    pub format: u32,
    /// Model kind.
    pub kind: ModelKind,
    /// Class index -> 4-digit code.
    pub labels: Vec<String>,
    /// Featuriser.
    pub features: FeatureConfig,
    /// Network and training config.
    pub train: TrainConfig,
    /// Calibration temperature.
    pub temperature: f64,
    /// Top-label isotonic map applied after the temperature (absent: temperature only).
    #[serde(default)]
    pub isotonic: Option<crate::calibrate::Isotonic>,
    /// Fine-tuning settings of a model with a transformer part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer: Option<TuneConfig>,
    /// The validation sample an ensemble's mix and calibration were fitted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit_sample: Option<FitSample>,
    /// The cascade of an ensemble (absent: every row goes through the whole model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<Cascade>,
    /// Where a cross-encoder re-ranker (`reranker/`) joins the model (absent: it has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reranker: Option<crate::reranker::RerankerFit>,
    /// How an ensemble codes titles it never saw, given without duties (absent: like every
    /// other row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_only: Option<TitleOnly>,
    /// What the n-gram network was trained on and how training went (absent: a fine-tuned
    /// network, or one written before this was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ngram_training: Option<NgramTraining>,
    /// What the fine-tuned encoder was trained on and how its fine-tuning went (absent: the
    /// model has none, or it was written before this was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer_training: Option<TransformerTraining>,
    /// Titles of the label codes and all their parent groups.
    pub titles: BTreeMap<String, String>,
    /// The unit groups of the reference the model was trained with (empty: trained without
    /// one, or written before this was recorded). A labelled file's code outside them is a
    /// slip or a code of another classification, not a code the model got wrong.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub reference_units: std::collections::BTreeSet<crate::IscoCode>,
    /// Provenance and training summary (run, stage, time, the metrics `train` reported).
    pub summary: serde_json::Value,
}

impl ModelMeta {
    /// The sample an ensemble was fitted on. Models written before the sample was recorded
    /// keep its size in their training summary (or their base model's, for a fine-tune).
    pub fn fit_sample(&self) -> Option<FitSample> {
        if self.fit_sample.is_some() {
            return self.fit_sample;
        }
        let mut s = &self.summary;
        loop {
            if let Some(rows) = s["metrics"]["retrieval"]["fit_rows"].as_u64() {
                return Some(FitSample {
                    rows: rows as usize,
                    seed: self.train.seed,
                });
            }
            match s.get("fine_tuned_from") {
                Some(base) => s = base,
                None => return None,
            }
        }
    }
}

/// Current artifact format.
pub const FORMAT: u32 = 1;

/// A model's parts, by kind: each variant holds exactly what its kind needs.
pub enum Model {
    /// `ngram`.
    Ngram {
        /// The n-gram network.
        net: Trained,
    },
    /// `transformer`: the fine-tuned encoder decides; the n-gram network explains.
    Transformer {
        /// The n-gram network.
        net: Trained,
        /// The fine-tuned encoder.
        transformer: FineTuned,
    },
    /// `ensemble`: the n-gram network (optionally mixed with a transformer) and retrieval.
    Ensemble {
        /// The n-gram network.
        net: Trained,
        /// The retrieval half (boxed: it is much larger than the other kinds' parts).
        retrieval: Box<Retrieval>,
        /// A fine-tuned encoder mixed into the base probabilities.
        transformer: Option<FineTuned>,
    },
}

impl Model {
    /// Its kind.
    pub fn kind(&self) -> ModelKind {
        match self {
            Model::Ngram { .. } => ModelKind::Ngram,
            Model::Transformer { .. } => ModelKind::Transformer,
            Model::Ensemble { .. } => ModelKind::Ensemble,
        }
    }

    /// Sets the float type of the encoders' products for coding (see [`crate::device`]).
    pub fn set_precision(&mut self, precision: crate::device::Precision) -> Result<(), Error> {
        match self {
            Model::Ngram { .. } => {}
            Model::Transformer { transformer, .. } => transformer.encoder.set_precision(precision),
            Model::Ensemble {
                retrieval,
                transformer,
                ..
            } => {
                retrieval.set_precision(precision)?;
                if let Some(t) = transformer {
                    t.encoder.set_precision(precision);
                }
            }
        }
        Ok(())
    }

    /// The n-gram network every kind has.
    pub fn net(&self) -> &Trained {
        match self {
            Model::Ngram { net } | Model::Transformer { net, .. } | Model::Ensemble { net, .. } => {
                net
            }
        }
    }

    /// The n-gram network, to replace it.
    pub fn net_mut(&mut self) -> &mut Trained {
        match self {
            Model::Ngram { net } | Model::Transformer { net, .. } | Model::Ensemble { net, .. } => {
                net
            }
        }
    }

    /// The retrieval half (`ensemble`).
    pub fn retrieval(&self) -> Option<&Retrieval> {
        match self {
            Model::Ensemble { retrieval, .. } => Some(retrieval.as_ref()),
            _ => None,
        }
    }

    /// The fine-tuned encoder, if the model has one.
    pub fn transformer(&self) -> Option<&FineTuned> {
        match self {
            Model::Transformer { transformer, .. } => Some(transformer),
            Model::Ensemble { transformer, .. } => transformer.as_ref(),
            Model::Ngram { .. } => None,
        }
    }

    /// Writes the artifact directory: `model.json`, `model.bpk` and the kind's parts.
    pub fn save(&self, dir: &Path, meta: &ModelMeta) -> Result<(), Error> {
        if meta.kind != self.kind() {
            return Err(Error::Model(format!(
                "the model is a `{}` model but its description says `{}`; this is a bug in the code that built it",
                self.kind(),
                meta.kind
            )));
        }
        save_net(dir, self.net(), meta)?;
        if let Some(r) = self.retrieval() {
            r.save(dir)?;
        }
        if let Some(t) = self.transformer() {
            t.save(dir)?;
        }
        Ok(())
    }

    /// Reads an artifact directory: its description and its parts (encoders on the CPU).
    pub fn load(dir: &Path) -> Result<(ModelMeta, Model), Error> {
        Self::load_on(dir, &crate::model::device())
    }

    /// The description (`model.json`, with the titles of `title_only_titles.parquet`) of the
    /// artifact directory `dir`, of this build's format.
    pub fn read_meta(dir: &Path) -> Result<ModelMeta, Error> {
        let json = dir.join("model.json");
        let bytes = std::fs::read(&json).map_err(io_err("read", &json))?;
        let mut meta: ModelMeta = serde_json::from_slice(&bytes).map_err(|e| Error::File {
            path: json.clone(),
            message: format!("is not a model description ({e}); was it written by `train`?"),
        })?;
        if meta.format != FORMAT {
            return Err(Error::File {
                path: json,
                message: format!(
                    "has artifact format {} but this isco-dag reads format {FORMAT}; retrain the model",
                    meta.format
                ),
            });
        }
        let titles = dir.join(EXTERNAL_TITLES);
        if let Some(part) = &mut meta.title_only
            && part.external.is_empty()
            && titles.is_file()
        {
            part.external = read_external_titles(&titles)?;
        }
        Ok(meta)
    }

    /// Writes the description `meta` into the artifact directory `dir`: `model.json`, and
    /// `title_only_titles.parquet` when the model keeps titles coded outside the records.
    pub fn write_meta(dir: &Path, meta: &ModelMeta) -> Result<(), Error> {
        let json = dir.join("model.json");
        std::fs::write(
            &json,
            serde_json::to_vec_pretty(meta).expect("meta serialises"),
        )
        .map_err(io_err("write", &json))?;
        let titles = dir.join(EXTERNAL_TITLES);
        match meta.title_only.as_ref().map(|t| &t.external) {
            Some(external) if !external.is_empty() => {
                let column = |f: fn(&crate::titles::LabelledTitle) -> String| {
                    Column::Str(external.iter().map(f).collect())
                };
                Table::new()
                    .with("title", column(|t| t.title.clone()))
                    .with("code", column(|t| t.code.to_string()))
                    .write_parquet(&titles)
                    .map_err(|e| Error::File {
                        path: titles.clone(),
                        message: format!("could not be written: {e}"),
                    })?;
            }
            _ if titles.exists() => {
                std::fs::remove_file(&titles).map_err(io_err("remove", &titles))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The n-gram network of the artifact directory `dir` described by `meta` (its training
    /// statistics are `meta`'s [`NgramTraining`], zero when it has none).
    pub fn load_net(dir: &Path, meta: &ModelMeta) -> Result<Trained, Error> {
        let bpk = dir.join("model.bpk");
        let record = ModuleRecord::load(&bpk).map_err(|e| Error::File {
            path: bpk.clone(),
            message: format!("could not read the burn record: {e}"),
        })?;
        let module: NgramNet =
            Trained::empty_module(meta.features.buckets, &meta.train, meta.labels.len())
                .try_load_record(record)
                .map_err(|e| Error::File {
                    path: bpk.clone(),
                    message: format!("does not match model.json: {e}"),
                })?;
        let mut net = Trained::from_module(module);
        if let Some(t) = &meta.ngram_training {
            net.epochs_run = t.epochs_run;
            net.best_epoch = t.best_epoch;
            net.best_val_macro_f1 = t.validation_macro_f1;
            net.train_seconds = t.train_seconds;
        }
        Ok(net)
    }

    /// [`Model::load`] with the encoders on `device` (see [`crate::device`]).
    pub fn load_on(dir: &Path, device: &burn::tensor::Device) -> Result<(ModelMeta, Model), Error> {
        let meta = Self::read_meta(dir)?;
        let json = dir.join("model.json");
        let net = Self::load_net(dir, &meta)?;
        let transformer = match &meta.transformer {
            Some(t) if meta.kind != ModelKind::Ngram => Some(FineTuned::load_on(
                dir,
                meta.labels.len(),
                t.max_seq_length,
                device,
            )?),
            _ => None,
        };
        let model = match (meta.kind, transformer) {
            (ModelKind::Ngram, _) => Model::Ngram { net },
            (ModelKind::Transformer, Some(transformer)) => Model::Transformer { net, transformer },
            (ModelKind::Transformer, None) => {
                return Err(Error::File {
                    path: json,
                    message:
                        "is a transformer model without its fine-tuning settings; retrain the model"
                            .into(),
                });
            }
            (ModelKind::Ensemble, transformer) => Model::Ensemble {
                net,
                retrieval: Box::new(Retrieval::load_on(dir, device)?),
                transformer,
            },
        };
        Ok((meta, model))
    }
}

pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Collects titles for labels and their parents.
pub fn titles_for(labels: &[String], tax: &Taxonomy) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    for l in labels {
        for d in 1..=l.len() {
            let c = &l[..d];
            if let Some(g) = tax.group(c) {
                t.insert(c.to_string(), g.title.clone());
            }
        }
    }
    t
}

/// The file beside `model.json` that holds [`TitleOnly::external`].
const EXTERNAL_TITLES: &str = "title_only_titles.parquet";

/// Reads the titles `title_only_titles.parquet` holds.
fn read_external_titles(path: &Path) -> Result<Vec<crate::titles::LabelledTitle>, Error> {
    let unreadable = |e: artifacts::Error| Error::File {
        path: path.to_path_buf(),
        message: format!("could not be read ({e}); train the model again"),
    };
    let table = Table::read_parquet(path).map_err(unreadable)?;
    let titles = table.str_col("title", path).map_err(unreadable)?;
    let codes = table.str_col("code", path).map_err(unreadable)?;
    Ok(titles
        .iter()
        .zip(codes)
        .map(|(title, code)| crate::titles::LabelledTitle {
            title: title.clone(),
            code: crate::IscoCode::from(code.as_str()),
        })
        .collect())
}

/// Writes `model.bpk` and the description.
fn save_net(dir: &Path, net: &Trained, meta: &ModelMeta) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    crate::record::save_record(net.to_module(), &dir.join("model.bpk"))?;
    Model::write_meta(dir, meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_as_in_the_configuration() {
        for k in ModelKind::ALL {
            let s = serde_json::to_value(k).unwrap();
            assert_eq!(s, k.as_str());
            assert_eq!(serde_json::from_value::<ModelKind>(s).unwrap(), k);
        }
        assert!(serde_json::from_value::<ModelKind>("fasttext".into()).is_err());
    }
}
