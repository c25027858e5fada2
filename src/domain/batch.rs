//! What a batch endpoint rule adds to a direct-deployment plan ([`BatchPlan`]): the smoke job.

use serde::{Deserialize, Serialize};

use crate::config::SmokeJob;

/// What a batch rollout needs beyond the online plan's fields (stored in the record's plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchPlan {
    /// The job to run on the new deployment before it becomes the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_job: Option<SmokeJob>,
}
