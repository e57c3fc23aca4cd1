//! What a BI client's statement is, and whether the caller's role may run it.
//!
//! - `SHOW DATABASES`, `SHOW TABLES [FROM db]`, `DESCRIBE [TABLE] t` and `EXISTS …` are recognized
//!   token by token (strictly: anything unexpected falls through to the parser and is refused);
//!   listings are limited to what the role may see by `additional_table_filters` on
//!   `system.databases`/`system.tables`/`system.columns` ([`visibility_filters`]).
//! - Everything else must pass the SQL guard: one `SELECT`/`WITH`/`UNION` query over the role's
//!   tables of the analytics database and a few `system` tables, safe table functions only.
//! - A trailing `FORMAT name` (which clickhouse-connect appends to every query) is taken off before
//!   the guard and sent as `default_format`, so the guard parses exactly the text that runs.

use std::collections::{BTreeMap, BTreeSet};

use super::error::BiError;
use crate::access::policy::{sql_string, RolePolicy};
use crate::sql::guard::{self, GuardError, Policy, DENIED_FUNCTIONS, SAFE_TABLE_FUNCTIONS};
use crate::sql::lexer::{self, Kind, Token};

/// `system` tables BI clients read for their metadata; rows limited to what the role may see.
pub const SYSTEM_TABLES: &[&str] = &[
    "databases",
    "tables",
    "columns",
    "functions",
    "table_functions",
    "settings",
    "one",
    "data_type_families",
    "formats",
    "time_zones",
];

/// The kind of statement, for metrics and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Select,
    ShowDatabases,
    ShowTables,
    Describe,
    Exists,
}

impl StatementKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Select => "select",
            Self::ShowDatabases => "show_databases",
            Self::ShowTables => "show_tables",
            Self::Describe => "describe",
            Self::Exists => "exists",
        }
    }
}

/// A statement the role may run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub kind: StatementKind,
    /// What is sent to ClickHouse: the client's text without its trailing `FORMAT` clause (or, for
    /// `EXISTS` on something the role cannot see, an equivalent constant answer).
    pub sql: String,
    /// The format named by a trailing `FORMAT` clause.
    pub format: Option<String>,
    /// Tables of the analytics database read, as `database.table` (for row filters).
    pub tables: BTreeSet<String>,
    /// Settings of `SETTINGS` clauses.
    pub settings: Vec<(String, String)>,
}

/// Where a statement runs and what the role may see.
pub struct Scope<'a> {
    /// The analytics database: the only user database BI clients see.
    pub analytics: &'a str,
    /// The session database (bare table names belong to it): the analytics database or `system`.
    pub database: &'a str,
    pub role: &'a RolePolicy,
}

impl Scope<'_> {
    fn sees_table(&self, database: &str, table: &str) -> bool {
        (database == self.analytics
            && self
                .role
                .bi_tables
                .iter()
                .any(|p| crate::glob::glob(p, table)))
            || (database == "system" && SYSTEM_TABLES.contains(&table))
    }

    fn sees_database(&self, database: &str) -> bool {
        database == self.analytics || database == "system"
    }

    fn guard_policy(&self) -> Policy {
        let mut tables: BTreeSet<(String, String)> = self
            .role
            .bi_tables
            .iter()
            .map(|p| (self.analytics.to_string(), p.clone()))
            .collect();
        tables.extend(
            SYSTEM_TABLES
                .iter()
                .map(|t| ("system".to_string(), t.to_string())),
        );
        Policy {
            database: self.database.to_string(),
            tables,
            table_functions: SAFE_TABLE_FUNCTIONS.iter().map(|s| s.to_string()).collect(),
            settings: None,
            allow_format: false,
            hidden_columns: self
                .role
                .bi_hidden_columns
                .iter()
                .map(|(table, columns)| {
                    (
                        format!("{}.{table}", self.analytics),
                        columns.iter().map(|c| c.to_ascii_lowercase()).collect(),
                    )
                })
                .collect(),
        }
    }
}

