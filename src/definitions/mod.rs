//! Stored, scheduled definitions: alerts, reports, segments, and the kinds added later. They share
//! one table (`definitions`: the spec as the client sent it, and its owner, whose permissions it
//! runs with), one repository (this module), one set of HTTP bindings ([`http`]) and the
//! scheduler ([`crate::schedule`], dispatched by [`jobs`]). A kind says what differs through
//! [`Kind`]: its spec, how it is validated, what it keeps besides (an alert's state, a segment's
//! members), how it is shown and what a run does.

pub mod http;
pub mod jobs;
pub mod owner;

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use self::owner::Owner;
use crate::access::auth::Principal;
use crate::access::Access;
use crate::audit::AuditLog;
use crate::config::Settings;
use crate::error::ErrorCode;
use crate::query::runner::Runner;
use crate::schedule::{Claimed, Outcome, RunError, Schedule, Scheduler};
use crate::storage::clickhouse::ClickHouse;

/// The handles definitions use: validating, storing, running and showing them. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    /// Definitions, alert states, segment sizes, report files, runs.
    pub pool: PgPool,
    /// Runs templates as a definition's owner.
    pub runner: Runner,
    /// Roles and row filters of owners.
    pub access: Access,
    /// Segment membership.
    pub clickhouse: ClickHouse,
    /// Schedules and runs.
    pub scheduler: Scheduler,
    /// Alert channels and webhooks.
    pub outbound: reqwest::Client,
    /// Exports and manual runs.
    pub audit: AuditLog,
    /// Limits of reports and alert channels, the pseudonym salt.
    pub settings: Arc<Settings>,
}

/// How a definition is scheduled, as its validation decides.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its cron schedule; none: it runs on request only.
    pub schedule: Option<Schedule>,
    /// Whether the schedule is active.
    pub enabled: bool,
}

/// A definition that breaks a rule: which field (a path into the spec; empty when the rule is
/// about the whole definition) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{rule}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct Invalid {
    pub field: String,
    pub rule: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// A rule about the whole definition.
    pub fn whole(rule: impl Into<String>) -> Self {
        Self::new("", rule)
    }
}

impl From<crate::schedule::CronError> for Invalid {
    fn from(error: crate::schedule::CronError) -> Self {
        Self::new("schedule", error.to_string())
    }
}

/// A stored call the owner may not make (now): the template or its parameters.
impl From<crate::query::runner::QueryError> for Invalid {
    fn from(error: crate::query::runner::QueryError) -> Self {
        Self::new(error.field(), error.to_string())
    }
}

impl From<crate::error::ApiError> for Invalid {
    fn from(error: crate::error::ApiError) -> Self {
        Self::whole(error.to_string())
    }
}

impl From<Invalid> for RunError {
    fn from(error: Invalid) -> Self {
        RunError::new(error.to_string())
    }
}

