//! Generations of (table, UTC day): a counter per day that moves whenever rows for that day are
//! committed to ClickHouse, shared by the gateways through Redis, with an in-process copy that
//! serves while Redis is absent or down.
//!
//! Result-cache keys of template calls include the generations of the days the call reads
//! ([`super::scope::Scope`]), so a result is never served after a day it covers has changed.
//!
//! In Redis each table has two hashes, `chgate:gen:<database>:<table>:day` (field `YYYY-MM-DD`)
//! and `…:month` (field `YYYY-MM`, the sum of its days, for results that read all history). Each
//! also holds a random `epoch`, created when missing: if Redis loses a hash (restart, eviction),
//! the counters restart under a new epoch and no key made before can match again.
//!
//! Rows reach `events` (and the rollups fed from it) when the Buffer table flushes, not when the
//! writer's insert returns: [`Generations::committed`] advances the days at once and again once
//! the Buffer's `max_time` (plus a margin) has passed, so a result computed in between, without
//! the rows, is not served after the flush.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};

use crate::storage::redis::Redis;

/// The tables whose days have generations: `events`, and through it every rollup its
/// materialized views fill.
pub const EVENTS: &str = "events";

/// Days written, by table.
pub type Written = BTreeMap<&'static str, BTreeSet<NaiveDate>>;

/// What a call's cache key depends on, as text for the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    pub text: String,
    /// Read from Redis, so every gateway sees the same and advances by any of them reach it.
    pub shared: bool,
}

/// The generations a stamp holds: those of a range of days, and those of a range of months
/// (each the sum of its days' advances).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Span {
    pub table: &'static str,
    /// First and last day, inclusive.
    pub days: Option<(NaiveDate, NaiveDate)>,
    /// Months (as their first days) from the first (`None`: from the beginning of history) to
    /// before the second.
    pub months: Option<(Option<NaiveDate>, NaiveDate)>,
}

const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Generations; cheap to clone.
#[derive(Clone)]
pub struct Generations(Arc<Inner>);

struct Inner {
    redis: Option<Redis>,
    database: String,
    /// Distinguishes this process's in-process counters from every other's.
    local_epoch: String,
    state: Mutex<Local>,
    /// Stamps read from Redis, for a short while: most calls cost no Redis round trip.
    memo: moka::sync::Cache<Span, Stamp>,
}

