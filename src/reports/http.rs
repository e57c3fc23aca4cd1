//! `/v1/reports`: define, list, change and delete reports; run one now; list its runs; download a
//! run's file.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{Report, ReportSpec, JOB_KIND};
use crate::app::AppState;
use crate::audit::AuditRecord;
use crate::auth::Principal;
use crate::error::ApiError;

async fn visible(state: &AppState, principal: &Principal, id: Uuid) -> Result<Report, ApiError> {
    super::load(state.postgres.pool(), id)
        .await?
        .filter(|r| r.owner.visible_to(principal))
        .ok_or_else(|| ApiError::not_found("unknown_report", format!("no report {id}")))
}

async fn store(
    state: &AppState,
    owner: &Principal,
    id: Uuid,
    spec: &ReportSpec,
    create: bool,
) -> Result<(), ApiError> {
    let schedule = super::validate(state, owner, spec)
        .map_err(|e| ApiError::bad_request("invalid_report", e))?;
    let pool = state.postgres.pool();
    if create {
        sqlx::query(
            "INSERT INTO reports (id, spec, owner_name, owner_role, owner_key_id, owner_attributes)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(json!(spec))
        .bind(&owner.name)
        .bind(&owner.role)
        .bind(owner.key_id)
        .bind(json!(owner.attributes))
        .execute(pool)
        .await?;
    } else {
        sqlx::query("UPDATE reports SET spec = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(json!(spec))
            .execute(pool)
            .await?;
    }
    match schedule {
        Some(schedule) => {
            state
                .scheduler
                .set(JOB_KIND, id, &schedule, spec.enabled)
                .await?
        }
        None => state.scheduler.remove(JOB_KIND, id).await?,
    }
    Ok(())
}

/// `POST /v1/reports`: stores the definition (and its schedule); it runs on schedule or on
/// `POST /v1/reports/{id}/run`.
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec: ReportSpec = crate::error::parse_body(&body, "invalid_report")?;
    let id = Uuid::new_v4();
    store(&state, &principal, id, &spec, true).await?;
    let record =
        AuditRecord::for_definition("report.create", "report", id, &principal, &headers, peer);
    state.audit.record(record);
    Ok((
        StatusCode::CREATED,
        Json(json!(visible(&state, &principal, id).await?)),
    ))
}

/// `GET /v1/reports`
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let reports: Vec<Report> = super::list(state.postgres.pool())
        .await?
        .into_iter()
        .filter(|r| r.owner.visible_to(&principal))
        .collect();
    Ok(Json(json!({ "reports": reports })))
}

/// `GET /v1/reports/{id}`: the report with its latest runs.
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let report = visible(&state, &principal, id).await?;
    let runs = state.scheduler.runs(JOB_KIND, id, 10).await?;
    let mut body = json!(report);
    body["runs"] = json!(runs);
    Ok(Json(body))
}

/// `PUT /v1/reports/{id}`: replaces the definition; it keeps running as its owner.
pub async fn replace(
    State(state): State<AppState>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let existing = visible(&state, &principal, id).await?;
    let spec: ReportSpec = crate::error::parse_body(&body, "invalid_report")?;
    store(&state, &existing.owner.principal(), id, &spec, false).await?;
    let record =
        AuditRecord::for_definition("report.update", "report", id, &principal, &headers, peer);
    state.audit.record(record);
    Ok(Json(json!(visible(&state, &principal, id).await?)))
}

/// `DELETE /v1/reports/{id}`: the report, its schedule and its stored files.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    visible(&state, &principal, id).await?;
    crate::jobs::delete_definition(&state, JOB_KIND, "reports", id).await?;
    let record =
        AuditRecord::for_definition("report.delete", "report", id, &principal, &headers, peer);
    state.audit.record(record);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/reports/{id}/run`: generates the report now (a manual run): `{run, result}`.
pub async fn run(
    State(state): State<AppState>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    visible(&state, &principal, id).await?;
    let mut record =
        AuditRecord::for_definition("report.run", "report", id, &principal, &headers, peer);
    let outcome = crate::jobs::run_now(&state, JOB_KIND, id, "report_failed").await;
    match &outcome {
        Ok(body) => {
            record.rows = body["result"]["rows"].as_i64();
            record.bytes = body["result"]["bytes"].as_i64();
        }
        Err(e) => record.outcome = e.code().to_string(),
    }
    state.audit.record(record);
    outcome.map(Json)
}

/// `GET /v1/reports/{id}/runs?limit=`: runs, newest first, with what each produced.
pub async fn runs(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(limit): Query<crate::schedule::Limit>,
) -> Result<Json<Value>, ApiError> {
    visible(&state, &principal, id).await?;
    crate::jobs::runs_json(&state, JOB_KIND, id, limit).await
}

/// `GET /v1/reports/runs/{run}/download`: the stored file of a run.
pub async fn download(
    State(state): State<AppState>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(run_id): Path<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let unknown = || {
        ApiError::not_found(
            "unknown_run",
            format!("no stored report file for run {run_id}"),
        )
    };
    let run = state
        .scheduler
        .run(run_id)
        .await?
        .filter(|r| r.kind == JOB_KIND)
        .ok_or_else(unknown)?;
    let report = visible(&state, &principal, run.target).await?;
    let file: Option<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT filename, content_type, content FROM report_files WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_optional(state.postgres.pool())
    .await?;
    let (filename, content_type, content) = file.ok_or_else(unknown)?;
    let mut record = AuditRecord::for_request(
        "report.download",
        &format!("report/{}/run/{run_id}", report.id),
        &principal,
        &headers,
        peer,
    );
    record.bytes = Some(content.len() as i64);
    record.rows = run.rows;
    state.audit.record(record);
    let mut response = content.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