/// What differs between kinds of definitions.
pub trait Kind: Send + Sync + 'static {
    /// The `kind` column and the scheduler's job kind: `alert`.
    const KIND: &'static str;
    /// The collection: the list's key and the path under `/v1/`: `alerts`.
    const PLURAL: &'static str;
    /// Error code of a definition that breaks a rule: `invalid_alert`.
    const INVALID: ErrorCode;
    /// Error code of an id the caller cannot see: `unknown_alert`.
    const UNKNOWN: ErrorCode;
    /// Error code of a manual run that failed: `evaluation_failed`.
    const RUN_FAILED: ErrorCode;
    /// The path segment of a manual run, under the definition: `evaluate`.
    const RUN_PATH: &'static str;
    /// Whether storing a definition runs it at once (a segment computes its members).
    const RUN_ON_STORE: bool = false;
    /// Statement, with the definition's id as `$1`, run in the transaction that stores it: what
    /// the kind keeps besides starts over (an alert's state).
    const ON_STORE: Option<&'static str> = None;

    /// The definition as clients send it.
    type Spec: Serialize + DeserializeOwned + Send + Sync;
    /// The definition as the API shows it, read by [`Kind::select`].
    type View: Serialize + Send + Sync + Unpin + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>;

    /// Its name, for listings and notifications.
    fn name(spec: &Self::Spec) -> &str;

    /// Checks a definition that will run as `owner`: fields, schedule, and the owner's
    /// permissions. The message names the field and the rule.
    fn validate(ctx: &Context, owner: &Principal, spec: &Self::Spec) -> Result<Plan, Invalid>;

    /// Checks of what the definition refers to (other stored definitions), after
    /// [`Kind::validate`]: that they exist and `owner` may use them.
    fn validate_references(
        ctx: &Context,
        owner: &Principal,
        spec: &Self::Spec,
    ) -> impl Future<Output = Result<(), DefinitionError>> + Send {
        let _ = (ctx, owner, spec);
        async { Ok(()) }
    }

    /// Whether a stored definition may be replaced.
    fn replaceable(_view: &Self::View) -> Result<(), DefinitionError> {
        Ok(())
    }

    /// Whether definition `id` may be deleted (none refers to it).
    fn deletable(
        ctx: &Context,
        id: Uuid,
    ) -> impl Future<Output = Result<(), DefinitionError>> + Send {
        let _ = (ctx, id);
        async { Ok(()) }
    }

    /// Whether definitions of this kind run (on a schedule or on request): the run routes exist.
    const RUNS: bool = true;

    /// Whose definition it is.
    fn owner(view: &Self::View) -> &Owner;

    /// The query of its views: `definitions AS d` of this kind (with what the kind keeps
    /// besides, joined), ready for `AND …` and `ORDER BY …`.
    fn select() -> String;

    /// One stored definition of this kind.
    fn load(
        pool: &PgPool,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<Self::View>, sqlx::Error>> + Send {
        async move {
            sqlx::query_as(&format!("{} AND d.id = $1", Self::select()))
                .bind(id)
                .fetch_optional(pool)
                .await
        }
    }

    /// Every stored definition of this kind, oldest first.
    fn list(pool: &PgPool) -> impl Future<Output = Result<Vec<Self::View>, sqlx::Error>> + Send {
        async move {
            sqlx::query_as(&format!("{} ORDER BY d.created_at", Self::select()))
                .fetch_all(pool)
                .await
        }
    }

    /// What `GET` of one definition shows: the view, and what the kind adds (its latest runs).
    fn detail(
        ctx: &Context,
        view: Self::View,
    ) -> impl Future<Output = Result<Value, sqlx::Error>> + Send {
        let _ = ctx;
        async move { Ok(json!(view)) }
    }

    /// Removes what the kind keeps outside Postgres once the definition is deleted.
    fn on_delete(ctx: &Context, id: Uuid) -> impl Future<Output = ()> + Send {
        let _ = (ctx, id);
        async {}
    }

    /// One run (scheduled or manual).
    fn run(
        ctx: &Context,
        claimed: &Claimed,
    ) -> impl Future<Output = Result<Outcome, RunError>> + Send;
}

/// A definition's name: 1 to 200 characters, not only spaces.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(Invalid::new("name", "must be 1 to 200 characters"));
    }
    Ok(())
}

