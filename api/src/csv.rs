//! `POST /predict/csv`: an uploaded table coded row by row, returned with prediction columns.
//! The file comes as a multipart form's `file` field (a browser's upload) or as the whole body
//! (`curl --data-binary @jobs.csv -H 'content-type: text/csv'`).
//!
//! A CSV upload may be separated by commas, semicolons, tabs or `|` (read from its header row,
//! as the CLI reads its inputs); the answer is comma-separated. A Parquet upload (told by its
//! magic bytes, not its name) is answered in Parquet: its own columns come back with their
//! types and nulls, the prediction columns are typed (`confidence` a float, `needs_review` a
//! boolean), and a row that cannot be coded has nulls where a prediction would be.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use artifacts::table::{Column, RowProblem, Table, TextEncoding, neutralise_formula};
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use classifier::predict::Prediction;
use classifier::text::{RecordColumns, record_text, unusable_note, why_no_text};

use crate::AppState;
use crate::coding::{check_field_lengths, record};
use crate::error::ApiError;
use crate::model::Loaded;
use crate::types::{CsvUpload, ErrorBody};

/// The media type of a Parquet file.
const PARQUET_MEDIA_TYPE: &str = "application/vnd.apache.parquet";

type St = State<Arc<AppState>>;

/// Line (1-based) of a byte offset.
fn line_of(bytes: &[u8], offset: usize) -> usize {
    let before = &bytes[..offset.min(bytes.len())];
    // A line ends at LF, CRLF or a CR alone (as the CSV reader reads them).
    before
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' || (b == b'\r' && before.get(i + 1) != Some(&b'\n')))
        .count()
        + 1
}

