//! `chgate bench dashboard`: a dashboard of eight template panels, each over a range that ends
//! today or one entirely in the past, opened again and again by a few viewers while events keep
//! arriving (some of them late); reports the result cache's hit rate and the calls' latency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::percentile;

/// Settings of `chgate bench dashboard`.
#[derive(Debug, Clone)]
pub struct DashboardBench {
    pub url: String,
    /// A key whose role may run the panels' templates.
    pub key: String,
    /// A key with the ingest role, for the steady ingestion.
    pub ingest_key: String,
    /// Viewers opening the dashboard at once, each again after `think`.
    pub viewers: usize,
    pub think: Duration,
    pub duration: Duration,
    /// Events per second ingested meanwhile.
    pub rate: usize,
    /// Share of them with a timestamp up to 72 hours old (the rest: the last minute).
    pub late_fraction: f64,
    pub seed: u64,
}

/// The panels: a template and the ranges a viewer may pick for it (query strings).
const PANELS: &[(&str, &[&str])] = &[
    (
        "dau",
        &[
            "from=today-30d&to=today",
            "from=today-60d&to=today-31d",
            "from=today-14d&to=today-8d",
        ],
    ),
    (
        "revenue",
        &["from=today-30d&to=today", "from=today-60d&to=today-31d"],
    ),
    (
        "active_users",
        &[
            "from=today-30d&to=today&granularity=week",
            "from=today-60d&to=today-31d&granularity=week",
        ],
    ),
    (
        "new_users",
        &[
            "from=today-28d&to=today&granularity=week",
            "from=today-56d&to=today-29d&granularity=week",
        ],
    ),
    (
        "event_trends",
        &[
            "events=game_view&events=purchase&from=today-7d&to=today",
            "events=game_view&events=purchase&from=today-21d&to=today-14d",
        ],
    ),
    (
        "geo",
        &["from=today-30d&to=today", "from=today-60d&to=today-30d"],
    ),
    (
        "top_items",
        &[
            "event=game_view&from=today-7d&to=today",
            "event=game_view&from=today-30d&to=today-7d",
        ],
    ),
    (
        "funnel",
        &[
            "steps=game_view&steps=add_to_cart&steps=purchase&from=today-7d&to=today",
            "steps=game_view&steps=add_to_cart&steps=purchase&from=today-14d&to=today-7d",
        ],
    ),
];

/// One panel's calls.
#[derive(Debug, Default, Clone)]
pub struct PanelStats {
    pub latencies_ms: Vec<f64>,
    pub hits: usize,
    pub failed: usize,
}

/// What a run measured.
#[derive(Debug)]
pub struct DashboardReport {
    pub panels: BTreeMap<&'static str, PanelStats>,
    pub views: usize,
    pub ingested: usize,
    pub ingest_failures: usize,
}

impl DashboardReport {
    pub fn render(&self, bench: &DashboardBench) -> String {
        let mut out = format!(
            "{} viewers for {} s ({} dashboard views, {} s between views), {} panels; ingestion {} events/s ({:.1} % up to 72 h late): {} events stored, {} failed requests\n{:<14} {:>7} {:>7} {:>9} {:>9} {:>7}\n",
            bench.viewers,
            bench.duration.as_secs(),
            self.views,
            bench.think.as_secs_f64(),
            PANELS.len(),
            bench.rate,
            bench.late_fraction * 100.0,
            self.ingested,
            self.ingest_failures,
            "panel",
            "calls",
            "hit %",
            "p50 ms",
            "p95 ms",
            "failed"
        );
        let mut all = PanelStats::default();
        let line = |name: &str, stats: &PanelStats| {
            let mut sorted = stats.latencies_ms.clone();
            sorted.sort_by(f64::total_cmp);
            let calls = sorted.len();
            format!(
                "{name:<14} {calls:>7} {:>7.1} {:>9.1} {:>9.1} {:>7}\n",
                100.0 * stats.hits as f64 / calls.max(1) as f64,
                percentile(&sorted, 0.5),
                percentile(&sorted, 0.95),
                stats.failed
            )
        };
        for (name, stats) in &self.panels {
            out.push_str(&line(name, stats));
            all.latencies_ms.extend(&stats.latencies_ms);
            all.hits += stats.hits;
            all.failed += stats.failed;
        }
        out.push_str(&line("all", &all));
        out
    }
}

