//! The audit log (152-FZ: who, what, when, from where, why): records are queued without blocking
//! the request and written to Postgres in batches by one task; failures and drops are counted.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::access::auth::Principal;

/// Longest SQL text or user agent kept.
const MAX_TEXT: usize = 2000;
/// Records waiting for the writer; beyond it new ones are dropped (and counted).
const QUEUE: usize = 10_000;
/// Largest parameters kept in a record (as JSON text); larger ones are noted by size only.
const MAX_PARAMS_BYTES: usize = 4096;
/// Most records written by one statement.
const MAX_BATCH: usize = 2000;

/// One audited action.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    /// When the action was asked for.
    pub at: chrono::DateTime<chrono::Utc>,
    pub request_id: String,
    pub principal: String,
    pub role: String,
    pub key_id: Option<Uuid>,
    pub ip: String,
    pub user_agent: String,
    /// `template.run`, `bi.query`, `export`, `admin.key.create`, `admin.key.revoke`, `auth.failure`…
    pub action: String,
    pub resource: String,
    pub params: Option<serde_json::Value>,
    pub sql_hash: Option<String>,
    pub sql_text: Option<String>,
    /// `ok`, `denied`, `error`.
    pub outcome: String,
    pub status: i32,
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    pub duration_ms: f64,
    /// From the `X-Audit-Reason` header.
    pub reason: String,
}

/// Where a request came from, for audit records.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: String,
    pub user_agent: String,
    pub reason: String,
}

impl Origin {
    pub fn from_parts(parts: &Parts) -> Self {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default();
        Self::from_headers(&parts.headers, ip)
    }

    pub fn from_headers(headers: &HeaderMap, ip: String) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| truncate(v, MAX_TEXT))
                .unwrap_or_default()
        };
        Self {
            ip,
            user_agent: text("user-agent"),
            reason: text("x-audit-reason"),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    }
}

impl AuditRecord {
    /// Text as Postgres stores it: a caller's U+0000 (in SQL, a parameter, a header) must not make
    /// the batch it is written in fail, and with it the records of everyone else.
    fn storable(&mut self) {
        use crate::storage::postgres::{json_without_nul, without_nul};
        for text in [
            &mut self.request_id,
            &mut self.principal,
            &mut self.role,
            &mut self.ip,
            &mut self.user_agent,
            &mut self.action,
            &mut self.resource,
            &mut self.outcome,
            &mut self.reason,
        ] {
            without_nul(text);
        }
        for text in [&mut self.sql_hash, &mut self.sql_text]
            .into_iter()
            .flatten()
        {
            without_nul(text);
        }
        if let Some(params) = &mut self.params {
            json_without_nul(params);
            // Bound a record's memory while it waits for Postgres: parameters come from callers.
            let size = params.to_string().len();
            if size > MAX_PARAMS_BYTES {
                *params = serde_json::json!({"truncated": true, "bytes": size});
            }
        }
    }

    /// A record of `action` on `resource` by `principal` (if known) from `origin`.
    pub fn new(
        action: &str,
        resource: &str,
        principal: Option<&Principal>,
        origin: &Origin,
    ) -> Self {
        Self {
            at: chrono::Utc::now(),
            request_id: crate::http::request_id::current_request_id().unwrap_or_default(),
            principal: principal.map(|p| p.name.clone()).unwrap_or_default(),
            role: principal.map(|p| p.role.clone()).unwrap_or_default(),
            key_id: principal.and_then(|p| p.key_id),
            ip: origin.ip.clone(),
            user_agent: origin.user_agent.clone(),
            action: action.to_string(),
            resource: resource.to_string(),
            reason: origin.reason.clone(),
            outcome: "ok".into(),
            status: 200,
            ..Default::default()
        }
    }

