//! `/v1/segments`: the routes every definition has ([`crate::definitions::http`]; `refresh`
//! computes the members now), and the members: listed and exported.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{Segment, Segments};
use crate::access::auth::Principal;
use crate::audit::{AuditRecord, Pending};
use crate::definitions::Context;
use crate::error::ApiError;
use crate::error::ErrorCode;

/// Member attributes an export may include (the member's latest value, or an aggregate).
const ATTRIBUTES: &[(&str, &str)] = &[
    ("country", "toString(argMax(country, timestamp))"),
    ("region", "toString(argMax(region, timestamp))"),
    ("city", "argMax(city, timestamp)"),
    ("platform", "toString(argMax(platform, timestamp))"),
    ("locale", "toString(argMax(locale, timestamp))"),
    ("device_type", "toString(argMax(device_type, timestamp))"),
    ("os", "toString(argMax(os, timestamp))"),
    ("first_seen", "min(timestamp)"),
    ("last_seen", "max(timestamp)"),
    ("events", "count()"),
    (
        "revenue",
        "sum(multiIf(event = 'purchase', revenue, event = 'refund', -revenue, 0))",
    ),
];

/// Largest export delivered to a webhook (it is sent in one request).
const MAX_WEBHOOK_EXPORT: usize = 64 * 1024 * 1024;

async fn visible(ctx: &Context, principal: &Principal, id: Uuid) -> Result<Segment, ApiError> {
    Ok(crate::definitions::visible::<Segments>(ctx, principal, id).await?)
}

#[derive(Debug, Deserialize)]
pub struct Page {
    #[serde(default)]
    offset: u64,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    100
}

/// How members appear to the caller: their ids for roles with raw personal data, otherwise a
/// salted hash (salt given per listing or export, so pseudonyms cannot be joined across exports).
fn member_expression(
    ctx: &Context,
    principal: &Principal,
) -> Result<(&'static str, bool), ApiError> {
    let role = ctx.access.role(principal)?;
    Ok(if role.pii {
        ("m.actor_id", false)
    } else {
        (
            "lower(hex(SHA256(concat({salt:String}, m.actor_id))))",
            true,
        )
    })
}

fn current(segment: &Segment) -> Result<String, ApiError> {
    segment
        .computed_at
        .map(super::clickhouse_time)
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::NotComputed,
                "the segment has not been computed yet; refresh it",
            )
        })
}

/// `GET /v1/segments/{id}/users?offset=&limit=`: members in a stable order.
pub async fn users(
    State(ctx): State<Context>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let segment = visible(&ctx, &principal, id).await?;
    let at = current(&segment)?;
    let (member, salted) = member_expression(&ctx, &principal)?;
    let limit = page.limit.clamp(1, 10_000);
    let sql = format!(
        "SELECT {member} AS user FROM segment_members AS m
         WHERE m.segment_id = {{segment:UUID}} AND m.computed_at = {{computed_at:DateTime64(3, 'UTC')}}
         ORDER BY m.actor_id LIMIT {{limit:UInt64}} OFFSET {{offset:UInt64}}"
    );
    let mut query = ctx
        .clickhouse
        .client()
        .query(&sql)
        .param("segment", id.to_string())
        .param("computed_at", at)
        .param("limit", limit)
        .param("offset", page.offset);
    if salted {
        // One salt per segment and caller: pseudonyms are stable across pages of one listing.
        query = query.param("salt", listing_salt(&ctx, id, &principal));
    }
    let users: Vec<String> = query
        .fetch_all()
        .await
        .map_err(|e| crate::query::clickhouse_error(&e))?;
    let size = segment.size.unwrap_or(0).max(0) as u64;
    let next =
        (page.offset + (users.len() as u64) < size).then(|| page.offset + users.len() as u64);
    Ok(Json(json!({
        "segment": id,
        "computed_at": segment.computed_at,
        "size": size,
        "pseudonymized": salted,
        "users": users,
        "next_offset": next,
    })))
}

fn listing_salt(ctx: &Context, id: Uuid, principal: &Principal) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(ctx.settings.privacy.salt.expose().as_bytes());
    hash.update(id.as_bytes());
    hash.update(principal.name.as_bytes());
    hex::encode(hash.finalize())
}

/// What an export holds and where it goes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    #[serde(default = "default_format")]
    format: String,
    #[serde(default)]
    attributes: Vec<String>,
    /// Deliver to this URL (one POST) instead of answering with the file.
    #[serde(default)]
    webhook: Option<String>,
}

fn default_format() -> String {
    "csv".into()
}

