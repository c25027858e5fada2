//! Direct deployment's branches in process: blue/green rollouts against the stateful fake ARM,
//! driven through the router (events and `Reconcile`), with the ledger in memory. Moved from the
//! black-box suite, assertions unchanged; a restart mid-rollout and the commands stay there.

use std::ops::Deref;

use serde_json::{Value, json};

use crate::harness::*;

/// The fakes plus the files an `azureml` rule refers to (shared with `stories.rs`).
pub(crate) struct Direct {
    fakes: Fakes,
    files: DirectFiles,
}

impl Deref for Direct {
    type Target = Fakes;

    fn deref(&self) -> &Fakes {
        &self.fakes
    }
}

impl Direct {
    pub(crate) async fn new() -> Self {
        let files = DirectFiles::new();
        Self {
            fakes: Fakes::start().await,
            files,
        }
    }

    pub(crate) fn config(&self, endpoint: &str, rollout: &str) -> String {
        self.files.config(endpoint, rollout)
    }

    pub(crate) async fn spawn(&self, config: &str) -> App {
        self.spawn_with(config, &[]).await
    }

    /// [`Direct::spawn`] with more settings.
    pub(crate) async fn spawn_with(&self, config: &str, extra: &[(&str, &str)]) -> App {
        let config_path = DirectFiles::write(self.files.path(), config);
        let mut env = vec![("AUTODEPLOY_CONFIG", config_path.as_str())];
        env.extend_from_slice(extra);
        App::start(&self.fakes, config, &env).await
    }

    pub(crate) async fn reconcile_until(&self, app: &App, version: &str, state: &str) -> Value {
        app.reconcile_until("credit-risk", version, state).await
    }

    async fn reconcile_until_phase(&self, app: &App, version: &str, phase: &str) -> Value {
        app.reconcile_until_with("credit-risk", version, |r| r["rollout"]["phase"] == phase)
            .await
    }

