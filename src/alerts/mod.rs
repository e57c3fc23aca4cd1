//! Threshold alerts over query templates.
//!
//! An alert runs a template with fixed parameters (relative dates such as `now-15m` resolve at each
//! evaluation) on a cron schedule, with its creator's permissions, reads one numeric column of the
//! result and compares it with a threshold — or with the previous row, as a change in percent.
//! States: `ok` → `pending` (the condition holds, for less than `for_secs`) → `firing` (notified) →
//! `ok` again when it stops holding (notified as resolved). While firing, nothing more is sent
//! unless `renotify_secs` has passed since the last notification. Every transition is an event in
//! the alert's history, with the outcome of each channel.

pub mod channels;
pub mod http;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use self::channels::{Channel, Notification};
use crate::access::auth::Principal;
use crate::definitions::owner::Owner;
use crate::definitions::{Context, Invalid, Kind, Plan};
use crate::error::ErrorCode;
use crate::schedule::{Claimed, Outcome, RunError, Schedule};

/// Job kind of alert evaluations in the scheduler.
pub const JOB_KIND: &str = "alert";

/// An alert as clients define it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The template whose result is watched; empty when the alert watches an experiment.
    #[serde(default)]
    pub template: String,
    /// Pinned template version; the latest when absent.
    #[serde(default)]
    pub version: Option<u32>,
    /// Template parameters; for an experiment, at most `metric` (a metric's name, or `primary`).
    #[serde(default)]
    pub params: Map<String, Value>,
    /// An experiment whose results are watched instead of a template
    /// ([`crate::experiments::watch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Uuid>,
    pub condition: Condition,
    /// When to evaluate: a cron expression in UTC (5 fields, or 6 with seconds first).
    pub schedule: String,
    /// How long the condition must hold before the alert fires.
    #[serde(default)]
    pub for_secs: u64,
    #[serde(default)]
    pub severity: Severity,
    pub channels: Vec<Channel>,
    /// While firing, notify again this often (0: once).
    #[serde(default)]
    pub renotify_secs: u64,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

/// What is compared with what.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// A numeric column of the template's result.
    pub column: String,
    pub op: Op,
    pub threshold: f64,
    /// Which value of the column: the last row's (default), the first's, or over all rows.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// `anomaly`: points per seasonal cycle of the series (default 7: days of a week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub season: Option<usize>,
    /// `anomaly`: the least absolute deviation from the expected value that counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_deviation: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Above,
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<")]
    Below,
    #[serde(rename = "<=")]
    AtMost,
    /// The last row against the one before, in percent: fires at `threshold` or more.
    #[serde(rename = "change_pct_above")]
    ChangeAbove,
    /// … fires at `threshold` or less (a drop of 20 % is `-20`).
    #[serde(rename = "change_pct_below")]
    ChangeBelow,
    /// The last row lies outside the band the series' trend and weekly (or `season`) cycle
    /// expect: its deviation, in robust standard deviations, is `threshold` or more either way
    /// ([`crate::predictions::anomaly`]).
    #[serde(rename = "anomaly")]
    Anomaly,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    #[default]
    Last,
    First,
    Max,
    Min,
    Sum,
}

impl AlertSpec {
    /// What the alert watches, for messages: the template, or the experiment.
    pub fn source(&self) -> String {
        match self.experiment {
            Some(id) => format!("experiment {id}"),
            None => format!("template {}", self.template),
        }
    }
}

impl Condition {
    pub fn describe(&self) -> String {
        let op = match self.op {
            Op::Above => ">",
            Op::AtLeast => ">=",
            Op::Below => "<",
            Op::AtMost => "<=",
            Op::ChangeAbove => "changed by >= (%)",
            Op::ChangeBelow => "changed by <= (%)",
            Op::Anomaly => "deviates by >= (robust sd)",
        };
        let of = match self.op {
            Op::ChangeAbove | Op::ChangeBelow => "change".to_string(),
            Op::Anomaly => "anomaly".to_string(),
            _ => format!("{:?}", self.aggregate).to_lowercase(),
        };
        format!("{of}({}) {op} {}", self.column, self.threshold)
    }

