//! HTTP endpoints of ingestion: native `POST /v1/events` and the Segment-compatible tracking API.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::enrich::{net, RequestFacts};
use super::model::{visit_scalars_as_kind, RawEvent, Rejection, Rules};
use super::sender::Sender;
use super::{segment, Backpressure, BatchResult, RejectedEvent};
use crate::access::auth::Principal;
use crate::access::policy::RolePolicy;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::http::body::read_body;

/// What the ingestion endpoints use.
#[derive(Clone)]
pub struct Intake {
    /// Validation, enrichment and the write path.
    pub pipeline: super::Pipeline,
    /// The caller's role: which events it may send.
    pub access: crate::access::Access,
    /// Request bodies are read within the gateway's memory budget.
    pub buffers: crate::http::body::MemoryBudget,
}

#[derive(Debug, Default, Deserialize)]
pub struct IngestQuery {
    /// Answer only after ClickHouse stored the events.
    #[serde(default)]
    wait: Option<String>,
    /// `ndjson` to force newline-delimited parsing whatever the content type.
    #[serde(default)]
    format: Option<String>,
}

impl IngestQuery {
    fn wait(&self) -> Result<bool, ApiError> {
        match self.wait.as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(other) => Err(ApiError::bad_request(
                ErrorCode::InvalidParameter,
                format!("wait: expected true or false, got {other:?}"),
            )),
        }
    }
}

/// `POST /v1/events`: one event, a JSON array of events, or NDJSON.
pub async fn events(
    State(state): State<Intake>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<IngestQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let role = authorize(&state, &principal).await?;
    let wait = query.wait()?;
    let bytes = read_events_body(&state, body, &headers).await?;
    let ndjson = query.format.as_deref() == Some("ndjson") || is_ndjson(&headers);
    let (positions, values, parse_errors) = if ndjson {
        parse_ndjson(&bytes)
    } else {
        (Vec::new(), parse_json(&bytes)?, Vec::new())
    };
    admit(
        &state,
        &principal,
        &role,
        values.len() + parse_errors.len(),
        values.len(),
    )?;
    let _rows = hold_rows(&state, values.len(), bytes.len()).await?;
    let facts = facts(&state, &principal, peer, &headers);
    let rules = rules(&state, &facts, &role.ingest_events);
    // NDJSON lines that failed to parse keep their positions in the response.
    let result = state.pipeline.ingest(values, &rules, &facts, wait).await;
    respond(result.map(|r| remap(r, &positions, parse_errors)), wait)
}

/// A body of events, within `ingest.max_body_bytes` and the gateway's memory budget.
async fn read_events_body(
    state: &Intake,
    body: Body,
    headers: &HeaderMap,
) -> Result<crate::http::body::ReadBody, ApiError> {
    read_body(
        body,
        headers,
        state.pipeline.settings.max_body_bytes,
        &state.buffers,
    )
    .await
}

/// Room in the memory budget for the rows a batch becomes while it is validated and enriched
/// (until the queue takes them): a row's fields, and about its text again.
async fn hold_rows(
    state: &Intake,
    events: usize,
    text: usize,
) -> Result<crate::http::body::Reservation, ApiError> {
    let mut held = crate::http::body::Reservation::new(&state.buffers);
    held.cover(events * std::mem::size_of::<super::row::EventRow>() + text)
        .await?;
    Ok(held)
}

/// `POST /v1/batch`: a Segment batch `{batch: [...], context?, sentAt?}`.
pub async fn segment_batch(
    State(state): State<Intake>,
    principal: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<IngestQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_events_body(&state, body, &headers).await?;
    let Value::Object(mut envelope) = parse_document(&bytes)? else {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "body: must be a JSON object with a `batch` array",
        ));
    };
    let messages = match envelope.remove("batch") {
        Some(Value::Array(items)) => items,
        _ => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "batch: is required and must be an array",
            ))
        }
    };
    segment_ingest(
        state, principal, peer, query, headers, messages, None, envelope,
    )
    .await
}

/// Handlers of the single-message calls, which take their type from the path.
macro_rules! segment_calls {
    ($($name:ident => $kind:literal),* $(,)?) => {$(
        #[doc = concat!("`POST /v1/", $kind, "`: one Segment `", $kind, "` message.")]
        pub async fn $name(
            State(state): State<Intake>,
            principal: Principal,
            ConnectInfo(peer): ConnectInfo<SocketAddr>,
            Query(query): Query<IngestQuery>,
            headers: HeaderMap,
            body: Body,
        ) -> Result<Response, ApiError> {
            segment_single($kind, state, principal, peer, query, headers, body).await
        }
    )*};
}

segment_calls!(
    segment_track => "track",
    segment_page => "page",
    segment_screen => "screen",
    segment_identify => "identify",
    segment_group => "group",
    segment_alias => "alias",
);

