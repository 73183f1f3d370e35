//! `predict`: code new records with the model; write predictions (Parquet + CSV) and the
//! review queue of low-confidence rows (active learning). [`code_file`] is shared with the
//! `isco-dag predict` command.

use std::path::Path;

use artifacts::table::{Column, Table};
use classifier::predict::{InferenceConfig, PREDICT_CHUNK, Predictor, Step};
use classifier::text::{RecordColumns, record_text};
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};
use serde_json::json;

use crate::columns::{self, column_hint, columns_of};
use crate::error::Error;
use crate::records::{RawRow, read_rows_keeping_all};

/// The `predict` stage kind.
pub struct Predict;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "model",
        required: true,
        many: false,
        help: "model artifact (train.model)",
    },
    InputDecl {
        name: "records",
        required: true,
        many: false,
        help: "records to code, CSV or Parquet with a job title column and optionally a duties column ([data] title_column, duties_column)",
    },
];

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl {
        name: "predictions",
        file: "predictions.parquet",
        dir: false,
    },
    OutputDecl {
        name: "predictions_csv",
        file: "predictions.csv",
        dir: false,
    },
    OutputDecl {
        name: "review",
        file: "to_review.csv",
        dir: false,
    },
    OutputDecl {
        name: "review_parquet",
        file: "to_review.parquet",
        dir: false,
    },
];

/// Which of the columns `predict` reads ([`RecordColumns::names`]) must be there: the
/// title; a record may come without duties.
pub const REQUIRED: [bool; 2] = [true, false];

/// Coded records: the predictions table and the review-queue table.
pub struct Coded {
    /// Every input row with its prediction.
    pub predictions: Table,
    /// The positions in `predictions` of the rows that need review ([`Coded::review`]).
    pub review_rows: Vec<usize>,
    /// Counts.
    pub rows: usize,
    /// Rows sent to review.
    pub to_review: usize,
    /// Rows coded at a coarser level.
    pub fallbacks: usize,
    /// Rows that could not be read.
    pub unusable: usize,
    /// Rows each step of the model decided (`ngram`, `ensemble`, …).
    pub steps: std::collections::BTreeMap<Step, usize>,
    /// Whether the input has the duties column; without one every record is coded by its
    /// job title alone, which a caller should say (a duties column under another name is
    /// otherwise passed through unread).
    pub duties_column: bool,
    /// The columns the records were read by.
    pub columns: RecordColumns,
}

/// What to tell the user of an input without the duties column `duties`, naming the input
/// as `shown`; `with_set`: the caller also takes `-S data.duties_column=NAME`.
pub fn no_duties_note(shown: &str, duties: &str, with_set: bool) -> String {
    let set = if with_set {
        " (or give `-S data.duties_column=NAME`)"
    } else {
        ""
    };
    format!(
        "{shown}: has no column `{duties}`, so every record was coded by its job title alone; if the file has the duties under another name, set `duties_column` in [data] to it{set}"
    )
}

