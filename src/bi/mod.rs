//! The BI endpoint: ClickHouse's HTTP interface on its own listener, so Grafana, Superset and any
//! ClickHouse driver query through the gateway with their stock drivers.
//!
//! A request is authenticated like the REST API (API key or JWT, sent the ways drivers send
//! credentials), its statement classified and checked against the role ([`statement`]), its
//! settings passed through the role's settings policy ([`settings`]), and the role's row filters and
//! metadata visibility enforced by `additional_table_filters`, which the client can never set. The
//! query then runs on ClickHouse with `readonly = 2`, and ClickHouse's response (Native, RowBinary,
//! JSON, compressed or not) is streamed back unchanged with its `X-ClickHouse-*` headers, holding a
//! query slot until the last byte. Rate and concurrency limits, the audit log and (per role, opt-in)
//! the result cache work as for templates. The gateway's own refusals read like ClickHouse
//! exceptions ([`error`]).

pub mod error;
pub mod settings;
pub mod statement;
mod upstream;

pub use upstream::Upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;

use self::error::BiError;
use self::statement::{Plan, Scope, StatementKind};
use crate::access::auth::{Authorization, Principal};
use crate::access::policy::RolePolicy;
use crate::access::RowFilters;
use crate::app::AppState;
use crate::audit::{AuditRecord, Origin, Pending};
use crate::cache::{CacheStatus, ResultCache};
use crate::sql::placeholders;

/// URL parameters of ClickHouse's HTTP interface that are not settings and go through as sent.
const TRANSPORT: &[&str] = &[
    "default_format",
    "client_protocol_version",
    "compress",
    "quota_key",
    "buffer_size",
    "wait_end_of_query",
    "session_timeout",
    "session_check",
];

/// URL parameters the gateway consumes or replaces.
const CONSUMED: &[&str] = &[
    "query",
    "database",
    "query_id",
    "session_id",
    "user",
    "password",
    "decompress",
    "role",
];

/// Response headers that belong to one connection, not to the message.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// The BI listener's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ping", get(ping).head(ping))
        .route("/", get(query).post(query))
        .fallback(query)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            BiError::from(crate::error::ApiError::Internal(anyhow::anyhow!(
                "handler panicked"
            )))
            .into_response()
        }))
        .layer(middleware::from_fn(crate::http::observe))
        .with_state(state)
}

/// `GET /ping`: `Ok.` without authentication, as ClickHouse answers.
async fn ping() -> &'static str {
    "Ok.\n"
}

/// One statement over ClickHouse's HTTP interface.
async fn query(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let origin = Origin::from_headers(&headers, peer.ip().to_string());
    let principal = match authenticate(&state, &headers, &params).await {
        Ok(principal) => principal,
        Err(error) => {
            let mut record = AuditRecord::new("auth.failure", "bi", None, &origin);
            record.outcome = error.reason.to_string();
            record.status = i32::from(error.status.as_u16());
            state.audit.record(record);
            count("none", error.reason);
            return error.into_response();
        }
    };
    let mut audit = Pending::new(
        &state.audit,
        AuditRecord::new("bi.query", "", Some(&principal), &origin),
    );
    match run(
        &state, &principal, &method, &params, &headers, body, &mut audit,
    )
    .await
    {
        Ok(response) => response,
        Err(error) => {
            let record = audit.record();
            record.status = i32::from(error.status.as_u16());
            record.outcome = error.reason.to_string();
            metrics::counter!("chgate_bi_denied_total", "reason" => error.reason).increment(1);
            count("none", error.reason);
            error.into_response()
        }
    }
}

fn count(kind: &'static str, outcome: &'static str) {
    metrics::counter!("chgate_bi_queries_total", "kind" => kind, "outcome" => outcome).increment(1);
}

