//! The blue/green rollout state machine. The state lives in the ledger record (`rollout`); each
//! [`RolloutEngine::step`] does at most one ARM request (or one poll, or one smoke test) and says
//! when the next step is due, so the event handler returns within Event Grid's 30 s and `Reconcile`
//! advances every unfinished rollout, on any instance, after any restart.
//!
//! ```text
//! queued ─lock─▶ preparing_assets† ─▶ creating ─Succeeded─▶ smoke_test ─▶ mirroring* ─▶ canary (each step) ─bake─▶ awaiting_approval‡ ─▶ promoting ─▶ retaining ─▶ cleaning ─▶ done
//!                    │ any failure (provisioning, smoke test or probe, traffic update)   * only with mirror_percent > 0
//!                    ▼                     † only when the YAML has local code, an inline environment,
//!               rolling_back (previous traffic restored) ─▶ removing_failed ─▶ rolled_back
//!                                          an @latest label or a data collector; a failure there
//!                                          ends `failed` (nothing was deployed)
//!                                          ‡ only with `rollout.approval`
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::AzureMlPlan;
use crate::azure::arm::ArmClient;
use crate::ledger::Ledger;

mod approval;
mod assets;
mod batch;
mod finish;
mod judging;
mod lock;
mod machine;
mod smoke;
mod start;
mod traffic;

pub use approval::{ApprovalDecision, ApprovalState};
pub use assets::{AssetProgress, code_uri};
pub use batch::{BatchProgress, SmokeJobRun};
pub use lock::{Acquired, EndpointLock, QueuedVersion, lock_name};
pub use traffic::canary_split;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for the endpoint (another rollout holds it).
    Queued,
    /// Registering the code, environment and data assets the deployment references.
    PreparingAssets,
    /// The deployment PUT is provisioning.
    Creating,
    /// Scoring the new deployment directly.
    SmokeTest,
    /// Shadow traffic to the new deployment, baking.
    Mirroring,
    /// A share of live traffic (one step of the rollout), baking.
    Canary,
    /// The last step passed; waiting for a person's approval before 100%.
    AwaitingApproval,
    /// All traffic moving to the new deployment.
    Promoting,
    /// Previous deployments kept at 0% so a rollback is instant.
    Retaining,
    /// Deleting the previous deployments.
    Cleaning,
    /// Finished.
    Done,
    /// Restoring the previous traffic map.
    RollingBack,
    /// Deleting the failed deployment.
    RemovingFailed,
    /// Finished, rolled back.
    RolledBack,
    /// Finished without touching traffic (e.g. the endpoint does not exist).
    Failed,
}

impl Phase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::PreparingAssets => "preparing_assets",
            Phase::Creating => "creating",
            Phase::SmokeTest => "smoke_test",
            Phase::Mirroring => "mirroring",
            Phase::Canary => "canary",
            Phase::AwaitingApproval => "awaiting_approval",
            Phase::Promoting => "promoting",
            Phase::Retaining => "retaining",
            Phase::Cleaning => "cleaning",
            Phase::Done => "done",
            Phase::RollingBack => "rolling_back",
            Phase::RemovingFailed => "removing_failed",
            Phase::RolledBack => "rolled_back",
            Phase::Failed => "failed",
        }
    }

    /// No more steps.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Done | Phase::RolledBack | Phase::Failed)
    }
}

/// An ARM operation the rollout waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingOperation {
    /// What it is for (`create deployment`, `traffic {…}`, `delete blue`).
    pub purpose: String,
    /// Poll URL.
    pub poll_url: String,
    /// `Location` polling (else `Azure-AsyncOperation`).
    pub via_location: bool,
    /// What to GET when done.
    pub final_url: Option<String>,
}

