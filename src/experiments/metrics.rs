//! Saved metrics (`/v1/metrics`): a metric declared once — a conversion, a mean, a retention or a
//! funnel, as an experiment defines one in place — that experiments use by id
//! (`{"metric": "<id>"}`). An experiment reads its saved metrics each time its results are
//! computed, so a corrected definition corrects every experiment that uses it; a saved metric
//! that experiments use cannot be deleted.
//!
//! Like every definition, a saved metric is its owner's (and admins') to see and use.

use sqlx::PgPool;
use uuid::Uuid;

use super::spec::{ExperimentSpec, Metric, MetricEntry};
use super::Experiments;
use crate::access::auth::Principal;
use crate::definitions::owner::Owner;
use crate::definitions::{Context, DefinitionError, Invalid, Kind, Plan};
use crate::error::ErrorCode;
use crate::schedule::{Claimed, Outcome, RunError};

/// `definitions.kind` of saved metrics.
pub const KIND: &str = "metric";

/// A saved metric as stored.
pub type SavedMetricView = crate::definitions::Stored<Metric>;

/// Saved metrics: definitions of kind `metric`; they never run on their own.
pub struct Metrics;

impl Kind for Metrics {
    const KIND: &'static str = KIND;
    const PLURAL: &'static str = "metrics";
    const INVALID: ErrorCode = ErrorCode::InvalidMetric;
    const UNKNOWN: ErrorCode = ErrorCode::UnknownMetric;
    const RUN_FAILED: ErrorCode = ErrorCode::ResultsFailed;
    const RUN_PATH: &'static str = "run";
    const RUNS: bool = false;

    type Spec = Metric;
    type View = SavedMetricView;

    fn name(spec: &Metric) -> &str {
        &spec.name
    }

    fn validate(_ctx: &Context, _owner: &Principal, spec: &Metric) -> Result<Plan, Invalid> {
        spec.check(&|field| field.to_string())?;
        Ok(Plan {
            schedule: None,
            enabled: false,
        })
    }

    async fn deletable(ctx: &Context, id: Uuid) -> Result<(), DefinitionError> {
        let users = users(&ctx.pool, id).await?;
        if users.is_empty() {
            return Ok(());
        }
        Err(DefinitionError::InUse {
            code: ErrorCode::MetricInUse,
            message: format!(
                "experiments use the metric {id}: {}; remove it from them first",
                users
                    .iter()
                    .map(|(id, name)| format!("{name} ({id})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    fn select() -> String {
        crate::definitions::select_stored(KIND)
    }

    fn owner(view: &SavedMetricView) -> &Owner {
        &view.owner
    }

    async fn run(_ctx: &Context, _claimed: &Claimed) -> Result<Outcome, RunError> {
        Err(RunError::new(
            "saved metrics do not run; experiments that use them do",
        ))
    }
}

/// The experiments that use saved metric `id`: `(id, name)`, oldest first.
async fn users(pool: &PgPool, id: Uuid) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name FROM definitions
         WHERE kind = $1 AND spec->'metrics' @> jsonb_build_array(jsonb_build_object('metric', $2::text))
         ORDER BY created_at",
    )
    .bind(Experiments::KIND)
    .bind(id.to_string())
    .fetch_all(pool)
    .await
}

/// The metrics of `spec` in order, saved ones read from `pool`: each must be one `owner` may
/// see. The error names the entry (`metrics[1].metric`).
pub async fn resolve(
    pool: &PgPool,
    owner: &Principal,
    spec: &ExperimentSpec,
) -> Result<Vec<Metric>, DefinitionError> {
    let mut metrics = Vec::with_capacity(spec.metrics.len());
    for (i, entry) in spec.metrics.iter().enumerate() {
        metrics.push(match entry {
            MetricEntry::Defined(metric) => metric.clone(),
            MetricEntry::Saved(saved) => Metrics::load(pool, saved.metric)
                .await?
                .filter(|view| view.owner.visible_to(owner))
                .map(|view| view.spec)
                .ok_or_else(|| {
                    crate::definitions::invalid::<Metrics>(Invalid::new(
                        format!("metrics[{i}].metric"),
                        format!(
                            "no saved metric {} that the experiment's owner may use",
                            saved.metric
                        ),
                    ))
                })?,
        });
    }
    Ok(metrics)
}
