use std::time::{Duration, Instant};

use crate::helpers::{cli_env, run_cli, stderr, stdout, TestApp};

#[tokio::test]
async fn a_created_key_authenticates_and_is_refused_within_five_seconds_of_revocation() {
    let app = TestApp::spawn().await;
    let env = cli_env(app.settings());

    let created = run_cli(
        &[
            "keys",
            "create",
            "--name",
            "dash",
            "--role",
            "analyst",
            "--attr",
            "tenant_id=7",
        ],
        &env,
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let key = stdout(&created).lines().last().unwrap().to_string();
    assert!(key.starts_with("chg_"), "{key}");

    let whoami = app
        .client
        .get(app.url("/v1/whoami"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), 200);
    let principal: serde_json::Value = whoami.json().await.unwrap();
    assert_eq!(principal["name"], "dash");
    assert_eq!(principal["role"], "analyst");
    assert_eq!(principal["attributes"]["tenant_id"], "7");

    let revoked = run_cli(&["keys", "revoke", "dash"], &env);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let started = Instant::now();
    loop {
        let response = app
            .client
            .get(app.url("/v1/whoami"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        if response.status() == 401 {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "revoked_api_key");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still accepted after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_x_api_key_header_authenticates_too() {
    let app = TestApp::spawn().await;
    let key = app.create_key("service").await;

    let response = app
        .client
        .get(app.url("/v1/whoami"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn missing_and_unknown_keys_get_401_with_distinct_codes() {
    let app = TestApp::spawn().await;

    let missing = app.get("/v1/whoami").await;
    let unknown = app
        .client
        .get(app.url("/v1/whoami"))
        .bearer_auth("chg_0000000000000000000000000000000000000000000000000000000000000000")
        .send()
        .await
        .unwrap();

    assert_eq!(missing.status(), 401);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_credentials");
    assert_eq!(unknown.status(), 401);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn keys_list_shows_keys_without_their_secrets() {
    let app = TestApp::spawn().await;
    let key = app.create_key("marketer").await;
    let env = cli_env(app.settings());

    let listed = run_cli(&["keys", "list"], &env);

    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = stdout(&listed);
    assert!(text.contains("marketer"), "{text}");
    assert!(
        text.contains(&key[..12]),
        "the prefix identifies the key: {text}"
    );
    assert!(!text.contains(&key), "the secret is never listed");
}

#[tokio::test]
async fn creating_a_key_with_an_unknown_role_fails_naming_the_roles() {
    let app = TestApp::spawn().await;

    let created = run_cli(
        &["keys", "create", "--name", "x", "--role", "superuser"],
        &cli_env(app.settings()),
    );

    assert!(!created.status.success());
    assert!(
        stderr(&created).contains("unknown role \"superuser\""),
        "{}",
        stderr(&created)
    );
    assert!(stderr(&created).contains("analyst"));
}

#[tokio::test]
async fn admins_manage_keys_over_the_api_and_others_may_not() {
    let app = TestApp::spawn().await;
    let admin = app.create_key("admin").await;
    let analyst = app.create_key("analyst").await;

    let created = app
        .client
        .post(app.url("/v1/admin/keys"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "partner", "role": "developer", "attributes": {"developer_id": "dev-9"}}))
        .send()
        .await
        .unwrap();
    let bad = app
        .client
        .post(app.url("/v1/admin/keys"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "x", "role": 7}))
        .send()
        .await
        .unwrap();
    let denied = app
        .client
        .get(app.url("/v1/admin/keys"))
        .bearer_auth(&analyst)
        .send()
        .await
        .unwrap();

    assert_eq!(created.status(), 201);
    let body: serde_json::Value = created.json().await.unwrap();
    let secret = body["secret"].as_str().unwrap().to_string();
    assert_eq!(body["key"]["attributes"]["developer_id"], "dev-9");
    assert_eq!(bad.status(), 400);
    let bad: serde_json::Value = bad.json().await.unwrap();
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("role:"),
        "{bad}"
    );
    assert_eq!(denied.status(), 403);
    let listed: serde_json::Value = app
        .client
        .get(app.url("/v1/admin/keys"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["name"] == "partner"));
    assert!(
        !listed.to_string().contains(&secret),
        "secrets are never listed"
    );

    let revoked = app
        .client
        .delete(app.url("/v1/admin/keys/partner"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let started = Instant::now();
    loop {
        let status = app
            .client
            .get(app.url("/v1/whoami"))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_key_revoked_through_one_gateway_is_refused_by_every_gateway_within_five_seconds() {
    let databases = crate::helpers::TestDatabases::migrated().await;
    let other = TestApp::start(databases.borrowed(|s| {
        s.ingest.wal_dir = s.ingest.wal_dir.join("second");
    }))
    .await;
    let first = TestApp::start(databases).await;
    let admin = first.create_key("admin").await;
    let created = first
        .post_json(
            "/v1/admin/keys",
            &admin,
            &serde_json::json!({"name": "shared", "role": "analyst"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let secret = created.json::<serde_json::Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let status = |app: &TestApp| {
        let request = app.client.get(app.url("/v1/whoami")).bearer_auth(&secret);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Both gateways have it in their key caches.
    assert_eq!((status(&first).await, status(&other).await), (200, 200));

    let revoked = first
        .client
        .delete(first.url("/v1/admin/keys/shared"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let started = Instant::now();
    while status(&other).await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the other gateway still accepts the key after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status(&first).await, 401);
}
