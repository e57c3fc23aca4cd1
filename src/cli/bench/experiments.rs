//! `chgate bench experiments`: the time of `GET /v1/experiments/{id}/results` through the gateway,
//! for every stored experiment (or the named ones), computed again on each call
//! (`Cache-Control: no-cache`) unless cached results are what is measured.

use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::Value;

use super::percentile;

/// What to time.
pub struct ExperimentsBench {
    /// Base URL of the gateway.
    pub url: String,
    /// A key that sees the experiments (admin sees every one).
    pub key: String,
    /// Timed calls per experiment, after one untimed call.
    pub iterations: usize,
    /// Only the experiments of these names; every visible one when empty.
    pub names: Vec<String>,
    /// Let the result cache answer instead of computing each call again.
    pub cached: bool,
}

/// The calls of one experiment.
#[derive(Debug, Clone)]
pub struct Timing {
    pub name: String,
    /// Exposed users counted in the results (all variants).
    pub users: u64,
    pub metrics: usize,
    pub calls: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

/// Times the results of each experiment.
pub async fn run(bench: &ExperimentsBench) -> anyhow::Result<Vec<Timing>> {
    let client = reqwest::Client::new();
    let base = bench.url.trim_end_matches('/');
    let get = |path: String| {
        let request = client.get(format!("{base}{path}")).bearer_auth(&bench.key);
        async move {
            let request = if bench.cached {
                request
            } else {
                request.header(reqwest::header::CACHE_CONTROL, "no-cache")
            };
            let response = request
                .send()
                .await
                .with_context(|| format!("GET {path}"))?;
            let status = response.status();
            let body: Value = response
                .json()
                .await
                .with_context(|| format!("GET {path}"))?;
            if !status.is_success() {
                bail!("GET {path}: HTTP {status}: {body}");
            }
            Ok(body)
        }
    };
    let listed = get("/v1/experiments".into()).await?;
    let experiments: Vec<(String, String)> = listed["experiments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["id"].as_str()?.to_string(),
                e["name"].as_str()?.to_string(),
            ))
        })
        .filter(|(_, name)| bench.names.is_empty() || bench.names.contains(name))
        .collect();
    if experiments.is_empty() {
        bail!("no experiment to time: store some first (`chgate seed` stores checkout_redesign and button_color_aa)");
    }
    let mut timings = Vec::with_capacity(experiments.len());
    for (id, name) in experiments {
        let path = format!("/v1/experiments/{id}/results");
        let first = get(path.clone()).await?;
        let mut latencies = Vec::with_capacity(bench.iterations);
        for _ in 0..bench.iterations.max(1) {
            let started = Instant::now();
            get(path.clone()).await?;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let users = first["variants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["users"].as_u64())
            .sum();
        timings.push(Timing {
            name,
            users,
            metrics: first["metrics"].as_array().map_or(0, Vec::len),
            calls: latencies.len(),
            p50_ms: percentile(&latencies, 0.5),
            p95_ms: percentile(&latencies, 0.95),
            max_ms: latencies.iter().copied().fold(0.0, f64::max),
        });
    }
    Ok(timings)
}

/// A table of the timings.
pub fn render(timings: &[Timing], cached: bool) -> String {
    let mut out = format!(
        "GET /v1/experiments/{{id}}/results ({})\n{:<24} {:>10} {:>8} {:>6} {:>10} {:>10} {:>10}\n",
        if cached {
            "result cache allowed"
        } else {
            "Cache-Control: no-cache, computed on each call"
        },
        "experiment",
        "users",
        "metrics",
        "calls",
        "p50 ms",
        "p95 ms",
        "max ms"
    );
    for t in timings {
        out.push_str(&format!(
            "{:<24} {:>10} {:>8} {:>6} {:>10.1} {:>10.1} {:>10.1}\n",
            t.name, t.users, t.metrics, t.calls, t.p50_ms, t.p95_ms, t.max_ms
        ));
    }
    out
}
