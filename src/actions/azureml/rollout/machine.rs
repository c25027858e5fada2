//! The phase machine: one step per call, dispatched on the phase, with failure handling that
//! decides where a failure leads (see the diagram in the module above).

use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

use super::engine::{Next, RolloutEngine};
use crate::azure::arm::{ArmError, Operation};
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::{PendingOperation, Phase, RolloutState};
use crate::event::WorkspaceId;
use crate::logs::InvocationLog;

/// How often a bake re-runs the smoke test (at most; Reconcile's timer sets the real pace).
pub(super) const PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// Wait after a transient error (or `AUTODEPLOY_RETRY_FIRST_DELAY_SECS` when shorter).
pub(super) const TRANSIENT_RETRY: Duration = Duration::from_secs(30);

/// Refused traffic restores before a rollout gives up and asks for an operator.
pub(super) const MAX_RESTORE_FAILURES: u32 = 3;

/// Why a step did not complete.
pub(super) enum StepError {
    /// Try the same step later.
    Transient(String),
    /// The rollout failed: roll back.
    Fail { why: String, configuration: bool },
}

impl StepError {
    pub(super) fn from_arm(e: ArmError) -> Self {
        if e.is_transient() {
            StepError::Transient(e.to_string())
        } else {
            StepError::Fail {
                configuration: is_configuration(&e),
                why: e.to_string(),
            }
        }
    }

    pub(super) fn from_arm_permanent(e: ArmError, doing: &str) -> Self {
        match StepError::from_arm(e) {
            StepError::Fail { why, configuration } => StepError::Fail {
                why: format!("{doing}: {why}"),
                configuration,
            },
            transient => transient,
        }
    }
}

