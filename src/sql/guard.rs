//! The SQL guard: every statement chgate sends on behalf of a template (and, later, a BI client) is
//! parsed with `sqlparser`'s ClickHouse dialect and must be exactly one read-only query over allowed
//! tables. Deny by default: anything the parser cannot read is refused, never passed through.
//!
//! What it checks, walking the AST with scope-aware CTE resolution:
//! - one statement, a `SELECT`/`WITH`/`UNION` query, no `INTO`, no `FORMAT` unless allowed;
//! - every table (also `x IN table`, subqueries, joins) resolves, bare names qualified with the
//!   default database, to an allowed table, or to a CTE in scope;
//! - table functions only from an allow-list (`numbers`, …);
//! - no function that reads outside the query's tables (`file`, `url`, `remote`, `dictGet*`,
//!   `joinGet`, …);
//! - `SETTINGS` only from an allow-list.
//!
//! Placeholders `{name:Type}` are replaced by a neutral expression before parsing (see
//! `placeholders`), so the guard sees the shape that will run. The original text is what is sent
//! to ClickHouse — never a re-rendering of the AST.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, JoinConstraint, JoinOperator,
    ObjectName, Query, SelectItem, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::ClickHouseDialect;
use sqlparser::parser::{Parser, ParserOptions};

use super::placeholders::{self, Placeholder};
use crate::glob::glob;

/// Table functions that read no external data.
pub const SAFE_TABLE_FUNCTIONS: &[&str] = &[
    "numbers",
    "numbers_mt",
    "zeros",
    "zeros_mt",
    "generate_series",
    "generateseries",
    "values",
    "null",
];

/// Functions that read data from outside the tables of the query, or stall the server.
pub const DENIED_FUNCTIONS: &[&str] = &[
    "file",
    "url",
    "s3",
    "s3cluster",
    "remote",
    "remotesecure",
    "cluster",
    "clusterallreplicas",
    "mysql",
    "postgresql",
    "jdbc",
    "odbc",
    "hdfs",
    "input",
    "executable",
    "azureblobstorage",
    "gcs",
    "mongodb",
    "redis",
    "sqlite",
    "dictionary",
    "merge",
    "joinget",
    "joingetornull",
    "dictget",
    "dictgetordefault",
    "dictgetornull",
    "dicthas",
    "dictgethierarchy",
    "dictisin",
    "dictgetchildren",
    "dictgetdescendants",
    "sleep",
    "sleepeachrow",
    "getsetting",
    "getsettingordefault",
    "globalvariable",
    "filesystemavailable",
    "filesystemcapacity",
    "filesystemunreserved",
    "icebergs3",
    "deltalake",
    "hudi",
    "iceberg",
    "view",
    "viewifpermitted",
    "loop",
    "fuzzjson",
    "fuzzquery",
    "mergetreeindex",
    "mergetreeprojection",
    // Metadata and server files by name, outside the statement's own tables.
    "hascolumnintable",
    "getmacro",
    "getserversetting",
    "getmergetreesetting",
    "catboostevaluate",
    "naivebayesclassifier",
];

/// What a statement may touch.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Database that bare table names belong to.
    pub database: String,
    /// Allowed tables as `(database, table pattern)`; `*` in a pattern matches any run of
    /// characters, so `(db, "*")` allows every table of `db`.
    pub tables: BTreeSet<(String, String)>,
    /// Allowed table functions (lower case).
    pub table_functions: BTreeSet<String>,
    /// Settings a query may set in a `SETTINGS` clause (lower case); `None` leaves them to the
    /// caller, which finds them in [`Checked::settings`].
    pub settings: Option<BTreeSet<String>>,
    /// Whether a `FORMAT` clause is accepted.
    pub allow_format: bool,
    /// Columns of some tables (`database.table` → lower-case names) that a statement reading the
    /// table may use only as the argument of a distinct count (`uniq(c)`, `count(DISTINCT c)`):
    /// never selected, filtered, grouped or joined on, and never behind a `*` or `COLUMNS(…)`.
    pub hidden_columns: BTreeMap<String, BTreeSet<String>>,
}

impl Policy {
    /// Every table of `database`, safe table functions, no `SETTINGS`, no `FORMAT`.
    pub fn database(database: &str) -> Self {
        Self {
            database: database.to_string(),
            tables: BTreeSet::from([(database.to_string(), "*".to_string())]),
            table_functions: SAFE_TABLE_FUNCTIONS.iter().map(|s| s.to_string()).collect(),
            settings: Some(BTreeSet::new()),
            allow_format: false,
            hidden_columns: BTreeMap::new(),
        }
    }