/// `additional_table_filters` entries that hide every database, table and column the role may not
/// see from `SHOW` and from the `system` metadata tables.
pub fn visibility_filters(scope: &Scope<'_>) -> BTreeMap<String, String> {
    let analytics = sql_string(scope.analytics);
    let patterns = |column: &str| -> String {
        let matches: Vec<String> = scope
            .role
            .bi_tables
            .iter()
            .map(|p| format!("{column} LIKE {}", sql_string(&like_pattern(p))))
            .collect();
        if matches.is_empty() {
            "0".to_string()
        } else {
            matches.join(" OR ")
        }
    };
    let system = quoted(SYSTEM_TABLES);
    let tables = |column: &str| {
        format!(
            "(database = {analytics} AND ({})) OR (database = 'system' AND {column} IN ({system}))",
            patterns(column)
        )
    };
    BTreeMap::from([
        (
            "system.databases".to_string(),
            format!("name IN ({analytics}, 'system')"),
        ),
        ("system.tables".to_string(), tables("name")),
        (
            "system.columns".to_string(),
            format!("({}){}", tables("table"), hidden_columns(scope)),
        ),
        (
            "system.settings".to_string(),
            super::settings::listed_filter(scope.role),
        ),
        (
            "system.table_functions".to_string(),
            format!("lower(name) IN ({})", quoted(SAFE_TABLE_FUNCTIONS)),
        ),
        (
            "system.functions".to_string(),
            format!(
                "lower(name) NOT IN ({}) AND NOT startsWith(lower(name), 'dictget')",
                quoted(DENIED_FUNCTIONS)
            ),
        ),
    ])
}

/// ` AND NOT (…)` leaving the role's hidden columns out of `system.columns` (empty without any).
fn hidden_columns(scope: &Scope<'_>) -> String {
    let analytics = sql_string(scope.analytics);
    let terms: Vec<String> = scope
        .role
        .bi_hidden_columns
        .iter()
        .filter(|(_, columns)| !columns.is_empty())
        .map(|(table, columns)| {
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            format!(
                "(database = {analytics} AND table = {} AND name IN ({}))",
                sql_string(table),
                quoted(&names)
            )
        })
        .collect();
    if terms.is_empty() {
        String::new()
    } else {
        format!(" AND NOT ({})", terms.join(" OR "))
    }
}

