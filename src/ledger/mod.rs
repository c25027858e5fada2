//! The durable ledger: one record per (workspace, model, version), claims with ETags, an outbox of
//! due work for `Reconcile`, and indexes that make "most recent first" listing cheap.
//!
//! Blob layout in the container (names are chosen so lexical listing does the work):
//! - `records/{model}/{workspace-key}/{version}.json`: the record, the only place progress lives.
//! - `index/{inverted-millis}/{record}`: one empty marker per record at creation; ascending listing
//!   returns the most recently received first.
//! - `outbox/{due-millis}/{record}`: work due at that time (a retry, or the takeover deadline of a
//!   claim). Markers are hints: the record decides; a marker whose record needs nothing is deleted.
//! - `latest/{model}/{workspace-key}/{rule}.json`: the newest version acted on, for stale checks.
//! - `malformed/{inverted-millis}-{hash}.json`: events that could not be parsed.

pub mod blob;
mod claim;
pub mod connection;
mod names;
mod options;
pub mod record;
pub mod run;
pub mod store;
pub mod write;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub use record::{Attempt, Claim, Record, State};

use names::{INVERT_BASE, latest_name, millis, outbox_name, parse_outbox};
pub use names::{Marker, record_key, record_model_version, workspace_key};
pub use options::{LedgerOptions, container_from_env};
pub use store::{ETag, MemoryStore, Store, StoreError};
pub use write::{Absent, Edit, Json, Ledger, Start, Stored, Swapped, Written};

const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// How many record keys [`Ledger`] remembers as existing before it starts over.
const EXISTING_KEYS_LIMIT: usize = 4096;

/// Adds a std duration to a time, saturating.
pub fn after(at: OffsetDateTime, d: Duration) -> OffsetDateTime {
    at + time::Duration::try_from(d).unwrap_or(time::Duration::days(3650))
}

/// Whether a `dispatching` claim has outlived `timeout` at `now`.
pub fn claim_expired(record: &Record, timeout: Duration, now: OffsetDateTime) -> bool {
    record
        .claim
        .as_ref()
        .is_none_or(|c| after(c.claimed_at, timeout) <= now)
}

impl Ledger {
    /// A ledger over `store`.
    pub fn new(store: Arc<dyn Store>, options: LedgerOptions) -> Self {
        Self {
            store,
            options,
            existing: Mutex::new(HashSet::new()),
        }
    }

    /// An in-memory ledger with default options.
    pub fn in_memory() -> Self {
        Self::new(Arc::new(MemoryStore::new()), LedgerOptions::default())
    }

    /// Whether records survive a restart.
    pub fn is_durable(&self) -> bool {
        self.store.is_durable()
    }

    /// Where the ledger lives (no secrets).
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// The delay before retry number `failures` (1-based).
    pub fn retry_delay(&self, failures: u32) -> Duration {
        self.options
            .first_retry_delay
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(MAX_RETRY_DELAY)
    }

    /// Reads a record.
    pub async fn load(&self, key: &str) -> Result<Option<(Record, ETag)>, StoreError> {
        match self.store.read(key).await? {
            None => Ok(None),
            Some((bytes, etag)) => Record::from_bytes(&bytes)
                .map(|r| Some((r, etag)))
                .map_err(|e| StoreError::Corrupt(format!("{key}: {e}"))),
        }
    }

    fn known_to_exist(&self, key: &str) -> bool {
        self.existing.lock().is_ok_and(|keys| keys.contains(key))
    }

    fn note_existing(&self, key: &str) {
        if let Ok(mut keys) = self.existing.lock() {
            if keys.len() >= EXISTING_KEYS_LIMIT {
                keys.clear();
            }
            keys.insert(key.to_string());
        }
    }

    /// Puts an outbox marker: `key` needs attention at `due`.
    pub async fn schedule(&self, key: &str, due: OffsetDateTime) -> Result<Marker, StoreError> {
        let name = outbox_name(key, due);
        self.store.put(&name, Vec::new()).await?;
        Ok(Marker {
            name,
            due,
            key: key.to_string(),
        })
    }