    /// The observed value: `None` when the result has no rows to judge (never fires). For
    /// `anomaly`, the last row's deviation in robust standard deviations (0 when it is under
    /// `min_deviation` from the expected value; none while the series is too short).
    pub fn observe(&self, result: &Value) -> Result<Option<f64>, String> {
        let values = crate::predictions::series(result, &self.column)
            .map_err(|e| format!("condition.column: {e}"))?;
        if self.op == Op::Anomaly {
            use crate::predictions::anomaly::{detect, AnomalyError};
            let settings = self.anomaly_settings();
            let points = match detect(&values, settings) {
                Ok(points) => points,
                Err(AnomalyError::TooShort { .. }) => return Ok(None),
                Err(e) => return Err(format!("condition: {e}")),
            };
            return Ok(points.last().map(|p| {
                if (p.value - p.expected).abs() >= settings.min_deviation {
                    p.deviation
                } else {
                    0.0
                }
            }));
        }
        if matches!(self.op, Op::ChangeAbove | Op::ChangeBelow) {
            let [.., previous, last] = values.as_slice() else {
                return Ok(None);
            };
            if *previous == 0.0 {
                return Ok(None);
            }
            return Ok(Some((last - previous) / previous.abs() * 100.0));
        }
        Ok(match self.aggregate {
            Aggregate::Last => values.last().copied(),
            Aggregate::First => values.first().copied(),
            Aggregate::Max => values.iter().copied().reduce(f64::max),
            Aggregate::Min => values.iter().copied().reduce(f64::min),
            Aggregate::Sum => (!values.is_empty()).then(|| values.iter().sum()),
        })
    }

    /// The settings of an `anomaly` condition: `threshold` is the sensitivity.
    pub fn anomaly_settings(&self) -> crate::predictions::anomaly::Settings {
        crate::predictions::anomaly::Settings {
            season: self.season.unwrap_or(crate::predictions::DEFAULT_SEASON),
            sensitivity: self.threshold,
            min_deviation: self.min_deviation.unwrap_or(0.0),
        }
    }

    pub fn holds(&self, value: f64) -> bool {
        match self.op {
            Op::Anomaly => value.abs() >= self.threshold,
            Op::Above => value > self.threshold,
            Op::AtLeast | Op::ChangeAbove => value >= self.threshold,
            Op::Below => value < self.threshold,
            Op::AtMost | Op::ChangeBelow => value <= self.threshold,
        }
    }
}

/// An alert's state between evaluations.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// ok | pending | firing
    pub state: String,
    pub since: DateTime<Utc>,
    pub last_notified: Option<DateTime<Utc>>,
}

/// What an evaluation changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub next: State,
    /// The history event: pending, firing, renotified, resolved, cancelled.
    pub event: Option<&'static str>,
    pub notify: bool,
}

/// The state machine: from `current`, the condition holding or not at `now`.
pub fn step(
    current: &State,
    holds: bool,
    now: DateTime<Utc>,
    for_secs: u64,
    renotify_secs: u64,
) -> Step {
    let elapsed = |t: DateTime<Utc>| (now - t).num_milliseconds().max(0) as u64;
    let to = |state: &str, since, last_notified, event, notify| Step {
        next: State {
            state: state.to_string(),
            since,
            last_notified,
        },
        event,
        notify,
    };
    match (current.state.as_str(), holds) {
        ("firing", true) => match current.last_notified {
            Some(at) if renotify_secs > 0 && elapsed(at) >= renotify_secs * 1000 => {
                to("firing", current.since, Some(now), Some("renotified"), true)
            }
            _ => to("firing", current.since, current.last_notified, None, false),
        },
        ("firing", false) => to("ok", now, Some(now), Some("resolved"), true),
        ("pending", true) if elapsed(current.since) >= for_secs * 1000 => {
            to("firing", now, Some(now), Some("firing"), true)
        }
        ("pending", true) => to("pending", current.since, current.last_notified, None, false),
        ("pending", false) => to("ok", now, current.last_notified, Some("cancelled"), false),
        (_, true) if for_secs == 0 => to("firing", now, Some(now), Some("firing"), true),
        (_, true) => to(
            "pending",
            now,
            current.last_notified,
            Some("pending"),
            false,
        ),
        (_, false) => to("ok", current.since, current.last_notified, None, false),
    }
}

