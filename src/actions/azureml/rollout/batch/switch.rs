//! The default switch (`promoting` on a batch endpoint), retention's cleanup, and the way back:
//! restore the previous default if the endpoint shows ours, then delete the failed deployment.
//! A deployment that is the endpoint's default is never deleted.

use serde_json::Value;

use super::super::engine::{Next, RolloutEngine};
use super::super::machine::*;
use crate::actions::azureml::batch::wire::{default_deployment, default_switch_body};
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::{Phase, RolloutState};
use crate::event::WorkspaceId;
use crate::logs::InvocationLog;
use std::collections::BTreeMap;

impl RolloutEngine {
    pub(super) async fn switch_default(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let dep = plan.deployment.clone();
        let progress = state.batch.get_or_insert_with(Default::default);
        if progress.switching_to.as_deref() != Some(dep.as_str()) {
            // Record the intent first; the next step sends the PUT.
            return Ok(self.begin_switch(plan, state));
        }
        let completed = match self
            .poll(state)
            .await
            .map_err(|e| StepError::from_arm_permanent(e, "switching the default"))?
        {
            Some((Next::After(wait), _)) => return Ok(Next::After(wait)),
            Some(_) => true,
            None => false,
        };
        let workspace = ws(&plan.workspace)?;
        let endpoint = self.endpoint_or_fail(&workspace, &plan.endpoint).await?;
        let sent = state.batch.as_ref().is_some_and(|b| b.switch_sent);
        match default_deployment(&endpoint) {
            Some(shown) if shown == dep => {}
            shown if completed || sent => {
                return Err(StepError::Fail {
                    why: format!(
                        "switching the default: batch endpoint {} shows default {} instead of {dep}",
                        plan.endpoint,
                        shown.unwrap_or("none")
                    ),
                    configuration: false,
                });
            }
            _ => {
                let operation = self
                    .put_default(&workspace, &plan.endpoint, &endpoint, &dep)
                    .await?;
                log.info(format!(
                    "batch endpoint {}: default {} → {dep}",
                    plan.endpoint,
                    default_deployment(&endpoint).unwrap_or("none")
                ));
                if let Some(b) = state.batch.as_mut() {
                    b.switch_sent = true;
                }
                return Ok(self.track(state, operation, &format!("default {dep}")));
            }
        }
        log.info(format!(
            "{dep} is now the default of batch endpoint {}",
            plan.endpoint
        ));
        state.traffic = BTreeMap::from([(dep.clone(), 100)]);
        let previous = state.batch.as_mut().and_then(|b| {
            b.switching_to = None;
            b.switch_sent = false;
            b.previous_default.clone()
        });
        state.cleanup = previous.into_iter().filter(|d| *d != dep).collect();
        let endpoint = plan.endpoint.clone();
        Ok(super::super::finish::retain_or_done(
            plan,
            state,
            |cleanup, until| {
                format!(
                    "delete the previous default {cleanup} after {until} (until then `aml-autodeploy rollback {endpoint}` makes it the default again)"
                )
            },
        ))
    }

    async fn endpoint_or_fail(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
    ) -> Result<Value, StepError> {
        self.arm
            .batch_endpoint(workspace, endpoint)
            .await
            .map_err(StepError::from_arm)?
            .ok_or_else(|| StepError::Fail {
                why: format!("batch endpoint {endpoint} disappeared during the rollout"),
                configuration: true,
            })
    }

    /// PUTs `endpoint` (its GET answer) back with `deployment` as its default.
    async fn put_default(
        &self,
        workspace: &WorkspaceId,
        name: &str,
        endpoint: &Value,
        deployment: &str,
    ) -> Result<crate::azure::arm::Operation, StepError> {
        let location = self
            .arm
            .workspace(workspace)
            .await
            .map_err(StepError::from_arm)?
            .location;
        let body = default_switch_body(endpoint, deployment, &location);
        self.arm
            .begin_put_batch_endpoint(workspace, name, &body)
            .await
            .map_err(|e| StepError::from_arm_permanent(e, "switching the default"))
    }

