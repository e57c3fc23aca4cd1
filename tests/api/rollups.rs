//! Each materialized view equals the same aggregate computed from the raw events.

use serde_json::{json, Value};

use crate::helpers::TestApp;

const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// A deterministic mix of users, platforms, countries, purchases, refunds, operations and bots.
fn events(now_ms: i64) -> Vec<Value> {
    let mut seed: u64 = 42;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let platforms = ["web", "ios", "android"];
    let ips = ["77.88.8.8", "8.8.8.8", "185.15.59.224", "10.0.0.1"];
    let mut out = Vec::new();
    for i in 0..400i64 {
        let user = format!("u{}", next(40));
        // Unique timestamps spread over three days, so first-seen ties cannot happen.
        let timestamp = now_ms - 3 * 86_400_000 + i * 600_000 + next(1000) as i64;
        let mut event = json!({
            "event": "page_view",
            "user_id": user,
            "timestamp": timestamp,
            "platform": platforms[next(3) as usize],
            "context": {"ip": ips[next(4) as usize]},
            "properties": {}
        });
        match next(10) {
            0 => {
                event["event"] = json!("purchase");
                let currency = ["USD", "RUB"][next(2) as usize];
                event["properties"] =
                    json!({"amount": (next(10_000) as f64) / 100.0, "currency": currency});
            }
            1 => {
                event["event"] = json!("refund");
                event["properties"] =
                    json!({"amount": (next(5_000) as f64) / 100.0, "currency": "USD"});
            }
            2 | 3 => {
                event["event"] = json!("connector_call");
                let status = ["ok", "ok", "ok", "error", "timeout"][next(5) as usize];
                let operation = ["sync", "export"][next(2) as usize];
                let mut properties = json!({"operation": operation, "status": status});
                if next(4) != 0 {
                    properties["duration_ms"] = json!(next(2_000) as f64 + 0.5);
                }
                event["properties"] = properties;
            }
            4 => event["context"]["user_agent"] = json!(GOOGLEBOT),
            _ => {}
        }
        out.push(event);
    }
    out
}

async fn tsv(app: &TestApp, sql: &str) -> String {
    let mut cursor = app.clickhouse().query(sql).fetch_bytes("TSV").unwrap();
    String::from_utf8(cursor.collect().await.unwrap().to_vec()).unwrap()
}

async fn assert_same(app: &TestApp, view: &str, raw: &str) {
    let from_view = tsv(app, view).await;
    let from_raw = tsv(app, raw).await;
    assert!(
        !from_raw.trim().is_empty(),
        "the raw aggregate is empty: {raw}"
    );
    assert_eq!(from_view, from_raw, "\nview: {view}\nraw:  {raw}");
}

