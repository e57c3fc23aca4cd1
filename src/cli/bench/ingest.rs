//! `chgate bench ingest`: a load generator for a running gateway, compared in the same run with a
//! direct `JSONEachRow` insert of the same events into ClickHouse.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;

use super::{CpuSnapshot, CpuUse, Phase};

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct IngestBench {
    pub url: String,
    pub key: String,
    pub concurrency: usize,
    pub batches: usize,
    pub batch_size: usize,
    /// Events per second of the fixed-rate latency phase (0 skips it).
    pub rate: usize,
    pub rate_secs: u64,
    /// Processes on this machine whose CPU time is measured over the throughput phase.
    pub gateway_pid: Option<u32>,
    pub clickhouse_pid: Option<u32>,
    pub clickhouse_url: String,
    pub clickhouse_database: String,
    pub clickhouse_user: String,
    pub clickhouse_password: String,
}

/// Results of a run.
#[derive(Debug)]
pub struct Report {
    pub throughput: Phase,
    pub cpu: CpuUse,
    pub fixed_rate: Option<(usize, Phase)>,
    pub direct_events_per_sec: f64,
    pub direct_events: usize,
}

impl Report {
    pub fn render(&self, bench: &IngestBench) -> String {
        let t = &self.throughput;
        let mut out = format!(
            "gateway: {} events in {} requests of {} ({} failed) with {} concurrent clients: {:.0} events/s, ack latency p50 {:.1} ms, p99 {:.1} ms\n",
            t.events, t.requests, bench.batch_size, t.failed, bench.concurrency, t.events_per_sec(), t.p50_ms, t.p99_ms
        );
        if let Some((rate, phase)) = &self.fixed_rate {
            out.push_str(&format!(
                "gateway at a fixed {rate} events/s for {:.0} s: {:.0} events/s achieved, ack latency p50 {:.1} ms, p99 {:.1} ms ({} failed)\n",
                phase.elapsed.as_secs_f64(), phase.events_per_sec(), phase.p50_ms, phase.p99_ms, phase.failed
            ));
        }
        let per_100k = |secs: Option<f64>| match secs {
            Some(s) if t.events > 0 => format!("{:.2} s", s * 100_000.0 / t.events as f64),
            _ => "-".to_string(),
        };
        let c = &self.cpu;
        out.push_str(&format!(
            "CPU per 100k events (over the throughput phase and ClickHouse's flushes and merges after it, {:.1} s): gateway {}, ClickHouse {}, Postgres {}, load generator {}, whole machine {} ({} cores)\n",
            c.wall.as_secs_f64(),
            per_100k(c.gateway),
            per_100k(c.clickhouse),
            per_100k(c.postgres),
            per_100k(c.load_generator),
            per_100k(c.machine),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ));
        out.push_str(&format!(
            "direct JSONEachRow insert into ClickHouse of the same {} events: {:.0} events/s\n",
            self.direct_events, self.direct_events_per_sec
        ));
        out.push_str(&format!(
            "ratio gateway/direct: {:.2}\n",
            t.events_per_sec() / self.direct_events_per_sec.max(1e-9)
        ));
        out
    }
}

/// `count` request bodies of `batch_size` generated events each (JSON arrays), the same in every
/// run and in both ingestion benchmarks.
pub fn event_bodies(count: usize, batch_size: usize) -> Vec<Bytes> {
    crate::cli::seed::batches(count, batch_size, 99)
        .into_iter()
        .map(|b| Bytes::from(serde_json::Value::Array(b).to_string()))
        .collect()
}

