//! The GitHub action: `repository_dispatch` or `workflow_dispatch`, what the pipeline and
//! `Reconcile` drive (this file: the dry-run view, the send, the takeover check), and its rooms:
//! [`client`] (one call with rate-limit-aware retries inside a total time budget), `auth` (GitHub
//! App JWTs and installation tokens), `answers` (reading GitHub's replies) and [`dispatch`]
//! (sending a claimed record's dispatch and recording the outcome in the ledger), and [`follow`]
//! (reading the run a dispatch started until it ends).
//!
//! Written on `reqwest` rather than `octocrab`: we call three endpoints, need exact control of the
//! retry budget (Event Grid stops waiting after 30 s), and octocrab's App-auth and retry layers
//! would each add their own waiting.

mod answers;
mod auth;
pub mod client;
pub mod dispatch;
pub mod follow;
mod settings;
mod tokens;

use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{ActionError, ActionOutcome, ActionPlan, GithubPlan, GithubRequest, PreparedRequest};
use answers::refusal;
pub use client::{API_VERSION, GithubClient};

use crate::logs::InvocationLog;
pub use settings::{GithubAppCredential, GithubCredential, GithubSettings};

impl GithubClient {
    fn endpoint(&self, plan: &GithubPlan) -> (String, Value) {
        let repo = &plan.repository;
        match &plan.request {
            GithubRequest::RepositoryDispatch {
                event_type,
                client_payload,
            } => (
                format!(
                    "{}/repos/{}/{}/dispatches",
                    self.api_url,
                    repo.owner(),
                    repo.name()
                ),
                json!({ "event_type": event_type, "client_payload": client_payload }),
            ),
            GithubRequest::WorkflowDispatch {
                workflow,
                git_ref,
                inputs,
            } => (
                format!(
                    "{}/repos/{}/{}/actions/workflows/{}/dispatches",
                    self.api_url,
                    repo.owner(),
                    repo.name(),
                    workflow
                ),
                json!({ "ref": git_ref, "inputs": inputs, "return_run_details": true }),
            ),
        }
    }
}

/// What the pipeline and `Reconcile` drive: the dry-run view, the send, the takeover check.
impl GithubClient {
    /// The exact request `execute` would send, secrets redacted (for dry runs).
    pub fn prepare(&self, plan: &ActionPlan) -> PreparedRequest {
        let ActionPlan::Github(plan) = plan else {
            return PreparedRequest {
                method: "NONE",
                url: String::new(),
                headers: Vec::new(),
                body: Value::Null,
            };
        };
        let (url, body) = self.endpoint(plan);
        let mut headers: Vec<(String, String)> = self
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        headers.push(("authorization".into(), self.credential_label().into()));
        headers.push(("content-type".into(), "application/json".into()));
        PreparedRequest {
            method: "POST",
            url,
            headers,
            body,
        }
    }

    /// Sends the dispatch, retrying transient failures within the configured budget.
    pub async fn execute(
        &self,
        plan: &ActionPlan,
        log: &InvocationLog,
    ) -> Result<ActionOutcome, ActionError> {
        let ActionPlan::Github(plan) = plan else {
            return Err(ActionError::Credentials("not a GitHub action".into()));
        };
        self.dispatch(plan, log).await
    }

    /// After a crash between sending and recording, whether the dispatch already took effect:
    /// the URL (and id) of a workflow run that carries one of `event_ids`, started since `since`.
    /// `None` when there is none, or when it cannot tell (then a takeover sends again).
    pub async fn find_existing_run(
        &self,
        plan: &ActionPlan,
        event_ids: &[String],
        since: OffsetDateTime,
        log: &InvocationLog,
    ) -> Result<Option<(String, Option<u64>)>, ActionError> {
        let ActionPlan::Github(plan) = plan else {
            return Ok(None);
        };
        // repository_dispatch has no run id and no idempotency key: nothing to look for (the
        // documented duplicate window; the example workflow's concurrency group absorbs it).
        let GithubRequest::WorkflowDispatch {
            workflow, inputs, ..
        } = &plan.request
        else {
            return Ok(None);
        };
        // Only runs that carry the event id (an input, shown in the example's run-name) can be
        // recognised.
        let carried: Vec<&String> = event_ids
            .iter()
            .filter(|id| inputs.values().any(|v| v.as_str() == Some(id.as_str())))
            .collect();
        if carried.is_empty() {
            log.warn(
                "takeover cannot check for an existing workflow run: the rule's inputs do not pass {eventId}; sending again",
            );
            return Ok(None);
        }
        let deadline = Instant::now() + self.budget;
        let bearer = self.bearer(&plan.repository, deadline, log).await?;
        let created = (since - time::Duration::minutes(1))
            .format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .unwrap_or_default();
        let url = format!(
            "{}/repos/{}/{}/actions/workflows/{workflow}/runs?event=workflow_dispatch&per_page=100&created=%3E%3D{created}",
            self.api_url,
            plan.repository.owner(),
            plan.repository.name()
        );
        let reply = self
            .call(Method::GET, &url, &bearer, None, deadline, log)
            .await?;
        if !reply.status.is_success() {
            return Err(refusal(
                &reply,
                self.http.redactor(),
                "listing workflow runs",
            ));
        }
        let runs: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        Ok(runs["workflow_runs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|run| {
                let title = format!(
                    "{} {}",
                    run["display_title"].as_str().unwrap_or_default(),
                    run["name"].as_str().unwrap_or_default()
                );
                carried.iter().any(|id| title.contains(id.as_str()))
            })
            .and_then(|run| {
                run["html_url"]
                    .as_str()
                    .map(|url| (url.to_string(), run["id"].as_u64()))
            }))
    }
}
