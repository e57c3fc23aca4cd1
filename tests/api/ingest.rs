use std::io::Write;
use std::time::Duration;

use clickhouse::Row;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::helpers::{geoip_file, TestApp};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

#[derive(Debug, Row, Deserialize)]
struct Stored {
    event: String,
    user_id: String,
    actor_id: String,
    platform: String,
    properties: String,
    ip: String,
    country: String,
    browser: String,
    os: String,
    device_type: String,
    is_bot: u8,
    channel: String,
    referrer_host: String,
    utm_source: String,
    revenue: f64,
    currency: String,
}

async fn stored(app: &TestApp, condition: &str) -> Vec<Stored> {
    app.clickhouse()
        .query(&format!(
            "SELECT event, user_id, actor_id, platform, properties, ip, country, browser, os, device_type, \
             is_bot, channel, referrer_host, utm_source, revenue, currency \
             FROM events_buffer WHERE {condition} ORDER BY timestamp"
        ))
        .fetch_all()
        .await
        .unwrap()
}

async fn count(app: &TestApp, table: &str) -> u64 {
    app.clickhouse()
        .query(&format!("SELECT count() FROM {table}"))
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_single_event_is_acknowledged_then_stored_with_wait_true() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;

    let response = app
        .post_json(
            "/v1/events?wait=true",
            &key,
            &json!({"event": "signup", "user_id": "u1", "platform": "web"}),
        )
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"accepted": 1, "rejected": []}));
    let rows = stored(&app, "user_id = 'u1'").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].event.as_str(),
            rows[0].platform.as_str(),
            rows[0].actor_id.as_str()
        ),
        ("signup", "web", "u1")
    );
}

#[tokio::test]
async fn valid_events_of_a_batch_are_kept_when_others_are_rejected() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;

    let response = app
        .post_json(
            "/v1/events?wait=true",
            &key,
            &json!([
                {"event": "view", "user_id": "a"},
                {"event": "bad name!", "user_id": "b"},
                {"event": "view", "anonymous_id": "c", "timestamp": "not a time"},
                {"event": "view", "anonymous_id": "d"}
            ]),
        )
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 2);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(
        (rejected[0]["index"].as_u64(), rejected[0]["field"].as_str()),
        (Some(1), Some("event"))
    );
    assert_eq!(
        (rejected[1]["index"].as_u64(), rejected[1]["field"].as_str()),
        (Some(2), Some("timestamp"))
    );
    assert!(rejected[1]["message"]
        .as_str()
        .unwrap()
        .contains("RFC 3339"));
    assert_eq!(count(&app, "events_buffer").await, 2);
}

#[tokio::test]
async fn a_batch_whose_events_are_all_rejected_is_a_400() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;

    let response = app
        .post_json("/v1/events", &key, &json!([{"user_id": "x"}]))
        .await;

    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["rejected"][0]["code"], "missing_field");
}

