//! `az ml` deployment YAMLs with local code, inline environments, `@latest` labels and data
//! collectors, deployed through the host contract: the fake ARM registers assets, Azurite (behind
//! a recording proxy) plays the pending upload's container, and the requests must equal what the
//! official SDK computes for the same YAML (`tests/fixtures/azml/**/*.golden.json`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::azureml::{Direct, FAST};
use crate::events::{WS, model_event};
use crate::fake_assets::{Azurite, UploadProxy, container_for};
use crate::helpers::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azml")
}

fn golden(relative: &str) -> Value {
    let path = fixtures().join(format!("{relative}.golden.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Copies a fixture case folder into a temporary folder (so tests never write beside the
/// fixtures) and returns the rules text for that folder (start it with `Direct::spawn_in`), one
/// rule per (model, YAML, rule extras).
fn layout(case: &str, rules: &[(&str, &str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join(case), dir.path());
    let mut config = format!("workspace: {WS}\nrules:\n");
    for (model, yaml, extra) in rules {
        config.push_str(&format!(
            "  - name: {model}-rule\n    models: [\"{model}\"]\n    azureml:\n      endpoint: fraud-ep\n      deployment: {yaml}\n      rollout: {FAST}\n{extra}"
        ));
    }
    (dir, config)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The seed layout (`aml_yamls/`), with one rule for `fraud-model`, in a temporary folder.
pub(crate) fn seed() -> (tempfile::TempDir, String) {
    layout(
        "seed",
        &[(
            "fraud-model",
            "aml_yamls/managed_endpoint_deployment.yml",
            "",
        )],
    )
}

/// A direct-deployment harness whose fake ARM hands out pending uploads in Azurite, behind
/// the recording proxy.
pub(crate) async fn with_uploads() -> (Direct, Azurite, UploadProxy) {
    let t = Direct::new().await;
    let azurite = Azurite::from_connection_string(&azurite());
    let proxy = UploadProxy::start(&azurite).await;
    let sas = azurite.account_sas();
    t.arm.with(|s| {
        s.assets.uploads = Some((proxy.blob_endpoint.clone(), sas));
        s.check_asset_references = true;
    });
    t.arm.add_endpoint("fraud-ep", &[("blue", "1", 100)]);
    (t, azurite, proxy)
}

/// Replaces the golden's placeholders with what this run registered.
fn expected(template: &Value, replacements: &[(&str, &str)]) -> Value {
    let mut text = template.to_string();
    for (from, to) in replacements {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_layout_deploys_with_the_requests_az_ml_sends() {
    let (t, azurite, proxy) = with_uploads().await;
    let (dir, config) = seed();
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    let reply = app
        .post_event(&model_event("fraud-model", "7", json!({})))
        .await;
    assert_eq!(reply.decision(), "deploying", "{}", reply.raw);
    // The invocation registered nothing: uploads are Reconcile's work.
    assert!(t.arm.with(|s| s.assets.calls.is_empty()));
    assert_eq!(
        t.record_of("fraud-model", "7").await["rollout"]["phase"],
        "preparing_assets"
    );

    let record = t
        .reconcile_model_until(&app, "fraud-model", "7", "succeeded")
        .await;
    let golden = golden("seed/aml_yamls/managed_endpoint_deployment.yml");
    let code = &golden["code"];
    let environment = &golden["environment"];

    let (lookups, starts, code_puts, env_puts) = t.arm.with(|s| {
        (
            s.assets.calls_to("GET", "codes/"),
            s.assets.calls_to("POST", "startPendingUpload"),
            s.assets.calls_to("PUT", "codes/"),
            s.assets.calls_to("PUT", "environments/"),
        )
    });
    // The lookup by content hash, under the fresh name az ml would use.
    assert_eq!(lookups.len(), 1);
    let name = lookups[0].path.split('/').nth(1).unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&name).is_ok(), "a UUID name: {name}");
    assert_eq!(
        lookups[0].query,
        format!(
            "api-version=2025-12-01&hash={}&hashVersion=202208",
            code["hash"].as_str().unwrap()
        )
    );
    assert_eq!(starts.len(), 1);
    assert_eq!(
        starts[0].path,
        format!("codes/{name}/versions/1/startPendingUpload")
    );
    // With our own pendingUploadId (recorded first), so a later step gets the same container.
    let pending_id = record["rollout"]["assets"]["pending_upload_id"]
        .as_str()
        .expect("pending_upload_id recorded");
    assert_eq!(
        starts[0].body,
        json!({"pendingUploadType": "TemporaryBlobReference", "pendingUploadId": pending_id})
    );

    // The uploaded blobs: names, bytes, and the completion marker on the indicator.
    let container = container_for(&name);
    assert_eq!(
        azurite.list(&container).await,
        string_list(&code["blob_names"])
    );
    for file in code["files"].as_array().unwrap() {
        let relative = file["path"].as_str().unwrap();
        let (bytes, _) = azurite
            .blob(&container, &format!("scripts/{relative}"))
            .await;
        let local = fixtures().join("seed/aml_yamls/scripts").join(relative);
        assert_eq!(bytes, std::fs::read(local).unwrap(), "{relative}");
    }
    let (_, marker) = azurite
        .blob(&container, code["indicator_blob"].as_str().unwrap())
        .await;
    assert_eq!(
        marker.get("upload_status").map(String::as_str),
        Some("completed")
    );
    assert_eq!(marker.get("name"), Some(&name));
    assert_eq!(marker.get("version").map(String::as_str), Some("1"));
    // The SAS was the only authorization the storage account saw.
    proxy
        .state
        .lock()
        .unwrap()
        .authorized
        .is_empty()
        .then_some(())
        .expect("no Authorization header may reach the pending upload's storage");

    // The code and environment versions, as az ml PUTs them.
    let blob_uri = format!("{}/{container}", proxy.blob_endpoint);
    assert_eq!(code_puts.len(), 1);
    assert_eq!(code_puts[0].path, format!("codes/{name}/versions/1"));
    assert_eq!(
        code_puts[0].body,
        expected(&code["version_body"], &[("{blobUri}", &blob_uri)])
    );
    let version = environment["version"].as_str().unwrap();
    assert_eq!(env_puts.len(), 1);
    assert_eq!(
        env_puts[0].path,
        format!("environments/CliV2AnonymousEnvironment/versions/{version}")
    );
    assert_eq!(env_puts[0].body, environment["body"]);

    // The deployment, referencing exactly those (the fake refuses unregistered references).
    let code_id = format!("{WS}/codes/{name}/versions/1");
    let environment_id = format!("{WS}/environments/CliV2AnonymousEnvironment/versions/{version}");
    let body = t.arm.with(|s| s.deployment_puts[0].clone());
    assert_eq!(
        body,
        expected(
            &golden["deployment_body"],
            &[
                ("{codeId}", &code_id),
                ("{environmentId}", &environment_id),
                ("eastus", "westeurope"),
                ("fraud-model/versions/7", "fraud-model/versions/7"),
            ]
        )
    );
    assert_eq!(record["rollout"]["assets"]["code_id"], json!(code_id));
    assert_eq!(
        record["rollout"]["assets"]["environment_id"],
        json!(environment_id)
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

fn string_list(value: &Value) -> Vec<String> {
    let mut list: Vec<String> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    list.sort();
    list
}

#[tokio::test(flavor = "multi_thread")]
async fn a_code_version_with_the_same_hash_is_reused_and_nothing_is_uploaded() {
    let (t, _azurite, proxy) = with_uploads().await;
    let golden = golden("seed/aml_yamls/managed_endpoint_deployment.yml");
    let existing = format!("{WS}/codes/earlier-upload/versions/1");
    t.arm.with(|s| {
        s.assets.codes.insert(
            ("earlier-upload".into(), "1".into()),
            json!({"id": existing, "name": "1", "properties": {
                "codeUri": "https://acct.blob.core.windows.net/c/scripts", "isAnonymous": true,
                "properties": {"hash_sha256": golden["code"]["hash"], "hash_version": 202208}}}),
        );
    });
    let (dir, config) = seed();
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    app.post_event(&model_event("fraud-model", "8", json!({})))
        .await;
    t.reconcile_model_until(&app, "fraud-model", "8", "succeeded")
        .await;

    assert!(
        t.arm
            .with(|s| s.assets.calls_to("POST", "startPendingUpload").is_empty())
    );
    assert!(
        t.arm
            .with(|s| s.assets.calls_to("PUT", "codes/").is_empty())
    );
    assert!(
        proxy.state.lock().unwrap().requests.is_empty(),
        "nothing uploaded"
    );
    let body = t.arm.with(|s| s.deployment_puts[0].clone());
    assert_eq!(
        body["properties"]["codeConfiguration"]["codeId"],
        json!(existing)
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_cut_off_midway_is_resumed_never_registered_half_done() {
    let (t, azurite, proxy) = with_uploads().await;
    let (dir, config) = seed();
    // Five files, so the upload can stop in the middle.
    let scripts = dir.path().join("aml_yamls/scripts");
    for n in 1..=4 {
        std::fs::write(
            scripts.join(format!("helper_{n}.py")),
            format!("VALUE = {n}\n"),
        )
        .unwrap();
    }
    proxy.state.lock().unwrap().fail_after_puts = Some(2);
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    app.post_event(&model_event("fraud-model", "9", json!({})))
        .await;

    // The storage account goes away after two files: the phase is retried, nothing registered.
    let pass = app.post_reconcile().await;
    assert_eq!(pass.status, 200, "{}", pass.raw);
    let record = t.record_of("fraud-model", "9").await;
    assert_eq!(record["rollout"]["phase"], "preparing_assets", "{record:#}");
    assert_eq!(record["rollout"]["assets"]["upload_complete"], false);
    assert!(
        t.arm
            .with(|s| s.assets.calls_to("PUT", "codes/").is_empty())
    );
    assert!(t.arm.with(|s| s.deployment_puts.is_empty()));
    let name = record["rollout"]["assets"]["code_name"]
        .as_str()
        .unwrap()
        .to_string();
    let container = container_for(&name);
    let partial = azurite.list(&container).await;
    assert_eq!(partial.len(), 2, "{partial:?}");

    // Back again: the rest is uploaded (each file once), marked, then registered.
    proxy.state.lock().unwrap().fail_after_puts = None;
    t.reconcile_model_until(&app, "fraud-model", "9", "succeeded")
        .await;
    assert_eq!(azurite.list(&container).await.len(), 5);
    assert_eq!(
        proxy.state.lock().unwrap().blob_puts,
        5,
        "no file uploaded twice"
    );
    let record = t.record_of("fraud-model", "9").await;
    assert_eq!(
        record["rollout"]["assets"]["code_name"],
        json!(name),
        "the same code version"
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_asset_write_is_a_configuration_problem_and_nothing_is_deployed() {
    let (t, _azurite, _proxy) = with_uploads().await;
    t.arm.with(|s| s.assets.refuse_writes = true);
    let (dir, config) = seed();
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    app.post_event(&model_event("fraud-model", "10", json!({})))
        .await;
    let record = t
        .reconcile_model_until(&app, "fraud-model", "10", "failed")
        .await;
    assert_eq!(record["rollout"]["phase"], "failed");
    assert_eq!(record["rollout"]["configuration_problem"], true);
    let why = record["rollout"]["failure"].as_str().unwrap();
    assert!(
        why.contains("403") && why.contains("AzureML Data Scientist"),
        "{why}"
    );
    assert!(t.arm.with(|s| s.deployment_puts.is_empty()));
    assert_eq!(
        t.arm.traffic("fraud-ep"),
        [("blue".to_string(), 100)].into()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_upload_is_a_configuration_problem_and_nothing_is_registered() {
    let (t, _azurite, proxy) = with_uploads().await;
    proxy.state.lock().unwrap().refuse = true;
    let (dir, config) = seed();
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    app.post_event(&model_event("fraud-model", "11", json!({})))
        .await;
    let record = t
        .reconcile_model_until(&app, "fraud-model", "11", "failed")
        .await;
    assert_eq!(record["rollout"]["configuration_problem"], true);
    let why = record["rollout"]["failure"].as_str().unwrap();
    assert!(why.contains("403") && why.contains("SAS"), "{why}");
    assert!(!why.contains("sig="), "the SAS is never shown: {why}");
    assert!(
        t.arm
            .with(|s| s.assets.calls_to("PUT", "codes/").is_empty())
    );
    assert!(t.arm.with(|s| s.deployment_puts.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_is_the_most_recently_created_version_and_named_environments_increment() {
    let (t, _azurite, _proxy) = with_uploads().await;
    t.arm.with(|s| {
        // Created in this order: @latest is 7, though 12 is the highest number.
        for version in ["5", "12", "7"] {
            s.assets.add_environment("fraud-env", version);
        }
    });
    let (dir, config) = layout(
        "edge",
        &[
            ("fraud-latest", "env-latest.yml", ""),
            ("fraud-named", "env-named-noversion.yml", ""),
        ],
    );
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    app.post_event(&model_event("fraud-latest", "1", json!({})))
        .await;
    let record = t
        .reconcile_model_until(&app, "fraud-latest", "1", "succeeded")
        .await;
    let latest = format!("{WS}/environments/fraud-env/versions/7");
    assert_eq!(record["rollout"]["assets"]["environment_id"], json!(latest));
    let body = t.arm.with(|s| s.deployment_puts[0].clone());
    assert_eq!(body["properties"]["environmentId"], json!(latest));
    assert!(
        t.arm
            .with(|s| s.assets.calls_to("PUT", "environments/").is_empty())
    );

    // A named inline environment without a version: the latest one differs (409), so the next.
    app.post_event(&model_event("fraud-named", "1", json!({})))
        .await;
    let record = t
        .reconcile_model_until(&app, "fraud-named", "1", "succeeded")
        .await;
    let puts: Vec<String> = t
        .arm
        .with(|s| s.assets.calls_to("PUT", "environments/"))
        .into_iter()
        .map(|c| c.path)
        .collect();
    assert_eq!(
        puts,
        [
            "environments/fraud-env/versions/7",
            "environments/fraud-env/versions/13"
        ]
    );
    assert_eq!(
        record["rollout"]["assets"]["environment_id"],
        json!(format!("{WS}/environments/fraud-env/versions/13"))
    );
    let golden = golden("edge/env-named-noversion.yml");
    let sent = t
        .arm
        .with(|s| s.assets.calls_to("PUT", "environments/")[1].body.clone());
    assert_eq!(sent, golden["environment"]["body"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_collector_registers_its_data_assets_first() {
    let (t, _azurite, _proxy) = with_uploads().await;
    // Data asset names and paths carry the deployment's name: ours is `dc-full-3` where the
    // golden's YAML says `dc-full`.
    let (dir, config) = layout(
        "edge",
        &[(
            "fraud-dc",
            "data-collector-full.yml",
            "      name: \"dc-full-{modelVersion}\"\n",
        )],
    );
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    app.post_event(&model_event("fraud-dc", "3", json!({})))
        .await;
    let golden = expected(
        &golden("edge/data-collector-full.yml"),
        &[("dc-full", "dc-full-3")],
    );
    t.reconcile_model_until(&app, "fraud-dc", "3", "succeeded")
        .await;
    let puts = t.arm.with(|s| s.assets.calls_to("PUT", "data/"));
    let ours: Vec<Value> = puts
        .iter()
        .map(|c| {
            let parts: Vec<&str> = c.path.split('/').collect();
            json!({"name": parts[1], "version": parts[3], "body": c.body})
        })
        .collect();
    let theirs: Vec<Value> = golden["data_assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| json!({"name": d["name"], "version": d["version"], "body": d["body"]}))
        .collect();
    assert_eq!(ours, theirs);
    let body = t.arm.with(|s| s.deployment_puts[0].clone());
    assert_eq!(
        body["properties"]["dataCollector"],
        golden["deployment_body"]["properties"]["dataCollector"]
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

/// Writes `files` (path → text) under a new folder with a rules file whose one rule deploys
/// `deployment.yml`, and runs `check-config` with `args` there.
fn check_config_with(files: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(
        dir.path().join("autodeploy.yml"),
        "rules:\n  - name: direct\n    models: [m]\n    azureml:\n      endpoint: fraud-ep\n      deployment: aml_yamls/deployment.yml\n",
    )
    .unwrap();
    let mut all = vec!["check-config"];
    all.extend_from_slice(args);
    run_cli(dir.path(), &all, &[])
}

const SCORE: &str = "def init():\n    pass\n\ndef run(data):\n    return data\n";

#[test]
fn check_config_names_the_yaml_key_of_each_asset_problem() {
    // (the YAML after instance_type, other files, what the problem must say)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "code_configuration:\n  code: ./missing\n  scoring_script: score.py\n",
            &[],
            "code_configuration.code: the code folder",
        ),
        (
            "code_configuration:\n  code: ./scripts\n  scoring_script: score.py\n",
            &[("aml_yamls/scripts/other.py", "x = 1\n")],
            "code_configuration.scoring_script:",
        ),
        (
            "code_configuration:\n  code: ./scripts\n  scoring_script: score.py\n",
            &[
                ("aml_yamls/scripts/score.py", SCORE),
                ("aml_yamls/scripts/.amlignore", "*\n"),
            ],
            "code_configuration.code:",
        ),
        (
            "environment:\n  image: mcr.microsoft.com/x\n  conda_file: environments/missing.yml\n",
            &[],
            "environment.conda_file: cannot read",
        ),
        (
            "environment:\n  build:\n    path: ./ctx\n",
            &[],
            "environment.build:",
        ),
        (
            "environment:\n  image: mcr.microsoft.com/x\n  channels: [conda-forge]\n",
            &[],
            "environment.channels:",
        ),
        (
            "environment: azureml:fraud-env@prod\n",
            &[],
            "environment: Asset fraud-env with version label prod does not exist",
        ),
        (
            "environment: azureml:fraud-env\n",
            &[],
            "Version must be provided",
        ),
    ];
    for (yaml, files, needle) in cases {
        let text = format!("instance_type: Standard_DS3_v2\n{yaml}");
        let mut all = vec![("aml_yamls/deployment.yml", text.as_str())];
        all.extend_from_slice(files);
        let (code, out, err) = check_config_with(&all, &[]);
        assert_ne!(code, 0, "{yaml}: accepted");
        assert!(
            out.contains("rules[0] (direct).azureml.deployment:") && out.contains(needle),
            "{yaml}: missing {needle:?} in:\n{out}{err}"
        );
    }
}

#[test]
fn list_files_names_every_file_a_deployment_needs() {
    let yaml = "instance_type: Standard_DS3_v2\ncode_configuration:\n  code: ./scripts\n  scoring_script: score.py\nenvironment:\n  image: mcr.microsoft.com/x\n  conda_file: ../envs/conda.yml\n";
    let (code, out, err) = check_config_with(
        &[
            ("aml_yamls/deployment.yml", yaml),
            ("aml_yamls/scripts/score.py", SCORE),
            ("aml_yamls/scripts/lib/features.py", "A = 1\n"),
            ("aml_yamls/scripts/.amlignore", "*.log\n"),
            ("aml_yamls/scripts/debug.log", "not shipped\n"),
            ("envs/conda.yml", "dependencies:\n- python=3.10\n"),
        ],
        &["--list-files"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let listed: Vec<&str> = out.lines().collect();
    assert_eq!(
        listed,
        [
            "aml_yamls/deployment.yml",
            "aml_yamls/scripts/.amlignore",
            "aml_yamls/scripts/lib/features.py",
            "aml_yamls/scripts/score.py",
            "envs/conda.yml",
        ]
    );
}

#[test]
fn a_dry_run_lists_the_asset_steps_with_hashes_names_and_file_counts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_cli(
        dir.path(),
        &[
            "replay",
            root.join("events/churn-registered.eventgrid.json")
                .to_str()
                .unwrap(),
            "--config",
            root.join("autodeploy.yml").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("dry run: asset step 1: code folder ./scripts (2 file(s), sha256 "),
        "{out}"
    );
    assert!(
        out.contains("dry run: asset step 2: register environment CliV2AnonymousEnvironment:"),
        "{out}"
    );
    assert!(
        out.contains("\"codeId\": \"<the code version registered at rollout start>\""),
        "{out}"
    );
    // And the rollout it would run.
    assert!(
        out.contains("dry run: rollout step 1 of 1: 10% to churn-xgb-5, bake 15 min"),
        "{out}"
    );
}

/// Deploys `yaml` of fixture `case` through the host contract and checks every asset request and
/// the deployment PUT against the SDK's golden. Names that depend on the deployment (data
/// assets) use ours: the golden's endpoint and deployment become `fraud-ep` and `{model}-7`.
async fn deploys_as_az_ml_would(case: &str, yaml: &str) {
    let (t, _azurite, proxy) = with_uploads().await;
    let model = "example-model";
    let (dir, config) = layout(case, &[(model, yaml, "")]);
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    let reply = app.post_event(&model_event(model, "7", json!({}))).await;
    assert_eq!(reply.decision(), "deploying", "{}", reply.raw);
    t.reconcile_model_until(&app, model, "7", "succeeded").await;

    let golden = golden(&format!("{case}/{yaml}"));
    let deployment = format!("{model}-7");
    let mut renames = vec![
        (
            "fraud-model/versions/7".to_string(),
            format!("{model}/versions/7"),
        ),
        ("eastus".to_string(), "westeurope".to_string()),
    ];
    if let Some(endpoint) = golden["endpoint"].as_str() {
        renames.push((format!("{endpoint}-"), "fraud-ep-".into()));
        renames.push((format!("/{endpoint}/"), "/fraud-ep/".into()));
    }
    if let Some(name) = golden["deployment"].as_str() {
        renames.push((format!("-{name}-"), format!("-{deployment}-")));
        renames.push((format!("/{name}/"), format!("/{deployment}/")));
    }
    let calls = t.arm.with(|s| s.assets.calls.clone());
    let mut replacements: Vec<(String, String)> = renames;

    let data_puts: Vec<Value> = calls
        .iter()
        .filter(|c| c.method == "PUT" && c.path.starts_with("data/"))
        .map(|c| {
            let parts: Vec<&str> = c.path.split('/').collect();
            json!({"name": parts[1], "version": parts[3], "body": c.body})
        })
        .collect();
    let pairs: Vec<(&str, &str)> = replacements
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let data_golden: Vec<Value> = golden["data_assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            expected(
                &json!({"name": d["name"], "version": d["version"], "body": d["body"]}),
                &pairs,
            )
        })
        .collect();
    assert_eq!(data_puts, data_golden, "{case}/{yaml}: data assets");

    if golden["code"].is_object() {
        let code_put = calls
            .iter()
            .find(|c| c.method == "PUT" && c.path.starts_with("codes/"))
            .unwrap_or_else(|| panic!("{case}/{yaml}: no code version PUT"));
        let name = code_put.path.split('/').nth(1).unwrap();
        let blob_uri = format!("{}/{}", proxy.blob_endpoint, container_for(name));
        assert_eq!(
            code_put.body,
            expected(&golden["code"]["version_body"], &[("{blobUri}", &blob_uri)]),
            "{case}/{yaml}: code version"
        );
        replacements.push(("{codeId}".into(), format!("{WS}/codes/{name}/versions/1")));
    }
    if golden["environment"]["kind"] == "anonymous" {
        let version = golden["environment"]["version"].as_str().unwrap();
        let env_put = calls
            .iter()
            .find(|c| c.method == "PUT" && c.path.starts_with("environments/"))
            .unwrap_or_else(|| panic!("{case}/{yaml}: no environment PUT"));
        assert_eq!(
            env_put.path,
            format!("environments/CliV2AnonymousEnvironment/versions/{version}")
        );
        assert_eq!(
            env_put.body, golden["environment"]["body"],
            "{case}/{yaml}: environment"
        );
        replacements.push((
            "{environmentId}".into(),
            format!("{WS}/environments/CliV2AnonymousEnvironment/versions/{version}"),
        ));
    }
    let pairs: Vec<(&str, &str)> = replacements
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let body = t.arm.with(|s| s.deployment_puts[0].clone());
    assert_eq!(
        body,
        expected(&golden["deployment_body"], &pairs),
        "{case}/{yaml}: deployment"
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_azureml_examples_blue_deployment_deploys_as_az_ml_would() {
    deploys_as_az_ml_would("examples-sample", "managed/sample/blue-deployment.yml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_azureml_examples_app_insights_deployment_deploys_as_az_ml_would() {
    deploys_as_az_ml_would("examples-sample", "managed/app-insights/deployment.yml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_azureml_examples_keyvault_deployment_deploys_as_az_ml_would() {
    deploys_as_az_ml_would("examples-keyvault", "keyvault-deployment.yml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_azureml_examples_mlflow_deployment_deploys_as_az_ml_would() {
    deploys_as_az_ml_would("examples-mlflow", "sklearn-deployment.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_azureml_examples_data_collector_deployment_deploys_as_az_ml_would() {
    deploys_as_az_ml_would(
        "examples-data-collector/workspace-blob-storage",
        "workspace-blob-storage-custom1.YAML",
    )
    .await;
}
