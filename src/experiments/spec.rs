//! An experiment as clients define it, and the rules it must follow.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::definitions::{check_name, Invalid};

/// Bounds of a definition.
const VARIANTS: std::ops::RangeInclusive<usize> = 2..=10;
const METRICS: std::ops::RangeInclusive<usize> = 1..=10;
const WINDOW_DAYS: std::ops::RangeInclusive<u8> = 1..=90;
const MAX_TEXT: usize = 200;
const STEPS: std::ops::RangeInclusive<usize> = 2..=10;
/// A retention metric's event that stands for any event.
const ANY_EVENT: &str = "*";
const MAX_HYPOTHESIS: usize = 10_000;
const MAX_DESCRIPTION: usize = 10_000;

/// An A/B experiment: who is exposed to which variant, and what is measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// The experiment's key: the value of the exposure's experiment property.
    pub name: String,
    #[serde(default)]
    pub hypothesis: String,
    /// Control first.
    pub variants: Vec<Variant>,
    #[serde(default)]
    pub exposure: Exposure,
    /// Exposures from this instant count…
    pub start: DateTime<Utc>,
    /// …until this one (exclusive); none: until now.
    #[serde(default)]
    pub end: Option<DateTime<Utc>>,
    /// The first is the primary metric; each defined here or a saved metric.
    pub metrics: Vec<MetricEntry>,
    /// The smallest relative effect worth detecting (0.05: 5 %).
    #[serde(default = "default_mde")]
    pub minimum_detectable_effect: f64,
    /// Always-valid p-values and confidence sequences (mSPRT), for looking every day.
    #[serde(default)]
    pub sequential: bool,
    /// Variance reduction with the pre-exposure value of each metric.
    #[serde(default)]
    pub cuped: bool,
}

fn default_mde() -> f64 {
    0.05
}

/// One arm of the experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The value of the exposure's variant property.
    pub key: String,
    /// Share of users assigned, relative to the other weights; equal when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// The event that records a user seeing a variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Exposure {
    pub event: String,
    pub experiment_property: String,
    pub variant_property: String,
}

impl Default for Exposure {
    fn default() -> Self {
        Self {
            event: "$experiment_exposure".into(),
            experiment_property: "experiment".into(),
            variant_property: "variant".into(),
        }
    }
}

/// A metric of an experiment: defined in place, or a saved metric (`/v1/metrics`) by id.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum MetricEntry {
    Defined(Metric),
    Saved(SavedMetric),
}

/// A saved metric an experiment uses: `{"metric": "<id>"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedMetric {
    pub metric: Uuid,
}

/// An object with a `metric` field refers to a saved metric; any other is a metric defined in
/// place, and its errors name its own fields.
impl<'de> Deserialize<'de> for MetricEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(deserializer)?;
        if value.get("metric").is_some() {
            SavedMetric::deserialize(value)
                .map(Self::Saved)
                .map_err(D::Error::custom)
        } else {
            Metric::deserialize(value)
                .map(Self::Defined)
                .map_err(D::Error::custom)
        }
    }
}

/// What is compared between variants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub kind: MetricKind,
    /// The event measured after exposure (retention: `*` for any event); none for a funnel.
    #[serde(default)]
    pub event: String,
    /// Funnel metrics: the events the user must do in order within the window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
    /// Retention metrics: the day after exposure the user must be active on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u8>,
    /// Mean metrics: the numeric event property summed per user, or the `revenue` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// Days after exposure that count (not for retention).
    #[serde(default = "default_window")]
    pub window_days: u8,
}

fn default_window() -> u8 {
    14
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// Whether the user did the event within the window.
    Conversion,
    /// The per-user total of a numeric property within the window.
    Mean,
    /// Whether the user did the event (or any event) on day `day` after exposure.
    Retention,
    /// Whether the user did the steps in order within the window.
    Funnel,
}

impl MetricKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Conversion => "conversion",
            Self::Mean => "mean",
            Self::Retention => "retention",
            Self::Funnel => "funnel",
        }
    }

    /// Whether each user's value is 0 or 1 (a rate), not a total.
    pub fn is_binary(self) -> bool {
        self != Self::Mean
    }
}

