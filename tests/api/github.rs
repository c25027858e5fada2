//! The GitHub action: both dispatch APIs, App authentication, retries inside the budget, refusals,
//! and secrets kept out of every output.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::*;

const TOKEN: &str = "ghp_s3cr3t_T0KEN_for_tests_only";

async fn spawn(gh: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    let uri = gh.uri();
    let mut env = vec![("GITHUB_API_URL", uri.as_str()), ("GITHUB_TOKEN", TOKEN)];
    env.extend_from_slice(extra);
    TestApp::spawn(&standard_config(), &env).await
}

fn credit(version: &str) -> Value {
    model_event("credit-risk", version, json!({"stage": "production"}))
}

#[tokio::test]
async fn workflow_dispatch_asks_for_run_details_and_returns_the_run_url() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/repos/contoso/ml-deploy/actions/workflows/deploy.yml/dispatches",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "workflow_run_id": 987654,
            "run_url": "https://api.github.com/repos/contoso/ml-deploy/actions/runs/987654",
            "html_url": "https://github.com/contoso/ml-deploy/actions/runs/987654"
        })))
        .expect(1)
        .mount(&gh)
        .await;
    let app = spawn(&gh, &[]).await;

    let reply = app.post_event(&model_event("fraud", "12", json!({}))).await;

    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(
        reply.body["ReturnValue"]["runUrl"],
        "https://github.com/contoso/ml-deploy/actions/runs/987654"
    );
    assert_eq!(reply.body["ReturnValue"]["runId"], 987654);
    assert!(
        reply
            .logs_text()
            .contains("workflow run: https://github.com/contoso/ml-deploy/actions/runs/987654")
    );
    let sent: Value =
        serde_json::from_slice(&gh.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(
        sent,
        json!({"ref": "main", "inputs": {"model": "fraud", "version": "12"}, "return_run_details": true})
    );
}

#[tokio::test]
async fn workflow_dispatch_plain_204_from_enterprise_server_is_success() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/repos/contoso/ml-deploy/actions/workflows/deploy.yml/dispatches",
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&gh)
        .await;
    let app = spawn(&gh, &[]).await;

    let reply = app.post_event(&model_event("fraud", "13", json!({}))).await;

    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.decision(), "dispatched");
    assert!(reply.body["ReturnValue"].get("runUrl").is_none());
}

#[tokio::test]
async fn github_app_token_is_minted_once_for_many_events() {
    let gh = MockServer::start().await;
    let public_key = include_str!("../fixtures/github-app-test-key.pub.pem");
    let jwt_is_valid = move |request: &Request| {
        let Some(auth) = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(jwt) = auth.strip_prefix("Bearer ") else {
            return false;
        };
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_key.as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_issuer(&["Iv1.test-app"]);
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        jsonwebtoken::decode::<Value>(jwt, &key, &validation).is_ok()
    };
    Mock::given(method("GET"))
        .and(path("/repos/contoso/ml-deploy/installation"))
        .and(jwt_is_valid)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 4242})))
        .expect(1)
        .mount(&gh)
        .await;
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    Mock::given(method("POST"))
        .and(path("/app/installations/4242/access_tokens"))
        .and(jwt_is_valid)
        .respond_with(
            ResponseTemplate::new(201).set_body_json(
                json!({"token": "ghs_installation_token_xyz", "expires_at": expires}),
            ),
        )
        .expect(1)
        .mount(&gh)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .and(header("authorization", "Bearer ghs_installation_token_xyz"))
        .respond_with(ResponseTemplate::new(204))
        .expect(6)
        .mount(&gh)
        .await;
    // The key as App Service stores it: one line with literal \n escapes.
    let pem = include_str!("../fixtures/github-app-test-key.pem").replace('\n', "\\n");
    let uri = gh.uri();
    let app = TestApp::spawn(
        &standard_config(),
        &[
            ("GITHUB_API_URL", uri.as_str()),
            ("GITHUB_APP_ID", "Iv1.test-app"),
            ("GITHUB_APP_PRIVATE_KEY", pem.as_str()),
        ],
    )
    .await;

    // Three in parallel (one mint, not three), then three more.
    let (e1, e2, e3) = (credit("1"), credit("2"), credit("3"));
    let (a, b, c) = tokio::join!(
        app.post_event(&e1),
        app.post_event(&e2),
        app.post_event(&e3)
    );
    for reply in [a, b, c] {
        assert_eq!(reply.status, 200, "{}", reply.raw);
    }
    for v in ["4", "5", "6"] {
        let reply = app.post_event(&credit(v)).await;
        assert_eq!(reply.status, 200, "{}", reply.raw);
    }
    assert!(!app.stdout().contains("ghs_installation_token_xyz"));
}

#[tokio::test]
async fn github_app_key_from_a_file_is_used() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/app/installations/77/access_tokens"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"token": "ghs_from_file"})))
        .expect(1)
        .mount(&gh)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .and(header("authorization", "Bearer ghs_from_file"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&gh)
        .await;
    let key_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github-app-test-key.pem"
    );
    let uri = gh.uri();
    let app = TestApp::spawn(
        &standard_config(),
        &[
            ("GITHUB_API_URL", uri.as_str()),
            ("GITHUB_APP_ID", "12345"),
            ("GITHUB_APP_PRIVATE_KEY_FILE", key_file),
            ("GITHUB_APP_INSTALLATION_ID", "77"),
        ],
    )
    .await;

    let reply = app.post_event(&credit("1")).await;
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_succeeds() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&gh)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&gh)
        .await;
    let app = spawn(&gh, &[]).await;

    let started = Instant::now();
    let reply = app.post_event(&credit("1")).await;

    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After was not honoured"
    );
    assert_eq!(reply.body["ReturnValue"]["attempts"], 2);
    assert!(
        reply.logs_text().contains("HTTP 429"),
        "{}",
        reply.logs_text()
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_the_budget_fails_at_once() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("retry-after", "120")
                .set_body_json(json!({"message": "You have exceeded a secondary rate limit"})),
        )
        .expect(1)
        .mount(&gh)
        .await;
    let app = spawn(&gh, &[]).await;

    let started = Instant::now();
    let reply = app.post_event(&credit("1")).await;

    assert!(reply.status >= 500, "{}", reply.raw);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "slept instead of failing fast: {:?}",
        started.elapsed()
    );
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("past the retry budget"),
        "{}",
        reply.raw
    );
}

