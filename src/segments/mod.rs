//! Audience segments: criteria over behaviour, aggregates and user properties (a JSON DSL compiled
//! to parameterized ClickHouse SQL, [`criteria`]), membership materialized in ClickHouse
//! (`segment_members`, one row per member per refresh), size history, exports.
//!
//! A segment is computed with its owner's permissions (role, row filters). Dynamic segments are
//! refreshed on their cron schedule and on demand; static ones are computed once, at creation, and
//! keep that membership.

pub mod criteria;
pub mod http;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::auth::Principal;
use crate::definitions::owner::Owner;
use crate::definitions::{self, Context, DefinitionError, Invalid, Plan};
use crate::error::ErrorCode;
use crate::schedule::{Claimed, Outcome, RunError};

/// Job kind of segment refreshes in the scheduler.
pub const JOB_KIND: &str = "segment";

/// A segment as clients define it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub criteria: Value,
    #[serde(default)]
    pub kind: Kind,
    /// Refresh schedule of a dynamic segment (cron, UTC); none: refreshed on demand only.
    #[serde(default)]
    pub schedule: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Dynamic,
    Static,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dynamic => "dynamic",
            Self::Static => "static",
        }
    }
}

/// A segment as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Segment {
    pub id: Uuid,
    #[serde(flatten)]
    #[sqlx(json)]
    pub spec: SegmentSpec,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub owner: Owner,
    pub computed_at: Option<DateTime<Utc>>,
    pub size: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Segment {
    pub fn owner(&self) -> Principal {
        self.owner.principal()
    }
}

/// Segments: definitions of kind `segment`, with their latest computation in `segments`, its
/// size history in `segment_sizes` and their members in ClickHouse (`segment_members`).
pub struct Segments;

impl definitions::Kind for Segments {
    const KIND: &'static str = JOB_KIND;
    const PLURAL: &'static str = "segments";
    const INVALID: ErrorCode = ErrorCode::InvalidSegment;
    const UNKNOWN: ErrorCode = ErrorCode::UnknownSegment;
    const RUN_FAILED: ErrorCode = ErrorCode::RefreshFailed;
    const RUN_PATH: &'static str = "refresh";
    const RUN_ON_STORE: bool = true;
    const ON_STORE: Option<&'static str> =
        Some("INSERT INTO segments (id) VALUES ($1) ON CONFLICT (id) DO NOTHING");

    type Spec = SegmentSpec;
    type View = Segment;

    fn name(spec: &SegmentSpec) -> &str {
        &spec.name
    }

    fn validate(ctx: &Context, owner: &Principal, spec: &SegmentSpec) -> Result<Plan, Invalid> {
        Ok(Plan {
            schedule: validate(ctx, owner, spec)?,
            enabled: true,
        })
    }

    fn replaceable(segment: &Segment) -> Result<(), DefinitionError> {
        if segment.spec.kind == Kind::Static {
            return Err(DefinitionError::Invalid {
                code: ErrorCode::StaticSegment,
                error: Invalid::whole("a static segment cannot be changed; create a new one"),
            });
        }
        Ok(())
    }

    fn select() -> String {
        format!(
            "SELECT {}, s.computed_at, s.size
             FROM definitions AS d JOIN segments AS s ON s.id = d.id WHERE d.kind = '{JOB_KIND}'",
            crate::definitions::COLUMNS
        )
    }

    fn owner(segment: &Segment) -> &Owner {
        &segment.owner
    }

    /// The segment with its size history.
    async fn detail(ctx: &Context, segment: Segment) -> Result<Value, sqlx::Error> {
        let sizes = sizes(&ctx.pool, segment.id, 100).await?;
        let mut body = json!(segment);
        body["sizes"] = json!(sizes);
        Ok(body)
    }

    /// Its members, in ClickHouse.
    async fn on_delete(ctx: &Context, id: Uuid) {
        let deleted = ctx
            .clickhouse
            .client()
            .query("DELETE FROM segment_members WHERE segment_id = ?")
            .bind(id.to_string())
            .execute()
            .await;
        if let Err(e) = deleted {
            tracing::warn!(segment = %id, error = %e, "the members of a deleted segment could not be removed");
        }
    }

    async fn run(ctx: &Context, claimed: &Claimed) -> Result<Outcome, RunError> {
        refresh(ctx, claimed.target).await
    }
}

/// One point of a segment's size history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SizePoint {
    pub computed_at: DateTime<Utc>,
    pub size: i64,
    pub duration_ms: f64,
}

pub async fn sizes(pool: &PgPool, id: Uuid, limit: i64) -> Result<Vec<SizePoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT computed_at, size, duration_ms FROM segment_sizes WHERE segment_id = $1
         ORDER BY computed_at DESC LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The role's permission and the row filters a segment's queries run under, for `owner`.
