//! Progressive delivery in process: linear steps judged on Azure Monitor metrics (the fake
//! monitor behind the fake ARM), the insufficient-data policies, metrics failures, and approval.
//! Azure Monitor judges complete minutes a couple of minutes old, so each step's start is moved
//! into the past once its traffic is applied: as if the step had been live for a quarter hour.

use std::ops::Deref;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_monitor::MonitorState;
use crate::harness::*;

struct Direct {
    fakes: Fakes,
    files: DirectFiles,
}

impl Deref for Direct {
    type Target = Fakes;

    fn deref(&self) -> &Fakes {
        &self.fakes
    }
}

const ANALYSIS: &str = "analysis: { window_minutes: 10, max_error_rate: \"1%\", max_error_rate_increase: \"0.5%\", latency: p95, max_latency_ms: 800, max_latency_increase: \"20%\", min_requests: 100, on_insufficient_data: INSUFFICIENT, max_bake_minutes: 30 }";

impl Direct {
    async fn new(monitor: MonitorState) -> Self {
        let t = Direct {
            fakes: Fakes::start().await,
            files: DirectFiles::new(),
        };
        t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
        t.arm.with(|s| s.monitor = monitor);
        t
    }

    /// A linear rollout 10 → 30 → 60 → 100 with the analysis above and `extra` keys.
    async fn spawn(&self, insufficient: &str, extra: &str) -> App {
        self.spawn_notifying(insufficient, extra, "").await
    }

    /// [`Direct::spawn`] with a `notify:` section.
    async fn spawn_notifying(&self, insufficient: &str, extra: &str, notify: &str) -> App {
        let rollout = format!(
            "{{ strategy: linear, steps: [10, 30, 60], bake_minutes: 0, retain_previous_minutes: 0, {}{extra} }}",
            ANALYSIS.replace("INSUFFICIENT", insufficient)
        );
        let config = self.files.config("credit-ep", &rollout) + notify;
        let config_path = DirectFiles::write(self.files.path(), &config);
        App::start(&self.fakes, &config, &[("AUTODEPLOY_CONFIG", &config_path)]).await
    }
}

