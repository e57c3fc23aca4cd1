//! Predictive analytics over template results. So far: anomalies in a series ([`anomaly`]), on
//! request (`POST /v1/predictions/anomalies`) and as an alert condition (`op: "anomaly"`).

pub mod anomaly;
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
    if let Err(e @ (anomaly::AnomalyError::Season | anomaly::AnomalyError::Threshold)) =
        anomaly::detect(&[], settings)
    {
        return Err(invalid(e.to_string()));
    }
    let result = runner
        .run_json(
            principal,
            Call {
                template: request.template.clone(),
                version: request.version,
                params: request.params,
                format: crate::query::Format::Json,
                fresh: false,
                admission: Admission::Request,
            },
        )
        .await?;
    let values = series(&result, &request.column).map_err(|e| invalid(format!("column: {e}")))?;
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
