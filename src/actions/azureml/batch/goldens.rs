//! Our batch translation against what the official SDK computes (azure-ai-ml 1.35.2): every
//! batch deployment YAML under `tests/fixtures/azml-batch/` has a `.golden.json` beside it,
//! written by `scripts/az-ml-batch-goldens.py`, and so do the default switch
//! (`endpoint-default.golden.json`) and the smoke job's invoke (`invoke.golden.json`). Bodies,
//! code folders and environments must be equal (JSON equality: key order is not compared).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::wire::{
    DEPLOYMENT_HEADER, REQUEST_ID_HEADER, default_switch_body, job_input, needs_data_asset,
};
use crate::actions::azureml::{AzureMlPlan, plan};
use crate::config::{AzureMlAction, BatchTarget, SmokeJob, Template};
use crate::deployment::assets::InlineEnvironment;
use crate::deployment::assets::code::CodeFolder;
use crate::deployment::batch::translate_batch;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azml-batch")
}

/// Where az ml accepts and we knowingly refuse (each documented in docs/direct-deployment.md).
const WE_REFUSE: &[(&str, &str)] = &[(
    "edge/pipeline-versioned.yml",
    "type: pipeline (component deployments) is refused with a clear reason",
)];

fn goldens() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.to_string_lossy().ends_with(".yml.golden.json")
                || path.to_string_lossy().ends_with(".yaml.golden.json")
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &mut out);
    out.sort();
    out
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn our_plan(golden: &Value, yaml_path: &Path) -> Result<AzureMlPlan, Vec<String>> {
    let workspace = golden["workspace"].as_str().unwrap();
    let yaml: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(yaml_path).unwrap()).unwrap();
    let folder = crate::config::ConfigFolder::of(&root().join("autodeploy.yml"));
    let template = translate_batch(&yaml, Some(workspace), yaml_path.parent().unwrap(), &folder)?;
    let action = AzureMlAction {
        endpoint: golden["endpoint"]
            .as_str()
            .unwrap_or("fraud-batch")
            .to_string(),
        deployment_file: yaml_path.to_path_buf(),
        template,
        name: Template::parse("{modelName}-{modelVersion}").unwrap(),
        target_workspace: None,
        smoke_test: None,
        rollout: Box::default(),
        batch: Some(Box::new(BatchTarget { smoke_job: None })),
    };
    let deployment = golden["deployment"].as_str().unwrap_or("nightly");
    Ok(plan(&action, workspace, "fraud-model", "7", deployment))
}

