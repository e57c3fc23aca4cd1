//! Property tests of what stands between callers and ClickHouse, each against an oracle outside
//! the gateway's own code:
//! - the SQL guard against ClickHouse's own analysis (`EXPLAIN QUERY TREE`) of generated
//!   statements: whatever the guard accepts reads only the role's tables and none of its hidden
//!   columns;
//! - the settings policy against ClickHouse's list of its settings;
//! - template parameter values against ClickHouse's parsing of the same values;
//! - the ingestion body parser against random and mangled bodies.
//!
//! `CHGATE_PROPTEST_CASES` sets the number of cases (default: a bounded run for the suite).

use std::collections::{BTreeMap, BTreeSet};

use chgate::access::policy::{Policy, RolePolicy};
use chgate::bi::statement::{self, Scope, StatementKind};
use chgate::sql::placeholders;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::helpers::{TestApp, TestDatabases};

fn cases(default: u32) -> u32 {
    std::env::var("CHGATE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(default: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: cases(default),
        failure_persistence: None,
        ..Config::default()
    })
}

pub(crate) fn shipped_role(name: &str) -> std::sync::Arc<RolePolicy> {
    let policy =
        Policy::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/access.toml"))
            .unwrap();
    policy.role(name).unwrap().clone()
}

// ---------------------------------------------------------------------------------------------
// Generated statements

/// A statement and the URL parameters sent with it.
#[derive(Debug, Clone)]
struct Statement {
    sql: String,
    params: Vec<(String, String)>,
}

const COLUMNS: &[&str] = &[
    "event",
    "developer_id",
    "timestamp",
    "platform",
    "item_id",
    "user_id",
    "anonymous_id",
    "actor_id",
    "session_id",
    "ip",
    "user_agent",
];

/// `@db` stands for the test's analytics database.
const TABLES: &[&str] = &[
    "events",
    "@db.events",
    "dau_daily",
    "events_buffer",
    "user_first_seen",
    "system.one",
    "system.tables",
    "system.users",
    "@db.events_ingest",
];

/// Visible columns and the role's own tables come up more often than the others, so that many
/// generated statements pass the guard and reach ClickHouse's analysis.
fn weighted(
    names: &'static [&'static str],
    favoured: usize,
) -> impl Strategy<Value = &'static str> {
    prop_oneof![
        3 => proptest::sample::select(&names[..favoured]),
        1 => proptest::sample::select(names),
    ]
}

fn quoted(name: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(name.to_string()),
        1 => Just(format!("`{name}`")),
        1 => Just(format!("\"{name}\"")),
    ]
}

fn column() -> impl Strategy<Value = String> {
    weighted(COLUMNS, 5).prop_flat_map(quoted)
}

fn table() -> impl Strategy<Value = String> {
    weighted(TABLES, 2).prop_map(str::to_string)
}

/// Layout between tokens: spaces, newlines, comments.
fn gap() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => Just(" "),
        1 => Just("\n"),
        1 => Just(" /* c */ "),
        1 => Just(" -- c\n"),
    ]
}

