//! Finalized values of the rollups' closed periods (migrations/clickhouse/0006_finalized_rollups.sql).
//!
//! The distinct counts of `dau_daily`, `revenue_daily` and the ops rollups are `uniq` states, and
//! merging them is what a long range costs. A period that has closed keeps its count until rows
//! arrive for it, so a pass of the finalizer stores, for every key whose rollup rows changed since
//! its last pass (or that it never finalized), the merged values and the key's **fingerprint**: a
//! count in the same rollup rows that every added row raises (events, orders + refunds, ops).
//! Templates take a finalized value only where the fingerprint still equals the rollup's, and
//! merge states for every other key, so answers never depend on when the finalizer ran; it only
//! makes them cheaper.
//!
//! Each pass is one `INSERT … SELECT` per [`Finalization`], run by every gateway that has
//! `rollups.finalize_secs` (repeated rows are harmless: the final tables keep the latest by
//! `finalized_at`), and by `chgate rollups finalize`.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::storage::clickhouse::ClickHouse;

/// One final table's rows of one granularity: which rollup rows, keyed how, with which values.
#[derive(Debug, Clone, Copy)]
pub struct Finalization {
    /// The final table.
    pub table: &'static str,
    /// `granularity` of its rows.
    pub granularity: &'static str,
    /// The rollup read.
    pub rollup: &'static str,
    /// The period a rollup row belongs to (an expression over the rollup's columns).
    pub period: &'static str,
    /// The start of the current period (an expression of `now()`): earlier periods are closed.
    pub current: &'static str,
    /// The start of the first period finalized, from `{days}` days ago.
    pub horizon: &'static str,
    /// The key columns besides `period`: (expression over the rollup, column of the final table).
    pub keys: &'static [(&'static str, &'static str)],
    /// The finalized values: (aggregate over the rollup, column of the final table).
    pub values: &'static [(&'static str, &'static str)],
    /// The fingerprint: an aggregate over the rollup that every added row raises.
    pub fingerprint: &'static str,
}

const DAY: (&str, &str, &str) = (
    "day",
    "toDate(now(), 'UTC')",
    "toDate(now(), 'UTC') - {days}",
);
const WEEK: (&str, &str, &str) = (
    "toMonday(day)",
    "toMonday(toDate(now(), 'UTC'))",
    "toMonday(toDate(now(), 'UTC') - {days})",
);
const MONTH: (&str, &str, &str) = (
    "toStartOfMonth(day)",
    "toStartOfMonth(toDate(now(), 'UTC'))",
    "toStartOfMonth(toDate(now(), 'UTC') - {days})",
);

/// The dau levels (all, by platform, by country, both) by day, and all users by week and month.
const DAU_VALUES: &[(&str, &str)] = &[("uniqMerge(users)", "users")];
const DAU_FINGERPRINT: &str = "sum(events)";

