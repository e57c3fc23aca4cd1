//! The data set of `chgate bench scale`: game-store traffic generated inside ClickHouse by
//! `generate.sql`, one `INSERT … SELECT` a day, into `events` (the materialized views fill the
//! rollups as they do for ingested rows). Deterministic for a plan; resumable: each finished day
//! is recorded in `scale_progress`, and a later run with the same plan goes on where it stopped.

use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{Datelike, NaiveDate, Weekday};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// About this many events (the generator draws sessions, whose length varies).
    pub events: u64,
    pub users: u64,
    pub days: u32,
    pub seed: u64,
}

impl Plan {
    /// The plan as recorded with every finished day.
    fn key(&self) -> String {
        format!(
            "events={} users={} days={} seed={}",
            self.events, self.users, self.days, self.seed
        )
    }

    /// Users first seen before day `x` (0-based): 30 % of them on the first day (the base a
    /// product has when the window opens), then the same number every day.
    fn first_seen_before(&self, x: u32) -> u64 {
        if x == 0 {
            return 0;
        }
        let share = 0.3 + 0.7 * f64::from(x) / f64::from(self.days);
        ((self.users as f64 * share).floor() as u64).min(self.users)
    }
}

/// The generated data: its days are `first_day` .. `end` (exclusive).
#[derive(Debug, Clone)]
pub struct DataSet {
    pub first_day: NaiveDate,
    pub end: NaiveDate,
    pub events: u64,
    pub users: u64,
}

const GENERATE_SQL: &str = include_str!("generate.sql");

/// Sessions of a day, by kind.
#[derive(Debug, Clone, Copy)]
struct Day {
    index: u32,
    new_from: u64,
    new_users: u64,
    returning: u64,
    bots: u64,
}

/// Generates what the database does not hold yet; `log` hears of every day.
pub async fn ensure(
    client: &clickhouse::Client,
    plan: &Plan,
    mut log: impl FnMut(&str),
) -> anyhow::Result<DataSet> {
    client
        .query(
            "CREATE TABLE IF NOT EXISTS scale_progress (plan String, first_day Date, day Date, \
             events UInt64, seconds Float64) ENGINE = MergeTree ORDER BY day",
        )
        .execute()
        .await
        .context("cannot create scale_progress")?;
    let recorded: Vec<(String, u16, u16)> = client
        .query("SELECT plan, toUInt16(any(first_day)), toUInt16(day) FROM scale_progress GROUP BY plan, day ORDER BY day")
        .fetch_all()
        .await
        .context("cannot read scale_progress")?;
    if let Some((other, ..)) = recorded.iter().find(|(key, ..)| *key != plan.key()) {
        bail!(
            "this database holds events of another plan ({other}); use another database \
             (CHGATE_BENCH_SCALE_DB) or drop this one"
        );
    }
    let first_day = match recorded.first() {
        Some(&(_, first, _)) => day_number(first),
        None => {
            let today = chrono::Utc::now().date_naive();
            today - chrono::Days::new(u64::from(plan.days))
        }
    };
    let done: std::collections::BTreeSet<NaiveDate> = recorded
        .iter()
        .map(|&(_, _, day)| day_number(day))
        .collect();
    let stored: Vec<(u16, u64)> = client
        .query("SELECT toUInt16(toDate(timestamp)) AS d, count() FROM events GROUP BY d")
        .fetch_all()
        .await
        .context("cannot count the events by day")?;
    for &(day, count) in &stored {
        let day = day_number(day);
        if !done.contains(&day) {
            bail!(
                "events holds {count} rows of {day} that no finished day of the plan accounts for \
                 (an interrupted insert, or events from elsewhere): its rollups cannot be trusted; \
                 drop the database and run again"
            );
        }
    }
    let days = schedule(plan, first_day, per_session(client, plan).await?);
    for day in &days {
        let date = first_day + chrono::Days::new(u64::from(day.index));
        if done.contains(&date) {
            continue;
        }
        let started = Instant::now();
        insert_day(client, plan, day, date).await?;
        let count: u64 = client
            .query("SELECT count() FROM events WHERE toDate(timestamp) = ?")
            .bind(date.to_string())
            .fetch_one()
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        client
            .query("INSERT INTO scale_progress SELECT ?, toDate(?), toDate(?), ?, ?")
            .bind(plan.key())
            .bind(first_day.to_string())
            .bind(date.to_string())
            .bind(count)
            .bind(seconds)
            .execute()
            .await
            .context("cannot record a finished day")?;
        log(&format!(
            "{date}: {count} events ({} new users, {} returning sessions, {} bot sessions) in {seconds:.1} s",
            day.new_users, day.returning, day.bots
        ));
    }
    let (events, users): (u64, u64) = client
        .query("SELECT count(), uniq(actor_id) FROM events")
        .fetch_one()
        .await?;
    Ok(DataSet {
        first_day,
        end: first_day + chrono::Days::new(u64::from(plan.days)),
        events,
        users,
    })
}

