//! Request bodies read whole (events, BI SQL, template parameters): decompressed, capped per
//! request, and held under one memory budget shared with the results the gateway buffers (JSON
//! template results), so a burst of large or compressed bodies or of large results waits or is
//! refused instead of growing the gateway's memory without bound.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::error::ErrorCode;

/// Bytes reserved at a time from the budget.
const STEP: usize = 256 * 1024;

/// Memory all request bodies and buffered results may take together.
#[derive(Clone)]
pub struct MemoryBudget {
    /// One permit per [`STEP`].
    steps: Arc<Semaphore>,
    total_bytes: usize,
    /// How long a body waits for room before it is refused.
    wait: Duration,
}

impl MemoryBudget {
    pub fn new(total_bytes: usize, wait: Duration) -> Self {
        let steps = (total_bytes / STEP).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            steps: Arc::new(Semaphore::new(steps)),
            total_bytes: steps * STEP,
            wait,
        }
    }

    /// Bytes of the budget in all.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes as u64
    }

    /// Bytes of the budget in use now.
    pub fn in_use(&self) -> usize {
        self.total_bytes - self.steps.available_permits() * STEP
    }
}

/// A body and the share of the budget it holds, returned when it is dropped.
pub struct ReadBody {
    bytes: Vec<u8>,
    _held: Reservation,
}

impl std::ops::Deref for ReadBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Part of the budget, grown as a body or a result grows; returned when dropped.
pub struct Reservation {
    budget: MemoryBudget,
    permits: Vec<OwnedSemaphorePermit>,
}

impl Reservation {
    pub fn new(budget: &MemoryBudget) -> Self {
        Self {
            budget: budget.clone(),
            permits: Vec::new(),
        }
    }

    /// Holds room for `bytes` in all, waiting up to the budget's wait for it.
    pub async fn cover(&mut self, bytes: usize) -> Result<(), ApiError> {
        let need = bytes.div_ceil(STEP);
        if need <= self.permits.len() {
            return Ok(());
        }
        let more = u32::try_from(need - self.permits.len()).unwrap_or(u32::MAX);
        let acquired = tokio::time::timeout(
            self.budget.wait,
            self.budget.steps.clone().acquire_many_owned(more),
        )
        .await;
        match acquired {
            Ok(Ok(permit)) => {
                self.permits.push(permit);
                Ok(())
            }
            _ => {
                metrics::counter!("chgate_body_budget_refused_total").increment(1);
                Err(ApiError::Unavailable {
                    code: ErrorCode::MemoryBudgetFull,
                    message: format!(
                        "the gateway holds its limit of {} MiB of request bodies and buffered results; retry shortly",
                        self.budget.total_bytes / (1024 * 1024)
                    ),
                    retry_after: Some(Duration::from_secs(1)),
                })
            }
        }
    }
}

/// Reads the body, decompressing gzip, refusing more than `limit` bytes either way, within the
/// gateway's body budget.
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    budget: &MemoryBudget,
) -> Result<ReadBody, ApiError> {
    let too_large = || ApiError::PayloadTooLarge {
        message: format!("the request body exceeds {limit} bytes"),
    };
    let mut body = body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if declared > limit {
        return Err(too_large());
    }
    let mut held = Reservation::new(budget);
    held.cover(declared).await?;
    let mut raw = Vec::with_capacity(declared);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidBody,
                format!("cannot read the request body: {e}"),
            )
        })?;
        if let Some(data) = frame.data_ref() {
            if raw.len() + data.len() > limit {
                return Err(too_large());
            }
            held.cover(raw.len() + data.len()).await?;
            raw.extend_from_slice(data);
        }
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let bytes = match encoding.as_str() {
        "" | "identity" => raw,
        "gzip" | "x-gzip" => {
            let mut decoder = flate2::read::MultiGzDecoder::new(raw.as_slice());
            let mut out = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = decoder.read(&mut chunk).map_err(|e| {
                    ApiError::bad_request(
                        ErrorCode::InvalidBody,
                        format!("the body is not valid gzip: {e}"),
                    )
                })?;
                if n == 0 {
                    break;
                }
                if out.len() + n > limit {
                    return Err(too_large());
                }
                held.cover(raw.len() + out.len() + n).await?;
                out.extend_from_slice(&chunk[..n]);
            }
            out
        }
        other => {
            return Err(ApiError::bad_request(
                ErrorCode::UnsupportedEncoding,
                format!("Content-Encoding {other:?} is not supported; use gzip or none"),
            ))
        }
    };
    Ok(ReadBody { bytes, _held: held })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn gzip_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        headers
    }

    #[tokio::test]
    async fn bodies_hold_their_share_of_the_budget_until_dropped() {
        let budget = MemoryBudget::new(4 * STEP, Duration::from_millis(50));
        let body = read_body(
            Body::from(vec![b'x'; 2 * STEP]),
            &HeaderMap::new(),
            usize::MAX,
            &budget,
        )
        .await
        .unwrap();
        assert_eq!(body.len(), 2 * STEP);
        assert_eq!(budget.in_use(), 2 * STEP);
        let refused = read_body(
            Body::from(vec![b'y'; 3 * STEP]),
            &HeaderMap::new(),
            usize::MAX,
            &budget,
        )
        .await;
        assert!(matches!(
            refused,
            Err(ApiError::Unavailable {
                code: ErrorCode::MemoryBudgetFull,
                ..
            })
        ));
        drop(body);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_gzip_bomb_is_cut_at_the_limit_and_counted_as_it_grows() {
        let budget = MemoryBudget::new(64 * STEP, Duration::from_millis(50));
        let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
        let result = read_body(Body::from(bomb), &gzip_headers(), 1024 * 1024, &budget).await;
        assert!(matches!(result, Err(ApiError::PayloadTooLarge { .. })));
        assert_eq!(budget.in_use(), 0);
        let small = read_body(Body::from(gzip(b"[1, 2]")), &gzip_headers(), 1024, &budget)
            .await
            .unwrap();
        assert_eq!(&small[..], b"[1, 2]");
    }
}
