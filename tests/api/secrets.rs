//! Secrets an upstream quotes back (an error body echoing the credential we sent) are redacted
//! before they reach the host response, `Logs`, stdout/stderr, the ledger or `status`; and
//! redirects are followed only within the same scheme, host and port.

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::*;

/// A PAT with characters that JSON-escaping and URL-encoding change, so each form is exercised.
const PAT: &str = "ghp_S3CRET\"pat/for+tests=4801";

fn credit(version: &str) -> Value {
    model_event("credit-risk", version, json!({"stage": "production"}))
}

/// The `Authorization` header a request carried, as is.
fn authorization(request: &Request) -> String {
    request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// An upstream that quotes the credential back: in a JSON message (as is, and URL-encoded), or
/// in an HTML page.
fn echo_json(status: u16) -> impl Fn(&Request) -> ResponseTemplate {
    move |request: &Request| {
        let auth = authorization(request);
        let encoded: String = url::form_urlencoded::byte_serialize(auth.as_bytes()).collect();
        ResponseTemplate::new(status).set_body_json(json!({
            "message": format!("Bad credentials: you sent {auth} (retry with ?auth={encoded})"),
            "documentation_url": "https://docs.github.com/rest"
        }))
    }
}

fn echo_html(status: u16) -> impl Fn(&Request) -> ResponseTemplate {
    move |request: &Request| {
        let auth = authorization(request);
        ResponseTemplate::new(status).set_body_raw(
            format!("<html><body><pre>{}</pre></body></html>", auth),
            "text/html",
        )
    }
}

/// Everything a person or a log pipeline sees of one version.
struct Seen {
    texts: Vec<(String, String)>,
}

impl Seen {
    fn new() -> Self {
        Self { texts: Vec::new() }
    }

    fn add(&mut self, name: &str, text: impl Into<String>) {
        self.texts.push((name.to_string(), text.into()));
    }

    async fn add_record(&mut self, storage: &str, container: &str, version: &str) {
        let record = ledger_record(storage, container, "credit-risk", version).await;
        self.add(&format!("record {version}"), record.to_string());
        let status = status_record(storage, container, "credit-risk", version).await;
        self.add(&format!("status {version}"), status.to_string());
    }

    fn assert_hidden(&self, secret: &str) {
        let tail = &secret[secret.len() - 12..];
        for (name, text) in &self.texts {
            assert!(!text.contains(secret), "{name} leaks the secret: {text}");
            assert!(
                !text.contains(tail),
                "{name} leaks part of the secret: {text}"
            );
        }
    }

    fn any_contains(&self, what: &str) -> bool {
        self.texts.iter().any(|(_, text)| text.contains(what))
    }
}

fn ledger_env(storage: &str, container: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AUTODEPLOY_STORAGE", storage.to_string()),
        ("AUTODEPLOY_CONTAINER", container.to_string()),
        ("AUTODEPLOY_RETRY_BUDGET_SECS", "1".into()),
        ("RUST_LOG", "trace".into()),
    ]
}

