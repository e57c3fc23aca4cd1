//! The BI endpoint: ClickHouse's HTTP interface, under the roles, row filters, settings policy,
//! limits, cache and audit log — proven with the drivers BI tools use.

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::json;

use crate::access::seed_two_developers;
use crate::helpers::{TestApp, JWT_SECRET};
use crate::native;

/// A BI response: status, headers, body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The ClickHouse error code of a refusal.
    pub(crate) fn code(&self) -> u32 {
        self.header("x-clickhouse-exception-code")
            .parse()
            .unwrap_or(0)
    }
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request is sent");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

/// `POST /?params` with `sql` as the body and the key as the Basic password.
pub(crate) async fn bi(app: &TestApp, key: &str, params: &[(&str, &str)], sql: &str) -> Answer {
    send(
        app.client
            .post(format!("{}/", app.bi_address))
            .basic_auth("bi-user", Some(key))
            .query(params)
            .body(sql.to_string()),
    )
    .await
}

fn database(app: &TestApp) -> String {
    app.settings().clickhouse.database.clone()
}

async fn query_log(app: &TestApp, query_id: &str) -> (String, String, String) {
    let client = app.clickhouse();
    client.query("SYSTEM FLUSH LOGS").execute().await.unwrap();
    client
        .query("SELECT Settings['max_execution_time'], Settings['max_threads'], log_comment FROM system.query_log WHERE endsWith(query_id, concat(':', ?)) AND type = 'QueryFinish' LIMIT 1")
        .bind(query_id)
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_endpoint_speaks_clickhouse_http_and_passes_responses_through_unchanged() {
    let app = TestApp::spawn().await;
    let key = app.create_key("analyst").await;
    let db = database(&app);

    let ping = send(app.client.get(format!("{}/ping", app.bi_address))).await;
    let get = send(
        app.client
            .get(format!("{}/", app.bi_address))
            .basic_auth("x", Some(&key))
            .query(&[
                ("query", "SELECT currentDatabase(), {n:UInt8} + 1"),
                ("param_n", "41"),
            ]),
    )
    .await;
    let joined = send(
        app.client
            .post(format!("{}/", app.bi_address))
            .basic_auth("x", Some(&key))
            .query(&[("query", "SELECT number FROM numbers(3)")])
            .body("WHERE number > 0 FORMAT CSV"),
    )
    .await;
    let json = bi(
        &app,
        &key,
        &[("default_format", "JSONEachRow")],
        "SELECT 1 AS one",
    )
    .await;
    let id = uuid::Uuid::new_v4().to_string();
    let kept = bi(&app, &key, &[("query_id", id.as_str())], "SELECT 1").await;
    let prefixed = bi(&app, &key, &[("query_id", "dash-7")], "SELECT 1").await;
    let session = bi(&app, &key, &[("session_id", "superset-7f3a")], "SELECT 2").await;
    let bad_session = bi(&app, &key, &[("session_id", "a b/../c")], "SELECT 2").await;
    let gzip = send(
        app.client
            .post(format!("{}/", app.bi_address))
            .basic_auth("x", Some(&key))
            .header("accept-encoding", "gzip")
            .query(&[("enable_http_compression", "1")])
            .body("SELECT repeat('a', 1000) FROM numbers(100) FORMAT TSV"),
    )
    .await;
    let direct = send(
        app.client
            .post(crate::helpers::clickhouse_url())
            .query(&[("compress", "1"), ("default_format", "RowBinary")])
            .body("SELECT number FROM numbers(1000)"),
    )
    .await;
    let compressed = bi(
        &app,
        &key,
        &[("compress", "1"), ("default_format", "RowBinary")],
        "SELECT number FROM numbers(1000)",
    )
    .await;

    assert_eq!((ping.status, ping.text().as_str()), (200, "Ok.\n"));
    assert_eq!((session.status, session.text().as_str()), (200, "2\n"));
    assert_eq!((bad_session.status, bad_session.code()), (400, 36));
    assert!(
        bad_session.text().contains("session_id"),
        "{}",
        bad_session.text()
    );
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.text(), format!("{db}\t42\n"));
    assert_eq!(get.header("x-clickhouse-format"), "TabSeparated");
    assert!(!get.header("x-clickhouse-timezone").is_empty());
    assert!(get.header("x-clickhouse-summary").contains("read_rows"));
    assert_eq!(
        joined.text(),
        "1\n2\n",
        "the query parameter and the body form one query"
    );
    assert_eq!(joined.header("x-clickhouse-format"), "CSV");
    assert_eq!(json.text(), "{\"one\":1}\n");
    assert!(
        kept.header("x-clickhouse-query-id")
            .ends_with(&format!(":{id}")),
        "a UUID query id is prefixed with the caller's identity too: {}",
        kept.header("x-clickhouse-query-id")
    );
    assert!(
        prefixed
            .header("x-clickhouse-query-id")
            .ends_with(":dash-7"),
        "{}",
        prefixed.header("x-clickhouse-query-id")
    );
    assert_eq!(gzip.header("content-encoding"), "gzip");
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&gzip.body[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(unzipped.lines().count(), 100);
    assert_eq!(compressed.status, 200);
    assert_eq!(
        compressed.body, direct.body,
        "ClickHouse block compression passes through byte for byte"
    );
}

fn jwt(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn drivers_authenticate_with_keys_and_jwts_the_ways_they_send_them() {
    let app = TestApp::spawn().await;
    let key = app.create_key("analyst").await;
    let support = app.create_key("support").await;
    let token =
        jwt(json!({"sub": "ann", "role": "analyst", "exp": chrono::Utc::now().timestamp() + 600}));
    let url = format!("{}/", app.bi_address);
    let sql = "SELECT 1";

    let basic = send(
        app.client
            .post(&url)
            .basic_auth("anyone", Some(&key))
            .body(sql),
    )
    .await;
    let headers = send(
        app.client
            .post(&url)
            .header("x-clickhouse-user", "grafana")
            .header("x-clickhouse-key", &key)
            .body(sql),
    )
    .await;
    let params = send(
        app.client
            .post(&url)
            .query(&[("user", "u"), ("password", key.as_str())])
            .body(sql),
    )
    .await;
    let bearer = send(app.client.post(&url).bearer_auth(&token).body(sql)).await;
    let jwt_as_password = send(
        app.client
            .post(&url)
            .basic_auth("ann", Some(&token))
            .body(sql),
    )
    .await;
    let none = send(app.client.post(&url).body(sql)).await;
    let wrong = send(
        app.client
            .post(&url)
            .basic_auth("default", Some("chg_nope"))
            .body(sql),
    )
    .await;
    let denied_role = send(
        app.client
            .post(&url)
            .basic_auth("s", Some(&support))
            .body(sql),
    )
    .await;

    for answer in [&basic, &headers, &params, &bearer, &jwt_as_password] {
        assert_eq!((answer.status, answer.text().as_str()), (200, "1\n"));
    }
    assert_eq!((none.status, none.code()), (401, 516));
    assert!(
        none.text()
            .starts_with("Code: 516. DB::Exception: chgate: no credentials"),
        "{}",
        none.text()
    );
    assert_eq!((wrong.status, wrong.code()), (401, 516));
    assert_eq!((denied_role.status, denied_role.code()), (403, 497));
    assert!(denied_role.text().contains("may not use the BI endpoint"));
}

#[tokio::test]
async fn writes_foreign_tables_functions_and_filter_overrides_are_refused_like_clickhouse_errors() {
    let app = TestApp::spawn().await;
    let key = app.create_key("marketer").await;

    let cases: Vec<(&str, u16, u32)> = vec![
        ("DROP TABLE dau_daily", 403, 164),
        ("CREATE TABLE x (a Int8) ENGINE = Memory", 403, 164),
        ("INSERT INTO dau_daily SELECT * FROM dau_daily", 403, 164),
        ("ALTER TABLE dau_daily DELETE WHERE 1", 403, 164),
        ("SYSTEM FLUSH LOGS", 403, 164),
        ("KILL QUERY WHERE 1", 403, 164),
        ("SET readonly = 0", 403, 164),
        ("SELECT * FROM events", 403, 497),
        ("SELECT * FROM system.users", 403, 497),
        ("SELECT * FROM system.query_log", 403, 497),
        (
            "SELECT * FROM url('http://127.0.0.1:1/x', CSV, 'a String')",
            403,
            497,
        ),
        ("SELECT * FROM remote('127.0.0.1', system.one)", 403, 497),
        ("SELECT * FROM file('/etc/passwd', LineAsString)", 403, 497),
        ("SELECT * FROM merge(currentDatabase(), '.*')", 403, 497),
        (
            "SELECT * FROM dau_daily SETTINGS additional_table_filters = {}",
            400,
            452,
        ),
        (
            "SELECT * FROM dau_daily SETTINGS max_execution_time = 100000",
            400,
            452,
        ),
        ("SELECT 1; SELECT 2", 400, 62),
        ("SELECT * FROM dau_daily INTO OUTFILE '/tmp/x'", 400, 62),
        ("SELEC 1", 400, 62),
    ];
    let mut answers = Vec::new();
    for (sql, _, _) in &cases {
        answers.push(bi(&app, &key, &[], sql).await);
    }
    let unparseable = crate::helpers::metric_value(&app, "chgate_bi_unparseable_total").await;

    for ((sql, status, code), answer) in cases.iter().zip(&answers) {
        assert_eq!(
            (answer.status, answer.code()),
            (*status, *code),
            "{sql}: {}",
            answer.text()
        );
        assert!(
            answer
                .text()
                .starts_with(&format!("Code: {code}. DB::Exception: chgate: ")),
            "{sql}: {}",
            answer.text()
        );
    }
    assert_eq!(
        unparseable, 2.0,
        "the two unparseable read statements (INTO OUTFILE, a typo) are counted, the refused writes are not"
    );
}

#[tokio::test]
async fn row_filters_hold_against_subqueries_aliases_unions_functions_and_overrides() {
    let app = TestApp::spawn().await;
    seed_two_developers(&app).await;
    let key = app
        .create_key_with("developer", &[("developer_id", "dev-1")])
        .await;
    let no_claim = app.create_key("developer").await;
    let db = database(&app);
    let overriding = format!("{{'{db}.events': '1'}}");

    let attempts = [
        "SELECT count() FROM events".to_string(),
        format!("SELECT count() FROM {db}.events"),
        "SELECT count() FROM (SELECT event_id FROM events) AS e".to_string(),
        "SELECT count() FROM events AS dev2 WHERE developer_id = 'dev-2' OR 1".to_string(),
        "SELECT count() FROM (SELECT 1 FROM events UNION ALL SELECT 1 FROM events WHERE developer_id = 'dev-2')".to_string(),
        "WITH e AS (SELECT event_id FROM events) SELECT count() FROM e".to_string(),
        "WITH events AS (SELECT event_id FROM events) SELECT count() FROM events".to_string(),
        "WITH a AS (SELECT event_id FROM events), events AS (SELECT event_id FROM a) SELECT count() FROM events".to_string(),
        "SELECT count() FROM events AS a JOIN events AS b ON a.event_id = b.event_id".to_string(),
        "SELECT count() FROM events WHERE developer_id IN (SELECT developer_id FROM events)".to_string(),
    ];
    let mut counts = Vec::new();
    for sql in &attempts {
        // Within the developer role's request rate (5/s, burst 10).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let answer = bi(&app, &key, &[], sql).await;
        counts.push((answer.status, answer.text()));
    }
    let overridden = bi(
        &app,
        &key,
        &[("additional_table_filters", overriding.as_str())],
        "SELECT count() FROM events",
    )
    .await;
    let developers = bi(&app, &key, &[], "SELECT DISTINCT developer_id FROM events").await;
    let other_table = bi(&app, &key, &[], "SELECT count() FROM dau_daily").await;
    let system_trick = bi(
        &app,
        &key,
        &[],
        "SELECT count() FROM system.tables WHERE name = 'dau_daily'",
    )
    .await;
    let table_function = bi(
        &app,
        &key,
        &[],
        &format!("SELECT count() FROM merge('{db}', 'events')"),
    )
    .await;
    let missing_claim = bi(&app, &no_claim, &[], "SELECT count() FROM events").await;
    // The developer role's hidden columns: counted only, never shown, filtered or expanded.
    let counted = bi(
        &app,
        &key,
        &[],
        "SELECT uniq(actor_id), count(DISTINCT user_id), count(*) FROM events",
    )
    .await;
    let mut hidden = Vec::new();
    for sql in [
        "SELECT actor_id FROM events",
        "SELECT count() FROM events WHERE user_id = 'dev-2-fan-1'",
        "SELECT * FROM events",
        "SELECT COLUMNS('.*id') FROM events",
        "SELECT uniqIf(actor_id, actor_id LIKE 'dev-1%') FROM events",
        "SELECT count() FROM events AS a JOIN events AS b USING (actor_id)",
        "SELECT e.ip FROM (SELECT event_id, ip FROM events) AS e",
    ] {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let answer = bi(&app, &key, &[], sql).await;
        hidden.push((sql, answer.code(), answer.text()));
    }
    let listed_columns = bi(
        &app,
        &key,
        &[],
        "SELECT name FROM system.columns WHERE table = 'events' AND name IN ('actor_id', 'user_id', 'event', 'developer_id') ORDER BY name",
    )
    .await;
    let marketer = app.create_key("marketer").await;
    let mut shadowed = Vec::new();
    for sql in [
        "WITH events AS (SELECT * FROM events) SELECT count() FROM events",
        "WITH a AS (SELECT * FROM events), events AS (SELECT 1) SELECT count() FROM a",
    ] {
        for analyzer in ["1", "0"] {
            let answer = bi(&app, &marketer, &[("enable_analyzer", analyzer)], sql).await;
            shadowed.push((sql, analyzer, answer.code(), answer.text()));
        }
    }

    for (sql, (status, text)) in attempts.iter().zip(&counts) {
        assert_eq!(*status, 200, "{sql}: {text}");
        assert_eq!(text, "3\n", "{sql}");
    }
    assert_eq!(
        (overridden.status, overridden.code()),
        (400, 452),
        "the row filters cannot be replaced: {}",
        overridden.text()
    );
    assert!(overridden.text().contains("additional_table_filters"));
    assert_eq!(developers.text(), "dev-1\n");
    assert_eq!(other_table.code(), 497, "{}", other_table.text());
    assert_eq!(
        system_trick.text(),
        "0\n",
        "tables outside the role are not even listed"
    );
    assert_eq!(table_function.code(), 497);
    assert_eq!((missing_claim.status, missing_claim.code()), (403, 497));
    assert_eq!(counted.text(), "3\t3\t3\n", "{}", counted.text());
    for (sql, code, text) in hidden {
        assert_eq!(code, 497, "{sql}: {text}");
        assert!(text.contains("hidden"), "{sql}: {text}");
    }
    assert_eq!(listed_columns.text(), "developer_id\nevent\n");
    for (sql, analyzer, code, text) in shadowed {
        assert_eq!(
            code, 497,
            "a CTE named like a table does not open it (enable_analyzer={analyzer}): {sql}: {text}"
        );
    }
    assert!(
        missing_claim.text().contains("developer_id"),
        "{}",
        missing_claim.text()
    );
}

#[tokio::test]
async fn metadata_lists_only_what_the_role_may_see() {
    let app = TestApp::spawn().await;
    let key = app.create_key("marketer").await;
    let db = database(&app);
    let tables_of = |answer: &Answer| {
        answer
            .text()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    let databases = bi(&app, &key, &[], "SHOW DATABASES").await;
    let tables = bi(&app, &key, &[], &format!("SHOW TABLES FROM \"{db}\"")).await;
    let listed = bi(
        &app,
        &key,
        &[],
        &format!("SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name"),
    )
    .await;
    let columns = bi(
        &app,
        &key,
        &[],
        &format!(
            "SELECT DISTINCT table FROM system.columns WHERE database = '{db}' ORDER BY table"
        ),
    )
    .await;
    let describe = bi(
        &app,
        &key,
        &[],
        &format!("DESC TABLE \"{db}\".\"dau_daily\""),
    )
    .await;
    let describe_hidden = bi(&app, &key, &[], "DESCRIBE TABLE events").await;
    let exists = bi(&app, &key, &[], "EXISTS TABLE dau_daily").await;
    let exists_hidden = bi(&app, &key, &[], "EXISTS TABLE events").await;
    let foreign = bi(&app, &key, &[], "SHOW TABLES FROM default").await;
    let unknown_db = bi(&app, &key, &[("database", "secret")], "SELECT 1").await;
    let functions = bi(
        &app,
        &key,
        &[],
        "SELECT name FROM (SELECT name FROM system.functions WHERE lower(name) IN ('url', 'file', 'dictget', 'count', 'uniq') UNION ALL SELECT name FROM system.table_functions WHERE name IN ('url', 's3', 'remote', 'numbers')) ORDER BY name",
    )
    .await;

    let visible = vec![
        "dau_daily",
        "events_hourly",
        "revenue_daily",
        "user_first_seen",
    ];
    assert_eq!(
        tables_of(&databases),
        vec![db.clone(), "system".to_string()]
    );
    assert_eq!(tables_of(&tables), visible);
    assert_eq!(tables_of(&listed), visible);
    assert_eq!(tables_of(&columns), visible);
    assert!(
        describe.text().starts_with("day\tDate"),
        "{}",
        describe.text()
    );
    assert_eq!(describe_hidden.code(), 497);
    assert_eq!(exists.text(), "1\n");
    assert_eq!(exists_hidden.text(), "0\n");
    assert_eq!(foreign.code(), 81);
    assert_eq!((unknown_db.status, unknown_db.code()), (404, 81));
    assert_eq!(
        tables_of(&functions),
        ["count", "numbers", "uniq"],
        "function lists leave out what the role may not call"
    );
}

#[tokio::test]
async fn client_settings_are_allowed_clamped_or_dropped_and_queries_are_attributed() {
    let app = TestApp::spawn().await;
    let key = app.create_key("analyst").await;
    let id = uuid::Uuid::new_v4().to_string();

    let answer = send(
        app.client
            .post(format!("{}/", app.bi_address))
            .basic_auth("x", Some(&key))
            .header(
                "user-agent",
                "grafana/11.3.0 clickhouse-datasource/4.5.0 clickhouse-go/2.30.0",
            )
            .query(&[
                ("query_id", id.as_str()),
                ("max_execution_time", "100000"),
                ("max_threads", "64"),
                ("send_progress_in_http_headers", "1"),
                ("wait_end_of_query", "1"),
                ("cancel_http_readonly_queries_on_client_close", "1"),
                ("log_comment", "panel 7"),
            ])
            .body("SELECT count() FROM numbers(10)"),
    )
    .await;
    let (max_execution_time, max_threads, comment) = query_log(&app, &id).await;

    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "10\n"),
        "{}",
        answer.text()
    );
    assert_eq!(
        answer.header("x-chgate-dropped-settings"),
        "cancel_http_readonly_queries_on_client_close",
        "what drivers send and the gateway sets itself is dropped, not refused"
    );
    let mut refused = Vec::new();
    for (name, value) in [
        ("readonly", "0"),
        ("allow_ddl", "1"),
        ("some_unknown_setting", "1"),
        ("enable_analyzer", "0"),
        ("allow_experimental_analyzer", "0"),
        ("format_template_resultset", "/etc/passwd"),
        ("format_schema", "x.proto:M"),
        ("user_files_path", "/"),
    ] {
        let answer = bi(&app, &key, &[(name, value)], "SELECT 1").await;
        refused.push((name, answer.status, answer.code(), answer.text()));
    }
    let inline = bi(
        &app,
        &key,
        &[],
        "SELECT 1 FROM numbers(1) SETTINGS enable_analyzer = 0",
    )
    .await;
    let template_format = bi(&app, &key, &[("default_format", "Template")], "SELECT 1").await;
    for (name, status, code, text) in refused {
        assert_eq!((status, code), (400, 452), "{name}: {text}");
        assert!(text.contains(name), "{name}: {text}");
    }
    assert_eq!(
        (inline.status, inline.code()),
        (400, 452),
        "{}",
        inline.text()
    );
    assert_eq!(
        (template_format.status, template_format.code()),
        (400, 73),
        "{}",
        template_format.text()
    );
    assert_eq!(
        max_execution_time, "120",
        "clamped to the analyst's max_execution_secs"
    );
    assert_eq!(max_threads, "8", "clamped by the role's bi_settings");
    let comment: serde_json::Value = serde_json::from_str(&comment).unwrap();
    assert_eq!(comment["role"], "analyst");
    assert_eq!(comment["endpoint"], "bi");
    assert_eq!(comment["client_comment"], "panel 7");
    assert!(comment["user_agent"]
        .as_str()
        .unwrap()
        .starts_with("grafana/11.3.0"));
}

#[derive(clickhouse::Row, serde::Deserialize, Debug)]
struct DailyCount {
    day: u16,
    platform: String,
    n: u64,
}

#[tokio::test]
async fn the_rust_clickhouse_crate_reads_typed_rows_with_schema_validation() {
    let app = TestApp::spawn().await;
    crate::helpers::load_reference_events(&app).await;
    let key = app.create_key("analyst").await;
    let client = clickhouse::Client::default()
        .with_url(&app.bi_address)
        .with_user("rust")
        .with_password(&key)
        .with_database(database(&app))
        .with_validation(true);

    let rows: Vec<DailyCount> = client
        .query("SELECT toDate(timestamp) AS day, toString(platform) AS platform, count() AS n FROM events WHERE event = ? GROUP BY day, platform ORDER BY day, platform")
        .bind("game_view")
        .fetch_all()
        .await
        .unwrap();
    let mismatched = client
        .query(
            "SELECT toDate(timestamp) AS day, 1 AS platform, count() AS n FROM events GROUP BY day",
        )
        .fetch_all::<DailyCount>()
        .await;

    assert!(!rows.is_empty());
    assert!(rows
        .iter()
        .all(|r| r.n > 0 && !r.platform.is_empty() && r.day > 19000));
    assert!(
        mismatched.is_err(),
        "schema validation sees the wrong column type"
    );
}

const CLICKHOUSE_GO_REVISION: &str = "54460";
const GRAFANA_AGENT: &str =
    "grafana/11.3.0 clickhouse-datasource/4.5.0 clickhouse-go/2.30.0 (lv:go/1.22.7; os:linux)";

/// A request as clickhouse-go sends it in HTTP mode for Grafana: a Native answer.
async fn grafana_raw(app: &TestApp, key: &str, sql: &str) -> Answer {
    let answer = send(
        app.client
            .post(format!("{}/", app.bi_address))
            .header("user-agent", GRAFANA_AGENT)
            .header(
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("grafana:{key}"))
                ),
            )
            .header("content-type", "text/plain; charset=utf-8")
            // Grafana's HTTP mode compresses with gzip.
            .header("accept-encoding", "gzip")
            .query(&[
                ("default_format", "Native"),
                ("client_protocol_version", CLICKHOUSE_GO_REVISION),
                ("database", database(app).as_str()),
                ("enable_http_compression", "1"),
                ("max_execution_time", "30"),
                ("query_id", uuid::Uuid::new_v4().to_string().as_str()),
                ("quota_key", ""),
            ])
            .body(sql.to_string()),
    )
    .await;
    assert_eq!(answer.status, 200, "{sql}: {}", answer.text());
    assert_eq!(answer.header("x-clickhouse-format"), "Native", "{sql}");
    assert_eq!(answer.header("content-encoding"), "gzip", "{sql}");
    answer
}

