//! `evaluate`: score a model on the frozen test split (and any extra labelled files, such as
//! a corrections hold-out or unseen occupations), with the design's error analysis.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use artifacts::table::{Column, Table};
use classifier::IscoCode;
use classifier::metrics::{Evaluation, evaluate_probabilities};
use classifier::predict::{InferenceConfig, Predictor};
use classifier::taxonomy::normalize_code;
use classifier::text::{record_text, why_no_text};
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};
use serde_json::json;

use crate::columns::{self, ColumnNames, LabelledColumns, column_hint, columns_of};
use crate::error::Error;
use crate::records::{Records, read_row_map, read_rows};
use crate::records::{line_column, place};

/// The `evaluate` stage kind.
pub struct Evaluate;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "model",
        required: true,
        many: false,
        help: "model artifact (train.model)",
    },
    InputDecl {
        name: "test",
        required: true,
        many: false,
        help: "frozen test records (split.test)",
    },
    InputDecl {
        name: "extra",
        required: false,
        many: true,
        help: "extra labelled CSV/Parquet files (the columns [data] names, or job_title, duties_description, isco_code)",
    },
    InputDecl {
        name: "truth",
        required: false,
        many: false,
        help: "CSV with row,true_isco_code: also score the test split against these labels",
    },
];

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl {
        name: "metrics",
        file: "metrics.json",
        dir: false,
    },
    OutputDecl {
        name: "report",
        file: "report",
        dir: true,
    },
];

/// An input row that could not be scored, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unusable {
    /// 0-based data row of the file.
    pub row: i64,
    /// Its 1-based line in a CSV file (none in Parquet).
    pub line: Option<i64>,
    /// Why it was not scored.
    pub reason: String,
}

impl Unusable {
    fn of(r: &crate::records::RawRow, reason: String) -> Unusable {
        Unusable {
            row: r.row as i64,
            line: r.line.map(|l| l as i64),
            reason,
        }
    }
}

/// A labelled evaluation file.
pub struct Labelled {
    /// Normalised texts.
    pub texts: Vec<String>,
    /// Their codes.
    pub codes: Vec<String>,
    /// Each usable row's raw fields: its 0-based data row, job title and duties.
    pub raw: Vec<(i64, String, String)>,
    /// Rows that could not be used.
    pub unusable: Vec<Unusable>,
}

/// Reads a labelled raw file into (normalised texts, codes) and the unusable rows; its
/// columns are `columns`, or the standard names where the file has those instead (see
/// [`ColumnNames::in_header`]). Codes are normalised as the clean stage does, a lost leading
/// zero restored when that makes the code one of `labels` (the codes the model knows) or of
/// `units` (the unit groups of the reference it was trained with). When `units` is not
/// empty, a code outside it is not scored: it is a slip or another classification's code,
/// which no model could give.
pub fn read_labelled(
    path: &Path,
    columns: &LabelledColumns,
    labels: &[String],
    units: &BTreeSet<IscoCode>,
) -> Result<Labelled, Error> {
    let by = columns_of(path, columns);
    let rows = read_rows(path, &by.names(), LabelledColumns::REQUIRED, by.encoding)
        .map_err(|e| e.with_column_hint(|c| column_hint(c, columns, false)))?;
    let mut texts = Vec::new();
    let mut codes = Vec::new();
    let mut raw = Vec::new();
    let mut bad = Vec::new();
    for r in rows {
        let cell = r.values[2].clone().unwrap_or_default();
        let (code, _) = normalize_code(&cell, |padded| {
            labels.iter().any(|l| l == padded) || units.contains(padded)
        });
        if let Some(problem) = &r.problem {
            bad.push(Unusable::of(&r, problem.to_string()));
            continue;
        }
        let code_problem = if code.is_empty() {
            Some("is empty; give the row's 4-digit code or leave the row out".to_string())
        } else if code.len() != 4 || !code.chars().all(|c| c.is_ascii_digit()) {
            Some(format!("`{code}` is not a 4-digit code"))
        } else if !units.is_empty() && !units.contains(code.as_str()) {
            Some(format!(
                "`{code}` is not a unit group of the ISCO-08 reference the model was trained with"
            ))
        } else {
            None
        };
        if let Some(why) = code_problem {
            let column = by.code_column.trim();
            bad.push(Unusable::of(&r, format!("column `{column}`: {why}")));
            continue;
        }
        let title = r.values[0].clone().unwrap_or_default();
        let duties = r.values[1].clone().unwrap_or_default();
        let text = record_text(&title, &duties);
        if text.is_empty() {
            // As `predict` leaves such a row uncoded, it is not scored either.
            bad.push(Unusable::of(
                &r,
                format!(
                    "column `{}`: {}",
                    by.title_column.trim(),
                    why_no_text(&title, &duties)
                ),
            ));
            continue;
        }
        texts.push(text);
        codes.push(code);
        raw.push((r.row as i64, title, duties));
    }
    Ok(Labelled {
        texts,
        codes,
        raw,
        unusable: bad,
    })
}

