//! Running rendered templates on ClickHouse: limits, attribution, formats.

pub mod http;
pub mod openapi;
pub mod runner;

use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};

use serde_json::Map;

use crate::access::auth::Principal;
use crate::access::policy::RolePolicy;
use crate::access::RowFilters;
use crate::catalog::{Catalog, RenderError, Rendered, Template};
use crate::error::ApiError;
use crate::error::ErrorCode;

/// Output formats of template endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Tsv,
    Ndjson,
}

impl Format {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "json" => Self::Json,
            "csv" => Self::Csv,
            "tsv" => Self::Tsv,
            "ndjson" | "jsonl" | "jsoneachrow" => Self::Ndjson,
            _ => return None,
        })
    }

    /// From an `Accept` header; `None` when it names none of ours.
    pub fn from_accept(accept: &str) -> Option<Self> {
        accept.split(',').find_map(
            |part| match part.split(';').next().unwrap_or_default().trim() {
                "application/json" => Some(Self::Json),
                "text/csv" => Some(Self::Csv),
                "text/tab-separated-values" => Some(Self::Tsv),
                "application/x-ndjson" | "application/jsonl" => Some(Self::Ndjson),
                _ => None,
            },
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Tsv => "tsv",
            Self::Ndjson => "ndjson",
        }
    }

    fn clickhouse(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Csv => "CSVWithNames",
            Self::Tsv => "TSVWithNames",
            Self::Ndjson => "JSONEachRow",
        }
    }

    /// Counts the rows of a streamed result in this format (one line per row, after a header line
    /// in CSV and TSV).
    pub fn row_lines(self) -> crate::audit::RowLines {
        match self {
            Self::Csv => crate::audit::RowLines::new(1, true),
            Self::Tsv => crate::audit::RowLines::new(1, false),
            Self::Json | Self::Ndjson => crate::audit::RowLines::new(0, false),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Tsv => "text/tab-separated-values; charset=utf-8",
            Self::Ndjson => "application/x-ndjson",
        }
    }
}

/// Who runs what, for `log_comment` and `query_id`, and the limits that apply to them.
pub struct Attribution<'a> {
    pub request_id: &'a str,
    pub principal: &'a Principal,
    /// The role's caps on the template's own limits.
    pub max_execution_secs: u64,
    pub max_rows: u64,
    /// ClickHouse `additional_table_filters` from the role's row filters.
    pub table_filters: Option<String>,
    /// Largest JSON result (ClickHouse's `max_result_bytes`): it is held in memory while reshaped.
    pub max_json_bytes: u64,
    /// The salt of pseudonymized personal data, for a role without `pii`; `None`: raw values.
    pub pii_salt: Option<&'a str>,
}

