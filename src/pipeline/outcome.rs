//! What the pipeline answers for one event: a typed [`Outcome`] that serialises to the host
//! response's `ReturnValue` (and to `replay`'s and the webhook's output).

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;

use crate::actions::azureml::rollout::RolloutState;
use crate::actions::{ActionOutcome, PreparedRequest};
use crate::event::{Event, EventKind};
use crate::gate::GateSummary;
use crate::ledger::State;
use crate::ledger::record::rfc3339;
use crate::policy::{Decision, SkipReason};

/// The `decision` label of an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// Where the version stands in the ledger (`dispatched`, `skipped`, `queued`, …).
    State(State),
    /// `replay` without `--execute`: what would be sent, nothing sent.
    DryRun,
    /// Another delivery already handled (or is handling) the version.
    Duplicate,
    /// The event could not be parsed: acknowledged without action.
    Malformed,
}

impl Label {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::State(state) => state.as_str(),
            Label::DryRun => "dry_run",
            Label::Duplicate => "duplicate",
            Label::Malformed => "malformed",
        }
    }
}

impl Serialize for Label {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A rule that did not match, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Miss {
    /// The rule's name.
    pub rule: String,
    /// Why it did not match.
    pub why: String,
}

/// The request an action would send (dry runs, observe mode, pause), secrets redacted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestView {
    /// HTTP method.
    pub method: &'static str,
    /// Full URL.
    pub url: String,
    /// JSON body.
    pub body: Value,
}

/// Where a direct deployment's rollout stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// The phase (`creating`, `canary`, …).
    pub phase: &'static str,
    /// The endpoint.
    pub endpoint: String,
    /// The new deployment.
    pub deployment: String,
    /// The traffic before the rollout.
    pub previous_traffic: BTreeMap<String, u32>,
    /// What happens next, in words.
    pub next_step: String,
}

impl From<&RolloutState> for RolloutView {
    fn from(rollout: &RolloutState) -> Self {
        RolloutView {
            phase: rollout.phase.as_str(),
            endpoint: rollout.endpoint.clone(),
            deployment: rollout.deployment.clone(),
            previous_traffic: rollout.previous_traffic.clone(),
            next_step: rollout.next_step.clone(),
        }
    }
}

/// The answer for one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// What happened.
    pub decision: Label,
    /// Why, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Malformed events: the ledger object that keeps them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_as: Option<String>,
    /// The event id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The event type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// `eventgrid` or `cloudevents`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<&'static str>,
    /// The workspace the event came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Skipped events: the reason's code (`no_rule_matched`, `paused`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip: Option<&'static str>,
    /// The model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The rule that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What the rule does, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// No rule matched: the closest rules' reasons (the reason says how many more missed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub misses: Option<Vec<Miss>>,
    /// No rule matched: how many rules missed beyond those in `misses`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlisted_misses: Option<usize>,
    /// The quality gate's numbers and verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSummary>,
    /// The request that was not sent (dry runs, observe mode, pause).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestView>,
    /// GitHub's final HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How many requests the dispatch took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The workflow run's URL, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_url: Option<String>,
    /// The workflow run's id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
    /// When `Reconcile` tries again (`retrying`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The error that made it retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Duplicates: the state the ledger has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_state: Option<State>,
    /// Direct deployments: where the rollout stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
}

impl Outcome {
    /// An outcome with only a label.
    pub fn labelled(decision: Label) -> Self {
        Outcome {
            decision,
            reason: None,
            recorded_as: None,
            event_id: None,
            event_type: None,
            schema: None,
            workspace: None,
            skip: None,
            model: None,
            version: None,
            rule: None,
            action: None,
            misses: None,
            unlisted_misses: None,
            gate: None,
            request: None,
            status: None,
            attempts: None,
            run_url: None,
            run_id: None,
            next_attempt_at: None,
            error: None,
            ledger_state: None,
            rollout: None,
        }
    }

    /// A malformed event.
    pub fn malformed(reason: String) -> Self {
        Outcome {
            reason: Some(reason),
            ..Outcome::labelled(Label::Malformed)
        }
    }

    /// What the policy decided for `event`, before anything was acted on.
    pub fn decided(event: &Event, decision: &Decision, explanation: &str) -> Self {
        let (state, skip) = match decision {
            Decision::Act(_) => (State::Dispatched, None),
            Decision::Observe(_) => (State::Observed, None),
            Decision::Paused(_) => (State::Skipped, Some("paused")),
            Decision::Skip(reason) => (State::Skipped, Some(reason.code())),
            Decision::Misconfigured { .. } => (State::Failed, None),
        };
        let model = match &event.kind {
            EventKind::ModelRegistered(model) => Some(model),
            EventKind::Other { .. } => None,
        };
        let plan = decision.plan();
        Outcome {
            reason: Some(explanation.to_string()),
            event_id: Some(event.id.to_string()),
            event_type: Some(event.event_type.to_string()),
            schema: Some(event.schema.as_str()),
            workspace: Some(event.source.to_string()),
            skip,
            model: model.map(|m| m.name.to_string()),
            version: model.map(|m| m.version.to_string()),
            rule: match decision {
                Decision::Misconfigured { rule, .. } => Some(rule.to_string()),
                _ => plan.map(|p| p.rule.to_string()),
            },
            action: plan.map(|p| p.action.describe()),
            misses: match decision {
                Decision::Skip(SkipReason::NoRuleMatched { misses, .. }) => Some(
                    misses
                        .iter()
                        .map(|(rule, why)| Miss {
                            rule: rule.to_string(),
                            why: why.to_string(),
                        })
                        .collect(),
                ),
                _ => None,
            },
            unlisted_misses: match decision {
                Decision::Skip(SkipReason::NoRuleMatched {
                    more_tag_misses,
                    more_name_misses,
                    ..
                }) => Some(more_tag_misses + more_name_misses).filter(|n| *n > 0),
                _ => None,
            },
            ..Outcome::labelled(Label::State(state))
        }
    }

    /// Moves to `decision` for `reason`.
    pub fn now(mut self, decision: Label, reason: impl Into<String>) -> Self {
        self.decision = decision;
        self.reason = Some(reason.into());
        self
    }

    /// Moves to `decision`, keeping the reason.
    pub fn relabel(mut self, decision: Label) -> Self {
        self.decision = decision;
        self
    }

    /// A duplicate of a version the ledger has as `state`.
    pub fn duplicate(mut self, state: State) -> Self {
        self.decision = Label::Duplicate;
        self.ledger_state = Some(state);
        self
    }

    /// Waiting for `Reconcile`, which tries again at `at`.
    pub fn retrying(mut self, at: OffsetDateTime) -> Self {
        self.decision = Label::State(State::Retrying);
        self.next_attempt_at = Some(rfc3339(at));
        self
    }

    /// GitHub accepted the dispatch.
    pub fn dispatched(mut self, sent: &ActionOutcome) -> Self {
        self.status = Some(sent.status);
        self.attempts = Some(sent.attempts);
        self.run_url = sent.run_url.clone();
        self.run_id = sent.run_id;
        self
    }

    /// The request that was not sent.
    pub fn with_request(mut self, prepared: &PreparedRequest) -> Self {
        self.request = Some(RequestView {
            method: prepared.method,
            url: prepared.url.clone(),
            body: prepared.body.clone(),
        });
        self
    }
}
