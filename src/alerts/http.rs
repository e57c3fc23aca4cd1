//! `/v1/alerts`: the routes every definition has ([`crate::definitions::http`]; `evaluate` runs
//! one now), and an alert's history.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

use super::Alerts;
use crate::access::auth::Principal;
use crate::definitions::Context;
use crate::error::ApiError;

/// `GET /v1/alerts/{id}/events`: the history, newest first.
pub async fn events(
    State(ctx): State<Context>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(limit): Query<crate::schedule::Limit>,
) -> Result<Json<Value>, ApiError> {
    crate::definitions::visible::<Alerts>(&ctx, &principal, id).await?;
    let events = super::events(&ctx.pool, id, limit.clamped()).await?;
    Ok(Json(json!({ "events": events })))
}
