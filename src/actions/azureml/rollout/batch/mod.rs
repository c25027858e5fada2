//! The batch endpoint rollout, on the online engine's machinery (the same record, lock, queue,
//! `preparing_assets`, approval, retention and failure handling), one step per call:
//!
//! ```text
//! queued ─lock─▶ preparing_assets† ─▶ creating ─Succeeded─▶ smoke_test* ─▶ awaiting_approval‡ ─▶ promoting ─▶ retaining ─▶ cleaning ─▶ done
//!                                        │ any failure before the default switch               (the default switch)
//!                                        ▼ (the default never moved)
//!                                  removing_failed (the new deployment deleted) ─▶ rolled_back
//!   a failed switch: rolling_back (the previous default restored if the endpoint shows ours) ─▶ removing_failed
//!   * only with `smoke_job`: a batch job that invokes the new deployment itself, followed to completion
//!   † as online   ‡ only with `rollout.approval`
//! ```
//!
//! Every change to the endpoint's default is written ahead: the rollout records the default it is
//! about to set (`batch.switching_to`) before the PUT, and a resumed step first reads the endpoint,
//! treating a default that already shows as done. The smoke job's name and request id are recorded
//! before it is submitted, so a resumed step finds the job instead of submitting another.

mod begin;
mod smoke_job;
mod switch;

use super::engine::{Next, RolloutEngine};
use super::machine::StepError;
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::{Phase, RolloutState};
use crate::logs::InvocationLog;

impl RolloutEngine {
    /// One step of a batch rollout (the phase machine's dispatch for batch plans).
    pub(super) async fn batch_step(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        forced: bool,
        deadline: std::time::Instant,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        match state.phase {
            Phase::Queued => self.batch_begin(plan, state, forced, log).await,
            Phase::PreparingAssets => self.preparing(plan, state, deadline, log).await,
            Phase::Creating => self.batch_creating(plan, state, log).await,
            Phase::SmokeTest => self.smoke_job_step(plan, state, log).await,
            Phase::AwaitingApproval => self.awaiting_approval(plan, state, log).await,
            Phase::Promoting => self.switch_default(plan, state, log).await,
            Phase::Retaining => Ok(self.retaining(state)),
            Phase::Cleaning => self.batch_cleaning(state, log).await,
            Phase::RollingBack => self.batch_rolling_back(state, log).await,
            Phase::RemovingFailed => self.batch_removing_failed(state, log).await,
            Phase::Mirroring | Phase::Canary => Err(StepError::Fail {
                why: format!(
                    "phase {} has no meaning on a batch endpoint",
                    state.phase.as_str()
                ),
                configuration: true,
            }),
            Phase::Done | Phase::RolledBack | Phase::Failed => Ok(Next::Finished),
        }
    }

    /// After the smoke job (or provisioning, without one): approval first when asked for, else
    /// the default switch.
    pub(super) fn before_switch(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Next {
        if let Some(approval) = &plan.rollout.approval {
            self.ask_approval(plan, approval, state, log);
            return Next::Now;
        }
        self.begin_switch(plan, state)
    }

    /// Enters `promoting`, recording the default it is about to set before any request (the
    /// phase change is saved before the next step sends the PUT).
    pub(in crate::actions::azureml::rollout) fn begin_switch(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
    ) -> Next {
        let progress = state.batch.get_or_insert_with(Default::default);
        progress.switching_to = Some(plan.deployment.clone());
        progress.switch_sent = false;
        state.phase = Phase::Promoting;
        state.hold_until = None;
        state.next_step = format!(
            "make {} the default of batch endpoint {}",
            plan.deployment, plan.endpoint
        );
        Next::Now
    }
}
