//! The endpoint lock and its queue: one rollout at a time per endpoint, versions lined up by
//! event time. A newer waiting version of a model supersedes that model's older waiting versions;
//! other models keep their place. Stored as a JSON object in the ledger and changed only through
//! its compare-and-swap. A holder (or queue head) whose record is finished or gone is taken over
//! only by a write conditional on the very lock state whose holder was checked (its ETag): a
//! holder another instance wrote meanwhile is never cleared unchecked.

use super::engine::RolloutEngine;
use super::queue::{Acquired, EndpointLock, blocker, decide};
use crate::domain::azureml::AzureMlPlan;
use crate::ledger::write::MAX_TRIES;
use crate::ledger::{Absent, Edit, Json, Start, State, StoreError, Swapped};

/// The lock blob's name.
pub fn lock_name(workspace: &str, endpoint: &str) -> String {
    format!(
        "endpoints/{}/{endpoint}.json",
        crate::ledger::workspace_key(workspace)
    )
}

impl RolloutEngine {
    /// Tries to take the endpoint for `key`. Versions line up by event time: a newcomer older than
    /// a waiting version of its model is superseded, and it supersedes older waiting versions of
    /// its model, whether or not a rollout is running (see [`decide`]). Each attempt reads the
    /// lock, checks the record of whoever is in the way, and writes only if the lock is still what
    /// it read.
    pub async fn acquire(
        &self,
        plan: &AzureMlPlan,
        key: &str,
        event_time: Option<&str>,
    ) -> Result<Acquired, StoreError> {
        let name = lock_name(&plan.workspace, &plan.endpoint);
        for _ in 0..MAX_TRIES {
            let read = self.ledger.read_json_tagged::<EndpointLock>(&name).await?;
            let lock = read.as_ref().map(|(l, _)| l.clone()).unwrap_or_default();
            // A holder whose record is gone or finished (a crash, a quarantined record) must not
            // keep the endpoint forever; nor a queue head nobody will wake.
            let finished = match blocker(&lock, key) {
                Some(other) if self.finished(other).await? => Some(other.to_string()),
                _ => None,
            };
            let start = match read {
                Some((lock, etag)) => Start::Known(Json(lock), etag),
                None => Start::Absent,
            };
            let mut first = true;
            let swapped = self
                .ledger
                .swap(
                    &name,
                    start,
                    Absent::Edit(Json(EndpointLock::default())),
                    |lock: &mut Json<EndpointLock>| {
                        // Decided on the state this attempt read and checked, or not at all: a
                        // lost race reads and checks again.
                        if !std::mem::take(&mut first) {
                            return Edit::Keep(None);
                        }
                        Edit::Save(Some(decide(
                            &mut lock.0,
                            key,
                            event_time,
                            finished.as_deref(),
                        )))
                    },
                )
                .await?;
            if let Swapped::Edited {
                value: Some(acquired),
                saved: true,
                ..
            } = swapped
            {
                return Ok(acquired);
            }
        }
        Err(StoreError::Conflict)
    }

    /// Whether the record `key` no longer needs the endpoint (finished, gone or unreadable).
    async fn finished(&self, key: &str) -> Result<bool, StoreError> {
        match self.ledger.load(key).await {
            Ok(Some((record, _))) => Ok(!matches!(record.state, State::Queued | State::Deploying)),
            Ok(None) | Err(StoreError::Corrupt(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Releases the endpoint held by `key`; returns the next waiting record, which may start now.
    /// Only the holder's own release counts as its promotion (`last_promoted`): a repeated
    /// release (after a crash before its record was written) changes nothing.
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
                if lock.active.as_deref() == Some(key) {
                    lock.active = None;
                    if promoted {
                        lock.last_promoted = Some(key.to_string());
                    }
                }
                lock.queued.retain(|q| q.key != key);
                lock.next_to_wake()
            })
            .await
    }

    /// Takes `key` out of the endpoint's queue (and the lock, if it holds it without having
    /// started): its record no longer waits (superseded, skipped). Returns the record to wake.
    pub async fn leave(
        &self,
        workspace: &str,
        endpoint: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let name = lock_name(workspace, endpoint);
        self.ledger
            .update_json(&name, |lock: &mut EndpointLock| {
                if lock.active.as_deref() == Some(key) {
                    lock.active = None;
                }
                lock.queued.retain(|q| q.key != key);
                lock.next_to_wake()
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
