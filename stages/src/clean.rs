//! `clean`: validate and normalise raw historical records.
//!
//! Reads CSV or Parquet with a title, a duties and a code column (names configurable), builds
//! `text = title | duties` ([`classifier::text::record_text`]; the duties keep their `;`
//! clauses as ` ; `, which the ngram features skip and retrieval queries one by one), and validates the code against the
//! ISCO-08 reference when one is given (structurally otherwise). Unusable rows go to the
//! quarantine CSV with their row, line, column and reason; nothing is dropped silently.

use std::collections::HashMap;

use artifacts::table::{Column, Table, TextEncoding};
use classifier::Taxonomy;
use classifier::text::record_text;
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::columns::{ColumnNames, LabelledColumns};
use crate::records::{Records, read_rows};

/// Params of `clean` (config section `[data]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanParams {
    /// Column holding the job title.
    pub title_column: String,
    /// Column holding the duties description.
    pub duties_column: String,
    /// Column holding the ISCO-08 code.
    pub code_column: String,
    /// Keep only the first of rows with identical text and code.
    pub drop_exact_duplicates: bool,
    /// The encoding a CSV file of records is read in (left out of the resolved params, and
    /// so of the stage's key, when UTF-8).
    pub encoding: TextEncoding,
}

impl Default for CleanParams {
    fn default() -> Self {
        CleanParams {
            title_column: "job_title".into(),
            duties_column: "duties_description".into(),
            code_column: "isco_code".into(),
            drop_exact_duplicates: false,
            encoding: TextEncoding::UTF_8,
        }
    }
}

/// The `clean` stage kind.
pub struct Clean;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "records",
        required: true,
        many: false,
        help: "raw historical records, CSV or Parquet",
    },
    InputDecl {
        name: "reference",
        required: false,
        many: false,
        help: "ISCO-08 reference CSV (ILO, ESCO or isco-dag layout)",
    },
];

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl {
        name: "records",
        file: "records.parquet",
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
        name: "report",
        file: "report.json",
        dir: false,
    },
];

/// Loads the taxonomy from an optional reference input.
pub fn load_taxonomy(ctx: &StageContext<'_>) -> Result<Taxonomy, StageError> {
    Ok(match ctx.input_opt("reference") {
        Some(p) => Taxonomy::load(p)?,
        None => Taxonomy::codes_only(),
    })
}

