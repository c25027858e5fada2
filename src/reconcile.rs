//! One `Reconcile` pass (the timer function): pick up due outbox entries, retry `retrying` records,
//! take over `dispatching` claims whose owner died, advance direct-deployment rollouts, follow
//! dispatched GitHub runs ([`follow`]), and give up after `AUTODEPLOY_GIVE_UP_AFTER`. Each record
//! is handled on its own: one bad record never stops the pass.

mod follow;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::actions::ActionPlan;
use crate::actions::github::dispatch::Sent;
use crate::config::{Mode, RuleAction};
use crate::ledger::record::rfc3339;
use crate::ledger::run::RunState;
use crate::ledger::{ETag, Marker, Record, State, StoreError, after, claim_expired};
use crate::logs::InvocationLog;
use crate::pipeline::{Execution, Invocation, Label, Pipeline, claim};

/// At most this many records per pass; the rest wait for the next timer tick.
const MAX_PER_PASS: usize = 50;
/// A pass stops starting new work after this long, and a rollout visit starts no step and sends
/// no upload request after it (requests already sent are cut 15 s later): what runs on is at
/// most one step's requests, each within the retry budget (at most 25 s), and a few storage
/// writes. The host's functionTimeout is 5 minutes; docs/direct-deployment.md states the bound.
pub const PASS_BUDGET: Duration = Duration::from_secs(150);
/// While paused, due records are looked at again this much later.
const PAUSED_RECHECK: Duration = Duration::from_secs(300);

/// Counts of what a pass did.
#[derive(Debug, Default)]
struct Tally {
    due: usize,
    dispatched: usize,
    retrying: usize,
    failed: usize,
    found_existing: usize,
    stale: usize,
    skipped: usize,
    cleaned: usize,
    rollouts: usize,
    gate_rechecks: usize,
    runs_followed: usize,
    errors: usize,
}

/// Runs one pass and returns its summary (the invocation's `ReturnValue`). Fails only when the
/// outbox itself cannot be listed.
pub async fn reconcile(pipeline: &Pipeline, log: &InvocationLog) -> Result<Value, StoreError> {
    let started = Instant::now();
    let due = pipeline
        .ledger()
        .due(OffsetDateTime::now_utc(), MAX_PER_PASS)
        .await?;
    let mut tally = Tally {
        due: due.len(),
        ..Tally::default()
    };
    if due.is_empty() {
        log.info("Reconcile: nothing due");
    }
    for marker in due {
        if started.elapsed() > PASS_BUDGET {
            log.warn("Reconcile: pass budget used up; the rest waits for the next run");
            break;
        }
        if let Err(e) = visit(pipeline, &marker, started + PASS_BUDGET, &mut tally, log).await {
            tally.errors += 1;
            log.error(format!("Reconcile: {}: {e}", marker.key));
            if let StoreError::Corrupt(why) = &e {
                // Moved aside so it stops blocking every pass; the operator finds it there.
                let _ = pipeline.ledger().quarantine(&marker, why).await;
            }
        }
    }
    Ok(json!({
        "due": tally.due,
        "dispatched": tally.dispatched,
        "retrying": tally.retrying,
        "failed": tally.failed,
        "foundExistingRun": tally.found_existing,
        "stale": tally.stale,
        "skipped": tally.skipped,
        "cleaned": tally.cleaned,
        "rollouts": tally.rollouts,
        "gateRechecks": tally.gate_rechecks,
        "runsFollowed": tally.runs_followed,
        "errors": tally.errors,
    }))
}