/// The names of the prediction columns appended to an upload with columns `header`: the
/// prediction, its `k` alternatives and a note. A name the upload already uses is given as
/// `predicted_<name>` (prefixed again while taken), so no uploaded value is overwritten.
fn added_columns(header: &[String], k: usize) -> Vec<String> {
    let mut added: Vec<String> = [
        "isco_code",
        "level",
        "title",
        "confidence",
        "grade",
        "is_fallback",
        "needs_review",
        "decided_by",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 1..=k {
        added.push(format!("alt_{i}_code"));
        added.push(format!("alt_{i}_confidence"));
    }
    added.push("note".into());
    added
        .iter()
        .map(|a| artifacts::table::added_column_name(a, |n| header.iter().any(|h| h == n)))
        .collect()
}

/// Refuses an upload with two columns of one name, or without the title column; gives the
/// positions of the title column and (when there) the duties column, as `[data]` names
/// them (`job_title` and `duties_description` unless set otherwise).
fn record_columns(
    what: &str,
    header: &[String],
    names: &RecordColumns,
) -> Result<(usize, Option<usize>), ApiError> {
    for (i, h) in header.iter().enumerate() {
        if let Some(j) = header[..i].iter().position(|o| o == h) {
            return Err(ApiError::unprocessable(format!(
                "the {what} has two columns named `{h}` (columns {} and {}); rename or remove one",
                j + 1,
                i + 1
            )));
        }
    }
    let col = |name: &str| header.iter().position(|h| h == name);
    let names = names.in_header(header);
    let [title_name, duties_name] = names.names();
    let title = col(title_name).ok_or_else(|| {
        let like = artifacts::table::column_like(header, title_name)
            .map(|l| format!(" (`{l}` looks like it)"))
            .unwrap_or_default();
        ApiError::unprocessable(format!(
            "the {what} has no `{title_name}` column (columns: {}); name the title column {title_name}{like}, or set `title_column` in [data] of the service's config to the name it has",
            header.join(", ")
        ))
    })?;
    Ok((title, col(duties_name)))
}

/// A coded upload and what its answer should say about it.
struct Coded {
    /// The upload with its prediction columns, in its format.
    bytes: Vec<u8>,
    /// Sent as the `X-Coding-Note` header: why the records were coded by title alone.
    note: Option<String>,
}

/// The note for an upload whose header (`header`) has no duties column (`duties_at` is
/// `None`): every record was coded by its job title alone.
fn no_duties_note(
    names: &RecordColumns,
    header: &[String],
    duties_at: Option<usize>,
) -> Option<String> {
    duties_at.is_none().then(|| {
        let duties = names.in_header(header).duties_column;
        format!(
            "the upload has no column `{duties}`, so every record was coded by its job title alone; name the duties column `{duties}` to have them read"
        )
    })
}

/// `text` as a header value: HTTP clients read a header's bytes as Latin-1 at best, so its
/// characters outside printable ASCII (a column heading such as `Tätigkeit`), and `%`, are
/// percent-encoded as UTF-8, the way header parameters carry other text (RFC 8187); `None`
/// only if the encoded text is still no header value, which cannot happen.
fn header_text(text: &str) -> Option<header::HeaderValue> {
    const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    let encoded = percent_encoding::utf8_percent_encode(text, ESCAPED).to_string();
    header::HeaderValue::from_str(&encoded).ok()
}

/// Whether `bytes` are a Parquet file: its magic number at both ends.
fn is_parquet(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1")
}

/// Codes an uploaded Parquet file: the same rows and columns (types and nulls kept),
/// typed prediction columns appended; `name` is the uploaded file's name.
fn code_parquet(
    st: &AppState,
    m: &Loaded,
    bytes: Bytes,
    name: &str,
    limit: usize,
) -> Result<Coded, ApiError> {
    let max = st.settings.serve.csv_max_bytes;
    let table =
        Table::read_parquet_upload(bytes, Path::new(name), limit, max).map_err(|e| match e {
            artifacts::Error::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{e} (batch_limit and csv_max_bytes in [serve] bound an upload)"),
            ),
            other => ApiError::bad_request(other.to_string()),
        })?;
    let header: Vec<String> = table
        .columns
        .iter()
        .map(|(h, _)| h.trim().to_string())
        .collect();
    let names = &st.settings.columns;
    let (title, duties) = record_columns("Parquet file", &header, names)?;
    let duties_at = duties;
    let n = table.num_rows();
    if n > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the Parquet file has {n} rows, more than {limit} (batch_limit in [serve]); split it"
            ),
        ));
    }
    let text_of = |i: usize| {
        let column = &table.columns[i].1;
        if let Some(why) = artifacts::table::not_text(column.to_arrow_array().data_type()) {
            return Err(ApiError::unprocessable(format!(
                "the Parquet column `{}` {why}",
                header[i]
            )));
        }
        if let Some(row) = artifacts::table::rows_not_utf8(&column.to_arrow_array()).first() {
            return Err(ApiError::unprocessable(format!(
                "Parquet row {row}: the column `{}` is not valid UTF-8 there; store its text as UTF-8",
                header[i]
            )));
        }
        column.texts().map_err(|e| {
            ApiError::unprocessable(format!(
                "the Parquet column `{}` cannot be read as text ({e}); store it as strings",
                header[i]
            ))
        })
    };
    let titles = text_of(title)?;
    let duties_name = duties.map_or(names.names()[1], |d| header[d].as_str());
    let duties = match duties {
        Some(d) => text_of(d)?,
        None => vec![String::new(); n],
    };
    for (i, (t, d)) in titles.iter().zip(&duties).enumerate() {
        check_field_lengths(
            st,
            &format!("Parquet row {i}: "),
            [(header[title].as_str(), t), (duties_name, d)],
        )?;
    }
    let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
    let duties: Vec<&str> = duties.iter().map(String::as_str).collect();
    let (texts, preds) = code_rows(st, m, &titles, &duties, |_| true);
    // A row without text has no prediction: nulls, flagged for review, the reason noted.
    let coded = |i: usize| (!texts[i].is_empty()).then(|| &preds[i]);
    let text = |f: &dyn Fn(&Prediction) -> Option<String>| -> Column {
        let a: ArrayRef = Arc::new(StringArray::from(
            (0..n).map(|i| coded(i).and_then(f)).collect::<Vec<_>>(),
        ));
        Column::Arrow(a)
    };
    let float = |f: &dyn Fn(&Prediction) -> Option<f64>| -> Column {
        let a: ArrayRef = Arc::new(Float64Array::from(
            (0..n).map(|i| coded(i).and_then(f)).collect::<Vec<_>>(),
        ));
        Column::Arrow(a)
    };
    let flag = |f: &dyn Fn(&Prediction) -> bool| -> Column {
        let a: ArrayRef = Arc::new(BooleanArray::from(
            (0..n).map(|i| coded(i).map(f)).collect::<Vec<_>>(),
        ));
        Column::Arrow(a)
    };
    let k = m.predictor.config.top_k;
    let mut columns = vec![
        text(&|p| Some(p.isco_code.to_string())),
        Column::Arrow(Arc::new(Int64Array::from(
            (0..n)
                .map(|i| coded(i).map(|p| p.level as i64))
                .collect::<Vec<_>>(),
        ))),
        text(&|p| Some(p.title.clone())),
        float(&|p| Some(p.confidence)),
        text(&|p| Some(p.grade.to_string())),
        flag(&|p| p.is_fallback),
        Column::Bool(
            (0..n)
                .map(|i| coded(i).is_none_or(|p| p.needs_review))
                .collect(),
        ),
        text(&|p| Some(p.decided_by.to_string())),
    ];
    for j in 0..k {
        columns.push(text(&|p| {
            p.alternatives.get(j).map(|a| a.isco_code.to_string())
        }));
        columns.push(float(&|p| p.alternatives.get(j).map(|a| a.confidence)));
    }
    columns.push(Column::Str(
        (0..n)
            .map(|i| {
                if texts[i].is_empty() {
                    unusable_note(why_no_text(titles[i], duties[i]))
                } else {
                    String::new()
                }
            })
            .collect(),
    ));
    let mut out = table;
    out.columns
        .extend(added_columns(&header, k).into_iter().zip(columns));
    let bytes = out
        .to_parquet_bytes()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Coded {
        bytes,
        note: no_duties_note(names, &header, duties_at),
    })
}

