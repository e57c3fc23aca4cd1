//! Experiments: definitions validated field by field, stored and shown like every definition;
//! results over generated exposures with a planted effect, checked against counts made here from
//! the generated data; users exposed to several variants excluded; a sample-ratio mismatch
//! flagged.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{call, TestApp};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

fn definition(name: &str) -> Value {
    json!({
        "name": name,
        "hypothesis": "a green button sells more",
        "variants": [{"key": "control"}, {"key": "green"}],
        "start": start().to_rfc3339(),
        "metrics": [
            {"name": "purchase", "kind": "conversion", "event": "purchase"},
            {"name": "revenue", "kind": "mean", "event": "purchase", "property": "revenue"}
        ],
        "sequential": true,
        "cuped": true
    })
}

fn exposure(user: &str, experiment: &str, variant: &str, at: DateTime<Utc>) -> Value {
    json!({"event": "$experiment_exposure", "user_id": user, "timestamp": at.to_rfc3339(),
           "properties": {"experiment": experiment, "variant": variant}})
}

fn purchase(user: &str, amount: f64, at: DateTime<Utc>) -> Value {
    json!({"event": "purchase", "user_id": user, "timestamp": at.to_rfc3339(),
           "properties": {"amount": amount, "currency": "USD"}})
}

async fn load(app: &TestApp, events: &[Value]) {
    chgate::cli::check::live::load_events_into(&app.clickhouse(), app.settings(), events)
        .await
        .unwrap();
}

/// Creates an experiment as `key`: its id.
async fn create(app: &TestApp, key: &str, body: Value) -> String {
    let (status, created, text) = call(app, Method::POST, "/v1/experiments", key, Some(body)).await;
    assert_eq!(status, 201, "{text}");
    created["id"].as_str().unwrap().to_string()
}

/// Saves a metric as `key`: its id.
async fn save_metric(app: &TestApp, key: &str, body: Value) -> String {
    let (status, created, text) = call(app, Method::POST, "/v1/metrics", key, Some(body)).await;
    assert_eq!(status, 201, "{text}");
    created["id"].as_str().unwrap().to_string()
}

async fn results(app: &TestApp, key: &str, id: &str) -> Value {
    let path = format!("/v1/experiments/{id}/results");
    let (status, body, text) = call(app, Method::GET, &path, key, None).await;
    assert_eq!(status, 200, "{text}");
    body
}

/// Per variant: users, converters and their revenue in the window, as generated.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Planted {
    users: u64,
    converters: u64,
    revenue: f64,
}

/// `users` per variant exposed to `experiment` from `start()`, converting at `rates`; some with
/// purchases before exposure (for CUPED); `twice` more users exposed to both variants.
fn generate(
    seed: u64,
    experiment: &str,
    users: [u64; 2],
    rates: [f64; 2],
    twice: u64,
) -> (Vec<Value>, [Planted; 2]) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    let mut planted = [Planted::default(); 2];
    for (v, variant) in ["control", "green"].into_iter().enumerate() {
        for u in 0..users[v] {
            let user = format!("{variant}-{u}");
            let exposed = start() + Duration::minutes(rng.random_range(0..7 * 24 * 60));
            events.push(exposure(&user, experiment, variant, exposed));
            planted[v].users += 1;
            if rng.random_bool(0.3) {
                let before = exposed - Duration::hours(rng.random_range(1..5 * 24));
                events.push(purchase(&user, rng.random_range(1..50) as f64, before));
            }
            if rng.random_bool(rates[v]) {
                let after = exposed + Duration::hours(rng.random_range(1..10 * 24));
                let amount = rng.random_range(5..100) as f64;
                events.push(purchase(&user, amount, after));
                planted[v].converters += 1;
                planted[v].revenue += amount;
            }
        }
    }
    for u in 0..twice {
        let user = format!("both-{u}");
        events.push(exposure(
            &user,
            experiment,
            "control",
            start() + Duration::hours(1),
        ));
        events.push(exposure(
            &user,
            experiment,
            "green",
            start() + Duration::hours(2),
        ));
        events.push(purchase(&user, 10.0, start() + Duration::hours(3)));
    }
    (events, planted)
}

