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
    assert!(stdout.contains("OK, 5 rule(s)"), "{stdout}");
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

/// A config folder `config/` under a new folder, with a secret file beside it (outside) and
/// `files` inside; the rules file is `rules` in `config/autodeploy.yml`.
fn config_beside_a_secret(rules: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("secret.json"),
        "{\"SECRET_CONTENT\": \"do not print\"}",
    )
    .unwrap();
    std::fs::write(
        root.path().join("secret.yml"),
        "SECRET_CONTENT: do not print\n",
    )
    .unwrap();
    let config = root.path().join("config");
    for (path, text) in files {
        let path = config.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(config.join("autodeploy.yml"), rules).unwrap();
    root
}

const INSIDE_DEPLOYMENT: &str = "instance_type: Standard_DS3_v2\n";

#[test]
fn check_config_refuses_references_outside_its_folder_naming_the_key_and_never_their_content() {
    let absolute = std::env::temp_dir().join("secret.yml");
    // (deployment, smoke-test request, the deployment YAML's tail, the line expected)
    let cases = [
        (
            "../secret.yml".to_string(),
            "request.json",
            "",
            "rules[0] (direct).azureml.deployment: \"../secret.yml\" is outside the config file's folder",
        ),
        (
            "deployment.yml".to_string(),
            "requests/../../secret.json",
            "",
            "rules[0] (direct).azureml.smoke_test.request: \"requests/../../secret.json\" is outside",
        ),
        (
            absolute.display().to_string(),
            "request.json",
            "",
            "rules[0] (direct).azureml.deployment: ",
        ),
        (
            "deployment.yml".to_string(),
            "request.json",
            "environment: { image: mcr.microsoft.com/x, conda_file: ../secret.yml }\n",
            "rules[0] (direct).azureml.deployment: ",
        ),
    ];
    for (deployment, request, tail, line) in cases {
        let rules = format!(
            "rules:\n  - name: direct\n    models: [m]\n    azureml:\n      endpoint: fraud-ep\n      deployment: {deployment}\n      smoke_test: {{ request: {request} }}\n"
        );
        let dir = config_beside_a_secret(
            &rules,
            &[
                ("deployment.yml", &format!("{INSIDE_DEPLOYMENT}{tail}")),
                ("request.json", "{}"),
            ],
        );
        let config = dir.path().join("config");
        for args in [&["check-config"][..], &["check-config", "--list-files"]] {
            let (code, out, err) = run_cli(&config, args, &[]);
            assert_ne!(code, 0, "{args:?} {rules}: accepted:\n{out}");
            let said = format!("{out}{err}");
            assert!(
                said.contains(line),
                "{args:?}: missing {line:?} in:\n{said}"
            );
            assert!(
                said.contains("outside") || said.contains("absolute path"),
                "{said}"
            );
            assert!(!said.contains("SECRET_CONTENT"), "content printed:\n{said}");
            // A listed file is a bare path; problems name the key first.
            assert!(
                !out.lines()
                    .any(|l| l.contains("secret") && !l.contains(": ")),
                "listed:\n{out}"
            );
        }
    }
}

#[cfg(unix)]
#[test]
fn check_config_follows_symlinks_before_deciding_a_file_is_inside() {
    let rules = "rules:\n  - name: direct\n    models: [m]\n    azureml:\n      endpoint: fraud-ep\n      deployment: deployment.yml\n      smoke_test: { request: request.json }\n";
    let dir = config_beside_a_secret(rules, &[("deployment.yml", INSIDE_DEPLOYMENT)]);
    let config = dir.path().join("config");
    std::os::unix::fs::symlink(dir.path().join("secret.json"), config.join("request.json"))
        .unwrap();
    let (code, out, _) = run_cli(&config, &["check-config"], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("rules[0] (direct).azureml.smoke_test.request: \"request.json\" is outside"),
        "{out}"
    );
    assert!(!out.contains("SECRET_CONTENT"), "{out}");
}

#[test]
fn check_config_refuses_an_event_type_that_always_renders_past_100_characters_and_warns_when_it_may()
 {
    let dir = tempfile::tempdir().unwrap();
    let config = |event_type: &str| {
        std::fs::write(
            dir.path().join("autodeploy.yml"),
            format!("rules:\n  - name: a\n    models: ['*']\n    github: {{ repository: o/r, event_type: '{event_type}' }}\n"),
        )
        .unwrap();
        run_cli(dir.path(), &["check-config"], &[])
    };

    let (code, out, _) = config("deploy-{workspace}");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("rules[0] (a).github.event_type: always renders at least 134 characters; GitHub limits event_type to 100"),
        "{out}"
    );

    let (code, out, _) = config("deploy-{modelName}");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: autodeploy.yml: rules[0] (a).github.event_type: can render more than 100 characters"),
        "{out}"
    );
}

#[test]
fn check_config_says_github_enterprise_server_accepts_at_most_10_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<String> = (0..11).map(|i| format!("i{i}: v")).collect();
    std::fs::write(
        dir.path().join("autodeploy.yml"),
        format!(
            "rules:\n  - name: a\n    models: ['*']\n    github: {{ repository: o/r, workflow: d.yml, inputs: {{ {} }} }}\n",
            inputs.join(", ")
        ),
    )
    .unwrap();
    let (code, out, _) = run_cli(dir.path(), &["check-config"], &[]);
    assert_eq!(code, 0, "github.com accepts 11: {out}");
    let ghes = [("GITHUB_API_URL", "https://github.example.com/api/v3")];
    let (code, out, _) = run_cli(dir.path(), &["check-config"], &ghes);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("rules[0] (a).github.inputs: 11 inputs; GitHub Enterprise Server (GITHUB_API_URL https://github.example.com/api/v3) accepts at most 10"),
        "{out}"
    );
}
