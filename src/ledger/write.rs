//! The ledger's one compare-and-swap loop. Every read-modify-write of a stored object (records,
//! endpoint locks, leases, newest-version pointers) goes through [`Ledger::swap`]: read, edit,
//! write with the ETag (or create-only when absent), and on a lost race read again and re-apply
//! the edit, a bounded number of times.
//!
//! It also holds the "recognise our own lost write" rule: when a write's answer is lost (a
//! dropped or cut-off response that the storage client retries into 409 or 412), the stored
//! bytes are exactly the ones we sent, so the write is ours and not somebody else's.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::names::index_name;
use super::options::LedgerOptions;
use super::record::Record;
use super::store::Store;
use super::store::{ETag, StoreError};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// How many times a write re-reads and re-applies its edit after losing a race before it gives
/// up with [`StoreError::Conflict`]. Races are between deliveries of one version and Reconcile:
/// a handful at most.
pub const MAX_TRIES: usize = 10;

/// What an edit does with the stored object on one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<R> {
    /// Write the edited object and report `R`.
    Save(R),
    /// Leave the stored object as it is and report `R` (nothing to do, or no longer ours).
    Keep(R),
}

/// What to do when the object does not exist.
#[derive(Debug, Clone)]
pub enum Absent<'a, T> {
    /// Create it as given (encoded, never copied); the edit is for existing objects only.
    Create(&'a T),
    /// Apply the edit to this starting value, then create it.
    Edit(T),
    /// Nothing: report [`Swapped::Missing`].
    Missing,
}

/// The ledger over a [`Store`].
pub struct Ledger {
    pub(super) store: Arc<dyn Store>,
    /// Timing knobs.
    pub options: LedgerOptions,
    /// Record keys this process saw exist. A delivery of a known version reads the record first
    /// instead of sending a create that is bound to fail (a duplicate then costs one read, not a
    /// refused write and a read). Only a hint: create-only writes still decide who is first.
    pub(super) existing: Mutex<HashSet<String>>,
}

/// What [`Ledger::swap`] knows of the stored object before its first try.
#[derive(Debug, Clone)]
pub enum Start<T> {
    /// Nothing: read it.
    Read,
    /// The object as last read, with its ETag: edit it without reading again.
    Known(T, ETag),
    /// Probably absent (a new version): try the create first, which costs one request.
    Absent,
}

/// What [`Ledger::swap`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Swapped<T, R> {
    /// The object was absent and [`Absent::Create`] created it; its ETag.
    Created(ETag),
    /// The edit ran on the object (stored, or new with [`Absent::Edit`]); `saved` tells whether
    /// it was written.
    Edited {
        /// What the edit reported on the try that counted.
        value: R,
        /// The object as stored now.
        object: T,
        /// Its ETag.
        etag: ETag,
        /// Whether this call wrote it.
        saved: bool,
    },
    /// The object does not exist and [`Absent::Missing`] was asked for.
    Missing,
}

/// How an object is stored: JSON, except records, which also check their format.
pub trait Stored: Clone + Sized {
    /// Parses the stored bytes of `name`.
    fn decode(name: &str, bytes: &[u8]) -> Result<Self, StoreError>;
    /// The bytes to store.
    fn encode(&self) -> Vec<u8>;
}

impl Stored for Record {
    fn decode(name: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        Record::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
    }
    fn encode(&self) -> Vec<u8> {
        self.to_bytes()
    }
}

/// A JSON object that is not a record (an endpoint lock, a lease, a pointer).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Json<T>(pub T);

impl<T: Serialize + DeserializeOwned + Clone> Stored for Json<T> {
    fn decode(name: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes)
            .map(Json)
            .map_err(|e| StoreError::Unavailable(format!("{name} is unreadable: {e}")))
    }
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.0).unwrap_or_default()
    }
}

/// What a record write did.
#[derive(Debug, Clone, PartialEq)]
pub enum Written<R> {
    /// The version had no record: the fresh one was created as given.
    Created(ETag),
    /// The version had a record and the edit ran on it.
    Merged {
        /// What the edit reported.
        value: R,
        /// The record as stored now.
        record: Box<Record>,
        /// Its ETag.
        etag: ETag,
        /// Whether this call wrote it.
        saved: bool,
    },
    /// There is no record (updates only).
    Missing,
}

