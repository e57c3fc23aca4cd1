//! Reports: definitions validated against the template and the role, runs on request and on
//! schedule, files in every format (XLSX read back, PDF rendered to an image), webhook delivery,
//! downloads, ownership.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{call, load_reference_events, TestApp};

/// What a webhook received: content type, report id header, body.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A local webhook: `/ok` records and answers 200, `/down` answers 503.
async fn webhook() -> (Received, String) {
    let received: Received = Arc::default();
    async fn ok(
        State(r): State<Received>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        r.lock().unwrap().push((
            header("content-type"),
            header("x-chgate-report"),
            body.to_vec(),
        ));
        StatusCode::OK
    }
    let router = axum::Router::new()
        .route("/ok", axum::routing::post(ok))
        .route(
            "/down",
            axum::routing::post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .with_state(received.clone());
    (received, crate::helpers::serve(router).await)
}

async fn reporting_app() -> TestApp {
    TestApp::spawn_with(|s| {
        s.alerts.retry_base_ms = 20;
        s.scheduler.tick_ms = 200;
    })
    .await
}

async fn create(app: &TestApp, key: &str, spec: Value) -> String {
    let (status, body, text) = call(app, Method::POST, "/v1/reports", key, Some(spec)).await;
    assert_eq!(status, 201, "{text}");
    body["id"].as_str().unwrap().to_string()
}

/// Runs the report now: the run's result.
async fn run(app: &TestApp, key: &str, id: &str) -> Value {
    let (status, body, text) = call(
        app,
        Method::POST,
        &format!("/v1/reports/{id}/run"),
        key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    body["result"].clone()
}

async fn download(app: &TestApp, key: &str, result: &Value) -> (String, String, Vec<u8>) {
    let response = app
        .client
        .get(app.url(result["download"].as_str().expect("a stored file")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_string();
    let (content_type, disposition) = (header("content-type"), header("content-disposition"));
    (
        content_type,
        disposition,
        response.bytes().await.unwrap().to_vec(),
    )
}

#[tokio::test]
async fn an_xlsx_report_over_a_relative_period_has_typed_cells_matching_the_template() {
    let app = reporting_app().await;
    load_reference_events(&app).await;
    let analyst = app.create_key("analyst").await;
    let id = create(
        &app,
        &analyst,
        json!({"name": "Weekly DAU", "template": "dau", "period": "last_7_days", "format": "xlsx"}),
    )
    .await;
    let result = run(&app, &analyst, &id).await;
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (today - chrono::Days::new(7), today - chrono::Days::new(1));
    assert_eq!(
        result["params"],
        json!({"from": from.to_string(), "to": to.to_string()})
    );
    assert_eq!(result["rows"], 7);

    let (content_type, disposition, bytes) = download(&app, &analyst, &result).await;
    assert_eq!(
        content_type,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    assert!(
        disposition.contains("weekly-dau-") && disposition.ends_with(".xlsx\""),
        "{disposition}"
    );

    use calamine::{Data, Reader as _};
    let mut workbook: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).unwrap();
    let data = workbook.worksheet_range("Data").unwrap();
    let rows: Vec<&[Data]> = data.rows().collect();
    assert_eq!(
        rows[0],
        [Data::String("day".into()), Data::String("users".into())]
    );
    assert_eq!(rows.len(), 8);
    // The same numbers as the template answers over its API.
    let (_, expected, _) = call(
        &app,
        Method::GET,
        &format!("/v1/queries/dau?from={from}&to={to}"),
        &analyst,
        None,
    )
    .await;
    for (row, want) in rows[1..].iter().zip(expected["data"].as_array().unwrap()) {
        let Data::DateTime(day) = &row[0] else {
            panic!("the day is a date cell: {:?}", row[0])
        };
        assert_eq!(
            day.as_datetime().unwrap().date().to_string(),
            want["day"].as_str().unwrap()
        );
        let users: f64 = want["users"]
            .as_str()
            .map_or_else(|| want["users"].as_f64().unwrap(), |s| s.parse().unwrap());
        assert_eq!(row[1], Data::Float(users), "users is a number cell");
    }
    assert!(
        rows[1..].iter().any(|r| r[1] != Data::Float(0.0)),
        "there were users"
    );
    let about = workbook.worksheet_range("Report").unwrap();
    let text: Vec<String> = about.cells().map(|(_, _, c)| c.to_string()).collect();
    assert!(text.contains(&"Weekly DAU".to_string()), "{text:?}");
    assert!(text.contains(&"dau v1".to_string()), "{text:?}");

    let (_, runs, _) = call(
        &app,
        Method::GET,
        &format!("/v1/reports/{id}/runs"),
        &analyst,
        None,
    )
    .await;
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0]["status"].as_str(), runs[0]["trigger"].as_str()),
        (Some("ok"), Some("manual"))
    );
    assert_eq!(runs[0]["rows"], 7);
}

/// A binary PPM (what `pdftoppm` writes): width, height, RGB pixels.
fn ppm(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8(bytes[start..at].to_vec()).unwrap());
    }
    assert_eq!(fields[0], "P6");
    let (w, h) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    (w, h, bytes[at + 1..].to_vec())
}

