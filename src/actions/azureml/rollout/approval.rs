//! `awaiting_approval`: after the last step passed, a person approves before 100%: the model
//! version's tag (`rollout.approval.tag: true`, set in the studio or with `az ml model update`
//! after the approval was requested: `systemData.lastModifiedAt` tells), or `aml-autodeploy
//! approve` / `reject`. With `distinct_approver`, not by whoever registered the version. Not
//! approved within `timeout_hours`: rolled back.

use std::time::Duration;

use time::OffsetDateTime;

use super::engine::{Next, RolloutEngine};
use super::machine::*;
use crate::azure::ml::{ModelVersion, SystemData};
use crate::config::ApprovalSpec;
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::{ApprovalDecision, ApprovalState, Phase, RolloutState};
use crate::ledger::record::rfc3339;
use crate::logs::InvocationLog;

/// When a waiting rollout re-reads the tag: the next visit, no sooner than
/// `AUTODEPLOY_MIN_STEP_SECS` (which the deployer applies); never zero (that would re-read
/// within the same visit).
const APPROVAL_RECHECK: Duration = Duration::from_millis(1);

/// What the model version's tag says about one approval request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TagVerdict {
    /// The tag is not `true`.
    NotSet,
    /// Approved by this identity.
    Approves(String),
    /// The tag is `true` but does not approve: why, and what to do.
    Refused(String),
}

/// Whether a tag that reads `tag_true` approves the request made at `requested_at`: only when
/// the version changed after the request (`systemData.lastModifiedAt`), which setting the tag
/// does; with `distinct`, only by someone other than who registered it.
pub(crate) fn judge_tag(
    tag_true: bool,
    tag: &str,
    system: &SystemData,
    requested_at: OffsetDateTime,
    distinct: bool,
) -> TagVerdict {
    if !tag_true {
        return TagVerdict::NotSet;
    }
    let how = format!("set the tag {tag}=true again, or run `aml-autodeploy approve`");
    let Some(modified) = system.last_modified_at else {
        return TagVerdict::Refused(format!(
            "the tag {tag}=true does not approve: the model version has no systemData.lastModifiedAt, so it cannot be shown to have been set after the approval was requested; run `aml-autodeploy approve`"
        ));
    };
    if modified <= requested_at {
        return TagVerdict::Refused(format!(
            "the tag {tag}=true was already set when the approval was requested ({}; the version last changed {}): a tag set in advance, or for an earlier rollout, does not approve; {how}",
            rfc3339(requested_at),
            rfc3339(modified)
        ));
    }
    let by = system.last_modified_by.clone();
    if distinct {
        match (&by, &system.created_by) {
            (None, _) => {
                return TagVerdict::Refused(format!(
                    "the tag {tag}=true does not approve: approval.distinct_approver needs to know who set it, and the version's systemData has no lastModifiedBy; run `aml-autodeploy approve`"
                ));
            }
            (Some(by), Some(creator)) if same_identity(by, creator) => {
                return TagVerdict::Refused(format!(
                    "the tag {tag}=true was set by {by}, who registered the version: approval.distinct_approver needs someone else to set it (or to run `aml-autodeploy approve`)"
                ));
            }
            (Some(_), None) => {
                return TagVerdict::Refused(format!(
                    "the tag {tag}=true does not approve: approval.distinct_approver needs to know who registered the version, and its systemData has no createdBy; run `aml-autodeploy approve`"
                ));
            }
            _ => {}
        }
    }
    TagVerdict::Approves(by.unwrap_or_else(|| "an unknown identity".into()))
}

/// Whether an `approve` may stand under `approval.distinct_approver`: given with an Azure
/// identity, none of whose names is `created_by`. Rejections always stand.
pub(crate) fn judge_cli_approval(
    decision: &ApprovalDecision,
    created_by: Option<&str>,
) -> Result<(), String> {
    if !decision.approved || decision.via.as_deref() == Some("tag") {
        return Ok(());
    }
    if decision.via.as_deref() != Some("credential") || decision.identities.is_empty() {
        return Err(format!(
            "the approval by {} does not count: approval.distinct_approver needs an approval from an Azure identity (a signed-in `az login` or the app's credential), not an OS user name; run `aml-autodeploy approve` with one, or set the tag",
            decision.by
        ));
    }
    let Some(creator) = created_by else {
        return Err(format!(
            "the approval by {} does not count: approval.distinct_approver needs to know who registered the version, and its systemData has no createdBy",
            decision.by
        ));
    };
    if decision
        .identities
        .iter()
        .any(|i| same_identity(i, creator))
    {
        return Err(format!(
            "the approval by {} does not count: {creator} registered the version, and approval.distinct_approver needs someone else to approve",
            decision.by
        ));
    }
    Ok(())
}

