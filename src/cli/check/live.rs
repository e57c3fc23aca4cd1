//! The live part of `chgate check`: every example is `EXPLAIN`ed on ClickHouse, its result columns
//! are compared with the declared ones, and the fixture tests in `queries/<name>/tests/*.toml` run
//! in scratch databases (migrated like production, dropped afterwards).
//!
//! A fixture file:
//! ```toml
//! description = "same-timestamp steps convert"
//! version = 1                      # optional; the latest version by default
//! params = { steps = ["a", "b"], from = "2026-01-01 00:00:00", to = "2026-01-02 00:00:00" }
//! [[events]]                       # native events, through validation and enrichment
//! event = "a"
//! user_id = "u1"
//! timestamp = "2026-01-01T10:00:00Z"
//! [[expected]]                     # the rows, in order; only the listed columns are compared
//! step = 1
//! users = 1
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::catalog::{Catalog, Template};
use crate::cli::check::Report;
use crate::config::{Settings, WalMode};
use crate::ingest::enrich::{Enricher, Outcome, RequestFacts};
use crate::ingest::model::{self, Rules};
use crate::ingest::row::EventRow;
use crate::ingest::sender::Sender;
use crate::migrate::ClickHouseMigrator;
use crate::storage::clickhouse::base_client;

/// One fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub description: String,
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub params: Map<String, Value>,
    #[serde(default)]
    pub events: Vec<Value>,
    #[serde(default)]
    pub expected: Vec<Map<String, Value>>,
}