#[tokio::test]
async fn ndjson_lines_are_events_and_a_broken_line_is_rejected_alone() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;
    let body =
        "{\"event\":\"a\",\"user_id\":\"1\"}\n{broken\n{\"event\":\"b\",\"user_id\":\"2\"}\n";

    let response = app
        .client
        .post(app.url("/v1/events?wait=true"))
        .bearer_auth(&key)
        .header("Content-Type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"][0]["index"], 1);
    assert_eq!(body["rejected"][0]["code"], "invalid_json");
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(
            json!([{"event": "g", "user_id": "z"}])
                .to_string()
                .as_bytes(),
        )
        .unwrap();

    let response = app
        .client
        .post(app.url("/v1/events?wait=true"))
        .bearer_auth(&key)
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(stored(&app, "event = 'g'").await.len(), 1);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_also_after_decompression() {
    let app = TestApp::spawn_with(|s| s.ingest.max_body_bytes = 1_000).await;
    let key = app.create_key("ingest").await;
    let big =
        json!({"event": "x", "user_id": "u", "properties": {"p": "y".repeat(2_000)}}).to_string();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(big.as_bytes()).unwrap();
    let compressed = encoder.finish().unwrap();
    assert!(compressed.len() < 1_000);

    let plain = app
        .client
        .post(app.url("/v1/events"))
        .bearer_auth(&key)
        .body(big)
        .send()
        .await
        .unwrap();
    let zipped = app
        .client
        .post(app.url("/v1/events"))
        .bearer_auth(&key)
        .header("Content-Encoding", "gzip")
        .body(compressed)
        .send()
        .await
        .unwrap();

    assert_eq!(plain.status(), 413);
    assert_eq!(zipped.status(), 413);
    let body: Value = zipped.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn roles_that_may_not_ingest_get_403() {
    let app = TestApp::spawn().await;
    let key = app.create_key("analyst").await;

    let response = app
        .post_json("/v1/events", &key, &json!({"event": "x", "user_id": "u"}))
        .await;

    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ingest_not_allowed");
}

#[tokio::test]
async fn user_agents_are_parsed_and_bots_flagged() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;
    for (user, ua) in [("chrome", CHROME), ("iphone", IPHONE), ("bot", GOOGLEBOT)] {
        let response = app
            .client
            .post(app.url("/v1/events?wait=true"))
            .bearer_auth(&key)
            .header("User-Agent", ua)
            .json(&json!({"event": "page_view", "user_id": user}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let chrome = &stored(&app, "user_id = 'chrome'").await[0];
    let iphone = &stored(&app, "user_id = 'iphone'").await[0];
    let bot = &stored(&app, "user_id = 'bot'").await[0];

    assert_eq!(
        (
            chrome.browser.as_str(),
            chrome.os.as_str(),
            chrome.device_type.as_str(),
            chrome.is_bot
        ),
        ("Chrome", "Windows 10", "desktop", 0)
    );
    assert_eq!(
        (iphone.browser.as_str(), iphone.device_type.as_str()),
        ("Safari", "mobile")
    );
    assert_eq!((bot.device_type.as_str(), bot.is_bot), ("bot", 1));
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_ip_is_used_truncated_and_located() {
    let app = TestApp::spawn_with(|s| s.ingest.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let key = app.create_key("ingest").await;

    let public = app
        .client
        .post(app.url("/v1/events?wait=true"))
        .bearer_auth(&key)
        .header("X-Forwarded-For", "10.1.1.1, 77.88.8.8")
        .json(&json!({"event": "view", "user_id": "public"}))
        .send()
        .await
        .unwrap();
    let private = app
        .post_json(
            "/v1/events?wait=true",
            &key,
            &json!({"event": "view", "user_id": "private"}),
        )
        .await;

    assert_eq!(public.status(), 200);
    assert_eq!(private.status(), 200);
    let public = &stored(&app, "user_id = 'public'").await[0];
    let private = &stored(&app, "user_id = 'private'").await[0];
    assert_eq!(
        public.ip, "77.88.8.0",
        "the first untrusted hop from the right, truncated to /24"
    );
    assert_eq!(private.ip, "127.0.0.0");
    assert_eq!(private.country, "", "private addresses have no country");
    if geoip_file().is_some() {
        assert_eq!(public.country, "RU");
    }
}

#[tokio::test]
async fn context_ip_is_believed_only_from_trusted_server_keys() {
    let app = TestApp::spawn().await;
    let browser_key = app.create_key("ingest").await;
    let server_key = app.create_key("service").await;
    let event =
        |user: &str| json!({"event": "view", "user_id": user, "context": {"ip": "8.8.4.4"}});

    app.post_json("/v1/events?wait=true", &browser_key, &event("browser"))
        .await;
    app.post_json("/v1/events?wait=true", &server_key, &event("server"))
        .await;

    assert_eq!(stored(&app, "user_id = 'browser'").await[0].ip, "127.0.0.0");
    assert_eq!(stored(&app, "user_id = 'server'").await[0].ip, "8.8.4.0");
}

#[tokio::test]
async fn traffic_source_and_channel_come_from_the_page_and_referrer() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;

    app.post_json(
        "/v1/events?wait=true",
        &key,
        &json!({"event": "page_view", "anonymous_id": "t", "context": {"page": {
            "url": "https://shop.example/?utm_source=vk&utm_medium=social", "referrer": "https://vk.com/feed"}}}),
    )
    .await;

    let row = &stored(&app, "anonymous_id = 't'").await[0];
    assert_eq!(
        (
            row.channel.as_str(),
            row.referrer_host.as_str(),
            row.utm_source.as_str()
        ),
        ("social", "vk.com", "vk")
    );
}

#[tokio::test]
async fn personal_data_in_properties_is_hashed_masked_or_dropped() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;

    app.post_json(
        "/v1/events?wait=true",
        &key,
        &json!({"event": "signup", "user_id": "p", "properties": {
            "email": "ivan@example.ru", "name": "Ivan Petrov",
            "comment": "call me at +7 912 345-67-89", "plan": "pro"}}),
    )
    .await;

    let properties: Value =
        serde_json::from_str(&stored(&app, "user_id = 'p'").await[0].properties).unwrap();
    assert!(properties["email"].as_str().unwrap().starts_with("hmac:"));
    assert!(properties.get("name").is_none());
    assert_eq!(properties["comment"], "call me at +* *** ***-**-89");
    assert_eq!(properties["plan"], "pro");
}

#[tokio::test]
async fn purchases_are_mirrored_to_postgres_normalized_and_idempotently() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;
    let purchase = json!({"event": "purchase", "user_id": "buyer", "event_id": "0193a4b0-0000-7000-8000-000000000001",
        "properties": {"amount": 1499.5, "currency": "rub", "item_id": "game-1", "developer_id": "dev-9", "item_name": "Space Game", "order_id": "o-1"}});

    for _ in 0..2 {
        let response = app.post_json("/v1/events?wait=true", &key, &purchase).await;
        assert_eq!(response.status(), 200);
    }

    let pool = app.postgres().await;
    let mut order = None;
    for _ in 0..50 {
        order = sqlx::query_as::<_, (String, String, String, f64, String)>(
            "SELECT o.user_id, o.item_id, o.order_id, o.amount::float8, o.currency FROM orders o",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if order.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        order,
        Some((
            "buyer".into(),
            "game-1".into(),
            "o-1".into(),
            1499.5,
            "RUB".into()
        ))
    );
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 1, "the same event_id twice is one order");
    let product: (String, String) =
        sqlx::query_as("SELECT developer_id, name FROM products WHERE item_id = 'game-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(product, ("dev-9".into(), "Space Game".into()));
    let properties: (String, f64) = sqlx::query_as(
        "SELECT properties->>'item_name', (properties->>'amount')::float8 FROM business_events",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        properties,
        ("Space Game".into(), 1499.5),
        "properties are kept as jsonb"
    );
    let revenue = stored(&app, "event = 'purchase'").await;
    assert_eq!(
        (revenue[0].revenue, revenue[0].currency.as_str()),
        (1499.5, "RUB")
    );
}

/// Polls `query` until it returns a row (the mirror writes in the background).
async fn mirrored<T>(pool: &sqlx::PgPool, query: &str) -> T
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    for _ in 0..100 {
        if let Some(row) = sqlx::query_as::<_, T>(query)
            .fetch_optional(pool)
            .await
            .unwrap()
        {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing mirrored for {query}");
}

#[tokio::test]
async fn a_nul_character_reaches_postgres_as_a_replacement_and_does_not_hold_up_the_mirror() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;
    let with_nul = json!({"event": "purchase", "user_id": "nul-buyer",
        "properties": {"amount": 5, "currency": "USD", "item_id": "game\u{0}1", "note": "a\u{0}b", "order_id": "o\u{0}"}});
    let after = json!({"event": "purchase", "user_id": "next-buyer",
        "properties": {"amount": 7, "currency": "USD", "item_id": "game-2"}});

    for event in [&with_nul, &after] {
        let response = app.post_json("/v1/events?wait=true", &key, event).await;
        assert_eq!(response.status(), 200);
    }

    let pool = app.postgres().await;
    let next: (String,) = mirrored(
        &pool,
        "SELECT item_id FROM orders WHERE user_id = 'next-buyer'",
    )
    .await;
    assert_eq!(
        next.0, "game-2",
        "the mirror went on after the event with U+0000"
    );
    let nul: (String, String, String) = mirrored(
        &pool,
        "SELECT o.item_id, o.order_id, b.properties->>'note' FROM orders o \
         JOIN business_events b USING (event_id) WHERE o.user_id = 'nul-buyer'",
    )
    .await;
    assert_eq!(
        nul,
        (
            "game\u{FFFD}1".into(),
            "o\u{FFFD}".into(),
            "a\u{FFFD}b".into()
        )
    );
    let kept = stored(&app, "user_id = 'nul-buyer'").await;
    assert!(
        kept[0].properties.contains("a\\u0000b"),
        "ClickHouse keeps the text as sent: {}",
        kept[0].properties
    );
}

#[tokio::test]
async fn rows_postgres_refuses_are_set_aside_and_the_rest_of_the_batch_is_written() {
    use chgate::ingest::row::EventRow;
    let app = TestApp::spawn().await;
    let pool = app.postgres().await;
    let now = chrono::Utc::now().timestamp_millis();
    let row = |user: &str, currency: &str| EventRow {
        event_id: uuid::Uuid::new_v4(),
        event: "purchase".into(),
        timestamp: now,
        received_at: now,
        actor_id: user.into(),
        user_id: user.into(),
        properties: "{}".into(),
        revenue: 3.0,
        currency: currency.into(),
        ..EventRow::default()
    };
    // `orders.currency` is CHAR(3): Postgres refuses the first row for its data.
    let rows = [
        row("refused", "DOLLARS"),
        row("fine-1", "EUR"),
        row("fine-2", "RUB"),
    ];

    let set_aside =
        chgate::ingest::postgres::write_isolating(&pool, &rows.iter().collect::<Vec<_>>())
            .await
            .unwrap();

    assert_eq!(set_aside, 1);
    let users: Vec<String> = sqlx::query_scalar("SELECT user_id FROM orders ORDER BY user_id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(users, ["fine-1", "fine-2"]);
}

#[tokio::test]
async fn a_purchase_without_an_amount_is_rejected_naming_the_property() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;

    let response = app
        .post_json(
            "/v1/events",
            &key,
            &json!({"event": "purchase", "user_id": "u"}),
        )
        .await;

    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["rejected"][0]["field"], "properties.amount");
}

#[tokio::test]
async fn segment_batches_authenticate_with_the_write_key_as_basic_user() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;
    let batch = json!({
        "batch": [
            {"type": "identify", "userId": "seg-1", "traits": {"plan": "pro", "country": "RU"}, "messageId": "m1"},
            {"type": "track", "event": "Level Up", "userId": "seg-1", "properties": {"level": 3}, "messageId": "m2"},
            {"type": "page", "name": "Home", "anonymousId": "anon-1", "messageId": "m3",
             "properties": {"url": "https://s.example/", "referrer": "https://www.google.com/"}},
            {"type": "bogus", "userId": "x"}
        ],
        "context": {"library": {"name": "analytics-node", "version": "1.0"}},
        "sentAt": "2026-01-01T00:00:00Z"
    });

    let response = app
        .client
        .post(app.url("/v1/batch?wait=true"))
        .basic_auth(&key, Some(""))
        .json(&batch)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 3);
    assert_eq!(body["rejected"][0]["index"], 3);
    let level = stored(&app, "event = 'Level Up'").await;
    assert_eq!(
        (level[0].platform.as_str(), level[0].user_id.as_str()),
        ("server", "seg-1")
    );
    let page = stored(&app, "event = 'page_view'").await;
    assert_eq!(page[0].channel, "search");
    let traits: String = app
        .clickhouse()
        .query("SELECT traits FROM user_properties FINAL WHERE user_id = 'seg-1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&traits).unwrap()["plan"],
        "pro"
    );
}

