//! Bulk loading through the ingestion pipeline: `chgate import` (NDJSON files) and `chgate seed`
//! (generated demo traffic). Same validation and enrichment as live traffic, but historic
//! timestamps are accepted and `context.ip` is trusted.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::cache::generations::Generations;
use crate::config::{Settings, WalMode};
use crate::ingest::enrich::RequestFacts;
use crate::ingest::model::Rules;
use crate::ingest::sender::Sender;
use crate::ingest::{Backpressure, Pipeline, Workers};
use crate::storage::clickhouse::ClickHouse;
use crate::storage::postgres::Postgres;
use crate::storage::redis::Redis;

/// Events per pipeline call.
const BATCH: usize = 5_000;

/// What a load did.
#[derive(Debug, Default)]
pub struct Summary {
    pub read: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub by_reason: BTreeMap<&'static str, u64>,
    pub elapsed: Duration,
}

impl Summary {
    pub fn render(&self) -> String {
        let rate = self.read as f64 / self.elapsed.as_secs_f64().max(0.001);
        let mut text = format!(
            "read {} events, accepted {}, rejected {} in {:.1} s ({:.0} events/s)",
            self.read,
            self.accepted,
            self.rejected,
            self.elapsed.as_secs_f64(),
            rate
        );
        for (reason, n) in &self.by_reason {
            text.push_str(&format!("\n  rejected {n} × {reason}"));
        }
        text
    }
}

/// Feeds batches into an in-process pipeline and waits until everything is in ClickHouse.
struct Loader {
    pipeline: Pipeline,
    workers: Workers,
    clickhouse: ClickHouse,
    generations: Generations,
    settings: Settings,
    summary: Summary,
    rejects: Option<RejectsFile>,
    started: Instant,
}

struct RejectsFile {
    path: PathBuf,
    file: std::io::BufWriter<File>,
    written: usize,
    limit: usize,
}

impl Loader {
    async fn start(settings: &Settings, rejects: Option<(PathBuf, usize)>) -> anyhow::Result<Self> {
        let mut settings = settings.clone();
        // The input is the durable copy; the write-ahead log would only slow a bulk load down.
        settings.ingest.wal = WalMode::Off;
        settings.ingest.max_properties_bytes = settings.ingest.max_properties_bytes.max(64 * 1024);
        let clickhouse = ClickHouse::new(&settings.clickhouse);
        clickhouse
            .ping()
            .await
            .context("ClickHouse is not ready (run `chgate migrate` first?)")?;
        let postgres = Postgres::connect_lazy(&settings.postgres)?;
        // The gateways' generations: they learn which days the load wrote.
        let generations = Generations::new(
            Redis::from_settings(&settings.redis)?,
            clickhouse.database(),
            Duration::from_millis(settings.cache.generation_memo_ms),
        );
        let (pipeline, workers) = Pipeline::start(
            &settings,
            clickhouse.client().clone(),
            postgres.pool().clone(),
            generations.clone(),
        )?;
        let rejects = match rejects {
            Some((path, limit)) => Some(RejectsFile {
                file: std::io::BufWriter::new(
                    File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                ),
                path,
                written: 0,
                limit,
            }),
            None => None,
        };
        Ok(Self {
            pipeline,
            workers,
            clickhouse,
            generations,
            settings,
            summary: Summary::default(),
            rejects,
            started: Instant::now(),
        })
    }

