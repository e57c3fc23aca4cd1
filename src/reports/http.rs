//! `/v1/reports`: the routes every definition has ([`crate::definitions::http`]; `run` generates
//! one now), and the download of a run's file.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{Reports, JOB_KIND};
use crate::access::auth::Principal;
use crate::audit::AuditRecord;
use crate::definitions::Context;
use crate::error::ApiError;
use crate::error::ErrorCode;

/// `GET /v1/reports/runs/{run}/download`: the stored file of a run.
pub async fn download(
    State(ctx): State<Context>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(run_id): Path<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let unknown = || {
        ApiError::not_found(
            ErrorCode::UnknownRun,
            format!("no stored report file for run {run_id}"),
        )
    };
    let run = ctx
        .scheduler
        .run(run_id)
        .await?
        .filter(|r| r.kind == JOB_KIND)
        .ok_or_else(unknown)?;
    let report = crate::definitions::visible::<Reports>(&ctx, &principal, run.target).await?;
    let file: Option<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT filename, content_type, content FROM report_files WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_optional(&ctx.pool)
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
    ctx.audit.record(record);
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
