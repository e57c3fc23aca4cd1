//! The admin API: API keys (`POST/GET/DELETE /v1/admin/keys`), for the `admin` role only.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::keys::KeyError;
use crate::auth::Principal;
use crate::error::ApiError;

fn require_admin(principal: &Principal) -> Result<(), ApiError> {
    if principal.role == "admin" {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "admin_only",
            "only the admin role may manage keys",
        ))
    }
}

fn key_error(error: KeyError) -> ApiError {
    match error {
        KeyError::UnknownRole(_) | KeyError::BadName => {
            ApiError::bad_request("invalid_key", error.to_string())
        }
        KeyError::DuplicateName(_) => {
            ApiError::bad_request("duplicate_key_name", error.to_string())
        }
        KeyError::NotFound(_) => ApiError::not_found("unknown_key", error.to_string()),
        KeyError::Store(e) => ApiError::Internal(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `POST /v1/admin/keys`: the secret is in this response only.
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&principal)?;
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let request: NewKeyRequest =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            ApiError::bad_request("invalid_body", format!("{}: {}", e.path(), e.inner()))
        })?;
    let key = state
        .keys
        .create(&request.name, &request.role, request.attributes)
        .await
        .map_err(key_error)?;
    tracing::info!(admin = %principal.name, key = %key.record.id, role = %key.record.role, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"key": key.record, "secret": key.secret})),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub all: bool,
}

/// `GET /v1/admin/keys[?all=true]`.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let keys = state.keys.list(query.all).await.map_err(key_error)?;
    Ok(Json(json!({ "keys": keys })))
}

/// `DELETE /v1/admin/keys/{id or name}`: revokes; effective on every gateway within 2 s.
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let record = state.keys.revoke(&key).await.map_err(key_error)?;
    tracing::info!(admin = %principal.name, key = %record.id, "API key revoked");
    Ok(Json(json!({ "revoked": record })))
}
