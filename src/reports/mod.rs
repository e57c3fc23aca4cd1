//! Reports: a template with parameters, a relative period resolved at each run, a format (csv,
//! json, xlsx, pdf), an optional schedule and a delivery (stored for download, and/or sent to a
//! webhook). Runs are scheduler runs (`job_runs`, kind `report`); stored files are kept in
//! `report_files` for `reports.retention_days`.
//!
//! A report runs with its owner's permissions (role, row filters, limits), as alerts and segments
//! do. Creating one needs the role's `export` permission, since the file leaves the gateway.

pub mod http;
pub mod render;

use chrono::{DateTime, Datelike, Duration, DurationRound as _, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use self::render::{ChartSpec, Header, Table};
use crate::access::auth::Principal;
use crate::catalog::params::{ParamSpec, ParamType, Scalar};
use crate::definitions::owner::Owner;
use crate::definitions::{Context, Invalid, Kind, Plan};
use crate::error::ErrorCode;
use crate::schedule::{Claimed, Outcome, RunError, Schedule};

/// Job kind of report runs in the scheduler.
pub const JOB_KIND: &str = "report";

/// A report as clients define it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The template run; empty when the report shows an experiment's results.
    #[serde(default)]
    pub template: String,
    /// Pinned template version; the latest when absent.
    #[serde(default)]
    pub version: Option<u32>,
    /// Template parameters; dates may be relative (`today-7d`, `now-24h`), resolved at each run.
    /// For an experiment, at most `metric` (a metric's name, or `primary`).
    #[serde(default)]
    pub params: Map<String, Value>,
    /// An experiment whose results the report shows instead of a template's
    /// ([`crate::experiments::watch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Uuid>,
    /// Sets the template's `from` and `to`: `today`, `yesterday`, `last_N_days`, `last_N_hours`,
    /// `this_week`, `last_week`, `this_month`, `last_month`, `this_year`, `last_year`.
    #[serde(default)]
    pub period: Option<String>,
    pub format: Format,
    /// When to run: a cron expression in UTC; none: on request only.
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub delivery: Delivery,
    /// What the PDF charts; by default the first date column against the first numeric one.
    #[serde(default)]
    pub chart: ChartSpec,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Json,
    Xlsx,
    Pdf,
}

/// Where a run's file goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Kept for `GET /v1/reports/runs/{run}/download`.
    #[serde(default = "yes")]
    pub store: bool,
    /// Sent as the body of a POST.
    #[serde(default)]
    pub webhook: Option<String>,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            store: true,
            webhook: None,
        }
    }
}

/// A report as stored.
pub type Report = crate::definitions::Stored<ReportSpec>;

/// Reports: definitions of kind `report`; their files are in `report_files`.
pub struct Reports;

impl Kind for Reports {
    const KIND: &'static str = JOB_KIND;
    const PLURAL: &'static str = "reports";
    const INVALID: ErrorCode = ErrorCode::InvalidReport;
    const UNKNOWN: ErrorCode = ErrorCode::UnknownReport;
    const RUN_FAILED: ErrorCode = ErrorCode::ReportFailed;
    const RUN_PATH: &'static str = "run";

    type Spec = ReportSpec;
    type View = Report;

    fn name(spec: &ReportSpec) -> &str {
        &spec.name
    }

    fn validate(ctx: &Context, owner: &Principal, spec: &ReportSpec) -> Result<Plan, Invalid> {
        Ok(Plan {
            schedule: validate(ctx, owner, spec)?,
            enabled: spec.enabled,
        })
    }

    fn select() -> String {
        crate::definitions::select_stored(JOB_KIND)
    }

    fn owner(report: &Report) -> &Owner {
        &report.owner
    }

    async fn validate_references(
        ctx: &Context,
        owner: &Principal,
        spec: &ReportSpec,
    ) -> Result<(), crate::definitions::DefinitionError> {
        crate::experiments::watch::check_watched::<Self>(ctx, owner, spec.experiment).await
    }

    /// The report with its latest runs.
    async fn detail(ctx: &Context, report: Report) -> Result<Value, sqlx::Error> {
        let runs = ctx.scheduler.runs(JOB_KIND, report.id, 10).await?;
        let mut body = json!(report);
        body["runs"] = json!(runs);
        Ok(body)
    }

