//! `chgate bench queries`: every template's first example through the gateway and directly on
//! ClickHouse; with `--cached`, many concurrent clients on one cached call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;

use super::Phase;

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
