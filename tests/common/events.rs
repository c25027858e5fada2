//! Events, envelopes and rules files shared by the black-box and the in-process suites.

use serde_json::{Value, json};

/// The workspace the test configs accept.
pub const WS: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ml-ws";

/// The host envelope around an event, with `Metadata` as the host builds it.
pub fn envelope(event: &Value) -> Value {
    let data = if event.is_string() {
        Value::Null
    } else {
        event.get("data").cloned().unwrap_or(Value::Null)
    };
    json!({
        "Data": { "eventGridEvent": event },
        "Metadata": {
            "data": data,
            "sys": { "MethodName": "ModelRegistered", "UtcNow": "2026-11-26T10:00:01Z", "RandGuid": "0f8fad5b-d9cb-469f-a165-70867728950e" }
        }
    })
}

/// A ModelRegistered event in the Event Grid schema.
pub fn model_event(name: &str, version: &str, tags: Value) -> Value {
    json!({
        "id": format!("evt-{name}-{version}"),
        "topic": WS,
        "subject": format!("models/{name}:{version}"),
        "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
        "eventTime": "2026-11-26T10:00:00Z",
        "data": { "modelName": name, "modelVersion": version, "modelTags": tags, "modelProperties": {} },
        "dataVersion": "2",
        "metadataVersion": "1"
    })
}

/// A ModelRegistered event in the CloudEvents 1.0 schema.
pub fn cloud_event(name: &str, version: &str) -> Value {
    json!({
        "specversion": "1.0",
        "type": "Microsoft.MachineLearningServices.ModelRegistered",
        "source": WS,
        "id": format!("ce-{name}-{version}"),
        "time": "2026-11-26T10:00:00Z",
        "subject": format!("models/{name}:{version}"),
        "datacontenttype": "application/json",
        "data": { "modelName": name, "modelVersion": version }
    })
}

/// A rules file: `credit-*` with stage=production → repository_dispatch; `fraud` → workflow_dispatch;
/// `shadow-*` observed.
pub fn standard_config() -> String {
    format!(
        r#"
workspace: {WS}
rules:
  - name: credit-to-github
    models: ["credit-*"]
    tags: {{ stage: production }}
    github: {{ repository: contoso/ml-deploy, event_type: deploy-model }}
  - name: fraud-workflow
    models: ["fraud"]
    github:
      repository: contoso/ml-deploy
      workflow: deploy.yml
      ref: main
      inputs: {{ model: "{{modelName}}", version: "{{modelVersion}}" }}
  - name: shadow
    models: ["shadow-*"]
    mode: observe
    github: {{ repository: contoso/ml-deploy, event_type: deploy-model }}
"#
    )
}

/// The repository or workflow dispatches a fake GitHub received.
pub async fn dispatches_received(gh: &wiremock::MockServer) -> usize {
    gh.received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/dispatches"))
        .count()
}

/// The deployment YAML the direct-deployment tests' rules refer to (an `az ml` file).
pub const DEPLOYMENT_YAML: &str = r#"
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: ignored-by-the-rule
endpoint_name: ignored-too
model: azureml:replaced-by-the-event:1
environment: azureml:sklearn-env:3
code_configuration: { code: azureml:score-code:2, scoring_script: score.py }
instance_type: Standard_DS3_v2
instance_count: 1
request_settings: { request_timeout_ms: 5000, max_queue_wait_ms: 500, max_concurrent_requests_per_instance: 2 }
liveness_probe: { initial_delay: 10, period: 10, timeout: 2, success_threshold: 1, failure_threshold: 30 }
"#;

/// The files a direct-deployment rule refers to (the deployment YAML and a smoke-test request) in a
/// temporary folder, and the rules file that uses them.
pub struct DirectFiles(tempfile::TempDir);

impl DirectFiles {
    pub fn new() -> Self {
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("deployment.yml"), DEPLOYMENT_YAML).unwrap();
        std::fs::write(
            files.path().join("request.json"),
            r#"{"input_data": [[1, 2, 3]]}"#,
        )
        .unwrap();
        Self(files)
    }

    /// The folder: a config naming these files must be written here (see [`Self::write`]),
    /// since config references stay inside the config file's folder.
    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    /// Writes `config` as `autodeploy.yml` in `folder` and returns its path.
    pub fn write(folder: &std::path::Path, config: &str) -> String {
        let path = folder.join("autodeploy.yml");
        std::fs::write(&path, config).unwrap();
        path.display().to_string()
    }

    /// A config with one `azureml` rule for `credit-risk` on `endpoint` with `rollout`, naming
    /// the files relative to [`Self::path`].
    pub fn config(&self, endpoint: &str, rollout: &str) -> String {
        format!(
            r#"
workspace: {WS}
rules:
  - name: credit-direct
    models: ["credit-risk"]
    azureml:
      endpoint: {endpoint}
      deployment: deployment.yml
      smoke_test: {{ request: request.json, expect_status: 200 }}
      rollout: {rollout}
"#
        )
    }
}
