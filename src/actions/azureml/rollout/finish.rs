//! The later phases: bake (mirror and canary, with probes), promote, retain, clean up; and the
//! way back: restore the previous traffic and remove the failed deployment.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use super::engine::{Next, RolloutEngine};
use super::machine::*;
use super::traffic::*;
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::{Phase, RolloutState};
use crate::ledger::after;
use crate::logs::InvocationLog;

impl RolloutEngine {
    pub(super) async fn baking(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        // The phase's traffic first; the bake starts once it is applied.
        if state.pending.is_some() {
            let next = self.apply_pending(plan, state, log).await?;
            if next != Next::Now {
                return Ok(next);
            }
        }
        let now = OffsetDateTime::now_utc();
        let started = *state.step_started.get_or_insert(now);
        let until = *state.hold_until.get_or_insert_with(|| {
            after(
                started,
                Duration::from_secs(u64::from(plan.rollout.bake_minutes) * 60),
            )
        });
        // Every visit during the bake is a health probe.
        self.smoke(plan, log).await?;
        if state.phase == Phase::Canary
            && let Some(spec) = &plan.rollout.analysis
        {
            match self
                .judge_step(plan, spec, state, started, now >= until, log)
                .await?
            {
                super::judging::StepCall::Wait(wait) => return Ok(Next::After(wait)),
                super::judging::StepCall::Advance => {}
            }
        } else if now < until {
            state.next_step = format!(
                "bake {} until {}",
                state.phase.as_str(),
                crate::ledger::record::rfc3339(until)
            );
            let left = Duration::try_from(until - now).unwrap_or_default();
            return Ok(Next::After(left.min(PROBE_INTERVAL)));
        }
        let steps = plan.rollout.traffic_steps();
        if state.phase == Phase::Mirroring {
            enter_step(plan, state, 0);
        } else if state.step + 1 < steps.len() {
            log.info(format!(
                "step {} of {} passed its bake on {}",
                state.step + 1,
                steps.len(),
                plan.deployment
            ));
            enter_step(plan, state, state.step + 1);
        } else if let Some(approval) = &plan.rollout.approval {
            self.ask_approval(plan, approval, state, log);
            return Ok(Next::Now);
        } else {
            self.promote(plan, state);
        }
        // Write-ahead: the new step (or 100%) is recorded first and sent by the next step.
        Ok(Next::Now)
    }

    /// Moves to 100% for the new deployment.
    pub(super) fn promote(&self, plan: &AzureMlPlan, state: &mut RolloutState) {
        let dep = plan.deployment.clone();
        state.phase = Phase::Promoting;
        state.next_step = format!("wait for 100% of traffic on {dep}");
        want(state, BTreeMap::from([(dep, 100)]), BTreeMap::new());
    }

    pub(super) async fn promoting(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        // Never past this phase before the endpoint really serves 100% from the new deployment.
        let next = self.apply_pending(plan, state, log).await?;
        if next != Next::Now {
            return Ok(next);
        }
        log.info(format!(
            "{} now serves 100% of {}",
            state.deployment, state.endpoint
        ));
        state.cleanup = state
            .previous_traffic
            .keys()
            .chain(state.previous_mirror.keys())
            .filter(|d| **d != state.deployment)
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        Ok(retain_or_done(plan, state, |cleanup, until| {
            format!("delete {cleanup} after {until}")
        }))
    }

    pub(super) fn retaining(&self, state: &mut RolloutState) -> Next {
        let now = OffsetDateTime::now_utc();
        match state.hold_until {
            Some(until) if now < until => {
                Next::After(Duration::try_from(until - now).unwrap_or_default())
            }
            _ => {
                state.phase = Phase::Cleaning;
                state.hold_until = None;
                state.next_step = format!("delete {}", state.cleanup.join(", "));
                Next::Now
            }
        }
    }

    pub(super) async fn cleaning(
        &self,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        if let Some((Next::After(wait), _)) = self.poll(state).await.map_err(StepError::from_arm)? {
            return Ok(Next::After(wait));
        }
        let Some(next) = state.cleanup.first().cloned() else {
            state.phase = Phase::Done;
            state.next_step = "nothing".into();
            return Ok(Next::Finished);
        };
        if state.operation.is_none()
            && state.traffic.get(&next).copied().unwrap_or(0) == 0
            && !state.mirror.contains_key(&next)
        {
            let workspace = ws(&state.workspace)?;
            let operation = self
                .arm
                .begin_delete_online_deployment(&workspace, &state.endpoint, &next)
                .await
                .map_err(StepError::from_arm)?;
            log.info(format!("deleting the previous deployment {next}"));
            state.cleanup.remove(0);
            return Ok(self.track(state, operation, &format!("delete {next}")));
        }
        state.cleanup.remove(0);
        Ok(Next::Now)
    }

