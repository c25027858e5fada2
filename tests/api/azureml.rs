//! Direct deployment through the host contract with the ledger in Azurite: what needs the process
//! and storage (a restart mid-rollout, the `rollback` and `check-config` commands), and the harness
//! the fault matrix drives rollouts with. The rollout's branches (blue/green, rollbacks, queueing,
//! the gate) run in process: `tests/inproc/rollout.rs`.

use std::time::Instant;

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fake_arm::FakeArm;
use crate::helpers::*;

pub(crate) struct Direct {
    pub(crate) arm: FakeArm,
    pub(crate) mi: MockServer,
    container: String,
    storage: String,
    files: DirectFiles,
}

impl Direct {
    pub(crate) async fn new() -> Self {
        Self::with_storage(azurite()).await
    }

    /// With the ledger in the given storage account (a connection string).
    pub(crate) async fn with_storage(storage: String) -> Self {
        let mi = MockServer::start().await;
        let expires = (time::OffsetDateTime::now_utc().unix_timestamp() + 3600).to_string();
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "mi-token", "expires_on": expires, "resource": "https://management.azure.com", "token_type": "Bearer"
            })))
            .mount(&mi)
            .await;
        let files = DirectFiles::new();
        Self {
            arm: FakeArm::start().await,
            mi,
            container: unique_container(),
            storage,
            files,
        }
    }

    /// The ledger's container (read it straight from Azurite with [`ledger_record`] while the
    /// handler's storage is cut).
    pub(crate) fn container(&self) -> &str {
        &self.container
    }

    pub(crate) fn config(&self, endpoint: &str, rollout: &str) -> String {
        self.files.config(endpoint, rollout)
    }

    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AUTODEPLOY_STORAGE", self.storage.clone()),
            ("AUTODEPLOY_CONTAINER", self.container.clone()),
            ("AUTODEPLOY_CREDENTIAL", "managed-identity".into()),
            ("IDENTITY_ENDPOINT", self.mi.uri()),
            ("IDENTITY_HEADER", "h".into()),
            ("AUTODEPLOY_ARM_ENDPOINT", self.arm.uri.clone()),
            ("AUTODEPLOY_RETRY_FIRST_DELAY_SECS", "0".into()),
        ]
    }

    pub(crate) async fn spawn(&self, config: &str) -> TestApp {
        self.spawn_with(config, &[]).await
    }

    pub(crate) async fn spawn_with(&self, config: &str, extra: &[(&str, &str)]) -> TestApp {
        self.spawn_in(self.files.path(), config, extra).await
    }

    /// Starts the handler with `config` written in `folder` (beside the files it names).
    pub(crate) async fn spawn_in(
        &self,
        folder: &std::path::Path,
        config: &str,
        extra: &[(&str, &str)],
    ) -> TestApp {
        let config_path = DirectFiles::write(folder, config);
        let env = self.env();
        let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pairs.push(("AUTODEPLOY_CONFIG", &config_path));
        pairs.extend_from_slice(extra);
        TestApp::spawn(config, &pairs).await
    }

    pub(crate) async fn record(&self, version: &str) -> Value {
        self.record_of("credit-risk", version).await
    }

    pub(crate) async fn record_of(&self, model: &str, version: &str) -> Value {
        ledger_record(&self.storage, &self.container, model, version).await
    }

    /// Runs Reconcile passes until the version reaches `state` (each step is due at once:
    /// `AUTODEPLOY_MIN_STEP_SECS` is 0; a step the service asks to wait for is due later).
    pub(crate) async fn reconcile_until(&self, app: &TestApp, version: &str, state: &str) -> Value {
        self.reconcile_model_until(app, "credit-risk", version, state)
            .await
    }

    /// Runs Reconcile passes until the version's rollout reaches `phase`.
    pub(crate) async fn reconcile_until_phase(
        &self,
        app: &TestApp,
        version: &str,
        phase: &str,
    ) -> Value {
        self.reconcile_until_with(app, "credit-risk", version, |r| {
            r["rollout"]["phase"] == phase
        })
        .await
    }

    /// [`Direct::reconcile_until`] for another model.
    pub(crate) async fn reconcile_model_until(
        &self,
        app: &TestApp,
        model: &str,
        version: &str,
        state: &str,
    ) -> Value {
        self.reconcile_until_with(app, model, version, |r| r["state"] == state)
            .await
    }

    /// Runs Reconcile passes until the record of `model:version` satisfies `done`.
    pub(crate) async fn reconcile_until_with(
        &self,
        app: &TestApp,
        model: &str,
        version: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            let pass = app.post_reconcile().await;
            assert_eq!(pass.status, 200, "{}", pass.raw);
            last = self.record_of(model, version).await;
            if done(&last) {
                return last;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("{model}:{version} never got there: {last:#}");
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
async fn a_restart_mid_rollout_resumes_from_the_ledger() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.with(|s| s.hold_operations = true);
    let config = t.config("credit-ep", FAST);
    let mut app = t.spawn(&config).await;
    assert_eq!(app.post_event(&credit("6")).await.decision(), "deploying");
    app.post_reconcile().await;
    assert_eq!(t.record("6").await["rollout"]["phase"], "creating");
    app.kill();

    t.arm.with(|s| s.hold_operations = false);
    let app = t.spawn(&config).await;
    t.reconcile_until(&app, "6", "succeeded").await;

    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("credit-risk-6".to_string(), 100)].into()
    );
    assert_eq!(
        t.arm.with(|s| s.deployment_puts.len()),
        1,
        "the deployment was created once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_restores_the_previous_traffic_while_it_is_retained() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    let app = t
        .spawn(&t.config(
            "credit-ep",
            "{ strategy: all-at-once, retain_previous_minutes: 60 }",
        ))
        .await;
    t.arm.with(|s| {
        s.logs.insert(
            ("credit-risk-14".into(), "InferenceServer".into()),
            "Listening at: http://0.0.0.0:31311\nscoring request 42 took 5012 ms (timeout)".into(),
        )
    });
    app.post_event(&credit("14")).await;
    let record = t.reconcile_until(&app, "14", "succeeded").await;
    assert_eq!(record["rollout"]["phase"], "retaining");
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("credit-risk-14".to_string(), 100)].into()
    );

    let env = t.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = tokio::task::block_in_place(|| {
        run_cli(
            dir.path(),
            &["rollback", "credit-ep", "--workspace", WS],
            &pairs,
        )
    });

    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("blue".to_string(), 100)].into()
    );
    let record = t.record("14").await;
    assert_eq!(record["state"], "rolled_back");
    // Its logs were read before its traffic was taken away, and kept.
    let requests = t.arm.with(|s| s.requests.clone());
    let logs_at = requests
        .iter()
        .position(|r| r.ends_with("/deployments/credit-risk-14/getLogs"))
        .unwrap_or_else(|| panic!("no getLogs: {requests:?}"));
    let restore_at = requests
        .iter()
        .rposition(|r| r.starts_with("PUT ") && r.ends_with("/onlineEndpoints/credit-ep"))
        .unwrap();
    assert!(logs_at < restore_at, "{requests:?}");
    assert_eq!(
        record["rollout"]["logs"]["containers"][0]["lines"],
        json!([
            "Listening at: http://0.0.0.0:31311",
            "scoring request 42 took 5012 ms (timeout)"
        ])
    );
    assert!(out.contains("InferenceServer: last 2 of 2 lines"), "{out}");
    let (code, out, _) = tokio::task::block_in_place(|| {
        run_cli(
            dir.path(),
            &["rollback", "credit-ep", "--workspace", WS],
            &pairs,
        )
    });
    assert_ne!(code, 0, "nothing left to roll back: {out}");
}

