//! Handlers, request/response types and the OpenAPI document.

use std::sync::Arc;
use std::time::Instant;

use artifacts::table::neutralise_formula;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use classifier::predict::Prediction;
use classifier::text::record_text;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use crate::AppState;
use crate::error::ApiError;
use crate::model::Loaded;
use crate::review;

type St = State<Arc<AppState>>;

/// One record to code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Job title as written by the respondent.
    #[schema(example = "senior software engineer")]
    pub job_title: String,
    /// Main duties (optional but it helps).
    #[serde(default)]
    #[schema(example = "designing and writing computer programs")]
    pub duties_description: String,
    /// Add the words that drove the decision (`explanation`).
    #[serde(default)]
    pub explain: bool,
    /// Add this many similar past records (`similar`, at most 50); needs a model with a
    /// retrieval index (`ensemble`).
    #[serde(default)]
    pub similar: usize,
    /// Caller's id for the record, echoed back.
    #[serde(default)]
    pub id: Option<String>,
}

/// One record of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRecord {
    /// Job title.
    pub job_title: String,
    /// Duties (optional).
    #[serde(default)]
    pub duties_description: String,
    /// Caller's id, echoed back.
    #[serde(default)]
    pub id: Option<String>,
}

/// An alternative code.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlternativeOut {
    /// 4-digit ISCO-08 code.
    pub isco_code: String,
    /// Its title.
    pub title: String,
    /// Calibrated probability.
    pub confidence: f64,
}

impl From<classifier::predict::Alternative> for AlternativeOut {
    fn from(a: classifier::predict::Alternative) -> Self {
        AlternativeOut {
            isco_code: a.isco_code,
            title: a.title,
            confidence: a.confidence,
        }
    }
}

/// A past record (or ISCO reference title) whose title is near the query's.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimilarOut {
    /// Its normalised title.
    pub text: String,
    /// The code it was given (for a past record, the code its title was most often given).
    pub isco_code: String,
    /// Title of that code.
    pub title: String,
    /// `record` (a past record) or `reference` (the ISCO reference).
    pub source: String,
    /// Cosine similarity of the two titles.
    pub similarity: f64,
}

impl From<classifier::predict::Similar> for SimilarOut {
    fn from(s: classifier::predict::Similar) -> Self {
        SimilarOut {
            text: s.text,
            isco_code: s.isco_code,
            title: s.title,
            source: s.source,
            similarity: s.similarity,
        }
    }
}

/// A word's contribution to the chosen code's score.
#[derive(Debug, Serialize, ToSchema)]
pub struct WordOut {
    /// Word of the normalised text.
    pub word: String,
    /// Summed contribution of the n-grams containing it (positive: for the code).
    pub contribution: f64,
}

/// Why the model chose a code.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplanationOut {
    /// The code explained (the top 4-digit code).
    pub isco_code: String,
    /// Per-word contributions, in text order.
    pub words: Vec<WordOut>,
    /// Whether the contributions are exact (linear model) or an approximation.
    pub exact: bool,
    /// Whether only the most influential words are listed (long texts).
    pub truncated: bool,
}

/// A coded record.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPrediction {
    /// The caller's id, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// ISCO-08 code at `level` digits (4, or coarser after fallback).
    #[schema(example = "2512")]
    pub isco_code: String,
    /// Digits of the code.
    pub level: usize,
    /// Title of the code.
    pub title: String,
    /// Calibrated probability that the code is right.
    pub confidence: f64,
    /// very_high, high, medium, low or very_low.
    pub grade: String,
    /// Whether the code is coarser than 4 digits because no unit group was confident enough.
    pub is_fallback: bool,
    /// Whether a coder should look at it.
    pub needs_review: bool,
    /// Top-k 4-digit codes.
    pub alternatives: Vec<AlternativeOut>,
    /// Store object id of the model that coded it.
    pub model_version: String,
    /// Word contributions, when `explain` was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<ExplanationOut>,
    /// Similar past records, best first, when `similar` was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similar: Option<Vec<SimilarOut>>,
}

/// The answer to a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// Store object id of the model.
    pub model_version: String,
    /// One prediction per record, in order.
    pub predictions: Vec<JobPrediction>,
}