#[tokio::test]
async fn experiments_are_stored_shown_replaced_and_deleted_and_broken_definitions_name_the_field() {
    let app = TestApp::spawn().await;
    let analyst = app.create_key("analyst").await;
    let marketer = app.create_key("marketer").await;
    let support = app.create_key("support").await;

    let id = create(&app, &analyst, definition("checkout-button")).await;
    let path = format!("/v1/experiments/{id}");
    let (_, shown, _) = call(&app, Method::GET, &path, &analyst, None).await;
    let mut replaced = definition("checkout-button");
    replaced["variants"] = json!([{"key": "control", "weight": 1}, {"key": "green", "weight": 3}]);
    let (put_status, put, put_text) =
        call(&app, Method::PUT, &path, &analyst, Some(replaced)).await;
    let (_, list, _) = call(&app, Method::GET, "/v1/experiments", &analyst, None).await;
    let (marketer_status, _, _) = call(&app, Method::GET, &path, &marketer, None).await;
    let refused = |adjust: fn(&mut Value)| {
        let mut body = definition("broken");
        adjust(&mut body);
        let (app, analyst) = (&app, &analyst);
        async move { call(app, Method::POST, "/v1/experiments", analyst, Some(body)).await }
    };
    let one_variant = refused(|b| b["variants"] = json!([{"key": "control"}])).await;
    let no_property = refused(|b| b["metrics"][1]["property"] = Value::Null).await;
    let wide_window = refused(|b| b["metrics"][0]["window_days"] = json!(91)).await;
    let unknown_field = refused(|b| b["owner"] = json!("me")).await;
    let (not_allowed_status, not_allowed, _) = call(
        &app,
        Method::POST,
        "/v1/experiments",
        &support,
        Some(definition("support")),
    )
    .await;
    // Marketers run experiments of their own.
    create(&app, &marketer, definition("marketing")).await;
    let (deleted, _, _) = call(&app, Method::DELETE, &path, &analyst, None).await;
    let (gone_status, gone, _) = call(&app, Method::GET, &path, &analyst, None).await;

    assert_eq!(shown["name"], "checkout-button");
    assert_eq!(shown["exposure"]["event"], "$experiment_exposure");
    assert_eq!(shown["metrics"][0]["window_days"], 14);
    assert_eq!(put_status, 200, "{put_text}");
    assert_eq!(put["variants"][1]["weight"], 3.0);
    assert_eq!(list["experiments"].as_array().unwrap().len(), 1);
    assert_eq!(
        marketer_status, 404,
        "another caller's experiment is unknown"
    );
    for ((status, body, text), field) in [
        (one_variant, "variants: "),
        (no_property, "metrics[1].property: "),
        (wide_window, "metrics[0].window_days: "),
    ] {
        assert_eq!(status, 400, "{text}");
        assert_eq!(body["error"]["code"], "invalid_experiment");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{field}: {message}");
    }
    assert_eq!(unknown_field.0, 400);
    assert!(
        unknown_field.2.contains("unknown field"),
        "{}",
        unknown_field.2
    );
    assert_eq!(not_allowed_status, 400);
    assert!(
        not_allowed["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("metrics[0]: role \"support\" may not run experiment_results"),
        "{not_allowed}"
    );
    assert_eq!(deleted, 204);
    assert_eq!(
        (gone_status, gone["error"]["code"].clone()),
        (404, json!("unknown_experiment"))
    );
}