#[test]
fn check_config_reports_azureml_problems_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("local.yml"),
        "instance_type: x\ncode_configuration: { code: ./src, scoring_script: score.py }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("autodeploy.yml"),
        r#"
rules:
  - name: direct
    models: [m]
    azureml:
      endpoint: ep
      deployment: local.yml
      name: "{model}-x"
      smoke_test: { request: missing.json }
      rollout: { strategy: canary, mirror_percent: 80 }
"#,
    )
    .unwrap();
    let (code, out, _) = run_cli(dir.path(), &["check-config"], &[]);
    assert_ne!(code, 0);
    for needle in [
        "rules[0] (direct).azureml.endpoint: \"ep\" is not an online endpoint name",
        "rules[0] (direct).azureml.name: unknown placeholder {model}",
        "rules[0] (direct).azureml.deployment:",
        "code_configuration.code: the code folder",
        "does not exist",
        "rules[0] (direct).azureml.smoke_test.request: cannot read",
        "rules[0] (direct).azureml.rollout.strategy: must be blue-green, linear or all-at-once",
        "rules[0] (direct).azureml.rollout.mirror_percent: must be a whole number from 0 to 50",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_scoring_uri_gets_no_credentials_and_the_rollout_rolls_back() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    // The endpoint resource says to score on plain http at another host.
    let foreign = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&foreign)
        .await;
    t.arm
        .with(|s| s.scoring_uri = Some(format!("{}/score", foreign.uri())));
    let app = t.spawn(&t.config("credit-ep", FAST)).await;
    app.post_event(&credit("15")).await;
    let record = t.reconcile_until(&app, "15", "rolled_back").await;

    assert_eq!(record["rollout"]["configuration_problem"], true);
    assert!(
        record["reasons"]
            .to_string()
            .contains("no key or token is sent there"),
        "{record:#}"
    );
    assert!(
        t.arm
            .with(|s| s.requests.iter().all(|r| !r.ends_with("/listKeys"))),
        "no key was even fetched"
    );
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("blue".to_string(), 100)].into()
    );
    assert!(t.arm.with(|s| s.traffic_puts.is_empty()));
}