/// An expression; `Identifier` and value placeholders add their parameters.
fn expr(depth: u32) -> BoxedStrategy<Statement> {
    let leaf = prop_oneof![
        4 => column().prop_map(|c| Statement { sql: c, params: vec![] }),
        1 => Just(Statement { sql: "1".into(), params: vec![] }),
        1 => Just(Statement { sql: "'x'".into(), params: vec![] }),
        1 => proptest::sample::select(COLUMNS).prop_map(|c| Statement {
            sql: "{c:Identifier}".into(),
            params: vec![("c".into(), c.to_string())],
        }),
        1 => Just(Statement {
            sql: "{v:String}".into(),
            params: vec![("v".into(), "dev-1".into())],
        }),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let inner = expr(depth - 1);
    prop_oneof![
        4 => leaf,
        1 => inner.clone().prop_map(|e| Statement { sql: format!("lower(toString({}))", e.sql), params: e.params }),
        1 => inner.clone().prop_map(|e| Statement { sql: format!("concat(toString({}), '')", e.sql), params: e.params }),
        1 => (inner.clone(), table()).prop_map(|(e, t)| Statement {
            sql: format!("toString({}) IN {t}", e.sql),
            params: e.params,
        }),
        1 => (query(depth - 1)).prop_map(|q| Statement {
            sql: format!("({})", q.sql),
            params: q.params,
        }),
        1 => (inner.clone(), query(depth - 1)).prop_map(|(e, q)| Statement {
            sql: format!("toString({}) IN (SELECT toString(*) FROM ({}))", e.sql, q.sql),
            params: [e.params, q.params].concat(),
        }),
    ]
    .boxed()
}

/// A `FROM` source.
fn source(depth: u32) -> BoxedStrategy<Statement> {
    let plain = table().prop_map(|t| Statement {
        sql: t,
        params: vec![],
    });
    if depth == 0 {
        return plain.boxed();
    }
    prop_oneof![
        4 => plain,
        1 => query(depth - 1).prop_map(|q| Statement { sql: format!("({}) AS s", q.sql), params: q.params }),
        1 => (table(), table(), column()).prop_map(|(a, b, c)| Statement {
            sql: format!("{a} AS a JOIN {b} AS b USING ({c})"),
            params: vec![],
        }),
        1 => (table(), column()).prop_map(|(t, c)| Statement {
            sql: format!("{t} ARRAY JOIN [{c}] AS arr"),
            params: vec![],
        }),
        1 => Just(Statement { sql: "numbers(2)".into(), params: vec![] }),
    ]
    .boxed()
}

/// A query: `SELECT … FROM … [WHERE …] [LIMIT …]`, a CTE in front, or a `UNION ALL`.
fn query(depth: u32) -> BoxedStrategy<Statement> {
    let select = (
        proptest::collection::vec(
            prop_oneof![4 => expr(depth), 1 => Just(Statement { sql: "*".into(), params: vec![] })],
            1..3,
        ),
        source(depth),
        proptest::option::of(expr(depth)),
        gap(),
        gap(),
    )
        .prop_map(|(items, from, filter, g1, g2)| {
            let mut params: Vec<(String, String)> = Vec::new();
            let list: Vec<String> = items
                .into_iter()
                .map(|i| {
                    params.extend(i.params);
                    i.sql
                })
                .collect();
            params.extend(from.params);
            let mut sql = format!("SELECT{g1}{}{g2}FROM {}", list.join(", "), from.sql);
            if let Some(filter) = filter {
                params.extend(filter.params);
                sql.push_str(&format!(" WHERE toString({}) != ''", filter.sql));
            }
            sql.push_str(" LIMIT 1");
            Statement { sql, params }
        });
    if depth == 0 {
        return select.boxed();
    }
    let inner = query(depth - 1);
    prop_oneof![
        4 => select,
        1 => (proptest::sample::select(&["x", "events", "dau_daily"][..]), inner.clone(), inner.clone())
            .prop_map(|(name, body, rest)| Statement {
                sql: format!("WITH {name} AS ({}) {}", body.sql, rest.sql),
                params: [body.params, rest.params].concat(),
            }),
        1 => (inner.clone(), inner).prop_map(|(a, b)| Statement {
            sql: format!("{} UNION ALL {}", a.sql, b.sql),
            params: [a.params, b.params].concat(),
        }),
    ]
    .boxed()
}

/// What ClickHouse resolves a statement to: the tables read, and `(table, column)` pairs read
/// straight from a table.
fn resolved(tree: &str) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let field = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}: "))? + name.len() + 2;
        Some(
            line[start..]
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        )
    };
    let mut tables = BTreeMap::new();
    for line in tree.lines().map(str::trim) {
        if line.starts_with("TABLE id:") {
            if let (Some(id), Some(name)) = (field(line, "id"), field(line, "table_name")) {
                tables.insert(id, name);
            }
        }
    }
    let mut columns = BTreeSet::new();
    for line in tree.lines().map(str::trim) {
        if line.starts_with("COLUMN id:") {
            if let (Some(column), Some(source)) =
                (field(line, "column_name"), field(line, "source_id"))
            {
                if let Some(table) = tables.get(&source) {
                    columns.insert((table.clone(), column));
                }
            }
        }
    }
    (tables.into_values().collect(), columns)
}

