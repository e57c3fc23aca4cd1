//! ClickHouse's answer on its way to the caller: streamed as it comes with its query slot and
//! audit record, its status decided by the gateway's table of ClickHouse errors, its headers
//! without those of the connection.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;

use super::count;
use super::error::BiError;
use super::outgoing::Outgoing;
use super::statement::{Plan, StatementKind};
use super::Endpoint;
use crate::access::auth::Principal;
use crate::access::policy::RolePolicy;
use crate::audit::Pending;
use crate::cache::CacheStatus;

/// Response headers that belong to one connection, not to the message.
pub(super) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Runs the statement and streams ClickHouse's response back as it comes, holding a query slot;
/// the audit record moves into the stream and is written when the last byte is sent.
pub(super) async fn streamed(
    state: &Endpoint,
    principal: &Principal,
    role: &RolePolicy,
    plan: &Plan,
    out: &Outgoing,
    forward: HeaderMap,
    audit: &mut Pending,
) -> Result<Response, BiError> {
    let slot = slot(state, principal, role).await?;
    let started = Instant::now();
    let upstream = state
        .upstream
        .send(&out.pairs, plan.sql.clone(), forward)
        .await?;
    let status = caller_status(upstream.status(), upstream.headers());
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    copy_headers(upstream.headers(), response.headers_mut());
    let record = audit.record();
    record.status = i32::from(status.as_u16());
    record.rows = summary_rows(upstream.headers());
    let outcome = if status.is_success() {
        "ok"
    } else {
        record.outcome = "clickhouse_error".into();
        "clickhouse_error"
    };
    count(plan.kind.name(), outcome);
    *response.body_mut() = stream_body(upstream, slot, audit.take(), plan.kind, started);
    response.headers_mut().insert(
        "x-cache",
        HeaderValue::from_static(CacheStatus::Bypass.header()),
    );
    Ok(response)
}

/// A query slot, waiting up to `bi.queue_timeout_ms` for one.
pub(super) async fn slot(
    state: &Endpoint,
    principal: &Principal,
    role: &RolePolicy,
) -> Result<crate::access::limits::Slot, BiError> {
    let wait = Duration::from_millis(state.settings.bi.queue_timeout_ms);
    Ok(state
        .access
        .limiter
        .query_slot_within(principal, &role.limits, wait)
        .await?)
}

/// The status of ClickHouse's answer as the caller gets it: an error's code decides by the
/// gateway's table (`storage::clickhouse_errors`), since ClickHouse answers many request errors
/// with 500; codes not in the table keep ClickHouse's status.
pub(super) fn caller_status(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> reqwest::StatusCode {
    if status.is_success() {
        return status;
    }
    headers
        .get("x-clickhouse-exception-code")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .and_then(crate::storage::clickhouse_errors::fault)
        .and_then(|fault| reqwest::StatusCode::from_u16(fault.status()).ok())
        .unwrap_or(status)
}

/// `result_rows` of `X-ClickHouse-Summary`, when ClickHouse knew it before the body.
fn summary_rows(headers: &reqwest::header::HeaderMap) -> Option<i64> {
    let summary: serde_json::Value = headers
        .get("x-clickhouse-summary")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| serde_json::from_str(v).ok())?;
    let rows = match &summary["result_rows"] {
        serde_json::Value::String(s) => s.parse::<i64>().ok(),
        other => other.as_i64(),
    }?;
    (rows > 0).then_some(rows)
}

pub(super) fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// ClickHouse's body, streamed as it comes; the query slot and the audit record live as long as
/// the stream.
fn stream_body(
    upstream: reqwest::Response,
    slot: crate::access::limits::Slot,
    mut audit: Pending,
    kind: StatementKind,
    started: Instant,
) -> Body {
    struct Flow {
        inner: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        _slot: crate::access::limits::Slot,
        audit: Pending,
        bytes: i64,
        kind: StatementKind,
        started: Instant,
    }
    impl Drop for Flow {
        fn drop(&mut self) {
            metrics::histogram!("chgate_bi_query_duration_seconds", "kind" => self.kind.name())
                .record(self.started.elapsed().as_secs_f64());
        }
    }
    audit.record().bytes = Some(0);
    let flow = Flow {
        inner: upstream.bytes_stream().boxed(),
        _slot: slot,
        audit,
        bytes: 0,
        kind,
        started,
    };
    Body::from_stream(futures_util::stream::unfold(flow, |mut flow| async move {
        match flow.inner.next().await {
            Some(Ok(chunk)) => {
                flow.bytes += chunk.len() as i64;
                flow.audit.record().bytes = Some(flow.bytes);
                metrics::counter!("chgate_bi_response_bytes_total").increment(chunk.len() as u64);
                Some((Ok::<_, std::io::Error>(chunk), flow))
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "BI response from ClickHouse broke off");
                flow.audit.record().outcome = "stream_error".into();
                Some((Err(std::io::Error::other(e.to_string())), flow))
            }
            None => None,
        }
    }))
}
