//! Batch endpoint rollouts' branches in process, against the stateful fake ARM's batch surface
//! (`tests/common/fake_batch.rs`): a smoke job past its bound, resumed steps that find their
//! change already made (the default switch, the smoke job's submission), a failed switch, stale
//! versions, a missing endpoint, the endpoint lock with approval, observe mode.

use serde_json::{Value, json};

use crate::harness::*;

const BATCH_YAML: &str =
    "type: model\ncompute: azureml:cpu-cluster\nsettings: { mini_batch_size: 10 }\n";

struct Batch {
    fakes: Fakes,
    files: DirectFiles,
}

impl Batch {
    async fn new() -> Self {
        let t = Self {
            fakes: Fakes::start().await,
            files: DirectFiles::new(),
        };
        std::fs::write(t.files.path().join("batch.yml"), BATCH_YAML).unwrap();
        t.fakes
            .arm
            .with(|s| s.batch.add_endpoint("credit-batch", Some(("nightly", "5"))));
        t
    }

    /// A batch rule for `credit-risk` on `credit-batch` with the extra `azureml:` keys `extra`.
    async fn spawn(&self, extra: &str) -> App {
        let config = format!(
            "workspace: {WS}\nrules:\n  - name: credit-batch\n    models: [\"credit-risk\"]\n    azureml:\n      batch_endpoint: credit-batch\n      deployment: batch.yml\n{extra}"
        );
        let path = DirectFiles::write(self.files.path(), &config);
        App::start(&self.fakes, &config, &[("AUTODEPLOY_CONFIG", &path)]).await
    }

    fn default(&self) -> Option<String> {
        self.fakes.arm.with(|s| s.batch.default_of("credit-batch"))
    }
}

fn credit(version: &str) -> Value {
    let mut event = model_event("credit-risk", version, json!({}));
    event["eventTime"] = json!(format!("2026-11-26T10:00:{:0>2}Z", version));
    event
}