impl Ledger {
    /// The compare-and-swap loop (see the module docs).
    pub async fn swap<T: Stored, R>(
        &self,
        name: &str,
        start: Start<T>,
        absent: Absent<'_, T>,
        mut edit: impl FnMut(&mut T) -> Edit<R>,
    ) -> Result<Swapped<T, R>, StoreError> {
        // What is stored, when already known (from the caller or a refused write's re-read).
        let mut known = match start {
            Start::Read => None,
            Start::Known(object, etag) => Some(Some((object, etag))),
            Start::Absent => Some(None),
        };
        for _ in 0..MAX_TRIES {
            let current = match known.take() {
                Some(current) => current,
                None => match self.store.read(name).await? {
                    None => None,
                    Some((bytes, etag)) => Some((T::decode(name, &bytes)?, etag)),
                },
            };
            let Some((mut object, etag)) = current else {
                let (bytes, edited) = match &absent {
                    Absent::Missing => return Ok(Swapped::Missing),
                    Absent::Create(initial) => (initial.encode(), None),
                    Absent::Edit(initial) => {
                        let mut object = initial.clone();
                        match edit(&mut object) {
                            Edit::Save(value) => (object.encode(), Some((object, value))),
                            Edit::Keep(_) => return Ok(Swapped::Missing),
                        }
                    }
                };
                let etag = match self.store.create(name, bytes.clone()).await {
                    Ok(etag) => etag,
                    Err(StoreError::AlreadyExists) => match self.ours(name, &bytes).await? {
                        Ok(etag) => etag,
                        Err(stored) => {
                            known = Some(stored);
                            continue;
                        }
                    },
                    Err(e) => return Err(e),
                };
                return Ok(match edited {
                    None => Swapped::Created(etag),
                    Some((object, value)) => Swapped::Edited {
                        value,
                        object,
                        etag,
                        saved: true,
                    },
                });
            };
            let value = match edit(&mut object) {
                Edit::Keep(value) => {
                    return Ok(Swapped::Edited {
                        value,
                        object,
                        etag,
                        saved: false,
                    });
                }
                Edit::Save(value) => value,
            };
            let bytes = object.encode();
            let etag = match self.store.replace(name, bytes.clone(), &etag).await {
                Ok(etag) => etag,
                Err(StoreError::Conflict) => match self.ours(name, &bytes).await? {
                    Ok(etag) => etag,
                    Err(stored) => {
                        known = Some(stored);
                        continue;
                    }
                },
                Err(e) => return Err(e),
            };
            return Ok(Swapped::Edited {
                value,
                object,
                etag,
                saved: true,
            });
        }
        Err(StoreError::Conflict)
    }

    /// After a refused write: the ETag of what is stored when it is byte for byte what we sent
    /// (our own write, applied while its answer was lost); else what is stored now (somebody
    /// else's write, or nothing), for the next try.
    async fn ours<T: Stored>(
        &self,
        name: &str,
        sent: &[u8],
    ) -> Result<Result<ETag, Option<(T, ETag)>>, StoreError> {
        Ok(match self.store.read(name).await? {
            Some((stored, etag)) if stored == sent => Ok(etag),
            Some((stored, etag)) => Err(Some((T::decode(name, &stored)?, etag))),
            None => Err(None),
        })
    }

    /// Replaces a record if it still has `etag`: one try, for writers that own the record (a
    /// claim, a rollout step) and must stop, not merge, when somebody else changed it.
    pub async fn save(&self, record: &Record, etag: &ETag) -> Result<ETag, StoreError> {
        let bytes = record.encode();
        match self.store.replace(&record.key, bytes.clone(), etag).await {
            Err(StoreError::Conflict) => self
                .ours::<Record>(&record.key, &bytes)
                .await?
                .map_err(|_| StoreError::Conflict),
            written => written,
        }
    }

