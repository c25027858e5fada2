//! Several instances on one storage account: two processes of the real binary share one Azurite
//! (through a front the test can slow down or cut), receive the same events and both run
//! `Reconcile`, against the fake ARM that records every change and refuses what ARM refuses. Each
//! scenario ends with every version deployed once, in order, no ARM rule broken and never two
//! rollouts on the endpoint at once; storage lost at any traffic change never stops a rollout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aml_autodeploy::actions::azureml::rollout::{EndpointLock, lock_name};
use aml_autodeploy::ledger::record_key;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::azureml::{Direct, FAST};
use crate::fake_arm::{Hook, PathMatch};
use crate::faults::{azurite_address, read_raw_request, relay};
use crate::helpers::*;

/// A loopback front for the shared Azurite: relays every request, except that while `cut` is set
/// each request is dropped without an answer (an unreachable account), and PUTs whose blob name
/// contains the `slow` needle wait first (so that two instances read before either writes).
struct Storage {
    connection: String,
    cut: Arc<AtomicBool>,
    slow: Arc<Mutex<Option<(&'static str, Duration)>>>,
}

impl Storage {
    async fn start() -> Self {
        let upstream = azurite_address();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let slow = Arc::new(Mutex::new(None));
        let (cut_flag, slow_writes) = (cut.clone(), slow.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(Self::serve(
                    stream,
                    upstream,
                    cut_flag.clone(),
                    slow_writes.clone(),
                ));
            }
        });
        Self {
            connection: azurite_at(port),
            cut,
            slow,
        }
    }

    async fn serve(
        mut stream: TcpStream,
        upstream: std::net::SocketAddr,
        cut: Arc<AtomicBool>,
        slow: Arc<Mutex<Option<(&'static str, Duration)>>>,
    ) {
        let mut buffer = Vec::new();
        loop {
            let Some((head, body)) = read_raw_request(&mut stream, &mut buffer).await else {
                return;
            };
            let line = head.lines().next().unwrap_or_default().to_string();
            let wait = slow.lock().unwrap().and_then(|(needle, wait)| {
                (line.starts_with("PUT ") && line.contains(needle)).then_some(wait)
            });
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
            if cut.load(Ordering::SeqCst) {
                return; // dropped without a byte
            }
            let answer = relay(upstream, &head, &body).await;
            if answer.is_empty() || stream.write_all(&answer).await.is_err() {
                return;
            }
        }
    }

    /// A shareable switch that cuts this storage (for a fake ARM hook).
    fn cutter(&self) -> Arc<dyn Fn() + Send + Sync> {
        let cut = self.cut.clone();
        Arc::new(move || cut.store(true, Ordering::SeqCst))
    }
}

/// Two handler processes on one ledger, and the fakes around them.
struct Pair {
    t: Direct,
    storage: Storage,
    a: TestApp,
    b: TestApp,
}

impl Pair {
    /// Both processes with `config`; `arm` prepares the fake ARM before they start.
    async fn start(config: impl Fn(&Direct) -> String, extra: &[(&str, &str)]) -> Self {
        let storage = Storage::start().await;
        let t = Direct::with_storage(storage.connection.clone()).await;
        t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
        let config = config(&t);
        let mut env = vec![("AUTODEPLOY_CLAIM_TIMEOUT_SECS", "2")];
        env.extend_from_slice(extra);
        let (a, b) = tokio::join!(t.spawn_with(&config, &env), t.spawn_with(&config, &env));
        Self { t, storage, a, b }
    }

    /// Both processes receive `event` at once (Event Grid delivers to each); the two answers.
    async fn deliver(&self, event: &Value) -> (HostReply, HostReply) {
        tokio::join!(self.a.post_event(event), self.b.post_event(event))
    }

    /// One timer tick on both processes at once.
    async fn tick(&self) -> (HostReply, HostReply) {
        tokio::join!(self.a.post_reconcile(), self.b.post_reconcile())
    }

    /// The record of `model:version`, read straight from Azurite (never through the front).
    async fn record(&self, model: &str, version: &str) -> Value {
        ledger_record(&azurite(), self.t.container(), model, version).await
    }