/// Codes the rows of an upload: each row's text and prediction. The predictions of rows with
/// text that are `well_formed` count in the metrics and join the review queue when doubtful.
fn code_rows(
    st: &AppState,
    m: &Loaded,
    titles: &[&str],
    duties: &[&str],
    well_formed: impl Fn(usize) -> bool,
) -> (Vec<String>, Vec<Prediction>) {
    let texts: Vec<String> = titles
        .iter()
        .zip(duties)
        .map(|(t, d)| record_text(t, d))
        .collect();
    let preds = m.predictor.predict(&texts);
    let usable: Vec<(&str, &str, &Prediction)> = (0..texts.len())
        .filter(|&i| well_formed(i) && !texts[i].is_empty())
        .map(|i| (titles[i], duties[i], &preds[i]))
        .collect();
    record(st, &usable, &m.version);
    (texts, preds)
}

/// Codes an uploaded CSV in `encoding`: the same rows and columns, prediction columns
/// appended (in UTF-8).
fn code_csv(
    st: &AppState,
    m: &Loaded,
    bytes: &[u8],
    encoding: TextEncoding,
    limit: usize,
) -> Result<Coded, ApiError> {
    let bytes = encoding.decode(bytes);
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the CSV is not valid UTF-8 (line {}, byte {}); re-save it as UTF-8, or send it with the encoding it was saved in (Content-Type: text/csv; charset=windows-1252), or set `encoding` in [data] of the service's config",
            line_of(&bytes, e.valid_up_to()),
            e.valid_up_to()
        ))
    })?;
    let text = text.trim_start_matches('\u{feff}');
    let first_line = text.split_inclusive('\n').next().unwrap_or("");
    let delimiter = artifacts::table::csv_delimiter(
        first_line.as_bytes(),
        &st.settings.columns.names(),
        &[true, false],
    );
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(artifacts::table::LineEndsAsLf::new(text.as_bytes()));
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| ApiError::bad_request(format!("the CSV header cannot be read: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let names = &st.settings.columns;
    let (title, duties) = record_columns("CSV", &header, names)?;
    let duties_at = duties;
    let mut rows: Vec<csv::StringRecord> = Vec::new();
    let mut r = csv::StringRecord::new();
    // A quote left open swallows the lines after it into one field, and so the rows on them:
    // such a file is refused, as a file given to `isco-dag predict` is.
    let mut quotes = artifacts::table::OpenQuoteCheck::default();
    for i in 0.. {
        match rdr.read_record(&mut r) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "CSV row {i}: {e}; fix the quoting"
                )));
            }
        }
        let start = r.position().map_or((0, 0), |p| (p.line(), p.byte()));
        let next_line = rdr.position().line();
        if let Some(why) = quotes.record(i, start, next_line, r.len(), header.len()) {
            return Err(ApiError::bad_request(format!("CSV row {i}: {why}")));
        }
        let r = r.clone();
        if rows.len() >= limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the CSV has more than {limit} rows (batch_limit in [serve]); split it"),
            ));
        }
        check_field_lengths(
            st,
            &format!(
                "CSV row {i} (line {}): ",
                r.position().map_or(0, |p| p.line())
            ),
            [
                (header[title].as_str(), r.get(title).unwrap_or("")),
                (
                    duties.map_or(names.names()[1], |d| header[d].as_str()),
                    duties.and_then(|d| r.get(d)).unwrap_or(""),
                ),
            ],
        )?;
        rows.push(r);
    }
    if let Ok(Some((i, why))) = quotes.finish(|| Ok((text.as_bytes(), delimiter))) {
        return Err(ApiError::bad_request(format!("CSV row {i}: {why}")));
    }
    let titles: Vec<&str> = rows.iter().map(|r| r.get(title).unwrap_or("")).collect();
    let duties: Vec<&str> = rows
        .iter()
        .map(|r| duties.and_then(|d| r.get(d)).unwrap_or(""))
        .collect();
    let (texts, preds) = code_rows(st, m, &titles, &duties, |i| rows[i].len() == header.len());
    let k = m.predictor.config.top_k;
    let added = added_columns(&header, k);
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    w.write_record(
        header
            .iter()
            .map(|h| neutralise_formula(h).into_owned())
            .chain(added.iter().cloned()),
    )
    .map_err(io)?;
    for (row, ((r, p), t)) in rows.iter().zip(&preds).zip(&texts).enumerate() {
        let mut cells: Vec<String> = (0..header.len())
            .map(|i| neutralise_formula(r.get(i).unwrap_or("")).into_owned())
            .collect();
        let note = if r.len() != header.len() {
            unusable_note(RowProblem::FieldCount {
                found: r.len(),
                expected: header.len(),
            })
        } else if t.is_empty() {
            unusable_note(why_no_text(titles[row], duties[row]))
        } else {
            String::new()
        };
        if note.is_empty() {
            cells.push(p.isco_code.to_string());
            cells.push(p.level.to_string());
            cells.push(p.title.clone());
            cells.push(format!("{:.6}", p.confidence));
            cells.push(p.grade.to_string());
            cells.push(p.is_fallback.to_string());
            cells.push(p.needs_review.to_string());
            cells.push(p.decided_by.to_string());
            for i in 0..k {
                let a = p.alternatives.get(i);
                cells.push(a.map(|a| a.isco_code.to_string()).unwrap_or_default());
                cells.push(
                    a.map(|a| format!("{:.6}", a.confidence))
                        .unwrap_or_default(),
                );
            }
        } else {
            // Unusable: no prediction, flagged for review, the reason in `note`.
            cells.extend(std::iter::repeat_n(String::new(), 6));
            cells.push("true".into());
            cells.extend(std::iter::repeat_n(String::new(), 1 + 2 * k));
        }
        cells.push(note);
        w.write_record(&cells).map_err(io)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Coded {
        bytes,
        note: no_duties_note(names, &header, duties_at),
    })
}

