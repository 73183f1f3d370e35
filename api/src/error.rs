//! Errors: [`Error`] for starting the service, [`ApiError`] for a request (always a JSON
//! body `{"error": …, "status": …}` with a 4xx or 503 status; handlers never answer 500).

use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is malformed.
    #[error("{path}: {message}; fix the config file")]
    Config {
        /// Config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {reason}; pick another address with --addr")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        reason: String,
    },
    /// The reference file cannot be read.
    #[error("the ISCO reference could not be loaded: {0}")]
    Reference(#[from] classifier::Error),
    /// The store cannot be opened.
    #[error("{0}")]
    Store(#[from] artifacts::Error),
    /// The server stopped with an I/O error.
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

/// A request error, rendered as JSON.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What is wrong, in a sentence that says what to do.
    pub message: String,
}

impl ApiError {
    /// An error with a status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 422.
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({"error": self.message, "status": self.status.as_u16()})),
        )
            .into_response()
    }
}