/// Runs a CLI command against this harness's ledger and fakes.
pub(crate) fn cli(t: &Direct, args: &[&str]) -> (i32, String, String) {
    let env = t.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    tokio::task::block_in_place(|| run_cli(dir.path(), args, &pairs))
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_and_reject_decide_a_waiting_rollout_and_watch_follows_it_to_the_end() {
    const WAITING: &str = "{ strategy: linear, steps: [20, 50], bake_minutes: 0, retain_previous_minutes: 0, approval: { tag: autodeploy.approved, timeout_hours: 1 } }";
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    for version in ["31", "32"] {
        t.arm.add_model(version, json!({}), None);
    }
    let app = t.spawn(&t.config("credit-ep", WAITING)).await;

    app.post_event(&credit("31")).await;
    let waiting = t
        .reconcile_until_phase(&app, "31", "awaiting_approval")
        .await;
    assert_eq!(waiting["rollout"]["traffic"]["credit-risk-31"], 50);
    let (code, out, err) = cli(&t, &["approve", "credit-risk:31"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("credit-risk:31: approved by "), "{out}");
    let record = t.reconcile_until(&app, "31", "succeeded").await;
    let decision = &record["rollout"]["approval"]["decision"];
    assert_eq!(decision["approved"], true);
    assert!(decision["by"].as_str().is_some_and(|b| !b.is_empty()));
    let (code, out, _) = cli(
        &t,
        &["status", "credit-risk:31", "--watch", "--interval", "1"],
    );
    assert_eq!(code, 0, "promoted: {out}");
    assert!(
        out.contains("phase retaining") || out.contains("phase done"),
        "{out}"
    );
    assert!(
        out.contains("credit-risk-31") && out.contains("100%"),
        "{out}"
    );

    app.post_event(&credit("32")).await;
    t.reconcile_until_phase(&app, "32", "awaiting_approval")
        .await;
    let (code, out, err) = cli(&t, &["reject", "credit-risk:32"]);
    assert_eq!(code, 0, "{out}{err}");
    let record = t.reconcile_until(&app, "32", "rolled_back").await;
    assert!(
        record["rollout"]["failure"]
            .as_str()
            .unwrap()
            .starts_with("rejected by "),
        "{record:#}"
    );
    let (code, out, _) = cli(
        &t,
        &["status", "credit-risk:32", "--watch", "--interval", "1"],
    );
    assert_eq!(code, 1, "rolled back: {out}");
    assert!(out.contains("phase rolled_back"), "{out}");
    let (code, out, _) = cli(&t, &["approve", "credit-risk:32"]);
    assert_ne!(code, 0, "nothing waits any more: {out}");
}

#[test]
fn a_dry_run_prints_the_planned_steps_the_metric_queries_and_the_approval() {
    let files = DirectFiles::new();
    let config = files.config(
        "credit-ep",
        "{ strategy: linear, steps: [10, 30, 60], bake_minutes: 5, analysis: { max_error_rate: \"1%\", latency: p95, max_latency_ms: 800 }, approval: { tag: ok, timeout_hours: 2 } }",
    );
    let config_path = DirectFiles::write(files.path(), &config);
    let event = files.path().join("event.json");
    std::fs::write(&event, credit("30").to_string()).unwrap();
    let (code, out, err) = run_cli(
        files.path(),
        &["replay", event.to_str().unwrap(), "--config", &config_path],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "dry run: rollout step 1 of 3: 10% to credit-risk-30, bake 5 min, then judged on the last 5 complete minutes",
        "dry run: rollout step 3 of 3: 60% to credit-risk-30",
        "dry run: analysis query: GET ",
        "metricnames=RequestsPerMinute",
        "metricnames=RequestLatency_P95",
        "dry run: approval: wait for tag ok=true",
        "dry run: rollout: then 100% to credit-risk-30",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}
