//! API errors: every failure a handler can have becomes `{"error": {"code", "message"}}` with the
//! right status, here and nowhere else. Internal errors are logged and answered without details.
//! The server's operations answer with [`ControlError`], which says what went wrong, not how
//! HTTP puts it; it becomes an [`ApiError`] in one `From`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

/// Anything unexpected: logged with its chain, answered as a plain 500.
impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{e:#}"), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "code": self.code, "message": self.message } })),
        )
            .into_response()
    }
}

/// Why the server did not carry out an operation of the `Control` port.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such run, project, environment or release.
    #[error("{0}")]
    NotFound(String),
    /// Refused as things stand (a lock held, nothing to explain, a name taken).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed, but it cannot be done as asked (an environment without a target).
    #[error("{0}")]
    Invalid(String),
    /// Something the server needs is out of reach for now (a repository's remote).
    #[error("{0}")]
    Unavailable(String),
    /// The token is valid but may not do this (a role an approval stage does not name).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ControlError {
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into())
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }
}

/// The one mapping of the server's refusals to HTTP.
impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(m) => ApiError::not_found(m),
            ControlError::Conflict(m) => ApiError::conflict(m),
            ControlError::BadRequest(m) => ApiError::bad_request(m),
            ControlError::Invalid(m) => ApiError::unprocessable(m),
            ControlError::Unavailable(m) => ApiError::unavailable(m),
            ControlError::Forbidden(m) => ApiError::forbidden(m),
            ControlError::Internal(e) => ApiError::from(e),
        }
    }
}
