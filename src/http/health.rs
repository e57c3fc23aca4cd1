//! Liveness, readiness and metrics endpoints.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use crate::access::auth::Principal;

/// The dependencies readiness probes.
#[derive(Clone)]
pub struct Dependencies {
    pub clickhouse: crate::storage::clickhouse::ClickHouse,
    pub postgres: crate::storage::postgres::Postgres,
    pub redis: Option<crate::storage::redis::Redis>,
}

/// `GET /healthz`: 200 while the process serves requests.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[derive(Serialize)]
struct DependencyStatus {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    latency_ms: f64,
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    dependencies: BTreeMap<&'static str, DependencyStatus>,
}

/// `GET /readyz`: 200 only when every configured dependency answers; otherwise 503 naming each
/// failing dependency and its error.
pub async fn readyz(State(state): State<Dependencies>) -> impl IntoResponse {
    let (clickhouse, postgres, redis) = tokio::join!(
        probe(state.clickhouse.ping()),
        probe(state.postgres.ping()),
        async {
            match &state.redis {
                Some(redis) => Some(probe(redis.ping()).await),
                None => None,
            }
        }
    );
    let mut dependencies = BTreeMap::from([("clickhouse", clickhouse), ("postgres", postgres)]);
    if let Some(redis) = redis {
        dependencies.insert("redis", redis);
    }
    let ready = dependencies.values().all(|d| d.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        dependencies,
    };
    (status, Json(body))
}

async fn probe(check: impl std::future::Future<Output = anyhow::Result<()>>) -> DependencyStatus {
    let started = std::time::Instant::now();
    let result = check.await;
    DependencyStatus {
        ok: result.is_ok(),
        error: result.err().map(|e| format!("{e:#}")),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        super::metrics::render(),
    )
}

/// `GET /v1/whoami`: the authenticated principal, so clients can check their credentials.
pub async fn whoami(principal: Principal) -> Json<Principal> {
    Json(principal)
}
