//! Actions: what a matched rule does. The plan types are plain data produced by the pure policy;
//! each action has one home that executes it: [`github`] (client, App auth, dispatch) and
//! [`azureml`] (translation and the rollout). The pipeline and `Reconcile` match on the plan's
//! kind: two actions with different lifecycles (one request vs. a rollout advanced over hours)
//! share no interface worth a trait.

pub mod azureml;
pub mod github;

use std::fmt;

use serde_json::Value;
use thiserror::Error;

pub use crate::domain::action::{ActionPlan, FollowPlan, GithubPlan, GithubRequest};

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
