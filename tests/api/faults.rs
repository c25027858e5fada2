//! Fault matrix (docs/evidence.md): each network fault at each step of a GitHub dispatch
//! (the App installation token, the dispatch) and of a blue/green rollout (read the endpoint,
//! create the deployment, poll its operation, smoke test, traffic update, cleanup), with the ledger
//! in a real Azurite. Invariants checked in every cell: the version ends handled exactly once, or is
//! left for `Reconcile`, never lost; a late redelivery is a duplicate; GitHub accepts exactly one
//! dispatch; no rollout ever leaves traffic on a failed or deleted deployment (the fake ARM refuses
//! and records any such request) and every rollout ends either promoted or rolled back.
//!
//! The fake is a raw loopback HTTP/1.1 server rather than `wiremock`, because two of the faults
//! (a connection closed without an answer, a body cut short of its Content-Length) are below what
//! a mock framework lets a test express.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::azureml::{Direct, FAST, credit};
use crate::fake_arm::{Fault, Hook, Injection, PathMatch};
use crate::helpers::*;

const FAULTS: [Fault; 5] = [
    Fault::ServerError,
    Fault::TooManyRequests,
    Fault::Hang,
    Fault::ClosedConnection,
    Fault::TruncatedJson,
];

/// The step of a dispatch a fault hits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// `POST /app/installations/{id}/access_tokens`.
    InstallationToken,
    /// `POST /repos/{owner}/{repo}/dispatches`.
    Dispatch,
}

impl Step {
    fn matches(self, path: &str) -> bool {
        match self {
            Step::InstallationToken => path.ends_with("/access_tokens"),
            Step::Dispatch => path.ends_with("/dispatches"),
        }
    }
}

/// A fake GitHub on loopback that injects `fault` into requests for `step` while it is set.
#[derive(Clone)]
struct FaultyGitHub {
    uri: String,
    fault: Arc<Mutex<Option<(Step, Fault)>>>,
    /// Dispatches GitHub answered with a 2xx: what actually started a workflow.
    accepted_dispatches: Arc<AtomicUsize>,
}

