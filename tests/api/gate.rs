//! The quality gate through the host contract: fake ARM (model versions, workspace, endpoint,
//! deployments) and MLflow, GitHub on wiremock, the ledger in Azurite, notification sinks.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fake_arm::FakeArm;
use crate::helpers::*;

struct Gated {
    arm: FakeArm,
    mi: MockServer,
    gh: MockServer,
    hooks: MockServer,
    container: String,
    storage: String,
}

impl Gated {
    async fn new() -> Self {
        let mi = MockServer::start().await;
        let expires = (time::OffsetDateTime::now_utc().unix_timestamp() + 3600).to_string();
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "mi-token", "expires_on": expires, "resource": "https://management.azure.com", "token_type": "Bearer"
            })))
            .mount(&mi)
            .await;
        let hooks = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&hooks)
            .await;
        Self {
            arm: FakeArm::start().await,
            mi,
            gh: MockServer::start().await,
            hooks,
            container: unique_container(),
            storage: azurite(),
        }
    }

    fn config(&self, gate: &str) -> String {
        format!(
            r#"
workspace: {WS}
rules:
  - name: credit
    models: ["credit-risk"]
    github: {{ repository: contoso/ml-deploy, event_type: deploy-model }}
    gate: {gate}
notify:
  - url_env: TEAMS_HOOK
    format: teams
    on: [rejected, dispatched]
  - url_env: SLACK_HOOK
    format: slack
    on: [rejected]
  - url_env: RAW_HOOK
    format: raw
    on: [rejected]
"#
        )
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let hooks = self.hooks.uri();
        vec![
            ("AUTODEPLOY_STORAGE", self.storage.clone()),
            ("AUTODEPLOY_CONTAINER", self.container.clone()),
            ("AUTODEPLOY_CREDENTIAL", "managed-identity".into()),
            ("IDENTITY_ENDPOINT", self.mi.uri()),
            ("IDENTITY_HEADER", "h".into()),
            ("AUTODEPLOY_ARM_ENDPOINT", self.arm.uri.clone()),
            ("GITHUB_API_URL", self.gh.uri()),
            ("GITHUB_TOKEN", "ghp_gate".into()),
            ("TEAMS_HOOK", format!("{hooks}/teams/secret-path-1")),
            ("SLACK_HOOK", format!("{hooks}/slack/secret-path-2")),
            ("RAW_HOOK", format!("{hooks}/raw/secret-path-3")),
            ("AUTODEPLOY_RETRY_FIRST_DELAY_SECS", "0".into()),
        ]
    }

    async fn spawn(&self, gate: &str) -> TestApp {
        self.spawn_with(gate, &[]).await
    }

    async fn spawn_with(&self, gate: &str, extra: &[(&str, &str)]) -> TestApp {
        let env = self.env();
        let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pairs.extend_from_slice(extra);
        TestApp::spawn(&self.config(gate), &pairs).await
    }

    async fn record(&self, version: &str) -> Value {
        ledger_record(&self.storage, &self.container, "credit-risk", version).await
    }

    async fn github_accepts(&self, times: u64) {
        Mock::given(method("POST"))
            .and(path("/repos/contoso/ml-deploy/dispatches"))
            .respond_with(ResponseTemplate::new(204))
            .expect(times)
            .mount(&self.gh)
            .await;
    }

    async fn hook_bodies(&self, which: &str) -> Vec<Value> {
        self.hooks
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path().starts_with(&format!("/{which}/")))
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }
}

fn credit(version: &str, tags: Value) -> Value {
    model_event("credit-risk", version, tags)
}

const AGAINST_LIVE: &str = "{ metric: accuracy, min: 0.5, champion_endpoint: credit-ep }";

