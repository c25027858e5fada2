//! `awaiting_approval`: after the last step passed, a person approves before 100%: the model
//! version's tag (`rollout.approval.tag: true`, set in the studio or with `az ml model update`), or
//! `aml-autodeploy approve` / `reject`. Not approved within `timeout_hours`: rolled back.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::machine::*;
use super::*;
use crate::actions::azureml::AzureMlPlan;
use crate::config::ApprovalSpec;
use crate::ledger::record::rfc3339;
use crate::logs::InvocationLog;

/// When a waiting rollout re-reads the tag: the next visit, no sooner than
/// `AUTODEPLOY_MIN_STEP_SECS` (which the deployer applies); never zero (that would re-read
/// within the same visit).
const APPROVAL_RECHECK: Duration = Duration::from_millis(1);

/// The approval a rollout waits for. Stored in the record's `rollout.approval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalState {
    /// When the rollout began waiting.
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    /// The tag that approves.
    pub tag: String,
    /// Rolled back when not approved by then.
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    /// The decision, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ApprovalDecision>,
}

/// Approved or rejected, by whom, when, how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    /// Approved (else rejected).
    pub approved: bool,
    /// Who: the identity that ran `approve`/`reject` when known, or `tag NAME`.
    pub by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl RolloutEngine {
    /// Enters `awaiting_approval`.
    pub(super) fn ask_approval(
        &self,
        plan: &AzureMlPlan,
        spec: &ApprovalSpec,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) {
        let now = OffsetDateTime::now_utc();
        let deadline = now + time::Duration::seconds_f64(spec.timeout_hours * 3600.0);
        state.phase = Phase::AwaitingApproval;
        state.hold_until = Some(deadline);
        state.approval = Some(ApprovalState {
            requested_at: now,
            tag: spec.tag.clone(),
            deadline,
            decision: None,
        });
        state.next_step = approval_wait(plan, spec, deadline);
        log.info(format!(
            "{} passed every step; waiting for approval: tag {}=true on {}, or `aml-autodeploy approve {}` (until {})",
            plan.deployment,
            spec.tag,
            model_ref(plan),
            model_ref(plan),
            rfc3339(deadline)
        ));
    }

    /// One visit while waiting: a decision (CLI or tag) moves on; the deadline rolls back.
    pub(super) async fn awaiting_approval(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let Some(spec) = &plan.rollout.approval else {
            if plan.batch.is_some() {
                return Ok(self.begin_switch(plan, state));
            }
            self.promote(plan, state);
            return self.apply_pending(plan, state, log).await;
        };
        let Some(mut approval) = state.approval.clone() else {
            self.ask_approval(plan, spec, state, log);
            return Ok(Next::After(APPROVAL_RECHECK));
        };
        if approval.decision.is_none() && self.tag_says_approved(plan, &approval.tag).await? {
            approval.decision = Some(ApprovalDecision {
                approved: true,
                by: format!("tag {}", approval.tag),
                at: OffsetDateTime::now_utc(),
            });
            state.approval = Some(approval.clone());
        }
        match &approval.decision {
            Some(d) if d.approved => {
                log.info(format!(
                    "{} approved by {} at {}",
                    plan.deployment,
                    d.by,
                    rfc3339(d.at)
                ));
                // Approved: a batch endpoint's new deployment becomes its default.
                if plan.batch.is_some() {
                    return Ok(self.begin_switch(plan, state));
                }
                self.promote(plan, state);
                self.apply_pending(plan, state, log).await
            }
            Some(d) => Err(StepError::Fail {
                why: format!("rejected by {} at {}", d.by, rfc3339(d.at)),
                configuration: false,
            }),
            None if OffsetDateTime::now_utc() >= approval.deadline => Err(StepError::Fail {
                why: format!(
                    "not approved within {} hours (tag {} or `aml-autodeploy approve`)",
                    spec.timeout_hours, approval.tag
                ),
                configuration: false,
            }),
            None => {
                state.next_step = approval_wait(plan, spec, approval.deadline);
                let left = Duration::try_from(approval.deadline - OffsetDateTime::now_utc())
                    .unwrap_or_default();
                Ok(Next::After(left.min(APPROVAL_RECHECK)))
            }
        }
    }

    /// Whether the model version carries `tag: true` (read through ARM on each visit).
    async fn tag_says_approved(&self, plan: &AzureMlPlan, tag: &str) -> Result<bool, StepError> {
        let Some((name, version)) = model_name_version(&plan.model_id) else {
            return Ok(false);
        };
        let workspace = ws(model_workspace(&plan.model_id))?;
        let model = self
            .arm
            .model_version(&workspace, name, version)
            .await
            .map_err(StepError::from_arm)?;
        Ok(model
            .tags
            .get(tag)
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.trim().eq_ignore_ascii_case("true")),
                serde_json::Value::Bool(b) => Some(*b),
                _ => None,
            })
            .unwrap_or(false))
    }
}

fn approval_wait(plan: &AzureMlPlan, spec: &ApprovalSpec, deadline: OffsetDateTime) -> String {
    format!(
        "wait for approval: tag {}=true on {} or `aml-autodeploy approve {}`, until {}",
        spec.tag,
        model_ref(plan),
        model_ref(plan),
        rfc3339(deadline)
    )
}

/// `NAME:VERSION` of the plan's model.
fn model_ref(plan: &AzureMlPlan) -> String {
    model_name_version(&plan.model_id)
        .map(|(n, v)| format!("{n}:{v}"))
        .unwrap_or_else(|| plan.model_id.clone())
}

fn model_name_version(model_id: &str) -> Option<(&str, &str)> {
    let rest = model_id.rsplit_once("/models/")?.1;
    rest.split_once("/versions/")
}

fn model_workspace(model_id: &str) -> &str {
    model_id
        .rsplit_once("/models/")
        .map_or(model_id, |(ws, _)| ws)
}
