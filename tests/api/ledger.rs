//! The durable ledger against a real Azurite: one action per version under duplicates and races,
//! retries owned by `Reconcile`, takeover of dead claims, stale versions, storage outages, `status`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use aml_autodeploy::http::Http;
use aml_autodeploy::ledger::connection::parse_connection_string;
use aml_autodeploy::ledger::{ETag, Store, StoreError};

use crate::helpers::*;

struct Ledgered {
    container: String,
    storage: String,
    gh: MockServer,
}

impl Ledgered {
    async fn new() -> Self {
        Self {
            container: unique_container(),
            storage: azurite(),
            gh: MockServer::start().await,
        }
    }

    async fn spawn(&self, extra: &[(&str, &str)]) -> TestApp {
        self.spawn_with(&standard_config(), extra).await
    }

    async fn spawn_with(&self, config: &str, extra: &[(&str, &str)]) -> TestApp {
        let uri = self.gh.uri();
        let mut env = vec![
            ("GITHUB_API_URL", uri.as_str()),
            ("GITHUB_TOKEN", "ghp_ledger_tests"),
            ("AUTODEPLOY_STORAGE", self.storage.as_str()),
            ("AUTODEPLOY_CONTAINER", self.container.as_str()),
        ];
        env.extend_from_slice(extra);
        TestApp::spawn(config, &env).await
    }

    fn status(&self, args: &[&str]) -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec!["status", "--storage", self.storage.as_str()];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = run_cli(
            dir.path(),
            &all,
            &[("AUTODEPLOY_CONTAINER", self.container.as_str())],
        );
        (code, format!("{stdout}{stderr}"))
    }

    async fn record(&self, model: &str, version: &str) -> Value {
        ledger_record(&self.storage, &self.container, model, version).await
    }

    async fn dispatches(&self) -> usize {
        dispatches_received(&self.gh).await
    }
}

fn credit(version: &str) -> Value {
    model_event("credit-risk", version, json!({"stage": "production"}))
}

