//! Running a template for a principal: the one path every consumer takes — the template
//! endpoints, alerts, reports, and whatever comes next. No HTTP types here: a consumer describes a
//! [`Call`], and gets an [`Output`] (a JSON result held in memory, possibly from the cache, or a
//! stream) or a [`QueryError`].
//!
//! The steps, in order: authorize (the role's policy and the template's own roles) → limits (the
//! request rate for calls made on a caller's behalf) → fixed parameters (row-filtered columns
//! fixed to the caller's claims) → render (minijinja, typed parameters) → guard → row filters →
//! query slot → execute → cache (JSON results keyed by the freshness of the days read) → audit
//! (the record is filled here; the consumer finishes it when the answer has been delivered).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{collect_json, start, Attribution, Format, ResultStream, JSON_EXPANSION};
use crate::access::auth::Principal;
use crate::access::limits::RateInfo;
use crate::access::policy::RolePolicy;
use crate::access::Access;
use crate::audit::{AuditLog, AuditRecord, Origin, Pending};
use crate::cache::{CacheStatus, ResultCache};
use crate::catalog::{CatalogHandle, Template};
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::http::body::{MemoryBudget, Reservation};
use crate::storage::clickhouse::ClickHouse;

/// What a consumer asks of a template.
#[derive(Debug, Clone)]
pub struct Call {
    pub template: String,
    /// `None`: the latest version.
    pub version: Option<u32>,
    pub params: Map<String, Value>,
    pub format: Format,
    /// Run anew instead of answering from the cache (honoured for roles allowed to bypass it).
    pub fresh: bool,
    pub admission: Admission,
}

/// How a call is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// On a caller's request: counted against the role's request rate; a query slot now or a 429.
    Request,
    /// Scheduled work (alerts, reports): no request rate; waits up to this long for a query slot.
    Scheduled(Duration),
}

/// A template's answer.
pub enum Answer {
    /// A JSON result, rendered whole (cached when the template allows it).
    Json {
        body: Bytes,
        rows: Option<i64>,
        cache: CacheStatus,
    },
    /// A download streamed as ClickHouse produces it (never cached); the query slot is held until
    /// the stream ends.
    Stream(ResultStream),
}

/// What a call produced.
pub struct Output {
    pub template: Arc<Template>,
    pub format: Format,
    pub answer: Answer,
    /// The caller's request rate after this call ([`Admission::Request`]).
    pub rate: Option<RateInfo>,
    /// The audit record of the call, written when dropped: a consumer that delivers the answer
    /// adds what it delivered first.
    pub audit: Pending,
}

/// Why a call did not run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no template named {name:?} (available: {available})")]
    UnknownTemplate { name: String, available: String },
    #[error("{name} has no version v{version}")]
    UnknownVersion { name: String, version: u32 },
    #[error("role {role:?} may not run {name}/v{version} (allowed: {allowed})")]
    TemplateNotAllowed {
        role: String,
        name: String,
        version: u32,
        allowed: String,
    },
    #[error("format: {format} is a download, and role {role:?} may not export; ask for json")]
    ExportNotAllowed { format: &'static str, role: String },
    /// Refused or failed below the runner (parameters, limits, ClickHouse, the cache), already
    /// expressed for the boundary.
    #[error(transparent)]
    Refused(#[from] ApiError),
}

impl QueryError {
    /// The field of a stored call (an alert's, a report's) the error is about: `template` when
    /// the template cannot be run at all, else `params`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::UnknownTemplate { .. }
            | Self::UnknownVersion { .. }
            | Self::TemplateNotAllowed { .. } => "template",
            Self::ExportNotAllowed { .. } | Self::Refused(_) => "params",
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::UnknownTemplate { .. } => {
                ApiError::not_found(ErrorCode::UnknownTemplate, error.to_string())
            }
            QueryError::UnknownVersion { .. } => {
                ApiError::not_found(ErrorCode::UnknownVersion, error.to_string())
            }
            QueryError::TemplateNotAllowed { .. } => {
                ApiError::forbidden(ErrorCode::TemplateNotAllowed, error.to_string())
            }
            QueryError::ExportNotAllowed { .. } => {
                ApiError::forbidden(ErrorCode::ExportNotAllowed, error.to_string())
            }
            QueryError::Refused(error) => error,
        }
    }
}

