//! Webhook mode (`serve --webhook`): Event Grid handshakes, batches, mandatory authentication
//! (shared key and Entra ID), limits, and one Reconcile leader among replicas.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const KEY: &str = "whk_0123456789abcdef_secret";

async fn github(times: u64) -> MockServer {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .expect(times)
        .mount(&gh)
        .await;
    gh
}

async fn spawn(gh: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    let uri = gh.uri();
    let mut env = vec![
        ("GITHUB_API_URL", uri.as_str()),
        ("GITHUB_TOKEN", "ghp_webhook"),
        ("AUTODEPLOY_WEBHOOK_KEY", KEY),
    ];
    env.extend_from_slice(extra);
    TestApp::spawn_webhook(&standard_config(), &env).await
}

fn credit(version: &str) -> Value {
    model_event("credit-risk", version, json!({"stage": "production"}))
}

#[tokio::test]
async fn the_subscription_validation_and_abuse_protection_handshakes_are_answered() {
    let gh = github(0).await;
    let app = spawn(&gh, &[]).await;
    let validation: Value = serde_json::from_str(include_str!(
        "../fixtures/subscription_validation.eventgrid.json"
    ))
    .unwrap();

    let reply = app
        .request(Method::POST, "/api/events")
        .header("aeg-event-type", "SubscriptionValidation")
        .header("x-autodeploy-key", KEY)
        .json(&validation)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(
        reply.json::<Value>().await.unwrap(),
        json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );

    let options = app
        .request(Method::OPTIONS, &format!("/api/events?code={KEY}"))
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 200);
    assert_eq!(
        options.headers()["webhook-allowed-origin"],
        "eventgrid.azure.net"
    );
    assert_eq!(options.headers()["allow"], "POST");
    let health = app.request(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn batches_in_both_schemas_act_once_per_version_and_skip_a_malformed_event() {
    let gh = github(3).await;
    let app = spawn(&gh, &[]).await;

    // Event Grid array: a duplicate pair, another version, and one malformed event.
    let batch = json!([credit("1"), credit("1"), credit("2"), {"id": "bad", "eventType": "Microsoft.MachineLearningServices.ModelRegistered"}]);
    let reply = app
        .request(Method::POST, "/api/events")
        .header("aeg-event-type", "Notification")
        .header("x-autodeploy-key", KEY)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let results: Value = reply.json().await.unwrap();
    let decisions: Vec<&str> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decisions,
        ["dispatched", "duplicate", "dispatched", "malformed"]
    );

    // CloudEvents: a batch and a single event, without aeg-event-type (a developer with curl).
    let mut ce = cloud_event("credit-risk", "3");
    ce["data"]["modelTags"] = json!({"stage": "production"});
    let reply = app
        .request(Method::POST, "/api/events")
        .header("x-autodeploy-key", KEY)
        .header("content-type", "application/cloudevents-batch+json")
        .body(json!([ce.clone(), ce.clone()]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let single = app
        .request(Method::POST, "/api/events")
        .header("x-autodeploy-key", KEY)
        .header("content-type", "application/cloudevents+json")
        .body(ce.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 200);
    assert_eq!(
        single.json::<Value>().await.unwrap()["results"][0]["decision"],
        "duplicate"
    );
}

#[tokio::test]
async fn the_shared_key_is_required_and_a_refused_request_touches_nothing() {
    let gh = github(0).await;
    let app = spawn(&gh, &[]).await;
    let body = json!([credit("4")]);

    for (name, request) in [
        ("missing", app.request(Method::POST, "/api/events")),
        (
            "wrong header",
            app.request(Method::POST, "/api/events")
                .header("x-autodeploy-key", "whk_0123456789abcdef_secreT"),
        ),
        (
            "wrong code",
            app.request(Method::POST, "/api/events?code=nope"),
        ),
    ] {
        let reply = request.json(&body).send().await.unwrap();
        assert_eq!(reply.status(), 401, "{name}");
    }
    let by_code = app
        .request(Method::POST, &format!("/api/events?code={KEY}"))
        .json(&json!([model_event("nobody", "1", json!({}))]))
        .send()
        .await
        .unwrap();
    assert_eq!(by_code.status(), 200);

    // The key never shows up in what the server writes, URLs included.
    for text in [app.stdout(), app.stderr()] {
        assert!(
            !text.contains(KEY) && !text.contains("0123456789abcdef"),
            "the key leaked"
        );
    }
}

#[tokio::test]
async fn bodies_that_are_not_json_or_too_large_are_refused() {
    let gh = github(0).await;
    let app = spawn(&gh, &[]).await;

    let not_json = app
        .request(Method::POST, "/api/events")
        .header("x-autodeploy-key", KEY)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let huge = app
        .request(Method::POST, "/api/events")
        .header("x-autodeploy-key", KEY)
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_down_answers_503() {
    let gh = github(0).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let storage = azurite_at(closed);
    let app = spawn(&gh, &[("AUTODEPLOY_STORAGE", storage.as_str())]).await;

    let reply = app
        .request(Method::POST, "/api/events")
        .header("x-autodeploy-key", KEY)
        .json(&json!([credit("5")]))
        .send()
        .await
        .unwrap();

    assert_eq!(reply.status(), 503);
}

#[test]
fn the_server_refuses_to_start_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("autodeploy.yml"), standard_config()).unwrap();
    let (code, _, stderr) = run_cli(
        dir.path(),
        &["serve", "--webhook", "--bind", "127.0.0.1:0"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("no authentication configured"), "{stderr}");
    let (code, _, stderr) = run_cli(
        dir.path(),
        &["serve", "--webhook", "--bind", "127.0.0.1:0"],
        &[("AUTODEPLOY_WEBHOOK_KEY", "short")],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("at least 16 characters"), "{stderr}");
}

// ── Microsoft Entra ID ──

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const AUDIENCE: &str = "api://aml-autodeploy";

async fn fake_openid() -> MockServer {
    let idp = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/metadata"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"issuer": "x", "jwks_uri": format!("{}/keys", idp.uri())})),
        )
        .mount(&idp)
        .await;
    let jwks: Value =
        serde_json::from_str(include_str!("../fixtures/entra-test-jwks.json")).unwrap();
    Mock::given(method("GET"))
        .and(path("/keys"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks))
        .mount(&idp)
        .await;
    idp
}

fn token(claims: Value, kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_string());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(
        include_str!("../fixtures/github-app-test-key.pem").as_bytes(),
    )
    .unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn claims(aud: &str, exp_offset: i64, roles: Value) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({
        "aud": aud,
        "iss": format!("https://sts.windows.net/{TENANT}/"),
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + exp_offset,
        "roles": roles,
        "appid": "4962773b-9cdb-44cf-a8bf-237846a00ab7"
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_tokens_are_checked_for_signature_issuer_audience_lifetime_and_role() {
    let gh = github(1).await;
    let idp = fake_openid().await;
    let metadata = format!("{}/metadata", idp.uri());
    let uri = gh.uri();
    let app = TestApp::spawn_webhook(
        &standard_config(),
        &[
            ("GITHUB_API_URL", uri.as_str()),
            ("GITHUB_TOKEN", "ghp_webhook"),
            ("AUTODEPLOY_WEBHOOK_TENANT_ID", TENANT),
            ("AUTODEPLOY_WEBHOOK_AUDIENCE", AUDIENCE),
            ("AUTODEPLOY_WEBHOOK_OPENID_METADATA_URL", metadata.as_str()),
        ],
    )
    .await;
    let role = json!(["AzureEventGridSecureWebhookSubscriber"]);
    let good = token(claims(AUDIENCE, 3600, role.clone()), "test-key-1");
    let mut tampered = token(claims(AUDIENCE, 3600, role.clone()), "test-key-1");
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    let cases = [
        ("missing", None, 401),
        ("wrong signature", Some(tampered), 401),
        (
            "unknown key",
            Some(token(claims(AUDIENCE, 3600, role.clone()), "other-key")),
            401,
        ),
        (
            "expired",
            Some(token(claims(AUDIENCE, -3600, role.clone()), "test-key-1")),
            401,
        ),
        (
            "not valid for an hour yet",
            Some(token(
                {
                    let mut c = claims(AUDIENCE, 7200, role.clone());
                    c["nbf"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() + 3600);
                    c
                },
                "test-key-1",
            )),
            401,
        ),
        (
            "wrong audience",
            Some(token(
                claims("api://someone-else", 3600, role.clone()),
                "test-key-1",
            )),
            401,
        ),
        (
            "no Event Grid role",
            Some(token(
                claims(AUDIENCE, 3600, json!(["Reader"])),
                "test-key-1",
            )),
            401,
        ),
        ("valid", Some(good), 200),
    ];
    for (name, bearer, status) in cases {
        let mut request = app
            .request(Method::POST, "/api/events")
            .json(&json!([credit("6")]));
        if let Some(t) = bearer {
            request = request.bearer_auth(t);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(
            reply.status().as_u16(),
            status,
            "{name}: {}",
            reply.text().await.unwrap_or_default()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_sharing_a_ledger_elect_one_reconcile_runner() {
    let gh = MockServer::start().await;
    let uri = gh.uri();
    let storage = azurite();
    let container = unique_container();
    let env = [
        ("GITHUB_API_URL", uri.as_str()),
        ("GITHUB_TOKEN", "ghp_webhook"),
        ("AUTODEPLOY_WEBHOOK_KEY", KEY),
        ("AUTODEPLOY_STORAGE", storage.as_str()),
        ("AUTODEPLOY_CONTAINER", container.as_str()),
        ("AUTODEPLOY_RECONCILE_INTERVAL_SECS", "1"),
    ];
    let first = TestApp::spawn_webhook(&standard_config(), &env).await;
    let second = TestApp::spawn_webhook(&standard_config(), &env).await;

    tokio::time::sleep(Duration::from_millis(3500)).await;

    let ran = |app: &TestApp| app.stdout().matches("Reconcile pass").count();
    let (a, b) = (ran(&first), ran(&second));
    assert!(
        (a > 0) != (b > 0),
        "exactly one replica runs Reconcile: {a} and {b} passes"
    );
}

/// Every secret the product handles, set at once, through both modes, a failure path and the
/// operator commands: none may appear in stdout, stderr, responses, the ledger or `status`.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_appears_in_any_output_of_either_mode() {
    let secrets = [
        ("AUTODEPLOY_WEBHOOK_KEY", "whk_SECRET_webhook_key_4711"),
        ("GITHUB_TOKEN", "ghp_SECRET_github_token_4712"),
        ("AZURE_CLIENT_SECRET", "SECRET_client_secret_4713"),
        ("NOTIFY_URL", "/hook/SECRET_notify_path_4714"),
    ];
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .up_to_n_times(1)
        .mount(&gh)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"})),
        )
        .mount(&gh)
        .await;
    let hook_url = format!("{}{}", gh.uri(), secrets[3].1);
    let storage = azurite();
    let container = unique_container();
    let uri = gh.uri();
    let config = standard_config()
        + "notify:\n  - url_env: NOTIFY_URL\n    format: raw\n    on: [dispatched, failed]\n";
    let env = [
        ("GITHUB_API_URL", uri.as_str()),
        ("GITHUB_TOKEN", secrets[1].1),
        ("AUTODEPLOY_WEBHOOK_KEY", secrets[0].1),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", "c"),
        ("AZURE_CLIENT_SECRET", secrets[2].1),
        ("NOTIFY_URL", hook_url.as_str()),
        ("AUTODEPLOY_STORAGE", storage.as_str()),
        ("AUTODEPLOY_CONTAINER", container.as_str()),
        ("RUST_LOG", "trace"),
    ];
    let mut outputs = Vec::new();

    let webhook = TestApp::spawn_webhook(&config, &env).await;
    for version in ["30", "31"] {
        let reply = webhook
            .request(Method::POST, "/api/events")
            .header("x-autodeploy-key", secrets[0].1)
            .json(&json!([credit(version)]))
            .send()
            .await
            .unwrap();
        outputs.push(reply.text().await.unwrap());
    }
    let functions = TestApp::spawn(&config, &env).await;
    outputs.push(functions.post_event(&credit("32")).await.raw);
    outputs.push(functions.post_reconcile().await.raw);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("autodeploy.yml"), &config).unwrap();
    for args in [
        vec!["status", "--json"],
        vec!["status", "credit-risk:30"],
        vec!["check-config"],
        vec!["replay", "--help"],
    ] {
        let (_, out, err) = tokio::task::block_in_place(|| run_cli(dir.path(), &args, &env));
        outputs.push(out);
        outputs.push(err);
    }
    outputs.extend([
        webhook.stdout(),
        webhook.stderr(),
        functions.stdout(),
        functions.stderr(),
    ]);

    let everything = outputs.join("\n");
    assert!(
        everything.contains("credit-risk"),
        "the scan saw real output"
    );
    for (name, value) in secrets {
        assert!(!everything.contains(value), "{name} leaked");
        assert!(
            !everything.contains(&value[value.len() - 12..]),
            "part of {name} leaked"
        );
    }
}

#[tokio::test]
async fn events_from_another_workspace_are_refused_in_webhook_mode_too() {
    let gh = github(0).await;
    let app = spawn(&gh, &[]).await;
    let mut foreign = credit("33");
    foreign["topic"] = json!(WS.replace("ml-ws", "attacker-ws"));

    let reply = app
        .request(Method::POST, "/api/events")
        .header("x-autodeploy-key", KEY)
        .json(&json!([foreign]))
        .send()
        .await
        .unwrap();

    assert_eq!(reply.status(), 200);
    let result = &reply.json::<Value>().await.unwrap()["results"][0];
    assert_eq!(result["skip"], "other_workspace", "{result}");
}

/// An OpenID provider whose metadata and keys each take `delay` to arrive.
async fn slow_openid(delay: Duration) -> MockServer {
    let idp = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/metadata"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(delay)
                .set_body_json(json!({"issuer": "x", "jwks_uri": format!("{}/keys", idp.uri())})),
        )
        .mount(&idp)
        .await;
    let jwks: Value =
        serde_json::from_str(include_str!("../fixtures/entra-test-jwks.json")).unwrap();
    Mock::given(method("GET"))
        .and(path("/keys"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(delay)
                .set_body_json(jwks),
        )
        .mount(&idp)
        .await;
    idp
}

async fn spawn_entra(gh: &MockServer, metadata: &str) -> TestApp {
    let uri = gh.uri();
    TestApp::spawn_webhook(
        &standard_config(),
        &[
            ("GITHUB_API_URL", uri.as_str()),
            ("GITHUB_TOKEN", "ghp_webhook"),
            ("AUTODEPLOY_WEBHOOK_TENANT_ID", TENANT),
            ("AUTODEPLOY_WEBHOOK_AUDIENCE", AUDIENCE),
            ("AUTODEPLOY_WEBHOOK_OPENID_METADATA_URL", metadata),
        ],
    )
    .await
}

async fn metadata_fetches(idp: &MockServer) -> usize {
    idp.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/metadata")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_unknown_key_ids_refetches_the_keys_once_and_valid_deliveries_stay_fast() {
    let gh = github(2).await;
    let idp = slow_openid(Duration::from_millis(250)).await;
    let app = spawn_entra(&gh, &format!("{}/metadata", idp.uri())).await;
    let role = json!(["AzureEventGridSecureWebhookSubscriber"]);
    let valid = token(claims(AUDIENCE, 3600, role.clone()), "test-key-1");
    let post = |bearer: String, version: &str| {
        app.request(Method::POST, "/api/events")
            .bearer_auth(bearer)
            .json(&json!([credit(version)]))
            .send()
    };
    // The first valid delivery loads the keys.
    assert_eq!(post(valid.clone(), "30").await.unwrap().status(), 200);
    assert_eq!(metadata_fetches(&idp).await, 1);

    // 40 unauthenticated requests naming unknown key ids, and a valid delivery among them.
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let forged = token(
                claims(AUDIENCE, 3600, role.clone()),
                &format!("rotated-{i}"),
            );
            post(forged, "31")
        })
        .collect();
    let flood = futures_util::future::join_all(flood);
    let timed = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let reply = post(valid.clone(), "32").await.unwrap();
        (reply.status().as_u16(), started.elapsed())
    };
    let (refused, (status, latency)) = tokio::join!(flood, timed);
    assert!(refused.iter().all(|r| r.as_ref().unwrap().status() == 401));
    assert_eq!(status, 200);
    assert!(
        latency < Duration::from_millis(500),
        "the valid delivery took {latency:?}"
    );
    let fetches = metadata_fetches(&idp).await;
    eprintln!("valid delivery in {latency:?}; {fetches} metadata fetches in all");
    assert!(fetches <= 2, "{fetches} metadata fetches for 41 requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_endpoint_that_is_down_answers_503_to_a_valid_token_and_401_to_a_bad_one() {
    let gh = github(0).await;
    let idp = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&idp)
        .await;
    let app = spawn_entra(&gh, &format!("{}/metadata", idp.uri())).await;
    let role = json!(["AzureEventGridSecureWebhookSubscriber"]);
    let valid = token(claims(AUDIENCE, 3600, role), "test-key-1");
    let cases = [(valid.as_str(), 503), ("not-a-token", 401), ("a.b.c", 401)];
    for (bearer, status) in cases {
        let reply = app
            .request(Method::POST, "/api/events")
            .bearer_auth(bearer)
            .json(&json!([credit("33")]))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), status, "{bearer:.12}");
    }
}