#[derive(Default)]
struct Local {
    days: HashMap<(&'static str, NaiveDate), u64>,
    months: HashMap<(&'static str, NaiveDate), u64>,
    /// Advances not yet in Redis (it was down): pushed before Redis is trusted again.
    unsynced: BTreeMap<(&'static str, NaiveDate), u64>,
    /// Days inserted into the Buffer table, to advance again when it has flushed them.
    awaiting: Vec<(Instant, Written)>,
    /// When pushing `unsynced` last failed: retried at most once a second meanwhile.
    failed_at: Option<Instant>,
}

pub fn month_of(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

impl Generations {
    /// `memo`: how long a stamp read from Redis is reused in process.
    pub fn new(redis: Option<Redis>, database: &str, memo: Duration) -> Self {
        Self(Arc::new(Inner {
            redis,
            database: database.to_string(),
            local_epoch: uuid::Uuid::new_v4().simple().to_string(),
            state: Mutex::new(Local::default()),
            memo: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(memo.max(Duration::from_millis(1)))
                .build(),
        }))
    }

    /// Whether generations are shared with other gateways and the CLI.
    pub fn shared(&self) -> bool {
        self.0.redis.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hash(&self, table: &str, kind: &str) -> String {
        format!("chgate:gen:{}:{table}:{kind}", self.0.database)
    }

    /// Rows for `written` were inserted into the Buffer table: advances their days now, and again
    /// `settle` later, when the Buffer has flushed them into `events`.
    pub async fn committed(&self, written: Written, settle: Duration) {
        if written.values().all(BTreeSet::is_empty) {
            return;
        }
        self.advance(&written).await;
        self.lock()
            .awaiting
            .push((Instant::now() + settle, written));
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(settle).await;
            this.advance_due(Instant::now()).await;
        });
    }

    /// The Buffer table was flushed (`OPTIMIZE TABLE events_buffer`): advances every day still
    /// waiting for its flush now.
    pub async fn flushed(&self) {
        self.advance_due(Instant::now() + Duration::from_secs(365 * 24 * 3600))
            .await;
    }

    /// Whether days still wait for the Buffer table to flush them.
    pub fn awaiting(&self) -> bool {
        !self.lock().awaiting.is_empty()
    }

    async fn advance_due(&self, until: Instant) {
        let mut due = Written::new();
        {
            let mut state = self.lock();
            state.awaiting.retain(|(at, written)| {
                if *at > until {
                    return true;
                }
                for (table, days) in written {
                    due.entry(table).or_default().extend(days);
                }
                false
            });
        }
        if !due.is_empty() {
            self.advance(&due).await;
        }
    }

    /// Advances the generations of `written` (in process at once, in Redis when it answers).
    pub async fn advance(&self, written: &Written) {
        {
            let mut state = self.lock();
            for (table, days) in written {
                for day in days {
                    *state.days.entry((table, *day)).or_default() += 1;
                    *state.months.entry((table, month_of(*day))).or_default() += 1;
                    if self.0.redis.is_some() {
                        *state.unsynced.entry((table, *day)).or_default() += 1;
                    }
                }
            }
        }
        self.0.memo.invalidate_all();
        metrics::counter!("chgate_cache_generation_advances_total")
            .increment(written.values().map(|d| d.len() as u64).sum());
        self.sync().await;
    }

    /// Pushes advances Redis has not seen; true when none is left.
    pub async fn sync(&self) -> bool {
        let Some(redis) = &self.0.redis else {
            return true;
        };
        let pending: BTreeMap<(&'static str, NaiveDate), u64> = {
            let state = self.lock();
            if state.unsynced.is_empty() {
                return true;
            }
            if state
                .failed_at
                .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
            {
                return false;
            }
            state.unsynced.clone()
        };
        let mut pipe = redis::pipe();
        let mut months: BTreeMap<(&'static str, NaiveDate), u64> = BTreeMap::new();
        for ((table, day), n) in &pending {
            pipe.hincr(
                self.hash(table, "day"),
                day.format("%Y-%m-%d").to_string(),
                *n,
            )
            .ignore();
            *months.entry((table, month_of(*day))).or_default() += n;
        }
        for ((table, month), n) in &months {
            pipe.hincr(
                self.hash(table, "month"),
                month.format("%Y-%m").to_string(),
                *n,
            )
            .ignore();
        }
        let tables: BTreeSet<&str> = pending.keys().map(|(t, _)| *t).collect();
        for table in tables {
            for kind in ["day", "month"] {
                pipe.hset_nx(self.hash(table, kind), "epoch", new_epoch())
                    .ignore();
            }
        }
        let pushed: anyhow::Result<()> = async {
            let mut conn = tokio::time::timeout(REDIS_TIMEOUT, redis.connection()).await??;
            tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut conn)).await??;
            Ok(())
        }
        .await;
        match pushed {
            Ok(()) => {
                let mut state = self.lock();
                state.failed_at = None;
                for (key, n) in pending {
                    if let Some(left) = state.unsynced.get_mut(&key) {
                        *left = left.saturating_sub(n);
                        if *left == 0 {
                            state.unsynced.remove(&key);
                        }
                    }
                }
                state.unsynced.is_empty()
            }
            Err(e) => {
                self.lock().failed_at = Some(Instant::now());
                metrics::counter!("chgate_cache_redis_errors_total").increment(1);
                tracing::debug!(error = %format!("{e:#}"), "cannot advance generations in Redis; kept in process");
                false
            }
        }
    }

    /// The generations of `span`: from Redis when it answers and holds every advance of this
    /// process, else the in-process ones (not shared).
    pub async fn stamp(&self, span: &Span) -> Stamp {
        if self.0.redis.is_none() || !self.sync().await {
            return self.local_stamp(span);
        }
        if let Some(stamp) = self.0.memo.get(span) {
            return stamp;
        }
        match self.redis_stamp(span).await {
            Ok(stamp) => {
                self.0.memo.insert(span.clone(), stamp.clone());
                stamp
            }
            Err(e) => {
                metrics::counter!("chgate_cache_redis_errors_total").increment(1);
                tracing::debug!(error = %format!("{e:#}"), "cannot read generations from Redis; using the in-process ones");
                self.local_stamp(span)
            }
        }
    }

    async fn redis_stamp(&self, span: &Span) -> anyhow::Result<Stamp> {
        let redis = self
            .0
            .redis
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no Redis"))?;
        let days: Vec<String> = span_days(span)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .collect();
        let day_hash = self.hash(span.table, "day");
        let month_hash = self.hash(span.table, "month");
        let mut pipe = redis::pipe();
        pipe.hset_nx(&day_hash, "epoch", new_epoch()).ignore();
        pipe.cmd("HMGET").arg(&day_hash).arg("epoch").arg(&days);
        if span.months.is_some() {
            pipe.hset_nx(&month_hash, "epoch", new_epoch()).ignore();
            pipe.hgetall(&month_hash);
        }
        let mut conn = tokio::time::timeout(REDIS_TIMEOUT, redis.connection()).await??;
        let (generations, months): (Vec<Option<String>>, Option<HashMap<String, String>>) =
            if span.months.is_some() {
                let (g, m): (Vec<Option<String>>, HashMap<String, String>) =
                    tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut conn)).await??;
                (g, Some(m))
            } else {
                let (g,): (Vec<Option<String>>,) =
                    tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut conn)).await??;
                (g, None)
            };
        let mut text = format!("redis|{}|", span.table);
        for value in &generations {
            text.push_str(value.as_deref().unwrap_or("0"));
            text.push(',');
        }
        if let (Some(months), Some((since, before))) = (months, span.months) {
            let since = since.map(|m| month_of(m).format("%Y-%m").to_string());
            let before = month_of(before).format("%Y-%m").to_string();
            let mut earlier: Vec<(&String, &String)> = months
                .iter()
                .filter(|(m, _)| {
                    *m == "epoch" || (since.as_ref().is_none_or(|s| *m >= s) && **m < before)
                })
                .collect();
            earlier.sort();
            for (month, n) in earlier {
                text.push_str(&format!("|{month}={n}"));
            }
        }
        Ok(Stamp { text, shared: true })
    }

    fn local_stamp(&self, span: &Span) -> Stamp {
        let state = self.lock();
        let mut text = format!("local|{}|{}|", self.0.local_epoch, span.table);
        for day in span_days(span) {
            let n = state.days.get(&(span.table, day)).copied().unwrap_or(0);
            text.push_str(&format!("{n},"));
        }
        if let Some((since, before)) = span.months {
            let mut earlier: Vec<(NaiveDate, u64)> = state
                .months
                .iter()
                .filter(|((t, m), _)| {
                    *t == span.table
                        && since.is_none_or(|s| *m >= month_of(s))
                        && *m < month_of(before)
                })
                .map(|((_, m), n)| (*m, *n))
                .collect();
            earlier.sort();
            for (month, n) in earlier {
                text.push_str(&format!("|{}={n}", month.format("%Y-%m")));
            }
        }
        Stamp {
            text,
            shared: false,
        }
    }
}

