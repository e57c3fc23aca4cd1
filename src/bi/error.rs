//! Refusals of the BI endpoint, shaped like ClickHouse's own errors (`Code: N. DB::Exception: …`
//! body, `X-ClickHouse-Exception-Code` header, ClickHouse's HTTP status for the code) so drivers and
//! BI tools show them to the user as they would show a server error.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::error::ErrorCode;

/// A ClickHouse-style error produced by the gateway itself.
#[derive(Debug, Clone, PartialEq)]
pub struct BiError {
    /// ClickHouse error code and its name, e.g. 497 `ACCESS_DENIED`.
    pub code: u32,
    pub name: &'static str,
    pub status: StatusCode,
    pub message: String,
    /// Stable snake_case reason for metrics and the audit log.
    pub reason: &'static str,
    pub retry_after: Option<Duration>,
    /// The rate limit per second, for `X-RateLimit-Limit` on quota refusals.
    pub limit: Option<u32>,
}

impl BiError {
    fn new(
        code: u32,
        name: &'static str,
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code,
            name,
            status,
            message: message.into(),
            reason,
            retry_after: None,
            limit: None,
        }
    }

    pub fn syntax(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(62, "SYNTAX_ERROR", StatusCode::BAD_REQUEST, reason, message)
    }

    pub fn access_denied(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(497, "ACCESS_DENIED", StatusCode::FORBIDDEN, reason, message)
    }

    pub fn readonly(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(164, "READONLY", StatusCode::FORBIDDEN, reason, message)
    }

    /// A setting the role may not send (ClickHouse's own code for a settings constraint).
    pub fn setting_refused(message: impl Into<String>) -> Self {
        Self::new(
            452,
            "SETTING_CONSTRAINT_VIOLATION",
            StatusCode::BAD_REQUEST,
            "setting_not_allowed",
            message,
        )
    }

    pub fn unknown_format(message: impl Into<String>) -> Self {
        Self::new(
            73,
            "UNKNOWN_FORMAT",
            StatusCode::BAD_REQUEST,
            "format_not_allowed",
            message,
        )
    }

    pub fn unknown_database(database: &str) -> Self {
        Self::new(
            81,
            "UNKNOWN_DATABASE",
            StatusCode::NOT_FOUND,
            "unknown_database",
            format!("Database {database} does not exist"),
        )
    }

    pub fn bad_arguments(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            36,
            "BAD_ARGUMENTS",
            StatusCode::BAD_REQUEST,
            reason,
            message,
        )
    }

    /// A request the endpoint does not serve (a 400: the request, not the server, is at fault).
    pub fn not_implemented(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            48,
            "NOT_IMPLEMENTED",
            StatusCode::BAD_REQUEST,
            reason,
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut error = Self::new(
            210,
            "NETWORK_ERROR",
            StatusCode::SERVICE_UNAVAILABLE,
            "clickhouse_unavailable",
            message,
        );
        error.retry_after = Some(Duration::from_secs(2));
        error
    }

    /// The text ClickHouse would send.
    pub fn body(&self) -> String {
        format!(
            "Code: {}. DB::Exception: chgate: {}. ({}) (version chgate {})\n",
            self.code,
            self.message.trim_end_matches('.'),
            self.name,
            env!("CARGO_PKG_VERSION")
        )
    }
}

impl From<ApiError> for BiError {
    fn from(error: ApiError) -> Self {
        let reason = error.code().as_str();
        let message = match &error {
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "BI request failed");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let mut out = match &error {
            ApiError::Unauthorized { .. } => Self::new(
                516,
                "AUTHENTICATION_FAILED",
                StatusCode::UNAUTHORIZED,
                reason,
                message,
            ),
            ApiError::Forbidden { .. } => Self::access_denied(reason, message),
            ApiError::BadRequest { .. } | ApiError::NotFound { .. } => {
                Self::bad_arguments(reason, message)
            }
            ApiError::PayloadTooLarge { .. } => Self::new(
                62,
                "SYNTAX_ERROR",
                StatusCode::PAYLOAD_TOO_LARGE,
                reason,
                message,
            ),
            ApiError::TooManyRequests { code, .. }
                if *code == ErrorCode::TooManyConcurrentQueries =>
            {
                Self::new(
                    202,
                    "TOO_MANY_SIMULTANEOUS_QUERIES",
                    StatusCode::TOO_MANY_REQUESTS,
                    reason,
                    message,
                )
            }
            ApiError::TooManyRequests { .. } => Self::new(
                201,
                "QUOTA_EXCEEDED",
                StatusCode::TOO_MANY_REQUESTS,
                reason,
                message,
            ),
            ApiError::Unavailable { .. } => Self::new(
                202,
                "TOO_MANY_SIMULTANEOUS_QUERIES",
                StatusCode::SERVICE_UNAVAILABLE,
                reason,
                message,
            ),
            ApiError::Timeout { .. } => Self::new(
                159,
                "TIMEOUT_EXCEEDED",
                StatusCode::GATEWAY_TIMEOUT,
                reason,
                message,
            ),
            ApiError::Conflict { .. } => Self::new(
                216,
                "QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING",
                StatusCode::CONFLICT,
                reason,
                message,
            ),
            ApiError::Internal(_) => Self::new(
                1001,
                "STD_EXCEPTION",
                StatusCode::INTERNAL_SERVER_ERROR,
                reason,
                message,
            ),
        };
        if let ApiError::TooManyRequests { limit, .. } = &error {
            out.limit = *limit;
        }
        out.retry_after = match error {
            ApiError::TooManyRequests { retry_after, .. } => Some(retry_after),
            ApiError::Unavailable { retry_after, .. } => retry_after,
            _ => None,
        };
        out
    }
}

impl IntoResponse for BiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        );
        headers.insert("x-clickhouse-exception-code", HeaderValue::from(self.code));
        if let Some(limit) = self.limit {
            headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(0u32));
        }
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_like_clickhouse_exceptions() {
        let error = BiError::access_denied("table_not_allowed", "table a.b is not readable.");
        assert!(error.body().starts_with(
            "Code: 497. DB::Exception: chgate: table a.b is not readable. (ACCESS_DENIED)"
        ));
        let auth: BiError =
            ApiError::unauthorized(ErrorCode::InvalidApiKey, "the API key is not valid").into();
        assert_eq!((auth.code, auth.status), (516, StatusCode::UNAUTHORIZED));
    }
}
