//! Shipping: the zip package, the Bicep files and the GitHub workflows.

use std::path::Path;
use std::process::Command;

use serde_norway::Value;

use crate::helpers::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Reads a zip with Python's zipfile (the machine's python3; no extra crate for a test).
fn zip_entries(zip: &Path) -> Vec<(String, u32)> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(oct((i.external_attr >> 16) & 0o777), i.filename)",
            zip.to_str().unwrap(),
        ])
        .output()
        .expect("python3 reads the zip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (mode, name) = l.split_once(' ').unwrap();
            (
                name.to_string(),
                u32::from_str_radix(mode.trim_start_matches("0o"), 8).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_package_has_the_layout_the_host_needs_and_its_binary_answers_readiness() {
    let out = tempfile::tempdir().unwrap();
    let status = tokio::task::block_in_place(|| {
        Command::new("bash")
            .arg(root().join("scripts/package.sh"))
            .args([
                "--config",
                "examples/autodeploy.yml",
                "--out",
                out.path().to_str().unwrap(),
            ])
            .current_dir(root())
            // Its own target folder: the cargo running this test holds the lock on the usual one.
            .env("CARGO_TARGET_DIR", root().join("target/package"))
            .status()
            .expect("run scripts/package.sh")
    });
    assert!(
        status.success(),
        "scripts/package.sh failed (its output is above); note that on a machine where the x86_64-unknown-linux-musl target or musl-tools \
         cannot be installed the package cannot be built, and this test fails on purpose"
    );
    let zip = out.path().join("aml-autodeploy.zip");
    let entries = zip_entries(&zip);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    for required in [
        "host.json",
        "ModelRegistered/function.json",
        "Reconcile/function.json",
        "aml-autodeploy",
        "autodeploy.yml",
        "deployments/churn.yml",
        "requests/churn.json",
    ] {
        assert!(
            names.contains(&required),
            "{required} missing from {names:?}"
        );
    }
    assert_eq!(
        entries
            .iter()
            .find(|(n, _)| n == "aml-autodeploy")
            .unwrap()
            .1,
        0o755
    );
    assert_eq!(
        entries.iter().find(|(n, _)| n == "host.json").unwrap().1,
        0o644
    );
    assert!(
        !names
            .iter()
            .any(|n| n.contains("local.settings") || n.starts_with("src/")),
        "{names:?}"
    );

    // The packaged binary is static and starts like the host starts it.
    let extracted = tempfile::tempdir().unwrap();
    let unzip = Command::new("python3")
        .args([
            "-m",
            "zipfile",
            "-e",
            zip.to_str().unwrap(),
            extracted.path().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(unzip.success());
    let binary = extracted.path().join("aml-autodeploy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ldd = Command::new("ldd").arg(&binary).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ldd.stdout).contains("=>"),
        "not static: {}",
        String::from_utf8_lossy(&ldd.stdout)
    );
    // Run from the package as the host runs it from the app root: the config and its files there.
    let config_path = extracted.path().join("autodeploy.yml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let app = TestApp::spawn_program(
        binary.to_str().unwrap(),
        &config,
        &[("AUTODEPLOY_CONFIG", config_path.to_str().unwrap())],
    )
    .await;
    assert!(app.ready_after < std::time::Duration::from_secs(5));
    let reply = app
        .post_event(&model_event("nobody", "1", serde_json::json!({})))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_bicep_files_declare_what_the_app_needs() {
    // No Bicep compiler can be installed here: this checks the declarations
    // docs/operations-and-shipping.md promises.
    let main = read("infra/main.bicep");
    for needle in [
        "'Microsoft.Storage/storageAccounts@",
        "'Microsoft.Storage/storageAccounts/blobServices/containers@",
        "'Microsoft.Insights/components@",
        "'Microsoft.KeyVault/vaults@",
        "'Microsoft.KeyVault/vaults/secrets@",
        "'Microsoft.Web/serverfarms@",
        "tier: 'FlexConsumption'",
        "'Microsoft.Web/sites@",
        "runtime: { name: 'custom'",
        "identity: { type: 'SystemAssigned' }",
        "AzureWebJobsStorage__accountName",
        "AzureWebJobsStorage__credential",
        "@Microsoft.KeyVault(VaultName=",
        "'Microsoft.Authorization/roleAssignments@",
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", // Storage Blob Data Owner (ledger)
        "4633458b-17de-408a-b874-0445c86b69e6", // Key Vault Secrets User
        "f6c7c914-8db3-469d-8ca1-694a8f32e121", // AzureML Data Scientist
        "param functionAppName string",
        "param workspaceName string",
        "@secure()",
    ] {
        assert!(main.contains(needle), "infra/main.bicep lacks {needle}");
    }
    let eventgrid = read("infra/eventgrid.bicep");
    for needle in [
        "'Microsoft.EventGrid/systemTopics@",
        "'Microsoft.EventGrid/systemTopics/eventSubscriptions@",
        "topicType: 'Microsoft.MachineLearningServices.Workspaces'",
        "includedEventTypes: [ 'Microsoft.MachineLearningServices.ModelRegistered' ]",
        "subjectBeginsWith: subjectBeginsWith",
        "retryPolicy:",
        "deadLetterDestination:",
        "param existingSystemTopicName string",
        "/functions/ModelRegistered",
    ] {
        assert!(
            eventgrid.contains(needle),
            "infra/eventgrid.bicep lacks {needle}"
        );
    }
}

fn workflow(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

#[test]
fn the_workflows_are_well_formed_and_deploy_in_the_right_order() {
    for path in [
        ".github/workflows/ci.yml",
        ".github/workflows/deploy.yml",
        "examples/github/deploy-model.yml",
    ] {
        let wf = workflow(path);
        assert!(wf.get("on").is_some(), "{path}: no `on`");
        let jobs = wf["jobs"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{path}: no jobs"));
        for (name, job) in jobs {
            assert!(
                job.get("runs-on").is_some(),
                "{path}: job {name:?} has no runs-on"
            );
            for step in job["steps"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{path}: job {name:?} has no steps"))
            {
                assert!(
                    step.get("uses").is_some() != step.get("run").is_some(),
                    "{path}: a step needs exactly one of uses/run: {step:?}"
                );
            }
        }
    }
    let ci = read(".github/workflows/ci.yml");
    assert!(
        ci.contains("run: scripts/test.sh") && ci.contains("cargo-deny"),
        "ci.yml runs the test command and the audit"
    );
    assert!(root().join("deny.toml").exists());

    let deploy = workflow(".github/workflows/deploy.yml");
    assert_eq!(
        deploy["permissions"]["id-token"],
        Value::String("write".into())
    );
    let steps: Vec<String> = deploy["jobs"]["deploy"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["name"].as_str().unwrap_or(""),
                s["uses"].as_str().unwrap_or("")
            )
        })
        .collect();
    let at = |needle: &str| {
        steps
            .iter()
            .position(|s| s.contains(needle))
            .unwrap_or_else(|| panic!("no step {needle}: {steps:?}"))
    };
    assert!(at("Build the package") < at("azure/login"));
    assert!(at("azure/login") < at("Infrastructure"));
    assert!(at("Infrastructure") < at("Deploy the code"));
    assert!(
        at("Deploy the code") < at("Event Grid subscription"),
        "the subscription needs the deployed function"
    );
    assert!(at("Event Grid subscription") < at("Smoke check"));
    let text = read(".github/workflows/deploy.yml");
    assert!(
        text.contains("config-zip")
            && text.contains("eventgrid_extension")
            && text.contains("test \"$status\" = 202")
    );
}
