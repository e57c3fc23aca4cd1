//! `chgate bench …`: load generators and measurements against a running gateway and ClickHouse,
//! and what they share (percentiles, ClickHouse's query log, CPU time of processes).

pub mod bi;
pub mod command;
pub mod dashboard;
pub mod experiments;
pub mod funnel;
pub mod ingest;
pub mod pipeline;
pub mod queries;
pub mod scale;
pub mod soak;

use std::time::{Duration, Instant};

pub use self::bi::{bi, BiBench, BiReport};
pub use self::ingest::{event_bodies, ingest, IngestBench, Report};
pub use self::pipeline::{pipeline, PipelineReport};
pub use self::queries::{cached, queries, render_queries, QueryBench, TemplateTiming};

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