/// Quota, capacity and validation errors need an operator; retrying them forever helps nobody.
/// The service often reports quota as `BadRequest` with the detail only in the message ("Not
/// enough quota available…"), so the message counts too.
pub(super) fn is_configuration(e: &ArmError) -> bool {
    let text = match e {
        ArmError::OperationFailed { code, message, .. } | ArmError::Http { code, message, .. } => {
            format!("{code} {message}").to_ascii_lowercase()
        }
        _ => return false,
    };
    [
        "quota",
        "outofcapacity",
        "validation",
        "badargument",
        "notfound",
        "invalid",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

pub(super) fn ws(id: &str) -> Result<WorkspaceId, StepError> {
    WorkspaceId::parse(id).map_err(|e| StepError::Fail {
        why: format!("workspace id {e}"),
        configuration: true,
    })
}

/// Whether version `ours` is older than `live` (numeric versions only; free-text ones never are).
pub(super) fn older_version(ours: &str, live: &str) -> bool {
    match (ours.parse::<u64>(), live.parse::<u64>()) {
        (Ok(a), Ok(b)) => a < b,
        _ => false,
    }
}

impl RolloutEngine {
    /// One step. Unless `forced`, a version older than the one live on the endpoint is refused.
    /// A step that can take long (an upload) stops starting new work at `deadline`.
    pub async fn step(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        forced: bool,
        deadline: std::time::Instant,
        log: &InvocationLog,
    ) -> Next {
        let result = match state.phase {
            // A batch endpoint has a default instead of traffic: its own phases (rollout/batch/).
            _ if plan.batch.is_some() => self.batch_step(plan, state, forced, deadline, log).await,
            Phase::Queued => self.begin(plan, state, forced, log).await,
            Phase::PreparingAssets => self.preparing(plan, state, deadline, log).await,
            Phase::Creating => self.creating(plan, state, log).await,
            Phase::SmokeTest => self.smoke_phase(plan, state, log).await,
            Phase::Mirroring | Phase::Canary => self.baking(plan, state, log).await,
            Phase::AwaitingApproval => self.awaiting_approval(plan, state, log).await,
            Phase::Promoting => self.promoting(plan, state, log).await,
            Phase::Retaining => Ok(self.retaining(state)),
            Phase::Cleaning => self.cleaning(state, log).await,
            Phase::RollingBack => self.rolling_back(plan, state, log).await,
            Phase::RemovingFailed => self.removing_failed(state, log).await,
            Phase::Done | Phase::RolledBack | Phase::Failed => Ok(Next::Finished),
        };
        match result {
            Ok(next) => next,
            Err(StepError::Transient(why)) => {
                log.warn(format!(
                    "rollout of {} on {}: {why}; retrying later",
                    state.deployment, state.endpoint
                ));
                state.next_step = format!(
                    "retry {} after a transient error: {why}",
                    state.phase.as_str()
                );
                // Never zero: a transient failure ends this visit (a zero wait would repeat the
                // failing step within it, as a service's `Retry-After: 0` does).
                Next::After(
                    TRANSIENT_RETRY
                        .min(self.ledger.options.first_retry_delay)
                        .max(Duration::from_millis(1)),
                )
            }
            Err(StepError::Fail { why, configuration }) => {
                self.fail(state, why, configuration, log);
                Next::Now
            }
        }
    }

    pub(super) fn fail(
        &self,
        state: &mut RolloutState,
        why: String,
        configuration: bool,
        log: &InvocationLog,
    ) {
        log.error(format!(
            "rollout of {} on {} failed: {why}",
            state.deployment, state.endpoint
        ));
        state.failure = Some(why);
        state.configuration_problem = configuration;
        state.operation = None;
        state.hold_until = None;
        state.pending = None;
        state.phase = match state.phase {
            // Nothing was deployed yet (registered assets are harmless and reusable).
            Phase::Queued | Phase::PreparingAssets => Phase::Failed,
            // Traffic may have changed: restore it, then remove the failed deployment.
            Phase::Mirroring | Phase::Canary | Phase::AwaitingApproval | Phase::Promoting => {
                Phase::RollingBack
            }
            // Promoted already: a failed cleanup must never touch the live deployment.
            Phase::Retaining | Phase::Cleaning => {
                log.warn(format!(
                    "cleanup on {} failed; the previous deployments ({}) may need deleting by hand",
                    state.endpoint,
                    state.cleanup.join(", ")
                ));
                state.cleanup.clear();
                Phase::Done
            }
            Phase::RollingBack => Phase::RollingBack,
            Phase::RemovingFailed | Phase::RolledBack => Phase::RolledBack,
            // The deployment exists (perhaps Failed) but never got traffic.
            _ => Phase::RemovingFailed,
        };
        state.next_step = match state.phase {
            Phase::RollingBack => "restore the previous traffic".into(),
            Phase::RemovingFailed => format!("delete the failed deployment {}", state.deployment),
            _ => "nothing".into(),
        };
    }

    pub(super) fn track(
        &self,
        state: &mut RolloutState,
        operation: Operation,
        purpose: &str,
    ) -> Next {
        match operation {
            Operation::Done(_) => {
                state.operation = None;
                Next::Now
            }
            Operation::Pending {
                poll_url,
                via_location,
                final_url,
                retry_after,
            } => {
                state.operation = Some(PendingOperation {
                    purpose: purpose.into(),
                    poll_url: poll_url.to_string(),
                    via_location,
                    final_url: final_url.map(|u| u.to_string()),
                });
                Next::After(retry_after)
            }
        }
    }

    /// Polls the pending operation once: `Ok(None)` when done (or none), `Ok(Some(next))` to wait.
    pub(super) async fn poll(
        &self,
        state: &mut RolloutState,
    ) -> Result<Option<(Next, Option<Value>)>, ArmError> {
        let Some(pending) = state.operation.clone() else {
            return Ok(None);
        };
        let parse = |u: &str| Url::parse(u).map_err(|_| ArmError::ForeignUrl(u.to_string()));
        let operation = Operation::Pending {
            poll_url: parse(&pending.poll_url)?,
            via_location: pending.via_location,
            final_url: pending.final_url.as_deref().map(parse).transpose()?,
            retry_after: Duration::ZERO,
        };
        match self.arm.poll(&operation).await? {
            Operation::Pending { retry_after, .. } => Ok(Some((Next::After(retry_after), None))),
            Operation::Done(value) => {
                state.operation = None;
                Ok(Some((Next::Now, value)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically_only() {
        assert!(older_version("9", "10"));
        assert!(!older_version("10", "9"));
        assert!(!older_version("v2", "v10"));
    }
}
