use std::time::Duration;

use crate::helpers::{TestApp, TestDatabases};

#[tokio::test]
async fn healthz_answers_200_while_the_process_serves() {
    let app = TestApp::spawn().await;

    let response = app.get("/healthz").await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );
}

#[tokio::test]
async fn readyz_is_200_when_clickhouse_postgres_and_redis_answer() {
    let app = TestApp::spawn().await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    for dependency in ["clickhouse", "postgres", "redis"] {
        assert_eq!(body["dependencies"][dependency]["ok"], true, "{body}");
    }
}

#[tokio::test]
async fn readyz_is_503_naming_clickhouse_when_its_port_is_closed() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let app = TestApp::spawn_with(|settings| {
        settings.clickhouse.url = format!("http://127.0.0.1:{closed_port}");
    })
    .await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["dependencies"]["clickhouse"]["ok"], false);
    assert!(body["dependencies"]["clickhouse"]["error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    assert_eq!(body["dependencies"]["postgres"]["ok"], true);
}

#[tokio::test]
async fn readyz_is_503_when_the_analytics_database_was_never_migrated() {
    let app = TestApp::start(TestDatabases::unmigrated()).await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    let error = body["dependencies"]["clickhouse"]["error"]
        .as_str()
        .unwrap();
    assert!(error.contains("does not exist"), "{error}");
}

#[tokio::test]
async fn metrics_expose_request_counts_and_latency_by_route_and_process_metrics() {
    let app = TestApp::spawn().await;
    app.get("/healthz").await;
    app.get("/no/such/route").await;

    let response = app.get("/metrics").await;

    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"chgate_http_requests_total{route="/healthz",method="GET",status="200"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"chgate_http_requests_total{route="unmatched",method="GET",status="404"}"#),
        "{text}"
    );
    assert!(text.contains("chgate_http_request_duration_seconds_bucket"));
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
}

#[tokio::test]
async fn an_incoming_request_id_is_echoed_and_a_missing_one_is_generated() {
    let app = TestApp::spawn().await;

    let echoed = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "trace-42.a")
        .send()
        .await
        .unwrap();
    let generated = app.get("/healthz").await;

    assert_eq!(echoed.headers()["x-request-id"], "trace-42.a");
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn errors_have_one_json_shape_with_a_snake_case_code() {
    let app = TestApp::spawn().await;

    let response = app.get("/v1/nothing-here").await;

    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_found");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/nothing-here"));
}

#[tokio::test]
async fn shutdown_stops_accepting_connections_and_the_server_returns() {
    let mut app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), 200);

    let stopped = app.stop(Duration::from_secs(10)).await;

    assert!(stopped);
    let refused = reqwest::Client::new()
        .get(app.url("/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err());
}