/// What can go wrong with a stored definition.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The definition breaks a rule.
    #[error("{error}")]
    Invalid { code: ErrorCode, error: Invalid },
    /// No definition of this kind with this id that the caller may see.
    #[error("no {kind} {id}")]
    Unknown {
        code: ErrorCode,
        kind: &'static str,
        id: Uuid,
    },
    /// A manual run failed.
    #[error("{error}")]
    RunFailed { code: ErrorCode, error: RunError },
    /// Other definitions refer to this one.
    #[error("{message}")]
    InUse { code: ErrorCode, message: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<DefinitionError> for crate::error::ApiError {
    fn from(error: DefinitionError) -> Self {
        use crate::error::ApiError;
        match error {
            DefinitionError::Invalid { code, error } => {
                ApiError::bad_request(code, error.to_string())
            }
            DefinitionError::RunFailed { code, error } => {
                ApiError::bad_request(code, error.to_string())
            }
            e @ DefinitionError::Unknown { code, .. } => ApiError::not_found(code, e.to_string()),
            DefinitionError::InUse { code, message } => ApiError::Conflict { code, message },
            DefinitionError::Database(e) => e.into(),
        }
    }
}

/// `error` as the definition error of kind `K`.
pub fn invalid<K: Kind>(error: Invalid) -> DefinitionError {
    DefinitionError::Invalid {
        code: K::INVALID,
        error,
    }
}

/// The columns of `definitions` a kind's view selects as `d`.
pub const COLUMNS: &str = "d.id, d.name, d.spec, d.owner_name, d.owner_role, d.owner_key_id, d.owner_attributes, d.created_at, d.updated_at";

/// The view of a kind that keeps nothing besides its definition (a report, an experiment, a saved
/// metric): its id, its spec's fields, its owner, when it was created and last changed.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Stored<S> {
    pub id: Uuid,
    #[serde(flatten)]
    #[sqlx(json)]
    pub spec: S,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub owner: Owner,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// The query of the views of kind `kind` when it keeps nothing besides ([`Stored`]).
pub fn select_stored(kind: &str) -> String {
    format!("SELECT {COLUMNS} FROM definitions AS d WHERE d.kind = '{kind}'")
}

/// The definition `id` of kind `K`, when `principal` may see it.
pub async fn visible<K: Kind>(
    ctx: &Context,
    principal: &Principal,
    id: Uuid,
) -> Result<K::View, DefinitionError> {
    K::load(&ctx.pool, id)
        .await?
        .filter(|view| K::owner(view).visible_to(principal))
        .ok_or(DefinitionError::Unknown {
            code: K::UNKNOWN,
            kind: K::KIND,
            id,
        })
}

/// The definitions of kind `K` that `principal` may see: their own, or every one for admins.
pub async fn list<K: Kind>(
    ctx: &Context,
    principal: &Principal,
) -> Result<Vec<K::View>, DefinitionError> {
    Ok(K::list(&ctx.pool)
        .await?
        .into_iter()
        .filter(|view| K::owner(view).visible_to(principal))
        .collect())
}

/// Validates `spec` for `owner` and stores it as definition `id` (a new one when `create`), with
/// its schedule.
pub async fn store<K: Kind>(
    ctx: &Context,
    owner: &Principal,
    id: Uuid,
    spec: &K::Spec,
    create: bool,
) -> Result<(), DefinitionError> {
    let plan = K::validate(ctx, owner, spec).map_err(invalid::<K>)?;
    K::validate_references(ctx, owner, spec).await?;
    let spec_json = json!(spec);
    let mut tx = ctx.pool.begin().await?;
    if create {
        sqlx::query(
            "INSERT INTO definitions (id, kind, name, spec, owner_name, owner_role, owner_key_id, owner_attributes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(K::KIND)
        .bind(K::name(spec))
        .bind(&spec_json)
        .bind(&owner.name)
        .bind(&owner.role)
        .bind(owner.key_id)
        .bind(json!(owner.attributes))
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query(
            "UPDATE definitions SET name = $3, spec = $4, updated_at = now() WHERE id = $1 AND kind = $2",
        )
        .bind(id)
        .bind(K::KIND)
        .bind(K::name(spec))
        .bind(&spec_json)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(statement) = K::ON_STORE {
        sqlx::query(statement).bind(id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    match plan.schedule {
        Some(schedule) => {
            ctx.scheduler
                .set(K::KIND, id, &schedule, plan.enabled)
                .await?
        }
        None => ctx.scheduler.remove(K::KIND, id).await?,
    }
    Ok(())
}

/// Deletes definition `id`: its schedule, its row (and, by cascade, what the kind keeps in
/// Postgres), then what it keeps elsewhere. Its runs stay in `job_runs`.
pub async fn delete<K: Kind>(ctx: &Context, id: Uuid) -> Result<(), DefinitionError> {
    K::deletable(ctx, id).await?;
    ctx.scheduler.remove(K::KIND, id).await?;
    sqlx::query("DELETE FROM definitions WHERE id = $1 AND kind = $2")
        .bind(id)
        .bind(K::KIND)
        .execute(&ctx.pool)
        .await?;
    K::on_delete(ctx, id).await;
    Ok(())
}

/// Runs definition `id` now (a manual run, recorded like a scheduled one): `{run, result}`.
pub async fn run_now<K: Kind>(ctx: &Context, id: Uuid) -> Result<Value, DefinitionError> {
    let jobs = jobs::Jobs::new(ctx.clone());
    let (run, outcome) = crate::schedule::run_now(&ctx.scheduler, &jobs, K::KIND, id).await?;
    match outcome {
        Ok(outcome) => Ok(json!({"run": run, "result": outcome.result})),
        Err(error) => Err(DefinitionError::RunFailed {
            code: K::RUN_FAILED,
            error,
        }),
    }
}

/// The latest runs of definition `id`, newest first.
pub async fn runs<K: Kind>(
    ctx: &Context,
    id: Uuid,
    limit: i64,
) -> Result<Vec<crate::schedule::Run>, DefinitionError> {
    Ok(ctx.scheduler.runs(K::KIND, id, limit).await?)
}
