//! The settings policy of the BI endpoint, by allow-list: every setting a client sends (URL
//! parameters, or a query's `SETTINGS` clause) is allowed, clamped to the role's maximum, or
//! refused with a 400 naming it. Only two kinds are dropped instead of refused: the few settings
//! drivers always send that the gateway sets itself ([`DRIVER_SET_BY_GATEWAY`]), and settings a
//! role's rule says to drop; both are reported in `X-Chgate-Dropped-Settings`.
//!
//! Some settings are never the client's, whatever a role's rule says ([`is_fixed`]): those the
//! gateway sets, those that name files on the server, and those that switch the analyzer or
//! experimental features on which the row filters' and the guard's meaning rests.
//! Output formats are an allow-list too ([`check_format`]).

use super::error::BiError;
use crate::access::policy::{RolePolicy, SettingAction, SettingRule};
use crate::sql::settings::{is_fixed, FILE_MARKS, PLANNER_PREFIXES};

/// Settings drivers send on every request that the gateway sets itself: dropped, not refused, so
/// stock drivers keep working (clickhouse-connect sends this one with every query).
const DRIVER_SET_BY_GATEWAY: &[&str] = &["cancel_http_readonly_queries_on_client_close"];

/// Settings allowed to every role: transport and progress, output formatting, time zones, and
/// semantics that reach no further than the query's own result or only make it stricter.
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
    "date_time_overflow_behavior",
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
    "final",
    "format_csv_delimiter",
    "format_csv_null_representation",
    "format_tsv_null_representation",
    "cast_string_to_dynamic_use_inference",
];

/// Families allowed by prefix: how results are written (files and schemas excluded by
/// [`is_fixed`]).
const ALLOWED_PREFIXES: &[&str] = &["output_format_"];

/// Output formats a BI client may ask for: those that need no file or schema on the server.
pub const FORMATS: &[&str] = &[
    "TabSeparated",
    "TabSeparatedRaw",
    "TabSeparatedWithNames",
    "TabSeparatedWithNamesAndTypes",
    "TabSeparatedRawWithNames",
    "TabSeparatedRawWithNamesAndTypes",
    "TSV",
    "TSVRaw",
    "TSVWithNames",
    "TSVWithNamesAndTypes",
    "TSVRawWithNames",
    "TSVRawWithNamesAndTypes",
    "CSV",
    "CSVWithNames",
    "CSVWithNamesAndTypes",
    "JSON",
    "JSONStrings",
    "JSONColumns",
    "JSONColumnsWithMetadata",
    "JSONCompact",
    "JSONCompactStrings",
    "JSONCompactColumns",
    "JSONEachRow",
    "PrettyJSONEachRow",
    "JSONEachRowWithProgress",
    "JSONStringsEachRow",
    "JSONStringsEachRowWithProgress",
    "JSONCompactEachRow",
    "JSONCompactEachRowWithNames",
    "JSONCompactEachRowWithNamesAndTypes",
    "JSONCompactEachRowWithProgress",
    "JSONCompactStringsEachRow",
    "JSONCompactStringsEachRowWithNames",
    "JSONCompactStringsEachRowWithNamesAndTypes",
    "JSONObjectEachRow",
    "JSONLines",
    "NDJSON",
    "TSKV",
    "Pretty",
    "PrettyNoEscapes",
    "PrettyMonoBlock",
    "PrettyNoEscapesMonoBlock",
    "PrettyCompact",
    "PrettyCompactNoEscapes",
    "PrettyCompactMonoBlock",
    "PrettyCompactNoEscapesMonoBlock",
    "PrettySpace",
    "PrettySpaceNoEscapes",
    "PrettySpaceMonoBlock",
    "PrettySpaceNoEscapesMonoBlock",
    "Vertical",
    "Markdown",
    "XML",
    "Values",
    "SQLInsert",
    "Native",
    "RowBinary",
    "RowBinaryWithNames",
    "RowBinaryWithNamesAndTypes",
    "Parquet",
    "Arrow",
    "ArrowStream",
    "ORC",
    "Avro",
    "BSONEachRow",
    "MsgPack",
    "LineAsString",
    "RawBLOB",
    "ODBCDriver2",
    "Prometheus",
    "Null",
];

