//! Blob names: records, the outbox, the index and the newest-version pointers.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub(super) const INVERT_BASE: i128 = 9_999_999_999_999;

/// The short, stable, blob-safe key of a workspace: its name plus a hash of the full id.
pub fn workspace_key(workspace: &str) -> String {
    // Every record key needs it and an app sees one workspace: remember the last one per thread
    // (the hash was a twentieth of an invocation's CPU time).
    thread_local! {
        static LAST: std::cell::RefCell<Option<(String, String)>> = const { std::cell::RefCell::new(None) };
    }
    if let Some(key) = LAST.with_borrow(|last| {
        last.as_ref()
            .filter(|(w, _)| w == workspace)
            .map(|(_, key)| key.clone())
    }) {
        return key;
    }
    let key = compute_workspace_key(workspace);
    LAST.set(Some((workspace.to_string(), key.clone())));
    key
}

fn compute_workspace_key(workspace: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let normalized = workspace.trim().trim_end_matches('/').to_ascii_lowercase();
    let hash = Sha256::digest(normalized.as_bytes());
    let hex: String = hash
        .iter()
        .take(6)
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
        .map(char::from)
        .collect();
    let name: String = normalized
        .rsplit('/')
        .next()
        .unwrap_or("ws")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(40)
        .collect();
    format!("{}-{hex}", if name.is_empty() { "ws" } else { &name })
}

/// The record's blob name.
pub fn record_key(workspace: &str, model: &str, version: &str) -> String {
    format!(
        "records/{model}/{}/{version}.json",
        workspace_key(workspace)
    )
}

/// The model and version a record key names (see [`record_key`]); `None` for other names.
pub fn record_model_version(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("records/")?;
    let (model, rest) = rest.split_once('/')?;
    let (_, file) = rest.split_once('/')?;
    Some((model, file.strip_suffix(".json")?))
}

pub(super) fn millis(at: OffsetDateTime) -> i128 {
    (at.unix_timestamp_nanos() / 1_000_000).max(0)
}

/// An outbox entry: `key` needs attention at `due`. The name carries a nonce, so two deliveries
/// scheduling the same record in the same millisecond never share (and delete) one marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The blob name.
    pub name: String,
    /// When it is due.
    pub due: OffsetDateTime,
    /// The record it points at.
    pub key: String,
}

pub(super) fn outbox_name(key: &str, due: OffsetDateTime) -> String {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("outbox/{:013}-{}/{key}", millis(due), &nonce[..8])
}

pub(super) fn index_name(key: &str, received: OffsetDateTime) -> String {
    format!("index/{:013}/{key}", INVERT_BASE - millis(received))
}

pub(super) fn latest_name(workspace: &str, rule: &str, model: &str) -> String {
    format!("latest/{model}/{}/{rule}.json", workspace_key(workspace))
}

/// Parses `outbox/{millis}-{nonce}/{key}`.
pub(super) fn parse_outbox(name: &str) -> Option<Marker> {
    let rest = name.strip_prefix("outbox/")?;
    let (stamp, key) = rest.split_once('/')?;
    let ms: i128 = stamp.split('-').next()?.parse().ok()?;
    let due = OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok()?;
    Some(Marker {
        name: name.to_string(),
        due,
        key: key.to_string(),
    })
}