impl ExperimentSpec {
    /// The weights of the variants, equal when none is given.
    pub fn weights(&self) -> Vec<f64> {
        self.variants
            .iter()
            .map(|v| v.weight.unwrap_or(1.0))
            .collect()
    }

    /// The variant keys, control first.
    pub fn keys(&self) -> Vec<String> {
        self.variants.iter().map(|v| v.key.clone()).collect()
    }

    /// Checks every field; the error names the first field that breaks a rule.
    pub fn check(&self) -> Result<(), Invalid> {
        check_name(&self.name)?;
        if self.hypothesis.len() > MAX_HYPOTHESIS {
            return Err(Invalid::new(
                "hypothesis",
                format!("must be at most {MAX_HYPOTHESIS} characters"),
            ));
        }
        self.check_variants()?;
        for (field, value) in [
            ("exposure.event", &self.exposure.event),
            (
                "exposure.experiment_property",
                &self.exposure.experiment_property,
            ),
            ("exposure.variant_property", &self.exposure.variant_property),
        ] {
            text(field, value)?;
        }
        if self.end.is_some_and(|end| end <= self.start) {
            return Err(Invalid::new("end", "must be after start"));
        }
        self.check_metrics()?;
        let mde = self.minimum_detectable_effect;
        if !(mde.is_finite() && mde > 0.0 && mde <= 10.0) {
            return Err(Invalid::new(
                "minimum_detectable_effect",
                "must be a relative effect above 0 and at most 10 (0.05 is 5 %)",
            ));
        }
        Ok(())
    }

