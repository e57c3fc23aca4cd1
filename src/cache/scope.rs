//! Which days a template call reads, so its cache key can hold their generations.
//!
//! The days come from the call's `from` and `to` parameters (or those a template's `freshness`
//! header names), widened by the header (`days_before`, `history`, `through`). Days from the
//! current UTC day on (`cache.live_days`) are left out: they change with every flush, so their
//! freshness stays bounded by the template's TTL, as before.

use chrono::{Datelike, Days, NaiveDate};
use serde_json::Value;

use super::generations::{month_of, Span, EVENTS};
use crate::catalog::template::Through;
use crate::catalog::{Rendered, Template};

/// Tables of the analytics database whose rows come from `events` (the table itself, its Buffer,
/// and the rollups its materialized views fill, see migrations/clickhouse): their days change
/// exactly when `events`' days do.
pub const FROM_EVENTS: &[&str] = &[
    "events",
    "events_buffer",
    "dau_daily",
    "events_hourly",
    "revenue_daily",
    "user_first_seen",
    "ops_hourly",
    "ops_daily",
    "ops_monthly",
];

/// Longest run of single days in a span; longer ranges are tracked by month before their last
/// month (a month's generation moves with any of its days).
const MAX_DAYS: u64 = 62;

/// What a call reads, as far as generations can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The generations to key the call by.
    pub span: Span,
    /// Every day the call reads is in `span` (none of them is live).
    pub settled: bool,
    /// The call reads nothing but tables fed from `events`, and not the clock (`now()`,
    /// `today()`): its generations tell every change of its result.
    pub complete: bool,
}

impl Scope {
    /// Whether the result stays right for as long as its generations do not move.
    pub fn tracks_everything(&self) -> bool {
        self.settled && self.complete
    }
}

/// The scope of a call; `None` when the template reads no date range (its TTL alone bounds
/// staleness).
pub fn of(
    template: &Template,
    rendered: &Rendered,
    database: &str,
    today: NaiveDate,
    live_days: u32,
) -> Option<Scope> {
    let spec = template.meta().freshness.clone().unwrap_or_default();
    if !spec.tracked {
        return None;
    }
    let from = day_of(rendered.values.get(&spec.from)?)?;
    let to = day_of(rendered.values.get(&spec.to)?)?;
    let first = from.checked_sub_days(Days::new(spec.days_before.into()))?;
    let last = match spec.through {
        Through::To => to,
        Through::EndOfMonth => end_of_month(to)?,
        Through::Today => to.max(today),
    };
    if last < first {
        return None;
    }
    // Days from the first live one on are left to the TTL.
    let cut = match live_days {
        0 => last,
        n => last.min(today.checked_sub_days(Days::new(n.into()))?),
    };
    let first = if spec.history { month_of(first) } else { first };
    let (days, months) = if cut < first {
        (None, spec.history.then_some((None, first)))
    } else if (cut - first).num_days() as u64 >= MAX_DAYS {
        let month = month_of(cut);
        let since = (!spec.history).then_some(first);
        (Some((month, cut)), Some((since, month)))
    } else {
        (Some((first, cut)), spec.history.then_some((None, first)))
    };
    if days.is_none() && months.is_none() {
        return None;
    }
    let prefix = format!("{database}.");
    let complete = rendered.tables.iter().all(|t| {
        t.strip_prefix(&prefix)
            .is_some_and(|table| FROM_EVENTS.contains(&table))
    }) && !reads_the_clock(&rendered.sql);
    Some(Scope {
        span: Span {
            table: EVENTS,
            days,
            months,
        },
        settled: cut == last,
        complete,
    })
}

/// The day of a Date (`YYYY-MM-DD`) or DateTime (`YYYY-MM-DD hh:mm:ss`) value.
fn day_of(value: &Value) -> Option<NaiveDate> {
    let text = value.as_str()?;
    NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()
}

fn end_of_month(day: NaiveDate) -> Option<NaiveDate> {
    let first = day.with_day(1)?;
    first.checked_add_months(chrono::Months::new(1))?.pred_opt()
}

