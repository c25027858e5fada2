//! The blue/green rollout state machine. The state lives in the ledger record (`rollout`); each
//! [`RolloutEngine::step`] does at most one ARM request (or one poll, or one smoke test) and says
//! when the next step is due, so the event handler returns within Event Grid's 30 s and `Reconcile`
//! advances every unfinished rollout, on any instance, after any restart. A step that decides a
//! traffic change only records it, and the next step sends it (write-ahead, see `traffic.rs`);
//! the deployer saves every step's result before the next one and runs them under a claim on the
//! record.
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

mod approval;
mod assets;
mod batch;
mod engine;
mod finish;
mod judging;
mod lock;
mod logs;
mod machine;
mod queue;
mod smoke;
mod start;
mod traffic;

pub use crate::domain::rollout::{
    ApprovalDecision, ApprovalState, AssetProgress, BatchProgress, MAX_IDENTITIES, MAX_JUDGEMENTS,
    PendingOperation, Phase, RolloutState, SmokeJobRun, StepJudgement, TrafficTarget,
};
pub use assets::code_uri;
pub use engine::{Next, RolloutEngine};
pub use lock::lock_name;
pub use logs::containers_for;
pub use queue::{Acquired, EndpointLock, MAX_QUEUED, QueuedVersion};
pub use traffic::canary_split;