impl FaultyGitHub {
    async fn start(step: Step, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Self {
            uri: format!("http://{}", listener.local_addr().unwrap()),
            fault: Arc::new(Mutex::new(Some((step, fault)))),
            accepted_dispatches: Arc::new(AtomicUsize::new(0)),
        };
        let serving = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serving.clone().serve(stream));
            }
        });
        fake
    }

    fn clear(&self) {
        *self.fault.lock().unwrap() = None;
    }

    fn accepted(&self) -> usize {
        self.accepted_dispatches.load(Ordering::SeqCst)
    }

    /// One keep-alive connection: read each request whole, then answer or misbehave.
    async fn serve(self, mut stream: TcpStream) {
        let mut buffer = Vec::new();
        loop {
            let Some(path) = read_request(&mut stream, &mut buffer).await else {
                return;
            };
            let fault = *self.fault.lock().unwrap();
            let injected = fault
                .filter(|(step, _)| step.matches(&path))
                .map(|(_, f)| f);
            let is_dispatch = Step::Dispatch.matches(&path);
            let answer: Vec<u8> = match injected {
                Some(Fault::ServerError) => {
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec()
                }
                Some(Fault::TooManyRequests) => {
                    let body = r#"{"message":"API rate limit exceeded"}"#;
                    format!("HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
                }
                Some(Fault::Hang) => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                Some(Fault::ClosedConnection) => return,
                Some(Fault::TruncatedJson) => {
                    if is_dispatch {
                        // GitHub took the dispatch; only the body was lost on the way back.
                        self.accepted_dispatches.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 80\r\n\r\n{\"token\":\"ghs_trunc")
                        .await;
                    return;
                }
                None if is_dispatch => {
                    self.accepted_dispatches.fetch_add(1, Ordering::SeqCst);
                    b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
                }
                None => {
                    let body =
                        json!({"token": "ghs_fault_matrix", "expires_at": "2099-01-01T00:00:00Z"})
                            .to_string();
                    format!("HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
                }
            };
            if stream.write_all(&answer).await.is_err() {
                return;
            }
        }
    }
}

/// Reads one HTTP/1.1 request (headers and a Content-Length body) and returns its path.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    let (head, _body) = read_raw_request(stream, buffer).await?;
    head.split_whitespace().nth(1).map(str::to_string)
}

/// What a cell must show after the fault, before it clears.
#[derive(Debug, PartialEq)]
enum FirstOutcome {
    /// Recorded and left for `Reconcile`: answered 200 so Event Grid does not retry too.
    LeftForRetry,
    /// GitHub accepted the dispatch (a 2xx status), whatever happened to the body.
    Dispatched,
}

fn expected(step: Step, fault: Fault) -> FirstOutcome {
    match (step, fault) {
        (Step::Dispatch, Fault::TruncatedJson) => FirstOutcome::Dispatched,
        _ => FirstOutcome::LeftForRetry,
    }
}

/// One cell: a version registered while `fault` hits `step`, then the fault clears.
async fn cell(step: Step, fault: Fault, version: String) -> Result<(), String> {
    let version = version.as_str();
    let cell = format!("{step:?} × {fault:?}");
    let storage = azurite();
    let container = unique_container();
    let gh = FaultyGitHub::start(step, fault).await;
    let key_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github-app-test-key.pem"
    );
    let app = TestApp::spawn(
        &standard_config(),
        &[
            ("GITHUB_API_URL", gh.uri.as_str()),
            ("GITHUB_APP_ID", "12345"),
            ("GITHUB_APP_PRIVATE_KEY_FILE", key_file),
            ("GITHUB_APP_INSTALLATION_ID", "77"),
            ("AUTODEPLOY_STORAGE", storage.as_str()),
            ("AUTODEPLOY_CONTAINER", container.as_str()),
            ("AUTODEPLOY_RETRY_BUDGET_SECS", "1"),
            ("AUTODEPLOY_RETRY_FIRST_DELAY_SECS", "0"),
        ],
    )
    .await;
    let event = model_event("credit-risk", version, json!({"stage": "production"}));
    let check = |ok: bool, what: &str, detail: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("{cell}: {what}: {detail}"))
        }
    };

    let first = app.post_event(&event).await;
    check(
        first.status == 200,
        "first delivery answered 200",
        &first.raw,
    )?;
    let record = ledger_record(&storage, &container, "credit-risk", version).await;
    match expected(step, fault) {
        FirstOutcome::LeftForRetry => {
            check(first.decision() == "retrying", "left for retry", &first.raw)?;
            check(
                record["state"] == "retrying",
                "recorded as retrying",
                &record.to_string(),
            )?;
            check(gh.accepted() == 0, "nothing accepted yet", "")?;
        }
        FirstOutcome::Dispatched => {
            check(first.decision() == "dispatched", "dispatched", &first.raw)?;
            check(
                record["state"] == "dispatched",
                "recorded as dispatched",
                &record.to_string(),
            )?;
        }
    }

    // The fault clears; the timer's pass finishes whatever was left.
    gh.clear();
    let pass = app.post_reconcile().await;
    check(pass.status == 200, "reconcile answered 200", &pass.raw)?;
    let redelivered = app.post_event(&event).await;
    check(
        redelivered.decision() == "duplicate",
        "a redelivery is a duplicate",
        &redelivered.raw,
    )?;
    let record = ledger_record(&storage, &container, "credit-risk", version).await;
    check(
        record["state"] == "dispatched",
        "handled in the end",
        &record.to_string(),
    )?;
    check(
        gh.accepted() == 1,
        "exactly one dispatch accepted by GitHub",
        &format!("{} accepted", gh.accepted()),
    )?;
    let secret_free = !app.stdout().contains("ghs_fault_matrix")
        && !app.stdout().contains("PRIVATE KEY")
        && !record.to_string().contains("ghs_fault_matrix");
    check(secret_free, "no token in logs or the record", "")
}