#[test]
fn whatever_the_guard_accepts_clickhouse_resolves_to_the_roles_tables_and_visible_columns() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let databases = runtime.block_on(TestDatabases::migrated());
    let db = databases.settings.clickhouse.database.clone();
    let url = crate::helpers::clickhouse_url();
    let http = reqwest::Client::new();
    let role = shipped_role("developer");
    let hidden: BTreeSet<String> = role.bi_hidden_columns["events"].iter().cloned().collect();
    let allowed_system: BTreeSet<String> = statement::SYSTEM_TABLES
        .iter()
        .map(|t| format!("system.{t}"))
        .collect();
    let accepted = std::cell::Cell::new(0u32);
    let analysed = std::cell::Cell::new(0u32);

    let mut runner = runner(300);
    let result = runner.run(&query(2), |generated| {
        let sql = generated.sql.replace("@db", &db);
        let params = &generated.params;
        let value = |name: &str| {
            params
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let Ok(bound) = placeholders::bind_identifiers(&sql, value) else {
            return Ok(());
        };
        let scope = Scope {
            analytics: &db,
            database: &db,
            role: &role,
        };
        let Ok(plan) = statement::plan(&bound.sql, &scope) else {
            return Ok(());
        };
        prop_assert_eq!(plan.kind, StatementKind::Select);
        accepted.set(accepted.get() + 1);
        let mut request = url::Url::parse(&url).unwrap();
        request
            .query_pairs_mut()
            .append_pair("database", &db)
            .extend_pairs(
                params
                    .iter()
                    .filter(|(k, _)| bound.values.contains(k))
                    .map(|(k, v)| (format!("param_{k}"), v.clone())),
            );
        let (status, tree) = runtime.block_on(async {
            let response = http
                .post(request)
                .body(format!("EXPLAIN QUERY TREE {}", plan.sql))
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        });
        if !status.is_success() {
            // ClickHouse refuses the statement: it reads nothing.
            if std::env::var_os("CHGATE_PROPTEST_VERBOSE").is_some() {
                eprintln!(
                    "refused by ClickHouse: {}\n  {}",
                    plan.sql,
                    tree.lines().next().unwrap_or_default()
                );
            }
            return Ok(());
        }
        analysed.set(analysed.get() + 1);
        let (tables, columns) = resolved(&tree);
        for table in &tables {
            prop_assert!(
                table == &format!("{db}.events") || allowed_system.contains(table),
                "the guard accepted {} but ClickHouse reads {}",
                plan.sql,
                table
            );
        }
        for (table, column) in &columns {
            prop_assert!(
                !(table == &format!("{db}.events") && hidden.contains(column)),
                "the guard accepted {} but ClickHouse reads the hidden column {}",
                plan.sql,
                column
            );
        }
        Ok(())
    });
    drop(databases);
    if let Err(error) = result {
        panic!("{error}");
    }
    let (accepted, analysed) = (accepted.get(), analysed.get());
    eprintln!(
        "guard properties: {accepted} statements accepted, {analysed} analysed by ClickHouse"
    );
    assert!(
        analysed * 20 >= cases(300),
        "too few generated statements pass the guard ({analysed}) for the property to say much"
    );
}

// ---------------------------------------------------------------------------------------------
// Settings

/// A setting's value as clients send them, well-formed or not.
fn setting_value() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just("0".to_string()),
        8 => Just("1".to_string()),
        1 => Just("-1".to_string()),
        1 => Just("abc".to_string()),
        1 => Just("1e308".to_string()),
        1 => Just(String::new()),
        1 => Just("99999999999999999999".to_string()),
        1 => Just("best_effort".to_string()),
        1 => Just("'x'".to_string()),
        1 => "[ -~]{0,12}",
    ]
}

#[test]
fn settings_a_client_sends_are_refused_with_a_4xx_or_accepted_by_clickhouse() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, _dir, key, known, listed) = runtime.block_on(async {
        let (app, dir) = crate::attacks::spawn().await;
        let key = app.create_key("analyst").await;
        let known: Vec<String> = app
            .clickhouse()
            .query("SELECT name FROM system.settings ORDER BY name")
            .fetch_all()
            .await
            .unwrap();
        // What the role sees listed: the settings it may send.
        let listed = crate::bi::bi(&app, &key, &[], "SELECT name FROM system.settings")
            .await
            .text()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>();
        (app, dir, key, known, listed)
    });
    assert!(
        listed.len() > 50 && listed.len() < known.len() / 2,
        "{}",
        listed.len()
    );
    let names = prop_oneof![
        4 => proptest::sample::select(listed),
        2 => proptest::sample::select(known.clone()),
        1 => "[a-z_]{1,30}",
        1 => proptest::sample::select(known).prop_map(|n| n.to_ascii_uppercase()),
    ];
    let forwarded = std::cell::Cell::new(0u32);

    let mut runner = runner(400);
    let result = runner.run(
        &proptest::collection::vec((names, setting_value()), 1..3),
        |sent| {
            let params: Vec<(&str, &str)> =
                sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let answer = runtime.block_on(crate::bi::bi(&app, &key, &params, "SELECT 1"));
            prop_assert!(
                answer.status < 500,
                "{sent:?}: {} {}",
                answer.status,
                answer.text()
            );
            if answer.status == 200 {
                forwarded.set(forwarded.get() + 1);
                for (name, _) in &sent {
                    prop_assert!(
                        !chgate::sql::settings::is_fixed(name)
                            || name == "max_execution_time"
                            || name == "max_result_rows"
                            || name == "log_comment"
                            || name == "cancel_http_readonly_queries_on_client_close",
                        "{name} is the gateway's, yet the request ran"
                    );
                }
            }
            Ok(())
        },
    );
    if let Err(error) = result {
        panic!("{error}");
    }
    eprintln!("settings properties: {} requests ran", forwarded.get());
}

