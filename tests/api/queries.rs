//! Template endpoints: catalog, parameters, roles, formats, deprecation, OpenAPI, reloads.

use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::{TestApp, TestDatabases};

async fn seed_dau(app: &TestApp) {
    let events = json!([
        {"event": "open", "user_id": "a", "platform": "web", "timestamp": "2026-03-01T10:00:00Z"},
        {"event": "open", "user_id": "b", "platform": "ios", "timestamp": "2026-03-01T11:00:00Z"},
        {"event": "open", "user_id": "a", "platform": "web", "timestamp": "2026-03-02T10:00:00Z"}
    ]);
    // Historic events go through the import path; a live batch would reject them as too old.
    chgate::cli::check::live::load_events_into(
        &app.clickhouse(),
        app.settings(),
        events.as_array().unwrap(),
    )
    .await
    .unwrap();
}

async fn get(app: &TestApp, key: &str, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_catalog_lists_every_shipped_template_with_params_and_examples() {
    let app = TestApp::spawn().await;
    let key = app.create_key("analyst").await;

    let catalog: Value = get(&app, &key, "/v1/catalog").await.json().await.unwrap();
    let detail: Value = get(&app, &key, "/v1/catalog/funnel")
        .await
        .json()
        .await
        .unwrap();

    let names: Vec<&str> = catalog["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for name in [
        "dau",
        "active_users",
        "new_users",
        "event_trends",
        "funnel",
        "retention",
        "paths",
        "revenue",
        "ltv",
        "top_items",
        "geo",
        "ops_usage",
        "user_profile",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let v1 = &detail["versions"][0];
    assert_eq!(v1["params"][0]["name"], "steps");
    assert_eq!(v1["params"][0]["type"], "Array(String)");
    assert!(v1["examples"][0]["call"]
        .as_str()
        .unwrap()
        .starts_with("GET /v1/queries/funnel/v1?steps=game_view%2Cadd_to_cart"));
    assert_eq!(get(&app, &key, "/v1/catalog/nope").await.status(), 404);
}

#[tokio::test]
async fn a_template_answers_with_its_json_shape_and_bound_parameters() {
    let app = TestApp::spawn().await;
    seed_dau(&app).await;
    let key = app.create_key("analyst").await;

    let response = get(&app, &key, "/v1/queries/dau?from=2026-03-01&to=2026-03-02").await;
    let pinned = get(
        &app,
        &key,
        "/v1/queries/dau/v1?from=2026-03-01&to=2026-03-01&platform=ios",
    )
    .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["query"], "dau");
    assert_eq!(body["version"], 1);
    assert_eq!(
        body["meta"],
        json!([{"name": "day", "type": "Date"}, {"name": "users", "type": "UInt64"}])
    );
    assert_eq!(
        body["data"],
        json!([{"day": "2026-03-01", "users": 2}, {"day": "2026-03-02", "users": 1}])
    );
    assert_eq!(body["rows"], 2);
    assert!(body["statistics"]["elapsed_ms"].as_f64().unwrap() > 0.0);
    assert!(body["statistics"]["rows_read"].is_u64());
    let pinned: Value = pinned.json().await.unwrap();
    assert_eq!(pinned["data"], json!([{"day": "2026-03-01", "users": 1}]));
}

#[tokio::test]
async fn csv_tsv_and_ndjson_are_streamed_in_their_formats() {
    let app = TestApp::spawn().await;
    seed_dau(&app).await;
    let key = app.create_key("analyst").await;
    let path = "/v1/queries/dau?from=2026-03-01&to=2026-03-02";

    let csv = get(&app, &key, &format!("{path}&format=csv")).await;
    let ndjson = get(&app, &key, &format!("{path}&format=ndjson")).await;
    let tsv = app
        .client
        .get(app.url(path))
        .bearer_auth(&key)
        .header("Accept", "text/tab-separated-values")
        .send()
        .await
        .unwrap();

    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        csv.text().await.unwrap(),
        "\"day\",\"users\"\n\"2026-03-01\",2\n\"2026-03-02\",1\n"
    );
    assert_eq!(
        ndjson.text().await.unwrap(),
        "{\"day\":\"2026-03-01\",\"users\":2}\n{\"day\":\"2026-03-02\",\"users\":1}\n"
    );
    assert_eq!(
        tsv.text().await.unwrap(),
        "day\tusers\n2026-03-01\t2\n2026-03-02\t1\n"
    );
}