fn with_id(mut event: Value, id: &str) -> Value {
    event["id"] = json!(id);
    event
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_parallel_deliveries_of_one_version_send_exactly_one_dispatch() {
    let t = Ledgered::new().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_millis(300)))
        .expect(1)
        .mount(&t.gh)
        .await;
    let app = t.spawn(&[]).await;

    // 25 copies of one event and 25 of a second event (another id) for the same version.
    let events: Vec<Value> = (0..50)
        .map(|i| {
            if i % 2 == 0 {
                credit("7")
            } else {
                with_id(credit("7"), "second-event-id")
            }
        })
        .collect();
    let replies = futures_util::future::join_all(events.iter().map(|e| app.post_event(e))).await;

    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.raw);
    }
    let dispatched = replies
        .iter()
        .filter(|r| r.decision() == "dispatched")
        .count();
    let duplicates = replies
        .iter()
        .filter(|r| r.decision() == "duplicate")
        .count();
    assert_eq!((dispatched, duplicates), (1, 49));
    let record = t.record("credit-risk", "7").await;
    assert_eq!(record["state"], "dispatched");
    let ids = record["event_ids"].as_array().unwrap();
    assert!(
        ids.contains(&json!("evt-credit-risk-7")) && ids.contains(&json!("second-event-id")),
        "both event ids are recorded: {record}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_failure_is_acknowledged_then_reconcile_dispatches_it_once() {
    let t = Ledgered::new().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .mount(&t.gh)
        .await;
    let app = t
        .spawn(&[
            ("AUTODEPLOY_RETRY_BUDGET_SECS", "1"),
            ("AUTODEPLOY_RETRY_FIRST_DELAY_SECS", "0"),
        ])
        .await;

    let first = app.post_event(&credit("8")).await;

    assert_eq!(
        first.status, 200,
        "durably recorded, so Event Grid must not retry: {}",
        first.raw
    );
    assert_eq!(first.decision(), "retrying");
    assert!(
        first.logs_text().contains("Reconcile tries again"),
        "{}",
        first.logs_text()
    );
    assert_eq!(t.record("credit-risk", "8").await["state"], "retrying");

    // GitHub is back.
    t.gh.reset().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&t.gh)
        .await;
    let pass = app.post_reconcile().await;
    assert_eq!(pass.status, 200, "{}", pass.raw);
    assert_eq!(pass.body["ReturnValue"]["dispatched"], 1, "{}", pass.raw);

    // A second pass and a late redelivery do nothing.
    let again = app.post_reconcile().await;
    assert_eq!(again.body["ReturnValue"]["dispatched"], 0, "{}", again.raw);
    let redelivered = app.post_event(&credit("8")).await;
    assert_eq!(redelivered.decision(), "duplicate", "{}", redelivered.raw);
    assert!(
        redelivered.logs_text().contains("already handled"),
        "{}",
        redelivered.logs_text()
    );

    let record = t.record("credit-risk", "8").await;
    assert_eq!(record["state"], "dispatched");
    let outcomes: Vec<&str> = record["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["transient_error", "dispatched"]);
    assert_eq!(record["attempts"][1]["trigger"], "reconcile");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_whose_process_died_is_taken_over_after_the_timeout() {
    let t = Ledgered::new().await;
    // GitHub hangs: the process is killed while the dispatch is in flight.
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(30)))
        .up_to_n_times(1)
        .mount(&t.gh)
        .await;
    let mut app = t.spawn(&[("AUTODEPLOY_CLAIM_TIMEOUT_SECS", "1")]).await;
    let event = credit("9");
    let in_flight = {
        let port = app.port;
        let body = envelope(&event).to_string();
        tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/ModelRegistered"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
        })
    };
    for _ in 0..100 {
        if t.dispatches().await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.kill();
    let _ = in_flight.await;
    assert_eq!(t.record("credit-risk", "9").await["state"], "dispatching");

    // A new instance: the claim is dead after its timeout, and Reconcile takes it over.
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&t.gh)
        .await;
    let app = t.spawn(&[("AUTODEPLOY_CLAIM_TIMEOUT_SECS", "1")]).await;
    let early = app.post_event(&event).await;
    assert_eq!(
        early.decision(),
        "duplicate",
        "a live-looking claim is not stolen by a redelivery: {}",
        early.raw
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pass = app.post_reconcile().await;

    assert_eq!(pass.body["ReturnValue"]["dispatched"], 1, "{}", pass.raw);
    let record = t.record("credit-risk", "9").await;
    assert_eq!(record["state"], "dispatched");
    assert_eq!(
        record["attempts"].as_array().unwrap().last().unwrap()["trigger"],
        "takeover"
    );
    // repository_dispatch has no idempotency key: this is the documented single repeat.
    assert_eq!(t.dispatches().await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_takeover_finds_the_workflow_run_the_dead_attempt_started_and_does_not_send_again() {
    let t = Ledgered::new().await;
    let config = format!(
        "workspace: {WS}\nrules:\n  - name: fraud\n    models: [fraud]\n    github:\n      repository: contoso/ml-deploy\n      workflow: deploy.yml\n      inputs: {{ model: \"{{modelName}}\", event_id: \"{{eventId}}\" }}\n"
    );
    Mock::given(method("POST"))
        .and(path(
            "/repos/contoso/ml-deploy/actions/workflows/deploy.yml/dispatches",
        ))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(30)))
        .mount(&t.gh)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/contoso/ml-deploy/actions/workflows/deploy.yml/runs"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"total_count": 2, "workflow_runs": [
            {"id": 1, "display_title": "Deploy fraud:3 (event some-other-event)", "html_url": "https://github.com/contoso/ml-deploy/actions/runs/1"},
            {"id": 2, "display_title": "Deploy fraud:4 (event evt-fraud-4)", "html_url": "https://github.com/contoso/ml-deploy/actions/runs/2"}
        ]})))
        .expect(1)
        .mount(&t.gh)
        .await;
    let mut app = t
        .spawn_with(&config, &[("AUTODEPLOY_CLAIM_TIMEOUT_SECS", "1")])
        .await;
    let event = model_event("fraud", "4", json!({}));
    let port = app.port;
    let body = envelope(&event).to_string();
    let in_flight = tokio::spawn(async move {
        let _ = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/ModelRegistered"))
            .body(body)
            .send()
            .await;
    });
    for _ in 0..100 {
        if t.dispatches().await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.kill();
    let _ = in_flight.await;

    let app = t
        .spawn_with(&config, &[("AUTODEPLOY_CLAIM_TIMEOUT_SECS", "1")])
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pass = app.post_reconcile().await;

    assert_eq!(
        pass.body["ReturnValue"]["foundExistingRun"], 1,
        "{}",
        pass.raw
    );
    assert_eq!(
        t.dispatches().await,
        1,
        "the run exists: no second dispatch"
    );
    let record = t.record("fraud", "4").await;
    assert_eq!(record["state"], "dispatched");
    assert_eq!(
        record["attempts"].as_array().unwrap().last().unwrap()["run_url"],
        "https://github.com/contoso/ml-deploy/actions/runs/2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_down_answers_non_2xx_and_acts_on_nothing() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&gh)
        .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let storage = azurite_at(closed);
    let uri = gh.uri();
    let app = TestApp::spawn(
        &standard_config(),
        &[
            ("GITHUB_API_URL", uri.as_str()),
            ("GITHUB_TOKEN", "ghp_x"),
            ("AUTODEPLOY_STORAGE", storage.as_str()),
        ],
    )
    .await;

    let reply = app.post_event(&credit("1")).await;

    assert_eq!(reply.status, 503, "{}", reply.raw);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("ledger is unavailable"),
        "{}",
        reply.raw
    );
    let reconcile = app.post_reconcile().await;
    assert_eq!(reconcile.status, 503, "{}", reconcile.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn azurite_accepts_our_shared_key_and_refuses_a_wrong_one() {
    let good = parse_connection_string(&azurite(), "test").unwrap();
    let store = good
        .open(&unique_container(), &Http::new(), |_| unreachable!())
        .unwrap();
    store.create("probe.json", b"{}".to_vec()).await.unwrap();
    assert!(store.read("probe.json").await.unwrap().is_some());

    let wrong_key = azurite().replace("Eby8vdM02", "AAAAvdM02");
    let bad = parse_connection_string(&wrong_key, "test").unwrap();
    let store = bad
        .open(&unique_container(), &Http::new(), |_| unreachable!())
        .unwrap();
    match store.create("probe.json", b"{}".to_vec()).await {
        Err(StoreError::Unavailable(message)) => assert!(message.contains("403"), "{message}"),
        other => panic!("a wrong key must be refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn etag_conflicts_are_detected_by_the_blob_store() {
    let target = parse_connection_string(&azurite(), "test").unwrap();
    let store: Arc<dyn Store> = target
        .open(&unique_container(), &Http::new(), |_| unreachable!())
        .unwrap();

    let first = store
        .create("records/m/ws/1.json", b"v1".to_vec())
        .await
        .unwrap();
    assert_eq!(
        store.create("records/m/ws/1.json", b"again".to_vec()).await,
        Err(StoreError::AlreadyExists)
    );
    let second = store
        .replace("records/m/ws/1.json", b"v2".to_vec(), &first)
        .await
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(
        store
            .replace("records/m/ws/1.json", b"v3".to_vec(), &first)
            .await,
        Err(StoreError::Conflict)
    );
    assert_eq!(
        store
            .replace(
                "records/m/ws/missing.json",
                b"x".to_vec(),
                &ETag::from_service("\"0x1\"")
            )
            .await,
        Err(StoreError::Conflict)
    );
    let (body, tag) = store.read("records/m/ws/1.json").await.unwrap().unwrap();
    assert_eq!((body.as_slice(), tag), (&b"v2"[..], second));
    store.put("outbox/2/x", Vec::new()).await.unwrap();
    store.put("outbox/1/x", Vec::new()).await.unwrap();
    assert_eq!(
        store.list("outbox/", 10).await.unwrap(),
        ["outbox/1/x", "outbox/2/x"]
    );
    store.delete("outbox/1/x").await.unwrap();
    store.delete("outbox/1/x").await.unwrap();
    assert_eq!(store.list("outbox/", 10).await.unwrap(), ["outbox/2/x"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_every_record() {
    let t = Ledgered::new().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&t.gh)
        .await;
    let mut app = t.spawn(&[]).await;
    assert_eq!(app.post_event(&credit("12")).await.decision(), "dispatched");
    app.kill();

    let app = t.spawn(&[]).await;
    let again = app
        .post_event(&with_id(credit("12"), "redelivered-after-restart"))
        .await;

    assert_eq!(again.status, 200);
    assert_eq!(again.decision(), "duplicate", "{}", again.raw);
    let record = t.record("credit-risk", "12").await;
    assert_eq!(
        record["event_ids"],
        json!(["evt-credit-risk-12", "redelivered-after-restart"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn skipped_observed_and_malformed_events_are_recorded_too() {
    let t = Ledgered::new().await;
    let app = t.spawn(&[]).await;

    assert_eq!(
        app.post_event(&model_event("shadow-x", "1", json!({})))
            .await
            .decision(),
        "observed"
    );
    assert_eq!(
        app.post_event(&model_event("nobody", "2", json!({})))
            .await
            .decision(),
        "skipped"
    );
    let malformed = app
        .post_event(
            &json!({"id": "bad", "eventType": "Microsoft.MachineLearningServices.ModelRegistered"}),
        )
        .await;
    assert_eq!(malformed.status, 200);
    assert!(
        malformed.body["ReturnValue"]["recordedAs"]
            .as_str()
            .unwrap()
            .starts_with("malformed/"),
        "{}",
        malformed.raw
    );

    let observed = t.record("shadow-x", "1").await;
    assert_eq!(observed["state"], "observed");
    assert_eq!(observed["action"]["repository"], "contoso/ml-deploy");
    let skipped = t.record("nobody", "2").await;
    assert!(
        skipped["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no rule matched"),
        "{skipped}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_recent_records_a_models_history_and_a_whole_record() {
    let t = Ledgered::new().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&t.gh)
        .await;
    let app = t.spawn(&[]).await;
    for v in ["20", "21"] {
        assert_eq!(app.post_event(&credit(v)).await.decision(), "dispatched");
    }
    assert_eq!(
        app.post_event(&model_event("shadow-y", "1", json!({})))
            .await
            .decision(),
        "observed"
    );

    let (code, table) = t.status(&[]);
    assert_eq!(code, 0, "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("MODEL") && lines[0].contains("STATE"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("shadow-y") && lines[1].contains("observed"),
        "most recent first: {table}"
    );
    assert!(
        lines[2].starts_with("credit-risk")
            && lines[2].contains("21")
            && lines[2].contains("dispatched"),
        "{table}"
    );

    let (_, limited) = t.status(&["--limit", "1"]);
    assert_eq!(limited.lines().count(), 2, "{limited}");

    let (_, history) = t.status(&["credit-risk"]);
    assert!(
        history.contains(" 20 ") && history.contains(" 21 ") && !history.contains("shadow-y"),
        "{history}"
    );

    let record = status_record(&t.storage, &t.container, "credit-risk", "21").await;
    assert_eq!(record["schema"], 1);
    assert_eq!(record["rule"], "credit-to-github");
    assert_eq!(record["attempts"][0]["status"], 204);
    assert!(
        !serde_json::to_string(&record)
            .unwrap()
            .contains("ghp_ledger_tests")
    );

    let (code, json_list) = t.status(&["--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&json_list)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_that_needs_an_operator_fails_the_invocation_but_stays_queued_for_reconcile() {
    let t = Ledgered::new().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(422)
                .set_body_json(json!({"message": "Unexpected inputs provided"})),
        )
        .expect(1)
        .mount(&t.gh)
        .await;
    let app = t.spawn(&[]).await;

    let reply = app.post_event(&credit("30")).await;

    assert_eq!(
        reply.status, 502,
        "visible as a failed invocation: {}",
        reply.raw
    );
    let record = t.record("credit-risk", "30").await;
    assert_eq!(record["state"], "retrying");
    assert_eq!(record["attempts"][0]["outcome"], "refused");
    assert_eq!(record["attempts"][0]["status"], 422);
    // Event Grid's redelivery finds it queued: Reconcile owns the retry, nothing is sent now.
    let redelivered = app.post_event(&credit("30")).await;
    assert_eq!(redelivered.status, 200);
    assert_eq!(redelivered.decision(), "duplicate");
    assert!(
        redelivered
            .logs_text()
            .contains("queued for retry by Reconcile"),
        "{}",
        redelivered.logs_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_never_sends_an_older_version_after_a_newer_one_was_dispatched() {
    let t = Ledgered::new().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&t.gh)
        .await;
    let app = t
        .spawn(&[
            ("AUTODEPLOY_RETRY_BUDGET_SECS", "0.3"),
            ("AUTODEPLOY_RETRY_FIRST_DELAY_SECS", "0"),
        ])
        .await;
    let mut older = credit("40");
    older["eventTime"] = json!("2026-11-26T11:00:00Z");
    let mut newer = credit("41");
    newer["eventTime"] = json!("2026-11-26T12:00:00Z");

    assert_eq!(app.post_event(&older).await.decision(), "retrying");
    t.gh.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&t.gh)
        .await;
    assert_eq!(app.post_event(&newer).await.decision(), "dispatched");
    let pass = app.post_reconcile().await;

    assert_eq!(pass.body["ReturnValue"]["stale"], 1, "{}", pass.raw);
    assert_eq!(pass.body["ReturnValue"]["dispatched"], 0, "{}", pass.raw);
    assert_eq!(t.record("credit-risk", "40").await["state"], "stale");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_sends_nothing_while_paused_and_resumes_after() {
    let t = Ledgered::new().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&t.gh)
        .await;
    let mut app = t
        .spawn(&[
            ("AUTODEPLOY_RETRY_BUDGET_SECS", "0.3"),
            ("AUTODEPLOY_RETRY_FIRST_DELAY_SECS", "0"),
        ])
        .await;
    assert_eq!(app.post_event(&credit("42")).await.decision(), "retrying");
    app.kill();
    t.gh.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&t.gh)
        .await;

    let paused = t.spawn(&[("AUTODEPLOY_PAUSED", "true")]).await;
    let pass = paused.post_reconcile().await;

    assert_eq!(pass.status, 200);
    assert_eq!(pass.body["ReturnValue"]["dispatched"], 0, "{}", pass.raw);
    assert!(
        pass.logs_text().contains("AUTODEPLOY_PAUSED"),
        "{}",
        pass.logs_text()
    );
    assert_eq!(t.record("credit-risk", "42").await["state"], "retrying");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_record_does_not_stop_the_pass() {
    let t = Ledgered::new().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&t.gh)
        .await;
    let app = t
        .spawn(&[
            ("AUTODEPLOY_RETRY_BUDGET_SECS", "0.3"),
            ("AUTODEPLOY_RETRY_FIRST_DELAY_SECS", "0"),
        ])
        .await;
    assert_eq!(app.post_event(&credit("43")).await.decision(), "retrying");
    // A record written by some future version, due first in the outbox.
    let store = parse_connection_string(&t.storage, "test")
        .unwrap()
        .open(&t.container, &Http::new(), |_| unreachable!())
        .unwrap();
    store
        .put(
            "records/zz/ws-000000000000/1.json",
            br#"{"schema": 99, "state": "teleporting"}"#.to_vec(),
        )
        .await
        .unwrap();
    store
        .put(
            "outbox/0000000000001-deadbeef/records/zz/ws-000000000000/1.json",
            Vec::new(),
        )
        .await
        .unwrap();
    t.gh.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&t.gh)
        .await;

    let pass = app.post_reconcile().await;

    assert_eq!(pass.status, 200, "{}", pass.raw);
    assert_eq!(pass.body["ReturnValue"]["errors"], 1, "{}", pass.raw);
    assert_eq!(pass.body["ReturnValue"]["dispatched"], 1, "{}", pass.raw);
    assert_eq!(
        store.list("outbox-poison/", 10).await.unwrap().len(),
        1,
        "moved aside"
    );
    let again = app.post_reconcile().await;
    assert_eq!(again.body["ReturnValue"]["errors"], 0, "{}", again.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_execute_fails_when_the_dispatch_is_only_queued_for_retry() {
    let t = Ledgered::new().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&t.gh)
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("autodeploy.yml"), standard_config()).unwrap();
    std::fs::write(dir.path().join("event.json"), credit("44").to_string()).unwrap();
    let uri = t.gh.uri();

    let (code, out, _) = tokio::task::block_in_place(|| {
        run_cli(
            dir.path(),
            &["replay", "event.json", "--execute"],
            &[
                ("GITHUB_API_URL", &uri),
                ("GITHUB_TOKEN", "ghp_x"),
                ("AUTODEPLOY_RETRY_BUDGET_SECS", "0.3"),
                ("AUTODEPLOY_STORAGE", &t.storage),
                ("AUTODEPLOY_CONTAINER", &t.container),
            ],
        )
    });

    assert_ne!(code, 0, "{out}");
    assert!(out.contains("\"decision\": \"retrying\""), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_on_an_empty_ledger_says_so_without_creating_anything() {
    let t = Ledgered::new().await;
    let (code, out) = tokio::task::block_in_place(|| t.status(&[]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no records"), "{out}");
    let store = parse_connection_string(&t.storage, "test")
        .unwrap()
        .open(&t.container, &Http::new(), |_| unreachable!())
        .unwrap();
    assert!(store.read("records/x/y/1.json").await.unwrap().is_none());
}
