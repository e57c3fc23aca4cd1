//! Acknowledged events survive ClickHouse being down and the gateway restarting, exactly once.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{TestApp, TestDatabases};

fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn wal_segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn events_acknowledged_while_clickhouse_is_down_are_stored_once_after_a_restart() {
    let databases = TestDatabases::migrated().await;
    let wal_dir = databases.settings.ingest.wal_dir.clone();
    let mut down = TestApp::start(databases.borrowed(|s| {
        s.clickhouse.url = closed_port_url();
        s.server.shutdown_timeout_secs = 1;
    }))
    .await;
    let key = down.create_key("ingest").await;
    let events: Vec<Value> = (0..25)
        .map(|i| json!({"event": "order_step", "user_id": format!("u{i}"), "event_id": uuid::Uuid::now_v7().to_string()}))
        .collect();

    let response = down
        .post_json("/v1/events", &key, &Value::Array(events.clone()))
        .await;
    assert_eq!(response.status(), 202);
    assert!(down.stop(Duration::from_secs(10)).await);
    assert!(wal_segments(&wal_dir) >= 1, "the events wait in the WAL");

    let up = TestApp::start(databases).await;
    let client = up.clickhouse();
    wait_for("the replayed events", Duration::from_secs(30), async || {
        client
            .query("SELECT count() FROM events_buffer")
            .fetch_one::<u64>()
            .await
            .unwrap()
            >= 25
    })
    .await;
    wait_for(
        "the WAL segment to be retired",
        Duration::from_secs(30),
        async || wal_segments(&wal_dir) == 0,
    )
    .await;

    let (rows, distinct): (u64, u64) = client
        .query("SELECT count(), uniqExact(event_id) FROM events")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (rows, distinct),
        (25, 25),
        "every acknowledged event exactly once"
    );
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_instead_of_growing() {
    let app = TestApp::spawn_with(|s| {
        s.clickhouse.url = closed_port_url();
        s.ingest.queue_events = 10;
        s.server.shutdown_timeout_secs = 1;
    })
    .await;
    let key = app.create_key("ingest").await;
    let batch = |n: usize| {
        Value::Array(
            (0..n)
                .map(|i| json!({"event": "x", "user_id": format!("{i}")}))
                .collect(),
        )
    };

    let first = app.post_json("/v1/events", &key, &batch(10)).await;
    let second = app.post_json("/v1/events", &key, &batch(1)).await;

    assert_eq!(first.status(), 202);
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "1");
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ingest_overloaded");
}

#[tokio::test]
async fn with_the_wal_off_events_still_flow_to_clickhouse() {
    let app = TestApp::spawn_with(|s| s.ingest.wal = chgate::config::WalMode::Off).await;
    let key = app.create_key("ingest").await;

    let response = app
        .post_json(
            "/v1/events?wait=true",
            &key,
            &json!({"event": "x", "user_id": "u"}),
        )
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(wal_segments(&app.settings().ingest.wal_dir), 0);
}
