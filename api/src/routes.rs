//! The prediction and model routes: `/predict/job`, `/predict/batch`, `/health`, `/model`,
//! `/metrics`. Inference runs on the blocking pool, never on the async workers.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use classifier::predict::Prediction;
use classifier::text::record_text;

use crate::AppState;
use crate::coding::{MAX_SIMILAR, check_field_lengths, explanation, record, similar_records};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::types::{
    BatchRecord, BatchResponse, ErrorBody, HealthOut, JobPrediction, JobRequest, to_out,
};

type St = State<Arc<AppState>>;

/// Code one job.
#[utoipa::path(post, path = "/predict/job", request_body = JobRequest,
    responses((status = 200, body = JobPrediction), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn predict_job(
    State(st): St,
    JsonBody(req): JsonBody<JobRequest>,
) -> Result<Json<JobPrediction>, ApiError> {
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
        return Err(ApiError::unprocessable(no_text(
            &req.job_title,
            &req.duties_description,
        )));
    }
    if req.similar > MAX_SIMILAR {
        return Err(ApiError::unprocessable(format!(
            "similar is {}, but at most {MAX_SIMILAR} similar records are returned; ask for fewer",
            req.similar
        )));
    }
    // Embedding, inference and the review-queue append block: they run on the blocking
    // pool, so a slow model never stalls the async workers serving other requests.
    let out = tokio::task::spawn_blocking(move || {
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
        Ok::<_, ApiError>(out)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(out))
}

/// Code many jobs (a JSON array; at most `batch_limit`).
#[utoipa::path(post, path = "/predict/batch", request_body = Vec<BatchRecord>,
    responses((status = 200, body = BatchResponse), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn predict_batch(
    State(st): St,
    JsonBody(recs): JsonBody<Vec<BatchRecord>>,
) -> Result<Json<BatchResponse>, ApiError> {
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
            "record {i}: {}",
            no_text(&recs[i].job_title, &recs[i].duties_description)
        )));
    }
    let m = st.loaded()?;
    let (m2, st2) = (m.clone(), st.clone());
    // Inference and the review-queue append run on the blocking pool.
    let (recs, preds) = tokio::task::spawn_blocking(move || {
        let preds = m2.predictor.predict(&texts);
        let triples: Vec<(&str, &str, &Prediction)> = recs
            .iter()
            .zip(&preds)
            .map(|(r, p)| (r.job_title.as_str(), r.duties_description.as_str(), p))
            .collect();
        record(&st2, &triples, &m2.version);
        (recs, preds)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let predictions = preds
        .into_iter()
        .zip(recs)
        .map(|(p, r)| to_out(p, &m.version, r.id))
        .collect();
    Ok(Json(BatchResponse {
        model_version: m.version.to_string(),
        predictions,
    }))
}

/// Liveness and whether a model is loaded (503 until one is promoted).
#[utoipa::path(get, path = "/health", responses((status = 200, body = HealthOut), (status = 503, body = ErrorBody)))]
pub(crate) async fn health(State(st): St) -> Result<Json<HealthOut>, ApiError> {
    let m = st.loaded()?;
    Ok(Json(HealthOut {
        status: "ok".into(),
        model_version: m.version.to_string(),
    }))
}

/// The served model: version, training run, metrics, when it was promoted.
#[utoipa::path(get, path = "/model", responses((status = 200, description = "The model's metadata: `version`, its kind, training run, metrics and when it was promoted", body = Object), (status = 503, body = ErrorBody)))]
pub(crate) async fn model_info(State(st): St) -> Result<Json<serde_json::Value>, ApiError> {
    let m = st.loaded()?;
    let mut v = m.info.clone();
    v["version"] = serde_json::Value::String(m.version.to_string());
    Ok(Json(v))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
pub(crate) async fn metrics(State(st): St) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        st.metrics.render(),
    )
        .into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; see /docs for the API",
    )
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method; see /docs (predictions are POST requests)",
    )
}

/// Why a record with no text to code is refused (both fields empty, or only punctuation).
fn no_text(job_title: &str, duties: &str) -> String {
    format!(
        "{}; send a job title",
        classifier::text::why_no_text(job_title, duties)
    )
}
