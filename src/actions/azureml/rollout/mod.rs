//! The blue/green rollout state machine. The state lives in the ledger record (`rollout`); each
//! [`RolloutEngine::step`] does at most one ARM request (or one poll, or one smoke test) and says
//! when the next step is due, so the event handler returns within Event Grid's 30 s and `Reconcile`
//! advances every unfinished rollout, on any instance, after any restart.
//!
//! ```text
//! queued ─lock─▶ preparing_assets† ─▶ creating ─Succeeded─▶ smoke_test ─▶ mirroring* ─▶ canary (each step) ─bake─▶ awaiting_approval‡ ─▶ promoting ─▶ retaining ─▶ cleaning ─▶ done
//!                    │ any failure (provisioning, smoke test or probe, traffic update)   * only with mirror_percent > 0
//!                    ▼                     † only when the YAML has local code, an inline environment,
//!               rolling_back (previous traffic restored) ─▶ removing_failed ─▶ rolled_back
//!                                          an @latest label or a data collector; a failure there
//!                                          ends `failed` (nothing was deployed)
//!                                          ‡ only with `rollout.approval`
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::azure::arm::ArmClient;
use crate::ledger::Ledger;
use azure_core::credentials::TokenCredential;

mod approval;
mod assets;
mod finish;
mod judging;
mod lock;
mod machine;
mod smoke;
mod start;
mod traffic;

pub use crate::domain::rollout::{
    ApprovalDecision, ApprovalState, AssetProgress, MAX_JUDGEMENTS, PendingOperation, Phase,
    RolloutState, StepJudgement, TrafficTarget,
};
pub use assets::code_uri;
pub use lock::{Acquired, EndpointLock, QueuedVersion, lock_name};
pub use traffic::canary_split;

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
    arm: Arc<ArmClient>,
    credential: Arc<dyn TokenCredential>,
    ledger: Arc<Ledger>,
    http: crate::http::Http,
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
