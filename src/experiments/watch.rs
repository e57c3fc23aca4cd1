//! Experiments watched by alerts and reports: `"experiment": "<id>"` in place of a template. The
//! results now, computed as the experiment's owner, become a table with one row per metric and
//! variant ([`COLUMNS`]) that an alert's condition reads (`p_value`, `probability_to_beat_control`,
//! `reliable`, …) and a report renders like a template's result. `params.metric` keeps one
//! metric's rows: its name, or `primary`.

use std::time::Duration;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::analysis::Results;
use super::{Experiment, Experiments};
use crate::access::auth::Principal;
use crate::definitions::{Context, DefinitionError, Invalid, Kind};
use crate::query::runner::Admission;

/// The columns of the table and their ClickHouse types (as a template's `meta` names them).
pub const COLUMNS: [(&str, &str); 18] = [
    ("metric", "String"),
    ("primary", "UInt8"),
    ("kind", "String"),
    ("variant", "String"),
    ("users", "UInt64"),
    ("converters", "UInt64"),
    ("rate", "Nullable(Float64)"),
    ("mean", "Nullable(Float64)"),
    ("absolute_lift", "Nullable(Float64)"),
    ("absolute_ci_lower", "Nullable(Float64)"),
    ("absolute_ci_upper", "Nullable(Float64)"),
    ("relative_lift", "Nullable(Float64)"),
    ("p_value", "Nullable(Float64)"),
    ("probability_to_beat_control", "Nullable(Float64)"),
    ("expected_loss", "Nullable(Float64)"),
    ("sequential_p_value", "Nullable(Float64)"),
    ("reliable", "UInt8"),
    ("sample_ratio_p_value", "Nullable(Float64)"),
];

/// The parameter that keeps one metric's rows.
const METRIC_PARAM: &str = "metric";
/// Its value for the primary metric.
const PRIMARY: &str = "primary";

/// How long a scheduled read waits for a query slot of the experiment's owner.
const SLOT_WAIT: Duration = Duration::from_secs(60);

/// Checks the fields of an alert or a report that watches an experiment: no template, version or
/// period of its own, and at most `params.metric`. The metric to keep, if any.
pub fn check(
    template: &str,
    version: Option<u32>,
    params: &Map<String, Value>,
) -> Result<Option<String>, Invalid> {
    if !template.is_empty() {
        return Err(Invalid::new(
            "template",
            "give a template or an experiment to watch, not both",
        ));
    }
    if version.is_some() {
        return Err(Invalid::new(
            "version",
            "an experiment's results have no template version",
        ));
    }
    let mut metric = None;
    for (name, value) in params {
        match (name.as_str(), value) {
            (METRIC_PARAM, Value::String(m)) if !m.trim().is_empty() => metric = Some(m.clone()),
            (METRIC_PARAM, _) => {
                return Err(Invalid::new(
                    "params.metric",
                    "must be a metric's name, or primary",
                ))
            }
            _ => {
                return Err(Invalid::new(
                    format!("params.{name}"),
                    "an experiment's results take only params.metric (a metric's name, or primary)",
                ))
            }
        }
    }
    Ok(metric)
}

/// That `owner` may see `experiment`, the one a definition of kind `K` watches (if any); else the
/// definition is invalid at `experiment`.
pub async fn check_watched<K: Kind>(
    ctx: &Context,
    owner: &Principal,
    experiment: Option<Uuid>,
) -> Result<(), DefinitionError> {
    let Some(id) = experiment else {
        return Ok(());
    };
    match crate::definitions::visible::<Experiments>(ctx, owner, id).await {
        Ok(_) => Ok(()),
        Err(DefinitionError::Unknown { .. }) => {
            Err(crate::definitions::invalid::<K>(Invalid::new(
                "experiment",
                format!("no experiment {id} that the owner may see"),
            )))
        }
        Err(other) => Err(other),
    }
}

/// Experiment `id`'s table now, read for `owner` (an alert's or a report's) and computed as the
/// experiment's owner, waiting for query slots like other scheduled work: the experiment and the
/// table as a template's JSON result (`meta`, `data`).
pub async fn table(
    ctx: &Context,
    owner: &Principal,
    id: Uuid,
    metric: Option<&str>,
) -> Result<(Experiment, Value), String> {
    let experiment = crate::definitions::visible::<Experiments>(ctx, owner, id)
        .await
        .map_err(|e| format!("experiment: {e}"))?;
    let results = super::analyze(ctx, &experiment, Admission::Scheduled(SLOT_WAIT), false)
        .await
        .map_err(|e| format!("the experiment's results failed: {e}"))?;
    let table = rows(&results, metric)?;
    Ok((experiment, table))
}