    /// Creates `fresh` (create-only) unless its version already has a record; then `merge` edits
    /// the stored record, re-applied on every lost race. Every writer of records uses this or
    /// [`Ledger::update`].
    pub async fn create_or_merge<R>(
        &self,
        fresh: &Record,
        merge: impl FnMut(&mut Record) -> Edit<R>,
    ) -> Result<Written<R>, StoreError> {
        // A version this process saw before is read first instead of sending a create that is
        // bound to fail (a duplicate then costs one read, not a refused write and a read).
        let start = if self.known_to_exist(&fresh.key) {
            Start::Read
        } else {
            Start::Absent
        };
        let swapped = self
            .swap(&fresh.key, start, Absent::Create(fresh), merge)
            .await?;
        self.note_existing(&fresh.key);
        Ok(match swapped {
            // The index is a listing aid for `status`, which reads a durable ledger from another
            // process: an in-memory ledger is never listed, so it keeps no index.
            Swapped::Created(etag) if !self.store.is_durable() => Written::Created(etag),
            Swapped::Created(etag) => {
                // A missing entry only hides the record from `status`'s recent view, never from
                // the pipeline.
                if let Err(e) = self
                    .store
                    .put(&index_name(&fresh.key, fresh.first_received), Vec::new())
                    .await
                {
                    tracing::warn!(error = %e, key = %fresh.key, "failed to write the ledger index entry");
                }
                Written::Created(etag)
            }
            swapped => swapped.into(),
        })
    }

    /// Edits the record under `key`: from `known` (the record and ETag as last read) when given,
    /// else read first; re-read and re-applied on every lost race. [`Written::Missing`] when there
    /// is no record.
    pub async fn update<R>(
        &self,
        key: &str,
        known: Option<(Record, ETag)>,
        edit: impl FnMut(&mut Record) -> Edit<R>,
    ) -> Result<Written<R>, StoreError> {
        let start = match known {
            Some((record, etag)) => Start::Known(record, etag),
            None => Start::Read,
        };
        // Never created: with `Absent::Missing` an absent record stays absent.
        Ok(self.swap(key, start, Absent::Missing, edit).await?.into())
    }

    /// Read-modify-write of a JSON object that is not a record (created from `T::default()` when
    /// absent); returns what `change` returned on the try that was written.
    pub async fn update_json<T, R>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut T) -> R,
    ) -> Result<R, StoreError>
    where
        T: Serialize + DeserializeOwned + Default + Clone,
    {
        match self
            .swap(
                name,
                Start::Read,
                Absent::Edit(Json(T::default())),
                |json| Edit::Save(change(&mut json.0)),
            )
            .await?
        {
            Swapped::Edited { value, .. } => Ok(value),
            // Unreachable with an edit that always saves; a conflict is the honest answer.
            Swapped::Created(..) | Swapped::Missing => Err(StoreError::Conflict),
        }
    }
}

impl<R> From<Swapped<Record, R>> for Written<R> {
    fn from(swapped: Swapped<Record, R>) -> Self {
        match swapped {
            Swapped::Created(etag) => Written::Created(etag),
            Swapped::Edited {
                value,
                object,
                etag,
                saved,
            } => Written::Merged {
                value,
                record: Box::new(object),
                etag,
                saved,
            },
            Swapped::Missing => Written::Missing,
        }
    }
}

