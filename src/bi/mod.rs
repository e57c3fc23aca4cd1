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
//!
//! Here: the router and the run of one statement. Reading the request (credentials, parameters,
//! the SQL) is in `request.rs`, what is sent to ClickHouse in `outgoing.rs`, the streamed answer in
//! `response.rs`, the result cache in `cached.rs`.

mod cached;
pub mod error;
mod outgoing;
mod request;
mod response;
pub mod settings;
pub mod statement;
mod upstream;

pub use upstream::Upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use self::cached::{cached, Failure};
use self::error::BiError;
use self::outgoing::outgoing;
use self::request::{authenticate, identity, param, query_id, read_sql, safe_id, session_database};
use self::response::streamed;
use self::statement::{Scope, StatementKind};
use crate::access::auth::Principal;
use crate::access::RowFilters;
use crate::audit::{AuditRecord, Origin, Pending};
use crate::cache::ResultCache;
use crate::sql::placeholders;

/// What the BI endpoint uses.
#[derive(Clone)]
pub struct Endpoint {
    /// Credentials as drivers send them.
    pub auth: crate::access::auth::Authenticator,
    /// Roles, policies and row filters.
    pub access: crate::access::Access,
    /// Every statement is audited.
    pub audit: crate::audit::AuditLog,
    /// Request bodies and cached results are held within the gateway's memory budget.
    pub buffers: crate::http::body::MemoryBudget,
    /// Results of cacheable statements.
    pub cache: ResultCache,
    /// The analytics database.
    pub clickhouse: crate::storage::clickhouse::ClickHouse,
    /// ClickHouse's HTTP interface, for the pass-through.
    pub upstream: Upstream,
    /// `bi` settings.
    pub settings: std::sync::Arc<crate::config::Settings>,
}

/// The BI listener's router.
pub fn router(state: Endpoint) -> Router {
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
    State(state): State<Endpoint>,
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

#[allow(clippy::too_many_arguments)]
async fn run(
    state: &Endpoint,
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