/// The credential as BI drivers send it: HTTP Basic (the key or JWT as the password; the user name
/// is free), `Authorization: Bearer`, `X-ClickHouse-Key`, or the `password` URL parameter.
fn credential(headers: &HeaderMap, params: &[(String, String)]) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        // A user name alone is a credential only when it is an API key (drivers send
        // `default` with an empty password when nothing is configured).
        return match Authorization::parse(value)? {
            Authorization::Bearer(token) => Some(token),
            Authorization::Basic { user, password } if password.is_empty() => {
                Some(user).filter(|u| u.starts_with(crate::access::keys::KEY_PREFIX))
            }
            Authorization::Basic { password, .. } => Some(password),
        }
        .filter(|c| !c.is_empty());
    }
    let header = headers
        .get("x-clickhouse-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    if let Some(key) = header {
        return Some(key.to_string());
    }
    params
        .iter()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Principal, BiError> {
    let Some(credential) = credential(headers, params) else {
        return Err(crate::error::ApiError::unauthorized(
            "missing_credentials",
            "no credentials: send an API key (or a JWT) as the password with HTTP Basic, X-ClickHouse-Key or the password parameter, or a JWT as Authorization: Bearer",
        )
        .into());
    };
    Ok(
        crate::access::auth::authenticate(&axum::extract::FromRef::from_ref(state), &credential)
            .await?,
    )
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The session database: the analytics database (also for `default` or none), or `system`.
fn session_database<'a>(
    requested: Option<&'a str>,
    analytics: &'a str,
) -> Result<&'a str, BiError> {
    match requested.map(str::trim) {
        None | Some("") | Some("default") => Ok(analytics),
        Some(db) if db == analytics || db == "system" => Ok(db),
        Some(db) => Err(BiError::unknown_database(db)),
    }
}

/// Characters ClickHouse ids may keep.
fn safe_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn identity(principal: &Principal) -> String {
    match principal.key_id {
        Some(id) => id.simple().to_string()[..12].to_string(),
        None => principal
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(48)
            .collect(),
    }
}

/// The client's `query_id` prefixed with the caller's identity, so that no caller can collide with
/// another's running query or learn that it runs; the request id when the client's is unsafe.
fn query_id(client: Option<&str>, principal: &Principal, request_id: &str) -> String {
    match client.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) if safe_id(id) => format!("{}:{id}", identity(principal)),
        _ => request_id.to_string(),
    }
}

/// Reads the SQL: the `query` parameter, then the body, joined by a newline (as ClickHouse does).
async fn read_sql(
    state: &AppState,
    params: &[(String, String)],
    headers: &HeaderMap,
    body: Body,
) -> Result<String, BiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("multipart/") {
        return Err(BiError::not_implemented(
            "external_tables",
            "multipart requests (external tables) are not supported by the BI endpoint",
        ));
    }
    if param(params, "decompress").is_some_and(|v| v != "0") {
        return Err(BiError::not_implemented(
            "decompress",
            "decompress=1 (compressed request bodies) is not supported; send the SQL as plain text or with Content-Encoding: gzip",
        ));
    }
    let limit = state.settings.bi.max_query_bytes;
    let body = crate::http::body::read_body(body, headers, limit, &state.buffers).await?;
    let body = std::str::from_utf8(&body)
        .map_err(|_| BiError::syntax("invalid_utf8", "the query is not valid UTF-8"))?;
    let parts: Vec<&str> = [param(params, "query").unwrap_or_default(), body]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    let sql = parts.join("\n");
    if sql.len() > limit {
        return Err(BiError::syntax(
            "query_too_large",
            format!("Max query size exceeded: the query is longer than {limit} bytes"),
        ));
    }
    Ok(sql)
}

