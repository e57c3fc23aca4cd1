//! One template file: `queries/<name>/v<N>.sql`, a TOML header in a leading comment
//! (`/*---` … `---*/`), then the SQL (minijinja for shape, `{name:Type}` for values).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::params::{ParamSpec, ParamType, Scalar};

/// Name of the bound salt with which results of roles without `pii` are pseudonymized.
pub const PII_SALT_PARAM: &str = "_chgate_pii_salt";

/// Parameter names with a meaning of their own in requests (or bound by the gateway).
pub const RESERVED_PARAMS: &[&str] = &["format", PII_SALT_PARAM];

/// A problem in a template file, located by line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct TemplateError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The header of a template.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub description: String,
    #[serde(default)]
    pub params: IndexMap<String, ParamSpec>,
    /// Roles that may run this version.
    #[serde(default = "default_roles")]
    pub roles: Vec<String>,
    #[serde(default = "default_ttl")]
    pub cache_ttl_secs: u64,
    #[serde(default = "default_execution")]
    pub max_execution_secs: u64,
    #[serde(default = "default_rows")]
    pub max_rows: u64,
    /// Tables outside the analytics database the query may read, as `database.table`.
    #[serde(default)]
    pub tables: Vec<String>,
    /// The result's columns and ClickHouse types, in order (checked by `chgate check --live`).
    #[serde(default)]
    pub columns: IndexMap<String, String>,
    /// Result columns holding personal data: roles without `pii` get them pseudonymized (a salted
    /// hash, the same for the same value, so results still group and join).
    #[serde(default)]
    pub pii_columns: Vec<String>,
    #[serde(default)]
    pub examples: Vec<Example>,
    /// `name/vN` of a template whose parameters this one takes, before its own: templates that
    /// share a fragment share its parameters, declared once.
    #[serde(default)]
    pub params_from: Option<String>,
    #[serde(default)]
    pub deprecated: Option<Deprecation>,
    /// Which UTC days the result reads, for the result cache: without it, the days from the
    /// `from` parameter's to the `to` parameter's, when the template has both (Date or DateTime).
    #[serde(default)]
    pub freshness: Option<Freshness>,
}

/// The UTC days a template's result depends on: the result cache keys a call by their
/// generations, so a result is recomputed as soon as rows for one of them are committed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// The parameter (Date or DateTime) whose day is the first read.
    #[serde(default = "Freshness::from_param")]
    pub from: String,
    /// The parameter (Date or DateTime) whose day is the last read (before `through`).
    #[serde(default = "Freshness::to_param")]
    pub to: String,
    /// Days read before `from`'s day (a trailing window, e.g. 29 for a 30-day active-user count).
    #[serde(default)]
    pub days_before: u32,
    /// The result also depends on every day before `from` (e.g. first-seen dates: an older event
    /// moves a user's first day out of the range).
    #[serde(default)]
    pub history: bool,
    /// How far past `to`'s day rows are read.
    #[serde(default)]
    pub through: Through,
    /// `false`: the result's freshness is left to its `cache_ttl_secs` alone.
    #[serde(default = "Freshness::yes")]
    pub tracked: bool,
}

/// The last day a template reads, relative to its `to` parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Through {
    /// `to`'s day.
    #[default]
    To,
    /// The last day of `to`'s month (monthly rollups hold whole months).
    EndOfMonth,
    /// Today (results that follow cohorts or periods up to the current one).
    Today,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            from: Self::from_param(),
            to: Self::to_param(),
            days_before: 0,
            history: false,
            through: Through::To,
            tracked: true,
        }
    }
}

impl Freshness {
    fn from_param() -> String {
        "from".into()
    }
    fn to_param() -> String {
        "to".into()
    }
    fn yes() -> bool {
        true
    }
}

fn default_roles() -> Vec<String> {
    vec!["admin".into(), "analyst".into()]
}
fn default_ttl() -> u64 {
    60
}
fn default_execution() -> u64 {
    30
}
fn default_rows() -> u64 {
    100_000
}

/// A named parameter set, used by checks, docs and the OpenAPI document.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub name: String,
    #[serde(default)]
    pub params: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Deprecation {
    /// After this day the version may be removed.
    #[serde(default)]
    pub sunset: Option<chrono::NaiveDate>,
    /// The version to move to, e.g. `v2`.
    #[serde(default)]
    pub successor: Option<String>,
    #[serde(default)]
    pub note: String,
}

/// A parsed, not yet checked, template file.
#[derive(Debug, Clone)]
pub struct TemplateFile {
    pub name: String,
    pub version: u32,
    pub path: PathBuf,
    pub meta: Meta,
    /// The SQL after the header.
    pub body: String,
    /// Line of the file where `body` starts (1-based).
    pub body_line: usize,
}

