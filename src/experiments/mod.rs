//! A/B experiments: stored definitions (kind `experiment`: variants, exposure, metrics), their
//! results (`GET /v1/experiments/{id}/results`) and the statistics behind them.
//!
//! Results run the `experiment_results` template once per metric, as the experiment's owner,
//! through the same runner as every template call (role, row filters, limits, cache); ClickHouse
//! returns per-variant sums, and [`analysis`] turns them into results with [`stats`].
//!
//! Experiments are not scheduled: results are computed when asked for. A manual run
//! (`POST /v1/experiments/{id}/results`) computes them and keeps them as the run's result, so
//! `…/runs` is a history of snapshots.

pub mod analysis;
pub mod http;
pub mod metrics;
pub mod spec;
pub mod stats;
pub mod watch;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use self::spec::{check_metric_names, ExperimentSpec, Metric};
use crate::access::auth::Principal;
use crate::definitions::owner::Owner;
use crate::definitions::{Context, DefinitionError, Invalid, Kind, Plan};
use crate::error::{ApiError, ErrorCode};
use crate::query::runner::{Admission, Call, QueryError};
use crate::schedule::{Claimed, Outcome, RunError};

/// Job kind (and `definitions.kind`) of experiments.
pub const JOB_KIND: &str = "experiment";

/// The template that aggregates one metric, pinned: its columns are what [`analysis`] reads.
const TEMPLATE: &str = "experiment_results";
const TEMPLATE_VERSION: u32 = 1;

/// How long a manual run waits for a query slot.
const RUN_SLOT_WAIT: Duration = Duration::from_secs(60);

/// An experiment as stored.
pub type Experiment = crate::definitions::Stored<ExperimentSpec>;

/// Experiments: definitions of kind `experiment`; nothing kept besides.
pub struct Experiments;

impl Kind for Experiments {
    const KIND: &'static str = JOB_KIND;
    const PLURAL: &'static str = "experiments";
    const INVALID: ErrorCode = ErrorCode::InvalidExperiment;
    const UNKNOWN: ErrorCode = ErrorCode::UnknownExperiment;
    const RUN_FAILED: ErrorCode = ErrorCode::ResultsFailed;
    const RUN_PATH: &'static str = "results";

    type Spec = ExperimentSpec;
    type View = Experiment;

    fn name(spec: &ExperimentSpec) -> &str {
        &spec.name
    }

    /// The fields of the definition itself.
    fn validate(
        _ctx: &Context,
        _owner: &Principal,
        spec: &ExperimentSpec,
    ) -> Result<Plan, Invalid> {
        spec.check()?;
        Ok(Plan {
            schedule: None,
            enabled: false,
        })
    }

    /// Its saved metrics exist and the owner may use them, every metric's name is its own, and
    /// the owner may run the results template for each.
    async fn validate_references(
        ctx: &Context,
        owner: &Principal,
        spec: &ExperimentSpec,
    ) -> Result<(), DefinitionError> {
        let metrics = metrics::resolve(&ctx.pool, owner, spec).await?;
        let invalid = crate::definitions::invalid::<Self>;
        check_metric_names(&metrics).map_err(invalid)?;
        for (i, metric) in metrics.iter().enumerate() {
            ctx.runner
                .check(owner, &call(spec, metric, Admission::Request))
                .map_err(|e| invalid(Invalid::new(format!("metrics[{i}]"), e.to_string())))?;
        }
        Ok(())
    }

    fn select() -> String {
        crate::definitions::select_stored(JOB_KIND)
    }

    fn owner(experiment: &Experiment) -> &Owner {
        &experiment.owner
    }

    async fn run(ctx: &Context, claimed: &Claimed) -> Result<Outcome, RunError> {
        let experiment = Self::load(&ctx.pool, claimed.target)
            .await
            .map_err(|e| format!("cannot load the experiment: {e}"))?
            .ok_or_else(|| "the experiment no longer exists".to_string())?;
        let results = results(ctx, &experiment, Admission::Scheduled(RUN_SLOT_WAIT), false)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Outcome {
            rows: None,
            result: Some(results),
        })
    }
}

/// The results of `experiment` now, as `GET …/results` shows them: [`analyze`] with the
/// definition's settings.
pub async fn results(
    ctx: &Context,
    experiment: &Experiment,
    admission: Admission,
    fresh: bool,
) -> Result<Value, QueryError> {
    let spec = &experiment.spec;
    let results = analyze(ctx, experiment, admission, fresh).await?;
    let mut body = json!({
        "experiment": experiment.id,
        "name": spec.name,
        "computed_at": Utc::now(),
        "start": spec.start,
        "end": spec.end,
        "minimum_detectable_effect": spec.minimum_detectable_effect,
        "sequential": spec.sequential,
        "cuped": spec.cuped,
    });
    if let (Value::Object(body), Value::Object(results)) = (&mut body, json!(results)) {
        body.extend(results);
    }
    Ok(body)
}

/// The statistics of `experiment` now: its metrics (saved ones read), one template call per
/// metric as its owner, then [`analysis::analyze`]. `admission`: a caller's request, or a run;
/// `fresh`: run the queries again rather than use cached results (when the owner's role may
/// bypass the cache).
pub async fn analyze(
    ctx: &Context,
    experiment: &Experiment,
    admission: Admission,
    fresh: bool,
) -> Result<analysis::Results, QueryError> {
    let spec = &experiment.spec;
    let owner = experiment.owner.principal();
    let keys = spec.keys();
    let metrics = metrics::resolve(&ctx.pool, &owner, spec)
        .await
        .map_err(ApiError::from)?;
    let mut rows = Vec::with_capacity(metrics.len());
    for metric in &metrics {
        let result = ctx
            .runner
            .run_json(
                &owner,
                Call {
                    fresh,
                    ..call(spec, metric, admission)
                },
            )
            .await?;
        rows.push(analysis::read_rows(&result, &keys).map_err(|e| {
            ApiError::Internal(anyhow::anyhow!("{TEMPLATE} answered unexpectedly: {e}"))
        })?);
    }
    Ok(analysis::analyze(spec, &metrics, &rows))
}

/// A date-time as a template parameter.
fn parameter_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The template call that aggregates `metric` of `spec`.
fn call(spec: &ExperimentSpec, metric: &Metric, admission: Admission) -> Call {
    let mut params = Map::new();
    let mut set = |name: &str, value: Value| {
        params.insert(name.to_string(), value);
    };
    set("experiment", json!(spec.name));
    set("variants", json!(spec.keys()));
    set("start", json!(parameter_time(spec.start)));
    set(
        "end",
        json!(spec.end.map_or_else(|| "now".to_string(), parameter_time)),
    );
    set("kind", json!(metric.kind.name()));
    if !metric.event.is_empty() {
        set("event", json!(metric.event));
    }
    if !metric.steps.is_empty() {
        set("steps", json!(metric.steps));
    }
    if let Some(day) = metric.day {
        set("retention_day", json!(day));
    }
    if let Some(property) = &metric.property {
        set("property", json!(property));
    }
    set("window_days", json!(metric.window_days));
    set("cuped", json!(spec.cuped));
    set("exposure_event", json!(spec.exposure.event));
    set(
        "experiment_property",
        json!(spec.exposure.experiment_property),
    );
    set("variant_property", json!(spec.exposure.variant_property));
    Call {
        template: TEMPLATE.to_string(),
        version: Some(TEMPLATE_VERSION),
        params,
        format: crate::query::Format::Json,
        fresh: false,
        admission,
    }
}
