//! Schema migrations for ClickHouse (own ledger) and Postgres (`sqlx::migrate!`).

pub mod clickhouse;
mod split;

use anyhow::Context;
use sqlx::migrate::{MigrateDatabase, Migrator};

use crate::config::Settings;

pub use clickhouse::{ClickHouseMigrator, Migration};
pub use split::split_statements;

/// Postgres migrations, embedded from `migrations/postgres`.
pub static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// What `chgate migrate` did.
#[derive(Debug, Default)]
pub struct Report {
    pub clickhouse_applied: Vec<String>,
    pub postgres_applied: Vec<String>,
}

/// Migrations not yet applied, by store.
#[derive(Debug, Default)]
pub struct Pending {
    pub clickhouse: Vec<String>,
    pub postgres: Vec<String>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.clickhouse.is_empty() && self.postgres.is_empty()
    }
}

/// Applies every pending migration to ClickHouse and Postgres.
pub async fn run(settings: &Settings) -> anyhow::Result<Report> {
    let clickhouse_applied = ClickHouseMigrator::embedded(&settings.clickhouse)
        .run()
        .await
        .context("ClickHouse migrations failed")?;
    let postgres_applied = run_postgres(settings)
        .await
        .context("Postgres migrations failed")?;
    Ok(Report {
        clickhouse_applied,
        postgres_applied,
    })
}

/// Lists migrations that `run` would apply.
pub async fn pending(settings: &Settings) -> anyhow::Result<Pending> {
    let clickhouse = ClickHouseMigrator::embedded(&settings.clickhouse)
        .pending()
        .await
        .context("cannot read the ClickHouse migration ledger")?;
    let postgres = pending_postgres(settings)
        .await
        .context("cannot read the Postgres migration ledger")?;
    Ok(Pending {
        clickhouse,
        postgres,
    })
}

async fn run_postgres(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let url = settings.postgres.url.expose();
    if settings.postgres.create_database && !sqlx::Postgres::database_exists(url).await? {
        sqlx::Postgres::create_database(url)
            .await
            .context("cannot create the Postgres database")?;
    }
    let before = pending_postgres(settings).await?;
    let pool = sqlx::PgPool::connect(url).await?;
    POSTGRES.run(&pool).await?;
    pool.close().await;
    Ok(before)
}

async fn pending_postgres(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let url = settings.postgres.url.expose();
    let all = || {
        POSTGRES
            .iter()
            .map(|m| format!("{}_{}", m.version, m.description))
            .collect()
    };
    if !sqlx::Postgres::database_exists(url).await? {
        return Ok(all());
    }
    let pool = sqlx::PgPool::connect(url).await?;
    let applied: Result<Vec<i64>, _> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&pool)
            .await;
    pool.close().await;
    let applied = match applied {
        Ok(applied) => applied,
        // No ledger table yet: nothing has been applied.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(POSTGRES
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{}_{}", m.version, m.description))
        .collect())
}
