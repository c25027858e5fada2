//! What the handler prints, read the way the Functions host reads it: stdout and stderr apart.
//! The host turns every stdout line into an Information trace, and a stderr line into a Warning
//! when it contains "warn" (any case), else an Error; a 2xx reply's `Logs` is the correlated copy.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

async fn github(status: u16) -> MockServer {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status).set_body_json(
            json!({"message": "Workflow does not have 'workflow_dispatch' trigger"}),
        ))
        .mount(&gh)
        .await;
    gh
}

async fn spawn(gh: &MockServer, config: &str, extra: &[(&str, &str)]) -> TestApp {
    let uri = gh.uri();
    let mut env = vec![
        ("GITHUB_API_URL", uri.as_str()),
        ("GITHUB_TOKEN", "ghp_logging"),
    ];
    env.extend_from_slice(extra);
    TestApp::spawn(config, &env).await
}

fn credit(name: &str, version: &str) -> Value {
    model_event(name, version, json!({"stage": "production"}))
}

/// The lines of `text` that mention `needle`, raw (what the host sees).
fn raw_lines<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// The JSON lines of `text` that belong to invocation `id`.
fn lines_of(text: &str, id: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["span"]["invocation_id"] == id)
        .collect()
}

/// Waits until the output drained from the child mentions `needle` (the pipes are read by
/// threads, a little behind the replies).
async fn until(app: &TestApp, needle: &str) {
    for _ in 0..50 {
        if app.stdout().contains(needle) || app.stderr().contains(needle) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Whatever else the invocation wrote comes with it or just after.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn has_warn(line: &str) -> bool {
    line.to_ascii_lowercase().contains("warn")
}

#[tokio::test]
async fn a_successful_invocation_puts_one_summary_line_on_stdout() {
    let gh = github(204).await;
    let app = spawn(&gh, &standard_config(), &[]).await;
    until(&app, "listening").await;
    let before = app.stdout().len();

    const N: usize = 5;
    for i in 1..=N {
        let reply = app
            .post_raw(
                envelope(&credit("credit-risk", &i.to_string()))
                    .to_string()
                    .into_bytes(),
                &format!("inv-summary-{i}"),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.raw);
        assert_eq!(reply.decision(), "dispatched");
        // The detail stays in `Logs`, the correlated copy.
        assert!(
            reply
                .logs_text()
                .contains("GitHub accepted the dispatch: HTTP 204"),
            "{}",
            reply.raw
        );
    }
    until(&app, &format!("inv-summary-{N}")).await;

    let stdout = app.stdout();
    let per_invocation = (stdout.len() - before) / N;
    eprintln!("stdout bytes per dispatched invocation: {per_invocation}");
    for i in 1..=N {
        let id = format!("inv-summary-{i}");
        let lines = lines_of(&stdout, &id);
        assert_eq!(lines.len(), 1, "one stdout line for {id}: {stdout}");
        let summary = &lines[0];
        assert_eq!(summary["level"], "INFO", "{summary}");
        assert_eq!(summary["span"]["decision"], "dispatched", "{summary}");
        assert_eq!(
            summary["span"]["event_id"],
            format!("evt-credit-risk-{i}"),
            "{summary}"
        );
        assert_eq!(summary["span"]["model"], "credit-risk", "{summary}");
        assert_eq!(summary["span"]["version"], i.to_string(), "{summary}");
        assert_eq!(summary["span"]["rule"], "credit-to-github", "{summary}");
        assert!(summary["duration_ms"].is_number(), "{summary}");
        // A clean dispatch has nothing to warn about.
        assert!(lines_of(&app.stderr(), &id).is_empty(), "{}", app.stderr());
    }
    assert!(
        per_invocation <= 600,
        "{per_invocation} bytes of stdout per dispatched invocation: {stdout}"
    );
}

#[tokio::test]
async fn github_refusing_a_dispatch_is_an_error_line_on_stderr_that_never_says_warn() {
    let gh = github(422).await;
    let app = spawn(&gh, &standard_config(), &[]).await;
    // The model's name and the event id quote "warn": an error line must still not contain it.
    let event = credit("credit-early-warning", "1");

    let reply = app
        .post_raw(envelope(&event).to_string().into_bytes(), "inv-refused")
        .await;
    assert_eq!(reply.status, 502, "{}", reply.raw);
    until(&app, "inv-refused").await;

    let stderr = app.stderr();
    let raw = raw_lines(&stderr, "inv-refused");
    let mut errors = 0;
    for line in &raw {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match parsed["level"].as_str() {
            Some("ERROR") => {
                errors += 1;
                assert!(
                    !has_warn(line),
                    "an error line the host would file as a warning: {line}"
                );
                // The escape is lossless: parsed, the line says what happened.
                assert_eq!(parsed["span"]["model"], "credit-early-warning", "{line}");
            }
            Some("WARN") => assert!(has_warn(line), "{line}"),
            other => panic!("{other:?} line on stderr: {line}"),
        }
    }
    assert!(errors >= 1, "no error line on stderr: {stderr}");
    // The reason, where the host keeps it (it drops a non-2xx reply's `Logs`).
    let failure = lines_of(&stderr, "inv-refused")
        .into_iter()
        .find(|l| l["status"] == 502)
        .unwrap_or_else(|| panic!("no failure line on stderr: {stderr}"));
    assert_eq!(failure["level"], "ERROR", "{failure}");
    assert!(
        failure["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 422")),
        "{failure}"
    );
    // No summary on stdout: this invocation failed.
    assert!(
        lines_of(&app.stdout(), "inv-refused").is_empty(),
        "{}",
        app.stdout()
    );
}

#[tokio::test]
async fn a_configuration_problem_is_an_error_on_stderr_even_when_it_quotes_warn() {
    let gh = github(204).await;
    let config = "rules:\n  - name: warn-team\n    models: ['credit-*']\n    github: { repository: not-a-slug, event_type: e }\n";
    let app = spawn(&gh, config, &[]).await;

    let reply = app
        .post_raw(
            envelope(&credit("credit-risk", "1"))
                .to_string()
                .into_bytes(),
            "inv-misconfigured",
        )
        .await;
    assert_eq!(reply.status, 500, "{}", reply.raw);
    until(&app, "inv-misconfigured").await;

    let stderr = app.stderr();
    let configuration = raw_lines(&stderr, "CONFIGURATION ERROR");
    assert!(!configuration.is_empty(), "{stderr}");
    let invocation = raw_lines(&stderr, "inv-misconfigured");
    assert!(!invocation.is_empty(), "{stderr}");
    for line in configuration.iter().chain(&invocation) {
        assert!(
            !has_warn(line),
            "an error line the host would file as a warning: {line}"
        );
    }
    let failure = lines_of(&stderr, "inv-misconfigured")
        .into_iter()
        .find(|l| l["status"] == 500)
        .unwrap_or_else(|| panic!("no failure line on stderr: {stderr}"));
    assert!(
        failure["error"]
            .as_str()
            .is_some_and(|e| e.contains("rules[0] (warn-team).github.repository")),
        "{failure}"
    );
}

#[tokio::test]
async fn a_malformed_event_is_acknowledged_with_a_warning_line_on_stderr() {
    let gh = github(204).await;
    let app = spawn(&gh, &standard_config(), &[]).await;
    let malformed =
        json!({"id": "bad-1", "eventType": "Microsoft.MachineLearningServices.ModelRegistered"});

    let reply = app
        .post_raw(
            envelope(&malformed).to_string().into_bytes(),
            "inv-malformed",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.decision(), "malformed");
    assert!(
        reply.logs_text().contains("malformed event"),
        "{}",
        reply.raw
    );
    until(&app, "inv-malformed").await;

    let stderr = app.stderr();
    let warning = raw_lines(&stderr, "inv-malformed")
        .into_iter()
        .find(|l| l.contains("malformed event"))
        .unwrap_or_else(|| panic!("no warning line on stderr: {stderr}"));
    assert!(has_warn(warning), "{warning}");
    let parsed: Value = serde_json::from_str(warning).unwrap();
    assert_eq!(parsed["level"], "WARN", "{warning}");

    let stdout = lines_of(&app.stdout(), "inv-malformed");
    assert_eq!(stdout.len(), 1, "{}", app.stdout());
    assert_eq!(stdout[0]["span"]["decision"], "malformed");
}

#[tokio::test]
async fn github_down_puts_the_reason_and_the_lines_that_explain_it_on_stderr() {
    let gh = github(503).await;
    let app = spawn(
        &gh,
        &standard_config(),
        &[("AUTODEPLOY_RETRY_BUDGET_SECS", "1")],
    )
    .await;

    let reply = app
        .post_raw(
            envelope(&credit("credit-risk", "9"))
                .to_string()
                .into_bytes(),
            "inv-github-down",
        )
        .await;
    assert_eq!(reply.status, 503, "{}", reply.raw);
    until(&app, "inv-github-down").await;

    let stderr = app.stderr();
    let failure = lines_of(&stderr, "inv-github-down")
        .into_iter()
        .find(|l| l["status"] == 503)
        .unwrap_or_else(|| panic!("no failure line on stderr: {stderr}"));
    assert_eq!(failure["level"], "ERROR", "{failure}");
    assert!(
        failure["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failure}"
    );
    // The lines the host drops with `Logs` come with it.
    let logs = failure["logs"].as_str().unwrap_or_default();
    assert!(
        logs.contains("model credit-risk version 9 registered"),
        "{failure}"
    );
    for line in raw_lines(&stderr, "inv-github-down") {
        if line.contains(r#""level":"ERROR""#) {
            assert!(!has_warn(line), "{line}");
        }
    }
    assert!(
        lines_of(&app.stdout(), "inv-github-down").is_empty(),
        "{}",
        app.stdout()
    );
}

#[tokio::test]
async fn a_reconcile_invocation_puts_one_summary_line_on_stdout() {
    let gh = github(204).await;
    let app = spawn(&gh, &standard_config(), &[]).await;

    let reply = app.post_reconcile().await;
    assert_eq!(reply.status, 200, "{}", reply.raw);
    until(&app, "reconcile-inv").await;

    let stdout = app.stdout();
    let lines = lines_of(&stdout, "reconcile-inv");
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["due"], 0, "{stdout}");
    assert_eq!(lines[0]["errors"], 0, "{stdout}");
    assert!(lines[0]["duration_ms"].is_number(), "{stdout}");
}

#[tokio::test]
async fn log_stdout_all_restores_every_line_on_stdout() {
    let gh = github(204).await;
    let app = spawn(&gh, &standard_config(), &[("AUTODEPLOY_LOG_STDOUT", "all")]).await;

    let reply = app
        .post_raw(
            envelope(&credit("credit-risk", "1"))
                .to_string()
                .into_bytes(),
            "inv-all",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let malformed =
        json!({"id": "bad-2", "eventType": "Microsoft.MachineLearningServices.ModelRegistered"});
    let reply = app
        .post_raw(envelope(&malformed).to_string().into_bytes(), "inv-all-bad")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.raw);
    until(&app, "inv-all-bad").await;

    let stdout = app.stdout();
    let dispatched = lines_of(&stdout, "inv-all");
    assert!(
        dispatched.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("GitHub accepted the dispatch"))),
        "{stdout}"
    );
    assert!(
        dispatched.iter().any(|l| l["duration_ms"].is_number()),
        "the summary line too: {stdout}"
    );
    assert!(
        lines_of(&stdout, "inv-all-bad")
            .iter()
            .any(|l| l["level"] == "WARN"),
        "{stdout}"
    );
    let stderr = app.stderr();
    assert!(lines_of(&stderr, "inv-all").is_empty(), "{stderr}");
    assert!(lines_of(&stderr, "inv-all-bad").is_empty(), "{stderr}");
}

