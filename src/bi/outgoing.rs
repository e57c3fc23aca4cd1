//! What goes to ClickHouse besides the SQL: the URL parameters that pass, the placeholders'
//! values, the format, the settings after the role's policy, and the settings the gateway sets
//! (`readonly`, limits, `log_comment`, the row filters); with the parts that key the cache.

use std::collections::BTreeSet;

use super::error::BiError;
use super::settings;
use super::statement::Plan;
use crate::access::auth::Principal;
use crate::access::policy::RolePolicy;

/// URL parameters of ClickHouse's HTTP interface that are not settings and go through as sent.
const TRANSPORT: &[&str] = &[
    "default_format",
    "client_protocol_version",
    "compress",
    "quota_key",
    "buffer_size",
    "wait_end_of_query",
    "session_timeout",
    "session_check",
];

/// URL parameters the gateway consumes or replaces.
const CONSUMED: &[&str] = &[
    "query",
    "database",
    "query_id",
    "session_id",
    "user",
    "password",
    "decompress",
    "role",
];

/// What goes to ClickHouse besides the SQL.
pub(super) struct Outgoing {
    pub(super) pairs: Vec<(String, String)>,
    /// The client's settings that go through, for their values to be checked.
    pub(super) settings: Vec<(String, String)>,
    pub(super) dropped: Vec<String>,
    /// Parts of the request that decide the response, for the cache key.
    pub(super) cache_parts: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn outgoing(
    params: &[(String, String)],
    values: &BTreeSet<String>,
    plan: &Plan,
    role: &RolePolicy,
    principal: &Principal,
    database: &str,
    filters: Option<String>,
    user_agent: &str,
) -> Result<Outgoing, BiError> {
    let mut pairs = vec![("database".to_string(), database.to_string())];
    let mut sent_settings = Vec::new();
    for (name, value) in params {
        if CONSUMED.contains(&name.as_str()) {
            continue;
        }
        if let Some(placeholder) = name.strip_prefix("param_") {
            // Only values of the placeholders the guard saw: a parameter ClickHouse would place
            // somewhere the gateway's lexer did not see a placeholder never reaches it.
            if values.contains(placeholder) {
                pairs.push((name.clone(), value.clone()));
            }
        } else if name == "default_format" {
            pairs.push((name.clone(), settings::check_format(value)?.to_string()));
        } else if TRANSPORT.contains(&name.as_str()) {
            pairs.push((name.clone(), value.clone()));
        } else {
            sent_settings.push((name.clone(), value.clone()));
        }
    }
    if let Some(format) = &plan.format {
        pairs.retain(|(k, _)| k != "default_format");
        pairs.push((
            "default_format".into(),
            settings::check_format(format)?.to_string(),
        ));
    }
    let decided = settings::decide(sent_settings, role, &principal.role)?;
    let mut cache_parts: Vec<String> = pairs
        .iter()
        .chain(&decided.forwarded)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    cache_parts.sort();
    cache_parts.push(format!("max_result_rows={}", decided.max_result_rows));
    pairs.extend(decided.forwarded.iter().cloned());
    let comment = serde_json::json!({
        "gateway": "chgate",
        "endpoint": "bi",
        "principal": principal.name,
        "key_id": principal.key_id,
        "role": principal.role,
        "user_agent": user_agent,
        "client_comment": decided.client_comment,
    });
    pairs.extend([
        ("readonly".to_string(), "2".to_string()),
        (
            "max_execution_time".to_string(),
            settings::format_number(decided.max_execution_secs),
        ),
        (
            "max_result_rows".to_string(),
            decided.max_result_rows.to_string(),
        ),
        (
            "cancel_http_readonly_queries_on_client_close".to_string(),
            "1".to_string(),
        ),
        ("log_comment".to_string(), comment.to_string()),
    ]);
    if !pairs.iter().any(|(k, _)| k == "result_overflow_mode") {
        pairs.push(("result_overflow_mode".into(), "throw".into()));
    }
    if let Some(filters) = filters {
        cache_parts.push(filters.clone());
        pairs.push(("additional_table_filters".to_string(), filters));
    }
    Ok(Outgoing {
        pairs,
        settings: decided.forwarded,
        dropped: decided.dropped,
        cache_parts,
    })
}