    /// Ticks both processes until every one of `versions` is finished; their records.
    async fn until_finished(&self, versions: &[(&str, &str)]) -> Vec<Value> {
        let finished = ["succeeded", "rolled_back", "failed", "superseded", "stale"];
        let deadline = Instant::now() + 2 * PATIENCE;
        let mut records = Vec::new();
        while Instant::now() < deadline {
            self.tick().await;
            records.clear();
            for (model, version) in versions {
                records.push(self.record(model, version).await);
            }
            if records
                .iter()
                .all(|r| finished.contains(&r["state"].as_str().unwrap_or("")))
            {
                return records;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "not finished: {records:#?}\nA: {}\nB: {}",
            self.a.stderr(),
            self.b.stderr()
        );
    }

    /// What must hold whatever the scenario: no request ARM refuses, one rollout at a time.
    fn assert_arm_rules_kept(&self) {
        let violations = self.t.arm.violations();
        assert!(violations.is_empty(), "ARM refused: {violations:?}");
        let overlaps = self.t.arm.overlapping_rollouts();
        assert!(overlaps.is_empty(), "two rollouts at once: {overlaps:?}");
    }
}

/// `model:version` registered at `second` past 10:00.
fn registered(model: &str, version: &str, second: u32) -> Value {
    let mut event = model_event(model, version, json!({}));
    event["eventTime"] = json!(format!("2026-11-26T10:00:{second:02}Z"));
    event
}

/// The direct-deployment rule for two models on one endpoint.
fn two_models(t: &Direct, rollout: &str) -> String {
    t.config("credit-ep", rollout).replace(
        r#"models: ["credit-risk"]"#,
        r#"models: ["fraud", "churn"]"#,
    )
}

/// The answers' decisions, sorted (which process answers what is a race).
fn decisions(replies: &(HostReply, HostReply)) -> Vec<String> {
    let mut both = vec![
        replies.0.decision().to_string(),
        replies.1.decision().to_string(),
    ];
    both.sort();
    both
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_ticking_together_run_each_rollout_step_once() {
    let pair = Pair::start(|t| t.config("credit-ep", FAST), &[]).await;
    pair.t.arm.with(|s| {
        s.create_polls = 3;
        s.latency = Duration::from_millis(15);
        s.hold_operations = true;
    });
    let first = pair.deliver(&registered("credit-risk", "2", 2)).await;
    assert_eq!(decisions(&first), ["deploying", "duplicate"]);
    let second = pair.deliver(&registered("credit-risk", "3", 3)).await;
    assert_eq!(decisions(&second), ["duplicate", "queued"]);
    pair.t.arm.with(|s| s.hold_operations = false);

    // Both timers tick together: version 3 is woken when 2 gives the endpoint back, and both
    // passes find it due at once.
    let records = pair
        .until_finished(&[("credit-risk", "2"), ("credit-risk", "3")])
        .await;

    assert_eq!(records[0]["state"], "succeeded", "{:#}", records[0]);
    assert_eq!(records[1]["state"], "succeeded", "{:#}", records[1]);
    assert_eq!(
        pair.t.arm.created_deployments(),
        ["credit-risk-2", "credit-risk-3"],
        "each version's deployment PUT once, in order"
    );
    pair.assert_arm_rules_kept();
    assert_eq!(
        pair.t.arm.traffic("credit-ep"),
        [("credit-risk-3".to_string(), 100)].into()
    );
    assert_eq!(pair.t.arm.deployment_names("credit-ep"), ["credit-risk-3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_left_by_a_finished_rollout_goes_to_one_newcomer_only() {
    let pair = Pair::start(|t| two_models(t, FAST), &[]).await;
    pair.deliver(&registered("fraud", "2", 2)).await;
    pair.until_finished(&[("fraud", "2")]).await;
    // A crash left the finished rollout in the endpoint lock (as a release that never happened).
    let ledger = test_ledger(&azurite(), pair.t.container());
    let finished_holder = record_key(WS, "fraud", "2");
    ledger
        .update_json(&lock_name(WS, "credit-ep"), |lock: &mut EndpointLock| {
            lock.active = Some(finished_holder.clone());
        })
        .await
        .unwrap();

    // Two newcomers on two instances, both reading the lock before either writes it.
    *pair.storage.slow.lock().unwrap() = Some(("endpoints%2F", Duration::from_millis(700)));
    let (churn_event, fraud_event) = (registered("churn", "1", 5), registered("fraud", "3", 7));
    let (churn, fraud) = tokio::join!(
        pair.a.post_event(&churn_event),
        pair.b.post_event(&fraud_event),
    );
    *pair.storage.slow.lock().unwrap() = None;
    let mut answers = vec![churn.decision().to_string(), fraud.decision().to_string()];
    answers.sort();
    assert_eq!(
        answers,
        ["deploying", "queued"],
        "one takes the endpoint over, the other waits: {}\n{}",
        churn.raw,
        fraud.raw
    );

    let records = pair.until_finished(&[("churn", "1"), ("fraud", "3")]).await;
    for record in &records {
        assert_eq!(record["state"], "succeeded", "{record:#}");
    }
    let mut created = pair.t.arm.created_deployments();
    assert_eq!(created.remove(0), "fraud-2");
    created.sort();
    assert_eq!(created, ["churn-1", "fraud-3"], "each deployed once");
    pair.assert_arm_rules_kept();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_rollout_never_holds_the_endpoint() {
    // retain_previous_minutes: 0, and deleting the previous deployment is slow: the record must
    // not say `succeeded` while the lock still names it (another instance would take it over).
    let pair = Pair::start(|t| t.config("credit-ep", FAST), &[]).await;
    pair.t.arm.with(|s| {
        s.slow = Some((
            "DELETE",
            PathMatch::EndsWith("/deployments/blue".into()),
            Duration::from_millis(1500),
        ))
    });
    pair.a.post_event(&registered("credit-risk", "2", 2)).await;
    let key = record_key(WS, "credit-risk", "2");
    let ledger = test_ledger(&azurite(), pair.t.container());
    let deadline = Instant::now() + PATIENCE;
    let mut seen_succeeded = false;
    while Instant::now() < deadline && !seen_succeeded {
        let (_, ()) = tokio::join!(pair.a.post_reconcile(), async {
            for _ in 0..30 {
                let record = pair.record("credit-risk", "2").await;
                if record["state"] == "succeeded" {
                    seen_succeeded = true;
                    let lock: EndpointLock = ledger
                        .read_json(&lock_name(WS, "credit-ep"))
                        .await
                        .unwrap()
                        .unwrap_or_default();
                    assert_ne!(
                        lock.active.as_deref(),
                        Some(key.as_str()),
                        "the record says succeeded while the lock still names it: {record:#}"
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    assert!(seen_succeeded, "the rollout succeeded");
    pair.until_finished(&[("credit-risk", "2")]).await;
    pair.assert_arm_rules_kept();
}

#[tokio::test(flavor = "multi_thread")]
async fn another_models_queued_version_keeps_its_place_and_supersession_names_the_model() {
    let pair = Pair::start(|t| two_models(t, FAST), &[]).await;
    pair.t.arm.with(|s| s.hold_operations = true);
    pair.a.post_event(&registered("fraud", "2", 2)).await;
    assert_eq!(
        pair.b
            .post_event(&registered("churn", "1", 5))
            .await
            .decision(),
        "queued"
    );
    assert_eq!(
        pair.a
            .post_event(&registered("fraud", "3", 7))
            .await
            .decision(),
        "queued"
    );
    let churn = pair.record("churn", "1").await;
    assert_eq!(churn["state"], "queued", "another model: {churn:#}");
    // A newer fraud supersedes the waiting fraud:3 (and only it), saying which version did.
    assert_eq!(
        pair.b
            .post_event(&registered("fraud", "4", 9))
            .await
            .decision(),
        "queued"
    );
    let superseded = pair.record("fraud", "3").await;
    assert_eq!(superseded["state"], "superseded", "{superseded:#}");
    assert!(
        superseded["history"]
            .to_string()
            .contains("superseded by fraud version 4"),
        "the reason names the model and version: {superseded:#}"
    );
    assert_eq!(pair.record("churn", "1").await["state"], "queued");
    pair.t.arm.with(|s| s.hold_operations = false);

    let records = pair
        .until_finished(&[("fraud", "2"), ("churn", "1"), ("fraud", "4")])
        .await;
    for record in &records {
        assert_eq!(record["state"], "succeeded", "{record:#}");
    }
    assert_eq!(
        pair.t.arm.created_deployments(),
        ["fraud-2", "churn-1", "fraud-4"],
        "in event time order, each once"
    );
    pair.assert_arm_rules_kept();
    assert_eq!(
        pair.t.arm.traffic("credit-ep"),
        [("fraud-4".to_string(), 100)].into()
    );
}

/// Where storage is lost: at the endpoint PUT number `at` (1-based).
struct Cut {
    name: &'static str,
    rollout: &'static str,
    at: u32,
    /// The traffic update number N (1-based) fails (to reach the restore).
    fail_traffic: Option<u32>,
    /// The model version carries the approval tag.
    approved: bool,
    ends: &'static str,
}

const LINEAR: &str =
    "{ strategy: linear, steps: [20, 50], bake_minutes: 0, retain_previous_minutes: 0 }";
const APPROVED: &str = "{ strategy: linear, steps: [20, 50], bake_minutes: 0, retain_previous_minutes: 0, approval: { tag: autodeploy.approved, timeout_hours: 1 } }";

/// One rollout on two instances, storage cut right as ARM accepts traffic change `cut.at` (ARM
/// applies it without anyone polling, as it does); storage comes back and the rollout completes.
async fn cut_cell(cut: &Cut) -> Result<(), String> {
    let fail = |what: &str, detail: String| Err(format!("{}: {what}: {detail}", cut.name));
    let pair = Pair::start(|t| t.config("credit-ep", cut.rollout), &[]).await;
    // Approved by a person once the approval is asked for (a tag set earlier does not count).
    let mut approved = !cut.approved;
    if cut.approved {
        pair.t.arm.add_model("2", json!({}), None);
    }
    let cutter = pair.storage.cutter();
    pair.t.arm.with(|s| {
        s.traffic_at_once = true;
        s.fail_traffic_update = cut.fail_traffic;
        s.hook = Some(Hook {
            method: "PUT",
            path: PathMatch::EndsWith("/onlineEndpoints/credit-ep".into()),
            action: cutter,
            fired: false,
            skip: cut.at - 1,
        });
    });
    pair.deliver(&registered("credit-risk", "2", 2)).await;
    let deadline = Instant::now() + PATIENCE;
    while !pair
        .t
        .arm
        .with(|s| s.hook.as_ref().is_some_and(|h| h.fired))
    {
        if Instant::now() > deadline {
            return fail("never reached the traffic change", String::new());
        }
        if !approved
            && pair.record("credit-risk", "2").await["rollout"]["phase"] == "awaiting_approval"
        {
            pair.t
                .arm
                .add_model("2", json!({"autodeploy.approved": "true"}), None);
            approved = true;
        }
        pair.tick().await;
        tokio::time::sleep(POLL).await;
    }
    // Storage stays away for a few passes (which fail and change nothing), then comes back.
    let changes = pair.t.arm.with(|s| s.changes.len());
    for _ in 0..3 {
        pair.tick().await;
    }
    let meanwhile = pair.t.arm.with(|s| s.changes[changes..].to_vec());
    if !meanwhile.is_empty() {
        return fail(
            "no ARM change while storage is away",
            format!("{meanwhile:?}"),
        );
    }
    pair.storage.cut.store(false, Ordering::SeqCst);
    let record = pair.until_finished(&[("credit-risk", "2")]).await.remove(0);
    if record["state"] != cut.ends {
        return fail(&format!("ends {}", cut.ends), format!("{record:#}"));
    }
    let puts = pair.t.arm.with(|s| s.deployment_puts.len());
    if puts != 1 {
        return fail("the deployment is created once", format!("{puts} PUTs"));
    }
    let violations = pair.t.arm.violations();
    let overlaps = pair.t.arm.overlapping_rollouts();
    if !violations.is_empty() || !overlaps.is_empty() {
        return fail("ARM rules kept", format!("{violations:?} {overlaps:?}"));
    }
    let (traffic, deployments) = (
        pair.t.arm.traffic("credit-ep"),
        pair.t.arm.deployment_names("credit-ep"),
    );
    let live = if cut.ends == "succeeded" {
        "credit-risk-2"
    } else {
        "blue"
    };
    if traffic != [(live.to_string(), 100)].into() || deployments != [live] {
        return fail(
            &format!("all traffic on {live}, the other deployment deleted"),
            format!("{traffic:?} {deployments:?}"),
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_lost_at_each_traffic_change_never_stops_the_rollout() {
    let cells = [
        Cut {
            name: "canary",
            rollout: FAST,
            at: 1,
            fail_traffic: None,
            approved: false,
            ends: "succeeded",
        },
        Cut {
            name: "promotion",
            rollout: FAST,
            at: 2,
            fail_traffic: None,
            approved: false,
            ends: "succeeded",
        },
        Cut {
            name: "second linear step",
            rollout: LINEAR,
            at: 2,
            fail_traffic: None,
            approved: false,
            ends: "succeeded",
        },
        Cut {
            name: "promotion after the approval",
            rollout: APPROVED,
            at: 3,
            fail_traffic: None,
            approved: true,
            ends: "succeeded",
        },
        Cut {
            name: "restore after a failed promotion",
            rollout: FAST,
            at: 3,
            fail_traffic: Some(2),
            approved: false,
            ends: "rolled_back",
        },
    ];
    let results = futures_util::future::join_all(cells.iter().map(cut_cell)).await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
