//! API keys: high-entropy secrets shown once, stored as SHA-256 hashes in Postgres.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::auth::Principal;

/// Every key starts with this, so leaked keys are easy to recognise in logs and scanners.
pub const KEY_PREFIX: &str = "chg_";

/// How long a lookup result is reused; bounds how late a revocation takes effect.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// Outcome of authenticating a presented key.
#[derive(Debug, Clone)]
pub enum KeyLookup {
    Active(Principal),
    Revoked,
    Unknown,
}

/// A key as listed by `chgate keys list` (never the secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyRecord {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub key_prefix: String,
    pub attributes: sqlx::types::Json<BTreeMap<String, String>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly created key: the secret exists only here.
#[derive(Debug)]
pub struct NewKey {
    pub record: KeyRecord,
    pub secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown role {0:?}; expected one of: {roles}", roles = super::auth::ROLES.join(", "))]
    UnknownRole(String),
    #[error("key name must be 1-100 characters")]
    BadName,
    #[error("an active key named {0:?} already exists")]
    DuplicateName(String),
    #[error("no active key with id or name {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Creates, lists, revokes and authenticates API keys.
#[derive(Clone)]
pub struct KeyStore {
    pool: PgPool,
    cache: moka::future::Cache<[u8; 32], KeyLookup>,
}

impl KeyStore {
    pub fn new(pool: PgPool) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(CACHE_TTL)
            .build();
        Self { pool, cache }
    }

    pub async fn create(
        &self,
        name: &str,
        role: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<NewKey, KeyError> {
        if !super::auth::ROLES.contains(&role) {
            return Err(KeyError::UnknownRole(role.to_string()));
        }
        if name.is_empty() || name.chars().count() > 100 {
            return Err(KeyError::BadName);
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
        let record = sqlx::query_as::<_, KeyRecord>(
            "INSERT INTO api_keys (id, name, role, key_hash, key_prefix, attributes)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING id, name, role, key_prefix, attributes, created_at, revoked_at",
        )
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(role)
        .bind(hash(&secret).as_slice())
        .bind(&secret[..KEY_PREFIX.len() + 8])
        .bind(sqlx::types::Json(&attributes))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                KeyError::DuplicateName(name.to_string())
            }
            other => KeyError::Store(anyhow::Error::new(other).context("cannot insert key")),
        })?;
        Ok(NewKey { record, secret })
    }

    pub async fn list(&self, include_revoked: bool) -> Result<Vec<KeyRecord>, KeyError> {
        let rows = sqlx::query_as::<_, KeyRecord>(
            "SELECT id, name, role, key_prefix, attributes, created_at, revoked_at
             FROM api_keys WHERE $1 OR revoked_at IS NULL ORDER BY created_at",
        )
        .bind(include_revoked)
        .fetch_all(&self.pool)
        .await
        .context("cannot list keys")?;
        Ok(rows)
    }

    /// Revokes the active key with this id or name.
    pub async fn revoke(&self, id_or_name: &str) -> Result<KeyRecord, KeyError> {
        let id = Uuid::parse_str(id_or_name).ok();
        sqlx::query_as::<_, KeyRecord>(
            "UPDATE api_keys SET revoked_at = now()
             WHERE revoked_at IS NULL AND (id = $1 OR ($1 IS NULL AND name = $2))
             RETURNING id, name, role, key_prefix, attributes, created_at, revoked_at",
        )
        .bind(id)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await
        .context("cannot revoke key")?
        .ok_or_else(|| KeyError::NotFound(id_or_name.to_string()))
    }

    /// Looks a presented secret up, through a short-lived cache.
    pub async fn authenticate(&self, secret: &str) -> anyhow::Result<KeyLookup> {
        let digest = hash(secret);
        if let Some(hit) = self.cache.get(&digest).await {
            return Ok(hit);
        }
        let lookup = self.lookup(&digest).await?;
        self.cache.insert(digest, lookup.clone()).await;
        Ok(lookup)
    }

    async fn lookup(&self, digest: &[u8; 32]) -> anyhow::Result<KeyLookup> {
        let row = sqlx::query_as::<_, KeyRecord>(
            "SELECT id, name, role, key_prefix, attributes, created_at, revoked_at
             FROM api_keys WHERE key_hash = $1",
        )
        .bind(digest.as_slice())
        .fetch_optional(&self.pool)
        .await
        .context("cannot look up key")?;
        Ok(match row {
            None => KeyLookup::Unknown,
            Some(row) if row.revoked_at.is_some() => KeyLookup::Revoked,
            Some(row) => KeyLookup::Active(Principal {
                key_id: Some(row.id),
                name: row.name,
                role: row.role,
                attributes: row.attributes.0,
            }),
        })
    }
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}
