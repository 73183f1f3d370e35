//! The router: routes, the middleware every response passes (security headers, CORS,
//! request metrics, the token check of the routes that change data) and the OpenAPI document.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::AppState;
use crate::csv::{self as csv_route, predict_csv};
use crate::extract::require_token;
use crate::review;
use crate::routes::{
    self, health, method_not_allowed, metrics, model_info, not_found, predict_batch, predict_job,
};
use crate::types::{
    AlternativeOut, BatchRecord, BatchResponse, CsvUpload, ErrorBody, ExplanationOut, HealthOut,
    JobPrediction, JobRequest, RecordId, SimilarOut, WordOut,
};

type St = State<Arc<AppState>>;

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
        let mut r = next.run(req).await;
        // A page on another origin may read what the service says about an answer.
        r.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            header::HeaderValue::from_static("x-model-version, x-coding-note"),
        );
        r
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
    paths(routes::predict_job, routes::predict_batch, csv_route::predict_csv, routes::health, routes::model_info, routes::metrics,
          review::queue, review::search, review::decision, review::skip),
    components(schemas(JobRequest, BatchRecord, JobPrediction, AlternativeOut, ExplanationOut, WordOut, SimilarOut, BatchResponse, ErrorBody, HealthOut, RecordId, CsvUpload,
                       review::QueueItem, review::QueueResponse, review::SearchHit, review::SearchMatch, review::Decision, review::Skip)),
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
        .merge(
            Router::new()
                .route("/review/decision", post(review::decision).layer(json_limit))
                .route("/review/skip", post(review::skip).layer(json_limit))
                .route_layer(middleware::from_fn_with_state(state.clone(), require_token)),
        )
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}