#[tokio::test]
async fn parameters_arrive_by_query_string_arrays_or_json_body() {
    let app = TestApp::spawn().await;
    let key = app.create_key("analyst").await;
    let from = "2026-01-01 00:00:00";
    let to = "2026-01-02 00:00:00";

    let repeated = get(
        &app,
        &key,
        &format!("/v1/queries/event_trends?events=a&events=b&from={from}&to={to}"),
    )
    .await;
    let body = app
        .client
        .post(app.url("/v1/queries/event_trends"))
        .bearer_auth(&key)
        .json(&json!({"events": ["a", "b"], "from": from, "to": to, "format": "json"}))
        .send()
        .await
        .unwrap();

    assert_eq!(repeated.status(), 200);
    assert_eq!(body.status(), 200);
}

#[tokio::test]
async fn bad_parameters_get_400_naming_the_parameter_and_the_rule() {
    let app = TestApp::spawn().await;
    let key = app.create_key("analyst").await;
    let cases = [
        ("/v1/queries/dau?from=2026-01-01", "to: is required"),
        (
            "/v1/queries/dau?from=2026-01-01&to=2026-01-02&limit=5",
            "limit: unknown parameter",
        ),
        (
            "/v1/queries/dau?from=yesterday&to=2026-01-02",
            "from: \"yesterday\" is not a date",
        ),
        (
            "/v1/queries/dau?from=2026-01-01&to=2026-01-02&platform=tv",
            "platform: must be one of",
        ),
        (
            "/v1/queries/retention?from=2026-01-01&to=2026-01-02&periods=13",
            "periods: must be at most 12",
        ),
        (
            "/v1/queries/funnel?steps=a&from=2026-01-01&to=2026-01-02",
            "steps: must have at least 2 items",
        ),
        (
            "/v1/queries/geo?from=2026-01-01&to=2026-01-02&limit=-1",
            "limit: must be a non-negative integer",
        ),
        (
            "/v1/queries/dau?from=2026-01-01&to=2026-01-02&format=xml",
            "format: must be one of",
        ),
        (
            "/v1/queries/dau?from=2026-01-01&from=2026-01-02&to=2026-01-03",
            "from: given more than once",
        ),
    ];
    for (path, rule) in cases {
        let response = get(&app, &key, path).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(rule), "{path}: {message}");
    }
}

#[tokio::test]
async fn roles_not_listed_by_a_template_get_403_and_unknown_templates_404() {
    let app = TestApp::spawn().await;
    let ingest = app.create_key("ingest").await;
    let analyst = app.create_key("analyst").await;

    let denied = get(
        &app,
        &ingest,
        "/v1/queries/dau?from=2026-01-01&to=2026-01-02",
    )
    .await;
    let unknown = get(&app, &analyst, "/v1/queries/nope").await;
    let version = get(
        &app,
        &analyst,
        "/v1/queries/dau/v9?from=2026-01-01&to=2026-01-02",
    )
    .await;

    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["code"], "template_not_allowed");
    assert_eq!(unknown.status(), 404);
    assert_eq!(version.status(), 404);
}

const DAU_V1: &str = "/*---\ndescription = \"old\"\ncolumns = { n = \"UInt8\" }\n[deprecated]\nsunset = \"2027-01-31\"\nsuccessor = \"v2\"\n---*/\nSELECT toUInt8(1) AS n\n";
const DAU_V2: &str = "/*---\ndescription = \"new\"\n---*/\nSELECT toUInt8(2) AS n\n";

