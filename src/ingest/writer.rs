//! The ClickHouse writer and the WAL retirer.
//!
//! The writer is a single task per gateway that batches accepted rows and inserts them with the
//! `clickhouse` crate's RowBinary inserter into the Buffer table, retrying with back-off while
//! ClickHouse is unavailable. Memory is bounded by the pipeline's queue permits, which a batch holds
//! until its insert succeeds.
//!
//! The retirer deletes WAL segments once ClickHouse holds all their rows in `events` (past the
//! Buffer table, which loses its contents if the server crashes). It counts each sealed segment's
//! rows by `ingest_segment`; when rows are missing and the count has not moved for longer than the
//! Buffer's flush period, it re-inserts exactly the missing rows (those whose `event_id` ClickHouse
//! does not have). Segments found at start-up are replayed the same way, so a crash of the gateway
//! or of ClickHouse neither loses nor duplicates an acknowledged event.
//!
//! Every insert (a flush, a repair, a replay) tells the result cache's generations which days it
//! wrote: once when the insert into the Buffer table returns, and again the Buffer's flush period
//! later, when the rows are in `events` and its rollups ([`Generations::committed`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use clickhouse::Row;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::row::{EventRow, UserPropertiesRow};
use super::wal::{Wal, WalBatch};
use crate::cache::generations::{days_of, Generations, Written, EVENTS};
use crate::config::InsertFormat;

/// Rows on their way to ClickHouse.
pub struct Pending {
    pub segment: u64,
    pub batch: WalBatch,
    /// Queue capacity (events and memory) held until the rows are stored.
    pub permits: Vec<OwnedSemaphorePermit>,
    /// Told when the rows are in ClickHouse (`?wait=true`).
    pub done: Option<oneshot::Sender<()>>,
}

/// Where and how the writer inserts.
#[derive(Clone)]
pub struct Target {
    pub client: clickhouse::Client,
    /// Insert target: normally `events_ingest`, a Null table whose materialized view moves each
    /// insert into the Buffer table in the same request.
    pub table: String,
    pub format: InsertFormat,
    /// The Buffer table in front of `destination` (`events_buffer`): holds rows not yet flushed.
    pub buffer: String,
    /// The table rows end up in (`events`), where the retirer verifies them.
    pub destination: String,
    pub users_table: String,
    /// Told which days each insert wrote, for the result cache.
    pub generations: Generations,
}

impl Target {
    /// Tells the generations that `rows` were inserted into the Buffer table, which moves them
    /// into `events` within `settle`.
    async fn committed<'a>(&self, rows: impl Iterator<Item = &'a EventRow>, settle: Duration) {
        let days = days_of(rows.map(|r| r.timestamp));
        if !days.is_empty() {
            self.generations
                .committed(Written::from([(EVENTS, days)]), settle)
                .await;
        }
    }
}

/// How long after its insert a row may still be in the Buffer table's memory past its
/// `max_time`: the flush itself (and the materialized views it feeds) takes a moment.
const FLUSH_MARGIN: Duration = Duration::from_secs(1);

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// When the writer flushes.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Rows that make a flush.
    pub rows: usize,
    /// Longest wait before a flush.
    pub interval: Duration,
    /// `ingest.buffer_flush_secs`: the Buffer table's `max_time` as configured.
    pub buffer_flush: Duration,
}

/// Runs until `closing` fires (or every sender is gone), then flushes what is queued. Retries stop
/// when `stop` fires; rows not stored by then stay in the WAL for the next start.
pub async fn run_writer(
    target: Target,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    wal: Option<Wal>,
    batching: Batching,
    closing: CancellationToken,
    stop: CancellationToken,
) {
    let Batching {
        rows: flush_rows,
        interval: flush_interval,
        buffer_flush,
    } = batching;
    let settle = flush_period(&target, buffer_flush).await + FLUSH_MARGIN;
    let mut pending: Vec<Pending> = Vec::new();
    let mut rows = 0usize;
    let mut ticker = tokio::time::interval(flush_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(p) => {
                    rows += p.batch.rows.len() + p.batch.users.len();
                    pending.push(p);
                    metrics::gauge!("chgate_ingest_queue_rows").set(rows as f64);
                    if rows >= flush_rows {
                        flush(&target, &mut pending, wal.as_ref(), &stop, settle).await;
                        rows = 0;
                    }
                }
                None => break,
            },
            () = closing.cancelled() => {
                rx.close();
                while let Ok(p) = rx.try_recv() {
                    pending.push(p);
                }
                break;
            }
            _ = ticker.tick() => {
                if !pending.is_empty() {
                    flush(&target, &mut pending, wal.as_ref(), &stop, settle).await;
                    rows = 0;
                }
            }
        }
        metrics::gauge!("chgate_ingest_queue_rows").set(rows as f64);
    }
    if !pending.is_empty() {
        flush(&target, &mut pending, wal.as_ref(), &stop, settle).await;
    }
    tracing::info!("ClickHouse writer stopped");
}

