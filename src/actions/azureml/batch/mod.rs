//! Direct deployment to Azure ML **batch endpoints**: the `az ml batch-deployment` YAML
//! translation ([`translate`]) and what a batch plan adds to [`AzureMlPlan`]: the smoke job. The
//! rollout itself (create, smoke job, approval, the default switch, retention) is in
//! `rollout/batch/`, on the same engine, lock, ledger record and `preparing_assets` phase as
//! online rollouts.

pub mod translate;
pub mod wire;

#[cfg(test)]
mod goldens;

use serde::{Deserialize, Serialize};

use super::AzureMlPlan;
use crate::config::SmokeJob;

/// What a batch rollout needs beyond the online plan's fields (stored in the record's plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchPlan {
    /// The job to run on the new deployment before it becomes the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_job: Option<SmokeJob>,
}

impl BatchPlan {
    /// The rollout's steps in words, for dry runs.
    pub fn steps(&self, plan: &AzureMlPlan) -> Vec<String> {
        let mut out = vec![format!(
            "create batch deployment {} on batch endpoint {} and wait for it",
            plan.deployment, plan.endpoint
        )];
        if let Some(job) = &self.smoke_job {
            out.push(format!(
                "smoke job: invoke {} (not the default) with input {}{}, follow the job; it must complete within {} min",
                plan.deployment,
                job.input,
                job.input_type
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default(),
                job.timeout_minutes
            ));
        }
        if let Some(approval) = &plan.rollout.approval {
            out.push(format!(
                "approval: wait for tag {}=true on the model version (or `aml-autodeploy approve`), at most {} h",
                approval.tag, approval.timeout_hours
            ));
        }
        out.push(format!(
            "make {} the default of {}: GET the batch endpoint, PUT it back with defaults.deploymentName",
            plan.deployment, plan.endpoint
        ));
        out.push(format!(
            "keep the previous default for {} min (rollback), then delete it",
            plan.rollout.retain_previous_minutes
        ));
        out
    }
}