impl<R> Written<R> {
    /// The stored record after the write, when there was one before it.
    pub fn merged(self) -> Option<(R, Record, ETag, bool)> {
        match self {
            Written::Merged {
                value,
                record,
                etag,
                saved,
            } => Some((value, *record, etag, saved)),
            Written::Created(_) | Written::Missing => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;
    use crate::ledger::store::testing::RacingStore;
    use crate::ledger::{LedgerOptions, record_key};

    fn record() -> Record {
        Record::from_bytes(
            json!({
                "schema": 1, "key": record_key("/ws", "m", "1"), "workspace": "/ws", "model": "m",
                "version": "1", "state": "skipped", "first_received": "2026-01-01T00:00:00Z",
                "last_received": "2026-01-01T00:00:00Z"
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn ledger(store: &Arc<RacingStore>) -> Ledger {
        Ledger::new(store.clone(), LedgerOptions::default())
    }

    /// A ledger over a racing store that holds one record.
    async fn recorded() -> (Arc<RacingStore>, Ledger, Record) {
        let store = Arc::new(RacingStore::default());
        let ledger = ledger(&store);
        let fresh = record();
        ledger
            .create_or_merge(&fresh, |_| Edit::Keep(()))
            .await
            .unwrap();
        (store, ledger, fresh)
    }

    #[tokio::test]
    async fn a_lost_race_re_reads_and_re_applies_the_edit_keeping_the_other_write() {
        let (store, ledger, fresh) = recorded().await;
        store.races.store(2, Ordering::SeqCst);
        let mut tries = 0;
        let (value, stored, _, saved) = ledger
            .update(&fresh.key, None, |r| {
                tries += 1;
                r.event_ids.push("ours".into());
                Edit::Save(tries)
            })
            .await
            .unwrap()
            .merged()
            .unwrap();
        assert!(saved);
        assert_eq!(value, 3, "two lost races, the third try wins");
        assert_eq!(stored.event_ids, ["theirs-2", "theirs-1", "ours"]);
        let (reread, _) = ledger.load(&fresh.key).await.unwrap().unwrap();
        assert_eq!(reread, stored);
    }

    #[tokio::test]
    async fn a_write_whose_answer_was_lost_is_recognised_as_ours() {
        let (store, ledger, fresh) = recorded().await;
        store.lose_answers.store(1, Ordering::SeqCst);
        let mut tries = 0;
        let written = ledger
            .update(&fresh.key, None, |r| {
                tries += 1;
                r.event_ids.push(format!("ours-{tries}"));
                Edit::Save(())
            })
            .await
            .unwrap();
        let (_, stored, _, saved) = written.merged().unwrap();
        assert!(saved);
        assert_eq!(tries, 1, "not applied twice");
        assert_eq!(stored.event_ids, ["ours-1"]);
        assert_eq!(store.replaces.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn endless_races_end_in_a_conflict_after_the_bounded_tries() {
        let (store, ledger, fresh) = recorded().await;
        store.races.store(usize::MAX / 2, Ordering::SeqCst);
        let result = ledger.update(&fresh.key, None, |_| Edit::Save(())).await;
        assert_eq!(result, Err(StoreError::Conflict));
        assert_eq!(store.replaces.load(Ordering::SeqCst), MAX_TRIES);
    }

    #[tokio::test]
    async fn keep_writes_nothing_and_missing_records_are_reported() {
        let store = Arc::new(RacingStore::default());
        let ledger = ledger(&store);
        let fresh = record();
        let missing = ledger.update(&fresh.key, None, |_| Edit::Save(())).await;
        assert_eq!(missing, Ok(Written::Missing));
        ledger
            .create_or_merge(&fresh, |_| Edit::Keep(()))
            .await
            .unwrap();
        let (_, _, _, saved) = ledger
            .update(&fresh.key, None, |r| {
                r.event_ids.push("not written".into());
                Edit::Keep(())
            })
            .await
            .unwrap()
            .merged()
            .unwrap();
        assert!(!saved);
        assert_eq!(store.replaces.load(Ordering::SeqCst), 0);
        assert!(
            ledger
                .load(&fresh.key)
                .await
                .unwrap()
                .unwrap()
                .0
                .event_ids
                .is_empty()
        );
    }

    #[tokio::test]
    async fn json_objects_start_from_their_default_and_swap_like_records() {
        let ledger = Ledger::in_memory();
        let first: u32 = ledger
            .update_json("locks/a.json", |n: &mut u32| {
                *n += 1;
                *n
            })
            .await
            .unwrap();
        let second: u32 = ledger
            .update_json("locks/a.json", |n: &mut u32| {
                *n += 1;
                *n
            })
            .await
            .unwrap();
        assert_eq!((first, second), (1, 2));
    }
}