/// `'a', 'b', …`
fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| sql_string(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table glob as a `LIKE` pattern.
fn like_pattern(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len());
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Classifies `sql` and checks it against the role.
pub fn plan(sql: &str, scope: &Scope<'_>) -> Result<Plan, BiError> {
    let all = lexer::tokens(sql);
    let mut significant: Vec<Token> = all
        .iter()
        .copied()
        .filter(|t| !matches!(t.kind, Kind::Space | Kind::Comment))
        .collect();
    while significant.last().is_some_and(|t| t.is_symbol(sql, ';')) {
        significant.pop();
    }
    if significant.is_empty() {
        return Err(BiError::syntax("empty_query", "Empty query"));
    }
    let mut end = significant.last().map_or(0, |t| t.end);
    let mut format = None;
    if let [.., keyword, name] = significant.as_slice() {
        if keyword.is_word(sql, "format") && matches!(name.kind, Kind::Word | Kind::QuotedIdent) {
            format = name.ident(sql).map(str::to_string);
            end = keyword.start;
            significant.truncate(significant.len() - 2);
        }
    }
    // Leading comments stay (Grafana and Superset put their attribution there); trailing ones go.
    let text = sql[..end].trim().to_string();
    let has_comments = all.iter().any(|t| t.kind == Kind::Comment && t.start < end);
    let plan = |kind, sql: String, tables| Plan {
        kind,
        sql,
        format: format.clone(),
        tables,
        settings: Vec::new(),
    };
    if !has_comments {
        if let Some(meta) = meta_statement(sql, &significant, scope)? {
            return Ok(match meta {
                Meta::Pass(kind, tables) => plan(kind, text, tables),
                Meta::Answer(kind, answer) => plan(kind, answer, BTreeSet::new()),
            });
        }
    }
    let checked = guard::check(&text, &scope.guard_policy()).map_err(|e| {
        // Statements that change something are refused as such, whether or not the parser
        // knows their syntax.
        match (&e, significant.first()) {
            (GuardError::Unparseable(_), Some(first))
                if WRITE_STATEMENTS.iter().any(|w| first.is_word(sql, w)) =>
            {
                guard_error(
                    GuardError::NotAQuery(first.text(sql).to_ascii_uppercase()),
                    scope,
                )
            }
            _ => guard_error(e, scope),
        }
    })?;
    let prefix = format!("{}.", scope.analytics);
    Ok(Plan {
        kind: StatementKind::Select,
        sql: text,
        format,
        tables: checked
            .tables
            .into_iter()
            .filter(|t| t.starts_with(&prefix))
            .collect(),
        settings: checked.settings,
    })
}

/// First words of statements that write or administer: refused as not read-only.
const WRITE_STATEMENTS: &[&str] = &[
    "insert", "alter", "create", "drop", "truncate", "rename", "optimize", "system", "kill", "set",
    "grant", "revoke", "attach", "detach", "exchange", "delete", "update", "backup", "restore",
    "undrop", "move", "use",
];

fn guard_error(error: GuardError, scope: &Scope<'_>) -> BiError {
    match error {
        GuardError::Unparseable(detail) => {
            metrics::counter!("chgate_bi_unparseable_total").increment(1);
            BiError::syntax(
                "unparseable_sql",
                format!("the statement cannot be parsed, so it is refused ({detail}); the BI endpoint runs single SELECT/WITH/UNION queries, SHOW DATABASES, SHOW TABLES, DESCRIBE and EXISTS"),
            )
        }
        GuardError::StatementCount(n) => BiError::syntax(
            "multiple_statements",
            format!("exactly one statement is allowed, found {n}"),
        ),
        GuardError::NotAQuery(kind) => BiError::readonly(
            "not_a_query",
            format!("Cannot execute query in readonly mode: {kind} is not allowed; the BI endpoint is read-only"),
        ),
        GuardError::Table(table) => BiError::access_denied(
            "table_not_allowed",
            format!(
                "table {table} is not readable through the BI endpoint with this role (readable: {})",
                readable(scope)
            ),
        ),
        GuardError::TableFunction(name) => BiError::access_denied(
            "table_function_not_allowed",
            format!("table function {name}() is not allowed"),
        ),
        GuardError::Function(name) => BiError::access_denied(
            "function_not_allowed",
            format!("function {name}() is not allowed"),
        ),
        GuardError::Setting(name) => BiError::readonly(
            "setting_not_allowed",
            format!("Cannot modify '{name}' setting in readonly mode"),
        ),
        error @ (GuardError::HiddenColumn { .. } | GuardError::HiddenByWildcard { .. }) => {
            BiError::access_denied("column_hidden", error.to_string())
        }
        GuardError::Clause(what) => {
            BiError::access_denied("clause_not_allowed", format!("{what} is not allowed"))
        }
    }
}

fn readable(scope: &Scope<'_>) -> String {
    let mut names: Vec<String> = scope
        .role
        .bi_tables
        .iter()
        .map(|p| format!("{}.{p}", scope.analytics))
        .collect();
    names.push("system metadata tables".into());
    names.join(", ")
}

enum Meta {
    /// Run the statement as written.
    Pass(StatementKind, BTreeSet<String>),
    /// Answer with this statement instead (the object, or some of its columns, is hidden from
    /// the role).
    Answer(StatementKind, String),
}

/// A dotted name at `tokens[0..]`: `(database, name, tokens used)`.
fn qualified_name<'a>(sql: &'a str, tokens: &[Token]) -> Option<(Option<&'a str>, &'a str, usize)> {
    match tokens {
        [db, dot, name, ..] if dot.is_symbol(sql, '.') => {
            Some((Some(db.ident(sql)?), name.ident(sql)?, 3))
        }
        [name, ..] => Some((None, name.ident(sql)?, 1)),
        [] => None,
    }
}

/// `DESCRIBE TABLE` of a table with hidden columns, answered from `system.columns` (whose row
/// filter leaves the hidden columns out) with `DESCRIBE`'s column names and order; a column's TTL
/// expression is not in `system.columns` and comes back empty.
fn describe_visible(database: &str, table: &str) -> String {
    format!(
        "SELECT name, type, default_kind AS default_type, default_expression, comment, \
         replaceRegexpOne(compression_codec, '^CODEC\\\\((.*)\\\\)$', '\\\\1') AS codec_expression, \
         '' AS ttl_expression \
         FROM system.columns WHERE database = {} AND table = {} ORDER BY position",
        sql_string(database),
        sql_string(table)
    )
}

