//! Roles and their policies, from `config/access.toml` (versioned with the code, reviewed by pull
//! request, hot-reloaded atomically).
//!
//! ```toml
//! [roles.developer]
//! templates = ["event_trends", "top_items@v1", "ops_*"]   # globs, optionally @vN
//! ingest = false
//! bi = true
//! bi_tables = ["events"]                                  # tables of the analytics database
//! pii = false                                             # raw personal data in results/exports
//! export = false
//! cache_bypass = false
//! [roles.developer.row_filters]
//! events = "developer_id = {claim.developer_id}"
//! [roles.developer.limits]
//! requests_per_second = 10
//! burst = 20
//! concurrent_queries = 2
//! max_execution_secs = 30
//! max_result_rows = 100000
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::glob::glob;

/// The whole policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub roles: BTreeMap<String, std::sync::Arc<RolePolicy>>,
}

/// What one role may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePolicy {
    /// Templates it may run: `name`, `name@vN`, globs with `*`.
    #[serde(default)]
    pub templates: Vec<String>,
    /// Whether it may send events.
    #[serde(default)]
    pub ingest: bool,
    /// Which events it may send (globs; empty = all), when `ingest` is true.
    #[serde(default)]
    pub ingest_events: Vec<String>,
    /// Whether it may use the BI endpoint, and on which tables of the analytics database.
    #[serde(default)]
    pub bi: bool,
    #[serde(default)]
    pub bi_tables: Vec<String>,
    /// Columns per table the role may not see through the BI endpoint: usable only as counted
    /// arguments (`uniq(actor_id)`), hidden from `system.columns`.
    #[serde(default)]
    pub bi_hidden_columns: BTreeMap<String, Vec<String>>,
    /// How long BI responses of this role are cached (0: not cached).
    #[serde(default)]
    pub bi_cache_ttl_secs: u64,
    /// The role's own rules for settings BI clients send, over the built-in ones.
    #[serde(default)]
    pub bi_settings: BTreeMap<String, SettingRule>,
    /// Row filters per table: `column = {claim.name}` terms joined by `AND`.
    #[serde(default)]
    pub row_filters: BTreeMap<String, String>,
    /// Whether it may define, refresh and export audience segments.
    #[serde(default)]
    pub segments: bool,
    #[serde(default)]
    pub pii: bool,
    #[serde(default)]
    pub export: bool,
    #[serde(default)]
    pub cache_bypass: bool,
    #[serde(default)]
    pub limits: Limits,
}

/// What happens to a setting a BI client sends: `"allow"`, `"drop"`, or `{ max = N }` (clamped).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SettingRule {
    Named(SettingAction),
    Clamp { max: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettingAction {
    Allow,
    Drop,
}

/// Per-role limits; unset means the built-in default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub requests_per_second: u32,
    pub burst: u32,
    pub concurrent_queries: u32,
    pub max_execution_secs: u64,
    pub max_result_rows: u64,
    pub ingest_events_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests_per_second: 20,
            burst: 40,
            concurrent_queries: 4,
            max_execution_secs: 60,
            max_result_rows: 1_000_000,
            ingest_events_per_second: 200_000,
        }
    }
}

/// One `column = {claim.name}` term of a row filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterTerm {
    pub column: String,
    pub claim: String,
}

