//! How stories end, through the real binary with the ledger in Azurite: a failed deployment's
//! last log lines in `status MODEL:VERSION` and `--watch`; a dispatched GitHub run followed by
//! `Reconcile` across a restart and GitHub errors, and shown by `status` and `--watch`.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::azureml::{Direct, FAST, cli, credit};
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_deployments_last_log_lines_show_in_status_and_watch() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    let mut log: Vec<String> = (1..=56).map(|i| format!("INFO worker {i}")).collect();
    log.extend([
        "\u{1b}[31mTraceback (most recent call last):\u{1b}[0m\u{1b}]0;pwned\u{7}".into(),
        "  File \"/var/azureml-app/score.py\", line 7, in init".into(),
        "    model = joblib.load(path)".into(),
        "FileNotFoundError: [Errno 2] No such file or directory: 'model/model.pkl'".into(),
    ]);
    t.arm.with(|s| {
        s.fail_next_create = Some((
            "ResourceNotReady".into(),
            "User container has crashed or terminated".into(),
        ));
        s.logs.insert(
            ("credit-risk-41".into(), "InferenceServer".into()),
            log.join("\n"),
        );
    });
    let app = t.spawn(&t.config("credit-ep", FAST)).await;
    app.post_event(&credit("41")).await;
    t.reconcile_until(&app, "41", "rolled_back").await;

    let (code, out, err) = cli(&t, &["status", "credit-risk:41"]);
    assert_eq!(code, 0, "{out}{err}");
    for expected in [
        "credit-risk:41 · rolled_back · rule credit-direct",
        "ARM operation Failed: ResourceNotReady: User container has crashed or terminated",
        "logs of credit-risk-41 (read ",
        "InferenceServer: last 20 of 60 lines",
        "Traceback (most recent call last):",
        "FileNotFoundError: [Errno 2] No such file or directory: 'model/model.pkl'",
        "(the whole record: status credit-risk:41 --json)",
    ] {
        assert!(out.contains(expected), "{expected:?} missing in:\n{out}");
    }
    assert!(
        !out.contains("INFO worker 40"),
        "the last lines only:\n{out}"
    );
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");

    let (code, json_out, _) = cli(&t, &["status", "credit-risk:41", "--json"]);
    assert_eq!(code, 0);
    let record: Value = serde_json::from_str(&json_out).unwrap();
    let lines = record["rollout"]["logs"]["containers"][0]["lines"]
        .as_array()
        .unwrap();
    assert_eq!(lines.len(), 60, "all of it in --json");
    assert_eq!(lines[0], "INFO worker 1");

    let (code, watched, _) = cli(
        &t,
        &["status", "credit-risk:41", "--watch", "--interval", "1"],
    );
    assert_eq!(code, 1, "rolled back: {watched}");
    assert!(
        watched.contains("phase rolled_back") && watched.contains("FileNotFoundError"),
        "{watched}"
    );
}

/// A run on the fake GitHub: its status set by the test, read conditionally, and a number of
/// reads answered 503 (GitHub down).
#[derive(Clone, Default)]
struct Run(Arc<Mutex<RunNow>>);

#[derive(Default)]
struct RunNow {
    status: String,
    conclusion: Option<String>,
    failing_reads: u32,
    reads: usize,
}

impl Run {
    fn set(&self, status: &str, conclusion: Option<&str>) {
        let mut now = self.0.lock().unwrap();
        now.status = status.into();
        now.conclusion = conclusion.map(str::to_string);
    }

    fn fail_next(&self, reads: u32) {
        self.0.lock().unwrap().failing_reads = reads;
    }

    fn reads(&self) -> usize {
        self.0.lock().unwrap().reads
    }