#[tokio::test]
async fn github_down_fails_the_invocation_inside_the_budget() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&gh)
        .await;
    let app = spawn(&gh, &[("AUTODEPLOY_RETRY_BUDGET_SECS", "3")]).await;

    let started = Instant::now();
    let reply = app.post_event(&credit("1")).await;

    assert_eq!(reply.status, 503, "{}", reply.raw);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(4500),
        "overran the budget: {elapsed:?}"
    );
    let attempts = gh.received_requests().await.unwrap().len();
    assert!(
        attempts >= 2,
        "should have retried, got {attempts} attempt(s)"
    );
}

#[tokio::test]
async fn a_hanging_github_times_out_inside_the_budget() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(30)))
        .mount(&gh)
        .await;
    let app = spawn(&gh, &[("AUTODEPLOY_RETRY_BUDGET_SECS", "2")]).await;

    let started = Instant::now();
    let reply = app.post_event(&credit("1")).await;

    assert_eq!(reply.status, 503, "{}", reply.raw);
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_github_fails_the_invocation_inside_the_budget() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{closed_port}");
    let app = TestApp::spawn(
        &standard_config(),
        &[
            ("GITHUB_API_URL", url.as_str()),
            ("GITHUB_TOKEN", TOKEN),
            ("AUTODEPLOY_RETRY_BUDGET_SECS", "2"),
        ],
    )
    .await;

    let started = Instant::now();
    let reply = app.post_event(&credit("1")).await;

    assert_eq!(reply.status, 503, "{}", reply.raw);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("connection error"),
        "{}",
        reply.raw
    );
    assert!(started.elapsed() < Duration::from_millis(3500));
}

#[tokio::test]
async fn refusals_that_need_an_operator_fail_without_retrying() {
    for (status, hint) in [
        (422, "workflow_dispatch trigger"),
        (404, "does not exist"),
        (401, "invalid or expired"),
        (403, "lacks permission"),
    ] {
        let gh = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(status).set_body_json(json!({"message": "Nope from GitHub"})),
            )
            .expect(1)
            .mount(&gh)
            .await;
        let app = spawn(&gh, &[]).await;

        let reply = app.post_event(&credit("1")).await;

        assert_eq!(reply.status, 502, "{status}: {}", reply.raw);
        let error = reply.body["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("HTTP {status}"))
                && error.contains("Nope from GitHub")
                && error.contains(hint),
            "{error}"
        );
    }
}

#[tokio::test]
async fn an_unresolved_key_vault_reference_fails_invocations_naming_the_setting() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&gh)
        .await;
    let uri = gh.uri();
    let app = TestApp::spawn(
        &standard_config(),
        &[
            ("GITHUB_API_URL", uri.as_str()),
            (
                "GITHUB_TOKEN",
                "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/gh/)",
            ),
        ],
    )
    .await;

    let reply = app.post_event(&credit("1")).await;

    assert_eq!(reply.status, 500, "{}", reply.raw);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("GITHUB_TOKEN holds an unresolved Key Vault reference"),
        "{}",
        reply.raw
    );
}

#[tokio::test]
async fn no_secret_appears_in_any_output() {
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
    let app = spawn(&gh, &[("RUST_LOG", "trace")]).await;

    let mut replies = Vec::new();
    replies.push(app.post_event(&credit("1")).await.raw);
    replies.push(app.post_event(&credit("2")).await.raw);
    replies.push(
        app.post_event(&model_event("shadow-a", "1", json!({})))
            .await
            .raw,
    );
    replies.push(
        app.post_event(&model_event("fraud", "1", json!({})))
            .await
            .raw,
    );

    // The token really was used...
    let first = &gh.received_requests().await.unwrap()[0];
    assert_eq!(
        first.headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );
    // ...and shows up nowhere we write.
    for (name, text) in [
        ("stdout", app.stdout()),
        ("stderr", app.stderr()),
        ("responses", replies.join("\n")),
    ] {
        assert!(!text.contains(TOKEN), "{name} leaks the token");
        assert!(!text.contains("s3cr3t"), "{name} leaks part of the token");
    }
}

#[tokio::test]
async fn the_app_private_key_never_appears_in_any_output() {
    let gh = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
        .mount(&gh)
        .await;
    let pem = include_str!("../fixtures/github-app-test-key.pem");
    let key_line = pem.lines().nth(3).unwrap();
    let uri = gh.uri();
    let app = TestApp::spawn(
        &standard_config(),
        &[
            ("GITHUB_API_URL", uri.as_str()),
            ("GITHUB_APP_ID", "1"),
            ("GITHUB_APP_PRIVATE_KEY", pem),
            ("RUST_LOG", "trace"),
        ],
    )
    .await;

    let reply = app.post_event(&credit("1")).await;

    assert_eq!(reply.status, 502, "{}", reply.raw);
    for text in [app.stdout(), app.stderr(), reply.raw] {
        assert!(!text.contains(key_line));
        assert!(!text.contains("PRIVATE KEY-----\n"));
    }
}
