//! Every error code the API answers with, declared once: its HTTP status and what it means.
//! `docs/errors.md` is this table, checked by a test.

macro_rules! error_codes {
    ($($variant:ident = $text:literal, $status:literal, $meaning:literal;)*) => {
        /// A stable, snake_case error code: `{"error": {"code": …}}`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(
                #[doc = $meaning]
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code, in the order of the documentation.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as clients see it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }

            /// The HTTP status answered with this code.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// What the code means, for the documentation.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    // 400: the request breaks a documented rule; the message names the field and the rule.
    InvalidBody = "invalid_body", 400, "The body cannot be read or parsed, or a field of it breaks a rule (the JSON path is named).";
    InvalidJson = "invalid_json", 400, "The body is not valid JSON.";
    UnsupportedEncoding = "unsupported_encoding", 400, "`Content-Encoding` other than identity, gzip, deflate, br or zstd, or a body that does not decode.";
    InvalidParameter = "invalid_parameter", 400, "A template or query parameter is missing, unknown, of the wrong type or out of its range.";
    DuplicateParameter = "duplicate_parameter", 400, "A parameter is given twice (query string and body, or twice in one).";
    InvalidVersion = "invalid_version", 400, "The template version in the path is not `v<N>`.";
    RowFilterParam = "row_filter_param", 400, "A parameter fixed by the caller's row-filter claims is given with another value.";
    QueryValueRejected = "query_value_rejected", 400, "ClickHouse cannot run the template with these parameter values.";
    ResultTooLarge = "result_too_large", 400, "The result exceeds the template's `max_rows` or the size a JSON answer may have; download it instead.";
    InvalidAlert = "invalid_alert", 400, "An alert definition breaks a rule.";
    InvalidReport = "invalid_report", 400, "A report definition breaks a rule.";
    InvalidSegment = "invalid_segment", 400, "A segment definition breaks a rule.";
    InvalidExperiment = "invalid_experiment", 400, "An experiment definition breaks a rule.";
    InvalidPrediction = "invalid_prediction", 400, "A prediction request breaks a rule (its column, season or thresholds, or a series too short).";
    InvalidMetric = "invalid_metric", 400, "A saved metric definition breaks a rule, or an experiment refers to a saved metric it may not use.";
    StaticSegment = "static_segment", 400, "A static segment cannot be changed; create a new one.";
    NotComputed = "not_computed", 400, "The segment has not been computed yet; refresh it.";
    InvalidExport = "invalid_export", 400, "A segment export request breaks a rule (format, attributes, webhook).";
    ExportTooLarge = "export_too_large", 400, "An export to a webhook exceeds the size sent in one request; download it instead.";
    EvaluationFailed = "evaluation_failed", 400, "An alert evaluated on request failed; the message says why (also in its runs).";
    ReportFailed = "report_failed", 400, "A report run on request failed; the message says why (also in its runs).";
    RefreshFailed = "refresh_failed", 400, "A segment refresh on request failed; the message says why (also in its runs).";
    ResultsFailed = "results_failed", 400, "An experiment's results computed as a run on request failed; the message says why (also in its runs).";
    InvalidKey = "invalid_key", 400, "An API key request breaks a rule (name, role, attributes).";
    // 401: no credentials, or credentials that do not authenticate.
    MissingCredentials = "missing_credentials", 401, "No API key or JWT was sent.";
    InvalidApiKey = "invalid_api_key", 401, "The API key is not valid.";
    RevokedApiKey = "revoked_api_key", 401, "The API key has been revoked.";
    InvalidToken = "invalid_token", 401, "The JWT cannot be parsed.";
    InvalidTokenSignature = "invalid_token_signature", 401, "The JWT's signature does not verify.";
    InvalidTokenAlgorithm = "invalid_token_algorithm", 401, "The JWT is signed with an algorithm the gateway does not accept.";
    InvalidTokenIssuer = "invalid_token_issuer", 401, "The JWT's issuer is not the configured one.";
    InvalidTokenAudience = "invalid_token_audience", 401, "The JWT's audience is not the configured one.";
    TokenExpired = "token_expired", 401, "The JWT has expired.";
    TokenNotYetValid = "token_not_yet_valid", 401, "The JWT is not valid yet (`nbf`).";
    TokenWithoutRole = "token_without_role", 401, "The JWT carries no role claim.";
    JwtNotConfigured = "jwt_not_configured", 401, "A JWT was sent, but this gateway verifies none (`access.jwt`).";
    // 403: authenticated, but not allowed.
    RoleWithoutPolicy = "role_without_policy", 403, "The caller's role has no policy in the access file.";
    AdminOnly = "admin_only", 403, "Only admins may do this.";
    TemplateNotAllowed = "template_not_allowed", 403, "The caller's role may not run this template.";
    TableNotAllowed = "table_not_allowed", 403, "The caller's role may not read this table.";
    ExportNotAllowed = "export_not_allowed", 403, "The caller's role may not download or export results.";
    IngestNotAllowed = "ingest_not_allowed", 403, "The caller's role may not send these events.";
    MissingClaim = "missing_claim", 403, "A row filter needs a claim the caller's key or token does not carry.";
    // 404: nothing of that name that the caller may see.
    RouteNotFound = "route_not_found", 404, "No route for this method and path.";
    UnknownTemplate = "unknown_template", 404, "No template of that name.";
    UnknownVersion = "unknown_version", 404, "The template has no such version.";
    UnknownAlert = "unknown_alert", 404, "No alert with that id that the caller may see.";
    UnknownReport = "unknown_report", 404, "No report with that id that the caller may see.";
    UnknownSegment = "unknown_segment", 404, "No segment with that id that the caller may see.";
    UnknownExperiment = "unknown_experiment", 404, "No experiment with that id that the caller may see.";
    UnknownMetric = "unknown_metric", 404, "No saved metric with that id that the caller may see.";
    UnknownRun = "unknown_run", 404, "No stored report file for that run that the caller may see.";
    UnknownKey = "unknown_key", 404, "No active API key of that name.";
    // 409: the request collides with another.
    DuplicateKeyName = "duplicate_key_name", 409, "An active API key already has that name.";
    MetricInUse = "metric_in_use", 409, "Experiments use the saved metric; it is deleted once none does.";
    // 413: too large to take.
    PayloadTooLarge = "payload_too_large", 413, "The body exceeds the endpoint's limit.";
    // 429: over a rate or concurrency limit; retry after `Retry-After`.
    RateLimited = "rate_limited", 429, "The caller's role is over its request rate.";
    TooManyConcurrentQueries = "too_many_concurrent_queries", 429, "The caller's role has its maximum of queries running.";
    // 503: the gateway or a dependency cannot take the request now; retry after `Retry-After`.
    GatewayBusy = "gateway_busy", 503, "The gateway runs its maximum of queries.";
    MemoryBudgetFull = "memory_budget_full", 503, "The memory the gateway gives request bodies and buffered results is in use.";
    IngestOverloaded = "ingest_overloaded", 503, "The ingestion queue is full; events are not taken until it drains.";
    WalFull = "wal_full", 503, "The write-ahead log has reached its size limit.";
    WalUnavailable = "wal_unavailable", 503, "The write-ahead log cannot be written.";
    ShuttingDown = "shutting_down", 503, "The gateway is stopping.";
    AuthUnavailable = "auth_unavailable", 503, "Credentials cannot be checked right now (Postgres).";
    ClickhouseUnavailable = "clickhouse_unavailable", 503, "ClickHouse cannot be reached.";
    ClickhouseOverloaded = "clickhouse_overloaded", 503, "ClickHouse is out of memory or connections for this query.";
    // 504: the work took longer than its limit.
    QueryTimeout = "query_timeout", 504, "The query took longer than the template's `max_execution_secs`.";
    // 500: a fault of the gateway; the cause is logged with the request id.
    InternalError = "internal_error", 500, "An unexpected failure; the body carries only the request id.";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The table of `docs/errors.md`.
pub fn markdown_table() -> String {
    let mut table = String::from("| code | status | meaning |\n|---|---|---|\n");
    for code in ErrorCode::ALL {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            code.as_str(),
            code.status(),
            code.meaning()
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_documented_in_docs_errors_md() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
        }
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/errors.md"))
            .unwrap();
        assert!(
            docs.contains(&markdown_table()),
            "docs/errors.md must hold the table of src/error/code.rs; it is:\n{}",
            markdown_table()
        );
    }
}
