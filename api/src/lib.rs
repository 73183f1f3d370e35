//! # api — the isco-dag prediction service
//!
//! `isco-dag serve` starts it: an axum server that codes job descriptions with the promoted
//! model (the store's `best` ref) and gives human coders a review page whose decisions
//! become corrections for `pipelines/finetune.toml` — the design's FastAPI service
//! (`1-readme.md`, "API") and review loop (`4-overview.md`) in Rust.
//!
//! | route | what |
//! |---|---|
//! | `POST /predict/job` | one `{job_title, duties_description}` -> code, level, title, confidence, grade, fallback, review flag, alternatives, model version; `explain: true` adds word contributions |
//! | `POST /predict/batch` | a JSON array of records (at most `batch_limit`) |
//! | `POST /predict/csv` | a multipart CSV or Parquet upload -> the same file with prediction columns appended |
//! | `GET /health`, `GET /model` | liveness; the model's version, training run, metrics, promotion time |
//! | `GET /openapi.json`, `GET /docs` | OpenAPI 3.1 document (utoipa) and Swagger UI (vendored, no CDN) |
//! | `GET /metrics` | Prometheus text: requests, latency histogram, predictions by grade, fallbacks |
//! | `GET /review` | the review page (`/review/app.js`, `/review/app.css`); `GET /review/queue`, `GET /review/search`, `POST /review/decision`, `POST /review/skip` behind it |
//!
//! Design points:
//! - The model is loaded once into an `Arc` shared by all requests ([`model::ModelHolder`]);
//!   a background task polls the ref every `reload_seconds` and swaps in a newly promoted
//!   model. Requests in flight keep the `Arc` they started with, so none is dropped.
//! - Every error is a JSON body with a 4xx status that says what is wrong (malformed JSON,
//!   missing fields, wrong types, oversized bodies, non-UTF-8 CSV, too many rows), or 503
//!   while no model is promoted. Bodies are parsed by hand from bytes so that even the
//!   extractor's rejections come out as JSON.
//! - One client cannot exhaust the service: JSON bodies must be `application/json` (a
//!   browser sends other types cross-site without a preflight), fields are bounded
//!   (`max_field_chars`), explanations and queue pages are bounded, the API review queue is
//!   opt-in and capped, and [`listener`] closes connections slow to send headers or body and
//!   keeps the number open under the file-descriptor limit, shedding idle ones first.
//! - The review page's script and style are served apart from its markup, so its
//!   Content-Security-Policy forbids inline code; no response may be framed.
//! - Write endpoints (`/review/decision`, `/review/skip`) need the API token
//!   (`Authorization: Bearer …`, from `[serve] api_token` or `ISCO_DAG_API_TOKEN`); without
//!   it they answer 401. Decisions are appended to `data/corrections/review_<date>.csv` in
//!   one `write` under a lock, with coder, timestamp and the model's original prediction;
//!   whether the item is still undecided is checked under the same lock, so of concurrent
//!   decisions on one item one wins and the others get 409.
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod coding;
pub mod config;
mod csv;
mod error;
mod extract;
mod listener;
pub mod metrics;
pub mod model;
pub mod review;
mod router;
mod routes;
mod types;

pub use config::{ServeConfig, Settings};
pub use error::{ApiError, Error};

use classifier::Taxonomy;

/// Shared state of the service.
pub struct AppState {
    /// Configuration.
    pub settings: Settings,
    /// The served model.
    pub model: model::ModelHolder,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
    /// Review queue and decisions.
    pub review: review::Review,
    /// The token write endpoints require (None: writes are refused).
    pub token: Option<String>,
    /// ISCO reference for search and code validation, when configured.
    pub taxonomy: Option<Taxonomy>,
}

impl AppState {
    /// Builds the state (reads the reference; does not load the model yet).
    pub fn new(settings: Settings) -> Result<AppState, Error> {
        let s = &settings.serve;
        let token = if s.api_token.is_empty() {
            std::env::var("ISCO_DAG_API_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
        } else {
            Some(s.api_token.clone())
        };
        let taxonomy = match &s.reference {
            Some(p) => Some(Taxonomy::load(p)?),
            None => None,
        };
        Ok(AppState {
            model: model::ModelHolder::new(
                s.store.clone(),
                s.model_ref.clone(),
                settings.inference.clone(),
            ),
            metrics: metrics::Metrics::default(),
            review: review::Review::new(
                s.review_dir.clone(),
                s.corrections_dir.clone(),
                s.api_review_max_bytes,
            ),
            token,
            taxonomy,
            settings,
        })
    }
}

/// The router with every route, for tests and for [`serve`].
pub fn router(state: Arc<AppState>) -> axum::Router {
    router::router(state)
}

fn refresh(state: &AppState) {
    match state.model.refresh() {
        Ok(Some(v)) => {
            state.metrics.reload();
            tracing::info!(version = %v, "model loaded");
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not load the promoted model"),
    }
}

/// Starts the service and blocks until Ctrl-C or SIGTERM. `on_ready` gets the bound address
/// (useful with port 0).
pub fn serve(settings: Settings, on_ready: impl FnOnce(SocketAddr)) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Serve)?;
    rt.block_on(async move {
        let addr = settings.serve.addr.clone();
        let reload = Duration::from_secs_f64(settings.serve.reload_seconds.max(0.1));
        let state = Arc::new(AppState::new(settings)?);
        {
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || refresh(&st)).await;
        }
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::Bind {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        let bound = listener.local_addr().map_err(Error::Serve)?;
        on_ready(bound);
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(reload);
            tick.tick().await;
            loop {
                tick.tick().await;
                let st = st.clone();
                let _ = tokio::task::spawn_blocking(move || refresh(&st)).await;
            }
        });
        let s = &state.settings.serve;
        let limits = listener::Limits {
            header_timeout: Duration::from_secs_f64(s.header_timeout_seconds),
            body_timeout: Duration::from_secs_f64(s.body_timeout_seconds),
            max_connections: s.max_connections,
        };
        tracing::info!(
            max_connections = listener::effective_max_connections(s.max_connections),
            "accepting connections"
        );
        listener::serve(listener, router(state.clone()), limits, shutdown())
            .await
            .map_err(Error::Serve)
    })
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
