//! `/v1/predictions/…`: anomalies in a template's series, and its forecast.

use axum::extract::State;
use axum::Json;
use serde_json::Value;

use super::{AnomalyRequest, ForecastRequest};
use crate::access::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::query::runner::Runner;

/// `POST /v1/predictions/anomalies`: the template's rows, each with its expected value, band,
/// deviation and whether it is an anomaly.
pub async fn anomalies(
    State(runner): State<Runner>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: AnomalyRequest = crate::error::parse_body(&body, ErrorCode::InvalidPrediction)?;
    Ok(Json(super::anomalies(&runner, &principal, request).await?))
}

/// `POST /v1/predictions/forecast`: the next points of the template's series with 80 and 95 %
/// intervals, and the model's backtested accuracy against the seasonal naive forecast.
pub async fn forecast(
    State(runner): State<Runner>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: ForecastRequest = crate::error::parse_body(&body, ErrorCode::InvalidPrediction)?;
    Ok(Json(super::forecast(&runner, &principal, request).await?))
}
