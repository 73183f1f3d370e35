//! Explanation files for coded records: the top tokens behind each code (CSV) and a small
//! HTML page that highlights each record's words by their contribution.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use artifacts::table::{Column, Table};
use classifier::predict::Predictor;
use classifier::text::record_text;

use crate::error::Error;
use crate::evaluate::esc;

fn strs<'a>(t: &'a Table, name: &str) -> Result<&'a [String], Error> {
    Ok(t.str_col(name, Path::new("predictions"))?)
}

/// How many records the HTML page shows (a page of every record of a large file would be
/// too long to read or open); the CSV explains every record.
const SHOWN: usize = 500;

/// Writes `<base>.explain.csv` (and `.parquet`) and `<base>.explain.html` for a predictions
/// table; returns the paths written.
pub fn write_explanations(
    pred: &Predictor,
    predictions: &Table,
    base: &Path,
) -> Result<Vec<PathBuf>, Error> {
    let titles = strs(predictions, "job_title")?;
    let duties = strs(predictions, "duties_description")?;
    let codes = strs(predictions, "alt_1_code")?;
    let decisions = strs(predictions, "isco_code")?;
    let steps = strs(predictions, "decided_by")?;
    let mut row = Vec::new();
    let mut code = Vec::new();
    let mut logit = Vec::new();
    let mut bias = Vec::new();
    let mut tokens = Vec::new();
    let mut decided_by = Vec::new();
    let mut decision = Vec::new();
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>isco-dag explanations</title><style>body{font-family:sans-serif;margin:2em}div.r{margin:.6em 0}span.w{padding:1px 2px;border-radius:3px}</style><h1>Why each code</h1><p>Green words pushed the record towards the code shown, red words away from it (exact contributions to the code's logit in the n-gram network; the part of the model that decided the row is named beside the code). A record coded to a coarser group shows the words behind its likeliest unit group, the code the group was reached from.</p>",
    );
    for i in 0..titles.len() {
        let text = record_text(&titles[i], &duties[i]);
        let Some(e) = pred.explain(&text, &codes[i]) else {
            continue;
        };
        let top: Vec<String> = e
            .top_tokens(5)
            .iter()
            .map(|(l, v)| format!("{l}:{v:+.3}"))
            .collect();
        row.push(i as i64);
        code.push(e.isco_code.to_string());
        logit.push(e.logit);
        bias.push(e.bias);
        tokens.push(top.join("; "));
        decided_by.push(steps[i].clone());
        decision.push(decisions[i].clone());
        if i < SHOWN {
            let max = e.words.iter().map(|w| w.1.abs()).fold(1e-9, f64::max);
            let _ = write!(
                html,
                "<div class=r><b>{} {}</b> <small>(decided by {})</small>",
                e.isco_code,
                esc(pred.title(&e.isco_code)),
                esc(&steps[i])
            );
            if decisions[i] != e.isco_code.as_str() {
                let _ = write!(
                    html,
                    " <small>coded to the coarser group <b>{} {}</b></small>",
                    esc(&decisions[i]),
                    esc(pred.title(&decisions[i]))
                );
            }
            html.push_str(": ");
            for (w, v) in &e.words {
                let a = (v.abs() / max * 0.8).min(0.8);
                let color = if *v >= 0.0 {
                    format!("rgba(0,160,0,{a:.2})")
                } else {
                    format!("rgba(220,0,0,{a:.2})")
                };
                let _ = write!(
                    html,
                    "<span class=w title=\"{v:+.3}\" style=\"background:{color}\">{}</span> ",
                    esc(w)
                );
            }
            html.push_str("</div>");
        }
    }
    let csv = base.with_extension("explain.csv");
    if titles.len() > SHOWN {
        let _ = write!(
            html,
            "<p>The first {SHOWN} of {} records are shown here; every record's top tokens are in {}.</p>",
            titles.len(),
            esc(&csv.file_name().unwrap_or_default().to_string_lossy())
        );
    }
    Table::new()
        .with("row", Column::Int(row))
        .with("isco_code", Column::Str(code))
        .with("logit", Column::Float(logit))
        .with("bias", Column::Float(bias))
        .with("top_tokens", Column::Str(tokens))
        .with("decided_by", Column::Str(decided_by))
        .with("decision", Column::Str(decision))
        .write_csv_and_parquet(&csv)?;
    let h = base.with_extension("explain.html");
    std::fs::write(&h, html).map_err(|source| Error::Write {
        path: h.clone(),
        source,
    })?;
    Ok(vec![csv.with_extension("parquet"), csv, h])
}
