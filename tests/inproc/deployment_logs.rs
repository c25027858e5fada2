//! A failed direct deployment's logs (`rollout.logs`): read through ARM's `getLogs` before the
//! deployment is deleted, kept bounded and redacted, quoted in the failure notification; a logs
//! call that fails is noted and changes nothing in the rollback.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::rollout::{Direct, FAST, credit};

/// A log of `n` lines ending in a traceback that quotes the GitHub token, with terminal escapes.
fn crashing_log(n: usize) -> String {
    let mut lines: Vec<String> = (1..=n).map(|i| format!("INFO line {i}")).collect();
    lines.extend([
        "\u{1b}[31mTraceback (most recent call last):\u{1b}[0m".to_string(),
        "  File \"/var/azureml-app/score.py\", line 12, in init".to_string(),
        "    token = 'ghp_inproc'".to_string(),
        "ModuleNotFoundError: No module named 'sklearn'".to_string(),
    ]);
    lines.join("\n")
}

fn request_index(t: &Direct, what: &str) -> usize {
    t.arm
        .with(|s| s.requests.iter().position(|r| r.contains(what)))
        .unwrap_or_else(|| panic!("no request {what}"))
}

/// The container entry of `record`'s logs for `container`.
fn container<'a>(record: &'a Value, container: &str) -> &'a Value {
    record["rollout"]["logs"]["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("no logs: {record:#}"))
        .iter()
        .find(|c| c["container"] == container)
        .unwrap_or_else(|| panic!("no {container} logs: {record:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_failed_deployments_logs_are_read_before_it_is_deleted_bounded_and_redacted() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.with(|s| {
        s.fail_next_create = Some((
            "ResourceNotReady".into(),
            "User container has crashed or terminated".into(),
        ));
        s.logs.insert(
            ("credit-risk-3".into(), "InferenceServer".into()),
            crashing_log(400),
        );
    });
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&t.gh)
        .await;
    let config = format!(
        "{}notify: [{{url: '{}/hook', format: slack, on: [rolled_back]}}]\n",
        t.config("credit-ep", FAST),
        t.gh.uri()
    );
    let app = t.spawn(&config).await;

    app.post_event(&credit("3")).await;
    let record = t.reconcile_until(&app, "3", "rolled_back").await;

    // Read before the delete, and only the inference server (the failure is not a download).
    assert!(
        request_index(&t, "/credit-risk-3/getLogs") < request_index(&t, "DELETE"),
        "{:?}",
        t.arm.with(|s| s.requests.clone())
    );
    let asked = t.arm.with(|s| s.log_requests.clone());
    assert_eq!(
        asked,
        vec![(
            "credit-risk-3".to_string(),
            json!({"containerType": "InferenceServer", "tail": 200})
        )]
    );
    assert_eq!(t.arm.deployment_names("credit-ep"), vec!["blue"]);
    let server = container(&record, "InferenceServer");
    let lines: Vec<&str> = server["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 200, "the service's tail, kept whole");
    assert_eq!(
        *lines.last().unwrap(),
        "ModuleNotFoundError: No module named 'sklearn'"
    );
    let text = record["rollout"]["logs"].to_string();
    assert!(!text.contains("ghp_inproc"), "{text}");
    assert!(text.contains("token = '[REDACTED]'"), "{text}");
    assert!(!text.contains('\u{1b}'), "no terminal escapes kept: {text}");
    assert!(lines.contains(&"Traceback (most recent call last):"));
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());

    // The failure notification quotes the last lines as a code block.
    let sent =
        t.gh.received_requests()
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.url.path() == "/hook")
            .expect("the notification");
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    let block = body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .find(|t| t.starts_with("```"))
        .unwrap_or_else(|| panic!("no code block in {body:#}"));
    assert!(
        block.contains("InferenceServer: last 20 of 200 lines")
            && block.contains("No module named 'sklearn'")
            && !block.contains("INFO line 370"),
        "{block}"
    );
    assert!(!sent.body.windows(10).any(|w| w == b"ghp_inproc"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_failure_reads_the_storage_initializer_too_and_a_refused_logs_call_changes_nothing()
 {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    t.arm.with(|s| {
        s.fail_next_create = Some((
            "ModelDownloadFailed".into(),
            "Failed to download the model from the workspace's storage".into(),
        ));
        s.logs_override = Some((
            403,
            "application/json",
            br#"{"error": {"code": "AuthorizationFailed", "message": "no read access to deployment logs"}}"#.to_vec(),
        ));
    });
    let app = t.spawn(&t.config("credit-ep", FAST)).await;

    app.post_event(&credit("5")).await;
    let record = t.reconcile_until(&app, "5", "rolled_back").await;

    let asked: Vec<String> = t.arm.with(|s| {
        s.log_requests
            .iter()
            .map(|(_, b)| b["containerType"].as_str().unwrap().to_string())
            .collect()
    });
    assert_eq!(asked, ["InferenceServer", "StorageInitializer"]);
    for name in ["InferenceServer", "StorageInitializer"] {
        let problem = container(&record, name)["problem"].as_str().unwrap();
        assert!(
            problem.contains("HTTP 403 AuthorizationFailed: no read access to deployment logs"),
            "{problem}"
        );
    }
    // The rollback went on as without logs.
    assert_eq!(
        t.arm.traffic("credit-ep"),
        [("blue".to_string(), 100)].into()
    );
    assert_eq!(t.arm.deployment_names("credit-ep"), vec!["blue"]);
    assert_eq!(record["rollout"]["phase"], "rolled_back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logs_answer_that_is_huge_or_not_json_is_described_not_kept() {
    for (version, body, content_type, says) in [
        (
            "6",
            format!(r#"{{"content": "{}"}}"#, "x".repeat(2 * 1024 * 1024)).into_bytes(),
            "application/json",
            "larger than 1048576 bytes",
        ),
        (
            "7",
            b"<html>gateway says ghp_inproc</html>".to_vec(),
            "text/html",
            "unreadable body",
        ),
    ] {
        let t = Direct::new().await;
        t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
        t.arm.with(|s| {
            s.fail_next_create = Some(("ResourceNotReady".into(), "crashed".into()));
            s.logs_override = Some((200, content_type, body.clone()));
        });
        let app = t
            .spawn_with(
                &t.config("credit-ep", FAST),
                &[("AUTODEPLOY_RETRY_BUDGET_SECS", "0.5")],
            )
            .await;

        app.post_event(&credit(version)).await;
        let record = t.reconcile_until(&app, version, "rolled_back").await;

        let server = container(&record, "InferenceServer");
        let problem = server["problem"].as_str().unwrap();
        assert!(problem.contains(says), "{version}: {problem}");
        assert!(server.get("lines").is_none(), "{server}");
        assert!(!record.to_string().contains("ghp_inproc"));
        assert!(record.to_string().len() < 64 * 1024);
        assert_eq!(t.arm.deployment_names("credit-ep"), vec!["blue"]);
    }
}