#[tokio::test]
async fn the_key_followed_by_nul_padding_is_refused() {
    let gh = github(0).await;
    let app = spawn(&gh, &[]).await;
    for pad in [1, 255, 256, 257] {
        let code = format!("{KEY}{}", "%00".repeat(pad));
        let reply = app
            .request(Method::POST, &format!("/api/events?code={code}"))
            .json(&json!([credit("34")]))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 401, "{pad} NUL bytes");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_batch_is_answered_by_its_deadline_and_reconcile_completes_the_rest() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_millis(900)))
        .expect(12)
        .mount(&gh)
        .await;
    let storage = azurite();
    let container = unique_container();
    let app = spawn(
        &gh,
        &[
            ("AUTODEPLOY_STORAGE", storage.as_str()),
            ("AUTODEPLOY_CONTAINER", container.as_str()),
            ("AUTODEPLOY_WEBHOOK_DEADLINE_SECS", "3"),
            ("AUTODEPLOY_RECONCILE_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let versions: Vec<String> = (40..52).map(|v| v.to_string()).collect();
    let batch: Vec<Value> = versions.iter().map(|v| credit(v)).collect();

    let started = std::time::Instant::now();
    let reply = app
        .request(Method::POST, "/api/events")
        .header("x-autodeploy-key", KEY)
        .json(&batch)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let status = reply.status();
    let results: Value = reply.json().await.unwrap();
    assert_eq!(status, 200, "{results}\n{}", app.stdout());
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    // Left to Reconcile at the cut-off: answered `retrying`, or already `duplicate` when the
    // internal Reconcile (every second here) claimed one before the answer was written.
    let unfinished = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["decision"] != "dispatched")
        .count();
    assert!(unfinished > 0, "{results}");
    let left: Vec<&Value> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["decision"] == "retrying")
        .collect();
    eprintln!(
        "batch of 12 answered in {took:?}; {} left to Reconcile",
        left.len()
    );
    assert!(
        left.iter()
            .all(|r| r["reason"].as_str().unwrap().contains("deadline"))
    );

    // Reconcile (the internal timer) sends every version left to it, once.
    let waited = std::time::Instant::now();
    for version in &versions {
        loop {
            let record = ledger_record(&storage, &container, "credit-risk", version).await;
            if record["state"] == "dispatched" {
                break;
            }
            assert!(waited.elapsed() < PATIENCE, "{version}: {record}");
            tokio::time::sleep(POLL).await;
        }
    }
    assert_eq!(dispatches_received(&gh).await, 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_webhook_paths_read_the_body_before_answering() {
    let gh = github(0).await;
    let app = spawn(&gh, &[]).await;
    let body = json!([credit("35")]).to_string().repeat(40).into_bytes();
    for round in 0..20 {
        let status = post_in_pieces(app.port, "/api/nothing-here", &body, 4).await;
        assert!(matches!(status, Ok(404)), "round {round}: {status:?}");
    }
}
