//! Server-side events: the HTTP client a backend sends them with is not its users' browser.

use clickhouse::Row;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::helpers::{cli_env, run_cli, stderr, stdout, TestApp};

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

#[derive(Debug, Row, Deserialize)]
struct Rollups {
    orders: u64,
    gross: f64,
    payers: u64,
    users: u64,
    events: u64,
    bot_events: u64,
    first_seen: u64,
}

async fn rollups(app: &TestApp) -> Rollups {
    app.clickhouse()
        .query(
            "SELECT assumeNotNull((SELECT sum(orders) FROM revenue_daily)) AS orders, \
             assumeNotNull((SELECT toFloat64(sum(gross)) FROM revenue_daily)) AS gross, \
             assumeNotNull((SELECT uniqMerge(payers) FROM revenue_daily)) AS payers, \
             assumeNotNull((SELECT uniqMerge(users) FROM dau_daily)) AS users, \
             assumeNotNull((SELECT sum(events) FROM events_hourly)) AS events, \
             assumeNotNull((SELECT sum(bot_events) FROM events_hourly)) AS bot_events, \
             assumeNotNull((SELECT count() FROM (SELECT actor_id FROM user_first_seen \
             GROUP BY actor_id))) AS first_seen",
        )
        .fetch_one()
        .await
        .unwrap()
}

/// Rows as gateways before the server-side rule stored them, over the last three days: purchases
/// a Go backend sent with a service key (flagged as bots for the request's user agent), a person
/// browsing, a crawler, and a purchase an HTTP library sent from an address in `bot_networks`.
async fn store_rows_the_old_way(app: &TestApp) {
    let now = chrono::Utc::now();
    let days_ago = |n: i64| {
        (now - chrono::Duration::days(n))
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string()
    };
    let mut rows = Vec::new();
    for (i, ua) in [
        "Go-http-client/1.1",
        "python-requests/2.31.0",
        "okhttp/4.12.0",
    ]
    .iter()
    .enumerate()
    {
        rows.push(json!({
            "event": "purchase", "user_id": format!("server-{i}"), "actor_id": format!("server-{i}"),
            "timestamp": days_ago(i as i64 + 1), "platform": "server", "revenue": 10.5,
            "currency": "USD", "user_agent": ua, "browser": "", "device_type": "bot", "is_bot": 1,
            "ip": "203.0.113.0"
        }));
    }
    rows.push(json!({
        "event": "page_view", "user_id": "person", "actor_id": "person", "timestamp": days_ago(1),
        "platform": "web", "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "device_type": "desktop", "is_bot": 0
    }));
    rows.push(json!({
        "event": "page_view", "anonymous_id": "crawler", "actor_id": "crawler", "timestamp": days_ago(1),
        "platform": "web", "user_agent": GOOGLEBOT, "device_type": "bot", "is_bot": 1
    }));
    rows.push(json!({
        "event": "purchase", "user_id": "from-bot-net", "actor_id": "from-bot-net",
        "timestamp": days_ago(1), "platform": "server", "revenue": 99.0, "currency": "USD",
        "user_agent": "Go-http-client/1.1", "device_type": "bot", "is_bot": 1, "ip": "198.51.100.0"
    }));
    let body = rows
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    app.clickhouse()
        .query(&format!(
            "INSERT INTO events SETTINGS input_format_skip_unknown_fields = 0 \
             FORMAT JSONEachRow\n{body}"
        ))
        .execute()
        .await
        .unwrap();
}

#[tokio::test]
async fn reclassify_bots_counts_stored_server_side_rows_and_rebuilds_their_rollups() {
    let app = TestApp::spawn_with(|s| s.ingest.bot_networks = vec!["198.51.100.7/32".into()]).await;
    store_rows_the_old_way(&app).await;
    let before = rollups(&app).await;
    assert_eq!((before.orders, before.users, before.bot_events), (0, 1, 5));
    let mut env = cli_env(app.settings());
    env.push((
        "CHGATE__INGEST__BOT_NETWORKS",
        "[\"198.51.100.7/32\"]".into(),
    ));
    let since = (chrono::Utc::now() - chrono::Duration::days(7))
        .format("%Y-%m-%d")
        .to_string();

    let dry = run_cli(&["reclassify-bots", "--since", &since, "--dry-run"], &env);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("3 rows"),
        "the dry run says what it would change: {}",
        stdout(&dry)
    );
    assert_eq!(rollups(&app).await.orders, 0, "a dry run changes nothing");

    let run = run_cli(&["reclassify-bots", "--since", &since], &env);

    assert!(run.status.success(), "{}", stderr(&run));
    let after = rollups(&app).await;
    assert_eq!(
        (
            after.orders,
            after.gross,
            after.payers,
            after.users,
            after.events,
            after.bot_events,
            after.first_seen
        ),
        (3, 31.5, 3, 4, 6, 2, 4),
        "{}",
        stdout(&run)
    );
    let classes: Vec<(String, u8, String)> = app
        .clickhouse()
        .query("SELECT actor_id, is_bot, device_type FROM events ORDER BY actor_id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        classes,
        [
            ("crawler".into(), 1, "bot".into()),
            ("from-bot-net".into(), 1, "bot".into()),
            ("person".into(), 0, "desktop".into()),
            ("server-0".into(), 0, String::new()),
            ("server-1".into(), 0, String::new()),
            ("server-2".into(), 0, String::new()),
        ]
    );

    let again = run_cli(&["reclassify-bots", "--since", &since], &env);
    assert!(again.status.success(), "{}", stderr(&again));
    let twice = rollups(&app).await;
    assert_eq!(
        (twice.orders, twice.gross, twice.events, twice.first_seen),
        (3, 31.5, 6, 4),
        "a second run rebuilds the same days to the same numbers"
    );
}
