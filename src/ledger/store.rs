//! The storage the ledger needs, and nothing more: create-only writes, ETag-conditional updates,
//! reads, deletes and prefix listing. Two implementations: Azure Blob Storage ([`super::blob`]) and
//! an in-process map for development and dry runs ([`MemoryStore`]).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, Mutex};

use thiserror::Error;

/// An entity tag: the version of a stored object, for optimistic concurrency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(pub(crate) String);

impl ETag {
    /// A tag as the service sends it (e.g. `"0x8DC…"`).
    pub fn from_service(tag: &str) -> Self {
        Self(tag.to_string())
    }

    /// The tag as the service sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a storage operation failed.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum StoreError {
    /// A create-only write found the object already there.
    #[error("the object already exists")]
    AlreadyExists,
    /// A conditional update found the object changed (or gone) since it was read.
    #[error("the object changed since it was read")]
    Conflict,
    /// Storage could not be reached or refused us (network, 5xx, 403 on a bad key, …).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An object is there but cannot be understood (e.g. written by a newer version).
    #[error("unreadable ledger object: {0}")]
    Corrupt(String),
}

/// Object storage with optimistic concurrency.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// A description for logs (never includes credentials).
    fn describe(&self) -> String;

    /// Whether what is written survives a restart (false for the in-memory store).
    fn is_durable(&self) -> bool;

    /// Writes `body` at `name` only if nothing is there (`If-None-Match: *`).
    async fn create(&self, name: &str, body: Vec<u8>) -> Result<ETag, StoreError>;

    /// Reads `name`; `None` if absent.
    async fn read(&self, name: &str) -> Result<Option<(Vec<u8>, ETag)>, StoreError>;

    /// Replaces `name` only if it still has `etag` (`If-Match`).
    async fn replace(&self, name: &str, body: Vec<u8>, etag: &ETag) -> Result<ETag, StoreError>;

    /// Writes `name` unconditionally.
    async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), StoreError>;

    /// Deletes `name`; absent is fine.
    async fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// Names under `prefix` in lexical order, at most `limit`.
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError>;
}

/// An in-process store. Nothing survives a restart, so the pipeline keeps Event Grid's retry
/// semantics with it (a transient failure answers non-2xx). Bounded: past [`MEMORY_STORE_LIMIT`]
/// bytes the oldest objects are forgotten, so a long-running process keeps a steady footprint
/// (duplicates are then only caught among recent versions; a durable ledger has no such limit).
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// One lock for everything (the tags too): every request of the hot path writes here, from
    /// both worker threads, and each extra lock is another cache line passed between cores.
    objects: Mutex<Objects>,
}

/// How much the in-memory store keeps.
pub const MEMORY_STORE_LIMIT: usize = 2 * 1024 * 1024;

/// The objects, with a running size and an age index, so a write costs O(log n) rather than a
/// walk over everything kept. Names are shared between the two maps (one allocation each).
#[derive(Debug, Default)]
struct Objects {
    by_name: BTreeMap<Arc<str>, (Vec<u8>, u64)>,
    /// Tag → name: the smallest tag was written longest ago.
    by_age: BTreeMap<u64, Arc<str>>,
    /// Sum of name and body lengths.
    total: usize,
    /// The last tag given out.
    last_tag: u64,
}

impl Objects {
    fn get(&self, name: &str) -> Option<&(Vec<u8>, u64)> {
        self.by_name.get(name)
    }

    /// Writes `body` at `name` (create-only with `create_only`); the new tag, or `None` when
    /// `create_only` found the name taken. One walk down the map either way.
    fn write(&mut self, name: &str, body: Vec<u8>, create_only: bool) -> Option<u64> {
        self.last_tag += 1;
        let tag = self.last_tag;
        let body_len = body.len();
        match self.by_name.entry(Arc::from(name)) {
            Entry::Occupied(_) if create_only => return None,
            Entry::Occupied(mut entry) => {
                let (old_body, old_tag) = entry.insert((body, tag));
                self.total = self.total - old_body.len() + body_len;
                self.by_age.remove(&old_tag);
                self.by_age.insert(tag, entry.key().clone());
            }
            Entry::Vacant(entry) => {
                self.total += name.len() + body_len;
                self.by_age.insert(tag, entry.key().clone());
                entry.insert((body, tag));
            }
        }
        self.evict();
        Some(tag)
    }

    /// Replaces `name`'s body if it still has `tag`; its new tag.
    fn replace(&mut self, name: &str, body: Vec<u8>, tag: &str) -> Option<u64> {
        let (stored, stored_tag) = self.by_name.get_mut(name)?;
        if stored_tag.to_string() != tag {
            return None;
        }
        self.last_tag += 1;
        let old_tag = std::mem::replace(stored_tag, self.last_tag);
        self.total = self.total - stored.len() + body.len();
        *stored = body;
        if let Some(key) = self.by_age.remove(&old_tag) {
            self.by_age.insert(self.last_tag, key);
        }
        self.evict();
        Some(self.last_tag)
    }

