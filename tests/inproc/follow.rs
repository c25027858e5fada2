//! Following the GitHub run a dispatch started, in process: a fake run whose status the test moves
//! (queued → in_progress → waiting → completed), read conditionally (ETag / `If-None-Match`, 304
//! when unchanged), at most once per `Reconcile` pass, under a claim; found by its event id when
//! the dispatch had no run details; ended by its bounds; never dispatched again.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::*;

const RUNS: &str = "/repos/contoso/ml-deploy/actions/runs";

/// A workflow run on the fake GitHub: the test sets its status; every read is recorded with the
/// `If-None-Match` it carried, and answered 304 when that is the run's current ETag.
#[derive(Clone)]
struct FakeRun(Arc<Mutex<RunNow>>);

struct RunNow {
    id: u64,
    title: String,
    status: String,
    conclusion: Option<String>,
    /// Answers the next reads instead of the run (errors, junk), first first.
    script: Vec<ResponseTemplate>,
    /// The `If-None-Match` of every read, in order.
    reads: Vec<Option<String>>,
}

impl FakeRun {
    async fn mount(gh: &MockServer, id: u64, title: &str) -> FakeRun {
        let run = FakeRun(Arc::new(Mutex::new(RunNow {
            id,
            title: title.to_string(),
            status: "queued".into(),
            conclusion: None,
            script: Vec::new(),
            reads: Vec::new(),
        })));
        let shared = run.clone();
        Mock::given(method("GET"))
            .and(path(format!("{RUNS}/{id}")))
            .respond_with(move |request: &Request| shared.answer(request))
            .mount(gh)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("{RUNS}/{id}/jobs")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"total_count": 2, "jobs": [
                {"name": "lint", "status": "completed", "conclusion": "success", "steps": []},
                {"name": "deploy", "status": "completed", "conclusion": "failure",
                 "html_url": format!("https://github.com/contoso/ml-deploy/actions/runs/{id}/job/9"),
                 "steps": [
                    {"name": "Set up job", "conclusion": "success", "number": 1},
                    {"name": "Deploy azureml:fraud:12", "conclusion": "failure", "number": 5},
                    {"name": "Post azure/login", "conclusion": "skipped", "number": 6}
                 ]}
            ]})))
            .mount(gh)
            .await;
        run
    }

    fn json(&self) -> Value {
        let now = self.0.lock().unwrap();
        json!({
            "id": now.id, "name": "deploy-model", "display_title": now.title,
            "event": "workflow_dispatch", "status": now.status, "conclusion": now.conclusion,
            "html_url": format!("https://github.com/contoso/ml-deploy/actions/runs/{}", now.id),
            "run_attempt": 1, "created_at": "2026-11-26T10:00:05Z"
        })
    }

    fn etag(&self) -> String {
        let now = self.0.lock().unwrap();
        format!(
            "W/\"{}-{}\"",
            now.status,
            now.conclusion.as_deref().unwrap_or("none")
        )
    }

    fn answer(&self, request: &Request) -> ResponseTemplate {
        let asked = request
            .headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        {
            let mut now = self.0.lock().unwrap();
            now.reads.push(asked.clone());
            if !now.script.is_empty() {
                return now.script.remove(0);
            }
        }
        let etag = self.etag();
        if asked.as_deref() == Some(etag.as_str()) {
            return ResponseTemplate::new(304).insert_header("etag", etag.as_str());
        }
        ResponseTemplate::new(200)
            .insert_header("etag", etag.as_str())
            .set_body_json(self.json())
    }

    fn set(&self, status: &str, conclusion: Option<&str>) {
        let mut now = self.0.lock().unwrap();
        now.status = status.into();
        now.conclusion = conclusion.map(str::to_string);
    }

    fn script(&self, answers: Vec<ResponseTemplate>) {
        self.0.lock().unwrap().script = answers;
    }

    fn reads(&self) -> Vec<Option<String>> {
        self.0.lock().unwrap().reads.clone()
    }
}