/// The format as ClickHouse spells it, when a BI client may ask for it; otherwise a 400 naming it.
pub fn check_format(format: &str) -> Result<&'static str, BiError> {
    FORMATS
        .iter()
        .find(|f| f.eq_ignore_ascii_case(format.trim()))
        .copied()
        .ok_or_else(|| {
            BiError::unknown_format(format!(
                "format {format:?} is not available through the BI endpoint: it is unknown, or it reads a schema or template file on the server; use one of {}",
                FORMATS.join(", ")
            ))
        })
}

/// What the policy does with one setting.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    Allow,
    Drop,
    Clamp(f64),
    Refuse,
}

fn rule(name: &str, role: &RolePolicy) -> Rule {
    if is_fixed(name) {
        return if DRIVER_SET_BY_GATEWAY.contains(&name) {
            Rule::Drop
        } else {
            Rule::Refuse
        };
    }
    match role.bi_settings.get(name) {
        Some(SettingRule::Named(SettingAction::Allow)) => return Rule::Allow,
        Some(SettingRule::Named(SettingAction::Drop)) => return Rule::Drop,
        Some(SettingRule::Clamp { max }) => return Rule::Clamp(*max),
        None => {}
    }
    if ALLOWED.contains(&name) || ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Rule::Allow
    } else {
        Rule::Refuse
    }
}

/// The `system.settings` row filter for `role`: only the settings it may send are listed, so
/// drivers that learn from `system.settings` what they may set (clickhouse-connect does) send
/// nothing the policy refuses.
pub fn listed_filter(role: &RolePolicy) -> String {
    use crate::access::policy::sql_string;
    let mut names: Vec<&str> = ALLOWED.to_vec();
    names.extend(["max_execution_time", "max_result_rows", "log_comment"]);
    names.extend(
        role.bi_settings
            .iter()
            .filter(|(name, rule)| {
                !is_fixed(name) && !matches!(rule, SettingRule::Named(SettingAction::Drop))
            })
            .map(|(name, _)| name.as_str()),
    );
    let names: Vec<String> = names.iter().map(|n| sql_string(n)).collect();
    let families: Vec<String> = ALLOWED_PREFIXES
        .iter()
        .map(|p| format!("startsWith(name, {})", sql_string(p)))
        .collect();
    let files: Vec<String> = FILE_MARKS
        .iter()
        .map(|m| format!("position(lower(name), {}) > 0", sql_string(m)))
        .collect();
    format!(
        "name IN ({}) OR (({}) AND NOT ({}))",
        names.join(", "),
        families.join(" OR "),
        files.join(" OR ")
    )
}

/// The 400 for a setting the role may not send.
fn refused(name: &str, role_name: &str, inline: bool) -> BiError {
    let lower = name.to_ascii_lowercase();
    let why = if FILE_MARKS.iter().any(|m| lower.contains(m)) {
        "it names a file or schema on the server".to_string()
    } else if PLANNER_PREFIXES.iter().any(|p| lower.starts_with(p))
        || lower == "allow_experimental_analyzer"
    {
        "it switches the analyzer, planner rules or experimental features, on which row filters and the SQL guard rest".to_string()
    } else if is_fixed(&lower) {
        "the gateway sets it itself".to_string()
    } else if inline {
        format!("only settings allowed outright may appear in a SETTINGS clause (a limit is sent as a URL parameter, where it is clamped to role {role_name:?}'s maximum)")
    } else {
        format!("it is not on the allow-list of role {role_name:?} (an administrator may allow it in config/access.toml, roles.{role_name}.bi_settings)")
    };
    BiError::setting_refused(format!("setting {name} may not be set: {why}"))
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

/// Applies the policy to settings sent as URL parameters: a 400 for the first one refused.
pub fn decide(
    sent: Vec<(String, String)>,
    role: &RolePolicy,
    role_name: &str,
) -> Result<Decided, BiError> {
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
            _ => match rule(&lower, role) {
                Rule::Allow => out.forwarded.push((lower, value)),
                Rule::Drop => out.dropped.push(name),
                Rule::Refuse => return Err(refused(&name, role_name, false)),
                Rule::Clamp(max) => match value.trim().parse::<f64>() {
                    Ok(v) if v <= max => out.forwarded.push((lower, value)),
                    Ok(_) => out.forwarded.push((lower, format_number(max))),
                    Err(_) => {
                        return Err(BiError::setting_refused(format!(
                        "setting {name} must be a number (role {role_name:?} allows it up to {})",
                        format_number(max)
                    )))
                    }
                },
            },
        }
    }
    Ok(out)
}