#[tokio::test(flavor = "multi_thread")]
async fn a_better_model_ships_and_a_worse_one_is_rejected_with_the_numbers() {
    let t = Gated::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.add_model("1", json!({"accuracy": "0.85"}), None);
    t.github_accepts(1).await;
    let app = t.spawn(AGAINST_LIVE).await;

    let better = app
        .post_event(&credit("2", json!({"accuracy": "0.9"})))
        .await;
    let worse = app
        .post_event(&credit("3", json!({"accuracy": "0.8"})))
        .await;

    assert_eq!(better.status, 200, "{}", better.raw);
    assert_eq!(better.decision(), "dispatched", "{}", better.raw);
    assert_eq!(
        better.body["ReturnValue"]["gate"]["champion"]["model"],
        "credit-risk:1"
    );
    assert_eq!(
        worse.status, 200,
        "a rejection is final, not retried: {}",
        worse.raw
    );
    assert_eq!(worse.decision(), "rejected", "{}", worse.raw);
    assert_eq!(
        worse.body["ReturnValue"]["reason"],
        "rejected: accuracy 0.8 < champion credit-risk:1 0.85 + 0"
    );
    let record = t.record("3").await;
    assert_eq!(record["state"], "rejected");
    assert_eq!(record["gate"]["value"], 0.8);
    assert_eq!(record["gate"]["source"], "event tags");
    // Redelivery of the rejected version changes nothing.
    let again = app
        .post_event(&credit("3", json!({"accuracy": "0.8"})))
        .await;
    assert_eq!(again.decision(), "rejected");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_model_only_has_to_meet_the_bounds() {
    let t = Gated::new().await;
    t.arm.add_endpoint("credit-ep", &[]);
    t.github_accepts(1).await;
    let app = t
        .spawn("{ metric: accuracy, min: 0.8, champion_endpoint: credit-ep }")
        .await;

    let ok = app
        .post_event(&credit("1", json!({"accuracy": 0.82})))
        .await;
    let low = app.post_event(&credit("2", json!({"accuracy": 0.7}))).await;

    assert_eq!(ok.decision(), "dispatched", "{}", ok.raw);
    assert!(ok.logs_text().contains("no champion"), "{}", ok.logs_text());
    assert_eq!(low.decision(), "rejected", "{}", low.raw);
    assert_eq!(
        low.body["ReturnValue"]["reason"],
        "rejected: accuracy 0.7 < min 0.8"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_come_from_the_mlflow_child_run_of_the_training_job() {
    let t = Gated::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    // Champion: pipeline job-1, its "evaluate" step logged 0.88.
    t.arm.add_model("1", json!({}), Some("job-1"));
    t.arm.add_run("job-1", "pipeline", None, &[]);
    t.arm.add_run(
        "job-1-eval",
        "evaluate",
        Some("job-1"),
        &[("accuracy", 0.88)],
    );
    // Challenger: pipeline job-2, "evaluate" logged 0.93 (and a "train" step logged more).
    t.arm.add_model("2", json!({}), Some("job-2"));
    t.arm.add_run("job-2", "pipeline", None, &[]);
    t.arm
        .add_run("job-2-train", "train", Some("job-2"), &[("accuracy", 0.99)]);
    t.arm.add_run(
        "job-2-eval",
        "evaluate",
        Some("job-2"),
        &[("accuracy", 0.93)],
    );
    t.github_accepts(1).await;
    let app = t
        .spawn("{ metric: accuracy, source: mlflow, metric_run: 'child:evaluate', champion_endpoint: credit-ep }")
        .await;

    let reply = app
        .post_event(&credit("2", json!({"accuracy": "0.1"})))
        .await;

    assert_eq!(reply.decision(), "dispatched", "{}", reply.raw);
    let gate = &reply.body["ReturnValue"]["gate"];
    assert_eq!(gate["value"], 0.93, "{gate}");
    assert!(
        gate["source"]
            .as_str()
            .unwrap()
            .contains("child run evaluate"),
        "{gate}"
    );
    assert_eq!(gate["champion"]["metric"], 0.88, "{gate}");
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_mlflow_failure_is_retried_by_reconcile() {
    let t = Gated::new().await;
    t.arm.add_endpoint("credit-ep", &[]);
    t.arm.add_model("5", json!({}), Some("job-5"));
    t.arm.add_run("job-5", "train", None, &[("accuracy", 0.9)]);
    t.arm.with(|s| s.mlflow_failures = 100);
    t.github_accepts(1).await;
    // A short retry budget: the failing lookup is retried until it is used up (20 s by default).
    let app = t
        .spawn_with(
            "{ metric: accuracy, source: mlflow, min: 0.8, champion_endpoint: credit-ep }",
            &[("AUTODEPLOY_RETRY_BUDGET_SECS", "2")],
        )
        .await;

    let first = app.post_event(&credit("5", json!({}))).await;

    assert_eq!(first.status, 200, "{}", first.raw);
    assert_eq!(first.decision(), "retrying", "{}", first.raw);
    let record = t.record("5").await;
    assert_eq!(
        (record["state"].as_str(), record["gate_pending"].as_bool()),
        (Some("retrying"), Some(true))
    );

    t.arm.with(|s| s.mlflow_failures = 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pass = app.post_reconcile().await;

    assert_eq!(pass.status, 200, "{}", pass.raw);
    assert_eq!(pass.body["ReturnValue"]["dispatched"], 1, "{}", pass.raw);
    let record = t.record("5").await;
    assert_eq!(record["state"], "dispatched");
    assert_eq!(record["gate"]["value"], 0.9);
}

#[tokio::test(flavor = "multi_thread")]
async fn overrides_by_tag_force_or_skip_a_version() {
    let t = Gated::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.add_model("1", json!({"accuracy": "0.85"}), None);
    t.github_accepts(1).await;
    let app = t.spawn(AGAINST_LIVE).await;

    let forced = app
        .post_event(&credit(
            "6",
            json!({"accuracy": "0.6", "autodeploy.force": "true"}),
        ))
        .await;
    let skipped = app
        .post_event(&credit(
            "7",
            json!({"accuracy": "0.99", "autodeploy.skip": "true"}),
        ))
        .await;

    assert_eq!(forced.decision(), "dispatched", "{}", forced.raw);
    assert_eq!(forced.body["ReturnValue"]["gate"]["verdict"], "forced");
    assert_eq!(t.record("6").await["forced"], true);
    assert_eq!(skipped.decision(), "skipped", "{}", skipped.raw);
    assert!(
        skipped.body["ReturnValue"]["reason"]
            .as_str()
            .unwrap()
            .contains("autodeploy.skip=true")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn evaluate_force_ships_a_rejected_version_by_hand() {
    let t = Gated::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.add_model("1", json!({"accuracy": "0.85"}), None);
    t.arm.add_model("8", json!({"accuracy": "0.7"}), None);
    t.github_accepts(1).await;
    let app = t.spawn(AGAINST_LIVE).await;
    assert_eq!(
        app.post_event(&credit("8", json!({"accuracy": "0.7"})))
            .await
            .decision(),
        "rejected"
    );

    let env = t.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("autodeploy.yml"), t.config(AGAINST_LIVE)).unwrap();
    let (code, out, err) = tokio::task::block_in_place(|| {
        run_cli(
            dir.path(),
            &["evaluate", "credit-risk:8", "--execute", "--force"],
            &pairs,
        )
    });

    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("GitHub accepted the dispatch"), "{out}");
    let record = t.record("8").await;
    assert_eq!(record["state"], "dispatched");
    assert_eq!(record["forced"], true);
    assert_eq!(record["attempts"][0]["trigger"], "manual");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_notification_target_gets_one_post_per_outcome_in_its_format() {
    let t = Gated::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.add_model("1", json!({"accuracy": "0.85"}), None);
    t.github_accepts(1).await;
    let app = t.spawn(AGAINST_LIVE).await;

    app.post_event(&credit("9", json!({"accuracy": "0.5"})))
        .await;
    app.post_event(&credit("9", json!({"accuracy": "0.5"})))
        .await; // redelivered: no second notice
    app.post_event(&credit("10", json!({"accuracy": "0.95"})))
        .await;

    let teams = t.hook_bodies("teams").await;
    let slack = t.hook_bodies("slack").await;
    let raw = t.hook_bodies("raw").await;
    assert_eq!(
        (teams.len(), slack.len(), raw.len()),
        (2, 1, 1),
        "teams: rejected + dispatched; the others: rejected once"
    );
    let card = &teams[0]["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert!(
        card["content"]["body"]
            .to_string()
            .contains("credit-risk:9"),
        "{card}"
    );
    assert!(
        slack[0]["text"]
            .as_str()
            .unwrap()
            .contains("credit-risk 9 rejected"),
        "{}",
        slack[0]
    );
    assert_eq!(raw[0]["outcome"], "rejected");
    assert_eq!(raw[0]["model"], "credit-risk");
    assert!(
        raw[0]["text"]
            .as_str()
            .unwrap()
            .contains("accuracy 0.5 < champion credit-risk:1 0.85"),
        "{}",
        raw[0]
    );
    let record = t.record("9").await;
    assert_eq!(record["notifications"].as_array().unwrap().len(), 3);
    // The URLs are secrets: never in logs or the record.
    for text in [app.stdout(), app.stderr(), record.to_string()] {
        assert!(!text.contains("secret-path"), "a webhook URL leaked");
    }
}

#[test]
fn check_config_reports_gate_and_notify_problems() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("autodeploy.yml"),
        r#"
rules:
  - name: g
    models: [m]
    github: { repository: o/r, event_type: e }
    gate: { metric: accuracy, source: vibes, min: 0.9, max: 0.1, compare_to_live: true, min_improvement: "lots", metric_run: "sibling" }
notify:
  - url_env: NOT_SET_ANYWHERE
    format: pager
  - format: raw
    on: [exploded]
"#,
    )
    .unwrap();
    let (code, out, _) = run_cli(dir.path(), &["check-config"], &[]);
    assert_ne!(code, 0);
    for needle in [
        "rules[0] (g).gate.source: must be auto, tags, properties or mlflow",
        "rules[0] (g).gate: min (0.9) is greater than max (0.1)",
        "rules[0] (g).gate.compare_to_live: needs champion_endpoint",
        "rules[0] (g).gate.min_improvement:",
        "rules[0] (g).gate.metric_run: must be self, parent or child:<step-name>",
        "notify[0].url_env: the setting NOT_SET_ANYWHERE is not set",
        "notify[0].format: must be teams, slack or raw",
        "notify[1]: set url_env",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}
