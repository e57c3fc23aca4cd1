//! The `chgate` command line.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use clap::{Parser, Subcommand};

use crate::access::keys::KeyRecord;
use crate::access::keys::KeyStore;
use crate::app::{cancel_on_signal, Application};
use crate::config::Settings;
use crate::ingest::enrich::net::Networks;
use crate::storage::clickhouse::ClickHouse;
use crate::storage::postgres::Postgres;

#[derive(Debug, Parser)]
#[command(
    name = "chgate",
    version,
    about = "SQL-first analytics gateway over ClickHouse"
)]
pub struct Cli {
    /// TOML settings file (default: ./chgate.toml when present).
    #[arg(long, global = true, env = "CHGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Apply pending migrations first instead of refusing to start.
        #[arg(long)]
        migrate: bool,
    },
    /// Apply pending ClickHouse and Postgres migrations.
    Migrate {
        /// Only list pending migrations; exit 1 if there are any.
        #[arg(long)]
        status: bool,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Load NDJSON events (optionally gzipped; `-` for stdin) through validation and enrichment.
    /// Historic timestamps are accepted.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where the first rejected events are written, with the reason.
        #[arg(long, default_value = "import-rejects.ndjson")]
        rejects: PathBuf,
        #[arg(long, default_value_t = 1000)]
        max_rejects: usize,
    },
    /// Generate realistic game-store traffic and send it through the ingestion pipeline.
    Seed {
        #[arg(long, default_value_t = 2000)]
        users: usize,
        #[arg(long, default_value_t = 60)]
        days: u32,
        /// Random seed; the same seed generates the same events.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Count server-side events that gateways before the server-side user-agent rule stored as
    /// bots: rows whose user agent is an HTTP library (Go-http-client, okhttp, python-requests,
    /// axios, curl, …) stop being bots, and the rollups of their days are rebuilt
    /// (docs/ingestion.md).
    ReclassifyBots {
        /// Start (UTC), inclusive: a day (2025-01-31) or an RFC 3339 time.
        #[arg(long, value_parser = parse_instant)]
        since: DateTime<Utc>,
        /// End (UTC), exclusive: a day or an RFC 3339 time (default: now).
        #[arg(long, value_parser = parse_instant)]
        until: Option<DateTime<Utc>>,
        /// Only events of this name (repeatable; default: every event).
        #[arg(long = "event", value_name = "EVENT")]
        events: Vec<String>,
        /// Print what would change, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the query templates (the gate for pull requests): metadata, rendering of every
    /// example, the SQL guard, parameter types; with --live also EXPLAIN and fixture tests.
    Check {
        /// Template directory (default: catalog.dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also run against ClickHouse: EXPLAIN every example and run the fixture tests.
        #[arg(long)]
        live: bool,
    },
    /// Access control.
    Access {
        #[command(subcommand)]
        command: AccessCommand,
    },
    /// Print the OpenAPI document of the template endpoints.
    Openapi {
        /// Template directory (default: catalog.dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Benchmarks against a running gateway.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Validate the policy file: syntax, roles, row filter expressions, template patterns that
    /// match no template, tables that do not exist.
    Check,
}

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

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; the secret is printed once, alone on the last line of stdout.
    Create {
        #[arg(long)]
        name: String,
        /// One of admin, analyst, marketer, developer, support, service, ingest.
        #[arg(long)]
        role: String,
        /// Attribute (claim) for row filters, as key=value; repeatable.
        #[arg(long = "attr", value_parser = parse_attr)]
        attrs: Vec<(String, String)>,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List keys (active only unless --all).
    List {
        #[arg(long)]
        all: bool,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id or name.
    Revoke {
        key: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// A day (midnight UTC) or an RFC 3339 time.
fn parse_instant(raw: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(day) = raw.parse::<NaiveDate>() {
        return Ok(day.and_time(NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!("expected a day (2025-01-31) or an RFC 3339 time (2025-01-31T12:00:00Z), got {raw:?}")
        })
}

fn parse_attr(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {raw:?}")),
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Version = cli.command {
        return write_out(&format!("chgate {}", env!("CARGO_PKG_VERSION")));
    }
    let settings = Settings::load(cli.config.as_deref())?;
    crate::telemetry::init(&settings.telemetry);
    match cli.command {
        Command::Version => Ok(()),
        Command::Serve { migrate } => serve(settings, migrate).await,
        Command::Migrate { status } => migrate(settings, status).await,
        Command::Keys { command } => keys(settings, command).await,
        Command::Import {
            files,
            rejects,
            max_rejects,
        } => {
            let summary = crate::import::import(&settings, &files, &rejects, max_rejects).await?;
            write_out(&summary.render())?;
            if summary.rejected > 0 && rejects.exists() {
                write_out(&format!(
                    "first rejected events written to {}",
                    rejects.display()
                ))?;
            }
            Ok(())
        }
        Command::Bench {
            command:
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
                },
        } => {
            let bench = crate::bench::IngestBench {
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
            let report = crate::bench::ingest(&bench).await?;
            write_out(report.render(&bench).trim_end())
        }
        Command::Bench {
            command:
                BenchCommand::Pipeline {
                    batches,
                    batch_size,
                    rounds,
                },
        } => {
            let report = crate::bench::pipeline(&settings, batches, batch_size, rounds)?;
            write_out(report.render().trim_end())
        }
        Command::Bench {
            command:
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
                },
        } => {
            let bench = crate::bench::dashboard::DashboardBench {
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
            let report = crate::bench::dashboard::run(&bench).await?;
            write_out(report.render(&bench).trim_end())
        }
        Command::ReclassifyBots {
            since,
            until,
            events,
            dry_run,
        } => {
            let scope = crate::ingest::reclassify::Scope {
                since,
                until: until.unwrap_or_else(Utc::now),
                events,
            };
            let clickhouse = ClickHouse::new(&settings.clickhouse);
            let bot_networks =
                Networks::parse("ingest.bot_networks", &settings.ingest.bot_networks)?;
            let report = crate::ingest::reclassify::reclassify_bots(
                clickhouse.client(),
                clickhouse.database(),
                &bot_networks,
                &scope,
                dry_run,
            )
            .await?;
            if !dry_run {
                // Results cached for the rebuilt days are stale: their generations move.
                let days = report
                    .days
                    .iter()
                    .filter_map(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                    .collect();
                let generations = crate::cache::generations::Generations::new(
                    crate::storage::redis::Redis::from_settings(&settings.redis)?,
                    clickhouse.database(),
                    std::time::Duration::from_millis(settings.cache.generation_memo_ms),
                );
                generations
                    .advance(&crate::cache::generations::Written::from([(
                        crate::cache::generations::EVENTS,
                        days,
                    )]))
                    .await;
            }
            write_out(report.render(dry_run).trim_end())
        }
        Command::Check { dir, live } => {
            let dir = dir.unwrap_or_else(|| settings.catalog.dir.clone());
            let report = crate::check::run(&settings, &dir, live).await?;
            write_out(report.text.trim_end())?;
            if report.failures > 0 {
                bail!("{} problem(s) in {}", report.failures, dir.display());
            }
            Ok(())
        }
        Command::Access {
            command: AccessCommand::Check,
        } => {
            let path = &settings.access.policy;
            let policy = crate::access::policy::Policy::load(path)?;
            let catalog = crate::catalog::Catalog::load_or_explain(
                &settings.catalog.dir,
                &settings.clickhouse.database,
            )?;
            let templates = catalog
                .names()
                .map(|(n, versions)| (n.clone(), versions.keys().copied().collect()))
                .collect();
            let tables = crate::migrate::clickhouse::tables()?;
            let columns = crate::migrate::clickhouse::table_columns()?;
            let problems = policy.cross_check(&templates, &tables, &columns);
            for problem in &problems {
                write_out(&format!("error: {}: {problem}", path.display()))?;
            }
            if !problems.is_empty() {
                bail!("{} problem(s) in {}", problems.len(), path.display());
            }
            write_out(&format!(
                "ok: {} roles in {}",
                policy.roles.len(),
                path.display()
            ))
        }
        Command::Openapi { dir } => {
            let dir = dir.unwrap_or_else(|| settings.catalog.dir.clone());
            let catalog =
                crate::catalog::Catalog::load_or_explain(&dir, &settings.clickhouse.database)?;
            write_out(&serde_json::to_string_pretty(
                &crate::query::openapi::document(&catalog),
            )?)
        }
        Command::Bench {
            command:
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
                },
        } => {
            let ceiling = settings.memory_ceiling();
            let bench = crate::bench::soak::SoakBench {
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
            let report = crate::bench::soak::soak(&bench).await?;
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
        Command::Bench {
            command:
                BenchCommand::Queries {
                    url,
                    key,
                    cached: true,
                    path,
                    concurrency,
                    requests,
                    ..
                },
        } => {
            let phase = crate::bench::cached(&url, &key, &path, concurrency, requests).await?;
            write_out(&format!(
                "{concurrency} clients, {} requests ({} failed) on {path}: {:.0} requests/s, latency p50 {:.2} ms, p99 {:.2} ms",
                phase.requests,
                phase.failed,
                phase.requests as f64 / phase.elapsed.as_secs_f64().max(1e-9),
                phase.p50_ms,
                phase.p99_ms
            ))
        }
        Command::Bench {
            command:
                BenchCommand::Funnel {
                    iterations,
                    days,
                    window_seconds,
                    steps,
                    v1,
                },
        } => {
            let catalog = crate::catalog::Catalog::load_or_explain(
                &settings.catalog.dir,
                &settings.clickhouse.database,
            )?;
            let bench = crate::bench::funnel::FunnelBench {
                iterations,
                days,
                window_seconds,
                steps,
                with_v1: v1,
            };
            let report = crate::bench::funnel::run(&settings, &catalog, &bench).await?;
            write_out(report.trim_end())
        }
        Command::Bench {
            command:
                BenchCommand::Queries {
                    url,
                    key,
                    iterations,
                    ..
                },
        } => {
            let catalog = crate::catalog::Catalog::load_or_explain(
                &settings.catalog.dir,
                &settings.clickhouse.database,
            )?;
            let bench = crate::bench::QueryBench {
                url,
                key,
                iterations,
                clickhouse_url: settings.clickhouse.url.clone(),
                clickhouse_database: settings.clickhouse.database.clone(),
                clickhouse_user: settings.clickhouse.user.clone(),
                clickhouse_password: settings.clickhouse.password.expose().to_string(),
            };
            let timings = crate::bench::queries(&bench, &catalog).await?;
            write_out(crate::bench::render_queries(&timings, iterations).trim_end())
        }
        Command::Bench {
            command:
                BenchCommand::Bi {
                    url,
                    key,
                    rows,
                    rounds,
                    gateway_pid,
                },
        } => {
            let bench = crate::bench::BiBench {
                url,
                key,
                clickhouse_url: settings.clickhouse.url.clone(),
                clickhouse_user: settings.clickhouse.user.clone(),
                clickhouse_password: settings.clickhouse.password.expose().to_string(),
                rows,
                rounds,
                gateway_pid,
            };
            let report = crate::bench::bi(&bench).await?;
            write_out(report.render(rows).trim_end())
        }
        Command::Seed { users, days, seed } => {
            let plan = crate::seed::SeedPlan {
                users,
                days,
                end_ms: chrono::Utc::now().timestamp_millis(),
                seed,
            };
            let summary = crate::import::seed(&settings, &plan).await?;
            write_out(&summary.render())
        }
    }
}

/// Prints a failed command's error chain to standard error.
pub fn report_error(err: &anyhow::Error) {
    let _ = writeln!(std::io::stderr(), "error: {err:#}");
}

fn write_out(text: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout(), "{text}").context("cannot write to stdout")
}

async fn serve(settings: Settings, migrate: bool) -> anyhow::Result<()> {
    if migrate {
        crate::migrate::run(&settings).await?;
    } else {
        let pending = match crate::migrate::pending(&settings).await {
            Ok(pending) => pending,
            // Unreachable stores must not keep the gateway down: it accepts events into its
            // write-ahead log and reports not-ready until they are back.
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "cannot check for pending migrations; starting anyway");
                crate::migrate::Pending::default()
            }
        };
        if !pending.is_empty() {
            bail!(
                "the databases have pending migrations (ClickHouse: [{}], Postgres: [{}]); \
                 run `chgate migrate` or start with `chgate serve --migrate`",
                pending.clickhouse.join(", "),
                pending.postgres.join(", ")
            );
        }
    }
    let app = Application::build(settings).await?;
    tracing::info!(listen = %app.local_addr()?, bi = ?app.bi_addr(), version = env!("CARGO_PKG_VERSION"), "chgate listening");
    cancel_on_signal(app.shutdown_token());
    app.run_until_stopped().await
}

async fn migrate(settings: Settings, status: bool) -> anyhow::Result<()> {
    if status {
        let pending = crate::migrate::pending(&settings).await?;
        for name in &pending.clickhouse {
            write_out(&format!("pending clickhouse {name}"))?;
        }
        for name in &pending.postgres {
            write_out(&format!("pending postgres {name}"))?;
        }
        if !pending.is_empty() {
            bail!("there are pending migrations");
        }
        return write_out("up to date");
    }
    let report = crate::migrate::run(&settings).await?;
    for name in &report.clickhouse_applied {
        write_out(&format!("applied clickhouse {name}"))?;
    }
    for name in &report.postgres_applied {
        write_out(&format!("applied postgres {name}"))?;
    }
    write_out(&format!(
        "migrations up to date (ClickHouse database {}, {} applied now; Postgres {} applied now)",
        settings.clickhouse.database,
        report.clickhouse_applied.len(),
        report.postgres_applied.len()
    ))
}

async fn keys(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
    let postgres = Postgres::connect_lazy(&settings.postgres)?;
    let store = KeyStore::new(postgres.pool().clone());
    match command {
        KeysCommand::Create {
            name,
            role,
            attrs,
            reason,
        } => {
            let attributes: BTreeMap<String, String> = attrs.into_iter().collect();
            let key = store.create(&name, &role, attributes).await?;
            cli_audit(&postgres, "admin.key.create", &key.record.name, reason).await?;
            write_out(&format!(
                "created key {} name={} role={} (the secret below is shown only once)",
                key.record.id, key.record.name, key.record.role
            ))?;
            write_out(&key.secret)
        }
        KeysCommand::List { all, json } => {
            let records = store.list(all).await?;
            if json {
                for record in &records {
                    write_out(&serde_json::to_string(record)?)?;
                }
                return Ok(());
            }
            write_out(&format!(
                "{:<36}  {:<24}  {:<10}  {:<12}  {:<20}  {}",
                "ID", "NAME", "ROLE", "PREFIX", "CREATED", "STATUS"
            ))?;
            for record in &records {
                write_out(&format_record(record))?;
            }
            Ok(())
        }
        KeysCommand::Revoke { key, reason } => {
            let record = store.revoke(&key).await?;
            cli_audit(&postgres, "admin.key.revoke", &record.name, reason).await?;
            write_out(&format!("revoked key {} name={}", record.id, record.name))
        }
    }
}

/// Records an admin change made on the command line: the principal is `cli:<login>`.
async fn cli_audit(
    postgres: &Postgres,
    action: &str,
    resource: &str,
    reason: String,
) -> anyhow::Result<()> {
    let login = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let origin = crate::audit::Origin {
        ip: "local".into(),
        user_agent: format!("chgate-cli/{}", env!("CARGO_PKG_VERSION")),
        reason,
    };
    let mut record = crate::audit::AuditRecord::new(action, resource, None, &origin);
    record.principal = format!("cli:{login}");
    record.role = "admin".into();
    crate::audit::write(postgres.pool(), &[record])
        .await
        .context("the change was made, but writing its audit record failed")
}

fn format_record(record: &KeyRecord) -> String {
    let status = match record.revoked_at {
        Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M:%S")),
        None => "active".to_string(),
    };
    format!(
        "{:<36}  {:<24}  {:<10}  {:<12}  {:<20}  {}",
        record.id,
        record.name,
        record.role,
        record.key_prefix,
        record.created_at.format("%Y-%m-%d %H:%M:%S"),
        status
    )
}
