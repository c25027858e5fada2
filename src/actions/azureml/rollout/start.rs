//! The first phases: take a name that serves no traffic, PUT the deployment, follow its
//! provisioning.

use std::collections::BTreeMap;

use serde_json::json;

use super::engine::{Next, RolloutEngine};
use super::machine::*;
use super::traffic::*;
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::{AssetProgress, Phase, RolloutState};
use crate::event::WorkspaceId;
use crate::logs::InvocationLog;

impl RolloutEngine {
    pub(super) async fn begin(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        forced: bool,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let workspace = ws(&plan.workspace)?;
        let Some(endpoint) = self
            .arm
            .online_endpoint(&workspace, &plan.endpoint)
            .await
            .map_err(StepError::from_arm)?
        else {
            return Err(StepError::Fail {
                why: format!(
                    "online endpoint {} does not exist in {}: create it first (az ml online-endpoint create)",
                    plan.endpoint, plan.workspace
                ),
                configuration: true,
            });
        };
        state.previous_traffic = percent_map(&endpoint["properties"]["traffic"]);
        state.previous_mirror = percent_map(&endpoint["properties"]["mirrorTraffic"]);
        // A name that already serves traffic is another version's live deployment: never PUT
        // over it (a name template without {modelVersion}, or a collision).
        if state.previous_traffic.contains_key(&plan.deployment)
            || state.previous_mirror.contains_key(&plan.deployment)
        {
            return Err(StepError::Fail {
                why: format!(
                    "deployment {} already serves traffic on {}; refusing to overwrite a live deployment (check the rule's name template)",
                    plan.deployment, plan.endpoint
                ),
                configuration: true,
            });
        }

        let live = match forced {
            true => None,
            false => {
                self.live_model(&workspace, plan, &state.previous_traffic)
                    .await?
            }
        };
        self.create_unless_stale(plan, state, live, "deployment", log)
            .await
    }

    /// The start's last check and step: refused as stale when `live` (the deployment `serving`
    /// the endpoint, and its model version) serves a newer version of the model; otherwise the
    /// assets phase when there are assets to register, else the deployment PUT.
    pub(super) async fn create_unless_stale(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        live: Option<(String, String)>,
        serving: &str,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        if let Some((live, live_version)) = live
            && let Some(ours) = plan.model_id.rsplit('/').next()
            && older_version(ours, &live_version)
        {
            state.stale = true;
            return Err(StepError::Fail {
                why: format!(
                    "stale: {serving} {live} serves version {live_version}, newer than {ours}; not deployed (force to override)"
                ),
                configuration: true,
            });
        }
        if !plan.assets.is_empty() {
            // Registering assets (an upload, perhaps) is Reconcile's work, never the event's.
            state.phase = Phase::PreparingAssets;
            state.assets = Some(AssetProgress::default());
            state.next_step = "register the deployment's assets".into();
            return Ok(Next::After(std::time::Duration::ZERO));
        }
        self.put_deployment(plan, plan.body.clone(), state, log)
            .await
    }