impl TemplateFile {
    /// Parses `queries/<name>/v<N>.sql`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, TemplateError> {
        let file = path.display().to_string();
        let err = |line: usize, message: String| TemplateError {
            file: file.clone(),
            line,
            message,
        };
        let name = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(err(
                1,
                format!(
                    "template directory name {name:?} must be lower-case letters, digits and _"
                ),
            ));
        }
        let version = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix('v'))
            .and_then(|n| n.strip_suffix(".sql"))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|v| *v >= 1)
            .ok_or_else(|| {
                err(
                    1,
                    "template files are named v<N>.sql with N = 1, 2, …".into(),
                )
            })?;
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some("/*---") {
            return Err(err(
                1,
                "a template starts with a `/*---` line opening its TOML header".into(),
            ));
        }
        let mut header = String::new();
        let mut header_lines = 1;
        let mut closed = false;
        for line in lines.by_ref() {
            header_lines += 1;
            if line.trim() == "---*/" {
                closed = true;
                break;
            }
            header.push_str(line);
            header.push('\n');
        }
        if !closed {
            return Err(err(1, "the header is not closed by a `---*/` line".into()));
        }
        let mut meta: Meta = toml::from_str(&header).map_err(|e| {
            let line = e
                .span()
                .map(|span| header[..span.start.min(header.len())].matches('\n').count() + 2)
                .unwrap_or(2);
            err(line, format!("invalid header: {}", e.message()))
        })?;
        let header_line_of = |needle: &str| {
            header
                .lines()
                .position(|l| l.contains(needle))
                .map(|i| i + 2)
                .unwrap_or(2)
        };
        for (param, spec) in meta.params.iter_mut() {
            let line = header_line_of(&format!("params.{param}"));
            let valid = param
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && param
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid || RESERVED_PARAMS.contains(&param.as_str()) {
                return Err(err(line, format!("parameter name {param:?} must be lower-case letters, digits and _, and not one of {RESERVED_PARAMS:?}")));
            }
            spec.ty = Some(ParamType::parse(&spec.ty_name).ok_or_else(|| {
                err(line, format!("parameter {param}: type {:?} is not supported (String, Date, DateTime, Bool, (U)Int8-64, Float32/64, or Array of those)", spec.ty_name))
            })?);
            if spec.required && spec.default.is_some() {
                return Err(err(
                    line,
                    format!("parameter {param}: a required parameter has no default"),
                ));
            }
            let now = chrono::Utc::now();
            if let Some(default) = &spec.default {
                spec.coerce(default, now)
                    .map_err(|e| err(line, format!("parameter {param}: default {e}")))?;
            }
            for value in spec.allowed.iter().flatten() {
                let mut unrestricted = spec.clone();
                unrestricted.allowed = None;
                let item_spec = match spec.param_type() {
                    ParamType::Array(s) => ParamSpec {
                        ty: Some(ParamType::Scalar(s)),
                        ..unrestricted
                    },
                    ParamType::Scalar(_) => unrestricted,
                };
                item_spec.coerce(value, now).map_err(|e| {
                    err(
                        line,
                        format!("parameter {param}: allowed value {value}: {e}"),
                    )
                })?;
            }
        }
        for role in &meta.roles {
            if !crate::access::auth::ROLES.contains(&role.as_str()) {
                return Err(err(
                    header_line_of("roles"),
                    format!(
                        "unknown role {role:?} (known: {})",
                        crate::access::auth::ROLES.join(", ")
                    ),
                ));
            }
        }
        for column in &meta.pii_columns {
            if !meta.columns.contains_key(column) {
                return Err(err(
                    header_line_of("pii_columns"),
                    format!("pii_columns: {column:?} is not one of the declared columns"),
                ));
            }
        }
        if let Some(freshness) = meta.freshness.as_ref().filter(|f| f.tracked) {
            for param in [&freshness.from, &freshness.to] {
                let dated = meta.params.get(param).is_some_and(|spec| {
                    matches!(
                        spec.param_type(),
                        ParamType::Scalar(Scalar::Date | Scalar::DateTime)
                    )
                });
                if !dated {
                    return Err(err(
                        header_line_of("freshness"),
                        format!("freshness: {param:?} is not a Date or DateTime parameter"),
                    ));
                }
            }
        }
        for table in &meta.tables {
            if table.split('.').count() != 2 {
                return Err(err(
                    header_line_of("tables"),
                    format!("table {table:?} must be written database.table"),
                ));
            }
        }
        // With params_from, the examples are checked once the parameters are inherited.
        if meta.params_from.is_none() {
            if let Some((name, key)) = unknown_example_param(&meta) {
                return Err(err(
                    header_line_of(&name),
                    format!("example {name:?} sets unknown parameter {key}"),
                ));
            }
        }
        let body: String = lines.collect::<Vec<_>>().join("\n");
        if body.trim().is_empty() {
            return Err(err(
                header_lines + 1,
                "the template has no SQL after its header".into(),
            ));
        }
        let template = Self {
            name,
            version,
            path: path.to_path_buf(),
            meta,
            body,
            body_line: header_lines + 1,
        };
        template.check_splicing()?;
        Ok(template)
    }

    /// `name/vN`, the template's key in the environment.
    pub fn key(&self) -> String {
        format!("{}/v{}", self.name, self.version)
    }

    pub fn error(&self, body_line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError {
            file: self.path.display().to_string(),
            line: self.body_line + body_line.saturating_sub(1),
            message: message.into(),
        }
    }

    /// Parameters whose values must not be printed: those without `allowed` values.
    pub fn tainted_params(&self) -> BTreeSet<String> {
        self.meta
            .params
            .iter()
            .filter(|(_, spec)| spec.allowed.is_none())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Takes `params` (those of the version `params_from` names) before its own, then checks the
    /// examples and the printing of values again with all of them.
    pub fn inherit_params(
        &mut self,
        params: &IndexMap<String, ParamSpec>,
    ) -> Result<(), TemplateError> {
        if let Some(twice) = self.meta.params.keys().find(|k| params.contains_key(*k)) {
            return Err(self.error(
                0,
                format!("parameter {twice} is also one of params_from's; declare it once"),
            ));
        }
        let mut all = params.clone();
        all.extend(std::mem::take(&mut self.meta.params));
        self.meta.params = all;
        if let Some((name, key)) = unknown_example_param(&self.meta) {
            return Err(self.error(0, format!("example {name:?} sets unknown parameter {key}")));
        }
        self.check_splicing()
    }

    fn check_splicing(&self) -> Result<(), TemplateError> {
        let mut tainted = self.tainted_params();
        check_splicing(&self.body, &mut tainted)
            .map_err(|(line, message)| self.error(line, message))?;
        Ok(())
    }
}

