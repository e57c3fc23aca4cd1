//! The freshness-aware result cache: a template call's key holds the generations of the days it
//! reads, which move when rows for those days are committed to ClickHouse (imports, ingestion,
//! any gateway sharing Redis).

use std::io::Write;
use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use serde_json::{json, Value};

use crate::helpers::{TestApp, TestDatabases};

/// The Buffer table's `max_time` in the migrations (10 s), the writer's margin (1 s) and a
/// little more: by then rows inserted before are in `events` and the gateway has advanced their
/// days a second time.
const BUFFER_SETTLED: Duration = Duration::from_secs(13);

/// Short, so a generation advanced by another process is seen quickly.
fn quick_memo(settings: &mut chgate::config::Settings) {
    settings.cache.generation_memo_ms = 100;
}

fn days_ago(n: u64) -> NaiveDate {
    Utc::now()
        .date_naive()
        .checked_sub_days(Days::new(n))
        .unwrap()
}

fn dau_path(from: NaiveDate, to: NaiveDate) -> String {
    format!("/v1/queries/dau?from={from}&to={to}")
}

/// `GET path`: the `x-cache` header and the `users` of each day.
async fn dau(app: &TestApp, key: &str, path: &str) -> (String, Vec<(String, u64)>) {
    let response = app
        .client
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cache = response.headers()["x-cache"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    let days = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["day"].as_str().unwrap().to_string(),
                row["users"].as_u64().unwrap(),
            )
        })
        .collect();
    (cache, days)
}

fn users_on(days: &[(String, u64)], day: NaiveDate) -> u64 {
    days.iter()
        .find(|(d, _)| *d == day.to_string())
        .map(|(_, n)| *n)
        .unwrap()
}

/// Events of `users` distinct users at noon UTC of `day`.
fn events_on(day: NaiveDate, users: usize, prefix: &str) -> Vec<Value> {
    (0..users)
        .map(|i| {
            json!({
                "event": "game_view",
                "user_id": format!("{prefix}-{i}"),
                "platform": "web",
                "timestamp": format!("{day}T12:00:00Z"),
            })
        })
        .collect()
}