    /// Loads one batch; `origins` name each value's source (e.g. `file:line`) for the rejects file.
    async fn load(&mut self, values: Vec<Value>, origins: Vec<String>) -> anyhow::Result<()> {
        let kept: Vec<Value> = if self.rejects.is_some() {
            values.clone()
        } else {
            Vec::new()
        };
        let rules = Rules {
            settings: &self.settings.ingest,
            now_ms: chrono::Utc::now().timestamp_millis(),
            enforce_window: false,
            trust_context_ip: Sender::Server.trusts_context_ip(),
            allowed_events: &[],
        };
        let facts = RequestFacts {
            client_ip: None,
            user_agent: String::new(),
            // The operator's own data, trusted as a server key is.
            sender: Sender::Server,
            received_at_ms: rules.now_ms,
        };
        self.summary.read += values.len() as u64;
        let result = loop {
            match self
                .pipeline
                .ingest(values.clone(), &rules, &facts, false)
                .await
            {
                Err(Backpressure::QueueFull(_) | Backpressure::QueueMemoryFull(_)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => break other,
            }
        };
        let result = result.map_err(|e| anyhow::anyhow!("{e}"))?;
        self.summary.accepted += result.accepted as u64;
        self.summary.rejected += result.rejected.len() as u64;
        for rejected in &result.rejected {
            *self.summary.by_reason.entry(rejected.code).or_default() += 1;
            if let Some(file) = self.rejects.as_mut().filter(|f| f.written < f.limit) {
                let line = serde_json::json!({
                    "origin": origins.get(rejected.index),
                    "code": rejected.code,
                    "field": rejected.field,
                    "message": rejected.message,
                    "event": kept.get(rejected.index),
                });
                writeln!(file.file, "{line}")?;
                file.written += 1;
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> anyhow::Result<Summary> {
        // Wait for the writer to drain what is queued.
        while self.pipeline.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(self.pipeline);
        self.workers.shutdown(Duration::from_secs(60)).await;
        settle(&self.clickhouse, &self.generations).await;
        if let Some(mut rejects) = self.rejects {
            rejects.file.flush()?;
            if rejects.written == 0 {
                let _ = std::fs::remove_file(&rejects.path);
            }
        }
        self.summary.elapsed = self.started.elapsed();
        Ok(self.summary)
    }
}

/// Flushes the Buffer table, so the loaded rows are in `events` and its rollups now rather than
/// within its `max_time`, and tells the gateways' generations (through Redis) that their days
/// changed. Without that, results cached for those days would be served until their TTL ends.
async fn settle(clickhouse: &ClickHouse, generations: &Generations) {
    match clickhouse
        .client()
        .query("OPTIMIZE TABLE events_buffer")
        .execute()
        .await
    {
        Ok(()) => generations.flushed().await,
        Err(e) => {
            // The days advance again when `max_time` has passed: wait for that instead.
            tracing::warn!(error = %e, "cannot flush events_buffer; waiting for its max_time");
            while generations.awaiting() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    for _ in 0..10 {
        if generations.sync().await {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if generations.shared() {
        tracing::warn!("Redis did not take the days this load wrote: gateways may serve results cached before it until their TTL ends");
    }
}

/// Counts bytes read, for the progress bar.
struct Counted<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn rate_message(summary: &Summary, started: Instant) -> String {
    let rate = summary.read as f64 / started.elapsed().as_secs_f64().max(0.001);
    format!(
        "{} events ({:.0}/s), {} rejected",
        summary.read, rate, summary.rejected
    )
}

/// `chgate import FILE…`: NDJSON (optionally gzipped; `-` is standard input).
pub async fn import(
    settings: &Settings,
    files: &[PathBuf],
    rejects: &Path,
    max_rejects: usize,
) -> anyhow::Result<Summary> {
    let mut loader = Loader::start(settings, Some((rejects.to_path_buf(), max_rejects))).await?;
    for path in files {
        let name = path.display().to_string();
        let bytes = Arc::new(AtomicU64::new(0));
        let (reader, total): (Box<dyn Read + Send>, Option<u64>) = if name == "-" {
            (Box::new(std::io::stdin()), None)
        } else {
            let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
            let size = file.metadata().map(|m| m.len()).ok();
            (Box::new(file), size)
        };
        let counted = Counted {
            inner: reader,
            bytes: bytes.clone(),
        };
        let mut reader = BufReader::new(counted);
        let gzipped = reader
            .fill_buf()
            .map(|b| b.starts_with(&[0x1f, 0x8b]))
            .unwrap_or(false);
        let lines: Box<dyn BufRead + Send> = if gzipped {
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(reader)))
        } else {
            Box::new(reader)
        };
        let bar = progress_bar(total);
        let mut values = Vec::with_capacity(BATCH);
        let mut origins = Vec::with_capacity(BATCH);
        for (number, line) in lines.lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {name}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let origin = format!("{name}:{}", number + 1);
            match serde_json::from_str::<Value>(&line) {
                Ok(value) => {
                    values.push(value);
                    origins.push(origin);
                }
                Err(e) => {
                    // Reported like a rejected event: a non-object fails validation with its origin.
                    values.push(Value::String(format!("invalid JSON: {e}")));
                    origins.push(origin);
                }
            }
            if values.len() == BATCH {
                loader
                    .load(std::mem::take(&mut values), std::mem::take(&mut origins))
                    .await?;
                bar.set_position(bytes.load(Ordering::Relaxed));
                bar.set_message(rate_message(&loader.summary, loader.started));
            }
        }
        if !values.is_empty() {
            loader.load(values, origins).await?;
        }
        bar.finish_and_clear();
    }
    loader.finish().await
}

/// `chgate seed`: generated demo traffic through the pipeline.
pub async fn seed(
    settings: &Settings,
    plan: &crate::cli::seed::SeedPlan,
) -> anyhow::Result<Summary> {
    let mut loader = Loader::start(settings, None).await?;
    let bar = progress_bar(None);
    // Generation is synchronous and fast; batches go through the pipeline as they fill.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Value>>(4);
    let plan = plan.clone();
    let generator = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(BATCH);
        crate::cli::seed::generate(&plan, |event| {
            batch.push(event);
            if batch.len() == BATCH {
                let _ = tx.blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
            }
        });
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
    });
    while let Some(batch) = rx.recv().await {
        let origins = (0..batch.len())
            .map(|i| format!("generated #{i}"))
            .collect();
        loader.load(batch, origins).await?;
        bar.set_message(rate_message(&loader.summary, loader.started));
    }
    generator.await.context("the generator failed")?;
    bar.finish_and_clear();
    loader.finish().await
}