#[tokio::test]
async fn a_planted_effect_is_found_over_the_counts_of_the_generated_data_without_double_exposures()
{
    let app = TestApp::spawn().await;
    let analyst = app.create_key("analyst").await;
    let (events, planted) = generate(19, "checkout-button", [2000, 2000], [0.10, 0.14], 7);
    load(&app, &events).await;
    let id = create(&app, &analyst, definition("checkout-button")).await;

    let body = results(&app, &analyst, &id).await;
    let (run_status, run, run_text) = call(
        &app,
        Method::POST,
        &format!("/v1/experiments/{id}/results"),
        &analyst,
        None,
    )
    .await;

    let conversion = &body["metrics"][0];
    for (v, planted) in planted.iter().enumerate() {
        assert_eq!(body["variants"][v]["users"], planted.users, "{body}");
        assert_eq!(conversion["variants"][v]["users"], planted.users);
        assert_eq!(conversion["variants"][v]["converters"], planted.converters);
        let revenue = &body["metrics"][1]["variants"][v];
        assert_eq!(revenue["converters"], planted.converters);
        let mean = revenue["mean"].as_f64().unwrap();
        let expected = planted.revenue / planted.users as f64;
        assert!(
            (mean - expected).abs() < 1e-9 * expected,
            "{mean} vs {expected}"
        );
    }
    assert_eq!(body["excluded_users"], 7);
    assert_eq!(body["reliable"], true, "{body}");
    let green = &conversion["variants"][1];
    let p = green["comparison"]["p_value"].as_f64().unwrap();
    assert!(p < 0.05, "p = {p}");
    assert!(green["comparison"]["absolute_lift"].as_f64().unwrap() > 0.0);
    assert!(
        green["comparison"]["probability_to_beat_control"]
            .as_f64()
            .unwrap()
            > 0.95
    );
    assert!(green["sequential"]["p_value"].as_f64().is_some(), "{green}");
    assert!(
        green["cuped"]["comparison"]["p_value"].as_f64().is_some(),
        "{green}"
    );
    assert!(
        conversion["sample_size"]["users_per_variant"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let revenue = &body["metrics"][1]["variants"][1];
    assert!(
        revenue["comparison"]["p_value"].as_f64().is_some(),
        "{revenue}"
    );
    assert_eq!(run_status, 200, "{run_text}");
    assert_eq!(
        run["result"]["metrics"][0]["variants"],
        conversion["variants"]
    );
}

#[tokio::test]
async fn a_45_55_split_of_a_50_50_design_marks_the_results_unreliable() {
    let app = TestApp::spawn().await;
    let analyst = app.create_key("analyst").await;
    let (events, _) = generate(45, "split", [900, 1100], [0.1, 0.1], 0);
    load(&app, &events).await;
    let id = create(&app, &analyst, definition("split")).await;

    let body = results(&app, &analyst, &id).await;

    assert_eq!(body["reliable"], false, "{body}");
    assert_eq!(body["sample_ratio"]["unreliable"], true);
    assert!(body["sample_ratio"]["p_value"].as_f64().unwrap() < 0.001);
    assert_eq!(body["variants"][0]["users"], 900);
    assert_eq!(body["excluded_users"], 0);
}

/// `chgate seed`'s traffic for a modest population, with the two experiments it runs, defined as
/// it stores them: the planted effect of `checkout_redesign` is found, and the A/A test finds no
/// difference. The A/A check holds for this seed; that A/A tests reject about 5 % of the time over
/// many seeds is checked by the unit tests of the statistics.
#[tokio::test]
async fn the_seeded_experiments_find_the_planted_effect_and_no_difference_in_the_a_a_test() {
    use chgate::cli::seed::{experiments, generate, SeedPlan};
    let app = TestApp::spawn().await;
    let analyst = app.create_key("analyst").await;
    let plan = SeedPlan {
        users: 1500,
        days: 28,
        end_ms: Utc
            .with_ymd_and_hms(2026, 4, 1, 0, 0, 0)
            .unwrap()
            .timestamp_millis(),
        seed: 19,
    };
    let mut events = Vec::new();
    generate(&plan, |e| events.push(e));
    load(&app, &events).await;
    // Both experiments use the same saved metrics.
    let mut saved = Vec::new();
    for metric in experiments::metrics() {
        let id = save_metric(&app, &analyst, json!(metric)).await;
        saved.push(serde_json::from_value(json!({ "metric": id })).unwrap());
    }
    let mut bodies = Vec::new();
    for spec in experiments::definitions(experiments::start_ms(&plan), &saved) {
        let id = create(&app, &analyst, json!(spec)).await;
        bodies.push(results(&app, &analyst, &id).await);
    }

    let comparison = |body: &Value| body["metrics"][0]["variants"][1]["comparison"].clone();
    let (redesign, aa) = (comparison(&bodies[0]), comparison(&bodies[1]));
    for body in &bodies {
        assert_eq!(body["reliable"], true, "{body}");
        assert_eq!(body["excluded_users"], 0, "{body}");
        assert!(
            body["variants"][0]["users"].as_u64().unwrap() > 300,
            "{body}"
        );
    }
    let p = redesign["p_value"].as_f64().unwrap();
    assert!(p < 0.05, "checkout_redesign: p = {p}: {redesign}");
    let lift = redesign["relative_lift"].as_f64().unwrap();
    assert!(lift > 0.0, "{redesign}");
    let p = aa["p_value"].as_f64().unwrap();
    assert!(p > 0.05, "button_color_aa: p = {p}: {aa}");
}

/// A metric saved once serves several experiments and is read when results are computed: a
/// corrected definition shows in every experiment that uses it. It cannot be deleted while one
/// does, and an experiment may only use saved metrics its owner may see.
#[tokio::test]
async fn saved_metrics_are_declared_once_used_by_experiments_and_kept_while_used() {
    let app = TestApp::spawn().await;
    let analyst = app.create_key("analyst").await;
    let other = app.create_key("analyst").await;
    // Two experiments over the same users and purchases.
    let (mut events, planted) = generate(41, "saved-metric", [300, 300], [0.2, 0.4], 0);
    let (copy, _) = generate(41, "saved-metric-copy", [300, 300], [0.2, 0.4], 0);
    events.extend(copy.into_iter().filter(|e| e["event"] != "purchase"));
    load(&app, &events).await;
    let purchase = json!({"name": "purchase", "description": "bought within 14 days",
                          "kind": "conversion", "event": "purchase"});
    let metric = save_metric(&app, &analyst, purchase.clone()).await;
    let mut body = definition("saved-metric");
    body["metrics"] = json!([{ "metric": metric }, {"name": "revenue", "kind": "mean",
                              "event": "purchase", "property": "revenue"}]);
    body["cuped"] = json!(false);
    let first = create(&app, &analyst, body.clone()).await;
    body["name"] = json!("saved-metric-copy");
    let second = create(&app, &analyst, body.clone()).await;

    for id in [&first, &second] {
        let results = results(&app, &analyst, id).await;
        let primary = &results["metrics"][0];
        assert_eq!(primary["name"], "purchase", "{results}");
        for (v, planted) in planted.iter().enumerate() {
            assert_eq!(
                primary["variants"][v]["converters"], planted.converters,
                "{results}"
            );
        }
    }
    let (status, shown, _) = call(
        &app,
        Method::GET,
        &format!("/v1/experiments/{first}"),
        &analyst,
        None,
    )
    .await;
    assert_eq!(
        (status, &shown["metrics"][0]),
        (200, &json!({ "metric": metric }))
    );

    // Corrected once (a purchase the same day only), used by both.
    let mut corrected = purchase.clone();
    corrected["window_days"] = json!(1);
    let path = format!("/v1/metrics/{metric}");
    let (status, _, text) = call(&app, Method::PUT, &path, &analyst, Some(corrected)).await;
    assert_eq!(status, 200, "{text}");
    let (status, listed, _) = call(&app, Method::GET, "/v1/metrics", &analyst, None).await;
    assert_eq!(
        (status, listed["metrics"][0]["window_days"].as_u64()),
        (200, Some(1))
    );
    let path_results = format!("/v1/experiments/{first}/results");
    let response = app
        .client
        .get(app.url(&path_results))
        .bearer_auth(&analyst)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    let fresh: Value = response.json().await.unwrap();
    let converters = fresh["metrics"][0]["variants"][1]["converters"]
        .as_u64()
        .unwrap();
    assert!(converters < planted[1].converters, "{fresh}");

    // In use: kept, and the answer names the experiments.
    let (status, refused, text) = call(&app, Method::DELETE, &path, &analyst, None).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("metric_in_use")),
        "{text}"
    );
    assert!(text.contains("saved-metric-copy"), "{text}");

    // Another caller's metric, or none: the field says which entry.
    let mut stranger = definition("stranger");
    stranger["metrics"] = json!([{ "metric": metric }]);
    let (status, refused, text) = call(
        &app,
        Method::POST,
        "/v1/experiments",
        &other,
        Some(stranger.clone()),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("metrics[0].metric: "),
        "{text}"
    );
    stranger["metrics"] = json!([{ "metric": "6f1c2f7e-0000-4000-8000-000000000000" }]);
    let (status, _, text) = call(
        &app,
        Method::POST,
        "/v1/experiments",
        &analyst,
        Some(stranger),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    // Two metrics of one name.
    body["name"] = json!("twice");
    body["metrics"] = json!([{ "metric": metric }, {"name": "purchase", "kind": "conversion", "event": "purchase"}]);
    let (status, refused, text) =
        call(&app, Method::POST, "/v1/experiments", &analyst, Some(body)).await;
    assert_eq!(status, 400, "{text}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("metrics[1].name: "),
        "{text}"
    );
    // A metric that breaks a rule, and saved metrics do not run.
    let (status, refused, _) = call(
        &app,
        Method::POST,
        "/v1/metrics",
        &analyst,
        Some(json!({"name": "m", "kind": "mean", "event": "purchase"})),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_metric"))
    );
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("property: "));
    let (status, _, _) = call(&app, Method::POST, &format!("{path}/run"), &analyst, None).await;
    assert_eq!(status, 404);

    for id in [&first, &second] {
        let (status, _, _) = call(
            &app,
            Method::DELETE,
            &format!("/v1/experiments/{id}"),
            &analyst,
            None,
        )
        .await;
        assert_eq!(status, 204);
    }
    let (status, _, text) = call(&app, Method::DELETE, &path, &analyst, None).await;
    assert_eq!(status, 204, "{text}");
}