fn write_catalog(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

#[tokio::test]
async fn deprecated_versions_answer_with_deprecation_sunset_and_successor_link() {
    let dir = tempfile::tempdir().unwrap();
    write_catalog(
        dir.path(),
        &[("simple/v1.sql", DAU_V1), ("simple/v2.sql", DAU_V2)],
    );
    let catalog_dir = dir.path().to_path_buf();
    let app = TestApp::spawn_with(|s| s.catalog.dir = catalog_dir).await;
    let key = app.create_key("analyst").await;

    let old = get(&app, &key, "/v1/queries/simple/v1").await;
    let latest = get(&app, &key, "/v1/queries/simple").await;

    assert_eq!(old.headers()["deprecation"], "true");
    assert_eq!(old.headers()["sunset"], "Sun, 31 Jan 2027 00:00:00 GMT");
    assert_eq!(
        old.headers()["link"],
        "</v1/queries/simple/v2>; rel=\"successor-version\""
    );
    assert!(latest.headers().get("deprecation").is_none());
    let body: Value = latest.json().await.unwrap();
    assert_eq!(
        (body["version"].as_u64(), body["data"][0]["n"].as_u64()),
        (Some(2), Some(2))
    );
}

#[tokio::test]
async fn a_broken_template_stops_the_start_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write_catalog(
        dir.path(),
        &[
            ("ok/v1.sql", DAU_V2),
            (
                "bad/v1.sql",
                "/*---\ndescription = \"x\"\n---*/\nSELECT 1;\nDROP TABLE events\n",
            ),
        ],
    );
    let mut databases = TestDatabases::migrated().await;
    databases.settings.catalog.dir = dir.path().to_path_buf();

    let error = chgate::Application::build(databases.settings.clone())
        .await
        .err()
        .unwrap();

    let message = format!("{error:#}");
    assert!(
        message.contains(&format!("{}:4", dir.path().join("bad/v1.sql").display())),
        "{message}"
    );
    assert!(message.contains("exactly one statement"), "{message}");
}

#[tokio::test]
async fn a_reload_with_a_broken_template_keeps_the_previous_catalog() {
    let dir = tempfile::tempdir().unwrap();
    write_catalog(dir.path(), &[("simple/v1.sql", DAU_V2)]);
    let handle = chgate::catalog::CatalogHandle::new(
        chgate::catalog::Catalog::load(dir.path(), "analytics").unwrap(),
        "analytics",
    );

    write_catalog(
        dir.path(),
        &[(
            "simple/v2.sql",
            "/*---\ndescription = \"x\"\n---*/\nSELECT * FROM system.users\n",
        )],
    );
    let rejected = handle.reload();
    write_catalog(dir.path(), &[("simple/v2.sql", DAU_V2)]);
    let accepted = handle.reload();

    let errors = rejected.unwrap_err();
    assert!(
        errors[0]
            .to_string()
            .contains("system.users is not allowed"),
        "{}",
        errors[0]
    );
    assert_eq!(accepted.unwrap(), 2);
    assert_eq!(handle.get().latest_version("simple"), Some(2));
}

#[tokio::test]
async fn the_openapi_document_has_an_operation_per_version_and_the_docs_page_lists_templates() {
    let app = TestApp::spawn().await;

    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let docs = app.get("/docs").await.text().await.unwrap();

    assert_eq!(document["openapi"], "3.0.3");
    let funnel = &document["paths"]["/v1/queries/funnel/v1"]["get"];
    assert_eq!(funnel["operationId"], "funnel_v1");
    let steps = funnel["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "steps")
        .unwrap();
    assert_eq!(steps["schema"]["minItems"], 2);
    assert_eq!(
        funnel["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["data"]
            ["items"]["properties"]["users"]["type"],
        "integer"
    );
    assert!(document["paths"]["/v1/queries/dau"].is_object());
    assert!(docs.contains("<h2 id=\"retention\">retention</h2>"));
    assert!(
        !docs.contains("<script"),
        "works offline, no external assets"
    );
}
