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

/// Postgres text and `jsonb` cannot hold U+0000, which JSON, HTTP input and ClickHouse strings
/// can: it becomes U+FFFD on its way into Postgres (a check only when there is none).
pub fn without_nul(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
}

/// [`without_nul`] for every string and key of a JSON value.
pub fn json_without_nul(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => without_nul(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(json_without_nul),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let members = std::mem::take(map);
                *map = members
                    .into_iter()
                    .map(|(mut k, v)| {
                        without_nul(&mut k);
                        (k, v)
                    })
                    .collect();
            }
            map.values_mut().for_each(json_without_nul);
        }
        _ => {}
    }
}
