//! The endpoint lock and its queue: one rollout at a time per endpoint, versions lined up by
//! event time (a newer waiting version supersedes older ones). Stored as a JSON object in the
//! ledger and changed only through its compare-and-swap.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::engine::RolloutEngine;
use crate::domain::azureml::AzureMlPlan;
use crate::ledger::{State, StoreError};

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
}

/// Whether event time `a` is newer than `b` (unknown times never win).
pub(super) fn newer(a: Option<&str>, b: Option<&str>) -> bool {
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