/// A day number as ClickHouse's `Date` counts them.
fn day_number(days: u16) -> NaiveDate {
    NaiveDate::default() + chrono::Days::new(u64::from(days))
}

/// Events per returning and per bot session, from a sample of the generator.
async fn per_session(client: &clickhouse::Client, plan: &Plan) -> anyhow::Result<(f64, f64)> {
    let sample = 20_000;
    let day = Day {
        index: plan.days / 2,
        new_from: plan.first_seen_before(plan.days / 2),
        new_users: 0,
        returning: sample,
        bots: sample / 10,
    };
    let select = GENERATE_SQL
        .split_once("ingest_segment)\n")
        .map(|(_, select)| select)
        .context("generate.sql: no column list")?;
    let (real, bots): (u64, u64) = bind(
        client.query_raw(&format!(
            "SELECT countIf(is_bot = 0), countIf(is_bot = 1) FROM ({select})"
        )),
        plan,
        &day,
        NaiveDate::default(),
    )
    .fetch_one()
    .await
    .context("cannot sample the generator")?;
    Ok((
        real as f64 / sample as f64,
        bots as f64 / (sample / 10) as f64,
    ))
}

/// The sessions of every day: each day's new users, and returning sessions so that the days hold
/// about `plan.events` events in all, weekends a fifth busier; 1 % of the sessions are bots.
fn schedule(plan: &Plan, first_day: NaiveDate, (per_session, per_bot): (f64, f64)) -> Vec<Day> {
    let weight = |index: u32| {
        let weekday = (first_day + chrono::Days::new(u64::from(index))).weekday();
        if matches!(weekday, Weekday::Sat | Weekday::Sun) {
            1.2
        } else {
            1.0
        }
    };
    let total_weight: f64 = (0..plan.days).map(weight).sum();
    let sessions = plan.events as f64 / (per_session + 0.01 * per_bot);
    (0..plan.days)
        .map(|index| {
            let new_from = plan.first_seen_before(index);
            let new_users = plan.first_seen_before(index + 1) - new_from;
            let day_sessions = (sessions * weight(index) / total_weight).round() as u64;
            Day {
                index,
                new_from,
                new_users,
                returning: day_sessions.saturating_sub(new_users),
                bots: day_sessions / 100,
            }
        })
        .collect()
}

fn bind(
    query: clickhouse::query::Query,
    plan: &Plan,
    day: &Day,
    date: NaiveDate,
) -> clickhouse::query::Query {
    query
        .param("seed", plan.seed)
        .param("days", plan.days)
        .param("users", plan.users)
        .param("day", day.index)
        .param("day_start", format!("{date} 00:00:00"))
        .param("new_from", day.new_from)
        .param("new_users", day.new_users)
        .param("returning", day.returning)
        .param("bots", day.bots)
}

async fn insert_day(
    client: &clickhouse::Client,
    plan: &Plan,
    day: &Day,
    date: NaiveDate,
) -> anyhow::Result<()> {
    bind(client.query_raw(GENERATE_SQL), plan, day, date)
        .execute()
        .await
        .with_context(|| format!("cannot generate the events of {date}"))
}
