//! `chgate bench scale`: every shipped template over the last 7, 30 and 90 days of a large,
//! generated data set (100 M events by default, see [`generate`]), called through the gateway;
//! latency percentiles from the client, rows and bytes read and CPU time from ClickHouse's query
//! log, checked against the targets of each template; and the funnel template timed against a bare
//! `windowFunnel` over the same rows in the same run ([`super::funnel`]).

pub mod generate;

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDate;
use serde_json::{json, Value};

use super::{percentile, query_log, Logged};
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::storage::clickhouse::base_client;

/// Settings of `chgate bench scale`.
#[derive(Debug, Clone)]
pub struct ScaleBench {
    pub url: String,
    pub key: String,
    pub plan: generate::Plan,
    /// Lengths of the ranges, in days, each ending with the data set's last day.
    pub ranges: Vec<u32>,
    /// Timed calls of each template and range, after one untimed call.
    pub iterations: usize,
    /// No more timed calls of a template and range once they took this long (at least three).
    pub budget: Duration,
    /// Timed runs of the funnel template and of windowFunnel each.
    pub funnel_iterations: usize,
    /// Only these templates (all when empty).
    pub only: Vec<String>,
    /// Generate the data set and stop.
    pub generate_only: bool,
}

/// The latency a template must keep over ranges up to `days` long, judged on the p95.
struct Target {
    template: &'static str,
    days: u32,
    ms: f64,
}

const TARGETS: &[Target] = &[
    Target {
        template: "dau",
        days: 90,
        ms: 100.0,
    },
    Target {
        template: "revenue",
        days: 90,
        ms: 100.0,
    },
    Target {
        template: "ops_usage",
        days: 90,
        ms: 100.0,
    },
    Target {
        template: "funnel",
        days: 30,
        ms: 3000.0,
    },
    Target {
        template: "retention",
        days: 30,
        ms: 3000.0,
    },
    Target {
        template: "paths",
        days: 30,
        ms: 3000.0,
    },
    Target {
        template: "new_users",
        days: 30,
        ms: 3000.0,
    },
    Target {
        template: "ltv",
        days: 30,
        ms: 3000.0,
    },
];

/// The funnel template (attempt=best, no breakdown) within this many times a bare windowFunnel.
const FUNNEL_RATIO: f64 = 1.2;

/// A range of whole days: `from` .. `end` (exclusive).
#[derive(Debug, Clone, Copy)]
struct Range {
    days: u32,
    from: NaiveDate,
    end: NaiveDate,
}

impl Range {
    /// The last day, for templates whose `to` is an inclusive date.
    fn last(&self) -> NaiveDate {
        self.end - chrono::Days::new(1)
    }
}

/// The call of template `name` over `range`; `None` for a template that does not take a range
/// of that length (`user_profile` reads all of one user's events: only with the longest range).
fn call(
    name: &str,
    range: &Range,
    longest: bool,
    heavy_user: &str,
) -> anyhow::Result<Option<Value>> {
    let (from, last, end) = (
        range.from.to_string(),
        range.last().to_string(),
        range.end.to_string(),
    );
    let weeks = (range.days / 7).clamp(1, 12);
    Ok(Some(match name {
        "active_users" => json!({"from": from, "to": last, "granularity": "week"}),
        "dau" | "revenue" => json!({"from": from, "to": last}),
        "new_users" => json!({"from": from, "to": last, "granularity": "day"}),
        "ltv" => json!({"from": from, "to": last, "period": "week", "periods": weeks}),
        "retention" => json!({"from": from, "to": last, "period": "week", "periods": weeks}),
        "ops_usage" => json!({"from": from, "to": end, "granularity": "day"}),
        "event_trends" => json!({
            "events": ["page_view", "game_view", "add_to_cart", "purchase"],
            "from": from, "to": end, "granularity": "day",
        }),
        "funnel" => json!({
            "steps": ["game_view", "add_to_cart", "checkout_started", "purchase"],
            "from": from, "to": end,
        }),
        "funnel_time_to_convert" => json!({
            "steps": ["game_view", "add_to_cart", "purchase"], "from": from, "to": end,
        }),
        "geo" | "paths" => json!({"from": from, "to": end}),
        "large_purchases" => json!({"from": from, "to": end, "min_amount": 1000}),
        "top_items" => json!({"event": "game_view", "from": from, "to": end}),
        "also_bought" => json!({"item": "game-000", "from": from, "to": end}),
        "user_profile" if longest => json!({"user_id": heavy_user}),
        "user_profile" => return Ok(None),
        // The generated store has no experiment exposures yet: nothing meaningful to time.
        "experiment_results" => return Ok(None),
        other => anyhow::bail!(
            "bench scale has no call for the template {other}: add one to src/cli/bench/scale/mod.rs"
        ),
    }))
}

