//! Direct deployments in the ledger: starting a rollout from the event handler (take the endpoint,
//! start the deployment PUT, return) and advancing it from `Reconcile`, one bounded step at a time.
//! The record's `rollout` field holds the whole state; any instance can continue it.
//!
//! With several instances: a visit runs steps only under a claim on the record ([`claim`]), taken
//! before any ARM call; every step's result is recorded before the next step calls ARM again
//! (write-ahead); and the endpoint is given back before the record shows its final state.

mod claim;

pub(crate) use claim::rollout_claim;

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::actions::ActionPlan;
use crate::actions::azureml::AzureMlPlan;
use crate::actions::azureml::rollout::{Acquired, Next, Phase, RolloutEngine, RolloutState};
use crate::ledger::record::rfc3339;
use crate::ledger::{
    ETag, Edit, Ledger, Marker, Record, State, StoreError, Written, after, record_model_version,
};
use crate::logs::InvocationLog;
use claim::Claimed;

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
                // Uploads stop well before the cut-off, so it rarely cuts anything.
                let deadline = Instant::now() + budget / 2;
                let started = tokio::time::timeout(
                    budget,
                    self.run(
                        record.clone(),
                        etag.clone(),
                        rollout,
                        &plan,
                        true,
                        deadline,
                        log,
                    ),
                )
                .await;
                let record = match started {
                    Ok(result) => result?.0,
                    Err(_) => {
                        // The steps were dropped with their future: nothing of this visit runs any
                        // more, so this process's next pass takes its claim over (the record is at
                        // most one idempotent step behind ARM).
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
                let lock = self.engine.lock(&plan.workspace, &plan.endpoint).await?;
                for key in superseded {
                    self.supersede(&key, &record, log).await?;
                }
                // Nobody holds the endpoint but an older version waits first: make sure it starts.
                let wake = lock.next_to_wake();
                if let Some(head) = &wake {
                    self.ledger.schedule(head, now).await?;
                }
                let active = lock.active.or(wake).unwrap_or_default();
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
            Acquired::Superseded { by } => {
                let why = match record_model_version(&by) {
                    Some((model, version)) => format!(
                        "superseded: {model} version {version}, newer, is already waiting for endpoint {}",
                        plan.endpoint
                    ),
                    None => format!(
                        "superseded: a newer version of {} is already waiting for endpoint {}",
                        record.model, plan.endpoint
                    ),
                };
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
            "superseded by {} version {} before its rollout started",
            by.model, by.version
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

    /// One visit from `Reconcile`: continue the rollout where the record says it is. No step
    /// starts after `deadline` (the pass's), and an upload stops sending by then.
    #[allow(clippy::too_many_arguments)]
    pub async fn advance(
        &self,
        record: Record,
        etag: ETag,
        marker: &Marker,
        paused: bool,
        deadline: Instant,
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
                // No longer waiting (superseded, skipped): out of the queue, and the next may go.
                let wake = self
                    .engine
                    .leave(&plan.workspace, &plan.endpoint, &record.key)
                    .await?;
                if let Some(next) = wake {
                    self.ledger
                        .schedule(&next, OffsetDateTime::now_utc())
                        .await?;
                }
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
                    // A free endpoint with an older version first in line: make sure it starts.
                    let lock = self.engine.lock(&plan.workspace, &plan.endpoint).await?;
                    if let Some(head) = lock.next_to_wake() {
                        self.ledger.schedule(&head, now).await?;
                    }
                    self.ledger.unschedule(marker).await?;
                    return Ok(record);
                }
            }
        }
        if rollout.phase.is_finished() && rollout.released {
            // Nothing left to do (a stray marker): no claim, no write.
            self.ledger.unschedule(marker).await?;
            return Ok(record);
        }
        // The claim comes before any ARM call: a second pass skips the record.
        let now = OffsetDateTime::now_utc();
        let (record, etag, _running) = match claim::claim(&self.ledger, &record, &etag, now).await?
        {
            Claimed::Ours(record, etag, running) => (*record, etag, running),
            Claimed::Busy(until) => {
                log.info(format!(
                    "{} {}: another pass or instance is running this rollout's step; skipped",
                    record.model, record.version
                ));
                // Looked at again when that claim would time out (its visit may die).
                self.ledger.schedule(&record.key, until).await?;
                self.ledger.unschedule(marker).await?;
                return Ok(record);
            }
            Claimed::Lost => {
                log.info(format!(
                    "{} {}: the record changed while it was being claimed; skipped this pass",
                    record.model, record.version
                ));
                return Ok(record);
            }
        };
        let (record, _) = self
            .run(record, etag, rollout, &plan, false, deadline, log)
            .await?;
        self.ledger.unschedule(marker).await?;
        Ok(record)
    }

    /// Steps until the rollout must wait, records the result, and schedules the next visit.
    /// `inline` (inside an event's invocation) stops at the first wait of any length: provisioning
    /// is `Reconcile`'s job, never the invocation's. Runs under the record's claim (`record.claim`).
    /// No step starts after `deadline`.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        mut record: Record,
        mut etag: ETag,
        mut rollout: RolloutState,
        plan: &AzureMlPlan,
        inline: bool,
        deadline: Instant,
        log: &InvocationLog,
    ) -> Result<(Record, ETag), StoreError> {
        let started = Instant::now();
        // No step starts past half the claim's life: the claim must outlive the visit's ARM calls.
        let steps_until = self.ledger.options.claim_timeout / 2;
        let mut next = Next::Now;
        let mut announced = None;
        for taken in 0..MAX_STEPS_PER_VISIT {
            if taken > 0 && started.elapsed() >= steps_until {
                break;
            }
            let before = rollout.phase;
            next = self
                .engine
                .step(plan, &mut rollout, record.forced, deadline, log)
                .await;
            if settled(rollout.phase) && !rollout.released {
                etag = self
                    .give_back(&mut record, etag, &mut rollout, plan, log)
                    .await?;
            }
            if let Some(outcome) = note(&mut record, before, &rollout) {
                announced = Some(outcome);
            }
            // The service asked for no wait (Retry-After: 0): poll again within this visit.
            if next != Next::Now && (inline || next != Next::After(Duration::ZERO)) {
                break;
            }
            // Write ahead: record each step's result before the next step calls ARM, so a storage
            // outage leaves the record at most one (idempotent) step behind ARM: a traffic change
            // is recorded as the phase's `pending` target before it is sent (see `traffic.rs`),
            // its operation before it is polled, asset progress (a fresh code name, a finished
            // upload) before the next asset. Resuming further back could, e.g., send traffic to a
            // deployment that an unrecorded cleanup already deleted.
            if record.rollout.as_deref() != Some(&rollout) {
                record.rollout = Some(Box::new(rollout.clone()));
                etag = self.ledger.save(&record, &etag).await?;
            }
            if Instant::now() >= deadline {
                // The pass's time is up: the next visit continues.
                break;
            }
        }
        let now = OffsetDateTime::now_utc();
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

    /// Gives the endpoint back once traffic is settled (promoted or restored). The settled phase
    /// is recorded first, while the record still says `deploying`; then the lock is released; only
    /// then may the record show its final state: a finished record never holds the endpoint, so
    /// another instance never has to guess whether a holder is done. A crash in between resumes
    /// here (releasing twice changes nothing).
    async fn give_back(
        &self,
        record: &mut Record,
        mut etag: ETag,
        rollout: &mut RolloutState,
        plan: &AzureMlPlan,
        log: &InvocationLog,
    ) -> Result<ETag, StoreError> {
        if record.rollout.as_deref() != Some(&*rollout) {
            record.rollout = Some(Box::new(rollout.clone()));
            etag = self.ledger.save(record, &etag).await?;
        }
        let promoted = matches!(
            rollout.phase,
            Phase::Retaining | Phase::Cleaning | Phase::Done
        );
        let wake = self
            .engine
            .release(&plan.workspace, &plan.endpoint, &record.key, promoted)
            .await?;
        rollout.released = true;
        if let Some(next_key) = wake {
            // The next queued version may start now.
            self.ledger
                .schedule(&next_key, OffsetDateTime::now_utc())
                .await?;
            log.info(format!(
                "endpoint {} is free; the next queued version starts on the next Reconcile",
                plan.endpoint
            ));
        }
        Ok(etag)
    }
}

