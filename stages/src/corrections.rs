//! `corrections`: ingest the coders' corrections and apply them to the historical records.
//!
//! Reads every corrections file the pipeline names (a glob such as `data/corrections/*.csv`;
//! several files accumulate), in the layout the review page writes:
//! `job_title, duties_description, corrected_isco_code`, or `text, corrected_isco_code`;
//! optional `coder`, `timestamp`, `note` (the review page adds `predicted_isco_code` and
//! `predicted_confidence`, kept for the audit trail). A file exported from an office's own
//! system may instead use the headings `[data]` gives its records (`title_column`,
//! `duties_column`, and `code_column` for the corrected code), read as `predict` and
//! `evaluate` read them: each file by those names or by the standard ones it has. Rows are
//! validated like `clean`: unusable ones go to the quarantine CSV with file, row, line,
//! column and reason.
//!
//! Rows are keyed by their normalised text. The same text corrected twice to the same code is
//! one correction; to different codes it is a conflict: the latest wins (greatest
//! `timestamp`; rows without one are older than rows with one; then file order, then row
//! order) and the conflict is listed in `conflicts.csv` and the report.
//!
//! The outputs are canonical: rows are sorted by the blake3 hash of their text and carry no
//! file names or positions, and the held-out slice is chosen by that hash. Re-exporting the
//! same corrections in another order or under another file name therefore writes
//! byte-identical tables, and the stages downstream stay fresh (early cutoff).
//!
//! With the historical records as input (`clean.records`), matching records (same normalised
//! text) take the corrected code, and the corrected table is the `records` output that
//! `cluster-outliers` and `split` read. Corrections for texts the records do not contain
//! leave that table byte-identical, so new corrections re-train nothing until they touch the
//! historical data; `fine-tune` is what learns them.

use std::collections::{BTreeMap, HashMap};

use artifacts::table::{Column, Table};
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clean::load_taxonomy;
use crate::columns::{self, LabelledColumns};
use crate::error::Error;
use crate::records::{Records, read_rows};
use classifier::text::record_text;

/// Params of `corrections` (config section `[corrections]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrectionsParams {
    /// Share of corrections held out to evaluate fine-tuning (chosen by text hash).
    pub holdout_fraction: f64,
    /// Replace the codes of historical records whose text matches a correction.
    pub apply_to_records: bool,
}

impl Default for CorrectionsParams {
    fn default() -> Self {
        CorrectionsParams {
            holdout_fraction: 0.1,
            apply_to_records: true,
        }
    }
}

/// The `corrections` stage kind.
pub struct Corrections;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "files",
        required: true,
        many: true,
        help: "corrections CSV/Parquet files (a glob such as data/corrections/*.csv; may match none)",
    },
    InputDecl {
        name: "records",
        required: false,
        many: false,
        help: "cleaned historical records (clean.records) to apply the corrections to",
    },
    InputDecl {
        name: "reference",
        required: false,
        many: false,
        help: "ISCO-08 reference CSV to validate the corrected codes",
    },
];

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl {
        name: "records",
        file: "records.parquet",
        dir: false,
    },
    OutputDecl {
        name: "table",
        file: "corrections.parquet",
        dir: false,
    },
    OutputDecl {
        name: "train",
        file: "corrections_train.parquet",
        dir: false,
    },
    OutputDecl {
        name: "holdout",
        file: "corrections_holdout.parquet",
        dir: false,
    },
    OutputDecl {
        name: "quarantine",
        file: "quarantine.csv",
        dir: false,
    },
    OutputDecl {
        name: "quarantine_parquet",
        file: "quarantine.parquet",
        dir: false,
    },
    OutputDecl {
        name: "conflicts",
        file: "conflicts.csv",
        dir: false,
    },
    OutputDecl {
        name: "conflicts_parquet",
        file: "conflicts.parquet",
        dir: false,
    },
    OutputDecl {
        name: "report",
        file: "report.json",
        dir: false,
    },
];