fn pixels_near(rgb: &[u8], color: (u8, u8, u8)) -> usize {
    rgb.chunks(3)
        .filter(|p| {
            p[0].abs_diff(color.0) < 30
                && p[1].abs_diff(color.1) < 30
                && p[2].abs_diff(color.2) < 30
        })
        .count()
}

#[tokio::test]
async fn a_pdf_report_has_its_title_parameters_table_and_a_chart_of_the_main_series() {
    let app = reporting_app().await;
    load_reference_events(&app).await;
    // More views than purchases, so that the two lines of the chart part.
    let now = chrono::Utc::now();
    let views: Vec<Value> = (0..60)
        .map(|i| {
            json!({"event": "game_view", "user_id": format!("v-{i}"), "platform": "web",
                        "timestamp": (now - chrono::Duration::hours(i)).to_rfc3339()})
        })
        .collect();
    chgate::cli::check::live::load_events_into(&app.clickhouse(), app.settings(), &views)
        .await
        .unwrap();
    let analyst = app.create_key("analyst").await;
    let id = create(
        &app,
        &analyst,
        json!({"name": "Views and purchases", "description": "Daily, by event",
               "template": "event_trends", "period": "last_7_days",
               "params": {"events": ["game_view", "purchase"]}, "format": "pdf"}),
    )
    .await;
    let result = run(&app, &analyst, &id).await;
    let (content_type, _, bytes) = download(&app, &analyst, &result).await;
    assert_eq!(content_type, "application/pdf");
    assert!(bytes.starts_with(b"%PDF-"));

    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("report.pdf");
    std::fs::write(&pdf, &bytes).unwrap();
    let text = std::process::Command::new("pdftotext")
        .args(["-layout".as_ref(), pdf.as_os_str(), "-".as_ref()])
        .output()
        .expect("pdftotext (poppler-utils) runs");
    let text = String::from_utf8_lossy(&text.stdout);
    for expected in [
        "Views and purchases",
        "Daily, by event",
        "event_trends v1",
        "period",
        "events",
        "users",
        "game_view",
    ] {
        assert!(text.contains(expected), "{expected:?} is printed:\n{text}");
    }

    let rendered = std::process::Command::new("pdftoppm")
        .args([
            "-r".as_ref(),
            "50".as_ref(),
            "-f".as_ref(),
            "1".as_ref(),
            "-l".as_ref(),
            "1".as_ref(),
            pdf.as_os_str(),
            dir.path().join("page").as_os_str(),
        ])
        .status()
        .expect("pdftoppm (poppler-utils) runs");
    assert!(rendered.success());
    let image = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "ppm"))
        .expect("page 1 is rendered");
    let (w, h, rgb) = ppm(&std::fs::read(image).unwrap());
    assert!(w > h, "A4 landscape");
    let ink = rgb.chunks(3).filter(|p| p.iter().any(|c| *c < 200)).count();
    assert!(ink > w * h / 100, "the page is not blank");
    // The two series of the chart, in the first two colours of the palette.
    let blue = pixels_near(&rgb, (31, 119, 180));
    let orange = pixels_near(&rgb, (255, 127, 14));
    assert!(
        blue > 150 && orange > 150,
        "chart lines: blue {blue}, orange {orange}"
    );
}