/// The handles the runner uses; cheap to clone.
#[derive(Clone)]
pub struct Runner {
    pub catalog: CatalogHandle,
    pub access: Access,
    pub cache: ResultCache,
    pub clickhouse: ClickHouse,
    pub buffers: MemoryBudget,
    pub audit: AuditLog,
    /// Salt of pseudonymized personal data for roles without `pii`.
    pub pii_salt: Arc<str>,
}

impl Runner {
    /// The template a call names, for consumers that shape parameters by their types first.
    pub fn template(&self, name: &str, version: Option<u32>) -> Result<Arc<Template>, QueryError> {
        let catalog = self.catalog.get();
        catalog
            .get(name, version)
            .cloned()
            .ok_or_else(|| missing(&catalog, name, version))
    }

    /// The audit record of `call` by `principal` from `origin`, to hand to [`Runner::run`].
    pub fn record(principal: &Principal, call: &Call, origin: &Origin) -> AuditRecord {
        let resource = match call.version {
            Some(v) => format!("{}/v{v}", call.template),
            None => call.template.clone(),
        };
        AuditRecord::new("template.run", &resource, Some(principal), origin)
    }

    /// Runs `call` for `principal`, filling `record` for the audit log.
    pub async fn run(
        &self,
        principal: &Principal,
        call: Call,
        mut record: AuditRecord,
    ) -> Result<Output, QueryError> {
        record.params = Some(Value::Object(call.params.clone()));
        let mut audit = Pending::new(&self.audit, record);
        match self.execute(principal, call).await {
            Ok((template, format, answer, rate)) => {
                let record = audit.record();
                record.status = 200;
                if let Answer::Json { rows, .. } = &answer {
                    record.rows = *rows;
                }
                Ok(Output {
                    template,
                    format,
                    answer,
                    rate,
                    audit,
                })
            }
            Err(error) => {
                let api = ApiError::from(error);
                let record = audit.record();
                record.status = i32::from(api.status().as_u16());
                record.outcome = api.code().to_string();
                Err(QueryError::Refused(api))
            }
        }
    }

    /// Runs `call` and returns its JSON result parsed (alerts, reports).
    pub async fn run_json(
        &self,
        principal: &Principal,
        mut call: Call,
    ) -> Result<Value, QueryError> {
        call.format = Format::Json;
        let record = Self::record(principal, &call, &Origin::default());
        let output = self.run(principal, call, record).await?;
        let Answer::Json { body, .. } = &output.answer else {
            return Err(
                ApiError::Internal(anyhow::anyhow!("a JSON call answered with a stream")).into(),
            );
        };
        serde_json::from_slice(body).map_err(|e| {
            ApiError::Internal(anyhow::anyhow!("a JSON result is not JSON: {e}")).into()
        })
    }

    /// Checks that `principal` may make `call` and that it renders (parameters, guard, row
    /// filters), without running it: what stored definitions (alerts, reports) are validated by.
    pub fn check(&self, principal: &Principal, call: &Call) -> Result<Arc<Template>, QueryError> {
        let (template, role) = self.authorize(principal, call)?;
        let catalog = self.catalog.get();
        super::render_for(
            &catalog,
            &template,
            &role,
            principal,
            call.params.clone(),
            self.clickhouse.database(),
        )?;
        Ok(template)
    }

    /// The template of `call` and the principal's role, when the role may make the call.
    fn authorize(
        &self,
        principal: &Principal,
        call: &Call,
    ) -> Result<(Arc<Template>, Arc<RolePolicy>), QueryError> {
        let role = self.access.role(principal)?;
        let template = self.template(&call.template, call.version)?;
        if !template.meta().roles.contains(&principal.role)
            || !role.allows_template(template.name(), template.version())
        {
            return Err(QueryError::TemplateNotAllowed {
                role: principal.role.clone(),
                name: call.template.clone(),
                version: template.version(),
                allowed: template.meta().roles.join(", "),
            });
        }
        if call.format != Format::Json && !role.export {
            return Err(QueryError::ExportNotAllowed {
                format: call.format.name(),
                role: principal.role.clone(),
            });
        }
        Ok((template, role))
    }

