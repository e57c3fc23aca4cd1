//! `chgate bench funnel`: the `funnel` template (attempt=best, no breakdown) and a bare
//! `windowFunnel` query over the same rows and steps, alternating on the same ClickHouse, so that
//! both see the same load; the template's answer is checked against windowFunnel's on the way.
//! Besides wall time, the CPU time ClickHouse spent on each run (from `system.query_log`, when
//! readable) is reported: on a machine shared with other work it varies less than wall time.

use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};

use super::percentile;
use crate::catalog::{Catalog, Rendered};
use crate::config::Settings;
use crate::storage::clickhouse::base_client;

/// Settings of `chgate bench funnel`.
#[derive(Debug, Clone)]
pub struct FunnelBench {
    /// Timed runs of each query, after one untimed run.
    pub iterations: usize,
    /// The range, as the template's `from` and `to` take it (`today-30d`, `2026-11-01`, `now`).
    pub from: String,
    pub to: String,
    pub window_seconds: u32,
    pub steps: Vec<String>,
    /// Also time funnel v1 (first attempts; several times slower).
    pub with_v1: bool,
}

/// One query's timings, in ms, in run order.
struct Timed {
    name: String,
    ms: Vec<f64>,
    /// ClickHouse's CPU time (user + system) of each run, when the query log could be read.
    cpu_ms: Vec<f64>,
    query_ids: Vec<String>,
    /// Users reaching each step.
    users: Vec<u64>,
}

/// The timings of one run of the benchmark.
pub struct Comparison {
    /// Events in the range, and those of the funnel's steps (bots excluded).
    events: u64,
    step_events: u64,
    timed: Vec<Timed>,
}

impl Comparison {
    /// The template's (attempt=best) wall and CPU time as pairwise ratios to windowFunnel's.
    pub fn ratios(&self) -> (f64, f64) {
        let (best, base) = (&self.timed[0], &self.timed[1]);
        (
            pairwise_ratio(&best.ms, &base.ms),
            pairwise_ratio(&best.cpu_ms, &base.cpu_ms),
        )
    }

    /// Whether attempt=best and windowFunnel found the same users at every step.
    pub fn agree(&self) -> bool {
        self.timed[0].users == self.timed[1].users
    }
}

/// Runs the benchmark; the report as text.
pub async fn run(
    settings: &Settings,
    catalog: &Catalog,
    bench: &FunnelBench,
) -> anyhow::Result<String> {
    Ok(report(bench, &compare(settings, catalog, bench).await?))
}

/// Times the template (attempt=best; v1 too when asked) and windowFunnel, alternately.
pub async fn compare(
    settings: &Settings,
    catalog: &Catalog,
    bench: &FunnelBench,
) -> anyhow::Result<Comparison> {
    let client = base_client(&settings.clickhouse).with_database(&settings.clickhouse.database);
    let params = json!({
        "steps": bench.steps, "from": bench.from, "to": bench.to,
        "window_seconds": bench.window_seconds,
    });
    let latest = catalog.get("funnel", None).context("no funnel template")?;
    let mut best_params = params.clone();
    best_params["attempt"] = json!("best");
    let best = render(catalog, latest, &best_params)?;
    let conditions: Vec<String> = (1..=bench.steps.len())
        .map(|k| format!("event = {{steps:Array(String)}}[{k}]"))
        .collect();
    let window_funnel = Rendered {
        sql: format!(
            "SELECT level, count() AS users FROM (SELECT actor_id, windowFunnel({})(toUInt64(toUnixTimestamp64Milli(timestamp)), {}) AS level \
             FROM events WHERE timestamp >= {{from:DateTime}} AND timestamp < {{to:DateTime}} AND is_bot = 0 AND event IN {{steps:Array(String)}} \
             GROUP BY actor_id) GROUP BY level ORDER BY level",
            u64::from(bench.window_seconds) * 1000,
            conditions.join(", ")
        ),
        ..best.clone()
    };
    let mut queries = vec![
        (format!("funnel/v{} attempt=best", latest.version()), best),
        ("windowFunnel".to_string(), window_funnel),
    ];
    if bench.with_v1 {
        let v1 = catalog.get("funnel", Some(1)).context("no funnel v1")?;
        queries.push(("funnel/v1".to_string(), render(catalog, v1, &params)?));
    }
    let mut timed: Vec<Timed> = queries
        .iter()
        .map(|(name, _)| Timed {
            name: name.clone(),
            ms: Vec::new(),
            cpu_ms: Vec::new(),
            query_ids: Vec::new(),
            users: Vec::new(),
        })
        .collect();
    for round in 0..=bench.iterations {
        for ((name, rendered), timed) in queries.iter().zip(&mut timed) {
            let query_id = uuid::Uuid::new_v4().to_string();
            let started = Instant::now();
            let rows = fetch(
                &client.clone().with_setting("query_id", &query_id),
                rendered,
            )
            .await
            .with_context(|| format!("{name} failed"))?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if round > 0 {
                timed.ms.push(ms);
                timed.query_ids.push(query_id);
            }
            timed.users = if name == "windowFunnel" {
                reached_by_level(&rows, bench.steps.len())
            } else {
                rows.iter().filter_map(|r| r["users"].as_u64()).collect()
            };
        }
    }
    for timed in &mut timed {
        timed.cpu_ms = cpu_ms(&client, &timed.query_ids).await.unwrap_or_default();
    }
    let (events, step_events) = volume(&client, &queries[1].1).await?;
    Ok(Comparison {
        events,
        step_events,
        timed,
    })
}

