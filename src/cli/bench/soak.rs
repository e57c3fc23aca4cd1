//! `chgate bench soak`: sustained ingestion, template and BI queries, and hostile bodies against a
//! running gateway for minutes, sampling its resident memory against the ceiling its settings
//! allow ([`crate::config::Settings::memory_ceiling`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What to run and against what.
#[derive(Debug, Clone)]
pub struct SoakBench {
    pub url: String,
    pub bi_url: String,
    /// A key of the `ingest` role.
    pub ingest_key: String,
    /// A key that may run every template and use the BI endpoint (`admin`).
    pub query_key: String,
    pub secs: u64,
    pub events_per_sec: u64,
    pub query_concurrency: usize,
    /// Hostile requests started per second.
    pub hostile_per_sec: f64,
    pub gateway_pid: Option<u32>,
    /// The resident memory the gateway's settings allow, MiB.
    pub ceiling_mib: f64,
    /// The gateway's largest accepted body.
    pub max_body_bytes: usize,
}

/// Answers by kind of traffic and HTTP status (0: no answer).
type Tally = BTreeMap<(&'static str, u16), u64>;

/// What a soak run saw.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub secs: f64,
    pub rss_start_mib: Option<f64>,
    pub rss_peak_mib: Option<f64>,
    pub rss_end_mib: Option<f64>,
    pub ceiling_mib: f64,
    pub answers: Tally,
}

impl SoakReport {
    /// Answers with a 5xx other than the gateway's declared back-pressure (503).
    pub fn server_errors(&self) -> u64 {
        self.answers
            .iter()
            .filter(|((_, status), _)| *status >= 500 && *status != 503)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn render(&self) -> String {
        let mib = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.0} MiB"));
        let mut out = format!(
            "soak: {:.0} s; gateway resident memory: start {}, peak {}, 15 s after the load {}; ceiling of its settings {:.0} MiB\n",
            self.secs,
            mib(self.rss_start_mib),
            mib(self.rss_peak_mib),
            mib(self.rss_end_mib),
            self.ceiling_mib
        );
        for ((kind, status), n) in &self.answers {
            out.push_str(&format!("  {kind:<12} HTTP {status}: {n}\n"));
        }
        out.push_str(&format!(
            "  5xx other than back-pressure (503): {}\n",
            self.server_errors()
        ));
        out
    }
}

fn count(tally: &Mutex<Tally>, kind: &'static str, status: u16) {
    let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    *tally.entry((kind, status)).or_default() += 1;
}

async fn send(request: reqwest::RequestBuilder) -> u16 {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            // Read the whole answer: a client that reads is part of the load.
            let _ = response.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// Hostile bodies: a gzip bomb, a body past the limit, deep nesting, a truncated array, bytes.
fn hostile_bodies(max_body_bytes: usize) -> Vec<(&'static str, Bytes, bool)> {
    use std::io::Write as _;
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b' '; 64 * 1024 * 1024];
    let _ = bomb.write_all(&zeros);
    let bomb = bomb.finish().unwrap_or_default();
    let events = crate::cli::seed::batches(1, 100, 7)
        .into_iter()
        .next()
        .unwrap_or_default();
    let event = serde_json::Value::Array(events).to_string();
    let mut full = String::with_capacity(max_body_bytes);
    full.push('[');
    while full.len() + event.len() < max_body_bytes.saturating_sub(2) {
        if full.len() > 1 {
            full.push(',');
        }
        full.push_str(&event[1..event.len() - 1]);
    }
    full.push(']');
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let random: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    vec![
        ("gzip bomb", Bytes::from(bomb), true),
        ("max body", Bytes::from(full), false),
        (
            "past limit",
            Bytes::from(vec![b'['; max_body_bytes + 1]),
            false,
        ),
        ("deep", Bytes::from(deep), false),
        (
            "truncated",
            Bytes::from(event[..event.len() / 2].to_string()),
            false,
        ),
        ("random", Bytes::from(random), false),
    ]
}

