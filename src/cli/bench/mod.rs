//! `chgate bench ingest`: a load generator for a running gateway, compared in the same run with a
//! direct `JSONEachRow` insert of the same events into ClickHouse.

pub mod command;
pub mod funnel;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;

pub mod dashboard;
pub mod scale;
pub mod soak;

/// Time of the gateway's own work on event batches, measured in this process on one thread:
/// parsing, validation, enrichment and encoding for the write-ahead log. No network and no
/// servers, so runs compare code, not machines' moods.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    pub events: usize,
    pub rejected: usize,
    pub elapsed: Duration,
}

impl PipelineReport {
    pub fn render(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        format!(
            "pipeline: {} events ({} rejected) in {:.2} s on one thread: {:.0} events/s, {:.2} µs per event (parse, validate, enrich, WAL encoding)\n",
            self.events,
            self.rejected,
            secs,
            self.events as f64 / secs,
            secs * 1e6 / self.events.max(1) as f64,
        )
    }
}

/// Runs the ingestion pipeline's CPU part over `batches` realistic batches of `batch_size`
/// events (the bodies `bench ingest` sends), `rounds` times.
pub fn pipeline(
    settings: &crate::config::Settings,
    batches: usize,
    batch_size: usize,
    rounds: usize,
) -> anyhow::Result<PipelineReport> {
    use crate::ingest::{enrich, http::parse_json, model::Rules, prepare, sender::Sender};
    let bodies = event_bodies(batches.max(1), batch_size);
    let enricher = enrich::Enricher::new(settings)?;
    let critical = &settings.ingest.critical_events;
    let is_critical = |event: &str| critical.iter().any(|c| c == event);
    let (mut events, mut rejected) = (0, 0);
    let started = Instant::now();
    for _ in 0..rounds {
        for body in &bodies {
            let now_ms = chrono::Utc::now().timestamp_millis();
            let rules = Rules {
                settings: &settings.ingest,
                now_ms,
                enforce_window: true,
                trust_context_ip: Sender::Client.trusts_context_ip(),
                allowed_events: &[],
            };
            let facts = enrich::RequestFacts {
                client_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
                user_agent: "chgate-bench".into(),
                sender: Sender::Client,
                received_at_ms: now_ms,
            };
            let values = parse_json(body).map_err(|e| anyhow::anyhow!("{e}"))?;
            let prepared = prepare(&enricher, &is_critical, values, &rules, &facts);
            std::hint::black_box(prepared.batch.encode()?);
            events += prepared.received;
            rejected += prepared.rejected.len();
        }
    }
    Ok(PipelineReport {
        events,
        rejected,
        elapsed: started.elapsed(),
    })
}

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

/// Latency percentiles and throughput of a phase.
#[derive(Debug, Clone)]
pub struct Phase {
    pub events: usize,
    pub requests: usize,
    pub failed: usize,
    pub elapsed: Duration,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Phase {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn from(latencies: &mut [f64], events: usize, failed: usize, elapsed: Duration) -> Self {
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| percentile(latencies, p);
        Self {
            events,
            requests: latencies.len(),
            failed,
            elapsed,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
        }
    }
}

/// The `p` quantile (0-1) of the values, in any order; 0 when there are none.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        0.0
    } else {
        sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
    }
}

/// What ClickHouse's query log holds of a finished query.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logged {
    /// CPU time (user + system), ms.
    pub cpu_ms: f64,
    pub read_rows: u64,
    pub read_bytes: u64,
    pub memory_bytes: u64,
}

/// The query log's record of each of `query_ids` that finished, by id (the log is flushed first).
async fn query_log(
    client: &clickhouse::Client,
    query_ids: &[String],
) -> anyhow::Result<std::collections::HashMap<String, Logged>> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Record {
        query_id: String,
        cpu_ms: f64,
        read_rows: u64,
        read_bytes: u64,
        memory_bytes: u64,
    }
    client.query("SYSTEM FLUSH LOGS").execute().await?;
    let records: Vec<Record> = client
        .query(
            "SELECT query_id, (ProfileEvents['UserTimeMicroseconds'] + ProfileEvents['SystemTimeMicroseconds']) / 1000 AS cpu_ms, \
             read_rows, read_bytes, toUInt64(greatest(memory_usage, 0)) AS memory_bytes \
             FROM system.query_log WHERE type = 'QueryFinish' AND has(?, query_id)",
        )
        .bind(query_ids)
        .fetch_all()
        .await?;
    Ok(records
        .into_iter()
        .map(|r| {
            let logged = Logged {
                cpu_ms: r.cpu_ms,
                read_rows: r.read_rows,
                read_bytes: r.read_bytes,
                memory_bytes: r.memory_bytes,
            };
            (r.query_id, logged)
        })
        .collect())
}