/// An alert as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Alert {
    pub id: Uuid,
    pub name: String,
    #[sqlx(json)]
    pub spec: AlertSpec,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub owner: Owner,
    pub state: String,
    pub state_since: DateTime<Utc>,
    pub last_value: Option<f64>,
    pub last_evaluated_at: Option<DateTime<Utc>>,
    pub last_notified_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Alert {
    /// Whose permissions the template runs with.
    pub fn owner(&self) -> Principal {
        self.owner.principal()
    }

    pub fn visible_to(&self, principal: &Principal) -> bool {
        self.owner.visible_to(principal)
    }
}

/// One event of an alert's history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AlertEvent {
    pub id: i64,
    pub alert_id: Uuid,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub value: Option<f64>,
    pub message: String,
    pub deliveries: Value,
}

/// Alerts: definitions of kind `alert`, with their state in `alerts`.
pub struct Alerts;

impl Kind for Alerts {
    const KIND: &'static str = JOB_KIND;
    const PLURAL: &'static str = "alerts";
    const INVALID: ErrorCode = ErrorCode::InvalidAlert;
    const UNKNOWN: ErrorCode = ErrorCode::UnknownAlert;
    const RUN_FAILED: ErrorCode = ErrorCode::EvaluationFailed;
    const RUN_PATH: &'static str = "evaluate";
    /// A new or replaced alert starts over at `ok`.
    const ON_STORE: Option<&'static str> = Some(
        "INSERT INTO alerts (id) VALUES ($1) ON CONFLICT (id) DO UPDATE
         SET state = 'ok', state_since = now(), last_error = NULL",
    );

    type Spec = AlertSpec;
    type View = Alert;

    fn name(spec: &AlertSpec) -> &str {
        &spec.name
    }

    fn validate(ctx: &Context, owner: &Principal, spec: &AlertSpec) -> Result<Plan, Invalid> {
        Ok(Plan {
            schedule: Some(validate(ctx, owner, spec)?),
            enabled: spec.enabled,
        })
    }

    async fn validate_references(
        ctx: &Context,
        owner: &Principal,
        spec: &AlertSpec,
    ) -> Result<(), crate::definitions::DefinitionError> {
        crate::experiments::watch::check_watched::<Self>(ctx, owner, spec.experiment).await
    }

    fn select() -> String {
        format!(
            "SELECT {}, a.state, a.state_since, a.last_value, a.last_evaluated_at, a.last_notified_at, a.last_error
             FROM definitions AS d JOIN alerts AS a ON a.id = d.id WHERE d.kind = '{JOB_KIND}'",
            crate::definitions::COLUMNS
        )
    }

    fn owner(alert: &Alert) -> &Owner {
        &alert.owner
    }

    async fn run(ctx: &Context, claimed: &Claimed) -> Result<Outcome, RunError> {
        evaluate(ctx, claimed.target).await
    }
}

pub async fn events(pool: &PgPool, id: Uuid, limit: i64) -> Result<Vec<AlertEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, alert_id, at, kind, value, message, deliveries FROM alert_events
         WHERE alert_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

fn message(alert: &Alert, kind: &str, value: Option<f64>) -> String {
    let value = value.map_or("no data".to_string(), |v| format!("{v}"));
    let head = match kind {
        "resolved" => "RESOLVED",
        "renotified" => "STILL FIRING",
        _ => "FIRING",
    };
    format!(
        "[{head}] {} ({:?}): {} — value {value} ({})",
        alert.name,
        alert.spec.severity,
        alert.spec.condition.describe(),
        alert.spec.source()
    )
}

