//! Direct deployments in the ledger: starting a rollout from the event handler (take the endpoint,
//! start the deployment PUT, return) and advancing it from `Reconcile`, one bounded step at a time.
//! The record's `rollout` field holds the whole state; any instance can continue it.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::actions::ActionPlan;
use crate::actions::azureml::AzureMlPlan;
use crate::actions::azureml::rollout::{Acquired, Next, Phase, RolloutEngine, RolloutState};
use crate::ledger::record::rfc3339;
use crate::ledger::{ETag, Edit, Ledger, Marker, Record, State, StoreError, Written, after};
use crate::logs::InvocationLog;

/// How long a queued rollout waits before checking the endpoint again on its own (normally the
/// rollout ahead of it wakes it when it releases the endpoint).
const QUEUED_RECHECK: Duration = Duration::from_secs(300);
/// Steps per visit, so one pass cannot spin on one record.
const MAX_STEPS_PER_VISIT: usize = 12;

/// Runs rollouts recorded in the ledger.
pub struct Deployer {
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// The rollout engine.
    pub engine: Arc<RolloutEngine>,
    /// Announces succeeded, rolled back and failed rollouts.
    pub notifier: Arc<crate::notify::Notifier>,
    /// Never reschedule sooner than this (`AUTODEPLOY_MIN_STEP_SECS`).
    pub min_step: Duration,
}

/// The ledger state for a rollout phase.
pub fn record_state(rollout: &RolloutState) -> State {
    match rollout.phase {
        Phase::Queued => State::Queued,
        Phase::Retaining | Phase::Cleaning | Phase::Done => State::Succeeded,
        Phase::RolledBack => State::RolledBack,
        Phase::Failed if rollout.stale => State::Stale,
        Phase::Failed => State::Failed,
        _ => State::Deploying,
    }
}

fn plan_of(record: &Record) -> Option<AzureMlPlan> {
    match record.action.as_deref() {
        Some(ActionPlan::AzureMl(plan)) => Some(plan.clone()),
        _ => None,
    }
}

impl Deployer {
    /// The first steps, inside the event's invocation: queue behind a running rollout, or take the
    /// endpoint and start the deployment PUT. Never waits for provisioning. `claim_marker` is the
    /// takeover marker written before the record was created.
    pub async fn start(
        &self,
        mut record: Record,
        etag: ETag,
        claim_marker: Marker,
        log: &InvocationLog,
    ) -> Result<Record, StoreError> {
        let Some(plan) = plan_of(&record) else {
            return Err(StoreError::Unavailable(
                "the record has no deployment plan".into(),
            ));
        };
        let mut rollout = RolloutState::new(&plan);
        let now = OffsetDateTime::now_utc();
        match self
            .engine
            .acquire(&plan, &record.key, record.event_time.as_deref())
            .await?
        {
            granted @ (Acquired::Granted | Acquired::GrantedSuperseding { .. }) => {
                if let Acquired::GrantedSuperseding { superseded } = granted {
                    for key in superseded {
                        self.supersede(&key, &record, log).await?;
                    }
                }
                // Bounded: the invocation answers Event Grid in time even when ARM is slow; an
                // unfinished start is continued by Reconcile (the lock is already ours).
                let budget = self.engine.arm().budget().min(Duration::from_secs(15));
                let started = tokio::time::timeout(
                    budget,
                    self.run(record.clone(), etag.clone(), rollout, &plan, true, log),
                )
                .await;
                let record = match started {
                    Ok(result) => result?.0,
                    Err(_) => {
                        log.warn(format!(
                            "starting the deployment took longer than {}s; Reconcile continues it",
                            budget.as_secs()
                        ));
                        let now = OffsetDateTime::now_utc();
                        self.ledger.schedule(&record.key, now).await?;
                        record
                    }
                };
                let _ = self.ledger.unschedule(&claim_marker).await;
                Ok(record)
            }
            Acquired::Queued { superseded } => {
                let active = self
                    .engine
                    .lock(&plan.workspace, &plan.endpoint)
                    .await?
                    .active
                    .unwrap_or_default();
                for key in superseded {
                    self.supersede(&key, &record, log).await?;
                }
                rollout.next_step =
                    format!("wait for the rollout of {active} on {}", plan.endpoint);
                log.info(format!(
                    "endpoint {} is busy ({}); this version is queued and starts when it is free",
                    plan.endpoint,
                    active
                        .rsplit('/')
                        .take(3)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("/")
                ));
                record.rollout = Some(Box::new(rollout.clone()));
                record.claim = None;
                record.transition(State::Queued, format!("queued behind {active}"), now);
                self.ledger
                    .schedule(&record.key, after(now, QUEUED_RECHECK))
                    .await?;
                self.ledger.save(&record, &etag).await?;
                let _ = self.ledger.unschedule(&claim_marker).await;
                Ok(record)
            }
            Acquired::Superseded => {
                let why =
                    "superseded: a newer version of this model is already waiting for the endpoint"
                        .to_string();
                log.info(why.clone());
                record.rollout = Some(Box::new(rollout.clone()));
                record.claim = None;
                record.transition(State::Superseded, why, now);
                self.ledger.save(&record, &etag).await?;
                let _ = self.ledger.unschedule(&claim_marker).await;
                Ok(record)
            }
        }
    }