/// Checks the settings of a query's own `SETTINGS` clause: those override URL parameters, so only
/// settings allowed outright may appear there.
pub fn check_inline(
    settings: &[(String, String)],
    role: &RolePolicy,
    role_name: &str,
) -> Result<(), BiError> {
    for (name, _) in settings {
        if rule(&name.to_ascii_lowercase(), role) != Rule::Allow {
            return Err(refused(name, role_name, true));
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
    fn driver_settings_pass_limits_clamp_and_what_the_gateway_sets_drops() {
        let decided = decide(
            sent(&[
                ("wait_end_of_query", "1"),
                ("max_execution_time", "600"),
                ("max_result_rows", "10"),
                ("max_threads", "64"),
                ("join_algorithm", "hash"),
                ("output_format_json_quote_64bit_integers", "1"),
                ("cancel_http_readonly_queries_on_client_close", "1"),
                ("log_comment", "grafana"),
            ]),
            &role(),
            "analyst",
        )
        .unwrap();
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
                "cancel_http_readonly_queries_on_client_close"
            ]
        );
        assert_eq!(decided.client_comment.as_deref(), Some("grafana"));
    }

    #[test]
    fn settings_off_the_allow_list_are_refused_with_their_name() {
        for name in [
            "readonly",
            "allow_ddl",
            "additional_table_filters",
            "some_unknown_setting",
            "enable_analyzer",
            "allow_experimental_analyzer",
            "allow_experimental_funky",
            "format_template_resultset",
            "format_template_row",
            "format_schema",
            "output_format_schema",
            "user_files_path",
            "query_plan_enable_optimizations",
            "compatibility",
        ] {
            let error = decide(sent(&[(name, "0")]), &role(), "analyst").unwrap_err();
            assert_eq!((error.code, error.status.as_u16()), (452, 400), "{name}");
            assert!(error.message.contains(name), "{name}: {}", error.message);
        }
        let error = decide(sent(&[("max_threads", "many")]), &role(), "analyst").unwrap_err();
        assert!(error.message.contains("max_threads must be a number"));
    }

    #[test]
    fn no_role_rule_opens_a_fixed_setting() {
        let mut role = role();
        for name in ["enable_analyzer", "format_schema", "readonly"] {
            role.bi_settings
                .insert(name.into(), SettingRule::Named(SettingAction::Allow));
            assert!(is_fixed(name), "{name}");
            assert!(
                decide(sent(&[(name, "1")]), &role, "analyst").is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn a_settings_clause_may_only_hold_allowed_settings() {
        assert!(check_inline(&sent(&[("max_block_size", "10")]), &role(), "analyst").is_ok());
        for name in [
            "additional_table_filters",
            "max_execution_time",
            "max_threads",
            "readonly",
            "enable_analyzer",
            "output_format_json_quote_64bit_integers",
        ] {
            let error = check_inline(&sent(&[(name, "1")]), &role(), "analyst").unwrap_err();
            assert_eq!(error.code, 452, "{name}");
        }
    }

    #[test]
    fn formats_come_from_the_allow_list_in_clickhouse_spelling() {
        assert_eq!(check_format("native").unwrap(), "Native");
        assert_eq!(check_format("JSONEachRow").unwrap(), "JSONEachRow");
        for format in [
            "Template",
            "CapnProto",
            "Protobuf",
            "CustomSeparated",
            "Nope",
        ] {
            assert_eq!(check_format(format).unwrap_err().code, 73, "{format}");
        }
    }
}
