//! `/v1/alerts`: define, list, change and delete alerts, evaluate one now, read its history and runs.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use std::net::SocketAddr;
use uuid::Uuid;

use super::{Alert, AlertSpec, JOB_KIND};
use crate::app::AppState;
use crate::audit::AuditRecord;
use crate::auth::Principal;
use crate::error::ApiError;

fn parse_spec(body: &[u8]) -> Result<AlertSpec, ApiError> {
    crate::error::parse_body(body, "invalid_alert")
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_alert", message)
}

async fn visible(state: &AppState, principal: &Principal, id: Uuid) -> Result<Alert, ApiError> {
    super::load(state.postgres.pool(), id)
        .await?
        .filter(|a| a.visible_to(principal))
        .ok_or_else(|| ApiError::not_found("unknown_alert", format!("no alert {id}")))
}

fn alert_json(alert: &Alert) -> Value {
    json!(alert)
}

async fn store(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    spec: &AlertSpec,
    create: bool,
) -> Result<(), ApiError> {
    let schedule = super::validate(state, principal, spec).map_err(invalid)?;
    let spec_json = json!(spec);
    if create {
        sqlx::query(
            "INSERT INTO alerts (id, name, spec, owner_name, owner_role, owner_key_id, owner_attributes)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(&spec.name)
        .bind(&spec_json)
        .bind(&principal.name)
        .bind(&principal.role)
        .bind(principal.key_id)
        .bind(json!(principal.attributes))
        .execute(state.postgres.pool())
        .await?;
    } else {
        sqlx::query(
            "UPDATE alerts SET name = $2, spec = $3, state = 'ok', state_since = now(), updated_at = now(),
             last_error = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(&spec.name)
        .bind(&spec_json)
        .execute(state.postgres.pool())
        .await?;
    }
    state
        .scheduler
        .set(JOB_KIND, id, &schedule, spec.enabled)
        .await?;
    Ok(())
}

/// `POST /v1/alerts`
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = parse_spec(&body)?;
    let id = Uuid::new_v4();
    store(&state, &principal, id, &spec, true).await?;
    state.audit.record(AuditRecord::for_definition(
        "alert.create",
        "alert",
        id,
        &principal,
        &headers,
        peer,
    ));
    let alert = visible(&state, &principal, id).await?;
    Ok((StatusCode::CREATED, Json(alert_json(&alert))))
}

/// `GET /v1/alerts`: the caller's alerts (every alert for admins).
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let alerts: Vec<Value> = super::list(state.postgres.pool())
        .await?
        .iter()
        .filter(|a| a.visible_to(&principal))
        .map(alert_json)
        .collect();
    Ok(Json(json!({ "alerts": alerts })))
}

/// `GET /v1/alerts/{id}`
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(alert_json(&visible(&state, &principal, id).await?)))
}

/// `PUT /v1/alerts/{id}`: replaces the definition; the state starts over at `ok`.
pub async fn replace(
    State(state): State<AppState>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let existing = visible(&state, &principal, id).await?;
    let spec = parse_spec(&body)?;
    store(&state, &existing.owner(), id, &spec, false).await?;
    state.audit.record(AuditRecord::for_definition(
        "alert.update",
        "alert",
        id,
        &principal,
        &headers,
        peer,
    ));
    Ok(Json(alert_json(&visible(&state, &principal, id).await?)))
}

/// `DELETE /v1/alerts/{id}`
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    visible(&state, &principal, id).await?;
    crate::jobs::delete_definition(&state, JOB_KIND, "alerts", id).await?;
    state.audit.record(AuditRecord::for_definition(
        "alert.delete",
        "alert",
        id,
        &principal,
        &headers,
        peer,
    ));
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/alerts/{id}/events`: the history, newest first.
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(limit): Query<crate::schedule::Limit>,
) -> Result<Json<Value>, ApiError> {
    visible(&state, &principal, id).await?;
    let events = super::events(state.postgres.pool(), id, limit.clamped()).await?;
    Ok(Json(json!({ "events": events })))
}

/// `GET /v1/alerts/{id}/runs`: the evaluations, newest first.
pub async fn runs(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(limit): Query<crate::schedule::Limit>,
) -> Result<Json<Value>, ApiError> {
    visible(&state, &principal, id).await?;
    crate::jobs::runs_json(&state, JOB_KIND, id, limit).await
}

/// `POST /v1/alerts/{id}/evaluate`: evaluates now (recorded as a manual run).
pub async fn evaluate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    visible(&state, &principal, id).await?;
    Ok(Json(
        crate::jobs::run_now(&state, JOB_KIND, id, "evaluation_failed").await?,
    ))
}