    pub fn allows_table(&self, database: &str, table: &str) -> bool {
        self.tables
            .iter()
            .any(|(db, pattern)| db == database && glob(pattern, table))
    }
}

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("cannot parse the SQL: {0}")]
    Unparseable(String),
    #[error("exactly one statement is allowed, found {0}")]
    StatementCount(usize),
    #[error("only read-only queries (SELECT, WITH, UNION) are allowed, found {0}")]
    NotAQuery(String),
    #[error("table {0} is not allowed")]
    Table(String),
    #[error("table function {0}() is not allowed")]
    TableFunction(String),
    #[error("function {0}() is not allowed")]
    Function(String),
    #[error("setting {0} may not be set in the query")]
    Setting(String),
    #[error("{0} is not allowed")]
    Clause(&'static str),
    #[error("column {column} of {table} is hidden from this role; it may only be counted (uniq({column}), count(DISTINCT {column}))")]
    HiddenColumn { table: String, column: String },
    #[error("{table} has columns hidden from this role, so it cannot be read with * or COLUMNS(…); name the columns")]
    HiddenByWildcard { table: String },
}

/// A statement that passed the guard.
#[derive(Debug, Clone)]
pub struct Checked {
    pub placeholders: Vec<Placeholder>,
    /// Tables read, as `database.table`.
    pub tables: BTreeSet<String>,
    /// Settings named in `SETTINGS` clauses (lower case), with their values as written.
    pub settings: Vec<(String, String)>,
}

/// Checks `sql` against `policy`.
pub fn check(sql: &str, policy: &Policy) -> Result<Checked, GuardError> {
    let (placeholders, parseable) = placeholders::extract(sql);
    let dialect = ClickHouseDialect {};
    let statements = Parser::new(&dialect)
        .with_options(ParserOptions::new().with_unescape(false))
        .try_with_sql(&parseable)
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|e| GuardError::Unparseable(e.to_string()))?;
    if statements.len() != 1 {
        return Err(GuardError::StatementCount(statements.len()));
    }
    let statement = &statements[0];
    let Statement::Query(query) = statement else {
        let kind = statement
            .to_string()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_ascii_uppercase();
        return Err(GuardError::NotAQuery(kind));
    };
    let mut walker = Walker {
        policy,
        scopes: Vec::new(),
        skip_relations: Vec::new(),
        array_joins: Vec::new(),
        tables: BTreeSet::new(),
        settings: Vec::new(),
        error: None,
        references: BTreeSet::new(),
        counted: BTreeSet::new(),
        wildcard: false,
    };
    let _ = query.visit(&mut walker);
    if let Some(error) = walker.error {
        return Err(error);
    }
    for table in &walker.tables {
        let Some(hidden) = policy.hidden_columns.get(table) else {
            continue;
        };
        if walker.wildcard {
            return Err(GuardError::HiddenByWildcard {
                table: table.clone(),
            });
        }
        if let Some(column) = hidden.iter().find(|c| walker.references.contains(*c)) {
            return Err(GuardError::HiddenColumn {
                table: table.clone(),
                column: column.clone(),
            });
        }
    }
    Ok(Checked {
        placeholders,
        tables: walker.tables,
        settings: walker.settings,
    })
}

/// The CTEs of one query level.
struct Scope {
    /// Names usable as relations here: the CTEs whose bodies have been walked.
    visible: Vec<String>,
    /// Every CTE of the level: name and the identity of its body.
    ctes: Vec<(String, usize)>,
}

/// Identity of a parsed query node (its address), to recognise a CTE's body when it is left.
fn query_id(query: &Query) -> usize {
    std::ptr::from_ref(query) as usize
}

struct Walker<'a> {
    policy: &'a Policy,
    /// CTE names visible in the query being walked, innermost last.
    scopes: Vec<Scope>,
    /// Names whose relation visit must not be read as a table: table functions (checked on their
    /// own) and `ARRAY JOIN` columns.
    skip_relations: Vec<ObjectName>,
    /// Operands of `ARRAY JOIN` in the select being walked.
    array_joins: Vec<ObjectName>,
    tables: BTreeSet<String>,
    settings: Vec<(String, String)>,
    error: Option<GuardError>,
    /// Column names (lower case) the statement uses other than as a counted argument.
    references: BTreeSet<String>,
    /// Identity of identifier expressions that are arguments of a distinct count.
    counted: BTreeSet<usize>,
    /// Whether a `*`, `t.*` or `COLUMNS(…)` selects columns (a `count(*)` does not).
    wildcard: bool,
}

