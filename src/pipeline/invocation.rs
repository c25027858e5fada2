//! What one invocation of the pipeline is: the [`Pipeline`] itself (built once at start), who asks
//! ([`Invocation`], [`Execution`]) and what it answers ([`Handled`], [`PipelineError`]).

use std::sync::Arc;

use thiserror::Error;

use super::outcome::Outcome;
use crate::actions::azureml::deploy::Deployer;
use crate::actions::github::GithubClient;
use crate::actions::{ActionError, PreparedRequest};
use crate::config::Config;
use crate::gate::lookup::MetricLookup;
use crate::ledger::{Ledger, StoreError};
use crate::notify::Notifier;
use crate::policy::Facts;

/// Whether actions are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// Send them and record them (the handler, `replay --execute`).
    Send,
    /// Only show what would be sent; nothing is written to the ledger (`replay`).
    DryRun,
}

/// Who is asking: the invocation id (for logs and the record), whether to send, and what
/// triggered it.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `X-Azure-Functions-InvocationId`, or a label such as `replay`.
    pub id: String,
    /// Send or dry run.
    pub execution: Execution,
    /// `event` (Event Grid), `replay`, `manual` (`evaluate`) or `reconcile`: recorded on the attempt.
    pub trigger: &'static str,
    /// `evaluate --force`: act despite the gate and the stale check (recorded as forced).
    pub force: bool,
}

/// Why an event could not be handled. Each answers the invocation with a non-2xx, so Event Grid
/// redelivers it later; the event itself is fine.
#[derive(Debug, Clone, Error)]
pub enum PipelineError {
    /// The config file or a setting is broken: nothing can be decided until an operator fixes it.
    #[error("aml-autodeploy is misconfigured: {}", .0.join("; "))]
    Misconfigured(Vec<String>),
    /// The action failed and nothing durable holds the retry (in-memory ledger).
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The ledger could not be read or written: nothing was acted on.
    #[error("the ledger is unavailable, nothing was acted on: {0}")]
    Storage(#[from] StoreError),
}

/// A handled event: the outcome (the `ReturnValue`) and, for dry runs, the request not sent.
#[derive(Debug, Clone)]
pub struct Handled {
    /// What happened.
    pub outcome: Outcome,
    /// The request the action would send (dry runs, observe mode, pause).
    pub prepared: Option<PreparedRequest>,
}

impl From<Outcome> for Handled {
    fn from(outcome: Outcome) -> Self {
        Handled {
            outcome,
            prepared: None,
        }
    }
}

/// Everything needed to handle events; built once at start ([`crate::startup::build_pipeline`]).
pub struct Pipeline {
    /// The loaded config, or the problems (config or settings) that fail every invocation.
    pub(crate) config: Result<Arc<Config>, Vec<String>>,
    /// Facts from the settings (`AUTODEPLOY_PAUSED`).
    pub(crate) facts: Facts,
    /// The GitHub client.
    pub(crate) github: Arc<GithubClient>,
    /// The ledger.
    pub(crate) ledger: Arc<Ledger>,
    /// The direct-deployment runner, or why there is none (no Azure credential).
    pub(crate) deployer: Result<Arc<Deployer>, String>,
    /// The gate's metric lookup.
    pub(crate) metrics: Arc<MetricLookup>,
    /// Announces outcomes.
    pub(crate) notifier: Arc<Notifier>,
}
