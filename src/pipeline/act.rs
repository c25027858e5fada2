//! Acting on a version that passed the policy and the gate: the stale-version check, then the
//! GitHub dispatch (claim, send, record) or the start of a direct deployment (queue or take the
//! endpoint, start the deployment PUT).

use time::OffsetDateTime;

use super::delivery::{Claimed, Delivery, claim};
use super::gate::GatePassed;
use super::invocation::{Handled, Pipeline, PipelineError};
use super::outcome::{Label, Outcome, RolloutView};
use crate::actions::azureml::deploy::rollout_claim;
use crate::actions::github::dispatch::Sent;
use crate::actions::{ActionOutcome, ActionPlan, PreparedRequest};
use crate::ledger::record::rfc3339;
use crate::ledger::{ETag, Edit, Marker, Record, State, StoreError, Written, after};
use crate::policy::Plan;

impl Pipeline {
    /// Acts on `plan` for this delivery: never for a version older than one already acted on
    /// (unless forced).
    pub(super) async fn act(
        &self,
        d: &Delivery<'_>,
        plan: &Plan,
        gate: GatePassed,
        outcome: Outcome,
    ) -> Result<Handled, PipelineError> {
        let now = OffsetDateTime::now_utc();
        let state = match plan.action {
            ActionPlan::Github(_) => State::Dispatching,
            ActionPlan::AzureMl(_) => State::Queued,
        };
        let mut record = d.new_record(Some(plan), state, now);
        record.forced = gate.forced;
        record.gate = gate.summary.map(Box::new);
        if gate.forced {
            record
                .reasons
                .push("forced: the gate and the stale check do not apply".into());
        }

        // A late retry of an old version must never overwrite a newer one (unless forced).
        if !gate.forced
            && let Some((newer, newer_time)) = self
                .ledger
                .newer_version_acted(
                    d.event.source.as_ref(),
                    plan.rule.as_ref(),
                    d.model.name.as_ref(),
                    d.event.time,
                )
                .await?
        {
            let why = format!(
                "stale: version {newer} (event time {newer_time}) was already acted on for rule {} and is newer than this event ({})",
                plan.rule,
                d.event.time_raw.as_deref().unwrap_or("?")
            );
            d.log.warn(why.clone());
            record.reasons.push(why.clone());
            record.transition(State::Stale, why.clone(), now);
            match self
                .ledger
                .create_or_merge(&record, |existing| Edit::Keep(existing.state))
                .await?
            {
                Written::Created(_) => {
                    self.notifier
                        .announce(&self.ledger, &record.key, "stale", d.log)
                        .await
                }
                Written::Merged { value, .. } => d
                    .log
                    .info(format!("the ledger already has this version as {value}")),
                Written::Missing => {}
            }
            return Ok(outcome.now(Label::State(State::Stale), why).into());
        }

        match &plan.action {
            ActionPlan::Github(_) => self.dispatch(d, record, outcome).await,
            ActionPlan::AzureMl(_) => self.start_rollout(d, record, outcome).await,
        }
    }