/// Runs the soak.
pub async fn soak(bench: &SoakBench) -> anyhow::Result<SoakReport> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()?;
    let tally = Arc::new(Mutex::new(Tally::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new(None::<f64>));
    let rss_start_mib = bench.gateway_pid.and_then(super::rss_mib);
    let sampler = bench.gateway_pid.map(|pid| {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(now) = super::rss_mib(pid) {
                    let mut peak = peak.lock().unwrap_or_else(|p| p.into_inner());
                    *peak = Some(peak.map_or(now, |p: f64| p.max(now)));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let mut tasks = Vec::new();
    // Ingestion at a fixed rate, 100 events a request.
    {
        let bodies = Arc::new(super::event_bodies(200, 100));
        let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
        let endpoint = format!("{}/v1/events", bench.url.trim_end_matches('/'));
        let key = bench.ingest_key.clone();
        let per_sec = (bench.events_per_sec as f64 / 100.0).max(1.0);
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0usize;
            let mut sent = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                let request = client
                    .post(&endpoint)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(bodies[i % bodies.len()].clone());
                let tally = tally.clone();
                sent.push(tokio::spawn(async move {
                    count(&tally, "ingest", send(request).await)
                }));
                i += 1;
                sent.retain(|t| !t.is_finished());
            }
            for task in sent {
                let _ = task.await;
            }
        }));
    }
    // Template calls (JSON results, some large) and BI queries.
    let templates = [
        "/v1/queries/dau?from=today-30d&to=today",
        "/v1/queries/event_trends?events=page_view,add_to_cart,purchase,game_start&from=today-7d&to=now",
        "/v1/queries/top_items?event=game_view&from=today-30d&to=now&limit=1000",
        "/v1/queries/active_users?from=today-30d&to=today",
        "/v1/queries/new_users?from=today-30d&to=today",
        "/v1/queries/revenue?from=today-30d&to=today",
    ];
    for worker in 0..bench.query_concurrency.max(1) {
        let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
        let (url, bi_url, key) = (
            bench.url.trim_end_matches('/').to_string(),
            bench.bi_url.trim_end_matches('/').to_string(),
            bench.query_key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let (kind, request) = if i % 8 == 7 {
                    // A large result, streamed through: the gateway must not hold it.
                    (
                        "bi large",
                        client
                            .post(format!("{bi_url}/"))
                            .basic_auth("soak", Some(&key))
                            .body("SELECT number, toString(number) AS s FROM numbers(3000000) FORMAT JSONEachRow"),
                    )
                } else if i % 4 == 3 {
                    (
                        "bi",
                        client
                            .post(format!("{bi_url}/"))
                            .basic_auth("soak", Some(&key))
                            .body("SELECT event, count() AS n, uniq(actor_id) AS users FROM events WHERE timestamp > now() - INTERVAL 1 DAY GROUP BY event FORMAT JSON"),
                    )
                } else {
                    (
                        "template",
                        client
                            .get(format!("{url}{}", templates[i % templates.len()]))
                            .bearer_auth(&key)
                            .header("cache-control", "no-cache"),
                    )
                };
                count(&tally, kind, send(request).await);
                i += 1;
            }
        }));
    }
    // Hostile bodies, several at once.
    {
        let bodies = Arc::new(hostile_bodies(bench.max_body_bytes));
        let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
        let endpoint = format!("{}/v1/events", bench.url.trim_end_matches('/'));
        let key = bench.ingest_key.clone();
        let per_sec = bench.hostile_per_sec.max(0.1);
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
            let mut i = 0usize;
            let mut sent = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                let (kind, body, gzip) = &bodies[i % bodies.len()];
                let kind = *kind;
                let mut request = client
                    .post(&endpoint)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.clone());
                if *gzip {
                    request = request.header("content-encoding", "gzip");
                }
                let tally = tally.clone();
                sent.push(tokio::spawn(async move {
                    count(&tally, kind, send(request).await)
                }));
                i += 1;
                sent.retain(|t| !t.is_finished());
            }
            for task in sent {
                let _ = task.await;
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(bench.secs)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let answers = tally.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let rss_peak_mib = *peak.lock().unwrap_or_else(|p| p.into_inner());
    Ok(SoakReport {
        secs,
        rss_start_mib,
        rss_peak_mib,
        rss_end_mib: bench.gateway_pid.and_then(super::rss_mib),
        ceiling_mib: bench.ceiling_mib,
        answers,
    })
}
