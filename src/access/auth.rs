//! Authentication: who is calling. Access control (roles, policies, row filters) builds on the
//! [`Principal`] produced here.

use std::collections::BTreeMap;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Serialize;
use uuid::Uuid;

use crate::access::keys::{self, KeyLookup, KeyStore};
use crate::access::Access;
use crate::audit::AuditLog;
use crate::error::ApiError;
use crate::error::ErrorCode;

/// Roles a key can be given.
pub const ROLES: &[&str] = &[
    "admin",
    "analyst",
    "marketer",
    "developer",
    "support",
    "service",
    "ingest",
];

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Principal {
    /// The API key, for key principals; `None` for JWT principals.
    pub key_id: Option<Uuid>,
    pub name: String,
    pub role: String,
    /// Free attributes (claims) used by row filters, e.g. `developer_id`.
    pub attributes: BTreeMap<String, String>,
}

/// What an `Authorization` header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    Bearer(String),
    Basic { user: String, password: String },
}

impl Authorization {
    /// Parses `Bearer <token>` or `Basic <base64 user:password>`; other schemes are `None`.
    pub fn parse(value: &axum::http::HeaderValue) -> Option<Self> {
        let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
        let token = token.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(Self::Bearer(token.to_string()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (user, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
            return Some(Self::Basic {
                user: user.to_string(),
                password: password.to_string(),
            });
        }
        None
    }
}

/// The credential presented by a request, if any: `Authorization: Bearer <key>`,
/// `Authorization: Basic` (the password, or the user name when the password is empty, as
/// Segment-style SDKs send their write key), or `X-API-Key`.
pub fn presented_key(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let key = match Authorization::parse(value)? {
            Authorization::Bearer(token) => token,
            Authorization::Basic { user, password } if password.is_empty() => user,
            Authorization::Basic { password, .. } => password,
        };
        return Some(key).filter(|k| !k.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// What authenticating a caller uses.
#[derive(Clone)]
pub struct Authenticator {
    /// API keys.
    pub keys: KeyStore,
    /// JWT verification.
    pub access: Access,
    /// Failed attempts are audited.
    pub audit: AuditLog,
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    Authenticator: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = &Authenticator::from_ref(state);
        let Some(key) = presented_key(&parts.headers) else {
            return Err(ApiError::unauthorized(
                ErrorCode::MissingCredentials,
                "send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`, or a JWT as `Authorization: Bearer <token>`",
            ));
        };
        let result = authenticate(state, &key).await;
        if let Err(error) = &result {
            let origin = crate::audit::Origin::from_parts(parts);
            let mut record =
                crate::audit::AuditRecord::new("auth.failure", parts.uri.path(), None, &origin);
            record.outcome = error.code().to_string();
            record.status = i32::from(error.status().as_u16());
            state.audit.record(record);
        }
        result
    }
}

/// Authenticates an API key or (anything with two dots that is not a key) a JWT.
pub async fn authenticate(state: &Authenticator, credential: &str) -> Result<Principal, ApiError> {
    if !credential.starts_with(keys::KEY_PREFIX) && credential.matches('.').count() == 2 {
        let result = state.access.jwt.verify(credential);
        if let Err(e) = &result {
            metrics::counter!("chgate_auth_failures_total", "reason" => e.code().as_str())
                .increment(1);
        }
        return result.map_err(|e| ApiError::unauthorized(e.code(), e.to_string()));
    }
    match state.keys.authenticate(credential).await {
        Ok(KeyLookup::Active(principal)) => Ok(principal),
        Ok(KeyLookup::Revoked) => {
            metrics::counter!("chgate_auth_failures_total", "reason" => "revoked_api_key")
                .increment(1);
            Err(ApiError::unauthorized(
                ErrorCode::RevokedApiKey,
                "this API key has been revoked",
            ))
        }
        Ok(KeyLookup::Unknown) => {
            metrics::counter!("chgate_auth_failures_total", "reason" => "invalid_api_key")
                .increment(1);
            Err(ApiError::unauthorized(
                ErrorCode::InvalidApiKey,
                "the API key is not valid",
            ))
        }
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "key lookup failed");
            Err(ApiError::Unavailable {
                code: ErrorCode::AuthUnavailable,
                message: "credentials cannot be checked right now; retry shortly".into(),
                retry_after: Some(std::time::Duration::from_secs(1)),
            })
        }
    }
}