    async fn supersede(
        &self,
        key: &str,
        by: &Record,
        log: &InvocationLog,
    ) -> Result<(), StoreError> {
        let why = format!(
            "superseded by version {} before its rollout started",
            by.version
        );
        let written = self
            .ledger
            .update(key, None, |queued| {
                if queued.state != State::Queued {
                    return Edit::Keep(());
                }
                if let Some(rollout) = &mut queued.rollout {
                    rollout.next_step = "nothing".into();
                }
                queued.transition(State::Superseded, why.clone(), OffsetDateTime::now_utc());
                Edit::Save(())
            })
            .await;
        match written {
            Ok(Written::Merged {
                record,
                saved: true,
                ..
            }) => log.info(format!(
                "{} version {}: {why}",
                record.model, record.version
            )),
            // Lost every race: whoever won decides (as before, not an error).
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// One visit from `Reconcile`: continue the rollout where the record says it is.
    pub async fn advance(
        &self,
        record: Record,
        etag: ETag,
        marker: &Marker,
        paused: bool,
        log: &InvocationLog,
    ) -> Result<Record, StoreError> {
        let Some(plan) = plan_of(&record) else {
            self.ledger.unschedule(marker).await?;
            return Ok(record);
        };
        let rollout = record
            .rollout
            .as_deref()
            .cloned()
            .unwrap_or_else(|| RolloutState::new(&plan));
        if rollout.phase == Phase::Queued {
            // Paused: rollouts already running finish (half a rollout is worse), new ones wait.
            if paused {
                let now = OffsetDateTime::now_utc();
                self.ledger
                    .schedule(&record.key, after(now, QUEUED_RECHECK))
                    .await?;
                self.ledger.unschedule(marker).await?;
                log.info(format!(
                    "{} {}: AUTODEPLOY_PAUSED is set; the rollout waits",
                    record.model, record.version
                ));
                return Ok(record);
            }
            if record.state != State::Queued {
                self.ledger.unschedule(marker).await?;
                return Ok(record);
            }
            match self
                .engine
                .acquire(&plan, &record.key, record.event_time.as_deref())
                .await?
            {
                Acquired::Granted => {}
                Acquired::GrantedSuperseding { superseded } => {
                    for key in superseded {
                        self.supersede(&key, &record, log).await?;
                    }
                }
                _ => {
                    let now = OffsetDateTime::now_utc();
                    self.ledger
                        .schedule(&record.key, after(now, QUEUED_RECHECK))
                        .await?;
                    self.ledger.unschedule(marker).await?;
                    return Ok(record);
                }
            }
        }
        let (record, _) = self.run(record, etag, rollout, &plan, false, log).await?;
        self.ledger.unschedule(marker).await?;
        Ok(record)
    }

    /// Steps until the rollout must wait, records the result, and schedules the next visit.
    /// `inline` (inside an event's invocation) stops at the first wait of any length: provisioning
    /// is `Reconcile`'s job, never the invocation's.
    async fn run(
        &self,
        mut record: Record,
        mut etag: ETag,
        mut rollout: RolloutState,
        plan: &AzureMlPlan,
        inline: bool,
        log: &InvocationLog,
    ) -> Result<(Record, ETag), StoreError> {
        let mut next = Next::Now;
        let mut announced = None;
        for _ in 0..MAX_STEPS_PER_VISIT {
            let before = rollout.phase;
            let assets_before = rollout.assets.clone();
            let batch_before = rollout.batch.clone();
            next = self
                .engine
                .step(plan, &mut rollout, record.forced, log)
                .await;
            if rollout.phase != before {
                let now = OffsetDateTime::now_utc();
                let note = match (&rollout.failure, rollout.phase) {
                    (
                        Some(why),
                        Phase::RollingBack
                        | Phase::RemovingFailed
                        | Phase::Failed
                        | Phase::RolledBack,
                    ) => {
                        format!("{}: {why}", rollout.phase.as_str())
                    }
                    // The notification quotes it: say how to approve and until when.
                    (_, Phase::AwaitingApproval) => rollout.next_step.clone(),
                    _ => format!("{} → {}", before.as_str(), rollout.phase.as_str()),
                };
                let state = record_state(&rollout);
                if rollout.phase == Phase::AwaitingApproval {
                    announced = Some("awaiting_approval");
                }
                if state != record.state {
                    announced = match state {
                        State::Succeeded => Some("succeeded"),
                        State::RolledBack => Some("rolled_back"),
                        State::Failed => Some("failed"),
                        State::Stale => Some("stale"),
                        _ => announced,
                    };
                }
                record.transition(state, note, now);
                if let Some(why) = &rollout.failure
                    && !record.reasons.contains(why)
                {
                    record.reasons.push(why.clone());
                }
            }
            // The service asked for no wait (Retry-After: 0): poll again within this visit.
            if next != Next::Now && (inline || next != Next::After(Duration::ZERO)) {
                break;
            }
            // Write ahead: record each transition before the next step changes the endpoint
            // again, so a storage outage leaves the record at most one (idempotent) step behind
            // ARM. Resuming several steps back could, e.g., send traffic to a deployment that an
            // unrecorded cleanup already deleted.
            // Asset progress too: a fresh code name or a finished upload is not repeated; and a
            // batch rollout's intents (the default it is about to set, the smoke job it is about
            // to submit) before the request that acts on them.
            if rollout.phase != before
                || rollout.assets != assets_before
                || rollout.batch != batch_before
            {
                record.rollout = Some(Box::new(rollout.clone()));
                etag = self.ledger.save(&record, &etag).await?;
            }
        }
        let now = OffsetDateTime::now_utc();
        // Give the endpoint back once traffic is settled (promoted or restored).
        let settled = matches!(
            rollout.phase,
            Phase::Retaining | Phase::Cleaning | Phase::Done | Phase::RolledBack | Phase::Failed
        );
        let mut wake = None;
        if settled && !rollout.released {
            let promoted = matches!(
                rollout.phase,
                Phase::Retaining | Phase::Cleaning | Phase::Done
            );
            wake = self
                .engine
                .release(&plan.workspace, &plan.endpoint, &record.key, promoted)
                .await?;
            rollout.released = true;
        }
        record.rollout = Some(Box::new(rollout.clone()));
        record.claim = None;
        match next {
            Next::Finished => record.next_attempt_at = None,
            Next::Now | Next::After(_) => {
                let delay = match next {
                    Next::After(d) => d.max(self.min_step),
                    _ => self.min_step,
                };
                let due = after(now, delay);
                record.next_attempt_at = Some(due);
                self.ledger.schedule(&record.key, due).await?;
            }
        }
        let etag = self.ledger.save(&record, &etag).await?;
        // Announce outcomes once the record says so.
        if let Some(outcome) = announced {
            self.notifier
                .announce(&self.ledger, &record.key, outcome, log)
                .await;
        }
        if let Some(next_key) = wake {
            // The next queued version may start now.
            self.ledger.schedule(&next_key, now).await?;
            log.info(format!(
                "endpoint {} is free; the next queued version starts on the next Reconcile",
                plan.endpoint
            ));
        }
        if let Some(at) = record.next_attempt_at {
            log.info(format!(
                "rollout of {}: {} (next step at {})",
                plan.deployment,
                rollout.next_step,
                rfc3339(at)
            ));
        }
        Ok((record, etag))
    }
}