    /// Reads the workspace's region and starts the deployment PUT with `body`: an online
    /// deployment, or a batch one for a batch plan (the `preparing_assets` phase ends here too,
    /// once every asset id is known).
    pub(super) async fn put_deployment(
        &self,
        plan: &AzureMlPlan,
        mut body: serde_json::Value,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let workspace = ws(&plan.workspace)?;
        let location = self
            .arm
            .workspace(&workspace)
            .await
            .map_err(StepError::from_arm)?
            .location;
        body["location"] = json!(location);
        let (kind, put, now) = match &plan.batch {
            None => (
                "deployment",
                self.arm
                    .begin_put_online_deployment(
                        &workspace,
                        &plan.endpoint,
                        &plan.deployment,
                        &body,
                    )
                    .await,
                format!("current traffic {}", show(&state.previous_traffic)),
            ),
            Some(_) => (
                "batch deployment",
                self.arm
                    .begin_put_batch_deployment(&workspace, &plan.endpoint, &plan.deployment, &body)
                    .await,
                format!(
                    "current default {}",
                    state
                        .batch
                        .as_ref()
                        .and_then(|b| b.previous_default.as_deref())
                        .unwrap_or("none")
                ),
            ),
        };
        let operation =
            put.map_err(|e| StepError::from_arm_permanent(e, &format!("creating the {kind}")))?;
        let on = if plan.batch.is_some() {
            "batch endpoint"
        } else {
            "endpoint"
        };
        log.info(format!(
            "creating {kind} {} on {on} {} (model {}); {now}",
            plan.deployment, plan.endpoint, plan.model_id,
        ));
        state.phase = Phase::Creating;
        state.next_step = format!("wait for the {kind} to provision");
        Ok(self.track(state, operation, &format!("create {kind}")))
    }

    /// The deployment that serves the most traffic, and its model version when it is the same model.
    pub(super) async fn live_model(
        &self,
        workspace: &WorkspaceId,
        plan: &AzureMlPlan,
        traffic: &BTreeMap<String, u32>,
    ) -> Result<Option<(String, String)>, StepError> {
        let Some((live, _)) = traffic.iter().max_by_key(|(_, share)| **share) else {
            return Ok(None);
        };
        let Some(deployment) = self
            .arm
            .online_deployment(workspace, &plan.endpoint, live)
            .await
            .map_err(StepError::from_arm)?
        else {
            return Ok(None);
        };
        let live_model = deployment["properties"]["model"]
            .as_str()
            .unwrap_or_default();
        let same_model = |id: &str| id.rsplit('/').nth(2).map(str::to_ascii_lowercase);
        if same_model(live_model).is_some() && same_model(live_model) == same_model(&plan.model_id)
        {
            return Ok(live_model
                .rsplit('/')
                .next()
                .map(|v| (live.clone(), v.to_string())));
        }
        Ok(None)
    }

    pub(super) async fn creating(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        match self
            .poll(state)
            .await
            .map_err(|e| StepError::from_arm_permanent(e, "provisioning the deployment"))?
        {
            Some((Next::After(wait), _)) => return Ok(Next::After(wait)),
            Some((_, Some(deployment))) => {
                let provisioning = deployment["properties"]["provisioningState"]
                    .as_str()
                    .unwrap_or("Succeeded");
                if provisioning != "Succeeded" {
                    return Err(StepError::Fail {
                        why: format!("deployment {} ended {provisioning}", plan.deployment),
                        configuration: false,
                    });
                }
            }
            // The PUT answered without an operation to follow: read the deployment itself.
            None => {
                let workspace = ws(&plan.workspace)?;
                let deployment = self
                    .arm
                    .online_deployment(&workspace, &plan.endpoint, &plan.deployment)
                    .await
                    .map_err(StepError::from_arm)?;
                let provisioning = deployment
                    .as_ref()
                    .and_then(|d| d["properties"]["provisioningState"].as_str())
                    .unwrap_or("Missing")
                    .to_string();
                match provisioning.as_str() {
                    "Succeeded" => {}
                    "Creating" | "Updating" | "Scaling" => {
                        state.next_step = "wait for the deployment to provision".into();
                        return Ok(Next::After(PROBE_INTERVAL / 4));
                    }
                    other => {
                        return Err(StepError::Fail {
                            why: format!("deployment {} is {other}", plan.deployment),
                            configuration: false,
                        });
                    }
                }
            }
            _ => {}
        }
        log.info(format!("deployment {} provisioned", plan.deployment));
        if plan.smoke_test.is_some() {
            state.phase = Phase::SmokeTest;
            state.next_step = "smoke-test the new deployment".into();
            return Ok(Next::Now);
        }
        self.first_traffic_change(plan, state, log).await
    }
}