/// Fixture files of a template directory.
pub fn fixture_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(name).join("tests"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

pub async fn run(settings: &Settings, catalog: &Catalog) -> anyhow::Result<Report> {
    let mut text = String::new();
    let mut failures = 0;
    let scratch = Scratch::create(settings).await?;
    let outcome = async {
        for template in catalog.all() {
            for example in &template.meta().examples {
                if let Err(e) = explain(&scratch, catalog, template, &example.params).await {
                    failures += 1;
                    writeln!(
                        text,
                        "error: {}: example {:?}: {e:#}",
                        template.file.path.display(),
                        example.name
                    )?;
                }
            }
        }
        let mut fixtures = 0;
        for (name, _) in catalog.names() {
            for path in fixture_files(&catalog.dir, name) {
                fixtures += 1;
                match run_fixture(settings, catalog, name, &path).await {
                    Ok(()) => {}
                    Err(e) => {
                        failures += 1;
                        writeln!(text, "error: {}: {e:#}", path.display())?;
                    }
                }
            }
        }
        writeln!(
            text,
            "live: examples explained and result columns compared; {fixtures} fixture tests run"
        )?;
        anyhow::Ok(())
    }
    .await;
    scratch.drop().await;
    outcome?;
    Ok(Report { text, failures })
}

/// A migrated, empty database, dropped by `drop`.
struct Scratch {
    settings: Settings,
    client: clickhouse::Client,
}

impl Scratch {
    async fn create(settings: &Settings) -> anyhow::Result<Self> {
        let mut settings = settings.clone();
        settings.clickhouse.database = format!(
            "chgate_check_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        ClickHouseMigrator::embedded(&settings.clickhouse)
            .run()
            .await
            .context("cannot create a scratch database on ClickHouse")?;
        let client = base_client(&settings.clickhouse).with_database(&settings.clickhouse.database);
        Ok(Self { settings, client })
    }

    async fn drop(&self) {
        let _ = base_client(&self.settings.clickhouse)
            .query_raw(&format!(
                "DROP DATABASE IF EXISTS `{}` SYNC",
                self.settings.clickhouse.database
            ))
            .execute()
            .await;
    }
}

/// EXPLAINs a call and compares its result columns with the declared ones.
async fn explain(
    scratch: &Scratch,
    catalog: &Catalog,
    template: &Template,
    params: &Map<String, Value>,
) -> anyhow::Result<()> {
    let rendered = catalog
        .render(template, params)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut explain = scratch.client.query(&format!("EXPLAIN {}", rendered.sql));
    let mut describe = scratch
        .client
        .query(&format!("DESCRIBE ({})", rendered.sql));
    for (name, value) in &rendered.bindings {
        explain = explain.param(name, value);
        describe = describe.param(name, value);
    }
    explain
        .fetch_bytes("TSV")?
        .collect()
        .await
        .context("EXPLAIN failed")?;
    let described = describe
        .fetch_bytes("JSONEachRow")?
        .collect()
        .await
        .context("DESCRIBE failed")?;
    let declared = &template.meta().columns;
    if declared.is_empty() {
        return Ok(());
    }
    let actual: Vec<(String, String)> = described
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (text("name"), text("type"))
        })
        .collect();
    let expected: Vec<(String, String)> = declared
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let normalize = |t: &str| without_low_cardinality(&t.replace(' ', ""));
    let same = actual.len() == expected.len()
        && actual
            .iter()
            .zip(&expected)
            .all(|(a, e)| a.0 == e.0 && normalize(&a.1) == normalize(&e.1));
    if !same {
        let show = |cols: &[(String, String)]| {
            cols.iter()
                .map(|(n, t)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        anyhow::bail!(
            "the result columns are [{}], the header declares [{}]",
            show(&actual),
            show(&expected)
        );
    }
    Ok(())
}

/// `LowCardinality(T)` reads and prints like `T`: the declared columns need not spell it.
fn without_low_cardinality(ty: &str) -> String {
    let mut out = ty.to_string();
    while let Some(start) = out.find("LowCardinality(") {
        let inner = start + "LowCardinality(".len();
        let mut depth = 1;
        let mut end = out.len();
        for (i, c) in out[inner..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = inner + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        out = format!(
            "{}{}{}",
            &out[..start],
            &out[inner..end],
            out.get(end + 1..).unwrap_or_default()
        );
    }
    out
}

async fn run_fixture(
    settings: &Settings,
    catalog: &Catalog,
    name: &str,
    path: &Path,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let fixture: Fixture =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid fixture: {}", e.message()))?;
    let template = catalog
        .get(name, fixture.version)
        .with_context(|| format!("{name} has no version {:?}", fixture.version))?;
    let scratch = Scratch::create(settings).await?;
    let result = async {
        load_events(&scratch, &fixture.events).await?;
        let actual = query_rows(&scratch, catalog, template, &fixture.params).await?;
        compare(&fixture.expected, &actual)
            .with_context(|| format!("{}: {}", fixture.description, describe_rows(&actual)))
    }
    .await;
    scratch.drop().await;
    result
}

/// Validates, enriches and inserts fixture events straight into `events` (so the views see them).
pub async fn load_events_into(
    client: &clickhouse::Client,
    settings: &Settings,
    events: &[Value],
) -> anyhow::Result<()> {
    let mut settings = settings.clone();
    settings.ingest.wal = WalMode::Off;
    settings.geoip.path = None;
    let enricher = Enricher::new(&settings)?;
    let rules = Rules {
        settings: &settings.ingest,
        now_ms: chrono::Utc::now().timestamp_millis(),
        enforce_window: false,
        trust_context_ip: Sender::Server.trusts_context_ip(),
        allowed_events: &[],
    };
    let mut valid = Vec::new();
    for (i, event) in events.iter().enumerate() {
        valid.push(
            model::validate(event.clone(), &rules)
                .map_err(|r| anyhow::anyhow!("event {i}: {}", r.message))?,
        );
    }
    let facts = RequestFacts {
        client_ip: None,
        user_agent: String::new(),
        // The operator's own data, trusted as a server key is.
        sender: Sender::Server,
        received_at_ms: rules.now_ms,
    };
    let mut rows: Vec<EventRow> = Vec::new();
    for (i, outcome) in enricher.enrich(valid, &facts).into_iter().enumerate() {
        match outcome {
            Outcome::Stored(e) => rows.push(e.row),
            Outcome::Rejected(r) => anyhow::bail!("event {i}: {}", r.message),
            Outcome::Dropped(_) => {}
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<EventRow>("events").await?;
    for row in &rows {
        insert.write(row).await?;
    }
    insert.end().await.context("cannot insert fixture events")?;
    Ok(())
}

async fn load_events(scratch: &Scratch, events: &[Value]) -> anyhow::Result<()> {
    load_events_into(&scratch.client, &scratch.settings, events).await
}

/// Runs a template on `client` and returns its rows as JSON objects.
pub async fn query_rows_on(
    client: &clickhouse::Client,
    catalog: &Catalog,
    template: &Template,
    params: &Map<String, Value>,
) -> anyhow::Result<Vec<Map<String, Value>>> {
    let rendered = catalog
        .render(template, params)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut query = client
        .query(&rendered.sql)
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .with_setting("output_format_json_quote_decimals", "0");
    for (name, value) in &rendered.bindings {
        query = query.param(name, value);
    }
    let bytes = query
        .fetch_bytes("JSONEachRow")?
        .collect()
        .await
        .context("the query failed")?;
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Map<String, Value>>(l).context("invalid JSON row"))
        .collect()
}

async fn query_rows(
    scratch: &Scratch,
    catalog: &Catalog,
    template: &Template,
    params: &Map<String, Value>,
) -> anyhow::Result<Vec<Map<String, Value>>> {
    query_rows_on(&scratch.client, catalog, template, params).await
}

/// Expected rows against actual ones, in order; only the expected columns are compared, numbers
/// within a relative 1e-6.
pub fn compare(
    expected: &[Map<String, Value>],
    actual: &[Map<String, Value>],
) -> anyhow::Result<()> {
    if expected.len() != actual.len() {
        anyhow::bail!("expected {} rows, got {}", expected.len(), actual.len());
    }
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        for (column, want) in e {
            let got = a
                .get(column)
                .with_context(|| format!("row {}: no column {column}", i + 1))?;
            if !same(want, got) {
                anyhow::bail!("row {}: {column} is {got}, expected {want}", i + 1);
            }
        }
    }
    Ok(())
}

fn same(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Number(w), Value::Number(g)) => match (w.as_f64(), g.as_f64()) {
            (Some(w), Some(g)) => (w - g).abs() <= 1e-6 * w.abs().max(g.abs()).max(1.0),
            _ => false,
        },
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(w, g)| same(w, g))
        }
        (Value::Object(w), Value::Object(g)) => {
            w.len() == g.len() && w.iter().all(|(k, v)| g.get(k).is_some_and(|x| same(v, x)))
        }
        _ => want == got,
    }
}

fn describe_rows(rows: &[Map<String, Value>]) -> String {
    let shown: Vec<String> = rows
        .iter()
        .take(20)
        .map(|r| Value::Object(r.clone()).to_string())
        .collect();
    format!("actual rows: [{}]", shown.join(", "))
}