/// A problem in the policy file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl Policy {
    /// Reads and checks the file; `templates` and `tables` (when given) are what patterns and
    /// filters must refer to.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError(format!("{}: cannot read: {e}", path.display())))?;
        let policy: Policy = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            PolicyError(format!("{}:{line}: {}", path.display(), e.message()))
        })?;
        for (role, rules) in &policy.roles {
            if !crate::access::auth::ROLES.contains(&role.as_str()) {
                return Err(PolicyError(format!(
                    "{}: unknown role {role:?} (known: {})",
                    path.display(),
                    crate::access::auth::ROLES.join(", ")
                )));
            }
            for name in rules.bi_settings.keys() {
                if crate::sql::settings::is_fixed(name) {
                    return Err(PolicyError(format!(
                        "{}: roles.{role}.bi_settings.{name}: the gateway sets {name} itself; it cannot be given a rule",
                        path.display()
                    )));
                }
            }
            for (table, expression) in &rules.row_filters {
                parse_filter(expression).map_err(|e| {
                    PolicyError(format!(
                        "{}: roles.{role}.row_filters.{table}: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        Ok(policy)
    }

    pub fn role(&self, role: &str) -> Option<&std::sync::Arc<RolePolicy>> {
        self.roles.get(role)
    }

    /// Problems that need the catalog and the database's tables to see: `templates` maps each
    /// template to its versions, `tables` names every table, `columns` the columns of those
    /// whose columns are known.
    pub fn cross_check(
        &self,
        templates: &BTreeMap<String, BTreeSet<u32>>,
        tables: &BTreeSet<String>,
        columns: &BTreeMap<String, BTreeSet<String>>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        for (role, rules) in &self.roles {
            for pattern in &rules.templates {
                let name = pattern.split('@').next().unwrap_or_default();
                let matching: Vec<(&String, &BTreeSet<u32>)> =
                    templates.iter().filter(|(t, _)| glob(name, t)).collect();
                if matching.is_empty() {
                    problems.push(format!(
                        "roles.{role}.templates: {pattern:?} matches no template"
                    ));
                }
                if let Some(version) = pattern.split('@').nth(1) {
                    match version.strip_prefix('v').and_then(|v| v.parse::<u32>().ok()) {
                        None => problems.push(format!(
                            "roles.{role}.templates: {pattern:?}: a version is written @v1, @v2, …"
                        )),
                        Some(v) if !matching.is_empty()
                            && !matching.iter().any(|(_, versions)| versions.contains(&v)) =>
                        {
                            problems.push(format!(
                                "roles.{role}.templates: {pattern:?}: no matching template has version v{v}"
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
            for table in rules.row_filters.keys().chain(&rules.bi_tables) {
                if table != "*" && !tables.iter().any(|t| glob(table, t)) {
                    problems.push(format!(
                        "roles.{role}: table {table:?} does not exist in the analytics database"
                    ));
                }
            }
            for (table, hidden) in &rules.bi_hidden_columns {
                let Some(known) = columns.get(table) else {
                    problems.push(format!(
                        "roles.{role}.bi_hidden_columns: table {table:?} does not exist in the analytics database"
                    ));
                    continue;
                };
                for column in hidden.iter().filter(|c| !known.contains(*c)) {
                    problems.push(format!(
                        "roles.{role}.bi_hidden_columns.{table}: {table} has no column {column:?}"
                    ));
                }
            }
            for (table, expression) in &rules.row_filters {
                let (Some(known), Ok(terms)) = (columns.get(table), parse_filter(expression))
                else {
                    continue;
                };
                for term in terms.iter().filter(|t| !known.contains(&t.column)) {
                    problems.push(format!(
                        "roles.{role}.row_filters.{table}: {table} has no column {:?}",
                        term.column
                    ));
                }
            }
            if !rules.ingest && !rules.ingest_events.is_empty() {
                problems.push(format!(
                    "roles.{role}.ingest_events: set, but the role may not ingest (ingest = false)"
                ));
            }
        }
        problems
    }
}

impl RolePolicy {
    /// Whether the role may run this template version.
    pub fn allows_template(&self, name: &str, version: u32) -> bool {
        self.templates
            .iter()
            .any(|pattern| match pattern.split_once('@') {
                Some((n, v)) => glob(n, name) && v == format!("v{version}"),
                None => glob(pattern, name),
            })
    }

    /// The row filter terms of `table`, if the role has one.
    pub fn filter(&self, table: &str) -> Option<Vec<FilterTerm>> {
        self.row_filters
            .get(table)
            .and_then(|e| parse_filter(e).ok())
    }
}

/// Parses `col = {claim.x} AND col2 = {claim.y}`.
pub fn parse_filter(expression: &str) -> Result<Vec<FilterTerm>, String> {
    let mut terms = Vec::new();
    for term in split_and(expression) {
        let (column, value) = term
            .split_once('=')
            .ok_or_else(|| format!("{term:?} is not `column = {{claim.name}}`"))?;
        let column = column.trim();
        let valid_column = !column.is_empty()
            && column
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !column.starts_with(|c: char| c.is_ascii_digit());
        if !valid_column {
            return Err(format!("{column:?} is not a column name"));
        }
        let claim = value
            .trim()
            .strip_prefix("{claim.")
            .and_then(|v| v.strip_suffix('}'))
            .filter(|c| {
                !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            })
            .ok_or_else(|| format!("{:?} is not {{claim.name}}", value.trim()))?;
        terms.push(FilterTerm {
            column: column.to_string(),
            claim: claim.to_string(),
        });
    }
    if terms.is_empty() {
        return Err("the filter is empty".into());
    }
    Ok(terms)
}

fn split_and(expression: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = expression;
    loop {
        let upper = rest.to_ascii_uppercase();
        match upper.find(" AND ") {
            Some(at) => {
                out.push(rest[..at].trim());
                rest = &rest[at + 5..];
            }
            None => {
                if !rest.trim().is_empty() {
                    out.push(rest.trim());
                }
                return out;
            }
        }
    }
}

/// A ClickHouse string literal: the value quoted, with `\` and `'` escaped.
pub fn sql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_patterns_may_pin_versions() {
        let role = RolePolicy {
            templates: vec!["dau@v1".into(), "event_*".into()],
            ..Default::default()
        };
        assert!(role.allows_template("dau", 1));
        assert!(!role.allows_template("dau", 2));
        assert!(role.allows_template("event_trends", 7));
        assert!(!role.allows_template("funnel", 1));
    }

    #[test]
    fn filters_parse_into_column_and_claim_terms() {
        assert_eq!(
            parse_filter("developer_id = {claim.developer_id} and country = {claim.country}")
                .unwrap(),
            vec![
                FilterTerm {
                    column: "developer_id".into(),
                    claim: "developer_id".into()
                },
                FilterTerm {
                    column: "country".into(),
                    claim: "country".into()
                },
            ]
        );
        assert!(parse_filter("developer_id = 42").is_err());
        assert!(parse_filter("x; DROP = {claim.a}").is_err());
        assert!(parse_filter("").is_err());
    }

    #[test]
    fn string_literals_escape_quotes_and_backslashes() {
        assert_eq!(sql_string(r"a'b\c"), r"'a\'b\\c'");
    }
}