/// An upload larger than `csv_max_bytes`.
fn too_big(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the upload is larger than {max} bytes (csv_max_bytes in [serve]); split the file"),
    )
}

/// A body that could not be taken in: too large (413, with the setting to change) or
/// otherwise unreadable (`what`, then the reason).
fn not_taken(max: usize, status: StatusCode, what: &str, reason: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        too_big(max)
    } else {
        ApiError::new(status, format!("{what}: {reason}"))
    }
}

/// The `file` field of a multipart form (or its first field with a file name), its name,
/// and the encoding the field's own Content-Type names, if it names one.
async fn uploaded_file(
    mut multipart: Multipart,
    max: usize,
) -> Result<(Bytes, String, Option<TextEncoding>), ApiError> {
    loop {
        let field = multipart.next_field().await.map_err(|e| {
            not_taken(
                max,
                e.status(),
                "the multipart body is malformed",
                e.body_text(),
            )
        })?;
        let Some(field) = field else {
            return Err(ApiError::unprocessable(
                "the form has no `file` field; upload the CSV or Parquet file as `file`",
            ));
        };
        if field.name() == Some("file") || field.file_name().is_some() {
            let name = field.file_name().unwrap_or("the upload").to_string();
            let encoding = charset(field.content_type().unwrap_or_default())?;
            let bytes = field.bytes().await.map_err(|e| {
                not_taken(
                    max,
                    e.status(),
                    "the upload could not be read",
                    e.body_text(),
                )
            })?;
            return Ok((bytes, name, encoding));
        }
    }
}

