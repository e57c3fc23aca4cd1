//! Template endpoints: the catalog, running a template, the OpenAPI document and the docs page.

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;

use super::{collect_json, start, Attribution, Format};
use crate::app::AppState;
use crate::auth::Principal;
use crate::cache::{CacheStatus, ResultCache};
use crate::catalog::{Catalog, Template};
use crate::error::ApiError;
use crate::http::body::read_body;
use crate::http::request_id::current_request_id;
use bytes::Bytes;

/// Largest JSON body of a template call.
const MAX_PARAMS_BODY: usize = 1024 * 1024;

/// `GET /v1/catalog`: every template with its versions.
pub async fn catalog(State(state): State<AppState>, _principal: Principal) -> Json<Value> {
    let catalog = state.catalog.get();
    let templates: Vec<Value> = catalog
        .names()
        .filter_map(|(name, versions)| {
            let latest = versions.values().next_back()?;
            Some(json!({
                "name": name,
                "latest": latest.version(),
                "versions": versions.keys().collect::<Vec<_>>(),
                "description": latest.meta().description,
                "params": params_json(latest),
                "deprecated": versions.values().filter(|t| t.meta().deprecated.is_some()).map(|t| t.version()).collect::<Vec<_>>(),
            }))
        })
        .collect();
    Json(json!({ "templates": templates }))
}

/// `GET /v1/catalog/{name}`: every version in detail, with example calls.
pub async fn catalog_entry(
    State(state): State<AppState>,
    _principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let catalog = state.catalog.get();
    let versions = catalog
        .names()
        .find(|(n, _)| **n == name)
        .map(|(_, v)| v)
        .ok_or_else(|| unknown_template(&catalog, &name))?;
    let detail: Vec<Value> = versions.values().map(|t| version_json(t)).collect();
    Ok(Json(
        json!({ "name": name, "latest": catalog.latest_version(&name), "versions": detail }),
    ))
}

fn params_json(template: &Template) -> Value {
    Value::Array(
        template
            .meta()
            .params
            .iter()
            .map(|(name, spec)| {
                json!({
                    "name": name,
                    "type": spec.param_type().clickhouse(),
                    "required": spec.required,
                    "default": spec.default,
                    "description": spec.description,
                    "allowed": spec.allowed,
                    "min": spec.min,
                    "max": spec.max,
                    "min_items": spec.min_items,
                    "max_items": spec.max_items,
                })
            })
            .collect(),
    )
}

fn version_json(template: &Template) -> Value {
    let meta = template.meta();
    let path = format!("/v1/queries/{}/v{}", template.name(), template.version());
    let examples: Vec<Value> = meta
        .examples
        .iter()
        .map(|e| {
            let query: Vec<String> = e
                .params
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Array(items) => items.iter().map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| i.to_string())).collect::<Vec<_>>().join(","),
                        other => other.to_string(),
                    };
                    format!("{k}={}", url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>())
                })
                .collect();
            json!({"name": e.name, "params": e.params, "call": format!("GET {path}?{}", query.join("&"))})
        })
        .collect();
    json!({
        "version": template.version(),
        "path": path,
        "description": meta.description,
        "params": params_json(template),
        "columns": meta.columns,
        "roles": meta.roles,
        "cache_ttl_secs": meta.cache_ttl_secs,
        "max_execution_secs": meta.max_execution_secs,
        "max_rows": meta.max_rows,
        "examples": examples,
        "deprecated": meta.deprecated,
    })
}

pub(crate) fn unknown_template(catalog: &Catalog, name: &str) -> ApiError {
    let known: Vec<&str> = catalog.names().map(|(n, _)| n.as_str()).collect();
    ApiError::not_found(
        "unknown_template",
        format!(
            "no template named {name:?} (available: {})",
            known.join(", ")
        ),
    )
}

/// `GET|POST /v1/queries/{name}`: the latest version.
#[allow(clippy::too_many_arguments)]
pub async fn run_latest(
    State(state): State<AppState>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request = Request {
        name,
        version: None,
        method,
        query,
        headers,
        body,
    };
    audited(state, principal, peer, request).await
}

/// `GET|POST /v1/queries/{name}/v{N}`: a pinned version.
#[allow(clippy::too_many_arguments)]
pub async fn run_version(
    State(state): State<AppState>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((name, version)): Path<(String, String)>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let number = version
        .strip_prefix('v')
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_version",
                format!("version {version:?} must look like v1, v2, …"),
            )
        })?;
    let request = Request {
        name,
        version: Some(number),
        method,
        query,
        headers,
        body,
    };
    audited(state, principal, peer, request).await
}

