//! Reading requests: [`JsonBody`], a JSON extractor whose every rejection is the
//! project's JSON error body, and [`require_token`], the middleware in front of the routes
//! that change data.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// A JSON request body. Unlike axum's `Json`, a wrong content type, an oversized or
/// unreadable body, malformed JSON and missing fields are all answered with the project's
/// error body (`{"error", "status"}`) and a message that says what to send.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await;
        parse_json(&headers, body, state.settings.serve.json_max_bytes).map(JsonBody)
    }
}

/// Parses a JSON body read as bytes, so that every failure is a JSON 4xx. The body must be
/// declared `application/json`: a browser sends other types (`text/plain`, forms) from any
/// web page without asking, so accepting them would let a page the user visits call the API.
fn parse_json<T: DeserializeOwned>(
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

/// Lets a request through only with the configured API token (`Authorization: Bearer …` or
/// `X-Api-Token`); without a configured token, nothing gets through.
pub async fn require_token(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match authorised(&st, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn authorised(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &st.token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no API token is configured on the server; set ISCO_DAG_API_TOKEN or [serve] api_token and restart",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-token").and_then(|v| v.to_str().ok()))
        .unwrap_or("");
    // Compare without an early exit on the first differing byte.
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token; send `Authorization: Bearer <token>`",
        ))
    }
}
