//! `check-config`, `replay` and `--version`.

use serde_json::json;
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn check_config_accepts_the_bundled_example() {
    let dir = tempfile::tempdir().unwrap();
    let config = examples().join("autodeploy.yml");
    let (code, stdout, _) = run_cli(
        dir.path(),
        &["check-config", "--config", config.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("OK, 4 rule(s)"), "{stdout}");
}

#[test]
fn check_config_prints_every_problem_with_its_location_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("autodeploy.yml"),
        r#"
rules:
  - name: one
    models: ["credit-[*"]
    github: { repository: contoso, event_type: "deploy-{model}" }
  - name: two
    models: ["x"]
    tagz: { a: b }
"#,
    )
    .unwrap();
    // Default path: autodeploy.yml in the working directory.
    let (code, stdout, _) = run_cli(dir.path(), &["check-config"], &[]);
    assert_ne!(code, 0);
    for needle in [
        "autodeploy.yml: rules[0] (one).models[0]: bad glob",
        "autodeploy.yml: rules[0] (one).github.repository: \"contoso\" is not a GitHub repository",
        "autodeploy.yml: rules[0] (one).github.event_type: unknown placeholder {model}",
        "autodeploy.yml: rules[1] (two).tagz: unknown key `tagz`",
        "autodeploy.yml: rules[1] (two): rule has no action",
        "5 problem(s) found",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[test]
fn check_config_honours_autodeploy_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), "rules: []\n").unwrap();
    let (code, stdout, _) = run_cli(
        dir.path(),
        &["check-config"],
        &[("AUTODEPLOY_CONFIG", "rules.yml")],
    );
    assert_ne!(code, 0);
    assert!(stdout.contains("rules.yml: rules: is empty"), "{stdout}");
}

#[tokio::test]
async fn replay_dry_run_prints_the_request_and_sends_nothing() {
    let gh = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&gh)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = examples().join("autodeploy.yml");
    let event = examples().join("events/model-registered.eventgrid.json");
    let uri = gh.uri();

    let (code, stdout, stderr) = run_cli(
        dir.path(),
        &[
            "replay",
            event.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[
            ("GITHUB_API_URL", &uri),
            ("GITHUB_TOKEN", "ghp_replay_secret_value"),
        ],
    );

    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("\"decision\": \"dry_run\""), "{stdout}");
    assert!(
        stdout.contains(&format!("POST {uri}/repos/contoso/ml-deploy/dispatches")),
        "{stdout}"
    );
    assert!(
        stdout.contains("authorization: Bearer <redacted: GITHUB_TOKEN>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"modelId\": \"azureml:credit-risk:7\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains("ghp_replay_secret_value") && !stderr.contains("ghp_replay_secret_value")
    );
}

#[tokio::test]
async fn replay_reads_envelopes_arrays_and_cloudevents() {
    let dir = tempfile::tempdir().unwrap();
    let config = examples().join("autodeploy.yml");
    let array = dir.path().join("array.json");
    let sdk_sample = include_str!("../fixtures/model_registered.eventgrid.sdk-test.json");
    std::fs::write(&array, sdk_sample).unwrap();
    for (file, needle) in [
        (
            examples().join("events/host-envelope.json"),
            "model credit-risk version 8",
        ),
        (
            examples().join("events/model-registered.cloudevents.json"),
            "workflow_dispatch",
        ),
        (array, "model sklearn_regression_model version 3"),
    ] {
        let (code, stdout, stderr) = run_cli(
            dir.path(),
            &[
                "replay",
                file.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains(needle), "{file:?}: {stdout}");
    }
}

#[tokio::test]
async fn replay_execute_sends_the_request() {
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&gh)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = examples().join("autodeploy.yml");
    let event = examples().join("events/model-registered.eventgrid.json");
    let uri = gh.uri();

    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_cli(
            dir.path(),
            &[
                "replay",
                event.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--execute",
            ],
            &[("GITHUB_API_URL", &uri), ("GITHUB_TOKEN", "ghp_x")],
        )
    })
    .await
    .unwrap();

    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("GitHub accepted the dispatch: HTTP 204"),
        "{stdout}"
    );
    assert!(stdout.contains("\"decision\": \"dispatched\""), "{stdout}");
}

#[tokio::test]
async fn replay_execute_fails_when_github_refuses() {
    let gh = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
        .mount(&gh)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = examples().join("autodeploy.yml");
    let event = examples().join("events/model-registered.eventgrid.json");
    let uri = gh.uri();

    let (code, stdout, _) = tokio::task::spawn_blocking(move || {
        run_cli(
            dir.path(),
            &[
                "replay",
                event.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--execute",
            ],
            &[("GITHUB_API_URL", &uri), ("GITHUB_TOKEN", "ghp_x")],
        )
    })
    .await
    .unwrap();

    assert_ne!(code, 0);
    assert!(
        stdout.contains("FAILED: GitHub refused the request: HTTP 404"),
        "{stdout}"
    );
}

#[test]
fn version_flag_prints_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run_cli(dir.path(), &["--version"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(&format!("aml-autodeploy {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
}

#[tokio::test]
async fn replay_re_drives_an_event_grid_dead_letter_blob() {
    let dir = tempfile::tempdir().unwrap();
    let config = examples().join("autodeploy.yml");
    // A dead-letter blob: the event array with Event Grid's delivery fields added.
    let mut event: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples().join("events/model-registered.eventgrid.json"))
            .unwrap(),
    )
    .unwrap();
    event["deadLetterReason"] = json!("MaxDeliveryAttemptsExceeded");
    event["deliveryAttempts"] = json!(30);
    event["lastDeliveryOutcome"] = json!("Probation");
    event["publishTime"] = json!("2026-11-26T09:30:01Z");
    event["lastDeliveryAttemptTime"] = json!("2026-11-27T09:30:01Z");
    let blob = dir.path().join("deadletter.json");
    std::fs::write(&blob, json!([event]).to_string()).unwrap();

    let (code, stdout, stderr) = run_cli(
        dir.path(),
        &[
            "replay",
            blob.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );

    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("model credit-risk version 7"), "{stdout}");
    assert!(stdout.contains("\"decision\": \"dry_run\""), "{stdout}");
}