#[test]
fn every_batch_fixture_matches_the_sdk() {
    let files = goldens();
    assert!(files.len() >= 40, "goldens found: {}", files.len());
    let mut mismatches = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for golden_path in &files {
        let golden = read(golden_path);
        assert_eq!(golden["sdk"], "azure-ai-ml 1.35.2");
        let yaml_path = PathBuf::from(
            golden_path
                .to_string_lossy()
                .trim_end_matches(".golden.json"),
        );
        let name = yaml_path
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .to_string();
        let mut mismatch = |what: &str, ours: String, theirs: String| {
            mismatches.push(format!(
                "{name}: {what}\n  ours:   {ours}\n  az ml:  {theirs}"
            ))
        };
        let ours = our_plan(&golden, &yaml_path);
        let refused_here = WE_REFUSE.iter().any(|(case, _)| *case == name);
        match (&golden["refused"], ours) {
            // A pipeline deployment is refused, whatever the SDK did with it.
            (_, Err(problems)) if golden["loader"] == "pipeline" || refused_here => {
                assert!(
                    problems.iter().any(|p| p.contains("type: pipeline")),
                    "{name}: {problems:?}"
                );
                refused += 1;
            }
            (Value::String(why), Ok(_)) => {
                mismatch("refusal", "accepted".into(), why.clone());
            }
            (Value::String(_), Err(_)) => refused += 1,
            (_, Err(problems)) => {
                mismatch("acceptance", format!("{problems:?}"), "accepted".into());
            }
            (_, Ok(plan)) => {
                accepted += 1;
                assert_eq!(
                    golden["endpoint_get"], true,
                    "{name}: az ml checks the endpoint"
                );
                let code_id = golden["code"].is_object().then_some("{codeId}");
                let environment_id = match golden["environment"]["kind"].as_str() {
                    Some("anonymous" | "named" | "label") => Some("{environmentId}"),
                    _ => None,
                };
                let body = plan.deployment_body(code_id, environment_id, "eastus");
                if body != golden["deployment_body"] {
                    mismatch(
                        "deployment body",
                        body.to_string(),
                        golden["deployment_body"].to_string(),
                    );
                }
                compare_code(&plan, &golden["code"], &mut mismatch);
                compare_environment(&plan, &golden["environment"], &mut mismatch);
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} difference(s) from the SDK:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(
        accepted >= 25 && refused >= 12,
        "{accepted} accepted, {refused} refused"
    );
}

fn compare_code(
    plan: &AzureMlPlan,
    golden: &Value,
    mismatch: &mut impl FnMut(&str, String, String),
) {
    match (&plan.assets.code, golden) {
        (None, Value::Null) => {}
        (Some(code), Value::Object(_)) => {
            let folder = CodeFolder::scan(&code.folder, code.boundary()).unwrap();
            let files: Vec<Value> = folder
                .files()
                .iter()
                .map(|f| json!({"path": f.relative, "size": f.size}))
                .collect();
            let blobs: Vec<String> = folder
                .upload_order()
                .iter()
                .map(|f| folder.blob_name(f))
                .collect();
            let ours = json!({
                "yaml_path": code.yaml_path,
                "folder_name": code.folder_name,
                "hash": code.hash,
                "files": files,
                "blob_names": blobs,
                "indicator_blob": folder.blob_name(folder.indicator()),
                "version_body": {"properties": {
                    "codeUri": crate::actions::azureml::rollout::code_uri("{blobUri}", &code.folder_name),
                    "isAnonymous": true,
                    "properties": {"hash_sha256": code.hash, "hash_version": 202208},
                }},
            });
            let mut theirs = golden.clone();
            theirs.as_object_mut().unwrap().remove("hash_version");
            if ours != theirs {
                mismatch("code", ours.to_string(), theirs.to_string());
            }
        }
        (ours, theirs) => mismatch("code", format!("{ours:?}"), theirs.to_string()),
    }
}

fn compare_environment(
    plan: &AzureMlPlan,
    golden: &Value,
    mismatch: &mut impl FnMut(&str, String, String),
) {
    let ours = match &plan.assets.environment {
        None => match plan.body["properties"].get("environmentId") {
            Some(id) => json!({"kind": "reference", "environment_id": id}),
            None => Value::Null,
        },
        Some(InlineEnvironment::Anonymous { version, body }) => json!({
            "kind": "anonymous", "name": crate::deployment::assets::environment::ANONYMOUS_ENVIRONMENT,
            "version": version, "conda_text": body["properties"].get("condaFile").cloned().unwrap_or(Value::Null),
            "body": body,
        }),
        Some(InlineEnvironment::Named {
            name,
            version,
            body,
        }) => json!({"kind": "named", "name": name, "version": version, "body": body}),
        Some(InlineEnvironment::Latest { name }) => {
            json!({"kind": "label", "name": name, "label": "latest"})
        }
    };
    if ours != *golden {
        mismatch("environment", ours.to_string(), golden.to_string());
    }
}

#[test]
fn the_default_switch_matches_the_sdk() {
    let golden = read(&root().join("endpoint-default.golden.json"));
    assert_eq!(golden["sdk"], "azure-ai-ml 1.35.2");
    let location = golden["workspace_location"].as_str().unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let new = case["new_default"].as_str().unwrap();
        assert_eq!(
            default_switch_body(&case["get"], new, location),
            case["put"],
            "{}",
            case["case"]
        );
    }
}

#[test]
fn the_smoke_job_invoke_matches_the_sdk() {
    let golden = read(&root().join("invoke.golden.json"));
    assert_eq!(golden["sdk"], "azure-ai-ml 1.35.2");
    let workspace = golden["workspace"].as_str().unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["case"].as_str().unwrap();
        let job = SmokeJob {
            input: case["input"].as_str().unwrap().to_string(),
            input_type: case["input_type"].as_str().map(str::to_string),
            timeout_minutes: 10,
        };
        crate::config::batch_check_input(&job.input).unwrap();
        // The data asset is read exactly when az ml reads it.
        let read_asset = needs_data_asset(&job).map(|(n, v)| format!("{n}:{v}"));
        assert_eq!(
            json!(read_asset.into_iter().collect::<Vec<_>>()),
            case["data_asset_get"],
            "{name}"
        );
        let input = job_input(&job, workspace, case["data_asset_type"].as_str());
        assert_eq!(
            input.body(case["job_name_given"].as_str()),
            case["body"],
            "{name}"
        );
        assert_eq!(case["endpoint_get"], json!(["fraud-batch"]), "{name}");
        let headers: Vec<&str> = case["headers"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            headers,
            [
                "Authorization",
                "Content-Type",
                DEPLOYMENT_HEADER,
                REQUEST_ID_HEADER
            ],
            "{name}"
        );
        assert_eq!(
            case["headers"]["Authorization"],
            "Bearer {token for https://ml.azure.com/.default}"
        );
    }
}