async fn visit(
    pipeline: &Pipeline,
    marker: &Marker,
    deadline: Instant,
    tally: &mut Tally,
    log: &InvocationLog,
) -> Result<(), StoreError> {
    let ledger = pipeline.ledger();
    let now = OffsetDateTime::now_utc();
    let Some((mut record, etag)) = ledger.load(&marker.key).await? else {
        ledger.unschedule(marker).await?;
        tally.cleaned += 1;
        return Ok(());
    };

    // A quality gate whose metric lookup failed: run the version through the pipeline again (the
    // gate first, then acting as usual).
    if record.gate_pending && record.state == State::Retrying {
        return recheck_gate(pipeline, marker, record, tally, log).await;
    }

    // Direct deployments advance their rollout, one bounded step at a time.
    if matches!(record.action.as_deref(), Some(ActionPlan::AzureMl(_))) {
        // A rollout that has not started follows the current config (one that has, finishes).
        // One whose first steps run right now (a live claim) is left to them.
        if record.state == State::Queued
            && claim_expired(&record, ledger.options.claim_timeout, now)
            && let Some(why) = rule_no_longer_acts(pipeline, &record)
        {
            return skip_unwanted(pipeline, marker, record, &etag, &why, tally, log).await;
        }
        let deployer = pipeline
            .deployer()
            .map_err(|why| StoreError::Unavailable(why.to_string()))?;
        let record = deployer
            .advance(record, etag, marker, pipeline.paused(), deadline, log)
            .await?;
        tally.rollouts += 1;
        if let Some(rollout) = &record.rollout {
            log.info(format!(
                "{} {}: {} (rollout phase {})",
                record.model,
                record.version,
                record.state,
                rollout.phase.as_str()
            ));
        }
        return Ok(());
    }

    // A dispatched version whose run is followed: one request to GitHub, never a resend.
    if record.state == State::Dispatched && record.run.as_ref().is_some_and(|r| r.is_open()) {
        if let follow::Visited::Followed =
            follow::follow(pipeline, marker, record, etag, log).await?
        {
            tally.runs_followed += 1;
        }
        return Ok(());
    }

    let claim_timeout = ledger.options.claim_timeout;
    let trigger = match record.state {
        State::Retrying if record.next_attempt_at.is_none_or(|t| t <= now) => "reconcile",
        State::Dispatching if claim_expired(&record, claim_timeout, now) => "takeover",
        State::Retrying | State::Dispatching => {
            // Not due yet (an older marker): make sure one marker points at the real due time.
            let real_due = record
                .next_attempt_at
                .or_else(|| {
                    record
                        .claim
                        .as_ref()
                        .map(|c| after(c.claimed_at, claim_timeout))
                })
                .unwrap_or(now);
            ledger.schedule(&record.key, real_due).await?;
            ledger.unschedule(marker).await?;
            return Ok(());
        }
        _ => {
            ledger.unschedule(marker).await?;
            tally.cleaned += 1;
            return Ok(());
        }
    };

    if pipeline.paused() {
        log.info(format!(
            "{} {}: AUTODEPLOY_PAUSED is set; left for a later pass",
            record.model, record.version
        ));
        ledger
            .schedule(&record.key, after(now, PAUSED_RECHECK))
            .await?;
        ledger.unschedule(marker).await?;
        return Ok(());
    }

    // The config may have changed since the record was made: only send what a rule still wants.
    if let Some(why) = rule_no_longer_acts(pipeline, &record) {
        return skip_unwanted(pipeline, marker, record, &etag, &why, tally, log).await;
    }

    // A newer version acted on meanwhile: sending this one now would roll the model back.
    if let (Some(rule), Some(time)) = (
        &record.rule,
        record.event_time.as_deref().and_then(parse_time),
    ) && let Some((newer, newer_time)) = ledger
        .newer_version_acted(&record.workspace, rule, &record.model, Some(time))
        .await?
    {
        let why = format!(
            "stale: version {newer} (event time {newer_time}) was acted on meanwhile; this older version is not sent"
        );
        if settle(
            pipeline,
            &mut record,
            &etag,
            marker,
            State::Stale,
            &why,
            log,
        )
        .await?
        {
            tally.stale += 1;
        }
        return Ok(());
    }

    // Claim it (ETag): two passes, or a pass and a redelivery, never both send.
    let attempt_id = uuid::Uuid::new_v4().to_string();
    let event_id = record.event_ids.first().cloned().unwrap_or_default();
    let since = record
        .attempts
        .last()
        .map(|a| a.started_at)
        .unwrap_or(record.first_received);
    claim(&mut record, &attempt_id, trigger, &event_id, now);
    let claim_marker = ledger
        .schedule(&record.key, after(now, claim_timeout))
        .await?;
    let etag = match ledger.save(&record, &etag).await {
        Ok(etag) => etag,
        Err(StoreError::Conflict) => {
            ledger.unschedule(&claim_marker).await?;
            return Ok(());
        }
        Err(e) => {
            let _ = ledger.unschedule(&claim_marker).await;
            return Err(e);
        }
    };
    ledger.unschedule(marker).await?;

    // The previous attempt may have reached GitHub (a crash, or a timeout after GitHub accepted):
    // a workflow run that carries the event id is recorded instead of sending again.
    if let Some(plan) = record.action.clone() {
        match pipeline
            .github()
            .find_existing_run(&plan, &record.event_ids, since, log)
            .await
        {
            Ok(Some((run_url, run_id))) => {
                if let Some(attempt) = record.attempt_mut(&attempt_id) {
                    attempt.finished_at = Some(now);
                    attempt.outcome = "found_existing_run".into();
                    attempt.run_url = Some(run_url.clone());
                }
                record.claim = None;
                record.transition(
                    State::Dispatched,
                    format!("found the run a previous attempt started: {run_url}"),
                    now,
                );
                // Followed from here like any dispatched run (the claim marker, kept, is the
                // next visit).
                let follow = match plan.as_ref() {
                    ActionPlan::Github(github) if github.follow.enabled => Some(github.follow),
                    _ => None,
                };
                if let Some(follow) = follow {
                    record.run = Some(Box::new(RunState::start(
                        run_id,
                        Some(run_url.clone()),
                        now,
                        follow.hours,
                    )));
                }
                if save_or_skip(ledger.save(&record, &etag).await)? {
                    if record.run.is_none() {
                        ledger.unschedule(&claim_marker).await?;
                    }
                    log.info(format!(
                        "{} {}: found existing run {run_url}; not sending again",
                        record.model, record.version
                    ));
                    tally.found_existing += 1;
                }
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => log.warn(format!(
                "could not look for an existing run ({e}); sending again"
            )),
        }
    }

    let give_up_at = after(
        record.acting_since.unwrap_or(record.first_received),
        ledger.options.give_up_after,
    );
    if give_up_at <= now {
        let why = format!(
            "gave up: still not dispatched {} after acting began (AUTODEPLOY_GIVE_UP_AFTER)",
            humanize(ledger.options.give_up_after)
        );
        if let Some(attempt) = record.attempt_mut(&attempt_id) {
            attempt.finished_at = Some(now);
            attempt.outcome = "gave_up".into();
        }
        let settled = settle(
            pipeline,
            &mut record,
            &etag,
            &claim_marker,
            State::Failed,
            &why,
            log,
        )
        .await?;
        if settled {
            tally.failed += 1;
        }
        return Ok(());
    }

    log.info(format!(
        "Reconcile: {} {} ({trigger}, attempt {})",
        record.model,
        record.version,
        record.attempts.len()
    ));
    let (model, version, key) = (
        record.model.clone(),
        record.version.clone(),
        record.key.clone(),
    );
    match pipeline
        .dispatcher()
        .send_claimed(record, etag, claim_marker, log)
        .await?
    {
        Sent::Dispatched(outcome) | Sent::Unrecorded(outcome) => {
            log.info(format!(
                "{model} {version}: dispatched (HTTP {}){}",
                outcome.status,
                outcome
                    .run_url
                    .map(|u| format!("; run {u}"))
                    .unwrap_or_default()
            ));
            pipeline
                .notifier()
                .announce(ledger, &key, "dispatched", log)
                .await;
            tally.dispatched += 1;
        }
        Sent::Retrying { at, error } => {
            log.warn(format!(
                "{model} {version}: {error}; next try at {}",
                rfc3339(at)
            ));
            tally.retrying += 1;
        }
        Sent::GaveUp(error) => {
            log.warn(format!("{model} {version}: gave up: {error}"));
            pipeline
                .notifier()
                .announce(ledger, &key, "failed", log)
                .await;
            tally.failed += 1;
        }
    }
    Ok(())
}

async fn recheck_gate(
    pipeline: &Pipeline,
    marker: &Marker,
    mut record: Record,
    tally: &mut Tally,
    log: &InvocationLog,
) -> Result<(), StoreError> {
    let ledger = pipeline.ledger();
    let now = OffsetDateTime::now_utc();
    if let Some(due) = record.next_attempt_at.filter(|t| *t > now) {
        ledger.schedule(&record.key, due).await?;
        ledger.unschedule(marker).await?;
        return Ok(());
    }
    if pipeline.paused() {
        ledger
            .schedule(&record.key, after(now, PAUSED_RECHECK))
            .await?;
        ledger.unschedule(marker).await?;
        return Ok(());
    }
    if after(record.first_received, ledger.options.give_up_after) <= now {
        let etag = match ledger.load(&record.key).await? {
            Some((fresh, etag)) => {
                record = fresh;
                etag
            }
            None => return Ok(()),
        };
        record.gate_pending = false;
        record.next_attempt_at = None;
        record.transition(
            State::Failed,
            "gave up: the quality gate's metric could not be read (AUTODEPLOY_GIVE_UP_AFTER)",
            now,
        );
        if save_or_skip(ledger.save(&record, &etag).await)? {
            ledger.unschedule(marker).await?;
            pipeline
                .notifier()
                .announce(ledger, &record.key, "failed", log)
                .await;
            tally.failed += 1;
        }
        return Ok(());
    }
    let event = json!({
        "id": record.event_ids.first().cloned().unwrap_or_else(|| format!("reconcile-{}", record.key)),
        "topic": record.workspace,
        "subject": format!("models/{}:{}", record.model, record.version),
        "eventType": crate::event::MODEL_REGISTERED,
        "eventTime": record.event_time,
        "data": {
            "modelName": record.model,
            "modelVersion": record.version,
            "modelTags": record.model_tags,
            "modelProperties": record.model_properties,
        },
    });
    let invocation = Invocation {
        id: "reconcile".into(),
        execution: Execution::Send,
        trigger: "reconcile",
        force: record.forced,
    };
    log.info(format!(
        "{} {}: running the quality gate again",
        record.model, record.version
    ));
    match pipeline.handle(&event, &invocation, log).await {
        Ok(handled) => {
            ledger.unschedule(marker).await?;
            let decision = handled.outcome.decision;
            log.info(format!(
                "{} {}: {}",
                record.model,
                record.version,
                decision.as_str()
            ));
            match decision {
                Label::State(State::Dispatched) => tally.dispatched += 1,
                Label::State(State::Retrying) => tally.retrying += 1,
                _ => tally.gate_rechecks += 1,
            }
            Ok(())
        }
        // The marker stays: the next pass tries again.
        Err(e) => Err(StoreError::Unavailable(e.to_string())),
    }
}

/// The config changed since the record was made and no rule sends it now: `skipped`.
async fn skip_unwanted(
    pipeline: &Pipeline,
    marker: &Marker,
    mut record: Record,
    etag: &ETag,
    why: &str,
    tally: &mut Tally,
    log: &InvocationLog,
) -> Result<(), StoreError> {
    if settle(
        pipeline,
        &mut record,
        etag,
        marker,
        State::Skipped,
        why,
        log,
    )
    .await?
    {
        tally.skipped += 1;
    }
    Ok(())
}

/// Ends a visit with the record `state` for `why`: no claim, nothing due, the visit's marker gone;
/// logged, and announced when stale or failed. False when someone else changed the record
/// meanwhile (it is theirs this pass).
async fn settle(
    pipeline: &Pipeline,
    record: &mut Record,
    etag: &ETag,
    marker: &Marker,
    state: State,
    why: &str,
    log: &InvocationLog,
) -> Result<bool, StoreError> {
    let ledger = pipeline.ledger();
    record.claim = None;
    record.next_attempt_at = None;
    record.transition(state, why, OffsetDateTime::now_utc());
    if !save_or_skip(ledger.save(record, etag).await)? {
        return Ok(false);
    }
    ledger.unschedule(marker).await?;
    let line = format!("{} {}: {why}", record.model, record.version);
    if matches!(state, State::Stale | State::Failed) {
        log.warn(line);
        pipeline
            .notifier()
            .announce(ledger, &record.key, state.as_str(), log)
            .await;
    } else {
        log.info(line);
    }
    Ok(true)
}

/// A conflict means someone else changed the record meanwhile: skip it this pass.
fn save_or_skip<T>(result: Result<T, StoreError>) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why the record's rule no longer sends anything, if it does not.
fn rule_no_longer_acts(pipeline: &Pipeline, record: &Record) -> Option<String> {
    let config = pipeline.config()?;
    let rule_name = record.rule.as_deref()?;
    match config.rules.iter().find(|r| r.name.as_ref() == rule_name) {
        None => Some(format!(
            "rule {rule_name} is no longer in the config; nothing sent"
        )),
        Some(rule) if rule.mode == Mode::Observe => Some(format!(
            "rule {rule_name} is now in observe mode; nothing sent"
        )),
        Some(rule)
            if matches!(record.action.as_deref(), Some(ActionPlan::Github(_)))
                != matches!(rule.action, RuleAction::Github(_)) =>
        {
            Some(format!(
                "rule {rule_name} now has a different action; nothing sent"
            ))
        }
        Some(_) => None,
    }
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
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