    async fn run(ctx: &Context, claimed: &Claimed) -> Result<Outcome, RunError> {
        generate(ctx, claimed).await
    }
}

/// `[start, end)` of a named period at `at` (UTC). Weeks start on Monday; `this_*` periods end
/// with the current day.
pub fn period_range(
    period: &str,
    at: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Invalid> {
    let day = |d: chrono::NaiveDate| Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN));
    let today = day(at.date_naive());
    let tomorrow = today + Duration::days(1);
    let week = today - Duration::days(i64::from(at.weekday().num_days_from_monday()));
    let month = |year: i32, month: u32| {
        chrono::NaiveDate::from_ymd_opt(year, month, 1)
            .map(day)
            .ok_or_else(|| Invalid::new("period", format!("no month {year}-{month}")))
    };
    let this_month = month(at.year(), at.month())?;
    let last_month = if at.month() == 1 {
        month(at.year() - 1, 12)?
    } else {
        month(at.year(), at.month() - 1)?
    };
    let count = |prefix: &str, suffix: &str, max: i64| -> Option<Result<i64, Invalid>> {
        let n = period.strip_prefix(prefix)?.strip_suffix(suffix)?;
        Some(match n.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Invalid::new(
                "period",
                format!("{period:?} needs a count from 1 to {max}"),
            )),
        })
    };
    Ok(match period {
        "today" => (today, tomorrow),
        "yesterday" => (today - Duration::days(1), today),
        "this_week" => (week, tomorrow),
        "last_week" => (week - Duration::weeks(1), week),
        "this_month" => (this_month, tomorrow),
        "last_month" => (last_month, this_month),
        "this_year" => (month(at.year(), 1)?, tomorrow),
        "last_year" => (month(at.year() - 1, 1)?, month(at.year(), 1)?),
        _ => {
            if let Some(days) = count("last_", "_days", 3660) {
                (today - Duration::days(days?), today)
            } else if let Some(hours) = count("last_", "_hours", 24 * 92) {
                let hour = at
                    .duration_trunc(Duration::hours(1))
                    .map_err(|e| Invalid::new("period", e.to_string()))?;
                (hour - Duration::hours(hours?), hour)
            } else {
                return Err(Invalid::new("period", format!(
                    "{period:?} is not a period (today, yesterday, last_N_days, last_N_hours, this_week, last_week, this_month, last_month, this_year, last_year)"
                )));
            }
        }
    })
}

/// The parameters a run uses: the report's, its period as `from`/`to` (a `Date` `to` is the last
/// day, inclusive; a `DateTime` `to` the end, exclusive), and relative dates resolved at `at`.
pub fn resolve_params(
    spec: &ReportSpec,
    declared: &indexmap::IndexMap<String, ParamSpec>,
    at: DateTime<Utc>,
) -> Result<Map<String, Value>, Invalid> {
    let mut params = spec.params.clone();
    if let Some(period) = &spec.period {
        let (start, end) = period_range(period, at)?;
        for (name, when) in [("from", start), ("to", end)] {
            let Some(param) = declared.get(name) else {
                return Err(Invalid::new(
                    "period",
                    format!("{} has no `{name}` parameter to set", spec.template),
                ));
            };
            if params.contains_key(name) {
                return Err(Invalid::new(
                    format!("params.{name}"),
                    "set by the period too; give one or the other",
                ));
            }
            // A Date `to` is the last day of the range, not the day after it.
            let when = if name == "to" && is_date(param) {
                when - Duration::seconds(1)
            } else {
                when
            };
            let value = param_text(param, when).ok_or_else(|| {
                Invalid::new(
                    "period",
                    format!(
                        "{}'s `{name}` is a {}, not a Date or DateTime",
                        spec.template, param.ty_name
                    ),
                )
            })?;
            params.insert(name.to_string(), Value::String(value));
        }
    }
    for (name, value) in params.iter_mut() {
        let (Some(param), Value::String(text)) = (declared.get(name), &*value) else {
            continue;
        };
        let Some(when) = crate::catalog::params::relative(text, at) else {
            continue;
        };
        let when = when.map_err(|e| Invalid::new(format!("params.{name}"), e.to_string()))?;
        if let Some(resolved) = param_text(param, when) {
            *value = Value::String(resolved);
        }
    }
    Ok(params)
}

fn is_date(param: &ParamSpec) -> bool {
    param.ty == Some(ParamType::Scalar(Scalar::Date))
}

