//! The result cache: hits, bypass, single-flight (counted in system.query_log), Redis outages.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::TestApp;

fn catalog() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let quick = "/*---\ndescription = \"x\"\nroles = [\"analyst\", \"marketer\"]\ncache_ttl_secs = 60\n[params.n]\ntype = \"UInt32\"\ndefault = 1\n---*/\nSELECT toUInt32({n:UInt32}) AS n, rand() AS r\n";
    let slowish = "/*---\ndescription = \"x\"\nroles = [\"analyst\"]\ncache_ttl_secs = 60\n---*/\nSELECT count() AS n FROM numbers(100000000) WHERE NOT ignore(sipHash64(number))\n";
    let policy = "[roles.analyst]\ntemplates = [\"*\"]\ncache_bypass = true\n[roles.marketer]\ntemplates = [\"*\"]\n";
    for (path, text) in [
        ("quick/v1.sql", quick),
        ("slowish/v1.sql", slowish),
        ("access.toml", policy),
    ] {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

async fn call(app: &TestApp, key: &str, path: &str, no_cache: bool) -> (String, Value) {
    let mut request = app.client.get(app.url(path)).bearer_auth(key);
    if no_cache {
        request = request.header("Cache-Control", "no-cache");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cache = response.headers()["x-cache"].to_str().unwrap().to_string();
    // A JSON result is held whole (cached or not), so it goes out with its length, not chunked.
    let length = response.content_length().expect("a Content-Length");
    let body = response.bytes().await.unwrap();
    assert_eq!(length, body.len() as u64);
    (cache, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn a_repeated_call_is_a_hit_and_no_cache_bypasses_only_for_roles_allowed_to() {
    let dir = catalog();
    let path = dir.path().to_path_buf();
    let app = TestApp::spawn_with(move |s| {
        s.access.policy = path.join("access.toml");
        s.catalog.dir = path;
    })
    .await;
    let analyst = app.create_key("analyst").await;
    let marketer = app.create_key("marketer").await;

    let (first, a) = call(&app, &analyst, "/v1/queries/quick?n=5", false).await;
    let (second, b) = call(&app, &analyst, "/v1/queries/quick?n=5", false).await;
    let (other, _) = call(&app, &analyst, "/v1/queries/quick?n=6", false).await;
    let (bypass, c) = call(&app, &analyst, "/v1/queries/quick?n=5", true).await;
    let (ignored, d) = call(&app, &marketer, "/v1/queries/quick?n=5", true).await;

    assert_eq!(
        (first.as_str(), second.as_str(), other.as_str()),
        ("MISS", "HIT", "MISS")
    );
    assert_eq!(a["data"], b["data"], "the cached body");
    assert_eq!(bypass, "BYPASS");
    assert_ne!(
        c["data"][0]["r"], a["data"][0]["r"],
        "a bypass runs the query"
    );
    assert_eq!(ignored, "HIT", "marketers may not bypass the cache");
    assert_eq!(d["data"], c["data"], "the bypass refreshed the entry");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for (outcome, count) in [("hit", 2), ("miss", 2), ("bypass", 1)] {
        let line = format!("chgate_cache_requests_total{{outcome=\"{outcome}\"}} {count}");
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn concurrent_identical_misses_run_one_clickhouse_query() {
    let dir = catalog();
    let path = dir.path().to_path_buf();
    let app = TestApp::spawn_with(move |s| {
        s.access.policy = path.join("access.toml");
        s.catalog.dir = path;
    })
    .await;
    let key = app.create_key("analyst").await;

    let calls: Vec<_> = (0..6)
        .map(|_| {
            let request = app
                .client
                .get(app.url("/v1/queries/slowish"))
                .bearer_auth(&key);
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                match response.headers().get("x-cache") {
                    Some(cache) => cache.to_str().unwrap().to_string(),
                    None => format!(
                        "no X-Cache: {} {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    ),
                }
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }

    assert!(
        statuses.iter().all(|s| s == "MISS" || s == "HIT"),
        "{statuses:?}"
    );
    let client = app.clickhouse();
    client.query("SYSTEM FLUSH LOGS").execute().await.unwrap();
    let runs: u64 = client
        .query("SELECT count() FROM system.query_log WHERE type = 'QueryFinish' AND current_database = currentDatabase() AND log_comment LIKE '%\"template\":\"slowish\"%'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(runs, 1, "six callers, one query");
    let joined = crate::helpers::metric_value(&app, "chgate_cache_singleflight_joins_total").await;
    let hits = statuses.iter().filter(|s| *s == "HIT").count() as f64;
    assert_eq!(
        joined + hits,
        5.0,
        "the other five joined the running query or found its result"
    );
}

#[tokio::test]
async fn when_redis_stops_mid_test_responses_stay_200() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let start_redis = || {
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)")
    };
    let mut redis = start_redis();
    let redis_keys = || async move {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("KEYS")
            .arg("chgate:result:*")
            .query_async::<Vec<String>>(&mut conn)
            .await
            .ok()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let templates = catalog();
    let path = templates.path().to_path_buf();
    let app = TestApp::spawn_with(move |s| {
        s.access.policy = path.join("access.toml");
        s.catalog.dir = path;
        s.redis.url = Some(chgate::config::Secret::new(format!(
            "redis://127.0.0.1:{port}"
        )));
    })
    .await;
    let key = app.create_key("analyst").await;
    let (first, _) = call(&app, &key, "/v1/queries/quick?n=1", false).await;
    let stored: Option<Vec<u8>> = {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("chgate:result:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        redis::cmd("GET")
            .arg(&keys[0])
            .query_async(&mut conn)
            .await
            .unwrap()
    };

    redis.kill().unwrap();
    redis.wait().unwrap();
    let (cached, _) = call(&app, &key, "/v1/queries/quick?n=1", false).await;
    let (fresh, body) = call(&app, &key, "/v1/queries/quick?n=2", false).await;
    let (again, _) = call(&app, &key, "/v1/queries/quick?n=2", false).await;

    assert_eq!(first, "MISS");
    assert!(
        stored.is_some_and(|v| !v.is_empty()),
        "the entry reached Redis"
    );
    assert_eq!(cached, "HIT");
    assert_eq!(fresh, "MISS");
    assert_eq!(body["data"][0]["n"], 2);
    assert_eq!(
        again, "HIT",
        "the in-process cache serves while Redis is down"
    );
    assert!(crate::helpers::metric_value(&app, "chgate_cache_redis_errors_total").await > 0.0);

    // Redis comes back (empty): the gateway reconnects on its own and stores there again.
    let mut redis = start_redis();
    let started = std::time::Instant::now();
    let mut n = 100;
    loop {
        n += 1;
        call(&app, &key, &format!("/v1/queries/quick?n={n}"), false).await;
        if redis_keys().await.is_some_and(|k| !k.is_empty()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no entry reached the restarted Redis"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    redis.kill().unwrap();
    redis.wait().unwrap();
}