/// What goes to ClickHouse besides the SQL.
struct Outgoing {
    pairs: Vec<(String, String)>,
    /// The client's settings that go through, for their values to be checked.
    settings: Vec<(String, String)>,
    dropped: Vec<String>,
    /// Parts of the request that decide the response, for the cache key.
    cache_parts: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn outgoing(
    params: &[(String, String)],
    values: &BTreeSet<String>,
    plan: &Plan,
    role: &RolePolicy,
    principal: &Principal,
    database: &str,
    filters: Option<String>,
    user_agent: &str,
) -> Result<Outgoing, BiError> {
    let mut pairs = vec![("database".to_string(), database.to_string())];
    let mut sent_settings = Vec::new();
    for (name, value) in params {
        if CONSUMED.contains(&name.as_str()) {
            continue;
        }
        if let Some(placeholder) = name.strip_prefix("param_") {
            // Only values of the placeholders the guard saw: a parameter ClickHouse would place
            // somewhere the gateway's lexer did not see a placeholder never reaches it.
            if values.contains(placeholder) {
                pairs.push((name.clone(), value.clone()));
            }
        } else if name == "default_format" {
            pairs.push((name.clone(), settings::check_format(value)?.to_string()));
        } else if TRANSPORT.contains(&name.as_str()) {
            pairs.push((name.clone(), value.clone()));
        } else {
            sent_settings.push((name.clone(), value.clone()));
        }
    }
    if let Some(format) = &plan.format {
        pairs.retain(|(k, _)| k != "default_format");
        pairs.push((
            "default_format".into(),
            settings::check_format(format)?.to_string(),
        ));
    }
    let decided = settings::decide(sent_settings, role, &principal.role)?;
    let mut cache_parts: Vec<String> = pairs
        .iter()
        .chain(&decided.forwarded)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    cache_parts.sort();
    cache_parts.push(format!("max_result_rows={}", decided.max_result_rows));
    pairs.extend(decided.forwarded.iter().cloned());
    let comment = serde_json::json!({
        "gateway": "chgate",
        "endpoint": "bi",
        "principal": principal.name,
        "key_id": principal.key_id,
        "role": principal.role,
        "user_agent": user_agent,
        "client_comment": decided.client_comment,
    });
    pairs.extend([
        ("readonly".to_string(), "2".to_string()),
        (
            "max_execution_time".to_string(),
            settings::format_number(decided.max_execution_secs),
        ),
        (
            "max_result_rows".to_string(),
            decided.max_result_rows.to_string(),
        ),
        (
            "cancel_http_readonly_queries_on_client_close".to_string(),
            "1".to_string(),
        ),
        ("log_comment".to_string(), comment.to_string()),
    ]);
    if !pairs.iter().any(|(k, _)| k == "result_overflow_mode") {
        pairs.push(("result_overflow_mode".into(), "throw".into()));
    }
    if let Some(filters) = filters {
        cache_parts.push(filters.clone());
        pairs.push(("additional_table_filters".to_string(), filters));
    }
    Ok(Outgoing {
        pairs,
        settings: decided.forwarded,
        dropped: decided.dropped,
        cache_parts,
    })
}

/// Why a cached run did not produce a cacheable body.
enum Failure {
    Refused(BiError),
    /// ClickHouse answered with an error: sent to the client as it is.
    Upstream(Response),
    /// Too large to cache: run again, streamed.
    TooLarge,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    state: &AppState,
    principal: &Principal,
    method: &Method,
    params: &[(String, String)],
    headers: &HeaderMap,
    body: Body,
    audit: &mut Pending,
) -> Result<Response, BiError> {
    let role = state.access.role(principal)?;
    if !role.bi {
        return Err(BiError::access_denied(
            "bi_not_allowed",
            format!("role {:?} may not use the BI endpoint", principal.role),
        ));
    }
    let rate = state
        .access
        .limiter
        .request(principal, &role.limits)
        .await?;
    let sql = read_sql(state, params, headers, body).await?;
    if sql.trim().is_empty() && method == Method::GET {
        return Ok("Ok.\n".into_response());
    }
    let analytics = state.clickhouse.database();
    let database = session_database(param(params, "database"), analytics)?;
    let scope = Scope {
        analytics,
        database,
        role: &role,
    };
    // Names given as parameters are put in place before the guard reads the statement.
    let bound =
        placeholders::bind_identifiers(&sql, |name| param(params, &format!("param_{name}")))
            .map_err(|e| BiError::bad_arguments("invalid_parameter", e.to_string()))?;
    let plan = statement::plan(&bound.sql, &scope)?;
    {
        let record = audit.record();
        *record = std::mem::take(record).with_sql(&sql);
        record.resource = if plan.tables.is_empty() {
            plan.kind.name().to_string()
        } else {
            format!(
                "{} {}",
                plan.kind.name(),
                plan.tables.iter().cloned().collect::<Vec<_>>().join(",")
            )
        };
        let bound: serde_json::Map<String, serde_json::Value> = params
            .iter()
            .filter(|(k, _)| k.starts_with("param_") || k == "database" || k == "default_format")
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        record.params = Some(serde_json::Value::Object(bound));
    }
    settings::check_inline(&plan.settings, &role, &principal.role)?;
    let mut filters: BTreeMap<String, String> =
        crate::access::row_filters(&role, principal, analytics, &plan.tables)?.tables;
    filters.extend(statement::visibility_filters(&scope));
    let filters = RowFilters { tables: filters }.setting();
    let request_id = crate::http::request_id::current_request_id()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut out = outgoing(
        params,
        &bound.values,
        &plan,
        &role,
        principal,
        database,
        filters,
        user_agent,
    )?;
    state.upstream.check_settings(&out.settings).await?;
    out.pairs.push((
        "query_id".into(),
        query_id(param(params, "query_id"), principal, &request_id),
    ));
    if let Some(session) = param(params, "session_id") {
        if !safe_id(session) {
            return Err(BiError::bad_arguments(
                "invalid_session_id",
                "session_id: must be 1 to 128 letters, digits, '-', '_', '.' or ':'",
            ));
        }
        out.pairs.push((
            "session_id".into(),
            format!("chgate-{}-{session}", identity(principal)),
        ));
    }
    let mut forward = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(user_agent) {
        forward.insert(header::USER_AGENT, value);
    }
    if let Ok(value) = HeaderValue::from_str(&audit.record().ip) {
        forward.insert("x-forwarded-for", value);
    }
    let kind = plan.kind;
    let ttl = role.bi_cache_ttl_secs;
    let cacheable = ttl > 0
        && state.cache.enabled()
        && kind == StatementKind::Select
        && param(params, "compress").is_none_or(|v| v == "0")
        && param(params, "session_id").is_none();
    // ClickHouse compresses when the client accepts gzip and turns `enable_http_compression` on;
    // cached answers (kept uncompressed) are compressed the same way on their way out.
    let gzip = param(params, "enable_http_compression").is_some_and(|v| v == "1")
        && headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|e| e.split(';').next().unwrap_or("").trim() == "gzip")
            });
    let from_cache = if cacheable {
        let key = ResultCache::key(
            &[
                "bi",
                analytics,
                &crate::sql::lexer::normalize(&plan.sql),
                &out.cache_parts.join("&"),
            ][..],
        );
        match cached(
            state,
            principal,
            &role,
            &plan,
            &out,
            forward.clone(),
            &key,
            ttl,
            gzip,
        )
        .await
        {
            Ok(response) => Some(response),
            Err(Failure::Refused(error)) => return Err(error),
            Err(Failure::Upstream(response)) => {
                let record = audit.record();
                record.status = i32::from(response.status().as_u16());
                record.outcome = "clickhouse_error".into();
                count(kind.name(), "clickhouse_error");
                Some(response)
            }
            Err(Failure::TooLarge) => None,
        }
    } else {
        None
    };
    let mut response = match from_cache {
        Some(response) => response,
        None => {
            if let Some(encoding) = headers.get(header::ACCEPT_ENCODING) {
                forward.insert(header::ACCEPT_ENCODING, encoding.clone());
            }
            streamed(state, principal, &role, &plan, &out, forward, audit).await?
        }
    };
    if !out.dropped.is_empty() {
        metrics::counter!("chgate_bi_settings_dropped_total").increment(out.dropped.len() as u64);
        if let Ok(value) = HeaderValue::from_str(&out.dropped.join(",")) {
            response
                .headers_mut()
                .insert("x-chgate-dropped-settings", value);
        }
    }
    rate.apply(response.headers_mut());
    Ok(response)
}