// ---------------------------------------------------------------------------------------------
// Template parameter values

const PARAM_TYPES: &[&str] = &[
    "String",
    "Date",
    "DateTime",
    "Bool",
    "UUID",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "Float32",
    "Float64",
    "Array(String)",
    "Array(Date)",
    "Array(UInt8)",
    "Array(Int64)",
];

/// Values callers send: relative dates with any offset, dates, numbers at and past every bound,
/// and text.
fn param_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let relative = (
        proptest::sample::select(&["now", "today"][..]),
        proptest::sample::select(&["+", "-"][..]),
        prop_oneof![0i64..1000, any::<i64>(), Just(i64::MAX), Just(i64::MIN + 1)],
        proptest::sample::select(&["s", "m", "h", "d", "w", "y", ""][..]),
    )
        .prop_map(|(base, sign, n, unit)| json!(format!("{base}{sign}{}{unit}", n.unsigned_abs())));
    prop_oneof![
        relative,
        (1i32..=9999, 1u32..=12, 1u32..=31)
            .prop_map(|(y, m, d)| json!(format!("{y:04}-{m:02}-{d:02}"))),
        (1900i32..=2300, 0u32..=23, 0u32..=59)
            .prop_map(|(y, h, m)| json!(format!("{y}-01-01 {h:02}:{m:02}:00"))),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(
            |f| serde_json::Number::from_f64(f).map_or(json!(null), serde_json::Value::Number)
        ),
        prop_oneof![
            Just(i64::MAX.to_string()),
            Just(u64::MAX.to_string()),
            Just("-0".to_string()),
            Just("1e3".to_string()),
            Just("NaN".to_string())
        ]
        .prop_map(|s| json!(s)),
        "\\PC{0,20}".prop_map(|s| json!(s)),
        Just(json!("0b8a0a0e-3f3c-4c39-9a55-0b5b1d1f0a11")),
        Just(json!(true)),
        proptest::collection::vec("[a-z0-9,]{0,5}", 0..4).prop_map(|v| json!(v)),
        "[0-9a-z,\\- ]{0,20}".prop_map(|s| json!(s)),
    ]
}

#[test]
fn every_template_value_the_gateway_accepts_clickhouse_accepts_as_that_type() {
    use chgate::catalog::params::ParamSpec;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = clickhouse::Client::default().with_url(crate::helpers::clickhouse_url());
    let now = chrono::Utc::now();
    let accepted = std::cell::Cell::new(0u32);

    let mut runner = runner(600);
    let result = runner.run(
        &(proptest::sample::select(PARAM_TYPES), param_value()),
        |(ty, value)| {
            let spec = ParamSpec::of_type(ty);
            // Never a panic: a value is accepted or refused with a rule.
            let Ok(coerced) = spec.coerce(&value, now) else {
                return Ok(());
            };
            accepted.set(accepted.get() + 1);
            let sql = format!("SELECT toString({{p:{ty}}})");
            let answer: Result<String, _> = runtime.block_on(
                client
                    .query(&sql)
                    .param("p", &coerced)
                    .fetch_one::<String>(),
            );
            prop_assert!(
                answer.is_ok(),
                "{ty} {value}: the gateway accepted {coerced:?}, ClickHouse refused it: {:?}",
                answer.err()
            );
            Ok(())
        },
    );
    if let Err(error) = result {
        panic!("{error}");
    }
    eprintln!(
        "parameter properties: {} values accepted and checked",
        accepted.get()
    );
}

// ---------------------------------------------------------------------------------------------
// Ingestion bodies

/// A valid batch of `n` events with their ids.
fn batch(n: usize) -> (Vec<String>, String) {
    let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let events: Vec<serde_json::Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({
                "event_id": id,
                "event": "page_view",
                "user_id": format!("u{i}"),
                "properties": {"path": "/", "n": i},
            })
        })
        .collect();
    (ids, serde_json::to_string(&events).unwrap())
}