    /// A record of `action` on `resource` by `principal`, from the request's headers and peer.
    pub fn for_request(
        action: &str,
        resource: &str,
        principal: &Principal,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Self {
        Self::new(
            action,
            resource,
            Some(principal),
            &Origin::from_headers(headers, peer.ip().to_string()),
        )
    }

    /// A record of `action` on one stored definition, the resource `{kind}/{id}` (an alert, a
    /// report, a segment), by the request's principal.
    pub fn for_definition(
        action: &str,
        kind: &str,
        id: Uuid,
        principal: &Principal,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Self {
        Self::for_request(action, &format!("{kind}/{id}"), principal, headers, peer)
    }

    /// Keeps a hash of the SQL and its beginning.
    pub fn with_sql(mut self, sql: &str) -> Self {
        use sha2::Digest;
        self.sql_hash = Some(hex::encode(sha2::Sha256::digest(sql.as_bytes())));
        self.sql_text = Some(truncate(sql, MAX_TEXT));
        self
    }
}

/// A record written when dropped: when a streamed response ends (with the rows and bytes sent), or
/// as soon as the request fails. Whatever happens to the request, it is audited once.
pub struct Pending {
    log: Option<AuditLog>,
    record: AuditRecord,
    started: std::time::Instant,
}

impl Pending {
    pub fn new(log: &AuditLog, record: AuditRecord) -> Self {
        Self {
            log: Some(log.clone()),
            record,
            started: std::time::Instant::now(),
        }
    }

    pub fn record(&mut self) -> &mut AuditRecord {
        &mut self.record
    }

    /// Moves the pending record out (into a response stream, say); `self` then writes nothing.
    pub fn take(&mut self) -> Self {
        Self {
            log: self.log.take(),
            record: std::mem::take(&mut self.record),
            started: self.started,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            let mut record = std::mem::take(&mut self.record);
            record.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            log.record(record);
        }
    }
}

/// `response` with its body counted into the pending record, which is written when the body has
/// been sent (or dropped). A JSON template result also gives its row count. The body keeps its
/// size, so a result held in memory is still sent with a Content-Length in one write.
pub fn count_body(
    response: axum::response::Response,
    mut pending: Pending,
) -> axum::response::Response {
    let (parts, body) = response.into_parts();
    if let Some(rows) = parts.extensions.get::<ResultRows>() {
        pending.record().rows = Some(rows.0);
    }
    let lines = parts.extensions.get::<RowLines>().cloned();
    pending.record().bytes = Some(0);
    let counted = CountedBody {
        inner: body,
        pending,
        lines,
    };
    axum::response::Response::from_parts(parts, axum::body::Body::new(counted))
}

/// A response body that adds the bytes (and rows) it yields to its audit record.
struct CountedBody {
    inner: axum::body::Body,
    pending: Pending,
    lines: Option<RowLines>,
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let record = this.pending.record();
                record.bytes = Some(record.bytes.unwrap_or(0) + data.len() as i64);
                if let Some(lines) = this.lines.as_mut() {
                    record.rows = Some(lines.count(data));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Rows of a result, attached to a response for its audit record.
#[derive(Debug, Clone, Copy)]
pub struct ResultRows(pub i64);

/// Counts the rows of a line-per-row result (TSV, CSV, NDJSON) as it streams, for its audit
/// record: line ends outside double quotes (CSV keeps line breaks inside quoted fields; TSV and
/// NDJSON escape them), minus the header lines.
#[derive(Debug, Clone)]
pub struct RowLines {
    header_lines: i64,
    quoted: bool,
    in_quotes: bool,
    lines: i64,
}

impl RowLines {
    /// `quoted`: double quotes delimit fields that may hold line breaks (CSV).
    pub fn new(header_lines: i64, quoted: bool) -> Self {
        Self {
            header_lines,
            quoted,
            in_quotes: false,
            lines: 0,
        }
    }

    /// Takes the next chunk; returns the rows seen so far.
    pub fn count(&mut self, chunk: &[u8]) -> i64 {
        if self.quoted {
            for &b in chunk {
                match b {
                    b'"' => self.in_quotes = !self.in_quotes,
                    b'\n' if !self.in_quotes => self.lines += 1,
                    _ => {}
                }
            }
        } else {
            self.lines += chunk.iter().filter(|&&b| b == b'\n').count() as i64;
        }
        (self.lines - self.header_lines).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::RowLines;

    #[test]
    fn rows_are_counted_across_chunks_and_quoted_line_breaks() {
        let mut csv = RowLines::new(1, true);
        csv.count(b"\"a\",\"b\"\n\"1\",\"x");
        csv.count(b"\ny\"\n\"2\",\"\"\"\"\n");
        assert_eq!(
            csv.count(b""),
            2,
            "header, a quoted line break, a quoted quote"
        );
        let mut ndjson = RowLines::new(0, false);
        ndjson.count(b"{\"a\":\"x\\ny\"}\n{");
        assert_eq!(ndjson.count(b"}\n"), 2);
    }
}

/// Handle on the audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditRecord>,
}

impl AuditLog {
    /// Starts the writer (and the retention clean-up) on the current runtime.
    pub fn start(pool: PgPool, retention_days: u32, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx, retention_days, stop));
        Self { tx }
    }

    /// Queues a record; never waits.
    pub fn record(&self, mut record: AuditRecord) {
        record.storable();
        if self.tx.try_send(record).is_err() {
            metrics::counter!("chgate_audit_dropped_total").increment(1);
        }
    }
}

async fn run(
    pool: PgPool,
    mut rx: mpsc::Receiver<AuditRecord>,
    retention_days: u32,
    stop: CancellationToken,
) {
    let mut cleanup = tokio::time::interval(Duration::from_secs(3600));
    loop {
        let first = tokio::select! {
            record = rx.recv() => match record { Some(r) => r, None => break },
            _ = cleanup.tick() => {
                let deleted = sqlx::query("DELETE FROM audit_log WHERE at < now() - make_interval(days => $1)")
                    .bind(retention_days as i32)
                    .execute(&pool)
                    .await;
                if let Err(e) = deleted {
                    tracing::debug!(error = %e, "audit retention clean-up failed");
                }
                continue;
            }
            _ = stop.cancelled() => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(200);
        for attempt in 0..5 {
            match write_relaxed(&pool, &batch).await {
                Ok(()) => {
                    metrics::counter!("chgate_audit_records_total").increment(batch.len() as u64);
                    break;
                }
                Err(e) => {
                    metrics::counter!("chgate_audit_errors_total").increment(1);
                    tracing::warn!(error = %e, attempt, "writing the audit log failed");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
    // Flush what is queued at shutdown.
    let rest: Vec<AuditRecord> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    if !rest.is_empty() {
        let _ = write(&pool, &rest).await;
    }
}

/// Writes a batch of the running writer without waiting for Postgres to flush its log to disk
/// (`synchronous_commit = off`, for this transaction only): a Postgres crash may then lose the
/// last fraction of a second of records, as a gateway crash loses the records still queued, so a
/// disk flush per batch would buy no guarantee the log has, at thousands of calls a second.
async fn write_relaxed(pool: &PgPool, batch: &[AuditRecord]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    write(&mut *tx, batch).await?;
    tx.commit().await
}

/// Writes records at once (the command line, which has no running writer, calls it directly).
/// One statement with one array per column, whatever the number of records: Postgres plans it once.
pub async fn write<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    batch: &[AuditRecord],
) -> Result<(), sqlx::Error> {
    fn column<'a, T>(batch: &'a [AuditRecord], f: impl Fn(&'a AuditRecord) -> T) -> Vec<T> {
        batch.iter().map(f).collect()
    }
    sqlx::query(
        "INSERT INTO audit_log (at, request_id, principal, role, key_id, ip, user_agent, action, resource, params, sql_hash, sql_text, outcome, status, rows, bytes, duration_ms, reason)
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[], $11::text[], $12::text[], $13::text[], $14::int4[], $15::int8[], $16::int8[], $17::float8[], $18::text[])",
    )
    .bind(column(batch, |r| r.at))
    .bind(column(batch, |r| r.request_id.as_str()))
    .bind(column(batch, |r| r.principal.as_str()))
    .bind(column(batch, |r| r.role.as_str()))
    .bind(column(batch, |r| r.key_id))
    .bind(column(batch, |r| r.ip.as_str()))
    .bind(column(batch, |r| r.user_agent.as_str()))
    .bind(column(batch, |r| r.action.as_str()))
    .bind(column(batch, |r| r.resource.as_str()))
    .bind(column(batch, |r| r.params.as_ref()))
    .bind(column(batch, |r| r.sql_hash.as_deref()))
    .bind(column(batch, |r| r.sql_text.as_deref()))
    .bind(column(batch, |r| r.outcome.as_str()))
    .bind(column(batch, |r| r.status))
    .bind(column(batch, |r| r.rows))
    .bind(column(batch, |r| r.bytes))
    .bind(column(batch, |r| r.duration_ms))
    .bind(column(batch, |r| r.reason.as_str()))
    .execute(executor)
    .await?;
    Ok(())
}