/// Identity names compare without case (UPNs and GUIDs both).
fn same_identity(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
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
            refused: None,
        });
        state.next_step = approval_wait(plan, spec, deadline, None);
        log.info(format!(
            "{} passed every step; waiting for approval: tag {}=true on {} (set from now on), or `aml-autodeploy approve {}` (until {})",
            plan.deployment,
            spec.tag,
            model_ref(plan),
            model_ref(plan),
            rfc3339(deadline)
        ));
    }

    /// One visit while waiting: a decision (CLI or tag) moves on; the deadline rolls back. An
    /// approval is recorded (the run loop saves the phase change, ETag-checked) before any
    /// traffic moves, so a rejection recorded first always wins.
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
            return Ok(Next::Now);
        };
        let Some(mut approval) = state.approval.clone() else {
            self.ask_approval(plan, spec, state, log);
            return Ok(Next::After(APPROVAL_RECHECK));
        };
        // A decision made for another request (another rollout of this version) never counts.
        if approval
            .decision
            .as_ref()
            .and_then(|d| d.for_request)
            .is_some_and(|r| r != approval.requested_at)
        {
            approval.decision = None;
        }
        let cli_approval = approval
            .decision
            .as_ref()
            .is_some_and(|d| d.approved && d.via.as_deref() != Some("tag"));
        if approval.decision.is_none() || (spec.distinct_approver && cli_approval) {
            let model = self.read_model(plan).await?;
            match &approval.decision {
                None => {
                    let tag_true = model
                        .as_ref()
                        .is_some_and(|m| tag_is_true(m, &approval.tag));
                    let system = model
                        .as_ref()
                        .map(|m| m.system_data.clone())
                        .unwrap_or_default();
                    match judge_tag(
                        tag_true,
                        &approval.tag,
                        &system,
                        approval.requested_at,
                        spec.distinct_approver,
                    ) {
                        TagVerdict::NotSet => {}
                        TagVerdict::Approves(by) => {
                            approval.decision = Some(ApprovalDecision {
                                approved: true,
                                by: format!("{by} (tag {})", approval.tag),
                                at: OffsetDateTime::now_utc(),
                                via: Some("tag".into()),
                                identities: vec![by],
                                for_request: Some(approval.requested_at),
                            });
                        }
                        TagVerdict::Refused(why) => {
                            if approval.refused.as_deref() != Some(why.as_str()) {
                                log.warn(format!(
                                    "{} on {}: {why}",
                                    model_ref(plan),
                                    plan.endpoint
                                ));
                            }
                            approval.refused = Some(why);
                        }
                    }
                }
                Some(decision) => {
                    let created_by = model
                        .as_ref()
                        .and_then(|m| m.system_data.created_by.as_deref());
                    if let Err(why) = judge_cli_approval(decision, created_by) {
                        log.warn(format!("{} on {}: {why}", model_ref(plan), plan.endpoint));
                        approval.decision = None;
                        approval.refused = Some(why);
                    }
                }
            }
        }
        state.approval = Some(approval.clone());
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
                // Write-ahead: 100% is recorded first and sent by the next step.
                self.promote(plan, state);
                Ok(Next::Now)
            }
            Some(d) => Err(StepError::Fail {
                why: format!("rejected by {} at {}", d.by, rfc3339(d.at)),
                configuration: false,
            }),
            None if OffsetDateTime::now_utc() >= approval.deadline => Err(StepError::Fail {
                why: format!(
                    "not approved within {} hours (tag {} or `aml-autodeploy approve`){}",
                    spec.timeout_hours,
                    approval.tag,
                    approval
                        .refused
                        .as_deref()
                        .map(|r| format!("; {r}"))
                        .unwrap_or_default()
                ),
                configuration: false,
            }),
            None => {
                state.next_step =
                    approval_wait(plan, spec, approval.deadline, approval.refused.as_deref());
                let left = Duration::try_from(approval.deadline - OffsetDateTime::now_utc())
                    .unwrap_or_default();
                Ok(Next::After(left.min(APPROVAL_RECHECK)))
            }
        }
    }

    /// The plan's model version (read through ARM on each visit); `None` when the plan's model
    /// id names no version.
    async fn read_model(&self, plan: &AzureMlPlan) -> Result<Option<ModelVersion>, StepError> {
        let Some((name, version)) = model_name_version(&plan.model_id) else {
            return Ok(None);
        };
        let workspace = ws(model_workspace(&plan.model_id))?;
        self.arm
            .model_version(&workspace, name, version)
            .await
            .map(Some)
            .map_err(StepError::from_arm)
    }
}

/// Whether the version carries `tag: true` (a string in any case, or a boolean).
fn tag_is_true(model: &ModelVersion, tag: &str) -> bool {
    model
        .tags
        .get(tag)
        .and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.trim().eq_ignore_ascii_case("true")),
            serde_json::Value::Bool(b) => Some(*b),
            _ => None,
        })
        .unwrap_or(false)
}

fn approval_wait(
    plan: &AzureMlPlan,
    spec: &ApprovalSpec,
    deadline: OffsetDateTime,
    refused: Option<&str>,
) -> String {
    let mut text = format!(
        "wait for approval: tag {}=true on {} (set after the request) or `aml-autodeploy approve {}`, until {}",
        spec.tag,
        model_ref(plan),
        model_ref(plan),
        rfc3339(deadline)
    );
    if let Some(why) = refused {
        text.push_str(&format!(" ({why})"));
    }
    text
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

#[cfg(test)]
mod tests;
