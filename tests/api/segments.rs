//! Segments: criteria compiled and run on ClickHouse, refreshes that pick up new events, static
//! membership, listing and exports pseudonymized per role, audited.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::TestApp;

async fn events(app: &TestApp, events: &[(&str, &str, f64)]) {
    let now = chrono::Utc::now() - chrono::Duration::minutes(5);
    let rows: Vec<Value> = events
        .iter()
        .map(|(user, event, amount)| {
            json!({"event": event, "user_id": user, "timestamp": now.to_rfc3339(), "platform": "web",
                   "properties": {"amount": amount, "currency": "USD", "coupon": "it's-me"}})
        })
        .collect();
    chgate::cli::check::live::load_events_into(&app.clickhouse(), app.settings(), &rows)
        .await
        .unwrap();
}

use crate::helpers::call;

fn buyers(min_count: u64) -> Value {
    json!({"and": [
        {"event": {"name": "purchase", "min_count": min_count, "within_days": 30,
                   "where": [{"property": "currency", "op": "=", "value": "USD"}]}},
        {"last_seen": {"within_days": 7}}
    ]})
}

/// `a` bought twice, `b` once, `c` only looked.
const TWO_BUYERS: &[(&str, &str, f64)] = &[
    ("a", "purchase", 10.0),
    ("a", "purchase", 20.0),
    ("b", "purchase", 5.0),
    ("c", "game_view", 0.0),
];

/// Creates a segment as `key` (201 expected): its id and the created segment.
async fn create_segment(app: &TestApp, key: &str, body: Value) -> (String, Value) {
    let (status, created, text) =
        call(app, reqwest::Method::POST, "/v1/segments", key, Some(body)).await;
    assert_eq!(status, 201, "{text}");
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    (id, created)
}

