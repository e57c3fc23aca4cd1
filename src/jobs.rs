//! What the scheduler runs, by job kind.

use crate::app::AppState;
use crate::schedule::{Claimed, Executor, Outcome};

/// Runs `kind`/`target` now on request (a manual run): `{run, result}`, or a 400 with
/// `failure_code` and the run's error.
pub async fn run_now(
    state: &AppState,
    kind: &str,
    target: uuid::Uuid,
    failure_code: &'static str,
) -> Result<serde_json::Value, crate::error::ApiError> {
    let (run, outcome) =
        crate::schedule::run_now(&state.scheduler, &Jobs::new(state.clone()), kind, target).await?;
    match outcome {
        Ok(outcome) => Ok(serde_json::json!({"run": run, "result": outcome.result})),
        Err(error) => Err(crate::error::ApiError::bad_request(failure_code, error)),
    }
}

/// `{"runs": [...]}`: the latest runs of `kind`/`target`, newest first.
pub async fn runs_json(
    state: &AppState,
    kind: &str,
    target: uuid::Uuid,
    limit: crate::schedule::Limit,
) -> Result<axum::Json<serde_json::Value>, crate::error::ApiError> {
    let runs = state.scheduler.runs(kind, target, limit.clamped()).await?;
    Ok(axum::Json(serde_json::json!({ "runs": runs })))
}

/// Deletes a scheduled definition: its schedule, then its row in `table` (runs stay in
/// `job_runs`).
pub async fn delete_definition(
    state: &AppState,
    kind: &str,
    table: &'static str,
    id: uuid::Uuid,
) -> Result<(), crate::error::ApiError> {
    state.scheduler.remove(kind, id).await?;
    sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
        .bind(id)
        .execute(state.postgres.pool())
        .await?;
    Ok(())
}

/// Dispatches claimed runs to their kind's code.
#[derive(Clone)]
pub struct Jobs {
    state: AppState,
}

impl Jobs {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl Executor for Jobs {
    async fn execute(&self, claimed: &Claimed) -> Result<Outcome, String> {
        match claimed.kind.as_str() {
            crate::alerts::JOB_KIND => crate::alerts::evaluate(&self.state, claimed.target).await,
            crate::segments::JOB_KIND => {
                crate::segments::refresh(&self.state, claimed.target).await
            }
            crate::reports::JOB_KIND => crate::reports::generate(&self.state, claimed).await,
            other => Err(format!("no job kind {other:?}")),
        }
    }
}