/// CPU seconds spent over the throughput phase and until ClickHouse finished its Buffer flushes
/// and merges, by process; `None` where the process was not given or not readable.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub gateway: Option<f64>,
    pub clickhouse: Option<f64>,
    pub load_generator: Option<f64>,
    /// Postgres processes on this machine (the mirror of business events and its commits), those
    /// still running at the end; `None` when none runs here.
    pub postgres: Option<f64>,
    /// Busy CPU time of the whole machine (all cores).
    pub machine: Option<f64>,
    pub wall: Duration,
}

/// CPU time counters read at one moment.
#[derive(Debug, Clone)]
struct CpuSnapshot {
    gateway: Option<f64>,
    clickhouse: Option<f64>,
    load_generator: Option<f64>,
    /// CPU seconds of each process named `postgres`, by pid.
    postgres: std::collections::HashMap<u32, f64>,
    machine: Option<f64>,
    at: Instant,
}

impl CpuSnapshot {
    fn take(bench: &IngestBench) -> Self {
        Self {
            gateway: bench.gateway_pid.and_then(process_cpu_secs),
            clickhouse: bench.clickhouse_pid.and_then(process_cpu_secs),
            load_generator: process_cpu_secs(std::process::id()),
            postgres: named_processes("postgres")
                .filter_map(|pid| Some((pid, process_cpu_secs(pid)?)))
                .collect(),
            machine: machine_busy_secs(),
            at: Instant::now(),
        }
    }

    fn since(&self, start: &Self) -> CpuUse {
        let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        CpuUse {
            gateway: diff(self.gateway, start.gateway),
            clickhouse: diff(self.clickhouse, start.clickhouse),
            load_generator: diff(self.load_generator, start.load_generator),
            // A process started in between counts from zero.
            postgres: (!self.postgres.is_empty()).then(|| {
                self.postgres
                    .iter()
                    .map(|(pid, secs)| secs - start.postgres.get(pid).unwrap_or(&0.0))
                    .sum()
            }),
            machine: diff(self.machine, start.machine),
            wall: self.at - start.at,
        }
    }
}

/// Clock ticks per second of `/proc` CPU counters (USER_HZ; 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU seconds of a process, all its threads (Linux).
fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space-separated.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / TICKS_PER_SEC)
}

/// Pids of this machine's processes whose command name is `name`.
fn named_processes(name: &str) -> impl Iterator<Item = u32> + '_ {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
        })
}

