//! The REST API's router and the middleware every request passes through.

pub mod body;
pub mod health;
pub mod metrics;
pub mod request_id;

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::alerts::Alerts;
use crate::app::AppState;
use crate::definitions::http as definitions;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::experiments::metrics::Metrics;
use crate::experiments::Experiments;
use crate::ingest::http as ingest;
use crate::query::http as query;
use crate::reports::Reports;
use crate::segments::Segments;

/// Builds the REST API router over `state`.
pub fn router(state: AppState) -> Router {
    let request_timeout = Duration::from_secs(state.settings.server.request_timeout_secs);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/whoami", get(health::whoami))
        .route(
            "/v1/admin/keys",
            get(crate::access::admin::list).post(crate::access::admin::create),
        )
        .route("/v1/admin/audit", get(crate::access::admin::audit_log))
        .route(
            "/v1/admin/keys/{key}",
            axum::routing::delete(crate::access::admin::revoke),
        )
        .merge(definitions::routes::<Alerts, AppState>())
        .route("/v1/alerts/{id}/events", get(crate::alerts::http::events))
        .merge(definitions::routes::<Segments, AppState>())
        .route("/v1/segments/{id}/users", get(crate::segments::http::users))
        .route(
            "/v1/segments/{id}/export",
            post(crate::segments::http::export),
        )
        .merge(definitions::routes::<Reports, AppState>())
        .route(
            "/v1/reports/runs/{run}/download",
            get(crate::reports::http::download),
        )
        .merge(definitions::routes::<Metrics, AppState>())
        .merge(definitions::routes::<Experiments, AppState>().route(
            "/v1/experiments/{id}/results",
            get(crate::experiments::http::results),
        ))
        .route(
            "/v1/predictions/anomalies",
            post(crate::predictions::http::anomalies),
        )
        .route(
            "/v1/predictions/forecast",
            post(crate::predictions::http::forecast),
        )
        .route("/v1/catalog", get(query::catalog))
        .route("/v1/catalog/{name}", get(query::catalog_entry))
        .route(
            "/v1/queries/{name}",
            get(query::run_latest).post(query::run_latest),
        )
        .route(
            "/v1/queries/{name}/{version}",
            get(query::run_version).post(query::run_version),
        )
        .route("/openapi.json", get(query::openapi))
        .route("/docs", get(query::docs))
        .route("/v1/events", post(ingest::events))
        .route("/v1/batch", post(ingest::segment_batch))
        .route("/v1/track", post(ingest::segment_track))
        .route("/v1/page", post(ingest::segment_page))
        .route("/v1/screen", post(ingest::segment_screen))
        .route("/v1/identify", post(ingest::segment_identify))
        .route("/v1/group", post(ingest::segment_group))
        .route("/v1/alias", post(ingest::segment_alias))
        .route_layer(middleware::from_fn(tag_route))
        .fallback(not_found)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            request_timeout,
        ))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(
        ErrorCode::RouteNotFound,
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}

/// The route template a response was produced by, copied from the request so `observe` can label
/// metrics with it (the matched path is only known inside the router).
#[derive(Clone)]
struct RouteLabel(String);

async fn tag_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteLabel(route));
    }
    response
}

/// Request id, tracing span, access log line and request metrics for every request.
pub(crate) async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id::from_headers(request.headers());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request
            .headers_mut()
            .insert(request_id::X_REQUEST_ID.clone(), value);
    }
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        path = %request.uri().path(),
    );
    let mut response = request_id::scope(request_id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    let elapsed = started.elapsed();
    let status = response.status();
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| "unmatched".to_string());
    let labels = [
        ("route", route),
        ("method", method.to_string()),
        ("status", status.as_u16().to_string()),
    ];
    ::metrics::counter!("chgate_http_requests_total", &labels).increment(1);
    ::metrics::histogram!("chgate_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "request finished"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(request_id::X_REQUEST_ID.clone(), value);
    }
    response
}