    fn check_variants(&self) -> Result<(), Invalid> {
        let keys: Vec<&str> = self.variants.iter().map(|v| v.key.as_str()).collect();
        distinct(
            "variants",
            &keys,
            VARIANTS,
            "variants, control first",
            "key",
        )?;
        for (i, variant) in self.variants.iter().enumerate() {
            if let Some(weight) = variant.weight {
                if !(weight.is_finite() && weight > 0.0) {
                    return Err(Invalid::new(
                        format!("variants[{i}].weight"),
                        "must be a positive number",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The metrics defined in place, and their count; names are checked once saved metrics are
    /// read ([`check_metric_names`]).
    fn check_metrics(&self) -> Result<(), Invalid> {
        if !METRICS.contains(&self.metrics.len()) {
            return Err(Invalid::new(
                "metrics",
                format!(
                    "must have {} to {} metrics, the primary first",
                    METRICS.start(),
                    METRICS.end()
                ),
            ));
        }
        for (i, entry) in self.metrics.iter().enumerate() {
            if let MetricEntry::Defined(metric) = entry {
                metric.check(&|name| format!("metrics[{i}].{name}"))?;
            }
        }
        Ok(())
    }
}

/// The metrics of an experiment, saved ones read: each name used once.
pub fn check_metric_names(metrics: &[Metric]) -> Result<(), Invalid> {
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    distinct(
        "metrics",
        &names,
        METRICS,
        "metrics, the primary first",
        "name",
    )
}

impl Metric {
    /// Checks every field; `field` makes the path of one of its fields for the message.
    pub fn check(&self, field: &impl Fn(&str) -> String) -> Result<(), Invalid> {
        text(&field("name"), &self.name)?;
        if self.description.len() > MAX_DESCRIPTION {
            return Err(Invalid::new(
                field("description"),
                format!("must be at most {MAX_DESCRIPTION} characters"),
            ));
        }
        check_shape(self, field)?;
        match (self.kind, &self.property) {
            (MetricKind::Mean, None) => {
                return Err(Invalid::new(
                    field("property"),
                    "is required for a mean metric: a numeric event property, or revenue",
                ))
            }
            (MetricKind::Mean, Some(property)) => text(&field("property"), property)?,
            (_, Some(_)) => {
                return Err(Invalid::new(
                    field("property"),
                    "only a mean metric reads a property",
                ))
            }
            (_, None) => {}
        }
        if !WINDOW_DAYS.contains(&self.window_days) {
            return Err(Invalid::new(field("window_days"), "must be 1 to 90"));
        }
        Ok(())
    }
}

/// The event, steps and day a metric of its kind has, and only those.
fn check_shape(metric: &Metric, field: &impl Fn(&str) -> String) -> Result<(), Invalid> {
    let kind = metric.kind;
    if kind == MetricKind::Funnel {
        if !metric.event.is_empty() {
            return Err(Invalid::new(
                field("event"),
                "a funnel metric has steps, not an event",
            ));
        }
        if !STEPS.contains(&metric.steps.len()) {
            return Err(Invalid::new(
                field("steps"),
                format!(
                    "a funnel metric has {} to {} steps, in order",
                    STEPS.start(),
                    STEPS.end()
                ),
            ));
        }
        for (k, step) in metric.steps.iter().enumerate() {
            text(&field(&format!("steps[{k}]")), step)?;
        }
    } else {
        text(&field("event"), &metric.event)?;
        if metric.event == ANY_EVENT && kind != MetricKind::Retention {
            return Err(Invalid::new(
                field("event"),
                "* (any event) is for retention metrics",
            ));
        }
        if !metric.steps.is_empty() {
            return Err(Invalid::new(
                field("steps"),
                "only a funnel metric has steps",
            ));
        }
    }
    match (kind, metric.day) {
        (MetricKind::Retention, Some(day)) if WINDOW_DAYS.contains(&day) => Ok(()),
        (MetricKind::Retention, _) => Err(Invalid::new(
            field("day"),
            "a retention metric needs the day after exposure, 1 to 90",
        )),
        (_, Some(_)) => Err(Invalid::new(
            field("day"),
            "only a retention metric has a day",
        )),
        (_, None) => Ok(()),
    }
}

/// A list of `count` items whose `key`s are texts, unique in the list.
fn distinct(
    list: &str,
    keys: &[&str],
    count: std::ops::RangeInclusive<usize>,
    items: &str,
    key: &str,
) -> Result<(), Invalid> {
    if !count.contains(&keys.len()) {
        return Err(Invalid::new(
            list,
            format!("must have {} to {} {items}", count.start(), count.end()),
        ));
    }
    for (i, value) in keys.iter().enumerate() {
        let field = format!("{list}[{i}].{key}");
        text(&field, value)?;
        if keys[..i].contains(value) {
            return Err(Invalid::new(
                field,
                format!("{value:?} is used by another item of {list}"),
            ));
        }
    }
    Ok(())
}

/// A key or name: 1 to 200 characters, not only spaces.
fn text(field: &str, value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() || value.len() > MAX_TEXT {
        return Err(Invalid::new(
            field,
            format!("must be 1 to {MAX_TEXT} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// A change to a valid definition.
    type Adjust = fn(&mut Value);

    /// A valid definition with a conversion and a mean metric.
    pub(in crate::experiments) fn example() -> Value {
        json!({
            "name": "checkout-button",
            "variants": [{"key": "control"}, {"key": "green"}],
            "start": "2026-03-01T00:00:00Z",
            "metrics": [
                {"name": "purchases", "kind": "conversion", "event": "purchase"},
                {"name": "revenue", "kind": "mean", "event": "purchase", "property": "revenue"}
            ]
        })
    }

    fn spec(adjust: impl FnOnce(&mut Value)) -> Result<ExperimentSpec, String> {
        let mut body = example();
        adjust(&mut body);
        let spec: ExperimentSpec = serde_json::from_value(body).map_err(|e| e.to_string())?;
        spec.check().map_err(|e| e.to_string())?;
        check_metric_names(&defined(&spec)).map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// The metrics of a definition without saved ones.
    pub(in crate::experiments) fn defined(spec: &ExperimentSpec) -> Vec<Metric> {
        spec.metrics
            .iter()
            .map(|entry| match entry {
                MetricEntry::Defined(metric) => metric.clone(),
                MetricEntry::Saved(saved) => panic!("saved metric {}", saved.metric),
            })
            .collect()
    }

    #[test]
    fn a_minimal_definition_takes_the_documented_defaults() {
        let spec = spec(|_| {}).unwrap();
        assert_eq!(spec.exposure.event, "$experiment_exposure");
        assert_eq!(spec.exposure.variant_property, "variant");
        assert_eq!(defined(&spec)[0].window_days, 14);
        assert_eq!(spec.minimum_detectable_effect, 0.05);
        assert_eq!(spec.weights(), [1.0, 1.0]);
        assert!(!spec.sequential && !spec.cuped && spec.end.is_none());
    }

    #[test]
    fn retention_and_funnel_metrics_take_their_own_fields() {
        let spec = spec(|b| {
            b["metrics"] = json!([
                {"name": "day 7", "kind": "retention", "event": "*", "day": 7},
                {"name": "checkout", "kind": "funnel", "steps": ["add_to_cart", "purchase"], "window_days": 3}
            ])
        })
        .unwrap();
        let metrics = defined(&spec);
        assert_eq!(metrics[0].day, Some(7));
        assert_eq!(metrics[1].steps, ["add_to_cart", "purchase"]);
        assert!(metrics.iter().all(|m| m.kind.is_binary()));
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        let cases: [(Adjust, &str); 14] = [
            (
                |b| b["metrics"][0]["kind"] = json!("retention"),
                "metrics[0].day: ",
            ),
            (|b| b["metrics"][0]["day"] = json!(3), "metrics[0].day: "),
            (
                |b| b["metrics"][0]["kind"] = json!("funnel"),
                "metrics[0].event: ",
            ),
            (
                |b| b["metrics"][0] = json!({"name": "f", "kind": "funnel", "steps": ["cart"]}),
                "metrics[0].steps: ",
            ),
            (
                |b| b["metrics"][0]["event"] = json!("*"),
                "metrics[0].event: ",
            ),
            (|b| b["variants"] = json!([{"key": "a"}]), "variants: "),
            (
                |b| b["variants"][1]["key"] = json!("control"),
                "variants[1].key: ",
            ),
            (
                |b| b["variants"][0]["weight"] = json!(0),
                "variants[0].weight: ",
            ),
            (|b| b["end"] = json!("2026-02-01T00:00:00Z"), "end: "),
            (|b| b["metrics"] = json!([]), "metrics: "),
            (
                |b| b["metrics"][1]["property"] = Value::Null,
                "metrics[1].property: ",
            ),
            (
                |b| b["metrics"][0]["property"] = json!("amount"),
                "metrics[0].property: ",
            ),
            (
                |b| b["metrics"][0]["window_days"] = json!(91),
                "metrics[0].window_days: ",
            ),
            (
                |b| b["minimum_detectable_effect"] = json!(0),
                "minimum_detectable_effect: ",
            ),
        ];
        for (adjust, field) in cases {
            let error = spec(adjust).unwrap_err();
            assert!(error.starts_with(field), "{field} → {error}");
        }
        assert!(spec(|b| b["colour"] = json!("red"))
            .unwrap_err()
            .contains("unknown field"));
        let twice = spec(|b| b["metrics"][1]["name"] = json!("purchases")).unwrap_err();
        assert!(twice.starts_with("metrics[1].name: "), "{twice}");
    }

    #[test]
    fn a_metric_is_defined_in_place_or_refers_to_a_saved_one_by_id() {
        let id = "0b5b8f0e-7a40-4d6e-9a59-2f1d3c4b5a69";
        let body = json!({
            "name": "e",
            "variants": [{"key": "a"}, {"key": "b"}],
            "start": "2026-03-01T00:00:00Z",
            "metrics": [{"metric": id}, {"name": "p", "kind": "conversion", "event": "purchase", "window_days": 14}]
        });
        let spec: ExperimentSpec = serde_json::from_value(body.clone()).unwrap();
        spec.check().unwrap();
        assert!(matches!(&spec.metrics[0], MetricEntry::Saved(s) if s.metric.to_string() == id));
        assert!(matches!(&spec.metrics[1], MetricEntry::Defined(m) if m.name == "p"));
        assert_eq!(json!(spec)["metrics"], body["metrics"]);

        let mut extra = body.clone();
        extra["metrics"][0]["name"] = json!("x");
        let error = serde_json::from_value::<ExperimentSpec>(extra).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `name`"),
            "{error}"
        );
        let mut not_an_id = body;
        not_an_id["metrics"][0]["metric"] = json!("revenue");
        assert!(serde_json::from_value::<ExperimentSpec>(not_an_id).is_err());
    }
}
