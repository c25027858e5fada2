//! How far a direct deployment's rollout got: the record's `rollout` field. The phase machine that
//! advances it is `actions::azureml::rollout`; its diagram is there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::azureml::AzureMlPlan;
use super::tail::DeploymentLogs;
use crate::canary::Judgement;

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
    /// The failed deployment's logs, read before it was deleted (or before a manual rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<DeploymentLogs>,
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
    pub judgement: Judgement,
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
            logs: None,
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

/// The approval a rollout waits for. Stored in the record's `rollout.approval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalState {
    /// When the rollout began waiting. Only a tag set after this approves.
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
    /// Why the tag or an `approve` did not count (the last time one was seen), and how to
    /// approve instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Approved or rejected, by whom, when, how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    /// Approved (else rejected).
    pub approved: bool,
    /// Who: the tag's `systemData.lastModifiedBy` (`ada@contoso.com (tag NAME)`), or the
    /// identity that ran `approve`/`reject`.
    pub by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// How: `tag`, `credential` (`approve`/`reject` with an Azure identity) or `os_user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The names the approver's token gives (`upn`, `oid`, `appid`…), to compare with who
    /// registered the version (`approval.distinct_approver`). At most [`MAX_IDENTITIES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// The request it answers (`requested_at`): a decision belongs to one rollout.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub for_request: Option<OffsetDateTime>,
}

/// How many of the approver's names a decision keeps.
pub const MAX_IDENTITIES: usize = 8;

/// What the assets phase has done so far. Stored in the record's `rollout.assets`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssetProgress {
    /// Data assets registered (in the plan's order).
    #[serde(default)]
    pub data_registered: usize,
    /// The code version's name: a fresh UUID, as az ml mints one per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_name: Option<String>,
    /// The workspace was asked for a code version with the same content hash.
    #[serde(default)]
    pub code_looked_up: bool,
    /// The pending upload's `pendingUploadId`: each step asks `startPendingUpload` with it, for
    /// the same container and a fresh SAS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_upload_id: Option<String>,
    /// The pending upload's container (no authorization; the SAS is asked for again each step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_uri: Option<String>,
    /// Files known to be in that container (the first ones in upload order).
    #[serde(default)]
    pub files_uploaded: usize,
    /// The upload digest over those files, from the bytes sent (hex; see `UploadChain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_digest: Option<String>,
    /// The completion marker is written.
    #[serde(default)]
    pub upload_complete: bool,
    /// The code version's id (registered, or reused by hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_id: Option<String>,
    /// The environment version's id (registered, or `@latest` resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
}

/// What a batch rollout records besides the online fields. Stored in the record's
/// `rollout.batch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchProgress {
    /// The endpoint's default deployment before this rollout (restored by `rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_default: Option<String>,
    /// Written ahead of a default switch: the default this rollout is setting (or restoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switching_to: Option<String>,
    /// The switch's PUT was sent in this attempt (an endpoint still not showing it then fails).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub switch_sent: bool,
    /// The smoke job: its id, status and error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_job: Option<SmokeJobRun>,
}

/// A smoke job, from the moment its name is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmokeJobRun {
    /// The job's name (chosen before it is submitted, as `--job-name`).
    pub name: String,
    /// The submission's `repeatability_request-id`.
    pub request_id: String,
    /// The service accepted it (or it was found by name).
    #[serde(default)]
    pub submitted: bool,
    /// The job's ARM id, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its last status (`NotStarted`, `Running`, `Completed`, `Failed`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was submitted.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub submitted_at: Option<OffsetDateTime>,
    /// It must complete by then.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub deadline: Option<OffsetDateTime>,
}
