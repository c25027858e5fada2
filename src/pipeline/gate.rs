//! Running the quality gate for a delivery: look the numbers up, ask the pure verdict
//! ([`crate::gate::evaluate`]), and record a refusal (final) or a failed lookup (retried by
//! `Reconcile`).

use time::OffsetDateTime;

use super::delivery::Delivery;
use super::invocation::{Pipeline, PipelineError};
use super::outcome::{Label, Outcome};
use crate::actions::{ActionError, ActionPlan};
use crate::config::Config;
use crate::config::gate::GateSpec;
use crate::event::WorkspaceId;
use crate::gate::lookup::LookupError;
use crate::gate::{self, GateSummary, GateVerdict, Overrides, Verdict};
use crate::ledger::record::rfc3339;
use crate::ledger::{Edit, State, StoreError, Written, after};
use crate::policy::{Decision, Plan};

/// What passing the gate carries into acting.
#[derive(Debug, Clone, Default)]
pub struct GatePassed {
    /// Shipped despite the gate or the stale check.
    pub forced: bool,
    /// The gate's numbers, for the record.
    pub summary: Option<GateSummary>,
}

impl GatePassed {
    /// No gate ran; `forced` when the caller forces (`evaluate --force`).
    pub fn new(forced: bool) -> Self {
        GatePassed {
            forced,
            summary: None,
        }
    }
}

/// The gate's answer, with I/O failures.
enum GateOutcome {
    Pass {
        notes: Vec<String>,
        forced: bool,
        summary: GateSummary,
    },
    Stop {
        state: State,
        reason: String,
        summary: GateSummary,
    },
    Retry {
        error: String,
    },
}

