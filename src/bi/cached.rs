//! The result cache of the BI endpoint (roles with `bi_cache_ttl_secs`): a `SELECT`'s response
//! kept with its headers, served to identical requests, run once for concurrent ones.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;

use super::count;
use super::error::BiError;
use super::outgoing::Outgoing;
use super::response::{caller_status, copy_headers, slot, HOP_BY_HOP};
use super::statement::Plan;
use super::Endpoint;
use crate::access::auth::Principal;
use crate::access::policy::RolePolicy;
use crate::cache::CacheStatus;

/// Why a cached run did not produce a cacheable body.
pub(super) enum Failure {
    Refused(BiError),
    /// ClickHouse answered with an error: sent to the client as it is.
    Upstream(Response),
    /// Too large to cache: run again, streamed.
    TooLarge,
}

/// A cached response: status, headers and the uncompressed body, in one blob.
fn encode_cached(headers: &HeaderMap, body: &[u8]) -> Bytes {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.as_str() != "x-clickhouse-query-id" && !HOP_BY_HOP.contains(&n.as_str()))
        .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let head = serde_json::to_vec(&pairs).unwrap_or_default();
    let mut blob = Vec::with_capacity(8 + head.len() + body.len());
    blob.extend_from_slice(&(head.len() as u64).to_le_bytes());
    blob.extend_from_slice(&head);
    blob.extend_from_slice(body);
    Bytes::from(blob)
}

fn decode_cached(blob: &Bytes) -> Option<(HeaderMap, Bytes)> {
    let len = usize::try_from(u64::from_le_bytes(blob.get(..8)?.try_into().ok()?)).ok()?;
    let pairs: Vec<(String, String)> = serde_json::from_slice(blob.get(8..8 + len)?).ok()?;
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            header::HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_str(&value).ok()?,
        );
    }
    Some((headers, blob.slice(8 + len..)))
}

/// `body` gzip-compressed (fast level), as ClickHouse answers clients that accept it.
fn gzipped(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

/// Serves a `SELECT` from the cache, or runs it once for every identical concurrent request.
#[allow(clippy::too_many_arguments)]
pub(super) async fn cached(
    state: &Endpoint,
    principal: &Principal,
    role: &RolePolicy,
    plan: &Plan,
    out: &Outgoing,
    forward: HeaderMap,
    key: &str,
    ttl: u64,
    gzip: bool,
) -> Result<Response, Failure> {
    let (status, blob) = match state.cache.get(key).await {
        Some(blob) => (CacheStatus::Hit, blob),
        None => {
            let compute = || async {
                let _slot = slot(state, principal, role)
                    .await
                    .map_err(Failure::Refused)?;
                let started = Instant::now();
                let upstream = state
                    .upstream
                    .send(&out.pairs, plan.sql.clone(), forward)
                    .await
                    .map_err(Failure::Refused)?;
                let status = caller_status(upstream.status(), upstream.headers());
                let headers = upstream.headers().clone();
                let limit = state.settings.bi.max_cached_bytes;
                let mut body = Vec::new();
                let mut held = crate::http::body::Reservation::new(&state.buffers);
                let mut stream = upstream.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        Failure::Refused(BiError::unavailable(format!(
                            "the response from ClickHouse broke off: {e}"
                        )))
                    })?;
                    held.cover(body.len() + chunk.len())
                        .await
                        .map_err(|e| Failure::Refused(e.into()))?;
                    body.extend_from_slice(&chunk);
                    if status.is_success() && body.len() > limit {
                        return Err(Failure::TooLarge);
                    }
                }
                metrics::histogram!("chgate_bi_query_duration_seconds", "kind" => plan.kind.name())
                    .record(started.elapsed().as_secs_f64());
                if !status.is_success() {
                    let mut response = Response::new(Body::from(body));
                    *response.status_mut() = status;
                    copy_headers(&headers, response.headers_mut());
                    return Err(Failure::Upstream(response));
                }
                Ok(encode_cached(&headers, &body))
            };
            let blob = state
                .cache
                .load(key, Duration::from_secs(ttl), compute)
                .await?;
            (CacheStatus::Miss, blob)
        }
    };
    let (headers, body) = decode_cached(&blob).ok_or_else(|| {
        Failure::Refused(BiError::from(crate::error::ApiError::Internal(
            anyhow::anyhow!("a cached BI response is corrupt"),
        )))
    })?;
    metrics::counter!("chgate_cache_requests_total", "outcome" => status.header().to_ascii_lowercase()).increment(1);
    count(plan.kind.name(), "ok");
    metrics::counter!("chgate_bi_response_bytes_total").increment(body.len() as u64);
    let compressed = if gzip { gzipped(&body) } else { None };
    let mut response = match compressed {
        Some(compressed) => {
            let mut response = Response::new(Body::from(compressed));
            *response.headers_mut() = headers;
            response.headers_mut().remove(header::CONTENT_LENGTH);
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            response
        }
        None => {
            let mut response = Response::new(Body::from(body));
            *response.headers_mut() = headers;
            response
        }
    };
    if let Some((_, id)) = out.pairs.iter().find(|(k, _)| k == "query_id") {
        if let Ok(value) = HeaderValue::from_str(id) {
            response
                .headers_mut()
                .insert("x-clickhouse-query-id", value);
        }
    }
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(status.header()));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_responses_round_trip_their_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-clickhouse-format", HeaderValue::from_static("Native"));
        headers.insert("x-clickhouse-query-id", HeaderValue::from_static("old"));
        let blob = encode_cached(&headers, b"\x01\x02body");
        let (back, body) = decode_cached(&blob).unwrap();
        assert_eq!(back.get("x-clickhouse-format").unwrap(), "Native");
        assert!(back.get("x-clickhouse-query-id").is_none());
        assert_eq!(&body[..], b"\x01\x02body");
    }
}