/// Aggregates whose result reveals no value of their arguments, only how many there are: all
/// their arguments (plain columns) count.
const COUNTING: &[&str] = &[
    "count",
    "uniq",
    "uniqexact",
    "uniqcombined",
    "uniqcombined64",
    "uniqhll12",
    "uniqtheta",
];

/// The `If` forms of [`COUNTING`]: only the first argument counts (the condition is a use).
const COUNTING_IF: &[&str] = &[
    "uniqif",
    "uniqexactif",
    "uniqcombinedif",
    "uniqcombined64if",
    "uniqhll12if",
];

/// Identity of an expression node (its address).
fn expr_id(expr: &Expr) -> usize {
    std::ptr::from_ref(expr) as usize
}

/// The `ON`/`USING` part of a join, if it has one.
fn join_constraint(operator: &JoinOperator) -> Option<&JoinConstraint> {
    match operator {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c)
        | JoinOperator::StraightJoin(c)
        | JoinOperator::AsOf { constraint: c, .. } => Some(c),
        _ => None,
    }
}

impl Walker<'_> {
    /// Notes a column the statement uses, named without an expression (`USING (c)`, a column
    /// that parses as a relation): its last name part, lower case.
    fn refer(&mut self, name: &ObjectName) {
        if let Some(last) = name_parts(name).and_then(|mut parts| parts.pop()) {
            self.references.insert(last.to_ascii_lowercase());
        }
    }

    fn fail(&mut self, error: GuardError) -> ControlFlow<()> {
        self.error.get_or_insert(error);
        ControlFlow::Break(())
    }

    fn in_scope(&self, name: &str) -> bool {
        self.scopes
            .iter()
            .any(|scope| scope.visible.iter().any(|cte| cte == name))
    }

    /// Resolves a table name to `(database, table)` and checks it.
    fn table(&mut self, parts: &[String]) -> ControlFlow<()> {
        let (database, table) = match parts {
            [table] if self.in_scope(table) => return ControlFlow::Continue(()),
            [table] => (self.policy.database.clone(), table.clone()),
            [database, table] => (database.clone(), table.clone()),
            _ => return self.fail(GuardError::Table(parts.join("."))),
        };
        if !self.policy.allows_table(&database, &table) {
            return self.fail(GuardError::Table(format!("{database}.{table}")));
        }
        self.tables.insert(format!("{database}.{table}"));
        ControlFlow::Continue(())
    }
}

/// `name` is lower case.
fn is_denied_function(name: &str) -> bool {
    DENIED_FUNCTIONS.contains(&name) || name.starts_with("dictget")
}

fn name_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|part| part.as_ident().map(|i| i.value.clone()))
        .collect()
}

