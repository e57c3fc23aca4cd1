//! The admin API: API keys (`POST/GET/DELETE /v1/admin/keys`), for the `admin` role only.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::auth::Principal;
use crate::access::keys::KeyError;
use crate::audit::AuditRecord;
use crate::error::ApiError;
use crate::error::ErrorCode;

/// What the admin endpoints use.
#[derive(Clone)]
pub struct Admin {
    /// API keys.
    pub keys: crate::access::keys::KeyStore,
    /// Every admin action is audited.
    pub audit: crate::audit::AuditLog,
    /// The audit log is read from here.
    pub postgres: crate::storage::postgres::Postgres,
}

/// Admits the admin role; anyone else's attempt is refused and recorded as `action`, denied.
fn require_admin(
    state: &Admin,
    principal: &Principal,
    request: &Caller,
    action: &str,
) -> Result<(), ApiError> {
    if principal.role == "admin" {
        return Ok(());
    }
    let error = ApiError::forbidden(
        ErrorCode::AdminOnly,
        "only the admin role may use the admin API",
    );
    let mut record = request.record(action, "", principal);
    record.outcome = error.code().to_string();
    record.status = i32::from(error.status().as_u16());
    state.audit.record(record);
    Err(error)
}

/// Where an admin request came from.
pub struct Caller(crate::audit::Origin);

impl Caller {
    fn record(&self, action: &str, resource: &str, principal: &Principal) -> AuditRecord {
        AuditRecord::new(action, resource, Some(principal), &self.0)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(crate::audit::Origin::from_parts(parts)))
    }
}

fn key_error(error: KeyError) -> ApiError {
    match error {
        KeyError::UnknownRole(_) | KeyError::BadName => {
            ApiError::bad_request(ErrorCode::InvalidKey, error.to_string())
        }
        KeyError::DuplicateName(_) => {
            ApiError::bad_request(ErrorCode::DuplicateKeyName, error.to_string())
        }
        KeyError::NotFound(_) => ApiError::not_found(ErrorCode::UnknownKey, error.to_string()),
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
    State(state): State<Admin>,
    principal: Principal,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&state, &principal, &caller, "admin.key.create")?;
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let request: NewKeyRequest =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidBody,
                format!("{}: {}", e.path(), e.inner()),
            )
        })?;
    let key = state
        .keys
        .create(&request.name, &request.role, request.attributes)
        .await
        .map_err(key_error)?;
    tracing::info!(admin = %principal.name, key = %key.record.id, role = %key.record.role, "API key created");
    state
        .audit
        .record(caller.record("admin.key.create", &key.record.name, &principal));
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
    State(state): State<Admin>,
    principal: Principal,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &principal, &caller, "admin.key.list")?;
    let keys = state.keys.list(query.all).await.map_err(key_error)?;
    Ok(Json(json!({ "keys": keys })))
}

/// `DELETE /v1/admin/keys/{id or name}`: revokes; effective on every gateway within 2 s.
pub async fn revoke(
    State(state): State<Admin>,
    principal: Principal,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &principal, &caller, "admin.key.revoke")?;
    let record = state.keys.revoke(&key).await.map_err(key_error)?;
    tracing::info!(admin = %principal.name, key = %record.id, "API key revoked");
    state
        .audit
        .record(caller.record("admin.key.revoke", &record.name, &principal));
    Ok(Json(json!({ "revoked": record })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    pub principal: Option<String>,
    pub action: Option<String>,
    pub limit: Option<i64>,
    pub format: Option<String>,
}

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
struct AuditRow {
    at: chrono::DateTime<chrono::Utc>,
    request_id: String,
    principal: String,
    role: String,
    key_id: Option<uuid::Uuid>,
    ip: String,
    user_agent: String,
    action: String,
    resource: String,
    params: Option<Value>,
    sql_hash: Option<String>,
    outcome: String,
    status: i32,
    rows: Option<i64>,
    bytes: Option<i64>,
    duration_ms: f64,
    reason: String,
}

/// `GET /v1/admin/audit?since&until&principal&action&limit&format=json|csv`.
pub async fn audit_log(
    State(state): State<Admin>,
    principal: Principal,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    require_admin(&state, &principal, &caller, "admin.audit.read")?;
    let limit = query.limit.unwrap_or(1000).clamp(1, 100_000);
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT at, request_id, principal, role, key_id, ip, user_agent, action, resource, params, sql_hash, outcome, status, rows, bytes, duration_ms, reason
         FROM audit_log
         WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at < $2)
           AND ($3::text IS NULL OR principal = $3) AND ($4::text IS NULL OR action = $4)
         ORDER BY at DESC, id DESC LIMIT $5",
    )
    .bind(query.since)
    .bind(query.until)
    .bind(&query.principal)
    .bind(&query.action)
    .bind(limit)
    .fetch_all(state.postgres.pool())
    .await?;
    match query.format.as_deref() {
        None | Some("json") => Ok(Json(json!({ "records": rows })).into_response()),
        Some("csv") => {
            let mut csv = String::from("at,request_id,principal,role,key_id,ip,user_agent,action,resource,params,sql_hash,outcome,status,rows,bytes,duration_ms,reason\n");
            for r in &rows {
                let fields = [
                    r.at.to_rfc3339(),
                    r.request_id.clone(),
                    r.principal.clone(),
                    r.role.clone(),
                    r.key_id.map(|k| k.to_string()).unwrap_or_default(),
                    r.ip.clone(),
                    r.user_agent.clone(),
                    r.action.clone(),
                    r.resource.clone(),
                    r.params.as_ref().map(Value::to_string).unwrap_or_default(),
                    r.sql_hash.clone().unwrap_or_default(),
                    r.outcome.clone(),
                    r.status.to_string(),
                    r.rows.map(|n| n.to_string()).unwrap_or_default(),
                    r.bytes.map(|n| n.to_string()).unwrap_or_default(),
                    format!("{:.3}", r.duration_ms),
                    r.reason.clone(),
                ];
                let quoted: Vec<String> = fields.iter().map(|f| csv_cell(f)).collect();
                csv.push_str(&quoted.join(","));
                csv.push('\n');
            }
            let mut response = csv.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            Ok(response)
        }
        Some(other) => Err(ApiError::bad_request(
            ErrorCode::InvalidParameter,
            format!("format: must be json or csv, got {other:?}"),
        )),
    }
}

/// A quoted CSV cell; text a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR at
/// its start) gets a leading apostrophe.
fn csv_cell(text: &str) -> String {
    let guarded = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    format!("\"{}\"", guarded.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell(r#"a "b""#), r#""a ""b""""#);
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), r#""'=HYPERLINK(""x"")""#);
        assert_eq!(csv_cell("@SUM(A1)"), r#""'@SUM(A1)""#);
        assert_eq!(
            csv_cell("2026-11-29T10:00:00+00:00"),
            r#""2026-11-29T10:00:00+00:00""#
        );
    }
}