const SMOKE: &str =
    "      smoke_job: { input: \"https://data.example/credit/\", timeout_minutes: 1 }\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_smoke_job_past_its_bound_is_canceled_and_keeps_the_previous_default() {
    let t = Batch::new().await;
    t.fakes
        .arm
        .with(|s| s.batch.job_script = vec!["Running".into()]);
    let app = t.spawn(SMOKE).await;
    app.post_event(&credit("6")).await;
    app.reconcile_until_with("credit-risk", "6", |r| {
        r["rollout"]["batch"]["smoke_job"]["status"] == "Running"
    })
    .await;
    // Its bound passes (a minute, moved into the past rather than waited for).
    app.edit_record("credit-risk", "6", |record| {
        let rollout = record.rollout.as_mut().unwrap();
        let job = rollout.batch.as_mut().unwrap().smoke_job.as_mut().unwrap();
        job.deadline = Some(time::OffsetDateTime::now_utc() - time::Duration::seconds(1));
    })
    .await;
    let record = app.reconcile_until("credit-risk", "6", "rolled_back").await;

    let job = &record["rollout"]["batch"]["smoke_job"];
    let name = job["name"].as_str().unwrap();
    assert_eq!(job["status"], "Running");
    assert!(job["error"].as_str().unwrap().contains("within 1 min"));
    assert!(
        record["rollout"]["failure"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "smoke job {name} ({WS}/jobs/{name}) did not complete within 1 min"
            )),
        "{record:#}"
    );
    assert_eq!(t.fakes.arm.with(|s| s.batch.cancels.clone()), [name]);
    assert_eq!(t.default().as_deref(), Some("nightly"));
    assert!(t.fakes.arm.with(|s| s.batch.endpoint_puts.is_empty()));
    assert!(
        t.fakes.arm.violations().is_empty(),
        "{:?}",
        t.fakes.arm.violations()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_switch_finds_the_default_already_set_and_sends_no_second_put() {
    let t = Batch::new().await;
    let app = t
        .spawn("      rollout: { approval: { tag: ok, timeout_hours: 1 } }\n")
        .await;
    t.fakes.arm.add_model("7", json!({}), None);
    app.post_event(&credit("7")).await;
    app.reconcile_until_with("credit-risk", "7", |r| {
        r["rollout"]["phase"] == "awaiting_approval"
    })
    .await;
    assert_eq!(
        t.default().as_deref(),
        Some("nightly"),
        "not before approval"
    );
    // As if an instance recorded the switch, sent its PUT, and died before recording the answer.
    t.fakes.arm.with(|s| {
        s.batch.endpoints.get_mut("credit-batch").unwrap().default = Some("credit-risk-7".into())
    });
    app.edit_record("credit-risk", "7", |record| {
        let rollout = record.rollout.as_mut().unwrap();
        rollout.phase = aml_autodeploy::actions::azureml::rollout::Phase::Promoting;
        rollout.batch.as_mut().unwrap().switching_to = Some("credit-risk-7".into());
    })
    .await;
    let record = app.reconcile_until("credit-risk", "7", "succeeded").await;

    assert!(
        t.fakes.arm.with(|s| s.batch.endpoint_puts.is_empty()),
        "the default already showed: no second PUT"
    );
    assert_eq!(record["rollout"]["traffic"], json!({"credit-risk-7": 100}));
    assert_eq!(record["rollout"]["batch"].get("switching_to"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_submission_finds_its_job_by_name_and_submits_no_other() {
    let t = Batch::new().await;
    t.fakes
        .arm
        .with(|s| s.batch.job_script = vec!["Running".into()]);
    let app = t.spawn(SMOKE).await;
    app.post_event(&credit("8")).await;
    app.reconcile_until_with("credit-risk", "8", |r| {
        r["rollout"]["batch"]["smoke_job"]["submitted"] == true
    })
    .await;
    // As if the record of the accepted submission was lost.
    app.edit_record("credit-risk", "8", |record| {
        let job = record.rollout.as_mut().unwrap().batch.as_mut().unwrap();
        job.smoke_job.as_mut().unwrap().submitted = false;
    })
    .await;
    t.fakes.arm.with(|s| {
        for job in s.batch.jobs.values_mut() {
            job.script = vec!["Running".into(), "Completed".into()];
        }
    });
    app.reconcile_until("credit-risk", "8", "succeeded").await;

    assert_eq!(t.fakes.arm.with(|s| s.batch.invokes.len()), 1, "one job");
    assert_eq!(t.default().as_deref(), Some("credit-risk-8"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_default_switch_keeps_the_previous_default() {
    let t = Batch::new().await;
    t.fakes.arm.with(|s| s.batch.fail_default_switch = true);
    let app = t.spawn("").await;
    app.post_event(&credit("9")).await;
    let record = app.reconcile_until("credit-risk", "9", "rolled_back").await;

    assert!(
        record["rollout"]["failure"]
            .as_str()
            .unwrap()
            .starts_with("switching the default"),
        "{record:#}"
    );
    assert_eq!(t.default().as_deref(), Some("nightly"));
    assert_eq!(
        t.fakes
            .arm
            .with(|s| s.batch.deployment_names("credit-batch")),
        ["nightly"],
        "the new deployment is removed, the default never deleted"
    );
    assert!(
        t.fakes.arm.violations().is_empty(),
        "{:?}",
        t.fakes.arm.violations()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_older_than_the_default_is_stale_and_a_missing_endpoint_is_clear() {
    let t = Batch::new().await;
    let app = t.spawn("").await;
    let reply = app.post_event(&credit("4")).await;
    assert_eq!(reply.decision(), "stale", "{}", reply.raw);
    assert!(
        reply
            .raw
            .contains("the default deployment nightly serves version 5"),
        "{}",
        reply.raw
    );
    assert!(t.fakes.arm.with(|s| s.batch.deployment_puts.is_empty()));

    t.fakes.arm.with(|s| s.batch.endpoints.clear());
    let reply = app.post_event(&credit("10")).await;
    assert_eq!(reply.decision(), "failed", "{}", reply.raw);
    assert!(
        reply
            .raw
            .contains("batch endpoint credit-batch does not exist in"),
        "{}",
        reply.raw
    );
    let record = app.record("credit-risk", "10").await;
    assert_eq!(record["rollout"]["configuration_problem"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_rollouts_queue_on_the_endpoint_and_wait_for_approval_before_the_switch() {
    let t = Batch::new().await;
    let app = t
        .spawn("      rollout: { approval: { tag: ok, timeout_hours: 1 } }\n")
        .await;
    t.fakes.arm.add_model("11", json!({}), None);
    t.fakes.arm.add_model("12", json!({}), None);
    assert_eq!(app.post_event(&credit("11")).await.decision(), "deploying");
    app.reconcile_until_with("credit-risk", "11", |r| {
        r["rollout"]["phase"] == "awaiting_approval"
    })
    .await;
    assert_eq!(app.post_event(&credit("12")).await.decision(), "queued");

    // The tag approves version 11: it becomes the default; then 12 starts and waits in turn.
    t.fakes.arm.add_model("11", json!({"ok": "true"}), None);
    app.reconcile_until("credit-risk", "11", "succeeded").await;
    assert_eq!(t.default().as_deref(), Some("credit-risk-11"));
    let record = app
        .reconcile_until_with("credit-risk", "12", |r| {
            r["rollout"]["phase"] == "awaiting_approval"
        })
        .await;
    assert_eq!(
        record["rollout"]["batch"]["previous_default"],
        "credit-risk-11"
    );
    assert_eq!(t.default().as_deref(), Some("credit-risk-11"));
    assert!(
        t.fakes.arm.violations().is_empty(),
        "{:?}",
        t.fakes.arm.violations()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn observe_mode_records_the_batch_plan_and_touches_nothing() {
    let t = Batch::new().await;
    let config = format!(
        "workspace: {WS}\nrules:\n  - name: credit-batch\n    models: [\"credit-risk\"]\n    mode: observe\n    azureml:\n      batch_endpoint: credit-batch\n      deployment: batch.yml\n"
    );
    let path = DirectFiles::write(t.files.path(), &config);
    let app = App::start(&t.fakes, &config, &[("AUTODEPLOY_CONFIG", &path)]).await;
    let reply = app.post_event(&credit("13")).await;
    assert_eq!(reply.decision(), "observed", "{}", reply.raw);
    assert!(
        reply
            .raw
            .contains("/batchEndpoints/credit-batch/deployments/credit-risk-13"),
        "{}",
        reply.raw
    );
    assert!(t.fakes.arm.with(|s| s.requests.is_empty()), "no ARM call");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_compares_with_the_model_of_the_batch_endpoints_default() {
    let t = Batch::new().await;
    t.fakes
        .arm
        .add_model("5", json!({"accuracy": "0.91"}), None);
    let app = t.spawn("    gate: { metric: accuracy, min: 0.5 }\n").await;

    let worse = app
        .post_event(&model_event(
            "credit-risk",
            "24",
            json!({"accuracy": "0.87"}),
        ))
        .await;

    assert_eq!(worse.decision(), "rejected", "{}", worse.raw);
    assert_eq!(
        worse.body["ReturnValue"]["reason"],
        "rejected: accuracy 0.87 < champion credit-risk:5 0.91 + 0",
        "the champion is the model of the batch endpoint's default deployment"
    );
    assert!(t.fakes.arm.with(|s| s.batch.deployment_puts.is_empty()));
}
