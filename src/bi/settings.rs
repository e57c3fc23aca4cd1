//! The settings policy of the BI endpoint: every setting a client sends (URL parameters, or a
//! query's `SETTINGS` clause) is allowed, clamped to the role's maximum, or dropped. Drivers send
//! settings of their own on every request (clickhouse-connect: `wait_end_of_query`,
//! `send_progress_in_http_headers`, …; Grafana: `max_execution_time`), so refusing unknown ones
//! would break them; dropping is the default and is reported in `X-Chgate-Dropped-Settings`.
//!
//! A few settings belong to the gateway alone ([`is_fixed`]): its own value always wins, and no
//! role rule can open them.

use super::error::BiError;
use crate::access::policy::{RolePolicy, SettingAction, SettingRule};

/// Settings the gateway sets itself. `format_schema`, `output_format_schema` (written by the
/// server) and `format_template_*` name server files.
const FIXED: &[&str] = &[
    "readonly",
    "additional_table_filters",
    "additional_result_filter",
    "log_comment",
    "allow_ddl",
    "allow_introspection_functions",
    "allow_settings_after_format_in_insert",
    "format_schema",
    "output_format_schema",
    "format_template_resultset",
    "format_template_row",
    "format_template_rows_between_delimiter",
    "format_template_resultset_format",
    "format_template_row_format",
    "max_result_rows",
    "max_execution_time",
    "cancel_http_readonly_queries_on_client_close",
    "user_files_path",
    "profile",
];

/// Harmless settings allowed to every role: transport, output formatting, and settings that only
/// make a query stricter or change its semantics without reaching further.
const ALLOWED: &[&str] = &[
    "wait_end_of_query",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "enable_http_compression",
    "http_zlib_compression_level",
    "http_write_exception_in_output_format",
    "http_response_headers",
    "date_time_input_format",
    "date_time_output_format",
    "session_timezone",
    "use_client_time_zone",
    "join_use_nulls",
    "extremes",
    "totals_mode",
    "totals_auto_threshold",
    "max_block_size",
    "prefer_column_name_to_alias",
    "joined_subquery_requires_alias",
    "aggregate_functions_null_for_empty",
    "union_default_mode",
    "transform_null_in",
    "cast_keep_nullable",
    "limit",
    "offset",
    "result_overflow_mode",
    "max_result_bytes",
    "max_rows_to_read",
    "max_bytes_to_read",
    "read_overflow_mode",
    "timeout_overflow_mode",
    "max_rows_to_group_by",
    "group_by_overflow_mode",
    "enable_analyzer",
    "allow_experimental_analyzer",
    "final",
    "format_csv_delimiter",
    "format_csv_null_representation",
    "format_tsv_null_representation",
    "date_time_64_output_format_cut_trailing_zeros_align_to_groups_of_thousands",
];

/// Allowed by prefix.
const ALLOWED_PREFIXES: &[&str] = &["output_format_", "input_format_", "date_time_"];

/// Clamped to a role limit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    Allow,
    Drop,
    Clamp(f64),
}

/// Whether only the gateway may set `name`.
pub fn is_fixed(name: &str) -> bool {
    FIXED.contains(&name.to_ascii_lowercase().as_str())
}

fn rule(name: &str, role: &RolePolicy) -> Rule {
    match role.bi_settings.get(name) {
        Some(SettingRule::Named(SettingAction::Allow)) => return Rule::Allow,
        Some(SettingRule::Named(SettingAction::Drop)) => return Rule::Drop,
        Some(SettingRule::Clamp { max }) => return Rule::Clamp(*max),
        None => {}
    }
    if ALLOWED.contains(&name) || ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Rule::Allow
    } else {
        Rule::Drop
    }
}

/// Settings after the policy: what goes to ClickHouse, and what was dropped.
#[derive(Debug, Default, PartialEq)]
pub struct Decided {
    pub forwarded: Vec<(String, String)>,
    pub dropped: Vec<String>,
    /// The client's `max_execution_time` and `max_result_rows`, already clamped to the role's.
    pub max_execution_secs: f64,
    pub max_result_rows: u64,
    /// The client's own `log_comment`, kept inside the gateway's.
    pub client_comment: Option<String>,
}