/// Inserts `pending`, retrying until it succeeds or `stop` fires (then the rows are left to the WAL).
async fn flush(
    target: &Target,
    pending: &mut Vec<Pending>,
    wal: Option<&Wal>,
    stop: &CancellationToken,
    settle: Duration,
) {
    let batches: Vec<&WalBatch> = pending.iter().map(|p| &p.batch).collect();
    let events: usize = batches.iter().map(|b| b.rows.len()).sum();
    let users: usize = batches.iter().map(|b| b.users.len()).sum();
    let stored = retry("events", stop, || {
        insert_rows(
            target,
            &target.table,
            batches.iter().flat_map(|b| b.rows.iter()),
            events,
        )
    })
    .await
        && retry("user properties", stop, || {
            insert_users(target, batches.iter().flat_map(|b| b.users.iter()), users)
        })
        .await;
    if !stored {
        // Shutting down with ClickHouse unavailable: the WAL keeps these rows for the next start.
        pending.clear();
        return;
    }
    target
        .committed(batches.iter().flat_map(|b| b.rows.iter()), settle)
        .await;
    for p in pending.drain(..) {
        if let Some(wal) = wal {
            wal.mark_inserted(p.segment, p.batch.rows.len() as u64);
        }
        if let Some(done) = p.done {
            let _ = done.send(());
        }
    }
}

async fn retry<F, Fut>(what: &str, stop: &CancellationToken, mut attempt: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(()) => return true,
            Err(err) => {
                metrics::counter!("chgate_ingest_clickhouse_errors_total").increment(1);
                tracing::warn!(error = %format!("{err:#}"), retry_in_ms = backoff.as_millis() as u64, "inserting {what} into ClickHouse failed");
            }
        }
        if stop.is_cancelled() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn insert_rows<'a>(
    target: &Target,
    table: &str,
    rows: impl Iterator<Item = &'a EventRow>,
    count: usize,
) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let timeouts = (Some(Duration::from_secs(10)), Some(Duration::from_secs(30)));
    match target.format {
        InsertFormat::RowBinary => {
            let mut insert = target
                .client
                .insert::<EventRow>(table)
                .await
                .context("cannot start insert")?
                .with_timeouts(timeouts.0, timeouts.1);
            for row in rows {
                insert.write(row).await.context("cannot send rows")?;
            }
            insert
                .end()
                .await
                .context("ClickHouse rejected the insert")?;
        }
        InsertFormat::Native => {
            let block = super::row::native_block(&rows.collect::<Vec<_>>())?;
            let mut insert = target
                .client
                .insert_native(table)
                .with_timeouts(timeouts.0, timeouts.1);
            insert.write(&block).await.context("cannot send rows")?;
            insert
                .end()
                .await
                .context("ClickHouse rejected the insert")?;
        }
    }
    metrics::histogram!("chgate_ingest_insert_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("chgate_ingest_insert_rows").record(count as f64);
    metrics::counter!("chgate_ingest_rows_inserted_total").increment(count as u64);
    Ok(())
}

async fn insert_users<'a>(
    target: &Target,
    rows: impl Iterator<Item = &'a UserPropertiesRow>,
    count: usize,
) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let mut insert = target
        .client
        .insert::<UserPropertiesRow>(&target.users_table)
        .await
        .context("cannot start insert")?;
    for row in rows {
        insert.write(row).await.context("cannot send rows")?;
    }
    insert.end().await.context("ClickHouse rejected the insert")
}

#[derive(Row, Deserialize)]
struct SegmentCount {
    ingest_segment: u64,
    rows: u64,
}

#[derive(Row, Deserialize)]
struct Present {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
}