/// Runs a template and records the run in the audit log, whatever its outcome; a successful run
/// is recorded when its response has been sent, with the bytes sent and (for JSON) the rows.
async fn audited(
    state: AppState,
    principal: Principal,
    peer: SocketAddr,
    request: Request,
) -> Result<Response, ApiError> {
    let resource = match request.version {
        Some(v) => format!("{}/v{v}", request.name),
        None => request.name.clone(),
    };
    let mut record = crate::audit::AuditRecord::for_request(
        "template.run",
        &resource,
        &principal,
        &request.headers,
        peer,
    );
    // The query string until the parameters are read; then all of them (query string and body).
    record.params = request
        .query
        .as_deref()
        .map(|q| Value::String(q.to_string()));
    let mut pending = crate::audit::Pending::new(&state.audit, record);
    let mut params = None;
    let result = run(state, principal, request, &mut params).await;
    if let Some(params) = params {
        pending.record().params = Some(Value::Object(params));
    }
    match result {
        Ok(response) => {
            pending.record().status = i32::from(response.status().as_u16());
            Ok(crate::audit::count_body(response, pending))
        }
        Err(error) => {
            let record = pending.record();
            record.status = i32::from(error.status().as_u16());
            record.outcome = error.code().to_string();
            Err(error)
        }
    }
}

/// What a template call asked for.
struct Request {
    name: String,
    version: Option<u32>,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
}

/// Runs a template; `audit_params` receives the call's parameters once they are read.
async fn run(
    state: AppState,
    principal: Principal,
    request: Request,
    audit_params: &mut Option<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let Request {
        name,
        version,
        method,
        query,
        headers,
        body,
    } = request;
    let catalog = state.catalog.get();
    let (template, role) = super::authorize(
        state.access.role(&principal)?,
        &catalog,
        &principal,
        &name,
        version,
    )?;
    let template = template.as_ref();
    let rate = state
        .access
        .limiter
        .request(&principal, &role.limits)
        .await?;
    let (mut params, mut format) = query_params(query.as_deref(), template)?;
    if method == Method::POST {
        let bytes = read_body(body, &headers, MAX_PARAMS_BODY, &state.buffers).await?;
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            let Value::Object(object) = serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                ApiError::bad_request("invalid_json", format!("body: invalid JSON: {e}"))
            })?
            else {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "body: must be a JSON object of parameters",
                ));
            };
            for (key, value) in object {
                if key == "format" {
                    format = Some(parse_format(value.as_str().unwrap_or_default())?);
                } else if params.insert(key.clone(), value).is_some() {
                    return Err(ApiError::bad_request(
                        "duplicate_parameter",
                        format!("{key}: given both in the query string and the body"),
                    ));
                }
            }
        }
    }
    *audit_params = Some(params.clone());
    let format = format
        .or_else(|| {
            headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .and_then(Format::from_accept)
        })
        .unwrap_or(Format::Json);
    if format != Format::Json && !role.export {
        return Err(ApiError::forbidden(
            "export_not_allowed",
            format!(
                "format: {} is a download, and role {:?} may not export; ask for json",
                format.name(),
                principal.role
            ),
        ));
    }
    let (rendered, filters) = super::render_for(
        &catalog,
        template,
        &role,
        &principal,
        params,
        state.clickhouse.database(),
    )?;
    let request_id = current_request_id().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let who = Attribution {
        request_id: &request_id,
        principal: &principal,
        max_execution_secs: role.limits.max_execution_secs,
        max_rows: role.limits.max_result_rows,
        table_filters: filters.setting(),
        max_json_bytes: state.buffers.total_bytes() / (2 * super::JSON_EXPANSION) as u64,
        pii_salt: super::Attribution::pii_salt(&role, state.settings.privacy.salt.expose()),
    };
    let labels = [
        ("template", template.name().to_string()),
        ("format", format.name().to_string()),
    ];
    let mut response = if format == Format::Json {
        // Runs the query (holding a query slot only while it runs) and renders the JSON body.
        let compute = || async {
            let _slot = state.access.limiter.query_slot(&principal, &role.limits)?;
            let started = std::time::Instant::now();
            let running = start(state.clickhouse.client(), template, &rendered, format, &who)?;
            let mut held = crate::http::body::Reservation::new(&state.buffers);
            let result = collect_json(running, template, &mut held).await?;
            metrics::histogram!("chgate_query_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            serde_json::to_vec(&result)
                .map(Bytes::from)
                .map_err(|e| ApiError::Internal(e.into()))
        };
        let (status, body) = if !state.cache.enabled() || template.meta().cache_ttl_secs == 0 {
            (CacheStatus::Bypass, compute().await?)
        } else {
            let fresh = state
                .cache
                .freshness(template, &rendered, state.clickhouse.database())
                .await;
            let ttl = fresh.ttl;
            let key = ResultCache::key(&[
                state.clickhouse.database(),
                template.name(),
                &template.version().to_string(),
                // The statement too: a template edited in place under its version renders anew.
                &rendered.sql,
                &rendered.values_json,
                &filters.setting().unwrap_or_default(),
                // Results are cut at the role's row limit and masked for roles without personal
                // data, so roles differing in either get entries of their own.
                &role.limits.max_result_rows.to_string(),
                if role.pii { "pii" } else { "masked" },
                format.name(),
                // The generations of the days the call reads: rows committed for any of them
                // make a new key.
                &fresh.stamp.text,
            ]);
            let no_cache = headers
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"));
            if no_cache && role.cache_bypass {
                let body = compute().await?;
                state.cache.store(&key, &body, ttl).await;
                (CacheStatus::Bypass, body)
            } else if let Some(body) = state.cache.get(&key).await {
                (CacheStatus::Hit, body)
            } else {
                (
                    CacheStatus::Miss,
                    state.cache.load(&key, ttl, compute).await?,
                )
            }
        };
        metrics::counter!("chgate_cache_requests_total", "outcome" => status.header().to_ascii_lowercase()).increment(1);
        let rows = json_rows(&body);
        let mut response = Response::new(Body::from(body));
        if let Some(rows) = rows {
            response
                .extensions_mut()
                .insert(crate::audit::ResultRows(rows));
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
            .headers_mut()
            .insert("x-cache", HeaderValue::from_static(status.header()));
        response
    } else {
        // Streamed as ClickHouse produces it, never buffered whole (so never cached); the query
        // slot is held until the stream ends.
        let slot = state.access.limiter.query_slot(&principal, &role.limits)?;
        let started = std::time::Instant::now();
        let running = start(state.clickhouse.client(), template, &rendered, format, &who)?;
        metrics::histogram!("chgate_query_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        let mut response =
            Response::new(super::stream_body(running.cursor, slot, "a template result").await?);
        response.headers_mut().insert(
            "x-cache",
            HeaderValue::from_static(CacheStatus::Bypass.header()),
        );
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        response.extensions_mut().insert(format.row_lines());
        response
    };
    metrics::counter!("chgate_queries_total", &labels).increment(1);
    deprecation_headers(template, response.headers_mut());
    rate.apply(response.headers_mut());
    Ok(response)
}

/// The `rows` of a rendered JSON result, found near its end (where `collect_json` puts it) without
/// parsing the whole body.
fn json_rows(body: &[u8]) -> Option<i64> {
    let tail = &body[body.len().saturating_sub(1024)..];
    let key = b"\"rows\":";
    let at = tail.windows(key.len()).rposition(|w| w == key)? + key.len();
    let digits: String = tail[at..]
        .iter()
        .map(|b| *b as char)
        .skip_while(|c| c.is_whitespace())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn parse_format(text: &str) -> Result<Format, ApiError> {
    Format::parse(text).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("format: must be one of json, csv, tsv, ndjson, got {text:?}"),
        )
    })
}

