//! The two batch requests besides the deployment PUT, as azure-ai-ml 1.35.2 builds them (pure;
//! checked against `tests/fixtures/azml-batch/{endpoint-default,invoke}.golden.json`):
//!
//! * the default switch of `az ml batch-deployment create --set-default`: GET the batch endpoint,
//!   PUT it back with `defaults.deploymentName` (PATCH takes only tags and identity);
//! * the smoke job of `az ml batch-endpoint invoke --deployment-name`: a POST to the endpoint's
//!   scoring URI naming the deployment, whose answer names the job.

use serde_json::{Map, Value, json};

use crate::config::SmokeJob;

/// The invoke's headers besides `Authorization` (an Entra token for the Azure ML audience) and
/// `Content-Type: application/json`: the deployment to run, and a request id the service can
/// recognise a repeated submission by.
pub const DEPLOYMENT_HEADER: &str = "azureml-model-deployment";
/// See [`DEPLOYMENT_HEADER`].
pub const REQUEST_ID_HEADER: &str = "repeatability_request-id";

/// The PUT body that makes `deployment` the default of the batch endpoint `endpoint` (its GET
/// answer), as `BatchEndpoint._from_rest_object` then `_to_rest_batch_endpoint` rebuild it:
/// `location` is the workspace's, `tags`, `description`, `authMode` (in the SDK's casing) and
/// `properties` are kept; `identity`, `kind`, `sku` and the read-only fields are not sent.
pub fn default_switch_body(endpoint: &Value, deployment: &str, workspace_location: &str) -> Value {
    let props = &endpoint["properties"];
    let mut properties = Map::new();
    if let Some(description) = props.get("description").filter(|v| !v.is_null()) {
        properties.insert("description".into(), description.clone());
    }
    if let Some(mode) = props["authMode"].as_str().filter(|m| !m.is_empty()) {
        properties.insert("authMode".into(), json!(sdk_auth_mode(mode)));
    }
    properties.insert(
        "properties".into(),
        props
            .get("properties")
            .filter(|v| v.is_object())
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    properties.insert("defaults".into(), json!({"deploymentName": deployment}));
    json!({
        "location": workspace_location,
        "tags": endpoint.get("tags").filter(|v| v.is_object()).cloned().unwrap_or_else(|| json!({})),
        "properties": properties,
    })
}

/// The default deployment a batch endpoint's GET answer names.
pub fn default_deployment(endpoint: &Value) -> Option<&str> {
    endpoint["properties"]["defaults"]["deploymentName"]
        .as_str()
        .filter(|d| !d.is_empty())
}

/// az ml reads `authMode` into snake case and writes it back in camel case: `AADToken` is sent as
/// `aadToken`, `AMLToken` as `amlToken`, `Key` as `key`.
fn sdk_auth_mode(mode: &str) -> String {
    match mode {
        "AADToken" => "aadToken".into(),
        "AMLToken" => "amlToken".into(),
        "Key" => "key".into(),
        other => other.to_string(),
    }
}

/// One input of a smoke job, resolved as az ml's invoke resolves `--input`/`--input-type`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInput {
    /// `uri_folder` or `uri_file`.
    pub kind: String,
    /// The data version's ARM id, the datastore path or the URL.
    pub uri: String,
}

impl JobInput {
    /// The invoke body: `{"properties": {"inputData": {"UriFolder": {"jobInputType": …, "uri": …}},
    /// "name": JOB}}`; the name as `--job-name` sends it (a resumed submission finds its job by it).
    pub fn body(&self, job_name: Option<&str>) -> Value {
        let key = match self.kind.as_str() {
            "uri_file" => "UriFile",
            _ => "UriFolder",
        };
        let mut body =
            json!({"properties": {"inputData": {key: {"jobInputType": key, "uri": self.uri}}}});
        if let Some(name) = job_name {
            body["properties"]["name"] = json!(name);
        }
        body
    }
}

/// Whether the smoke job's input must be read first (`azureml:NAME:VERSION` without
/// `input_type`: az ml takes the data asset's own type and id).
pub fn needs_data_asset(job: &SmokeJob) -> Option<(&str, &str)> {
    job.data_asset().filter(|_| job.input_type.is_none())
}

/// The job input for `job` in `workspace`; `asset_type` is the data asset's `dataType` when it
/// was read ([`needs_data_asset`]).
pub fn job_input(job: &SmokeJob, workspace: &str, asset_type: Option<&str>) -> JobInput {
    match job.data_asset() {
        Some((name, version)) => JobInput {
            kind: job
                .input_type
                .clone()
                .or_else(|| asset_type.map(str::to_string))
                .unwrap_or_else(|| "uri_folder".into()),
            uri: data_version_id(workspace, name, version),
        },
        None => JobInput {
            kind: job
                .input_type
                .clone()
                .unwrap_or_else(|| "uri_folder".into()),
            uri: plain_uri(&job.input),
        },
    }
}

/// The data version id of `azureml:NAME:VERSION` in `workspace`.
pub fn data_version_id(workspace: &str, name: &str, version: &str) -> String {
    format!(
        "{}/data/{name}/versions/{version}",
        workspace.trim_end_matches('/')
    )
}

/// The URI az ml sends for an input that is not `azureml:NAME:VERSION` read through the data
/// asset (`azureml:` + an ARM id loses its prefix; datastore paths and URLs stay).
pub fn plain_uri(input: &str) -> String {
    let input = input.trim();
    match input.strip_prefix("azureml:") {
        Some(rest) if rest.starts_with("/subscriptions/") => rest.to_string(),
        _ => input.to_string(),
    }
}

/// A batch job's status, from `GET {workspace}/jobs/{name}` (`properties.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Still running (or not started).
    Running,
    /// `Completed`.
    Completed,
    /// Ended otherwise (`Failed`, `Canceled`, `NotResponding`, …).
    Ended,
}

/// Classifies a job status as the SDK's `JobStatus` terminal states do.
pub fn job_outcome(status: &str) -> JobOutcome {
    match status {
        "Completed" => JobOutcome::Completed,
        "Failed" | "Canceled" | "NotResponding" | "Paused" | "Unknown" => JobOutcome::Ended,
        _ => JobOutcome::Running,
    }
}

/// The error a job GET carries, if any: the services' `errorMessage`s (ARM's job resource has
/// no error field of its own).
pub fn job_error(job: &Value) -> Option<String> {
    let services = job["properties"]["services"].as_object()?;
    let messages: Vec<String> = services
        .iter()
        .filter_map(|(name, s)| {
            s["errorMessage"]
                .as_str()
                .filter(|m| !m.trim().is_empty())
                .map(|m| format!("{name}: {m}"))
        })
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_statuses_are_classified() {
        assert_eq!(job_outcome("Completed"), JobOutcome::Completed);
        for s in ["Failed", "Canceled", "NotResponding"] {
            assert_eq!(job_outcome(s), JobOutcome::Ended);
        }
        for s in [
            "NotStarted",
            "Queued",
            "Preparing",
            "Running",
            "Finalizing",
            "Starting",
        ] {
            assert_eq!(job_outcome(s), JobOutcome::Running);
        }
        let job = json!({"properties": {"services": {"Studio": {"errorMessage": ""}, "Tracking": {"errorMessage": "boom"}}}});
        assert_eq!(job_error(&job).as_deref(), Some("Tracking: boom"));
        assert_eq!(job_error(&json!({})), None);
    }
}