/// Retires, verifies, repairs and replays WAL segments; runs until `stop`.
pub async fn run_retirer(
    target: Target,
    wal: Wal,
    buffer_flush: Duration,
    stop: CancellationToken,
) {
    let settle = flush_period(&target, buffer_flush).await + FLUSH_MARGIN;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        wal.seal_if_due();
        if let Err(err) = retire_once(&target, &wal, settle).await {
            metrics::counter!("chgate_ingest_clickhouse_errors_total").increment(1);
            tracing::warn!(error = %format!("{err:#}"), "WAL verification failed; will retry");
        }
        wal.publish_gauges();
    }
}

/// The longest a row stays in the Buffer table: `ingest.buffer_flush_secs`, or the table's own
/// `max_time` when that is longer.
async fn flush_period(target: &Target, configured: Duration) -> Duration {
    let read = tokio::time::timeout(Duration::from_secs(5), buffer_max_time(target)).await;
    match read {
        Ok(Ok(Some(actual))) if actual > configured => {
            tracing::warn!(configured_secs = configured.as_secs(), actual_secs = actual.as_secs(), "ingest.buffer_flush_secs is shorter than the Buffer table's max_time; using max_time");
            actual
        }
        Ok(Ok(_)) => configured,
        Ok(Err(err)) => {
            tracing::debug!(error = %format!("{err:#}"), "cannot read the Buffer table's max_time");
            configured
        }
        Err(_) => {
            tracing::debug!("reading the Buffer table's max_time timed out");
            configured
        }
    }
}

/// The `max_time` of the Buffer table: rows reach `events` within it.
async fn buffer_max_time(target: &Target) -> anyhow::Result<Option<Duration>> {
    let engine: String = target
        .client
        .query(
            "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = ?",
        )
        .bind(&target.buffer)
        .fetch_optional()
        .await?
        .unwrap_or_default();
    let Some(args) = engine
        .strip_prefix("Buffer(")
        .and_then(|rest| rest.split(')').next())
    else {
        return Ok(None);
    };
    // Buffer(database, table, num_layers, min_time, max_time, ...)
    let max_time = args
        .split(',')
        .nth(4)
        .and_then(|v| v.trim().parse::<f64>().ok());
    Ok(max_time.map(Duration::from_secs_f64))
}

