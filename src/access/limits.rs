//! Rate and concurrency limits per principal, with per-role quotas from the access policy.
//!
//! Requests are limited with governor's GCRA, keyed by principal, one limiter per role quota (a
//! policy reload with new numbers starts new limiters). Queries are also limited in concurrency per
//! principal and across the gateway. Refusals are 429 (`Retry-After`, `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining`) or, when the whole gateway is saturated, 503.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::policy::Limits as RoleLimits;
use crate::access::auth::Principal;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::storage::redis::Redis;

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;
/// Limiters by their quota.
type Limiters<K> = Arc<Mutex<HashMap<K, Arc<Keyed>>>>;

/// The gateway's limiters; cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    /// Request limiters by (requests per second, burst).
    requests: Limiters<(u32, u32)>,
    /// Event limiters by events per second.
    events: Limiters<u32>,
    /// Query slots per principal.
    slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    global: Arc<Semaphore>,
    /// Redis, when request limits are shared by every gateway.
    shared: Option<Redis>,
}

/// The rate limit state to report on a response.
#[derive(Debug, Clone, Copy)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
}

impl RateInfo {
    /// Adds `X-RateLimit-Limit` and `X-RateLimit-Remaining`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
    }
}

/// A query slot, released when dropped.
pub struct Slot {
    _principal: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

fn identity(principal: &Principal) -> String {
    match principal.key_id {
        Some(id) => id.to_string(),
        None => principal.name.clone(),
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(per_second).max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

fn too_many_queries(principal: &Principal, limits: &RoleLimits) -> ApiError {
    metrics::counter!("chgate_rate_limited_total", "kind" => "concurrency", "role" => principal.role.clone()).increment(1);
    ApiError::TooManyRequests {
        code: ErrorCode::TooManyConcurrentQueries,
        message: format!(
            "at most {} queries may run at once for this caller",
            limits.concurrent_queries
        ),
        retry_after: Duration::from_secs(1),
        limit: None,
    }
}

fn gateway_busy(principal: &Principal) -> ApiError {
    metrics::counter!("chgate_rate_limited_total", "kind" => "gateway", "role" => principal.role.clone()).increment(1);
    ApiError::Unavailable {
        code: ErrorCode::GatewayBusy,
        message: "the gateway is running as many queries as it allows; retry shortly".into(),
        retry_after: Some(Duration::from_secs(1)),
    }
}

fn limited(principal: &Principal, limit: u32, wait: Duration) -> ApiError {
    metrics::counter!("chgate_rate_limited_total", "kind" => "requests", "role" => principal.role.clone()).increment(1);
    too_many(limit, wait, "requests")
}

/// GCRA in one atomic Redis script, on Redis's clock: the key holds the theoretical arrival time
/// (ms). Returns {allowed, wait_ms, remaining}.
const GCRA: &str = r#"
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, allow_at - now, 0}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(tolerance + emission))
return {1, 0, math.floor((tolerance - (new_tat - now)) / emission)}
"#;

async fn shared_request(
    redis: &Redis,
    principal: &Principal,
    limits: &RoleLimits,
) -> anyhow::Result<Result<RateInfo, ApiError>> {
    let per_second = limits.requests_per_second.max(1);
    let burst = limits.burst.max(per_second).max(1);
    let emission_ms = 1000.0 / f64::from(per_second);
    let tolerance_ms = emission_ms * f64::from(burst);
    let key = format!(
        "chgate:ratelimit:{}:{}:{}",
        identity(principal),
        per_second,
        burst
    );
    let mut conn = tokio::time::timeout(Duration::from_millis(250), redis.connection()).await??;
    let (allowed, wait_ms, remaining): (i64, i64, i64) = tokio::time::timeout(
        Duration::from_millis(250),
        redis::Script::new(GCRA)
            .key(key)
            .arg(emission_ms)
            .arg(tolerance_ms)
            .invoke_async(&mut conn),
    )
    .await??;
    Ok(if allowed == 1 {
        Ok(RateInfo {
            limit: per_second,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
        })
    } else {
        Err(limited(
            principal,
            per_second,
            Duration::from_millis(u64::try_from(wait_ms.max(1)).unwrap_or(1)),
        ))
    })
}

fn too_many(limit: u32, wait: Duration, what: &str) -> ApiError {
    ApiError::TooManyRequests {
        code: ErrorCode::RateLimited,
        message: format!(
            "{what}: more than {limit} per second; retry after {:.1} s",
            wait.as_secs_f64()
        ),
        retry_after: wait,
        limit: Some(limit),
    }
}

impl Limiter {
    pub fn new(global_queries: usize, shared: Option<Redis>) -> Self {
        Self {
            requests: Default::default(),
            events: Default::default(),
            slots: Default::default(),
            global: Arc::new(Semaphore::new(global_queries.max(1))),
            shared,
        }
    }

