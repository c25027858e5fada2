//! The GitHub App installation tokens a client holds, per installation, until shortly before
//! they expire; and which installation serves which repository.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use secrecy::SecretString;

/// An installation token is renewed when less than this is left of its hour.
pub(super) const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
pub(super) struct AppTokenCache {
    pub(super) installation_by_repo: HashMap<String, u64>,
    pub(super) tokens: HashMap<u64, CachedToken>,
}

pub(super) struct CachedToken {
    pub(super) token: SecretString,
    pub(super) renew_at: Instant,
}
