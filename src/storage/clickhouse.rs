//! The ClickHouse client used throughout the gateway.

use std::time::Duration;

use anyhow::Context;

use crate::config::{ClickHouseSettings, Compression};

/// A cheap-to-clone handle on the analytics database.
#[derive(Clone)]
pub struct ClickHouse {
    client: clickhouse::Client,
    database: String,
    probe_timeout: Duration,
}

impl ClickHouse {
    pub fn new(settings: &ClickHouseSettings) -> Self {
        Self {
            client: base_client(settings).with_database(&settings.database),
            database: settings.database.clone(),
            probe_timeout: Duration::from_millis(settings.probe_timeout_ms),
        }
    }

    /// Client bound to the analytics database.
    pub fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    /// Name of the analytics database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Succeeds when the server answers and the analytics database exists.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let query = self
            .client
            .query("SELECT count() FROM system.databases WHERE name = ?")
            .bind(&self.database);
        let found: u64 = tokio::time::timeout(self.probe_timeout, query.fetch_one())
            .await
            .context("timed out")?
            .context("query failed")?;
        anyhow::ensure!(found == 1, "database {} does not exist", self.database);
        Ok(())
    }
}

/// A client for the server itself, not bound to a database (migrations create the database).
pub fn base_client(settings: &ClickHouseSettings) -> clickhouse::Client {
    let mut client = clickhouse::Client::default()
        .with_url(&settings.url)
        .with_user(&settings.user)
        .with_compression(match settings.compression.for_url(&settings.url) {
            Compression::None => clickhouse::Compression::None,
            Compression::Lz4 | Compression::Auto => clickhouse::Compression::Lz4,
        });
    if !settings.password.is_empty() {
        client = client.with_password(settings.password.expose());
    }
    client
}