fn span_days(span: &Span) -> impl Iterator<Item = NaiveDate> {
    let (first, last) = match span.days {
        Some((first, last)) => (Some(first), last),
        None => (None, NaiveDate::MIN),
    };
    first
        .into_iter()
        .flat_map(move |first| first.iter_days().take_while(move |d| *d <= last))
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The UTC days of event timestamps (milliseconds since the epoch).
pub fn days_of(timestamps: impl Iterator<Item = i64>) -> BTreeSet<NaiveDate> {
    let mut days = BTreeSet::new();
    let mut last = None;
    for ms in timestamps {
        let day = ms.div_euclid(86_400_000);
        if last == Some(day) {
            continue;
        }
        last = Some(day);
        if let Some(date) = chrono::DateTime::from_timestamp_millis(day * 86_400_000) {
            days.insert(date.date_naive());
        }
    }
    days
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn written(days: &[&str]) -> Written {
        Written::from([(EVENTS, days.iter().map(|d| day(d)).collect())])
    }

    #[test]
    fn days_of_timestamps_are_their_utc_days() {
        let days = days_of([0i64, 86_399_999, 86_400_000, -1].into_iter());
        assert_eq!(
            days.into_iter().collect::<Vec<_>>(),
            vec![day("1969-12-31"), day("1970-01-01"), day("1970-01-02")]
        );
    }

    #[tokio::test]
    async fn an_advance_changes_the_stamps_of_spans_covering_the_day_and_no_other() {
        let generations = Generations::new(None, "db", Duration::from_millis(100));
        let span = |first: &str, last: &str| Span {
            table: EVENTS,
            days: Some((day(first), day(last))),
            months: None,
        };
        let (covering, other) = (
            span("2026-01-01", "2026-01-07"),
            span("2026-01-08", "2026-01-09"),
        );
        let before = (
            generations.stamp(&covering).await,
            generations.stamp(&other).await,
        );

        generations.advance(&written(&["2026-01-03"])).await;

        assert_ne!(generations.stamp(&covering).await, before.0);
        assert_eq!(generations.stamp(&other).await, before.1);
        assert!(
            !before.0.shared,
            "without Redis, generations are in process"
        );
    }

    #[tokio::test]
    async fn history_spans_see_advances_in_earlier_months_only() {
        let generations = Generations::new(None, "db", Duration::from_millis(100));
        let span = Span {
            table: EVENTS,
            days: Some((day("2026-03-01"), day("2026-03-10"))),
            months: Some((None, day("2026-03-01"))),
        };
        let before = generations.stamp(&span).await;

        generations.advance(&written(&["2026-03-20"])).await;
        let later_day = generations.stamp(&span).await;
        generations.advance(&written(&["2025-07-04"])).await;

        assert_eq!(later_day, before, "a day after the span");
        assert_ne!(generations.stamp(&span).await, before, "a month before it");
    }

    #[tokio::test]
    async fn committed_days_advance_again_once_the_buffer_has_flushed() {
        let generations = Generations::new(None, "db", Duration::from_millis(100));
        let span = Span {
            table: EVENTS,
            days: Some((day("2026-01-01"), day("2026-01-01"))),
            months: None,
        };
        let start = generations.stamp(&span).await;

        generations
            .committed(written(&["2026-01-01"]), Duration::from_millis(200))
            .await;
        let inserted = generations.stamp(&span).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let flushed = generations.stamp(&span).await;

        assert_ne!(inserted, start);
        assert_ne!(flushed, inserted);
    }
}
