//! The `chgate bench` subcommands: their arguments, and each run with its report.

use std::io::Write as _;

use clap::Subcommand;

use crate::cli::write_out;
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Realistic event batches against POST /v1/events, then the same events inserted directly
    /// into ClickHouse as JSONEachRow, in the same run.
    Ingest {
        /// Base URL of the gateway.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An API key with the ingest role.
        #[arg(long, env = "CHGATE_BENCH_KEY")]
        key: String,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Requests of the throughput phase.
        #[arg(long, default_value_t = 5000)]
        batches: usize,
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        /// Events per second of the fixed-rate latency phase; 0 skips it.
        #[arg(long, default_value_t = 20000)]
        rate: usize,
        #[arg(long, default_value_t = 10)]
        rate_secs: u64,
        /// The gateway's process on this machine: its CPU time per 100k events is reported.
        #[arg(long)]
        gateway_pid: Option<u32>,
        /// ClickHouse's process on this machine: its CPU time per 100k events is reported.
        #[arg(long)]
        clickhouse_pid: Option<u32>,
    },
    /// A large Native result streamed through the BI endpoint and directly from ClickHouse, with
    /// the gateway's memory sampled while it streams.
    Bi {
        /// Base URL of the BI endpoint.
        #[arg(long, default_value = "http://127.0.0.1:8124")]
        url: String,
        /// A key whose role may use the BI endpoint.
        #[arg(long, env = "CHGATE_BENCH_KEY")]
        key: String,
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The gateway's pid, to sample its resident memory (same machine).
        #[arg(long)]
        gateway_pid: Option<u32>,
    },
    /// Sustained ingestion, template and BI queries and hostile bodies for minutes, with the
    /// gateway's resident memory sampled against the ceiling of its settings; exits 1 when the
    /// peak passes the ceiling or an answer is a 5xx other than back-pressure.
    Soak {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value = "http://127.0.0.1:8124")]
        bi_url: String,
        /// A key of the ingest role.
        #[arg(long, env = "CHGATE_BENCH_INGEST_KEY")]
        ingest_key: String,
        /// A key that may run every template and use the BI endpoint (admin).
        #[arg(long, env = "CHGATE_BENCH_KEY")]
        key: String,
        #[arg(long, default_value_t = 300)]
        secs: u64,
        #[arg(long, default_value_t = 20_000)]
        events_per_sec: u64,
        #[arg(long, default_value_t = 4)]
        query_concurrency: usize,
        #[arg(long, default_value_t = 2.0)]
        hostile_per_sec: f64,
        /// The gateway's pid, to sample its resident memory (same machine).
        #[arg(long)]
        gateway_pid: Option<u32>,
    },
    /// The gateway's own CPU work on realistic event batches (parse, validate, enrich, encode for
    /// the write-ahead log), in this process on one thread, without network or servers.
    Pipeline {
        /// Distinct batches, each sent `rounds` times.
        #[arg(long, default_value_t = 500)]
        batches: usize,
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// The funnel template (attempt=best, no breakdown) and a bare windowFunnel query over the
    /// same rows and steps, alternating, directly on ClickHouse (the configured database).
    Funnel {
        #[arg(long, default_value_t = 10)]
        iterations: usize,
        /// The range: the last N days, up to now.
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long, default_value_t = 86400)]
        window_seconds: u32,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "game_view,add_to_cart,checkout_started,purchase"
        )]
        steps: Vec<String>,
        /// Also time funnel v1 (first attempts).
        #[arg(long)]
        v1: bool,
    },
    /// Every template's first example through the gateway and directly on ClickHouse.
    Queries {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A key whose role may run every template (admin).
        #[arg(long, env = "CHGATE_BENCH_KEY")]
        key: String,
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// Instead: many concurrent clients on one cached call.
        #[arg(long)]
        cached: bool,
        /// The cached call (with --cached).
        #[arg(long, default_value = "/v1/queries/dau?from=today-30d&to=today")]
        path: String,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 100_000)]
        requests: usize,
    },
    /// Every shipped template over the last 7, 30 and 90 days of a generated data set of about
    /// --events events (inserted inside ClickHouse into the configured database, once; a later
    /// run goes on where one stopped), through the gateway at --url; and the funnel template
    /// against a bare windowFunnel over the same rows. Checks each template's latency target.
    Scale {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A key whose role may run every template (admin).
        #[arg(long, env = "CHGATE_BENCH_KEY")]
        key: String,
        #[arg(long, default_value_t = 100_000_000)]
        events: u64,
        /// Distinct users (default: one per 200 events).
        #[arg(long)]
        users: Option<u64>,
        #[arg(long, default_value_t = 90)]
        days: u32,
        #[arg(long, default_value_t = 21)]
        seed: u64,
        /// Range lengths in days, each ending with the data set's last day.
        #[arg(long, value_delimiter = ',', default_value = "7,30,90")]
        ranges: Vec<u32>,
        /// Timed calls of each template and range, after one untimed call.
        #[arg(long, default_value_t = 10)]
        iterations: usize,
        /// Fewer timed calls (at least three) once a template and range took this long.
        #[arg(long, default_value_t = 60)]
        budget_secs: u64,
        /// Timed runs each of the funnel template and windowFunnel.
        #[arg(long, default_value_t = 10)]
        funnel_iterations: usize,
        /// Only these templates.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Generate the data set and stop.
        #[arg(long)]
        generate_only: bool,
    },
    /// `GET /v1/experiments/{id}/results` of every stored experiment (or the named ones), computed
    /// again on each call unless --cached: p50 and p95 per experiment.
    Experiments {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A key that sees the experiments (admin sees every one).
        #[arg(long, env = "CHGATE_BENCH_KEY")]
        key: String,
        /// Timed calls per experiment, after one untimed call.
        #[arg(long, default_value_t = 10)]
        iterations: usize,
        /// Only this experiment (repeatable).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Let the result cache answer (the template's cache_ttl_secs) instead of computing again.
        #[arg(long)]
        cached: bool,
    },
    /// A dashboard of eight template panels over current and past ranges, opened by a few viewers
    /// while events keep arriving: the result cache's hit rate and the calls' latency.
    Dashboard {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A key whose role may run the panels' templates (admin).
        #[arg(long, env = "CHGATE_BENCH_KEY")]
        key: String,
        /// A key with the ingest role.
        #[arg(long, env = "CHGATE_BENCH_INGEST_KEY")]
        ingest_key: String,
        #[arg(long, default_value_t = 4)]
        viewers: usize,
        /// Seconds a viewer waits between two views.
        #[arg(long, default_value_t = 2.0)]
        think_secs: f64,
        #[arg(long, default_value_t = 300)]
        duration_secs: u64,
        /// Events per second ingested meanwhile.
        #[arg(long, default_value_t = 200)]
        rate: usize,
        /// Share of the events with a timestamp up to 72 hours old.
        #[arg(long, default_value_t = 0.01)]
        late_fraction: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Runs a `chgate bench` command.
pub async fn run(settings: Settings, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest {
            url,
            key,
            concurrency,
            batches,
            batch_size,
            rate,
            rate_secs,
            gateway_pid,
            clickhouse_pid,
        } => {
            let bench = super::IngestBench {
                url,
                key,
                concurrency,
                batches,
                batch_size,
                rate,
                rate_secs,
                gateway_pid,
                clickhouse_pid,
                clickhouse_url: settings.clickhouse.url.clone(),
                clickhouse_database: settings.clickhouse.database.clone(),
                clickhouse_user: settings.clickhouse.user.clone(),
                clickhouse_password: settings.clickhouse.password.expose().to_string(),
            };
            let report = super::ingest(&bench).await?;
            write_out(report.render(&bench).trim_end())
        }
        BenchCommand::Pipeline {
            batches,
            batch_size,
            rounds,
        } => {
            let report = super::pipeline(&settings, batches, batch_size, rounds)?;
            write_out(report.render().trim_end())
        }
        BenchCommand::Scale {
            url,
            key,
            events,
            users,
            days,
            seed,
            ranges,
            iterations,
            budget_secs,
            funnel_iterations,
            only,
            generate_only,
        } => {
            let bench = super::scale::ScaleBench {
                url,
                key,
                plan: super::scale::generate::Plan {
                    events,
                    users: users.unwrap_or(events / 200).max(1),
                    days,
                    seed,
                },
                ranges,
                iterations,
                budget: std::time::Duration::from_secs(budget_secs),
                funnel_iterations,
                only,
                generate_only,
            };
            let catalog = crate::catalog::Catalog::load_or_explain(
                &settings.catalog.dir,
                &settings.clickhouse.database,
            )?;
            let progress = |line: &str| {
                let _ = writeln!(std::io::stderr(), "bench scale: {}", line.trim_end());
            };
            let report = super::scale::run(&settings, &catalog, &bench, progress).await?;
            write_out(report.trim_end())
        }
        BenchCommand::Experiments {
            url,
            key,
            iterations,
            names,
            cached,
        } => {
            let bench = super::experiments::ExperimentsBench {
                url,
                key,
                iterations,
                names,
                cached,
            };
            let timings = super::experiments::run(&bench).await?;
            write_out(super::experiments::render(&timings, cached).trim_end())
        }
        BenchCommand::Dashboard {
            url,
            key,
            ingest_key,
            viewers,
            think_secs,
            duration_secs,
            rate,
            late_fraction,
            seed,
        } => {
            let bench = super::dashboard::DashboardBench {
                url,
                key,
                ingest_key,
                viewers,
                think: std::time::Duration::from_secs_f64(think_secs.max(0.0)),
                duration: std::time::Duration::from_secs(duration_secs),
                rate,
                late_fraction,
                seed,
            };
            let report = super::dashboard::run(&bench).await?;
            write_out(report.render(&bench).trim_end())
        }
        BenchCommand::Soak {
            url,
            bi_url,
            ingest_key,
            key,
            secs,
            events_per_sec,
            query_concurrency,
            hostile_per_sec,
            gateway_pid,
        } => {
            let ceiling = settings.memory_ceiling();
            let bench = super::soak::SoakBench {
                url,
                bi_url,
                ingest_key,
                query_key: key,
                secs,
                events_per_sec,
                query_concurrency,
                hostile_per_sec,
                gateway_pid,
                ceiling_mib: ceiling.total as f64 / (1024.0 * 1024.0),
                max_body_bytes: settings.ingest.max_body_bytes,
            };
            let report = super::soak::soak(&bench).await?;
            write_out(&report.render())?;
            if report
                .rss_peak_mib
                .is_some_and(|peak| peak > report.ceiling_mib)
            {
                anyhow::bail!("the gateway's resident memory passed the ceiling of its settings");
            }
            if report.server_errors() > 0 {
                anyhow::bail!("answers with a 5xx other than back-pressure");
            }
            Ok(())
        }
        BenchCommand::Queries {
            url,
            key,
            cached: true,
            path,
            concurrency,
            requests,
            ..
        } => {
            let phase = super::cached(&url, &key, &path, concurrency, requests).await?;
            write_out(&format!(
                "{concurrency} clients, {} requests ({} failed) on {path}: {:.0} requests/s, latency p50 {:.2} ms, p99 {:.2} ms",
                phase.requests,
                phase.failed,
                phase.requests as f64 / phase.elapsed.as_secs_f64().max(1e-9),
                phase.p50_ms,
                phase.p99_ms
            ))
        }
        BenchCommand::Funnel {
            iterations,
            days,
            window_seconds,
            steps,
            v1,
        } => {
            let catalog = crate::catalog::Catalog::load_or_explain(
                &settings.catalog.dir,
                &settings.clickhouse.database,
            )?;
            let bench = super::funnel::FunnelBench {
                iterations,
                from: format!("today-{days}d"),
                to: "now".to_string(),
                window_seconds,
                steps,
                with_v1: v1,
            };
            let report = super::funnel::run(&settings, &catalog, &bench).await?;
            write_out(report.trim_end())
        }
        BenchCommand::Queries {
            url,
            key,
            iterations,
            ..
        } => {
            let catalog = crate::catalog::Catalog::load_or_explain(
                &settings.catalog.dir,
                &settings.clickhouse.database,
            )?;
            let bench = super::QueryBench {
                url,
                key,
                iterations,
                clickhouse_url: settings.clickhouse.url.clone(),
                clickhouse_database: settings.clickhouse.database.clone(),
                clickhouse_user: settings.clickhouse.user.clone(),
                clickhouse_password: settings.clickhouse.password.expose().to_string(),
            };
            let timings = super::queries(&bench, &catalog).await?;
            write_out(super::render_queries(&timings, iterations).trim_end())
        }
        BenchCommand::Bi {
            url,
            key,
            rows,
            rounds,
            gateway_pid,
        } => {
            let bench = super::BiBench {
                url,
                key,
                clickhouse_url: settings.clickhouse.url.clone(),
                clickhouse_user: settings.clickhouse.user.clone(),
                clickhouse_password: settings.clickhouse.password.expose().to_string(),
                rows,
                rounds,
                gateway_pid,
            };
            let report = super::bi(&bench).await?;
            write_out(report.render(rows).trim_end())
        }
    }
}