/// The first unusable rows of a file and why, for an error: `row 0 (line 2): …; row 1
/// (line 3): …; and 5 more`.
pub fn unusable_summary(bad: &[Unusable]) -> String {
    const SHOWN: usize = 3;
    let mut text = bad
        .iter()
        .take(SHOWN)
        .map(|b| format!("{}: {}", place(b.row, b.line), b.reason))
        .collect::<Vec<_>>()
        .join("; ");
    if bad.len() > SHOWN {
        text.push_str(&format!("; and {} more", bad.len() - SHOWN));
    }
    text
}

/// The metrics of a scored set in the order a person reads them: how often it is right,
/// how right its confidence is, what it leaves to coders, how it was decided.
pub const METRICS_IN_ORDER: &[&str] = &[
    "records",
    "accuracy",
    "top3_accuracy",
    "macro_f1",
    "weighted_f1",
    "accuracy_3digit",
    "accuracy_2digit",
    "accuracy_1digit",
    "ece",
    "share_conf_90",
    "accuracy_conf_90",
    "production_rate_95",
    "production_rate_97",
    "fallback_rate",
    "decision_accuracy",
    "review_rate",
    "decided_by",
    "unseen_titles_without_duties",
];

/// One line that says what a metric in the report means (empty for one it does not know).
pub fn metric_definition(name: &str) -> &'static str {
    match name {
        "records" => "rows scored",
        "accuracy" => "share of rows whose top 4-digit code is the given one",
        "macro_f1" => {
            "F1 (harmonic mean of precision and recall) of each unit group, averaged with equal weight per group"
        }
        "weighted_f1" => "F1 of each unit group, averaged weighted by its rows",
        "top3_accuracy" => "share of rows whose given code is among the three most probable",
        "accuracy_1digit" => "share of rows whose top code is in the right major group (1st digit)",
        "accuracy_2digit" => {
            "share of rows whose top code is in the right sub-major group (2 digits)"
        }
        "accuracy_3digit" => "share of rows whose top code is in the right minor group (3 digits)",
        "fallback_rate" => {
            "share of rows coded only at a coarser level because no unit group reached confidence_threshold"
        }
        "decision_accuracy" => {
            "share of rows whose decision (4-digit code, or the coarser group after fallback) contains the given code"
        }
        "review_rate" => "share of rows sent to the review queue",
        "ece" => {
            "expected calibration error: mean gap between confidence and accuracy over 15 confidence bins, weighted by rows (0 is perfect)"
        }
        "production_rate_95" => {
            "largest share of rows, most confident first, that can be coded automatically at 95 % accuracy"
        }
        "production_rate_97" => "likewise at 97 % accuracy",
        "share_conf_90" => "share of rows whose top 4-digit code has a confidence of 0.9 or more",
        "accuracy_conf_90" => "accuracy among those rows (empty when there are none)",
        "decided_by" => {
            "rows each part of the model decided (an ensemble's cascade leaves the rows its n-gram network is sure of to that network)"
        }
        "unseen_titles_without_duties" => {
            "rows that are a title alone, without duties, that the model's title index lacks: their confidence comes from the calibration fitted on such titles (null when the model has none)"
        }
        _ => "",
    }
}

