//! The ledger's settings: its timing knobs and its container.

use std::time::Duration;

use crate::env::Env;

/// Timing knobs of the ledger.
#[derive(Debug, Clone, Copy)]
pub struct LedgerOptions {
    /// A `dispatching` claim older than this is presumed dead and taken over.
    pub claim_timeout: Duration,
    /// Delay before the first retry; doubles per failed attempt, capped at an hour.
    pub first_retry_delay: Duration,
    /// After this long since the first delivery, a version that still failed is `failed`.
    pub give_up_after: Duration,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            claim_timeout: Duration::from_secs(120),
            first_retry_delay: Duration::from_secs(60),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl LedgerOptions {
    /// `AUTODEPLOY_CLAIM_TIMEOUT_SECS`, `AUTODEPLOY_RETRY_FIRST_DELAY_SECS` and
    /// `AUTODEPLOY_GIVE_UP_AFTER`; an unreadable value is a problem and the default applies.
    pub fn from_env(env: &dyn Env, problems: &mut Vec<String>) -> Self {
        let defaults = Self::default();
        let mut duration =
            |name: &str, default: Duration| crate::env::duration(env, name, default, problems);
        Self {
            claim_timeout: duration("AUTODEPLOY_CLAIM_TIMEOUT_SECS", defaults.claim_timeout),
            first_retry_delay: duration(
                "AUTODEPLOY_RETRY_FIRST_DELAY_SECS",
                defaults.first_retry_delay,
            ),
            give_up_after: duration("AUTODEPLOY_GIVE_UP_AFTER", defaults.give_up_after),
        }
    }
}

/// `AUTODEPLOY_CONTAINER` (default `autodeploy`); a name Blob Storage would refuse is a problem.
pub fn container_from_env(env: &dyn Env, problems: &mut Vec<String>) -> String {
    let container = env
        .get("AUTODEPLOY_CONTAINER")
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|| "autodeploy".to_string());
    let container_ok = (3..=63).contains(&container.len())
        && container
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !container.starts_with('-')
        && !container.ends_with('-')
        && !container.contains("--");
    if !container_ok {
        problems.push(format!(
                "AUTODEPLOY_CONTAINER {container:?} is not a valid blob container name (3-63 lowercase letters, digits and single hyphens)"
            ));
    }
    container
}
