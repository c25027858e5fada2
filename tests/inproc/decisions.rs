//! Deciding, in process: skip reasons, observe mode, pause, duplicates, stale versions and the
//! quality gate's verdicts, through the router with the ledger in memory. The first three tests
//! moved from the black-box suite (host_contract.rs), assertions unchanged.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn events_that_need_no_action_are_acknowledged_with_the_reason_and_send_nothing() {
    let f = Fakes::expecting_no_github_call().await;
    let app = App::start(&f, &standard_config(), &[]).await;
    let other_ws = model_event("credit-risk", "1", json!({"stage": "production"}));
    let mut other_ws = other_ws;
    other_ws["topic"] = json!(WS.replace("ml-ws", "someone-elses-ws"));
    let run_completed: Value =
        serde_json::from_str(include_str!("../fixtures/run_completed.eventgrid.json")).unwrap();

    let cases = [
        (
            model_event("unknown-model", "1", json!({})),
            "skipped",
            "no rule matched unknown-model:1",
        ),
        (
            model_event("credit-risk", "1", json!({"stage": "dev"})),
            "skipped",
            "tag stage is \"dev\", expected \"production\"",
        ),
        (other_ws, "skipped", "someone-elses-ws"),
        (
            run_completed,
            "skipped",
            "RunCompleted is a known event type, not a ModelRegistered event",
        ),
        (
            model_event("shadow-1", "1", json!({})),
            "observed",
            "observe mode",
        ),
        (
            json!({"id": "x", "topic": WS, "eventType": "Microsoft.MachineLearningServices.ModelRegistered", "data": {"modelName": "credit-a"}}),
            "malformed",
            "modelVersion",
        ),
        (json!("{not json"), "malformed", "not valid JSON"),
        (json!({"what": "ever"}), "malformed", "neither"),
    ];
    for (event, decision, needle) in cases {
        let reply = app.post_event(&event).await;
        assert_eq!(reply.status, 200, "{event}: {}", reply.raw);
        assert_eq!(reply.decision(), decision, "{event}: {}", reply.raw);
        assert!(
            reply.logs_text().contains(needle),
            "{event}: logs lack {needle:?}: {}",
            reply.logs_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn observe_mode_returns_the_request_it_would_have_sent() {
    let f = Fakes::expecting_no_github_call().await;
    let app = App::start(&f, &standard_config(), &[]).await;

    let reply = app
        .post_event(&model_event("shadow-x", "5", json!({})))
        .await;

    assert_eq!(reply.decision(), "observed");
    let request = &reply.body["ReturnValue"]["request"];
    assert!(
        request["url"]
            .as_str()
            .unwrap()
            .ends_with("/repos/contoso/ml-deploy/dispatches")
    );
    assert_eq!(request["body"]["client_payload"]["modelVersion"], "5");
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_decides_and_logs_but_sends_nothing() {
    let f = Fakes::expecting_no_github_call().await;
    let app = App::start(&f, &standard_config(), &[("AUTODEPLOY_PAUSED", "true")]).await;

    let reply = app
        .post_event(&model_event(
            "credit-risk",
            "9",
            json!({"stage": "production"}),
        ))
        .await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.decision(), "skipped");
    assert_eq!(reply.body["ReturnValue"]["skip"], "paused");
    assert!(
        reply.logs_text().contains("AUTODEPLOY_PAUSED"),
        "{}",
        reply.logs_text()
    );
    assert!(
        reply.logs_text().contains("repository_dispatch"),
        "{}",
        reply.logs_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_delivery_sends_nothing_more_and_is_recorded() {
    let f = Fakes::expecting_dispatches(1).await;
    let app = App::start(&f, &standard_config(), &[]).await;
    let event = model_event("credit-risk", "7", json!({"stage": "production"}));
    let mut second_id = event.clone();
    second_id["id"] = json!("second-event-id");

    let first = app.post_event(&event).await;
    let again = app.post_event(&event).await;
    let other = app.post_event(&second_id).await;

    assert_eq!(first.decision(), "dispatched", "{}", first.raw);
    for reply in [&again, &other] {
        assert_eq!(reply.status, 200, "{}", reply.raw);
        assert_eq!(reply.decision(), "duplicate", "{}", reply.raw);
        assert!(
            reply.logs_text().contains("already handled"),
            "{}",
            reply.logs_text()
        );
    }
    let record = app.record("credit-risk", "7").await;
    assert_eq!(record["state"], "dispatched");
    assert_eq!(
        record["event_ids"],
        json!(["evt-credit-risk-7", "second-event-id"])
    );
    assert_eq!(record["attempts"].as_array().unwrap().len(), 1, "{record}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_version_after_a_newer_one_is_stale_and_not_acted_on() {
    let f = Fakes::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&f.gh)
        .await;
    let app = App::start(&f, &standard_config(), &[]).await;
    let mut newer = model_event("credit-risk", "11", json!({"stage": "production"}));
    newer["eventTime"] = json!("2026-11-26T12:00:00Z");
    let mut older = model_event("credit-risk", "10", json!({"stage": "production"}));
    older["eventTime"] = json!("2026-11-26T11:00:00Z");

    assert_eq!(app.post_event(&newer).await.decision(), "dispatched");
    let late = app.post_event(&older).await;

    assert_eq!(late.status, 200, "{}", late.raw);
    assert_eq!(late.decision(), "stale", "{}", late.raw);
    assert!(
        late.logs_text().contains("version 11"),
        "{}",
        late.logs_text()
    );
    assert_eq!(app.record("credit-risk", "10").await["state"], "stale");
}

fn gated_config(gate: &str) -> String {
    format!(
        r#"
workspace: {WS}
rules:
  - name: credit
    models: ["credit-risk"]
    github: {{ repository: contoso/ml-deploy, event_type: deploy-model }}
    gate: {gate}
"#
    )
}

fn credit(version: &str, tags: Value) -> Value {
    model_event("credit-risk", version, tags)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_ships_a_better_model_and_rejects_a_worse_one_for_good() {
    let f = Fakes::start().await;
    f.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    f.arm.add_model("1", json!({"accuracy": "0.85"}), None);
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&f.gh)
        .await;
    let config = gated_config("{ metric: accuracy, min: 0.5, champion_endpoint: credit-ep }");
    let app = App::start(&f, &config, &[]).await;

    let better = app
        .post_event(&credit("2", json!({"accuracy": "0.9"})))
        .await;
    let worse = app
        .post_event(&credit("3", json!({"accuracy": "0.8"})))
        .await;
    let below = app
        .post_event(&credit("4", json!({"accuracy": "0.4"})))
        .await;

    assert_eq!(better.decision(), "dispatched", "{}", better.raw);
    assert_eq!(
        better.body["ReturnValue"]["gate"]["champion"]["model"],
        "credit-risk:1"
    );
    assert_eq!(app.record("credit-risk", "2").await["gate"]["value"], 0.9);
    assert_eq!(worse.status, 200, "{}", worse.raw);
    assert_eq!(worse.decision(), "rejected", "{}", worse.raw);
    assert_eq!(
        worse.body["ReturnValue"]["reason"],
        "rejected: accuracy 0.8 < champion credit-risk:1 0.85 + 0"
    );
    assert_eq!(below.decision(), "rejected", "{}", below.raw);
    let record = app.record("credit-risk", "3").await;
    assert_eq!(record["state"], "rejected");
    assert_eq!(record["gate"]["source"], "event tags");
    // A redelivery of the rejected version changes nothing.
    let again = app
        .post_event(&credit("3", json!({"accuracy": "0.8"})))
        .await;
    assert_eq!(again.decision(), "rejected", "{}", again.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_metric_lookup_without_a_durable_ledger_is_left_to_event_grid() {
    let f = Fakes::start().await;
    f.arm.add_endpoint("credit-ep", &[]);
    f.arm.add_model("5", json!({}), Some("job-5"));
    f.arm.add_run("job-5", "train", None, &[("accuracy", 0.9)]);
    f.arm.with(|s| s.mlflow_failures = 100);
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&f.gh)
        .await;
    let config = gated_config(
        "{ metric: accuracy, source: mlflow, min: 0.8, champion_endpoint: credit-ep }",
    );
    let app = App::start(&f, &config, &[("AUTODEPLOY_RETRY_BUDGET_SECS", "0.5")]).await;

    let first = app.post_event(&credit("5", json!({}))).await;

    // Nothing durable holds the retry: a non-2xx answer makes Event Grid deliver again.
    assert_eq!(first.status, 503, "{}", first.raw);
    assert!(first.logs_text().contains("gate:"), "{}", first.logs_text());
    f.arm.with(|s| s.mlflow_failures = 0);
    let redelivered = app.post_event(&credit("5", json!({}))).await;
    assert_eq!(redelivered.decision(), "dispatched", "{}", redelivered.raw);
    assert_eq!(app.record("credit-risk", "5").await["gate"]["value"], 0.9);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_type_rendered_past_100_characters_fails_the_version_without_a_dispatch_or_a_retry()
 {
    let f = Fakes::expecting_no_github_call().await;
    let config = "rules:\n  - name: long\n    models: ['*']\n    github: { repository: contoso/ml-deploy, event_type: 'deploy-{modelName}' }\n";
    let app = App::start(&f, config, &[]).await;
    let model = format!("model-{}", "x".repeat(109));

    let reply = app.post_event(&model_event(&model, "1", json!({}))).await;

    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.decision(), "failed", "{}", reply.raw);
    let logs = reply.logs_text();
    assert!(
        logs.contains("event_type renders to 122 characters; GitHub accepts at most 100")
            && logs.contains("configuration problem"),
        "{logs}"
    );
    let record = app.record(&model, "1").await;
    assert_eq!(record["state"], "failed", "{record}");
    assert!(record["next_attempt_at"].is_null(), "{record}");
    // Reconcile has nothing to retry: still failed, still no call to GitHub.
    app.post_reconcile().await;
    assert_eq!(app.record(&model, "1").await["state"], "failed");
}

/// 1,000 rules, one per model family (`family-0000-*` …), as a platform team writes them; rules 300,
/// 500 and 900 are for `target-*` (300 wants `stage: production`; 900 would send elsewhere).
fn thousand_rules() -> String {
    let mut yaml = format!("workspace: {WS}\nrules:\n");
    for i in 0..1000 {
        let (models, tags, repository) = match i {
            300 => ("target-*", "{ stage: production }", "contoso/ml-deploy"),
            500 => ("target-*", "{}", "contoso/ml-deploy"),
            900 => ("target-*", "{}", "contoso/elsewhere"),
            _ => ("", "{}", "contoso/ml-deploy"),
        };
        let models = if models.is_empty() {
            format!("family-{i:04}-*")
        } else {
            models.to_string()
        };
        yaml.push_str(&format!(
            "  - name: rule-{i:04}\n    models: [\"{models}\"]\n    tags: {tags}\n    github: {{ repository: {repository}, event_type: deploy-model }}\n"
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread")]
async fn with_1000_rules_the_first_matching_rule_wins_and_a_miss_is_answered_in_4_kb() {
    // Only rule 500's repository may receive a dispatch, once.
    let f = Fakes::expecting_dispatches(1).await;
    let app = App::start(&f, &thousand_rules(), &[]).await;

    let miss = app
        .post_event(&model_event(
            "nobody-knows-me",
            "1",
            json!({"stage": "dev"}),
        ))
        .await;
    assert_eq!(miss.status, 200, "{}", miss.raw);
    assert_eq!(miss.decision(), "skipped");
    assert!(
        miss.raw.len() <= 4096,
        "the whole host response is {} bytes: {}",
        miss.raw.len(),
        miss.raw
    );
    // Still explained, in Logs and in the ReturnValue: the closest rules, then a count.
    let more = "and 997 more rules whose name patterns do not match";
    assert!(miss.logs_text().contains(more), "{}", miss.logs_text());
    let value = &miss.body["ReturnValue"];
    assert!(value["reason"].as_str().unwrap().contains(more), "{value}");
    assert_eq!(value["misses"].as_array().unwrap().len(), 3, "{value}");
    assert_eq!(value["unlistedMisses"], 997, "{value}");

    // A near miss names the rules whose patterns match and why their tags do not.
    let near = app
        .post_event(&model_event("family-0042", "1", json!({})))
        .await;
    assert!(near.raw.len() <= 4096, "{} bytes", near.raw.len());
    assert!(
        near.logs_text()
            .contains("rule-0042: name family-0042 does not match family-0042-*"),
        "{}",
        near.logs_text()
    );

    // Rule 300 matches the name but not the tags; 500 is the first that matches: it wins over 900.
    let hit = app
        .post_event(&model_event("target-a", "1", json!({"stage": "dev"})))
        .await;
    assert_eq!(hit.status, 200, "{}", hit.raw);
    assert_eq!(hit.decision(), "dispatched", "{}", hit.raw);
    assert_eq!(hit.body["ReturnValue"]["rule"], "rule-0500", "{}", hit.raw);
}