    /// Removes an outbox marker.
    pub async fn unschedule(&self, marker: &Marker) -> Result<(), StoreError> {
        self.store.delete(&marker.name).await
    }

    /// Moves aside a marker whose record cannot be read, so it stops blocking every pass.
    pub async fn quarantine(&self, marker: &Marker, why: &str) -> Result<(), StoreError> {
        let name = marker.name.replacen("outbox/", "outbox-poison/", 1);
        self.store.put(&name, why.as_bytes().to_vec()).await?;
        self.store.delete(&marker.name).await
    }

    /// Outbox entries due at `now`, earliest first.
    pub async fn due(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<Marker>, StoreError> {
        let names = self.store.list("outbox/", limit.max(1) * 4).await?;
        Ok(names
            .iter()
            .filter_map(|n| parse_outbox(n))
            .take_while(|m| m.due <= now)
            .take(limit)
            .collect())
    }

    /// If a newer version than `event_time` was already acted on for (workspace, rule, model),
    /// that version and its event time.
    pub async fn newer_version_acted(
        &self,
        workspace: &str,
        rule: &str,
        model: &str,
        event_time: Option<OffsetDateTime>,
    ) -> Result<Option<(String, String)>, StoreError> {
        let Some(event_time) = event_time else {
            return Ok(None);
        };
        let Some((bytes, _)) = self
            .store
            .read(&latest_name(workspace, rule, model))
            .await?
        else {
            return Ok(None);
        };
        let latest: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let latest_time = latest["eventTime"].as_str().and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
        Ok(match latest_time {
            Some(t) if t > event_time => Some((
                latest["version"].as_str().unwrap_or_default().to_string(),
                latest["eventTime"].as_str().unwrap_or_default().to_string(),
            )),
            _ => None,
        })
    }

    /// Records `version` as the newest acted on for (workspace, rule, model) (compare-and-swap on
    /// the pointer's ETag). Returns `false` when a strictly newer version is already recorded:
    /// then this one must not be sent.
    pub async fn advance_latest(
        &self,
        workspace: &str,
        rule: &str,
        model: &str,
        version: &str,
        event_time: Option<OffsetDateTime>,
    ) -> Result<bool, StoreError> {
        let Some(event_time) = event_time else {
            return Ok(true);
        };
        let name = latest_name(workspace, rule, model);
        let time_text = event_time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let pointer = Json(json!({"version": version, "eventTime": time_text}));
        let swapped = self
            .swap(&name, Start::Read, Absent::Create(&pointer), |current| {
                let current_time = current.0["eventTime"].as_str().and_then(|t| {
                    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
                });
                match current_time {
                    Some(t) if t > event_time => Edit::Keep(false),
                    Some(t) if t == event_time => Edit::Keep(true),
                    _ => {
                        *current = pointer.clone();
                        Edit::Save(true)
                    }
                }
            })
            .await?;
        Ok(match swapped {
            Swapped::Edited { value, .. } => value,
            Swapped::Created(..) | Swapped::Missing => true,
        })
    }

    /// Reads a JSON blob that is not a record (e.g. an endpoint lock).
    pub async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.store.read(name).await? {
            None => Ok(None),
            Some((bytes, _)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Unavailable(format!("{name} is unreadable: {e}"))),
        }
    }

    /// Reads a JSON blob that is not a record, with its ETag, for a compare-and-swap that must
    /// decide on exactly what it read ([`Ledger::swap`] with [`Start::Known`]).
    pub async fn read_json_tagged<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<(T, ETag)>, StoreError> {
        match self.store.read(name).await? {
            None => Ok(None),
            Some((bytes, etag)) => serde_json::from_slice(&bytes)
                .map(|value| Some((value, etag)))
                .map_err(|e| StoreError::Unavailable(format!("{name} is unreadable: {e}"))),
        }
    }

