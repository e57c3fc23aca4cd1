//! Prometheus metrics: one recorder per process, rendered at `GET /metrics` together with process
//! metrics (CPU, memory, open files) sampled at scrape time.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) for request and query histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Handle to the process-wide Prometheus recorder, installing it on first use.
/// `None` only if another recorder was installed by someone else.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            metrics_process::Collector::default().describe();
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    // Error counters exist from the start, so rate() and increase() see their first increment.
    for name in [
        "chgate_ingest_clickhouse_errors_total",
        "chgate_ingest_postgres_errors_total",
        "chgate_ingest_postgres_dropped_total",
        "chgate_ingest_rows_repaired_total",
        "chgate_ingest_duplicate_rows_total",
        "chgate_cache_redis_errors_total",
        "chgate_bi_unparseable_total",
        "chgate_bi_settings_dropped_total",
        "chgate_bi_response_bytes_total",
        "chgate_scheduler_errors_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    metrics::describe_counter!(
        "chgate_http_requests_total",
        "HTTP requests served, by route, method and status"
    );
    metrics::describe_histogram!(
        "chgate_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency, by route, method and status"
    );
}

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    let Some(handle) = handle() else {
        return String::new();
    };
    metrics_process::Collector::default().collect();
    handle.run_upkeep();
    handle.render()
}