/// Text made safe to put in HTML.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `<name>_errors.csv`: every row coded wrongly at 4 digits, most confident first (a
/// confident error on historical records is often a wrong label), with its raw fields
/// (`raw`: row, job title, duties of each scored row), label and the model's top 3.
fn write_errors(
    dir: &Path,
    name: &str,
    pred: &Predictor,
    e: &Evaluation,
    raw: &[(i64, &str, &str)],
) -> Result<(), Error> {
    let col = |f: &dyn Fn(&classifier::metrics::RowError) -> String| {
        Column::Str(e.errors.iter().map(f).collect())
    };
    let alt = |k: usize| {
        move |r: &classifier::metrics::RowError| {
            r.predicted
                .get(k)
                .map(|p| p.0.to_string())
                .unwrap_or_default()
        }
    };
    Table::new()
        .with(
            "row",
            Column::Int(e.errors.iter().map(|r| raw[r.index].0).collect()),
        )
        .with("job_title", col(&|r| raw[r.index].1.to_string()))
        .with("duties_description", col(&|r| raw[r.index].2.to_string()))
        .with("isco_code", col(&|r| r.label.clone()))
        .with("title", col(&|r| pred.title(&r.label).to_string()))
        .with("predicted_code", col(&alt(0)))
        .with(
            "predicted_title",
            col(&|r| pred.title(&alt(0)(r)).to_string()),
        )
        .with(
            "confidence",
            Column::Float(e.errors.iter().map(|r| r.predicted[0].1).collect()),
        )
        .with("alt_2_code", col(&alt(1)))
        .with("alt_3_code", col(&alt(2)))
        .write_csv_and_parquet(&dir.join(format!("{name}_errors.csv")))?;
    Ok(())
}

