//! A direct deployment, as a rule renders it for one version ([`AzureMlPlan`], stored in the
//! record): the target, the translated deployment body, the assets to register first, the
//! smoke test and how traffic moves. Pure.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::batch::BatchPlan;
use crate::config::{AzureMlAction, RolloutSpec};
use crate::deployment::assets::AssetPlan;

/// A fully rendered direct deployment. Stored in the ledger record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AzureMlPlan {
    /// Target workspace ARM id.
    pub workspace: String,
    /// Online endpoint name.
    pub endpoint: String,
    /// The new deployment's name.
    pub deployment: String,
    /// The model's ARM id in the target workspace.
    pub model_id: String,
    /// The deployment body (without `location`, filled from the workspace at deploy time).
    pub body: Value,
    /// The smoke-test request and the expected status.
    pub smoke_test: Option<SmokeTestPlan>,
    /// How traffic moves.
    pub rollout: RolloutSpec,
    /// What to register before the deployment PUT (local code, inline environment, data assets).
    #[serde(default, skip_serializing_if = "no_assets")]
    pub assets: Box<AssetPlan>,
    /// A batch endpoint rollout (`endpoint` is then a batch endpoint, `body` a batch deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Box<BatchPlan>>,
}

/// A smoke test, ready to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmokeTestPlan {
    /// JSON request body.
    pub request: Value,
    /// Expected HTTP status.
    pub expect_status: u16,
}

impl AzureMlPlan {
    /// The planned traffic steps, their bakes, judgements and approval, in words (dry runs).
    pub fn rollout_steps(&self) -> Vec<String> {
        if let Some(batch) = &self.batch {
            return self.batch_steps(batch);
        }
        let r = &self.rollout;
        let steps = r.traffic_steps();
        let mut out = Vec::new();
        if steps.is_empty() {
            out.push(format!(
                "rollout: 100% to {} once it is ready",
                self.deployment
            ));
            return out;
        }
        if r.mirror_percent > 0 {
            out.push(format!(
                "rollout: mirror {}% of traffic to {}, bake {} min",
                r.mirror_percent, self.deployment, r.bake_minutes
            ));
        }
        for (i, share) in steps.iter().enumerate() {
            let mut line = format!(
                "rollout step {} of {}: {share}% to {}, bake {} min",
                i + 1,
                steps.len(),
                self.deployment,
                r.bake_minutes
            );
            if let Some(a) = &r.analysis {
                line.push_str(&format!(
                    ", then judged on the last {} complete minutes of Azure Monitor metrics (on insufficient data: {}, at most {} min)",
                    a.window_minutes,
                    a.on_insufficient_data.as_str(),
                    a.max_bake_minutes
                ));
            }
            out.push(line);
        }
        if let Some(a) = &r.analysis {
            let endpoint = format!("{}/onlineEndpoints/{}", self.workspace, self.endpoint);
            out.push(format!(
                "analysis query: GET {endpoint}/providers/Microsoft.Insights/metrics?api-version={}&metricnames=RequestsPerMinute&aggregation=Average&interval=PT1M&timespan=START/END&$filter=deployment eq '*' and statusCode eq '*'&top={}",
                crate::azure::monitor::METRICS_API_VERSION,
                crate::azure::monitor::TOP_SERIES
            ));
            out.push(format!(
                "analysis query: GET {endpoint}/providers/Microsoft.Insights/metrics?api-version={}&metricnames={}&aggregation=Average&interval=PT1M&timespan=START/END&$filter=deployment eq '*'&top={}",
                crate::azure::monitor::METRICS_API_VERSION,
                a.latency.metric_name(),
                crate::azure::monitor::TOP_SERIES
            ));
        }
        if let Some(approval) = &r.approval {
            out.push(format!(
                "approval: wait for tag {}=true on the model version (or `aml-autodeploy approve`), at most {} h",
                approval.tag, approval.timeout_hours
            ));
        }
        out.push(format!("rollout: then 100% to {}", self.deployment));
        out
    }

