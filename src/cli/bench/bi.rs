//! `chgate bench bi`: one large result streamed through the BI endpoint and straight from
//! ClickHouse, with the gateway's resident memory sampled meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::rss_mib;

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