/// Recognizes the metadata statements BI clients send. `Ok(None)`: not one of them.
fn meta_statement(sql: &str, tokens: &[Token], scope: &Scope<'_>) -> Result<Option<Meta>, BiError> {
    let word = |i: usize, w: &str| tokens.get(i).is_some_and(|t| t.is_word(sql, w));
    if word(0, "show") {
        let (kind, mut i) = if word(1, "databases") {
            (StatementKind::ShowDatabases, 2)
        } else if word(1, "tables") {
            (StatementKind::ShowTables, 2)
        } else {
            return Err(BiError::access_denied(
                "show_not_allowed",
                "only SHOW DATABASES and SHOW TABLES [FROM db] are allowed",
            ));
        };
        if kind == StatementKind::ShowTables && (word(i, "from") || word(i, "in")) {
            let database = tokens
                .get(i + 1)
                .and_then(|t| t.ident(sql))
                .ok_or_else(|| {
                    BiError::syntax("invalid_show", "SHOW TABLES FROM needs a database name")
                })?;
            if !scope.sees_database(database) {
                return Err(BiError::unknown_database(database));
            }
            i += 2;
        }
        if word(i, "not") {
            i += 1;
        }
        if (word(i, "like") || word(i, "ilike"))
            && tokens.get(i + 1).is_some_and(|t| t.kind == Kind::String)
        {
            i += 2;
        }
        if word(i, "limit") && tokens.get(i + 1).is_some_and(|t| t.kind == Kind::Number) {
            i += 2;
        }
        if i != tokens.len() {
            return Ok(None);
        }
        return Ok(Some(Meta::Pass(kind, BTreeSet::new())));
    }
    if word(0, "desc") || word(0, "describe") {
        let start = if word(1, "table") { 2 } else { 1 };
        let Some((database, table, used)) = qualified_name(sql, &tokens[start.min(tokens.len())..])
        else {
            return Ok(None);
        };
        if start + used != tokens.len() {
            return Ok(None);
        }
        let database = database.unwrap_or(scope.database);
        if !scope.sees_table(database, table) {
            return Err(guard_error(
                GuardError::Table(format!("{database}.{table}")),
                scope,
            ));
        }
        if database == scope.analytics
            && scope
                .role
                .bi_hidden_columns
                .get(table)
                .is_some_and(|columns| !columns.is_empty())
        {
            return Ok(Some(Meta::Answer(
                StatementKind::Describe,
                describe_visible(scope.analytics, table),
            )));
        }
        return Ok(Some(Meta::Pass(StatementKind::Describe, BTreeSet::new())));
    }
    if word(0, "exists") {
        let mut i = 1;
        if word(i, "temporary") {
            i += 1;
        }
        let is_database = word(i, "database");
        if is_database || word(i, "table") || word(i, "view") || word(i, "dictionary") {
            i += 1;
        }
        let Some((database, name, used)) = qualified_name(sql, &tokens[i.min(tokens.len())..])
        else {
            return Ok(None);
        };
        if i + used != tokens.len() {
            return Ok(None);
        }
        let visible = match (is_database, database) {
            (true, None) => scope.sees_database(name),
            (true, Some(_)) => return Ok(None),
            (false, database) => scope.sees_table(database.unwrap_or(scope.database), name),
        };
        return Ok(Some(if visible {
            Meta::Pass(StatementKind::Exists, BTreeSet::new())
        } else {
            Meta::Answer(StatementKind::Exists, "SELECT toUInt8(0) AS result".into())
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(tables: &[&str]) -> RolePolicy {
        RolePolicy {
            bi: true,
            bi_tables: tables.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    fn run(sql: &str, tables: &[&str]) -> Result<Plan, BiError> {
        let role = role(tables);
        plan(
            sql,
            &Scope {
                analytics: "analytics",
                database: "analytics",
                role: &role,
            },
        )
    }

    #[test]
    fn driver_handshakes_and_metadata_queries_pass() {
        for sql in [
            "SELECT displayName(), version(), revision(), timezone()",
            "SELECT version(), timezone() FORMAT Native",
            "SELECT 1 AS check FORMAT Native",
            "SELECT name, value, readonly FROM system.settings LIMIT 10000",
            "SELECT name FROM system.functions UNION ALL SELECT name FROM system.table_functions LIMIT 10000",
            "SELECT currentDatabase()",
            "SELECT database, table, name, type FROM system.columns WHERE database = 'analytics'",
        ] {
            let plan = run(sql, &["dau_daily"]).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            assert_eq!(plan.kind, StatementKind::Select, "{sql}");
            assert!(!plan.sql.to_ascii_uppercase().contains("FORMAT"), "{sql}");
        }
        let plan = run("SELECT 1 FORMAT Native;", &[]).unwrap();
        assert_eq!(
            (plan.sql.as_str(), plan.format.as_deref()),
            ("SELECT 1", Some("Native"))
        );
    }

    #[test]
    fn show_describe_and_exists_are_recognized_and_scoped() {
        assert_eq!(
            run("SHOW DATABASES", &[]).unwrap().kind,
            StatementKind::ShowDatabases
        );
        let plan = run("show tables from \"analytics\" FORMAT TabSeparated", &[]).unwrap();
        assert_eq!(
            (plan.kind, plan.format.as_deref()),
            (StatementKind::ShowTables, Some("TabSeparated"))
        );
        assert_eq!(run("SHOW TABLES FROM secret", &[]).unwrap_err().code, 81);
        assert_eq!(run("SHOW GRANTS", &[]).unwrap_err().code, 497);
        assert_eq!(
            run("DESC TABLE `analytics`.`dau_daily`", &["dau*"])
                .unwrap()
                .kind,
            StatementKind::Describe
        );
        assert_eq!(run("DESCRIBE events", &["dau*"]).unwrap_err().code, 497);
        assert_eq!(run("DESCRIBE system.users", &["*"]).unwrap_err().code, 497);
        let hidden = run("EXISTS TABLE analytics.events", &["dau_daily"]).unwrap();
        assert_eq!(hidden.sql, "SELECT toUInt8(0) AS result");
        let shown = run("EXISTS TABLE dau_daily", &["dau_daily"]).unwrap();
        assert_eq!(shown.sql, "EXISTS TABLE dau_daily");
        assert_eq!(
            run("EXISTS DATABASE secret", &[]).unwrap().sql,
            "SELECT toUInt8(0) AS result"
        );
        assert_eq!(
            run("EXISTS DATABASE analytics", &[]).unwrap().sql,
            "EXISTS DATABASE analytics"
        );
    }

    #[test]
    fn writes_foreign_tables_and_table_functions_are_refused() {
        for (sql, code) in [
            ("DROP TABLE events", 164),
            ("INSERT INTO events VALUES (1)", 164),
            ("SYSTEM FLUSH LOGS", 164),
            ("KILL QUERY WHERE 1", 164),
            ("SET readonly = 0", 164),
            ("SELECT * FROM events", 497),
            ("SELECT * FROM system.users", 497),
            ("SELECT * FROM url('http://x', CSV, 'a String')", 497),
            (
                "SELECT * FROM dau_daily WHERE 1 IN (SELECT 1 FROM events)",
                497,
            ),
            ("SELECT 1; SELECT 2", 62),
            ("SELECT * FROM dau_daily INTO OUTFILE 'x' FORMAT CSV", 62),
            ("SHOW TABLES; DROP TABLE dau_daily", 62),
            ("DESC dau_daily -- x\n; DROP TABLE dau_daily", 62),
            ("", 62),
        ] {
            let error = run(sql, &["dau_daily"]).expect_err(sql);
            assert_eq!(error.code, code, "{sql}: {error:?}");
        }
    }

    #[test]
    fn visibility_filters_cover_the_metadata_tables() {
        let role = role(&["dau_*", "events"]);
        let scope = Scope {
            analytics: "analytics",
            database: "analytics",
            role: &role,
        };
        let filters = visibility_filters(&scope);
        assert_eq!(
            filters["system.databases"],
            "name IN ('analytics', 'system')"
        );
        assert!(filters["system.tables"].starts_with(
            "(database = 'analytics' AND (name LIKE 'dau\\\\_%' OR name LIKE 'events'))"
        ));
        assert!(filters["system.columns"].contains("table IN ('databases'"));
        assert!(filters["system.table_functions"].contains("'numbers'"));
        assert!(!filters["system.table_functions"].contains("'url'"));
        assert!(filters["system.functions"].contains("NOT IN ('file', 'url'"));
    }
}