    /// A failure at or after the switch: if the endpoint shows the new deployment as its
    /// default, the previous one is made the default again (written ahead, checked after).
    pub(super) async fn batch_rolling_back(
        &self,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let workspace = ws(&state.workspace)?;
        let polled = match self.poll(state).await {
            Ok(Some((Next::After(wait), _))) => return Ok(Next::After(wait)),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        let Some(endpoint) = self
            .arm
            .batch_endpoint(&workspace, &state.endpoint)
            .await
            .map_err(|e| {
                StepError::Transient(format!("reading the endpoint to restore it: {e}"))
            })?
        else {
            state.phase = Phase::RolledBack;
            state.next_step = "nothing (the batch endpoint is gone)".into();
            return Ok(Next::Finished);
        };
        let progress = state.batch.get_or_insert_with(Default::default);
        let previous = progress.previous_default.clone();
        if default_deployment(&endpoint) != Some(state.deployment.as_str()) {
            progress.switching_to = None;
            state.phase = Phase::RemovingFailed;
            state.next_step = format!("delete the failed batch deployment {}", state.deployment);
            return Ok(Next::Now);
        }
        let Some(previous) = previous else {
            // Nothing to go back to: deleting ours would leave the endpoint without its default.
            state.configuration_problem = true;
            state.phase = Phase::Failed;
            state.next_step = format!(
                "an operator must check batch endpoint {}: {} is its default and there was none before",
                state.endpoint, state.deployment
            );
            log.error(state.next_step.clone());
            return Ok(Next::Finished);
        };
        if let Err(why) = polled.and_then(|_| {
            if progress.switch_sent && progress.switching_to.as_deref() == Some(previous.as_str()) {
                Err("the endpoint still shows the failed deployment as its default".into())
            } else {
                Ok(())
            }
        }) {
            return self.restore_failed(state, why, log);
        }
        if progress.switching_to.as_deref() != Some(previous.as_str()) {
            progress.switching_to = Some(previous.clone());
            progress.switch_sent = false;
            state.next_step = format!("make {previous} the default of {} again", state.endpoint);
            return Ok(Next::Now);
        }
        match self
            .put_default(&workspace, &state.endpoint, &endpoint, &previous)
            .await
        {
            Ok(operation) => {
                log.info(format!(
                    "batch endpoint {}: default {} → {previous} (restoring)",
                    state.endpoint, state.deployment
                ));
                if let Some(b) = state.batch.as_mut() {
                    b.switch_sent = true;
                }
                Ok(self.track(state, operation, &format!("default {previous}")))
            }
            Err(StepError::Transient(why)) => Err(StepError::Transient(why)),
            Err(StepError::Fail { why, .. }) => self.restore_failed(state, why, log),
        }
    }

    /// A refused restore is retried a few times, then the rollout stops loudly.
    fn restore_failed(
        &self,
        state: &mut RolloutState,
        why: String,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        state.operation = None;
        if let Some(b) = state.batch.as_mut() {
            b.switch_sent = false;
        }
        state.restore_failures += 1;
        if state.restore_failures < MAX_RESTORE_FAILURES {
            return Err(StepError::Transient(format!(
                "restoring the default: {why}"
            )));
        }
        log.error(format!(
            "could not restore the previous default on {} ({why}); an operator must check the endpoint",
            state.endpoint
        ));
        state.configuration_problem = true;
        state.failure = Some(format!(
            "{}; restoring the previous default failed: {why}",
            state.failure.clone().unwrap_or_default()
        ));
        state.phase = Phase::Failed;
        state.next_step = "an operator must restore the batch endpoint's default".into();
        Ok(Next::Finished)
    }

    pub(super) async fn batch_removing_failed(
        &self,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        if state.operation.is_some() {
            return Ok(self
                .await_failed_delete(state, "batch deployment", log)
                .await);
        }
        let workspace = ws(&state.workspace)?;
        let deployment = state.deployment.clone();
        match self
            .delete_unless_default(&workspace, &state.endpoint, &deployment, log)
            .await
        {
            Ok(Some(operation)) => {
                log.info(format!("deleting the failed batch deployment {deployment}"));
                let next = self.track(state, operation, "delete failed deployment");
                if next == Next::Now {
                    state.phase = Phase::RolledBack;
                    state.next_step = "nothing".into();
                    return Ok(Next::Finished);
                }
                Ok(next)
            }
            Ok(None) => {
                state.phase = Phase::RolledBack;
                state.next_step = "nothing".into();
                Ok(Next::Finished)
            }
            Err(e) if e.is_transient() => Err(StepError::Transient(e.to_string())),
            Err(e) => {
                log.warn(format!(
                    "could not delete the failed batch deployment {deployment}: {e}"
                ));
                state.phase = Phase::RolledBack;
                state.next_step = "nothing".into();
                Ok(Next::Finished)
            }
        }
    }

    pub(super) async fn batch_cleaning(
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
        let workspace = ws(&state.workspace)?;
        let operation = self
            .delete_unless_default(&workspace, &state.endpoint, &next, log)
            .await
            .map_err(StepError::from_arm)?;
        state.cleanup.remove(0);
        match operation {
            Some(operation) => {
                log.info(format!("deleting the previous batch deployment {next}"));
                Ok(self.track(state, operation, &format!("delete {next}")))
            }
            None => Ok(Next::Now),
        }
    }

    /// Starts deleting `deployment` unless it is the endpoint's default (then `None`).
    async fn delete_unless_default(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
        deployment: &str,
        log: &InvocationLog,
    ) -> Result<Option<crate::azure::arm::Operation>, crate::azure::arm::ArmError> {
        if let Some(ep) = self.arm.batch_endpoint(workspace, endpoint).await?
            && default_deployment(&ep) == Some(deployment)
        {
            log.warn(format!(
                "batch deployment {deployment} is the default of {endpoint}: not deleted"
            ));
            return Ok(None);
        }
        self.arm
            .begin_delete_batch_deployment(workspace, endpoint, deployment)
            .await
            .map(Some)
    }
}