/// One template over one range.
struct Measured {
    template: String,
    version: u32,
    days: u32,
    ms: Vec<f64>,
    query_ids: Vec<String>,
    failures: Vec<String>,
    result_rows: u64,
    /// The machine's 1-minute load average when the calls were done.
    load: f64,
    logged: Vec<Logged>,
}

/// Runs the benchmark: generates what is missing, then times the templates; the report as text.
pub async fn run(
    settings: &Settings,
    catalog: &Catalog,
    bench: &ScaleBench,
    mut log: impl FnMut(&str),
) -> anyhow::Result<String> {
    let client = base_client(&settings.clickhouse).with_database(&settings.clickhouse.database);
    let data = generate::ensure(&client, &bench.plan, &mut log).await?;
    log(&format!(
        "{} events of {} users, {} .. {}",
        data.events,
        data.users,
        data.first_day,
        data.last_day()
    ));
    if bench.generate_only {
        return Ok(format!("{} events of {} users", data.events, data.users));
    }
    settle(&client, &mut log).await?;
    // As the gateways do every rollups.finalize_secs: the closed days' distinct counts.
    let pass = crate::rollups::finalize(
        &crate::storage::clickhouse::ClickHouse::new(&settings.clickhouse),
        settings.rollups.finalize_days,
    )
    .await;
    if !pass.errors.is_empty() {
        anyhow::bail!("finalizing the rollups failed: {}", pass.errors.join("; "));
    }
    log(&format!(
        "finalized the rollups' closed periods in {} ms ({} rows in the final tables)",
        pass.elapsed_ms, pass.rows
    ));
    let parts: Vec<(String, u64, u64)> = client
        .query(
            "SELECT table, count(), sum(rows) FROM system.parts WHERE database = currentDatabase() \
             AND active GROUP BY table ORDER BY table",
        )
        .fetch_all()
        .await?;
    let heavy_user: String = client
        .query(
            "SELECT user_id FROM events WHERE timestamp >= toDateTime(?) AND user_id != '' \
             GROUP BY user_id ORDER BY count() DESC, user_id LIMIT 1",
        )
        .bind(data.last_day().to_string())
        .fetch_one()
        .await
        .context("cannot find the most active user of the last day")?;
    let longest = bench.ranges.iter().copied().max().unwrap_or(0);
    let ranges: Vec<Range> = bench
        .ranges
        .iter()
        .map(|&days| Range {
            days,
            from: data.end - chrono::Days::new(u64::from(days)),
            end: data.end,
        })
        .collect();
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let mut measured = Vec::new();
    for (name, _) in catalog.names() {
        if !bench.only.is_empty() && !bench.only.contains(name) {
            continue;
        }
        let template = catalog.get(name, None).context("a listed template")?;
        for range in &ranges {
            let Some(params) = call(name, range, range.days == longest, &heavy_user)? else {
                continue;
            };
            let m = time_calls(&http, bench, name, template.version(), range.days, &params).await;
            log(&format!(
                "{name}/v{} over {} days: p50 {:.0} ms, {} runs{}",
                m.version,
                m.days,
                percentile(&m.ms, 0.5),
                m.ms.len(),
                if m.failures.is_empty() {
                    String::new()
                } else {
                    format!(", failed: {}", m.failures[0])
                }
            ));
            measured.push(m);
        }
    }
    let ids: Vec<String> = measured.iter().flat_map(|m| m.query_ids.clone()).collect();
    let logged = query_log(&client, &ids).await.unwrap_or_default();
    for m in &mut measured {
        m.logged = m
            .query_ids
            .iter()
            .filter_map(|id| logged.get(id).copied())
            .collect();
    }
    let mut funnels = Vec::new();
    if bench.only.is_empty() || bench.only.iter().any(|t| t == "funnel") {
        for range in &ranges {
            let funnel = super::funnel::FunnelBench {
                iterations: bench.funnel_iterations,
                from: range.from.to_string(),
                to: range.end.to_string(),
                window_seconds: 86_400,
                steps: ["game_view", "add_to_cart", "checkout_started", "purchase"]
                    .map(String::from)
                    .to_vec(),
                with_v1: false,
            };
            let comparison = super::funnel::compare(settings, catalog, &funnel).await?;
            let text = super::funnel::report(&funnel, &comparison);
            log(&text);
            funnels.push((range.days, text, comparison));
        }
    }
    Ok(report(&data, &parts, &measured, &funnels))
}