    /// Past the limit, forgets the oldest down to three quarters of it.
    fn evict(&mut self) {
        if self.total <= MEMORY_STORE_LIMIT {
            return;
        }
        while self.total > MEMORY_STORE_LIMIT * 3 / 4 {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((body, _)) = self.by_name.remove(&oldest) {
                self.total -= oldest.len() + body.len();
            }
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some((name, (body, tag))) = self.by_name.remove_entry(name) {
            self.total -= name.len() + body.len();
            self.by_age.remove(&tag);
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "in-memory ledger (not durable)".to_string()
    }

    fn is_durable(&self) -> bool {
        false
    }

    async fn create(&self, name: &str, body: Vec<u8>) -> Result<ETag, StoreError> {
        match self.objects().write(name, body, true) {
            Some(tag) => Ok(ETag(tag.to_string())),
            None => Err(StoreError::AlreadyExists),
        }
    }

    async fn read(&self, name: &str) -> Result<Option<(Vec<u8>, ETag)>, StoreError> {
        Ok(self
            .objects()
            .get(name)
            .map(|(body, tag)| (body.clone(), ETag(tag.to_string()))))
    }

    async fn replace(&self, name: &str, body: Vec<u8>, etag: &ETag) -> Result<ETag, StoreError> {
        match self.objects().replace(name, body, &etag.0) {
            Some(tag) => Ok(ETag(tag.to_string())),
            None => Err(StoreError::Conflict),
        }
    }

    async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.objects().write(name, body, false);
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.objects().remove(name);
        Ok(())
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self
            .objects()
            .by_name
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, _)| k.to_string())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_enforces_create_only_and_etags() {
        let store = MemoryStore::new();
        let tag = store.create("a", b"1".to_vec()).await.unwrap();
        assert_eq!(
            store.create("a", b"2".to_vec()).await,
            Err(StoreError::AlreadyExists)
        );
        let tag2 = store.replace("a", b"3".to_vec(), &tag).await.unwrap();
        assert_eq!(
            store.replace("a", b"4".to_vec(), &tag).await,
            Err(StoreError::Conflict)
        );
        assert_eq!(
            store.read("a").await.unwrap().unwrap(),
            (b"3".to_vec(), tag2)
        );
        store.put("b/1", vec![]).await.unwrap();
        store.put("b/2", vec![]).await.unwrap();
        store.put("c", vec![]).await.unwrap();
        assert_eq!(store.list("b/", 10).await.unwrap(), vec!["b/1", "b/2"]);
        assert_eq!(store.list("b/", 1).await.unwrap(), vec!["b/1"]);
        store.delete("b/1").await.unwrap();
        store.delete("nothing").await.unwrap();
        assert_eq!(store.list("b/", 10).await.unwrap(), vec!["b/2"]);
    }

    #[tokio::test]
    async fn rewriting_one_object_never_evicts_the_others() {
        // The running total must count a replaced body once, not once per write.
        let store = MemoryStore::new();
        store.put("keep", b"small".to_vec()).await.unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut tag = store.create("big", chunk.clone()).await.unwrap();
        for _ in 0..100 {
            tag = store.replace("big", chunk.clone(), &tag).await.unwrap();
            store.put("big-put", chunk.clone()).await.unwrap();
        }
        store.delete("big-put").await.unwrap();
        assert!(store.read("keep").await.unwrap().is_some());
        assert_eq!(
            store.objects().total,
            "keep".len() + 5 + "big".len() + chunk.len()
        );
    }

    #[tokio::test]
    async fn memory_store_forgets_the_oldest_past_its_limit() {
        let store = MemoryStore::new();
        let chunk = vec![b'x'; 64 * 1024];
        for i in 0..100 {
            store.put(&format!("k{i:03}"), chunk.clone()).await.unwrap();
        }
        assert!(
            store.read("k000").await.unwrap().is_none(),
            "the oldest went first"
        );
        assert!(store.read("k099").await.unwrap().is_some());
        let kept: usize = store.list("k", 1000).await.unwrap().len();
        assert!(kept * chunk.len() <= MEMORY_STORE_LIMIT, "{kept}");
    }
}

/// Stores for tests that inject races and count requests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{ETag, MemoryStore, Store, StoreError};
    use crate::ledger::Record;

    /// A [`MemoryStore`] that counts creates and replaces and in which, before each of our first `races` replaces, another writer adds an event
    /// id to the record; and whose replaces can lose their answer after being applied.
    #[derive(Default)]
    pub(crate) struct RacingStore {
        inner: MemoryStore,
        pub(crate) creates: AtomicUsize,
        pub(crate) races: AtomicUsize,
        pub(crate) lose_answers: AtomicUsize,
        pub(crate) replaces: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Store for RacingStore {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn is_durable(&self) -> bool {
            false
        }
        async fn create(&self, name: &str, body: Vec<u8>) -> Result<ETag, StoreError> {
            self.creates.fetch_add(1, Ordering::SeqCst);
            self.inner.create(name, body).await
        }
        async fn read(&self, name: &str) -> Result<Option<(Vec<u8>, ETag)>, StoreError> {
            self.inner.read(name).await
        }
        async fn replace(
            &self,
            name: &str,
            body: Vec<u8>,
            etag: &ETag,
        ) -> Result<ETag, StoreError> {
            self.replaces.fetch_add(1, Ordering::SeqCst);
            if self.races.load(Ordering::SeqCst) > 0 {
                let n = self.races.fetch_sub(1, Ordering::SeqCst);
                let (bytes, current) = self.inner.read(name).await?.unwrap();
                let mut theirs = Record::from_bytes(&bytes).unwrap();
                theirs.event_ids.push(format!("theirs-{n}"));
                self.inner
                    .replace(name, theirs.to_bytes(), &current)
                    .await?;
            }
            let written = self.inner.replace(name, body, etag).await?;
            if self.lose_answers.load(Ordering::SeqCst) > 0 {
                self.lose_answers.fetch_sub(1, Ordering::SeqCst);
                return Err(StoreError::Conflict);
            }
            Ok(written)
        }
        async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), StoreError> {
            self.inner.put(name, body).await
        }
        async fn delete(&self, name: &str) -> Result<(), StoreError> {
            self.inner.delete(name).await
        }
        async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
            self.inner.list(prefix, limit).await
        }
    }
}