/// `when` as a value of a `Date` or `DateTime` parameter; `None` for other types.
fn param_text(param: &ParamSpec, when: DateTime<Utc>) -> Option<String> {
    match param.ty {
        Some(ParamType::Scalar(Scalar::Date)) => Some(when.format("%Y-%m-%d").to_string()),
        Some(ParamType::Scalar(Scalar::DateTime)) => {
            Some(when.format("%Y-%m-%d %H:%M:%S").to_string())
        }
        _ => None,
    }
}

/// Validates a definition for `principal`: fields, schedule, delivery, and that the principal may
/// run the template with these parameters now. The schedule, if any.
pub fn validate(
    ctx: &Context,
    principal: &Principal,
    spec: &ReportSpec,
) -> Result<Option<Schedule>, Invalid> {
    crate::definitions::check_name(&spec.name)?;
    let role = ctx.access.role(principal)?;
    if !role.export {
        return Err(Invalid::whole(format!(
            "the role {:?} may not export results, and a report is an export",
            principal.role
        )));
    }
    if !spec.delivery.store && spec.delivery.webhook.is_none() {
        return Err(Invalid::new(
            "delivery",
            "store the file, send it to a webhook, or both",
        ));
    }
    if let Some(url) = &spec.delivery.webhook {
        crate::alerts::channels::check_url("delivery.webhook", url)?;
    }
    let schedule = spec.schedule.as_deref().map(Schedule::parse).transpose()?;
    if spec.experiment.is_some() {
        crate::experiments::watch::check(&spec.template, spec.version, &spec.params)?;
        if spec.period.is_some() {
            return Err(Invalid::new(
                "period",
                "an experiment's results cover the experiment's own time",
            ));
        }
        let columns = crate::experiments::watch::COLUMNS.map(|(name, _)| name.to_string());
        spec.chart.validate(&columns).map_err(Invalid::whole)?;
        return Ok(schedule);
    }
    if spec.template.is_empty() {
        return Err(Invalid::new(
            "template",
            "is required (or an experiment to show)",
        ));
    }
    let template = ctx.runner.template(&spec.template, spec.version)?;
    let columns: Vec<String> = template.meta().columns.keys().cloned().collect();
    spec.chart.validate(&columns).map_err(Invalid::whole)?;
    let params = resolve_params(spec, &template.meta().params, Utc::now())?;
    ctx.runner
        .check(principal, &call(spec, template.version(), params))?;
    Ok(schedule)
}

/// The template call of a report run with `params`.
fn call(spec: &ReportSpec, version: u32, params: Map<String, Value>) -> crate::query::runner::Call {
    crate::query::runner::Call {
        template: spec.template.clone(),
        version: Some(version),
        params,
        format: crate::query::Format::Json,
        fresh: false,
        admission: crate::query::runner::Admission::Scheduled(std::time::Duration::from_secs(60)),
    }
}