/// An error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong and what to do.
    pub error: String,
    /// HTTP status.
    pub status: u16,
}

/// The CSV upload form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CsvUpload {
    /// CSV with `job_title` and optionally `duties_description` (other columns are kept).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Parses a JSON body read as bytes, so that every failure is a JSON 4xx. The body must be
/// declared `application/json`: a browser sends other types (`text/plain`, forms) from any
/// web page without asking, so accepting them would let a page the user visits call the API.
pub(crate) fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the body must be JSON sent with `Content-Type: application/json` (got `{content_type}`)"
            ),
        ));
    }
    let body = body.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                format!("the body is larger than {limit} bytes (json_max_bytes in [serve]); send fewer records per request"),
            )
        } else if r.body_text().contains(crate::listener::BODY_TIMEOUT) {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, r.body_text())
        } else {
            ApiError::new(status, format!("the body could not be read: {}", r.body_text()))
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::unprocessable(format!(
                "the JSON does not match the expected fields: {e}; see /docs"
            )),
            _ => ApiError::bad_request(format!("the body is not valid JSON: {e}")),
        }
    })
}

impl AppState {
    pub(crate) fn loaded(&self) -> Result<Arc<Loaded>, ApiError> {
        self.model.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no model is promoted to `{}` yet; run `isco-dag run pipelines/full.toml` (the server picks it up without a restart)",
                    self.settings.serve.model_ref
                ),
            )
        })
    }
}

fn to_out(p: Prediction, version: &str, id: Option<String>) -> JobPrediction {
    JobPrediction {
        id,
        isco_code: p.isco_code,
        level: p.level,
        title: p.title,
        confidence: p.confidence,
        grade: p.grade,
        is_fallback: p.is_fallback,
        needs_review: p.needs_review,
        alternatives: p.alternatives.into_iter().map(Into::into).collect(),
        model_version: version.to_string(),
        explanation: None,
        similar: None,
    }
}

/// Most words an explanation lists: the most influential ones, still in text order.
pub(crate) const MAX_EXPLAIN_WORDS: usize = 100;

/// The explanation of `code` for `text`, as the API shows it.
pub(crate) fn explanation(m: &Loaded, text: &str, code: &str) -> Option<ExplanationOut> {
    m.predictor.explain(text, code).map(|e| {
        let mut words: Vec<(usize, String, f64)> = e
            .words
            .into_iter()
            .enumerate()
            .map(|(i, (w, c))| (i, w, c))
            .collect();
        let truncated = words.len() > MAX_EXPLAIN_WORDS;
        if truncated {
            words.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
            words.truncate(MAX_EXPLAIN_WORDS);
            words.sort_by_key(|w| w.0);
        }
        ExplanationOut {
            isco_code: e.isco_code,
            words: words
                .into_iter()
                .map(|(_, word, contribution)| WordOut { word, contribution })
                .collect(),
            exact: e.exact,
            truncated,
        }
    })
}

/// Refuses a record whose title or duties exceed `[serve] max_field_chars`, naming the field
/// (`what` says which record, for batches and CSV rows).
pub(crate) fn check_field_lengths(
    st: &AppState,
    what: &str,
    fields: [(&str, &str); 2],
) -> Result<(), ApiError> {
    let max = st.settings.serve.max_field_chars;
    for (name, value) in fields {
        // Bytes bound characters from above; count characters only when it matters.
        if value.len() > max && value.chars().count() > max {
            return Err(ApiError::unprocessable(format!(
                "{what}`{name}` has {} characters, more than the {max} allowed (max_field_chars in [serve]); shorten it",
                value.chars().count()
            )));
        }
    }
    Ok(())
}

/// Most similar records one request may ask for.
const MAX_SIMILAR: usize = 50;

/// The `k` records most similar to `text`; `Ok(None)` when the model has no retrieval index.
pub(crate) fn similar_records(
    m: &Loaded,
    text: &str,
    k: usize,
) -> Result<Option<Vec<SimilarOut>>, ApiError> {
    match m.predictor.similar(&[text.to_string()], k) {
        None => Ok(None),
        Some(Ok(mut rows)) => Ok(Some(
            rows.pop()
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
        )),
        Some(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("similar records could not be found: {e}"),
        )),
    }
}

