//! The blue/green rollout state machine. The state lives in the ledger record (`rollout`); each
//! [`RolloutEngine::step`] does at most one ARM request (or one poll, or one smoke test) and says
//! when the next step is due, so the event handler returns within Event Grid's 30 s and `Reconcile`
//! advances every unfinished rollout, on any instance, after any restart.
//!
//! ```text
//! queued ─lock─▶ creating ─Succeeded─▶ smoke_test ─▶ mirroring* ─▶ canary ─bake─▶ promoting ─▶ retaining ─▶ cleaning ─▶ done
//!                    │ any failure (provisioning, smoke test or probe, traffic update)   * only with mirror_percent > 0
//!                    ▼
//!               rolling_back (previous traffic restored) ─▶ removing_failed ─▶ rolled_back
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::AzureMlPlan;
use crate::azure::arm::{ArmClient, ArmError, Operation};
use crate::config::Strategy;
use crate::event::WorkspaceId;
use crate::ledger::{Ledger, State, StoreError, after};
use crate::logs::InvocationLog;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for the endpoint (another rollout holds it).
    Queued,
    /// The deployment PUT is provisioning.
    Creating,
    /// Scoring the new deployment directly.
    SmokeTest,
    /// Shadow traffic to the new deployment, baking.
    Mirroring,
    /// A share of live traffic, baking.
    Canary,
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
            Phase::Creating => "creating",
            Phase::SmokeTest => "smoke_test",
            Phase::Mirroring => "mirroring",
            Phase::Canary => "canary",
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

/// How often a bake re-runs the smoke test (at most; Reconcile's timer sets the real pace).
const PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// Wait after a transient error (or `AUTODEPLOY_RETRY_FIRST_DELAY_SECS` when shorter).
const TRANSIENT_RETRY: Duration = Duration::from_secs(30);
const SCORING_TIMEOUT: Duration = Duration::from_secs(20);

/// The endpoint lock blob: one rollout at a time per endpoint, and the queue behind it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointLock {
    /// The record rolling out now.
    #[serde(default)]
    pub active: Option<String>,
    /// Records waiting, oldest first.
    #[serde(default)]
    pub queued: Vec<QueuedVersion>,
    /// The last promoted record (for `rollback`).
    #[serde(default)]
    pub last_promoted: Option<String>,
}

/// A waiting version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedVersion {
    /// Its record.
    pub key: String,
    /// Its event time (newest wins).
    #[serde(default)]
    pub event_time: Option<String>,
}

/// What acquiring the endpoint gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Acquired {
    /// The rollout may start.
    Granted,
    /// The rollout may start; these older waiting versions are now `superseded`.
    GrantedSuperseding {
        /// Their record keys.
        superseded: Vec<String>,
    },
    /// Another rollout holds the endpoint; this one waits. Older waiting versions it replaced.
    Queued {
        /// Record keys that are now `superseded`.
        superseded: Vec<String>,
    },
    /// A newer version already waits: this one is `superseded` itself.
    Superseded,
}