#[tokio::test]
async fn webhook_mode_keeps_every_line_on_stdout_with_its_level() {
    const KEY: &str = "whk_logging_0123456789_secret";
    let gh = github(204).await;
    let uri = gh.uri();
    let app = TestApp::spawn_webhook(
        &standard_config(),
        &[
            ("GITHUB_API_URL", uri.as_str()),
            ("GITHUB_TOKEN", "ghp_logging"),
            ("AUTODEPLOY_WEBHOOK_KEY", KEY),
        ],
    )
    .await;
    let batch = json!([
        credit("credit-risk", "1"),
        {"id": "bad-3", "eventType": "Microsoft.MachineLearningServices.ModelRegistered"}
    ]);

    let reply = app
        .request(reqwest::Method::POST, "/api/events")
        .header("aeg-event-type", "Notification")
        .header("x-autodeploy-key", KEY)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    until(&app, "bad-3").await;

    let stdout = app.stdout();
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    assert!(
        events.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("GitHub accepted the dispatch"))),
        "{stdout}"
    );
    assert!(
        events.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("malformed event"))),
        "{stdout}"
    );
    let stderr = app.stderr();
    assert!(
        !stderr.contains("GitHub accepted") && !stderr.contains("malformed event"),
        "{stderr}"
    );
}