/// A file name: the report's name in lower-case words, and the occurrence.
fn file_name(name: &str, at: DateTime<Utc>, extension: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() {
            slug.extend(c.to_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_end_matches('-').chars().take(60).collect();
    let slug = if slug.is_empty() {
        "report".into()
    } else {
        slug
    };
    format!("{slug}-{}.{extension}", at.format("%Y%m%d-%H%M"))
}

/// Runs a report (the scheduler's executor for kind `report`): runs the template as the owner,
/// renders the file, stores and/or delivers it.
pub async fn generate(ctx: &Context, claimed: &Claimed) -> Result<Outcome, RunError> {
    let pool = &ctx.pool;
    let report = Reports::load(pool, claimed.target)
        .await
        .map_err(|e| format!("cannot load the report: {e}"))?
        .ok_or_else(|| "the report no longer exists".to_string())?;
    let spec = &report.spec;
    let owner = report.owner.principal();
    let at = claimed.scheduled_for;
    let started = std::time::Instant::now();
    let (result, version, params, experiment) = match spec.experiment {
        Some(id) => {
            let metric =
                crate::experiments::watch::check(&spec.template, spec.version, &spec.params)?;
            let (experiment, table) =
                crate::experiments::watch::table(ctx, &owner, id, metric.as_deref()).await?;
            (table, 0, spec.params.clone(), Some(experiment.spec.name))
        }
        None => {
            let template = ctx
                .runner
                .template(&spec.template, spec.version)
                .map_err(|e| format!("template: {e}"))?;
            let params = resolve_params(spec, &template.meta().params, at)?;
            let result = ctx
                .runner
                .run_json(&owner, call(spec, template.version(), params.clone()))
                .await
                .map_err(|e| format!("the template failed: {e}"))?;
            (result, template.version(), params, None)
        }
    };
    let queried_ms = started.elapsed().as_secs_f64() * 1000.0;
    let table = Table::from_result(&result);
    let rows = table.rows.len();
    let header = Header {
        title: spec.name.clone(),
        description: spec.description.clone(),
        template: spec.template.clone(),
        version,
        experiment,
        params: params.clone(),
        period: spec.period.clone(),
        generated_at: Utc::now(),
    };
    let (format, chart, pdf_rows) = (
        spec.format,
        spec.chart.clone(),
        ctx.settings.reports.pdf_max_rows,
    );
    let file = tokio::task::spawn_blocking(move || match format {
        Format::Csv => render::csv(&table),
        Format::Json => render::json(&header, &table),
        Format::Xlsx => render::xlsx(&header, &table),
        Format::Pdf => render::pdf(&header, &table, &chart, pdf_rows),
    })
    .await
    .map_err(|e| format!("rendering failed: {e}"))?
    .map_err(|e| e.to_string())?;
    let filename = file_name(&spec.name, at, file.extension);
    let bytes = file.bytes.len();
    if bytes > ctx.settings.reports.max_file_bytes {
        return Err(RunError::new(format!(
            "the {format:?} file has {bytes} bytes, over reports.max_file_bytes ({}); narrow the period or use csv",
            ctx.settings.reports.max_file_bytes
        )));
    }
    metrics::histogram!("chgate_report_bytes", "format" => file.extension).record(bytes as f64);
    let mut result = json!({
        "format": format,
        "filename": filename,
        "content_type": file.content_type,
        "bytes": bytes,
        "rows": rows,
        "params": params,
        "period": spec.period,
        "query_ms": queried_ms,
        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
    });
    if spec.delivery.store {
        sqlx::query(
            "INSERT INTO report_files (run_id, report_id, filename, content_type, size, content) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(claimed.run_id)
        .bind(report.id)
        .bind(&filename)
        .bind(file.content_type)
        .bind(bytes as i64)
        .bind(&file.bytes)
        .execute(pool)
        .await
        .map_err(|e| format!("storing the file failed: {e}"))?;
        result["download"] = json!(format!("/v1/reports/runs/{}/download", claimed.run_id));
        let expired = sqlx::query(
            "DELETE FROM report_files WHERE created_at < now() - make_interval(days => $1)",
        )
        .bind(ctx.settings.reports.retention_days as i32)
        .execute(pool)
        .await;
        if let Err(e) = expired {
            tracing::warn!(error = %e, "removing expired report files failed");
        }
    }
    // The file leaves the template's results: an export by the owner, from the scheduler.
    let origin = crate::audit::Origin {
        ip: "scheduler".into(),
        user_agent: format!("chgate-scheduler/{}", env!("CARGO_PKG_VERSION")),
        reason: format!("report run {}", claimed.run_id),
    };
    let mut record = crate::audit::AuditRecord::new(
        "report.generate",
        &format!("report/{}/run/{}", report.id, claimed.run_id),
        Some(&owner),
        &origin,
    );
    record.params = Some(json!({
        "template": spec.template,
        "experiment": spec.experiment,
        "params": params,
        "format": format,
        "stored": spec.delivery.store,
        "webhook": spec.delivery.webhook,
    }));
    record.rows = Some(rows as i64);
    record.bytes = Some(bytes as i64);
    if let Some(url) = &spec.delivery.webhook {
        let delivery = deliver(ctx, url, &report, claimed.run_id, &filename, &file).await;
        result["webhook"] = json!(delivery);
        if !delivery.delivered {
            record.outcome = "webhook_failed".into();
            record.status = 502;
            ctx.audit.record(record);
            return Err(RunError::new(format!(
                "the webhook did not take the file after {} attempts: {}{}",
                delivery.attempts,
                delivery.error.unwrap_or_default(),
                if spec.delivery.store {
                    " (the file is stored)"
                } else {
                    ""
                }
            )));
        }
    }
    ctx.audit.record(record);
    Ok(Outcome {
        rows: Some(rows as i64),
        result: Some(result),
    })
}

/// Sends the file to the webhook, retrying with back-off as alert channels do.
async fn deliver(
    ctx: &Context,
    url: &str,
    report: &Report,
    run_id: i64,
    filename: &str,
    file: &render::File,
) -> crate::alerts::channels::Delivery {
    let disposition = format!("attachment; filename=\"{filename}\"");
    crate::alerts::channels::retrying("webhook", &ctx.settings.alerts, || {
        let request = ctx
            .outbound
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, file.content_type)
            .header(reqwest::header::CONTENT_DISPOSITION, disposition.as_str())
            .header("x-chgate-report", report.id.to_string())
            .header("x-chgate-run", run_id.to_string())
            .body(file.bytes.clone());
        async move {
            let response = request
                .send()
                .await
                .map_err(|e| format!("cannot reach the webhook: {e}"))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", response.status()))
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn range(period: &str, now: &str) -> (String, String) {
        let (a, b) = period_range(period, at(now)).unwrap();
        (a.to_rfc3339(), b.to_rfc3339())
    }

    #[test]
    fn periods_are_half_open_ranges_in_utc() {
        let now = "2026-03-04T15:30:00Z"; // a Wednesday
        assert_eq!(
            range("last_7_days", now),
            (
                "2026-02-25T00:00:00+00:00".into(),
                "2026-03-04T00:00:00+00:00".into()
            )
        );
        assert_eq!(
            range("last_month", now),
            (
                "2026-02-01T00:00:00+00:00".into(),
                "2026-03-01T00:00:00+00:00".into()
            )
        );
        assert_eq!(
            range("last_week", now),
            (
                "2026-02-23T00:00:00+00:00".into(),
                "2026-03-02T00:00:00+00:00".into()
            )
        );
        assert_eq!(
            range("last_24_hours", now),
            (
                "2026-03-03T15:00:00+00:00".into(),
                "2026-03-04T15:00:00+00:00".into()
            )
        );
        assert_eq!(
            range("last_month", "2026-01-10T00:00:00Z").0,
            "2025-12-01T00:00:00+00:00"
        );
        assert!(period_range("last_0_days", at(now)).is_err());
        assert!(period_range("fortnight", at(now))
            .unwrap_err()
            .to_string()
            .contains("last_N_days"));
    }

    fn declared() -> indexmap::IndexMap<String, crate::catalog::params::ParamSpec> {
        let spec = |ty: &str| {
            let mut p: crate::catalog::params::ParamSpec =
                serde_json::from_value(json!({"type": ty})).unwrap();
            p.ty = ParamType::parse(ty);
            p
        };
        [
            ("from", spec("Date")),
            ("to", spec("Date")),
            ("since", spec("DateTime")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn spec(params: Value, period: Option<&str>) -> ReportSpec {
        serde_json::from_value(json!({
            "name": "r", "template": "dau", "format": "csv",
            "params": params, "period": period,
        }))
        .unwrap()
    }

    #[test]
    fn a_period_sets_inclusive_days_and_relative_dates_resolve_at_the_run() {
        let now = at("2026-03-04T15:30:00Z");
        let params =
            resolve_params(&spec(json!({}), Some("last_7_days")), &declared(), now).unwrap();
        assert_eq!(params["from"], "2026-02-25");
        assert_eq!(params["to"], "2026-03-03", "a Date `to` is the last day");
        let params =
            resolve_params(&spec(json!({"since": "now-24h"}), None), &declared(), now).unwrap();
        assert_eq!(params["since"], "2026-03-03 15:30:00");
        let clash = resolve_params(
            &spec(json!({"from": "2026-01-01"}), Some("yesterday")),
            &declared(),
            now,
        )
        .unwrap_err();
        assert_eq!(clash.field, "params.from", "{clash}");
    }

    #[test]
    fn file_names_are_slugs_with_the_occurrence() {
        assert_eq!(
            file_name("Weekly DAU — iOS / RU", at("2026-03-04T08:00:00Z"), "pdf"),
            "weekly-dau-ios-ru-20260304-0800.pdf"
        );
        assert_eq!(
            file_name("***", at("2026-03-04T08:00:00Z"), "csv"),
            "report-20260304-0800.csv"
        );
    }
}
