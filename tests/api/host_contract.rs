//! Envelope shapes, schemas, decisions and response semantics.

use serde_json::{Value, json};
use wiremock::matchers::{any, body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

async fn github() -> MockServer {
    MockServer::start().await
}

fn env_for(server: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("GITHUB_API_URL", server.uri()),
        ("GITHUB_TOKEN", "ghp_testtoken123".to_string()),
    ]
}

async fn spawn_with(server: &MockServer, config: &str, extra: &[(&str, &str)]) -> TestApp {
    let env = env_for(server);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    TestApp::spawn(config, &all).await
}

fn expected_payload(event: &Value, rule: &str) -> Value {
    json!({
        "event_type": "deploy-model",
        "client_payload": {
            "modelName": event["data"]["modelName"],
            "modelVersion": event["data"]["modelVersion"],
            "modelId": format!("azureml:{}:{}", event["data"]["modelName"].as_str().unwrap(), event["data"]["modelVersion"].as_str().unwrap()),
            "workspace": WS,
            "eventId": event["id"],
            "eventTime": event["eventTime"],
            "modelTags": event["data"]["modelTags"],
            "rule": rule
        }
    })
}

#[tokio::test]
async fn eventgrid_event_as_object_sends_the_exact_repository_dispatch() {
    let gh = github().await;
    let event = model_event(
        "credit-risk",
        "7",
        json!({"stage": "production", "owner": "risk-team"}),
    );
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .and(header("authorization", "Bearer ghp_testtoken123"))
        .and(header("accept", "application/vnd.github+json"))
        .and(header("x-github-api-version", "2022-11-28"))
        .and(body_json(expected_payload(&event, "credit-to-github")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&gh)
        .await;
    let app = spawn_with(&gh, &standard_config(), &[]).await;

    let reply = app.post_event(&event).await;

    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert!(reply.content_type.starts_with("application/json"));
    assert_eq!(reply.body["Outputs"], json!({}));
    assert_eq!(reply.decision(), "dispatched");
    assert_eq!(reply.body["ReturnValue"]["rule"], "credit-to-github");
    assert_eq!(reply.body["ReturnValue"]["status"], 204);
    let logs = reply.logs_text();
    assert!(logs.contains("model credit-risk version 7"), "{logs}");
    assert!(
        logs.contains("GitHub accepted the dispatch: HTTP 204"),
        "{logs}"
    );
    let ua = &gh.received_requests().await.unwrap()[0].headers["user-agent"];
    assert!(ua.to_str().unwrap().starts_with("aml-autodeploy/"));
}

#[tokio::test]
async fn cloudevents_schema_and_event_as_json_string_are_both_understood() {
    let gh = github().await;
    Mock::given(method("POST"))
        .and(path(
            "/repos/contoso/ml-deploy/actions/workflows/deploy.yml/dispatches",
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(2)
        .mount(&gh)
        .await;
    let app = spawn_with(&gh, &standard_config(), &[]).await;

    let as_object = app.post_event(&cloud_event("fraud", "3")).await;
    let as_string = app
        .post_event(&Value::String(cloud_event("fraud", "4").to_string()))
        .await;

    for (reply, version) in [(as_object, "3"), (as_string, "4")] {
        assert_eq!(reply.status, 200, "{}", reply.raw);
        assert_eq!(reply.decision(), "dispatched");
        assert_eq!(reply.body["ReturnValue"]["schema"], "CloudEvents");
        assert_eq!(reply.body["ReturnValue"]["version"], version);
    }
    let bodies: Vec<Value> = gh
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        bodies[0]["inputs"],
        json!({"model": "fraud", "version": "3"})
    );
    assert_eq!(bodies[0]["ref"], "main");
}

#[tokio::test]
async fn official_sample_with_pascal_case_keys_and_numeric_version_is_dispatched() {
    let gh = github().await;
    Mock::given(method("POST"))
        .and(path("/repos/o/r/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&gh)
        .await;
    let config = "rules: [{name: sk, models: ['sklearn_*'], tags: {area: diabetes}, github: {repository: o/r, event_type: deploy-model}}]";
    let app = spawn_with(&gh, config, &[]).await;
    let sample: Value =
        serde_json::from_str(include_str!("../fixtures/model_registered.eventgrid.json")).unwrap();

    let reply = app.post_event(&sample).await;

    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.decision(), "dispatched");
    let sent: Value =
        serde_json::from_slice(&gh.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(
        sent["client_payload"]["modelName"],
        "sklearn_regression_model"
    );
    assert_eq!(sent["client_payload"]["modelVersion"], "20");
    assert_eq!(
        sent["client_payload"]["modelId"],
        "azureml:sklearn_regression_model:20"
    );
}

#[tokio::test]
async fn name_and_version_come_from_the_subject_when_data_lacks_them() {
    let gh = github().await;
    Mock::given(method("POST"))
        .and(path("/repos/o/r/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&gh)
        .await;
    let app = spawn_with(
        &gh,
        "rules: [{name: all, models: ['*'], github: {repository: o/r, event_type: e}}]",
        &[],
    )
    .await;
    let mut event = model_event("ignored", "1", json!({}));
    event["subject"] = json!("models/churn-model:42");
    event["data"] = json!({});

    let reply = app.post_event(&event).await;

    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.body["ReturnValue"]["model"], "churn-model");
    assert_eq!(reply.body["ReturnValue"]["version"], "42");
}

#[tokio::test]
async fn a_request_that_is_not_a_host_envelope_gets_400_with_a_json_error() {
    let gh = github().await;
    let app = spawn_with(&gh, &standard_config(), &[]).await;

    for body in [
        &b"this is not json"[..],
        br#"[1,2]"#,
        br#"{"id":"bare-event","data":{}}"#,
    ] {
        let reply = app.post_raw(body.to_vec(), "inv-400").await;
        assert_eq!(reply.status, 400, "{}", reply.raw);
        assert!(reply.content_type.starts_with("application/json"));
        assert!(
            reply.body["error"].as_str().unwrap().len() > 10,
            "{}",
            reply.raw
        );
    }
    // And it keeps serving.
    let reply = app.post_event(&model_event("nobody", "1", json!({}))).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn every_structured_log_line_of_an_invocation_carries_its_invocation_id() {
    let gh = github().await;
    let app = spawn_with(&gh, &standard_config(), &[]).await;
    let event = model_event("nobody", "1", json!({}));

    let reply = app
        .post_raw(
            envelope(&event).to_string().into_bytes(),
            "inv-7f3a-correlate-me",
        )
        .await;
    assert_eq!(reply.status, 200);

    // Under the host: the summary on stdout, any warning or error on stderr. The process may
    // write its summary just after the answer, and the reader threads copy it a moment later.
    let invocation_lines = |output: &str| -> Vec<Value> {
        output
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| {
                l.to_string().contains("evt-nobody-1")
                    || l["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("no rule matched"))
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut stdout = app.stdout() + &app.stderr();
    while invocation_lines(&stdout).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        stdout = app.stdout() + &app.stderr();
    }
    let lines = invocation_lines(&stdout);
    assert!(
        !lines.is_empty(),
        "no structured lines for the invocation: {stdout}"
    );
    for line in &lines {
        assert_eq!(
            line["span"]["invocation_id"], "inv-7f3a-correlate-me",
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["model"] == "nobody" && l["span"]["decision"] == "skipped"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_bad_config_keeps_the_handler_ready_but_fails_every_invocation_naming_the_problem() {
    let gh = github().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&gh)
        .await;
    let config = "rules:\n  - name: broken\n    models: ['credit-*']\n    github: { repository: not-a-slug, event_type: e }\n";
    let app = spawn_with(&gh, config, &[]).await;

    let reply = app
        .post_event(&model_event(
            "credit-risk",
            "1",
            json!({"stage": "production"}),
        ))
        .await;

    assert!(reply.status >= 500, "{}", reply.raw);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("rules[0] (broken).github.repository"),
        "{}",
        reply.raw
    );
    assert!(
        app.stderr().contains("CONFIGURATION ERROR"),
        "{}",
        app.stderr()
    );
    assert!(app.stderr().contains("not-a-slug"), "{}", app.stderr());
}

#[tokio::test]
async fn a_missing_config_file_is_reported_the_same_way() {
    let gh = github().await;
    let app = spawn_with(&gh, "", &[("AUTODEPLOY_CONFIG", "does-not-exist.yml")]).await;

    let reply = app
        .post_event(&model_event("credit-risk", "1", json!({})))
        .await;

    assert_eq!(reply.status, 500, "{}", reply.raw);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("does-not-exist.yml"),
        "{}",
        reply.raw
    );
}

#[tokio::test]
async fn readiness_answers_quickly_and_unknown_functions_get_404() {
    let gh = github().await;
    let app = spawn_with(&gh, &standard_config(), &[]).await;
    assert!(
        app.ready_after < std::time::Duration::from_secs(5),
        "{:?}",
        app.ready_after
    );
    let status = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/SomethingElse", app.port))
        .body("{}")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timer_envelope_and_unknown_paths_are_read_before_answering_so_the_host_never_sees_a_reset()
 {
    let server = github().await;
    let app = spawn_with(&server, &standard_config(), &[]).await;
    let timer = json!({
        "Data": { "timer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false } },
        "Metadata": { "sys": { "MethodName": "Reconcile", "UtcNow": "2026-11-26T10:01:00Z", "RandGuid": "5d3c0a9e-1f7b-4c1a-9e8e-2a6d2b9c4f10" }, "padding": "x".repeat(4096) }
    })
    .to_string()
    .into_bytes();

    let mut failures = Vec::new();
    for round in 0..25 {
        for (path, expected) in [("/Reconcile", 200), ("/NoSuchFunction", 404)] {
            match post_in_pieces(app.port, path, &timer, 4).await {
                Ok(status) if status == expected => {}
                other => failures.push(format!("round {round} {path}: {other:?}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 50 calls failed: {failures:?}",
        failures.len()
    );
}
