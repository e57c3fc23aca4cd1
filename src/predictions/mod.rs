//! Predictive analytics over template results. So far: anomalies in a series ([`anomaly`]), on
//! request (`POST /v1/predictions/anomalies`) and as an alert condition (`op: "anomaly"`), and
//! forecasts of a series with their backtested accuracy ([`forecast`],
//! `POST /v1/predictions/forecast`).

pub mod anomaly;
pub mod forecast;
pub mod http;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use self::anomaly::Settings;
use crate::access::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::query::runner::{Admission, Call, Runner};

/// Points per cycle when none is given: days of a week.
pub const DEFAULT_SEASON: usize = 7;
/// Robust standard deviations that make an anomaly when none is given.
pub const DEFAULT_SENSITIVITY: f64 = 3.5;

/// The numeric values of `column` in the rows of a template's JSON result, in row order; null
/// cells are left out. The error names the column.
pub fn series(result: &Value, column: &str) -> Result<Vec<f64>, String> {
    let columns: Vec<&str> = result["meta"]
        .as_array()
        .map(|m| m.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    if !columns.contains(&column) {
        return Err(format!(
            "the result has no column {column:?} (columns: {})",
            columns.join(", ")
        ));
    }
    let mut values = Vec::new();
    for row in result["data"].as_array().into_iter().flatten() {
        let cell = &row[column];
        match cell {
            Value::Null => {}
            Value::Number(n) => values.extend(n.as_f64()),
            Value::String(s) => match s.parse::<f64>() {
                Ok(v) => values.push(v),
                Err(_) => return Err(format!("{column:?} is not numeric (found {cell})")),
            },
            _ => return Err(format!("{column:?} is not numeric (found {cell})")),
        }
    }
    Ok(values)
}

/// `POST /v1/predictions/anomalies`: a series template's call and how to judge it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyRequest {
    pub template: String,
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub params: Map<String, Value>,
    /// The numeric column judged; its rows are the series, in the template's order.
    pub column: String,
    /// Points per seasonal cycle (7: days of a week; 24: hours of a day; 1: none).
    #[serde(default = "default_season")]
    pub season: usize,
    #[serde(default = "default_sensitivity")]
    pub sensitivity: f64,
    #[serde(default)]
    pub min_deviation: f64,
}

fn default_season() -> usize {
    DEFAULT_SEASON
}

fn default_sensitivity() -> f64 {
    DEFAULT_SENSITIVITY
}

/// Runs the template as `principal` (the same rules as any call of it) and judges each row.
pub async fn anomalies(
    runner: &Runner,
    principal: &Principal,
    request: AnomalyRequest,
) -> Result<Value, ApiError> {
    let invalid = |message: String| ApiError::bad_request(ErrorCode::InvalidPrediction, message);
    let settings = Settings {
        season: request.season,
        sensitivity: request.sensitivity,
        min_deviation: request.min_deviation,
    };
    // Bad settings are refused before the query runs.
    settings.check().map_err(|e| invalid(e.to_string()))?;
    let (result, values) = run_series(
        runner,
        principal,
        request_call(&request.template, request.version, request.params),
        &request.column,
    )
    .await?;
    let points = anomaly::detect(&values, settings).map_err(|e| invalid(e.to_string()))?;
    let rows: Vec<&Value> = result["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| !row[&request.column].is_null())
        .collect();
    let judged: Vec<Value> = rows
        .iter()
        .zip(&points)
        .map(|(row, point)| {
            let mut out = json!(point);
            out["row"] = (*row).clone();
            out
        })
        .collect();
    Ok(json!({
        "template": request.template,
        "column": request.column,
        "season": request.season,
        "sensitivity": request.sensitivity,
        "min_deviation": request.min_deviation,
        "anomalies": points.iter().filter(|p| p.anomaly).count(),
        "points": judged,
    }))
}

/// The call of a series template on a caller's request.
fn request_call(template: &str, version: Option<u32>, params: Map<String, Value>) -> Call {
    Call {
        template: template.to_string(),
        version,
        params,
        format: crate::query::Format::Json,
        fresh: false,
        admission: Admission::Request,
    }
}

/// Runs `call` as `principal`: the JSON result and the values of `column`.
async fn run_series(
    runner: &Runner,
    principal: &Principal,
    call: Call,
    column: &str,
) -> Result<(Value, Vec<f64>), ApiError> {
    let result = runner.run_json(principal, call).await?;
    let values = series(&result, column)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPrediction, format!("column: {e}")))?;
    Ok((result, values))
}

/// `POST /v1/predictions/forecast`: a series template's call and how far to forecast it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastRequest {
    pub template: String,
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub params: Map<String, Value>,
    /// The numeric column forecast; its rows are the series, in the template's order.
    pub column: String,
    /// Points to forecast after the last row.
    pub horizon: usize,
    /// Points per seasonal cycle (7: days of a week; 24: hours of a day; 1: none).
    #[serde(default = "default_season")]
    pub season: usize,
}

/// Runs the template as `principal`, forecasts `horizon` points after its last row and backtests
/// the model against the seasonal naive forecast over the same series.
pub async fn forecast(
    runner: &Runner,
    principal: &Principal,
    request: ForecastRequest,
) -> Result<Value, ApiError> {
    let invalid = |message: String| ApiError::bad_request(ErrorCode::InvalidPrediction, message);
    // Bad settings are refused before the query runs.
    forecast::check_settings(request.season, request.horizon)
        .map_err(|e| invalid(e.to_string()))?;
    let (result, values) = run_series(
        runner,
        principal,
        request_call(&request.template, request.version, request.params),
        &request.column,
    )
    .await?;
    let (season, horizon) = (request.season, request.horizon);
    // The model fits in CPU time proportional to the series: off the async workers.
    let (steps, tested) = tokio::task::spawn_blocking(move || {
        Ok::<_, forecast::ForecastError>((
            forecast::forecast(&values, season, horizon)?,
            forecast::backtest(&values, season, horizon).ok(),
        ))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
    .map_err(|e| invalid(e.to_string()))?;
    let last = result["data"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .rev()
                .find(|row| !row[&request.column].is_null())
        })
        .cloned();
    let beats = tested
        .as_ref()
        .map(|t| t.model.mase < t.seasonal_naive.mase);
    Ok(json!({
        "template": request.template,
        "column": request.column,
        "season": season,
        "horizon": horizon,
        "method": if season > 1 { "MSTL, trend by AutoETS" } else { "AutoETS" },
        "after": last,
        "forecast": steps,
        "backtest": tested,
        "beats_seasonal_naive": beats,
    }))
}