/// Runs Reconcile until `done`, moving each step's start `minutes` into the past once set.
async fn drive_aged(
    app: &App,
    version: &str,
    minutes: i64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let pass = app.post_reconcile().await;
        assert_eq!(pass.status, 200, "{}", pass.raw);
        last = app.record("credit-risk", version).await;
        if done(&last) {
            return last;
        }
        let fresh = last["rollout"]["step_started"].as_str().is_some_and(|at| {
            let at =
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .unwrap();
            time::OffsetDateTime::now_utc() - at < time::Duration::minutes(5)
        });
        if fresh {
            app.edit_record("credit-risk", version, |r| {
                if let Some(rollout) = r.rollout.as_mut()
                    && let Some(started) = rollout.step_started
                {
                    rollout.step_started = Some(started - time::Duration::minutes(minutes));
                    rollout.hold_until = rollout
                        .hold_until
                        .map(|h| h - time::Duration::minutes(minutes));
                }
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("credit-risk:{version} never got there: {last:#}");
}

/// [`drive_aged`] with each step a quarter hour old: inside `max_bake_minutes` (30).
async fn drive(app: &App, version: &str, done: impl Fn(&Value) -> bool) -> Value {
    drive_aged(app, version, 15, done).await
}

fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |r| r["state"] == state
}

fn credit(version: &str) -> Value {
    model_event("credit-risk", version, json!({}))
}

/// Healthy traffic on both deployments.
fn healthy(new: &str) -> MonitorState {
    let mut m = MonitorState::steady("blue", 600, 0.001, 300.0);
    m.set_steady(new, 300, 0.002, 320.0);
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_linear_rollout_moves_through_every_judged_step_to_100() {
    let t = Direct::new(healthy("credit-risk-21")).await;
    let app = t.spawn("wait", "").await;
    app.post_event(&credit("21")).await;
    let record = drive(&app, "21", state_is("succeeded")).await;

    let steps: Vec<Vec<(String, u32)>> = t.arm.with(|s| {
        s.traffic_puts
            .iter()
            .map(|(traffic, _)| traffic.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .collect()
    });
    let new = |n: u32| ("credit-risk-21".to_string(), n);
    let blue = |n: u32| ("blue".to_string(), n);
    assert_eq!(
        steps,
        vec![
            vec![blue(90), new(10)],
            vec![blue(70), new(30)],
            vec![blue(40), new(60)],
            vec![new(100)],
        ]
    );
    let judged: Vec<(u64, String)> = record["rollout"]["judgements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["step"].as_u64().unwrap(),
                j["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for step in 1..=3 {
        assert!(
            judged.contains(&(step, "pass".into())),
            "step {step}: {judged:?}"
        );
    }
    let first = &record["rollout"]["judgements"][0]["figures"];
    assert!(first["requests"].as_u64().unwrap() >= 100, "{first}");
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
    assert!(
        t.arm.with(|s| s.monitor.violations.is_empty()),
        "{:?}",
        t.arm.with(|s| s.monitor.violations.clone())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_rate_over_the_limit_rolls_back_with_the_figure_recorded() {
    let mut monitor = healthy("credit-risk-22");
    monitor.set_steady("credit-risk-22", 300, 0.05, 320.0);
    let t = Direct::new(monitor).await;
    let app = t.spawn("wait", "").await;
    app.post_event(&credit("22")).await;
    let record = drive(&app, "22", state_is("rolled_back")).await;
    let failure = record["rollout"]["failure"].as_str().unwrap();
    assert!(
        failure.contains("canary analysis failed at step 1"),
        "{failure}"
    );
    assert!(failure.contains("5"), "the error rate is quoted: {failure}");
    assert_eq!(record["rollout"]["judgements"][0]["verdict"], "fail");
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("blue".to_string(), 100)].into()
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_latency_regression_against_the_baseline_rolls_back() {
    let mut monitor = healthy("credit-risk-23");
    // Under the absolute limit (800 ms) but 50% slower than blue.
    monitor.set_steady("credit-risk-23", 300, 0.0, 450.0);
    let t = Direct::new(monitor).await;
    let app = t.spawn("wait", "").await;
    app.post_event(&credit("23")).await;
    let record = drive(&app, "23", state_is("rolled_back")).await;
    let failure = record["rollout"]["failure"].as_str().unwrap();
    assert!(failure.contains("latency"), "{failure}");
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("blue".to_string(), 100)].into()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn too_few_requests_follow_on_insufficient_data() {
    for (policy, end) in [
        ("promote", "succeeded"),
        ("rollback", "rolled_back"),
        ("wait", "rolled_back"),
    ] {
        let mut monitor = healthy("credit-risk-24");
        monitor.set_steady("credit-risk-24", 3, 0.0, 300.0);
        let t = Direct::new(monitor).await;
        // `wait` holds until max_bake_minutes (30): the step is made 45 minutes old.
        let app = t.spawn(policy, "").await;
        app.post_event(&credit("24")).await;
        let record = drive_aged(&app, "24", 45, state_is(end)).await;
        let verdicts: Vec<&str> = record["rollout"]["judgements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["verdict"].as_str().unwrap())
            .collect();
        assert!(
            verdicts.iter().all(|v| *v == "inconclusive"),
            "{policy}: {verdicts:?}"
        );
        assert!(!verdicts.is_empty(), "{policy}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_metrics_api_never_promotes_and_is_asked_again() {
    let mut monitor = healthy("credit-risk-25");
    // The request metric answers an error of its own (HTTP 200, errorCode): no judgement.
    monitor.metric_error = Some(("RequestsPerMinute".into(), "ServiceUnavailable".into()));
    let t = Direct::new(monitor).await;
    let app = t.spawn("promote", "").await;
    app.post_event(&credit("25")).await;
    // While the metrics cannot be read, the first step holds, even with `promote`.
    let held = drive(&app, "25", |r| r["rollout"]["metrics_problem"].is_string()).await;
    assert_eq!(held["rollout"]["phase"], "canary");
    assert_eq!(held["rollout"]["step"].as_u64().unwrap_or(0), 0);
    assert!(held["rollout"].get("judgements").is_none(), "{held:#}");
    for _ in 0..3 {
        app.post_reconcile().await;
    }
    let still = app.record("credit-risk", "25").await;
    assert_eq!(still["rollout"]["phase"], "canary", "never promoted blind");
    t.arm.with(|s| s.monitor.metric_error = None);
    let record = drive(&app, "25", state_is("succeeded")).await;
    assert!(
        record["rollout"].get("metrics_problem").is_none(),
        "{record:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_metrics_role_is_a_configuration_problem_and_never_a_blind_promotion() {
    let mut monitor = healthy("credit-risk-26");
    monitor.refuse = Some(403);
    let t = Direct::new(monitor).await;
    let app = t.spawn("wait", "").await;
    app.post_event(&credit("26")).await;
    // No data until max_bake_minutes (30): then `wait` gives up without promoting.
    let record = drive_aged(&app, "26", 45, state_is("rolled_back")).await;
    assert_eq!(
        record["rollout"]["configuration_problem"], true,
        "{record:#}"
    );
    let problem = record["rollout"]["metrics_problem"]
        .as_str()
        .unwrap_or_default();
    assert!(
        problem.contains("configuration problem") && problem.contains("Monitoring Reader"),
        "{record:#}"
    );
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("blue".to_string(), 100)].into()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_by_tag_moves_to_100_and_a_timeout_rolls_back() {
    let t = Direct::new(healthy("credit-risk-27")).await;
    t.arm.add_model("27", json!({}), None);
    // People are told when a version waits for them.
    let hook = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .expect(1)
        .mount(&hook)
        .await;
    let notify = format!(
        "\nnotify:\n  - url: {}/hook\n    format: raw\n    on: [awaiting_approval]\n",
        hook.uri()
    );
    let app = t
        .spawn_notifying(
            "wait",
            ", approval: { tag: autodeploy.approved, timeout_hours: 1 }",
            &notify,
        )
        .await;
    app.post_event(&credit("27")).await;
    let waiting = drive(&app, "27", |r| r["rollout"]["phase"] == "awaiting_approval").await;
    assert_eq!(waiting["state"], "deploying");
    assert!(t.arm.traffic("credit-ep")["credit-risk-27"] == 60);
    // Approved in the studio: the tag on the model version.
    t.arm
        .add_model("27", json!({"autodeploy.approved": "true"}), None);
    let record = drive(&app, "27", state_is("succeeded")).await;
    assert_eq!(record["rollout"]["approval"]["decision"]["approved"], true);
    // The approver is who set the tag (systemData.lastModifiedBy).
    assert_eq!(
        record["rollout"]["approval"]["decision"]["by"],
        "ada@contoso.com (tag autodeploy.approved)"
    );
    let told = hook.received_requests().await.unwrap();
    let payload: Value = serde_json::from_slice(&told[0].body).unwrap();
    assert!(
        payload.to_string().contains("awaiting_approval"),
        "{payload}"
    );

    let t = Direct::new(healthy("credit-risk-28")).await;
    t.arm.add_model("28", json!({}), None);
    let app = t
        .spawn(
            "wait",
            ", approval: { tag: autodeploy.approved, timeout_hours: 0.0003 }",
        )
        .await;
    app.post_event(&credit("28")).await;
    let record = drive(&app, "28", state_is("rolled_back")).await;
    assert!(
        record["rollout"]["failure"]
            .as_str()
            .unwrap()
            .contains("not approved within"),
        "{record:#}"
    );
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("blue".to_string(), 100)].into()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metric_the_service_does_not_know_is_a_configuration_problem_not_a_loop() {
    let mut monitor = healthy("credit-risk-29");
    monitor.refuse = Some(400);
    let t = Direct::new(monitor).await;
    let app = t.spawn("wait", "").await;
    app.post_event(&credit("29")).await;
    let record = drive(&app, "29", state_is("rolled_back")).await;
    assert_eq!(record["rollout"]["configuration_problem"], true);
    assert!(
        record["rollout"]["failure"]
            .as_str()
            .unwrap()
            .contains("refused the metrics query"),
        "{record:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_metrics_role_holds_the_step_even_when_the_policy_says_promote() {
    let mut monitor = healthy("credit-risk-33");
    monitor.refuse = Some(403);
    let t = Direct::new(monitor).await;
    let app = t.spawn("promote", "").await;
    app.post_event(&credit("33")).await;
    // The bake (0 min) is over, max_bake_minutes (30) is not: it holds.
    let held = drive(&app, "33", |r| r["rollout"]["metrics_problem"].is_string()).await;
    for _ in 0..5 {
        app.post_reconcile().await;
    }
    let still = app.record("credit-risk", "33").await;
    assert_eq!(still["rollout"]["phase"], "canary", "{held:#}");
    assert_eq!(t.arm.traffic("credit-ep")["credit-risk-33"], 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_at_once_with_approval_waits_for_it_before_any_traffic() {
    let t = Direct::new(healthy("credit-risk-34")).await;
    t.arm.add_model("34", json!({}), None);
    let config = t.files.config(
        "credit-ep",
        "{ strategy: all-at-once, retain_previous_minutes: 0, approval: { tag: go, timeout_hours: 1 } }",
    );
    let config_path = DirectFiles::write(t.files.path(), &config);
    let app = App::start(&t.fakes, &config, &[("AUTODEPLOY_CONFIG", &config_path)]).await;
    app.post_event(&credit("34")).await;
    drive(&app, "34", |r| r["rollout"]["phase"] == "awaiting_approval").await;
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("blue".to_string(), 100)].into()
    );
    t.arm.add_model("34", json!({"go": "true"}), None);
    drive(&app, "34", state_is("succeeded")).await;
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("credit-risk-34".to_string(), 100)].into()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_set_before_the_request_approves_nothing_until_it_is_set_again() {
    let t = Direct::new(healthy("credit-risk-35")).await;
    // Registered with the tag already set: whoever registers could approve in advance.
    t.arm
        .add_model("35", json!({"autodeploy.approved": "true"}), None);
    t.arm.with(|s| {
        let key = ("credit-risk".to_string(), "35".to_string());
        let system = s.model_system.get_mut(&key).unwrap();
        system["lastModifiedAt"] = json!("2026-01-01T00:00:00Z");
    });
    let app = t
        .spawn(
            "wait",
            ", approval: { tag: autodeploy.approved, timeout_hours: 1 }",
        )
        .await;
    app.post_event(&credit("35")).await;
    drive(&app, "35", |r| r["rollout"]["phase"] == "awaiting_approval").await;
    for _ in 0..4 {
        app.post_reconcile().await;
    }
    let waiting = app.record("credit-risk", "35").await;
    assert_eq!(
        waiting["rollout"]["phase"], "awaiting_approval",
        "{waiting:#}"
    );
    assert!(waiting["rollout"]["approval"]["decision"].is_null());
    let refused = waiting["rollout"]["approval"]["refused"].as_str().unwrap();
    assert!(
        refused.contains("already set when the approval was requested"),
        "{refused}"
    );
    let next = waiting["rollout"]["next_step"].as_str().unwrap();
    assert!(
        next.contains("set the tag autodeploy.approved=true again"),
        "{next}"
    );
    assert!(t.arm.traffic("credit-ep")["credit-risk-35"] == 60);
    // Set again, now: approved, and the record says by whom.
    t.arm.set_model(
        "35",
        json!({"autodeploy.approved": "true"}),
        None,
        "bo@contoso.com",
    );
    let record = drive(&app, "35", state_is("succeeded")).await;
    assert_eq!(
        record["rollout"]["approval"]["decision"]["by"],
        "bo@contoso.com (tag autodeploy.approved)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn distinct_approver_refuses_the_registrar_and_accepts_someone_else() {
    let t = Direct::new(healthy("credit-risk-36")).await;
    t.arm.add_model("36", json!({}), None);
    let app = t
        .spawn(
            "wait",
            ", approval: { tag: autodeploy.approved, timeout_hours: 1, distinct_approver: true }",
        )
        .await;
    app.post_event(&credit("36")).await;
    drive(&app, "36", |r| r["rollout"]["phase"] == "awaiting_approval").await;
    // The registrar approves their own model.
    t.arm.set_model(
        "36",
        json!({"autodeploy.approved": "true"}),
        None,
        crate::fake_arm::REGISTRAR,
    );
    for _ in 0..3 {
        app.post_reconcile().await;
    }
    let waiting = app.record("credit-risk", "36").await;
    assert_eq!(
        waiting["rollout"]["phase"], "awaiting_approval",
        "{waiting:#}"
    );
    let refused = waiting["rollout"]["approval"]["refused"].as_str().unwrap();
    assert!(refused.contains("who registered the version"), "{refused}");
    t.arm.set_model(
        "36",
        json!({"autodeploy.approved": "true"}),
        None,
        "bo@contoso.com",
    );
    let record = drive(&app, "36", state_is("succeeded")).await;
    assert_eq!(
        record["rollout"]["approval"]["decision"]["by"],
        "bo@contoso.com (tag autodeploy.approved)"
    );
}
