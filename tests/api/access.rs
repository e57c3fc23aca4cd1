//! Roles against templates, row-level security, and JWT authentication.

use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::{metric_value, TestApp, JWT_SECRET};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn token(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

async fn whoami(app: &TestApp, credential: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url("/v1/whoami"))
        .bearer_auth(credential)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_valid_hs256_token_authenticates_with_its_role_and_claims() {
    let app = TestApp::spawn().await;

    let (status, body) = whoami(
        &app,
        &token(
            json!({"sub": "ann", "role": "developer", "developer_id": "dev-3", "exp": now() + 600}),
        ),
    )
    .await;
    let (roles_status, roles_body) = whoami(
        &app,
        &token(json!({"sub": "bo", "roles": ["unknown", "marketer"], "exp": now() + 600})),
    )
    .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "jwt:ann");
    assert_eq!(body["role"], "developer");
    assert_eq!(body["attributes"]["developer_id"], "dev-3");
    assert_eq!(roles_status, 200);
    assert_eq!(roles_body["role"], "marketer");
}

#[tokio::test]
async fn tampered_expired_and_foreign_tokens_get_401_with_specific_codes() {
    let app = TestApp::spawn().await;
    let good = token(json!({"sub": "x", "role": "analyst", "exp": now() + 600}));
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"sub": "x", "role": "admin", "exp": now() + 600}).to_string());
    parts[1] = claims.clone();
    let tampered = parts.join(".");
    let none_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{claims}.");
    let wrong_key = encode(
        &Header::default(),
        &json!({"sub": "x", "role": "admin", "exp": now() + 600}),
        &EncodingKey::from_secret(b"another-secret"),
    )
    .unwrap();
    let rsa_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
    let rs256 = format!("{rsa_header}.{claims}.c2lnbmF0dXJl");

    let cases = [
        (tampered, "invalid_token_signature"),
        (alg_none, "invalid_token_algorithm"),
        (wrong_key, "invalid_token_signature"),
        (rs256, "invalid_token_algorithm"),
        (
            token(json!({"sub": "x", "role": "admin", "exp": now() - 3600})),
            "token_expired",
        ),
        (
            token(json!({"sub": "x", "role": "admin", "exp": now() + 3600, "nbf": now() + 1800})),
            "token_not_yet_valid",
        ),
        (token(json!({"sub": "x", "role": "admin"})), "invalid_token"),
        (
            token(json!({"sub": "x", "role": "root", "exp": now() + 600})),
            "token_without_role",
        ),
    ];
    for (credential, code) in cases {
        let (status, body) = whoami(&app, &credential).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some(code)),
            "{body}"
        );
    }
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let app = TestApp::spawn_with(|s| {
        s.access.jwt.issuer = Some("https://id.example".into());
        s.access.jwt.audience = Some("chgate".into());
    })
    .await;
    let base = json!({"sub": "x", "role": "analyst", "exp": now() + 600, "iss": "https://id.example", "aud": "chgate"});
    let mut wrong_iss = base.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    let mut wrong_aud = base.clone();
    wrong_aud["aud"] = json!("other");

    assert_eq!(whoami(&app, &token(base)).await.0, 200);
    assert_eq!(
        whoami(&app, &token(wrong_iss)).await.1["error"]["code"],
        "invalid_token_issuer"
    );
    assert_eq!(
        whoami(&app, &token(wrong_aud)).await.1["error"]["code"],
        "invalid_token_audience"
    );
}

/// Every default role against every shipped template: the policy and the template's roles decide.
#[tokio::test]
async fn each_default_role_may_run_exactly_the_templates_its_policy_and_the_template_allow() {
    let app = TestApp::spawn().await;
    let policy = chgate::access::policy::Policy::load(&app.settings().access.policy).unwrap();
    let catalog = chgate::catalog::Catalog::load(&app.settings().catalog.dir, "analytics").unwrap();
    for role in chgate::access::auth::ROLES {
        let key = app
            .create_key_with(role, &[("developer_id", "dev-1")])
            .await;
        for (name, versions) in catalog.names() {
            let template = versions.values().next_back().unwrap();
            let allowed = template.meta().roles.iter().any(|r| r == role)
                && policy
                    .role(role)
                    .is_some_and(|p| p.allows_template(name, template.version()));
            let example = &template.meta().examples[0];
            let response = app
                .client
                .post(app.url(&format!("/v1/queries/{name}")))
                .bearer_auth(&key)
                .json(&example.params)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert_eq!(
                status,
                if allowed { 200 } else { 403 },
                "{role} running {name}: {}",
                response.text().await.unwrap()
            );
        }
    }
}