/// Evaluates an alert once: runs its template, moves its state, records the event and notifies.
pub async fn evaluate(ctx: &Context, id: Uuid) -> Result<Outcome, RunError> {
    let pool = &ctx.pool;
    let alert = Alerts::load(pool, id)
        .await
        .map_err(|e| format!("cannot load the alert: {e}"))?
        .ok_or_else(|| "the alert no longer exists".to_string())?;
    let observed = watched(ctx, &alert).await.and_then(|result| {
        let rows = result["data"].as_array().map_or(0, Vec::len);
        Ok((alert.spec.condition.observe(&result)?, rows))
    });
    let (value, rows) = match observed {
        Ok(observed) => observed,
        Err(error) => {
            let _ = sqlx::query(
                "UPDATE alerts SET last_error = $2, last_evaluated_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(&error)
            .execute(pool)
            .await;
            metrics::counter!("chgate_alert_evaluations_total", "outcome" => "error").increment(1);
            return Err(error.into());
        }
    };
    let holds = value.is_some_and(|v| alert.spec.condition.holds(v));
    let now = Utc::now();
    // The transition is decided under the row's lock, so concurrent evaluations (a scheduled one
    // and a manual one, on two gateways) never notify twice.
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    let current: Option<(String, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT state, state_since, last_notified_at FROM alerts WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    let Some((current, since, last_notified)) = current else {
        return Err(RunError::new("the alert no longer exists"));
    };
    let step = step(
        &State {
            state: current,
            since,
            last_notified,
        },
        holds,
        now,
        alert.spec.for_secs,
        alert.spec.renotify_secs,
    );
    sqlx::query(
        "UPDATE alerts SET state = $2, state_since = $3, last_notified_at = $4, last_value = $5,
         last_evaluated_at = $6, last_error = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(&step.next.state)
    .bind(step.next.since)
    .bind(step.next.last_notified)
    .bind(value)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    let text = step.event.map(|kind| message(&alert, kind, value));
    let event_id: Option<(i64,)> = match (step.event, &text) {
        (Some(kind), Some(text)) => Some(
            sqlx::query_as(
                "INSERT INTO alert_events (alert_id, kind, value, message) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(id)
            .bind(kind)
            .bind(value)
            .bind(text)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    tx.commit().await.map_err(|e| e.to_string())?;
    metrics::counter!("chgate_alert_evaluations_total", "outcome" => "ok").increment(1);
    let mut deliveries = Vec::new();
    if let (true, Some(kind), Some(text), Some((event_id,))) =
        (step.notify, step.event, text, event_id)
    {
        let notification = Notification {
            alert_id: id,
            alert: alert.name.clone(),
            severity: format!("{:?}", alert.spec.severity).to_lowercase(),
            state: kind.to_string(),
            value,
            condition: alert.spec.condition.describe(),
            message: text,
            template: alert.spec.template.clone(),
            experiment: alert.spec.experiment,
            at: now,
        };
        deliveries = channels::deliver_all(
            &ctx.outbound,
            &alert.spec.channels,
            &notification,
            &ctx.settings.alerts,
        )
        .await;
        let _ = sqlx::query("UPDATE alert_events SET deliveries = $2 WHERE id = $1")
            .bind(event_id)
            .bind(json!(deliveries))
            .execute(pool)
            .await;
    }
    Ok(Outcome {
        rows: Some(rows as i64),
        result: Some(json!({
            "state": step.next.state,
            "value": value,
            "holds": holds,
            "event": step.event,
            "deliveries": deliveries,
        })),
    })
}

/// The result the alert's condition reads: its template's, run as its owner, or the table of the
/// experiment it watches.
async fn watched(ctx: &Context, alert: &Alert) -> Result<Value, String> {
    let spec = &alert.spec;
    match spec.experiment {
        Some(id) => {
            let metric =
                crate::experiments::watch::check(&spec.template, spec.version, &spec.params)
                    .map_err(|e| e.to_string())?;
            crate::experiments::watch::table(ctx, &alert.owner(), id, metric.as_deref())
                .await
                .map(|(_, table)| table)
        }
        None => ctx
            .runner
            .run_json(&alert.owner(), call(spec))
            .await
            .map_err(|e| format!("running {}: {e}", spec.template)),
    }
}

/// Validates a definition for `principal`: fields, schedule, channels, and that the principal may
/// run the template with these parameters (or, watching an experiment, that the condition reads
/// one of the experiment table's columns).
pub fn validate(
    ctx: &Context,
    principal: &Principal,
    spec: &AlertSpec,
) -> Result<Schedule, Invalid> {
    crate::definitions::check_name(&spec.name)?;
    if spec.condition.column.trim().is_empty() {
        return Err(Invalid::new(
            "condition.column",
            "must name a column of the template's result",
        ));
    }
    if !spec.condition.threshold.is_finite() {
        return Err(Invalid::new(
            "condition.threshold",
            "must be a finite number",
        ));
    }
    let condition = &spec.condition;
    if condition.op == Op::Anomaly {
        use crate::predictions::anomaly::AnomalyError;
        condition.anomaly_settings().check().map_err(|e| {
            let field = match e {
                AnomalyError::Sensitivity => "condition.threshold",
                AnomalyError::MinDeviation => "condition.min_deviation",
                _ => "condition.season",
            };
            Invalid::new(field, e.to_string())
        })?;
    } else if condition.season.is_some() || condition.min_deviation.is_some() {
        return Err(Invalid::new(
            "condition",
            "season and min_deviation belong to an anomaly condition",
        ));
    }
    if spec.channels.is_empty() {
        return Err(Invalid::new("channels", "at least one channel is needed"));
    }
    if spec.channels.len() > 10 {
        return Err(Invalid::new("channels", "at most 10"));
    }
    for (i, channel) in spec.channels.iter().enumerate() {
        channel.validate(&format!("channels[{i}]"), &ctx.settings.alerts)?;
    }
    let schedule = Schedule::parse(&spec.schedule)?;
    if spec.experiment.is_some() {
        crate::experiments::watch::check(&spec.template, spec.version, &spec.params)?;
        let columns = crate::experiments::watch::COLUMNS;
        if !columns
            .iter()
            .any(|(name, _)| *name == spec.condition.column)
        {
            return Err(Invalid::new(
                "condition.column",
                format!(
                    "an experiment's results have no column {:?} (columns: {})",
                    spec.condition.column,
                    columns.map(|(name, _)| name).join(", ")
                ),
            ));
        }
        return Ok(schedule);
    }
    if spec.template.is_empty() {
        return Err(Invalid::new(
            "template",
            "is required (or an experiment to watch)",
        ));
    }
    let template = ctx.runner.template(&spec.template, spec.version)?;
    // Templates that declare their columns are checked now; others when the alert first runs.
    let columns = &template.meta().columns;
    if !columns.is_empty() && !columns.contains_key(&spec.condition.column) {
        return Err(Invalid::new(
            "condition.column",
            format!(
                "{} has no column {:?} (columns: {})",
                spec.template,
                spec.condition.column,
                columns.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    ctx.runner.check(principal, &call(spec))?;
    Ok(schedule)
}

/// The template call of an alert's evaluation.
fn call(spec: &AlertSpec) -> crate::query::runner::Call {
    crate::query::runner::Call {
        template: spec.template.clone(),
        version: spec.version,
        params: spec.params.clone(),
        format: crate::query::Format::Json,
        fresh: false,
        admission: crate::query::runner::Admission::Scheduled(std::time::Duration::from_secs(60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn condition(op: Op, threshold: f64, aggregate: Aggregate) -> Condition {
        Condition {
            column: "v".into(),
            op,
            threshold,
            aggregate,
            season: None,
            min_deviation: None,
        }
    }

    #[test]
    fn an_anomaly_condition_reads_the_last_rows_deviation_from_the_weekly_cycle() {
        // Four weeks of a weekly cycle with a little wobble, then a Monday at triple its usual.
        let mut values: Vec<Value> = (0..29)
            .map(|day| json!(if day % 7 >= 5 { 60.0 } else { 100.0 } + f64::from(day % 3)))
            .collect();
        let anomaly = condition(Op::Anomaly, 3.5, Aggregate::Last);
        let usual = anomaly.observe(&result(&values)).unwrap().unwrap();
        assert!(!anomaly.holds(usual), "{usual}");
        *values.last_mut().unwrap() = json!(300.0);
        let spike = anomaly.observe(&result(&values)).unwrap().unwrap();
        assert!(anomaly.holds(spike) && spike > 0.0, "{spike}");
        let small = Condition {
            min_deviation: Some(500.0),
            ..anomaly.clone()
        };
        assert_eq!(small.observe(&result(&values)), Ok(Some(0.0)));
        // Too short a series to judge: never fires.
        assert_eq!(anomaly.observe(&result(&values[..10])), Ok(None));
    }

    fn result(values: &[Value]) -> Value {
        json!({
            "meta": [{"name": "v", "type": "Float64"}],
            "data": values.iter().map(|v| json!({"v": v})).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn values_are_read_by_aggregate_and_as_changes() {
        let rows = result(&[json!(10), json!("30"), json!(20)]);
        assert_eq!(
            condition(Op::Above, 0.0, Aggregate::Last).observe(&rows),
            Ok(Some(20.0))
        );
        assert_eq!(
            condition(Op::Above, 0.0, Aggregate::Max).observe(&rows),
            Ok(Some(30.0))
        );
        assert_eq!(
            condition(Op::Above, 0.0, Aggregate::Sum).observe(&rows),
            Ok(Some(60.0))
        );
        let change = condition(Op::ChangeBelow, -20.0, Aggregate::Last);
        let dropped = change.observe(&rows).unwrap().unwrap();
        assert!((dropped + 33.333).abs() < 0.01, "{dropped}");
        assert!(change.holds(dropped));
        assert_eq!(
            condition(Op::Above, 0.0, Aggregate::Last).observe(&result(&[])),
            Ok(None)
        );
        assert!(condition(Op::Above, 0.0, Aggregate::Last)
            .observe(&result(&[json!("x")]))
            .unwrap_err()
            .contains("not numeric"));
        let mut wrong = condition(Op::Above, 0.0, Aggregate::Last);
        wrong.column = "nope".into();
        assert!(wrong.observe(&rows).unwrap_err().contains("columns: v"));
    }

    #[test]
    fn the_state_machine_waits_fires_once_renotifies_and_resolves() {
        let t0 = Utc::now();
        let ok = State {
            state: "ok".into(),
            since: t0,
            last_notified: None,
        };
        let s1 = step(&ok, true, t0, 60, 0);
        assert_eq!(
            (s1.next.state.as_str(), s1.event, s1.notify),
            ("pending", Some("pending"), false)
        );
        let s2 = step(&s1.next, true, t0 + Duration::seconds(30), 60, 0);
        assert_eq!((s2.next.state.as_str(), s2.event), ("pending", None));
        let s3 = step(&s2.next, true, t0 + Duration::seconds(61), 60, 0);
        assert_eq!(
            (s3.next.state.as_str(), s3.event, s3.notify),
            ("firing", Some("firing"), true)
        );
        let s4 = step(&s3.next, true, t0 + Duration::seconds(3600), 60, 0);
        assert_eq!(
            (s4.event, s4.notify),
            (None, false),
            "no repeat without renotify_secs"
        );
        let s5 = step(&s3.next, true, t0 + Duration::seconds(400), 60, 300);
        assert_eq!((s5.event, s5.notify), (Some("renotified"), true));
        let s6 = step(&s5.next, false, t0 + Duration::seconds(500), 60, 300);
        assert_eq!(
            (s6.next.state.as_str(), s6.event, s6.notify),
            ("ok", Some("resolved"), true)
        );
        let cancelled = step(&s1.next, false, t0 + Duration::seconds(10), 60, 0);
        assert_eq!(
            (
                cancelled.next.state.as_str(),
                cancelled.event,
                cancelled.notify
            ),
            ("ok", Some("cancelled"), false)
        );
        let immediate = step(&ok, true, t0, 0, 0);
        assert_eq!(
            (immediate.next.state.as_str(), immediate.notify),
            ("firing", true)
        );
    }
}
