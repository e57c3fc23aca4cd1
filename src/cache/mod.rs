//! The result cache of template runs: Redis shared by the gateways, an in-process cache (moka) in
//! front of it that also serves while Redis is down, and single-flight so concurrent identical
//! misses run one ClickHouse query.
//!
//! Keys hash the analytics database, the template, version, rendered statement, canonical
//! parameter values, the caller's row-filter values, the format and the generations of the days
//! the call reads ([`generations`], [`scope`]); values are LZ4-compressed response bodies,
//! size-capped; the TTL is the template's, or `cache.past_ttl_secs` for results whose
//! generations tell every change.

pub mod generations;
pub mod scope;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::AsyncCommands;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use self::generations::{Generations, Stamp};
use crate::catalog::{Rendered, Template};
use crate::config::CacheSettings;
use crate::storage::redis::Redis;

/// Whether a response came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

impl CacheStatus {
    pub fn header(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
        }
    }
}

type Flight = Arc<OnceCell<Bytes>>;

/// The cache; cheap to clone.
#[derive(Clone)]
pub struct ResultCache {
    redis: Option<Redis>,
    local: moka::future::Cache<String, (Instant, Bytes)>,
    inflight: Arc<Mutex<HashMap<String, Flight>>>,
    settings: CacheSettings,
    generations: Generations,
}

/// How a template call is cached: the generations its key holds, and for how long.
#[derive(Debug, Clone)]
pub struct Freshness {
    pub stamp: Stamp,
    pub ttl: Duration,
}

const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

impl ResultCache {
    pub fn new(settings: &CacheSettings, redis: Option<Redis>, generations: Generations) -> Self {
        let local = moka::future::Cache::builder()
            .weigher(|_k: &String, v: &(Instant, Bytes)| {
                u32::try_from(v.1.len()).unwrap_or(u32::MAX)
            })
            .max_capacity(settings.local_capacity_bytes)
            .time_to_live(Duration::from_secs(
                settings.max_ttl_secs.max(settings.past_ttl_secs),
            ))
            .build();
        Self {
            redis,
            local,
            inflight: Default::default(),
            settings: settings.clone(),
            generations,
        }
    }

    /// The generations of what days and tables the call reads, and its TTL: the template's,
    /// or `cache.past_ttl_secs` when the generations tell every change of the result.
    pub async fn freshness(
        &self,
        template: &Template,
        rendered: &Rendered,
        database: &str,
    ) -> Freshness {
        let ttl = Duration::from_secs(template.meta().cache_ttl_secs);
        if !self.settings.freshness {
            return Freshness {
                stamp: Stamp::default(),
                ttl,
            };
        }
        let today = chrono::Utc::now().date_naive();
        let Some(scope) = scope::of(template, rendered, database, today, self.settings.live_days)
        else {
            return Freshness {
                stamp: Stamp::default(),
                ttl,
            };
        };
        let stamp = self.generations.stamp(&scope.span).await;
        let ttl = if stamp.shared && scope.tracks_everything() {
            ttl.max(Duration::from_secs(self.settings.past_ttl_secs))
        } else {
            ttl
        };
        Freshness { stamp, ttl }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// The cache key of a call.
    pub fn key(parts: &[&str]) -> String {
        let mut hash = Sha256::new();
        for part in parts {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        format!("chgate:result:{}", hex::encode(hash.finalize()))
    }

    /// A cached body, if fresh.
    pub async fn get(&self, key: &str) -> Option<Bytes> {
        if let Some((expires, body)) = self.local.get(key).await {
            if Instant::now() < expires {
                return Some(body);
            }
            self.local.invalidate(key).await;
        }
        let redis = self.redis.as_ref()?;
        let fetched: anyhow::Result<Option<(Vec<u8>, i64)>> = async {
            let mut conn = tokio::time::timeout(REDIS_TIMEOUT, redis.connection()).await??;
            let (value, ttl): (Option<Vec<u8>>, i64) = tokio::time::timeout(
                REDIS_TIMEOUT,
                redis::pipe().get(key).ttl(key).query_async(&mut conn),
            )
            .await??;
            Ok(value.map(|v| (v, ttl)))
        }
        .await;
        match fetched {
            Ok(Some((compressed, ttl))) => {
                let body = Bytes::from(lz4_flex::decompress_size_prepended(&compressed).ok()?);
                if ttl > 0 {
                    self.local
                        .insert(
                            key.to_string(),
                            (
                                Instant::now() + Duration::from_secs(ttl as u64),
                                body.clone(),
                            ),
                        )
                        .await;
                }
                Some(body)
            }
            Ok(None) => None,
            Err(e) => {
                metrics::counter!("chgate_cache_redis_errors_total").increment(1);
                tracing::debug!(error = %format!("{e:#}"), "result cache: Redis unavailable, using the in-process cache");
                None
            }
        }
    }

    /// Stores a body for `ttl` (a fresh result after a bypass refreshes the entry).
    pub async fn store(&self, key: &str, body: &Bytes, ttl: Duration) {
        let compressed = lz4_flex::compress_prepend_size(body);
        if compressed.len() > self.settings.max_entry_bytes {
            metrics::counter!("chgate_cache_too_large_total").increment(1);
            return;
        }
        self.local
            .insert(key.to_string(), (Instant::now() + ttl, body.clone()))
            .await;
        let Some(redis) = &self.redis else { return };
        let stored: anyhow::Result<()> = async {
            let mut conn = tokio::time::timeout(REDIS_TIMEOUT, redis.connection()).await??;
            tokio::time::timeout(
                REDIS_TIMEOUT,
                conn.set_ex::<_, _, ()>(key, compressed, ttl.as_secs().max(1)),
            )
            .await??;
            Ok(())
        }
        .await;
        if stored.is_err() {
            metrics::counter!("chgate_cache_redis_errors_total").increment(1);
        }
    }

    /// Runs `compute` unless an identical call is already running, in which case its result is
    /// shared; the result is stored for `ttl`.
    pub async fn load<F, Fut, E>(&self, key: &str, ttl: Duration, compute: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, E>>,
    {
        let flight = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight.entry(key.to_string()).or_default().clone()
        };
        let mut ran = false;
        let result = flight
            .get_or_try_init(|| {
                ran = true;
                compute()
            })
            .await
            .cloned();
        if !ran && result.is_ok() {
            metrics::counter!("chgate_cache_singleflight_joins_total").increment(1);
        }
        if ran {
            if let Ok(body) = &result {
                self.store(key, body, ttl).await;
            }
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if inflight.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                inflight.remove(key);
            }
        }
        result
    }
}
