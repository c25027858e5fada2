//! The storage the ledger needs, and nothing more: create-only writes, ETag-conditional updates,
//! reads, deletes and prefix listing. Two implementations: Azure Blob Storage ([`super::blob`]) and
//! an in-process map for development and dry runs ([`MemoryStore`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

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
/// semantics with it (a transient failure answers non-2xx).
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, (Vec<u8>, u64)>>,
    next_tag: Mutex<u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn tag(&self) -> u64 {
        let mut next = self.next_tag.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        *next
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Vec<u8>, u64)>> {
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
        let tag = self.tag();
        let mut objects = self.objects();
        if objects.contains_key(name) {
            return Err(StoreError::AlreadyExists);
        }
        objects.insert(name.to_string(), (body, tag));
        Ok(ETag(tag.to_string()))
    }

    async fn read(&self, name: &str) -> Result<Option<(Vec<u8>, ETag)>, StoreError> {
        Ok(self
            .objects()
            .get(name)
            .map(|(body, tag)| (body.clone(), ETag(tag.to_string()))))
    }

    async fn replace(&self, name: &str, body: Vec<u8>, etag: &ETag) -> Result<ETag, StoreError> {
        let tag = self.tag();
        let mut objects = self.objects();
        match objects.get(name) {
            Some((_, current)) if current.to_string() == etag.0 => {
                objects.insert(name.to_string(), (body, tag));
                Ok(ETag(tag.to_string()))
            }
            _ => Err(StoreError::Conflict),
        }
    }

    async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), StoreError> {
        let tag = self.tag();
        self.objects().insert(name.to_string(), (body, tag));
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.objects().remove(name);
        Ok(())
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, _)| k.clone())
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
}