fn record(st: &AppState, preds: &[(&str, &str, &Prediction)], version: &str) {
    st.metrics.predictions(
        preds
            .iter()
            .map(|(_, _, p)| (p.grade.as_str(), p.is_fallback, p.needs_review)),
    );
    if !st.settings.serve.api_review_queue {
        return;
    }
    for (title, duties, p) in preds {
        if p.needs_review
            && let Err(e) = st.review.enqueue_api(title, duties, p, version)
        {
            tracing::warn!(error = %e, "could not append to the API review queue");
        }
    }
}

/// Code one job.
#[utoipa::path(post, path = "/predict/job", request_body = JobRequest,
    responses((status = 200, body = JobPrediction), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn predict_job(
    State(st): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<JobPrediction>, ApiError> {
    let req: JobRequest = parse_json(&headers, body, st.settings.serve.json_max_bytes)?;
    check_field_lengths(
        &st,
        "",
        [
            ("job_title", &req.job_title),
            ("duties_description", &req.duties_description),
        ],
    )?;
    let m = st.loaded()?;
    let text = record_text(&req.job_title, &req.duties_description);
    if text.is_empty() {
        return Err(ApiError::unprocessable(
            "job_title and duties_description are both empty; send at least a job title",
        ));
    }
    if req.similar > MAX_SIMILAR {
        return Err(ApiError::unprocessable(format!(
            "similar is {}, but at most {MAX_SIMILAR} similar records are returned; ask for fewer",
            req.similar
        )));
    }
    let similar = if req.similar > 0 {
        Some(similar_records(&m, &text, req.similar)?.ok_or_else(|| {
            ApiError::unprocessable(format!(
                "the model `{}` (kind {}) has no retrieval index, so it cannot list similar records; promote an ensemble model (`isco-dag run pipelines/ensemble.toml`) or leave `similar` out",
                m.version, m.predictor.meta.kind
            ))
        })?)
    } else {
        None
    };
    let p = m.predictor.predict_one(&text);
    record(
        &st,
        &[(&req.job_title, &req.duties_description, &p)],
        &m.version,
    );
    let top = p.alternatives.first().map(|a| a.isco_code.clone());
    let mut out = to_out(p, &m.version, req.id);
    if req.explain
        && let Some(code) = top
    {
        out.explanation = explanation(&m, &text, &code);
    }
    out.similar = similar;
    Ok(Json(out))
}

/// Code many jobs (a JSON array; at most `batch_limit`).
#[utoipa::path(post, path = "/predict/batch", request_body = Vec<BatchRecord>,
    responses((status = 200, body = BatchResponse), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn predict_batch(
    State(st): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchResponse>, ApiError> {
    let recs: Vec<BatchRecord> = parse_json(&headers, body, st.settings.serve.json_max_bytes)?;
    for (i, r) in recs.iter().enumerate() {
        check_field_lengths(
            &st,
            &format!("record {i}: "),
            [
                ("job_title", &r.job_title),
                ("duties_description", &r.duties_description),
            ],
        )?;
    }
    let limit = st.settings.serve.batch_limit;
    if recs.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} records, but a batch holds at most {limit} (batch_limit in [serve]); split it",
                recs.len()
            ),
        ));
    }
    let texts: Vec<String> = recs
        .iter()
        .map(|r| record_text(&r.job_title, &r.duties_description))
        .collect();
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::unprocessable(format!(
            "record {i}: job_title and duties_description are both empty; send at least a job title"
        )));
    }
    let m = st.loaded()?;
    let m2 = m.clone();
    let preds = tokio::task::spawn_blocking(move || m2.predictor.predict(&texts))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let triples: Vec<(&str, &str, &Prediction)> = recs
        .iter()
        .zip(&preds)
        .map(|(r, p)| (r.job_title.as_str(), r.duties_description.as_str(), p))
        .collect();
    record(&st, &triples, &m.version);
    let predictions = preds
        .into_iter()
        .zip(recs)
        .map(|(p, r)| to_out(p, &m.version, r.id))
        .collect();
    Ok(Json(BatchResponse {
        model_version: m.version.clone(),
        predictions,
    }))
}

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
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
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
            cells.push(p.isco_code.clone());
            cells.push(p.level.to_string());
            cells.push(p.title.clone());
            cells.push(format!("{:.4}", p.confidence));
            cells.push(p.grade.clone());
            cells.push(p.is_fallback.to_string());
            cells.push(p.needs_review.to_string());
            for i in 0..k {
                let a = p.alternatives.get(i);
                cells.push(a.map(|a| a.isco_code.clone()).unwrap_or_default());
                cells.push(
                    a.map(|a| format!("{:.4}", a.confidence))
                        .unwrap_or_default(),
                );
            }
        } else {
            // Unusable: no prediction, flagged for review, the reason in `note`.
            cells.extend(std::iter::repeat_n(String::new(), 6));
            cells.push("true".into());
            cells.extend(std::iter::repeat_n(String::new(), 2 * k));
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
async fn predict_csv(
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
                m.version.clone(),
            ),
        ],
        out,
    )
        .into_response())
}