/// Runs the statement and streams ClickHouse's response back as it comes, holding a query slot;
/// the audit record moves into the stream and is written when the last byte is sent.
async fn streamed(
    state: &AppState,
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
async fn slot(
    state: &AppState,
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
fn caller_status(
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

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
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

/// A cached response: status, headers and the uncompressed body, in one blob.
fn encode_cached(headers: &HeaderMap, body: &[u8]) -> Bytes {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.as_str() != "x-clickhouse-query-id" && !HOP_BY_HOP.contains(&n.as_str()))
        .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let head = serde_json::to_vec(&pairs).unwrap_or_default();
    let mut blob = Vec::with_capacity(8 + head.len() + body.len());
    blob.extend_from_slice(&(head.len() as u64).to_le_bytes());
    blob.extend_from_slice(&head);
    blob.extend_from_slice(body);
    Bytes::from(blob)
}

fn decode_cached(blob: &Bytes) -> Option<(HeaderMap, Bytes)> {
    let len = usize::try_from(u64::from_le_bytes(blob.get(..8)?.try_into().ok()?)).ok()?;
    let pairs: Vec<(String, String)> = serde_json::from_slice(blob.get(8..8 + len)?).ok()?;
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            header::HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_str(&value).ok()?,
        );
    }
    Some((headers, blob.slice(8 + len..)))
}

