//! The HTTP bindings every kind of definition shares, under `/v1/{plural}`: create, list, get,
//! replace, delete, run now, and the runs. A kind's own routes (an alert's events, a report's
//! downloads, a segment's members) live with the kind.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{Context, Kind};
use crate::access::auth::Principal;
use crate::audit::AuditRecord;
use crate::error::ApiError;

/// The shared routes of kind `K`.
pub fn routes<K: Kind, S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Context: FromRef<S>,
    Principal: FromRequestParts<S, Rejection = ApiError>,
{
    let collection = format!("/v1/{}", K::PLURAL);
    let routes = Router::new()
        .route(&collection, get(list::<K>).post(create::<K>))
        .route(
            &format!("{collection}/{{id}}"),
            get(detail::<K>).put(replace::<K>).delete(delete::<K>),
        );
    if !K::RUNS {
        return routes;
    }
    routes
        .route(&format!("{collection}/{{id}}/runs"), get(runs::<K>))
        .route(
            &format!("{collection}/{{id}}/{}", K::RUN_PATH),
            post(run::<K>),
        )
}

fn audit<K: Kind>(
    verb: &str,
    id: Uuid,
    principal: &Principal,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> AuditRecord {
    AuditRecord::for_definition(
        &format!("{}.{verb}", K::KIND),
        K::KIND,
        id,
        principal,
        headers,
        peer,
    )
}

/// `POST /v1/{plural}`: stores the definition (and its schedule) as the caller's.
async fn create<K: Kind>(
    State(ctx): State<Context>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec: K::Spec = crate::error::parse_body(&body, K::INVALID)?;
    let id = Uuid::new_v4();
    super::store::<K>(&ctx, &principal, id, &spec, true).await?;
    ctx.audit
        .record(audit::<K>("create", id, &principal, &headers, peer));
    if K::RUN_ON_STORE {
        super::run_now::<K>(&ctx, id).await?;
    }
    let view = super::visible::<K>(&ctx, &principal, id).await?;
    Ok((StatusCode::CREATED, Json(json!(view))))
}

/// `GET /v1/{plural}`: the caller's definitions (every one for admins).
async fn list<K: Kind>(
    State(ctx): State<Context>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let views = super::list::<K>(&ctx, &principal).await?;
    let mut body = serde_json::Map::new();
    body.insert(K::PLURAL.to_string(), json!(views));
    Ok(Json(Value::Object(body)))
}

/// `GET /v1/{plural}/{id}`
async fn detail<K: Kind>(
    State(ctx): State<Context>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let view = super::visible::<K>(&ctx, &principal, id).await?;
    Ok(Json(K::detail(&ctx, view).await?))
}

/// `PUT /v1/{plural}/{id}`: replaces the definition; it keeps running as its owner.
async fn replace<K: Kind>(
    State(ctx): State<Context>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let existing = super::visible::<K>(&ctx, &principal, id).await?;
    let spec: K::Spec = crate::error::parse_body(&body, K::INVALID)?;
    K::replaceable(&existing)?;
    let owner = K::owner(&existing).principal();
    super::store::<K>(&ctx, &owner, id, &spec, false).await?;
    ctx.audit
        .record(audit::<K>("update", id, &principal, &headers, peer));
    if K::RUN_ON_STORE {
        super::run_now::<K>(&ctx, id).await?;
    }
    Ok(Json(json!(
        super::visible::<K>(&ctx, &principal, id).await?
    )))
}

/// `DELETE /v1/{plural}/{id}`
async fn delete<K: Kind>(
    State(ctx): State<Context>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    super::visible::<K>(&ctx, &principal, id).await?;
    super::delete::<K>(&ctx, id).await?;
    ctx.audit
        .record(audit::<K>("delete", id, &principal, &headers, peer));
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/{plural}/{id}/{run}`: runs now (recorded as a manual run and audited): `{run, result}`.
async fn run<K: Kind>(
    State(ctx): State<Context>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    super::visible::<K>(&ctx, &principal, id).await?;
    let mut record = audit::<K>("run", id, &principal, &headers, peer);
    let outcome = super::run_now::<K>(&ctx, id).await.map_err(ApiError::from);
    match &outcome {
        Ok(body) => {
            record.rows = body["result"]["rows"].as_i64();
            record.bytes = body["result"]["bytes"].as_i64();
        }
        Err(e) => record.outcome = e.code().to_string(),
    }
    ctx.audit.record(record);
    outcome.map(Json)
}

/// `GET /v1/{plural}/{id}/runs?limit=`: runs, newest first, with what each produced.
async fn runs<K: Kind>(
    State(ctx): State<Context>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(limit): Query<crate::schedule::Limit>,
) -> Result<Json<Value>, ApiError> {
    super::visible::<K>(&ctx, &principal, id).await?;
    let runs = super::runs::<K>(&ctx, id, limit.clamped()).await?;
    Ok(Json(json!({ "runs": runs })))
}
