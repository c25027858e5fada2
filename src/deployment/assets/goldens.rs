//! Our translation against what the official SDK computes (azure-ai-ml 1.35.2): every YAML under
//! `tests/fixtures/azml/` has a `.golden.json` beside it, written by `scripts/az-ml-goldens.py`.
//! The deployment body, the code folder's hash and files, the environment's name, version and
//! body, and the data assets must all be equal (JSON equality: key order is not compared).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::InlineEnvironment;
use super::code::CodeFolder;
use crate::actions::azureml::{AzureMlPlan, plan};
use crate::config::{AzureMlAction, Template};
use crate::deployment::translate::translate;

/// Where az ml refuses and we knowingly do not (each documented in docs/direct-deployment.md).
const WE_ACCEPT: &[(&str, &str)] = &[
    (
        "refused/startup-probe.yml",
        "startup_probe is in the REST API; kept as a documented extension",
    ),
    (
        "refused/scoring-script-syntax-error.yml",
        "az ml parses the scoring script as Python; we do not (the deployment fails its probes and rolls back instead)",
    ),
];

fn goldens() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.to_string_lossy().ends_with(".golden.json") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azml"),
        &mut out,
    );
    out.sort();
    out
}

/// The SDK creates the empty code folder at run time (git keeps no empty folders); so do we.
fn prepare_empty_folders(root: &Path) {
    let _ = std::fs::create_dir_all(root.join("refused/empty-code"));
}

fn our_plan(golden: &Value, yaml_path: &Path) -> Result<AzureMlPlan, Vec<String>> {
    let workspace = golden["workspace"].as_str().unwrap();
    let text = std::fs::read_to_string(yaml_path).unwrap();
    let yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    // The fixtures' folder plays the config file's: examples name code folders above their YAML.
    let root = crate::config::ConfigFolder::of(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azml/autodeploy.yml"),
    );
    let template = translate(&yaml, Some(workspace), yaml_path.parent().unwrap(), &root)?;
    let action = AzureMlAction {
        endpoint: golden["endpoint"]
            .as_str()
            .unwrap_or("fraud-ep")
            .to_string(),
        deployment_file: yaml_path.to_path_buf(),
        template,
        name: Template::parse("{modelName}-{modelVersion}").unwrap(),
        target_workspace: None,
        smoke_test: None,
        rollout: Box::default(),
        batch: None,
    };
    let deployment = golden["deployment"].as_str().unwrap_or("blue");
    Ok(plan(&action, workspace, "fraud-model", "7", deployment))
}

#[test]
fn every_fixture_matches_the_sdk() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azml");
    prepare_empty_folders(&root);
    let files = goldens();
    assert!(files.len() >= 30, "goldens found: {}", files.len());
    let mut mismatches = Vec::new();
    for golden_path in &files {
        let golden: Value =
            serde_json::from_str(&std::fs::read_to_string(golden_path).unwrap()).unwrap();
        assert_eq!(golden["sdk"], "azure-ai-ml 1.35.2");
        let case = golden_path.parent().unwrap();
        let yaml_rel = golden_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".golden.json")
            .to_string();
        let yaml_path = case.join(&yaml_rel);
        let name = yaml_path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let mut mismatch = |what: &str, ours: String, theirs: String| {
            mismatches.push(format!(
                "{name}: {what}\n  ours:   {ours}\n  az ml:  {theirs}"
            ))
        };
        let ours = our_plan(&golden, &yaml_path);
        let accepted_here = WE_ACCEPT.iter().any(|(case, _)| *case == name);
        match (&golden["refused"], ours) {
            (Value::String(_), Ok(_)) if accepted_here => continue,
            (Value::String(why), Ok(_)) => {
                mismatch("refusal", "accepted".into(), why.clone());
                continue;
            }
            (Value::String(_), Err(_)) => continue,
            (_, Err(problems)) => {
                mismatch("acceptance", format!("{problems:?}"), "accepted".into());
                continue;
            }
            (_, Ok(plan)) => {
                // The ids of what the rollout registers are placeholders in the goldens.
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
                let data: Vec<Value> = plan
                    .assets
                    .data
                    .iter()
                    .map(|d| {
                        json!({"collection": d.collection, "name": d.name, "version": d.version, "body": d.body()})
                    })
                    .collect();
                if Value::Array(data.clone()) != golden["data_assets"] {
                    mismatch(
                        "data assets",
                        Value::Array(data).to_string(),
                        golden["data_assets"].to_string(),
                    );
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} difference(s) from the SDK:\n{}",
        mismatches.len(),
        mismatches.join("\n")
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
            "kind": "anonymous", "name": super::environment::ANONYMOUS_ENVIRONMENT,
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
    let mut theirs = golden.clone();
    // az ml hashes a dump of its own internal class for inference_config environments: our
    // version is stable but different; the body must still be equal.
    if theirs["version_is_sdk_internal"] == true {
        let object = theirs.as_object_mut().unwrap();
        object.remove("version_is_sdk_internal");
        object.insert("version".into(), ours["version"].clone());
    }
    if ours != theirs {
        mismatch("environment", ours.to_string(), theirs.to_string());
    }
}
