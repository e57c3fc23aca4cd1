//! Ingestion: validate → enrich → write-ahead log → acknowledge → batch into ClickHouse's Buffer
//! table (and mirror business-critical events to Postgres).

pub mod enrich;
pub mod http;
pub mod model;
pub mod postgres;
pub mod reclassify;
pub mod row;
pub mod segment;
pub mod sender;
pub mod wal;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::enrich::{Enricher, Outcome, RequestFacts};
use self::model::{Event, Incoming, Rejection, Rules};
use self::postgres::PgMirror;
use self::row::EventRow;
use self::wal::{Wal, WalBatch, WalError};
use self::writer::{Pending, Target};
use crate::cache::generations::Generations;
use crate::config::{IngestSettings, Settings, WalMode};

/// Why a batch could not be taken right now (the client should retry later).
#[derive(Debug, thiserror::Error)]
pub enum Backpressure {
    #[error("the ingestion queue is full ({0} rows in flight); retry shortly")]
    QueueFull(usize),
    #[error("the ingestion queue is full (its {0} MiB of rows are in flight); retry shortly")]
    QueueMemoryFull(u64),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error(
        "ClickHouse did not confirm the insert in time; the events are logged and will be stored"
    )]
    WaitTimedOut,
}

/// Outcome of one batch.
#[derive(Debug, Clone, Serialize)]
pub struct BatchResult {
    pub accepted: usize,
    pub rejected: Vec<RejectedEvent>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RejectedEvent {
    pub index: usize,
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

/// The ingestion pipeline; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    pub settings: Arc<IngestSettings>,
    pub enricher: Enricher,
    wal: Option<Wal>,
    postgres: PgMirror,
    queue: Arc<Semaphore>,
    /// Memory of the queued rows, in KiB.
    queue_memory: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Pending>,
}

/// Background tasks of the pipeline, awaited at shutdown so pending rows are flushed.
pub struct Workers {
    writer: JoinHandle<()>,
    closing: CancellationToken,
    stop: CancellationToken,
}

impl Workers {
    /// Stops accepting, flushes what is queued (bounded by `deadline`), then stops the helpers.
    pub async fn shutdown(mut self, deadline: Duration) {
        self.closing.cancel();
        if tokio::time::timeout(deadline, &mut self.writer)
            .await
            .is_err()
        {
            tracing::warn!("the ClickHouse writer did not drain in time; the WAL keeps the rest");
            self.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.writer).await;
        }
        self.stop.cancel();
    }
}