/// Columns a corrections file may have, in the order `read_rows` returns them: the title,
/// the duties and the code under the names `[data]` gives (see [`columns_of`]), then the
/// rest under their own.
const COLUMNS: [&str; 10] = [
    "job_title",
    "duties_description",
    "text",
    "corrected_isco_code",
    "isco_code",
    "coder",
    "timestamp",
    "note",
    "predicted_isco_code",
    "predicted_confidence",
];

/// The column names to read a corrections file by, in [`COLUMNS`]' order: the configured
/// title, duties and code columns (or the standard ones where the file has those instead).
/// `corrected_isco_code` is read first; the code column is the fallback.
fn columns_of(path: &std::path::Path, configured: &LabelledColumns) -> [String; 10] {
    let c = columns::columns_of(path, configured);
    let code = if c.code_column == COLUMNS[3] {
        COLUMNS[4].to_string()
    } else {
        c.code_column
    };
    let mut names = COLUMNS.map(String::from);
    names[0] = c.title_column;
    names[1] = c.duties_column;
    names[4] = code;
    names
}

/// One accepted correction.
#[derive(Debug, Clone)]
struct Correction {
    job_title: String,
    duties: String,
    text: String,
    code: String,
    coder: String,
    timestamp: String,
    note: String,
    predicted: String,
    /// Ordering key for "latest wins": (parsed timestamp, file index, row).
    order: (Option<i64>, usize, usize),
    file: String,
    row: usize,
}

/// Parses the timestamps coders' tools write: RFC 3339, `YYYY-MM-DD HH:MM[:SS[.fff]]`,
/// `YYYY-MM-DDTHH:MM[:SS[.fff]]`, or a date; and, as a spreadsheet in a day-first locale
/// saves them again, `DD.MM.YYYY [HH:MM[:SS]]`. Day and month separated by slashes are not
/// read: `03/04/2026` is the 3rd of April in one office and the 4th of March in another.
/// Returns seconds since the epoch (UTC).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%d.%m.%Y %H:%M:%S",
        "%d.%m.%Y %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp());
        }
    }
    ["%Y-%m-%d", "%d.%m.%Y"]
        .iter()
        .find_map(|f| chrono::NaiveDate::parse_from_str(s, f).ok())
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
}