/// Parameters from a query string: repeated keys make arrays; `format` is the output format.
fn query_params(
    query: Option<&str>,
    template: &Template,
) -> Result<(Map<String, Value>, Option<Format>), ApiError> {
    let mut params: Map<String, Value> = Map::new();
    let mut format = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "format" {
            format = Some(parse_format(&value)?);
            continue;
        }
        let is_array =
            template.meta().params.get(key.as_ref()).is_some_and(|s| {
                matches!(s.param_type(), crate::catalog::params::ParamType::Array(_))
            });
        let key = key.trim_end_matches("[]").to_string();
        match params.get_mut(&key) {
            Some(Value::Array(items)) if is_array => items.push(Value::String(value.into_owned())),
            Some(existing) if is_array => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(value.into_owned())]);
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "duplicate_parameter",
                    format!("{key}: given more than once, but it is not an array"),
                ));
            }
            None => {
                params.insert(key, Value::String(value.into_owned()));
            }
        }
    }
    Ok((params, format))
}

fn deprecation_headers(template: &Template, headers: &mut HeaderMap) {
    let Some(deprecation) = &template.meta().deprecated else {
        return;
    };
    headers.insert("deprecation", HeaderValue::from_static("true"));
    if let Some(sunset) = deprecation.sunset.and_then(|d| d.and_hms_opt(0, 0, 0)) {
        let text = sunset
            .and_utc()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert("sunset", value);
        }
    }
    if let Some(successor) = &deprecation.successor {
        let link = format!(
            "</v1/queries/{}/{successor}>; rel=\"successor-version\"",
            template.name()
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.insert(header::LINK, value);
        }
    }
}

/// `GET /openapi.json`.
pub async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(super::openapi::document(&state.catalog.get()))
}

/// `GET /docs`: a self-contained page describing every template (no external assets).
pub async fn docs(State(state): State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        Html(super::openapi::docs_page(&state.catalog.get())),
    )
}