impl Pipeline {
    /// Builds the pipeline and starts its writer, retirer and Postgres mirror.
    pub fn start(
        settings: &Settings,
        clickhouse: clickhouse::Client,
        pg: sqlx::PgPool,
        generations: Generations,
    ) -> anyhow::Result<(Self, Workers)> {
        let ingest = &settings.ingest;
        let stop = CancellationToken::new();
        let closing = CancellationToken::new();
        let (wal, spool) = match ingest.wal {
            WalMode::On => {
                let segment_age = Duration::from_secs(ingest.wal_segment_secs);
                let wal = Wal::open(
                    "events",
                    &ingest.wal_dir,
                    ingest.wal_max_bytes,
                    ingest.wal_segment_bytes,
                    segment_age,
                )?;
                let spool = Wal::open(
                    "postgres",
                    &ingest.wal_dir.join("postgres"),
                    ingest.wal_max_bytes / 4,
                    ingest.wal_segment_bytes,
                    segment_age,
                )?;
                (Some(wal), Some(spool))
            }
            WalMode::Off => (None, None),
        };
        let target = Target {
            // Rows are checked against the table once (`schema_matches`), not field by field on
            // every insert: that per-row validation costs ingestion throughput.
            client: clickhouse.with_validation(false),
            table: ingest.table.clone(),
            format: ingest.insert_format,
            buffer: "events_buffer".into(),
            destination: "events".into(),
            users_table: "user_properties".into(),
            generations,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(writer::run_writer(
            target.clone(),
            rx,
            wal.clone(),
            writer::Batching {
                rows: ingest.flush_rows,
                interval: Duration::from_millis(ingest.flush_interval_ms),
                buffer_flush: Duration::from_secs(ingest.buffer_flush_secs),
            },
            closing.clone(),
            stop.clone(),
        ));
        if let Some(wal) = &wal {
            tokio::spawn(writer::run_retirer(
                target,
                wal.clone(),
                Duration::from_secs(ingest.buffer_flush_secs),
                stop.clone(),
            ));
        }
        let postgres = PgMirror::start(pg, &ingest.critical_events, spool, stop.clone());
        let pipeline = Self {
            settings: Arc::new(ingest.clone()),
            enricher: Enricher::new(settings)?,
            wal,
            postgres,
            queue: Arc::new(Semaphore::new(ingest.queue_events)),
            queue_memory: Arc::new(Semaphore::new(
                usize::try_from(ingest.queue_bytes / 1024)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            )),
            tx,
        };
        Ok((
            pipeline,
            Workers {
                writer,
                closing,
                stop,
            },
        ))
    }

    /// Validates, enriches and stores a batch of native-shaped events.
    /// Returns after the accepted events are durable (WAL) — or, with `wait`, stored in ClickHouse.
    pub async fn ingest<'a, T: Incoming<'a>>(
        &self,
        values: Vec<T>,
        rules: &Rules<'_>,
        facts: &RequestFacts,
        wait: bool,
    ) -> Result<BatchResult, Backpressure> {
        let Prepared {
            batch,
            critical,
            rejected,
            received,
        } = prepare(
            &self.enricher,
            &|e| self.postgres.is_critical(e),
            values,
            rules,
            facts,
        );
        metrics::counter!("chgate_ingest_events_received_total").increment(received as u64);
        for r in &rejected {
            metrics::counter!("chgate_ingest_events_rejected_total", "reason" => r.code)
                .increment(1);
        }
        let accepted = received - rejected.len();
        self.submit(batch, wait).await?;
        self.postgres.submit(critical).await;
        metrics::counter!("chgate_ingest_events_accepted_total").increment(accepted as u64);
        Ok(BatchResult { accepted, rejected })
    }

    async fn submit(&self, mut batch: WalBatch, wait: bool) -> Result<(), Backpressure> {
        let rows = batch.rows.len() + batch.users.len();
        if rows == 0 {
            return Ok(());
        }
        let permits = u32::try_from(rows)
            .ok()
            .and_then(|n| self.queue.clone().try_acquire_many_owned(n).ok())
            .ok_or(Backpressure::QueueFull(
                self.settings.queue_events - self.queue.available_permits(),
            ))?;
        let memory = u32::try_from(batch.memory_bytes().div_ceil(1024))
            .ok()
            .and_then(|kib| self.queue_memory.clone().try_acquire_many_owned(kib).ok())
            .ok_or(Backpressure::QueueMemoryFull(
                self.settings.queue_bytes / (1024 * 1024),
            ))?;
        let segment = match &self.wal {
            Some(wal) => {
                let payload = batch.encode().map_err(|e| WalError::Io(e.to_string()))?;
                wal.append(payload, batch.rows.len() as u64).await?
            }
            None => 0,
        };
        for row in &mut batch.rows {
            row.ingest_segment = segment;
        }
        let (done, confirmed) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.tx
            .send(Pending {
                segment,
                batch,
                permits: vec![permits, memory],
                done,
            })
            .map_err(|_| Backpressure::ShuttingDown)?;
        if let Some(confirmed) = confirmed {
            match tokio::time::timeout(Duration::from_secs(30), confirmed).await {
                Ok(Ok(())) => {}
                _ => return Err(Backpressure::WaitTimedOut),
            }
        }
        Ok(())
    }

    /// Events currently held between acknowledgement and ClickHouse.
    pub fn in_flight(&self) -> usize {
        self.settings.queue_events - self.queue.available_permits()
    }
}

/// A batch after validation and enrichment: the CPU part of ingestion, before anything is written.
pub struct Prepared {
    /// The rows to log and insert.
    pub batch: WalBatch,
    /// Copies of the rows to mirror to Postgres.
    pub critical: Vec<EventRow>,
    /// Rejected events by position in the request.
    pub rejected: Vec<RejectedEvent>,
    /// Events in the request.
    pub received: usize,
}

/// Validates and enriches a batch; `critical` tells which events are mirrored to Postgres.
pub fn prepare<'a, T: Incoming<'a>>(
    enricher: &Enricher,
    critical: &dyn Fn(&str) -> bool,
    values: Vec<T>,
    rules: &Rules<'_>,
    facts: &RequestFacts,
) -> Prepared {
    let received = values.len();
    let mut rejected = Vec::new();
    let mut events: Vec<Event<'a>> = Vec::with_capacity(values.len());
    let mut indexes = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        match value.validate(rules) {
            Ok(event) => {
                events.push(event);
                indexes.push(index);
            }
            Err(rejection) => rejected.push(reject(index, rejection)),
        }
    }
    // Rows are large: grown one by one, the vector would copy them over and over.
    let mut batch = WalBatch {
        rows: Vec::with_capacity(events.len()),
        users: Vec::new(),
    };
    let mut copies = Vec::new();
    for (outcome, index) in enricher.enrich(events, facts).into_iter().zip(indexes) {
        match outcome {
            Outcome::Stored(enriched) => {
                if critical(&enriched.row.event) {
                    copies.push(enriched.row.clone());
                }
                batch.rows.push(enriched.row);
                batch.users.extend(enriched.user);
            }
            Outcome::Rejected(rejection) => rejected.push(reject(index, rejection)),
            Outcome::Dropped(_) => {}
        }
    }
    rejected.sort_by_key(|r| r.index);
    Prepared {
        batch,
        critical: copies,
        rejected,
        received,
    }
}

fn reject(index: usize, rejection: Rejection) -> RejectedEvent {
    RejectedEvent {
        index,
        code: rejection.code,
        field: rejection.field,
        message: rejection.message,
    }
}