/// Runs the viewers and the ingestion for `bench.duration`.
pub async fn run(bench: &DashboardBench) -> anyhow::Result<DashboardReport> {
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let ingested = Arc::new(AtomicUsize::new(0));
    let ingest_failures = Arc::new(AtomicUsize::new(0));
    let ingestion = tokio::spawn(ingest(
        client.clone(),
        bench.clone(),
        stop.clone(),
        ingested.clone(),
        ingest_failures.clone(),
    ));
    let started = Instant::now();
    let mut viewers = Vec::new();
    for viewer in 0..bench.viewers {
        let (client, bench) = (client.clone(), bench.clone());
        viewers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(bench.seed.wrapping_add(viewer as u64 + 1));
            let mut panels: BTreeMap<&'static str, PanelStats> = BTreeMap::new();
            let mut views = 0;
            while started.elapsed() < bench.duration {
                for (template, ranges) in PANELS {
                    let range = ranges[rng.random_range(0..ranges.len())];
                    let url = format!(
                        "{}/v1/queries/{template}?{range}",
                        bench.url.trim_end_matches('/')
                    );
                    let sent = Instant::now();
                    let answer = client.get(&url).bearer_auth(&bench.key).send().await;
                    let stats = panels.entry(template).or_default();
                    match answer {
                        Ok(response) if response.status().is_success() => {
                            let hit = response
                                .headers()
                                .get("x-cache")
                                .is_some_and(|v| v == "HIT");
                            if response.bytes().await.is_ok() {
                                stats
                                    .latencies_ms
                                    .push(sent.elapsed().as_secs_f64() * 1000.0);
                                stats.hits += usize::from(hit);
                            } else {
                                stats.failed += 1;
                            }
                        }
                        _ => stats.failed += 1,
                    }
                }
                views += 1;
                tokio::time::sleep(bench.think).await;
            }
            (panels, views)
        }));
    }
    let mut report = DashboardReport {
        panels: BTreeMap::new(),
        views: 0,
        ingested: 0,
        ingest_failures: 0,
    };
    for viewer in viewers {
        let (panels, views) = viewer.await?;
        report.views += views;
        for (name, stats) in panels {
            let total = report.panels.entry(name).or_default();
            total.latencies_ms.extend(stats.latencies_ms);
            total.hits += stats.hits;
            total.failed += stats.failed;
        }
    }
    stop.store(true, Ordering::Relaxed);
    ingestion.await?;
    report.ingested = ingested.load(Ordering::Relaxed);
    report.ingest_failures = ingest_failures.load(Ordering::Relaxed);
    Ok(report)
}

/// Posts a batch every 500 ms until `stop`: game views, carts and purchases of 5,000 users.
async fn ingest(
    client: reqwest::Client,
    bench: DashboardBench,
    stop: Arc<AtomicBool>,
    stored: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
) {
    let mut rng = StdRng::seed_from_u64(bench.seed);
    let per_batch = (bench.rate / 2).max(1);
    let url = format!("{}/v1/events", bench.url.trim_end_matches('/'));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = chrono::Utc::now();
        let batch: Vec<Value> = (0..per_batch)
            .map(|_| {
                let late_ms = if rng.random_bool(bench.late_fraction.clamp(0.0, 1.0)) {
                    rng.random_range(0..72 * 3600 * 1000)
                } else {
                    rng.random_range(0..60_000)
                };
                let timestamp = now - chrono::Duration::milliseconds(late_ms);
                let roll: f64 = rng.random();
                let item = format!("game-{}", rng.random_range(0..50));
                let (event, properties) = if roll < 0.7 {
                    ("game_view", json!({ "item_id": item }))
                } else if roll < 0.9 {
                    ("add_to_cart", json!({ "item_id": item }))
                } else {
                    (
                        "purchase",
                        json!({ "item_id": item, "amount": rng.random_range(1..60), "currency": "USD" }),
                    )
                };
                json!({
                    "event": event,
                    "user_id": format!("bench-{}", rng.random_range(0..5000)),
                    "platform": if rng.random_bool(0.5) { "web" } else { "ios" },
                    "timestamp": timestamp.to_rfc3339(),
                    "properties": properties,
                })
            })
            .collect();
        let sent = client
            .post(&url)
            .bearer_auth(&bench.ingest_key)
            .json(&batch)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                stored.fetch_add(batch.len(), Ordering::Relaxed);
            }
            _ => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