#[tokio::test]
async fn csv_and_json_reports_are_delivered_to_webhooks_and_a_failing_webhook_fails_the_run() {
    let app = reporting_app().await;
    load_reference_events(&app).await;
    let (received, hook) = webhook().await;
    let analyst = app.create_key("analyst").await;
    let id = create(
        &app,
        &analyst,
        json!({"name": "Revenue", "template": "revenue", "period": "last_30_days", "format": "csv",
               "delivery": {"store": false, "webhook": format!("{hook}/ok")}}),
    )
    .await;
    let result = run(&app, &analyst, &id).await;
    assert!(result.get("download").is_none(), "not stored: {result}");
    assert_eq!(result["webhook"]["delivered"], true);
    {
        let received = received.lock().unwrap();
        let (content_type, report, body) = &received[0];
        assert_eq!(content_type, "text/csv; charset=utf-8");
        assert_eq!(report, &id);
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.starts_with("period,currency,revenue,"), "{text}");
        assert_eq!(
            text.lines().count() as u64 - 1,
            result["rows"].as_u64().unwrap()
        );
    }

    let json_report = create(
        &app,
        &analyst,
        json!({"name": "Top items", "template": "top_items", "period": "last_7_days", "format": "json",
               "params": {"event": "game_view"},
               "delivery": {"store": true, "webhook": format!("{hook}/down")}}),
    )
    .await;
    let (status, body, text) = call(
        &app,
        Method::POST,
        &format!("/v1/reports/{json_report}/run"),
        &analyst,
        None,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(body["error"]["code"], "report_failed");
    assert!(
        text.contains("HTTP 503") && text.contains("the file is stored"),
        "{text}"
    );
    let (_, runs, _) = call(
        &app,
        Method::GET,
        &format!("/v1/reports/{json_report}/runs"),
        &analyst,
        None,
    )
    .await;
    let failed = &runs["runs"][0];
    assert_eq!(failed["status"], "failed");
    let (_, _, file) = download(
        &app,
        &analyst,
        &json!({"download": format!("/v1/reports/runs/{}/download", failed["id"])}),
    )
    .await;
    let file: Value = serde_json::from_slice(&file).unwrap();
    assert_eq!(file["report"]["template"], "top_items");
    assert!(
        file["meta"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "item"),
        "{file}"
    );

    // Each generated file is an audited export by the report's owner, delivered or not.
    let pool = app.postgres().await;
    let mut generated: Vec<(String, String, Option<i64>, Option<i64>)> = Vec::new();
    for _ in 0..50 {
        generated = sqlx::query_as(
            "SELECT role, outcome, rows, bytes FROM audit_log WHERE action = 'report.generate' ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        if generated.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(generated.len(), 2, "{generated:?}");
    assert_eq!(
        (generated[0].0.as_str(), generated[0].1.as_str()),
        ("analyst", "ok")
    );
    assert_eq!(generated[0].2.map(|r| r as u64), result["rows"].as_u64());
    assert!(generated[0].3.unwrap_or(0) > 0);
    assert_eq!(generated[1].1, "webhook_failed");
}

#[tokio::test]
async fn definitions_are_checked_naming_the_field_and_reports_are_private_to_their_owner() {
    let app = reporting_app().await;
    let analyst = app.create_key("analyst").await;
    let other = app.create_key("analyst").await;
    let support = app.create_key("support").await;
    let base = json!({"name": "r", "template": "dau", "period": "last_7_days", "format": "csv"});
    let with = |patch: Value| {
        let mut spec = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    for (spec, key, needle) in [
        (with(json!({"period": "fortnight"})), &analyst, "period:"),
        (with(json!({"template": "nope"})), &analyst, "template:"),
        (with(json!({"format": "docx"})), &analyst, "format"),
        (
            with(json!({"schedule": "every day"})),
            &analyst,
            "schedule:",
        ),
        (
            with(json!({"params": {"from": "2026-01-01"}})),
            &analyst,
            "params.from:",
        ),
        (
            with(json!({"params": {"platform": "tv"}})),
            &analyst,
            "platform",
        ),
        (
            with(json!({"delivery": {"store": false}})),
            &analyst,
            "delivery:",
        ),
        (
            with(json!({"delivery": {"webhook": "ftp://x"}})),
            &analyst,
            "delivery.webhook:",
        ),
        (
            with(json!({"chart": {"y": ["nope"]}})),
            &analyst,
            "chart.y:",
        ),
        (with(json!({"colour": "red"})), &analyst, "colour"),
        (base.clone(), &support, "may not export"),
    ] {
        let (status, body, text) =
            call(&app, Method::POST, "/v1/reports", key, Some(spec.clone())).await;
        assert_eq!(status, 400, "{spec}: {text}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{needle}: {text}"
        );
    }

    let id = create(&app, &analyst, base.clone()).await;
    for (method, path) in [
        (Method::GET, format!("/v1/reports/{id}")),
        (Method::POST, format!("/v1/reports/{id}/run")),
        (Method::GET, format!("/v1/reports/{id}/runs")),
        (Method::DELETE, format!("/v1/reports/{id}")),
    ] {
        let (status, _, text) = call(&app, method, &path, &other, None).await;
        assert_eq!(status, 404, "{path}: {text}");
    }
    let (_, listed, _) = call(&app, Method::GET, "/v1/reports", &other, None).await;
    assert_eq!(listed["reports"], json!([]));
    let result = run(&app, &analyst, &id).await;
    let (status, _, _) = call(
        &app,
        Method::GET,
        result["download"].as_str().unwrap(),
        &other,
        None,
    )
    .await;
    assert_eq!(status, 404, "another principal cannot download the file");
}

#[tokio::test]
async fn a_scheduled_report_runs_on_its_schedule_until_deleted() {
    let app = reporting_app().await;
    let analyst = app.create_key("analyst").await;
    let id = create(
        &app,
        &analyst,
        json!({"name": "Every second", "template": "dau", "period": "yesterday", "format": "csv",
               "schedule": "* * * * * *"}),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let scheduled = loop {
        let (_, runs, _) = call(
            &app,
            Method::GET,
            &format!("/v1/reports/{id}/runs"),
            &analyst,
            None,
        )
        .await;
        let done: Vec<Value> = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["trigger"] == "schedule" && r["status"] == "ok")
            .cloned()
            .collect();
        if !done.is_empty() {
            break done[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled run: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(scheduled["rows"], 1, "yesterday is one day");
    let (_, _, file) = download(&app, &analyst, &scheduled["result"]).await;
    assert!(String::from_utf8(file).unwrap().starts_with("day,users\n"));

    let (status, _, _) = call(
        &app,
        Method::DELETE,
        &format!("/v1/reports/{id}"),
        &analyst,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, _) = call(
        &app,
        Method::GET,
        &format!("/v1/reports/{id}"),
        &analyst,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = call(
        &app,
        Method::GET,
        scheduled["result"]["download"].as_str().unwrap(),
        &analyst,
        None,
    )
    .await;
    assert_eq!(status, 404, "its files went with it");
}
