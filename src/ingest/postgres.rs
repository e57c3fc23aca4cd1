//! The Postgres mirror of business-critical events, normalized into users, products and orders.
//!
//! It has its own spool (a second write-ahead log under `<wal_dir>/postgres`), so a Postgres outage
//! never holds back the ClickHouse path: the spool grows while Postgres is down, up to its own
//! limit, past which critical events are still stored in ClickHouse but not mirrored (counted as
//! `chgate_ingest_postgres_dropped_total`). Writes are idempotent on `event_id`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{TimeZone, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::row::EventRow;
use super::wal::{Wal, WalBatch, WalError};

struct Item {
    segment: u64,
    rows: Vec<EventRow>,
}

/// Handle on the mirror; cheap to clone.
#[derive(Clone)]
pub struct PgMirror {
    events: Arc<HashSet<String>>,
    spool: Option<Wal>,
    tx: mpsc::Sender<Item>,
}

impl PgMirror {
    /// Starts the mirror's writer (and, with a spool, its retirer) on the current runtime.
    pub fn start(
        pool: PgPool,
        events: &[String],
        spool: Option<Wal>,
        stop: CancellationToken,
    ) -> Self {
        // Batches waiting in memory; beyond them, rows wait in the spool only.
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(pool.clone(), rx, spool.clone(), stop.clone()));
        if let Some(spool) = &spool {
            tokio::spawn(run_retirer(pool, spool.clone(), stop));
        }
        Self {
            events: Arc::new(events.iter().cloned().collect()),
            spool,
            tx,
        }
    }

    pub fn is_critical(&self, event: &str) -> bool {
        self.events.contains(event)
    }

    /// Logs the batch's critical rows to the spool (before the client is answered) and queues them.
    pub async fn submit(&self, rows: Vec<EventRow>) {
        if rows.is_empty() {
            return;
        }
        let mut segment = 0;
        if let Some(spool) = &self.spool {
            let batch = WalBatch {
                rows,
                users: Vec::new(),
            };
            let appended = match batch.encode() {
                Ok(payload) => spool.append(payload, batch.rows.len() as u64).await,
                Err(err) => Err(WalError::Io(err.to_string())),
            };
            match appended {
                Ok(id) => segment = id,
                Err(err) => {
                    metrics::counter!("chgate_ingest_postgres_dropped_total")
                        .increment(batch.rows.len() as u64);
                    tracing::error!(error = %err, rows = batch.rows.len(), "cannot spool events for Postgres; they are stored in ClickHouse only");
                    return;
                }
            }
            return self.enqueue(segment, batch.rows);
        }
        self.enqueue(segment, rows)
    }

    fn enqueue(&self, segment: u64, rows: Vec<EventRow>) {
        if let Err(
            mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item),
        ) = self.tx.try_send(Item { segment, rows })
        {
            match &self.spool {
                // The retirer replays it from the spool.
                Some(spool) => spool.with_segments(|s| {
                    if let Some(segment) = s.get_mut(&item.segment) {
                        segment.needs_replay = true;
                    }
                }),
                None => {
                    metrics::counter!("chgate_ingest_postgres_dropped_total")
                        .increment(item.rows.len() as u64);
                }
            }
        }
    }
}