fn write_report(
    dir: &Path,
    name: &str,
    pred: &Predictor,
    e: &Evaluation,
    raw: &[(i64, &str, &str)],
    html: &mut String,
) -> Result<(), Error> {
    write_errors(dir, name, pred, e, raw)?;
    let classes = Table::new()
        .with(
            "isco_code",
            Column::Str(e.classes.iter().map(|c| c.isco_code.clone()).collect()),
        )
        .with(
            "title",
            Column::Str(e.classes.iter().map(|c| c.title.clone()).collect()),
        )
        .with(
            "support",
            Column::Int(e.classes.iter().map(|c| c.support as i64).collect()),
        )
        .with(
            "precision",
            Column::Float(e.classes.iter().map(|c| c.precision).collect()),
        )
        .with(
            "recall",
            Column::Float(e.classes.iter().map(|c| c.recall).collect()),
        )
        .with(
            "f1",
            Column::Float(e.classes.iter().map(|c| c.f1).collect()),
        );
    classes.write_csv_and_parquet(&dir.join(format!("{name}_per_class.csv")))?;
    let confused = Table::new()
        .with(
            "true_code",
            Column::Str(e.confused.iter().map(|c| c.0.clone()).collect()),
        )
        .with(
            "true_title",
            Column::Str(
                e.confused
                    .iter()
                    .map(|c| pred.title(&c.0).to_string())
                    .collect(),
            ),
        )
        .with(
            "predicted_code",
            Column::Str(e.confused.iter().map(|c| c.1.clone()).collect()),
        )
        .with(
            "predicted_title",
            Column::Str(
                e.confused
                    .iter()
                    .map(|c| pred.title(&c.1).to_string())
                    .collect(),
            ),
        )
        .with(
            "count",
            Column::Int(e.confused.iter().map(|c| c.2 as i64).collect()),
        );
    confused.write_csv_and_parquet(&dir.join(format!("{name}_confused_pairs.csv")))?;
    let groups: Vec<&(String, usize, f64)> = e
        .by_major
        .iter()
        .chain(&e.by_sub_major)
        .chain(&e.by_minor)
        .collect();
    Table::new()
        .with(
            "group",
            Column::Str(groups.iter().map(|g| g.0.clone()).collect()),
        )
        .with(
            "level",
            Column::Int(groups.iter().map(|g| g.0.len() as i64).collect()),
        )
        .with(
            "title",
            Column::Str(
                groups
                    .iter()
                    .map(|g| pred.title(&g.0).to_string())
                    .collect(),
            ),
        )
        .with(
            "records",
            Column::Int(groups.iter().map(|g| g.1 as i64).collect()),
        )
        .with(
            "error_rate",
            Column::Float(groups.iter().map(|g| g.2).collect()),
        )
        .write_csv_and_parquet(&dir.join(format!("{name}_error_by_group.csv")))?;
    Table::new()
        .with(
            "coverage",
            Column::Float(e.coverage_curve.iter().map(|c| c.0).collect()),
        )
        .with(
            "accuracy",
            Column::Float(e.coverage_curve.iter().map(|c| c.1).collect()),
        )
        .write_csv_and_parquet(&dir.join(format!("{name}_coverage_curve.csv")))?;
    Table::new()
        .with(
            "confidence",
            Column::Float(e.reliability.iter().map(|c| c.0).collect()),
        )
        .with(
            "accuracy",
            Column::Float(e.reliability.iter().map(|c| c.1).collect()),
        )
        .with(
            "count",
            Column::Int(e.reliability.iter().map(|c| c.2 as i64).collect()),
        )
        .write_csv_and_parquet(&dir.join(format!("{name}_reliability.csv")))?;

    let _ = write!(
        html,
        "<h2>{}</h2><table><tr><th>metric</th><th>value</th><th>what it is</th></tr>",
        esc(name)
    );
    if let serde_json::Value::Object(m) = &e.metrics {
        for (k, v) in m {
            let _ = write!(
                html,
                "<tr><td>{k}</td><td>{}</td><td class=def>{}</td></tr>",
                match v.as_f64() {
                    Some(f) if !v.is_u64() => format!("{f:.4}"),
                    _ => v.to_string(),
                },
                esc(metric_definition(k))
            );
        }
    }
    html.push_str("</table>");
    let _ = write!(
        html,
        "<p>{} rows coded wrongly, most confident first: <a href=\"{f}\">{f}</a></p>",
        e.errors.len(),
        f = esc(&format!("{name}_errors.csv"))
    );
    let charts = crate::plots::write(dir, name, e)?;
    if charts.is_empty() {
        html.push_str("<p>Charts skipped: no TrueType font found to lay out their text (install fonts-dejavu or set ISCO_DAG_FONT); the tables below and the CSV files hold the same numbers.</p>");
    }
    html.push_str("<div class=charts>");
    for f in &charts {
        let _ = write!(html, "<img src=\"{f}\" alt=\"{f}\">");
    }
    html.push_str("</div><h3>Most confused pairs</h3><table><tr><th>true</th><th>predicted</th><th>n</th></tr>");
    for (t, p, n) in &e.confused {
        let _ = write!(
            html,
            "<tr><td>{t} {}</td><td>{p} {}</td><td>{n}</td></tr>",
            esc(pred.title(t)),
            esc(pred.title(p))
        );
    }
    html.push_str("</table><h3>Error rate by major group</h3><table><tr><th>group</th><th>records</th><th>error rate</th></tr>");
    for (g, n, r) in &e.by_major {
        let _ = write!(
            html,
            "<tr><td>{g} {}</td><td>{n}</td><td>{r:.3}</td></tr>",
            esc(pred.title(g))
        );
    }
    html.push_str("</table>");
    for (level, groups) in [(2, &e.by_sub_major), (3, &e.by_minor)] {
        let mut worst: Vec<&(String, usize, f64)> = groups.iter().filter(|g| g.1 >= 5).collect();
        worst.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        let _ = write!(
            html,
            "<h3>Highest error rates at {level} digits</h3><p>groups with at least 5 rows, worst 15 of {}; every group is in <a href=\"{f}\">{f}</a></p><table><tr><th>group</th><th>records</th><th>error rate</th></tr>",
            worst.len(),
            f = esc(&format!("{name}_error_by_group.csv"))
        );
        for (g, n, r) in worst.into_iter().take(15) {
            let _ = write!(
                html,
                "<tr><td>{g} {}</td><td>{n}</td><td>{r:.3}</td></tr>",
                esc(pred.title(g))
            );
        }
        html.push_str("</table>");
    }
    html.push_str("<h3>Confusions at the 2-digit level</h3><table><tr><th>true</th><th>predicted</th><th>n</th></tr>");
    let mut c2: Vec<_> = e
        .confusion_2digit
        .iter()
        .filter(|((a, b), _)| a != b)
        .collect();
    c2.sort_by(|a, b| b.1.cmp(a.1));
    for ((a, b), n) in c2.into_iter().take(15) {
        let _ = write!(html, "<tr><td>{a}</td><td>{b}</td><td>{n}</td></tr>");
    }
    html.push_str("</table>");
    Ok(())
}

