//! One delivery's context, and the ledger writes that record what it decided or claim the
//! version for it. Every write goes through the ledger's compare-and-swap
//! ([`Ledger::create_or_merge`] / [`Ledger::update`]): an edit closure says how this delivery
//! changes the stored record, and the ledger re-applies it after every lost race.

use time::OffsetDateTime;

use super::invocation::{Invocation, Pipeline, PipelineError};
use crate::event::{Event, ModelRegistered};
use crate::ledger::record::rfc3339;
use crate::ledger::{Attempt, Claim, ETag, Edit, Record, State, StoreError, Written};
use crate::logs::InvocationLog;
use crate::policy::{Decision, Plan};

/// One event on its way through the pipeline: what every step needs, built once.
pub(super) struct Delivery<'a> {
    /// The parsed event.
    pub event: &'a Event,
    /// The model version it registers.
    pub model: &'a ModelRegistered,
    /// What the policy decided.
    pub decision: &'a Decision,
    /// The decision in words (computed once: with many rules it is not free).
    pub explanation: &'a str,
    /// Who is asking.
    pub invocation: &'a Invocation,
    /// The invocation's log lines.
    pub log: &'a InvocationLog,
}

impl<'a> Delivery<'a> {
    pub(super) fn new(
        event: &'a Event,
        model: &'a ModelRegistered,
        decision: &'a Decision,
        explanation: &'a str,
        invocation: &'a Invocation,
        log: &'a InvocationLog,
    ) -> Self {
        Delivery {
            event,
            model,
            decision,
            explanation,
            invocation,
            log,
        }
    }

    /// The event id.
    pub(super) fn event_id(&self) -> &str {
        self.event.id.as_ref()
    }

    /// Notes this delivery (event and invocation ids) on `record`.
    pub(super) fn note_on(&self, record: &mut Record, now: OffsetDateTime) {
        record.note_delivery(self.event_id(), &self.invocation.id, now);
    }

    /// The record this delivery creates for its version, in `state`.
    pub(super) fn new_record(
        &self,
        plan: Option<&Plan>,
        state: State,
        now: OffsetDateTime,
    ) -> Record {
        let key = crate::ledger::record_key(
            self.event.source.as_ref(),
            self.model.name.as_ref(),
            self.model.version.as_ref(),
        );
        let explanation = self.explanation.to_string();
        let mut record = Record {
            schema: crate::ledger::record::SCHEMA,
            key,
            workspace: self.event.source.to_string(),
            model: self.model.name.to_string(),
            version: self.model.version.to_string(),
            state,
            forced: false,
            rule: plan.map(|p| p.rule.to_string()),
            reasons: vec![explanation.clone()],
            event_ids: vec![self.event_id().to_string()],
            event_time: self.event.time_raw.clone(),
            first_received: now,
            last_received: now,
            invocation_ids: Vec::new(),
            action: plan.map(|p| Box::new(p.action.clone())),
            claim: None,
            acting_since: None,
            next_attempt_at: None,
            attempts: Vec::new(),
            rollout: None,
            model_tags: self.model.tags.clone(),
            model_properties: self.model.properties.clone(),
            gate: None,
            gate_pending: false,
            notifications: Vec::new(),
            history: Vec::new(),
            run: None,
        };
        self.note_on(&mut record, now);
        record.transition(state, explanation, now);
        record
    }
}

/// What claiming a version got.
pub(super) enum Claimed {
    /// The version had no record: the fresh one, claimed, was created as given.
    Created(ETag),
    /// The claim: the existing record is ours to send.
    Ours(Box<Record>, ETag),
    /// Already handled (or being handled); nothing to send.
    Duplicate {
        /// The record's state.
        state: State,
        /// What happened to it, in words.
        what: String,
    },
}