const fn dau(
    granularity: &'static str,
    (period, current, horizon): (&'static str, &'static str, &'static str),
    keys: &'static [(&'static str, &'static str)],
) -> Finalization {
    Finalization {
        table: "dau_final",
        granularity,
        rollup: "dau_daily",
        period,
        current,
        horizon,
        keys,
        values: DAU_VALUES,
        fingerprint: DAU_FINGERPRINT,
    }
}

const ALL: &[(&str, &str)] = &[
    ("0", "by_platform"),
    ("0", "by_country"),
    ("''", "platform"),
    ("''", "country"),
];
const BY_PLATFORM: &[(&str, &str)] = &[
    ("1", "by_platform"),
    ("0", "by_country"),
    ("platform", "platform"),
    ("''", "country"),
];
const BY_COUNTRY: &[(&str, &str)] = &[
    ("0", "by_platform"),
    ("1", "by_country"),
    ("''", "platform"),
    ("country", "country"),
];
const BY_BOTH: &[(&str, &str)] = &[
    ("1", "by_platform"),
    ("1", "by_country"),
    ("platform", "platform"),
    ("country", "country"),
];

const REVENUE_VALUES: &[(&str, &str)] = &[
    ("sum(gross) - sum(refunded)", "revenue"),
    ("sum(orders)", "orders"),
    ("uniqMerge(payers)", "payers"),
];

const fn revenue(
    granularity: &'static str,
    (period, current, horizon): (&'static str, &'static str, &'static str),
) -> Finalization {
    Finalization {
        table: "revenue_final",
        granularity,
        rollup: "revenue_daily",
        period,
        current,
        horizon,
        keys: &[("currency", "currency")],
        values: REVENUE_VALUES,
        fingerprint: "sum(orders) + sum(refunds)",
    }
}

const OPS_VALUES: &[(&str, &str)] = &[
    ("sum(ops)", "ops"),
    ("sum(errors)", "errors"),
    ("uniqMerge(users)", "unique_users"),
    ("sum(duration_sum)", "duration_sum"),
    ("sum(duration_n)", "duration_n"),
    (
        "if(sum(duration_n) = 0, NULL, round(toFloat64(arrayElement(quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q), 2)), 3))",
        "p95_ms",
    ),
];

const fn ops(
    granularity: &'static str,
    rollup: &'static str,
    current: &'static str,
) -> Finalization {
    Finalization {
        table: "ops_final",
        granularity,
        rollup,
        period: "period",
        current,
        horizon: "toDateTime(toDate(now(), 'UTC') - {days}, 'UTC')",
        keys: &[("operation", "operation")],
        values: OPS_VALUES,
        fingerprint: "sum(ops)",
    }
}

/// Every finalization, in the order a pass runs them.
pub const FINALIZATIONS: &[Finalization] = &[
    dau("day", DAY, ALL),
    dau("day", DAY, BY_PLATFORM),
    dau("day", DAY, BY_COUNTRY),
    dau("day", DAY, BY_BOTH),
    dau("week", WEEK, ALL),
    dau("month", MONTH, ALL),
    revenue("day", DAY),
    revenue("week", WEEK),
    revenue("month", MONTH),
    ops("hour", "ops_hourly", "toStartOfHour(now())"),
    ops(
        "day",
        "ops_daily",
        "toDateTime(toDate(now(), 'UTC'), 'UTC')",
    ),
    ops(
        "month",
        "ops_monthly",
        "toDateTime(toStartOfMonth(toDate(now(), 'UTC')), 'UTC')",
    ),
];

impl Finalization {
    /// The statement that finalizes, in `database`, the closed periods since `days` days ago whose
    /// keys have no finalized row with the rollup's current fingerprint.
    pub fn statement(&self, database: &str, days: u32) -> String {
        let key_names: Vec<&str> = std::iter::once("period")
            .chain(self.keys.iter().map(|(_, name)| *name))
            .collect();
        let keys = key_names.join(", ");
        let key_exprs: String = std::iter::once(format!("{} AS period", self.period))
            .chain(self.keys.iter().map(|(e, n)| format!("{e} AS {n}")))
            .collect::<Vec<_>>()
            .join(", ");
        let values: String = self
            .values
            .iter()
            // Aliases of their own: an alias named like a rollup column would stand for it in the
            // other aggregates (`sum(orders) AS orders` inside `sum(orders) + sum(refunds)`).
            .map(|(e, n)| format!("{e} AS finalized_{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let value_names: String = self
            .values
            .iter()
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ");
        let horizon = self.horizon.replace("{days}", &days.to_string());
        let closed = format!(
            "{period} < {current} AND {period} >= {horizon}",
            period = self.period,
            current = self.current
        );
        let (db, table, rollup, granularity) =
            (database, self.table, self.rollup, self.granularity);
        format!(
            "INSERT INTO `{db}`.{table} (granularity, {keys}, {value_names}, fingerprint, finalized_at)
SELECT '{granularity}', {key_exprs}, {values}, {fingerprint} AS fingerprint, now64(3)
FROM `{db}`.{rollup}
WHERE {closed}
  AND ({keys}) IN
  (
      SELECT {keys}
      FROM (SELECT {key_exprs}, {fingerprint} AS fingerprint FROM `{db}`.{rollup} WHERE {closed} GROUP BY {keys}) AS live
      LEFT ANTI JOIN
      (
          SELECT {keys}, argMax(fingerprint, finalized_at) AS fingerprint
          FROM `{db}`.{table}
          WHERE granularity = '{granularity}'
          GROUP BY {keys}
      ) AS done USING ({keys}, fingerprint)
  )
GROUP BY {keys}",
            fingerprint = self.fingerprint,
        )
    }
}

/// What a pass did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Pass {
    /// Rows written to the final tables.
    pub rows: u64,
    pub elapsed_ms: u64,
    /// The finalizations that failed, with the reason; the others ran.
    pub errors: Vec<String>,
}

/// Runs every finalization once against `clickhouse`'s database.
pub async fn finalize(clickhouse: &ClickHouse, days: u32) -> Pass {
    let started = Instant::now();
    let mut pass = Pass::default();
    for finalization in FINALIZATIONS {
        let statement = finalization.statement(clickhouse.database(), days);
        match clickhouse.client().query(&statement).execute().await {
            Ok(()) => {}
            Err(e) => pass.errors.push(format!(
                "{} ({}): {e}",
                finalization.table, finalization.granularity
            )),
        }
    }
    match written(clickhouse).await {
        Ok(rows) => pass.rows = rows,
        Err(e) => pass.errors.push(format!("counting the final rows: {e}")),
    }
    pass.elapsed_ms = started.elapsed().as_millis() as u64;
    pass
}

/// Rows in the final tables (after a pass: how much is finalized).
async fn written(clickhouse: &ClickHouse) -> Result<u64, clickhouse::error::Error> {
    clickhouse
        .client()
        .query(
            "SELECT toUInt64(sum(ifNull(total_rows, 0))) FROM system.tables
             WHERE database = ? AND name IN ('dau_final', 'revenue_final', 'ops_final')",
        )
        .bind(clickhouse.database())
        .fetch_one()
        .await
}

/// Finalizes every `every` until `shutdown`, the first pass after one interval.
pub fn spawn(clickhouse: ClickHouse, every: Duration, days: u32, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let pass = finalize(&clickhouse, days).await;
            metrics::histogram!("chgate_rollup_finalize_seconds")
                .record(pass.elapsed_ms as f64 / 1000.0);
            for error in &pass.errors {
                tracing::warn!(error = %error, "finalizing rollups failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_finalizes_closed_keys_whose_fingerprint_changed() {
        let sql = FINALIZATIONS[1].statement("analytics", 400);
        assert!(sql.starts_with(
            "INSERT INTO `analytics`.dau_final (granularity, period, by_platform, by_country, platform, country, users, fingerprint, finalized_at)"
        ), "{sql}");
        assert!(sql.contains("SELECT 'day', day AS period, 1 AS by_platform, 0 AS by_country, platform AS platform, '' AS country, uniqMerge(users) AS finalized_users, sum(events) AS fingerprint"));
        assert!(
            sql.contains("WHERE day < toDate(now(), 'UTC') AND day >= toDate(now(), 'UTC') - 400")
        );
        assert!(sql.contains("LEFT ANTI JOIN"));
        assert!(
            sql.contains("USING (period, by_platform, by_country, platform, country, fingerprint)")
        );
    }

    #[test]
    fn every_final_table_is_created_by_the_migrations_with_the_columns_written() {
        let columns = crate::migrate::clickhouse::table_columns().unwrap();
        for f in FINALIZATIONS {
            let table = &columns[f.table];
            let written = ["granularity", "period", "fingerprint", "finalized_at"]
                .into_iter()
                .chain(f.keys.iter().map(|(_, n)| *n))
                .chain(f.values.iter().map(|(_, n)| *n));
            for column in written {
                assert!(table.contains(column), "{}.{column}", f.table);
            }
            assert!(columns.contains_key(f.rollup), "{}", f.rollup);
        }
        assert!(columns["dau_daily"].contains("events"));
    }
}