async fn run_matrix(step: Step) {
    let results = futures_util::future::join_all(
        FAULTS
            .iter()
            .enumerate()
            .map(|(i, fault)| cell(step, *fault, format!("{}", 100 + i))),
    )
    .await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_at_the_installation_token_leaves_the_version_for_retry_then_sends_it_once() {
    run_matrix(Step::InstallationToken).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_at_the_dispatch_ends_with_exactly_one_accepted_dispatch() {
    run_matrix(Step::Dispatch).await;
}

/// The step of a rollout a fault hits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RolloutStep {
    ReadEndpoint,
    CreateDeployment,
    PollOperation,
    SmokeTest,
    TrafficUpdate,
    Cleanup,
}

impl RolloutStep {
    /// The fault on the first two requests of this step (then the dependency recovers).
    fn injection(self, version: &str, fault: Fault) -> Injection {
        let (method, path) = match self {
            Self::ReadEndpoint => (
                "GET",
                PathMatch::EndsWith("/onlineEndpoints/credit-ep".into()),
            ),
            Self::CreateDeployment => (
                "PUT",
                PathMatch::EndsWith(format!("/deployments/credit-risk-{version}")),
            ),
            Self::PollOperation => ("GET", PathMatch::Contains("/operations/".into())),
            Self::SmokeTest => ("POST", PathMatch::EndsWith("/score".into())),
            Self::TrafficUpdate => (
                "PUT",
                PathMatch::EndsWith("/onlineEndpoints/credit-ep".into()),
            ),
            Self::Cleanup => ("DELETE", PathMatch::EndsWith("/deployments/blue".into())),
        };
        Injection {
            method,
            path,
            fault,
            times: 2,
            fired: 0,
        }
    }
}

/// Where a rollout cell injects its fault.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RolloutTarget {
    /// A step of the rollout against ARM or the scoring URL.
    Step(RolloutStep),
    /// The managed-identity token endpoint every ARM call needs a token from.
    TokenEndpoint,
}

/// A loopback front for the managed-identity token fake that reads the first `closes` requests and
/// closes each connection without a byte, then relays every later connection to `backend` (the
/// `wiremock` token fake, which cannot close a connection itself).
struct ClosingFront {
    uri: String,
    closed: Arc<AtomicUsize>,
}

impl ClosingFront {
    async fn start(backend: std::net::SocketAddr, closes: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = Self {
            uri: format!("http://{}", listener.local_addr().unwrap()),
            closed: Arc::new(AtomicUsize::new(0)),
        };
        let closed = front.closed.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let closed = closed.clone();
                tokio::spawn(async move {
                    if closed.load(Ordering::SeqCst) < closes {
                        let mut buffer = Vec::new();
                        if read_request(&mut stream, &mut buffer).await.is_some() {
                            closed.fetch_add(1, Ordering::SeqCst);
                        }
                        return; // dropped: closed without an answer
                    }
                    if let Ok(mut upstream) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
                    }
                });
            }
        });
        front
    }
}

