//! Leaving a version to `Reconcile`: recorded `retrying` with its pipeline run pending (the gate
//! first, then acting), and an outbox marker due at the given time. Used when the gate's metric
//! lookup failed, and for the events of a webhook delivery not reached before its deadline.

use time::OffsetDateTime;

use super::delivery::Delivery;
use super::invocation::{Invocation, Pipeline, PipelineError};
use super::outcome::{Label, Outcome};
use crate::event::{self, EventKind};
use crate::ledger::record::rfc3339;
use crate::ledger::{Edit, State, StoreError, Written};
use crate::logs::InvocationLog;
use crate::policy::{self, Decision, Plan};

impl Pipeline {
    /// Records the version of `raw_event` for `Reconcile` to handle now, without doing any of the
    /// slow work (gate lookup, GitHub, ARM): for events a webhook delivery did not reach before its
    /// deadline. Events that need no slow work (malformed, skipped, paused, other types) are
    /// handled as usual. Needs a durable ledger (the caller checks).
    pub async fn defer(
        &self,
        raw_event: &serde_json::Value,
        invocation: &Invocation,
        log: &InvocationLog,
    ) -> Result<Outcome, PipelineError> {
        let parsed = match &self.config {
            Ok(config) => event::parse(raw_event)
                .ok()
                .map(|event| (policy::decide(&event, config, self.facts), event)),
            Err(_) => None,
        };
        let Some((decision @ (Decision::Act(_) | Decision::Observe(_)), event)) = parsed else {
            return Ok(self.handle(raw_event, invocation, log).await?.outcome);
        };
        let EventKind::ModelRegistered(model) = &event.kind else {
            return Ok(self.handle(raw_event, invocation, log).await?.outcome);
        };
        let Some(plan) = decision.plan() else {
            return Ok(self.handle(raw_event, invocation, log).await?.outcome);
        };
        let explanation = decision.explain();
        let d = Delivery::new(&event, model, &decision, &explanation, invocation, log);
        let mut outcome = Outcome::decided(&event, &decision, &explanation);
        let now = OffsetDateTime::now_utc();
        let why = "not reached before the webhook delivery's deadline \
                   (AUTODEPLOY_WEBHOOK_DEADLINE_SECS); Reconcile handles it";
        self.record_pending(&d, plan, now, why.to_string(), &mut outcome)
            .await?;
        Ok(outcome)
    }

    /// Records `d`'s version `retrying` with its pipeline run pending, due at `at`, unless a
    /// delivery already acted on it (then the outcome says `duplicate`).
    pub(super) async fn record_pending(
        &self,
        d: &Delivery<'_>,
        plan: &Plan,
        at: OffsetDateTime,
        why: String,
        outcome: &mut Outcome,
    ) -> Result<(), PipelineError> {
        let now = OffsetDateTime::now_utc();
        let mut fresh = d.new_record(Some(plan), State::Retrying, now);
        fresh.gate_pending = true;
        fresh.next_attempt_at = Some(at);
        fresh.reasons.push(why.clone());
        if let Some(last) = fresh.history.last_mut() {
            last.note = why.clone();
        }
        let marker = self.ledger.schedule(&fresh.key, at).await?;
        let written = self
            .ledger
            .create_or_merge(&fresh, |existing| {
                if !existing.open_to_action() {
                    return Edit::Keep(false);
                }
                d.note_on(existing, now);
                existing.gate_pending = true;
                existing.next_attempt_at = Some(at);
                existing.rule = fresh.rule.clone();
                existing.action = fresh.action.clone();
                existing.transition(State::Retrying, why.clone(), now);
                Edit::Save(true)
            })
            .await;
        match written {
            Ok(Written::Created(_)) | Ok(Written::Merged { value: true, .. }) => {}
            Ok(Written::Merged { record, .. }) => {
                let _ = self.ledger.unschedule(&marker).await;
                outcome.decision = Label::Duplicate;
                outcome.ledger_state = Some(record.state);
                return Ok(());
            }
            Ok(Written::Missing) | Err(StoreError::Conflict) => {
                let _ = self.ledger.unschedule(&marker).await;
            }
            Err(e) => return Err(e.into()),
        }
        d.log.warn(why.clone());
        outcome.decision = Label::State(State::Retrying);
        outcome.next_attempt_at = Some(rfc3339(at));
        outcome.reason = Some(why);
        Ok(())
    }
}