/// Values are bound as `{name:Type}`, never printed into the SQL: a parameter (or a variable set
/// from one, or a loop variable over one) may appear inside `{{ … }}` only when it declares its
/// `allowed` values. `tainted` holds the names that may not be printed and grows with the body's
/// assignments. Other templates come in only as fragments named by a literal
/// (`{% include "funnel/_attempts.sql" %}`): their names, with the line, are returned so that the
/// catalog checks each fragment with the same names. Errors are (line in `body`, message).
pub fn check_splicing(
    body: &str,
    tainted: &mut BTreeSet<String>,
) -> Result<Vec<(usize, String)>, (usize, String)> {
    // `param | length` is a count, not the value: it may shape the SQL.
    let length_of = regex::Regex::new(r"[A-Za-z_][A-Za-z0-9_]*\s*\|\s*length\b")
        .unwrap_or_else(|_| unreachable!());
    let identifiers = |text: &str| -> Vec<String> {
        // A string literal is text of the template, not a value.
        let text = without_string_literals(text);
        let text = length_of.replace_all(&text, "");
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty() && !w.starts_with(|c: char| c.is_ascii_digit()))
            .map(str::to_string)
            .collect()
    };
    let mut includes = Vec::new();
    let mut rest = body;
    let mut offset = 0;
    while let Some(start) = rest.find("{%").into_iter().chain(rest.find("{{")).min() {
        let is_print = rest[start..].starts_with("{{");
        let close = if is_print { "}}" } else { "%}" };
        let Some(end) = rest[start..].find(close) else {
            break;
        };
        let inner = &rest[start + 2..start + end];
        let line = body[..offset + start].matches('\n').count() + 1;
        let words = identifiers(inner);
        if is_print {
            if let Some(bad) = words.iter().find(|w| tainted.contains(*w)) {
                return Err((line, format!(
                    "{{{{ {} }}}} prints the value of parameter {bad} into the SQL; bind it as {{{bad}:Type}} or declare its `allowed` values",
                    inner.trim()
                )));
            }
        } else if let Some(statement) = other_template(inner) {
            match fragment_name(statement) {
                Some(name) => includes.push((line, name.to_string())),
                None => {
                    return Err((
                        line,
                        format!(
                            "{{% {} %}}: a template takes in other text only as `{{% include \"<name>/_<fragment>.sql\" %}}`",
                            inner.trim()
                        ),
                    ))
                }
            }
        } else if let Some((targets, source)) = assignment(inner) {
            if identifiers(source).iter().any(|w| tainted.contains(w)) {
                tainted.extend(identifiers(targets));
            }
        }
        offset += start + end + 2;
        rest = &body[offset..];
    }
    Ok(includes)
}