/// How many rows each step of the model decided, as `{"ngram": n, "ensemble": m}`.
fn step_counts(steps: &[classifier::predict::Step]) -> serde_json::Value {
    let mut counts = std::collections::BTreeMap::new();
    for s in steps {
        *counts.entry(s.as_str()).or_insert(0usize) += 1;
    }
    json!(counts)
}

/// How many texts took the model's calibration of unseen titles without duties (null when
/// the model has none or it is turned off).
fn unseen_title_count(pred: &Predictor, texts: &[String]) -> serde_json::Value {
    json!(
        pred.unseen_titles(texts)
            .map(|v| v.iter().filter(|&&b| b).count())
    )
}

/// What [`score_labelled`] found in one labelled file.
pub struct ScoredFile {
    /// The file's name without its extension: the key of its metrics and the prefix of
    /// its report tables.
    pub name: String,
    /// Its metrics (`null` when the file has no rows at all).
    pub metrics: serde_json::Value,
    /// One line for a person: the headline metrics, or why nothing was scored.
    pub summary: String,
    /// The rows that could not be scored, and why.
    pub unusable: Vec<Unusable>,
}

/// Scores the labelled file `path` (its columns `columns`, or the standard names where it
/// has those) with `pred`, as the `evaluate` stage scores each `extra` file: writes its
/// tables (`<name>_errors.csv`, `_per_class`, `_confused_pairs`, `_error_by_group`,
/// `_coverage_curve`, `_reliability`, `_unusable` when rows could not be used, and charts)
/// into `dir` and its section into `html`. A file with rows but none usable is an error
/// naming the first unusable rows; a file with no rows is reported and skipped.
pub fn score_labelled(
    pred: &Predictor,
    path: &Path,
    columns: &LabelledColumns,
    dir: &Path,
    html: &mut String,
) -> Result<ScoredFile, Error> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let Labelled {
        texts,
        codes,
        raw,
        unusable: bad_rows,
    } = read_labelled(path, columns, &pred.meta.labels, &pred.meta.reference_units)?;
    let bad = &bad_rows;
    if !bad.is_empty() {
        Table::new()
            .with("row", Column::Int(bad.iter().map(|b| b.row).collect()))
            .with("line", line_column(bad.iter().map(|b| b.line)))
            .with(
                "reason",
                Column::Str(bad.iter().map(|b| b.reason.clone()).collect()),
            )
            .write_csv_and_parquet(&dir.join(format!("{name}_unusable.csv")))?;
    }
    let no_rows = texts.is_empty() && bad.is_empty();
    let bad = if bad.is_empty() {
        "0 unusable".to_string()
    } else {
        format!("{} unusable, listed in {name}_unusable.csv", bad.len())
    };
    if no_rows {
        return Ok(ScoredFile {
            summary: format!("{name}: no rows, skipped"),
            metrics: serde_json::Value::Null,
            name,
            unusable: bad_rows,
        });
    }
    if texts.is_empty() {
        // A stage's report is not kept when it fails, so the error says why.
        return Err(Error::Input {
            path: path.to_path_buf(),
            message: format!(
                "has no usable labelled rows (a job title and a 4-digit code in `{}`): {}",
                columns_of(path, columns).code_column.trim(),
                unusable_summary(&bad_rows)
            ),
        });
    }
    let scored = pred.score(&texts);
    let mut e = evaluate_probabilities(pred, &scored.probabilities, &codes);
    e.metrics["decided_by"] = step_counts(&scored.steps);
    e.metrics["unseen_titles_without_duties"] = unseen_title_count(pred, &texts);
    let raw: Vec<(i64, &str, &str)> = raw
        .iter()
        .map(|(r, t, d)| (*r, t.as_str(), d.as_str()))
        .collect();
    write_report(dir, &name, pred, &e, &raw, html)?;
    let summary = format!(
        "{name}: accuracy {:.4}, top-3 {:.4}, macro-F1 {:.4}, production rate at 95 % {:.3}; {:.1} % coded at confidence >= 0.9, {:.1} % of them right ({} rows, {bad})",
        e.metrics["accuracy"].as_f64().unwrap_or(0.0),
        e.metrics["top3_accuracy"].as_f64().unwrap_or(0.0),
        e.metrics["macro_f1"].as_f64().unwrap_or(0.0),
        e.metrics["production_rate_95"].as_f64().unwrap_or(0.0),
        100.0 * e.metrics["share_conf_90"].as_f64().unwrap_or(0.0),
        100.0 * e.metrics["accuracy_conf_90"].as_f64().unwrap_or(0.0),
        texts.len()
    );
    Ok(ScoredFile {
        name,
        metrics: e.metrics,
        summary,
        unusable: bad_rows,
    })
}

