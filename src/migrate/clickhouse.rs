//! ClickHouse migrations: `migrations/clickhouse/NNNN_name.sql`, applied in order and recorded in the
//! ledger table `<database>.schema_migrations` with a checksum, so an edited migration is detected.
//!
//! Files refer to the target database as `${database}`; it is substituted at apply time, which lets
//! tests migrate a fresh database each.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};
use clickhouse::Row;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::split_statements;
use crate::config::ClickHouseSettings;
use crate::storage::clickhouse::base_client;

/// The placeholder for the target database in migration files.
pub const DATABASE_PLACEHOLDER: &str = "${database}";

const EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/clickhouse_migrations.rs"));

/// One migration file.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: u32,
    /// File name, e.g. `0001_events.sql`.
    pub name: String,
    pub sql: String,
}

impl Migration {
    /// Parses the version from a `NNNN_name.sql` file name.
    pub fn new(name: &str, sql: &str) -> anyhow::Result<Self> {
        let version = name
            .split_once('_')
            .and_then(|(n, _)| n.parse::<u32>().ok())
            .with_context(|| format!("migration file {name} must be named NNNN_name.sql"))?;
        Ok(Self {
            version,
            name: name.to_string(),
            sql: sql.to_string(),
        })
    }

    /// SHA-256 of the file as written (before substitution).
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }

    fn statements(&self, database: &str) -> Vec<String> {
        split_statements(&self.sql.replace(DATABASE_PLACEHOLDER, database))
    }
}

/// The migrations compiled into this binary, in order.
pub fn embedded() -> anyhow::Result<Vec<Migration>> {
    EMBEDDED
        .iter()
        .map(|(name, sql)| Migration::new(name, sql))
        .collect()
}

/// Names of the tables the migrations create in the analytics database.
pub fn tables() -> anyhow::Result<std::collections::BTreeSet<String>> {
    let pattern = regex::Regex::new(
        r"(?i)CREATE\s+(?:MATERIALIZED\s+VIEW|TABLE)\s+IF\s+NOT\s+EXISTS\s+\$\{database\}\.([A-Za-z0-9_]+)",
    )?;
    Ok(embedded()?
        .iter()
        .flat_map(|m| {
            pattern
                .captures_iter(&m.sql)
                .filter_map(|c| c.get(1))
                .map(|t| t.as_str().to_string())
                .collect::<Vec<_>>()
        })
        .collect())
}

/// The columns of the tables the migrations create with a column list (`CREATE TABLE … AS other`
/// takes the other's) or add (`ALTER TABLE … ADD COLUMN IF NOT EXISTS`), by table name. Views are
/// left out.
pub fn table_columns() -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let create = regex::Regex::new(
        r"(?i)CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+\$\{database\}\.([A-Za-z0-9_]+)\s*(\(|AS\s+\$\{database\}\.([A-Za-z0-9_]+))",
    )?;
    let added = regex::Regex::new(
        r"(?i)ALTER\s+TABLE\s+\$\{database\}\.([A-Za-z0-9_]+)\s+ADD\s+COLUMN\s+IF\s+NOT\s+EXISTS\s+`?([A-Za-z0-9_]+)",
    )?;
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for migration in embedded()? {
        let sql = &migration.sql;
        for c in create.captures_iter(sql) {
            let (Some(name), Some(open)) = (c.get(1), c.get(2)) else {
                continue;
            };
            if let Some(source) = c.get(3) {
                if let Some(columns) = out.get(source.as_str()).cloned() {
                    out.insert(name.as_str().to_string(), columns);
                }
                continue;
            }
            // The column list: up to the parenthesis that closes `open`, split at top-level commas.
            let mut depth = 0usize;
            let mut entries = vec![String::new()];
            for ch in sql[open.start()..].chars() {
                match ch {
                    '(' => {
                        depth += 1;
                        if depth == 1 {
                            continue;
                        }
                    }
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        entries.push(String::new());
                        continue;
                    }
                    _ => {}
                }
                if let Some(entry) = entries.last_mut() {
                    entry.push(ch);
                }
            }
            let columns = entries
                .iter()
                .filter_map(|entry| {
                    // Each line of an entry may start with a comment; the first other word names it.
                    entry
                        .lines()
                        .map(str::trim)
                        .find(|l| !l.is_empty() && !l.starts_with("--"))
                        .and_then(|l| l.split_whitespace().next())
                        .map(|w| w.trim_matches('`').to_string())
                })
                .filter(|w| {
                    !["INDEX", "PROJECTION", "CONSTRAINT"]
                        .contains(&w.to_ascii_uppercase().as_str())
                })
                .collect();
            out.insert(name.as_str().to_string(), columns);
        }
        for c in added.captures_iter(sql) {
            if let (Some(table), Some(column)) = (c.get(1), c.get(2)) {
                out.entry(table.as_str().to_string())
                    .or_default()
                    .insert(column.as_str().to_string());
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Row, Deserialize)]
struct Applied {
    version: u32,
    name: String,
    checksum: String,
}

/// Applies migrations to one ClickHouse database.
pub struct ClickHouseMigrator {
    client: clickhouse::Client,
    database: String,
    migrations: anyhow::Result<Vec<Migration>>,
}