/// The rollout part of a ledger record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// Current phase.
    pub phase: Phase,
    /// Target workspace.
    pub workspace: String,
    /// Endpoint.
    pub endpoint: String,
    /// The new deployment.
    pub deployment: String,
    /// Live traffic before this rollout (restored on rollback).
    #[serde(default)]
    pub previous_traffic: BTreeMap<String, u32>,
    /// Mirror traffic before this rollout.
    #[serde(default)]
    pub previous_mirror: BTreeMap<String, u32>,
    /// The traffic map this rollout last applied.
    #[serde(default)]
    pub traffic: BTreeMap<String, u32>,
    /// The mirror map this rollout last applied.
    #[serde(default)]
    pub mirror: BTreeMap<String, u32>,
    /// Traffic this phase wants but the endpoint does not show yet.
    #[serde(default)]
    pub pending: Option<TrafficTarget>,
    /// Refused attempts to restore the previous traffic.
    #[serde(default)]
    pub restore_failures: u32,
    /// The ARM operation in flight.
    #[serde(default)]
    pub operation: Option<PendingOperation>,
    /// End of the current bake or retention.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub hold_until: Option<OffsetDateTime>,
    /// Deployments to delete after retention.
    #[serde(default)]
    pub cleanup: Vec<String>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub failure: Option<String>,
    /// Whether the failure needs an operator (quota, missing endpoint) rather than a retry.
    #[serde(default)]
    pub configuration_problem: bool,
    /// Refused because a newer version of the model is live on the endpoint.
    #[serde(default)]
    pub stale: bool,
    /// Whether this rollout has given the endpoint back (after promotion or failure).
    #[serde(default)]
    pub released: bool,
    /// What happens next, in words (for `status`).
    #[serde(default)]
    pub next_step: String,
    /// The assets registered so far (`preparing_assets`), and their ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<AssetProgress>,
    /// Which traffic step (`canary`) the rollout is at: 0 for the first.
    #[serde(default, skip_serializing_if = "is_first")]
    pub step: usize,
    /// When the current step's traffic took effect (its bake and its metrics window start there).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub step_started: Option<OffsetDateTime>,
    /// The approval asked for and given (or refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalState>,
    /// Canary analysis judgements, oldest first (the last [`MAX_JUDGEMENTS`]), with their figures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub judgements: Vec<StepJudgement>,
    /// Why the metrics could not be read lately (an API error, a missing role), if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_problem: Option<String>,
    /// A batch endpoint rollout's default switch and smoke job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchProgress>,
}

/// How many judgements a record keeps.
pub const MAX_JUDGEMENTS: usize = 30;

/// A judgement of one traffic step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepJudgement {
    /// The step (1 for the first).
    pub step: usize,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The verdict, its reasons and its figures.
    #[serde(flatten)]
    pub judgement: crate::actions::azureml::analysis::Judgement,
}

impl RolloutState {
    /// A rollout that has not started.
    pub fn new(plan: &AzureMlPlan) -> Self {
        Self {
            phase: Phase::Queued,
            workspace: plan.workspace.clone(),
            endpoint: plan.endpoint.clone(),
            deployment: plan.deployment.clone(),
            previous_traffic: BTreeMap::new(),
            previous_mirror: BTreeMap::new(),
            traffic: BTreeMap::new(),
            mirror: BTreeMap::new(),
            operation: None,
            hold_until: None,
            cleanup: Vec::new(),
            failure: None,
            configuration_problem: false,
            stale: false,
            released: false,
            pending: None,
            restore_failures: 0,
            next_step: "waiting for the endpoint".into(),
            assets: None,
            step: 0,
            step_started: None,
            approval: None,
            judgements: Vec::new(),
            metrics_problem: None,
            batch: None,
        }
    }

    /// From a record's `rollout` field.
    pub fn from_value(value: &Value) -> Option<Self> {
        serde_json::from_value(value.clone()).ok()
    }

    /// For a record's `rollout` field.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

fn is_first(step: &usize) -> bool {
    *step == 0
}

/// Traffic and mirror maps to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficTarget {
    /// `traffic`.
    pub traffic: BTreeMap<String, u32>,
    /// `mirrorTraffic`.
    pub mirror: BTreeMap<String, u32>,
}

/// When the next step is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Step again right away.
    Now,
    /// Step again after this long.
    After(Duration),
    /// Nothing more to do.
    Finished,
}

/// Runs rollout steps against ARM and the scoring endpoint.
pub struct RolloutEngine {
    arm: Arc<ArmClient>,
    credential: Arc<dyn TokenCredential>,
    ledger: Arc<Ledger>,
    http: crate::http::Http,
}

impl RolloutEngine {
    /// An engine over `arm`, using `credential` for Entra-authenticated scoring and `http` for
    /// the smoke test.
    pub fn new(
        arm: Arc<ArmClient>,
        credential: Arc<dyn TokenCredential>,
        ledger: Arc<Ledger>,
        http: crate::http::Http,
    ) -> Self {
        Self {
            arm,
            credential,
            ledger,
            http,
        }
    }

    /// The ARM client.
    pub fn arm(&self) -> &ArmClient {
        &self.arm
    }
}