impl Pipeline {
    /// Records a decision that sends nothing (skipped, observed, paused). An existing record that
    /// was acted on keeps its state; the delivery is noted.
    pub(super) async fn record_decision(
        &self,
        d: &Delivery<'_>,
        plan: Option<&Plan>,
        state: State,
    ) -> Result<(), PipelineError> {
        let now = OffsetDateTime::now_utc();
        let fresh = d.new_record(plan, state, now);
        let written = self
            .ledger
            .create_or_merge(&fresh, |existing| {
                d.note_on(existing, now);
                if existing.open_to_action() {
                    existing.rule = fresh.rule.clone();
                    existing.action = fresh.action.clone();
                    existing.reasons = fresh.reasons.clone();
                    if existing.state != state {
                        existing.transition(state, d.explanation, now);
                    }
                }
                Edit::Save(existing.state)
            })
            .await;
        match written {
            Ok(Written::Merged { value, .. }) if !value.open_to_action() => d.log.info(format!(
                "the ledger already has model {} version {} as {value}",
                d.model.name, d.model.version
            )),
            // Lost every race to other deliveries of the same version: they recorded it.
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Claims `fresh`'s version for this delivery's attempt `attempt_id`: creates the record, or
    /// claims the existing one when nothing was sent for it yet; otherwise says what happened to
    /// it (and notes the delivery).
    pub(super) async fn claim_version(
        &self,
        d: &Delivery<'_>,
        fresh: &Record,
        attempt_id: &str,
        now: OffsetDateTime,
    ) -> Result<Claimed, StoreError> {
        let invocation = d.invocation;
        let durable = self.ledger.is_durable();
        let mut new_event = true;
        let written = self
            .ledger
            .create_or_merge(fresh, |existing| {
                new_event = !existing.event_ids.iter().any(|e| e == d.event_id());
                d.note_on(existing, now);
                // With the in-memory ledger nothing else retries, so a redelivery takes the retry.
                let claimable = existing.open_to_action()
                    || (!durable && existing.state == State::Retrying)
                    || (invocation.force
                        && matches!(
                            existing.state,
                            State::Rejected | State::Stale | State::Failed | State::Superseded
                        ));
                if !claimable {
                    return Edit::Keep(false);
                }
                existing.rule = fresh.rule.clone();
                existing.action = fresh.action.clone();
                existing.reasons.extend(fresh.reasons.iter().cloned());
                existing.forced |= fresh.forced;
                existing.gate = fresh.gate.clone().or(existing.gate.take());
                existing.gate_pending = false;
                claim(existing, attempt_id, invocation.trigger, d.event_id(), now);
                Edit::Save(true)
            })
            .await;
        let (existing, etag) = match written {
            Ok(Written::Created(etag)) => return Ok(Claimed::Created(etag)),
            Ok(Written::Merged {
                value: true,
                record,
                etag,
                ..
            }) => return Ok(Claimed::Ours(record, etag)),
            Ok(Written::Merged { record, etag, .. }) => (*record, etag),
            Ok(Written::Missing) | Err(StoreError::Conflict) => {
                d.log.info(
                    "duplicate delivery: another delivery claimed this version first; nothing sent",
                );
                return Ok(Claimed::Duplicate {
                    state: State::Dispatching,
                    what: "another delivery claimed it first".into(),
                });
            }
            Err(e) => return Err(e),
        };
        let claim_timeout = self.ledger.options.claim_timeout;
        let what = match existing.state {
            State::Dispatching if crate::ledger::claim_expired(&existing, claim_timeout, now) => {
                // Its owner died: make sure Reconcile takes it over now.
                self.ledger.schedule(&existing.key, now).await?;
                "a previous attempt died while sending it; Reconcile takes it over".to_string()
            }
            State::Dispatching => "another delivery is sending it right now".to_string(),
            State::Retrying => format!(
                "it is queued for retry by Reconcile{}",
                existing
                    .next_attempt_at
                    .map(|t| format!(" at {}", rfc3339(t)))
                    .unwrap_or_default()
            ),
            state => {
                let outcome = existing.last_outcome();
                if outcome.is_empty() {
                    format!("it is {state}")
                } else {
                    format!("it is {state}: {outcome}")
                }
            }
        };
        d.log.info(format!(
            "duplicate delivery: model {} version {} is already handled ({what}); nothing sent",
            existing.model, existing.version
        ));
        let state = existing.state;
        self.note_duplicate(d, existing, etag, new_event, now).await;
        Ok(Claimed::Duplicate { state, what })
    }

    /// Notes a duplicate delivery on the record. A new event id is always worth recording (the
    /// outcome writer merges it if they race); a repeat of a known event is only noted on records
    /// that are no longer in flight, to keep writes away from the attempt recording its outcome.
    async fn note_duplicate(
        &self,
        d: &Delivery<'_>,
        record: Record,
        etag: ETag,
        new_event: bool,
        now: OffsetDateTime,
    ) {
        let in_flight = matches!(
            record.state,
            State::Dispatching | State::Retrying | State::Queued | State::Deploying
        );
        if !new_event && in_flight {
            return;
        }
        let key = record.key.clone();
        let mut first = true;
        // Best effort: a lost note costs only an id in the record's list.
        let _ = self
            .ledger
            .update(&key, Some((record, etag)), |stored| {
                // After a lost race, try again only while the new event id is still missing.
                let missing = !stored.event_ids.iter().any(|e| e == d.event_id());
                let retry = !std::mem::take(&mut first);
                if retry && !(new_event && missing) {
                    return Edit::Keep(());
                }
                d.note_on(stored, now);
                Edit::Save(())
            })
            .await;
    }
}

/// Marks `record` as claimed by a new attempt.
pub fn claim(
    record: &mut Record,
    attempt_id: &str,
    trigger: &str,
    event_id: &str,
    now: OffsetDateTime,
) {
    // A new round of acting (first time, or again after nothing was sent) restarts the give-up
    // clock; retries and takeovers keep it.
    if record.acting_since.is_none() || record.state.open_to_action() {
        record.acting_since = Some(now);
    }
    record.claim = Some(Claim {
        attempt_id: attempt_id.to_string(),
        claimed_at: now,
    });
    record.next_attempt_at = None;
    record.attempts.push(Attempt {
        id: attempt_id.to_string(),
        trigger: trigger.to_string(),
        event_id: event_id.to_string(),
        started_at: now,
        finished_at: None,
        outcome: String::new(),
        status: None,
        run_url: None,
        error: None,
    });
    if record.state != State::Dispatching
        || record
            .history
            .last()
            .is_none_or(|t| t.state != State::Dispatching)
    {
        record.transition(
            State::Dispatching,
            format!("attempt {attempt_id} ({trigger})"),
            now,
        );
    }
}