    pub(super) async fn rolling_back(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        if state.pending.is_none() && state.operation.is_none() {
            // Maybe nothing moved (the failed update never took effect): check before writing.
            let workspace = ws(&state.workspace)?;
            let endpoint = self
                .arm
                .online_endpoint(&workspace, &state.endpoint)
                .await
                .map_err(|e| {
                    StepError::Transient(format!("reading the endpoint to restore it: {e}"))
                })?;
            let already = endpoint.as_ref().is_some_and(|e| {
                percent_map(&e["properties"]["traffic"]) == state.previous_traffic
                    && percent_map(&e["properties"]["mirrorTraffic"]) == state.previous_mirror
            });
            if already || endpoint.is_none() {
                state.phase = Phase::RemovingFailed;
                state.next_step = format!("delete the failed deployment {}", state.deployment);
                return Ok(Next::Now);
            }
            let (traffic, mirror) = (
                state.previous_traffic.clone(),
                state.previous_mirror.clone(),
            );
            want(state, traffic, mirror);
            // Write-ahead: the restore is recorded first and sent by the next step.
            return Ok(Next::Now);
        }
        match self.apply_pending(plan, state, log).await {
            Ok(Next::Now) => {
                log.info(format!(
                    "endpoint {}: previous traffic {} restored",
                    state.endpoint,
                    show(&state.previous_traffic)
                ));
                state.phase = Phase::RemovingFailed;
                state.next_step = format!("delete the failed deployment {}", state.deployment);
                Ok(Next::Now)
            }
            Ok(wait) => Ok(wait),
            Err(StepError::Transient(why)) => {
                Err(StepError::Transient(format!("restoring traffic: {why}")))
            }
            // A refused restore (permissions, a deleted endpoint) is retried a few times, then the
            // rollout stops loudly instead of holding the endpoint forever.
            Err(StepError::Fail { why, .. }) => {
                state.operation = None;
                state.restore_failures += 1;
                if state.restore_failures >= MAX_RESTORE_FAILURES {
                    log.error(format!(
                        "could not restore the previous traffic on {} ({why}); an operator must check the endpoint",
                        state.endpoint
                    ));
                    state.pending = None;
                    state.configuration_problem = true;
                    state.failure = Some(format!(
                        "{}; restoring the previous traffic {} failed: {why}",
                        state.failure.clone().unwrap_or_default(),
                        show(&state.previous_traffic)
                    ));
                    state.phase = Phase::Failed;
                    state.next_step = "an operator must restore the endpoint's traffic".into();
                    // The deployment stays: its logs tell the operator why it failed.
                    self.keep_logs(state, log).await;
                    return Ok(Next::Finished);
                }
                Err(StepError::Transient(format!("restoring traffic: {why}")))
            }
        }
    }

    /// The failed deployment's delete, once sent: waited for, then the rollout is rolled back. A
    /// delete that did not succeed is only warned about: the traffic is already restored.
    pub(super) async fn await_failed_delete(
        &self,
        state: &mut RolloutState,
        kind: &str,
        log: &InvocationLog,
    ) -> Next {
        match self.poll(state).await {
            Ok(Some((Next::After(wait), _))) => return Next::After(wait),
            Ok(_) => {}
            Err(e) => log.warn(format!(
                "deleting the failed {kind} {} did not succeed: {e}",
                state.deployment
            )),
        }
        state.operation = None;
        state.phase = Phase::RolledBack;
        state.next_step = "nothing".into();
        Next::Finished
    }

    pub(super) async fn removing_failed(
        &self,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        if state.operation.is_some() {
            return Ok(self.await_failed_delete(state, "deployment", log).await);
        }
        // Its logs go with it: read them first, as a step of their own (recorded before the
        // delete is sent).
        if state.logs.is_none() {
            self.keep_logs(state, log).await;
            return Ok(Next::Now);
        }
        let workspace = ws(&state.workspace)?;
        match self
            .arm
            .begin_delete_online_deployment(&workspace, &state.endpoint, &state.deployment)
            .await
        {
            Ok(operation) => {
                log.info(format!(
                    "deleting the failed deployment {}",
                    state.deployment
                ));
                let next = self.track(state, operation, "delete failed deployment");
                if next == Next::Now {
                    state.phase = Phase::RolledBack;
                    state.next_step = "nothing".into();
                    return Ok(Next::Finished);
                }
                Ok(next)
            }
            Err(e) if e.is_transient() => Err(StepError::Transient(e.to_string())),
            Err(e) => {
                log.warn(format!(
                    "could not delete the failed deployment {}: {e}",
                    state.deployment
                ));
                state.phase = Phase::RolledBack;
                state.next_step = "nothing".into();
                Ok(Next::Finished)
            }
        }
    }
}

/// After the new deployment took over: done when nothing is left to delete, else the previous
/// deployments (`state.cleanup`) are retained for `retain_previous_minutes`; `next` says so in
/// words from the list and the time they go.
pub(super) fn retain_or_done(
    plan: &AzureMlPlan,
    state: &mut RolloutState,
    next: impl FnOnce(&str, &str) -> String,
) -> Next {
    if state.cleanup.is_empty() {
        state.phase = Phase::Done;
        state.next_step = "nothing".into();
        return Next::Finished;
    }
    let retain = Duration::from_secs(u64::from(plan.rollout.retain_previous_minutes) * 60);
    state.phase = Phase::Retaining;
    state.hold_until = Some(after(OffsetDateTime::now_utc(), retain));
    let until = state
        .hold_until
        .map(crate::ledger::record::rfc3339)
        .unwrap_or_default();
    state.next_step = next(&state.cleanup.join(", "), &until);
    Next::After(retain)
}
