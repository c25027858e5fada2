//! The failed deployment's logs (`rollout.logs`): read once, after traffic is back where it was
//! and before the deployment is deleted (its logs go with it), or before a manual rollback moves
//! traffic away from it. Redacted, then bounded (the last 200 lines / 16 KB per container).
//! Reading them never fails a rollout nor changes where it goes: a call that fails is noted in
//! the record instead, and all of it takes at most [`LOGS_BUDGET`].

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::engine::RolloutEngine;
use crate::azure::arm::ArmError;
use crate::domain::rollout::RolloutState;
use crate::domain::tail::{ContainerLogs, DeploymentLogs, MAX_LOG_LINES};
use crate::logs::InvocationLog;

/// The longest reading the logs may take, all containers together.
pub const LOGS_BUDGET: Duration = Duration::from_secs(20);
/// The most bytes of one `getLogs` answer read (the service's tail of 200 lines is far less).
const MAX_LOGS_ANSWER: usize = 1024 * 1024;
/// The container that serves the model (`score.py`'s `init()` and `run()`).
pub const INFERENCE_SERVER: &str = "InferenceServer";
/// The container that downloads the model and the code before the server starts.
pub const STORAGE_INITIALIZER: &str = "StorageInitializer";

/// Words of a failure that point at the model or code download (the storage initializer).
const DOWNLOAD_WORDS: &[&str] = &[
    "download",
    "storage",
    "initializer",
    "mount",
    "blob",
    "artifact",
];

/// Which containers' logs explain `failure`: the inference server always, and the storage
/// initializer too when the failure is about downloading the model or the code.
pub fn containers_for(failure: &str) -> Vec<&'static str> {
    let failure = failure.to_ascii_lowercase();
    if DOWNLOAD_WORDS.iter().any(|w| failure.contains(w)) {
        vec![INFERENCE_SERVER, STORAGE_INITIALIZER]
    } else {
        vec![INFERENCE_SERVER]
    }
}

impl RolloutEngine {
    /// Reads the logs of `deployment` on `endpoint` for `failure` (see [`containers_for`]),
    /// within [`LOGS_BUDGET`]. Never fails: what could not be read says why.
    pub async fn read_logs(
        &self,
        workspace: &str,
        endpoint: &str,
        deployment: &str,
        failure: &str,
        log: &InvocationLog,
    ) -> DeploymentLogs {
        let deadline = Instant::now() + LOGS_BUDGET;
        let mut containers = Vec::new();
        for container in containers_for(failure) {
            let read = match crate::event::WorkspaceId::parse(workspace) {
                Err(e) => Err(format!("workspace id {e}")),
                Ok(workspace) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let call = self.arm.deployment_logs(
                        &workspace,
                        endpoint,
                        deployment,
                        container,
                        MAX_LOG_LINES as u32,
                        MAX_LOGS_ANSWER,
                    );
                    match tokio::time::timeout(left, call).await {
                        Ok(Ok(content)) => Ok(content.unwrap_or_default()),
                        Ok(Err(e)) => Err(describe(&e)),
                        Err(_) => Err(format!("no answer within {}s", LOGS_BUDGET.as_secs())),
                    }
                }
            };
            containers.push(match read {
                // Redacted whole, then cut: a secret is never half shown.
                Ok(text) => ContainerLogs::from_text(container, &self.arm.redactor().redact(&text)),
                Err(why) => {
                    log.warn(format!(
                        "could not read the {container} logs of {deployment}: {why}; the rollout goes on"
                    ));
                    ContainerLogs::problem(container, &why)
                }
            });
        }
        DeploymentLogs {
            deployment: deployment.to_string(),
            read_at: OffsetDateTime::now_utc(),
            containers,
        }
    }

    /// In a rollout that failed: reads the new deployment's logs once (a step of its own, so they
    /// are recorded before the deployment is deleted).
    pub(super) async fn keep_logs(&self, state: &mut RolloutState, log: &InvocationLog) {
        // Once: an unreadable workspace id is noted like any other failure (read_logs says so),
        // so the step after this one never comes back here.
        if state.logs.is_some() {
            return;
        }
        let failure = state.failure.clone().unwrap_or_default();
        let logs = self
            .read_logs(
                &state.workspace,
                &state.endpoint,
                &state.deployment,
                &failure,
                log,
            )
            .await;
        log.info(format!(
            "read the logs of {} before removing it ({})",
            state.deployment,
            logs.containers
                .iter()
                .map(|c| match &c.problem {
                    None => format!("{}: {} lines", c.container, c.lines.len()),
                    Some(_) => format!("{}: unreadable", c.container),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ));
        state.logs = Some(logs);
    }
}

/// An ARM error as the record notes it (ARM's messages are redacted by the client).
fn describe(e: &ArmError) -> String {
    match e {
        ArmError::Http {
            status,
            code,
            message,
            ..
        } => format!("HTTP {status} {code}: {message}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_initializer_is_read_when_the_failure_is_about_downloading() {
        let both = vec![INFERENCE_SERVER, STORAGE_INITIALIZER];
        let server = vec![INFERENCE_SERVER];
        let cases = [
            (
                "ARM operation Failed: ResourceNotReady: User container has crashed or terminated",
                &server,
            ),
            ("smoke test of credit-risk-4 answered HTTP 500", &server),
            (
                "ARM operation Failed: ModelDownloadFailed: Failed to download the model",
                &both,
            ),
            (
                "StorageInitializer: could not mount the code configuration",
                &both,
            ),
            (
                "ARM operation Failed: BadRequest: Blob azureml/model.pkl not found",
                &both,
            ),
            ("", &server),
        ];
        for (failure, expected) in cases {
            assert_eq!(&containers_for(failure), expected, "{failure}");
        }
    }
}
