//! The first batch phases: read the endpoint's default, refuse what must not be deployed (a
//! missing endpoint, a name that is the live default, a stale version), PUT the batch deployment
//! and follow its provisioning.

use std::collections::BTreeMap;

use super::super::engine::{Next, RolloutEngine};
use super::super::machine::*;
use crate::actions::azureml::batch::wire::default_deployment;
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::{BatchProgress, Phase, RolloutState};
use crate::logs::InvocationLog;

impl RolloutEngine {
    pub(super) async fn batch_begin(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        forced: bool,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let workspace = ws(&plan.workspace)?;
        let Some(endpoint) = self
            .arm
            .batch_endpoint(&workspace, &plan.endpoint)
            .await
            .map_err(StepError::from_arm)?
        else {
            return Err(StepError::Fail {
                why: format!(
                    "batch endpoint {} does not exist in {}: create it first (az ml batch-endpoint create)",
                    plan.endpoint, plan.workspace
                ),
                configuration: true,
            });
        };
        let previous = default_deployment(&endpoint).map(str::to_string);
        // The default is the live deployment: never PUT over it.
        if previous.as_deref() == Some(plan.deployment.as_str()) {
            return Err(StepError::Fail {
                why: format!(
                    "deployment {} is the default of batch endpoint {}; refusing to overwrite the live default (check the rule's name template)",
                    plan.deployment, plan.endpoint
                ),
                configuration: true,
            });
        }
        // Shown as the default's "traffic" by `status` and `--watch`.
        state.previous_traffic = previous
            .iter()
            .map(|d| (d.clone(), 100))
            .collect::<BTreeMap<_, _>>();
        state.batch = Some(BatchProgress {
            previous_default: previous.clone(),
            ..BatchProgress::default()
        });

        let live = match (&previous, forced) {
            (Some(live), false) => self
                .default_model_version(plan, live)
                .await?
                .map(|version| (live.clone(), version)),
            _ => None,
        };
        self.create_unless_stale(plan, state, live, "the default deployment", log)
            .await
    }

    /// The model version the default deployment serves, when it is the same model as ours.
    async fn default_model_version(
        &self,
        plan: &AzureMlPlan,
        live: &str,
    ) -> Result<Option<String>, StepError> {
        let workspace = ws(&plan.workspace)?;
        let Some(deployment) = self
            .arm
            .batch_deployment(&workspace, &plan.endpoint, live)
            .await
            .map_err(StepError::from_arm)?
        else {
            return Ok(None);
        };
        let live_model = deployment["properties"]["model"]["assetId"]
            .as_str()
            .unwrap_or_default();
        let same_model = |id: &str| id.rsplit('/').nth(2).map(str::to_ascii_lowercase);
        if same_model(live_model).is_some() && same_model(live_model) == same_model(&plan.model_id)
        {
            return Ok(live_model.rsplit('/').next().map(str::to_string));
        }
        Ok(None)
    }

    pub(super) async fn batch_creating(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let polled = self
            .poll(state)
            .await
            .map_err(|e| StepError::from_arm_permanent(e, "provisioning the batch deployment"))?;
        let provisioning = match polled {
            Some((Next::After(wait), _)) => return Ok(Next::After(wait)),
            Some((_, Some(deployment))) => deployment["properties"]["provisioningState"]
                .as_str()
                .unwrap_or("Succeeded")
                .to_string(),
            // No operation to follow (or none answered): read the deployment itself.
            _ => {
                let workspace = ws(&plan.workspace)?;
                self.arm
                    .batch_deployment(&workspace, &plan.endpoint, &plan.deployment)
                    .await
                    .map_err(StepError::from_arm)?
                    .as_ref()
                    .and_then(|d| d["properties"]["provisioningState"].as_str())
                    .unwrap_or("Missing")
                    .to_string()
            }
        };
        match provisioning.as_str() {
            "Succeeded" => {}
            "Creating" | "Updating" | "Scaling" => {
                state.next_step = "wait for the batch deployment to provision".into();
                return Ok(Next::After(PROBE_INTERVAL / 4));
            }
            other => {
                return Err(StepError::Fail {
                    why: format!("batch deployment {} ended {other}", plan.deployment),
                    configuration: false,
                });
            }
        }
        log.info(format!("batch deployment {} provisioned", plan.deployment));
        if plan.batch.as_ref().is_some_and(|b| b.smoke_job.is_some()) {
            state.phase = Phase::SmokeTest;
            state.next_step = format!("run the smoke job on {}", plan.deployment);
            return Ok(Next::Now);
        }
        Ok(self.before_switch(plan, state, log))
    }
}