/// `body` gzip-compressed (fast level), as ClickHouse answers clients that accept it.
fn gzipped(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

/// Serves a `SELECT` from the cache, or runs it once for every identical concurrent request.
#[allow(clippy::too_many_arguments)]
async fn cached(
    state: &AppState,
    principal: &Principal,
    role: &RolePolicy,
    plan: &Plan,
    out: &Outgoing,
    forward: HeaderMap,
    key: &str,
    ttl: u64,
    gzip: bool,
) -> Result<Response, Failure> {
    let (status, blob) = match state.cache.get(key).await {
        Some(blob) => (CacheStatus::Hit, blob),
        None => {
            let compute = || async {
                let _slot = slot(state, principal, role)
                    .await
                    .map_err(Failure::Refused)?;
                let started = Instant::now();
                let upstream = state
                    .upstream
                    .send(&out.pairs, plan.sql.clone(), forward)
                    .await
                    .map_err(Failure::Refused)?;
                let status = caller_status(upstream.status(), upstream.headers());
                let headers = upstream.headers().clone();
                let limit = state.settings.bi.max_cached_bytes;
                let mut body = Vec::new();
                let mut held = crate::http::body::Reservation::new(&state.buffers);
                let mut stream = upstream.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        Failure::Refused(BiError::unavailable(format!(
                            "the response from ClickHouse broke off: {e}"
                        )))
                    })?;
                    held.cover(body.len() + chunk.len())
                        .await
                        .map_err(|e| Failure::Refused(e.into()))?;
                    body.extend_from_slice(&chunk);
                    if status.is_success() && body.len() > limit {
                        return Err(Failure::TooLarge);
                    }
                }
                metrics::histogram!("chgate_bi_query_duration_seconds", "kind" => plan.kind.name())
                    .record(started.elapsed().as_secs_f64());
                if !status.is_success() {
                    let mut response = Response::new(Body::from(body));
                    *response.status_mut() = status;
                    copy_headers(&headers, response.headers_mut());
                    return Err(Failure::Upstream(response));
                }
                Ok(encode_cached(&headers, &body))
            };
            let blob = state
                .cache
                .load(key, Duration::from_secs(ttl), compute)
                .await?;
            (CacheStatus::Miss, blob)
        }
    };
    let (headers, body) = decode_cached(&blob).ok_or_else(|| {
        Failure::Refused(BiError::from(crate::error::ApiError::Internal(
            anyhow::anyhow!("a cached BI response is corrupt"),
        )))
    })?;
    metrics::counter!("chgate_cache_requests_total", "outcome" => status.header().to_ascii_lowercase()).increment(1);
    count(plan.kind.name(), "ok");
    metrics::counter!("chgate_bi_response_bytes_total").increment(body.len() as u64);
    let compressed = if gzip { gzipped(&body) } else { None };
    let mut response = match compressed {
        Some(compressed) => {
            let mut response = Response::new(Body::from(compressed));
            *response.headers_mut() = headers;
            response.headers_mut().remove(header::CONTENT_LENGTH);
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            response
        }
        None => {
            let mut response = Response::new(Body::from(body));
            *response.headers_mut() = headers;
            response
        }
    };
    if let Some((_, id)) = out.pairs.iter().find(|(k, _)| k == "query_id") {
        if let Ok(value) = HeaderValue::from_str(id) {
            response
                .headers_mut()
                .insert("x-clickhouse-query-id", value);
        }
    }
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(status.header()));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            key_id: None,
            name: "grafana key".into(),
            role: "analyst".into(),
            attributes: Default::default(),
        }
    }

    #[test]
    fn credentials_come_the_ways_drivers_send_them() {
        use base64::Engine as _;
        let basic = |user: &str, password: &str| {
            let mut headers = HeaderMap::new();
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
            );
            headers
        };
        assert_eq!(
            credential(&basic("default", "chg_x"), &[]).as_deref(),
            Some("chg_x")
        );
        assert_eq!(
            credential(&basic("chg_y", ""), &[]).as_deref(),
            Some("chg_y")
        );
        assert_eq!(credential(&basic("default", ""), &[]), None);
        let mut headers = HeaderMap::new();
        headers.insert("x-clickhouse-key", HeaderValue::from_static("chg_z"));
        assert_eq!(credential(&headers, &[]).as_deref(), Some("chg_z"));
        let params = vec![
            ("user".to_string(), "u".to_string()),
            ("password".to_string(), "chg_p".to_string()),
        ];
        assert_eq!(
            credential(&HeaderMap::new(), &params).as_deref(),
            Some("chg_p")
        );
    }

    #[test]
    fn query_ids_are_prefixed_with_the_caller_or_replaced_when_unsafe() {
        let id = "0b8a0a0e-3f3c-4c39-9a55-0b5b1d1f0a11";
        assert_eq!(
            query_id(Some(id), &principal(), "req"),
            format!("grafanakey:{id}")
        );
        assert_eq!(
            query_id(Some("mine"), &principal(), "req"),
            "grafanakey:mine"
        );
        assert_eq!(query_id(Some("a b'"), &principal(), "req"), "req");
        assert_eq!(query_id(None, &principal(), "req"), "req");
    }

    #[test]
    fn the_session_database_is_the_analytics_one_or_system() {
        assert_eq!(session_database(None, "a").unwrap(), "a");
        assert_eq!(session_database(Some("default"), "a").unwrap(), "a");
        assert_eq!(session_database(Some("system"), "a").unwrap(), "system");
        assert_eq!(session_database(Some("other"), "a").unwrap_err().code, 81);
    }

    #[test]
    fn cached_responses_round_trip_their_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-clickhouse-format", HeaderValue::from_static("Native"));
        headers.insert("x-clickhouse-query-id", HeaderValue::from_static("old"));
        let blob = encode_cached(&headers, b"\x01\x02body");
        let (back, body) = decode_cached(&blob).unwrap();
        assert_eq!(back.get("x-clickhouse-format").unwrap(), "Native");
        assert!(back.get("x-clickhouse-query-id").is_none());
        assert_eq!(&body[..], b"\x01\x02body");
    }
}
