//! `POST /predict/csv`: an uploaded CSV coded row by row, returned with prediction columns.
//! The upload may be separated by commas, semicolons, tabs or `|` (read from its header row,
//! as the CLI reads its inputs); the answer is comma-separated.

use std::sync::Arc;

use artifacts::table::neutralise_formula;
use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use classifier::predict::Prediction;
use classifier::text::record_text;

use crate::AppState;
use crate::coding::{check_field_lengths, record};
use crate::error::ApiError;
use crate::model::Loaded;
use crate::types::{CsvUpload, ErrorBody};

type St = State<Arc<AppState>>;

/// Line (1-based) of a byte offset.
fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Codes an uploaded CSV: the same rows and columns, prediction columns appended.
fn code_csv(st: &AppState, m: &Loaded, bytes: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the CSV is not valid UTF-8 (line {}, byte {}); re-save it as UTF-8",
            line_of(bytes, e.valid_up_to()),
            e.valid_up_to()
        ))
    })?;
    let text = text.trim_start_matches('\u{feff}');
    let first_line = text.split_inclusive('\n').next().unwrap_or("");
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .delimiter(artifacts::table::csv_delimiter(
            first_line.as_bytes(),
            &["job_title", "duties_description"],
            &[true, false],
        ))
        .from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| ApiError::bad_request(format!("the CSV header cannot be read: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    for (i, h) in header.iter().enumerate() {
        if let Some(j) = header[..i].iter().position(|o| o == h) {
            return Err(ApiError::unprocessable(format!(
                "the CSV has two columns named `{h}` (columns {} and {}); rename or remove one",
                j + 1,
                i + 1
            )));
        }
    }
    let col = |name: &str| header.iter().position(|h| h == name);
    let title = col("job_title").ok_or_else(|| {
        ApiError::unprocessable(format!(
            "the CSV has no `job_title` column (columns: {}); name the title column job_title",
            header.join(", ")
        ))
    })?;
    let duties = col("duties_description");
    let mut rows = Vec::new();
    for (i, r) in rdr.records().enumerate() {
        let r =
            r.map_err(|e| ApiError::bad_request(format!("CSV row {i}: {e}; fix the quoting")))?;
        if rows.len() >= limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the CSV has more than {limit} rows (batch_limit in [serve]); split it"),
            ));
        }
        check_field_lengths(
            st,
            &format!("CSV row {i}: "),
            [
                ("job_title", r.get(title).unwrap_or("")),
                (
                    "duties_description",
                    duties.and_then(|d| r.get(d)).unwrap_or(""),
                ),
            ],
        )?;
        rows.push(r);
    }
    let texts: Vec<String> = rows
        .iter()
        .map(|r| {
            record_text(
                r.get(title).unwrap_or(""),
                duties.and_then(|d| r.get(d)).unwrap_or(""),
            )
        })
        .collect();
    let preds = m.predictor.predict(&texts);
    let usable: Vec<(&str, &str, &Prediction)> = rows
        .iter()
        .zip(&preds)
        .zip(&texts)
        .filter(|((r, _), t)| r.len() == header.len() && !t.is_empty())
        .map(|((r, p), _)| {
            (
                r.get(title).unwrap_or(""),
                duties.and_then(|d| r.get(d)).unwrap_or(""),
                p,
            )
        })
        .collect();
    record(st, &usable, &m.version);
    let k = m.predictor.config.top_k;
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
    for a in added.iter_mut() {
        if header.contains(a) {
            *a = format!("predicted_{a}");
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    w.write_record(
        header
            .iter()
            .map(|h| neutralise_formula(h).into_owned())
            .chain(added.iter().cloned()),
    )
    .map_err(io)?;
    for ((r, p), t) in rows.iter().zip(&preds).zip(&texts) {
        let mut cells: Vec<String> = (0..header.len())
            .map(|i| neutralise_formula(r.get(i).unwrap_or("")).into_owned())
            .collect();
        let note = if r.len() != header.len() {
            format!(
                "row has {} fields but the header has {}; check its quoting",
                r.len(),
                header.len()
            )
        } else if t.is_empty() {
            "the job title and duties are empty".to_string()
        } else {
            String::new()
        };
        if note.is_empty() {
            cells.push(p.isco_code.to_string());
            cells.push(p.level.to_string());
            cells.push(p.title.clone());
            cells.push(format!("{:.4}", p.confidence));
            cells.push(p.grade.to_string());
            cells.push(p.is_fallback.to_string());
            cells.push(p.needs_review.to_string());
            cells.push(p.decided_by.to_string());
            for i in 0..k {
                let a = p.alternatives.get(i);
                cells.push(a.map(|a| a.isco_code.to_string()).unwrap_or_default());
                cells.push(
                    a.map(|a| format!("{:.4}", a.confidence))
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
    w.into_inner()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Code an uploaded CSV (multipart field `file`); returns the CSV with prediction columns.
#[utoipa::path(post, path = "/predict/csv", request_body(content = CsvUpload, content_type = "multipart/form-data"),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn predict_csv(
    State(st): St,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut multipart = multipart.map_err(|r| {
        ApiError::new(
            r.status(),
            format!(
                "send the CSV as multipart/form-data with a `file` field: {}",
                r.body_text()
            ),
        )
    })?;
    let max = st.settings.serve.csv_max_bytes;
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the upload is larger than {max} bytes (csv_max_bytes in [serve]); split the file"
            ),
        )
    };
    let mut data: Option<Bytes> = None;
    loop {
        let field = multipart.next_field().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_big()
            } else {
                ApiError::new(
                    e.status(),
                    format!("the multipart body is malformed: {}", e.body_text()),
                )
            }
        })?;
        let Some(field) = field else { break };
        if field.name() == Some("file") || field.file_name().is_some() {
            let bytes = field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_big()
                } else {
                    ApiError::new(
                        e.status(),
                        format!("the upload could not be read: {}", e.body_text()),
                    )
                }
            })?;
            data = Some(bytes);
            break;
        }
    }
    let data = data.ok_or_else(|| {
        ApiError::unprocessable("the form has no `file` field; upload the CSV as `file`")
    })?;
    if data.len() > max {
        return Err(too_big());
    }
    let m = st.loaded()?;
    let limit = st.settings.serve.batch_limit;
    let (m2, st2) = (m.clone(), st.clone());
    let out = tokio::task::spawn_blocking(move || code_csv(&st2, &m2, &data, limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::HeaderName::from_static("x-model-version"),
                m.version.to_string(),
            ),
        ],
        out,
    )
        .into_response())
}