    fn answer(&self, request: &Request) -> ResponseTemplate {
        let mut now = self.0.lock().unwrap();
        now.reads += 1;
        if now.failing_reads > 0 {
            now.failing_reads -= 1;
            return ResponseTemplate::new(503).set_body_string("unicorn");
        }
        let etag = format!("\"{}-{:?}\"", now.status, now.conclusion);
        if request
            .headers
            .get("if-none-match")
            .is_some_and(|v| v.to_str().ok() == Some(etag.as_str()))
        {
            return ResponseTemplate::new(304).insert_header("etag", etag.as_str());
        }
        ResponseTemplate::new(200)
            .insert_header("etag", etag.as_str())
            .set_body_json(json!({
                "id": 4242, "name": "deploy-model", "display_title": "Deploy fraud:51 (event evt-fraud-51)",
                "status": now.status, "conclusion": now.conclusion, "run_attempt": 1,
                "html_url": "https://github.com/contoso/ml-deploy/actions/runs/4242"
            }))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dispatched_run_is_followed_across_a_restart_and_github_errors_and_status_shows_its_end()
{
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/repos/contoso/ml-deploy/actions/workflows/deploy.yml/dispatches",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "workflow_run_id": 4242,
            "html_url": "https://github.com/contoso/ml-deploy/actions/runs/4242"
        })))
        .expect(1)
        .mount(&gh)
        .await;
    let run = Run::default();
    run.set("queued", None);
    let answers = run.clone();
    Mock::given(method("GET"))
        .and(path("/repos/contoso/ml-deploy/actions/runs/4242"))
        .respond_with(move |request: &Request| answers.answer(request))
        .mount(&gh)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/contoso/ml-deploy/actions/runs/4242/jobs"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jobs": [
            {"name": "deploy", "conclusion": "failure", "steps": [
                {"name": "Deploy azureml:fraud:51", "conclusion": "failure"}
            ]}
        ]})))
        .expect(1)
        .mount(&gh)
        .await;
    let (storage, container, uri) = (azurite(), unique_container(), gh.uri());
    let env = [
        ("GITHUB_API_URL", uri.as_str()),
        ("GITHUB_TOKEN", "ghp_stories_token"),
        ("AUTODEPLOY_STORAGE", storage.as_str()),
        ("AUTODEPLOY_CONTAINER", container.as_str()),
        ("AUTODEPLOY_RETRY_FIRST_DELAY_SECS", "0"),
    ];
    let status = |args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec!["status", "--storage", storage.as_str()];
        all.extend_from_slice(args);
        tokio::task::block_in_place(|| {
            run_cli(
                dir.path(),
                &all,
                &[("AUTODEPLOY_CONTAINER", container.as_str())],
            )
        })
    };
    let record = || ledger_record(&storage, &container, "fraud", "51");

    let mut app = TestApp::spawn(&standard_config(), &env).await;
    let reply = app.post_event(&model_event("fraud", "51", json!({}))).await;
    assert_eq!(reply.decision(), "dispatched", "{}", reply.raw);
    app.post_reconcile().await;
    let (_, out, _) = status(&["fraud:51"]);
    assert!(
        out.contains("run: https://github.com/contoso/ml-deploy/actions/runs/4242 · queued"),
        "{out}"
    );

    // A restart, and GitHub down for a pass: following resumes from the ledger.
    app.kill();
    let app = TestApp::spawn(&standard_config(), &env).await;
    run.fail_next(1);
    let pass = app.post_reconcile().await;
    assert_eq!(pass.status, 200, "{}", pass.raw);
    assert_eq!(
        record().await["run"]["problem"],
        "reading the run: HTTP 503"
    );
    run.set("in_progress", None);
    app.post_reconcile().await;
    assert_eq!(record().await["run"]["status"], "in_progress");
    run.set("completed", Some("failure"));
    app.post_reconcile().await;
    let reads = run.reads();
    app.post_reconcile().await;
    assert_eq!(run.reads(), reads, "nothing read after the end");

    let stored = record().await;
    assert_eq!(stored["state"], "dispatched");
    assert_eq!(stored["run"]["conclusion"], "failure");
    assert_eq!(dispatches_received(&gh).await, 1, "never sent again");
    let (code, table, _) = status(&[]);
    assert_eq!(code, 0);
    assert!(
        table.contains(
            "run https://github.com/contoso/ml-deploy/actions/runs/4242: failed (failure) at deploy › Deploy azureml:fraud:51"
        ),
        "{table}"
    );
    let (code, out, _) = status(&["fraud:51"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("failed job: deploy (failure): Deploy azureml:fraud:51"),
        "{out}"
    );
    let (code, watched, _) = status(&["fraud:51", "--watch", "--interval", "1"]);
    assert_eq!(code, 1, "the run failed: {watched}");
    assert!(watched.contains("GitHub run · completed"), "{watched}");
    assert!(!format!("{table}{out}{watched}").contains("ghp_stories_token"));
}