/// Writes `report.html` (the sections [`score_labelled`] added to `html`) and
/// `metrics.json` (`metrics`, each scored set's metrics under its name) into `dir`.
pub fn write_report_page(dir: &Path, html: &str, metrics: &serde_json::Value) -> Result<(), Error> {
    std::fs::write(dir.join("report.html"), html).map_err(|source| Error::Write {
        path: dir.join("report.html"),
        source,
    })?;
    crate::write_json(&dir.join("metrics.json"), metrics)
}

/// The start of `report.html`, before each scored set's section.
pub const REPORT_HEAD: &str = "<!doctype html><meta charset=utf-8><title>isco-dag evaluation</title><meta name=viewport content=\"width=device-width, initial-scale=1\"><style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}td.def{color:#555;font-size:.9em}.charts{display:flex;flex-wrap:wrap;gap:1em}.charts img{width:100%;max-width:540px;height:auto;border:1px solid #ddd}</style><h1>Evaluation</h1>";

impl Stage for Evaluate {
    runner::stage_metadata!("evaluate", version "18", "score a model on the frozen test split and extra labelled files, with error analysis", INPUTS, OUTPUTS, names columns::param_names::<LabelledColumns>(runner::stage::param_names_of::<InferenceConfig>()));
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        crate::predict::resolve_inference_params::<LabelledColumns>(raw)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let (cfg, columns): (InferenceConfig, LabelledColumns) = columns::read_params(ctx.params)?;
        let pred = Predictor::load(ctx.input("model")?, cfg)?;
        crate::embeddings::attach_shared_cache(ctx, &pred);
        let test = Records::read(ctx.input("test")?)?;
        let dir = ctx.output("report");
        std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
            path: dir.clone(),
            source,
        })?;
        let mut html = String::from(REPORT_HEAD);
        // Scored once; the true-label view below reuses the probabilities.
        let scored = pred.score(&test.text);
        let probs = scored.probabilities;
        let mut e = evaluate_probabilities(&pred, &probs, &test.isco_code);
        e.metrics["decided_by"] = step_counts(&scored.steps);
        e.metrics["unseen_titles_without_duties"] = unseen_title_count(&pred, &test.text);
        let raw: Vec<(i64, &str, &str)> = (0..test.len())
            .map(|i| {
                (
                    test.row[i],
                    test.job_title[i].as_str(),
                    test.duties_description[i].as_str(),
                )
            })
            .collect();
        write_report(&dir, "test", &pred, &e, &raw, &mut html)?;
        let mut metrics = json!({"test": e.metrics});
        let mut summary = vec![format!(
            "test: accuracy {:.4}, macro-F1 {:.4}, top-3 {:.4}, ECE {:.4}, production rate at 95 % {:.3}",
            e.metrics["accuracy"].as_f64().unwrap_or(0.0),
            e.metrics["macro_f1"].as_f64().unwrap_or(0.0),
            e.metrics["top3_accuracy"].as_f64().unwrap_or(0.0),
            e.metrics["ece"].as_f64().unwrap_or(0.0),
            e.metrics["production_rate_95"].as_f64().unwrap_or(0.0),
        )];
        if let Some(tp) = ctx.input_opt("truth") {
            let truth = read_row_map(tp, "true_isco_code")?;
            let codes: Vec<String> = test
                .row
                .iter()
                .zip(&test.isco_code)
                .map(|(r, given)| truth.get(r).cloned().unwrap_or_else(|| given.clone()))
                .collect();
            let e = evaluate_probabilities(&pred, &probs, &codes);
            write_report(&dir, "test_true_labels", &pred, &e, &raw, &mut html)?;
            summary.push(format!(
                "test against true labels: accuracy {:.4}, macro-F1 {:.4}, production rate at 95 % {:.3}, at 97 % {:.3}",
                e.metrics["accuracy"].as_f64().unwrap_or(0.0),
                e.metrics["macro_f1"].as_f64().unwrap_or(0.0),
                e.metrics["production_rate_95"].as_f64().unwrap_or(0.0),
                e.metrics["production_rate_97"].as_f64().unwrap_or(0.0),
            ));
            metrics["test_true_labels"] = e.metrics;
        }
        for path in ctx.input_files("extra") {
            let scored = score_labelled(&pred, path, &columns, &dir, &mut html)?;
            summary.push(scored.summary);
            metrics[scored.name] = scored.metrics;
        }
        write_report_page(&dir, &html, &metrics)?;
        crate::write_json(&ctx.output("metrics.json"), &metrics)?;
        // Run record only: the files must not depend on what the shared cache held.
        if let Some(n) = crate::embeddings::flush_shared_cache(&pred) {
            metrics["embeddings_computed"] = json!(n);
        }
        Ok(StageReport { metrics, summary })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_labelled_file_is_read_by_the_office_names_or_the_standard_ones() {
        let dir = tempfile::tempdir().unwrap();
        let office = LabelledColumns {
            title_column: "Job Title".into(),
            duties_column: "Duties".into(),
            code_column: "ISCO".into(),
            ..LabelledColumns::default()
        };
        let own = dir.path().join("own.csv");
        std::fs::write(
            &own,
            "ISCO,Job Title,Duties\n5120,Chef,cooks meals\n51,baker,\n7512.0,Baker,\n5120,,\n5120,--,?\n110,soldier,\n210,sergeant,\n,cook,\n",
        )
        .unwrap();
        let labels = ["0110", "5120", "7512"].map(String::from);
        let none = BTreeSet::new();
        let l = read_labelled(&own, &office, &labels, &none).unwrap();
        assert_eq!(l.texts, ["chef | cooks meals", "baker", "soldier"]);
        assert_eq!(l.codes, ["5120", "7512", "0110"]);
        let why = [
            (1, "column `ISCO`: `51` is not a 4-digit code"),
            (3, "column `Job Title`: the job title and duties are empty"),
            (
                4,
                "column `Job Title`: the job title and duties hold no letters or digits, so there is nothing to code",
            ),
            (6, "column `ISCO`: `210` is not a 4-digit code"),
            (
                7,
                "column `ISCO`: is empty; give the row's 4-digit code or leave the row out",
            ),
        ];
        let unusable = |line: fn(i64) -> Option<i64>| {
            why.iter()
                .map(|&(row, reason)| Unusable {
                    row,
                    line: line(row),
                    reason: reason.to_string(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(l.unusable, unusable(|row| Some(row + 2)));
        // The same rows in Parquet are named by their row alone: a Parquet file has no lines.
        let pq = dir.path().join("own.parquet");
        let column = |cells: &[&str]| Column::Str(cells.iter().map(|c| c.to_string()).collect());
        Table::new()
            .with(
                "ISCO",
                column(&["5120", "51", "7512.0", "5120", "5120", "110", "210", ""]),
            )
            .with(
                "Job Title",
                column(&[
                    "Chef", "baker", "Baker", "", "--", "soldier", "sergeant", "cook",
                ]),
            )
            .with(
                "Duties",
                column(&["cooks meals", "", "", "", "?", "", "", ""]),
            )
            .write_parquet(&pq)
            .unwrap();
        let from_parquet = read_labelled(&pq, &office, &labels, &none).unwrap();
        assert_eq!(
            (&from_parquet.texts, &from_parquet.codes),
            (&l.texts, &l.codes)
        );
        assert_eq!(from_parquet.unusable, unusable(|_| None));
        assert!(
            unusable_summary(&from_parquet.unusable)
                .starts_with("row 1: column `ISCO`: `51` is not a 4-digit code; row 3: ")
        );
        let written = dir.path().join("written.csv");
        std::fs::write(
            &written,
            "job_title,duties_description,isco_code\nchef,cooks meals,5120\n",
        )
        .unwrap();
        assert_eq!(
            read_labelled(&written, &office, &labels, &none)
                .unwrap()
                .texts,
            l.texts[..1]
        );
        let many: Vec<Unusable> = (0..5)
            .map(|r| Unusable {
                row: r,
                line: Some(r + 2),
                reason: "why".to_string(),
            })
            .collect();
        assert_eq!(
            unusable_summary(&many),
            "row 0 (line 2): why; row 1 (line 3): why; row 2 (line 4): why; and 2 more"
        );
        assert!(unusable_summary(&l.unusable).starts_with(
            "row 1 (line 3): column `ISCO`: `51` is not a 4-digit code; row 3 (line 5): "
        ));
        // With the unit groups of the model's reference, a code outside them is not scored,
        // and a lost leading zero is restored for them as for the model's own codes.
        let units: BTreeSet<IscoCode> = ["0110", "0210", "2221", "5120", "7512"]
            .into_iter()
            .map(IscoCode::from)
            .collect();
        let l = read_labelled(&own, &office, &labels, &units).unwrap();
        assert_eq!(l.codes, ["5120", "7512", "0110", "0210"]);
        std::fs::write(
            &written,
            "job_title,duties_description,isco_code\nchef,,5120\nnurse,,2221\nbaker,,9999\n",
        )
        .unwrap();
        let l = read_labelled(&written, &office, &labels, &units).unwrap();
        assert_eq!(l.codes, ["5120", "2221"]);
        assert_eq!(
            l.unusable,
            [Unusable {
                row: 2,
                line: Some(4),
                reason: "column `isco_code`: `9999` is not a unit group of the ISCO-08 reference the model was trained with".into(),
            }]
        );
        let Err(e) = read_labelled(&own, &LabelledColumns::default(), &labels, &none) else {
            panic!("read by the standard names")
        };
        let e = e.to_string();
        assert!(
            e.contains("has no column `job_title`")
                && e.ends_with("or set `title_column` in [data] to the name it has"),
            "{e}"
        );
    }
}