/// Three `game_view` events of dev-1's item and five of dev-2's, an hour ago.
pub(crate) async fn seed_two_developers(app: &TestApp) {
    let now = chrono::Utc::now();
    let mut events = Vec::new();
    for (developer, n) in [("dev-1", 3), ("dev-2", 5)] {
        for i in 0..n {
            events.push(json!({"event": "game_view", "user_id": format!("{developer}-fan-{i}"), "timestamp": (now - chrono::Duration::hours(1)).to_rfc3339(),
                               "properties": {"item_id": format!("{developer}-game"), "developer_id": developer}}));
        }
    }
    chgate::cli::check::live::load_events_into(&app.clickhouse(), app.settings(), &events)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_developer_sees_only_their_own_items_whatever_they_pass() {
    let app = TestApp::spawn().await;
    seed_two_developers(&app).await;
    let key = app
        .create_key_with("developer", &[("developer_id", "dev-1")])
        .await;
    let jwt = token(
        json!({"sub": "dev1", "role": "developer", "developer_id": "dev-1", "exp": now() + 600}),
    );

    for credential in [&key, &jwt] {
        let response = app
            .client
            .get(app.url("/v1/queries/top_items?event=game_view&from=today-1d&to=now"))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["data"],
            json!([{"item": "dev-1-game", "events": 3, "users": 3}]),
            "{body}"
        );
    }
    let analyst = app.create_key("analyst").await;
    let all: Value = app
        .client
        .get(app.url("/v1/queries/top_items?event=game_view&from=today-1d&to=now"))
        .bearer_auth(&analyst)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["rows"], 2);
}

#[tokio::test]
async fn row_filters_cannot_be_bypassed_by_params_casing_missing_claims_or_other_tables() {
    let dir = tempfile::tempdir().unwrap();
    let templates = [
        ("mine/v1.sql", "/*---\ndescription = \"x\"\nroles = [\"developer\", \"analyst\"]\n[params.developer_id]\ntype = \"String\"\nrequired = true\n[[examples]]\nname = \"d\"\nparams = { developer_id = \"dev-1\" }\n---*/\nSELECT count() AS n FROM events WHERE developer_id = {developer_id:String}\n"),
        ("rollup/v1.sql", "/*---\ndescription = \"x\"\nroles = [\"developer\"]\n---*/\nSELECT count() AS n FROM dau_daily\n"),
    ];
    for (path, text) in templates {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let policy_path = dir.path().join("access.toml");
    std::fs::write(&policy_path, "[roles.developer]\ntemplates = [\"*\"]\n[roles.developer.row_filters]\nevents = \"developer_id = {claim.developer_id}\"\n[roles.analyst]\ntemplates = [\"*\"]\n").unwrap();
    let (catalog_dir, policy) = (dir.path().to_path_buf(), policy_path.clone());
    let app = TestApp::spawn_with(move |s| {
        s.catalog.dir = catalog_dir;
        s.access.policy = policy;
    })
    .await;
    seed_two_developers(&app).await;
    let key = app
        .create_key_with("developer", &[("developer_id", "dev-1")])
        .await;
    let no_claim = app.create_key("developer").await;
    let get = |path: &'static str, key: String| {
        let client = app.client.clone();
        let url = app.url(path);
        async move {
            let response = client.get(url).bearer_auth(key).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };

    let fixed = get("/v1/queries/mine", key.clone()).await;
    let other = get("/v1/queries/mine?developer_id=dev-2", key.clone()).await;
    let casing = get("/v1/queries/mine?Developer_Id=dev-2", key.clone()).await;
    let array = get(
        "/v1/queries/mine?developer_id=dev-1&developer_id=dev-2",
        key.clone(),
    )
    .await;
    let missing = get("/v1/queries/mine", no_claim).await;
    let rollup = get("/v1/queries/rollup", key.clone()).await;

    assert_eq!(fixed.0, 200, "{}", fixed.1);
    assert_eq!(
        fixed.1["data"][0]["n"], 3,
        "the parameter is fixed to the claim"
    );
    assert_eq!(
        (other.0, other.1["error"]["code"].as_str()),
        (403, Some("row_filter_param"))
    );
    assert_eq!(casing.0, 400, "{}", casing.1);
    assert!(array.0 == 400 || array.0 == 403, "{}", array.1);
    assert_eq!(
        (missing.0, missing.1["error"]["code"].as_str()),
        (403, Some("missing_claim"))
    );
    assert_eq!(
        (rollup.0, rollup.1["error"]["code"].as_str()),
        (403, Some("table_not_allowed"))
    );
}

#[tokio::test]
async fn the_shipped_policy_file_is_valid_against_the_catalog() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = crate::helpers::run_cli(
        &["access", "check"],
        &[
            (
                "CHGATE__ACCESS__POLICY",
                root.join("config/access.toml").display().to_string(),
            ),
            (
                "CHGATE__CATALOG__DIR",
                root.join("queries").display().to_string(),
            ),
        ],
    );

    assert!(
        output.status.success(),
        "{}{}",
        crate::helpers::stdout(&output),
        crate::helpers::stderr(&output)
    );
}

