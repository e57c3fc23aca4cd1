//! The `chgate` command line: the commands, and the tooling only they use (`bench`, `check`,
//! `import`, `seed`).

pub mod bench;
pub mod check;
pub mod import;
pub mod keys;
pub mod seed;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use clap::{Parser, Subcommand};

use crate::app::{cancel_on_signal, Application};
use crate::config::Settings;
use crate::ingest::enrich::net::Networks;
use crate::storage::clickhouse::ClickHouse;

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
        command: keys::KeysCommand,
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
        /// Do not store the definitions of the seeded experiments (checkout_redesign,
        /// button_color_aa); their exposure events are generated either way.
        #[arg(long)]
        no_experiments: bool,
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
    /// Finalize the closed periods of the rollups now (as gateways do every
    /// rollups.finalize_secs): their distinct counts are stored beside the states, so long ranges
    /// read them (docs/architecture.md, src/rollups).
    FinalizeRollups,
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
        command: bench::command::BenchCommand,
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
        Command::Keys { command } => keys::run(settings, command).await,
        Command::Import {
            files,
            rejects,
            max_rejects,
        } => {
            let summary = import::import(&settings, &files, &rejects, max_rejects).await?;
            write_out(&summary.render())?;
            if summary.rejected > 0 && rejects.exists() {
                write_out(&format!(
                    "first rejected events written to {}",
                    rejects.display()
                ))?;
            }
            Ok(())
        }
        Command::Bench { command } => bench::command::run(settings, command).await,
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
        Command::FinalizeRollups => {
            let clickhouse = ClickHouse::new(&settings.clickhouse);
            let pass = crate::rollups::finalize(&clickhouse, settings.rollups.finalize_days).await;
            write_out(&format!(
                "finalized in {} ms; the final tables hold {} rows",
                pass.elapsed_ms, pass.rows
            ))?;
            if !pass.errors.is_empty() {
                bail!("{}", pass.errors.join("; "));
            }
            Ok(())
        }
        Command::Check { dir, live } => {
            let dir = dir.unwrap_or_else(|| settings.catalog.dir.clone());
            let report = check::run(&settings, &dir, live).await?;
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
        Command::Seed {
            users,
            days,
            seed,
            no_experiments,
        } => {
            let plan = seed::SeedPlan {
                users,
                days,
                end_ms: chrono::Utc::now().timestamp_millis(),
                seed,
            };
            let summary = import::seed(&settings, &plan).await?;
            write_out(&summary.render())?;
            if no_experiments {
                return Ok(());
            }
            let start = seed::experiments::start_ms(&plan);
            for (name, stored) in seed::experiments::store(&settings, start).await? {
                write_out(&match stored {
                    seed::experiments::Stored::Created(id) => {
                        format!("experiment {name}: created {id}")
                    }
                    seed::experiments::Stored::Kept(id) => {
                        format!("experiment {name}: kept {id} (stored by an earlier seed)")
                    }
                })?;
            }
            Ok(())
        }
    }
}

/// Prints a failed command's error chain to standard error.
pub fn report_error(err: &anyhow::Error) {
    let _ = writeln!(std::io::stderr(), "error: {err:#}");
}

/// Who runs the command line (`$USER`, else `$LOGNAME`, else the account of the process's user
/// id, else `uid<N>`): admin changes made here are `cli:<login>`'s.
pub(crate) fn login() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|login| !login.trim().is_empty())
        .or_else(account)
        .unwrap_or_else(|| "unknown".to_string())
}

/// The account name of this process's real user id, from `/proc/self/status` and `/etc/passwd`
/// (`uid<N>` when the id has no entry); none off Linux.
fn account() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    Some(
        passwd
            .lines()
            .find_map(|entry| {
                let mut fields = entry.split(':');
                let name = fields.next()?;
                (fields.nth(1)? == uid && !name.is_empty()).then(|| name.to_string())
            })
            .unwrap_or_else(|| format!("uid{uid}")),
    )
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_account_of_the_process_is_named_without_the_environment() {
        let account = super::account().expect("Linux has /proc/self/status");
        assert!(!account.is_empty() && !account.contains(':'), "{account}");
    }
}