/// Whether the rollout's traffic is settled (promoted or restored, or never moved): the endpoint
/// can go to the next version.
fn settled(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Retaining | Phase::Cleaning | Phase::Done | Phase::RolledBack | Phase::Failed
    )
}

/// Records a phase change (or the state a given-back endpoint lets the record show) in the
/// record's history; returns the outcome to announce, if any.
fn note(record: &mut Record, before: Phase, rollout: &RolloutState) -> Option<&'static str> {
    let state = record_state(rollout);
    if rollout.phase == before && state == record.state {
        return None;
    }
    let text = match (&rollout.failure, rollout.phase) {
        (
            Some(why),
            Phase::RollingBack | Phase::RemovingFailed | Phase::Failed | Phase::RolledBack,
        ) => {
            format!("{}: {why}", rollout.phase.as_str())
        }
        // The notification quotes it: say how to approve and until when.
        (_, Phase::AwaitingApproval) => rollout.next_step.clone(),
        _ if rollout.phase == before => format!("{} (endpoint given back)", before.as_str()),
        _ => format!("{} → {}", before.as_str(), rollout.phase.as_str()),
    };
    let mut announced = (rollout.phase == Phase::AwaitingApproval && before != rollout.phase)
        .then_some("awaiting_approval");
    if state != record.state {
        announced = match state {
            State::Succeeded => Some("succeeded"),
            State::RolledBack => Some("rolled_back"),
            State::Failed => Some("failed"),
            State::Stale => Some("stale"),
            _ => announced,
        };
    }
    record.transition(state, text, OffsetDateTime::now_utc());
    if let Some(why) = &rollout.failure
        && !record.reasons.contains(why)
    {
        record.reasons.push(why.clone());
    }
    announced
}
