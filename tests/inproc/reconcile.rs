//! `Reconcile` in process, with the ledger in memory: the retry of a failed dispatch and giving up
//! (taking over a dead claim needs a killed process: the black-box suite). In memory nothing durable holds a
//! retry, so the first delivery answers non-2xx (Event Grid delivers again) where a durable ledger
//! answers 200 `retrying`; the black-box suite covers that answer with Azurite.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::harness::*;

fn credit(version: &str) -> Value {
    model_event("credit-risk", version, json!({"stage": "production"}))
}

#[tokio::test(flavor = "multi_thread")]
async fn in_memory_a_failed_dispatch_is_answered_non_2xx_and_reconcile_sends_it() {
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

    // The rest (a second pass and a late redelivery do nothing; the attempts) is the black-box
    // `a_transient_failure_is_acknowledged_then_reconcile_dispatches_it_once`, with a durable ledger.
    assert_eq!(app.record("credit-risk", "8").await["state"], "dispatched");
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
