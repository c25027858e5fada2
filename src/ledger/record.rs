//! The ledger record: one per (workspace, model, version), the only place progress lives.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;

use crate::domain::action::ActionPlan;
use crate::domain::rollout::RolloutState;
use crate::gate::GateSummary;

pub use super::claim::Claim;
use super::run::RunState;

/// RFC 3339 text of a time, for messages.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The record format version.
pub const SCHEMA: u32 = 1;

/// Where a model version stands. Later issues add transitions, not states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Seen, not yet decided (a record is normally created already decided).
    Received,
    /// A rule matched in observe mode: nothing sent.
    Observed,
    /// No action: no rule matched, paused, …
    Skipped,
    /// Older than a version already acted on: never acted on (unless forced).
    Stale,
    /// Refused by the quality gate (final for this version).
    Rejected,
    /// Accepted, waiting for its turn (e.g. a rollout on the same endpoint).
    Queued,
    /// Claimed: an attempt is sending the action right now.
    Dispatching,
    /// The GitHub dispatch was accepted.
    Dispatched,
    /// The last attempt failed; `next_attempt_at` says when `Reconcile` tries again.
    Retrying,
    /// A direct rollout is in progress (`rollout.phase`).
    Deploying,
    /// The rollout finished.
    Succeeded,
    /// The rollout failed and traffic was restored.
    RolledBack,
    /// A newer version replaced this one before it was acted on.
    Superseded,
    /// Gave up (`AUTODEPLOY_GIVE_UP_AFTER`).
    Failed,
}

impl State {
    /// The wire name (`dispatched`, `retrying`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Observed => "observed",
            State::Skipped => "skipped",
            State::Stale => "stale",
            State::Rejected => "rejected",
            State::Queued => "queued",
            State::Dispatching => "dispatching",
            State::Dispatched => "dispatched",
            State::Retrying => "retrying",
            State::Deploying => "deploying",
            State::Succeeded => "succeeded",
            State::RolledBack => "rolled_back",
            State::Superseded => "superseded",
            State::Failed => "failed",
        }
    }

    /// States a new delivery may still act on: nothing was sent for them yet, and a changed
    /// config or an unpaused app may now want to act. (A `retrying` record whose gate is pending
    /// is also open: see [`Record::open_to_action`].)
    pub fn open_to_action(self) -> bool {
        matches!(
            self,
            State::Received | State::Observed | State::Skipped | State::Queued
        )
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One try at sending the action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Unique id.
    pub id: String,
    /// What started it: `event`, `reconcile` or `takeover`.
    pub trigger: String,
    /// The event id it was for.
    pub event_id: String,
    /// Start.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// End, when it ended.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// `dispatched`, `transient_error`, `refused`, `found_existing_run`; empty while running.
    #[serde(default)]
    pub outcome: String,
    /// Final HTTP status, when known.
    #[serde(default)]
    pub status: Option<u16>,
    /// The workflow run's URL, when known.
    #[serde(default)]
    pub run_url: Option<String>,
    /// The error, when it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// A notification sent (or tried) for an outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The outcome (`rejected`, `succeeded`, …).
    pub outcome: String,
    /// The target's label (its setting name; never the URL).
    pub target: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The webhook's HTTP status, when it answered.
    #[serde(default)]
    pub status: Option<u16>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// One state change, for the operator's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The new state.
    pub state: State,
    /// Why.
    pub note: String,
}

