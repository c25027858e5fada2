//! What a matched rule does for one version, rendered and stored in its record so `Reconcile` can
//! act again without the event or the config. Plain data (no secrets); executed by `actions`.

use serde_json::{Map, Value};

use crate::config::RepoSlug;
use crate::domain::azureml;

/// A fully rendered action. Stored in the ledger record, so `Reconcile` can retry it without the
/// event or the config (it holds no secrets).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionPlan {
    /// A GitHub dispatch.
    Github(GithubPlan),
    /// A direct deployment with a rollout.
    #[serde(rename = "azureml")]
    AzureMl(azureml::AzureMlPlan),
}

/// A GitHub dispatch: which repository, which API, which body.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GithubPlan {
    /// `owner/repo`.
    pub repository: RepoSlug,
    /// The request.
    pub request: GithubRequest,
    /// Whether and how long `Reconcile` follows the run (`github.follow`, `github.follow_hours`).
    /// Stored only when not the default, so plans read the same as before following existed.
    #[serde(default, skip_serializing_if = "FollowPlan::is_default")]
    pub follow: FollowPlan,
}

/// Following the run a dispatch started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FollowPlan {
    /// Whether the run is followed.
    pub enabled: bool,
    /// For at most this many hours after the dispatch.
    pub hours: u32,
}

impl Default for FollowPlan {
    fn default() -> Self {
        Self {
            enabled: true,
            hours: crate::config::DEFAULT_FOLLOW_HOURS,
        }
    }
}

impl FollowPlan {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The two dispatch APIs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "api", rename_all = "snake_case")]
pub enum GithubRequest {
    /// `POST /repos/{o}/{r}/dispatches`.
    RepositoryDispatch {
        /// `event_type`.
        event_type: String,
        /// `client_payload`.
        client_payload: Value,
    },
    /// `POST /repos/{o}/{r}/actions/workflows/{workflow}/dispatches`.
    WorkflowDispatch {
        /// File name or id.
        workflow: String,
        /// `ref`.
        git_ref: String,
        /// `inputs`.
        inputs: Map<String, Value>,
    },
}

impl ActionPlan {
    /// A short description, e.g. `send repository_dispatch "deploy-model" to contoso/ml-deploy`.
    pub fn describe(&self) -> String {
        match self {
            ActionPlan::Github(GithubPlan {
                repository,
                request,
                ..
            }) => match request {
                GithubRequest::RepositoryDispatch { event_type, .. } => {
                    format!("send repository_dispatch {event_type:?} to {repository}")
                }
                GithubRequest::WorkflowDispatch {
                    workflow, git_ref, ..
                } => format!(
                    "run workflow {workflow} on {git_ref} in {repository} (workflow_dispatch)"
                ),
            },
            ActionPlan::AzureMl(plan) => {
                let model = plan
                    .model_id
                    .rsplit("/models/")
                    .next()
                    .unwrap_or(&plan.model_id)
                    .replace("/versions/", ":");
                match &plan.batch {
                    Some(_) => format!(
                        "deploy {model} as {} on batch endpoint {} (then made its default)",
                        plan.deployment, plan.endpoint,
                    ),
                    None => format!(
                        "deploy {model} as {} on endpoint {} ({})",
                        plan.deployment,
                        plan.endpoint,
                        plan.rollout.strategy.as_str()
                    ),
                }
            }
        }
    }
}