/// The fault on the first two token requests, as `wiremock` can express it (a closed connection
/// goes through [`ClosingFront`]).
fn token_fault(fault: Fault) -> wiremock::ResponseTemplate {
    use wiremock::ResponseTemplate;
    match fault {
        Fault::ServerError => ResponseTemplate::new(503),
        Fault::TooManyRequests => ResponseTemplate::new(429).insert_header("retry-after", "1"),
        Fault::Hang => ResponseTemplate::new(503).set_delay(Duration::from_secs(120)),
        Fault::TruncatedJson => ResponseTemplate::new(200)
            .insert_header("content-type", "application/json")
            .set_body_string(r#"{"access_token": "mi-tok"#),
        Fault::ClosedConnection => unreachable!("a closed connection goes through ClosingFront"),
    }
}

/// One rollout cell: `blue` serves version 1; version 2 is registered while `fault` hits `target`.
/// Returns the final state.
async fn rollout_cell(target: RolloutTarget, fault: Fault) -> Result<String, String> {
    let cell = format!("{target:?} × {fault:?}");
    let version = "2";
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    let mut front = None;
    match (target, fault) {
        (RolloutTarget::Step(step), _) => t
            .arm
            .with(|s| s.injection = Some(step.injection(version, fault))),
        (RolloutTarget::TokenEndpoint, Fault::ClosedConnection) => {
            front = Some(ClosingFront::start(*t.mi.address(), 2).await);
        }
        (RolloutTarget::TokenEndpoint, _) => {
            wiremock::Mock::given(wiremock::matchers::method("GET"))
                .respond_with(token_fault(fault))
                .with_priority(1)
                .up_to_n_times(2)
                .mount(&t.mi)
                .await
        }
    }
    let mut extra = vec![("AUTODEPLOY_RETRY_BUDGET_SECS", "1")];
    if let Some(front) = &front {
        // Later pairs win: the app asks the front, which closes, then relays to the token fake.
        extra.push(("IDENTITY_ENDPOINT", front.uri.as_str()));
    }
    let app = t.spawn_with(&t.config("credit-ep", FAST), &extra).await;
    let check = |ok: bool, what: &str, detail: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("{cell}: {what}: {detail}"))
        }
    };

    let first = app.post_event(&credit(version)).await;
    check(first.status == 200, "the event is answered 200", &first.raw)?;
    let mut record = serde_json::Value::Null;
    let deadline = Instant::now() + 2 * PATIENCE;
    while Instant::now() < deadline {
        let pass = app.post_reconcile().await;
        check(pass.status == 200, "reconcile answered 200", &pass.raw)?;
        let violations = t.arm.violations();
        check(
            violations.is_empty(),
            "no request ARM refuses (traffic on a failed or deleted deployment, …)",
            &format!("{violations:?}"),
        )?;
        record = t.record(version).await;
        if ["succeeded", "rolled_back", "failed"].contains(&record["state"].as_str().unwrap_or(""))
        {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let state = record["state"].as_str().unwrap_or("").to_string();
    let fired = match (target, &front) {
        (RolloutTarget::Step(_), _) => t.arm.with(|s| s.injection.as_ref().map_or(0, |i| i.fired)),
        (RolloutTarget::TokenEndpoint, Some(front)) => front.closed.load(Ordering::SeqCst) as u32,
        (RolloutTarget::TokenEndpoint, None) => {
            t.mi.received_requests().await.unwrap().len() as u32
        }
    };
    check(
        fired >= 1,
        "the fault was injected",
        &format!("{fired} times"),
    )?;
    let traffic = t.arm.traffic("credit-ep");
    let deployments = t.arm.deployment_names("credit-ep");
    match state.as_str() {
        "succeeded" => check(
            traffic == [("credit-risk-2".to_string(), 100)].into(),
            "promoted: all traffic on the new deployment",
            &format!("{traffic:?}"),
        )?,
        "rolled_back" => check(
            traffic == [("blue".to_string(), 100)].into()
                && !deployments.contains(&"credit-risk-2".to_string()),
            "rolled back: all traffic on blue, the new deployment deleted",
            &format!("{traffic:?} {deployments:?}"),
        )?,
        _ => check(
            false,
            "the rollout ends promoted or rolled back",
            &record.to_string(),
        )?,
    }
    let redelivered = app.post_event(&credit(version)).await;
    check(
        redelivered.decision() == "duplicate",
        "a redelivery is a duplicate",
        &redelivered.raw,
    )?;
    let created = t.arm.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.starts_with("PUT ") && r.ends_with("/deployments/credit-risk-2"))
            .count()
    });
    check(created >= 1, "the deployment was created", "")?;
    Ok(state)
}

async fn run_rollout_matrix(step: RolloutStep, expected: [&str; 5]) {
    run_cells(RolloutTarget::Step(step), &FAULTS, &expected).await;
}