async fn retire_once(target: &Target, wal: &Wal, settle: Duration) -> anyhow::Result<()> {
    // Replay segments left by a previous run first.
    let replay: Vec<u64> = wal.with_segments(|s| {
        s.values()
            .filter(|s| s.needs_replay)
            .map(|s| s.id)
            .collect()
    });
    for id in replay {
        let repaired = repair(target, wal, id, true, settle).await?;
        tracing::info!(
            segment = id,
            rows = repaired.inserted,
            "replayed WAL segment"
        );
        wal.with_segments(|s| {
            if let Some(segment) = s.get_mut(&id) {
                segment.needs_replay = false;
                segment.inserted = segment.rows;
                segment.last_insert = Instant::now();
            }
        });
    }
    let due: HashMap<u64, u64> = wal.with_segments(|s| {
        s.values()
            .filter(|s| {
                s.sealed
                    && !s.needs_replay
                    && s.inserted >= s.rows
                    && s.last_insert.elapsed() >= settle
            })
            .filter(|s| s.short.is_none_or(|(_, at)| at.elapsed() >= settle))
            .map(|s| (s.id, s.rows))
            .collect()
    });
    if due.is_empty() {
        return Ok(());
    }
    let ids: Vec<u64> = due.keys().copied().collect();
    let counts: HashMap<u64, u64> = target
        .client
        .query(&format!(
            "SELECT ingest_segment, count() AS rows FROM {} WHERE ingest_segment IN ? GROUP BY ingest_segment",
            target.destination
        ))
        .bind(&ids)
        .fetch_all::<SegmentCount>()
        .await
        .context("cannot count segment rows")?
        .into_iter()
        .map(|c| (c.ingest_segment, c.rows))
        .collect();
    for (id, expected) in due {
        let found = counts.get(&id).copied().unwrap_or(0);
        if found >= expected {
            if found > expected {
                metrics::counter!("chgate_ingest_duplicate_rows_total").increment(found - expected);
                tracing::warn!(
                    segment = id,
                    expected,
                    found,
                    "segment has more rows in ClickHouse than it logged"
                );
            }
            wal.retire(id)?;
            continue;
        }
        // Rows are missing. Repair only once the count has stopped moving for longer than the Buffer
        // table's flush period: then nothing is still on its way.
        let previous = wal.with_segments(|s| s.get(&id).and_then(|s| s.short));
        match previous {
            Some((count, _)) if count == found => {
                let repaired = repair(target, wal, id, false, settle).await?;
                if repaired.inserted > 0 {
                    tracing::warn!(
                        segment = id,
                        expected,
                        found,
                        reinserted = repaired.inserted,
                        "ClickHouse lost rows of a WAL segment; re-inserted them"
                    );
                    metrics::counter!("chgate_ingest_rows_repaired_total")
                        .increment(repaired.inserted);
                    wal.with_segments(|s| {
                        if let Some(segment) = s.get_mut(&id) {
                            segment.short = None;
                            segment.last_insert = Instant::now();
                        }
                    });
                    continue;
                }
                // Nothing is missing from the Buffer table and `events` together. Either rows are
                // still in the buffer, or the segment repeats an event id (counted twice in the
                // log, stored once): retire only when every distinct id is in `events` itself.
                let stored: u64 = target
                    .client
                    .query(&format!(
                        "SELECT uniqExact(event_id) FROM {} WHERE ingest_segment = ?",
                        target.destination
                    ))
                    .bind(id)
                    .fetch_one()
                    .await
                    .context("cannot count a segment's stored ids")?;
                if stored >= repaired.distinct {
                    wal.retire(id)?;
                } else {
                    wal.with_segments(|s| {
                        if let Some(segment) = s.get_mut(&id) {
                            segment.short = Some((found, Instant::now()));
                        }
                    });
                }
            }
            _ => wal.with_segments(|s| {
                if let Some(segment) = s.get_mut(&id) {
                    segment.short = Some((found, Instant::now()));
                }
            }),
        }
    }
    Ok(())
}

/// What a repair did.
struct Repaired {
    /// Rows re-inserted.
    inserted: u64,
    /// Distinct event ids in the segment.
    distinct: u64,
}

/// Inserts the rows of segment `id` that ClickHouse does not have (neither in the Buffer table nor
/// in `events`). `replay` also re-sends the segment's user properties (idempotent: the table keeps
/// the latest).
async fn repair(
    target: &Target,
    wal: &Wal,
    id: u64,
    replay: bool,
    settle: Duration,
) -> anyhow::Result<Repaired> {
    let batches = wal.read_segment(id)?;
    // Reading the Buffer table sees rows still in memory as well as stored ones, but a layer
    // flushed while the read runs can be missed on both sides (ClickHouse snapshots `events`
    // before it reads the buffer). A second read of `events`, started after the first finished,
    // sees whatever such a flush wrote: the union is complete.
    let mut present: HashSet<Uuid> = HashSet::new();
    for table in [&target.buffer, &target.destination] {
        let ids = target
            .client
            .query(&format!(
                "SELECT event_id FROM {table} WHERE ingest_segment = ?"
            ))
            .bind(id)
            .fetch_all::<Present>()
            .await
            .context("cannot list a segment's stored rows")?;
        present.extend(ids.into_iter().map(|p| p.event_id));
    }
    let distinct: HashSet<Uuid> = batches
        .iter()
        .flat_map(|b| b.rows.iter().map(|r| r.event_id))
        .collect();
    let missing: Vec<EventRow> = batches
        .iter()
        .flat_map(|b| b.rows.iter())
        .filter(|r| !present.contains(&r.event_id))
        .map(|r| EventRow {
            ingest_segment: id,
            ..r.clone()
        })
        .collect();
    insert_rows(target, &target.table, missing.iter(), missing.len()).await?;
    target.committed(missing.iter(), settle).await;
    if replay {
        let users: Vec<&UserPropertiesRow> = batches.iter().flat_map(|b| b.users.iter()).collect();
        insert_users(target, users.iter().copied(), users.len()).await?;
    }
    metrics::counter!("chgate_ingest_rows_replayed_total").increment(missing.len() as u64);
    Ok(Repaired {
        inserted: missing.len() as u64,
        distinct: distinct.len() as u64,
    })
}