fn row_filters(ctx: &Context, owner: &Principal) -> Result<Option<String>, Invalid> {
    let role = ctx.access.role(owner)?;
    if !role.segments {
        return Err(Invalid::whole(format!(
            "role {:?} may not use segments",
            owner.role
        )));
    }
    let database = ctx.clickhouse.database();
    let tables = ["events", "user_properties", "segment_members"]
        .iter()
        .map(|t| format!("{database}.{t}"))
        .collect();
    let filters = crate::access::row_filters(&role, owner, database, &tables)?;
    Ok(filters.setting())
}

/// A ClickHouse query with the gateway's attribution and the owner's row filters.
fn query(
    ctx: &Context,
    sql: &str,
    filters: &Option<String>,
    comment: &Value,
) -> clickhouse::query::Query {
    let mut query = ctx
        .clickhouse
        .client()
        .query(sql)
        .with_setting("log_comment", comment.to_string());
    if let Some(filters) = filters {
        query = query.with_setting("additional_table_filters", filters.clone());
    }
    query
}

/// A refresh time as a `DateTime64(3, 'UTC')` parameter value.
pub fn clickhouse_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// Computes the segment's membership now: inserts the members with a new `computed_at`, records
/// the size, and (dynamic segments) drops older memberships.
pub async fn refresh(ctx: &Context, id: Uuid) -> Result<Outcome, RunError> {
    let pool = &ctx.pool;
    let segment = <Segments as definitions::Kind>::load(pool, id)
        .await
        .map_err(|e| format!("cannot load the segment: {e}"))?
        .ok_or_else(|| "the segment no longer exists".to_string())?;
    if segment.spec.kind == Kind::Static && segment.computed_at.is_some() {
        return Err(RunError::new(
            "a static segment keeps the membership it was created with",
        ));
    }
    let owner = segment.owner();
    let filters = row_filters(ctx, &owner)?;
    let compiled = criteria::compile(&segment.spec.criteria).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let computed_at = Utc::now();
    let at = clickhouse_time(computed_at);
    let comment =
        json!({"segment": id, "action": "refresh", "key": owner.name, "role": owner.role});
    let insert = format!(
        "INSERT INTO segment_members (segment_id, computed_at, actor_id) SELECT {{segment:UUID}}, {{computed_at:DateTime64(3, 'UTC')}}, actor_id FROM ({})",
        compiled.sql
    );
    let mut statement = query(ctx, &insert, &filters, &comment)
        .param("segment", id.to_string())
        .param("computed_at", at.clone());
    for (name, _, value) in &compiled.params {
        statement = statement.param(name, value.clone());
    }
    statement
        .execute()
        .await
        .map_err(|e| format!("computing the membership failed: {e}"))?;
    let size: u64 = query(
        ctx,
        "SELECT count() FROM segment_members WHERE segment_id = {segment:UUID} AND computed_at = {computed_at:DateTime64(3, 'UTC')}",
        &None,
        &comment,
    )
    .param("segment", id.to_string())
    .param("computed_at", at.clone())
    .fetch_one()
    .await
    .map_err(|e| format!("counting the membership failed: {e}"))?;
    if segment.spec.kind == Kind::Dynamic {
        let deleted = query(
            ctx,
            "DELETE FROM segment_members WHERE segment_id = {segment:UUID} AND computed_at < {computed_at:DateTime64(3, 'UTC')}",
            &None,
            &comment,
        )
        .param("segment", id.to_string())
        .param("computed_at", at)
        .execute()
        .await;
        if let Err(e) = deleted {
            tracing::warn!(segment = %id, error = %e, "older memberships of a segment could not be deleted");
        }
    }
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    sqlx::query("UPDATE segments SET computed_at = $2, size = $3 WHERE id = $1")
        .bind(id)
        .bind(computed_at)
        .bind(size)
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("INSERT INTO segment_sizes (segment_id, computed_at, size, duration_ms) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(computed_at)
        .bind(size)
        .bind(duration_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    metrics::counter!("chgate_segment_refreshes_total").increment(1);
    Ok(Outcome {
        rows: Some(size),
        result: Some(json!({"size": size, "computed_at": computed_at, "duration_ms": duration_ms})),
    })
}

/// Checks a definition for `principal`: fields, criteria, schedule, and the role's permission.
pub fn validate(
    ctx: &Context,
    principal: &Principal,
    spec: &SegmentSpec,
) -> Result<Option<crate::schedule::Schedule>, Invalid> {
    definitions::check_name(&spec.name)?;
    criteria::compile(&spec.criteria).map_err(|e| Invalid::whole(e.to_string()))?;
    row_filters(ctx, principal)?;
    match (&spec.schedule, spec.kind) {
        (Some(_), Kind::Static) => Err(Invalid::new(
            "schedule",
            "a static segment is computed once; it takes no schedule",
        )),
        (Some(text), Kind::Dynamic) => Ok(Some(crate::schedule::Schedule::parse(text)?)),
        (None, _) => Ok(None),
    }
}