/// `results` as a table: a row per metric (only `metric`'s, when given) and variant, control
/// first; comparisons are null on control's rows and wherever they could not be computed.
pub fn rows(results: &Results, metric: Option<&str>) -> Result<Value, String> {
    let kept: Vec<_> = results
        .metrics
        .iter()
        .filter(|m| match metric {
            None => true,
            Some(PRIMARY) => m.primary,
            Some(name) => m.name == name,
        })
        .collect();
    if let (Some(name), true) = (metric, kept.is_empty()) {
        let names: Vec<&str> = results.metrics.iter().map(|m| m.name.as_str()).collect();
        return Err(format!(
            "params.metric: the experiment has no metric {name:?} (metrics: {}; or primary)",
            names.join(", ")
        ));
    }
    let srm = results.sample_ratio.as_ref().map(|s| s.p_value);
    let mut data = Vec::new();
    for m in kept {
        for v in &m.variants {
            let c = v.comparison.as_ref();
            data.push(json!({
                "metric": m.name,
                "primary": u8::from(m.primary),
                "kind": m.kind,
                "variant": v.key,
                "users": v.users,
                "converters": v.converters,
                "rate": v.rate,
                "mean": v.mean,
                "absolute_lift": c.map(|c| c.absolute_lift),
                "absolute_ci_lower": c.map(|c| c.absolute_ci.lower),
                "absolute_ci_upper": c.map(|c| c.absolute_ci.upper),
                "relative_lift": c.and_then(|c| c.relative_lift),
                "p_value": c.map(|c| c.p_value),
                "probability_to_beat_control": c.map(|c| c.probability_to_beat_control),
                "expected_loss": c.map(|c| c.expected_loss),
                "sequential_p_value": v.sequential.as_ref().map(|s| s.p_value),
                "reliable": u8::from(results.reliable),
                "sample_ratio_p_value": srm,
            }));
        }
    }
    let meta: Vec<Value> = COLUMNS
        .iter()
        .map(|(name, ty)| json!({"name": name, "type": ty}))
        .collect();
    Ok(json!({"meta": meta, "data": data, "rows": data.len()}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::analysis::{MetricRows, Sums};
    use crate::experiments::spec::tests::{defined, example};
    use crate::experiments::spec::ExperimentSpec;

    fn results() -> Results {
        let spec: ExperimentSpec = serde_json::from_value(example()).unwrap();
        let sums = |users: u64, converters: u64| Sums {
            users,
            converters,
            value_sum: converters as f64 * 10.0,
            value_sum_squares: converters as f64 * 150.0,
            ..Sums::default()
        };
        let rows = MetricRows {
            variants: vec![sums(1000, 100), sums(1000, 150)],
            excluded_users: 0,
        };
        super::super::analysis::analyze(&spec, &defined(&spec), &[rows.clone(), rows])
    }

    #[test]
    fn a_row_per_metric_and_variant_with_every_column_and_comparisons_off_control() {
        let table = rows(&results(), None).unwrap();
        let data = table["data"].as_array().unwrap();
        assert_eq!(data.len(), 4);
        assert_eq!(table["meta"].as_array().unwrap().len(), COLUMNS.len());
        for row in data {
            for (name, _) in COLUMNS {
                assert!(row.get(name).is_some(), "{name} missing in {row}");
            }
        }
        let (control, green) = (&data[0], &data[1]);
        assert_eq!(
            (control["variant"].as_str(), control["primary"].as_u64()),
            (Some("control"), Some(1))
        );
        assert!(control["p_value"].is_null());
        assert!(green["p_value"].as_f64().unwrap() < 0.01);
        assert_eq!(green["rate"], 0.15);
        assert_eq!(green["reliable"], 1);
        assert_eq!(data[2]["metric"], "revenue");
        assert!(data[2]["rate"].is_null());
    }

    #[test]
    fn params_metric_keeps_the_primary_or_a_named_metric_and_names_the_metrics_when_unknown() {
        let results = results();
        let primary = rows(&results, Some("primary")).unwrap();
        assert_eq!(primary["rows"], 2);
        assert!(primary["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["metric"] == "purchases"));
        assert_eq!(
            rows(&results, Some("revenue")).unwrap()["data"][1]["metric"],
            "revenue"
        );
        let error = rows(&results, Some("sessions")).unwrap_err();
        assert!(
            error.starts_with("params.metric: ") && error.contains("purchases, revenue"),
            "{error}"
        );
    }

    #[test]
    fn a_watching_definition_has_no_template_version_or_other_params() {
        let params = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(check("", None, &Map::new()).unwrap(), None);
        assert_eq!(
            check("", None, &params(json!({"metric": "primary"}))).unwrap(),
            Some("primary".into())
        );
        for (template, version, p, field) in [
            ("dau", None, json!({}), "template"),
            ("", Some(1), json!({}), "version"),
            ("", None, json!({"metric": 3}), "params.metric"),
            ("", None, json!({"from": "today"}), "params.from"),
        ] {
            assert_eq!(
                check(template, version, &params(p)).unwrap_err().field,
                field
            );
        }
    }
}
