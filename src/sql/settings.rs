//! ClickHouse settings that are never a client's, whatever a role's rule says ([`is_fixed`]):
//! those the gateway sets, those that name files on the server, and those that switch the
//! analyzer or experimental features on which the row filters' and the guard's meaning rests.
//! The role policy refuses rules for them; the BI endpoint's settings policy refuses or drops them.

/// Settings the gateway sets itself (or consumes), never the client.
const GATEWAY: &[&str] = &[
    "readonly",
    "additional_table_filters",
    "additional_result_filter",
    "allow_ddl",
    "allow_settings_after_format_in_insert",
    "cancel_http_readonly_queries_on_client_close",
    "profile",
    "log_queries",
    "log_query_threads",
    "log_profile_events",
    "send_logs_level",
    "send_logs_source_regexp",
    "max_concurrent_queries_for_user",
    "max_concurrent_queries_for_all_users",
    "readonly_settings",
];

/// Parts of names that mark a setting naming a file, a directory or a schema on the server
/// (`format_schema`, `format_template_resultset`, `user_files_path`, …).
pub const FILE_MARKS: &[&str] = &["path", "file", "schema", "template", "directory", "_dir"];

/// Prefixes of settings that switch the analyzer, the query planner's rules or experimental and
/// unsafe features: the guard's and the row filters' meaning assume the server's defaults.
pub const PLANNER_PREFIXES: &[&str] = &[
    "enable_analyzer",
    "allow_experimental_",
    "allow_suspicious_",
    "allow_deprecated_",
    "allow_introspection_",
    "allow_nondeterministic_",
    "query_plan_",
    "compatibility",
    "enable_global_with_statement",
    "optimize_rewrite_",
    "use_structure_from_insertion_table",
];

/// Whether `name` is never the client's, whatever a role's rule says: set by the gateway, naming
/// a server file, or switching the analyzer, planner rules or experimental features.
pub fn is_fixed(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    GATEWAY.contains(&name.as_str())
        || matches!(
            name.as_str(),
            "log_comment" | "max_execution_time" | "max_result_rows"
        )
        || FILE_MARKS.iter().any(|m| name.contains(m))
        || PLANNER_PREFIXES.iter().any(|p| name.starts_with(p))
        || name == "allow_experimental_analyzer"
}
