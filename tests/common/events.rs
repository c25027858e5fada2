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