/// `text` with the contents of its quoted strings removed.
fn without_string_literals(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                }
            }
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// A statement that brings in another template (`include`, `import`, `from`, `extends`).
fn other_template(statement: &str) -> Option<&str> {
    let statement = statement
        .trim()
        .trim_start_matches('-')
        .trim_end_matches('-')
        .trim();
    let keyword = statement.split_whitespace().next()?;
    ["include", "import", "from", "extends"]
        .contains(&keyword)
        .then_some(statement)
}

/// The fragment of `include "<name>/_<fragment>.sql"`, the only form of [`other_template`] allowed.
fn fragment_name(statement: &str) -> Option<&str> {
    let name = statement
        .strip_prefix("include")?
        .trim()
        .strip_prefix('"')?
        .strip_suffix('"')?;
    is_fragment_key(name).then_some(name)
}

/// `<name>/_<fragment>.sql`: how templates name a fragment.
pub fn is_fragment_key(key: &str) -> bool {
    let Some((dir, file)) = key.split_once('/') else {
        return false;
    };
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    plain(dir)
        && file
            .strip_prefix('_')
            .and_then(|f| f.strip_suffix(".sql"))
            .is_some_and(plain)
}

/// `for a, b in source` or `set a = source` inside `{% … %}`: (targets, source).
fn assignment(statement: &str) -> Option<(&str, &str)> {
    let statement = statement
        .trim()
        .trim_start_matches('-')
        .trim_end_matches('-')
        .trim();
    if let Some(rest) = statement.strip_prefix("for ") {
        let (targets, source) = rest.split_once(" in ")?;
        return Some((targets, source));
    }
    if let Some(rest) = statement.strip_prefix("set ") {
        return rest.split_once('=');
    }
    None
}

/// The first (example, parameter) where an example sets a parameter the template does not take.
fn unknown_example_param(meta: &Meta) -> Option<(String, String)> {
    meta.examples.iter().find_map(|example| {
        example
            .params
            .keys()
            .find(|key| !meta.params.contains_key(*key))
            .map(|key| (example.name.clone(), key.clone()))
    })
}

/// The declared result columns as `(name, type)`.
pub fn columns(meta: &Meta) -> Vec<(String, String)> {
    meta.columns
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// All tables a template may read besides its database, as `(database, table)`.
pub fn extra_tables(meta: &Meta) -> BTreeMap<String, String> {
    meta.tables
        .iter()
        .filter_map(|t| t.split_once('.'))
        .map(|(d, t)| (d.to_string(), t.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TemplateFile, TemplateError> {
        TemplateFile::parse(Path::new("queries/dau/v1.sql"), text)
    }

    const GOOD: &str = "/*---\ndescription = \"DAU\"\n[params.from]\ntype = \"Date\"\nrequired = true\n[params.platform]\ntype = \"String\"\n---*/\nSELECT 1\nFROM dau_daily WHERE day >= {from:Date}\n{% if platform %}AND platform = {platform:String}{% endif %}";

    #[test]
    fn a_header_and_body_parse_with_their_line_offset() {
        let template = parse(GOOD).unwrap();
        assert_eq!(
            (template.name.as_str(), template.version, template.body_line),
            ("dau", 1, 9)
        );
        assert_eq!(template.meta.roles, vec!["admin", "analyst"]);
        assert_eq!(
            template.error(2, "x").to_string(),
            "queries/dau/v1.sql:10: x"
        );
    }

    #[test]
    fn header_mistakes_are_reported_with_file_and_line() {
        let err = parse(
            "/*---\ndescription = \"x\"\n[params.from]\ntype = \"Datetime64\"\n---*/\nSELECT 1",
        )
        .unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("not supported"), "{err}");
        let err = parse("/*---\ndescription = \"x\"\nrows = 5\n---*/\nSELECT 1").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        let err = parse("SELECT 1").unwrap_err();
        assert_eq!(err.line, 1);
        let err =
            parse("/*---\ndescription = \"x\"\nroles = [\"root\"]\n---*/\nSELECT 1").unwrap_err();
        assert!(err.message.contains("unknown role"));
    }

    #[test]
    fn printing_a_free_value_into_sql_is_refused_but_allowed_values_may_shape_it() {
        let spliced = GOOD.replace("{platform:String}", "'{{ platform }}'");
        let err = parse(&spliced).unwrap_err();
        assert!(err.message.contains("parameter platform"), "{err}");
        assert_eq!(err.line, 11);
        let looped = "/*---\ndescription = \"x\"\n[params.steps]\ntype = \"Array(String)\"\n---*/\nSELECT 1\n{% for s in steps %}, '{{ s }}'{% endfor %}";
        assert!(parse(looped).unwrap_err().message.contains("parameter s"));
        let shaped = "/*---\ndescription = \"x\"\n[params.granularity]\ntype = \"String\"\nallowed = [\"day\", \"week\"]\n---*/\nSELECT toStartOf{{ granularity | capitalize }}(timestamp) FROM events";
        assert!(parse(shaped).is_ok());
    }
}