    fn keyed<K: std::hash::Hash + Eq + Copy>(
        map: &Mutex<HashMap<K, Arc<Keyed>>>,
        key: K,
        quota: Quota,
    ) -> Arc<Keyed> {
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                Arc::new(RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>())
            })
            .clone()
    }

    /// Counts one request against the principal's role quota (in Redis, shared by every gateway,
    /// when `access.limits_backend = "redis"`).
    pub async fn request(
        &self,
        principal: &Principal,
        limits: &RoleLimits,
    ) -> Result<RateInfo, ApiError> {
        if let Some(redis) = &self.shared {
            match shared_request(redis, principal, limits).await {
                Ok(outcome) => return outcome,
                Err(e) => {
                    // Redis is down: each gateway limits on its own until it is back.
                    metrics::counter!("chgate_rate_limit_redis_errors_total").increment(1);
                    tracing::debug!(error = %format!("{e:#}"), "shared rate limit unavailable; limiting locally");
                }
            }
        }
        self.local_request(principal, limits)
    }

    fn local_request(
        &self,
        principal: &Principal,
        limits: &RoleLimits,
    ) -> Result<RateInfo, ApiError> {
        let limiter = Self::keyed(
            &self.requests,
            (limits.requests_per_second, limits.burst),
            quota(limits.requests_per_second, limits.burst),
        );
        match limiter.check_key(&identity(principal)) {
            Ok(state) => Ok(RateInfo {
                limit: limits.requests_per_second,
                remaining: state.remaining_burst_capacity(),
            }),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(limited(principal, limits.requests_per_second, wait))
            }
        }
    }

    /// Counts `events` against the principal's ingestion quota.
    pub fn events(
        &self,
        principal: &Principal,
        limits: &RoleLimits,
        events: usize,
    ) -> Result<(), ApiError> {
        let Some(n) = NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        let per_second = limits.ingest_events_per_second;
        let limiter = Self::keyed(&self.events, per_second, quota(per_second, per_second));
        match limiter.check_key_n(&identity(principal), n) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                metrics::counter!("chgate_rate_limited_total", "kind" => "events", "role" => principal.role.clone()).increment(1);
                Err(too_many(per_second, wait, "events"))
            }
            Err(_) => Err(ApiError::PayloadTooLarge {
                message: format!("a batch of {events} events exceeds this key's {per_second} events per second; send smaller batches"),
            }),
        }
    }

    /// Takes a query slot of the principal and of the gateway, or refuses at once.
    pub fn query_slot(&self, principal: &Principal, limits: &RoleLimits) -> Result<Slot, ApiError> {
        let principal_slot = self
            .principal_semaphore(principal, limits)
            .try_acquire_owned()
            .map_err(|_| too_many_queries(principal, limits))?;
        let global_slot = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| gateway_busy(principal))?;
        Ok(Slot {
            _principal: principal_slot,
            _global: global_slot,
        })
    }

    /// Takes a query slot, waiting up to `wait` for one to free up (queries a dashboard sends
    /// together queue instead of failing), then refuses as [`Self::query_slot`] does.
    pub async fn query_slot_within(
        &self,
        principal: &Principal,
        limits: &RoleLimits,
        wait: Duration,
    ) -> Result<Slot, ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let semaphore = self.principal_semaphore(principal, limits);
        let principal_slot =
            match tokio::time::timeout_at(deadline, semaphore.acquire_owned()).await {
                Ok(Ok(slot)) => slot,
                _ => return Err(too_many_queries(principal, limits)),
            };
        let global_slot =
            match tokio::time::timeout_at(deadline, self.global.clone().acquire_owned()).await {
                Ok(Ok(slot)) => slot,
                _ => return Err(gateway_busy(principal)),
            };
        Ok(Slot {
            _principal: principal_slot,
            _global: global_slot,
        })
    }

    fn principal_semaphore(&self, principal: &Principal, limits: &RoleLimits) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(format!(
                "{}/{}",
                identity(principal),
                limits.concurrent_queries
            ))
            .or_insert_with(|| Arc::new(Semaphore::new(limits.concurrent_queries.max(1) as usize)))
            .clone()
    }
}