/// The record. Stored as JSON with one derived field, `decision` (the state's name, kept for
/// readers of the stored format); reading ignores it, so the state is the only truth.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Record {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// The blob name.
    pub key: String,
    /// Workspace ARM id.
    pub workspace: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Current state.
    pub state: State,
    /// Acted on despite the stale check or the gate (recorded, never silent).
    #[serde(default)]
    pub forced: bool,
    /// The rule that matched, if any.
    #[serde(default)]
    pub rule: Option<String>,
    /// Why, in words: the decision's explanation and later notes.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Every event id delivered for this version.
    #[serde(default)]
    pub event_ids: Vec<String>,
    /// The event's time, verbatim.
    #[serde(default)]
    pub event_time: Option<String>,
    /// First delivery.
    #[serde(with = "time::serde::rfc3339")]
    pub first_received: OffsetDateTime,
    /// Latest delivery.
    #[serde(with = "time::serde::rfc3339")]
    pub last_received: OffsetDateTime,
    /// Functions invocation ids that touched it (bounded).
    #[serde(default)]
    pub invocation_ids: Vec<String>,
    /// The action to send (what `Reconcile` retries). Boxed, like `rollout` and `gate`: most
    /// records have none, and every write holds several records in its future.
    #[serde(default)]
    pub action: Option<Box<ActionPlan>>,
    /// The current claim while `dispatching`.
    #[serde(default)]
    pub claim: Option<Claim>,
    /// When the current round of acting began (the give-up clock starts here, not at the first
    /// delivery: a version skipped last week and acted on today gets the full retry time).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub acting_since: Option<OffsetDateTime>,
    /// When `Reconcile` retries, while `retrying`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Every attempt.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// Direct-deployment rollout state (phase, traffic).
    #[serde(default)]
    pub rollout: Option<Box<RolloutState>>,
    /// The model version's tags and properties as the event carried them (the gate reads them
    /// again when a metric lookup is retried).
    #[serde(default)]
    pub model_tags: serde_json::Map<String, Value>,
    /// See `model_tags`.
    #[serde(default)]
    pub model_properties: serde_json::Map<String, Value>,
    /// The quality gate's numbers and verdict.
    #[serde(default)]
    pub gate: Option<Box<GateSummary>>,
    /// A metric lookup failed transiently: `Reconcile` runs the gate again before acting.
    #[serde(default)]
    pub gate_pending: bool,
    /// Notifications sent for this version: one per outcome and target.
    #[serde(default)]
    pub notifications: Vec<Notification>,
    /// State changes, oldest first.
    #[serde(default)]
    pub history: Vec<Transition>,
    /// The GitHub workflow run the dispatch started, as `Reconcile` follows it (absent when the
    /// run is not followed, and in records written before following existed).
    #[serde(default)]
    pub run: Option<Box<RunState>>,
}

/// How many invocation ids a record keeps (duplicates can be many).
const MAX_INVOCATION_IDS: usize = 50;

/// A time as RFC 3339, the stored format of every time in a record.
struct Rfc3339(OffsetDateTime);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(&self.0, serializer)
    }
}

impl Serialize for Record {
    // Written by hand for one reason: `decision` is derived from `state`, not stored twice.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Record", 28)?;
        out.serialize_field("schema", &self.schema)?;
        out.serialize_field("key", &self.key)?;
        out.serialize_field("workspace", &self.workspace)?;
        out.serialize_field("model", &self.model)?;
        out.serialize_field("version", &self.version)?;
        out.serialize_field("state", &self.state)?;
        out.serialize_field("forced", &self.forced)?;
        out.serialize_field("rule", &self.rule)?;
        out.serialize_field("decision", self.decision())?;
        out.serialize_field("reasons", &self.reasons)?;
        out.serialize_field("event_ids", &self.event_ids)?;
        out.serialize_field("event_time", &self.event_time)?;
        out.serialize_field("first_received", &Rfc3339(self.first_received))?;
        out.serialize_field("last_received", &Rfc3339(self.last_received))?;
        out.serialize_field("invocation_ids", &self.invocation_ids)?;
        out.serialize_field("action", &self.action)?;
        out.serialize_field("claim", &self.claim)?;
        out.serialize_field("acting_since", &self.acting_since.map(Rfc3339))?;
        out.serialize_field("next_attempt_at", &self.next_attempt_at.map(Rfc3339))?;
        out.serialize_field("attempts", &self.attempts)?;
        out.serialize_field("rollout", &self.rollout)?;
        out.serialize_field("model_tags", &self.model_tags)?;
        out.serialize_field("model_properties", &self.model_properties)?;
        out.serialize_field("gate", &self.gate)?;
        out.serialize_field("gate_pending", &self.gate_pending)?;
        out.serialize_field("notifications", &self.notifications)?;
        out.serialize_field("history", &self.history)?;
        // Omitted when absent: records without a followed run are written as before.
        match &self.run {
            Some(run) => out.serialize_field("run", run)?,
            None => out.skip_field("run")?,
        }
        out.end()
    }
}