async fn segment_single(
    kind: &'static str,
    state: Intake,
    principal: Principal,
    peer: SocketAddr,
    query: IngestQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_events_body(&state, body, &headers).await?;
    let message = parse_document(&bytes)?;
    segment_ingest(
        state,
        principal,
        peer,
        query,
        headers,
        vec![message],
        Some(kind),
        Map::new(),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn segment_ingest(
    state: Intake,
    principal: Principal,
    peer: SocketAddr,
    query: IngestQuery,
    headers: HeaderMap,
    messages: Vec<Value>,
    kind: Option<&str>,
    envelope: Map<String, Value>,
) -> Result<Response, ApiError> {
    let role = authorize(&state, &principal).await?;
    let wait = query.wait()?;
    admit(&state, &principal, &role, messages.len(), messages.len())?;
    let _rows = hold_rows(&state, messages.len(), 0).await?;
    let facts = facts(&state, &principal, peer, &headers);
    let rules = rules(&state, &facts, &role.ingest_events);
    let mut mapped = Vec::with_capacity(messages.len());
    let mut positions = Vec::with_capacity(messages.len());
    let mut rejected = Vec::new();
    for (index, message) in messages.into_iter().enumerate() {
        match segment::to_native(message, kind, &envelope, facts.received_at_ms) {
            Ok(native) => {
                mapped.push(native);
                positions.push(index);
            }
            Err(rejection) => rejected.push(to_rejected(index, rejection)),
        }
    }
    let result = state.pipeline.ingest(mapped, &rules, &facts, wait).await;
    respond(result.map(|r| remap(r, &positions, rejected)), wait)
}

/// The pipeline saw only the events that parsed: put its rejections back at their positions in
/// the request (`positions[i]` is the request index of the pipeline's event `i`; no positions:
/// every event parsed, indexes are positions) and add the events rejected before it.
fn remap(
    mut result: BatchResult,
    positions: &[usize],
    mut earlier: Vec<RejectedEvent>,
) -> BatchResult {
    for entry in &mut result.rejected {
        entry.index = positions.get(entry.index).copied().unwrap_or(entry.index);
    }
    result.rejected.append(&mut earlier);
    result.rejected.sort_by_key(|e| e.index);
    result
}

/// A batch may go on: `in_batch` events within the per-request maximum, `counted` of them within
/// the key's events per second (lines that did not even parse are not counted).
fn admit(
    state: &Intake,
    principal: &Principal,
    role: &RolePolicy,
    in_batch: usize,
    counted: usize,
) -> Result<(), ApiError> {
    check_batch_size(state, in_batch)?;
    state
        .access
        .limiter
        .events(principal, &role.limits, counted)
}

fn to_rejected(index: usize, r: Rejection) -> RejectedEvent {
    RejectedEvent {
        index,
        code: r.code,
        field: r.field,
        message: r.message,
    }
}

async fn authorize(
    state: &Intake,
    principal: &Principal,
) -> Result<std::sync::Arc<crate::access::policy::RolePolicy>, ApiError> {
    let role = state.access.role(principal)?;
    state
        .access
        .limiter
        .request(principal, &role.limits)
        .await?;
    if !role.ingest {
        return Err(ApiError::forbidden(
            ErrorCode::IngestNotAllowed,
            format!(
                "role {:?} may not send events (see the access policy)",
                principal.role
            ),
        ));
    }
    Ok(role)
}

fn rules<'a>(state: &'a Intake, facts: &RequestFacts, allowed_events: &'a [String]) -> Rules<'a> {
    Rules {
        settings: &state.pipeline.settings,
        now_ms: facts.received_at_ms,
        enforce_window: true,
        trust_context_ip: facts.sender.trusts_context_ip(),
        allowed_events,
    }
}

fn facts(
    state: &Intake,
    principal: &Principal,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> RequestFacts {
    RequestFacts {
        sender: Sender::of_role(&principal.role),
        client_ip: Some(net::client_ip(
            peer.ip(),
            headers,
            &state.pipeline.enricher.trusted_proxies,
        )),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        received_at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

fn check_batch_size(state: &Intake, events: usize) -> Result<(), ApiError> {
    let max = state.pipeline.settings.max_batch_events;
    if events > max {
        return Err(ApiError::PayloadTooLarge {
            message: format!(
                "the batch has {events} events; at most {max} are accepted per request"
            ),
        });
    }
    Ok(())
}

fn respond(result: Result<BatchResult, Backpressure>, wait: bool) -> Result<Response, ApiError> {
    let (result, confirmed) = match result {
        Ok(result) => (result, wait),
        Err(Backpressure::WaitTimedOut) => {
            return Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::json!({
                    "accepted": null,
                    "confirmed": false,
                    "message": Backpressure::WaitTimedOut.to_string(),
                })),
            )
                .into_response())
        }
        Err(pressure) => {
            let code = match &pressure {
                Backpressure::Wal(super::wal::WalError::Full { .. }) => ErrorCode::WalFull,
                Backpressure::Wal(_) => ErrorCode::WalUnavailable,
                Backpressure::ShuttingDown => ErrorCode::ShuttingDown,
                _ => ErrorCode::IngestOverloaded,
            };
            metrics::counter!("chgate_ingest_backpressure_total", "code" => code.as_str())
                .increment(1);
            return Err(ApiError::Unavailable {
                code,
                message: pressure.to_string(),
                retry_after: Some(std::time::Duration::from_secs(1)),
            });
        }
    };
    let status = if result.accepted == 0 && !result.rejected.is_empty() {
        StatusCode::BAD_REQUEST
    } else if confirmed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(result)).into_response())
}

fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| {
            matches!(
                v.as_str(),
                "application/x-ndjson"
                    | "application/ndjson"
                    | "application/jsonl"
                    | "application/x-jsonlines"
            )
        })
}

fn parse_document(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(invalid_json)
}

fn invalid_json(e: serde_json::Error) -> ApiError {
    ApiError::bad_request(
        ErrorCode::InvalidJson,
        format!(
            "body: invalid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ),
    )
}

/// A JSON body: one event object or an array of them, read without building JSON values.
pub fn parse_json(bytes: &[u8]) -> Result<Vec<RawEvent<'_>>, ApiError> {
    struct Body<'a>(Result<Vec<RawEvent<'a>>, &'static str>);
    /// Room for the events a body of this size likely holds (real events take a few hundred
    /// bytes), so the list is not copied over and over while it grows.
    struct BodyVisitor(usize);
    impl<'de> Visitor<'de> for BodyVisitor {
        type Value = Body<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an event object or an array of events")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(self.0));
            while let Some(event) = seq.next_element()? {
                events.push(event);
            }
            Ok(Body(Ok(events)))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Ok(Body(Ok(vec![RawEvent::from_map(map)?])))
        }
        visit_scalars_as_kind!(|kind| Body(Err(kind)));
    }
    // Checked once for the whole body: the parser then need not check each string it borrows.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidJson,
            format!(
                "body: not UTF-8 text: invalid byte sequence at byte offset {}",
                e.valid_up_to()
            ),
        )
    })?;
    let mut parser = serde_json::Deserializer::from_str(text);
    let body = (&mut parser)
        .deserialize_any(BodyVisitor(bytes.len() / 256))
        .and_then(|body| parser.end().map(|()| body))
        .map_err(invalid_json)?;
    match body.0 {
        Ok(events) => Ok(events),
        Err(kind) => Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("body: must be an event object or an array of events, got {kind}"),
        )),
    }
}

/// One event per line; a line that is not JSON is rejected on its own, naming its line number.
/// Returns the positions of the events that parsed (among non-blank lines), the events, and the
/// rejections of the others.
fn parse_ndjson(bytes: &[u8]) -> (Vec<usize>, Vec<RawEvent<'_>>, Vec<RejectedEvent>) {
    let mut positions = Vec::new();
    let mut values = Vec::new();
    let mut errors = Vec::new();
    let mut index = 0;
    for (line_number, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = std::str::from_utf8(line)
            .map_err(|e| {
                format!(
                    "not UTF-8 text: invalid byte sequence at column {}",
                    e.valid_up_to() + 1
                )
            })
            .and_then(|text| {
                serde_json::from_str::<RawEvent<'_>>(text)
                    .map_err(|e| format!("invalid JSON at column {}: {e}", e.column()))
            });
        match parsed {
            Ok(value) => {
                positions.push(index);
                values.push(value);
            }
            Err(message) => errors.push(RejectedEvent {
                index,
                code: "invalid_json",
                field: String::new(),
                message: format!("line {}: {message}", line_number + 1),
            }),
        }
        index += 1;
    }
    (positions, values, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_skips_blank_lines_and_rejects_bad_ones_by_position() {
        let (positions, values, errors) =
            parse_ndjson(b"{\"a\":1}\n\n{oops\r\n{\"b\":2}\n{\"c\":\"\xff\"}\n{\"d\":4}");
        assert_eq!(positions, vec![0, 2, 4]);
        assert_eq!(values.len(), 3);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].index, 1);
        assert!(
            errors[0].message.starts_with("line 3: invalid JSON"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[1].index, 3);
        assert_eq!(
            errors[1].message,
            "line 5: not UTF-8 text: invalid byte sequence at column 7"
        );
    }

    #[test]
    fn a_json_body_that_is_not_utf8_is_refused_naming_the_byte() {
        let err = parse_json(b"[{\"event\":\"x\xc3\"}]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "body: not UTF-8 text: invalid byte sequence at byte offset 12"
        );
        assert_eq!(parse_json(b"[{\"event\":\"\xc3\xa9\"}]").unwrap().len(), 1);
    }
}
