//! The scheduler: cron schedules for alerts, reports and segment refreshes, run by whichever
//! gateway instance claims them first.
//!
//! - **One runner per occurrence** across instances: a due job is claimed with
//!   `SELECT … FOR UPDATE SKIP LOCKED` and moved to its next occurrence in the same transaction, and
//!   the run row is unique per (job, occurrence). Two gateways never run the same occurrence.
//! - **Missed runs** (the gateway was down over several occurrences): the job runs **once** when a
//!   gateway is back, for the earliest missed occurrence, and the run records how many occurrences
//!   were skipped (`missed`); then it continues on schedule. Alerts and dynamic segments only need
//!   the current state, and a report that runs ten times in a row after an outage helps no one.
//! - Every run — scheduled or manual — is recorded in `job_runs` (start, end, status, error, rows,
//!   result) and visible through the API of its kind; metrics per job kind.
//!
//! Schedules are cron expressions in UTC: five fields (`*/5 * * * *`), or six with seconds first
//! (`*/10 * * * * *`).

mod cron;
mod worker;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

pub use cron::{CronError, Schedule};
pub use worker::{run_claimed, run_now, spawn, Executor, RunError};

/// One run of a job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Run {
    pub id: i64,
    pub kind: String,
    pub target: Uuid,
    pub scheduled_for: DateTime<Utc>,
    pub trigger: String,
    pub missed: i32,
    pub instance: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub error: Option<String>,
    pub rows: Option<i64>,
    pub result: Option<serde_json::Value>,
}

/// `?limit=` of run and history listings: 100 by default, 1 to 1000.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Limit {
    #[serde(default = "default_limit")]
    pub limit: i64,
}

fn default_limit() -> i64 {
    100
}

impl Limit {
    pub fn clamped(self) -> i64 {
        self.limit.clamp(1, 1000)
    }
}

/// A run that has started: what to do.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub run_id: i64,
    pub kind: String,
    pub target: Uuid,
    pub scheduled_for: DateTime<Utc>,
}

/// What a finished run produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub rows: Option<i64>,
    pub result: Option<serde_json::Value>,
}

/// Handle on the schedules and runs; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    pool: PgPool,
    instance: Arc<str>,
}

impl Scheduler {
    pub fn new(pool: PgPool) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "gateway".into());
        let instance = format!(
            "{host}:{}:{}",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            pool,
            instance: instance.into(),
        }
    }

    /// This gateway's name in `job_runs.instance`.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Creates or replaces the schedule of `kind`/`target`.
    pub async fn set(
        &self,
        kind: &str,
        target: Uuid,
        schedule: &Schedule,
        enabled: bool,
    ) -> Result<(), sqlx::Error> {
        let next = schedule.next_after(Utc::now()).unwrap_or_else(Utc::now);
        sqlx::query(
            "INSERT INTO scheduled_jobs (id, kind, target, schedule, next_run_at, enabled)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (kind, target) DO UPDATE
             SET schedule = EXCLUDED.schedule, next_run_at = EXCLUDED.next_run_at,
                 enabled = EXCLUDED.enabled, updated_at = now()",
        )
        .bind(Uuid::new_v4())
        .bind(kind)
        .bind(target)
        .bind(schedule.as_str())
        .bind(next)
        .bind(enabled)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes the schedule of `kind`/`target` (its runs stay).
    pub async fn remove(&self, kind: &str, target: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM scheduled_jobs WHERE kind = $1 AND target = $2")
            .bind(kind)
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Claims one due occurrence, if any: moves its job to the next occurrence after now and
    /// records a running run, in one transaction.
    pub async fn claim_due(&self) -> Result<Option<Claimed>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let due: Option<(Uuid, String, Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, kind, target, schedule, next_run_at FROM scheduled_jobs
             WHERE enabled AND next_run_at <= now()
             ORDER BY next_run_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some((job, kind, target, text, scheduled_for)) = due else {
            return Ok(None);
        };
        let now = Utc::now();
        let (next, missed) = match Schedule::parse(&text) {
            Ok(schedule) => {
                let mut missed = 0;
                let mut next = schedule.next_after(scheduled_for);
                while let Some(at) = next.filter(|at| *at <= now) {
                    missed += 1;
                    next = schedule.next_after(at);
                    if missed > 100_000 {
                        next = schedule.next_after(now);
                        break;
                    }
                }
                (next, missed)
            }
            Err(e) => {
                tracing::error!(%job, error = %e, "a stored schedule no longer parses; disabling the job");
                (None, 0)
            }
        };
        sqlx::query("UPDATE scheduled_jobs SET next_run_at = COALESCE($2, next_run_at), enabled = enabled AND $2 IS NOT NULL WHERE id = $1")
            .bind(job)
            .bind(next)
            .execute(&mut *tx)
            .await?;
        let run: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO job_runs (job_id, kind, target, scheduled_for, trigger, missed, instance, status)
             VALUES ($1, $2, $3, $4, 'schedule', $5, $6, 'running')
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(job)
        .bind(&kind)
        .bind(target)
        .bind(scheduled_for)
        .bind(missed)
        .bind(&*self.instance)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(run.map(|(run_id,)| Claimed {
            run_id,
            kind,
            target,
            scheduled_for,
        }))
    }

    /// Records a run asked for through the API.
    pub async fn start_manual(&self, kind: &str, target: Uuid) -> Result<Claimed, sqlx::Error> {
        let now = Utc::now();
        let (run_id,): (i64,) = sqlx::query_as(
            "INSERT INTO job_runs (job_id, kind, target, scheduled_for, trigger, instance, status)
             VALUES ((SELECT id FROM scheduled_jobs WHERE kind = $1 AND target = $2), $1, $2, $3, 'manual', $4, 'running')
             RETURNING id",
        )
        .bind(kind)
        .bind(target)
        .bind(now)
        .bind(&*self.instance)
        .fetch_one(&self.pool)
        .await?;
        Ok(Claimed {
            run_id,
            kind: kind.to_string(),
            target,
            scheduled_for: now,
        })
    }

    /// Records how a run ended.
    pub async fn finish(
        &self,
        run_id: i64,
        outcome: &Result<Outcome, RunError>,
    ) -> Result<(), sqlx::Error> {
        let (status, error, rows, result) = match outcome {
            Ok(o) => ("ok", None, o.rows, o.result.clone()),
            Err(e) => ("failed", Some(e.0.as_str()), None, None),
        };
        sqlx::query(
            "UPDATE job_runs SET finished_at = now(), status = $2, error = $3, rows = $4, result = $5 WHERE id = $1",
        )
        .bind(run_id)
        .bind(status)
        .bind(error)
        .bind(rows)
        .bind(result)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest runs of `kind`/`target`, newest first.
    pub async fn runs(
        &self,
        kind: &str,
        target: Uuid,
        limit: i64,
    ) -> Result<Vec<Run>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, kind, target, scheduled_for, trigger, missed, instance, started_at, finished_at, status, error, rows, result
             FROM job_runs WHERE kind = $1 AND target = $2 ORDER BY started_at DESC, id DESC LIMIT $3",
        )
        .bind(kind)
        .bind(target)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// One run.
    pub async fn run(&self, id: i64) -> Result<Option<Run>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, kind, target, scheduled_for, trigger, missed, instance, started_at, finished_at, status, error, rows, result
             FROM job_runs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }
}
