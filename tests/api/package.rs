//! Shipping: the Bicep files and the GitHub workflows. The zip package itself is built and checked
//! by `scripts/check-package.sh` (a musl release build takes minutes), which `.ci/run` runs after
//! the tests.

use std::path::Path;

use serde_norway::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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
        "43d0d8ad-25c7-4714-9337-8ba259a9fe05", // Monitoring Reader (canary analysis)
        "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", // Storage Blob Data Reader (batch smoke job input)
        "param batchInputStorageAccountName string = ''",
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
    // The package build left `cargo test`: CI checks it after the tests.
    assert!(
        ci.contains("run: scripts/check-package.sh")
            && read(".ci/run").contains("scripts/check-package.sh"),
        "ci.yml and .ci/run check the package"
    );

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