#[tokio::test]
async fn every_rollup_equals_the_aggregate_of_the_raw_events() {
    let app = TestApp::spawn().await;
    let key = app.create_key("service").await;
    let now = chrono::Utc::now().timestamp_millis();
    let response = app
        .post_json("/v1/events?wait=true", &key, &Value::Array(events(now)))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 400, "{body}");
    app.clickhouse()
        .query("OPTIMIZE TABLE events_buffer")
        .execute()
        .await
        .unwrap();

    assert_same(
        &app,
        "SELECT day, platform, country, uniqMerge(users) FROM dau_daily GROUP BY ALL ORDER BY ALL",
        "SELECT toDate(timestamp) AS day, platform, country, uniqExact(actor_id) FROM events WHERE is_bot = 0 GROUP BY ALL ORDER BY ALL",
    )
    .await;
    assert_same(
        &app,
        "SELECT hour, event, platform, sum(events), sum(bot_events), uniqMerge(users) FROM events_hourly GROUP BY ALL ORDER BY ALL",
        "SELECT toStartOfHour(timestamp) AS hour, event, platform, count(), countIf(is_bot = 1), uniqExact(actor_id) FROM events GROUP BY ALL ORDER BY ALL",
    )
    .await;
    assert_same(
        &app,
        "SELECT day, currency, platform, sum(gross) - sum(refunded), sum(orders), sum(refunds), uniqMerge(payers) FROM revenue_daily GROUP BY ALL ORDER BY ALL",
        "SELECT toDate(timestamp) AS day, currency, platform, \
         sumIf(toDecimal128(revenue, 4), event = 'purchase') - sumIf(toDecimal128(revenue, 4), event = 'refund'), \
         countIf(event = 'purchase'), countIf(event = 'refund'), uniqExactIf(actor_id, event = 'purchase') \
         FROM events WHERE event IN ('purchase', 'refund') AND is_bot = 0 GROUP BY ALL ORDER BY ALL",
    )
    .await;
    assert_same(
        &app,
        "SELECT actor_id, min(first_seen), max(last_seen), argMinMerge(first_platform), argMinMerge(first_country) FROM user_first_seen GROUP BY actor_id ORDER BY actor_id",
        "SELECT actor_id, min(timestamp), max(timestamp), argMin(toString(platform), timestamp), argMin(toString(country), timestamp) FROM events WHERE is_bot = 0 GROUP BY actor_id ORDER BY actor_id",
    )
    .await;
    assert_same(
        &app,
        "SELECT day, user_key, arraySort(groupArrayMerge(keys)) FROM user_day_events GROUP BY ALL ORDER BY ALL",
        "SELECT toDate(timestamp) AS day, cityHash64(actor_id) AS user_key, \
         arraySort(groupArray(bitShiftLeft(toUInt64(toUnixTimestamp64Milli(timestamp)), 20) + bitAnd(cityHash64(toString(event)), 1048575))) \
         FROM events WHERE is_bot = 0 GROUP BY ALL ORDER BY ALL",
    )
    .await;
    for (table, period) in [
        ("ops_hourly", "toStartOfHour(timestamp)"),
        ("ops_daily", "toDateTime(toStartOfDay(timestamp), 'UTC')"),
        (
            "ops_monthly",
            "toDateTime(toStartOfMonth(timestamp), 'UTC')",
        ),
    ] {
        assert_same(
            &app,
            &format!(
                "SELECT period, operation, sum(ops), sum(errors), uniqMerge(users), if(sum(duration_n) = 0, NULL, round(sum(duration_sum) / sum(duration_n), 6)) \
                 FROM {table} GROUP BY ALL ORDER BY ALL"
            ),
            &format!(
                "SELECT {period} AS period, operation, count(), countIf(status IN ('error', 'failed', 'failure', 'timeout')), \
                 uniqExact(actor_id), round(avg(duration_ms), 6) FROM events WHERE operation != '' GROUP BY ALL ORDER BY ALL"
            ),
        )
        .await;
        // The p95 comes from a t-digest sketch: equal to the exact value within the sketch's error.
        let check = tsv(
            &app,
            &format!(
                "SELECT max(abs(v.p95 - r.p95) / greatest(r.p95, 1)) FROM \
                 (SELECT period, operation, quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q)[2] AS p95 FROM {table} GROUP BY ALL) AS v \
                 JOIN (SELECT {period} AS period, operation, quantileExact(0.95)(duration_ms) AS p95 FROM events WHERE operation != '' GROUP BY ALL) AS r \
                 USING (period, operation)"
            ),
        )
        .await;
        let error: f64 = check.trim().parse().unwrap();
        assert!(
            error < 0.05,
            "{table}: p95 differs from the exact value by {error}"
        );
    }
}

/// The templates' answers over the rollups, computed anew (no cache): dau at each filter level,
/// revenue by day and week, operations by hour, day and month.
async fn answers(app: &TestApp, key: &str, from: &str, to: &str) -> Vec<Value> {
    let (from_time, to_time) = (format!("{from}%2000:00:00"), format!("{to}%2023:59:59"));
    let paths = [
        format!("/v1/queries/dau?from={from}&to={to}"),
        format!("/v1/queries/dau?from={from}&to={to}&platform=ios"),
        format!("/v1/queries/dau?from={from}&to={to}&country=US"),
        format!("/v1/queries/dau?from={from}&to={to}&platform=web&country=RU"),
        format!("/v1/queries/revenue?from={from}&to={to}"),
        format!("/v1/queries/revenue?from={from}&to={to}&granularity=week&currency=USD"),
        format!("/v1/queries/ops_usage?from={from_time}&to={to_time}&granularity=hour"),
        format!(
            "/v1/queries/ops_usage?from={from_time}&to={to_time}&granularity=day&operation=sync"
        ),
        format!("/v1/queries/ops_usage?from={from_time}&to={to_time}&granularity=month"),
    ];
    let mut out = Vec::new();
    for path in paths {
        let response = app
            .client
            .get(app.url(&path))
            .bearer_auth(key)
            .header("cache-control", "no-cache")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(
            !body["data"].as_array().unwrap().is_empty(),
            "{path}: {body}"
        );
        out.push(json!({"path": path, "data": body["data"]}));
    }
    out
}