/// Applies the policy to settings sent as URL parameters.
pub fn decide(sent: Vec<(String, String)>, role: &RolePolicy) -> Decided {
    let mut out = Decided {
        max_execution_secs: role.limits.max_execution_secs as f64,
        max_result_rows: role.limits.max_result_rows,
        ..Decided::default()
    };
    for (name, value) in sent {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            // Clients may lower the role's limits, never raise them.
            "max_execution_time" => match value.trim().parse::<f64>() {
                Ok(secs) if secs > 0.0 => out.max_execution_secs = secs.min(out.max_execution_secs),
                _ => {}
            },
            "max_result_rows" => match value.trim().parse::<u64>() {
                Ok(rows) if rows > 0 => out.max_result_rows = rows.min(out.max_result_rows),
                _ => {}
            },
            "log_comment" => out.client_comment = Some(value),
            _ if is_fixed(&lower) => out.dropped.push(name),
            _ => match rule(&lower, role) {
                Rule::Allow => out.forwarded.push((lower, value)),
                Rule::Drop => out.dropped.push(name),
                Rule::Clamp(max) => match value.trim().parse::<f64>() {
                    Ok(v) if v <= max => out.forwarded.push((lower, value)),
                    Ok(_) => out.forwarded.push((lower, format_number(max))),
                    Err(_) => out.dropped.push(name),
                },
            },
        }
    }
    out
}

/// Checks the settings of a query's own `SETTINGS` clause: those override URL parameters, so only
/// settings allowed outright may appear there.
pub fn check_inline(settings: &[(String, String)], role: &RolePolicy) -> Result<(), BiError> {
    for (name, _) in settings {
        if is_fixed(name) || rule(name, role) != Rule::Allow {
            let hint = if matches!(rule(name, role), Rule::Clamp(_))
                || name == "max_execution_time"
                || name == "max_result_rows"
            {
                " (send it as a URL parameter, where it is clamped to the role's limit)"
            } else {
                ""
            };
            return Err(BiError::readonly(
                "setting_not_allowed",
                format!("Cannot modify '{name}' setting in readonly mode: it may not be set in the query's SETTINGS clause{hint}"),
            ));
        }
    }
    Ok(())
}

/// A setting's number as ClickHouse reads it: whole numbers without a fraction.
pub(super) fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role() -> RolePolicy {
        let mut role = RolePolicy::default();
        role.limits.max_execution_secs = 30;
        role.limits.max_result_rows = 1000;
        role.bi_settings
            .insert("max_threads".into(), SettingRule::Clamp { max: 4.0 });
        role.bi_settings.insert(
            "join_algorithm".into(),
            SettingRule::Named(SettingAction::Allow),
        );
        role.bi_settings.insert(
            "output_format_json_quote_64bit_integers".into(),
            SettingRule::Named(SettingAction::Drop),
        );
        role
    }

    fn sent(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn driver_settings_pass_limits_clamp_and_the_rest_drops() {
        let decided = decide(
            sent(&[
                ("wait_end_of_query", "1"),
                ("max_execution_time", "600"),
                ("max_result_rows", "10"),
                ("max_threads", "64"),
                ("join_algorithm", "hash"),
                ("output_format_json_quote_64bit_integers", "1"),
                ("additional_table_filters", "{}"),
                ("readonly", "0"),
                ("allow_experimental_funky", "1"),
                ("log_comment", "grafana"),
            ]),
            &role(),
        );
        assert_eq!(
            decided.forwarded,
            sent(&[
                ("wait_end_of_query", "1"),
                ("max_threads", "4"),
                ("join_algorithm", "hash")
            ])
        );
        assert_eq!(decided.max_execution_secs, 30.0);
        assert_eq!(decided.max_result_rows, 10);
        assert_eq!(
            decided.dropped,
            vec![
                "output_format_json_quote_64bit_integers",
                "additional_table_filters",
                "readonly",
                "allow_experimental_funky"
            ]
        );
        assert_eq!(decided.client_comment.as_deref(), Some("grafana"));
    }

    #[test]
    fn a_settings_clause_may_only_hold_allowed_settings() {
        assert!(check_inline(&sent(&[("max_block_size", "10")]), &role()).is_ok());
        for name in [
            "additional_table_filters",
            "max_execution_time",
            "max_threads",
            "readonly",
        ] {
            let error = check_inline(&sent(&[(name, "1")]), &role()).unwrap_err();
            assert_eq!(error.code, 164, "{name}");
        }
    }
}