#[tokio::test]
async fn the_policy_file_reloads_while_running_and_a_broken_edit_keeps_the_previous_policy() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/access.toml");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("access.toml");
    let original = std::fs::read_to_string(&shipped).unwrap();
    std::fs::write(&policy, &original).unwrap();
    let app = TestApp::spawn_with(|s| {
        s.access.policy = policy.clone();
        s.access.reload_poll_ms = 50;
    })
    .await;
    let support = app.create_key("support").await;
    let run = |key: String| {
        let client = app.client.clone();
        let url = app.url("/v1/queries/dau?from=2026-01-01&to=2026-01-31");
        async move {
            let response = client.get(url).bearer_auth(key).send().await.unwrap();
            response.status().as_u16()
        }
    };
    // Waits (bounded) for the running gateway to answer `want`.
    let eventually = |want: u16| {
        let run = &run;
        let support = support.clone();
        async move {
            let mut last = 0;
            for _ in 0..100 {
                last = run(support.clone()).await;
                if last == want {
                    return last;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            last
        }
    };
    let before = run(support.clone()).await;

    let revoked = original.replace(
        r#"templates = ["user_profile", "dau", "active_users", "event_trends", "ops_usage"]"#,
        r#"templates = ["user_profile", "active_users", "event_trends", "ops_usage"]"#,
    );
    assert_ne!(
        revoked, original,
        "the support role's template list is where the test expects it"
    );
    std::fs::write(&policy, &revoked).unwrap();
    let after_revoke = eventually(403).await;
    let reloads_before = metric_value(&app, "chgate_access_reloads_total").await;
    std::fs::write(
        &policy,
        format!("{original}\n[roles.support.limits]\nburst = \"many\"\n"),
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after_broken = run(support.clone()).await;
    let reloads_after = metric_value(&app, "chgate_access_reloads_total").await;

    assert_eq!(before, 200, "support may run dau in the shipped policy");
    assert_eq!(
        after_revoke, 403,
        "the edited policy is picked up while running"
    );
    assert_eq!(
        after_broken, 403,
        "a broken file (even one granting dau again) leaves the previous policy in force"
    );
    assert!(
        reloads_after > reloads_before,
        "the rejected reload is counted"
    );
}

#[tokio::test]
async fn personal_columns_are_pseudonymized_and_downloads_refused_by_role() {
    let app = TestApp::spawn().await;
    crate::helpers::load_reference_events(&app).await;
    let user: String = app
        .clickhouse()
        .query("SELECT any(user_id) FROM events WHERE user_id != ''")
        .fetch_one()
        .await
        .unwrap();
    let profile = |role: &'static str| {
        let app = &app;
        let user = user.clone();
        async move {
            let key = app.create_key(role).await;
            let body = app
                .get_json(&format!("/v1/queries/user_profile?user_id={user}"), &key)
                .await;
            body["data"][0].clone()
        }
    };
    let raw = profile("support").await;
    let masked = profile("analyst").await;
    let masked_again = profile("analyst").await;
    let download = |role: &'static str| {
        let app = &app;
        async move {
            let key = app.create_key(role).await;
            let response = app
                .client
                .get(app.url("/v1/queries/dau?from=2026-01-01&to=2026-01-31&format=csv"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (support_csv, support_body) = download("support").await;
    let (analyst_csv, _) = download("analyst").await;

    assert_eq!(
        raw["user_id"],
        user.as_str(),
        "a role with pii sees the id: {raw}"
    );
    let pseudonym = masked["user_id"].as_str().unwrap();
    assert_eq!(pseudonym.len(), 16, "{masked}");
    assert!(pseudonym.bytes().all(|b| b.is_ascii_hexdigit()) && pseudonym != user);
    assert_eq!(masked_again["user_id"], pseudonym, "pseudonyms are stable");
    assert_eq!(
        masked["events"], raw["events"],
        "only the personal column changes"
    );
    assert_eq!(support_csv, 403, "{support_body}");
    assert!(
        support_body.contains("export_not_allowed"),
        "{support_body}"
    );
    assert_eq!(analyst_csv, 200);
}

#[tokio::test]
async fn access_check_names_each_problem_of_a_broken_policy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("access.toml");
    std::fs::write(
        &policy,
        r#"
[roles.analyst]
templates = ["dau", "no_such_*", "funnel@v9"]
bi_tables = ["events", "secrets"]
[roles.analyst.row_filters]
events = "tenant = {claim.tenant_id}"
[roles.analyst.bi_hidden_columns]
events = ["user_id", "secret_column"]
[roles.support]
ingest_events = ["purchase"]
"#,
    )
    .unwrap();
    let output = crate::helpers::run_cli(
        &["access", "check"],
        &[
            ("CHGATE__ACCESS__POLICY", policy.display().to_string()),
            (
                "CHGATE__CATALOG__DIR",
                root.join("queries").display().to_string(),
            ),
        ],
    );
    let text = crate::helpers::stdout(&output);

    assert!(!output.status.success(), "{text}");
    for expected in [
        r#"roles.analyst.templates: "no_such_*" matches no template"#,
        r#"roles.analyst.templates: "funnel@v9": no matching template has version v9"#,
        r#"roles.analyst: table "secrets" does not exist"#,
        r#"roles.analyst.row_filters.events: events has no column "tenant""#,
        "roles.support.ingest_events: set, but the role may not ingest",
        r#"roles.analyst.bi_hidden_columns.events: events has no column "secret_column""#,
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
}
