//! A claim on a record: whoever holds it (unexpired) is the one acting on the record now.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A claim on a record: who is sending its action, since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The attempt this claim belongs to.
    pub attempt_id: String,
    /// When it was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub claimed_at: OffsetDateTime,
}