    /// The deployment PUT body once its assets are registered: `code_id` and `environment_id`
    /// are the registered (or resolved) ids, `location` the workspace's region.
    pub fn deployment_body(
        &self,
        code_id: Option<&str>,
        environment_id: Option<&str>,
        location: &str,
    ) -> Value {
        let mut body = self.body.clone();
        body["location"] = json!(location);
        if let Some(id) = code_id {
            body["properties"]["codeConfiguration"]["codeId"] = json!(id);
        }
        if let Some(id) = environment_id {
            body["properties"]["environmentId"] = json!(id);
        }
        body
    }
}

impl AzureMlPlan {
    /// A batch rollout's steps in words, for dry runs.
    fn batch_steps(&self, batch: &BatchPlan) -> Vec<String> {
        let plan = self;
        let mut out = vec![format!(
            "create batch deployment {} on batch endpoint {} and wait for it",
            plan.deployment, plan.endpoint
        )];
        if let Some(job) = &batch.smoke_job {
            out.push(format!(
                "smoke job: invoke {} (not the default) with input {}{}, follow the job; it must complete within {} min",
                plan.deployment,
                job.input,
                job.input_type
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default(),
                job.timeout_minutes
            ));
        }
        if let Some(approval) = &plan.rollout.approval {
            out.push(format!(
                "approval: wait for tag {}=true on the model version (or `aml-autodeploy approve`), at most {} h",
                approval.tag, approval.timeout_hours
            ));
        }
        out.push(format!(
            "make {} the default of {}: GET the batch endpoint, PUT it back with defaults.deploymentName",
            plan.deployment, plan.endpoint
        ));
        out.push(format!(
            "keep the previous default for {} min (rollback), then delete it",
            plan.rollout.retain_previous_minutes
        ));
        out
    }
}

fn no_assets(assets: &AssetPlan) -> bool {
    assets.is_empty()
}

/// Renders the plan for one model version.
pub fn plan(
    action: &AzureMlAction,
    event_workspace: &str,
    model_name: &str,
    model_version: &str,
    rendered_name: &str,
) -> AzureMlPlan {
    let workspace = action
        .target_workspace
        .as_ref()
        .map(|w| w.to_string())
        .unwrap_or_else(|| event_workspace.to_string());
    let workspace = workspace.trim_end_matches('/').to_string();
    let model_id = format!("{workspace}/models/{model_name}/versions/{model_version}");
    // References written as azureml:NAME:VERSION without a target workspace resolve in the event's.
    let mut body: Value = serde_json::from_str(
        &action
            .template
            .body
            .to_string()
            .replace("{workspace}", &workspace),
    )
    .unwrap_or_else(|_| action.template.body.clone());
    // A batch deployment references its model as an asset reference, an online one by id.
    body["properties"]["model"] = if action.batch.is_some() {
        json!({"referenceType": "Id", "assetId": model_id})
    } else {
        json!(model_id)
    };
    let deployment = deployment_name(rendered_name, model_version);
    let template = &action.template.assets;
    let data = match &template.collector {
        Some(collector) => {
            let data = collector.data_assets(&action.endpoint, &deployment);
            body["properties"]["dataCollector"] = collector.body(&data, &workspace);
            data
        }
        None => Vec::new(),
    };
    AzureMlPlan {
        assets: Box::new(AssetPlan {
            data,
            // Hashed now (once per listing; see `LocalCode::hashed`), so the record holds the
            // hash the upload must match.
            code: template
                .code
                .as_ref()
                .map(crate::deployment::assets::LocalCode::hashed),
            environment: template.environment.clone(),
        }),
        workspace,
        endpoint: action.endpoint.clone(),
        deployment,
        model_id,
        body,
        smoke_test: action.smoke_test.as_ref().map(|s| SmokeTestPlan {
            request: s.request.clone(),
            expect_status: s.expect_status,
        }),
        rollout: (*action.rollout).clone(),
        batch: action.batch.as_ref().map(|b| {
            Box::new(BatchPlan {
                smoke_job: b.smoke_job.clone(),
            })
        }),
    }
}