/// Waits until ClickHouse runs no merges in the database (at most 30 minutes), so that the
/// templates read parts as a table at rest has them.
async fn settle(client: &clickhouse::Client, log: &mut impl FnMut(&str)) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut quiet = 0;
    while started.elapsed() < Duration::from_secs(1800) {
        let merges: u64 = client
            .query("SELECT count() FROM system.merges WHERE database = currentDatabase()")
            .fetch_one()
            .await?;
        quiet = if merges == 0 { quiet + 1 } else { 0 };
        if quiet >= 3 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    log("merges still running after 30 minutes; measuring anyway");
    Ok(())
}

/// The template's calls over one range: one untimed, then up to `bench.iterations` timed ones
/// within `bench.budget`, each with a query id of its own (the gateway takes `X-Request-Id` as
/// the ClickHouse query id) and the result cache bypassed.
async fn time_calls(
    http: &reqwest::Client,
    bench: &ScaleBench,
    name: &str,
    version: u32,
    days: u32,
    params: &Value,
) -> Measured {
    let url = format!(
        "{}/v1/queries/{name}/v{version}",
        bench.url.trim_end_matches('/')
    );
    let mut m = Measured {
        template: name.to_string(),
        version,
        days,
        ms: Vec::new(),
        query_ids: Vec::new(),
        failures: Vec::new(),
        result_rows: 0,
        load: 0.0,
        logged: Vec::new(),
    };
    let started = Instant::now();
    for round in 0..=bench.iterations {
        if round > 3 && started.elapsed() > bench.budget {
            break;
        }
        let query_id = format!("scale-{}", uuid::Uuid::new_v4());
        let call_started = Instant::now();
        let answer = http
            .post(&url)
            .bearer_auth(&bench.key)
            .header("Cache-Control", "no-cache")
            .header("X-Request-Id", &query_id)
            .json(params)
            .send()
            .await;
        let result = match answer {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.map_err(|e| e.to_string()),
            Ok(r) => Err(format!(
                "HTTP {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Err(e) => Err(e.to_string()),
        };
        let ms = call_started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(body) => {
                m.result_rows = body["rows"].as_u64().unwrap_or(0);
                if round > 0 {
                    m.ms.push(ms);
                    m.query_ids.push(query_id);
                }
            }
            Err(e) => {
                m.failures.push(e);
                // A call that fails fails again (a timeout, say): one is enough to know.
                break;
            }
        }
    }
    m.load = load_average().unwrap_or(0.0);
    m
}

/// The 1-minute load average.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl generate::DataSet {
    fn last_day(&self) -> NaiveDate {
        self.end - chrono::Days::new(1)
    }
}