/// The standard rules plus a raw notification target on the fake GitHub's `/hook`.
fn config_with_hook(gh: &MockServer, on: &str) -> String {
    format!(
        "{}notify: [{{url: '{}/hook', format: raw, on: [{on}]}}]\n",
        standard_config(),
        gh.uri()
    )
}

async fn hook_bodies(gh: &MockServer) -> Vec<Value> {
    gh.received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/hook")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

async fn github_gets(gh: &MockServer) -> usize {
    gh.received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .count()
}

/// `workflow_dispatch` answered with run details (run 42).
async fn dispatch_with_run_details(gh: &MockServer) {
    Mock::given(method("POST"))
        .and(path(
            "/repos/contoso/ml-deploy/actions/workflows/deploy.yml/dispatches",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "workflow_run_id": 42,
            "run_url": "https://api.github.com/repos/contoso/ml-deploy/actions/runs/42",
            "html_url": "https://github.com/contoso/ml-deploy/actions/runs/42"
        })))
        .expect(1)
        .mount(gh)
        .await;
}

fn fraud(version: &str) -> Value {
    model_event("fraud", version, json!({}))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_followed_to_its_failure_one_conditional_read_per_pass_and_announced_once() {
    let f = Fakes::start().await;
    dispatch_with_run_details(&f.gh).await;
    let run = FakeRun::mount(&f.gh, 42, "Deploy fraud:12 (event evt-fraud-12)").await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&f.gh)
        .await;
    let app = App::start(
        &f,
        &config_with_hook(&f.gh, "run_failed, run_succeeded"),
        &[],
    )
    .await;

    assert_eq!(app.post_event(&fraud("12")).await.decision(), "dispatched");
    let record = app.record("fraud", "12").await;
    assert_eq!(record["run"]["follow"], "polling", "{record:#}");
    assert_eq!(record["run"]["id"], 42);

    // (the run's status before the pass, what the pass shows)
    let steps = [
        ("queued", None, "queued"),
        ("queued", None, "queued"),
        ("in_progress", None, "running"),
        (
            "waiting",
            None,
            "waiting for reviewers (an environment's protection rules)",
        ),
        (
            "waiting",
            None,
            "waiting for reviewers (an environment's protection rules)",
        ),
        (
            "completed",
            Some("failure"),
            "failed (failure) at deploy › Deploy azureml:fraud:12",
        ),
    ];
    for (i, (status, conclusion, shown)) in steps.into_iter().enumerate() {
        run.set(status, conclusion);
        let pass = app.post_reconcile().await;
        assert_eq!(pass.body["ReturnValue"]["runsFollowed"], 1, "{}", pass.raw);
        assert_eq!(run.reads().len(), i + 1, "one read of the run per pass");
        let record = app.record("fraud", "12").await;
        let words = pass.logs_text();
        assert!(words.contains(shown), "pass {i}: {words}");
        assert_eq!(
            record["state"], "dispatched",
            "never anything but dispatched"
        );
    }
    // Conditional reads: the first without an ETag, each later one with the last ETag seen.
    assert_eq!(
        run.reads(),
        vec![
            None,
            Some("W/\"queued-none\"".to_string()),
            Some("W/\"queued-none\"".to_string()),
            Some("W/\"in_progress-none\"".to_string()),
            Some("W/\"waiting-none\"".to_string()),
            Some("W/\"waiting-none\"".to_string()),
        ]
    );
    // Ended: more passes read nothing.
    for _ in 0..3 {
        let pass = app.post_reconcile().await;
        assert_eq!(pass.body["ReturnValue"]["runsFollowed"], 0, "{}", pass.raw);
    }
    assert_eq!(run.reads().len(), 6);
    assert_eq!(dispatches_received(&f.gh).await, 1);

    let record = app.record("fraud", "12").await;
    let r = &record["run"];
    assert_eq!(r["follow"], "ended");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["conclusion"], "failure");
    assert_eq!(
        r["url"],
        "https://github.com/contoso/ml-deploy/actions/runs/42"
    );
    assert_eq!(r["attempt"], 1);
    assert_eq!(
        r["failed_jobs"],
        json!([{"name": "deploy", "conclusion": "failure",
                "url": "https://github.com/contoso/ml-deploy/actions/runs/42/job/9",
                "steps": ["Deploy azureml:fraud:12"]}])
    );
    assert_eq!(
        (r["requests"].as_u64(), r["unchanged"].as_u64()),
        (Some(7), Some(2))
    );
    assert!(r.get("claim").is_none(), "{r}");

    // Announced once, with the run's URL and the failing step.
    let sent = hook_bodies(&f.gh).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["outcome"], "run_failed");
    assert_eq!(
        sent[0]["run"]["failingStep"],
        "deploy › Deploy azureml:fraud:12"
    );
    let text = sent[0]["text"].as_str().unwrap();
    assert!(
        text.contains("https://github.com/contoso/ml-deploy/actions/runs/42")
            && text.contains("failed (failure) at deploy › Deploy azureml:fraud:12"),
        "{text}"
    );
    let notes = record["notifications"].as_array().unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["outcome"], "run_failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_dispatch_run_is_found_by_the_event_id_in_its_run_name() {
    let f = Fakes::expecting_dispatches(1).await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&f.gh)
        .await;
    // The list: other runs first; the one carrying this version's event id appears later.
    let listed = Arc::new(Mutex::new((false, Vec::<String>::new())));
    let shared = listed.clone();
    Mock::given(method("GET"))
        .and(path(RUNS))
        .respond_with(move |request: &Request| {
            let mut state = shared.lock().unwrap();
            state.1.push(request.url.query().unwrap_or_default().to_string());
            let mut runs = vec![
                json!({"id": 70, "display_title": "Deploy credit-risk:210 (event evt-credit-risk-210)", "status": "queued"}),
            ];
            if state.0 {
                runs.insert(0, json!({
                    "id": 77, "name": "deploy-model",
                    "display_title": "Deploy credit-risk:21 (event evt-credit-risk-21)",
                    "status": "completed", "conclusion": "success", "run_attempt": 2,
                    "html_url": "https://github.com/contoso/ml-deploy/actions/runs/77"
                }));
            }
            ResponseTemplate::new(200).set_body_json(json!({"total_count": runs.len(), "workflow_runs": runs}))
        })
        .mount(&f.gh)
        .await;
    let app = App::start(&f, &config_with_hook(&f.gh, "run_succeeded"), &[]).await;
    let event = model_event("credit-risk", "21", json!({"stage": "production"}));
    assert_eq!(app.post_event(&event).await.decision(), "dispatched");
    assert_eq!(
        app.record("credit-risk", "21").await["run"]["follow"],
        "finding"
    );

    app.post_reconcile().await;
    let record = app.record("credit-risk", "21").await;
    assert_eq!(
        record["run"]["follow"], "finding",
        "evt-credit-risk-210 is another run"
    );
    listed.lock().unwrap().0 = true;
    app.post_reconcile().await;

    let record = app.record("credit-risk", "21").await;
    assert_eq!(record["run"]["follow"], "ended", "{record:#}");
    assert_eq!(record["run"]["id"], 77);
    assert_eq!(record["run"]["conclusion"], "success");
    assert_eq!(record["run"]["attempt"], 2);
    let queries = listed.lock().unwrap().1.clone();
    assert_eq!(queries.len(), 2);
    assert!(
        queries.iter().all(
            |q| q.starts_with("event=repository_dispatch&created=%3E%3D")
                && q.ends_with("&per_page=100")
        ),
        "{queries:?}"
    );
    let sent = hook_bodies(&f.gh).await;
    assert_eq!(sent[0]["outcome"], "run_succeeded");
    app.post_reconcile().await;
    assert_eq!(
        listed.lock().unwrap().1.len(),
        2,
        "nothing read after the end"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn following_survives_github_errors_and_rate_limits_without_dispatching_again() {
    let f = Fakes::start().await;
    dispatch_with_run_details(&f.gh).await;
    let run = FakeRun::mount(&f.gh, 42, "Deploy fraud:13").await;
    let app = App::start(&f, &standard_config(), &[]).await;
    app.post_event(&fraud("13")).await;
    let reset = (time::OffsetDateTime::now_utc() + time::Duration::seconds(3)).unix_timestamp();
    run.script(vec![
        ResponseTemplate::new(503),
        // A gateway's page quoting the token: described, redacted.
        ResponseTemplate::new(200)
            .set_body_raw("<html>upstream said Bearer ghp_inproc</html>", "text/html"),
        // Huge: not read past the limit.
        ResponseTemplate::new(200).set_body_raw(
            format!(r#"{{"id": 42, "name": "{}"}}"#, "x".repeat(5 * 1024 * 1024)),
            "application/json",
        ),
        ResponseTemplate::new(403)
            .insert_header("x-ratelimit-remaining", "0")
            .insert_header("x-ratelimit-reset", reset.to_string().as_str())
            .set_body_json(json!({"message": "API rate limit exceeded"})),
    ]);

    app.post_reconcile().await;
    let record = app.record("fraud", "13").await;
    assert_eq!(record["run"]["problem"], "reading the run: HTTP 503");
    app.post_reconcile().await;
    let problem = app.record("fraud", "13").await["run"]["problem"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        problem.starts_with("the run: HTTP 200 with a text/html body: ")
            && problem.contains("Bearer [REDACTED]")
            && !problem.contains("ghp_inproc"),
        "{problem}"
    );
    app.post_reconcile().await;
    let problem = app.record("fraud", "13").await["run"]["problem"].clone();
    assert_eq!(
        problem,
        "the run: GitHub's answer is larger than 4 MiB, so it was not read"
    );
    app.post_reconcile().await;
    let record = app.record("fraud", "13").await;
    assert!(
        record["run"]["problem"]
            .as_str()
            .unwrap()
            .contains("rate limited"),
        "{record:#}"
    );
    assert_eq!(record["run"]["failures"], 4);
    // Until the reset, passes leave GitHub alone.
    let reads = run.reads().len();
    app.post_reconcile().await;
    assert_eq!(run.reads().len(), reads, "read again before the reset");
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    run.set("completed", Some("success"));
    app.post_reconcile().await;

    let record = app.record("fraud", "13").await;
    assert_eq!(record["run"]["conclusion"], "success", "{record:#}");
    assert!(
        record["run"].get("problem").is_none(),
        "cleared: {record:#}"
    );
    assert!(record["run"].get("failures").is_none());
    assert_eq!(record["state"], "dispatched");
    assert_eq!(dispatches_received(&f.gh).await, 1, "never sent again");
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_that_cannot_be_listed_are_a_configuration_problem_and_the_dispatch_still_counts() {
    let f = Fakes::expecting_dispatches(1).await;
    Mock::given(method("GET"))
        .and(path(RUNS))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(json!({"message": "Resource not accessible by integration"})),
        )
        .expect(1)
        .mount(&f.gh)
        .await;
    let app = App::start(&f, &standard_config(), &[]).await;
    let event = model_event("credit-risk", "22", json!({"stage": "production"}));
    app.post_event(&event).await;

    for _ in 0..3 {
        app.post_reconcile().await;
    }

    let record = app.record("credit-risk", "22").await;
    assert_eq!(record["state"], "dispatched");
    assert_eq!(record["run"]["follow"], "ended");
    assert_eq!(record["run"]["configuration_problem"], true);
    let reason = record["run"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("HTTP 403: Resource not accessible by integration")
            && reason.contains("Actions: read"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn following_ends_at_its_bounds_and_respects_another_passs_claim() {
    let f = Fakes::start().await;
    dispatch_with_run_details(&f.gh).await;
    let run = FakeRun::mount(&f.gh, 42, "Deploy fraud:14").await;
    let app = App::start(
        &f,
        &standard_config(),
        &[("AUTODEPLOY_CLAIM_TIMEOUT_SECS", "1")],
    )
    .await;
    app.post_event(&fraud("14")).await;

    // Another pass holds a fresh claim: this one leaves the run alone.
    let now = time::OffsetDateTime::now_utc();
    app.edit_record("fraud", "14", |r| {
        r.run.as_mut().unwrap().claim = Some(aml_autodeploy::ledger::Claim {
            attempt_id: "another-pass".into(),
            claimed_at: now,
        });
    })
    .await;
    app.post_reconcile().await;
    assert!(run.reads().is_empty(), "read under another pass's claim");
    // That pass died: once its claim is older than the claim timeout, the run is taken over.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let pass = app.post_reconcile().await;
    assert_eq!(run.reads().len(), 1, "{}", pass.raw);
    let record = app.record("fraud", "14").await;
    assert!(record["run"].get("claim").is_none(), "{record:#}");
    assert_eq!(record["run"]["status"], "queued");

    // github.follow_hours passed: ended without a request.
    app.edit_record("fraud", "14", |r| {
        let run = r.run.as_mut().unwrap();
        run.since -= time::Duration::hours(7);
        run.until -= time::Duration::hours(7);
    })
    .await;
    app.post_reconcile().await;
    assert_eq!(run.reads().len(), 1);
    let record = app.record("fraud", "14").await;
    assert_eq!(record["run"]["follow"], "ended");
    assert_eq!(
        record["run"]["reason"],
        "still queued after 6 h (github.follow_hours); no longer followed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_not_found_in_time_is_recorded_with_the_reason() {
    let f = Fakes::expecting_dispatches(1).await;
    Mock::given(method("GET"))
        .and(path(RUNS))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"total_count": 0, "workflow_runs": []})),
        )
        .mount(&f.gh)
        .await;
    let app = App::start(&f, &standard_config(), &[]).await;
    app.post_event(&model_event(
        "credit-risk",
        "23",
        json!({"stage": "production"}),
    ))
    .await;
    app.post_reconcile().await;
    assert_eq!(github_gets(&f.gh).await, 1);
    app.edit_record("credit-risk", "23", |r| {
        let run = r.run.as_mut().unwrap();
        run.since -= time::Duration::minutes(31);
    })
    .await;

    app.post_reconcile().await;

    assert_eq!(github_gets(&f.gh).await, 1, "ended without asking again");
    let record = app.record("credit-risk", "23").await;
    assert_eq!(record["run"]["follow"], "ended");
    assert_eq!(record["run"]["configuration_problem"], true);
    assert!(
        record["run"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("run not found within 30 min of the dispatch"),
        "{record:#}"
    );
    assert_eq!(record["state"], "dispatched");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_may_turn_following_off() {
    let f = Fakes::expecting_dispatches(1).await;
    let config = standard_config().replace(
        "github: { repository: contoso/ml-deploy, event_type: deploy-model }",
        "github: { repository: contoso/ml-deploy, event_type: deploy-model, follow: false }",
    );
    let app = App::start(&f, &config, &[]).await;
    app.post_event(&model_event(
        "credit-risk",
        "24",
        json!({"stage": "production"}),
    ))
    .await;
    for _ in 0..2 {
        app.post_reconcile().await;
    }
    let record = app.record("credit-risk", "24").await;
    assert_eq!(record["state"], "dispatched");
    assert!(record.get("run").is_none(), "{record:#}");
    assert_eq!(
        record["action"]["follow"],
        json!({"enabled": false, "hours": 6})
    );
    assert_eq!(github_gets(&f.gh).await, 0);
}
