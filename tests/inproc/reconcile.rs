//! `Reconcile` in process, with the ledger in memory: the retry of a failed dispatch, giving up,
//! and taking over a claim whose invocation died. In memory nothing durable holds a
//! retry, so the first delivery answers non-2xx (Event Grid delivers again) where a durable ledger
//! answers 200 `retrying`; the black-box suite covers that answer with Azurite.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::*;

fn credit(version: &str) -> Value {
    model_event("credit-risk", version, json!({"stage": "production"}))
}

/// The repository dispatches the fake GitHub received.
async fn dispatches_received(gh: &MockServer) -> usize {
    gh.received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/dispatches"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_sends_a_failed_dispatch_once_and_a_redelivery_is_then_a_duplicate() {
    let f = Fakes::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&f.gh)
        .await;
    let app = App::start(
        &f,
        &standard_config(),
        &[("AUTODEPLOY_RETRY_BUDGET_SECS", "0.2")],
    )
    .await;

    let first = app.post_event(&credit("8")).await;

    assert_eq!(first.status, 503, "{}", first.raw);
    assert_eq!(app.record("credit-risk", "8").await["state"], "retrying");
    // GitHub is back.
    f.gh.reset().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&f.gh)
        .await;
    let pass = app.post_reconcile().await;
    assert_eq!(pass.status, 200, "{}", pass.raw);
    assert_eq!(pass.body["ReturnValue"]["dispatched"], 1, "{}", pass.raw);

    // A second pass and a late redelivery do nothing.
    let again = app.post_reconcile().await;
    assert_eq!(again.body["ReturnValue"]["dispatched"], 0, "{}", again.raw);
    let redelivered = app.post_event(&credit("8")).await;
    assert_eq!(redelivered.decision(), "duplicate", "{}", redelivered.raw);
    let record = app.record("credit-risk", "8").await;
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
async fn reconcile_gives_up_after_the_configured_time() {
    let f = Fakes::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&f.gh)
        .await;
    let app = App::start(
        &f,
        &standard_config(),
        &[
            ("AUTODEPLOY_RETRY_BUDGET_SECS", "0.1"),
            ("AUTODEPLOY_GIVE_UP_AFTER", "0.5s"),
        ],
    )
    .await;
    assert_eq!(app.post_event(&credit("13")).await.status, 503);
    assert_eq!(app.record("credit-risk", "13").await["state"], "retrying");
    tokio::time::sleep(Duration::from_millis(600)).await;

    let pass = app.post_reconcile().await;

    assert_eq!(pass.body["ReturnValue"]["failed"], 1, "{}", pass.raw);
    assert_eq!(app.record("credit-risk", "13").await["state"], "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_whose_invocation_died_is_taken_over_after_the_timeout() {
    let f = Fakes::start().await;
    // GitHub hangs: the invocation is dropped while the dispatch is in flight.
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(30)))
        .up_to_n_times(1)
        .mount(&f.gh)
        .await;
    let app = App::start(
        &f,
        &standard_config(),
        &[("AUTODEPLOY_CLAIM_TIMEOUT_SECS", "0.5")],
    )
    .await;
    let event = credit("9");
    tokio::select! {
        reply = app.post_event(&event) => panic!("GitHub hangs, yet: {}", reply.raw),
        () = async {
            while dispatches_received(&f.gh).await == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } => {}
    }
    assert_eq!(app.record("credit-risk", "9").await["state"], "dispatching");
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&f.gh)
        .await;

    let early = app.post_event(&event).await;
    assert_eq!(
        early.decision(),
        "duplicate",
        "a live-looking claim is not stolen by a redelivery: {}",
        early.raw
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let pass = app.post_reconcile().await;

    assert_eq!(pass.body["ReturnValue"]["dispatched"], 1, "{}", pass.raw);
    let record = app.record("credit-risk", "9").await;
    assert_eq!(record["state"], "dispatched");
    assert_eq!(
        record["attempts"].as_array().unwrap().last().unwrap()["trigger"],
        "takeover"
    );
    // repository_dispatch has no idempotency key: this is the documented single repeat.
    assert_eq!(dispatches_received(&f.gh).await, 2);
}