#[tokio::test]
async fn a_dynamic_segment_is_computed_listed_and_refreshed_with_new_events() {
    let app = TestApp::spawn().await;
    let admin = app.create_key("admin").await;
    events(&app, TWO_BUYERS).await;

    let (id, created) = create_segment(
        &app,
        &admin,
        json!({"name": "repeat buyers", "criteria": buyers(2)}),
    )
    .await;
    let (_, first, _) = call(
        &app,
        reqwest::Method::GET,
        &format!("/v1/segments/{id}/users"),
        &admin,
        None,
    )
    .await;
    events(&app, &[("b", "purchase", 7.0)]).await;
    let (status, refreshed, text) = call(
        &app,
        reqwest::Method::POST,
        &format!("/v1/segments/{id}/refresh"),
        &admin,
        None,
    )
    .await;
    let (_, second, _) = call(
        &app,
        reqwest::Method::GET,
        &format!("/v1/segments/{id}/users?limit=1"),
        &admin,
        None,
    )
    .await;
    let (_, page_two, _) = call(
        &app,
        reqwest::Method::GET,
        &format!("/v1/segments/{id}/users?limit=1&offset=1"),
        &admin,
        None,
    )
    .await;
    let (_, shown, _) = call(
        &app,
        reqwest::Method::GET,
        &format!("/v1/segments/{id}"),
        &admin,
        None,
    )
    .await;
    let trends = |segment: &str| {
        format!("/v1/queries/event_trends?events=purchase&events=game_view&from=today-1d&to=now%2B1h&granularity=day{segment}")
    };
    let (_, everyone, _) = call(&app, reqwest::Method::GET, &trends(""), &admin, None).await;
    let (status_in, members, text_in) = call(
        &app,
        reqwest::Method::GET,
        &trends(&format!("&segment={id}")),
        &admin,
        None,
    )
    .await;
    let (bad_status, bad, _) = call(
        &app,
        reqwest::Method::GET,
        &trends("&segment=nope"),
        &admin,
        None,
    )
    .await;

    assert_eq!(created["size"], 1);
    assert_eq!(first["users"], json!(["a"]));
    assert_eq!(first["pseudonymized"], false);
    assert_eq!(status, 200, "{text}");
    assert_eq!(refreshed["result"]["size"], 2);
    assert_eq!(
        (second["users"].clone(), second["next_offset"].clone()),
        (json!(["a"]), json!(1))
    );
    assert_eq!(
        (page_two["users"].clone(), page_two["next_offset"].clone()),
        (json!(["b"]), Value::Null)
    );
    let sizes: Vec<i64> = shown["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["size"].as_i64().unwrap())
        .collect();
    assert_eq!(sizes, vec![2, 1], "size history, newest first");
    let events_of = |body: &Value| {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(events_of(&everyone), vec!["game_view", "purchase"]);
    assert_eq!(status_in, 200, "{text_in}");
    assert_eq!(
        events_of(&members),
        vec!["purchase"],
        "templates compare a segment with everyone"
    );
    assert_eq!(members["data"][0]["users"], 2);
    assert_eq!(bad_status, 400);
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("segment: must be a UUID"));
}

#[tokio::test]
async fn exports_are_pseudonymized_for_roles_without_personal_data_and_audited() {
    let app = TestApp::spawn().await;
    let admin = app.create_key("admin").await;
    let marketer = app.create_key("marketer").await;
    events(
        &app,
        &[
            ("alice@example.com", "purchase", 10.0),
            ("bob", "purchase", 20.0),
            ("bob", "refund", 5.0),
        ],
    )
    .await;
    let (id, _) = create_segment(
        &app,
        &marketer,
        json!({"name": "buyers", "criteria": buyers(1)}),
    )
    .await;
    let export = |key: String, body: Value| {
        let app = &app;
        let id = id.clone();
        async move {
            call(
                app,
                reqwest::Method::POST,
                &format!("/v1/segments/{id}/export"),
                &key,
                Some(body),
            )
            .await
        }
    };

    let (status, _, raw) = export(
        admin.clone(),
        json!({"format": "csv", "attributes": ["platform", "events", "revenue"]}),
    )
    .await;
    let (_, _, hashed) = export(
        marketer.clone(),
        json!({"format": "csv", "attributes": ["events"]}),
    )
    .await;
    let (_, _, hashed_again) = export(marketer.clone(), json!({"format": "csv"})).await;
    let (_, _, json_lines) = export(
        marketer.clone(),
        json!({"format": "json", "attributes": ["revenue", "last_seen"]}),
    )
    .await;
    let (bad_status, bad, _) = export(marketer.clone(), json!({"attributes": ["email"]})).await;
    let (_, listed, _) = call(
        &app,
        reqwest::Method::GET,
        &format!("/v1/segments/{id}/users"),
        &marketer,
        None,
    )
    .await;

    assert_eq!(status, 200, "{raw}");
    let lines: Vec<&str> = raw.lines().collect();
    assert_eq!(lines[0], "\"user\",\"platform\",\"events\",\"revenue\"");
    assert_eq!(lines[1], "\"alice@example.com\",\"web\",1,10");
    assert_eq!(lines[2], "\"bob\",\"web\",2,15");
    assert!(
        !hashed.contains("alice") && !hashed.contains("bob"),
        "{hashed}"
    );
    let pseudonyms: Vec<&str> = hashed
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(pseudonyms.len(), 2);
    assert!(pseudonyms.iter().all(|p| p.len() == 66), "{pseudonyms:?}");
    assert!(
        hashed_again
            .lines()
            .skip(1)
            .all(|l| !pseudonyms.contains(&l)),
        "a fresh salt per export"
    );
    let first: Value = serde_json::from_str(json_lines.lines().next().unwrap()).unwrap();
    assert!(first["user"].as_str().unwrap().len() == 64 && first.get("revenue").is_some());
    assert_eq!(
        (
            bad_status,
            bad["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("attributes[0]: unknown attribute")
        ),
        (400, true)
    );
    assert_eq!(listed["pseudonymized"], true);
    assert!(listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u.as_str().unwrap().len() == 64));

    let pool = app.postgres().await;
    let mut audited = Vec::new();
    for _ in 0..50 {
        audited = sqlx::query_as::<_, (String, Option<i64>, Option<i64>)>(
            "SELECT role, rows, bytes FROM audit_log WHERE action = 'segment.export' ORDER BY at",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        if audited.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(audited.len(), 4, "every export is audited: {audited:?}");
    assert_eq!(
        audited[0],
        ("admin".to_string(), Some(2), Some(raw.len() as i64))
    );
}

#[tokio::test]
async fn static_segments_keep_their_membership_and_invalid_criteria_name_the_path() {
    let app = TestApp::spawn().await;
    let analyst = app.create_key("analyst").await;
    let support = app.create_key("support").await;
    events(&app, &[("a", "purchase", 10.0)]).await;
    let (id, frozen) = create_segment(
        &app,
        &analyst,
        json!({"name": "launch buyers", "kind": "static", "criteria": buyers(1)}),
    )
    .await;
    events(&app, &[("b", "purchase", 10.0)]).await;
    let (refresh_status, refresh, _) = call(
        &app,
        reqwest::Method::POST,
        &format!("/v1/segments/{id}/refresh"),
        &analyst,
        None,
    )
    .await;
    let (_, injected, text) = call(&app, reqwest::Method::POST, "/v1/segments", &analyst,
        Some(json!({"name": "x", "criteria": {"event": {"name": "purchase' OR 1=1 --", "where": [{"property": "x') OR ('1", "value": "y"}]}}}))).await;
    let (invalid_status, invalid, _) = call(&app, reqwest::Method::POST, "/v1/segments", &analyst,
        Some(json!({"name": "x", "criteria": {"or": [{"event": {"name": "a"}}, {"revenue": {"min": "lots"}}]}}))).await;
    let (denied_status, _, _) = call(
        &app,
        reqwest::Method::POST,
        "/v1/segments",
        &support,
        Some(json!({"name": "x", "criteria": buyers(1)})),
    )
    .await;
    let (schedule_status, schedule, _) = call(
        &app,
        reqwest::Method::POST,
        "/v1/segments",
        &analyst,
        Some(
            json!({"name": "x", "kind": "static", "schedule": "* * * * *", "criteria": buyers(1)}),
        ),
    )
    .await;

    assert_eq!(frozen["size"], 1);
    assert_eq!(refresh_status, 400);
    assert!(refresh["error"]["message"]
        .as_str()
        .unwrap()
        .contains("static segment"));
    assert_eq!(
        injected["size"], 0,
        "values are bound, never spliced: {text}"
    );
    assert_eq!(invalid_status, 400);
    assert_eq!(
        invalid["error"]["message"],
        "criteria.or[1].revenue.min: must be a number"
    );
    assert_eq!(denied_status, 400);
    assert_eq!(schedule_status, 400);
    assert!(schedule["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("schedule:"));
}

#[tokio::test]
async fn scheduled_refreshes_pick_up_new_events() {
    let app = TestApp::spawn_with(|s| s.scheduler.tick_ms = 200).await;
    let analyst = app.create_key("analyst").await;
    events(&app, &[("a", "purchase", 10.0)]).await;
    let (id, _) = create_segment(
        &app,
        &analyst,
        json!({"name": "buyers", "schedule": "* * * * * *", "criteria": buyers(1)}),
    )
    .await;
    events(&app, &[("b", "purchase", 10.0)]).await;

    let mut size = 0;
    for _ in 0..40 {
        let (_, shown, _) = call(
            &app,
            reqwest::Method::GET,
            &format!("/v1/segments/{id}"),
            &analyst,
            None,
        )
        .await;
        size = shown["size"].as_i64().unwrap_or(0);
        if size == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(size, 2, "a scheduled refresh saw the new buyer");
}

#[tokio::test]
async fn dau_revenue_and_retention_compare_a_segment_with_everyone() {
    let app = TestApp::spawn().await;
    let admin = app.create_key("admin").await;
    events(&app, TWO_BUYERS).await;
    let (id, _) = create_segment(
        &app,
        &admin,
        json!({"name": "buyers", "criteria": buyers(1)}),
    )
    .await;
    let range = "from=today-1d&to=today";
    // A template's answer for everyone and for the segment's members: the sum of `column`.
    let both = |template: &'static str, column: &'static str, extra: &'static str| {
        let (app, admin, id) = (&app, &admin, &id);
        async move {
            let mut sums = Vec::new();
            for segment in [String::new(), format!("&segment={id}")] {
                let path = format!("/v1/queries/{template}?{range}{extra}{segment}");
                let (status, body, text) =
                    call(app, reqwest::Method::GET, &path, admin, None).await;
                assert_eq!(status, 200, "{path}: {text}");
                let sum: f64 = body["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| match &r[column] {
                        Value::String(s) => s.parse::<f64>().unwrap(),
                        other => other.as_f64().unwrap_or(0.0),
                    })
                    .sum();
                sums.push(sum);
            }
            sums
        }
    };
    assert_eq!(both("dau", "users", "").await, vec![3.0, 2.0]);
    assert_eq!(both("revenue", "revenue", "").await, vec![35.0, 35.0]);
    assert_eq!(
        both("revenue", "arpu", "").await,
        vec![35.0 / 3.0, 35.0 / 2.0],
        "revenue per active user of the segment"
    );
    assert_eq!(
        both("retention", "cohort_size", "&periods=1").await,
        vec![3.0, 2.0]
    );
}
