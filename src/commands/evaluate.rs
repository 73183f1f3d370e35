//! `isco-dag evaluate`: score a model on labelled files outside any pipeline, as fastText's
//! `test` does, with the metrics and error tables of the `evaluate` stage.
//!
//! An office checks the promoted model on a double-coded quality sample, or compares two
//! models on the same file, without writing a pipeline. Each file is scored by the same
//! function the stage scores its `extra` files with, so the numbers are the stage's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use stages::columns::{ColumnNames, LabelledColumns};

use super::dag::Format2;
use super::predict::CoderArgs;
use crate::console;

/// `isco-dag evaluate`.
#[derive(clap::Args)]
pub struct Args {
    /// Labelled records: CSV or Parquet files with job_title, isco_code (and optionally
    /// duties_description), or the columns [data] names; each is scored on its own.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    coder: CoderArgs,
    /// Also write the evaluation report into this folder (created if missing): per file
    /// `<name>_errors.csv` (every row coded wrongly, most confident first), per-class
    /// scores, confused pairs, error rates by group, the coverage and reliability curves,
    /// charts, and `report.html` and `metrics.json` over all files.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Output format: each file's metrics with what they mean, or one JSON object of every
    /// file's metrics under its name (as the stage's `metrics.json`).
    #[arg(long, value_enum, default_value = "text")]
    format: Format2,
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let (cfg, columns): (_, LabelledColumns) = a.coder.settings("evaluate")?;
    // Each file's metrics and tables go under its name without extension, so two files
    // of one name would overwrite each other's.
    let mut names = BTreeMap::new();
    for f in &a.files {
        if !f.is_file() {
            return Err(super::UsageError(format!(
                "`{}` is not a file; give labelled CSV or Parquet files",
                f.display()
            ))
            .into());
        }
        // Before the model loads (an ensemble's takes seconds): each file has the columns.
        let by = stages::columns::columns_of(f, &columns);
        stages::records::check_input_file(f, &by.names(), LabelledColumns::REQUIRED, by.encoding)
            .map_err(|e| e.with_column_hint(|c| stages::columns::column_hint(c, &columns, true)))?;
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        if let Some(other) = names.insert(name.clone(), f) {
            return Err(super::UsageError(format!(
                "`{}` and `{}` are both named `{name}`, which keys each file's metrics and report tables; rename one",
                other.display(),
                f.display()
            ))
            .into());
        }
    }
    // Without --report the tables are written as the stage writes them, into a folder
    // dropped at the end.
    let scratch;
    let dir = match &a.report {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("creating the report folder {}: {e}", dir.display())
            })?;
            dir.clone()
        }
        None => {
            scratch = tempfile::tempdir()?;
            scratch.path().to_path_buf()
        }
    };
    let coding = a.coder.load(cfg)?;
    let pred = &coding.pred;
    let mut html = String::from(stages::evaluate::REPORT_HEAD);
    let mut metrics = json!({});
    let started = std::time::Instant::now();
    for f in &a.files {
        let scored = stages::evaluate::score_labelled(pred, f, &columns, &dir, &mut html)?;
        if matches!(a.format, Format2::Text) {
            print_metrics(f, &scored, a.report.as_deref());
        }
        metrics[scored.name] = scored.metrics;
    }
    coding.finish()?;
    if a.report.is_some() {
        stages::evaluate::write_report_page(&dir, &html, &metrics)?;
    }
    if matches!(a.format, Format2::Json) {
        console::out(&serde_json::to_string_pretty(&metrics)?);
    }
    console::error(&format!(
        "scored {} {} in {:.2}s{}",
        a.files.len(),
        if a.files.len() == 1 { "file" } else { "files" },
        started.elapsed().as_secs_f64(),
        match &a.report {
            Some(d) => format!("; report in {}", d.join("report.html").display()),
            None => String::new(),
        }
    ));
    Ok(())
}

/// One file's metrics, a line each with what it means, after a line on its rows (the
/// unusable ones are listed in `report`'s table when one is written, else the first few
/// here).
fn print_metrics(
    file: &std::path::Path,
    scored: &stages::evaluate::ScoredFile,
    report: Option<&std::path::Path>,
) {
    let serde_json::Value::Object(m) = &scored.metrics else {
        console::out(&format!("{}: no rows, nothing scored", file.display()));
        return;
    };
    let bad = &scored.unusable;
    let unusable = match (bad.len(), report) {
        (0, _) => "none unusable".to_string(),
        (n, Some(dir)) => format!(
            "{n} unusable, listed in {}",
            dir.join(format!("{}_unusable.csv", scored.name)).display()
        ),
        (n, None) => format!("{n} unusable: {}", stages::evaluate::unusable_summary(bad)),
    };
    let records = m.get("records").and_then(|r| r.as_u64()).unwrap_or(0);
    console::out(&format!(
        "{}: {records} {} scored, {unusable}",
        file.display(),
        if records == 1 { "row" } else { "rows" }
    ));
    let width = m.keys().map(String::len).max().unwrap_or(0);
    let order = |k: &str| {
        stages::evaluate::METRICS_IN_ORDER
            .iter()
            .position(|o| *o == k)
            .unwrap_or(usize::MAX)
    };
    let mut shown: Vec<(&String, &serde_json::Value)> =
        m.iter().filter(|(k, _)| *k != "records").collect();
    shown.sort_by_key(|(k, _)| order(k));
    for (k, v) in shown {
        let value = match v {
            serde_json::Value::Number(n) if n.is_f64() => {
                format!("{:.4}", v.as_f64().unwrap_or(0.0))
            }
            serde_json::Value::Null => "-".to_string(),
            other => other.to_string(),
        };
        console::out(&format!(
            "  {k:<width$}  {value:<10}  {}",
            stages::evaluate::metric_definition(k)
        ));
    }
}