/// `POST /v1/segments/{id}/export`: the members with the chosen attributes, streamed as CSV or
/// NDJSON (or delivered to a webhook). Pseudonymized for roles without raw personal data (a fresh
/// salt per export); audited with rows and bytes.
pub async fn export(
    State(ctx): State<Context>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: ExportRequest = if body.iter().all(u8::is_ascii_whitespace) {
        crate::error::parse_body(b"{}", ErrorCode::InvalidExport)?
    } else {
        crate::error::parse_body(&body, ErrorCode::InvalidExport)?
    };
    let segment = visible(&ctx, &principal, id).await?;
    let role = ctx.access.role(&principal)?;
    if !role.export {
        return Err(ApiError::forbidden(
            ErrorCode::ExportNotAllowed,
            format!("role {:?} may not export", principal.role),
        ));
    }
    let (format, content_type) = match request.format.as_str() {
        "csv" => ("CSVWithNames", "text/csv; charset=utf-8"),
        "json" | "ndjson" => ("JSONEachRow", "application/x-ndjson"),
        other => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidExport,
                format!("format: must be csv or json, got {other:?}"),
            ));
        }
    };
    let mut columns = Vec::new();
    for (i, name) in request.attributes.iter().enumerate() {
        let Some((_, expression)) = ATTRIBUTES.iter().find(|(a, _)| a == name) else {
            let known: Vec<&str> = ATTRIBUTES.iter().map(|(a, _)| *a).collect();
            return Err(ApiError::bad_request(
                ErrorCode::InvalidExport,
                format!(
                    "attributes[{i}]: unknown attribute {name:?} (known: {})",
                    known.join(", ")
                ),
            ));
        };
        columns.push((name.as_str(), *expression));
    }
    if let Some(url) = &request.webhook {
        crate::alerts::channels::check_url("webhook", url)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidExport, e.to_string()))?;
    }
    let at = current(&segment)?;
    let (member, salted) = member_expression(&ctx, &principal)?;
    let selected: String = columns
        .iter()
        .map(|(name, _)| format!(", a.{name} AS {name}"))
        .collect();
    let aggregated: String = columns
        .iter()
        .map(|(name, expression)| format!(", {expression} AS {name}"))
        .collect();
    let members = "SELECT actor_id FROM segment_members WHERE segment_id = {segment:UUID} AND computed_at = {computed_at:DateTime64(3, 'UTC')}";
    let sql = if columns.is_empty() {
        format!("SELECT {member} AS user FROM ({members}) AS m ORDER BY m.actor_id")
    } else {
        format!(
            "SELECT {member} AS user{selected} FROM ({members}) AS m
             LEFT JOIN (SELECT actor_id{aggregated} FROM events WHERE actor_id IN ({members}) GROUP BY actor_id) AS a
             ON a.actor_id = m.actor_id ORDER BY m.actor_id"
        )
    };
    let mut query = ctx
        .clickhouse
        .client()
        .query(&sql)
        .with_setting("log_comment", json!({"segment": id, "action": "export", "key": principal.name, "role": principal.role}).to_string())
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .param("segment", id.to_string())
        .param("computed_at", at);
    if salted {
        query = query.param("salt", hex::encode(rand::random::<[u8; 16]>()));
    }
    let mut record =
        AuditRecord::for_definition("segment.export", "segment", id, &principal, &headers, peer);
    record.params = Some(
        json!({"format": request.format, "attributes": request.attributes, "pseudonymized": salted, "webhook": request.webhook.is_some()}),
    );
    record.rows = segment.size;
    let mut cursor = query
        .fetch_bytes(format)
        .map_err(|e| crate::query::clickhouse_error(&e))?;
    if let Some(url) = request.webhook {
        let mut file = Vec::new();
        while let Some(chunk) = cursor
            .next()
            .await
            .map_err(|e| crate::query::clickhouse_error(&e))?
        {
            file.extend_from_slice(&chunk);
            if file.len() > MAX_WEBHOOK_EXPORT {
                return Err(ApiError::bad_request(
                    ErrorCode::ExportTooLarge,
                    format!("the export exceeds {MAX_WEBHOOK_EXPORT} bytes; download it instead"),
                ));
            }
        }
        let bytes = file.len();
        let delivered = ctx
            .outbound
            .post(&url)
            .header(header::CONTENT_TYPE, content_type)
            .header("x-chgate-segment", id.to_string())
            .body(file)
            .send()
            .await;
        let status = delivered.as_ref().map(|r| r.status().as_u16()).ok();
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        record.bytes = Some(bytes as i64);
        record.outcome = if ok {
            "ok".into()
        } else {
            "webhook_failed".into()
        };
        ctx.audit.record(record);
        return Ok(Json(
            json!({"delivered": ok, "status": status, "bytes": bytes, "rows": segment.size}),
        )
        .into_response());
    }
    let mut response = Response::new(axum::body::Body::from_stream(
        crate::query::stream(cursor, (), "a segment export").await?,
    ));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let extension = if format == "CSVWithNames" {
        "csv"
    } else {
        "ndjson"
    };
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"segment-{id}.{extension}\""
    )) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(crate::audit::count_body(
        response,
        Pending::new(&ctx.audit, record),
    ))
}
