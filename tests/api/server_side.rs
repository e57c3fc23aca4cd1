//! Server-side events: the HTTP client a backend sends them with is not its users' browser.

use clickhouse::Row;
use serde::Deserialize;
use serde_json::json;

use crate::helpers::TestApp;

/// What Go, Java, Python and Node backends send as `User-Agent` when they post events with their
/// languages' usual HTTP clients.
const HTTP_CLIENTS: &[&str] = &[
    "Go-http-client/1.1",
    "Java/17.0.9",
    "Apache-HttpClient/4.5.14 (Java/17.0.8)",
    "okhttp/4.12.0",
    "python-requests/2.31.0",
    "Python/3.11 aiohttp/3.9.1",
    "python-httpx/0.27.0",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "axios/1.6.7",
    "undici",
];

const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

#[derive(Debug, Row, Deserialize)]
struct Classified {
    user_id: String,
    user_agent: String,
    device_type: String,
    is_bot: u8,
}

async fn classified(app: &TestApp) -> Vec<Classified> {
    app.clickhouse()
        .query(
            "SELECT user_id, user_agent, device_type, is_bot FROM events_buffer ORDER BY user_id",
        )
        .fetch_all()
        .await
        .unwrap()
}

/// Orders and payers in `revenue_daily`, users in `dau_daily`, after the Buffer is flushed into
/// `events` (the views see rows only then).
async fn counted(app: &TestApp) -> (u64, u64, u64) {
    let client = app.clickhouse();
    client
        .query("OPTIMIZE TABLE events_buffer")
        .execute()
        .await
        .unwrap();
    client
        .query(
            "SELECT assumeNotNull((SELECT sum(orders) FROM revenue_daily)), \
             assumeNotNull((SELECT uniqMerge(payers) FROM revenue_daily)), \
             assumeNotNull((SELECT uniqMerge(users) FROM dau_daily))",
        )
        .fetch_one()
        .await
        .unwrap()
}

/// Posts one purchase per HTTP client to `/v1/events` with `key`, the client as the request's
/// `User-Agent` and none in the event.
async fn post_purchases(app: &TestApp, key: &str) {
    for (i, agent) in HTTP_CLIENTS.iter().enumerate() {
        let response = app
            .client
            .post(app.url("/v1/events?wait=true"))
            .bearer_auth(key)
            .header("User-Agent", *agent)
            .json(&json!({
                "event": "purchase",
                "user_id": format!("buyer-{i:02}"),
                "platform": "server",
                "properties": {"amount": 10, "currency": "USD"}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{agent}");
    }
}

#[tokio::test]
async fn purchases_a_backend_posts_with_a_service_key_count_whatever_its_http_client() {
    let app = TestApp::spawn().await;
    let key = app.create_key("service").await;

    post_purchases(&app, &key).await;

    let rows = classified(&app).await;
    assert_eq!(rows.len(), HTTP_CLIENTS.len());
    for row in &rows {
        assert_eq!(
            (
                row.is_bot,
                row.device_type.as_str(),
                row.user_agent.as_str()
            ),
            (0, "", ""),
            "{}: the backend's HTTP client is not the buyer's user agent",
            row.user_id
        );
    }
    let n = HTTP_CLIENTS.len() as u64;
    assert_eq!(counted(&app).await, (n, n, n));
}

#[tokio::test]
async fn the_same_http_clients_on_the_public_write_key_are_bots() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;

    post_purchases(&app, &key).await;

    let rows = classified(&app).await;
    assert_eq!(rows.len(), HTTP_CLIENTS.len());
    for (row, agent) in rows.iter().zip(HTTP_CLIENTS) {
        assert_eq!(
            (
                row.is_bot,
                row.device_type.as_str(),
                row.user_agent.as_str()
            ),
            (1, "bot", *agent)
        );
    }
    assert_eq!(counted(&app).await, (0, 0, 0));
}

#[tokio::test]
async fn a_service_keys_segment_batch_counts_and_its_events_own_user_agents_still_decide() {
    let app = TestApp::spawn().await;
    let key = app.create_key("service").await;
    let batch = json!({
        "batch": [
            {"type": "track", "event": "purchase", "userId": "go-buyer", "messageId": "p1",
             "properties": {"amount": 5, "currency": "USD"}},
            {"type": "track", "event": "purchase", "userId": "api-buyer", "messageId": "p2",
             "properties": {"amount": 7, "currency": "USD"},
             "context": {"userAgent": "okhttp/4.12.0"}},
            {"type": "page", "name": "Game", "anonymousId": "crawler", "messageId": "p3",
             "context": {"userAgent": GOOGLEBOT}}
        ]
    });

    let response = app
        .client
        .post(app.url("/v1/batch?wait=true"))
        .basic_auth(&key, Some(""))
        .header("User-Agent", "Go-http-client/2.0")
        .json(&batch)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let rows = classified(&app).await;
    let by_user = |user: &str| rows.iter().find(|r| r.user_id == user).unwrap();
    assert_eq!(
        (
            by_user("go-buyer").is_bot,
            by_user("go-buyer").user_agent.as_str()
        ),
        (0, "")
    );
    assert_eq!(
        (
            by_user("api-buyer").is_bot,
            by_user("api-buyer").device_type.as_str()
        ),
        (0, "other"),
        "an HTTP library the backend reports as its user's client is no bot signal"
    );
    let crawler = app
        .clickhouse()
        .query("SELECT is_bot FROM events_buffer WHERE anonymous_id = 'crawler'")
        .fetch_one::<u8>()
        .await
        .unwrap();
    assert_eq!(crawler, 1, "a crawler is a bot whoever reports it");
    assert_eq!(counted(&app).await.0, 2);
}