async fn run_cells(target: RolloutTarget, faults: &[Fault], expected: &[&str]) {
    let results =
        futures_util::future::join_all(faults.iter().map(|fault| rollout_cell(target, *fault)))
            .await;
    let mut failures = Vec::new();
    for ((fault, result), want) in faults.iter().zip(results).zip(expected) {
        match result {
            Ok(state) if state == *want => {}
            Ok(state) => failures.push(format!(
                "{target:?} × {fault:?}: ended {state}, expected {want}"
            )),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_at_the_token_endpoint_are_retried_and_the_rollout_completes() {
    run_cells(RolloutTarget::TokenEndpoint, &FAULTS, &["succeeded"; 5]).await;
}

// Expected final states, in the order of FAULTS: 5xx, 429, hang, closed connection, truncated JSON.

#[tokio::test(flavor = "multi_thread")]
async fn faults_reading_the_endpoint_are_retried_and_the_rollout_completes() {
    run_rollout_matrix(RolloutStep::ReadEndpoint, ["succeeded"; 5]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_creating_the_deployment_are_retried_and_the_rollout_completes() {
    run_rollout_matrix(RolloutStep::CreateDeployment, ["succeeded"; 5]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_polling_the_operation_are_retried_and_the_rollout_completes() {
    run_rollout_matrix(RolloutStep::PollOperation, ["succeeded"; 5]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_faulty_smoke_test_rolls_back_before_any_traffic_moves() {
    // The smoke test checks the status only: a 200 with a cut-off body passes.
    run_rollout_matrix(
        RolloutStep::SmokeTest,
        [
            "rolled_back",
            "rolled_back",
            "rolled_back",
            "rolled_back",
            "succeeded",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_updating_traffic_are_retried_and_the_rollout_completes() {
    run_rollout_matrix(RolloutStep::TrafficUpdate, ["succeeded"; 5]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_deleting_the_old_deployment_never_touch_the_promoted_one() {
    run_rollout_matrix(RolloutStep::Cleanup, ["succeeded"; 5]).await;
}

/// A private Azurite for one test, so it can be frozen (SIGSTOP) and thawed (SIGCONT) mid-test:
/// storage stops answering — every request hangs — and comes back with its data, as in an outage.
struct OwnAzurite {
    child: std::process::Child,
    connection: String,
}

impl OwnAzurite {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let program = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/node_modules/.bin/azurite-blob"
        );
        let child = std::process::Command::new(program)
            .args([
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("Azurite (scripts/test.sh installs it in node_modules)");
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            connection: azurite_at(port),
        }
    }

    fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    fn freeze(&self) {
        self.signal("-STOP");
    }

    fn thaw(&self) {
        self.signal("-CONT");
    }
}

fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

impl Drop for OwnAzurite {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The app with its ledger behind `storage` (a connection string) and GitHub at `gh`.
async fn storage_test_app(storage: &str, gh: &wiremock::MockServer) -> (TestApp, String) {
    let container = unique_container();
    let uri = gh.uri();
    let app = TestApp::spawn(
        &standard_config(),
        &[
            ("GITHUB_API_URL", uri.as_str()),
            ("GITHUB_TOKEN", "ghp_storage_faults"),
            ("AUTODEPLOY_STORAGE", storage),
            ("AUTODEPLOY_CONTAINER", container.as_str()),
            ("AUTODEPLOY_RETRY_BUDGET_SECS", "5"),
            ("AUTODEPLOY_RETRY_FIRST_DELAY_SECS", "0"),
            ("AUTODEPLOY_CLAIM_TIMEOUT_SECS", "2"),
        ],
    )
    .await;
    (app, container)
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_stopped_before_the_event_is_recorded_acts_on_nothing_and_the_redelivery_sends_once()
 {
    let azurite = OwnAzurite::start().await;
    let gh = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(204))
        .mount(&gh)
        .await;
    let (app, container) = storage_test_app(&azurite.connection, &gh).await;
    let event = model_event("credit-risk", "5", json!({"stage": "production"}));

    azurite.freeze();
    let first = app.post_event(&event).await;
    assert!(
        first.status >= 500,
        "not recorded, so Event Grid must retry: {}",
        first.raw
    );
    assert_eq!(dispatches_received(&gh).await, 0, "nothing sent unrecorded");

    azurite.thaw();
    let redelivered = app.post_event(&event).await;
    assert_eq!(redelivered.status, 200, "{}", redelivered.raw);
    assert_eq!(redelivered.decision(), "dispatched", "{}", redelivered.raw);
    assert_eq!(dispatches_received(&gh).await, 1);
    let record = ledger_record(&azurite.connection, &container, "credit-risk", "5").await;
    assert_eq!(record["state"], "dispatched", "{record}");
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_stopped_while_github_accepts_is_taken_over_and_repeats_at_most_once() {
    let azurite = OwnAzurite::start().await;
    let gh = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(204).set_delay(Duration::from_millis(1500)))
        .mount(&gh)
        .await;
    let (app, container) = storage_test_app(&azurite.connection, &gh).await;
    let event = model_event("credit-risk", "6", json!({"stage": "production"}));

    // Storage stops while the dispatch is in flight: GitHub accepts, the outcome cannot be written.
    let (first, ()) = tokio::join!(app.post_event(&event), async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        azurite.freeze();
    });
    assert_eq!(dispatches_received(&gh).await, 1);
    assert!(
        first.logs_text().contains("could not record"),
        "the unrecorded dispatch is said out loud: {}",
        first.raw
    );

    // Storage is back. After the claim timeout, Reconcile takes the claim over: with
    // repository_dispatch (no idempotency key) that is the documented single repeat.
    azurite.thaw();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pass = app.post_reconcile().await;
    assert_eq!(pass.status, 200, "{}", pass.raw);
    let record = ledger_record(&azurite.connection, &container, "credit-risk", "6").await;
    assert_eq!(record["state"], "dispatched", "never lost: {record}");
    let sent = dispatches_received(&gh).await;
    assert!(
        (1..=2).contains(&sent),
        "at most the one documented repeat, got {sent}"
    );

    // Later passes and redeliveries add nothing.
    app.post_reconcile().await;
    let redelivered = app.post_event(&event).await;
    assert_eq!(redelivered.decision(), "duplicate", "{}", redelivered.raw);
    assert_eq!(dispatches_received(&gh).await, sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_frozen_during_a_rollout_pauses_it_and_it_completes_after() {
    let azurite = OwnAzurite::start().await;
    let t = Direct::with_storage(azurite.connection.clone()).await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    let app = t.spawn(&t.config("credit-ep", FAST)).await;
    let first = app.post_event(&credit("2")).await;
    assert_eq!(first.decision(), "deploying", "{}", first.raw);

    // Storage stops mid-rollout: the timer's pass fails loudly and moves nothing.
    azurite.freeze();
    let before = t.arm.with(|s| s.requests.len());
    let pass = app.post_reconcile().await;
    assert!(pass.status >= 500, "{}", pass.raw);
    let traffic = t.arm.traffic("credit-ep");
    assert_eq!(traffic, [("blue".to_string(), 100)].into(), "{traffic:?}");
    let changes = t.arm.with(|s| {
        s.requests[before..]
            .iter()
            .filter(|r| !r.starts_with("GET "))
            .count()
    });
    assert_eq!(changes, 0, "no ARM change without a record of it");

    // Storage is back: the rollout picks up where its record says and completes.
    azurite.thaw();
    let record = t.reconcile_until(&app, "2", "succeeded").await;
    assert_eq!(record["state"], "succeeded");
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("credit-risk-2".to_string(), 100)].into()
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_stopping_between_a_traffic_change_and_its_record_never_strands_traffic() {
    let azurite = OwnAzurite::start().await;
    let t = Direct::with_storage(azurite.connection.clone()).await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    // ARM applies the first traffic update, and storage stops at that very moment, so the
    // rollout cannot record that it happened.
    let pid = azurite.child.id();
    t.arm.with(|s| {
        s.hook = Some(Hook {
            method: "PUT",
            path: PathMatch::EndsWith("/onlineEndpoints/credit-ep".into()),
            action: std::sync::Arc::new(move || send_signal(pid, "-STOP")),
            fired: false,
            skip: 0,
        })
    });
    let app = t.spawn(&t.config("credit-ep", FAST)).await;
    app.post_event(&credit("2")).await;

    let mut stopped_at_traffic = false;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let pass = app.post_reconcile().await;
        if t.arm.with(|s| s.hook.as_ref().is_some_and(|h| h.fired)) {
            assert!(
                pass.status >= 500 || pass.body["ReturnValue"]["errors"] == 1,
                "the unrecorded step is reported: {}",
                pass.raw
            );
            stopped_at_traffic = true;
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(
        stopped_at_traffic,
        "the rollout reached its first traffic update"
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());

    azurite.thaw();
    let record = t.reconcile_until(&app, "2", "succeeded").await;
    assert_eq!(record["state"], "succeeded");
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("credit-risk-2".to_string(), 100)].into()
    );
    assert_eq!(t.arm.deployment_names("credit-ep"), vec!["credit-risk-2"]);
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

/// The storage request a fault hits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StorageStep {
    /// The create-only write of a new version's record (`PUT` with `If-None-Match: *`): the claim.
    CreateRecord,
    /// The first conditional update of a record (`PUT` with `If-Match`): the dispatch's outcome,
    /// written after GitHub accepted.
    RecordOutcome,
}

impl StorageStep {
    fn matches(self, head: &str) -> bool {
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or("");
        let has = |name: &str| {
            head.lines().any(|l| {
                l.split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            })
        };
        request_line.starts_with("PUT ")
            // The SDK escapes the slashes of blob names; an outbox marker's name ends in the
            // record's, so only a path that starts with it at the container is the record.
            && (request_line.contains("/records%2F") || request_line.contains("/records/"))
            && match self {
                Self::CreateRecord => has("if-none-match"),
                Self::RecordOutcome => has("if-match"),
            }
    }
}

/// A loopback HTTP/1.1 front for Azurite that injects `fault` into the first `times` requests of
/// `step` and relays everything else (each request on a fresh upstream connection, so every request
/// is seen). A truncated answer is the realistic one for a write: the request reaches Azurite and is
/// applied, and the answer is cut off halfway.
struct FaultyStorage {
    connection: String,
    fired: Arc<AtomicUsize>,
}

impl FaultyStorage {
    async fn start(upstream: std::net::SocketAddr, step: StorageStep, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fired = Arc::new(AtomicUsize::new(0));
        let counter = fired.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(Self::serve(stream, upstream, step, fault, counter.clone()));
            }
        });
        Self {
            connection: azurite_at(port),
            fired,
        }
    }

    async fn serve(
        mut stream: TcpStream,
        upstream: std::net::SocketAddr,
        step: StorageStep,
        fault: Fault,
        fired: Arc<AtomicUsize>,
    ) {
        let mut buffer = Vec::new();
        loop {
            let Some((head, body)) = read_raw_request(&mut stream, &mut buffer).await else {
                return;
            };
            let inject = step.matches(&head) && fired.load(Ordering::SeqCst) < 2;
            if inject {
                fired.fetch_add(1, Ordering::SeqCst);
            }
            let answer = match (inject, fault) {
                (true, Fault::ServerError) => b"HTTP/1.1 503 Service Unavailable\r\nx-ms-error-code: ServerBusy\r\ncontent-length: 0\r\n\r\n".to_vec(),
                (true, Fault::TooManyRequests) => b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n".to_vec(),
                (true, Fault::Hang) => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                (true, Fault::ClosedConnection) => return,
                (true, Fault::TruncatedJson) => {
                    let answer = relay(upstream, &head, &body).await;
                    let _ = stream.write_all(&answer[..answer.len() / 2]).await;
                    return;
                }
                (false, _) => relay(upstream, &head, &body).await,
            };
            if answer.is_empty() || stream.write_all(&answer).await.is_err() {
                return;
            }
        }
    }
}

/// One request's head (request line and headers, without the blank line) and body.
pub(crate) async fn read_raw_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < header_end + 4 + length {
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = buffer[header_end + 4..header_end + 4 + length].to_vec();
    buffer.drain(..header_end + 4 + length);
    Some((head, body))
}

/// Sends one request to `upstream` with `Connection: close` and returns the whole answer.
pub(crate) async fn relay(upstream: std::net::SocketAddr, head: &str, body: &[u8]) -> Vec<u8> {
    let Ok(mut connection) = TcpStream::connect(upstream).await else {
        return Vec::new();
    };
    let mut request: String = head
        .lines()
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("connection"))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    request.push_str("Connection: close\r\n\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    if connection.write_all(&bytes).await.is_err() {
        return Vec::new();
    }
    let mut answer = Vec::new();
    let _ = connection.read_to_end(&mut answer).await;
    answer
}

/// The shared Azurite's blob address, from its connection string.
pub(crate) fn azurite_address() -> std::net::SocketAddr {
    let storage = azurite();
    let endpoint = storage
        .split(';')
        .find_map(|part| part.strip_prefix("BlobEndpoint="))
        .expect("BlobEndpoint in AUTODEPLOY_TEST_STORAGE");
    let authority = endpoint
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap();
    authority.parse().expect("a loopback address")
}

/// One storage cell: a version registered while `fault` hits `step` of the ledger, then storage
/// recovers. Event Grid's part is played too: a non-2xx answer is redelivered.
async fn storage_cell(step: StorageStep, fault: Fault, version: &str) -> Result<(), String> {
    let cell = format!("{step:?} × {fault:?}");
    let check = |ok: bool, what: &str, detail: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("{cell}: {what}: {detail}"))
        }
    };
    let storage = FaultyStorage::start(azurite_address(), step, fault).await;
    let gh = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(204))
        .mount(&gh)
        .await;
    let (app, container) = storage_test_app(&storage.connection, &gh).await;
    let event = model_event("credit-risk", version, json!({"stage": "production"}));

    let mut answer = app.post_event(&event).await;
    for _ in 0..3 {
        if answer.status == 200 {
            break;
        }
        check(
            answer.status >= 500,
            "a failure is a 5xx (Event Grid retries)",
            &answer.raw,
        )?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        answer = app.post_event(&event).await;
    }
    check(
        answer.status == 200,
        "answered 200 once storage recovers",
        &answer.raw,
    )?;
    check(
        storage.fired.load(Ordering::SeqCst) >= 1,
        "the fault was injected",
        "",
    )?;
    // Whatever was left over goes to Reconcile (claims time out after 2 s).
    let mut record = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_millis(6600);
    while Instant::now() < deadline {
        record = ledger_record(&azurite(), &container, "credit-risk", version).await;
        if record["state"] == "dispatched" {
            break;
        }
        tokio::time::sleep(POLL).await;
        let pass = app.post_reconcile().await;
        check(pass.status == 200, "reconcile answered 200", &pass.raw)?;
    }
    check(
        record["state"] == "dispatched",
        "never lost: the version ends dispatched",
        &record.to_string(),
    )?;
    let sent = dispatches_received(&gh).await;
    let allowed = match step {
        // GitHub accepted before the outcome could be written: the documented single repeat.
        StorageStep::RecordOutcome => 1..=2,
        StorageStep::CreateRecord => 1..=1,
    };
    check(allowed.contains(&sent), "dispatches", &format!("{sent}"))?;
    let redelivered = app.post_event(&event).await;
    check(
        redelivered.decision() == "duplicate",
        "a redelivery is a duplicate",
        &redelivered.raw,
    )?;
    check(
        dispatches_received(&gh).await == sent,
        "nothing more sent",
        "",
    )?;
    Ok(())
}

async fn run_storage_cells(step: StorageStep, first_version: u32) {
    let results = futures_util::future::join_all(FAULTS.iter().enumerate().map(|(i, fault)| {
        let version = (first_version + i as u32).to_string();
        async move { storage_cell(step, *fault, &version).await }
    }))
    .await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_at_the_record_create_acts_once_or_answers_5xx_for_a_redelivery() {
    run_storage_cells(StorageStep::CreateRecord, 100).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_writing_the_outcome_keeps_the_version_and_repeats_at_most_once() {
    run_storage_cells(StorageStep::RecordOutcome, 200).await;
}