impl<'a> Attribution<'a> {
    /// The salt for `role`'s results: `None` when the role may see personal data.
    pub fn pii_salt(role: &RolePolicy, salt: &'a str) -> Option<&'a str> {
        (!role.pii).then_some(salt)
    }
}

use crate::catalog::template::PII_SALT_PARAM;

/// `sql` with each of `columns` of its result replaced by a pseudonym: the first 16 hex digits of
/// SHA-256 over the salt and the value (empty stays empty).
fn masked_sql(sql: &str, columns: &[String]) -> String {
    let replaced: Vec<String> = columns
        .iter()
        .map(|c| {
            let column = format!("`{}`", c.replace('`', "``"));
            format!(
                "if(empty(toString({column})), '', substring(lower(hex(SHA256(concat({{{PII_SALT_PARAM}:String}}, toString({column}))))), 1, 16)) AS {column}"
            )
        })
        .collect();
    format!(
        "SELECT * REPLACE ({}) FROM (\n{sql}\n)",
        replaced.join(", ")
    )
}

/// A query on its way: ClickHouse's response body, streamed.
pub struct Running {
    pub cursor: clickhouse::query::BytesCursor,
    pub started: Instant,
}

/// Starts a rendered template on ClickHouse with the template's limits.
pub fn start(
    client: &clickhouse::Client,
    template: &Template,
    rendered: &Rendered,
    format: Format,
    who: &Attribution<'_>,
) -> Result<Running, ApiError> {
    let meta = template.meta();
    let comment = json!({
        "template": template.name(),
        "version": template.version(),
        "key_id": who.principal.key_id,
        "key": who.principal.name,
        "role": who.principal.role,
    });
    let masked = match who.pii_salt {
        Some(salt) if !meta.pii_columns.is_empty() => {
            Some((masked_sql(&rendered.sql, &meta.pii_columns), salt))
        }
        _ => None,
    };
    let mut query = client
        .query(masked.as_ref().map_or(&rendered.sql, |(sql, _)| sql))
        .with_setting("readonly", "1")
        .with_setting(
            "max_execution_time",
            meta.max_execution_secs
                .min(who.max_execution_secs)
                .to_string(),
        )
        .with_setting(
            "max_result_rows",
            meta.max_rows.min(who.max_rows).to_string(),
        )
        .with_setting("result_overflow_mode", "throw")
        .with_setting("query_id", who.request_id)
        .with_setting("log_comment", comment.to_string())
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .with_setting("output_format_json_quote_decimals", "0")
        .with_setting("output_format_json_named_tuples_as_objects", "1");
    if let Some(filters) = &who.table_filters {
        query = query.with_setting("additional_table_filters", filters.clone());
    }
    if format == Format::Json {
        query = query.with_setting("max_result_bytes", who.max_json_bytes.to_string());
    }
    for (name, value) in &rendered.bindings {
        query = query.param(name, value);
    }
    if let Some((_, salt)) = masked {
        query = query.param(PII_SALT_PARAM, salt);
    }
    // The statement text is ours (rendered and guarded), so the client's `?` binding is off.
    let cursor = query
        .fetch_bytes(format.clickhouse())
        .map_err(|e| clickhouse_error(&e))?;
    Ok(Running {
        cursor,
        started: Instant::now(),
    })
}

/// Renders a call for the principal: parameters named like a row-filtered column are fixed to the
/// caller's claim (giving another value is refused), and the row filters of the tables read are
/// resolved.
pub fn render_for(
    catalog: &Catalog,
    template: &Template,
    role: &RolePolicy,
    principal: &Principal,
    mut params: Map<String, Value>,
    database: &str,
) -> Result<(Rendered, RowFilters), ApiError> {
    for (column, value) in crate::access::fixed_params(role, principal)? {
        if !template.meta().params.contains_key(&column) {
            continue;
        }
        match params.get(&column) {
            Some(given) if given.as_str() != Some(value.as_str()) => {
                return Err(ApiError::forbidden(
                    ErrorCode::RowFilterParam,
                    format!("{column}: fixed by your row filter; it cannot be set"),
                ));
            }
            _ => {
                params.insert(column, Value::String(value));
            }
        }
    }
    let rendered = catalog.render(template, &params).map_err(|e| match e {
        RenderError::Param(p) => ApiError::bad_request(ErrorCode::InvalidParameter, p.to_string()),
        RenderError::Template(e) | RenderError::Guard(e) => {
            ApiError::Internal(anyhow::anyhow!("{e}"))
        }
    })?;
    let filters = crate::access::row_filters(role, principal, database, &rendered.tables)?;
    Ok((rendered, filters))
}

/// A result streamed chunk by chunk, as ClickHouse produces it.
pub type ResultStream = futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>;

/// A ClickHouse result as a stream; `hold` (a query slot, say) lives as long as the stream. The
/// first chunk is awaited here, so that a statement ClickHouse refuses at once is an error
/// rather than a stream cut short.
pub async fn stream<H: Send + 'static>(
    mut cursor: clickhouse::query::BytesCursor,
    hold: H,
    what: &'static str,
) -> Result<ResultStream, ApiError> {
    use futures_util::StreamExt as _;
    let first = cursor.next().await.map_err(|e| clickhouse_error(&e))?;
    let rest = futures_util::stream::unfold((cursor, hold), move |(mut cursor, hold)| async move {
        match cursor.next().await {
            Ok(Some(bytes)) => Some((Ok::<_, std::io::Error>(bytes), (cursor, hold))),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, what, "streaming a ClickHouse result failed");
                Some((Err(std::io::Error::other(e.to_string())), (cursor, hold)))
            }
        }
    });
    let first = futures_util::stream::iter(first.map(Ok::<_, std::io::Error>));
    Ok(first.chain(rest).boxed())
}

/// A JSON result takes about this many times its text while it is parsed and rendered again.
pub const JSON_EXPANSION: usize = 4;

