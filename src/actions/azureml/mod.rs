//! Direct deployment to Azure ML managed online endpoints: the plan a rule renders
//! ([`AzureMlPlan`]), the `az ml` YAML translation ([`translate`]) and the rollout state machine
//! ([`rollout`]) that the event handler starts and `Reconcile` advances.

pub mod rollout;
pub mod translate;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{AzureMlAction, RolloutSpec};

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
}

/// A smoke test, ready to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmokeTestPlan {
    /// JSON request body.
    pub request: Value,
    /// Expected HTTP status.
    pub expect_status: u16,
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
    body["properties"]["model"] = json!(model_id);
    AzureMlPlan {
        workspace,
        endpoint: action.endpoint.clone(),
        deployment: deployment_name(rendered_name, model_version),
        model_id,
        body,
        smoke_test: action.smoke_test.as_ref().map(|s| SmokeTestPlan {
            request: s.request.clone(),
            expect_status: s.expect_status,
        }),
        rollout: action.rollout,
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
    let mut name = clean(wanted);
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name = format!("d-{name}");
    }
    let unchanged = name == wanted && name.len() <= 32 && name.len() >= 3;
    if unchanged {
        return name;
    }
    let hash: String = Sha256::digest(wanted.as_bytes())
        .iter()
        .take(2)
        .map(|b| format!("{b:02x}"))
        .collect();
    let version = clean(version);
    let suffix = if !version.is_empty() && name.ends_with(&version) {
        format!("-{version}-{hash}")
    } else {
        format!("-{hash}")
    };
    let mut head = if !version.is_empty() && name.ends_with(&version) {
        name[..name.len() - version.len()]
            .trim_end_matches('-')
            .to_string()
    } else {
        name.clone()
    };
    let room = 32usize.saturating_sub(suffix.len());
    head.truncate(room);
    let head = head.trim_end_matches('-');
    let head = if head.is_empty() { "d" } else { head };
    let mut result = format!("{head}{suffix}");
    result.truncate(32);
    let result = result.trim_end_matches('-').to_string();
    if result.len() < 3 {
        format!("d-{hash}")
    } else {
        result
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
            if wanted.len() > 32 {
                assert!(
                    name.contains(version),
                    "the version survives truncation: {name}"
                );
            }
        }
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