    /// Leader election on a lease blob (ETag compare-and-swap): `holder` leads while its lease is
    /// unexpired; a lease not renewed within `ttl` passes to the next replica that asks.
    pub async fn lead(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        #[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
        struct Lease {
            #[serde(default)]
            holder: String,
            #[serde(default, with = "time::serde::rfc3339::option")]
            expires_at: Option<OffsetDateTime>,
        }
        let now = OffsetDateTime::now_utc();
        self.update_json(name, |lease: &mut Lease| {
            let free = lease.holder.is_empty()
                || lease.holder == holder
                || lease.expires_at.is_none_or(|t| t <= now);
            if free {
                lease.holder = holder.to_string();
                lease.expires_at = Some(after(now, ttl));
            }
            free
        })
        .await
    }

    /// Records an event that could not be parsed, for the operator.
    pub async fn record_malformed(
        &self,
        raw: &Value,
        error: &str,
        invocation_id: &str,
        now: OffsetDateTime,
    ) -> Result<String, StoreError> {
        let text = raw.to_string();
        let hash: String = Sha256::digest(text.as_bytes())
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = format!("malformed/{:013}-{hash}.json", INVERT_BASE - millis(now));
        // Keep the record small: an event is at most 1 MB, a record should not be.
        let excerpt: String = text.chars().take(16 * 1024).collect();
        let body = json!({
            "schema": record::SCHEMA,
            "receivedAt": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "invocationId": invocation_id,
            "error": error,
            "event": excerpt,
        });
        self.store
            .put(&name, serde_json::to_vec_pretty(&body).unwrap_or_default())
            .await?;
        Ok(name)
    }

