//! Approvals that mean a person, through the real binary: a rejection recorded while a visit is
//! about to promote wins (the approval is recorded, ETag-checked, before traffic moves), and
//! `approve` by an OS user is refused under `approval.distinct_approver`.

use std::sync::Arc;

use serde_json::json;

use crate::azureml::{Direct, cli, credit};
use crate::fake_arm::{Hook, PathMatch};
use crate::helpers::*;

const WAITING: &str = "{ strategy: linear, steps: [20], bake_minutes: 0, retain_previous_minutes: 0, approval: { tag: autodeploy.approved, timeout_hours: 1 } }";

#[tokio::test(flavor = "multi_thread")]
async fn a_rejection_recorded_during_the_visit_that_reads_the_approving_tag_wins() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.add_model("41", json!({}), None);
    let app = t.spawn(&t.config("credit-ep", WAITING)).await;
    app.post_event(&credit("41")).await;
    t.reconcile_until_phase(&app, "41", "awaiting_approval")
        .await;
    // Approved in the studio; and while the next visit reads that tag, someone rejects.
    t.arm
        .add_model("41", json!({"autodeploy.approved": "true"}), None);
    let env = t.env();
    let pairs: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let rejected = Arc::new(std::sync::Mutex::new(String::new()));
    let seen = rejected.clone();
    t.arm.with(|s| {
        s.hook = Some(Hook {
            method: "GET",
            path: PathMatch::EndsWith("/models/credit-risk/versions/41".into()),
            action: Arc::new(move || {
                let pairs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let dir = tempfile::tempdir().unwrap();
                let (code, out, err) = run_cli(dir.path(), &["reject", "credit-risk:41"], &pairs);
                *seen.lock().unwrap() = format!("{code} {out}{err}");
            }),
            fired: false,
            skip: 0,
        })
    });
    let record = t.reconcile_until(&app, "41", "rolled_back").await;
    let said = rejected.lock().unwrap().clone();
    assert!(
        said.starts_with("0 ") && said.contains("rejected by"),
        "{said}"
    );
    assert_eq!(
        record["rollout"]["approval"]["decision"]["approved"], false,
        "{record:#}"
    );
    assert!(
        t.arm.with(|s| s
            .traffic_puts
            .iter()
            .all(|(traffic, _)| traffic.get("credit-risk-41") != Some(&100))),
        "the rejected version never had all traffic: {:?}",
        t.arm.with(|s| s.traffic_puts.clone())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn under_distinct_approver_an_os_user_cannot_approve_but_may_reject() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.add_model("42", json!({}), None);
    let app = t
        .spawn(&t.config(
            "credit-ep",
            &WAITING.replace(
                "timeout_hours: 1",
                "timeout_hours: 1, distinct_approver: true",
            ),
        ))
        .await;
    app.post_event(&credit("42")).await;
    t.reconcile_until_phase(&app, "42", "awaiting_approval")
        .await;
    // The harness's CLI has no Azure credential: its identity would be the OS user.
    let (code, out, err) = cli(&t, &["approve", "credit-risk:42"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        out.contains("approval.distinct_approver") && out.contains("OS user"),
        "{out}"
    );
    let record = t.record("42").await;
    assert!(
        record["rollout"]["approval"]["decision"].is_null(),
        "{record:#}"
    );
    let (code, out, err) = cli(&t, &["reject", "credit-risk:42"]);
    assert_eq!(code, 0, "{out}{err}");
    t.reconcile_until(&app, "42", "rolled_back").await;
}
