//! An attack corpus: what a hostile caller tries against the BI endpoint and the template API with
//! the shipped roles that have row filters, hidden columns or a short table list (`developer`,
//! `marketer`). Whatever the attack, no answer is a 5xx, and no successful answer carries another
//! developer's rows, a hidden column's values or a table outside the role.

use crate::access::seed_two_developers;
use crate::bi::{bi, Answer};
use crate::helpers::TestApp;

/// The shipped policy with request rates high enough for a corpus sent in one go.
fn fast_policy(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/access.toml"),
    )
    .unwrap();
    let fast = shipped
        .replace("requests_per_second = 5\n", "requests_per_second = 1000\n")
        .replace("requests_per_second = 10\n", "requests_per_second = 1000\n")
        .replace("burst = 10\n", "burst = 1000\n")
        .replace("burst = 20\n", "burst = 1000\n");
    assert_ne!(shipped, fast, "the shipped policy changed shape");
    let path = dir.path().join("access.toml");
    std::fs::write(&path, fast).unwrap();
    path
}

pub(crate) async fn spawn() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policy = fast_policy(&dir);
    let app = TestApp::spawn_with(|settings| settings.access.policy = policy).await;
    seed_two_developers(&app).await;
    (app, dir)
}

/// One attack on the BI endpoint: URL parameters and the SQL.
struct Attack {
    params: Vec<(&'static str, String)>,
    sql: String,
}

fn attack(sql: impl Into<String>) -> Attack {
    Attack {
        params: Vec::new(),
        sql: sql.into(),
    }
}

fn with(params: &[(&'static str, &str)], sql: impl Into<String>) -> Attack {
    Attack {
        params: params.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        sql: sql.into(),
    }
}

/// Attacks that any role of the corpus tries: the families of the hardening review.
fn corpus(db: &str) -> Vec<Attack> {
    let deep = format!(
        "SELECT {}1{} FROM events",
        "(".repeat(3000),
        ")".repeat(3000)
    );
    let long_in = format!(
        "SELECT count() FROM events WHERE event IN ({})",
        (0..20_000)
            .map(|i| format!("'e{i}'"))
            .collect::<Vec<_>>()
            .join(",")
    );
    vec![
        // Row filters: the filter holds whatever the shape.
        attack("SELECT developer_id, count() FROM events GROUP BY developer_id"),
        attack(format!("SELECT developer_id FROM {db}.events")),
        attack("SELECT developer_id FROM (SELECT developer_id FROM events) AS e"),
        attack("SELECT developer_id FROM events WHERE developer_id = 'dev-2' OR 1 = 1"),
        attack("SELECT developer_id FROM events UNION ALL SELECT developer_id FROM events WHERE 1"),
        attack("WITH events AS (SELECT * FROM events) SELECT developer_id FROM events"),
        attack("SELECT a.developer_id FROM events AS a JOIN events AS b ON a.event_id = b.event_id"),
        attack("SELECT developer_id FROM events WHERE developer_id IN (SELECT developer_id FROM events_buffer)"),
        attack("SELECT developer_id FROM events WHERE 1 GLOBAL IN (SELECT 1)"),
        attack("SELECT d FROM events ARRAY JOIN [developer_id] AS d"),
        with(
            &[("additional_table_filters", "{'events': '1'}")],
            "SELECT developer_id FROM events",
        ),
        attack("SELECT developer_id FROM events SETTINGS additional_table_filters = {'events': '1'}"),
        with(
            &[("additional_result_filter", "1")],
            "SELECT developer_id FROM events",
        ),
        // Hidden columns and names given as parameters.
        attack("SELECT user_id FROM events"),
        attack("SELECT any(user_id), argMax(actor_id, timestamp) FROM events"),
        attack("SELECT groupArray(user_id) FROM events"),
        attack("SELECT toString(user_id) FROM events"),
        attack("SELECT concat(user_id, '') FROM events"),
        attack("SELECT count() FROM events GROUP BY ip"),
        attack("SELECT tuple(*) FROM events"),
        attack("SELECT untuple(tuple(*)) FROM events"),
        attack("SELECT e.* FROM events AS e"),
        attack("SELECT * EXCEPT (event) FROM events"),
        attack("SELECT COLUMNS('user') FROM events"),
        with(&[("param_c", "user_id")], "SELECT {c:Identifier} AS x FROM events"),
        with(&[("param_c", "ip")], "SELECT {c:Identifier} AS x FROM events"),
        with(&[("param_c", "actor_id")], "SELECT {c:Identifier} AS x FROM events"),
        with(&[("param_c", "user_agent")], "SELECT {c:Identifier} AS x FROM events"),
        with(
            &[("param_t", "events_buffer")],
            "SELECT count() FROM events WHERE 1 IN {t:Identifier}",
        ),
        with(
            &[("param_c", "x` FROM events_buffer --")],
            "SELECT {c:Identifier} FROM events",
        ),
        with(&[("param_c", "user_id")], "SELECT {c:Nullable(Identifier)} FROM events"),
        with(
            &[("param_c", "user_id")],
            "SELECT 1 FROM events -- {c:Identifier}\nWHERE 1",
        ),
        with(
            &[("param_c", "user_id")],
            "SELECT {c:\nIdentifier} FROM events",
        ),
        attack("DESCRIBE TABLE events"),
        attack("DESC events"),
        attack(format!("SELECT hasColumnInTable('{db}', 'events_buffer', 'user_id')")),
        attack(format!(
            "SELECT name FROM system.columns WHERE database = '{db}' AND table = 'events'"
        )),
        // Tables and table functions outside the role.
        attack("SELECT * FROM events_buffer"),
        attack("SELECT * FROM events_ingest"),
        attack("SELECT * FROM system.query_log"),
        attack("SELECT * FROM system.users"),
        attack("SELECT * FROM system.processes"),
        attack(format!("SELECT * FROM merge('{db}', '.*')")),
        attack("SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a String')"),
        attack("SELECT * FROM file('/etc/passwd', LineAsString)"),
        attack("SELECT * FROM remote('127.0.0.1', system.one)"),
        attack("SELECT * FROM cluster('default', system.one)"),
        attack("SELECT * FROM view(SELECT * FROM events_buffer)"),
        attack("SELECT * FROM loop(events)"),
        attack("SELECT * FROM input('a String')"),
        attack("SELECT * FROM generateRandom('a String') LIMIT 1"),
        attack("SELECT file('/etc/passwd')"),
        attack("SELECT dictGet('d', 'a', 1)"),
        attack("SELECT joinGet('j', 'v', 1)"),
        attack("SELECT getSetting('readonly')"),
        attack("SELECT sleep(3)"),
        attack("SELECT getMacro('shard')"),
        // Settings.
        with(&[("readonly", "0")], "SELECT 1"),
        with(&[("allow_ddl", "1")], "SELECT 1"),
        with(&[("enable_analyzer", "0")], "SELECT count() FROM events"),
        with(&[("allow_experimental_analyzer", "0")], "SELECT count() FROM events"),
        attack("SELECT count() FROM events SETTINGS enable_analyzer = 0"),
        with(
            &[
                ("format_template_resultset", "/etc/passwd"),
                ("default_format", "Template"),
            ],
            "SELECT 1",
        ),
        with(&[("default_format", "Template")], "SELECT 1"),
        with(&[("format_schema", "x.proto:M")], "SELECT 1 FORMAT Protobuf"),
        attack("SELECT 1 FORMAT CapnProto"),
        with(&[("user_files_path", "/")], "SELECT 1"),
        with(&[("max_threads", "10000")], "SELECT 1"),
        with(&[("max_execution_time", "100000")], "SELECT 1"),
        with(&[("max_result_rows", "0")], "SELECT 1"),
        with(&[("max_memory_usage", "1")], "SELECT 1"),
        attack("SELECT 1 FORMAT JSON SETTINGS readonly = 0"),
        // Statements that write, and parser confusion.
        attack("SET readonly = 0"),
        attack("DROP TABLE events"),
        attack("INSERT INTO events SELECT * FROM events"),
        attack("ALTER TABLE events DELETE WHERE 1"),
        attack("SYSTEM FLUSH LOGS"),
        attack("KILL QUERY WHERE 1"),
        attack("SELECT 1; DROP TABLE events"),
        attack("SELECT 1 -- ;\n; DROP TABLE events"),
        attack("SELECT * FROM events INTO OUTFILE '/tmp/x'"),
        attack("SELECT 'a\\' FROM events_buffer -- '"),
        attack("SELECT 1 /* /* nested */ FROM events_buffer */"),
        attack("SELECT 1 # FROM events_buffer"),
        attack("SELECT `user_id` FROM `events`"),
        attack("SELECT \"user_id\" FROM \"events\""),
        attack("SELECT USER_ID FROM events"),
        attack("SELECT userid FROM events"),
        attack("SELECT 1 FROM events e FINAL"),
        attack("SELECT count() FROM events FINAL"),
        attack("SELECT count() FROM events SAMPLE 0.1"),
        attack("SELECT 1 FORMAT NoSuchFormat"),
        attack("SELECT nosuchcolumn FROM events"),
        attack("SELECT intDiv(1, 0)"),
        attack("SELECT throwIf(1)"),
        attack("SELECT toDate('not a date')"),
        attack(deep),
        attack(long_in),
        attack("\u{0}SELECT 1"),
        attack("SELECT '\u{0}'"),
        attack(""),
        // Edge values of parameters, ids and sessions.
        with(&[("param_n", "999")], "SELECT {n:UInt8}"),
        with(&[("param_d", "garbage")], "SELECT {d:Date}"),
        with(&[("param_d", "99999-01-01")], "SELECT {d:Date}"),
        with(&[("param_n", "1")], "SELECT {n:NoSuchType}"),
        attack("SELECT {missing:String}"),
        with(&[("query_id", "../../etc")], "SELECT 1"),
        with(&[("session_id", "a b/../c")], "SELECT 1"),
        with(&[("database", "system")], "SELECT * FROM users"),
        with(&[("database", "other")], "SELECT 1"),
        with(&[("decompress", "1")], "SELECT 1"),
        with(&[("compress", "1")], "SELECT 1"),
    ]
}

/// Sends the corpus as `key`; the answers, in order.
async fn run(app: &TestApp, key: &str, attacks: &[Attack]) -> Vec<Answer> {
    let mut answers = Vec::new();
    for attack in attacks {
        let params: Vec<(&str, &str)> = attack
            .params
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        answers.push(bi(app, key, &params, &attack.sql).await);
    }
    answers
}

/// Text that must never appear in a successful answer to a developer of `dev-1`: another
/// developer's rows, and the values of the hidden user columns (`dev-1-fan-0`, …).
const DEVELOPER_LEAKS: &[&str] = &["dev-2", "-fan-"];

/// Text only the raw `events` table holds (the seeded items), never a rollup the marketer reads.
const MARKETER_LEAK: &str = "-game";

#[tokio::test]
async fn no_attack_on_the_bi_endpoint_gets_a_5xx_or_a_row_the_role_may_not_see() {
    let (app, _dir) = spawn().await;
    let db = app.settings().clickhouse.database.clone();
    let developer = app
        .create_key_with("developer", &[("developer_id", "dev-1")])
        .await;
    let marketer = app.create_key("marketer").await;
    let attacks = corpus(&db);

    let as_developer = run(&app, &developer, &attacks).await;
    let as_marketer = run(&app, &marketer, &attacks).await;

    let mut failures = Vec::new();
    for (role, answers) in [("developer", &as_developer), ("marketer", &as_marketer)] {
        for (attack, answer) in attacks.iter().zip(answers.iter()) {
            let text = answer.text();
            let shown = &attack.sql.chars().take(120).collect::<String>();
            if answer.status >= 500 {
                failures.push(format!(
                    "{role}: {shown:?} {:?}: {} {text}",
                    attack.params, answer.status
                ));
            }
            if answer.status == 200 && role == "developer" {
                if let Some(leak) = DEVELOPER_LEAKS.iter().find(|l| text.contains(*l)) {
                    failures.push(format!(
                        "{role}: {shown:?} {:?} leaked {leak:?}: {text}",
                        attack.params
                    ));
                }
            }
            if answer.status == 200 && role == "marketer" && text.contains(MARKETER_LEAK) {
                failures.push(format!(
                    "{role}: {shown:?} {:?} read a table outside the role: {text}",
                    attack.params
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The developer's own rows still come back through the shapes above.
    assert_eq!(as_developer[0].text(), "dev-1\t3\n");
}

#[tokio::test]
async fn names_given_as_identifier_parameters_are_checked_like_names_in_the_text() {
    let (app, _dir) = spawn().await;
    let developer = app
        .create_key_with("developer", &[("developer_id", "dev-1")])
        .await;

    let hidden = bi(
        &app,
        &developer,
        &[("param_c", "user_id")],
        "SELECT {c:Identifier} AS x FROM events LIMIT 2",
    )
    .await;
    let foreign = bi(
        &app,
        &developer,
        &[("param_t", "events_buffer")],
        "SELECT count() FROM events WHERE event_id IN {t:Identifier}",
    )
    .await;
    let injected = bi(
        &app,
        &developer,
        &[("param_c", "event` FROM events_buffer --")],
        "SELECT {c:Identifier} FROM events",
    )
    .await;
    let allowed = bi(
        &app,
        &developer,
        &[("param_c", "event"), ("param_e", "game_view")],
        "SELECT {c:Identifier} AS x, count() FROM events WHERE event = {e:String} GROUP BY x",
    )
    .await;

    assert_eq!(
        (hidden.status, hidden.code()),
        (403, 497),
        "{}",
        hidden.text()
    );
    assert!(hidden.text().contains("user_id"), "{}", hidden.text());
    assert_eq!(
        (foreign.status, foreign.code()),
        (403, 497),
        "{}",
        foreign.text()
    );
    assert!(
        foreign.text().contains("events_buffer"),
        "{}",
        foreign.text()
    );
    assert_eq!(
        (injected.status, injected.code()),
        (400, 36),
        "{}",
        injected.text()
    );
    assert!(injected.text().contains("param_c"), "{}", injected.text());
    assert_eq!(
        (allowed.status, allowed.text().as_str()),
        (200, "game_view\t3\n"),
        "a name the role may use works as a parameter: {}",
        allowed.text()
    );
}

#[tokio::test]
async fn metadata_never_names_a_hidden_column_or_answers_about_a_foreign_table() {
    let (app, _dir) = spawn().await;
    let db = app.settings().clickhouse.database.clone();
    let developer = app
        .create_key_with("developer", &[("developer_id", "dev-1")])
        .await;
    let analyst = app.create_key("analyst").await;

    let described = bi(&app, &developer, &[], "DESCRIBE TABLE events").await;
    let described_by_analyst = bi(&app, &analyst, &[], "DESCRIBE TABLE events").await;
    let has_column = bi(
        &app,
        &developer,
        &[],
        &format!("SELECT hasColumnInTable('{db}', 'events_buffer', 'user_id')"),
    )
    .await;

    assert_eq!(described.status, 200, "{}", described.text());
    let names: Vec<String> = described
        .text()
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .collect();
    assert!(names.contains(&"event".to_string()), "{names:?}");
    assert!(names.contains(&"developer_id".to_string()), "{names:?}");
    let hidden = crate::properties::shipped_role("developer").bi_hidden_columns["events"].clone();
    assert_eq!(hidden.len(), 6);
    for hidden in &hidden {
        assert!(!names.contains(hidden), "{hidden} listed: {names:?}");
    }
    let full = described_by_analyst.text().lines().count();
    assert_eq!(
        full,
        names.len() + 6,
        "the developer sees every column but the six hidden ones"
    );
    assert_eq!(
        described
            .text()
            .lines()
            .next()
            .map(|l| l.split('\t').count()),
        described_by_analyst
            .text()
            .lines()
            .next()
            .map(|l| l.split('\t').count()),
        "the answer has DESCRIBE's columns"
    );
    assert_eq!(
        (has_column.status, has_column.code()),
        (403, 497),
        "{}",
        has_column.text()
    );
}

#[tokio::test]
async fn clickhouse_errors_caused_by_the_request_are_4xx_and_query_ids_stay_per_caller() {
    let (app, _dir) = spawn().await;
    let analyst = app.create_key("analyst").await;
    let other = app.create_key("analyst").await;

    let final_clause = bi(&app, &analyst, &[], "SELECT count() FROM events FINAL").await;
    let sample = bi(&app, &analyst, &[], "SELECT count() FROM events SAMPLE 0.1").await;
    let division = bi(&app, &analyst, &[], "SELECT intDiv(1, 0)").await;
    let missing = bi(&app, &analyst, &[], "SELECT nosuchcolumn FROM events").await;
    let format = bi(&app, &analyst, &[], "SELECT 1 FORMAT NoSuchFormat").await;

    // A long query holds an id; the same id from its own caller collides, from another does not.
    let slow_sql = "SELECT sum(number) FROM numbers_mt(100000000000)";
    let slow = {
        let client = app.client.clone();
        let url = format!("{}/", app.bi_address);
        let key = analyst.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .basic_auth("x", Some(key))
                .query(&[("query_id", "shared-id"), ("max_execution_time", "20")])
                .body(slow_sql)
                .timeout(std::time::Duration::from_secs(30))
                .send()
                .await
        })
    };
    let mut same_caller = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let answer = bi(&app, &analyst, &[("query_id", "shared-id")], "SELECT 1").await;
        if answer.status != 200 {
            same_caller = Some(answer);
            break;
        }
    }
    let other_caller = bi(&app, &other, &[("query_id", "shared-id")], "SELECT 1").await;
    slow.abort();

    for (what, answer, code) in [
        ("FINAL", &final_clause, 181),
        ("SAMPLE", &sample, 141),
        ("division by zero", &division, 153),
        ("unknown column", &missing, 47),
    ] {
        assert_eq!(answer.code(), code, "{what}: {}", answer.text());
        assert!(
            (400..500).contains(&answer.status),
            "{what}: {} {}",
            answer.status,
            answer.text()
        );
    }
    assert_eq!(
        (format.status, format.code()),
        (400, 73),
        "{}",
        format.text()
    );
    let same_caller = same_caller.expect("the caller's own running id collides");
    assert_eq!(
        (same_caller.status, same_caller.code()),
        (409, 216),
        "{}",
        same_caller.text()
    );
    assert_eq!(other_caller.status, 200, "{}", other_caller.text());
}

#[tokio::test]
async fn bad_template_input_is_a_400_naming_the_parameter_never_a_5xx() {
    let (app, _dir) = spawn().await;
    let developer = app
        .create_key_with("developer", &[("developer_id", "dev-1")])
        .await;
    let long = "a".repeat(100_000);
    let many = (0..5000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");

    let mut answers = Vec::new();
    for query in [
        "from=today%2B999999999w&to=now",
        "from=now-9223372036854775807s&to=now",
        "from=today-999999d&to=now",
        "from=now%2B9223372036854775807w&to=now",
        "from=1969-12-31&to=now",
        "from=today&to=2106-02-08+00:00:00",
        "from=today-7d&to=now&limit=99999999999999999999",
        "from=today-7d&to=now&limit=-1",
        "from=today-7d&to=now&limit=1e3",
        "from=today-7d&to=now&developer_id=dev-2",
        "from=today-7d&to=now&event=%00",
        "from=%FF%FE&to=now",
        "from=today-&to=now",
        "from=today-d&to=now",
        "from=now-1%C3%A9&to=now",
    ] {
        let response = app
            .client
            .get(app.url(&format!("/v1/queries/top_items?event=game_view&{query}")))
            .bearer_auth(&developer)
            .send()
            .await
            .unwrap();
        answers.push((
            query.to_string(),
            response.status().as_u16(),
            response.text().await.unwrap(),
        ));
    }
    for body in [
        format!("{{\"from\": \"{long}\"}}"),
        format!("{{\"event\": [{many}]}}"),
        "{\"from\": {\"nested\": [[[[[[]]]]]]}}".to_string(),
        "{".to_string(),
        "[1, 2".to_string(),
        "\u{0}".to_string(),
        "{\"from\": 1e999}".to_string(),
    ] {
        let response = app
            .client
            .post(app.url("/v1/queries/top_items"))
            .bearer_auth(&developer)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        answers.push((
            body.chars().take(60).collect(),
            response.status().as_u16(),
            response.text().await.unwrap(),
        ));
    }

    for (query, status, text) in &answers {
        assert!((400..500).contains(status), "{query}: {status} {text}");
    }
    for (query, _, text) in &answers[..6] {
        assert!(
            text.contains("from") || text.contains("to:"),
            "{query}: {text}"
        );
        assert!(
            text.contains("1970-01-01") || text.contains("out of range"),
            "{query}: {text}"
        );
    }
}