/// Codes a CSV/Parquet file of records (a title column, optionally a duties column, named
/// by `columns`); the coded file names them `job_title` and `duties_description`. Every
/// other column of the input (IDs, the coder's own code…) is kept, in its place after the
/// duties; a prediction column whose name the input already uses is written as
/// `predicted_<name>`, so no input value is ever overwritten.
/// With `shard`, only that shard's share of the rows is coded (see [`crate::shard`]).
pub fn code_file(
    pred: &Predictor,
    input: &Path,
    columns: &RecordColumns,
    shard: Option<crate::shard::Shard>,
) -> Result<Coded, Error> {
    let read_by = columns_of(input, columns);
    let names = read_by.names();
    let keep = |row| shard.is_none_or(|s| s.takes(row));
    let encoding = read_by.encoding;
    let (rest, rows) = read_rows_keeping_all(input, &names, &REQUIRED, encoding, &keep)?;
    let duties_column = crate::records::header_of(input, &names, &REQUIRED, encoding)?
        .iter()
        .any(|h| h.trim() == names[1]);
    let mut kept: Vec<Vec<String>> = vec![Vec::with_capacity(rows.len()); rest.len()];
    // A Parquet input's own columns go back with their types and nulls, not as text: the
    // rows read are those `rows` holds, in their order.
    let typed: Option<Vec<Column>> = if crate::records::is_parquet(input) && !rest.is_empty() {
        let held = Table::read_parquet_rows_as_arrow(input, &keep)?;
        debug_assert_eq!(held.num_rows(), rows.len());
        Some(
            rest.iter()
                .map(|name| {
                    let (_, col) = held
                        .columns
                        .iter()
                        .find(|(n, _)| n.trim() == name)
                        .expect("a column the file was just read with");
                    col.clone()
                })
                .collect(),
        )
    } else {
        None
    };
    use rayon::prelude::*;
    let k = pred.config.top_k;
    let n = rows.len();
    let mut fallbacks = 0;
    // One pass that moves every string into its column (150k rows: no second copy).
    let mut row_no = Vec::with_capacity(n);
    let mut job_title = Vec::with_capacity(n);
    let mut duties = Vec::with_capacity(n);
    let mut note = Vec::with_capacity(n);
    let mut code = Vec::with_capacity(n);
    let mut needs = Vec::with_capacity(n);
    let mut level = Vec::with_capacity(n);
    let mut title = Vec::with_capacity(n);
    let mut confidence = Vec::with_capacity(n);
    let mut grade = Vec::with_capacity(n);
    let mut fallback = Vec::with_capacity(n);
    let mut decided_by = Vec::with_capacity(n);
    let mut steps = std::collections::BTreeMap::new();
    let mut alt_code = vec![Vec::with_capacity(n); k];
    let mut alt_conf = vec![Vec::with_capacity(n); k];
    let mut unusable = 0;
    // Whether a row was coded: an unusable row gets no prediction, only its reason.
    let mut coded = Vec::with_capacity(n);
    // The texts of the rows that need review, in row order, for their similar past records.
    let mut review_texts = Vec::new();
    // The rows are coded a chunk at a time, the predictor's own chunk, so that only two
    // chunks' texts and predictions (each with its alternatives) are held beside the columns,
    // not the whole file's; the codes are those of one call over every row. The next chunk
    // is coded while the current one is moved into the columns.
    let code_chunk = |chunk: &[RawRow]| {
        let texts: Vec<String> = chunk
            .par_iter()
            .map(|r| {
                record_text(
                    r.values[0].as_deref().unwrap_or(""),
                    r.values[1].as_deref().unwrap_or(""),
                )
            })
            .collect();
        let preds = pred.predict(&texts);
        (texts, preds)
    };
    let mut rows = rows.into_iter();
    let mut chunk: Vec<RawRow> = rows.by_ref().take(PREDICT_CHUNK).collect();
    let mut chunk_coded = code_chunk(&chunk);
    while !chunk.is_empty() {
        let next: Vec<RawRow> = rows.by_ref().take(PREDICT_CHUNK).collect();
        let (coding_next, ()) = rayon::join(
            || code_chunk(&next),
            || {
                let (texts, preds) = chunk_coded;
                for (r, (p, text)) in chunk.into_iter().zip(preds.into_iter().zip(texts)) {
                    let problem = match (&r.problem, text.is_empty()) {
                        (Some(problem), _) => Some(classifier::text::unusable_note(problem)),
                        (None, true) => Some(classifier::text::unusable_note(
                            classifier::text::why_no_text(
                                r.values[0].as_deref().unwrap_or(""),
                                r.values[1].as_deref().unwrap_or(""),
                            ),
                        )),
                        _ => None,
                    };
                    let ok = problem.is_none();
                    unusable += !ok as usize;
                    coded.push(ok);
                    let needs_review = !ok || p.needs_review;
                    needs.push(needs_review);
                    if needs_review {
                        review_texts.push(text);
                    }
                    note.push(problem.unwrap_or_default());
                    row_no.push(r.row as i64);
                    let mut values = r.values.into_iter();
                    job_title.push(values.next().flatten().unwrap_or_default());
                    duties.push(values.next().flatten().unwrap_or_default());
                    for (col, v) in kept.iter_mut().zip(values) {
                        col.push(v.unwrap_or_default());
                    }
                    if ok {
                        *steps.entry(p.decided_by).or_insert(0) += 1;
                        fallbacks += p.is_fallback as usize;
                    }
                    let text_if = |t: String| if ok { t } else { String::new() };
                    code.push(text_if(p.isco_code.into()));
                    level.push(p.level as i64);
                    title.push(text_if(p.title));
                    confidence.push(p.confidence);
                    grade.push(text_if(p.grade.to_string()));
                    fallback.push(p.is_fallback);
                    decided_by.push(text_if(p.decided_by.to_string()));
                    let mut alts = p.alternatives.into_iter();
                    for i in 0..k {
                        let a = alts.next().filter(|_| ok);
                        alt_conf[i].push(a.as_ref().map(|a| a.confidence).unwrap_or(0.0));
                        alt_code[i].push(a.map(|a| String::from(a.isco_code)).unwrap_or_default());
                    }
                }
            },
        );
        chunk = next;
        chunk_coded = coding_next;
    }
    // Numbers and flags of a row not coded are nulls (empty cells in CSV), not the model's
    // answer to an empty or broken text.
    let nullable = |c: Column| {
        if unusable == 0 {
            c
        } else {
            Column::Nullable(Box::new(c), coded.clone())
        }
    };
    let mut t = Table::new()
        .with("row", Column::Int(row_no))
        .with("job_title", Column::Str(job_title))
        .with("duties_description", Column::Str(duties))
        .with("isco_code", Column::Str(code))
        .with("level", nullable(Column::Int(level)))
        .with("title", Column::Str(title))
        .with("confidence", nullable(Column::Float(confidence)))
        .with("grade", Column::Str(grade))
        .with("is_fallback", nullable(Column::Bool(fallback)))
        .with("needs_review", Column::Bool(needs.clone()))
        .with("decided_by", Column::Str(decided_by));
    for (i, (c, p)) in alt_code.into_iter().zip(alt_conf).enumerate() {
        t = t.with(&format!("alt_{}_code", i + 1), Column::Str(c)).with(
            &format!("alt_{}_confidence", i + 1),
            nullable(Column::Float(p)),
        );
    }
    t = t.with("note", Column::Str(note));
    // Similar past records for the rows a coder will look at (ensemble models).
    let review_rows: Vec<usize> = (0..n).filter(|&i| needs[i]).collect();
    if pred.config.similar > 0
        && let Some(similar) = pred.similar(&review_texts, pred.config.similar)
    {
        let mut col = vec![String::new(); n];
        let similar = similar.map_err(|e| Error::Input {
            path: input.to_path_buf(),
            message: format!("similar past records could not be found: {e}"),
        })?;
        for (&i, near) in review_rows.iter().zip(similar) {
            if coded[i] {
                col[i] = near
                    .iter()
                    .map(|s| {
                        format!(
                            "{} -> {} ({:.2}, {})",
                            s.text, s.isco_code, s.similarity, s.source
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
            }
        }
        t = t.with("similar_records", Column::Str(col));
    }
    // The input's own columns go after the duties; ours give way where names collide.
    let mut columns: Vec<(String, Column)> = Vec::with_capacity(t.columns.len() + rest.len());
    let give_way = |(name, col): (String, Column)| {
        (
            artifacts::table::added_column_name(&name, |n| rest.iter().any(|r| r == n)),
            col,
        )
    };
    let mut ours = t.columns.into_iter();
    columns.extend(ours.by_ref().take(3).map(give_way));
    match typed {
        Some(typed) => columns.extend(rest.iter().cloned().zip(typed)),
        None => columns.extend(rest.iter().cloned().zip(kept.into_iter().map(Column::Str))),
    }
    columns.extend(ours.map(give_way));
    Ok(Coded {
        steps,
        duties_column,
        columns: read_by.clone(),
        rows: n,
        to_review: review_rows.len(),
        fallbacks,
        unusable,
        predictions: Table { columns },
        review_rows,
    })
}

impl Coded {
    /// The review queue: the rows that need review, with every column of `predictions`.
    /// Made on demand, since it can be nearly every row.
    pub fn review(&self) -> Table {
        Table {
            columns: self
                .predictions
                .columns
                .iter()
                .map(|(n, c)| (n.clone(), c.take(&self.review_rows)))
                .collect(),
        }
    }
}

/// `12,000 by ngram, 3,000 by ensemble`: how many rows each step decided.
pub fn steps_text(steps: &std::collections::BTreeMap<Step, usize>) -> String {
    steps
        .iter()
        .map(|(s, n)| format!("{n} by {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The params of a stage that codes with a model: the `[inference]` keys, checked, and the
/// column names `C` of the files it reads, kept only where they are not the standard ones.
pub fn resolve_inference_params<C: columns::ColumnNames>(
    raw: &toml::Table,
) -> Result<serde_json::Value, String> {
    let (inference, names): (toml::Table, toml::Table) =
        columns::split_params::<C, _, _>(raw.clone());
    let v = runner::stage::typed_params::<InferenceConfig>(&inference)?;
    serde_json::from_value::<InferenceConfig>(v.clone())
        .map_err(|e| e.to_string())?
        .validate()?;
    let v = columns::resolve::<C>(v, &names)?;
    Ok(crate::embeddings::without_default_precision(v))
}

impl Stage for Predict {
    runner::stage_metadata!("predict", version "9", "code new records; write predictions and the review queue", INPUTS, OUTPUTS, names columns::param_names::<RecordColumns>(runner::stage::param_names_of::<InferenceConfig>()));
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        resolve_inference_params::<RecordColumns>(raw)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let (cfg, columns): (InferenceConfig, RecordColumns) = columns::read_params(ctx.params)?;
        let pred = Predictor::load(ctx.input("model")?, cfg)?;
        crate::embeddings::attach_shared_cache(ctx, &pred);
        let records = ctx.input("records")?;
        let c = code_file(&pred, records, &columns, None)
            .map_err(|e| e.with_column_hint(|c| column_hint(c, &columns, false)))?;
        c.predictions
            .write_parquet(&ctx.output("predictions.parquet"))?;
        c.predictions.write_csv(&ctx.output("predictions.csv"))?;
        c.review()
            .write_csv_and_parquet(&ctx.output("to_review.csv"))?;
        let mut metrics = json!({"rows": c.rows, "to_review": c.to_review, "fallbacks": c.fallbacks, "unusable": c.unusable, "decided_by": c.steps});
        if let Some(n) = crate::embeddings::flush_shared_cache(&pred) {
            metrics["embeddings_computed"] = json!(n);
        }
        let mut summary = vec![format!(
            "{} coded ({}), {} coded at a coarser level, {} queued for review ({} unusable)",
            crate::counted(c.rows, "row", "rows"),
            steps_text(&c.steps),
            c.fallbacks,
            c.to_review,
            c.unusable
        )];
        if !c.duties_column {
            let records = records.strip_prefix(".").unwrap_or(records);
            summary.push(no_duties_note(
                &records.display().to_string(),
                c.columns.names()[1],
                false,
            ));
        }
        Ok(StageReport { summary, metrics })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<serde_json::Value, String> {
        Predict.resolve_params(&toml::from_str(text).unwrap())
    }

    #[test]
    fn column_names_join_the_params_only_when_they_are_not_the_standard_ones() {
        let plain = resolve("top_k = 3").unwrap();
        let named = resolve("top_k = 3\ntitle_column = \"job_title\"").unwrap();
        assert_eq!(plain, named);
        assert!(plain.get("title_column").is_none(), "{plain}");
        let other = resolve("top_k = 3\ntitle_column = \"Job Title\"").unwrap();
        assert_eq!(other["title_column"], "Job Title");
        assert_eq!(other["duties_column"], "duties_description");
        let (inference, names): (serde_json::Map<_, _>, serde_json::Map<_, _>) =
            columns::split_params::<RecordColumns, _, _>(other.as_object().unwrap().clone());
        assert_eq!(inference, plain.as_object().unwrap().clone());
        assert_eq!(names.len(), 2);
        assert!(
            resolve("duties_column = \"job_title\"")
                .unwrap_err()
                .contains("the same as `title_column`")
        );
        assert!(
            resolve("title_column = 3")
                .unwrap_err()
                .starts_with("`title_column`")
        );
        assert!(Predict.param_names().contains(&"duties_column".to_string()));
    }
}