/// Whether SQL calls a function whose value changes with time.
fn reads_the_clock(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    [
        "now(",
        "now64(",
        "today(",
        "yesterday(",
        "currentdate",
        "utc_timestamp(",
    ]
    .iter()
    .any(|f| lower.contains(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn template(freshness: &str) -> Template {
        let text = format!(
            "/*---\ndescription = \"x\"\n{freshness}\n[params.from]\ntype = \"Date\"\nrequired = true\n[params.to]\ntype = \"DateTime\"\nrequired = true\n[[examples]]\nname = \"x\"\nparams = {{ from = \"2026-01-01\", to = \"2026-01-02\" }}\n---*/\nSELECT 1 FROM dau_daily\n"
        );
        let file = crate::catalog::template::TemplateFile::parse(
            std::path::Path::new("queries/t/v1.sql"),
            &text,
        )
        .unwrap();
        Template {
            file,
            policy: crate::sql::guard::Policy::database("db"),
        }
    }

    fn rendered(from: &str, to: &str, tables: &[&str], sql: &str) -> Rendered {
        let values = BTreeMap::from([
            ("from".to_string(), Value::from(from)),
            ("to".to_string(), Value::from(to)),
        ]);
        Rendered {
            sql: sql.into(),
            bindings: Vec::new(),
            values_json: String::new(),
            values,
            tables: tables
                .iter()
                .map(|t| format!("db.{t}"))
                .collect::<BTreeSet<_>>(),
        }
    }

    const TODAY: &str = "2026-03-15";

    fn scope(freshness: &str, from: &str, to: &str) -> Option<Scope> {
        of(
            &template(freshness),
            &rendered(from, to, &["dau_daily"], "SELECT 1 FROM dau_daily"),
            "db",
            day(TODAY),
            1,
        )
    }

    #[test]
    fn a_past_range_is_its_days_and_settled() {
        let scope = scope("", "2026-03-01", "2026-03-10 12:00:00").unwrap();

        assert_eq!(
            scope.span.days,
            Some((day("2026-03-01"), day("2026-03-10")))
        );
        assert_eq!(scope.span.months, None);
        assert!(scope.tracks_everything());
    }

    #[test]
    fn live_days_are_left_out_and_the_result_is_not_settled() {
        let partly = scope("", "2026-03-10", "2026-03-15 18:00:00").unwrap();

        assert_eq!(
            partly.span.days,
            Some((day("2026-03-10"), day("2026-03-14")))
        );
        assert!(!partly.settled);
        assert_eq!(scope("", "2026-03-15", "2026-03-16 00:00:00"), None);
    }

    #[test]
    fn the_header_widens_the_days() {
        let before = scope("[freshness]\ndays_before = 29", "2026-03-01", "2026-03-02").unwrap();
        let today = scope(
            "[freshness]\nthrough = \"today\"",
            "2026-03-01",
            "2026-03-02",
        )
        .unwrap();
        let month = scope(
            "[freshness]\nthrough = \"end_of_month\"",
            "2026-02-01",
            "2026-02-02",
        )
        .unwrap();
        let history = scope("[freshness]\nhistory = true", "2026-02-10", "2026-02-12").unwrap();

        assert_eq!(before.span.days.unwrap().0, day("2026-01-31"));
        assert_eq!(today.span.days.unwrap().1, day("2026-03-14"));
        assert!(!today.settled, "through today reads a live day");
        assert_eq!(month.span.days.unwrap().1, day("2026-02-28"));
        assert_eq!(
            history.span.days,
            Some((day("2026-02-01"), day("2026-02-12")))
        );
        assert_eq!(history.span.months, Some((None, day("2026-02-01"))));
    }

    #[test]
    fn long_ranges_are_tracked_by_month_before_their_last_month() {
        let scope = scope("", "2025-01-10", "2026-03-05").unwrap();

        assert_eq!(
            scope.span.days,
            Some((day("2026-03-01"), day("2026-03-05")))
        );
        assert_eq!(
            scope.span.months,
            Some((Some(day("2025-01-10")), day("2026-03-01")))
        );
    }

    #[test]
    fn other_tables_or_the_clock_make_a_scope_incomplete() {
        let call = |tables: &[&str], sql: &str| {
            of(
                &template(""),
                &rendered("2026-03-01", "2026-03-02", tables, sql),
                "db",
                day(TODAY),
                1,
            )
            .unwrap()
        };

        assert!(call(&["events", "dau_daily"], "SELECT 1").complete);
        assert!(!call(&["events", "segment_members"], "SELECT 1").complete);
        assert!(!call(&["events"], "SELECT today() - 1").complete);
    }

    #[test]
    fn untracked_templates_and_missing_dates_have_no_scope() {
        assert_eq!(
            scope("[freshness]\ntracked = false", "2026-03-01", "2026-03-02"),
            None
        );
        let missing = of(
            &template(""),
            &rendered("2026-03-01", "", &["events"], "SELECT 1"),
            "db",
            day(TODAY),
            1,
        );
        assert_eq!(missing, None);
    }
}