fn target_for(template: &str, days: u32) -> Option<&'static Target> {
    TARGETS
        .iter()
        .find(|t| t.template == template && days <= t.days)
}

/// Bytes as MB or GB.
fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GB", bytes as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.1} MB", bytes as f64 / f64::from(1u32 << 20))
    }
}

fn report(
    data: &generate::DataSet,
    parts: &[(String, u64, u64)],
    measured: &[Measured],
    funnels: &[(u32, String, super::funnel::Comparison)],
) -> String {
    let mut out = format!(
        "{} events of {} users, {} .. {}; active parts: {}\n\n",
        data.events,
        data.users,
        data.first_day,
        data.last_day(),
        parts
            .iter()
            .filter(|(_, _, rows)| *rows > 0)
            .map(|(table, count, rows)| format!("{table} {count} ({rows} rows)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push_str(
        "| template | days | runs | p50 | p95 | CPU p50 | rows read | bytes read | peak memory | result rows | load | target (p95) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut missed = Vec::new();
    for m in measured {
        let median = |f: fn(&Logged) -> u64| {
            let values: Vec<f64> = m.logged.iter().map(|l| f(l) as f64).collect();
            percentile(&values, 0.5) as u64
        };
        let (p50, p95) = (percentile(&m.ms, 0.5), percentile(&m.ms, 0.95));
        let cpu: Vec<f64> = m.logged.iter().map(|l| l.cpu_ms).collect();
        let verdict = match (target_for(&m.template, m.days), m.failures.first()) {
            (_, Some(failure)) => {
                missed.push(format!(
                    "{} over {} days failed: {failure}",
                    m.template, m.days
                ));
                "failed".to_string()
            }
            (Some(t), None) if p95 <= t.ms => format!("≤ {} ms: met", t.ms),
            (Some(t), None) => {
                missed.push(format!(
                    "{} over {} days: p95 {p95:.0} ms > {} ms",
                    m.template, m.days, t.ms
                ));
                format!("≤ {} ms: **missed**", t.ms)
            }
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "| {}/v{} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {} | {} | {} | {} | {:.1} | {} |\n",
            m.template,
            m.version,
            m.days,
            m.ms.len(),
            p50,
            p95,
            percentile(&cpu, 0.5),
            median(|l| l.read_rows),
            size(median(|l| l.read_bytes)),
            size(median(|l| l.memory_bytes)),
            m.result_rows,
            m.load,
            verdict
        ));
    }
    for (days, text, comparison) in funnels {
        let (wall, cpu) = comparison.ratios();
        out.push_str(&format!(
            "\nfunnel against windowFunnel over {days} days:\n{text}"
        ));
        if wall > FUNNEL_RATIO || !comparison.agree() {
            missed.push(format!(
                "funnel over {days} days: {wall:.2}× windowFunnel's wall time (CPU {cpu:.2}×){}",
                if comparison.agree() {
                    ""
                } else {
                    ", and they disagree"
                }
            ));
        }
    }
    out.push('\n');
    if missed.is_empty() {
        out.push_str("every target met\n");
    } else {
        out.push_str("targets missed:\n");
        for line in missed {
            out.push_str(&format!("- {line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_template_has_a_call() {
        let catalog = Catalog::load(std::path::Path::new("queries"), "analytics")
            .unwrap_or_else(|e| panic!("{e:?}"));
        let range = Range {
            days: 30,
            from: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            end: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        };
        for (name, _) in catalog.names() {
            let template = catalog.get(name, None).unwrap();
            // None: a template the benchmark deliberately skips (see `call`).
            let Some(params) = call(name, &range, true, "user-0000001").unwrap() else {
                continue;
            };
            let params = params.as_object().cloned().unwrap();
            catalog
                .render(template, &params)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
