//! The Postgres pool: API keys, business-critical events, audit log, scheduler state.

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::PostgresSettings;

/// A cheap-to-clone handle on the Postgres pool.
#[derive(Clone)]
pub struct Postgres {
    pool: PgPool,
}

impl Postgres {
    /// Creates the pool without connecting, so the gateway can start (and report not-ready) while
    /// Postgres is down.
    pub fn connect_lazy(settings: &PostgresSettings) -> anyhow::Result<Self> {
        let options: PgConnectOptions = settings
            .url
            .expose()
            .parse()
            .context("postgres.url is not a valid Postgres URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .context("query failed")?;
        Ok(())
    }
}