fn render(
    catalog: &Catalog,
    template: &crate::catalog::Template,
    params: &Value,
) -> anyhow::Result<Rendered> {
    let params = params.as_object().cloned().unwrap_or_default();
    catalog
        .render(template, &params)
        .map_err(|e| anyhow::anyhow!("{}: {e}", template.name()))
}

async fn fetch(client: &clickhouse::Client, rendered: &Rendered) -> anyhow::Result<Vec<Value>> {
    let mut query = client
        .query(&rendered.sql)
        .with_setting("output_format_json_quote_64bit_integers", "0");
    for (name, value) in &rendered.bindings {
        query = query.param(name, value);
    }
    let bytes = query.fetch_bytes("JSONEachRow")?.collect().await?;
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).context("invalid JSON row"))
        .collect()
}

/// windowFunnel's users by level, as users reaching each step.
fn reached_by_level(rows: &[Value], steps: usize) -> Vec<u64> {
    (1..=steps as u64)
        .map(|k| {
            rows.iter()
                .filter(|r| r["level"].as_u64().is_some_and(|level| level >= k))
                .filter_map(|r| r["users"].as_u64())
                .sum()
        })
        .collect()
}

/// ClickHouse's CPU time of each query, in ms, in their order, from its query log (empty when it
/// cannot be read).
async fn cpu_ms(client: &clickhouse::Client, query_ids: &[String]) -> anyhow::Result<Vec<f64>> {
    let logged = super::query_log(client, query_ids).await?;
    Ok(query_ids
        .iter()
        .filter_map(|id| logged.get(id).map(|l| l.cpu_ms))
        .collect())
}

/// Events in the range, and those of the funnel's steps (bots excluded).
async fn volume(client: &clickhouse::Client, rendered: &Rendered) -> anyhow::Result<(u64, u64)> {
    let counting = Rendered {
        sql: "SELECT count() AS events, countIf(event IN {steps:Array(String)}) AS step_events FROM events \
              WHERE timestamp >= {from:DateTime} AND timestamp < {to:DateTime} AND is_bot = 0"
            .to_string(),
        ..rendered.clone()
    };
    let rows = fetch(client, &counting).await?;
    let number = |k: &str| rows.first().and_then(|r| r[k].as_u64()).unwrap_or(0);
    Ok((number("events"), number("step_events")))
}

/// The median of the ratios of runs made one after the other: on a shared machine both runs of a
/// pair meet about the same load, so this varies less than a ratio of medians.
fn pairwise_ratio(runs: &[f64], baseline: &[f64]) -> f64 {
    let ratios: Vec<f64> = runs
        .iter()
        .zip(baseline)
        .map(|(a, b)| a / b.max(1e-9))
        .collect();
    percentile(&ratios, 0.5)
}

/// The comparison as a table, with the users per step and whether both agree on them.
pub fn report(bench: &FunnelBench, comparison: &Comparison) -> String {
    let Comparison {
        events,
        step_events,
        timed,
    } = comparison;
    let (wall_base, cpu_base) = timed
        .iter()
        .find(|t| t.name == "windowFunnel")
        .map(|t| (t.ms.clone(), t.cpu_ms.clone()))
        .unwrap_or_default();
    let mut out = format!(
        "{} steps ({}), window {} s, {} to {}: {events} events, {step_events} of the steps; {} runs each after one untimed, alternating\n\
         (/ wF: the median over runs of the ratio to the windowFunnel run next to it)\n\
         {:<26} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7}  users per step\n",
        bench.steps.len(),
        bench.steps.join(", "),
        bench.window_seconds,
        bench.from,
        bench.to,
        bench.iterations,
        "query",
        "wall p50",
        "min",
        "max",
        "/ wF",
        "CPU p50",
        "/ wF",
    );
    for t in timed.iter() {
        let (wall, cpu) = (percentile(&t.ms, 0.5), percentile(&t.cpu_ms, 0.5));
        out.push_str(&format!(
            "{:<26} {:>7.0}ms {:>7.0}ms {:>7.0}ms {:>7.2} {:>7.0}ms {:>7.2}  {:?}\n",
            t.name,
            wall,
            percentile(&t.ms, 0.0),
            percentile(&t.ms, 1.0),
            pairwise_ratio(&t.ms, &wall_base),
            cpu,
            pairwise_ratio(&t.cpu_ms, &cpu_base),
            t.users
        ));
    }
    let agree = timed
        .iter()
        .filter(|t| t.name != "funnel/v1")
        .map(|t| &t.users)
        .collect::<Vec<_>>()
        .windows(2)
        .all(|w| w[0] == w[1]);
    out.push_str(if agree {
        "attempt=best and windowFunnel agree on the users reaching every step\n"
    } else {
        "attempt=best and windowFunnel DISAGREE on the users reaching the steps\n"
    });
    out
}
