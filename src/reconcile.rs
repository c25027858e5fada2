//! One `Reconcile` pass (the timer function): pick up due outbox entries, retry `retrying` records,
//! take over `dispatching` claims whose owner died, and give up after `AUTODEPLOY_GIVE_UP_AFTER`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::dispatch::Sent;
use crate::ledger::record::rfc3339;
use crate::ledger::{State, StoreError, after, claim_expired};
use crate::logs::InvocationLog;
use crate::pipeline::{Pipeline, claim};

/// At most this many records per pass; the rest wait for the next timer tick.
const MAX_PER_PASS: usize = 50;
/// A pass stops starting new work after this long (the host's functionTimeout is longer).
const PASS_BUDGET: Duration = Duration::from_secs(240);

/// Counts of what a pass did.
#[derive(Debug, Default)]
struct Tally {
    due: usize,
    dispatched: usize,
    retrying: usize,
    failed: usize,
    found_existing: usize,
    cleaned: usize,
    rollouts: usize,
}

/// Runs one pass and returns its summary (the invocation's `ReturnValue`).
pub async fn reconcile(pipeline: &Pipeline, log: &InvocationLog) -> Result<Value, StoreError> {
    let started = Instant::now();
    let ledger = pipeline.ledger();
    let now = OffsetDateTime::now_utc();
    let due = ledger.due(now, MAX_PER_PASS).await?;
    let mut tally = Tally {
        due: due.len(),
        ..Tally::default()
    };
    if due.is_empty() {
        log.info("Reconcile: nothing due");
    }
    for (marker_due, key) in due {
        if started.elapsed() > PASS_BUDGET {
            log.warn("Reconcile: pass budget used up; the rest waits for the next run");
            break;
        }
        let now = OffsetDateTime::now_utc();
        let Some((mut record, etag)) = ledger.load(&key).await? else {
            ledger.unschedule(&key, marker_due).await?;
            tally.cleaned += 1;
            continue;
        };
        // Direct deployments advance their rollout, one bounded step at a time.
        if matches!(record.action, Some(crate::actions::ActionPlan::AzureMl(_))) {
            match pipeline.deployer() {
                Ok(deployer) => {
                    let record = deployer.advance(record, etag, marker_due, log).await?;
                    tally.rollouts += 1;
                    if let Some(rollout) = &record.rollout {
                        log.info(format!(
                            "{} {}: {} (rollout phase {})",
                            record.model,
                            record.version,
                            record.state,
                            rollout["phase"].as_str().unwrap_or_default()
                        ));
                    }
                }
                Err(why) => log.error(why.to_string()),
            }
            continue;
        }
        let trigger = match record.state {
            State::Retrying if record.next_attempt_at.is_none_or(|t| t <= now) => "reconcile",
            State::Dispatching if claim_expired(&record, ledger.options.claim_timeout, now) => {
                "takeover"
            }
            State::Retrying | State::Dispatching => {
                // Not due yet: this marker is an old one; the current claim or retry has its own.
                if record.next_attempt_at != Some(marker_due)
                    && record
                        .claim
                        .as_ref()
                        .map(|c| after(c.claimed_at, ledger.options.claim_timeout))
                        != Some(marker_due)
                {
                    ledger.unschedule(&key, marker_due).await?;
                    tally.cleaned += 1;
                }
                continue;
            }
            _ => {
                ledger.unschedule(&key, marker_due).await?;
                tally.cleaned += 1;
                continue;
            }
        };

        if after(record.first_received, ledger.options.give_up_after) <= now {
            let why = format!(
                "gave up: still not dispatched {} after the first delivery (AUTODEPLOY_GIVE_UP_AFTER)",
                humanize(ledger.options.give_up_after)
            );
            record.claim = None;
            record.next_attempt_at = None;
            record.decision = "failed".into();
            record.transition(State::Failed, why.clone(), now);
            match ledger.save(&record, &etag).await {
                Ok(_) => {
                    ledger.unschedule(&key, marker_due).await?;
                    log.warn(format!("{} {}: {why}", record.model, record.version));
                    tally.failed += 1;
                }
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
            continue;
        }

        // Claim it (ETag): two passes, or a pass and a redelivery, never both send.
        let attempt_id = uuid::Uuid::new_v4().to_string();
        let event_id = record.event_ids.first().cloned().unwrap_or_default();
        claim(&mut record, &attempt_id, trigger, &event_id, now);
        let claim_due = after(now, ledger.options.claim_timeout);
        ledger.schedule(&key, claim_due).await?;
        let etag = match ledger.save(&record, &etag).await {
            Ok(etag) => etag,
            Err(StoreError::Conflict) => {
                ledger.unschedule(&key, claim_due).await?;
                continue;
            }
            Err(e) => {
                let _ = ledger.unschedule(&key, claim_due).await;
                return Err(e);
            }
        };
        ledger.unschedule(&key, marker_due).await?;

        // A takeover must not repeat a workflow run that the dead attempt did start.
        if trigger == "takeover"
            && let Some(plan) = record.action.clone()
        {
            let since = record
                .attempts
                .iter()
                .rev()
                .nth(1)
                .map(|a| a.started_at)
                .unwrap_or(record.first_received);
            match pipeline
                .action()
                .find_existing_run(&plan, &record.event_ids, since, log)
                .await
            {
                Ok(Some(run_url)) => {
                    if let Some(attempt) = record.attempt_mut(&attempt_id) {
                        attempt.finished_at = Some(now);
                        attempt.outcome = "found_existing_run".into();
                        attempt.run_url = Some(run_url.clone());
                    }
                    record.claim = None;
                    record.decision = "dispatched".into();
                    record.transition(
                        State::Dispatched,
                        format!("takeover found the run the previous attempt started: {run_url}"),
                        now,
                    );
                    match ledger.save(&record, &etag).await {
                        Ok(_) => {
                            ledger.unschedule(&key, claim_due).await?;
                            log.info(format!(
                                "{} {}: found existing run {run_url}; not sending again",
                                record.model, record.version
                            ));
                            tally.found_existing += 1;
                        }
                        Err(StoreError::Conflict) => {}
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => log.warn(format!(
                    "could not look for an existing run ({e}); sending again"
                )),
            }
        }

        log.info(format!(
            "Reconcile: {} {} ({trigger}, attempt {})",
            record.model,
            record.version,
            record.attempts.len()
        ));
        match pipeline
            .dispatcher()
            .send_claimed(record.clone(), etag, claim_due, log)
            .await?
        {
            Sent::Dispatched(outcome) | Sent::Unrecorded(outcome) => {
                log.info(format!(
                    "{} {}: dispatched (HTTP {}){}",
                    record.model,
                    record.version,
                    outcome.status,
                    outcome
                        .run_url
                        .map(|u| format!("; run {u}"))
                        .unwrap_or_default()
                ));
                tally.dispatched += 1;
            }
            Sent::Retrying { at, error } => {
                log.warn(format!(
                    "{} {}: {error}; next try at {}",
                    record.model,
                    record.version,
                    rfc3339(at)
                ));
                tally.retrying += 1;
            }
            Sent::GaveUp(error) => {
                log.warn(format!(
                    "{} {}: gave up: {error}",
                    record.model, record.version
                ));
                tally.failed += 1;
            }
        }
    }
    Ok(json!({
        "due": tally.due,
        "dispatched": tally.dispatched,
        "retrying": tally.retrying,
        "failed": tally.failed,
        "foundExistingRun": tally.found_existing,
        "cleaned": tally.cleaned,
        "rollouts": tally.rollouts,
    }))
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) && secs >= 3600 {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) && secs >= 60 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}
