//! The Postgres mirror of business-critical events, normalized into users, products and orders.
//!
//! It has its own spool (a second write-ahead log under `<wal_dir>/postgres`), so a Postgres outage
//! never holds back the ClickHouse path: the spool grows while Postgres is down, up to its own
//! limit, past which critical events are still stored in ClickHouse but not mirrored (counted as
//! `chgate_ingest_postgres_dropped_total`). Writes are idempotent on `event_id`.

use std::borrow::Cow;
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
use crate::storage::postgres::{json_without_nul, without_nul};

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
                    metrics::counter!("chgate_ingest_postgres_dropped_total", "reason" => "spool")
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
                    metrics::counter!("chgate_ingest_postgres_dropped_total", "reason" => "queue_full")
                        .increment(item.rows.len() as u64);
                }
            }
        }
    }
}

/// Most rows written in one transaction.
const MAX_TRANSACTION_ROWS: usize = 5_000;

async fn run(
    pool: PgPool,
    mut rx: mpsc::Receiver<Item>,
    spool: Option<Wal>,
    stop: CancellationToken,
) {
    while let Some(first) = rx.recv().await {
        // Everything already queued goes into the same transaction.
        let mut items = vec![first];
        let mut rows: usize = items[0].rows.len();
        while rows < MAX_TRANSACTION_ROWS {
            match rx.try_recv() {
                Ok(item) => {
                    rows += item.rows.len();
                    items.push(item);
                }
                Err(_) => break,
            }
        }
        let batch: Vec<&EventRow> = items.iter().flat_map(|i| i.rows.iter()).collect();
        let mut backoff = Duration::from_millis(200);
        loop {
            match write_isolating(&pool, &batch).await {
                Ok(set_aside) => {
                    if let Some(spool) = &spool {
                        for item in &items {
                            spool.mark_inserted(item.segment, item.rows.len() as u64);
                        }
                    }
                    metrics::counter!("chgate_ingest_postgres_rows_total")
                        .increment((rows - set_aside) as u64);
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
                write_isolating(&pool, &rows.iter().collect::<Vec<_>>()).await
            }
            .await;
            match result {
                Ok(_) => {
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

/// Writes rows like [`write`]; when Postgres refuses the batch for its data (SQLSTATE classes 22
/// and 23), writes the rows one by one and sets aside those it refuses, so one row cannot hold up
/// the mirror. Set-aside rows stay in ClickHouse; they are logged with their `event_id` and counted
/// in `chgate_ingest_postgres_dropped_total{reason="rejected"}`. Other errors are returned, to be
/// retried. Returns how many rows were set aside.
pub async fn write_isolating(pool: &PgPool, rows: &[&EventRow]) -> anyhow::Result<usize> {
    let Err(err) = write(pool, rows).await else {
        return Ok(0);
    };
    if !refused_for_data(&err) {
        return Err(err);
    }
    let mut set_aside = 0;
    for row in rows {
        if let Err(err) = write(pool, std::slice::from_ref(row)).await {
            if !refused_for_data(&err) {
                return Err(err);
            }
            set_aside += 1;
            metrics::counter!("chgate_ingest_postgres_dropped_total", "reason" => "rejected")
                .increment(1);
            tracing::error!(event_id = %row.event_id, event = %row.event, error = %format!("{err:#}"), "Postgres refused a critical event; it is stored in ClickHouse only");
        }
    }
    Ok(set_aside)
}

/// Whether Postgres refused the statement for the data itself (data exception or integrity
/// constraint violation), which no retry can change.
fn refused_for_data(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<sqlx::Error>())
        .filter_map(|e| e.as_database_error())
        .filter_map(|e| e.code())
        .any(|code| code.starts_with("22") || code.starts_with("23"))
}

/// Postgres text and `jsonb` cannot hold U+0000, which JSON and ClickHouse strings can: in the
/// mirror it becomes U+FFFD. Rows without it are passed through as they are.
fn for_postgres(row: &EventRow) -> Cow<'_, EventRow> {
    let texts = [
        &row.event,
        &row.actor_id,
        &row.country,
        &row.platform,
        &row.item_id,
        &row.developer_id,
        &row.currency,
    ];
    let nul_in_properties = row.properties.contains("\\u0000");
    if !nul_in_properties && !texts.iter().any(|t| t.contains('\0')) {
        return Cow::Borrowed(row);
    }
    let mut row = row.clone();
    for text in [
        &mut row.event,
        &mut row.actor_id,
        &mut row.country,
        &mut row.platform,
        &mut row.item_id,
        &mut row.developer_id,
        &mut row.currency,
    ] {
        without_nul(text);
    }
    if nul_in_properties {
        if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&row.properties) {
            json_without_nul(&mut value);
            row.properties = value.to_string();
        }
    }
    Cow::Owned(row)
}

/// Writes rows in one transaction with one statement per table; rows already mirrored (by
/// `event_id`) are skipped, so replays change nothing.
pub async fn write(pool: &PgPool, rows: &[&EventRow]) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let cleaned: Vec<Cow<'_, EventRow>> = rows.iter().map(|r| for_postgres(r)).collect();
    let rows: Vec<&EventRow> = cleaned.iter().map(|r| r.as_ref()).collect();
    let rows = rows.as_slice();
    let mut tx = pool.begin().await.context("cannot begin a transaction")?;
    // Properties go to Postgres as the text the gateway wrote; Postgres parses it into `jsonb`.
    let new: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO business_events (event_id, event, user_id, occurred_at, received_at, properties)
         SELECT e, k, u, o, r, COALESCE(NULLIF(p, ''), '{}')::jsonb
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[])
              AS x(e, k, u, o, r, p)
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.event.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.actor_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| time(r.timestamp)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| time(r.received_at)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.properties.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await
    .context("cannot insert into business_events")?;
    let new: HashSet<uuid::Uuid> = new.into_iter().collect();
    let fresh: Vec<(&EventRow, Picks)> = rows
        .iter()
        .filter(|r| new.contains(&r.event_id))
        .map(|r| (*r, Picks::of(r)))
        .collect();
    if fresh.is_empty() {
        tx.commit().await.context("cannot commit")?;
        return Ok(());
    }

    // One row per user and per item: an upsert may not touch the same row twice.
    let mut users: std::collections::BTreeMap<&str, UserFacts<'_>> = Default::default();
    let mut products: std::collections::BTreeMap<&str, ProductFacts<'_>> = Default::default();
    for (row, props) in &fresh {
        let user = users
            .entry(row.actor_id.as_str())
            .or_insert_with(|| UserFacts {
                first_seen: row.timestamp,
                signed_up: None,
                country: "",
                platform: "",
            });
        user.first_seen = user.first_seen.min(row.timestamp);
        if row.event == "signup" {
            user.signed_up = Some(
                user.signed_up
                    .map_or(row.timestamp, |t| t.min(row.timestamp)),
            );
        }
        if !row.country.is_empty() {
            user.country = &row.country;
        }
        if !row.platform.is_empty() {
            user.platform = &row.platform;
        }
        if !row.item_id.is_empty() {
            let name = [&props.item_name, &props.product_name, &props.title]
                .into_iter()
                .find_map(|v| v.as_ref().and_then(|v| v.as_str()))
                .unwrap_or_default();
            let product = products
                .entry(row.item_id.as_str())
                .or_insert_with(|| ProductFacts {
                    developer: "",
                    name: "",
                    first_seen: row.timestamp,
                });
            product.first_seen = product.first_seen.min(row.timestamp);
            if !row.developer_id.is_empty() {
                product.developer = &row.developer_id;
            }
            if !name.is_empty() {
                product.name = name;
            }
        }
    }
    sqlx::query(
        "INSERT INTO users (user_id, first_seen_at, signed_up_at, country, platform)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[])
         ON CONFLICT (user_id) DO UPDATE SET
            first_seen_at = LEAST(users.first_seen_at, EXCLUDED.first_seen_at),
            signed_up_at = COALESCE(LEAST(users.signed_up_at, EXCLUDED.signed_up_at), users.signed_up_at, EXCLUDED.signed_up_at),
            country = CASE WHEN EXCLUDED.country <> '' THEN EXCLUDED.country ELSE users.country END,
            platform = CASE WHEN EXCLUDED.platform <> '' THEN EXCLUDED.platform ELSE users.platform END,
            updated_at = now()
         -- Most events of known users change nothing: no new row version then.
         WHERE EXCLUDED.first_seen_at < users.first_seen_at
            OR EXCLUDED.signed_up_at < users.signed_up_at
            OR (users.signed_up_at IS NULL AND EXCLUDED.signed_up_at IS NOT NULL)
            OR (EXCLUDED.country <> '' AND EXCLUDED.country <> users.country)
            OR (EXCLUDED.platform <> '' AND EXCLUDED.platform <> users.platform)",
    )
    .bind(users.keys().copied().collect::<Vec<_>>())
    .bind(users.values().map(|u| time(u.first_seen)).collect::<Vec<_>>())
    .bind(users.values().map(|u| u.signed_up.map(time)).collect::<Vec<_>>())
    .bind(users.values().map(|u| u.country).collect::<Vec<_>>())
    .bind(users.values().map(|u| u.platform).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .context("cannot upsert into users")?;
    if !products.is_empty() {
        sqlx::query(
            "INSERT INTO products (item_id, developer_id, name, first_seen_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[])
             ON CONFLICT (item_id) DO UPDATE SET
                developer_id = CASE WHEN EXCLUDED.developer_id <> '' THEN EXCLUDED.developer_id ELSE products.developer_id END,
                name = CASE WHEN EXCLUDED.name <> '' THEN EXCLUDED.name ELSE products.name END,
                first_seen_at = LEAST(products.first_seen_at, EXCLUDED.first_seen_at),
                updated_at = now()
             WHERE EXCLUDED.first_seen_at < products.first_seen_at
                OR (EXCLUDED.developer_id <> '' AND EXCLUDED.developer_id <> products.developer_id)
                OR (EXCLUDED.name <> '' AND EXCLUDED.name <> products.name)",
        )
        .bind(products.keys().copied().collect::<Vec<_>>())
        .bind(products.values().map(|p| p.developer).collect::<Vec<_>>())
        .bind(products.values().map(|p| p.name).collect::<Vec<_>>())
        .bind(products.values().map(|p| time(p.first_seen)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .context("cannot upsert into products")?;
    }
    let orders: Vec<(&EventRow, String)> = fresh
        .iter()
        .filter(|(r, _)| super::enrich::REVENUE_EVENTS.contains(&r.event.as_str()))
        .map(|(r, p)| {
            let order_id = match &p.order_id {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (*r, order_id)
        })
        .collect();
    if !orders.is_empty() {
        sqlx::query(
            "INSERT INTO orders (event_id, kind, order_id, user_id, item_id, amount, currency, occurred_at)
             SELECT e, k, o, u, NULLIF(i, ''), a::numeric, c, t
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::text[], $8::timestamptz[])
                  AS x(e, k, o, u, i, a, c, t)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(orders.iter().map(|(r, _)| r.event_id).collect::<Vec<_>>())
        .bind(orders.iter().map(|(r, _)| r.event.as_str()).collect::<Vec<_>>())
        .bind(orders.iter().map(|(_, o)| o.as_str()).collect::<Vec<_>>())
        .bind(orders.iter().map(|(r, _)| r.actor_id.as_str()).collect::<Vec<_>>())
        .bind(orders.iter().map(|(r, _)| r.item_id.as_str()).collect::<Vec<_>>())
        .bind(orders.iter().map(|(r, _)| r.revenue).collect::<Vec<_>>())
        .bind(orders.iter().map(|(r, _)| r.currency.as_str()).collect::<Vec<_>>())
        .bind(orders.iter().map(|(r, _)| time(r.timestamp)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .context("cannot insert into orders")?;
    }
    tx.commit().await.context("cannot commit")?;
    Ok(())
}

/// The properties the mirror reads, picked out of a row's properties text without building the
/// rest of it.
#[derive(Default, serde::Deserialize)]
struct Picks {
    item_name: Option<serde_json::Value>,
    product_name: Option<serde_json::Value>,
    title: Option<serde_json::Value>,
    order_id: Option<serde_json::Value>,
}

impl Picks {
    fn of(row: &EventRow) -> Self {
        let wanted =
            !row.item_id.is_empty() || super::enrich::REVENUE_EVENTS.contains(&row.event.as_str());
        if !wanted {
            return Self::default();
        }
        serde_json::from_str(&row.properties).unwrap_or_default()
    }
}

struct UserFacts<'a> {
    first_seen: i64,
    signed_up: Option<i64>,
    country: &'a str,
    platform: &'a str,
}

struct ProductFacts<'a> {
    developer: &'a str,
    name: &'a str,
    first_seen: i64,
}