/// Closed periods finalized beside the rollups give the answers merging the states gives; a row
/// added to a finalized day shows at once (its fingerprint no longer matches), before and after
/// the next pass.
#[tokio::test]
async fn finalized_periods_answer_as_the_states_do_and_a_late_row_shows_at_once() {
    let app = TestApp::spawn().await;
    let service = app.create_key("service").await;
    let analyst = app.create_key("analyst").await;
    let now = chrono::Utc::now();
    let post = |events: Vec<Value>| {
        let (app, service) = (&app, &service);
        async move {
            let response = app
                .post_json("/v1/events?wait=true", service, &Value::Array(events))
                .await;
            assert_eq!(response.status(), 200);
            app.clickhouse()
                .query("OPTIMIZE TABLE events_buffer")
                .execute()
                .await
                .unwrap();
        }
    };
    post(events(now.timestamp_millis())).await;
    let day = |back: i64| {
        (now - chrono::Duration::days(back))
            .format("%Y-%m-%d")
            .to_string()
    };
    let (from, to) = (day(4), day(0));
    let merged = answers(&app, &analyst, &from, &to).await;

    let clickhouse = chgate::storage::clickhouse::ClickHouse::new(&app.settings().clickhouse);
    let pass = chgate::rollups::finalize(&clickhouse, 400).await;
    assert!(pass.errors.is_empty(), "{:?}", pass.errors);
    assert!(pass.rows > 0, "{pass:?}");
    let finalized = tsv(
        &app,
        "SELECT (SELECT count() FROM dau_final), (SELECT count() FROM revenue_final), (SELECT count() FROM ops_final)",
    )
    .await;
    let counts: Vec<u64> = finalized
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(counts.iter().all(|&n| n > 0), "final rows: {finalized}");
    assert_eq!(answers(&app, &analyst, &from, &to).await, merged);
    // A second pass finds nothing changed.
    chgate::rollups::finalize(&clickhouse, 400).await;
    assert_eq!(
        tsv(&app, "SELECT count() FROM dau_final").await.trim(),
        counts[0].to_string()
    );

    // A purchase by a new user two days ago, on iOS in the US.
    let late = (now - chrono::Duration::days(2)).timestamp_millis();
    post(vec![json!({
        "event": "purchase", "user_id": "late-user", "timestamp": late, "platform": "ios",
        "context": {"ip": "8.8.8.8"}, "properties": {"amount": 12.5, "currency": "USD"}
    })])
    .await;
    let after = answers(&app, &analyst, &from, &to).await;
    let users_on = |answer: &Value, day: &str| {
        answer["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["day"] == day)
            .map(|row| {
                row["users"]
                    .as_u64()
                    .unwrap_or_else(|| row["users"].as_str().unwrap().parse().unwrap())
            })
            .unwrap_or(0)
    };
    // The country comes from GeoIP, which tests may run without.
    let country = tsv(
        &app,
        "SELECT country FROM events WHERE user_id = 'late-user'",
    )
    .await;
    let in_us = u64::from(country.trim() == "US");
    for (level, added) in [(0, 1), (1, 1), (2, in_us)] {
        assert_eq!(
            users_on(&after[level], &day(2)),
            users_on(&merged[level], &day(2)) + added,
            "{}",
            after[level]["path"]
        );
    }
    assert_eq!(after[3], merged[3], "web in Russia is untouched");
    assert_ne!(after[4], merged[4], "the day's revenue moved");
    chgate::rollups::finalize(&clickhouse, 400).await;
    assert_eq!(answers(&app, &analyst, &from, &to).await, after);

    // The answer is the finalized value while its fingerprint matches, and the states' when not:
    // a planted final row shows with the rollup's fingerprint and is ignored with another.
    let true_users = users_on(&after[0], &day(3));
    for (offset, expected) in [(0, 999_999), (1, true_users)] {
        app.clickhouse()
            .query(&format!(
                "INSERT INTO dau_final (granularity, by_platform, by_country, period, platform, country, users, fingerprint, finalized_at)
                 SELECT 'day', 0, 0, day, '', '', 999999, sum(events) + {offset}, now64(3) + {offset} + 1
                 FROM dau_daily WHERE day = '{}' GROUP BY day",
                day(3)
            ))
            .execute()
            .await
            .unwrap();
        let answer = &answers(&app, &analyst, &from, &to).await[0];
        assert_eq!(users_on(answer, &day(3)), expected, "{answer}");
    }
}