/// Makes `wanted` a valid deployment name (3–32 characters,
/// `^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`): `_` and `.` become `-`, other characters go, the
/// version is kept when truncating, and a short hash of the original name is added whenever it had
/// to change, so two different names never collapse into one.
pub fn deployment_name(wanted: &str, version: &str) -> String {
    let clean = |s: &str| -> String {
        let mut out = String::new();
        for c in s.chars() {
            let c = if c == '_' || c == '.' { '-' } else { c };
            if c.is_ascii_alphanumeric() || (c == '-' && !out.ends_with('-')) {
                out.push(c);
            }
        }
        out.trim_matches('-').to_string()
    };
    if crate::config::valid_azureml_name(wanted) {
        return wanted.to_string();
    }
    let hash: String = Sha256::digest(wanted.as_bytes())
        .iter()
        .take(2)
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = clean(wanted);
    let version = clean(version);
    // Split off the version when the name ends with it, so it survives truncation.
    let (head, tail) = match name.strip_suffix(version.as_str()) {
        Some(head) if !version.is_empty() => {
            (head.trim_end_matches('-').to_string(), version.clone())
        }
        _ => (name.clone(), String::new()),
    };
    // Layout: {head}-{tail}-{hash}, at most 32 characters, a letter first. The hash always
    // stays; a long version is shortened from the middle (both ends usually differ).
    let head = if head.starts_with(|c: char| c.is_ascii_alphabetic()) {
        head
    } else {
        format!("d{head}")
    };
    let budget = 32 - hash.len() - 1;
    let mut tail = tail;
    if !tail.is_empty() {
        let max_tail = budget.saturating_sub(2).min(16);
        if tail.len() > max_tail {
            let keep = max_tail.saturating_sub(1) / 2;
            tail = format!(
                "{}-{}",
                &tail[..keep],
                &tail[tail.len() - (max_tail - keep - 1)..]
            );
        }
    }
    let room_for_head = budget - if tail.is_empty() { 0 } else { tail.len() + 1 };
    let mut head: String = head.chars().take(room_for_head.max(1)).collect();
    while head.ends_with('-') {
        head.pop();
    }
    let mut parts = vec![head];
    if !tail.is_empty() {
        parts.push(tail);
    }
    parts.push(hash);
    let result = parts.join("-").replace("--", "-");
    if crate::config::valid_azureml_name(&result) {
        result
    } else {
        format!("d-{}", &result[result.len().saturating_sub(30)..]).replace("--", "-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::valid_azureml_name;

    #[test]
    fn deployment_names_follow_the_azure_ml_rule() {
        let cases = [
            ("fraud-12", "12", "fraud-12"),
            ("credit_risk.v2-7", "7", ""),
            (
                "fraud-2024-11-26-nightly-build-000000001",
                "2024-11-26-nightly-build-000000001",
                "",
            ),
            ("9lives-3", "3", ""),
            (
                "a-very-long-model-name-that-goes-on-and-on-1234",
                "1234",
                "",
            ),
            ("x", "1", ""),
        ];
        for (wanted, version, exact) in cases {
            let name = deployment_name(wanted, version);
            assert!(valid_azureml_name(&name), "{wanted} → {name}");
            if !exact.is_empty() {
                assert_eq!(name, exact);
            }
            if wanted.len() > 32 && version.len() <= 8 {
                assert!(
                    name.contains(version),
                    "the version survives truncation: {name}"
                );
            }
        }
        // Long versions that differ only at the end stay distinct, across models too.
        let v1 = "2024-11-26-nightly-build-000000001";
        let v2 = "2024-11-26-nightly-build-000000002";
        assert_ne!(
            deployment_name(&format!("fraud-{v1}"), v1),
            deployment_name(&format!("fraud-{v2}"), v2)
        );
        assert_ne!(
            deployment_name(&format!("fraud-{v1}"), v1),
            deployment_name(&format!("credit-{v1}"), v1)
        );
        // Names that sanitise alike stay distinct.
        assert_ne!(
            deployment_name("credit_risk-7", "7"),
            deployment_name("credit.risk-7", "7")
        );
        assert_ne!(
            deployment_name("a-very-long-model-name-that-goes-on-and-on-alpha-7", "7"),
            deployment_name("a-very-long-model-name-that-goes-on-and-on-beta-7", "7")
        );
    }
}
