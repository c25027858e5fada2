//! The branches behind several instances, in process: a rollout step skipped under another
//! instance's live claim (and taken over once it times out), a recorded traffic target the endpoint
//! already shows counted as applied, and a waiting version that no longer waits making way.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

const FAST: &str =
    "{ strategy: blue-green, canary_percent: 10, bake_minutes: 0, retain_previous_minutes: 0 }";

/// The application with one `azureml` rule for `models` on `credit-ep`.
async fn start(fakes: &Fakes, files: &DirectFiles, models: &str, extra: &[(&str, &str)]) -> App {
    let config = files
        .config("credit-ep", FAST)
        .replace(r#"models: ["credit-risk"]"#, &format!("models: [{models}]"));
    let path = DirectFiles::write(files.path(), &config);
    let mut env = vec![("AUTODEPLOY_CONFIG", path.as_str())];
    env.extend_from_slice(extra);
    App::start(fakes, &config, &env).await
}

fn registered(model: &str, version: &str, second: u32) -> Value {
    let mut event = model_event(model, version, json!({}));
    event["eventTime"] = json!(format!("2026-11-26T10:00:{second:02}Z"));
    event
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_under_another_instances_live_claim_is_skipped_until_the_claim_times_out() {
    let (fakes, files) = (Fakes::start().await, DirectFiles::new());
    fakes.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    let app = start(
        &fakes,
        &files,
        r#""credit-risk""#,
        &[("AUTODEPLOY_CLAIM_TIMEOUT_SECS", "1")],
    )
    .await;
    assert_eq!(
        app.post_event(&registered("credit-risk", "2", 2))
            .await
            .decision(),
        "deploying"
    );
    // Another instance is in the middle of this rollout's next step.
    let claimed_at = time::OffsetDateTime::now_utc();
    app.edit_record("credit-risk", "2", |record| {
        record.claim = Some(aml_autodeploy::ledger::Claim {
            attempt_id: "rollout-another-instance".into(),
            claimed_at,
        });
    })
    .await;
    let before = fakes.arm.with(|s| s.requests.len());
    let pass = app.post_reconcile().await;
    assert_eq!(pass.status, 200, "{}", pass.raw);
    assert!(
        pass.logs_text()
            .contains("another pass or instance is running this rollout's step; skipped"),
        "{}",
        pass.raw
    );
    assert_eq!(
        fakes.arm.with(|s| s.requests.len()),
        before,
        "no ARM call without the claim"
    );
    assert_eq!(
        app.record("credit-risk", "2").await["rollout"]["phase"],
        "creating"
    );

    // The other instance died: once its claim times out, a pass takes the rollout over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let record = app.reconcile_until("credit-risk", "2", "succeeded").await;
    assert_eq!(
        record["claim"],
        Value::Null,
        "the last write clears the claim"
    );
    assert_eq!(fakes.arm.with(|s| s.deployment_puts.len()), 1);
    assert!(
        fakes.arm.violations().is_empty(),
        "{:?}",
        fakes.arm.violations()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_traffic_target_the_endpoint_already_shows_counts_as_applied() {
    let (fakes, files) = (Fakes::start().await, DirectFiles::new());
    fakes.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    fakes.arm.with(|s| s.hold_traffic = true);
    let app = start(&fakes, &files, r#""credit-risk""#, &[]).await;
    app.post_event(&registered("credit-risk", "2", 2)).await;
    let canary = app
        .reconcile_until_with("credit-risk", "2", |r| {
            r["rollout"]["phase"] == "canary" && !r["rollout"]["operation"].is_null()
        })
        .await;
    let target = canary["rollout"]["pending"]["traffic"].clone();
    assert_eq!(target, json!({"blue": 90, "credit-risk-2": 10}));
    // ARM applied the canary PUT, but its operation never made it into the record (storage was
    // lost right after the PUT): the record says "send the canary split".
    fakes.arm.with(|s| {
        s.hold_traffic = false;
        let endpoint = s.endpoints.get_mut("credit-ep").unwrap();
        endpoint.traffic = [("blue".to_string(), 90), ("credit-risk-2".to_string(), 10)].into();
    });
    app.edit_record("credit-risk", "2", |record| {
        record.rollout.as_mut().unwrap().operation = None;
    })
    .await;
    let puts_before = fakes.arm.with(|s| s.traffic_puts.len());

    app.reconcile_until("credit-risk", "2", "succeeded").await;

    let sent: Vec<_> = fakes.arm.with(|s| s.traffic_puts[puts_before..].to_vec());
    assert_eq!(
        sent.len(),
        1,
        "only the promotion is sent; the canary split is not sent again: {sent:?}"
    );
    assert_eq!(sent[0].0, [("credit-risk-2".to_string(), 100)].into());
    assert!(
        fakes.arm.violations().is_empty(),
        "{:?}",
        fakes.arm.violations()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_version_that_no_longer_waits_makes_way_for_the_next() {
    let (fakes, files) = (Fakes::start().await, DirectFiles::new());
    fakes.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    fakes.arm.with(|s| s.hold_operations = true);
    let app = start(&fakes, &files, r#""fraud", "churn""#, &[]).await;
    app.post_event(&registered("fraud", "2", 2)).await;
    assert_eq!(
        app.post_event(&registered("churn", "1", 5))
            .await
            .decision(),
        "queued"
    );
    assert_eq!(
        app.post_event(&registered("fraud", "3", 7))
            .await
            .decision(),
        "queued"
    );
    // churn:1 stops waiting without leaving the queue (its rule was removed meanwhile): it is first
    // in line, and must not hold fraud:3 back.
    app.edit_record("churn", "1", |record| {
        record.transition(
            aml_autodeploy::ledger::State::Skipped,
            "rule removed",
            time::OffsetDateTime::now_utc(),
        );
    })
    .await;
    fakes.arm.with(|s| s.hold_operations = false);

    let deadline = Instant::now() + Duration::from_secs(20);
    while app.record("fraud", "3").await["state"] != "succeeded" {
        assert!(
            Instant::now() < deadline,
            "{:#}",
            app.record("fraud", "3").await
        );
        app.post_reconcile().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        fakes.arm.created_deployments(),
        ["fraud-2", "fraud-3"],
        "churn:1 never deployed, fraud:3 after fraud:2"
    );
    assert!(fakes.arm.overlapping_rollouts().is_empty());
    assert!(
        fakes.arm.violations().is_empty(),
        "{:?}",
        fakes.arm.violations()
    );
}
