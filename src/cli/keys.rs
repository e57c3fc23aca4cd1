//! `chgate keys`: create, list and revoke API keys, with an audit record for each change.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::Subcommand;

use super::write_out;
use crate::access::keys::{KeyRecord, KeyStore};
use crate::config::Settings;
use crate::storage::postgres::Postgres;

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

fn parse_attr(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {raw:?}")),
    }
}

/// Runs a `chgate keys` command.
pub async fn run(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
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
    let origin = crate::audit::Origin {
        ip: "local".into(),
        user_agent: format!("chgate-cli/{}", env!("CARGO_PKG_VERSION")),
        reason,
    };
    let mut record = crate::audit::AuditRecord::new(action, resource, None, &origin);
    record.principal = format!("cli:{}", super::login());
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