impl Record {
    /// The decision label (`dispatched`, `skipped`, …): the state's name.
    pub fn decision(&self) -> &'static str {
        self.state.as_str()
    }

    /// Moves to `state`, noting why.
    pub fn transition(&mut self, state: State, note: impl Into<String>, at: OffsetDateTime) {
        self.state = state;
        self.history.push(Transition {
            at,
            state,
            note: note.into(),
        });
    }

    /// Notes another delivery (event id and invocation id), without duplicates.
    pub fn note_delivery(&mut self, event_id: &str, invocation_id: &str, at: OffsetDateTime) {
        if !self.event_ids.iter().any(|e| e == event_id) {
            self.event_ids.push(event_id.to_string());
        }
        if !invocation_id.is_empty()
            && !self.invocation_ids.iter().any(|i| i == invocation_id)
            && self.invocation_ids.len() < MAX_INVOCATION_IDS
        {
            self.invocation_ids.push(invocation_id.to_string());
        }
        if at > self.last_received {
            self.last_received = at;
        }
    }

    /// Whether a delivery may act on this record: nothing was sent for it yet.
    pub fn open_to_action(&self) -> bool {
        self.state.open_to_action() || (self.gate_pending && self.state == State::Retrying)
    }

    /// Takes the delivery notes (event and invocation ids) of `other`, a fresher copy of this
    /// record, so a write that lost an ETag race keeps what others added meanwhile.
    pub fn merge_deliveries(&mut self, other: &Record) {
        for id in &other.event_ids {
            if !self.event_ids.contains(id) {
                self.event_ids.push(id.clone());
            }
        }
        for id in &other.invocation_ids {
            if !self.invocation_ids.contains(id) && self.invocation_ids.len() < MAX_INVOCATION_IDS {
                self.invocation_ids.push(id.clone());
            }
        }
        if other.last_received > self.last_received {
            self.last_received = other.last_received;
        }
    }

    /// The attempt with `id`.
    pub fn attempt_mut(&mut self, id: &str) -> Option<&mut Attempt> {
        self.attempts.iter_mut().find(|a| a.id == id)
    }

    /// The last attempt's outcome in words, for `status`.
    pub fn last_outcome(&self) -> String {
        match self.attempts.last() {
            None => String::new(),
            Some(a) => {
                let mut text = a.outcome.clone();
                if let Some(status) = a.status {
                    text.push_str(&format!(" (HTTP {status})"));
                }
                if let Some(url) = &a.run_url {
                    text.push_str(&format!(" {url}"));
                }
                text
            }
        }
    }

    /// JSON for the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Sized for a typical record: growing from serde_json's default 128 bytes reallocates
        // four times per write.
        let mut bytes = Vec::with_capacity(1024);
        match serde_json::to_writer(&mut bytes, self) {
            Ok(()) => bytes,
            Err(_) => Vec::new(),
        }
    }

    /// Parses a stored record.
    pub fn from_bytes(bytes: &[u8]) -> Result<Record, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable ledger record: {e}"))
    }
}

#[cfg(test)]
mod released {
    //! Records written by the released version (`tests/fixtures/ledger-records`, captured from its
    //! blob writes) must still read, and write back unchanged.

    use std::path::Path;

    use serde_json::Value;

    use super::*;
    use crate::actions::azureml::rollout::EndpointLock;
    use crate::ledger::{Json, Stored};

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-records");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_released_record_reads_and_writes_back_the_same_json() {
        let mut records = 0;
        for (name, bytes) in fixtures() {
            let stored: Value = serde_json::from_slice(&bytes).unwrap();
            if !stored["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("records/"))
            {
                continue;
            }
            records += 1;
            let record = Record::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                record.decision(),
                stored["decision"],
                "{name}: decision is the state"
            );
            let written: Value = serde_json::from_slice(&record.to_bytes()).unwrap();
            assert_eq!(written, stored, "{name}: written back unchanged");
        }
        assert!(records >= 20, "only {records} released records found");
    }

    #[test]
    fn released_rollout_and_gate_states_are_typed() {
        let read = |name: &str| {
            let (_, bytes) = fixtures().into_iter().find(|(n, _)| n == name).unwrap();
            Record::from_bytes(&bytes).unwrap()
        };
        let done = read("succeeded-blue-green.json");
        let rollout = done.rollout.expect("a rollout");
        assert_eq!(rollout.phase.as_str(), "done");
        assert!(rollout.released);
        let canary = read("deploying-canary-with-mirror.json").rollout.unwrap();
        assert_eq!(canary.phase.as_str(), "canary");
        assert!(!canary.mirror.is_empty() || canary.pending.is_some());
        let rejected = read("rejected-gate-with-champion.json").gate.unwrap();
        assert_eq!(rejected.verdict, Some(crate::gate::GateVerdict::Rejected));
        assert!(rejected.champion.is_some() && rejected.reason.is_some());
        let forced = read("gate-forced-dispatched.json").gate.unwrap();
        assert_eq!(forced.verdict, Some(crate::gate::GateVerdict::Forced));
        assert!(!forced.notes.is_empty());
    }

    #[test]
    fn released_endpoint_locks_read() {
        for name in [
            "endpoint-lock-released.json",
            "endpoint-lock-held-with-queue.json",
        ] {
            let (_, bytes) = fixtures().into_iter().find(|(n, _)| n == name).unwrap();
            let lock = Json::<EndpointLock>::decode(name, &bytes).unwrap().0;
            assert!(
                lock.active.is_some() || lock.last_promoted.is_some(),
                "{name}"
            );
        }
    }
}
