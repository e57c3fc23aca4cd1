//! The one error type at the HTTP boundary.
//!
//! Every variant maps to a status, a stable snake_case `code` and a log level. 4xx messages are
//! specific (which field, which rule); 5xx bodies are opaque and carry only the request id, while the
//! cause is logged exactly once, here.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::request_id::current_request_id;

pub mod code;

pub use code::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or breaks a documented rule.
    #[error("{message}")]
    BadRequest { code: ErrorCode, message: String },
    /// No credentials, or credentials that do not authenticate.
    #[error("{message}")]
    Unauthorized { code: ErrorCode, message: String },
    /// Authenticated, but not allowed to do this.
    #[error("{message}")]
    Forbidden { code: ErrorCode, message: String },
    #[error("{message}")]
    NotFound { code: ErrorCode, message: String },
    #[error("{message}")]
    PayloadTooLarge { message: String },
    #[error("{message}")]
    TooManyRequests {
        code: ErrorCode,
        message: String,
        retry_after: Duration,
        /// The rate limit per second, reported in `X-RateLimit-Limit`.
        limit: Option<u32>,
    },
    /// A dependency is unavailable or the gateway is saturated; the client may retry.
    #[error("{message}")]
    Unavailable {
        code: ErrorCode,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The work took longer than its limit.
    #[error("{message}")]
    Timeout { code: ErrorCode, message: String },
    /// The request collides with another in progress.
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    /// A bug or an unexpected infrastructure failure; the cause is logged, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Unauthorized {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::Forbidden { code, .. }
            | Self::NotFound { code, .. }
            | Self::TooManyRequests { code, .. }
            | Self::Unavailable { code, .. }
            | Self::Timeout { code, .. }
            | Self::Conflict { code, .. } => *code,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::Internal(_) => ErrorCode::InternalError,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TooManyRequests { retry_after, .. } => Some(*retry_after),
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => match current_request_id() {
                Some(id) => format!("internal error (request id {id})"),
                None => "internal error".to_string(),
            },
            other => other.to_string(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(err).context("postgres query failed"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            Self::Unavailable { message, .. } => {
                tracing::warn!(code = self.code().as_str(), %message)
            }
            _ => tracing::debug!(code = self.code().as_str(), message = %self, "request rejected"),
        }
        let body =
            json!({"error": {"code": self.code().as_str(), "message": self.public_message()}});
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::TooManyRequests {
            limit: Some(limit), ..
        } = &self
        {
            response
                .headers_mut()
                .insert("x-ratelimit-limit", HeaderValue::from(*limit));
            response
                .headers_mut()
                .insert("x-ratelimit-remaining", HeaderValue::from(0u32));
        }
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// A JSON request body read into `T`; a problem is a 400 with `code` naming the path.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    code: ErrorCode,
) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        ApiError::bad_request(code, message)
    })
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;
