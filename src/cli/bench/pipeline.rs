//! `chgate bench pipeline`: the gateway's own CPU work on event batches, in one process.

use std::time::{Duration, Instant};

use super::event_bodies;

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
