use std::io::Write;

use chgate::config::{Compression, LogFormat, Settings};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_apply_without_a_file_or_environment() {
    let settings = Settings::load_from(None, env(&[])).unwrap();

    assert_eq!(settings.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(settings.clickhouse.url, "http://127.0.0.1:8123");
    assert_eq!(settings.clickhouse.database, "analytics");
    assert!(settings.redis.url.is_none());
}

#[test]
fn chgate_section_key_variables_override_the_file() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "[server]\nlisten = \"0.0.0.0:9000\"\n[clickhouse]\ndatabase = \"from_file\"\ncompression = \"none\"\n[telemetry]\nlog_format = \"json\""
    )
    .unwrap();

    let settings = Settings::load_from(
        Some(file.path()),
        env(&[
            ("CHGATE__SERVER__LISTEN", "127.0.0.1:7000"),
            ("CHGATE__CLICKHOUSE__PROBE_TIMEOUT_MS", "250"),
            ("CHGATE_UNRELATED", "ignored"),
        ]),
    )
    .unwrap();

    assert_eq!(settings.server.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(settings.clickhouse.database, "from_file");
    assert_eq!(settings.clickhouse.compression, Compression::None);
    assert_eq!(settings.clickhouse.probe_timeout_ms, 250);
    assert_eq!(settings.telemetry.log_format, LogFormat::Json);
}

#[test]
fn database_url_and_redis_url_are_honoured_and_chgate_variables_win() {
    let plain = Settings::load_from(
        None,
        env(&[
            ("DATABASE_URL", "postgres://a@h/db1"),
            ("REDIS_URL", "redis://r:1"),
        ]),
    )
    .unwrap();
    let overridden = Settings::load_from(
        None,
        env(&[
            ("DATABASE_URL", "postgres://a@h/db1"),
            ("CHGATE__POSTGRES__URL", "postgres://b@h/db2"),
        ]),
    )
    .unwrap();

    assert_eq!(plain.postgres.url.expose(), "postgres://a@h/db1");
    assert_eq!(plain.redis.url.unwrap().expose(), "redis://r:1");
    assert_eq!(overridden.postgres.url.expose(), "postgres://b@h/db2");
}

#[test]
fn unknown_keys_are_rejected_in_the_file_and_in_the_environment() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "[server]\nlisten_addr = \"0.0.0.0:1\"").unwrap();

    let from_file = Settings::load_from(Some(file.path()), env(&[])).unwrap_err();
    let from_env =
        Settings::load_from(None, env(&[("CHGATE__CLICKHOUSE__URLL", "x")])).unwrap_err();

    assert!(from_file.to_string().contains("listen_addr"), "{from_file}");
    assert!(from_env.to_string().contains("urll"), "{from_env}");
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let error = Settings::load_from(
        Some(std::path::Path::new("/nonexistent/chgate.toml")),
        env(&[]),
    )
    .unwrap_err();

    assert!(error.to_string().contains("/nonexistent/chgate.toml"));
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let settings = Settings::load_from(
        None,
        env(&[
            ("DATABASE_URL", "postgres://u:hunter2@h/db"),
            ("CHGATE__CLICKHOUSE__PASSWORD", "s3cr3t"),
        ]),
    )
    .unwrap();

    let debug = format!("{settings:?}");

    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
}

#[test]
fn the_example_config_file_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chgate.example.toml");

    Settings::load_from(Some(&path), env(&[])).unwrap();
}