impl Visitor for Walker<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        for setting in query.settings.iter().flatten() {
            let key = setting.key.value.to_ascii_lowercase();
            if let Some(allowed) = &self.policy.settings {
                if !allowed.contains(&key) {
                    return self.fail(GuardError::Setting(key));
                }
            }
            self.settings.push((key, setting.value.to_string()));
        }
        if query.format_clause.is_some() && !self.policy.allow_format {
            return self.fail(GuardError::Clause("a FORMAT clause"));
        }
        if !query.locks.is_empty() || query.for_clause.is_some() || !query.pipe_operators.is_empty()
        {
            return self.fail(GuardError::Clause("this clause"));
        }
        // A CTE's name becomes visible once its own body has been walked (`post_visit_query`):
        // inside its body and those of earlier CTEs the name is the table of that name, as
        // ClickHouse reads it, so it is checked (and row-filtered) like any table.
        let ctes = query
            .with
            .iter()
            .flat_map(|w| {
                w.cte_tables
                    .iter()
                    .map(|cte| (cte.alias.name.value.clone(), query_id(&cte.query)))
            })
            .collect();
        self.scopes.push(Scope {
            visible: Vec::new(),
            ctes,
        });
        if let SetExpr::Select(select) = query.body.as_ref() {
            if select.into.is_some() {
                return self.fail(GuardError::Clause("SELECT … INTO"));
            }
        }
        if !matches!(
            query.body.as_ref(),
            SetExpr::Select(_)
                | SetExpr::Query(_)
                | SetExpr::SetOperation { .. }
                | SetExpr::Values(_)
        ) {
            return self.fail(GuardError::NotAQuery("a data-modifying body".into()));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.scopes.pop();
        if let Some(parent) = self.scopes.last_mut() {
            let id = query_id(query);
            if let Some(name) = parent
                .ctes
                .iter()
                .find(|(_, cte)| *cte == id)
                .map(|(name, _)| name.clone())
            {
                parent.visible.push(name);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, args, .. } = factor {
            if let Some(index) = self.array_joins.iter().position(|n| n == name) {
                // An ARRAY JOIN operand is a column or an expression, never a table.
                self.array_joins.remove(index);
                let function = name_parts(name)
                    .map(|p| p.join("."))
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if args.is_some() && is_denied_function(&function) {
                    return self.fail(GuardError::Function(function));
                }
                self.refer(name);
                self.skip_relations.push(name.clone());
                return ControlFlow::Continue(());
            }
        }
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                let function = name_parts(name)
                    .map(|p| p.join("."))
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if !self.policy.table_functions.contains(&function) {
                    return self.fail(GuardError::TableFunction(function));
                }
                self.skip_relations.push(name.clone());
                ControlFlow::Continue(())
            }
            TableFactor::Table { .. }
            | TableFactor::Derived { .. }
            | TableFactor::NestedJoin { .. } => ControlFlow::Continue(()),
            TableFactor::UNNEST { .. } => ControlFlow::Continue(()),
            _ => self.fail(GuardError::Clause("this kind of table expression")),
        }
    }

    fn pre_visit_select(&mut self, select: &sqlparser::ast::Select) -> ControlFlow<()> {
        if select.projection.iter().any(|item| {
            matches!(
                item,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        }) {
            self.wildcard = true;
        }
        // `USING (c)` names columns without expressions.
        for from in &select.from {
            for join in &from.joins {
                if let Some(JoinConstraint::Using(names)) = join_constraint(&join.join_operator) {
                    for name in names {
                        self.refer(name);
                    }
                }
            }
        }
        // `ARRAY JOIN column AS x` parses as a join with a table factor named after the column.
        for from in &select.from {
            for join in &from.joins {
                let array_join = matches!(
                    join.join_operator,
                    JoinOperator::ArrayJoin
                        | JoinOperator::LeftArrayJoin
                        | JoinOperator::InnerArrayJoin
                );
                if let (true, TableFactor::Table { name, .. }) = (array_join, &join.relation) {
                    self.array_joins.push(name.clone());
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if let Some(index) = self.skip_relations.iter().position(|name| name == relation) {
            self.skip_relations.remove(index);
            return ControlFlow::Continue(());
        }
        match name_parts(relation) {
            Some(parts) => self.table(&parts),
            None => self.fail(GuardError::Table(relation.to_string())),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(function) => {
                let name = name_parts(&function.name)
                    .map(|p| p.join("."))
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if is_denied_function(&name) {
                    return self.fail(GuardError::Function(name));
                }
                if name == "columns" {
                    self.wildcard = true;
                }
                if let FunctionArguments::List(list) = &function.args {
                    let counting = COUNTING.contains(&name.as_str());
                    let counting_first = COUNTING_IF.contains(&name.as_str());
                    for (i, arg) in list.args.iter().enumerate() {
                        let arg = match arg {
                            FunctionArg::Unnamed(a) => a,
                            FunctionArg::Named { arg, .. } | FunctionArg::ExprNamed { arg, .. } => {
                                arg
                            }
                        };
                        match arg {
                            FunctionArgExpr::Expr(
                                e @ (Expr::Identifier(_) | Expr::CompoundIdentifier(_)),
                            ) if counting || (counting_first && i == 0) => {
                                self.counted.insert(expr_id(e));
                            }
                            FunctionArgExpr::Expr(_) => {}
                            // `count(*)` counts rows; a `*` anywhere else expands to columns.
                            _ if name == "count" => {}
                            _ => self.wildcard = true,
                        }
                    }
                }
                ControlFlow::Continue(())
            }
            Expr::Identifier(ident) => {
                if !self.counted.contains(&expr_id(expr)) {
                    self.references.insert(ident.value.to_ascii_lowercase());
                }
                ControlFlow::Continue(())
            }
            Expr::CompoundIdentifier(parts) => {
                if !self.counted.contains(&expr_id(expr)) {
                    if let Some(last) = parts.last() {
                        self.references.insert(last.value.to_ascii_lowercase());
                    }
                }
                ControlFlow::Continue(())
            }
            Expr::Wildcard(_) | Expr::QualifiedWildcard(..) => {
                self.wildcard = true;
                ControlFlow::Continue(())
            }
            // ClickHouse reads `x IN name` as membership in the table `name`.
            Expr::InList { list, .. } if list.len() == 1 => match &list[0] {
                Expr::Identifier(ident) => self.table(std::slice::from_ref(&ident.value)),
                Expr::CompoundIdentifier(parts) => {
                    let parts: Vec<String> = parts.iter().map(|i| i.value.clone()).collect();
                    self.table(&parts)
                }
                _ => ControlFlow::Continue(()),
            },
            _ => ControlFlow::Continue(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let mut policy = Policy::database("analytics");
        policy.settings = Some(BTreeSet::from(["max_threads".to_string()]));
        policy
    }

    fn ok(sql: &str) -> Checked {
        check(sql, &policy()).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn denied(sql: &str) -> GuardError {
        check(sql, &policy()).expect_err(sql)
    }

    #[test]
    fn analytics_queries_pass_and_report_their_tables() {
        let checked = ok("SELECT day, uniqMerge(users) FROM dau_daily WHERE day BETWEEN {from:Date} AND {to:Date} GROUP BY day ORDER BY day");
        assert_eq!(
            checked.tables,
            BTreeSet::from(["analytics.dau_daily".to_string()])
        );
        assert_eq!(checked.placeholders.len(), 2);
        ok("WITH steps AS (SELECT actor_id, windowFunnel(86400)(timestamp, event = 'a', event = 'b') AS level FROM events GROUP BY actor_id) SELECT level, count() FROM steps GROUP BY level");
        ok("SELECT number FROM numbers(10)");
        ok("SELECT e.event, x FROM analytics.events AS e ARRAY JOIN splitByChar(',', e.event) AS x LIMIT 5 BY e.event SETTINGS max_threads = 2");
        ok("SELECT event, x FROM events ARRAY JOIN tags AS x");
        ok("SELECT count() FROM events WHERE actor_id IN (SELECT actor_id FROM user_first_seen) UNION ALL SELECT 1");
    }

    #[test]
    fn anything_but_one_read_only_query_is_refused() {
        assert!(matches!(
            denied("SELECT 1; DROP TABLE events"),
            GuardError::StatementCount(2)
        ));
        assert!(matches!(
            denied("DROP TABLE events"),
            GuardError::NotAQuery(_)
        ));
        assert!(matches!(
            denied("INSERT INTO events SELECT * FROM events"),
            GuardError::NotAQuery(_)
        ));
        assert!(matches!(
            denied("SYSTEM FLUSH LOGS"),
            GuardError::Unparseable(_)
        ));
        assert!(matches!(
            denied("ALTER TABLE events DELETE WHERE 1"),
            GuardError::Unparseable(_) | GuardError::NotAQuery(_)
        ));
        assert!(matches!(
            denied("SELECT * FROM events INTO OUTFILE 'x'"),
            GuardError::Unparseable(_) | GuardError::Clause(_)
        ));
    }

    #[test]
    fn tables_outside_the_policy_are_refused_wherever_they_hide() {
        for sql in [
            "SELECT * FROM system.users",
            "SELECT * FROM other.secrets",
            "SELECT 1 FROM events WHERE actor_id IN other.secrets",
            "SELECT 1 FROM events WHERE actor_id IN (SELECT name FROM system.users)",
            "SELECT * FROM events JOIN other.t USING (actor_id)",
            "SELECT (SELECT count() FROM system.processes)",
        ] {
            assert!(matches!(denied(sql), GuardError::Table(_)), "{sql}");
        }
    }

    #[test]
    fn a_cte_name_only_shadows_tables_inside_its_own_scope() {
        let mut policy = policy();
        policy.tables = BTreeSet::from([("analytics".to_string(), "events".to_string())]);
        assert!(check("WITH secret AS (SELECT 1) SELECT * FROM secret", &policy).is_ok());
        let escaped =
            "SELECT * FROM secret WHERE 1 IN (WITH secret AS (SELECT 1) SELECT * FROM secret)";
        assert_eq!(
            check(escaped, &policy).unwrap_err(),
            GuardError::Table("analytics.secret".into())
        );
    }

    #[test]
    fn a_cte_name_is_the_table_inside_its_own_body_and_earlier_ctes() {
        let mut policy = policy();
        policy.tables = BTreeSet::from([("analytics".to_string(), "events".to_string())]);
        // Inside its own body, `secret` is the table of that name, not the CTE.
        assert_eq!(
            check(
                "WITH secret AS (SELECT * FROM secret) SELECT * FROM secret",
                &policy
            )
            .unwrap_err(),
            GuardError::Table("analytics.secret".into())
        );
        // A later CTE is not visible in an earlier one's body.
        assert_eq!(
            check(
                "WITH a AS (SELECT * FROM secret), secret AS (SELECT 1) SELECT * FROM a",
                &policy
            )
            .unwrap_err(),
            GuardError::Table("analytics.secret".into())
        );
        // A CTE shadowing an allowed table still records the table its body reads (for row
        // filters), and earlier CTEs are visible to later ones.
        let checked = check(
            "WITH events AS (SELECT * FROM events), b AS (SELECT * FROM events) SELECT * FROM b",
            &policy,
        )
        .unwrap();
        assert_eq!(
            checked.tables,
            BTreeSet::from(["analytics.events".to_string()])
        );
    }

    #[test]
    fn hidden_columns_may_only_be_counted() {
        let mut policy = policy();
        policy.hidden_columns = BTreeMap::from([(
            "analytics.events".to_string(),
            BTreeSet::from(["actor_id".to_string(), "ip".to_string()]),
        )]);
        let check = |sql: &str| check(sql, &policy);
        for sql in [
            "SELECT uniq(actor_id), uniqExact(e.actor_id), count(DISTINCT actor_id), count(*) FROM events AS e",
            "SELECT event, uniqIf(actor_id, is_bot = 0) FROM events GROUP BY event",
            // Other tables are not restricted.
            "SELECT actor_id FROM user_first_seen",
            "SELECT * FROM dau_daily",
        ] {
            assert!(check(sql).is_ok(), "{sql}: {:?}", check(sql));
        }
        for sql in [
            "SELECT actor_id FROM events",
            "SELECT e.ip AS x FROM events AS e",
            "SELECT count() FROM events WHERE actor_id = 'u1'",
            "SELECT count() FROM events GROUP BY actor_id",
            "SELECT count() FROM events ORDER BY ip",
            "SELECT any(actor_id) FROM events",
            "SELECT uniqIf(event, actor_id = 'u1') FROM events",
            "SELECT count() FROM events AS a JOIN events AS b USING (actor_id)",
            "SELECT x FROM events ARRAY JOIN actor_id AS x",
            "SELECT t FROM (SELECT ip AS t FROM events)",
        ] {
            assert!(
                matches!(check(sql), Err(GuardError::HiddenColumn { .. })),
                "{sql}: {:?}",
                check(sql)
            );
        }
        for sql in [
            "SELECT * FROM events",
            "SELECT e.* FROM events AS e",
            "SELECT COLUMNS('id') FROM events",
            "SELECT count() FROM (SELECT * FROM events)",
            "SELECT tuple(*) FROM events",
        ] {
            assert!(
                matches!(check(sql), Err(GuardError::HiddenByWildcard { .. })),
                "{sql}: {:?}",
                check(sql)
            );
        }
    }

    #[test]
    fn dangerous_functions_and_table_functions_are_refused() {
        assert!(matches!(
            denied("SELECT * FROM url('http://x', CSV, 'a String')"),
            GuardError::TableFunction(_)
        ));
        assert!(matches!(
            denied("SELECT * FROM remote('h', analytics.events)"),
            GuardError::TableFunction(_)
        ));
        assert!(matches!(
            denied("SELECT file('/etc/passwd')"),
            GuardError::Function(_)
        ));
        assert!(matches!(
            denied("SELECT dictGetString('d', 'a', 1)"),
            GuardError::Function(_)
        ));
        assert!(matches!(
            denied("SELECT joinGet('j', 'v', 1)"),
            GuardError::Function(_)
        ));
    }

    #[test]
    fn settings_and_format_clauses_follow_the_policy() {
        assert_eq!(
            denied("SELECT 1 FROM events SETTINGS readonly = 0"),
            GuardError::Setting("readonly".into())
        );
        assert!(matches!(
            denied("SELECT 1 FROM events FORMAT TabSeparated"),
            GuardError::Clause(_)
        ));
    }

    #[test]
    fn placeholders_inside_strings_are_not_placeholders() {
        let checked = ok("SELECT '{x:String}' FROM events");
        assert!(checked.placeholders.is_empty());
    }
}