    /// The most recently received records, newest first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<Record>, StoreError> {
        let names = self.store.list("index/", limit * 2 + 10).await?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for name in names {
            let Some(key) = name
                .strip_prefix("index/")
                .and_then(|r| r.split_once('/'))
                .map(|(_, k)| k.to_string())
            else {
                continue;
            };
            if !seen.insert(key.clone()) {
                continue;
            }
            if let Some((record, _)) = self.load(&key).await? {
                out.push(record);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Every record of `model` (all workspaces), newest first.
    pub async fn model_history(
        &self,
        model: &str,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let names = self.store.list(&format!("records/{model}/"), 5000).await?;
        let mut out = Vec::new();
        for name in names {
            if let Some((record, _)) = self.load(&name).await? {
                out.push(record);
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.first_received));
        out.truncate(limit);
        Ok(out)
    }

    /// Every record of `model:version` (one per workspace).
    pub async fn version_records(
        &self,
        model: &str,
        version: &str,
    ) -> Result<Vec<Record>, StoreError> {
        let names = self.store.list(&format!("records/{model}/"), 5000).await?;
        let mut out = Vec::new();
        for name in names
            .iter()
            .filter(|n| n.ends_with(&format!("/{version}.json")))
        {
            if let Some((record, _)) = self.load(name).await? {
                out.push(record);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::names::index_name;
    use time::macros::datetime;

    #[test]
    fn keys_are_stable_blob_safe_and_case_insensitive_on_the_workspace() {
        let a = workspace_key(
            "/subscriptions/S/resourceGroups/RG/providers/Microsoft.MachineLearningServices/workspaces/ML-WS",
        );
        let b = workspace_key(
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.machinelearningservices/workspaces/ml-ws/",
        );
        assert_eq!(a, b);
        assert!(a.starts_with("ml-ws-"), "{a}");
        assert_eq!(
            record_key("/x/ws", "credit", "7"),
            format!("records/credit/{}/7.json", workspace_key("/x/ws"))
        );
        assert_eq!(
            record_model_version(&record_key("/x/ws", "credit", "7")),
            Some(("credit", "7"))
        );
        assert_eq!(record_model_version("endpoints/ws/ep.json"), None);
    }

    #[test]
    fn recent_first_and_due_order_come_from_lexical_order() {
        let early = index_name("k", datetime!(2026-01-01 0:00 UTC));
        let late = index_name("k", datetime!(2026-06-01 0:00 UTC));
        assert!(late < early, "newer must sort first");
        let soon = outbox_name("k", datetime!(2026-01-01 0:00 UTC));
        let later = outbox_name("k", datetime!(2026-06-01 0:00 UTC));
        assert!(soon < later);
        let parsed = parse_outbox(&soon).unwrap();
        assert_eq!(
            (parsed.due, parsed.key.as_str()),
            (datetime!(2026-01-01 0:00 UTC), "k")
        );
        assert_ne!(
            outbox_name("k", datetime!(2026-01-01 0:00 UTC)),
            soon,
            "same time, distinct markers"
        );
    }

    #[test]
    fn retry_delay_doubles_and_is_capped() {
        let ledger = Ledger::in_memory();
        assert_eq!(ledger.retry_delay(1), Duration::from_secs(60));
        assert_eq!(ledger.retry_delay(2), Duration::from_secs(120));
        assert_eq!(ledger.retry_delay(30), MAX_RETRY_DELAY);
    }

    fn skipped_record(version: &str) -> Record {
        Record::from_bytes(
            json!({
                "schema": record::SCHEMA, "key": record_key("/ws", "m", version),
                "workspace": "/ws", "model": "m", "version": version, "state": "skipped",
                "decision": "skipped", "first_received": "2026-01-01T00:00:00Z",
                "last_received": "2026-01-01T00:00:00Z"
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    /// The merge a duplicate makes: nothing.
    fn keep(_: &mut Record) -> Edit<()> {
        Edit::Keep(())
    }

    #[tokio::test]
    async fn a_version_seen_before_is_read_not_created_again_unless_it_vanished() {
        let store = Arc::new(store::testing::RacingStore::default());
        let ledger = Ledger::new(store.clone(), LedgerOptions::default());
        let record = skipped_record("1");
        let created = ledger.create_or_merge(&record, keep).await.unwrap();
        assert!(matches!(created, Written::Created(_)), "first: created");
        let (_, existing, _, saved) = ledger
            .create_or_merge(&record, keep)
            .await
            .unwrap()
            .merged()
            .unwrap();
        assert_eq!(existing, record, "second: the stored record comes back");
        assert!(!saved);
        assert_eq!(
            store.creates.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a duplicate costs a read, not a create bound to fail"
        );
        // The hint is only a hint: a record that is gone is created again.
        store.delete(&record.key).await.unwrap();
        let recreated = ledger.create_or_merge(&record, keep).await.unwrap();
        assert!(matches!(recreated, Written::Created(_)), "recreated");
        assert_eq!(ledger.load(&record.key).await.unwrap().unwrap().0, record);
    }

    #[tokio::test]
    async fn a_create_whose_answer_was_lost_is_recognised_as_ours() {
        let store = Arc::new(MemoryStore::new());
        let ledger = Ledger::new(store.clone(), LedgerOptions::default());
        let ours = skipped_record("7");
        // The write was applied, the answer never arrived, and the retry meets the blob: it holds
        // exactly what we sent, so the create succeeded.
        store.create(&ours.key, ours.to_bytes()).await.unwrap();
        let created = ledger.create_or_merge(&ours, keep).await.unwrap();
        assert!(matches!(created, Written::Created(_)), "ours");
        // Another delivery's record at the same key is somebody else's.
        let mut theirs = ours.clone();
        theirs.invocation_ids = vec!["another-invocation".into()];
        let (_, existing, _, _) = ledger
            .create_or_merge(&theirs, keep)
            .await
            .unwrap()
            .merged()
            .unwrap();
        assert_eq!(existing, ours);
    }

    #[tokio::test]
    async fn latest_pointer_only_moves_forward() {
        let ledger = Ledger::in_memory();
        let t1 = datetime!(2026-01-01 0:00 UTC);
        let t2 = datetime!(2026-02-01 0:00 UTC);
        assert!(
            ledger
                .advance_latest("/ws", "r", "m", "2", Some(t2))
                .await
                .unwrap()
        );
        assert!(
            !ledger
                .advance_latest("/ws", "r", "m", "1", Some(t1))
                .await
                .unwrap(),
            "an older version loses"
        );
        assert_eq!(
            ledger
                .newer_version_acted("/ws", "r", "m", Some(t1))
                .await
                .unwrap()
                .unwrap()
                .0,
            "2"
        );
        assert_eq!(
            ledger
                .newer_version_acted("/ws", "r", "m", Some(t2))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            ledger
                .newer_version_acted("/ws", "other-rule", "m", Some(t1))
                .await
                .unwrap(),
            None
        );
    }
}