#[tokio::test]
async fn segment_single_calls_take_their_type_from_the_path() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;

    let response = app
        .client
        .post(app.url("/v1/screen?wait=true"))
        .basic_auth(&key, None::<&str>)
        .json(&json!({"name": "Settings", "userId": "m", "context": {"os": {"name": "iOS"}}}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let row = &stored(&app, "user_id = 'm'").await[0];
    assert_eq!(
        (row.event.as_str(), row.platform.as_str()),
        ("screen_view", "ios")
    );
}

#[tokio::test]
async fn one_batch_with_a_signup_and_several_orders_of_one_user_is_mirrored_in_one_go() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;
    let now = chrono::Utc::now().timestamp_millis();
    let order = |n: i64, item: &str| {
        json!({"event": "purchase", "user_id": "fan", "timestamp": now - 1000 + n,
               "properties": {"amount": 10 + n, "item_id": item, "developer_id": "dev-1"}})
    };
    let batch = json!([
        {"event": "signup", "user_id": "fan", "timestamp": now - 2000},
        order(1, "game-1"), order(2, "game-1"), order(3, "game-2"),
        {"event": "refund", "user_id": "fan", "timestamp": now - 500, "properties": {"amount": 11, "item_id": "game-1"}}
    ]);

    let response = app.post_json("/v1/events?wait=true", &key, &batch).await;

    assert_eq!(response.status(), 200);
    let pool = app.postgres().await;
    let mut counts = (0i64, 0i64, 0i64);
    for _ in 0..50 {
        counts = sqlx::query_as("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM products), (SELECT count(*) FROM users WHERE signed_up_at IS NOT NULL)")
            .fetch_one(&pool)
            .await
            .unwrap();
        if counts.0 == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counts, (4, 2, 1), "orders, products, signed-up users");
}