async fn spawn(config: &str, env: &[(&'static str, String)]) -> TestApp {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn(config, &pairs).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_refusal_quoting_the_pat_is_redacted_in_every_output() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(echo_json(403))
        .up_to_n_times(1)
        .mount(&gh)
        .await;
    Mock::given(method("POST"))
        .respond_with(echo_html(422))
        .mount(&gh)
        .await;
    let (storage, container) = (azurite(), unique_container());
    let mut env = ledger_env(&storage, &container);
    env.extend([("GITHUB_API_URL", gh.uri()), ("GITHUB_TOKEN", PAT.into())]);
    let app = spawn(&standard_config(), &env).await;

    let mut seen = Seen::new();
    for version in ["1", "2"] {
        let reply = app.post_event(&credit(version)).await;
        assert_eq!(reply.status, 502, "{}", reply.raw);
        seen.add("response", reply.raw.clone());
        seen.add("Logs", reply.logs_text());
        seen.add_record(&storage, &container, version).await;
    }
    seen.add("stdout", app.stdout());
    seen.add("stderr", app.stderr());

    // GitHub really was sent the PAT and quoted it back...
    let received = gh.received_requests().await.unwrap();
    assert_eq!(authorization(&received[0]), format!("Bearer {PAT}"));
    // ...and what we show says so without showing it.
    seen.assert_hidden(PAT);
    assert!(seen.any_contains("Bad credentials: you sent Bearer [REDACTED]"));
    assert!(seen.any_contains("a text/html body: <html><body><pre>Bearer [REDACTED]</pre>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn github_app_jwts_and_installation_tokens_quoted_back_are_redacted() {
    let pem = include_str!("../fixtures/github-app-test-key.pem");
    let (storage, container) = (azurite(), unique_container());

    // Looking up the installation with the App JWT: GitHub quotes the JWT back.
    let gh = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/repos/contoso/ml-deploy/installation"))
        .respond_with(echo_json(404))
        .mount(&gh)
        .await;
    let mut env = ledger_env(&storage, &container);
    env.extend([
        ("GITHUB_API_URL", gh.uri()),
        ("GITHUB_APP_ID", "Iv1.test-app".into()),
        ("GITHUB_APP_PRIVATE_KEY", pem.into()),
    ]);
    let app = spawn(&standard_config(), &env).await;
    let mut seen = Seen::new();
    let reply = app.post_event(&credit("1")).await;
    assert_eq!(reply.status, 502, "{}", reply.raw);
    seen.add("response", reply.raw.clone());
    seen.add("Logs", reply.logs_text());
    seen.add_record(&storage, &container, "1").await;
    seen.add("stdout", app.stdout());
    seen.add("stderr", app.stderr());
    let jwt = authorization(&gh.received_requests().await.unwrap()[0]);
    let jwt = jwt.strip_prefix("Bearer ").expect("a bearer JWT");
    seen.assert_hidden(jwt);
    assert!(seen.any_contains("you sent Bearer [REDACTED]"));

    // Dispatching with the installation token: GitHub quotes the token back.
    let gh = MockServer::start().await;
    let installation_token = "ghs_SECRET_installation_token_4802";
    Mock::given(method("POST"))
        .and(path("/app/installations/77/access_tokens"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"token": installation_token})),
        )
        .mount(&gh)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(echo_html(403))
        .mount(&gh)
        .await;
    let mut env = ledger_env(&storage, &container);
    env.extend([
        ("GITHUB_API_URL", gh.uri()),
        ("GITHUB_APP_ID", "Iv1.test-app".into()),
        ("GITHUB_APP_PRIVATE_KEY", pem.into()),
        ("GITHUB_APP_INSTALLATION_ID", "77".into()),
    ]);
    let app = spawn(&standard_config(), &env).await;
    let mut seen = Seen::new();
    let reply = app.post_event(&credit("2")).await;
    assert_eq!(reply.status, 502, "{}", reply.raw);
    seen.add("response", reply.raw.clone());
    seen.add("Logs", reply.logs_text());
    seen.add_record(&storage, &container, "2").await;
    seen.add("stdout", app.stdout());
    seen.add("stderr", app.stderr());
    seen.assert_hidden(installation_token);
    assert!(seen.any_contains("<pre>Bearer [REDACTED]</pre>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_redirect_to_another_host_is_not_followed_nor_recorded_as_dispatched() {
    let (gh, elsewhere) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(307).insert_header(
            "location",
            format!("{}/repos/contoso/ml-deploy/dispatches", elsewhere.uri()).as_str(),
        ))
        .mount(&gh)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let (storage, container) = (azurite(), unique_container());
    let mut env = ledger_env(&storage, &container);
    env.extend([("GITHUB_API_URL", gh.uri()), ("GITHUB_TOKEN", PAT.into())]);
    let app = spawn(&standard_config(), &env).await;

    let reply = app.post_event(&credit("1")).await;

    assert_eq!(reply.status, 502, "{}", reply.raw);
    let error = reply.body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("GitHub redirected to {}", elsewhere.uri()))
            && error.contains("another scheme, host or port")
            && error.contains("nothing was sent there"),
        "{error}"
    );
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
    let record = ledger_record(&storage, &container, "credit-risk", "1").await;
    assert_ne!(record["state"], "dispatched", "{record}");
    assert_eq!(record["attempts"][0]["outcome"], "refused", "{record}");
    assert_eq!(record["attempts"][0]["status"], 307, "{record}");
}

#[tokio::test]
async fn a_same_host_307_for_a_renamed_repository_is_followed_and_dispatched() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", "/repos/contoso/ml-deploy-renamed/dispatches"),
        )
        .expect(1)
        .mount(&gh)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy-renamed/dispatches"))
        .and(header("authorization", format!("Bearer {PAT}").as_str()))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&gh)
        .await;
    let uri = gh.uri();
    let app = TestApp::spawn(
        &standard_config(),
        &[("GITHUB_API_URL", uri.as_str()), ("GITHUB_TOKEN", PAT)],
    )
    .await;

    let reply = app.post_event(&credit("1")).await;

    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.decision(), "dispatched");
}

