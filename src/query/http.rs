//! Template endpoints: the catalog, running a template, the OpenAPI document and the docs page.

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;

use super::runner::{Admission, Answer, Call, Output, Runner};
use super::Format;
use crate::access::auth::Principal;
use crate::cache::CacheStatus;
use crate::catalog::Template;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::http::body::read_body;

/// Largest JSON body of a template call.
const MAX_PARAMS_BODY: usize = 1024 * 1024;

/// `GET /v1/catalog`: every template with its versions.
pub async fn catalog(State(runner): State<Runner>, _principal: Principal) -> Json<Value> {
    let catalog = runner.catalog.get();
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
    State(runner): State<Runner>,
    _principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let catalog = runner.catalog.get();
    let versions = catalog
        .names()
        .find(|(n, _)| **n == name)
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::from(super::runner::missing(&catalog, &name, None)))?;
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

/// `GET|POST /v1/queries/{name}`: the latest version.
#[allow(clippy::too_many_arguments)]
pub async fn run_latest(
    State(runner): State<Runner>,
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
    audited(runner, principal, peer, request).await
}

/// `GET|POST /v1/queries/{name}/v{N}`: a pinned version.
#[allow(clippy::too_many_arguments)]
pub async fn run_version(
    State(runner): State<Runner>,
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
                ErrorCode::InvalidVersion,
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
    audited(runner, principal, peer, request).await
}

/// Runs a template and records the run in the audit log, whatever its outcome; a successful run
/// is recorded when its response has been sent, with the bytes sent and (for JSON) the rows.
async fn audited(
    runner: Runner,
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
    let call = match read_call(&runner, request).await {
        Ok(call) => call,
        Err(error) => {
            record.status = i32::from(error.status().as_u16());
            record.outcome = error.code().to_string();
            runner.audit.record(record);
            return Err(error);
        }
    };
    let output = runner.run(&principal, call, record).await?;
    Ok(respond(output))
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

/// The call a request describes: parameters from the query string (repeated keys make arrays for
/// array parameters) and a JSON body, the format from `format` or `Accept`, `Cache-Control:
/// no-cache`.
async fn read_call(runner: &Runner, request: Request) -> Result<Call, ApiError> {
    let Request {
        name,
        version,
        method,
        query,
        headers,
        body,
    } = request;
    let template = runner.template(&name, version)?;
    let (mut params, mut format) = query_params(query.as_deref(), &template)?;
    if method == Method::POST {
        let bytes = read_body(body, &headers, MAX_PARAMS_BODY, &runner.buffers).await?;
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            let Value::Object(object) = serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                ApiError::bad_request(ErrorCode::InvalidJson, format!("body: invalid JSON: {e}"))
            })?
            else {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidBody,
                    "body: must be a JSON object of parameters",
                ));
            };
            for (key, value) in object {
                if key == "format" {
                    format = Some(parse_format(value.as_str().unwrap_or_default())?);
                } else if params.insert(key.clone(), value).is_some() {
                    return Err(ApiError::bad_request(
                        ErrorCode::DuplicateParameter,
                        format!("{key}: given both in the query string and the body"),
                    ));
                }
            }
        }
    }
    let format = format
        .or_else(|| {
            headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .and_then(Format::from_accept)
        })
        .unwrap_or(Format::Json);
    let fresh = no_cache(&headers);
    Ok(Call {
        template: name,
        version,
        params,
        format,
        fresh,
        admission: Admission::Request,
    })
}

/// Whether the request asks for a result computed again (`Cache-Control: no-cache`).
pub fn no_cache(headers: &HeaderMap) -> bool {
    headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"))
}

/// The response for a template's output; the audit record is written when the body has been sent.
fn respond(output: Output) -> Response {
    let mut response = match output.answer {
        Answer::Json { body, rows, cache } => {
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
                .insert("x-cache", HeaderValue::from_static(cache.header()));
            response
        }
        Answer::Stream(stream) => {
            let mut response = Response::new(Body::from_stream(stream));
            response.headers_mut().insert(
                "x-cache",
                HeaderValue::from_static(CacheStatus::Bypass.header()),
            );
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(output.format.content_type()),
            );
            response.extensions_mut().insert(output.format.row_lines());
            response
        }
    };
    deprecation_headers(&output.template, response.headers_mut());
    if let Some(rate) = output.rate {
        rate.apply(response.headers_mut());
    }
    crate::audit::count_body(response, output.audit)
}

fn parse_format(text: &str) -> Result<Format, ApiError> {
    Format::parse(text).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidParameter,
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
                    ErrorCode::DuplicateParameter,
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
pub async fn openapi(State(runner): State<Runner>) -> Json<Value> {
    Json(super::openapi::document(&runner.catalog.get()))
}

/// `GET /docs`: a self-contained page describing every template (no external assets).
pub async fn docs(State(runner): State<Runner>) -> impl IntoResponse {
    (
        StatusCode::OK,
        Html(super::openapi::docs_page(&runner.catalog.get())),
    )
}
