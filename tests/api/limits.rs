//! Rate and concurrency limits from the access policy.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::TestApp;

fn catalog_and_policy(policy: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let template =
        "/*---\ndescription = \"x\"\nmax_execution_secs = 4\n---*/\nSELECT toUInt8(1) AS n\n";
    let slow = "/*---\ndescription = \"x\"\nmax_execution_secs = 4\n---*/\nSELECT count() AS n FROM numbers(100000000000) WHERE NOT ignore(sipHash64(number))\n";
    for (path, text) in [
        ("quick/v1.sql", template),
        ("slow/v1.sql", slow),
        ("access.toml", policy),
    ] {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

async fn spawn(policy: &str) -> (TestApp, tempfile::TempDir) {
    let dir = catalog_and_policy(policy);
    let (catalog, access) = (dir.path().to_path_buf(), dir.path().join("access.toml"));
    let app = TestApp::spawn_with(move |s| {
        s.catalog.dir = catalog;
        s.access.policy = access;
    })
    .await;
    (app, dir)
}

#[tokio::test]
async fn requests_over_the_role_rate_get_429_with_headers_and_recover() {
    let (app, _dir) = spawn("[roles.analyst]\ntemplates = [\"*\"]\n[roles.analyst.limits]\nrequests_per_second = 1\nburst = 2\n").await;
    let key = app.create_key("analyst").await;
    let call = || {
        app.client
            .get(app.url("/v1/queries/quick"))
            .bearer_auth(&key)
            .send()
    };

    let first = call().await.unwrap();
    let second = call().await.unwrap();
    let third = call().await.unwrap();

    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit"], "1");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(second.status(), 200);
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["x-ratelimit-limit"], "1");
    assert_eq!(third.headers()["x-ratelimit-remaining"], "0");
    let retry: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(call().await.unwrap().status(), 200, "recovered");
}

#[tokio::test]
async fn a_second_concurrent_query_beyond_the_role_limit_gets_429() {
    let (app, _dir) = spawn(
        "[roles.analyst]\ntemplates = [\"*\"]\n[roles.analyst.limits]\nconcurrent_queries = 1\n",
    )
    .await;
    let key = app.create_key("analyst").await;
    let slow = {
        let request = app
            .client
            .get(app.url("/v1/queries/slow"))
            .bearer_auth(&key);
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;

    let second = app
        .client
        .get(app.url("/v1/queries/quick"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();

    assert_eq!(second.status(), 429);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_concurrent_queries");
    assert_ne!(slow.await.unwrap(), 429, "the first query held the slot");
    assert_eq!(
        app.client
            .get(app.url("/v1/queries/quick"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the slot is free again"
    );
}

#[tokio::test]
async fn beyond_the_gateway_wide_query_limit_callers_get_503_with_retry_after() {
    let dir = catalog_and_policy("[roles.analyst]\ntemplates = [\"*\"]\n");
    let (catalog, access) = (dir.path().to_path_buf(), dir.path().join("access.toml"));
    let app = TestApp::spawn_with(move |s| {
        s.catalog.dir = catalog;
        s.access.policy = access;
        s.access.max_concurrent_queries = 1;
    })
    .await;
    let (first, second) = (
        app.create_key("analyst").await,
        app.create_key("analyst").await,
    );
    let slow = {
        let request = app
            .client
            .get(app.url("/v1/queries/slow"))
            .bearer_auth(&first);
        tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;

    let busy = app
        .client
        .get(app.url("/v1/queries/quick"))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();

    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "1");
    let body: Value = busy.json().await.unwrap();
    assert_eq!(body["error"]["code"], "gateway_busy");
    let slow = slow.await.unwrap();
    assert!(
        !slow.contains("gateway_busy"),
        "the first query held the gateway's only slot: {slow}"
    );
    assert_eq!(
        crate::helpers::metric_value(&app, "chgate_rate_limited_total").await,
        1.0
    );
}

#[tokio::test]
async fn ingestion_is_limited_in_events_per_second_per_key() {
    let (app, _dir) = spawn(
        "[roles.ingest]\ningest = true\n[roles.ingest.limits]\ningest_events_per_second = 10\n",
    )
    .await;
    let key = app.create_key("ingest").await;
    let batch = |n: usize| {
        Value::Array(
            (0..n)
                .map(|i| json!({"event": "x", "user_id": format!("u{i}")}))
                .collect(),
        )
    };

    let too_big = app.post_json("/v1/events", &key, &batch(11)).await;
    let first = app.post_json("/v1/events", &key, &batch(8)).await;
    let second = app.post_json("/v1/events", &key, &batch(8)).await;

    assert_eq!(too_big.status(), 413);
    assert_eq!(first.status(), 202);
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn roles_may_be_limited_to_some_events() {
    let (app, _dir) = spawn("[roles.ingest]\ningest = true\ningest_events = [\"game_*\"]\n").await;
    let key = app.create_key("ingest").await;

    let response = app
        .post_json("/v1/events", &key, &json!([{"event": "game_view", "user_id": "a"}, {"event": "purchase", "user_id": "a", "properties": {"amount": 1}}]))
        .await;

    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"][0]["code"], "event_not_allowed");
}

#[tokio::test]
async fn with_the_redis_backend_two_gateways_share_one_rate_limit() {
    let dir = catalog_and_policy("[roles.analyst]\ntemplates = [\"*\"]\n[roles.analyst.limits]\nrequests_per_second = 1\nburst = 2\n");
    let (catalog, access) = (dir.path().to_path_buf(), dir.path().join("access.toml"));
    let databases = crate::helpers::TestDatabases::migrated().await;
    let adjust = |s: &mut chgate::config::Settings| {
        s.catalog.dir = catalog.clone();
        s.access.policy = access.clone();
        s.access.limits_backend = chgate::config::LimitsBackend::Redis;
    };
    let second = TestApp::start(databases.borrowed(|s| {
        adjust(s);
        s.ingest.wal_dir = s.ingest.wal_dir.join("second");
    }))
    .await;
    let mut databases = databases;
    adjust(&mut databases.settings);
    let first = TestApp::start(databases).await;
    let key = first.create_key("analyst").await;
    let call = |app: &TestApp| {
        app.client
            .get(app.url("/v1/queries/quick"))
            .bearer_auth(&key)
            .send()
    };

    let one = call(&first).await.unwrap().status();
    let two = call(&second).await.unwrap().status();
    let three = call(&first).await.unwrap();
    let four = call(&second).await.unwrap().status();

    assert_eq!((one.as_u16(), two.as_u16()), (200, 200));
    assert_eq!(
        three.status(),
        429,
        "the burst of 2 is shared across both gateways"
    );
    assert!(three.headers().contains_key("retry-after"));
    assert_eq!(four, 429);
}