async fn ingest(app: &TestApp, key: &str, events: Vec<Value>) {
    let response = app
        .post_json("/v1/events?wait=true", key, &Value::Array(events))
        .await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

#[tokio::test]
async fn after_an_import_into_a_cached_past_range_the_next_call_is_a_miss_with_the_new_rows() {
    let app = TestApp::spawn_with(quick_memo).await;
    let analyst = app.create_key("analyst").await;
    let touched = dau_path(days_ago(40), days_ago(36));
    let untouched = dau_path(days_ago(30), days_ago(27));
    let (_, before) = dau(&app, &analyst, &touched).await;
    let (cached, _) = dau(&app, &analyst, &touched).await;
    dau(&app, &analyst, &untouched).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("backfill.ndjson");
    let mut file = std::fs::File::create(&input).unwrap();
    for event in events_on(days_ago(38), 7, "backfill") {
        writeln!(file, "{event}").unwrap();
    }
    drop(file);

    let summary = chgate::cli::import::import(
        app.settings(),
        &[input],
        &dir.path().join("rejects.ndjson"),
        10,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (after, days) = dau(&app, &analyst, &touched).await;
    let (other, _) = dau(&app, &analyst, &untouched).await;

    assert_eq!(summary.accepted, 7);
    assert_eq!(users_on(&before, days_ago(38)), 0);
    assert_eq!(cached, "HIT");
    assert_eq!(after, "MISS", "the import advanced the day's generation");
    assert_eq!(users_on(&days, days_ago(38)), 7, "the imported users count");
    assert_eq!(
        other, "HIT",
        "a range the import did not touch stays cached"
    );
}

#[tokio::test]
async fn a_result_computed_before_the_buffer_flushed_late_events_is_not_served_after_it() {
    let app = TestApp::spawn_with(quick_memo).await;
    let analyst = app.create_key("analyst").await;
    let ingest_key = app.create_key("ingest").await;
    let touched = dau_path(days_ago(6), days_ago(2));
    let untouched = dau_path(days_ago(12), days_ago(9));
    dau(&app, &analyst, &touched).await;
    let (cached, _) = dau(&app, &analyst, &touched).await;
    dau(&app, &analyst, &untouched).await;

    ingest(&app, &ingest_key, events_on(days_ago(4), 5, "late")).await;
    // In the Buffer table, not yet in `events` nor its rollups: this result lacks them.
    let (between, early) = dau(&app, &analyst, &touched).await;
    tokio::time::sleep(BUFFER_SETTLED).await;
    let (after, days) = dau(&app, &analyst, &touched).await;
    let (other, _) = dau(&app, &analyst, &untouched).await;

    assert_eq!(cached, "HIT");
    assert_eq!(between, "MISS", "the insert advanced the day's generation");
    assert_eq!(
        users_on(&early, days_ago(4)),
        0,
        "dau_daily fills when the Buffer flushes"
    );
    assert_eq!(after, "MISS", "the flush advanced it again");
    assert_eq!(users_on(&days, days_ago(4)), 5);
    assert_eq!(other, "HIT");
}

#[tokio::test]
async fn a_generation_advanced_by_one_gateway_invalidates_what_another_cached() {
    let writer = TestApp::spawn_with(quick_memo).await;
    let second = writer.databases.borrowed(|s| {
        s.ingest.wal_dir = s.ingest.wal_dir.with_extension("second");
    });
    let reader = TestApp::start(second).await;
    let analyst = writer.create_key("analyst").await;
    let ingest_key = writer.create_key("ingest").await;
    let path = dau_path(days_ago(9), days_ago(5));
    dau(&reader, &analyst, &path).await;
    let (cached, _) = dau(&reader, &analyst, &path).await;
    let (shared, _) = dau(&writer, &analyst, &path).await;

    ingest(
        &writer,
        &ingest_key,
        events_on(days_ago(7), 3, "other-gateway"),
    )
    .await;
    tokio::time::sleep(BUFFER_SETTLED).await;
    let (after, days) = dau(&reader, &analyst, &path).await;
    let (from_redis, same) = dau(&writer, &analyst, &path).await;

    assert_eq!(cached, "HIT");
    assert_eq!(shared, "HIT", "both gateways key the call alike");
    assert_eq!(after, "MISS", "the writer's flush reached the reader");
    assert_eq!(users_on(&days, days_ago(7)), 3);
    assert_eq!(
        from_redis, "HIT",
        "the reader's fresh result, through Redis"
    );
    assert_eq!(same, days);
}

/// A template over `events` with a 1-second TTL, and a policy that lets analysts run it.
fn short_ttl_catalog() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let counts = "/*---\ndescription = \"x\"\nroles = [\"analyst\"]\ncache_ttl_secs = 1\n[params.from]\ntype = \"Date\"\nrequired = true\n[params.to]\ntype = \"Date\"\nrequired = true\n[[examples]]\nname = \"x\"\nparams = { from = \"2026-01-01\", to = \"2026-01-02\" }\n---*/\nSELECT count() AS n, rand() AS r FROM events WHERE timestamp >= toDateTime({from:Date}) AND timestamp < toDateTime({to:Date} + 1)\n";
    let policy = "[roles.analyst]\ntemplates = [\"*\"]\n";
    for (path, text) in [("counts/v1.sql", counts), ("access.toml", policy)] {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[tokio::test]
async fn a_settled_past_range_outlives_its_template_ttl_and_a_range_with_today_does_not() {
    let dir = short_ttl_catalog();
    let path = dir.path().to_path_buf();
    let databases = TestDatabases::migrated().await;
    let app = TestApp::start(databases.borrowed(|s| {
        s.access.policy = path.join("access.toml");
        s.catalog.dir = path;
    }))
    .await;
    let analyst = app.create_key("analyst").await;
    let call = |path: String| {
        let request = app.client.get(app.url(&path)).bearer_auth(&analyst);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.headers()["x-cache"].to_str().unwrap().to_string()
        }
    };
    let past = format!("/v1/queries/counts?from={}&to={}", days_ago(9), days_ago(2));
    let live = format!("/v1/queries/counts?from={}&to={}", days_ago(9), days_ago(0));
    call(past.clone()).await;
    call(live.clone()).await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (past_again, live_again) = (call(past).await, call(live).await);

    assert_eq!(past_again, "HIT", "kept for cache.past_ttl_secs");
    assert_eq!(live_again, "MISS", "today's rows are fresh within the TTL");
    drop(app);
    drop(databases);
}