/// The 64-bit blake3 prefix of a text: its canonical position and its holdout draw.
fn text_hash(text: &str) -> u64 {
    let h = blake3::hash(text.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Whether a text belongs to the held-out slice.
pub fn is_holdout(text: &str, fraction: f64) -> bool {
    // The upper bits of the hash, as a uniform draw in [0, 1).
    ((text_hash(text) >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

/// Writes corrections in the cleaned-records layout (`train`, `holdout` outputs).
fn write_records(rows: &[&Correction], path: &std::path::Path) -> Result<(), Error> {
    let mut r = Records::default();
    for (i, c) in rows.iter().enumerate() {
        r.row.push(i as i64);
        r.job_title.push(c.job_title.clone());
        r.duties_description.push(c.duties.clone());
        r.text.push(c.text.clone());
        r.isco_code.push(c.code.clone());
    }
    r.write(path)
}

impl Stage for Corrections {
    runner::stage_metadata!("corrections", version "7", "ingest coders' corrections (row-hashed, latest wins) and apply them to the historical records", INPUTS, OUTPUTS, names columns::param_names::<LabelledColumns>(runner::stage::param_names_of::<CorrectionsParams>()));
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        let (own, names): (toml::Table, toml::Table) =
            columns::split_params::<LabelledColumns, _, _>(raw.clone());
        let v = runner::stage::typed_params::<CorrectionsParams>(&own)?;
        let p: CorrectionsParams = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        if !(0.0..1.0).contains(&p.holdout_fraction) {
            return Err(format!(
                "holdout_fraction must be in [0, 1), not {}",
                p.holdout_fraction
            ));
        }
        columns::resolve::<LabelledColumns>(v, &names)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let (p, configured): (CorrectionsParams, LabelledColumns) =
            columns::read_params(ctx.params)?;
        let tax = load_taxonomy(ctx)?;
        let files = ctx.input_files("files");
        let mut accepted: Vec<Correction> = Vec::new();
        let mut quarantine: [Vec<String>; 6] = Default::default();
        let mut rows_in = 0usize;
        for (fi, path) in files.iter().enumerate() {
            let fname = path
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            let names = columns_of(path, &configured);
            let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
            let rows = read_rows(path, &wanted, &[false; COLUMNS.len()], configured.encoding)?;
            if let Some(first) = rows.first() {
                let has = |i: usize| first.values[i].is_some();
                if !has(0) && !has(2) {
                    return Err(Error::Input {
                        path: path.clone(),
                        message: format!(
                            "has neither a `{}` nor a `text` column; corrections need `{}, {}, corrected_isco_code` or `text, corrected_isco_code`{}",
                            names[0],
                            names[0],
                            names[1],
                            columns::column_hint(&names[0], &configured, false)
                        ),
                    }
                    .into());
                }
                if !has(3) && !has(4) {
                    return Err(Error::Input {
                        path: path.clone(),
                        message: format!(
                            "has no `corrected_isco_code` column (nor `{}`); add the corrected 4-digit ISCO-08 code of each row",
                            names[4]
                        ),
                    }
                    .into());
                }
            }
            rows_in += rows.len();
            for r in rows {
                let v = |i: usize| r.values[i].clone().unwrap_or_default();
                let mut reject = |col: &str, reason: String| {
                    quarantine[0].push(fname.clone());
                    quarantine[1].push(r.row.to_string());
                    quarantine[2].push(r.line.map_or(String::new(), |l| l.to_string()));
                    quarantine[3].push(col.to_string());
                    quarantine[4].push(reason);
                    quarantine[5].push(r.raw.clone());
                };
                if let Some(problem) = &r.problem {
                    reject(problem.column().unwrap_or(""), problem.to_string());
                    continue;
                }
                let (code_col, code_raw) = if r.values[3].is_some() {
                    (COLUMNS[3], v(3))
                } else {
                    (names[4].as_str(), v(4))
                };
                let (code, _) = tax.normalize_code(&code_raw);
                if code.is_empty() {
                    reject(code_col, "the corrected code is empty".into());
                    continue;
                }
                if let Err(why) = tax.check_unit(&code) {
                    reject(code_col, why);
                    continue;
                }
                let (title, duties) = if r.values[0].is_some() {
                    (v(0), v(1))
                } else {
                    (v(2), String::new())
                };
                let text = record_text(&title, &duties);
                if text.is_empty() {
                    let col = if r.values[0].is_some() {
                        names[0].as_str()
                    } else {
                        "text"
                    };
                    reject(col, "the text is empty".into());
                    continue;
                }
                let ts = v(6);
                let parsed = if ts.trim().is_empty() {
                    None
                } else {
                    match parse_timestamp(&ts) {
                        Some(t) => Some(t),
                        None => {
                            reject(
                                "timestamp",
                                format!(
                                    "`{ts}` is not a date or time this stage reads (write it as 2026-11-22T10:30:00Z; 2026-11-22 10:30 and 22.11.2026 10:30 are read too)"
                                ),
                            );
                            continue;
                        }
                    }
                };
                accepted.push(Correction {
                    job_title: title,
                    duties,
                    text,
                    code,
                    coder: v(5),
                    timestamp: ts.trim().to_string(),
                    note: v(7),
                    predicted: v(8),
                    order: (parsed, fi, r.row),
                    file: fname.clone(),
                    row: r.row,
                });
            }
        }

        // Latest wins per text; conflicts are reported.
        let mut by_text: HashMap<String, Vec<Correction>> = HashMap::new();
        for c in accepted {
            by_text.entry(c.text.clone()).or_default().push(c);
        }
        let mut winners: Vec<Correction> = Vec::with_capacity(by_text.len());
        let mut conflicts: [Vec<String>; 4] = Default::default();
        let mut duplicates = 0usize;
        for (_, mut group) in by_text {
            group.sort_by_key(|c| c.order);
            duplicates += group.len() - 1;
            let win = group.pop().expect("non-empty group");
            let losers: Vec<&Correction> = group.iter().filter(|c| c.code != win.code).collect();
            if !losers.is_empty() {
                conflicts[0].push(win.text.clone());
                conflicts[1].push(win.code.clone());
                conflicts[2].push(
                    losers
                        .iter()
                        .map(|c| c.code.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                conflicts[3].push(
                    group
                        .iter()
                        .chain(std::iter::once(&win))
                        .map(|c| format!("{}:{}={}", c.file, c.row, c.code))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            winners.push(win);
        }
        winners.sort_by(|a, b| {
            text_hash(&a.text)
                .cmp(&text_hash(&b.text))
                .then_with(|| a.text.cmp(&b.text))
        });
        let mut order: Vec<usize> = (0..conflicts[0].len()).collect();
        order.sort_by(|&a, &b| conflicts[0][a].cmp(&conflicts[0][b]));
        let conflicts: Vec<Vec<String>> = conflicts
            .iter()
            .map(|col| order.iter().map(|&i| col[i].clone()).collect())
            .collect();

        let col = |f: fn(&Correction) -> &String| -> Column {
            Column::Str(winners.iter().map(|c| f(c).clone()).collect())
        };
        let holdout: Vec<bool> = winners
            .iter()
            .map(|c| is_holdout(&c.text, p.holdout_fraction))
            .collect();
        Table::new()
            .with("job_title", col(|c| &c.job_title))
            .with("duties_description", col(|c| &c.duties))
            .with("text", col(|c| &c.text))
            .with("isco_code", col(|c| &c.code))
            .with("coder", col(|c| &c.coder))
            .with("timestamp", col(|c| &c.timestamp))
            .with("note", col(|c| &c.note))
            .with("predicted_isco_code", col(|c| &c.predicted))
            .with(
                "holdout",
                Column::Int(holdout.iter().map(|&h| h as i64).collect()),
            )
            .write_parquet(&ctx.output("corrections.parquet"))?;
        let mut held: Vec<&Correction> = Vec::new();
        let mut kept: Vec<&Correction> = Vec::new();
        for (c, &h) in winners.iter().zip(&holdout) {
            if h { held.push(c) } else { kept.push(c) }
        }
        write_records(&kept, &ctx.output("corrections_train.parquet"))?;
        write_records(&held, &ctx.output("corrections_holdout.parquet"))?;
        Table::new()
            .with("file", Column::Str(quarantine[0].clone()))
            .with("row", Column::Str(quarantine[1].clone()))
            .with("line", Column::Str(quarantine[2].clone()))
            .with("column", Column::Str(quarantine[3].clone()))
            .with("reason", Column::Str(quarantine[4].clone()))
            .with("raw", Column::Str(quarantine[5].clone()))
            .write_csv_and_parquet(&ctx.output("quarantine.csv"))?;
        Table::new()
            .with("text", Column::Str(conflicts[0].clone()))
            .with("winning_code", Column::Str(conflicts[1].clone()))
            .with("overruled_codes", Column::Str(conflicts[2].clone()))
            .with("sources", Column::Str(conflicts[3].clone()))
            .write_csv_and_parquet(&ctx.output("conflicts.csv"))?;

        // Apply to the historical records.
        let mut records = match ctx.input_opt("records") {
            Some(path) => Records::read(path)?,
            None => Records::default(),
        };
        let mut overridden = 0usize;
        let mut overridden_by_code: BTreeMap<String, usize> = BTreeMap::new();
        if p.apply_to_records && !winners.is_empty() {
            let map: HashMap<&str, &str> = winners
                .iter()
                .map(|c| (c.text.as_str(), c.code.as_str()))
                .collect();
            for (text, code) in records.text.iter().zip(records.isco_code.iter_mut()) {
                if let Some(&new) = map.get(text.as_str())
                    && new != code
                {
                    *code = new.to_string();
                    overridden += 1;
                    *overridden_by_code.entry(new.to_string()).or_default() += 1;
                }
            }
        }
        records.write(&ctx.output("records.parquet"))?;

        let quarantined = quarantine[0].len();
        let new_codes: std::collections::BTreeSet<&str> = {
            let known: std::collections::HashSet<&str> =
                records.isco_code.iter().map(String::as_str).collect();
            winners
                .iter()
                .map(|c| c.code.as_str())
                .filter(|c| !known.contains(c))
                .collect()
        };
        let metrics = json!({
            "files": files.len(),
            "rows_in": rows_in,
            "quarantined": quarantined,
            "corrections": winners.len(),
            "duplicate_rows": duplicates,
            "conflicts": conflicts[0].len(),
            "train": kept.len(),
            "holdout": held.len(),
            "records_overridden": overridden,
            "codes": winners.iter().map(|c| c.code.as_str()).collect::<std::collections::BTreeSet<_>>().len(),
            "codes_not_in_records": new_codes.len(),
        });
        let report = json!({
            "counts": metrics,
            "overridden_by_code": overridden_by_code,
            "conflict_examples": (0..conflicts[0].len().min(10)).map(|i| json!({
                "text": conflicts[0][i], "winning_code": conflicts[1][i], "overruled_codes": conflicts[2][i],
            })).collect::<Vec<_>>(),
        });
        crate::write_json(&ctx.output("report.json"), &report)?;
        let mut summary = vec![format!(
            "{}, {}: {} ({} train, {} held out), {duplicates} repeated, {} (latest wins), {quarantined} quarantined",
            crate::counted(files.len(), "file", "files"),
            crate::counted(rows_in, "row", "rows"),
            crate::counted(winners.len(), "correction", "corrections"),
            kept.len(),
            held.len(),
            crate::counted(conflicts[0].len(), "conflict", "conflicts"),
        )];
        if ctx.input_opt("records").is_some() {
            summary.push(format!(
                "{} relabelled by a correction; {} in the records",
                crate::counted(overridden, "historical record", "historical records"),
                match new_codes.len() {
                    1 => "1 corrected code never occurs".to_string(),
                    n => format!("{n} corrected codes never occur"),
                }
            ));
        }
        Ok(StageReport { metrics, summary })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_common_layouts() {
        let a = parse_timestamp("2026-11-22T10:30:00Z").unwrap();
        assert_eq!(parse_timestamp("2026-11-22 10:30:00"), Some(a));
        assert_eq!(parse_timestamp("2026-11-22T10:30"), Some(a));
        assert!(parse_timestamp("2026-11-22").unwrap() < a);
        assert_eq!(parse_timestamp("2026-11-22 10:30:00.250"), Some(a));
        assert_eq!(parse_timestamp("22.11.2026 10:30:00"), Some(a));
        assert_eq!(parse_timestamp("22.11.2026 10:30"), Some(a));
        assert_eq!(parse_timestamp("22.11.2026"), parse_timestamp("2026-11-22"));
        assert_eq!(parse_timestamp("yesterday"), None);
        // Day and month in either order: refused rather than guessed.
        assert_eq!(parse_timestamp("03/04/2026 10:30"), None);
        assert_eq!(parse_timestamp("31.02.2026"), None);
    }

    #[test]
    fn holdout_depends_on_the_text_only() {
        let n = (0..2000)
            .filter(|i| is_holdout(&format!("job {i}"), 0.1))
            .count();
        assert!((150..250).contains(&n), "{n}");
        assert_eq!(is_holdout("chef", 0.1), is_holdout("chef", 0.1));
        assert!(!is_holdout("chef", 0.0));
    }
}
