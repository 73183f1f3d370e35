//! Refitting on validation (`refit = true`): once early stopping has chosen the epochs and
//! the calibration, an ensemble's mix, its cascade and the calibration of unseen titles have
//! been fitted on validation, the n-gram network is trained again from scratch on the
//! training examples and the validation records together, for those epochs, and an
//! ensemble's indexes take validation's titles and duty clauses too. What was fitted on
//! validation is kept: it was fitted on records the network had not seen, as new records
//! will be. The model learns from the validation split's records (15 % of the records with
//! the default split) at the cost of a second training of the network.
//!
//! The network the fits read is not kept, so a later run that changes only what is fitted
//! on validation trains it again; the refitted network itself is taken from the previous
//! model when the first training's key and the epochs are the same ([`RefitTraining`]).

use serde::Serialize;

use crate::Taxonomy;
use crate::artifact::{Model, RefitTraining};
use crate::error::Error;
use crate::features::{FeatureConfig, FeatureMatrix};
use crate::model::{TrainConfig, TrainData, Trained, train};

use super::data::{Examples, Progress, encode};
use super::{Files, FitSpec, TrainingDigest, ensemble};

/// What a refit with validation did.
#[derive(Debug, Clone, Serialize)]
pub struct RefitSummary {
    /// How the kept network was trained.
    pub training: RefitTraining,
    /// Whether it is the previous run's, refitted from the same.
    pub reused: bool,
    /// Title and duty-clause entries validation added to an ensemble's indexes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_entries_added: Option<(usize, usize)>,
}

impl RefitSummary {
    /// The stage report's line.
    pub fn line(&self) -> String {
        let t = &self.training;
        let index = match self.index_entries_added {
            Some((titles, clauses)) => format!(
                "; the indexes hold validation's titles and clauses too (+{titles} titles, +{clauses} clauses)"
            ),
            None => String::new(),
        };
        format!(
            "refit: the n-gram network trained again on {} examples with the {} validation records, {} epochs in {:.1}s{}{index}; what was fitted on validation before ({}) is kept",
            t.examples,
            t.validation_records,
            t.epochs,
            t.train_seconds,
            if self.reused {
                " (the previous run's: same first training)"
            } else {
                ""
            },
            if self.index_entries_added.is_some() {
                "the calibrations, the mix, the cascade"
            } else {
                "the calibration"
            }
        )
    }
}

/// Refits a fitted `model` (see the module's doc): its network trained again with the
/// validation records (or the previous model's, refitted from the same first training), and
/// an ensemble's indexes built again with validation's titles and clauses.
#[allow(clippy::too_many_arguments)]
pub(super) fn refit_model(
    model: &mut Model,
    first: &FirstTraining<'_>,
    spec: &FitSpec,
    train_set: Examples<'_>,
    validation: Examples<'_>,
    labels: &[String],
    tax: &Taxonomy,
    files: &Files<'_>,
    progress: &dyn Progress,
) -> Result<RefitSummary, Error> {
    let refitted = refit_network(
        first,
        validation,
        labels,
        &spec.features,
        &spec.train,
        files,
        progress,
    )?;
    let index_entries_added = match model {
        Model::Ensemble { retrieval, .. } if spec.ensemble.index_records => Some(
            ensemble::index_validation(retrieval, tax, labels, train_set, validation)?,
        ),
        _ => None,
    };
    *model.net_mut() = refitted.net;
    Ok(RefitSummary {
        training: refitted.training,
        reused: refitted.reused,
        index_entries_added,
    })
}

/// What the first training of the network read, to train it again with validation.
pub(super) struct FirstTraining<'a> {
    /// Its key ([`crate::artifact::NgramTraining`]).
    pub key: &'a str,
    /// Its examples (the training records and the reference examples), their classes and
    /// repeat counts.
    pub texts: &'a [String],
    pub y: &'a [u32],
    pub repeats: &'a [u32],
    /// The epochs early stopping chose.
    pub best_epoch: usize,
}

/// The refitted network and how it was trained; `reused`: taken from the previous model.
struct Refitted {
    pub net: Trained,
    pub training: RefitTraining,
    pub reused: bool,
}

/// The digest of a refit: the first training's key (which covers its examples, settings and
/// validation records) and the epochs.
fn refit_key(first: &FirstTraining<'_>) -> String {
    let mut d = TrainingDigest::new("isco-dag ngram network, refitted with validation");
    d.field(first.key.as_bytes());
    d.field(&(first.best_epoch as u64).to_le_bytes());
    d.finish()
}

/// Trains the network again on `first`'s examples and the labelled `validation` records
/// (or takes the previous model's, refitted from the same).
fn refit_network(
    first: &FirstTraining<'_>,
    validation: Examples<'_>,
    labels: &[String],
    features: &FeatureConfig,
    train_config: &TrainConfig,
    files: &Files<'_>,
    progress: &dyn Progress,
) -> Result<Refitted, Error> {
    let key = refit_key(first);
    let labelled: Vec<(usize, u32)> = encode(labels, validation.isco_code)
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (i, c)))
        .collect();
    let examples = first.texts.len() + labelled.len();
    let epochs = first.best_epoch.max(1);
    if let Some(dir) = files.reusable_model()
        && let Ok(meta) = Model::read_meta(dir)
        && let Some(previous) = meta.ngram_training.as_ref().and_then(|t| t.refit.as_ref())
        && previous.key == key
    {
        match Model::load_net(dir, &meta) {
            Ok(net) => {
                progress.message("the refitted n-gram network is the previous run's");
                return Ok(Refitted {
                    net,
                    training: previous.clone(),
                    reused: true,
                });
            }
            Err(e) => tracing::warn!("the previous run's refitted network is trained again: {e}"),
        }
    }
    let mut texts = first.texts.to_vec();
    let mut y = first.y.to_vec();
    let mut repeats = first.repeats.to_vec();
    for &(i, c) in &labelled {
        texts.push(validation.text[i].clone());
        y.push(c);
        repeats.push(1);
    }
    progress.start(epochs as u64, "refitting with validation");
    let x = FeatureMatrix::build(features, &texts);
    let config = TrainConfig {
        epochs,
        ..train_config.clone()
    };
    let net = train(
        &TrainData {
            x: &x,
            y: &y,
            repeats: Some(&repeats),
            val: None,
        },
        features,
        &config,
        labels.len(),
        None,
        &|e, _, _| {
            progress.inc(1);
            progress.message(&format!("refit epoch {e}"));
        },
    )?;
    Ok(Refitted {
        training: RefitTraining {
            key,
            examples,
            validation_records: labelled.len(),
            epochs,
            train_seconds: net.train_seconds,
        },
        net,
        reused: false,
    })
}