#[tokio::test(flavor = "multi_thread")]
async fn notification_hooks_that_echo_or_redirect_are_recorded_without_their_secret() {
    let (gh, hooks, elsewhere) = (
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
    );
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&gh)
        .await;
    // Echoes the path it was called on (the secret part of a hook URL).
    Mock::given(method("POST"))
        .and(path("/echo/SECRET_hook_path_4803"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(400)
                .set_body_raw(format!("invalid_payload for {}", request.url), "text/plain")
        })
        .mount(&hooks)
        .await;
    Mock::given(method("POST"))
        .and(path("/moved/SECRET_hook_path_4804"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", "/new/hook"))
        .mount(&hooks)
        .await;
    Mock::given(method("POST"))
        .and(path("/new/hook"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&hooks)
        .await;
    Mock::given(method("POST"))
        .and(path("/away/SECRET_hook_path_4805"))
        .respond_with(
            ResponseTemplate::new(308)
                .insert_header("location", format!("{}/stolen", elsewhere.uri()).as_str()),
        )
        .mount(&hooks)
        .await;
    let (storage, container) = (azurite(), unique_container());
    let mut env = ledger_env(&storage, &container);
    let url = |p: &str| format!("{}{p}", hooks.uri());
    env.extend([
        ("GITHUB_API_URL", gh.uri()),
        ("GITHUB_TOKEN", PAT.into()),
        ("ECHO_HOOK", url("/echo/SECRET_hook_path_4803")),
        ("MOVED_HOOK", url("/moved/SECRET_hook_path_4804")),
        ("AWAY_HOOK", url("/away/SECRET_hook_path_4805")),
    ]);
    let mut config = standard_config() + "notify:\n";
    for name in ["ECHO_HOOK", "MOVED_HOOK", "AWAY_HOOK"] {
        config += &format!("  - url_env: {name}\n    format: raw\n    on: [dispatched]\n");
    }
    let app = spawn(&config, &env).await;

    let reply = app.post_event(&credit("1")).await;
    assert_eq!(reply.status, 200, "{}", reply.raw);

    let record = ledger_record(&storage, &container, "credit-risk", "1").await;
    let notes = record["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(notes.len(), 3, "{record}");
    let error = |i: usize| notes[i]["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(notes[0]["status"], 400, "{record}");
    assert!(
        error(0).starts_with("HTTP 400 with a text/plain body: invalid_payload for")
            && error(0).contains("[REDACTED]"),
        "{record}"
    );
    assert_eq!(
        notes[1]["status"], 200,
        "the same-host 307 is followed: {record}"
    );
    assert!(notes[2]["status"].is_null(), "{record}");
    assert!(
        error(2).contains(&format!("redirects to {}", elsewhere.uri()))
            && error(2).contains("nothing was sent there"),
        "{record}"
    );
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
    let mut seen = Seen::new();
    seen.add("response", reply.raw.clone());
    seen.add("record", record.to_string());
    seen.add(
        "status",
        status_record(&storage, &container, "credit-risk", "1")
            .await
            .to_string(),
    );
    seen.add("stdout", app.stdout());
    seen.add("stderr", app.stderr());
    for secret in [
        "SECRET_hook_path_4803",
        "SECRET_hook_path_4804",
        "SECRET_hook_path_4805",
    ] {
        seen.assert_hidden(secret);
    }
}
