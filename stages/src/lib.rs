//! # stages — the isco-dag stage kinds
//!
//! One file per stage kind, each implementing [`runner::Stage`]:
//!
//! | kind | reads | writes |
//! |---|---|---|
//! | `clean` | raw records (CSV/Parquet), optional ISCO reference | cleaned records, quarantine CSV, report |
//! | `corrections` | corrections files (glob), cleaned records, optional reference | canonical corrections table, train / holdout slices, records with corrected labels, quarantine, conflicts, report |
//! | `cluster-outliers` | cleaned records, optional truth file | flagged records (Parquet, CSV), per-record flags, report |
//! | `split` | cleaned records | stratified train / validation / test tables, report |
//! | `train` | train + validation splits, optional reference, optional encoder | model artifact (burn record + `model.json`; `retrieval/` for an ensemble, `transformer/` for a fine-tuned encoder) |
//! | `train-encoder` | train + validation splits, optional reference, a pretrained encoder | an encoder directory trained on the office's title and duty pairs (standard layout, `training.json`) |
//! | `train-reranker` | a trained model, train + validation splits, optional reference, a pretrained encoder | the model with a cross-encoder re-ranker (`reranker/`) and where it joins the model |
//! | `fine-tune` | base model, corrections, replay and validation splits | model artifact with new output rows for unseen codes |
//! | `evaluate` | model, test split, extra labelled files | `metrics.json`, report directory (CSVs, HTML) |
//! | `predict` | model, records to code | predictions (Parquet, CSV), review queue CSV |
//! | `promote` | model, its metrics, test split, extra labelled files | decision; moves the `best` ref when better (and the test set does not regress beyond a margin) |
//!
//! [`registry`] returns every kind, ready for the runner. [`demo`] generates the synthetic
//! demo data set that ships in `data/`, and the fixtures the tests use.
#![warn(missing_docs)]
#![warn(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;

pub mod clean;
pub mod cluster_outliers;
pub mod columns;
pub mod corrections;
pub mod demo;
pub mod embeddings;
mod error;
pub mod evaluate;
pub mod explain;
pub mod finetune;
mod plots;
pub mod predict;
pub mod promote;
pub mod records;
pub mod shard;
pub mod split;
pub mod train;
pub mod train_encoder;
pub mod train_reranker;

pub use error::Error;

/// Every stage kind this crate provides.
pub fn registry() -> runner::Registry {
    let mut r = runner::Registry::new();
    r.register(Arc::new(clean::Clean));
    r.register(Arc::new(corrections::Corrections));
    r.register(Arc::new(cluster_outliers::ClusterOutliers));
    r.register(Arc::new(split::Split));
    r.register(Arc::new(train::Train));
    r.register(Arc::new(train_encoder::TrainEncoder));
    r.register(Arc::new(train_reranker::TrainReranker));
    r.register(Arc::new(finetune::FineTune));
    r.register(Arc::new(evaluate::Evaluate));
    r.register(Arc::new(predict::Predict));
    r.register(Arc::new(promote::Promote));
    // The sections of the project's config file: the stage kinds read the first ten through
    // `params_from`, `isco-dag serve` reads [serve] (and [inference]).
    for section in [
        "data",
        "model",
        "training",
        "encoder_training",
        "reranker_training",
        "inference",
        "promote",
        "outliers",
        "corrections",
        "finetune",
        "serve",
    ] {
        r.know_section(section);
    }
    r
}

/// `n` and the noun that agrees with it (`1 file`, `2 files`), for stage summaries.
pub(crate) fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Writes a JSON value to a file (pretty), for stage reports.
pub(crate) fn write_json(path: &std::path::Path, v: &serde_json::Value) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(v).expect("JSON values serialise");
    std::fs::write(path, bytes).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}