/// Liveness and whether a model is loaded (503 until one is promoted).
#[utoipa::path(get, path = "/health", responses((status = 200), (status = 503, body = ErrorBody)))]
async fn health(State(st): St) -> Result<Json<serde_json::Value>, ApiError> {
    let m = st.loaded()?;
    Ok(Json(
        serde_json::json!({"status": "ok", "model_version": m.version}),
    ))
}

/// The served model: version, training run, metrics, when it was promoted.
#[utoipa::path(get, path = "/model", responses((status = 200), (status = 503, body = ErrorBody)))]
async fn model_info(State(st): St) -> Result<Json<serde_json::Value>, ApiError> {
    let m = st.loaded()?;
    let mut v = m.info.clone();
    v["version"] = serde_json::Value::String(m.version.clone());
    Ok(Json(v))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(st): St) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        st.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; see /docs for the API",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method; see /docs (predictions are POST requests)",
    )
}

/// Headers every response carries: nothing the service returns may be framed by another
/// site or sniffed as another content type.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    resp
}

/// CORS for the origins in `[serve] cors_origins` (none by default): a preflight from one
/// of them is answered here; its other requests get `Access-Control-Allow-Origin`.
async fn cors(State(st): St, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| st.settings.serve.cors_origins.iter().any(|c| c == o))
        .map(str::to_string);
    let Some(origin) = origin else {
        return next.run(req).await;
    };
    let preflight = req.method() == axum::http::Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            header::HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            header::HeaderValue::from_static("content-type, authorization, x-api-token"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            header::HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(&origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.append(header::VARY, header::HeaderValue::from_static("Origin"));
    resp
}

async fn track(State(st): St, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let t = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .request(&path, resp.status().as_u16(), t.elapsed().as_secs_f64());
    resp
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "isco-dag", description = "Codes job descriptions into ISCO-08 occupations with calibrated confidence, hierarchical fallback and a review queue."),
    paths(predict_job, predict_batch, predict_csv, health, model_info, metrics,
          review::queue, review::search, review::decision, review::skip),
    components(schemas(JobRequest, BatchRecord, JobPrediction, AlternativeOut, ExplanationOut, WordOut, SimilarOut, BatchResponse, ErrorBody, CsvUpload,
                       review::QueueItem, review::QueueResponse, review::SearchHit, review::Decision, review::Skip)),
    modifiers(&Security)
)]
struct ApiDoc;

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let s = &state.settings.serve;
    let json_limit = DefaultBodyLimit::max(s.json_max_bytes);
    let csv_limit = DefaultBodyLimit::max(s.csv_max_bytes + 64 * 1024);
    Router::new()
        .route("/predict/job", post(predict_job).layer(json_limit))
        .route("/predict/batch", post(predict_batch).layer(json_limit))
        .route("/predict/csv", post(predict_csv).layer(csv_limit))
        .route("/health", get(health))
        .route("/model", get(model_info))
        .route("/metrics", get(metrics))
        .route("/review", get(review::page))
        .route("/review/app.js", get(review::script))
        .route("/review/app.css", get(review::style))
        .route("/review/queue", get(review::queue))
        .route("/review/search", get(review::search))
        .route("/review/decision", post(review::decision).layer(json_limit))
        .route("/review/skip", post(review::skip).layer(json_limit))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}
