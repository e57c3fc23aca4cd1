//! `/v1/experiments`: the routes every definition has ([`crate::definitions::http`]; `POST
//! …/results` computes the results and keeps them as a run), and the results now.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::Value;
use uuid::Uuid;

use super::Experiments;
use crate::access::auth::Principal;
use crate::definitions::Context;
use crate::error::ApiError;
use crate::query::runner::Admission;

/// `GET /v1/experiments/{id}/results`: the results now, computed as the experiment's owner;
/// `Cache-Control: no-cache` runs the queries again when the owner's role may bypass the cache.
pub async fn results(
    State(ctx): State<Context>,
    principal: Principal,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let experiment = crate::definitions::visible::<Experiments>(&ctx, &principal, id).await?;
    let fresh = crate::query::http::no_cache(&headers);
    Ok(Json(
        super::results(&ctx, &experiment, Admission::Request, fresh).await?,
    ))
}