/// Busy CPU seconds of the machine: everything but idle and I/O wait, summed over cores.
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal …
    let busy: f64 = line
        .split_whitespace()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .filter_map(|(_, t)| t.parse::<f64>().ok())
        .sum();
    Some(busy / TICKS_PER_SEC)
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
fn event_bodies(count: usize, batch_size: usize) -> Vec<Bytes> {
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

/// Settings of `chgate bench queries`.
#[derive(Debug, Clone)]
pub struct QueryBench {
    pub url: String,
    pub key: String,
    pub iterations: usize,
    pub clickhouse_url: String,
    pub clickhouse_database: String,
    pub clickhouse_user: String,
    pub clickhouse_password: String,
}

/// One template's latencies through the gateway and directly.
#[derive(Debug)]
pub struct TemplateTiming {
    pub name: String,
    pub gateway: Phase,
    pub direct: Phase,
}

/// Runs every template's first example through the gateway and, with the same rendered SQL and
/// parameters, directly against ClickHouse — alternating, so both see the same load.
pub async fn queries(
    bench: &QueryBench,
    catalog: &crate::catalog::Catalog,
) -> anyhow::Result<Vec<TemplateTiming>> {
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let mut out = Vec::new();
    for template in catalog
        .names()
        .filter_map(|(name, _)| catalog.get(name, None))
    {
        let Some(example) = template.meta().examples.first() else {
            continue;
        };
        let rendered = catalog
            .render(template, &example.params)
            .map_err(|e| anyhow::anyhow!("{}: {e}", template.name()))?;
        let gateway_url = format!(
            "{}/v1/queries/{}/v{}",
            bench.url.trim_end_matches('/'),
            template.name(),
            template.version()
        );
        let mut direct_query: Vec<(String, String)> = vec![
            ("database".into(), bench.clickhouse_database.clone()),
            ("readonly".into(), "1".into()),
            (
                "max_execution_time".into(),
                template.meta().max_execution_secs.to_string(),
            ),
            (
                "max_result_rows".into(),
                template.meta().max_rows.to_string(),
            ),
            ("result_overflow_mode".into(), "throw".into()),
            ("output_format_json_quote_64bit_integers".into(), "0".into()),
            ("output_format_json_quote_decimals".into(), "0".into()),
            (
                "output_format_json_named_tuples_as_objects".into(),
                "1".into(),
            ),
        ];
        for (name, value) in &rendered.bindings {
            direct_query.push((format!("param_{name}"), param_text(value)));
        }
        let direct_sql = format!("{}\nFORMAT JSON", rendered.sql);
        let (mut via, mut direct) = (Vec::new(), Vec::new());
        let (mut via_failed, mut direct_failed) = (0, 0);
        // A warm-up of each, then alternate.
        for i in 0..=bench.iterations {
            let started = Instant::now();
            let ok = client
                .post(&gateway_url)
                .bearer_auth(&bench.key)
                .header("Cache-Control", "no-cache")
                .json(&example.params)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if i > 0 {
                if ok {
                    via.push(ms)
                } else {
                    via_failed += 1
                }
            }
            let started = Instant::now();
            let response = client
                .post(&bench.clickhouse_url)
                .header("X-ClickHouse-User", &bench.clickhouse_user)
                .header("X-ClickHouse-Key", &bench.clickhouse_password)
                .query(&direct_query)
                .body(direct_sql.clone())
                .send()
                .await;
            let ok = match response {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if i > 0 {
                if ok {
                    direct.push(ms)
                } else {
                    direct_failed += 1
                }
            }
        }
        let elapsed = Duration::ZERO;
        out.push(TemplateTiming {
            name: format!("{}/v{}", template.name(), template.version()),
            gateway: Phase::from(&mut via, 0, via_failed, elapsed),
            direct: Phase::from(&mut direct, 0, direct_failed, elapsed),
        });
    }
    Ok(out)
}

/// The text ClickHouse expects in `param_<name>` for a bound value.
fn param_text(value: &crate::catalog::params::ParamValue) -> String {
    use crate::catalog::params::ParamValue;
    match value {
        ParamValue::Str(s) => s.clone(),
        ParamValue::Int(i) => i.to_string(),
        ParamValue::UInt(u) => u.to_string(),
        ParamValue::Float(f) => f.to_string(),
        ParamValue::Bool(b) => b.to_string(),
        ParamValue::Array(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|i| match i {
                    ParamValue::Str(s) => {
                        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
                    }
                    other => param_text(other),
                })
                .collect();
            format!("[{}]", inner.join(","))
        }
    }
}

/// A table of the timings.
pub fn render_queries(timings: &[TemplateTiming], iterations: usize) -> String {
    let mut out = format!(
        "{iterations} runs each, cache bypassed (Cache-Control: no-cache), gateway and direct alternating\n{:<20} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}\n",
        "template", "gw p50", "gw p99", "ch p50", "ch p99", "added p50", "ratio"
    );
    let mut added = Vec::new();
    for t in timings {
        let extra = t.gateway.p50_ms - t.direct.p50_ms;
        added.push(extra);
        out.push_str(&format!(
            "{:<20} {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>8.2}ms {:>8.2}{}\n",
            t.name,
            t.gateway.p50_ms,
            t.gateway.p99_ms,
            t.direct.p50_ms,
            t.direct.p99_ms,
            extra,
            t.gateway.p50_ms / t.direct.p50_ms.max(1e-9),
            if t.gateway.failed + t.direct.failed > 0 {
                format!(
                    "  ({} gateway / {} direct failures)",
                    t.gateway.failed, t.direct.failed
                )
            } else {
                String::new()
            }
        ));
    }
    added.sort_by(f64::total_cmp);
    if let Some(median) = added.get(added.len() / 2) {
        out.push_str(&format!(
            "median added latency at p50 across templates: {median:.2} ms\n"
        ));
    }
    out
}

/// `chgate bench queries --cached`: `concurrency` clients, each on its own keep-alive HTTP/1.1
/// connection (as wrk and similar tools do, so the load generator, which shares the machine's
/// cores with the gateway, spends little per call), calling `path` until `requests` are done.
pub async fn cached(
    url: &str,
    key: &str,
    path: &str,
    concurrency: usize,
    requests: usize,
) -> anyhow::Result<Phase> {
    let base: hyper::Uri = url.parse().context("--url")?;
    let authority = base
        .authority()
        .ok_or_else(|| anyhow::anyhow!("--url {url:?} names no host"))?
        .clone();
    let target: hyper::Uri = format!("{}{}", base.path().trim_end_matches('/'), path)
        .parse()
        .context("--path")?;
    let mut headers = hyper::HeaderMap::new();
    headers.insert(hyper::header::HOST, authority.as_str().parse()?);
    headers.insert(
        hyper::header::AUTHORIZATION,
        format!("Bearer {key}").parse()?,
    );
    let call = CachedCall {
        authority: authority.to_string(),
        target,
        headers,
    };
    // Warm the cache.
    let mut warm = call.connect().await?;
    for _ in 0..2 {
        call.send(&mut warm).await?;
    }
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        connections.push(call.connect().await?);
    }
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for mut connection in connections {
        let (call, next) = (call.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut failed, mut misses) = (0, 0);
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let sent = Instant::now();
                match call.send(&mut connection).await {
                    Ok(hit) => {
                        misses += usize::from(!hit);
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    Err(_) => {
                        failed += 1;
                        match call.connect().await {
                            Ok(fresh) => connection = fresh,
                            Err(_) => break,
                        }
                    }
                }
            }
            (latencies, failed, misses)
        }));
    }
    let (mut latencies, mut failed, mut misses) = (Vec::new(), 0, 0);
    for worker in workers {
        let (l, f, m) = worker.await?;
        latencies.extend(l);
        failed += f;
        misses += m;
    }
    if misses > 0 {
        tracing::warn!(misses, "some responses were not cache hits");
    }
    let ok = latencies.len();
    Ok(Phase::from(&mut latencies, ok, failed, started.elapsed()))
}

