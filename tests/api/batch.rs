//! Batch endpoints through the host contract, with the ledger in Azurite and the stateful fake ARM
//! (`tests/common/fake_batch.rs`): an `az ml batch-deployment` YAML with a local code folder and an
//! inline environment deploys with the requests az ml sends (the goldens of
//! `tests/fixtures/azml-batch/`), its smoke job runs the new deployment, and it becomes the
//! endpoint's default; a failing smoke job keeps the previous default; `rollback` restores it.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::azureml::Direct;
use crate::events::{WS, model_event};
use crate::fake_assets::{Azurite, UploadProxy};
use crate::helpers::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azml-batch")
}

fn golden(relative: &str) -> Value {
    let path = fixtures().join(format!("{relative}.golden.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
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

const SMOKE_JOB: &str =
    "      smoke_job: { input: \"azureml:heart-unlabeled:3\", timeout_minutes: 30 }\n";

/// The seed batch layout in a temporary folder, with one batch rule for `model` (and `extra`).
fn seed(model: &str, extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("seed"), dir.path());
    let config = format!(
        "workspace: {WS}\nrules:\n  - name: {model}-batch\n    models: [\"{model}\"]\n    azureml:\n      batch_endpoint: fraud-batch\n      deployment: aml_yamls/batch_endpoint_deployment.yml\n{extra}"
    );
    (dir, config)
}

/// A harness whose fake ARM hands out pending uploads in Azurite, with the batch endpoint
/// `fraud-batch` (default `fraud-model-6`) and the smoke job's data asset.
async fn with_batch_endpoint() -> (Direct, Azurite, UploadProxy) {
    let t = Direct::new().await;
    let azurite = Azurite::from_connection_string(&azurite());
    let proxy = UploadProxy::start(&azurite).await;
    let sas = azurite.account_sas();
    t.arm.with(|s| {
        s.assets.uploads = Some((proxy.blob_endpoint.clone(), sas));
        s.check_asset_references = true;
        s.batch
            .add_endpoint("fraud-batch", Some(("fraud-model-6", "6")));
        s.assets.data.insert(
            ("heart-unlabeled".into(), "3".into()),
            json!({"id": format!("{WS}/data/heart-unlabeled/versions/3"), "name": "3",
                   "properties": {"dataType": "uri_folder", "dataUri": "azureml://datastores/workspaceblobstore/paths/heart/"}}),
        );
    });
    (t, azurite, proxy)
}

fn expected(template: &Value, replacements: &[(&str, &str)]) -> Value {
    let mut text = template.to_string();
    for (from, to) in replacements {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_yaml_with_local_code_and_an_inline_environment_deploys_and_becomes_the_default() {
    let (t, _azurite, _proxy) = with_batch_endpoint().await;
    let (dir, config) = seed(
        "fraud-model",
        &format!("{SMOKE_JOB}      rollout: {{ retain_previous_minutes: 0 }}\n"),
    );
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    let reply = app
        .post_event(&model_event("fraud-model", "7", json!({})))
        .await;
    assert_eq!(reply.decision(), "deploying", "{}", reply.raw);
    assert_eq!(
        t.record_of("fraud-model", "7").await["rollout"]["phase"],
        "preparing_assets"
    );

    let record = t
        .reconcile_model_until(&app, "fraud-model", "7", "succeeded")
        .await;
    let golden = golden("seed/aml_yamls/batch_endpoint_deployment.yml");

    // The assets, registered by the online implementation, as az ml registers them.
    let (code_puts, env_puts) = t.arm.with(|s| {
        (
            s.assets.calls_to("PUT", "codes/"),
            s.assets.calls_to("PUT", "environments/"),
        )
    });
    assert_eq!(code_puts.len(), 1);
    assert_eq!(
        code_puts[0].body["properties"]["properties"]["hash_sha256"],
        golden["code"]["hash"]
    );
    let version = golden["environment"]["version"].as_str().unwrap();
    assert_eq!(env_puts.len(), 1);
    assert_eq!(
        env_puts[0].path,
        format!("environments/CliV2AnonymousEnvironment/versions/{version}")
    );
    assert_eq!(env_puts[0].body, golden["environment"]["body"]);

    // The batch deployment PUT: the golden body, with the ids this run registered.
    let code_id = format!("{WS}/{}", code_puts[0].path);
    let environment_id = format!("{WS}/environments/CliV2AnonymousEnvironment/versions/{version}");
    let (puts, endpoint_puts, invokes, default, names) = t.arm.with(|s| {
        (
            s.batch.deployment_puts.clone(),
            s.batch.endpoint_puts.clone(),
            s.batch.invokes.clone(),
            s.batch.default_of("fraud-batch"),
            s.batch.deployment_names("fraud-batch"),
        )
    });
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0],
        expected(
            &golden["deployment_body"],
            &[
                ("{codeId}", &code_id),
                ("{environmentId}", &environment_id),
                ("eastus", "westeurope"),
            ]
        )
    );

    // The smoke job ran the new deployment itself, on the data asset's id.
    assert_eq!(invokes.len(), 1);
    assert_eq!(invokes[0].0, "fraud-model-7");
    assert_eq!(
        invokes[0].1["properties"]["inputData"],
        json!({"UriFolder": {"jobInputType": "UriFolder", "uri": format!("{WS}/data/heart-unlabeled/versions/3")}})
    );
    // With an Entra token for the Azure ML audience, as az ml's invoke asks for.
    let audiences: Vec<String> =
        t.mi.received_requests()
            .await
            .unwrap()
            .iter()
            .filter_map(|r| {
                r.url
                    .query_pairs()
                    .find(|(k, _)| k == "resource")
                    .map(|(_, v)| v.to_string())
            })
            .collect();
    assert!(
        audiences.iter().any(|a| a == "https://ml.azure.com"),
        "{audiences:?}"
    );
    let job = &record["rollout"]["batch"]["smoke_job"];
    assert_eq!(job["status"], "Completed", "{record:#}");
    assert_eq!(
        job["id"],
        json!(format!("{WS}/jobs/{}", job["name"].as_str().unwrap()))
    );

    // The default switch: the whole endpoint PUT back as az ml sends it.
    assert_eq!(endpoint_puts.len(), 1);
    assert_eq!(
        endpoint_puts[0],
        json!({
            "location": "westeurope",
            "tags": {"team": "risk"},
            "properties": {
                "description": "nightly scoring",
                "authMode": "aadToken",
                "properties": {"BatchEndpointCreationApiVersion": "2025-12-01"},
                "defaults": {"deploymentName": "fraud-model-7"}
            }
        })
    );
    assert_eq!(default.as_deref(), Some("fraud-model-7"));
    assert_eq!(
        record["rollout"]["batch"]["previous_default"],
        "fraud-model-6"
    );
    // Retention 0: the previous default is gone once the rollout is done.
    let record = t
        .reconcile_until_with(&app, "fraud-model", "7", |r| {
            r["rollout"]["phase"] == "done"
        })
        .await;
    assert_eq!(record["state"], "succeeded");
    assert_eq!(
        t.arm.with(|s| s.batch.deployment_names("fraud-batch")),
        vec!["fraud-model-7".to_string()],
        "was {names:?}"
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_smoke_job_keeps_the_previous_default_and_records_the_job() {
    let (t, _azurite, _proxy) = with_batch_endpoint().await;
    t.arm.with(|s| {
        s.batch.job_script = vec!["Running".into(), "Failed".into()];
        s.batch.job_error = Some("UserError: mini batch 3 raised ValueError".into());
    });
    let (dir, config) = seed("fraud-model", SMOKE_JOB);
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    app.post_event(&model_event("fraud-model", "8", json!({})))
        .await;
    let record = t
        .reconcile_model_until(&app, "fraud-model", "8", "rolled_back")
        .await;

    let job = &record["rollout"]["batch"]["smoke_job"];
    let name = job["name"].as_str().unwrap();
    assert_eq!(job["status"], "Failed");
    assert_eq!(job["id"], json!(format!("{WS}/jobs/{name}")));
    assert!(
        job["error"].as_str().unwrap().contains("ValueError"),
        "{job:#}"
    );
    let why = record["rollout"]["failure"].as_str().unwrap();
    assert!(
        why.contains(name) && why.contains("Failed") && why.contains("ValueError"),
        "{why}"
    );
    assert!(record["reasons"].to_string().contains(name));
    let (default, endpoint_puts, names) = t.arm.with(|s| {
        (
            s.batch.default_of("fraud-batch"),
            s.batch.endpoint_puts.len(),
            s.batch.deployment_names("fraud-batch"),
        )
    });
    assert_eq!(
        default.as_deref(),
        Some("fraud-model-6"),
        "the default stays"
    );
    assert_eq!(endpoint_puts, 0, "the endpoint was never changed");
    assert_eq!(
        names,
        vec!["fraud-model-6".to_string()],
        "the failed deployment is removed"
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

/// A batch rule for `credit-risk` with an MLflow batch YAML (no code, no environment).
fn mlflow_batch(extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("batch.yml"),
        "type: model\ncompute: azureml:cpu-cluster\nresources: { instance_count: 2 }\nsettings: { mini_batch_size: 10, output_action: append_row }\n",
    )
    .unwrap();
    let config = format!(
        "workspace: {WS}\nrules:\n  - name: credit-batch\n    models: [\"credit-risk\"]\n    azureml:\n      batch_endpoint: credit-batch\n      deployment: batch.yml\n{extra}"
    );
    (dir, config)
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_makes_the_previous_default_the_default_again() {
    let t = Direct::new().await;
    t.arm.with(|s| {
        s.batch
            .add_endpoint("credit-batch", Some(("nightly-1", "1")))
    });
    let (dir, config) = mlflow_batch("      rollout: { retain_previous_minutes: 60 }\n");
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    app.post_event(&crate::azureml::credit("21")).await;
    let record = t.reconcile_until(&app, "21", "succeeded").await;
    assert_eq!(record["rollout"]["phase"], "retaining");
    assert_eq!(
        t.arm
            .with(|s| s.batch.default_of("credit-batch"))
            .as_deref(),
        Some("credit-risk-21")
    );
    let (code, out, _) = cli(&t, &["status", "credit-risk"]);
    assert_eq!(code, 0);
    assert!(out.contains("credit-risk-21=100%"), "{out}");
    let (code, out, _) = cli(
        &t,
        &["status", "credit-risk:21", "--watch", "--interval", "1"],
    );
    assert_eq!(code, 0, "promoted: {out}");
    assert!(
        out.contains("phase retaining") && out.contains("credit-risk-21") && out.contains("100%"),
        "{out}"
    );

    let (code, out, err) = cli(&t, &["rollback", "credit-batch", "--workspace", WS]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nightly-1 is the default again"), "{out}");
    assert_eq!(
        t.arm
            .with(|s| s.batch.default_of("credit-batch"))
            .as_deref(),
        Some("nightly-1")
    );
    let record = t.record("21").await;
    assert_eq!(record["state"], "rolled_back");
    // Both deployments are kept: the previous one serves, the rolled-back one for inspection.
    let mut names = t.arm.with(|s| s.batch.deployment_names("credit-batch"));
    names.sort();
    assert_eq!(names, ["credit-risk-21", "nightly-1"]);
    let last_put = t
        .arm
        .with(|s| s.batch.endpoint_puts.last().cloned().unwrap());
    assert_eq!(
        last_put["properties"]["defaults"],
        json!({"deploymentName": "nightly-1"})
    );
    // Nothing left to roll back; Reconcile deletes nothing.
    let (code, out, _) = cli(&t, &["rollback", "credit-batch", "--workspace", WS]);
    assert_ne!(code, 0, "{out}");
    app.post_reconcile().await;
    assert_eq!(
        t.arm
            .with(|s| s.batch.deployment_names("credit-batch").len()),
        2
    );
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

/// Runs a CLI command against this harness's ledger and fakes.
fn cli(t: &Direct, args: &[&str]) -> (i32, String, String) {
    let env = t.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    tokio::task::block_in_place(|| run_cli(dir.path(), args, &pairs))
}

#[test]
fn check_config_names_the_yaml_key_of_batch_problems() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "no-compute.yml",
        "type: model\nsettings: { mini_batch_size: 1 }\n",
    );
    write(
        "pipeline.yml",
        "type: pipeline\ncomponent: azureml:hello:1\n",
    );
    write(
        "online-key.yml",
        "type: model\ncompute: c\ninstance_type: Standard_DS3_v2\n",
    );
    write(
        "online.yml",
        "instance_type: Standard_DS3_v2\ncompute: azureml:cpu-cluster\n",
    );
    write("ok.yml", "compute: azureml:cpu-cluster\n");
    write(
        "autodeploy.yml",
        r#"
rules:
  - name: a
    models: [a]
    azureml: { batch_endpoint: bep, deployment: no-compute.yml }
  - name: b
    models: [b]
    azureml: { batch_endpoint: bep, deployment: pipeline.yml }
  - name: c
    models: [c]
    azureml: { batch_endpoint: bep, deployment: online-key.yml }
  - name: d
    models: [d]
    azureml: { endpoint: oep, deployment: online.yml }
  - name: e
    models: [e]
    azureml:
      batch_endpoint: bep
      endpoint: oep
      deployment: ok.yml
      smoke_test: { request: r.json }
      rollout: { strategy: linear, steps: [10], approval: { tag: ok, timeout_hours: 1 } }
  - name: f
    models: [f]
    azureml: { endpoint: oep, deployment: online.yml, smoke_job: { input: ./local } }
"#,
    );
    let (code, out, _) = run_cli(dir.path(), &["check-config"], &[]);
    assert_ne!(code, 0);
    for needle in [
        "rules[0] (a).azureml.deployment:",
        "compute is required with type: model",
        "rules[1] (b).azureml.deployment:",
        "type: pipeline (a pipeline component deployment) is not deployed directly",
        "rules[2] (c).azureml.deployment:",
        "`instance_type` is a managed online deployment key, not a batch one",
        "rules[3] (d).azureml.deployment:",
        "`compute` is a batch deployment key",
        "rules[4] (e).azureml: exactly one of `endpoint`",
        "rules[4] (e).azureml.smoke_test: scores an online endpoint",
        "rules[4] (e).azureml.rollout.strategy: not for batch endpoints",
        "rules[4] (e).azureml.rollout.steps: not for batch endpoints",
        "rules[5] (f).azureml.smoke_job: runs a batch job",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(
        !out.contains("rollout.approval"),
        "approval is a batch rollout key: {out}"
    );
}

#[test]
fn a_dry_run_prints_the_batch_deployment_and_its_steps() {
    let (dir, config) = mlflow_batch(
        "      smoke_job: { input: \"azureml://datastores/workspaceblobstore/paths/credit/\", input_type: uri_folder, timeout_minutes: 45 }\n      rollout: { approval: { tag: ok, timeout_hours: 2 } }\n",
    );
    let config_path = DirectFiles::write(dir.path(), &config);
    let event = dir.path().join("event.json");
    std::fs::write(&event, crate::azureml::credit("30").to_string()).unwrap();
    let (code, out, err) = run_cli(
        dir.path(),
        &["replay", event.to_str().unwrap(), "--config", &config_path],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "on batch endpoint credit-batch (then made its default)",
        "/batchEndpoints/credit-batch/deployments/credit-risk-30?api-version=2025-12-01",
        "\"referenceType\": \"Id\"",
        "dry run: smoke job: invoke credit-risk-30 (not the default) with input azureml://datastores/workspaceblobstore/paths/credit/ (uri_folder)",
        "within 45 min",
        "dry run: approval: wait for tag ok=true",
        "dry run: make credit-risk-30 the default of credit-batch",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}