impl Stage for Clean {
    runner::stage_metadata!("clean", version "6", "validate codes, normalise text, quarantine unusable rows", INPUTS, OUTPUTS, CleanParams);
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        let mut v = runner::stage::typed_params::<CleanParams>(raw)?;
        let p: CleanParams = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        if p.encoding.is_utf8()
            && let Some(m) = v.as_object_mut()
        {
            m.remove("encoding");
        }
        LabelledColumns {
            title_column: p.title_column,
            duties_column: p.duties_column,
            code_column: p.code_column,
            encoding: p.encoding,
        }
        .validate()?;
        Ok(v)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let p: CleanParams = ctx.params()?;
        let input = ctx.input("records")?;
        let tax = load_taxonomy(ctx)?;
        let cols = [
            p.title_column.as_str(),
            p.duties_column.as_str(),
            p.code_column.as_str(),
        ];
        let rows = read_rows(input, &cols, &[true, true, true], p.encoding).map_err(|e| {
            e.with_column_hint(|column| {
                let key = ["title_column", "duties_column", "code_column"]
                    [cols.iter().position(|c| *c == column).unwrap_or(0)];
                format!(", or set the clean stage's `{key}` param to the name it has")
            })
        })?;
        ctx.progress.start(rows.len() as u64, "cleaning");
        let mut out = Records::default();
        let mut q_row = Vec::new();
        let mut q_line = Vec::new();
        let mut q_col = Vec::new();
        let mut q_reason = Vec::new();
        let mut q_vals: [Vec<String>; 3] = Default::default();
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        let mut codes_by_text: HashMap<String, Vec<String>> = HashMap::new();
        let (mut exact_dups, mut padded, mut dropped_dups) = (0usize, 0usize, 0usize);
        for r in &rows {
            let v = |i: usize| r.values[i].clone().unwrap_or_default();
            let (title, duties, code_raw) = (v(0), v(1), v(2));
            let mut reject = |col: &str, reason: String| {
                q_row.push(r.row as i64);
                q_line.push(r.line.map(|l| l as i64));
                q_col.push(col.to_string());
                q_reason.push(reason);
                q_vals[0].push(title.clone());
                q_vals[1].push(duties.clone());
                q_vals[2].push(code_raw.clone());
            };
            if let Some(problem) = &r.problem {
                reject(problem.column().unwrap_or(""), problem.to_string());
                continue;
            }
            let (code, was_padded) = tax.normalize_code(&code_raw);
            if code.is_empty() {
                reject(&p.code_column, "the code is empty".into());
                continue;
            }
            if let Err(reason) = tax.check_unit(&code) {
                reject(&p.code_column, reason);
                continue;
            }
            let text = record_text(&title, &duties);
            if text.is_empty() {
                reject(
                    &p.title_column,
                    "both the job title and the duties are empty".into(),
                );
                continue;
            }
            padded += was_padded as usize;
            let key = (text.clone(), code.clone());
            let n = seen.entry(key).or_insert(0);
            *n += 1;
            if *n > 1 {
                exact_dups += 1;
                if p.drop_exact_duplicates {
                    dropped_dups += 1;
                    reject(
                        "",
                        "exact duplicate of an earlier row (drop_exact_duplicates = true)".into(),
                    );
                    continue;
                }
            }
            let codes = codes_by_text.entry(text.clone()).or_default();
            if !codes.contains(&code) {
                codes.push(code.clone());
            }
            out.row.push(r.row as i64);
            out.job_title.push(title);
            out.duties_description.push(duties);
            out.text.push(text);
            out.isco_code.push(code);
        }
        ctx.progress.inc(rows.len() as u64);
        if rows.is_empty() {
            return Err(crate::Error::Empty(format!(
                "{}: has a header but no rows; put the coded historical records in it",
                input.display()
            ))
            .into());
        }
        let mut reasons: HashMap<String, usize> = HashMap::new();
        for r in &q_reason {
            let k = r.split(';').next().unwrap_or(r).to_string();
            *reasons.entry(k).or_default() += 1;
        }
        if out.is_empty() {
            // The quarantine file is not written when the stage fails, so the reasons go in
            // the error: the most frequent ones, each with the first row it was given for.
            let mut common: Vec<(&String, &usize)> = reasons.iter().collect();
            common.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let why: Vec<String> = common
                .iter()
                .take(3)
                .map(|(reason, n)| {
                    let i = q_reason
                        .iter()
                        .position(|r| r.split(';').next() == Some(reason.as_str()))
                        .expect("a counted reason was given");
                    let column = if q_col[i].is_empty() {
                        String::new()
                    } else {
                        format!(", column `{}`", q_col[i])
                    };
                    format!(
                        "{n} × {reason} (first: {}{column})",
                        crate::records::place(q_row[i], q_line[i])
                    )
                })
                .collect();
            return Err(crate::Error::Empty(format!(
                "{}: no usable rows remain after cleaning (all {} quarantined): {}",
                input.display(),
                q_row.len(),
                why.join("; ")
            ))
            .into());
        }
        let conflicting_texts = codes_by_text.values().filter(|c| c.len() > 1).count();
        let conflicting_rows = out
            .text
            .iter()
            .filter(|t| codes_by_text[*t].len() > 1)
            .count();
        let mut examples: Vec<(&String, &Vec<String>)> =
            codes_by_text.iter().filter(|(_, c)| c.len() > 1).collect();
        examples.sort();
        examples.truncate(10);
        out.write(&ctx.output("records.parquet"))?;
        Table::new()
            .with("row", Column::Int(q_row.clone()))
            .with("line", crate::records::line_column(q_line.into_iter()))
            .with("column", Column::Str(q_col))
            .with("reason", Column::Str(q_reason))
            .with(&p.title_column, Column::Str(q_vals[0].clone()))
            .with(&p.duties_column, Column::Str(q_vals[1].clone()))
            .with(&p.code_column, Column::Str(q_vals[2].clone()))
            .write_csv_and_parquet(&ctx.output("quarantine.csv"))?;
        let metrics = json!({
            "rows_in": rows.len(),
            "kept": out.len(),
            "quarantined": q_row.len(),
            "exact_duplicates": exact_dups,
            "exact_duplicates_dropped": dropped_dups,
            "conflicting_texts": conflicting_texts,
            "conflicting_rows": conflicting_rows,
            "codes_zero_padded": padded,
            "classes": out.isco_code.iter().collect::<std::collections::BTreeSet<_>>().len(),
            "reference": tax.has_reference(),
        });
        let report = json!({
            "input": input.file_name().map(|f| f.to_string_lossy().to_string()),
            "counts": metrics,
            "quarantine_reasons": reasons,
            "conflict_examples": examples.iter().map(|(t, c)| json!({"text": t, "codes": c})).collect::<Vec<_>>(),
        });
        crate::write_json(&ctx.output("report.json"), &report)?;
        Ok(StageReport {
            summary: vec![format!(
                "{} rows in, {} kept, {} quarantined, {} exact duplicates, {} conflicting texts",
                rows.len(),
                out.len(),
                q_row.len(),
                exact_dups,
                conflicting_texts
            )],
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_column_named_for_two_fields_is_refused() {
        let resolve = |text: &str| Clean.resolve_params(&toml::from_str(text).unwrap());
        assert!(resolve("title_column = \"Job\"").is_ok());
        for (text, says) in [
            (
                "duties_column = \"job_title\"",
                "`duties_column` is `job_title`, the same as `title_column`",
            ),
            (
                "code_column = \"duties_description\"",
                "`code_column` is `duties_description`, the same as `duties_column`",
            ),
            ("code_column = \" \"", "`code_column` is empty"),
        ] {
            let e = resolve(text).unwrap_err();
            assert!(e.starts_with(says), "{e}");
        }
    }
}
