//! Running claimed jobs: the executor of each kind, the loop that claims due occurrences, and
//! manual runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Claimed, Outcome, Scheduler};

/// A failed run: what `job_runs.error` records and a manual run answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RunError(pub String);

impl RunError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<String> for RunError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

/// Runs claimed jobs: `execute(kind, target, claimed)` does the work of one run.
pub trait Executor: Clone + Send + Sync + 'static {
    fn execute(
        &self,
        claimed: &Claimed,
    ) -> impl std::future::Future<Output = Result<Outcome, RunError>> + Send;
}

/// Runs `claimed` with `executor` and records the outcome and metrics.
pub async fn run_claimed<E: Executor>(
    scheduler: &Scheduler,
    executor: &E,
    claimed: Claimed,
) -> Result<Outcome, RunError> {
    let started = Instant::now();
    let outcome = executor.execute(&claimed).await;
    let status = if outcome.is_ok() { "ok" } else { "failed" };
    metrics::counter!("chgate_job_runs_total", "kind" => claimed.kind.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("chgate_job_run_duration_seconds", "kind" => claimed.kind.clone())
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &outcome {
        tracing::warn!(kind = %claimed.kind, target = %claimed.target, error = %e, "a job run failed");
    }
    if let Err(e) = scheduler.finish(claimed.run_id, &outcome).await {
        tracing::error!(run = claimed.run_id, error = %e, "cannot record the end of a job run");
    }
    outcome
}

/// Runs `kind`/`target` now, on request: recorded as a manual run. The run id and its outcome.
pub async fn run_now<E: Executor>(
    scheduler: &Scheduler,
    executor: &E,
    kind: &str,
    target: Uuid,
) -> Result<(i64, Result<Outcome, RunError>), sqlx::Error> {
    let claimed = scheduler.start_manual(kind, target).await?;
    let run_id = claimed.run_id;
    Ok((run_id, run_claimed(scheduler, executor, claimed).await))
}

/// Claims and runs due jobs every `tick` until `stop`, at most `parallel` at a time.
pub fn spawn<E: Executor>(
    scheduler: Scheduler,
    executor: E,
    tick: Duration,
    parallel: usize,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(parallel.max(1)));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
            loop {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                match scheduler.claim_due().await {
                    Ok(Some(claimed)) => {
                        let (scheduler, executor) = (scheduler.clone(), executor.clone());
                        tokio::spawn(async move {
                            let _permit = permit;
                            let _ = run_claimed(&scheduler, &executor, claimed).await;
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        metrics::counter!("chgate_scheduler_errors_total").increment(1);
                        tracing::warn!(error = %e, "the scheduler cannot claim jobs; retrying");
                        break;
                    }
                }
            }
        }
    });
}
