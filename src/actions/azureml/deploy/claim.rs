//! The claim a rollout step runs under. Every visit that may call ARM first writes a claim into the
//! record (ETag-checked, the same `claim` and `AUTODEPLOY_CLAIM_TIMEOUT_SECS` as a dispatch), so
//! two `Reconcile` passes (two instances, a lost timer singleton, webhook replicas) never run the
//! same step: the one whose write loses, or that finds a live claim, leaves the record alone.
//!
//! The claim is cleared by the visit's last write. One left behind by a visit that ended without
//! that write (storage failed, the invocation's budget cut it off) is abandoned: this process
//! takes its own abandoned claims over at once (it knows which of its claims still run), other
//! instances once the claim times out.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use time::OffsetDateTime;
use uuid::Uuid;

use crate::ledger::{Claim, ETag, Ledger, Record, StoreError, after, claim_expired};

/// What claiming a record for one visit gave.
pub(crate) enum Claimed {
    /// Ours: the record as written with the claim, its ETag, and the claim's registration (the
    /// visit runs while it lives).
    Ours(Box<Record>, ETag, LiveClaim),
    /// Another visit holds it until then.
    Busy(OffsetDateTime),
    /// The record changed since it was read: whoever changed it decides this time.
    Lost,
}

/// A claim of this process whose visit is still running; dropped when the visit ends, however it
/// ends (returned, failed, or its future dropped).
pub(crate) struct LiveClaim(String);

impl Drop for LiveClaim {
    fn drop(&mut self) {
        if let Ok(mut live) = running().lock() {
            live.remove(&self.0);
        }
    }
}

/// The attempt ids of this process's running visits.
fn running() -> &'static Mutex<HashSet<String>> {
    static RUNNING: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    RUNNING.get_or_init(|| Mutex::new(HashSet::new()))
}

/// The prefix of this process's claims.
fn own_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| format!("rollout-{}-", &Uuid::new_v4().simple().to_string()[..12]))
}

/// A fresh claim for a rollout visit, registered as running until the [`LiveClaim`] is dropped.
pub(crate) fn rollout_claim(now: OffsetDateTime) -> (Claim, LiveClaim) {
    let id = format!("{}{}", own_prefix(), Uuid::new_v4().simple());
    if let Ok(mut live) = running().lock() {
        live.insert(id.clone());
    }
    (
        Claim {
            attempt_id: id.clone(),
            claimed_at: now,
        },
        LiveClaim(id),
    )
}

/// Whether `claim` is this process's and its visit no longer runs.
fn abandoned_here(claim: &Claim) -> bool {
    claim.attempt_id.starts_with(own_prefix())
        && running()
            .lock()
            .is_ok_and(|live| !live.contains(&claim.attempt_id))
}

/// Claims `record` (as read, with `etag`) for one visit.
pub(crate) async fn claim(
    ledger: &Ledger,
    record: &Record,
    etag: &ETag,
    now: OffsetDateTime,
) -> Result<Claimed, StoreError> {
    let timeout = ledger.options.claim_timeout;
    if !claim_expired(record, timeout, now)
        && let Some(held) = &record.claim
        && !abandoned_here(held)
    {
        return Ok(Claimed::Busy(after(held.claimed_at, timeout)));
    }
    let (claim, live) = rollout_claim(now);
    let mut claimed = record.clone();
    claimed.claim = Some(claim);
    match ledger.save(&claimed, etag).await {
        Ok(etag) => Ok(Claimed::Ours(Box::new(claimed), etag, live)),
        Err(StoreError::Conflict) => Ok(Claimed::Lost),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_process_s_ended_visits_are_abandoned() {
        let now = OffsetDateTime::now_utc();
        let (claim, live) = rollout_claim(now);
        assert!(!abandoned_here(&claim), "still running");
        drop(live);
        assert!(abandoned_here(&claim), "its visit ended");
        let elsewhere = Claim {
            attempt_id: "rollout-another-process".into(),
            claimed_at: now,
        };
        assert!(
            !abandoned_here(&elsewhere),
            "another instance's claim runs its course"
        );
    }
}