/// How a body is damaged: cut, bytes replaced, values swapped for hostile ones.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Cut(usize),
    Bytes(usize, Vec<u8>),
    Replace(&'static str, String),
    Random(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    let hostile = prop_oneof![
        Just("1e999999".to_string()),
        Just("-99999999999999999999999999999".to_string()),
        Just(format!("{}1{}", "[".repeat(5000), "]".repeat(5000))),
        Just(format!(
            "{}{}",
            "{\"a\":".repeat(300),
            "1".to_owned() + &"}".repeat(300)
        )),
        Just("\"\\ud800\"".to_string()),
        Just("\"\u{0}\"".to_string()),
        Just("null".to_string()),
        Just(format!("\"{}\"", "x".repeat(100_000))),
    ];
    prop_oneof![
        1 => Just(Damage::None),
        2 => any::<usize>().prop_map(Damage::Cut),
        2 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8)).prop_map(|(at, b)| Damage::Bytes(at, b)),
        3 => (proptest::sample::select(&["\"/\"", "\"page_view\"", "\"u0\"", "0"][..]), hostile)
            .prop_map(|(target, with)| Damage::Replace(target, with)),
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(Damage::Random),
    ]
}

fn damaged(body: &str, damage: &Damage) -> Vec<u8> {
    let mut bytes = body.as_bytes().to_vec();
    match damage {
        Damage::None => {}
        Damage::Cut(at) => bytes.truncate(at % (bytes.len() + 1)),
        Damage::Bytes(at, with) => {
            let at = at % bytes.len();
            let end = (at + with.len()).min(bytes.len());
            bytes.splice(at..end, with.iter().copied());
        }
        Damage::Replace(target, with) => {
            bytes = body.replacen(target, with, 1).into_bytes();
        }
        Damage::Random(random) => bytes = random.clone(),
    }
    bytes
}

#[test]
fn a_damaged_ingestion_body_is_refused_with_a_4xx_and_every_acknowledged_event_is_stored() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, key) = runtime.block_on(async {
        let app = TestApp::spawn().await;
        let key = app.create_key("ingest").await;
        (app, key)
    });
    let acknowledged = std::cell::RefCell::new(Vec::<String>::new());

    let mut runner = runner(250);
    let result = runner.run(
        &(1usize..6, damage(), any::<bool>()),
        |(n, damage, ndjson)| {
            let (ids, body) = batch(n);
            let body = if ndjson {
                let events: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
                events
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                body
            };
            let bytes = damaged(&body, &damage);
            let (status, answer) = runtime.block_on(async {
                let response = app
                    .client
                    .post(app.url("/v1/events"))
                    .bearer_auth(&key)
                    .header(
                        "content-type",
                        if ndjson {
                            "application/x-ndjson"
                        } else {
                            "application/json"
                        },
                    )
                    .body(bytes)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (status, response.text().await.unwrap())
            });
            prop_assert!(status < 500, "{:?}: {} {}", damage, status, answer);
            if status == 202 || status == 200 {
                let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
                let refused: BTreeSet<usize> = answer["rejected"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["index"].as_u64())
                    .map(|i| i as usize)
                    .collect();
                let mut acknowledged = acknowledged.borrow_mut();
                for (i, id) in ids.iter().enumerate() {
                    let mentioned =
                        String::from_utf8_lossy(&damaged(&body, &damage)).contains(id.as_str());
                    // Damage that keeps the body's shape keeps events at their positions.
                    let aligned = matches!(damage, Damage::None | Damage::Replace(..));
                    if !refused.contains(&i) && mentioned && aligned {
                        acknowledged.push(id.clone());
                    }
                }
            }
            Ok(())
        },
    );
    if let Err(error) = result {
        panic!("{error}");
    }
    let acknowledged = acknowledged.into_inner();
    let stored: u64 = runtime.block_on(async {
        let mut stored = 0;
        for _ in 0..100 {
            stored = app
                .clickhouse()
                .query("SELECT count() FROM events_buffer WHERE toString(event_id) IN ?")
                .bind(&acknowledged)
                .fetch_one()
                .await
                .unwrap();
            if stored as usize >= acknowledged.len() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        stored
    });
    eprintln!(
        "ingestion properties: {} acknowledged events followed",
        acknowledged.len()
    );
    assert_eq!(
        stored as usize,
        acknowledged.len(),
        "every acknowledged event is stored once"
    );
    runtime.block_on(async move { drop(app) });
}