/// The `charset` parameter of a Content-Type header, if it has one.
fn charset(content_type: &str) -> Result<Option<TextEncoding>, ApiError> {
    let Some(value) = content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"'))
    }) else {
        return Ok(None);
    };
    value
        .parse()
        .map(Some)
        .map_err(|e: String| ApiError::bad_request(format!("Content-Type charset: {e}")))
}

/// Code an uploaded CSV or Parquet file — a multipart form's `file` field, or the whole body
/// sent as `text/csv` or `application/vnd.apache.parquet` — and return it, in the same format,
/// with prediction columns appended. A CSV is read in the `charset` its Content-Type (the
/// body's, or the form field's) names, else in the service's `[data] encoding` (UTF-8 unless
/// set); the answer is UTF-8.
#[utoipa::path(post, path = "/predict/csv",
    request_body(content((CsvUpload = "multipart/form-data"), (String = "text/csv"), (Vec<u8> = "application/vnd.apache.parquet"))),
    responses((status = 200, content((String = "text/csv"), (Vec<u8> = "application/vnd.apache.parquet")), headers(("X-Model-Version" = String, description = "the model that coded the file"), ("X-Coding-Note" = String, description = "present when the upload has no duties column: every record was coded by its job title alone (characters outside printable ASCII, and `%`, percent-encoded as UTF-8)"))), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn predict_csv(
    State(st): St,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let max = st.settings.serve.csv_max_bytes;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let media_type = content_type
        .split(';')
        .next()
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let (data, name, given) = match media_type.as_str() {
        "multipart/form-data" => {
            let multipart = Multipart::from_request(req, &()).await.map_err(|r| {
                ApiError::new(
                    r.status(),
                    format!(
                        "send the file as multipart/form-data with a `file` field: {}",
                        r.body_text()
                    ),
                )
            })?;
            uploaded_file(multipart, max).await?
        }
        "text/csv" | "application/vnd.apache.parquet" | "application/octet-stream" => {
            let bytes = Bytes::from_request(req, &()).await.map_err(|r| {
                not_taken(
                    max,
                    r.status(),
                    "the upload could not be read",
                    r.body_text(),
                )
            })?;
            (bytes, "the upload".to_string(), charset(&content_type)?)
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "the body is `{other}`; send the file as multipart/form-data with a `file` field, or as the whole body with Content-Type text/csv or application/vnd.apache.parquet"
                ),
            ));
        }
    };
    if data.len() > max {
        return Err(too_big(max));
    }
    let encoding = given.unwrap_or(st.settings.columns.encoding);
    let m = st.loaded()?;
    let limit = st.settings.serve.batch_limit;
    let (m2, st2) = (m.clone(), st.clone());
    let parquet = is_parquet(&data);
    let out = tokio::task::spawn_blocking(move || {
        if parquet {
            code_parquet(&st2, &m2, data, &name, limit)
        } else {
            code_csv(&st2, &m2, &data, encoding, limit)
        }
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let media_type = if parquet {
        PARQUET_MEDIA_TYPE
    } else {
        "text/csv; charset=utf-8"
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, media_type.to_string()),
            (
                header::HeaderName::from_static("x-model-version"),
                m.version.to_string(),
            ),
        ],
        out.bytes,
    )
        .into_response();
    if let Some(v) = out.note.and_then(|n| header_text(&n)) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("x-coding-note"), v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_lf_crlf_or_a_cr_alone() {
        for end in ["\n", "\r\n", "\r"] {
            let text = ["job_title", "cook", "K\u{f6}chin"].join(end);
            let at = text.find('\u{f6}').unwrap();
            assert_eq!(line_of(text.as_bytes(), at), 3, "{end:?}");
            assert_eq!(line_of(text.as_bytes(), 0), 1, "{end:?}");
        }
    }

    #[test]
    fn a_header_note_keeps_ascii_and_percent_encodes_the_rest() {
        let plain = "the upload has no column `duties`, so …";
        let v = header_text(plain).unwrap();
        assert_eq!(
            v.to_str().unwrap(),
            "the upload has no column `duties`, so %E2%80%A6"
        );
        let v = header_text("no column `Tätigkeit\t100%`").unwrap();
        assert_eq!(v.to_str().unwrap(), "no column `T%C3%A4tigkeit%09100%25`");
        assert_eq!(
            percent_encoding::percent_decode_str(v.to_str().unwrap())
                .decode_utf8()
                .unwrap(),
            "no column `Tätigkeit\t100%`"
        );
    }
}