    /// GitHub: claim the version, send the dispatch, record the outcome.
    async fn dispatch(
        &self,
        d: &Delivery<'_>,
        mut record: Record,
        outcome: Outcome,
    ) -> Result<Handled, PipelineError> {
        let now = record.first_received;
        let attempt_id = uuid::Uuid::new_v4().to_string();
        claim(
            &mut record,
            &attempt_id,
            d.invocation.trigger,
            d.event_id(),
            now,
        );
        // The takeover marker goes first: if this process dies after claiming, Reconcile finds it.
        // It stays when the claim fails: the create may have been applied with its answer lost
        // (a timeout, a dropped connection), and then only Reconcile can find the claimed record;
        // if nothing was written, Reconcile drops the marker.
        let claim_marker = self
            .ledger
            .schedule(&record.key, after(now, self.ledger.options.claim_timeout))
            .await?;
        let (mut record, etag) = match self.claim_version(d, &record, &attempt_id, now).await? {
            Claimed::Created(etag) => (record, etag),
            Claimed::Ours(record, etag) => (*record, etag),
            Claimed::Duplicate { state, what } => {
                let _ = self.ledger.unschedule(&claim_marker).await;
                let outcome = outcome.duplicate(state);
                return Ok(Outcome {
                    reason: Some(format!("already handled: {what}")),
                    ..outcome
                }
                .into());
            }
        };
        if let Some(why) = self
            .claim_newest(d, &mut record, &etag, &claim_marker, "sent")
            .await?
        {
            return Ok(outcome.now(Label::State(State::Stale), why).into());
        }

        let key = record.key.clone();
        let sent = self
            .dispatcher()
            .send_claimed(record, etag, claim_marker, d.log)
            .await?;
        let announce = match &sent {
            Sent::Dispatched(_) => Some("dispatched"),
            Sent::GaveUp(_) => Some("failed"),
            _ => None,
        };
        if let Some(what) = announce {
            self.notifier
                .announce(&self.ledger, &key, what, d.log)
                .await;
        }
        match sent {
            Sent::Dispatched(sent) | Sent::Unrecorded(sent) => {
                d.log.info(success_line(&sent));
                Ok(outcome.dispatched(&sent).into())
            }
            Sent::Retrying { at, error } if self.ledger.is_durable() && error.is_transient() => {
                d.log.warn(format!(
                    "{error}; recorded as retrying: Reconcile tries again at {} (no Event Grid redelivery needed)",
                    rfc3339(at)
                ));
                let mut outcome = outcome.retrying(at);
                outcome.error = Some(error.to_string());
                Ok(outcome.into())
            }
            Sent::Retrying { at, error } if self.ledger.is_durable() => {
                // Recorded and owned by Reconcile, but an operator must fix something (token,
                // repository, workflow): fail the invocation so it shows up in monitoring.
                d.log.error(format!(
                    "{error}; recorded as retrying (Reconcile tries again at {}); answering non-2xx so the failure is visible",
                    rfc3339(at)
                ));
                Err(PipelineError::Action(error))
            }
            Sent::Retrying { error, .. } | Sent::GaveUp(error) => {
                d.log.error(format!(
                    "{error}; answering non-2xx so Event Grid redelivers the event later"
                ));
                Err(PipelineError::Action(error))
            }
        }
    }

    /// Direct deployment: record the version `queued`, then take the endpoint and start the
    /// deployment PUT (or queue behind a running rollout). Never waits for provisioning.
    async fn start_rollout(
        &self,
        d: &Delivery<'_>,
        mut record: Record,
        outcome: Outcome,
    ) -> Result<Handled, PipelineError> {
        let deployer = match &self.deployer {
            Ok(deployer) => deployer.clone(),
            Err(why) => {
                d.log.error(why.clone());
                return Err(PipelineError::Misconfigured(vec![why.clone()]));
            }
        };
        let now = record.first_received;
        let claim_marker = self
            .ledger
            .schedule(&record.key, after(now, self.ledger.options.claim_timeout))
            .await?;
        let force = d.invocation.force;
        // The first steps run in this invocation, under a claim taken with the record (a
        // Reconcile pass meanwhile skips it); the claim marker is due when the claim times out.
        let (claim, _running) = rollout_claim(now);
        record.claim = Some(claim);
        let written = self
            .ledger
            .create_or_merge(&record, |existing| {
                d.note_on(existing, now);
                let forced_again = force
                    && matches!(
                        existing.state,
                        State::Rejected
                            | State::Stale
                            | State::Failed
                            | State::Superseded
                            | State::RolledBack
                    );
                if !((existing.open_to_action() && existing.state != State::Queued) || forced_again)
                {
                    return Edit::Keep(false);
                }
                existing.forced |= record.forced;
                existing.gate = record.gate.clone().or(existing.gate.take());
                existing.gate_pending = false;
                existing.rule = record.rule.clone();
                existing.action = record.action.clone();
                existing.reasons.extend(record.reasons.iter().cloned());
                existing.claim = record.claim.clone();
                existing.transition(State::Queued, "acting on it now", now);
                Edit::Save(true)
            })
            .await;
        let (mut record, etag) = match written {
            Ok(Written::Created(etag)) => (record, etag),
            Ok(Written::Merged {
                value: true,
                record,
                etag,
                ..
            }) => (*record, etag),
            Ok(Written::Merged { record, etag, .. }) => {
                let _ = self.ledger.unschedule(&claim_marker).await;
                let phase = record
                    .rollout
                    .as_ref()
                    .map(|r| format!(" (rollout phase {})", r.phase.as_str()))
                    .unwrap_or_default();
                d.log.info(format!(
                    "duplicate delivery: model {} version {} is already {}{phase}; nothing started",
                    record.model, record.version, record.state,
                ));
                if !matches!(record.state, State::Queued | State::Deploying) {
                    // Notes the delivery; a lost race loses only the note.
                    let _ = self.ledger.save(&record, &etag).await;
                }
                return Ok(outcome.duplicate(record.state).into());
            }
            Ok(Written::Missing) | Err(StoreError::Conflict) => {
                let _ = self.ledger.unschedule(&claim_marker).await;
                return Ok(outcome.relabel(Label::Duplicate).into());
            }
            // The marker stays, as for a dispatch: the create may have been applied.
            Err(e) => return Err(e.into()),
        };
        if let Some(why) = self
            .claim_newest(d, &mut record, &etag, &claim_marker, "deployed")
            .await?
        {
            return Ok(outcome.now(Label::State(State::Stale), why).into());
        }
        let record = deployer.start(record, etag, claim_marker, d.log).await?;
        let mut outcome = outcome.relabel(Label::State(record.state));
        outcome.rollout = record.rollout.as_deref().map(RolloutView::from);
        if matches!(
            record.state,
            State::Failed | State::RolledBack | State::Stale
        ) && let Some(why) = record.reasons.last()
        {
            outcome.reason = Some(why.clone());
        }
        Ok(outcome.into())
    }

