use std::io::Write;

use crate::helpers::{cli_env, run_cli, stderr, stdout, TestDatabases};

#[tokio::test]
async fn import_loads_historic_events_and_writes_the_first_rejects_with_their_origin() {
    let databases = TestDatabases::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson.gz");
    let rejects = dir.path().join("rejects.ndjson");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&input).unwrap(),
        flate2::Compression::fast(),
    );
    for i in 0..250 {
        // Two years ago: outside the live window, fine for imports.
        writeln!(
            gz,
            r#"{{"event":"old_view","user_id":"u{i}","timestamp":"2024-11-01T10:00:00Z"}}"#
        )
        .unwrap();
    }
    writeln!(gz, r#"{{"event":"no user"}}"#).unwrap();
    writeln!(gz, "{{not json").unwrap();
    writeln!(
        gz,
        r#"{{"event":"purchase","user_id":"b","properties":{{"amount":"lots"}}}}"#
    )
    .unwrap();
    gz.finish().unwrap();
    let mut env = cli_env(&databases.settings);
    env.push(("CHGATE__GEOIP__PATH", String::new()));

    let output = run_cli(
        &[
            "import",
            input.to_str().unwrap(),
            "--rejects",
            rejects.to_str().unwrap(),
            "--max-rejects",
            "2",
        ],
        &env,
    );

    assert!(output.status.success(), "{}", stderr(&output));
    let summary = stdout(&output);
    assert!(
        summary.contains("read 253 events, accepted 250, rejected 3"),
        "{summary}"
    );
    assert!(summary.contains("missing_field"), "{summary}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "only the first --max-rejects are written");
    assert_eq!(lines[0]["origin"], format!("{}:251", input.display()));
    assert_eq!(lines[0]["field"], "user_id");
    let stored: u64 = clickhouse::Client::default()
        .with_url(&databases.settings.clickhouse.url)
        .with_database(&databases.settings.clickhouse.database)
        .query("SELECT count() FROM events_buffer WHERE event = 'old_view' AND toYear(timestamp) = 2024")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(stored, 250);
}

#[tokio::test]
async fn seed_sends_generated_traffic_through_the_pipeline() {
    let databases = TestDatabases::migrated().await;

    let output = run_cli(
        &["seed", "--users", "50", "--days", "7"],
        &cli_env(&databases.settings),
    );

    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("rejected 0"),
        "{}",
        stdout(&output)
    );
    let client = clickhouse::Client::default()
        .with_url(&databases.settings.clickhouse.url)
        .with_database(&databases.settings.clickhouse.database);
    let (users, purchases): (u64, u64) = client
        .query("SELECT uniqExact(actor_id), countIf(event = 'purchase') FROM events_buffer WHERE is_bot = 0")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(users, 50);
    assert!(purchases > 0);
}