/// Whether a model tag is set to true (`true`, `1`, `yes`).
fn tag_is_true(d: &Delivery<'_>, key: &str) -> bool {
    d.model
        .tag(key)
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

impl Pipeline {
    /// Runs the rule's gate, if it has one, and records what stops the delivery. `None` when the
    /// outcome is the answer (refused, or waiting for a metric lookup to be retried); else what
    /// passing carries into acting (observing rules go on whatever the gate said).
    pub(super) async fn apply_gate(
        &self,
        config: &Config,
        d: &Delivery<'_>,
        plan: &Plan,
        outcome: &mut Outcome,
    ) -> Result<Option<GatePassed>, PipelineError> {
        let mut passed = GatePassed::new(d.invocation.force);
        let Some(spec) = config
            .rules
            .iter()
            .find(|r| r.name == plan.rule)
            .and_then(|r| r.gate.as_ref())
        else {
            return Ok(Some(passed));
        };
        let acting = matches!(d.decision, Decision::Act(_));
        let dry_run = d.invocation.execution == super::invocation::Execution::DryRun;
        let overrides = Overrides {
            force: d.invocation.force || tag_is_true(d, "autodeploy.force"),
            skip: tag_is_true(d, "autodeploy.skip"),
        };
        match self.run_gate(spec, d, plan, overrides).await {
            GateOutcome::Pass {
                notes,
                forced,
                summary,
            } => {
                for note in notes {
                    d.log.info(format!("gate: {note}"));
                }
                passed.forced |= forced;
                outcome.gate = Some(summary.clone());
                passed.summary = Some(summary);
            }
            GateOutcome::Stop {
                state,
                reason,
                summary,
            } => {
                d.log.warn(reason.clone());
                outcome.gate = Some(summary.clone());
                if acting {
                    if !dry_run {
                        let key = self
                            .record_gate_stop(d, plan, state, &reason, summary)
                            .await?;
                        self.notifier
                            .announce(&self.ledger, &key, state.as_str(), d.log)
                            .await;
                    }
                    outcome.decision = Label::State(state);
                    outcome.reason = Some(reason);
                    return Ok(None);
                }
            }
            GateOutcome::Retry { error } => {
                outcome.gate = Some(GateSummary::lookup_failed(&error));
                if acting && !dry_run {
                    self.record_gate_retry(d, plan, &error, outcome).await?;
                    return Ok(None);
                }
                d.log.warn(format!("gate: {error}"));
            }
        }
        Ok(Some(passed))
    }

    /// Looks the numbers up and asks the gate.
    async fn run_gate(
        &self,
        spec: &GateSpec,
        d: &Delivery<'_>,
        plan: &Plan,
        overrides: Overrides,
    ) -> GateOutcome {
        if overrides.skip {
            let reason =
                "skipped: the model version is tagged autodeploy.skip=true, so it is never shipped"
                    .to_string();
            return GateOutcome::Stop {
                state: State::Skipped,
                summary: GateSummary {
                    verdict: Some(GateVerdict::Skip),
                    reason: Some(reason.clone()),
                    ..GateSummary::of(Some(spec.metric.clone()))
                },
                reason,
            };
        }
        let (event, model) = (d.event, d.model);
        let candidate = match self
            .metrics
            .metric(
                spec,
                &event.source,
                model.name.as_ref(),
                model.version.as_ref(),
                &model.tags,
                &model.properties,
            )
            .await
        {
            Ok(found) => found,
            Err(LookupError::Transient(e)) => return GateOutcome::Retry { error: e },
            Err(LookupError::Permanent(e)) => {
                d.log
                    .warn(format!("gate: {e}; the metric counts as missing"));
                None
            }
        };
        let champion_workspace = match &plan.action {
            ActionPlan::AzureMl(p) => {
                WorkspaceId::parse(&p.workspace).unwrap_or_else(|_| event.source.clone())
            }
            ActionPlan::Github(_) => event.source.clone(),
        };
        let champion = match (&spec.champion_endpoint, spec.compare_to_live) {
            (Some(endpoint), true) => match self
                .metrics
                .champion(spec, &champion_workspace, endpoint)
                .await
            {
                Ok(champion) => champion,
                Err(LookupError::Transient(e)) => return GateOutcome::Retry { error: e },
                Err(LookupError::Permanent(e)) => {
                    d.log.warn(format!(
                        "gate: cannot read the champion ({e}); only the bounds apply"
                    ));
                    None
                }
            },
            _ => None,
        };
        let verdict = gate::evaluate(
            spec,
            candidate.as_ref().map(|f| f.value),
            champion.as_ref(),
            overrides,
        );
        let summary = GateSummary {
            value: candidate.as_ref().map(|f| f.value),
            source: candidate.map(|f| f.source),
            champion,
            ..GateSummary::of(Some(spec.metric.clone()))
        };
        match verdict {
            Verdict::Accept { notes, forced } => GateOutcome::Pass {
                summary: GateSummary {
                    verdict: Some(if forced {
                        GateVerdict::Forced
                    } else {
                        GateVerdict::Accepted
                    }),
                    notes: notes.clone(),
                    ..summary
                },
                notes,
                forced,
            },
            Verdict::Reject { reason } => GateOutcome::Stop {
                state: State::Rejected,
                summary: GateSummary {
                    verdict: Some(GateVerdict::Rejected),
                    reason: Some(reason.clone()),
                    ..summary
                },
                reason,
            },
            Verdict::Skip { reason } => GateOutcome::Stop {
                state: State::Skipped,
                summary: GateSummary {
                    verdict: Some(GateVerdict::Skip),
                    ..summary
                },
                reason,
            },
        }
    }

    /// Records a gate refusal (final for the version). Returns the record's key.
    async fn record_gate_stop(
        &self,
        d: &Delivery<'_>,
        plan: &Plan,
        state: State,
        reason: &str,
        summary: GateSummary,
    ) -> Result<String, PipelineError> {
        let now = OffsetDateTime::now_utc();
        let mut fresh = d.new_record(Some(plan), state, now);
        fresh.reasons.push(reason.to_string());
        fresh.gate = Some(Box::new(summary.clone()));
        if let Some(last) = fresh.history.last_mut() {
            last.note = reason.to_string();
        }
        let written = self
            .ledger
            .create_or_merge(&fresh, |existing| {
                d.note_on(existing, now);
                if existing.open_to_action() {
                    existing.gate = Some(Box::new(summary.clone()));
                    existing.gate_pending = false;
                    existing.next_attempt_at = None;
                    existing.rule = fresh.rule.clone();
                    existing.action = fresh.action.clone();
                    existing.reasons.push(reason.to_string());
                    existing.transition(state, reason, now);
                    Edit::Save(None)
                } else {
                    Edit::Save(Some(existing.state))
                }
            })
            .await;
        match written {
            Ok(Written::Merged {
                value: Some(held), ..
            }) => d
                .log
                .info(format!("the ledger already has this version as {held}")),
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(fresh.key)
    }

    /// A metric lookup failed transiently: with a durable ledger the version waits as `retrying`
    /// (gate pending) and `Reconcile` runs the gate again; in memory, Event Grid keeps the retry.
    async fn record_gate_retry(
        &self,
        d: &Delivery<'_>,
        plan: &Plan,
        error: &str,
        outcome: &mut Outcome,
    ) -> Result<(), PipelineError> {
        if !self.ledger.is_durable() {
            d.log.error(format!(
                "gate: {error}; answering non-2xx so Event Grid redelivers the event later"
            ));
            return Err(PipelineError::Action(ActionError::Unavailable(
                error.to_string(),
            )));
        }
        let at = after(OffsetDateTime::now_utc(), self.ledger.retry_delay(1));
        let why = format!(
            "the quality gate's metric lookup failed ({error}); Reconcile runs the gate again at {}",
            rfc3339(at)
        );
        self.record_pending(d, plan, at, why, outcome).await
    }
}