impl ClickHouseMigrator {
    /// A migrator for the migrations compiled into the binary.
    pub fn embedded(settings: &ClickHouseSettings) -> Self {
        Self {
            // `ALTER TABLE <view> MODIFY QUERY` needs it before ClickHouse 24 (later versions
            // ignore the setting).
            client: base_client(settings)
                .with_setting("allow_experimental_alter_materialized_view_structure", "1"),
            database: settings.database.clone(),
            migrations: embedded(),
        }
    }

    /// A migrator for an explicit set of migrations (tests use it to edit one).
    pub fn with_migrations(settings: &ClickHouseSettings, migrations: Vec<Migration>) -> Self {
        Self {
            migrations: Ok(migrations),
            ..Self::embedded(settings)
        }
    }

    /// Applies pending migrations; returns the names of those applied. Refuses to run when an
    /// applied migration's file has changed.
    pub async fn run(&self) -> anyhow::Result<Vec<String>> {
        let migrations = self.checked_migrations()?;
        self.execute(&format!(
            "CREATE DATABASE IF NOT EXISTS `{}`",
            self.database
        ))
        .await?;
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS `{}`.schema_migrations (
                version UInt32,
                name String,
                checksum String,
                applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
            ) ENGINE = MergeTree ORDER BY version",
            self.database
        ))
        .await?;
        let applied = self.applied().await?;
        let mut done = Vec::new();
        for migration in migrations {
            if verify_applied(migration, &applied)? {
                continue;
            }
            for statement in migration.statements(&self.database) {
                self.execute(&statement)
                    .await
                    .with_context(|| format!("migration {} failed", migration.name))?;
            }
            self.client
                .query(&format!(
                    "INSERT INTO `{}`.schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
                    self.database
                ))
                .bind(migration.version)
                .bind(&migration.name)
                .bind(migration.checksum())
                .execute()
                .await
                .with_context(|| format!("cannot record migration {}", migration.name))?;
            tracing::info!(migration = %migration.name, database = %self.database, "applied ClickHouse migration");
            done.push(migration.name.clone());
        }
        Ok(done)
    }

    /// Names of migrations not yet applied; an error if an applied one was edited.
    pub async fn pending(&self) -> anyhow::Result<Vec<String>> {
        let migrations = self.checked_migrations()?;
        let exists: u64 = self
            .client
            .query("SELECT count() FROM system.tables WHERE database = ? AND name = 'schema_migrations'")
            .bind(&self.database)
            .fetch_one()
            .await
            .context("cannot query ClickHouse")?;
        let applied = if exists == 0 {
            Vec::new()
        } else {
            self.applied().await?
        };
        let mut pending = Vec::new();
        for migration in migrations {
            if !verify_applied(migration, &applied)? {
                pending.push(migration.name.clone());
            }
        }
        Ok(pending)
    }

    fn checked_migrations(&self) -> anyhow::Result<&[Migration]> {
        let migrations = self
            .migrations
            .as_deref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let valid_name = !self.database.is_empty()
            && self
                .database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !self.database.as_bytes()[0].is_ascii_digit();
        if !valid_name {
            bail!(
                "clickhouse.database {:?} must consist of letters, digits and underscores and not start with a digit",
                self.database
            );
        }
        for pair in migrations.windows(2) {
            if pair[0].version >= pair[1].version {
                bail!(
                    "migrations {} and {} do not have increasing versions",
                    pair[0].name,
                    pair[1].name
                );
            }
        }
        Ok(migrations)
    }

    async fn applied(&self) -> anyhow::Result<Vec<Applied>> {
        self.client
            .query(&format!(
                "SELECT version, name, checksum FROM `{}`.schema_migrations ORDER BY version",
                self.database
            ))
            .fetch_all()
            .await
            .context("cannot read the migration ledger")
    }

    async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        self.client
            .query_raw(sql)
            .execute()
            .await
            .with_context(|| format!("ClickHouse rejected: {}", abbreviate(sql)))
    }
}

/// Whether `migration` is already applied; an error if it was applied with different contents.
fn verify_applied(migration: &Migration, applied: &[Applied]) -> anyhow::Result<bool> {
    let Some(record) = applied.iter().find(|a| a.version == migration.version) else {
        return Ok(false);
    };
    if record.checksum != migration.checksum() {
        bail!(
            "migrations/clickhouse/{} was edited after it was applied as {} (checksum mismatch); \
             never edit an applied migration, add a new one instead",
            migration.name,
            record.name
        );
    }
    Ok(true)
}

fn abbreviate(sql: &str) -> String {
    let line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(160) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_file_name() {
        assert_eq!(Migration::new("0007_rollups.sql", "").unwrap().version, 7);
        assert!(Migration::new("rollups.sql", "").is_err());
    }

    #[test]
    fn embedded_migrations_are_in_increasing_order_and_use_the_placeholder() {
        let migrations = embedded().unwrap();
        assert!(!migrations.is_empty());
        for pair in migrations.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        for migration in &migrations {
            assert!(
                !migration.sql.contains("analytics."),
                "{} must name the database as ${{database}}",
                migration.name
            );
        }
    }
}