#[tokio::test]
async fn a_known_users_mirrored_row_changes_only_when_an_event_brings_something_new() {
    let app = TestApp::spawn().await;
    let key = app.create_key("ingest").await;
    let pool = app.postgres().await;
    let now = chrono::Utc::now().timestamp_millis();
    // Each purchase is mirrored in its own transaction; a row's xmin names the transaction that
    // wrote its current version.
    let (app, key, pool) = (&app, &key, &pool);
    let purchase = |n: i64, platform: &'static str, at: i64| async move {
        let event = json!({"event": "purchase", "user_id": "regular", "platform": platform, "timestamp": at,
                           "properties": {"amount": n, "item_id": "game-1", "item_name": "Game"}});
        let response = app.post_json("/v1/events?wait=true", key, &event).await;
        assert_eq!(response.status(), 200);
        for _ in 0..50 {
            let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
                .fetch_one(pool)
                .await
                .unwrap();
            if orders == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sqlx::query_as::<_, (String, String, i64, String)>(
            "SELECT u.xmin::text, u.platform, (extract(epoch FROM u.first_seen_at) * 1000)::int8, p.xmin::text
             FROM users u, products p WHERE u.user_id = 'regular' AND p.item_id = 'game-1'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };

    let first = purchase(1, "web", now - 5000).await;
    let same = purchase(2, "web", now - 4000).await;
    let moved = purchase(3, "ios", now - 3000).await;
    let earlier = purchase(4, "ios", now - 60_000).await;

    assert_eq!((first.1.as_str(), first.2), ("web", now - 5000));
    assert_eq!(
        same, first,
        "nothing new: neither the user nor the product is rewritten"
    );
    assert_ne!(moved.0, same.0, "a new platform rewrites the user");
    assert_eq!((moved.1.as_str(), moved.2), ("ios", now - 5000));
    assert_eq!(moved.3, first.3, "the product did not change");
    assert_eq!(
        earlier.2,
        now - 60_000,
        "an earlier event moves first_seen_at back"
    );
}

#[tokio::test]
async fn the_row_type_matches_the_insert_table_and_the_insert_table_matches_events() {
    // The writer inserts without per-row validation; this keeps the struct and the schema in step.
    let app = TestApp::spawn().await;
    let columns = |table: &'static str| {
        app.clickhouse()
            .query(
                "SELECT name, type FROM system.columns \
                 WHERE database = currentDatabase() AND table = ? ORDER BY position",
            )
            .bind(table)
            .fetch_all::<(String, String)>()
    };
    let ingest = columns("events_ingest").await.unwrap();
    let events = columns("events").await.unwrap();

    let fields: Vec<&str> =
        <chgate::ingest::row::EventRow as clickhouse::Row>::COLUMN_NAMES.to_vec();
    let names: Vec<&str> = ingest.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, fields);
    // Same columns as `events`, LowCardinality(T) read as plain T.
    let plain: Vec<(String, String)> = events
        .into_iter()
        .map(|(name, ty)| {
            let ty = match ty
                .strip_prefix("LowCardinality(")
                .and_then(|inner| inner.strip_suffix(')'))
            {
                Some(inner) => inner.to_string(),
                None => ty,
            };
            (name, ty)
        })
        .collect();
    assert_eq!(ingest, plain);
}