/// The one call of the cached benchmark.
struct CachedCall {
    authority: String,
    target: hyper::Uri,
    headers: hyper::HeaderMap,
}

type Connection = hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>;

impl CachedCall {
    async fn connect(&self) -> anyhow::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("cannot connect to {}", self.authority))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Sends the call and reads the whole answer; whether it was a cache hit.
    async fn send(&self, connection: &mut Connection) -> anyhow::Result<bool> {
        use http_body_util::BodyExt as _;
        let mut request = hyper::Request::new(http_body_util::Empty::new());
        *request.uri_mut() = self.target.clone();
        *request.headers_mut() = self.headers.clone();
        connection.ready().await?;
        let response = connection.send_request(request).await?;
        let status = response.status();
        let hit = response
            .headers()
            .get("x-cache")
            .is_some_and(|v| v == "HIT");
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(hit)
    }
}

/// `chgate bench bi`: one large Native result streamed through the BI endpoint and directly from
/// ClickHouse, alternately, with the gateway's resident memory sampled while it streams.
pub struct BiBench {
    /// Base URL of the BI endpoint.
    pub url: String,
    pub key: String,
    pub clickhouse_url: String,
    pub clickhouse_user: String,
    pub clickhouse_password: String,
    pub rows: u64,
    pub rounds: usize,
    /// The gateway's process, whose RSS is sampled (on this machine).
    pub gateway_pid: Option<u32>,
}

/// One streamed result.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Stream {
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, Default)]
pub struct BiReport {
    pub direct: Vec<Stream>,
    pub gateway: Vec<Stream>,
    /// Gateway RSS before the first stream and the highest seen while streaming, in MiB.
    pub rss_before_mib: Option<f64>,
    pub rss_peak_mib: Option<f64>,
}