    /// The stale-version check at claim time, once for both actions: two versions in flight at
    /// once, only the newest may be acted on. Records this version as the newest for its rule;
    /// when a newer one got there first, records this one `stale` and says why. A forced version
    /// skips it, as it skips the check before claiming.
    async fn claim_newest(
        &self,
        d: &Delivery<'_>,
        record: &mut Record,
        etag: &ETag,
        claim_marker: &Marker,
        verb: &str,
    ) -> Result<Option<String>, PipelineError> {
        if record.forced {
            return Ok(None);
        }
        let rule = record.rule.clone().unwrap_or_default();
        match self
            .ledger
            .advance_latest(
                &record.workspace,
                &rule,
                &record.model,
                &record.version,
                d.event.time,
            )
            .await
        {
            Ok(true) => Ok(None),
            Ok(false) => {
                let why = format!(
                    "stale: a newer version of {} was acted on for rule {rule} while this one was being claimed; not {verb}",
                    record.model
                );
                d.log.warn(why.clone());
                record.claim = None;
                record.transition(State::Stale, why.clone(), OffsetDateTime::now_utc());
                self.ledger.save(record, etag).await?;
                let _ = self.ledger.unschedule(claim_marker).await;
                self.notifier
                    .announce(&self.ledger, &record.key, "stale", d.log)
                    .await;
                Ok(Some(why))
            }
            Err(e) => {
                d.log.warn(format!(
                    "could not update the newest-version pointer ({e}); continuing"
                ));
                Ok(None)
            }
        }
    }

    /// The request an action would send first (dry runs, observe mode).
    pub(super) fn prepare(&self, action: &ActionPlan) -> PreparedRequest {
        let ActionPlan::AzureMl(plan) = action else {
            return self.github.prepare(action);
        };
        let kind = if plan.batch.is_some() {
            "batchEndpoints"
        } else {
            "onlineEndpoints"
        };
        let path = format!(
            "{}/{kind}/{}/deployments/{}",
            plan.workspace, plan.endpoint, plan.deployment
        );
        let url = match &self.deployer {
            Ok(deployer) => deployer
                .engine
                .arm()
                .resource_url(&path)
                .map(|u| u.to_string())
                .unwrap_or_default(),
            Err(_) => format!("{{ARM}}{path}"),
        };
        // The ids of assets registered at rollout start are not known yet.
        let body = plan.deployment_body(
            plan.assets
                .code
                .as_ref()
                .map(|_| "<the code version registered at rollout start>"),
            plan.assets
                .environment
                .as_ref()
                .map(|_| "<the environment version registered or resolved at rollout start>"),
            "<the workspace's region>",
        );
        PreparedRequest {
            method: "PUT",
            url,
            headers: vec![(
                "authorization".into(),
                "Bearer <redacted: Azure credential>".into(),
            )],
            body,
        }
    }
}

fn success_line(outcome: &ActionOutcome) -> String {
    let mut line = format!(
        "GitHub accepted the dispatch: HTTP {} after {} attempt(s)",
        outcome.status, outcome.attempts
    );
    if let Some(url) = &outcome.run_url {
        line.push_str(&format!("; workflow run: {url}"));
    }
    line
}