/// Alerts and reports watch an experiment instead of a template: an alert fires when the primary
/// metric's difference is significant, another reads the sample-ratio check; a report's file is
/// the results table, a row per metric and variant.
#[tokio::test]
async fn alerts_and_reports_watch_an_experiment() {
    let app = TestApp::spawn().await;
    let analyst = app.create_key("analyst").await;
    let other = app.create_key("analyst").await;
    let (events, planted) = generate(43, "watched", [400, 400], [0.2, 0.4], 0);
    load(&app, &events).await;
    let mut body = definition("watched");
    body["cuped"] = json!(false);
    let id = create(&app, &analyst, body).await;
    let shown = results(&app, &analyst, &id).await;
    let p_value = shown["metrics"][0]["variants"][1]["comparison"]["p_value"]
        .as_f64()
        .unwrap();
    assert!(p_value < 0.05, "{shown}");

    let alert = |name: &str, column: &str, op: &str, threshold: f64| {
        json!({"name": name, "experiment": id, "params": {"metric": "primary"},
               "condition": {"column": column, "op": op, "threshold": threshold, "aggregate": "min"},
               "schedule": "0 0 1 1 *",
               "channels": [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}]})
    };
    let evaluate = |alert: Value| {
        let app = &app;
        let analyst = &analyst;
        async move {
            let (status, created, text) =
                call(app, Method::POST, "/v1/alerts", analyst, Some(alert)).await;
            assert_eq!(status, 201, "{text}");
            let path = format!("/v1/alerts/{}/evaluate", created["id"].as_str().unwrap());
            let (status, evaluated, text) = call(app, Method::POST, &path, analyst, None).await;
            assert_eq!(status, 200, "{text}");
            evaluated["result"].clone()
        }
    };
    let significant = evaluate(alert("watched is significant", "p_value", "<", 0.05)).await;
    assert_eq!(significant["state"], "firing", "{significant}");
    assert!((significant["value"].as_f64().unwrap() - p_value).abs() < 1e-12);
    let mismatch = evaluate(alert("watched split", "reliable", "<", 1.0)).await;
    assert_eq!(
        (&mismatch["state"], &mismatch["value"]),
        (&json!("ok"), &json!(1.0)),
        "{mismatch}"
    );

    let refused = |body: Value, key: String, field: &'static str| {
        let app = &app;
        async move {
            let (status, _, text) = call(app, Method::POST, "/v1/alerts", &key, Some(body)).await;
            assert_eq!(status, 400, "{text}");
            assert!(text.contains(&format!("\"{field}: ")), "{field}: {text}");
        }
    };
    refused(
        alert("a", "max_amount", ">", 1.0),
        analyst.clone(),
        "condition.column",
    )
    .await;
    let mut both = alert("b", "p_value", "<", 0.05);
    both["template"] = json!("dau");
    refused(both, analyst.clone(), "template").await;
    let mut period = alert("c", "p_value", "<", 0.05);
    period["params"] = json!({"from": "today-7d"});
    refused(period, analyst.clone(), "params.from").await;
    refused(
        alert("d", "p_value", "<", 0.05),
        other.clone(),
        "experiment",
    )
    .await;

    let report = json!({"name": "watched results", "experiment": id, "format": "csv"});
    let (status, created, text) =
        call(&app, Method::POST, "/v1/reports", &analyst, Some(report)).await;
    assert_eq!(status, 201, "{text}");
    let path = format!("/v1/reports/{}/run", created["id"].as_str().unwrap());
    let (status, ran, text) = call(&app, Method::POST, &path, &analyst, None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(ran["result"]["rows"], 4, "{ran}");
    let csv = app
        .client
        .get(app.url(ran["result"]["download"].as_str().unwrap()))
        .bearer_auth(&analyst)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("metric,primary,kind,variant,users,converters,rate"),
        "{csv}"
    );
    let green = lines
        .iter()
        .find(|l| l.starts_with("purchase,1,conversion,green,"))
        .expect("the primary metric's treatment row");
    let converters: u64 = green.split(',').nth(5).unwrap().parse().unwrap();
    assert_eq!(converters, planted[1].converters, "{csv}");
}