/// Reads a JSON result and reshapes it: `{query, version, meta, data, rows, statistics}`. The
/// result's memory (its text, parsed and rendered) is held under `budget` while it is built.
pub async fn collect_json(
    running: Running,
    template: &Template,
    held: &mut crate::http::body::Reservation,
) -> Result<Value, ApiError> {
    let mut cursor = running.cursor;
    let mut text = Vec::new();
    while let Some(chunk) = cursor.next().await.map_err(|e| clickhouse_error(&e))? {
        held.cover((text.len() + chunk.len()) * JSON_EXPANSION)
            .await?;
        text.extend_from_slice(&chunk);
    }
    let bytes = Bytes::from(text);
    let mut result: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::Internal(anyhow::anyhow!("ClickHouse returned invalid JSON: {e}"))
    })?;
    let statistics = result.get("statistics").cloned().unwrap_or_default();
    Ok(json!({
        "query": template.name(),
        "version": template.version(),
        "meta": result["meta"].take(),
        "data": result["data"].take(),
        "rows": result["rows"].take(),
        "statistics": {
            "elapsed_ms": running.started.elapsed().as_secs_f64() * 1000.0,
            "server_elapsed_ms": statistics["elapsed"].as_f64().map(|s| s * 1000.0),
            "rows_read": statistics["rows_read"],
            "bytes_read": statistics["bytes_read"],
        }
    }))
}

/// Maps a ClickHouse failure of a template run onto the HTTP boundary.
pub fn clickhouse_error(error: &clickhouse::error::Error) -> ApiError {
    let text = error.to_string();
    let failure = classify_clickhouse_error(error, &text);
    let kind = match failure.code() {
        ErrorCode::QueryTimeout => "timeout",
        ErrorCode::ResultTooLarge => "too_large",
        ErrorCode::ClickhouseOverloaded => "overloaded",
        ErrorCode::ClickhouseUnavailable => "unavailable",
        ErrorCode::QueryValueRejected => "value",
        _ => "other",
    };
    metrics::counter!("chgate_query_clickhouse_errors_total", "kind" => kind).increment(1);
    failure
}

/// A template's statement is the server's (its author's), so only failures caused by the values
/// the caller gave, limits and ClickHouse's load reach the caller as such; the rest is a 500.
fn classify_clickhouse_error(error: &clickhouse::error::Error, text: &str) -> ApiError {
    use crate::storage::clickhouse_errors::{code_in, fault, message_in, Fault};
    let Some(code) = code_in(text) else {
        return if matches!(error, clickhouse::error::Error::Network(_)) {
            ApiError::Unavailable {
                code: ErrorCode::ClickhouseUnavailable,
                message: "ClickHouse cannot be reached; retry shortly".into(),
                retry_after: Some(std::time::Duration::from_secs(2)),
            }
        } else {
            ApiError::Internal(anyhow::anyhow!("ClickHouse query failed: {text}"))
        };
    };
    match fault(code) {
        Some(Fault::Timeout) => ApiError::Timeout {
            code: ErrorCode::QueryTimeout,
            message: "the query took longer than this template's max_execution_secs; narrow the time range".into(),
        },
        Some(Fault::TooLarge) => ApiError::bad_request(
            ErrorCode::ResultTooLarge,
            "the result exceeds this template's max_rows or the size a JSON answer may have; narrow the parameters, or download it as CSV, TSV or NDJSON (streamed, without that size limit)",
        ),
        Some(Fault::Value) => ApiError::bad_request(
            ErrorCode::QueryValueRejected,
            format!(
                "the query cannot run with these parameter values: {}",
                message_in(text)
            ),
        ),
        Some(Fault::Overloaded) => ApiError::Unavailable {
            code: ErrorCode::ClickhouseOverloaded,
            message: "ClickHouse is out of memory or connections for this query; retry later".into(),
            retry_after: Some(std::time::Duration::from_secs(5)),
        },
        Some(Fault::Unavailable) => ApiError::Unavailable {
            code: ErrorCode::ClickhouseUnavailable,
            message: "ClickHouse cannot reach a part of itself; retry shortly".into(),
            retry_after: Some(std::time::Duration::from_secs(2)),
        },
        Some(Fault::Statement | Fault::Missing | Fault::Denied | Fault::Conflict) | None => {
            ApiError::Internal(anyhow::anyhow!("ClickHouse error {code}: {text}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_names_and_accept_headers() {
        assert_eq!(Format::parse("CSV"), Some(Format::Csv));
        assert_eq!(
            Format::from_accept("text/html, text/csv;q=0.9"),
            Some(Format::Csv)
        );
        assert_eq!(Format::from_accept("*/*"), None);
    }
}