/// The lock blob's name.
pub fn lock_name(workspace: &str, endpoint: &str) -> String {
    format!(
        "endpoints/{}/{endpoint}.json",
        crate::ledger::workspace_key(workspace)
    )
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

    /// Tries to take the endpoint for `key` (ETag compare-and-swap on the lock blob). Versions
    /// line up by event time: a newcomer older than a waiting version is superseded, and it
    /// supersedes older waiting versions, whether or not a rollout is running.
    pub async fn acquire(
        &self,
        plan: &AzureMlPlan,
        key: &str,
        event_time: Option<&str>,
    ) -> Result<Acquired, StoreError> {
        let name = lock_name(&plan.workspace, &plan.endpoint);
        // A holder whose record is gone or finished (a crash, a quarantined record) must not keep
        // the endpoint forever.
        let lock: EndpointLock = self.ledger.read_json(&name).await?.unwrap_or_default();
        let dead_holder = match &lock.active {
            Some(holder) if holder != key && !holder.starts_with("rollback:") => {
                match self.ledger.load(holder).await {
                    Ok(Some((record, _))) => {
                        !matches!(record.state, State::Queued | State::Deploying)
                    }
                    Ok(None) | Err(StoreError::Corrupt(_)) => true,
                    Err(e) => return Err(e),
                }
            }
            _ => false,
        };
        self.ledger
            .update_json(&name, |lock: &mut EndpointLock| {
                if dead_holder && lock.active.is_some() && lock.active.as_deref() != Some(key) {
                    lock.active = None;
                }
                if lock.active.as_deref() == Some(key) {
                    lock.queued.retain(|q| q.key != key);
                    return Acquired::Granted;
                }
                // Waiting behind a newer version: this one will never be deployed.
                let newer_waiting = lock
                    .queued
                    .iter()
                    .any(|q| q.key != key && newer(q.event_time.as_deref(), event_time));
                if newer_waiting {
                    lock.queued.retain(|q| q.key != key);
                    return Acquired::Superseded;
                }
                // Older waiting versions give way to this one.
                let superseded: Vec<String> = lock
                    .queued
                    .iter()
                    .filter(|q| q.key != key)
                    .map(|q| q.key.clone())
                    .collect();
                lock.queued.retain(|q| q.key == key);
                if lock.active.is_none() {
                    lock.active = Some(key.to_string());
                    lock.queued.clear();
                    return if superseded.is_empty() {
                        Acquired::Granted
                    } else {
                        Acquired::GrantedSuperseding { superseded }
                    };
                }
                if lock.queued.is_empty() {
                    lock.queued.push(QueuedVersion {
                        key: key.to_string(),
                        event_time: event_time.map(str::to_string),
                    });
                }
                Acquired::Queued { superseded }
            })
            .await
    }

    /// Releases the endpoint held by `key`; returns the next waiting record, which may start now.
    pub async fn release(
        &self,
        workspace: &str,
        endpoint: &str,
        key: &str,
        promoted: bool,
    ) -> Result<Option<String>, StoreError> {
        let name = lock_name(workspace, endpoint);
        self.ledger
            .update_json(&name, |lock: &mut EndpointLock| {
                if promoted {
                    lock.last_promoted = Some(key.to_string());
                }
                if lock.active.as_deref() == Some(key) {
                    lock.active = None;
                }
                lock.queued.retain(|q| q.key != key);
                lock.queued.first().map(|q| q.key.clone())
            })
            .await
    }

    /// Takes the endpoint for a manual rollback of `key`: only when no rollout holds it.
    pub async fn hold_for_rollback(
        &self,
        workspace: &str,
        endpoint: &str,
        key: &str,
    ) -> Result<bool, StoreError> {
        let holder = format!("rollback:{key}");
        self.ledger
            .update_json(
                &lock_name(workspace, endpoint),
                |lock: &mut EndpointLock| {
                    if lock.active.is_none() {
                        lock.active = Some(holder.clone());
                    }
                    lock.active.as_deref() == Some(holder.as_str())
                },
            )
            .await
    }

    /// Gives the endpoint back after a manual rollback; returns the next waiting record.
    pub async fn release_rollback(
        &self,
        workspace: &str,
        endpoint: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let holder = format!("rollback:{key}");
        self.ledger
            .update_json(
                &lock_name(workspace, endpoint),
                |lock: &mut EndpointLock| {
                    if lock.active.as_deref() == Some(holder.as_str()) {
                        lock.active = None;
                    }
                    lock.queued.first().map(|q| q.key.clone())
                },
            )
            .await
    }

    /// The lock blob of an endpoint.
    pub async fn lock(&self, workspace: &str, endpoint: &str) -> Result<EndpointLock, StoreError> {
        Ok(self
            .ledger
            .read_json(&lock_name(workspace, endpoint))
            .await?
            .unwrap_or_default())
    }

    /// One step. Unless `forced`, a version older than the one live on the endpoint is refused.
    pub async fn step(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        forced: bool,
        log: &InvocationLog,
    ) -> Next {
        let result = match state.phase {
            Phase::Queued => self.begin(plan, state, forced, log).await,
            Phase::Creating => self.creating(plan, state, log).await,
            Phase::SmokeTest => self.smoke_phase(plan, state, log).await,
            Phase::Mirroring | Phase::Canary => self.baking(plan, state, log).await,
            Phase::Promoting => self.promoting(plan, state, log).await,
            Phase::Retaining => Ok(self.retaining(state)),
            Phase::Cleaning => self.cleaning(state, log).await,
            Phase::RollingBack => self.rolling_back(plan, state, log).await,
            Phase::RemovingFailed => self.removing_failed(state, log).await,
            Phase::Done | Phase::RolledBack | Phase::Failed => Ok(Next::Finished),
        };
        match result {
            Ok(next) => next,
            Err(StepError::Transient(why)) => {
                log.warn(format!(
                    "rollout of {} on {}: {why}; retrying later",
                    state.deployment, state.endpoint
                ));
                state.next_step = format!(
                    "retry {} after a transient error: {why}",
                    state.phase.as_str()
                );
                Next::After(TRANSIENT_RETRY.min(self.ledger.options.first_retry_delay))
            }
            Err(StepError::Fail { why, configuration }) => {
                self.fail(state, why, configuration, log);
                Next::Now
            }
        }
    }

    fn fail(
        &self,
        state: &mut RolloutState,
        why: String,
        configuration: bool,
        log: &InvocationLog,
    ) {
        log.error(format!(
            "rollout of {} on {} failed: {why}",
            state.deployment, state.endpoint
        ));
        state.failure = Some(why);
        state.configuration_problem = configuration;
        state.operation = None;
        state.hold_until = None;
        state.pending = None;
        state.phase = match state.phase {
            // Nothing was changed yet.
            Phase::Queued => Phase::Failed,
            // Traffic may have changed: restore it, then remove the failed deployment.
            Phase::Mirroring | Phase::Canary | Phase::Promoting => Phase::RollingBack,
            // Promoted already: a failed cleanup must never touch the live deployment.
            Phase::Retaining | Phase::Cleaning => {
                log.warn(format!(
                    "cleanup on {} failed; the previous deployments ({}) may need deleting by hand",
                    state.endpoint,
                    state.cleanup.join(", ")
                ));
                state.cleanup.clear();
                Phase::Done
            }
            Phase::RollingBack => Phase::RollingBack,
            Phase::RemovingFailed | Phase::RolledBack => Phase::RolledBack,
            // The deployment exists (perhaps Failed) but never got traffic.
            _ => Phase::RemovingFailed,
        };
        state.next_step = match state.phase {
            Phase::RollingBack => "restore the previous traffic".into(),
            Phase::RemovingFailed => format!("delete the failed deployment {}", state.deployment),
            _ => "nothing".into(),
        };
    }

    async fn begin(
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

        if !forced
            && let Some((live, live_version)) = self
                .live_model(&workspace, plan, &state.previous_traffic)
                .await?
            && let Some(ours) = plan.model_id.rsplit('/').next()
            && older_version(ours, &live_version)
        {
            state.stale = true;
            return Err(StepError::Fail {
                why: format!(
                    "stale: deployment {live} serves version {live_version}, newer than {ours}; not deployed (force to override)"
                ),
                configuration: true,
            });
        }

        let location = self
            .arm
            .workspace(&workspace)
            .await
            .map_err(StepError::from_arm)?
            .location;
        let mut body = plan.body.clone();
        body["location"] = json!(location);
        let operation = self
            .arm
            .begin_put_online_deployment(&workspace, &plan.endpoint, &plan.deployment, &body)
            .await
            .map_err(|e| StepError::from_arm_permanent(e, "creating the deployment"))?;
        log.info(format!(
            "creating deployment {} on endpoint {} (model {}); current traffic {}",
            plan.deployment,
            plan.endpoint,
            plan.model_id,
            show(&state.previous_traffic)
        ));
        state.phase = Phase::Creating;
        state.next_step = "wait for the deployment to provision".into();
        Ok(self.track(state, operation, "create deployment"))
    }

    /// The deployment that serves the most traffic, and its model version when it is the same model.
    async fn live_model(
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

    fn track(&self, state: &mut RolloutState, operation: Operation, purpose: &str) -> Next {
        match operation {
            Operation::Done(_) => {
                state.operation = None;
                Next::Now
            }
            Operation::Pending {
                poll_url,
                via_location,
                final_url,
                retry_after,
            } => {
                state.operation = Some(PendingOperation {
                    purpose: purpose.into(),
                    poll_url: poll_url.to_string(),
                    via_location,
                    final_url: final_url.map(|u| u.to_string()),
                });
                Next::After(retry_after)
            }
        }
    }

    /// Polls the pending operation once: `Ok(None)` when done (or none), `Ok(Some(next))` to wait.
    async fn poll(
        &self,
        state: &mut RolloutState,
    ) -> Result<Option<(Next, Option<Value>)>, ArmError> {
        let Some(pending) = state.operation.clone() else {
            return Ok(None);
        };
        let parse = |u: &str| Url::parse(u).map_err(|_| ArmError::ForeignUrl(u.to_string()));
        let operation = Operation::Pending {
            poll_url: parse(&pending.poll_url)?,
            via_location: pending.via_location,
            final_url: pending.final_url.as_deref().map(parse).transpose()?,
            retry_after: Duration::ZERO,
        };
        match self.arm.poll(&operation).await? {
            Operation::Pending { retry_after, .. } => Ok(Some((Next::After(retry_after), None))),
            Operation::Done(value) => {
                state.operation = None;
                Ok(Some((Next::Now, value)))
            }
        }
    }

    async fn creating(
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

    async fn smoke_phase(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        self.smoke(plan, log).await?;
        self.first_traffic_change(plan, state, log).await
    }

    /// Scores the new deployment directly (`azureml-model-deployment` header).
    async fn smoke(&self, plan: &AzureMlPlan, log: &InvocationLog) -> Result<(), StepError> {
        let Some(test) = &plan.smoke_test else {
            return Ok(());
        };
        let workspace = ws(&plan.workspace)?;
        let endpoint = self
            .arm
            .online_endpoint(&workspace, &plan.endpoint)
            .await
            .map_err(StepError::from_arm)?
            .ok_or_else(|| StepError::Fail {
                why: format!("endpoint {} disappeared during the rollout", plan.endpoint),
                configuration: true,
            })?;
        let scoring_uri = endpoint["properties"]["scoringUri"]
            .as_str()
            .unwrap_or_default();
        let url = Url::parse(scoring_uri).map_err(|_| {
            StepError::Transient(format!("endpoint {} has no scoring URI yet", plan.endpoint))
        })?;
        use secrecy::ExposeSecret;
        let bearer = match endpoint["properties"]["authMode"].as_str().unwrap_or("Key") {
            "AADToken" => {
                let token = self
                    .credential
                    .get_token(&[self.arm.ml_scope()], None)
                    .await
                    .map_err(|e| {
                        StepError::Transient(format!("no Entra token for scoring: {e}"))
                    })?;
                token.token.secret().to_string()
            }
            "AMLToken" => self
                .arm
                .endpoint_token(&workspace, &plan.endpoint)
                .await
                .map_err(StepError::from_arm)?
                .expose_secret()
                .to_string(),
            _ => {
                let keys = self
                    .arm
                    .list_keys(&workspace, &plan.endpoint)
                    .await
                    .map_err(StepError::from_arm)?;
                keys.primary.expose_secret().to_string()
            }
        };
        let response = self
            .http
            .client()
            .post(url)
            .bearer_auth(bearer)
            .header("azureml-model-deployment", &plan.deployment)
            .timeout(SCORING_TIMEOUT)
            .json(&test.request)
            .send()
            .await;
        match response {
            Ok(r) if r.status().as_u16() == test.expect_status => {
                log.info(format!(
                    "smoke test of {} passed (HTTP {})",
                    plan.deployment, test.expect_status
                ));
                Ok(())
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let body: String = r
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                Err(StepError::Fail {
                    why: format!(
                        "smoke test of {} answered HTTP {status}, expected {}: {body}",
                        plan.deployment, test.expect_status
                    ),
                    configuration: false,
                })
            }
            Err(e) => Err(StepError::Fail {
                why: format!(
                    "smoke test of {} failed: {}",
                    plan.deployment,
                    if e.is_timeout() {
                        "timeout".to_string()
                    } else {
                        e.to_string()
                    }
                ),
                configuration: false,
            }),
        }
    }

    async fn first_traffic_change(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let empty = state.previous_traffic.values().sum::<u32>() == 0;
        let dep = plan.deployment.clone();
        if empty || plan.rollout.strategy == Strategy::AllAtOnce {
            state.phase = Phase::Promoting;
            state.next_step = format!("wait for 100% of traffic on {dep}");
            if empty {
                log.info(format!(
                    "endpoint {} serves no traffic: {dep} gets 100% at once",
                    plan.endpoint
                ));
            }
            want(state, BTreeMap::from([(dep, 100)]), BTreeMap::new());
        } else if plan.rollout.mirror_percent > 0 {
            state.phase = Phase::Mirroring;
            state.next_step = format!(
                "mirror {}% of traffic to {dep}, then bake",
                plan.rollout.mirror_percent
            );
            let traffic = state.previous_traffic.clone();
            want(
                state,
                traffic,
                BTreeMap::from([(dep, u32::from(plan.rollout.mirror_percent))]),
            );
        } else {
            state.phase = Phase::Canary;
            state.next_step = format!(
                "{}% canary on {dep}, then bake",
                plan.rollout.canary_percent
            );
            let traffic = canary_split(
                &state.previous_traffic,
                &dep,
                u32::from(plan.rollout.canary_percent),
            );
            want(state, traffic, BTreeMap::new());
        }
        self.apply_pending(plan, state, log).await
    }

    /// Applies the wanted traffic: sends the PUT when none is in flight (again after a transient
    /// failure), polls it, and checks the endpoint really shows the wanted maps. `Ok(Next::Now)`
    /// once applied (or nothing was pending).
    async fn apply_pending(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let Some(target) = state.pending.clone() else {
            return Ok(Next::Now);
        };
        if state.operation.is_none() {
            let workspace = ws(&plan.workspace)?;
            let operation = self
                .put_traffic(&workspace, &plan.endpoint, &target.traffic, &target.mirror)
                .await
                .map_err(|e| StepError::from_arm_permanent(e, "updating traffic"))?;
            log.info(format!(
                "endpoint {}: traffic {}{}",
                plan.endpoint,
                show(&target.traffic),
                if target.mirror.is_empty() {
                    String::new()
                } else {
                    format!(", mirror {}", show(&target.mirror))
                }
            ));
            let next = self.track(
                state,
                operation,
                &format!("traffic {}", show(&target.traffic)),
            );
            if next != Next::Now {
                return Ok(next);
            }
        } else {
            match self
                .poll(state)
                .await
                .map_err(|e| StepError::from_arm_permanent(e, "updating traffic"))?
            {
                Some((Next::After(wait), _)) => return Ok(Next::After(wait)),
                Some((_, Some(endpoint))) => {
                    // The operation said Succeeded: make sure the endpoint shows it.
                    let shown = percent_map(&endpoint["properties"]["traffic"]);
                    let live_target: BTreeMap<String, u32> = target
                        .traffic
                        .iter()
                        .filter(|(_, v)| **v > 0)
                        .map(|(k, v)| (k.clone(), *v))
                        .collect();
                    if endpoint["properties"].get("traffic").is_some() && shown != live_target {
                        return Err(StepError::Fail {
                            why: format!(
                                "updating traffic: the endpoint shows {} instead of {}",
                                show(&shown),
                                show(&live_target)
                            ),
                            configuration: false,
                        });
                    }
                }
                _ => {}
            }
        }
        state.traffic = target.traffic;
        state.mirror = target.mirror;
        state.pending = None;
        Ok(Next::Now)
    }

    /// GET the endpoint, set `traffic`/`mirrorTraffic`, PUT it back without read-only fields.
    pub async fn put_traffic(
        &self,
        workspace: &WorkspaceId,
        endpoint_name: &str,
        traffic: &BTreeMap<String, u32>,
        mirror: &BTreeMap<String, u32>,
    ) -> Result<Operation, ArmError> {
        let endpoint = self
            .arm
            .online_endpoint(workspace, endpoint_name)
            .await?
            .ok_or_else(|| ArmError::Http {
                method: "GET".into(),
                path: ArmClient::online_endpoint_id(workspace, endpoint_name),
                status: 404,
                code: "NotFound".into(),
                message: format!("online endpoint {endpoint_name} does not exist"),
            })?;
        let mut body = json!({});
        for key in ["location", "kind", "tags", "sku"] {
            if let Some(v) = endpoint.get(key).filter(|v| !v.is_null()) {
                body[key] = v.clone();
            }
        }
        // The identity without its read-only parts (principalId, tenantId, the client and
        // principal ids of user-assigned identities), as the SDK sends it.
        if let Some(identity) = endpoint.get("identity").filter(|v| v.is_object()) {
            let mut clean = json!({ "type": identity["type"] });
            if let Some(assigned) = identity["userAssignedIdentities"].as_object() {
                clean["userAssignedIdentities"] =
                    Value::Object(assigned.keys().map(|k| (k.clone(), json!({}))).collect());
            }
            body["identity"] = clean;
        }
        let mut properties = endpoint["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for read_only in ["provisioningState", "scoringUri", "swaggerUri"] {
            properties.remove(read_only);
        }
        // Zero entries are dropped, as the SDK does: the service wants the live map only.
        properties.insert(
            "traffic".into(),
            json!(
                traffic
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .collect::<BTreeMap<_, _>>()
            ),
        );
        properties.insert(
            "mirrorTraffic".into(),
            json!(
                mirror
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .collect::<BTreeMap<_, _>>()
            ),
        );
        body["properties"] = Value::Object(properties);
        self.arm
            .begin_put_online_endpoint(workspace, endpoint_name, &body)
            .await
    }

    async fn baking(
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
        let until = *state.hold_until.get_or_insert_with(|| {
            after(
                now,
                Duration::from_secs(u64::from(plan.rollout.bake_minutes) * 60),
            )
        });
        // Every visit during the bake is a health probe.
        self.smoke(plan, log).await?;
        if now < until {
            state.next_step = format!(
                "bake {} until {}",
                state.phase.as_str(),
                crate::ledger::record::rfc3339(until)
            );
            let left = Duration::try_from(until - now).unwrap_or_default();
            return Ok(Next::After(left.min(PROBE_INTERVAL)));
        }
        let dep = plan.deployment.clone();
        if state.phase == Phase::Mirroring {
            state.phase = Phase::Canary;
            state.next_step = format!(
                "{}% canary on {dep}, then bake",
                plan.rollout.canary_percent
            );
            let traffic = canary_split(
                &state.previous_traffic,
                &dep,
                u32::from(plan.rollout.canary_percent),
            );
            // Leaving mirror for canary zeroes mirrorTraffic in the same PUT.
            want(state, traffic, BTreeMap::new());
        } else {
            state.phase = Phase::Promoting;
            state.next_step = format!("wait for 100% of traffic on {dep}");
            want(state, BTreeMap::from([(dep, 100)]), BTreeMap::new());
        }
        self.apply_pending(plan, state, log).await
    }

    async fn promoting(
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
        if state.cleanup.is_empty() {
            state.phase = Phase::Done;
            state.next_step = "nothing".into();
            return Ok(Next::Finished);
        }
        let retain = Duration::from_secs(u64::from(plan.rollout.retain_previous_minutes) * 60);
        state.phase = Phase::Retaining;
        state.hold_until = Some(after(OffsetDateTime::now_utc(), retain));
        state.next_step = format!(
            "delete {} after {}",
            state.cleanup.join(", "),
            state
                .hold_until
                .map(crate::ledger::record::rfc3339)
                .unwrap_or_default()
        );
        Ok(Next::After(retain))
    }

    fn retaining(&self, state: &mut RolloutState) -> Next {
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

    async fn cleaning(
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

    async fn rolling_back(
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
                    return Ok(Next::Finished);
                }
                Err(StepError::Transient(format!("restoring traffic: {why}")))
            }
        }
    }

    async fn removing_failed(
        &self,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        if state.operation.is_some() {
            match self.poll(state).await {
                Ok(Some((Next::After(wait), _))) => return Ok(Next::After(wait)),
                Ok(_) => {}
                Err(e) => log.warn(format!(
                    "deleting the failed deployment {} did not succeed: {e}",
                    state.deployment
                )),
            }
            state.operation = None;
            state.phase = Phase::RolledBack;
            state.next_step = "nothing".into();
            return Ok(Next::Finished);
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

/// Sets the traffic this phase wants; [`RolloutEngine::apply_pending`] sends it.
fn want(state: &mut RolloutState, traffic: BTreeMap<String, u32>, mirror: BTreeMap<String, u32>) {
    state.pending = Some(TrafficTarget { traffic, mirror });
    state.hold_until = None;
}

/// Refused traffic restores before a rollout gives up and asks for an operator.
const MAX_RESTORE_FAILURES: u32 = 3;

/// Why a step did not complete.
enum StepError {
    /// Try the same step later.
    Transient(String),
    /// The rollout failed: roll back.
    Fail { why: String, configuration: bool },
}

impl StepError {
    fn from_arm(e: ArmError) -> Self {
        if e.is_transient() {
            StepError::Transient(e.to_string())
        } else {
            StepError::Fail {
                configuration: is_configuration(&e),
                why: e.to_string(),
            }
        }
    }

    fn from_arm_permanent(e: ArmError, doing: &str) -> Self {
        match StepError::from_arm(e) {
            StepError::Fail { why, configuration } => StepError::Fail {
                why: format!("{doing}: {why}"),
                configuration,
            },
            transient => transient,
        }
    }
}

/// Quota, capacity and validation errors need an operator; retrying them forever helps nobody.
/// The service often reports quota as `BadRequest` with the detail only in the message ("Not
/// enough quota available…"), so the message counts too.
fn is_configuration(e: &ArmError) -> bool {
    let text = match e {
        ArmError::OperationFailed { code, message, .. } | ArmError::Http { code, message, .. } => {
            format!("{code} {message}").to_ascii_lowercase()
        }
        _ => return false,
    };
    [
        "quota",
        "outofcapacity",
        "validation",
        "badargument",
        "notfound",
        "invalid",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

fn ws(id: &str) -> Result<WorkspaceId, StepError> {
    WorkspaceId::parse(id).map_err(|e| StepError::Fail {
        why: format!("workspace id {e}"),
        configuration: true,
    })
}

fn percent_map(value: &Value) -> BTreeMap<String, u32> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n as u32)))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .unwrap_or_default()
}

/// Takes `canary` percent for `new` from the live deployments in proportion to their shares; the
/// result sums to 100.
pub fn canary_split(
    previous: &BTreeMap<String, u32>,
    new: &str,
    canary: u32,
) -> BTreeMap<String, u32> {
    let total: u32 = previous.values().sum();
    if total == 0 {
        return BTreeMap::from([(new.to_string(), 100)]);
    }
    let remaining = 100 - canary.min(100);
    let mut out: BTreeMap<String, u32> = previous
        .iter()
        .map(|(k, v)| (k.clone(), v * remaining / total))
        .collect();
    // Hand the rounding remainder to the largest shares first.
    let mut given: u32 = out.values().sum();
    let mut order: Vec<(String, u32)> = previous.iter().map(|(k, v)| (k.clone(), *v)).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut i = 0;
    while given < remaining && !order.is_empty() {
        *out.entry(order[i % order.len()].0.clone()).or_default() += 1;
        given += 1;
        i += 1;
    }
    out.insert(new.to_string(), canary.min(100));
    out.retain(|_, v| *v > 0);
    out
}

fn show(map: &BTreeMap<String, u32>) -> String {
    if map.is_empty() {
        return "{}".into();
    }
    let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}: {v}%")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Whether event time `a` is newer than `b` (unknown times never win).
fn newer(a: Option<&str>, b: Option<&str>) -> bool {
    let parse = |t: Option<&str>| {
        t.and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// Whether version `ours` is older than `live` (numeric versions only; free-text ones never are).
fn older_version(ours: &str, live: &str) -> bool {
    match (ours.parse::<u64>(), live.parse::<u64>()) {
        (Ok(a), Ok(b)) => a < b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn the_canary_share_is_taken_in_proportion() {
        assert_eq!(
            canary_split(&map(&[("blue", 100)]), "green", 10),
            map(&[("blue", 90), ("green", 10)])
        );
        assert_eq!(
            canary_split(&map(&[("blue", 70), ("red", 30)]), "green", 10),
            map(&[("blue", 63), ("red", 27), ("green", 10)])
        );
        let odd = canary_split(&map(&[("a", 33), ("b", 33), ("c", 34)]), "n", 25);
        assert_eq!(odd.values().sum::<u32>(), 100, "{odd:?}");
        assert_eq!(odd["n"], 25);
        assert_eq!(canary_split(&BTreeMap::new(), "n", 10), map(&[("n", 100)]));
    }

    #[test]
    fn versions_compare_numerically_only() {
        assert!(older_version("9", "10"));
        assert!(!older_version("10", "9"));
        assert!(!older_version("v2", "v10"));
    }
}
