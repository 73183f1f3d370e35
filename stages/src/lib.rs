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
pub mod corrections;
pub mod demo;
pub mod ensemble;
mod error;
pub mod evaluate;
pub mod explain;
pub mod finetune;
mod plots;
pub mod predict;
pub mod promote;
pub mod records;
pub mod split;
pub mod train;
pub mod transformer;

pub use error::Error;

/// Every stage kind this crate provides.
pub fn registry() -> runner::Registry {
    let mut r = runner::Registry::new();
    r.register(Arc::new(clean::Clean));
    r.register(Arc::new(corrections::Corrections));
    r.register(Arc::new(cluster_outliers::ClusterOutliers));
    r.register(Arc::new(split::Split));
    r.register(Arc::new(train::Train));
    r.register(Arc::new(finetune::FineTune));
    r.register(Arc::new(evaluate::Evaluate));
    r.register(Arc::new(predict::Predict));
    r.register(Arc::new(promote::Promote));
    // The sections of the project's config file: the stage kinds read the first eight through
    // `params_from`, `isco-dag serve` reads [serve] (and [inference]).
    for section in [
        "data",
        "model",
        "training",
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

/// Largest embedding table (buckets × dim floats) and widest layer the n-gram models may ask
/// for. The default model uses 16.8 M floats (64 MB); 1 Gi floats (4 GiB, more with the
/// optimiser's state) is far beyond anything that helps and still fits these machines, while
/// a typo such as `dim = 100000000000` would otherwise abort the process while allocating.
const MAX_TABLE_FLOATS: usize = 1 << 30;
const MAX_WIDTH: usize = 8192;

/// Refuses model sizes that cannot be allocated, naming the key.
pub(crate) fn check_model_size(buckets: usize, dim: usize, hidden: usize) -> Result<(), String> {
    if dim > MAX_WIDTH {
        return Err(format!("`dim` is {dim}; give at most {MAX_WIDTH}"));
    }
    if hidden > MAX_WIDTH {
        return Err(format!(
            "`hidden` is {hidden}; give at most {MAX_WIDTH} (0: linear head)"
        ));
    }
    match buckets.checked_mul(dim) {
        Some(n) if n <= MAX_TABLE_FLOATS => Ok(()),
        _ => Err(format!(
            "`buckets` × `dim` = {buckets} × {dim} floats is more than the {MAX_TABLE_FLOATS} an embedding table may hold; lower `buckets` or `dim`"
        )),
    }
}

/// Writes a JSON value to a file (pretty), for stage reports.
pub(crate) fn write_json(path: &std::path::Path, v: &serde_json::Value) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(v).expect("JSON values serialise");
    std::fs::write(path, bytes).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}