    async fn execute(
        &self,
        principal: &Principal,
        call: Call,
    ) -> Result<(Arc<Template>, Format, Answer, Option<RateInfo>), QueryError> {
        let (template, role) = self.authorize(principal, &call)?;
        let rate = match call.admission {
            Admission::Request => Some(self.access.limiter.request(principal, &role.limits).await?),
            Admission::Scheduled(_) => None,
        };
        let format = call.format;
        let catalog = self.catalog.get();
        let database = self.clickhouse.database();
        let (rendered, filters) =
            super::render_for(&catalog, &template, &role, principal, call.params, database)?;
        let request_id = crate::http::request_id::current_request_id()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let who = Attribution {
            request_id: &request_id,
            principal,
            max_execution_secs: role.limits.max_execution_secs,
            max_rows: role.limits.max_result_rows,
            table_filters: filters.setting(),
            max_json_bytes: self.buffers.total_bytes() / (2 * JSON_EXPANSION) as u64,
            pii_salt: Attribution::pii_salt(&role, &self.pii_salt),
        };
        let labels = [
            ("template", template.name().to_string()),
            ("format", format.name().to_string()),
        ];
        let slot = || async {
            match call.admission {
                Admission::Request => self.access.limiter.query_slot(principal, &role.limits),
                Admission::Scheduled(wait) => {
                    self.access
                        .limiter
                        .query_slot_within(principal, &role.limits, wait)
                        .await
                }
            }
        };
        let answer = if format == Format::Json {
            // Runs the query (holding a query slot only while it runs) and renders the body.
            let compute = || async {
                let _slot = slot().await?;
                let started = Instant::now();
                let running = start(self.clickhouse.client(), &template, &rendered, format, &who)?;
                let mut held = Reservation::new(&self.buffers);
                let result = collect_json(running, &template, &mut held).await?;
                metrics::histogram!("chgate_query_duration_seconds", &labels)
                    .record(started.elapsed().as_secs_f64());
                serde_json::to_vec(&result)
                    .map(Bytes::from)
                    .map_err(|e| ApiError::Internal(e.into()))
            };
            let (cache, body) = if !self.cache.enabled() || template.meta().cache_ttl_secs == 0 {
                (CacheStatus::Bypass, compute().await?)
            } else {
                let fresh = self.cache.freshness(&template, &rendered, database).await;
                let key = ResultCache::key(&[
                    database,
                    template.name(),
                    &template.version().to_string(),
                    // The statement too: a template edited in place under its version renders anew.
                    &rendered.sql,
                    &rendered.values_json,
                    &filters.setting().unwrap_or_default(),
                    // Results are cut at the role's row limit and masked for roles without
                    // personal data, so roles differing in either get entries of their own.
                    &role.limits.max_result_rows.to_string(),
                    if role.pii { "pii" } else { "masked" },
                    format.name(),
                    // The generations of the days the call reads: rows committed for any of them
                    // make a new key.
                    &fresh.stamp.text,
                ]);
                if call.fresh && role.cache_bypass {
                    let body = compute().await?;
                    self.cache.store(&key, &body, fresh.ttl).await;
                    (CacheStatus::Bypass, body)
                } else if let Some(body) = self.cache.get(&key).await {
                    (CacheStatus::Hit, body)
                } else {
                    (
                        CacheStatus::Miss,
                        self.cache.load(&key, fresh.ttl, compute).await?,
                    )
                }
            };
            metrics::counter!("chgate_cache_requests_total", "outcome" => cache.header().to_ascii_lowercase()).increment(1);
            Answer::Json {
                rows: json_rows(&body),
                body,
                cache,
            }
        } else {
            let slot = slot().await?;
            let started = Instant::now();
            let running = start(self.clickhouse.client(), &template, &rendered, format, &who)?;
            metrics::histogram!("chgate_query_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            Answer::Stream(super::stream(running.cursor, slot, "a template result").await?)
        };
        metrics::counter!("chgate_queries_total", &labels).increment(1);
        Ok((template, format, answer, rate))
    }
}

/// Why `name` (at `version`) is not in the catalog.
pub(crate) fn missing(
    catalog: &crate::catalog::Catalog,
    name: &str,
    version: Option<u32>,
) -> QueryError {
    match version {
        Some(version) if catalog.latest_version(name).is_some() => QueryError::UnknownVersion {
            name: name.to_string(),
            version,
        },
        _ => QueryError::UnknownTemplate {
            name: name.to_string(),
            available: catalog
                .names()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        },
    }
}

/// The `rows` of a rendered JSON result, found near its end (where `collect_json` puts it) without
/// parsing the whole body.
fn json_rows(body: &[u8]) -> Option<i64> {
    let tail = &body[body.len().saturating_sub(1024)..];
    let key = b"\"rows\":";
    let at = tail.windows(key.len()).rposition(|w| w == key)? + key.len();
    let digits: String = tail[at..]
        .iter()
        .map(|b| *b as char)
        .skip_while(|c| c.is_whitespace())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