impl BiReport {
    fn best(streams: &[Stream]) -> f64 {
        streams.iter().map(Stream::mb_per_sec).fold(0.0, f64::max)
    }

    /// Gateway throughput over direct throughput (best round of each).
    pub fn ratio(&self) -> f64 {
        Self::best(&self.gateway) / Self::best(&self.direct).max(1e-9)
    }

    pub fn render(&self, rows: u64) -> String {
        let line = |name: &str, streams: &[Stream]| {
            let rounds: Vec<String> = streams
                .iter()
                .map(|s| {
                    format!(
                        "{:.0} MB/s ({:.2} s)",
                        s.mb_per_sec(),
                        s.elapsed.as_secs_f64()
                    )
                })
                .collect();
            let bytes = streams.first().map_or(0, |s| s.bytes);
            format!(
                "{name:<8} {rows} rows, {:.1} MB in Native: {} -> best {:.0} MB/s, {:.1} M rows/s\n",
                bytes as f64 / 1e6,
                rounds.join(", "),
                Self::best(streams),
                Self::best(streams) * 1e6 / (bytes.max(1) as f64) * rows as f64 / 1e6
            )
        };
        let mut out = line("direct", &self.direct);
        out.push_str(&line("gateway", &self.gateway));
        out.push_str(&format!(
            "throughput ratio gateway/direct: {:.2}\n",
            self.ratio()
        ));
        if let (Some(before), Some(peak)) = (self.rss_before_mib, self.rss_peak_mib) {
            out.push_str(&format!(
                "gateway RSS: {before:.1} MiB before, peak {peak:.1} MiB while streaming (+{:.1} MiB)\n",
                peak - before
            ));
        }
        out
    }
}

/// Resident set size of a process, in MiB (Linux).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

async fn stream_once(request: reqwest::RequestBuilder) -> anyhow::Result<Stream> {
    use futures_util::StreamExt as _;
    let started = Instant::now();
    let response = request.send().await?;
    if !response.status().is_success() {
        bail!(
            "HTTP {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let mut bytes = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        bytes += chunk?.len() as u64;
    }
    Ok(Stream {
        bytes,
        elapsed: started.elapsed(),
    })
}

pub async fn bi(bench: &BiBench) -> anyhow::Result<BiReport> {
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let sql = format!(
        "SELECT number AS id, toString(number) AS name, toDateTime(1700000000 + number) AS ts, \
         number % 7 AS bucket, number * 3 AS amount FROM numbers({})",
        bench.rows
    );
    let params = [
        ("default_format", "Native"),
        ("client_protocol_version", "54460"),
    ];
    let direct = || {
        let mut request = client
            .post(&bench.clickhouse_url)
            .query(&params)
            .header("x-clickhouse-user", &bench.clickhouse_user)
            .body(sql.clone());
        if !bench.clickhouse_password.is_empty() {
            request = request.header("x-clickhouse-key", &bench.clickhouse_password);
        }
        request
    };
    let gateway = || {
        client
            .post(format!("{}/", bench.url.trim_end_matches('/')))
            .query(&params)
            .basic_auth("bench", Some(&bench.key))
            .body(sql.clone())
    };
    let mut report = BiReport {
        rss_before_mib: bench.gateway_pid.and_then(rss_mib),
        ..BiReport::default()
    };
    let peak = Arc::new(std::sync::Mutex::new(report.rss_before_mib));
    let sampling = bench.gateway_pid.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(now) = rss_mib(pid) {
                    let mut peak = peak.lock().unwrap_or_else(|p| p.into_inner());
                    *peak = Some(peak.map_or(now, |p: f64| p.max(now)));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    for _ in 0..bench.rounds.max(1) {
        report.direct.push(stream_once(direct()).await?);
        report.gateway.push(stream_once(gateway()).await?);
    }
    if let Some(task) = sampling {
        task.abort();
    }
    report.rss_peak_mib = *peak.lock().unwrap_or_else(|p| p.into_inner());
    if let (Some(d), Some(g)) = (report.direct.first(), report.gateway.first()) {
        if d.bytes != g.bytes {
            bail!(
                "the gateway sent {} bytes, ClickHouse {} for the same query",
                g.bytes,
                d.bytes
            );
        }
    }
    Ok(report)
}
