//! # stages — the isco-dag stage kinds
//!
//! One file per stage kind, each implementing [`runner::Stage`]:
//!
//! | kind | reads | writes |
//! |---|---|---|
//! | `clean` | raw records (CSV/Parquet), optional ISCO reference | cleaned records, quarantine CSV, report |
//! | `split` | cleaned records | stratified train / validation / test tables, report |
//!
//! [`registry`] returns every kind, ready for the runner. [`demo`] generates the synthetic
//! demo data set that ships in `data/`, and the fixtures the tests use.
#![warn(missing_docs)]
#![warn(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;

pub mod clean;
pub mod demo;
mod error;
pub mod records;
pub mod split;
pub mod text;

pub use error::Error;

/// Every stage kind this crate provides.
pub fn registry() -> runner::Registry {
    let mut r = runner::Registry::new();
    r.register(Arc::new(clean::Clean));
    r.register(Arc::new(split::Split));
    r
}

/// Writes a JSON value to a file (pretty), for stage reports.
pub(crate) fn write_json(path: &std::path::Path, v: &serde_json::Value) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(v).expect("JSON values serialise");
    std::fs::write(path, bytes).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}