/// [`grafana_raw`], decoded.
async fn grafana(app: &TestApp, key: &str, sql: &str) -> native::Table {
    let answer = grafana_raw(app, key, sql).await;
    let mut body = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(answer.body.as_slice()),
        &mut body,
    )
    .expect("a gzip body");
    native::decode(&body, CLICKHOUSE_GO_REVISION.parse().unwrap())
}

#[tokio::test]
async fn grafana_requests_replayed_as_clickhouse_go_sends_them_get_native_answers() {
    let app = TestApp::spawn().await;
    crate::helpers::load_reference_events(&app).await;
    let key = app.create_key("marketer").await;
    let db = database(&app);

    let handshake = grafana(
        &app,
        &key,
        "SELECT displayName(), version(), revision(), timezone()",
    )
    .await;
    let version = grafana(&app, &key, "SELECT version()").await;
    let ping = grafana(&app, &key, "SELECT 1").await;
    let databases = grafana(&app, &key, "SHOW DATABASES").await;
    let tables = grafana(&app, &key, &format!("SHOW TABLES FROM \"{db}\"")).await;
    let described = grafana(
        &app,
        &key,
        &format!("DESC TABLE \"{db}\".\"events_hourly\""),
    )
    .await;
    let system_tables = grafana(
        &app,
        &key,
        &format!("SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name"),
    )
    .await;
    let columns = grafana(&app, &key, &format!("SELECT name, type FROM system.columns WHERE database = '{db}' AND table = 'events_hourly' ORDER BY position")).await;
    let functions = grafana(&app, &key, "SELECT name FROM system.functions").await;
    let series = grafana(
        &app,
        &key,
        &format!("/* grafana dashboard=chgate-business panel=2 */ SELECT toStartOfInterval(hour, INTERVAL 86400 second) AS time, sum(events) AS events FROM \"{db}\".\"events_hourly\" WHERE hour >= toDateTime(0) AND hour <= toDateTime(4102444800) GROUP BY time ORDER BY time"),
    )
    .await;

    assert_eq!(handshake.columns.len(), 4);
    assert_eq!(handshake.columns[2].1, "UInt32");
    assert!(handshake.rows[0][1].as_str().starts_with(char::is_numeric));
    assert!(handshake.rows[0][2].as_u64() > 54000);
    assert!(!handshake.rows[0][3].as_str().is_empty());
    assert_eq!(version.rows[0][0], handshake.rows[0][1]);
    assert_eq!(ping.rows[0][0].as_u64(), 1);
    let names = |t: &native::Table| {
        t.rows
            .iter()
            .map(|r| r[0].as_str().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&databases), vec![db.clone(), "system".to_string()]);
    let visible = vec![
        "dau_daily",
        "events_hourly",
        "revenue_daily",
        "user_first_seen",
    ];
    assert_eq!(names(&tables), visible);
    assert_eq!(names(&system_tables), visible);
    assert_eq!(names(&described)[0], "hour");
    assert_eq!(columns.rows.len(), described.rows.len());
    assert!(names(&functions).iter().any(|f| f == "toStartOfInterval"));
    assert!(series.columns[0].1.starts_with("DateTime"));
    assert!(!series.rows.is_empty());
    assert!(series.rows.iter().all(|r| r[1].as_u64() > 0));
}