/// Runs the benchmark.
pub async fn ingest(bench: &IngestBench) -> anyhow::Result<Report> {
    let distinct = bench.batches.clamp(1, 500);
    let bodies: Arc<Vec<Bytes>> = Arc::new(event_bodies(distinct, bench.batch_size));
    if bodies.is_empty() {
        bail!("no batches generated");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(bench.concurrency * 2)
        .tcp_nodelay(true)
        .build()?;
    let endpoint = format!("{}/v1/events", bench.url.trim_end_matches('/'));
    // Warm up connections and the gateway's caches.
    for body in bodies.iter().take(bench.concurrency.min(bodies.len())) {
        post(&client, &endpoint, &bench.key, body.clone())
            .await
            .context("the gateway does not accept events")?;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let cpu_start = CpuSnapshot::take(bench);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..bench.concurrency {
        let (client, endpoint, key, bodies, next) = (
            client.clone(),
            endpoint.clone(),
            bench.key.clone(),
            bodies.clone(),
            next.clone(),
        );
        let total = bench.batches;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let sent = Instant::now();
                match post(&client, &endpoint, &key, bodies[i % bodies.len()].clone()).await {
                    Ok(()) => latencies.push(sent.elapsed().as_secs_f64() * 1000.0),
                    Err(_) => failed += 1,
                }
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for worker in workers {
        let (l, f) = worker.await?;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    let ok = latencies.len();
    let throughput = Phase::from(&mut latencies, ok * bench.batch_size, failed, elapsed);
    settle(bench, &client).await?;
    let cpu = CpuSnapshot::take(bench).since(&cpu_start);

    let fixed_rate = if bench.rate > 0 {
        Some((
            bench.rate,
            fixed_rate(bench, &client, &endpoint, bodies.clone()).await?,
        ))
    } else {
        None
    };
    if fixed_rate.is_some() {
        settle(bench, &client).await?;
    }
    let direct_events = (bodies.len() * bench.batch_size).max(throughput.events.min(1_000_000));
    let direct_events_per_sec = direct(bench, &client, &bodies, direct_events).await?;
    Ok(Report {
        throughput,
        cpu,
        fixed_rate,
        direct_events_per_sec,
        direct_events,
    })
}

async fn post(
    client: &reqwest::Client,
    endpoint: &str,
    key: &str,
    body: Bytes,
) -> anyhow::Result<()> {
    let response = client
        .post(endpoint)
        .bearer_auth(key)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "HTTP {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Sends batches on a fixed schedule (open loop), so latency is measured at a known load.
async fn fixed_rate(
    bench: &IngestBench,
    client: &reqwest::Client,
    endpoint: &str,
    bodies: Arc<Vec<Bytes>>,
) -> anyhow::Result<Phase> {
    let per_sec = (bench.rate as f64 / bench.batch_size as f64).max(1.0);
    let interval = Duration::from_secs_f64(1.0 / per_sec);
    let total = (per_sec * bench.rate_secs as f64) as usize;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        ticker.tick().await;
        let (client, endpoint, key, body) = (
            client.clone(),
            endpoint.to_string(),
            bench.key.clone(),
            bodies[i % bodies.len()].clone(),
        );
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            post(&client, &endpoint, &key, body)
                .await
                .map(|()| sent.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0;
    for task in tasks {
        match task.await? {
            Ok(ms) => latencies.push(ms),
            Err(_) => failed += 1,
        }
    }
    let ok = latencies.len();
    Ok(Phase::from(
        &mut latencies,
        ok * bench.batch_size,
        failed,
        started.elapsed(),
    ))
}

/// Waits until ClickHouse has flushed the Buffer table (its `max_time` is 5 s) and finished its
/// merges, so what follows does not compete with them.
async fn settle(bench: &IngestBench, client: &reqwest::Client) -> anyhow::Result<()> {
    let base = bench.clickhouse_url.trim_end_matches('/');
    tokio::time::sleep(Duration::from_secs(6)).await;
    for _ in 0..30 {
        let busy = client
            .post(base)
            .header("X-ClickHouse-User", &bench.clickhouse_user)
            .header("X-ClickHouse-Key", &bench.clickhouse_password)
            .body("SELECT count() FROM system.merges")
            .send()
            .await?
            .text()
            .await?;
        if busy.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Inserts `events` of the same generated events straight into a scratch table as `JSONEachRow`.
async fn direct(
    bench: &IngestBench,
    client: &reqwest::Client,
    bodies: &[Bytes],
    events: usize,
) -> anyhow::Result<f64> {
    let table = format!("`{}`.bench_direct", bench.clickhouse_database);
    let base = bench.clickhouse_url.trim_end_matches('/').to_string();
    let run = |sql: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let response = client
                .post(&base)
                .header("X-ClickHouse-User", &bench.clickhouse_user)
                .header("X-ClickHouse-Key", &bench.clickhouse_password)
                .body(sql)
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("ClickHouse: {}", response.text().await.unwrap_or_default());
            }
            anyhow::Ok(())
        }
    };
    run(format!("DROP TABLE IF EXISTS {table}")).await?;
    run(format!(
        "CREATE TABLE {table} (event String, user_id String, anonymous_id String, session_id String, \
         platform LowCardinality(String), timestamp Int64, properties String, context String) \
         ENGINE = MergeTree ORDER BY (event, timestamp)"
    ))
    .await?;
    // NDJSON lines of the same events the gateway received.
    let mut lines: Vec<Bytes> = Vec::new();
    for body in bodies {
        let batch: Vec<serde_json::Value> = serde_json::from_slice(body)?;
        for event in batch {
            let mut line = serde_json::to_vec(&event)?;
            line.push(b'\n');
            lines.push(Bytes::from(line));
        }
    }
    let chunk_rows = 100_000;
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut rows = 0;
    for i in 0..events {
        chunk.extend_from_slice(&lines[i % lines.len()]);
        rows += 1;
        if rows == chunk_rows {
            chunks.push(Bytes::from(std::mem::take(&mut chunk)));
            rows = 0;
        }
    }
    if !chunk.is_empty() {
        chunks.push(Bytes::from(chunk));
    }
    let query = format!(
        "INSERT INTO {table} SETTINGS input_format_json_read_objects_as_strings = 1, input_format_skip_unknown_fields = 1 FORMAT JSONEachRow"
    );
    let started = Instant::now();
    for chunk in chunks {
        let response = client
            .post(&base)
            .header("X-ClickHouse-User", &bench.clickhouse_user)
            .header("X-ClickHouse-Key", &bench.clickhouse_password)
            .query(&[("query", query.as_str())])
            .body(chunk)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "direct insert failed: {}",
                response.text().await.unwrap_or_default()
            );
        }
    }
    let elapsed = started.elapsed();
    run(format!("DROP TABLE IF EXISTS {table}")).await?;
    Ok(events as f64 / elapsed.as_secs_f64().max(1e-9))
}