/// One event with every column set, stored through a gateway writing in `format`; the row as
/// ClickHouse returns it, without the columns that depend on when and where it was written.
async fn stored_through(format: chgate::config::InsertFormat) -> Value {
    let app = TestApp::spawn_with(|s| s.ingest.insert_format = format).await;
    let key = app.create_key("service").await;
    let event = json!({
        "event_id": "0193a0c4-2b7e-7cc0-8a1e-7f1c2d3e4f50",
        "event": "operation",
        "timestamp": "2026-11-24T09:30:15.123Z",
        "user_id": "u-native",
        "anonymous_id": "a-1",
        "session_id": "s-1",
        "platform": "web",
        "properties": {"operation": "sync", "status": "failed", "duration_ms": 812.5,
                       "item_id": "game-7", "developer_id": "dev-2", "amount": 9.99, "currency": "rub",
                       "note": "Привет, \"мир\""},
        "context": {"ip": "77.88.8.8", "user_agent": CHROME, "locale": "ru-RU", "library": "sdk",
                    "page": {"url": "https://shop.example/p?utm_source=news&utm_medium=email", "title": "P",
                             "referrer": "https://www.google.com/search?q=x"},
                    "app": {"version": "1.2.3"}, "device": {"model": "Pixel"}}
    });
    let response = app.post_json("/v1/events?wait=true", &key, &event).await;
    assert_eq!(response.status(), 200);
    let text = app
        .client
        .post(crate::helpers::clickhouse_url())
        .query(&[("database", app.settings().clickhouse.database.as_str())])
        .body(
            "SELECT * EXCEPT (received_at, ingest_segment) FROM events_buffer \
             WHERE user_id = 'u-native' FORMAT JSONEachRow",
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn the_native_writer_stores_exactly_what_the_rowbinary_writer_stores() {
    use chgate::config::InsertFormat;

    let native = stored_through(InsertFormat::Native).await;
    let rowbinary = stored_through(InsertFormat::RowBinary).await;

    assert_eq!(native, rowbinary);
    assert_eq!(native["timestamp"], "2026-11-24 09:30:15.123");
    assert_eq!(native["duration_ms"], 812.5);
    assert_eq!(native["currency"], "RUB");
    assert_eq!(native["country"], "RU");
    assert_eq!(native["channel"], "email");
}
