//! The rollout engine: what every step runs with, and when the next step is due.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;

use crate::azure::arm::ArmClient;
use crate::ledger::Ledger;

/// When the next step is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Step again right away.
    Now,
    /// Step again after this long.
    After(Duration),
    /// Nothing more to do.
    Finished,
}

/// Runs rollout steps against ARM and the scoring endpoint.
pub struct RolloutEngine {
    pub(super) arm: Arc<ArmClient>,
    pub(super) credential: Arc<dyn TokenCredential>,
    pub(super) ledger: Arc<Ledger>,
    pub(super) http: crate::http::Http,
}

impl RolloutEngine {
    /// An engine over `arm`, using `credential` for Entra-authenticated scoring and `http` for
    /// the smoke test.
    pub fn new(
        arm: Arc<ArmClient>,
        credential: Arc<dyn TokenCredential>,
        ledger: Arc<Ledger>,
        http: crate::http::Http,
    ) -> Self {
        Self {
            arm,
            credential,
            ledger,
            http,
        }
    }

    /// The ARM client.
    pub fn arm(&self) -> &ArmClient {
        &self.arm
    }
}