async fn run(
    pool: PgPool,
    mut rx: mpsc::Receiver<Item>,
    spool: Option<Wal>,
    stop: CancellationToken,
) {
    while let Some(item) = rx.recv().await {
        let mut backoff = Duration::from_millis(200);
        loop {
            match write(&pool, &item.rows).await {
                Ok(()) => {
                    if let Some(spool) = &spool {
                        spool.mark_inserted(item.segment, item.rows.len() as u64);
                    }
                    metrics::counter!("chgate_ingest_postgres_rows_total")
                        .increment(item.rows.len() as u64);
                    break;
                }
                Err(err) => {
                    metrics::counter!("chgate_ingest_postgres_errors_total").increment(1);
                    tracing::warn!(error = %format!("{err:#}"), "mirroring events to Postgres failed; retrying");
                    if stop.is_cancelled() {
                        // Left in the spool for the next start.
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

async fn run_retirer(pool: PgPool, spool: Wal, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        spool.seal_if_due();
        let replay: Vec<u64> = spool.with_segments(|s| {
            s.values()
                .filter(|s| s.sealed && s.needs_replay)
                .map(|s| s.id)
                .collect()
        });
        for id in replay {
            let result = async {
                let rows: Vec<EventRow> = spool
                    .read_segment(id)?
                    .into_iter()
                    .flat_map(|b| b.rows)
                    .collect();
                write(&pool, &rows).await
            }
            .await;
            match result {
                Ok(()) => {
                    spool.with_segments(|s| {
                        if let Some(segment) = s.get_mut(&id) {
                            segment.needs_replay = false;
                            segment.inserted = segment.rows;
                        }
                    });
                }
                Err(err) => {
                    metrics::counter!("chgate_ingest_postgres_errors_total").increment(1);
                    tracing::warn!(error = %format!("{err:#}"), segment = id, "replaying spooled events into Postgres failed");
                    break;
                }
            }
        }
        let done: Vec<u64> = spool.with_segments(|s| {
            s.values()
                .filter(|s| s.sealed && !s.needs_replay && s.inserted >= s.rows)
                .map(|s| s.id)
                .collect()
        });
        for id in done {
            if let Err(err) = spool.retire(id) {
                tracing::warn!(error = %format!("{err:#}"), "cannot delete a spool segment");
            }
        }
    }
}

fn time(ms: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Writes rows in one transaction; rows already mirrored are skipped.
pub async fn write(pool: &PgPool, rows: &[EventRow]) -> anyhow::Result<()> {
    let mut tx = pool.begin().await.context("cannot begin a transaction")?;
    for row in rows {
        let properties: serde_json::Value =
            serde_json::from_str(&row.properties).unwrap_or_default();
        let new = sqlx::query(
            "INSERT INTO business_events (event_id, event, user_id, occurred_at, received_at, properties)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(row.event_id)
        .bind(&row.event)
        .bind(&row.actor_id)
        .bind(time(row.timestamp))
        .bind(time(row.received_at))
        .bind(&properties)
        .execute(&mut *tx)
        .await
        .context("cannot insert into business_events")?
        .rows_affected();
        if new == 0 {
            continue;
        }
        sqlx::query(
            "INSERT INTO users (user_id, first_seen_at, signed_up_at, country, platform)
             VALUES ($1, $2, CASE WHEN $3 = 'signup' THEN $2 END, $4, $5)
             ON CONFLICT (user_id) DO UPDATE SET
                first_seen_at = LEAST(users.first_seen_at, EXCLUDED.first_seen_at),
                signed_up_at = COALESCE(users.signed_up_at, EXCLUDED.signed_up_at),
                country = CASE WHEN EXCLUDED.country <> '' THEN EXCLUDED.country ELSE users.country END,
                platform = CASE WHEN EXCLUDED.platform <> '' THEN EXCLUDED.platform ELSE users.platform END,
                updated_at = now()",
        )
        .bind(&row.actor_id)
        .bind(time(row.timestamp))
        .bind(&row.event)
        .bind(&row.country)
        .bind(&row.platform)
        .execute(&mut *tx)
        .await
        .context("cannot upsert into users")?;
        if !row.item_id.is_empty() {
            let name = ["item_name", "product_name", "title"]
                .iter()
                .find_map(|k| properties.get(*k).and_then(|v| v.as_str()))
                .unwrap_or_default();
            sqlx::query(
                "INSERT INTO products (item_id, developer_id, name, first_seen_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (item_id) DO UPDATE SET
                    developer_id = CASE WHEN EXCLUDED.developer_id <> '' THEN EXCLUDED.developer_id ELSE products.developer_id END,
                    name = CASE WHEN EXCLUDED.name <> '' THEN EXCLUDED.name ELSE products.name END,
                    first_seen_at = LEAST(products.first_seen_at, EXCLUDED.first_seen_at),
                    updated_at = now()",
            )
            .bind(&row.item_id)
            .bind(&row.developer_id)
            .bind(name)
            .bind(time(row.timestamp))
            .execute(&mut *tx)
            .await
            .context("cannot upsert into products")?;
        }
        if super::enrich::REVENUE_EVENTS.contains(&row.event.as_str()) {
            let order_id = properties.get("order_id").map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            sqlx::query(
                "INSERT INTO orders (event_id, kind, order_id, user_id, item_id, amount, currency, occurred_at)
                 VALUES ($1, $2, $3, $4, NULLIF($5, ''), $6::float8::numeric, $7, $8) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(row.event_id)
            .bind(&row.event)
            .bind(order_id.unwrap_or_default())
            .bind(&row.actor_id)
            .bind(&row.item_id)
            .bind(row.revenue)
            .bind(&row.currency)
            .bind(time(row.timestamp))
            .execute(&mut *tx)
            .await
            .context("cannot insert into orders")?;
        }
    }
    tx.commit().await.context("cannot commit")?;
    Ok(())
}