/// The interpreter of the virtualenv `scripts/test` installs clickhouse-connect into.
fn python() -> PathBuf {
    let path = std::env::var_os("CHGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/chgate/venv/bin/python")
        });
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/test (it installs the BI test clients)",
        path.display()
    );
    path
}

/// The node_modules `scripts/test` installs @clickhouse/client into.
fn node_modules() -> PathBuf {
    let path = std::env::var_os("CHGATE_TEST_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/chgate/node/node_modules")
        });
    assert!(
        path.join("@clickhouse/client").exists(),
        "{} has no @clickhouse/client: run ./scripts/test (it installs the BI test clients)",
        path.display()
    );
    path
}

fn client_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

async fn run_client(mut command: tokio::process::Command, app: &TestApp, keys: &[(&str, &str)]) {
    command
        .env(
            "CHGATE_BI_HOST",
            app.bi_address
                .trim_start_matches("http://")
                .split(':')
                .next()
                .unwrap(),
        )
        .env("CHGATE_BI_PORT", app.bi_address.rsplit(':').next().unwrap())
        .env("CHGATE_BI_DATABASE", database(app));
    for (name, value) in keys {
        command.env(name, value);
    }
    let output = command.output().await.expect("the client runs");
    assert!(
        output.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn superset_driver_and_its_sqlalchemy_dialect_work_through_the_endpoint() {
    let app = TestApp::spawn().await;
    crate::helpers::load_reference_events(&app).await;
    let analyst = app.create_key("analyst").await;
    let marketer = app.create_key("marketer").await;
    let mut command = tokio::process::Command::new(python());
    command.arg(client_script("superset.py"));
    run_client(
        command,
        &app,
        &[
            ("CHGATE_BI_KEY", &analyst),
            ("CHGATE_BI_RESTRICTED_KEY", &marketer),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_official_js_client_queries_with_params_as_json_each_row() {
    let app = TestApp::spawn().await;
    crate::helpers::load_reference_events(&app).await;
    let analyst = app.create_key("analyst").await;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(client_script("js-client.js"))
        .env("NODE_PATH", node_modules());
    run_client(command, &app, &[("CHGATE_BI_KEY", &analyst)]).await;
}

#[tokio::test]
async fn cached_selects_run_once_per_statement_and_format() {
    let app = TestApp::spawn().await;
    let key = app.create_key("marketer").await;
    let sql = "SELECT /* cache probe */ count() FROM dau_daily";

    let first = bi(&app, &key, &[], sql).await;
    let second = bi(&app, &key, &[], &format!("  {sql}\n;")).await;
    let other_format = bi(&app, &key, &[("default_format", "JSONEachRow")], sql).await;
    let concurrent: Vec<_> = (0..5)
        .map(|_| {
            let client = app.client.clone();
            let url = format!("{}/", app.bi_address);
            let key = key.clone();
            tokio::spawn(async move {
                send(
                    client
                        .post(url)
                        .basic_auth("x", Some(key))
                        .body("SELECT /* flight */ sum(number) FROM numbers(30000000)"),
                )
                .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in concurrent {
        let answer = call.await.unwrap();
        statuses.push(answer.header("x-cache").to_string());
    }
    let client = app.clickhouse();
    client.query("SYSTEM FLUSH LOGS").execute().await.unwrap();
    let runs = client
        .query("SELECT countIf(query LIKE '%cache probe%'), countIf(query LIKE '%flight%') FROM system.query_log WHERE type = 'QueryFinish' AND current_database = currentDatabase() AND query NOT LIKE '%query_log%'")
        .fetch_one::<(u64, u64)>()
        .await
        .unwrap();

    assert_eq!(first.header("x-cache"), "MISS");
    assert_eq!(
        second.header("x-cache"),
        "HIT",
        "layout differences normalize to the same key"
    );
    assert_eq!(second.body, first.body);
    assert_eq!(other_format.header("x-cache"), "MISS");
    assert_eq!(other_format.text(), "{\"count()\":0}\n");
    assert_eq!(
        runs,
        (2, 1),
        "one run per format; one run for five concurrent callers"
    );
    assert!(
        statuses.iter().all(|s| s == "MISS" || s == "HIT"),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn bi_queries_are_rate_limited_and_audited_with_the_reason() {
    let app = TestApp::spawn().await;
    let key = app
        .create_key_with("developer", &[("developer_id", "dev-1")])
        .await;

    // Sent together, so that the burst runs out however slowly the machine answers.
    let answers = futures_util::future::join_all((0..14).map(|_| {
        send(
            app.client
                .post(format!("{}/", app.bi_address))
                .basic_auth("x", Some(&key))
                .header("x-audit-reason", "ticket 42")
                .body("SELECT count() FROM events"),
        )
    }))
    .await;
    let limited = answers
        .iter()
        .find(|a| a.status == 429)
        .expect("the developer's burst of 10 runs out");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let pool = app.postgres().await;
    let mut audited = 0i64;
    for _ in 0..50 {
        audited = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'bi.query' AND reason = 'ticket 42' AND outcome = 'ok' AND bytes > 0 AND sql_hash IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
        if audited >= 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'bi.query' AND status = 429",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    assert_eq!(limited.code(), 201, "{}", limited.text());
    assert!(!limited.header("retry-after").is_empty());
    assert_eq!(limited.header("x-ratelimit-limit"), "5");
    assert!(answers.iter().filter(|a| a.status == 200).count() >= 10);
    assert!(audited >= 10, "every answered query is audited: {audited}");
    assert!(refused >= 1);
}

/// Grafana's ClickHouse plugin macros, expanded the way the plugin expands them.
fn expand_grafana_macros(sql: &str, database: &str, from: i64, to: i64, interval_s: u64) -> String {
    let date = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    let with_column = |sql: &str, name: &str, expand: &dyn Fn(&str) -> String| {
        let pattern = regex::Regex::new(&format!(r"\$__{name}\(([^)]*)\)")).unwrap();
        pattern
            .replace_all(sql, |c: &regex::Captures| expand(c[1].trim()))
            .into_owned()
    };
    let sql = with_column(sql, "timeFilter", &|c| {
        format!("{c} >= toDateTime({from}) AND {c} <= toDateTime({to})")
    });
    let sql = with_column(&sql, "dateFilter", &|c| {
        format!(
            "{c} >= toDate('{}') AND {c} <= toDate('{}')",
            date(from),
            date(to)
        )
    });
    let sql = with_column(&sql, "timeInterval", &|c| {
        format!("toStartOfInterval(toDateTime({c}), INTERVAL {interval_s} second)")
    });
    sql.replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"))
        .replace("$__interval_s", &interval_s.to_string())
        .replace("${database}", database)
}

fn dashboard_queries(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(sql) = target["rawSql"].as_str() {
                out.push((title.clone(), sql.to_string()));
            }
        }
        if let Some(nested) = panel["panels"].as_array() {
            dashboard_queries(nested, out);
        }
    }
}

#[tokio::test]
async fn every_query_of_the_business_dashboard_runs_through_the_endpoint_as_an_analyst() {
    let app = TestApp::spawn().await;
    crate::helpers::load_reference_events(&app).await;
    let key = app.create_key("analyst").await;
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards/grafana/chgate-business.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(dashboard["panels"].as_array().unwrap(), &mut queries);
    let now = chrono::Utc::now().timestamp();

    let mut results = Vec::new();
    for (title, sql) in &queries {
        let sql =
            expand_grafana_macros(sql, &database(&app), now - 14 * 86_400, now + 3600, 86_400);
        assert!(
            !sql.contains("$__") && !sql.contains("${"),
            "{title}: an unexpanded macro in {sql}"
        );
        // As Grafana sends it (Native); the rows are counted in a JSON rendering of the same query.
        grafana_raw(&app, &key, &sql).await;
        let json = bi(&app, &key, &[("default_format", "JSONCompact")], &sql).await;
        assert_eq!(json.status, 200, "{title}: {}", json.text());
        let rows = serde_json::from_slice::<serde_json::Value>(&json.body).unwrap()["rows"]
            .as_u64()
            .unwrap();
        results.push((title, rows));
    }

    assert!(queries.len() >= 8, "{} queries", queries.len());
    for (title, rows) in results {
        assert!(rows > 0, "{title}: no rows");
    }
}

/// `n` copies of a query of about a hundred milliseconds, sent at once by a developer (two
/// concurrent queries allowed).
async fn concurrent_burst(app: &TestApp, n: usize) -> Vec<Answer> {
    let key = app
        .create_key_with("developer", &[("developer_id", "dev-1")])
        .await;
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let request = app
                .client
                .post(format!("{}/", app.bi_address))
                .basic_auth("x", Some(key.clone()))
                .body(format!("SELECT sum(number) + {i} FROM numbers(40000000)"));
            tokio::spawn(send(request))
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn queries_a_dashboard_sends_together_queue_for_a_slot_instead_of_failing() {
    let app = TestApp::spawn().await;
    let impatient = TestApp::spawn_with(|s| s.bi.queue_timeout_ms = 0).await;

    let queued = concurrent_burst(&app, 6).await;
    let refused = concurrent_burst(&impatient, 6).await;

    assert!(
        queued.iter().all(|a| a.status == 200),
        "{:?}",
        queued.iter().map(|a| a.text()).collect::<Vec<_>>()
    );
    let too_many: Vec<&Answer> = refused.iter().filter(|a| a.status == 429).collect();
    assert!(
        !too_many.is_empty(),
        "without a queue, a third concurrent query is refused"
    );
    assert!(too_many
        .iter()
        .all(|a| a.code() == 202 && a.text().contains("TOO_MANY_SIMULTANEOUS_QUERIES")));
}

#[tokio::test]
async fn cached_answers_are_kept_apart_by_row_filter_values_and_protocol_version() {
    // The shipped policy, with caching on for developers.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("access.toml");
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/access.toml"),
    )
    .unwrap();
    let caching = shipped.replace(
        "bi_tables = [\"events\"]\n",
        "bi_tables = [\"events\"]\nbi_cache_ttl_secs = 60\n",
    );
    assert_ne!(caching, shipped);
    std::fs::write(&policy, caching).unwrap();
    let app = TestApp::spawn_with(|s| s.access.policy = policy.clone()).await;
    seed_two_developers(&app).await;
    let dev1 = app
        .create_key_with("developer", &[("developer_id", "dev-1")])
        .await;
    let dev2 = app
        .create_key_with("developer", &[("developer_id", "dev-2")])
        .await;
    let sql = "SELECT count() FROM events";

    let first = bi(&app, &dev1, &[], sql).await;
    let again = bi(&app, &dev1, &[], sql).await;
    let other_developer = bi(&app, &dev2, &[], sql).await;
    let native = |version: &'static str| {
        let (app, dev1) = (&app, dev1.clone());
        async move {
            bi(
                app,
                &dev1,
                &[
                    ("default_format", "Native"),
                    ("client_protocol_version", version),
                ],
                sql,
            )
            .await
        }
    };
    let native_old = native("0").await;
    let native_new = native(CLICKHOUSE_GO_REVISION).await;
    let native_new_again = native(CLICKHOUSE_GO_REVISION).await;

    assert_eq!(
        (first.header("x-cache"), first.text()),
        ("MISS", "3\n".to_string())
    );
    assert_eq!(
        (again.header("x-cache"), again.text()),
        ("HIT", "3\n".to_string())
    );
    assert_eq!(
        (other_developer.header("x-cache"), other_developer.text()),
        ("MISS", "5\n".to_string()),
        "another developer's claim is another entry"
    );
    assert_eq!(native_old.header("x-cache"), "MISS");
    assert_eq!(
        native_new.header("x-cache"),
        "MISS",
        "the protocol version is part of the key"
    );
    assert_eq!(native_new_again.header("x-cache"), "HIT");
    assert_ne!(
        native_old.body, native_new.body,
        "Native differs by protocol version"
    );
    assert_eq!(native_new_again.body, native_new.body);
}
