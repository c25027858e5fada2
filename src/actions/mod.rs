//! Actions: what a matched rule does. The plan types are plain data produced by the pure policy;
//! each action has one home that executes it: [`github`] (client, App auth, dispatch) and
//! [`azureml`] (translation and the rollout). The pipeline and `Reconcile` match on the plan's
//! kind: two actions with different lifecycles (one request vs. a rollout advanced over hours)
//! share no interface worth a trait.

pub mod azureml;
pub mod github;

use std::fmt;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::config::RepoSlug;

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
            ActionPlan::AzureMl(plan) if plan.batch.is_some() => format!(
                "deploy {} as {} on batch endpoint {} (then made its default)",
                plan.model_id
                    .rsplit("/models/")
                    .next()
                    .unwrap_or(&plan.model_id)
                    .replace("/versions/", ":"),
                plan.deployment,
                plan.endpoint,
            ),
            ActionPlan::AzureMl(plan) => format!(
                "deploy {} as {} on endpoint {} ({})",
                plan.model_id
                    .rsplit("/models/")
                    .next()
                    .unwrap_or(&plan.model_id)
                    .replace("/versions/", ":"),
                plan.deployment,
                plan.endpoint,
                plan.rollout.strategy.as_str()
            ),
        }
    }
}

/// The HTTP request an action would send, for dry runs. Secrets are already redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRequest {
    /// HTTP method.
    pub method: &'static str,
    /// Full URL.
    pub url: String,
    /// Headers, with credentials redacted.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Value,
}

impl fmt::Display for PreparedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {}", self.method, self.url)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        writeln!(f)?;
        let body = serde_json::to_string_pretty(&self.body).map_err(|_| fmt::Error)?;
        writeln!(f, "{body}")
    }
}

/// What a completed action reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActionOutcome {
    /// The final HTTP status.
    pub status: u16,
    /// How many requests it took (including retries).
    pub attempts: u32,
    /// `workflow_dispatch` with run details: the run's web URL.
    pub run_url: Option<String>,
    /// `workflow_dispatch` with run details: the run id.
    pub run_id: Option<u64>,
}

/// Why an action could not be completed. Every variant answers the invocation with a non-2xx so
/// Event Grid redelivers later; [`ActionError::is_transient`] tells whether waiting alone can fix it.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum ActionError {
    /// GitHub could not be reached or kept failing (5xx, 429, rate limits, timeouts) within the budget.
    #[error("GitHub unavailable: {0}")]
    Unavailable(String),
    /// GitHub refused the request (401/403/404/422...): an operator must fix a token, repository or workflow.
    #[error("GitHub refused the request: HTTP {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// GitHub's message plus a hint.
        message: String,
    },
    /// The GitHub credential settings are missing or unusable.
    #[error("GitHub credentials: {0}")]
    Credentials(String),
}

impl ActionError {
    /// Whether retrying later without any change can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ActionError::Unavailable(_))
    }
}