    fn phases(record: &Value) -> Vec<String> {
        record["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["note"].as_str().unwrap().to_string())
            .collect()
    }
}

pub(crate) fn credit(version: &str) -> Value {
    let mut event = model_event("credit-risk", version, json!({}));
    event["eventTime"] = json!(format!("2026-11-26T10:00:{:0>2}Z", version));
    event
}

pub(crate) const FAST: &str =
    "{ strategy: blue-green, canary_percent: 10, bake_minutes: 0, retain_previous_minutes: 0 }";

#[tokio::test(flavor = "multi_thread")]
async fn the_first_deployment_on_an_empty_endpoint_gets_all_traffic() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[]);
    let app = t.spawn(&t.config("credit-ep", FAST)).await;

    let reply = app.post_event(&credit("1")).await;

    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.decision(), "deploying", "{}", reply.raw);
    assert_eq!(reply.body["ReturnValue"]["rollout"]["phase"], "creating");
    let record = t.reconcile_until(&app, "1", "succeeded").await;
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("credit-risk-1".to_string(), 100)].into()
    );
    assert_eq!(record["rollout"]["phase"], "done");
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
    // The body is the YAML translated as az ml does, with the event's model.
    let body = t.arm.with(|s| s.deployment_puts[0].clone());
    assert_eq!(
        body["properties"]["model"],
        format!("{WS}/models/credit-risk/versions/1")
    );
    assert_eq!(
        body["properties"]["environmentId"],
        format!("{WS}/environments/sklearn-env/versions/3")
    );
    assert_eq!(
        body["properties"]["requestSettings"]["maxQueueWait"],
        "PT0.5S"
    );
    assert_eq!(body["location"], "westeurope");
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_goes_through_mirror_canary_promotion_and_cleanup() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    let app = t
        .spawn(&t.config("credit-ep", "{ strategy: blue-green, mirror_percent: 20, canary_percent: 10, bake_minutes: 0, retain_previous_minutes: 0 }"))
        .await;

    assert_eq!(app.post_event(&credit("2")).await.decision(), "deploying");
    let record = t.reconcile_until(&app, "2", "succeeded").await;
    let record = if record["rollout"]["phase"] == "done" {
        record
    } else {
        t.reconcile_until_phase(&app, "2", "done").await
    };

    let puts = t.arm.with(|s| s.traffic_puts.clone());
    let map = |pairs: &[(&str, u32)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(
        puts,
        vec![
            (map(&[("blue", 100)]), map(&[("credit-risk-2", 20)])),
            (map(&[("blue", 90), ("credit-risk-2", 10)]), map(&[])),
            (map(&[("credit-risk-2", 100)]), map(&[])),
        ]
    );
    assert_eq!(
        t.arm.deployment_names("credit-ep"),
        vec!["credit-risk-2"],
        "blue deleted after retention"
    );
    let phases = Direct::phases(&record).join(" | ");
    for step in [
        "queued → creating",
        "creating → smoke_test",
        "smoke_test → mirroring",
        "mirroring → canary",
        "canary → promoting",
        "promoting → retaining",
        "retaining → cleaning",
        "cleaning → done",
    ] {
        assert!(phases.contains(step), "{step} missing in {phases}");
    }
    // Every bake visit probed the new deployment directly, with the endpoint key.
    let calls = t.arm.with(|s| s.scoring_calls.clone());
    assert!(calls.len() >= 3, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|(dep, auth)| dep == "credit-risk-2" && auth == "Bearer fake-primary-key")
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_provisioning_rolls_back_and_leaves_traffic_intact() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.with(|s| {
        s.fail_next_create = Some((
            "QuotaExceeded".into(),
            "Not enough quota for Standard_DS3_v2".into(),
        ))
    });
    let app = t.spawn(&t.config("credit-ep", FAST)).await;

    app.post_event(&credit("3")).await;
    let record = t.reconcile_until(&app, "3", "rolled_back").await;

    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("blue".to_string(), 100)].into()
    );
    assert_eq!(
        t.arm.deployment_names("credit-ep"),
        vec!["blue"],
        "the failed deployment is deleted"
    );
    let reasons = record["reasons"].to_string();
    assert!(
        reasons.contains("QuotaExceeded") && reasons.contains("Not enough quota"),
        "{reasons}"
    );
    assert_eq!(record["rollout"]["configuration_problem"], true);
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_smoke_test_rolls_back_before_any_traffic_moves() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm
        .with(|s| s.scoring_status.insert("credit-risk-4".into(), 500));
    let app = t.spawn(&t.config("credit-ep", FAST)).await;

    app.post_event(&credit("4")).await;
    let record = t.reconcile_until(&app, "4", "rolled_back").await;

    assert!(
        t.arm.with(|s| s.traffic_puts.is_empty()),
        "no traffic change before the smoke test passed"
    );
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("blue".to_string(), 100)].into()
    );
    assert_eq!(t.arm.deployment_names("credit-ep"), vec!["blue"]);
    assert!(
        record["reasons"]
            .to_string()
            .contains("smoke test of credit-risk-4 answered HTTP 500"),
        "{record:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_traffic_update_restores_the_previous_traffic() {
    let t = Direct::new().await;
    t.arm
        .add_endpoint("credit-ep", &[("blue", "1", 70), ("red", "1", 30)]);
    // The canary's traffic update fails.
    t.arm.with(|s| s.fail_traffic_update = Some(1));
    let app = t.spawn(&t.config("credit-ep", FAST)).await;

    app.post_event(&credit("5")).await;
    let record = t.reconcile_until(&app, "5", "rolled_back").await;

    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("blue".to_string(), 70), ("red".to_string(), 30)].into()
    );
    let puts = t.arm.with(|s| s.traffic_puts.clone());
    assert_eq!(
        puts.first().unwrap().0["credit-risk-5"],
        10,
        "canary taken from both in proportion: {puts:?}"
    );
    assert_eq!(puts.first().unwrap().0["blue"], 63);
    assert_eq!(
        puts.len(),
        1,
        "the failed update never took effect, so no restore was needed: {puts:?}"
    );
    assert!(
        !t.arm
            .deployment_names("credit-ep")
            .contains(&"credit-risk-5".to_string())
    );
    assert!(
        record["reasons"].to_string().contains("updating traffic"),
        "{record:#}"
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_events_create_one_deployment() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    let app = t.spawn(&t.config("credit-ep", FAST)).await;

    let events: Vec<Value> = (0..10).map(|_| credit("7")).collect();
    let replies = futures_util::future::join_all(events.iter().map(|e| app.post_event(e))).await;

    assert_eq!(
        replies
            .iter()
            .filter(|r| r.decision() == "deploying")
            .count(),
        1,
        "{:?}",
        replies
            .iter()
            .map(|r| r.decision().to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.decision() == "duplicate")
            .count(),
        9
    );
    t.reconcile_until(&app, "7", "succeeded").await;
    assert_eq!(t.arm.with(|s| s.deployment_puts.len()), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_versions_in_quick_succession_are_serialized_and_the_middle_one_superseded() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.with(|s| s.hold_operations = true);
    let app = t.spawn(&t.config("credit-ep", FAST)).await;

    assert_eq!(app.post_event(&credit("8")).await.decision(), "deploying");
    assert_eq!(app.post_event(&credit("9")).await.decision(), "queued");
    assert_eq!(app.post_event(&credit("10")).await.decision(), "queued");
    assert_eq!(app.record("credit-risk", "9").await["state"], "superseded");

    t.arm.with(|s| s.hold_operations = false);
    t.reconcile_until(&app, "8", "succeeded").await;
    t.reconcile_until(&app, "10", "succeeded").await;

    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("credit-risk-10".to_string(), 100)].into()
    );
    let created = t.arm.created_versions();
    assert_eq!(created, ["8", "10"], "version 9 was never deployed");
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_older_than_the_live_one_is_stale() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "12", 100)]);
    let app = t.spawn(&t.config("credit-ep", FAST)).await;

    let reply = app.post_event(&credit("11")).await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.decision(), "stale", "{}", reply.raw);
    assert!(
        reply.body["ReturnValue"]["reason"]
            .as_str()
            .unwrap()
            .contains("serves version 12"),
        "{}",
        reply.raw
    );
    assert!(t.arm.with(|s| s.deployment_puts.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_endpoint_is_a_clear_recorded_error() {
    let t = Direct::new().await;
    let app = t.spawn(&t.config("nope-ep", FAST)).await;

    let reply = app.post_event(&credit("13")).await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.decision(), "failed", "{}", reply.raw);
    assert!(
        reply.body["ReturnValue"]["reason"]
            .as_str()
            .unwrap()
            .contains("online endpoint nope-ep does not exist"),
        "{}",
        reply.raw
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_cleanup_never_touches_the_promoted_deployment() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.with(|s| s.refuse_deletes = true);
    let app = t
        .spawn(&t.config(
            "credit-ep",
            "{ strategy: all-at-once, retain_previous_minutes: 0 }",
        ))
        .await;

    app.post_event(&credit("18")).await;
    let record = t.reconcile_until_phase(&app, "18", "done").await;

    assert_eq!(record["state"], "succeeded");
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("credit-risk-18".to_string(), 100)].into()
    );
    let names = t.arm.deployment_names("credit-ep");
    assert!(
        names.contains(&"credit-risk-18".to_string()) && names.contains(&"blue".to_string()),
        "{names:?}"
    );
    let deletes = t.arm.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.starts_with("DELETE"))
            .cloned()
            .collect::<Vec<_>>()
    });
    assert!(
        deletes.iter().all(|r| r.ends_with("/blue")),
        "only the previous deployment may be deleted: {deletes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_version_arriving_while_an_older_one_waits_supersedes_it() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    let app = t.spawn(&t.config("credit-ep", FAST)).await;
    t.arm.with(|s| s.hold_operations = true);
    assert_eq!(app.post_event(&credit("20")).await.decision(), "deploying");
    assert_eq!(app.post_event(&credit("21")).await.decision(), "queued");
    t.arm.with(|s| s.hold_operations = false);
    t.reconcile_until(&app, "20", "succeeded").await;

    // 20 released the endpoint; 22 arrives before 21's next visit.
    let reply = app.post_event(&credit("22")).await;

    assert_eq!(reply.decision(), "deploying", "{}", reply.raw);
    assert_eq!(app.record("credit-risk", "21").await["state"], "superseded");
    t.reconcile_until(&app, "22", "succeeded").await;
    let created = t.arm.created_versions();
    assert_eq!(created, ["20", "22"]);
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("credit-risk-22".to_string(), 100)].into()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_smoke_test_authenticates_as_the_endpoint_demands() {
    for (mode, bearer) in [
        ("AMLToken", "Bearer fake-aml-token"),
        ("AADToken", "Bearer mi-token"),
    ] {
        let t = Direct::new().await;
        t.arm.add_endpoint("credit-ep", &[]);
        t.arm.set_auth_mode("credit-ep", mode);
        let app = t.spawn(&t.config("credit-ep", FAST)).await;

        app.post_event(&credit("23")).await;
        t.reconcile_until(&app, "23", "succeeded").await;

        let calls = t.arm.with(|s| s.scoring_calls.clone());
        assert!(
            !calls.is_empty() && calls.iter().all(|(_, auth)| auth == bearer),
            "{mode}: {calls:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_refuses_a_worse_model_before_anything_is_deployed() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.add_model("1", json!({"accuracy": "0.91"}), None);
    let config = t.config("credit-ep", FAST) + "    gate: { metric: accuracy, min: 0.5 }\n";
    let app = t.spawn(&config).await;

    let worse = app
        .post_event(&model_event(
            "credit-risk",
            "24",
            json!({"accuracy": "0.87"}),
        ))
        .await;

    assert_eq!(worse.status, 200, "{}", worse.raw);
    assert_eq!(worse.decision(), "rejected", "{}", worse.raw);
    assert_eq!(
        worse.body["ReturnValue"]["reason"],
        "rejected: accuracy 0.87 < champion credit-risk:1 0.91 + 0",
        "azureml rules compare with the model live on their own endpoint"
    );
    assert!(
        t.arm.with(|s| s.deployment_puts.is_empty()),
        "nothing deployed"
    );
    assert_eq!(app.record("credit-risk", "24").await["state"], "rejected");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_traffic_update_is_sent_again_and_success_waits_for_it() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.with(|s| s.throttle_traffic_update = Some(1));
    let app = t
        .spawn(&t.config(
            "credit-ep",
            "{ strategy: all-at-once, retain_previous_minutes: 0 }",
        ))
        .await;

    app.post_event(&credit("15")).await;
    let record = t.reconcile_until(&app, "15", "succeeded").await;

    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("credit-risk-15".to_string(), 100)].into()
    );
    assert_eq!(
        t.arm.with(|s| s.traffic_puts.len()),
        1,
        "the throttled PUT never reached the fake's accounting; the retry did"
    );
    assert_eq!(record["rollout"]["traffic"], json!({"credit-risk-15": 100}));
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_traffic_restore_stops_loudly_and_frees_the_endpoint() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    let app = t.spawn(&t.config("credit-ep", FAST)).await;
    app.post_event(&credit("16")).await;
    // Let creation and the smoke test pass; stop with the canary operation in flight.
    t.arm.with(|s| s.hold_traffic = true);
    t.reconcile_until_phase(&app, "16", "canary").await;
    // The bake's health probe fails, and the identity has lost write access to the endpoint.
    t.arm.with(|s| {
        s.scoring_status.insert("credit-risk-16".into(), 503);
        s.refuse_endpoint_puts = true;
        s.hold_traffic = false;
    });
    let record = t.reconcile_until(&app, "16", "failed").await;

    assert_eq!(record["rollout"]["configuration_problem"], true);
    assert!(
        record["rollout"]["failure"]
            .as_str()
            .unwrap()
            .contains("restoring the previous traffic"),
        "{record:#}"
    );
    // The endpoint is free again: the next version starts.
    t.arm.with(|s| s.refuse_endpoint_puts = false);
    let next = app.post_event(&credit("17")).await;
    assert_eq!(next.decision(), "deploying", "{}", next.raw);
}
