//! A `Reconcile` visit to a dispatched version whose run is followed: at most one request to
//! GitHub for it per pass, under a claim on the record (several instances may run passes), then
//! the outcome recorded and, when the run ended, announced (`run_succeeded`, `run_failed`).
//! Nothing is ever sent again: the version stays `dispatched`.

use time::OffsetDateTime;

use crate::actions::ActionPlan;
use crate::actions::github::follow::progress::{apply, end, overdue};
use crate::ledger::record::Claim;
use crate::ledger::{ETag, Edit, Marker, Record, StoreError, Written, after};
use crate::logs::InvocationLog;
use crate::pipeline::Pipeline;

/// What a visit did, for the pass's summary.
pub(super) enum Visited {
    /// A request was sent and its outcome recorded.
    Followed,
    /// Not due, claimed by another pass, or nothing to follow.
    Skipped,
}

/// Follows the run of `record` (state `dispatched`, `run` open) one step.
pub(super) async fn follow(
    pipeline: &Pipeline,
    marker: &Marker,
    mut record: Record,
    etag: ETag,
    log: &InvocationLog,
) -> Result<Visited, StoreError> {
    let ledger = pipeline.ledger();
    let now = OffsetDateTime::now_utc();
    let claim_timeout = ledger.options.claim_timeout;
    let (Some(run), Some(ActionPlan::Github(plan))) = (
        record.run.as_deref().cloned(),
        record.action.as_deref().cloned(),
    ) else {
        ledger.unschedule(marker).await?;
        return Ok(Visited::Skipped);
    };
    // Another pass is reading it: back when its claim expires, should that pass die (its own
    // takeover marker says the same; markers are only hints).
    if let Some(claim) = &run.claim
        && after(claim.claimed_at, claim_timeout) > now
    {
        ledger
            .schedule(&record.key, after(claim.claimed_at, claim_timeout))
            .await?;
        ledger.unschedule(marker).await?;
        return Ok(Visited::Skipped);
    }
    if let Some(at) = run.next_check_at.filter(|at| *at > now) {
        ledger.schedule(&record.key, at).await?;
        ledger.unschedule(marker).await?;
        return Ok(Visited::Skipped);
    }
    // Past a bound: ended without asking GitHub.
    if let Some((why, configuration)) = overdue(&run, now) {
        let mut ended = run.clone();
        end(&mut ended, why.clone(), configuration, now);
        ended.claim = None;
        record.run = Some(Box::new(ended));
        match ledger.save(&record, &etag).await {
            Ok(_) => {
                log.warn(format!("{} {}: {why}", record.model, record.version));
                ledger.unschedule(marker).await?;
            }
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
        return Ok(Visited::Skipped);
    }

    // Claim it (ETag), with a takeover marker written first.
    let ours = uuid::Uuid::new_v4().to_string();
    let takeover = ledger
        .schedule(&record.key, after(now, claim_timeout))
        .await?;
    let mut claimed = run.clone();
    claimed.claim = Some(Claim {
        attempt_id: ours.clone(),
        claimed_at: now,
    });
    record.run = Some(Box::new(claimed));
    let etag = match ledger.save(&record, &etag).await {
        Ok(etag) => etag,
        Err(e) => {
            let _ = ledger.unschedule(&takeover).await;
            return match e {
                StoreError::Conflict => Ok(Visited::Skipped),
                e => Err(e),
            };
        }
    };
    ledger.unschedule(marker).await?;

    let seen = pipeline
        .github()
        .check_run(&plan, &run, &record.event_ids, log)
        .await;
    let now = OffsetDateTime::now_utc();
    let backoff = ledger.retry_delay(run.failures + 1);
    let mut updated = run;
    apply(&mut updated, seen, now, backoff);
    updated.claim = None;
    // Write ahead the next visit: due at `next_check_at`, else at the next pass.
    let next = if updated.is_open() {
        Some(
            ledger
                .schedule(&record.key, updated.next_check_at.unwrap_or(now))
                .await?,
        )
    } else {
        None
    };
    let key = record.key.clone();
    let written = ledger
        .update(&key, Some((record, etag)), |stored| {
            let still_ours = stored
                .run
                .as_ref()
                .and_then(|r| r.claim.as_ref())
                .is_some_and(|c| c.attempt_id == ours);
            if !still_ours {
                return Edit::Keep(false);
            }
            stored.run = Some(Box::new(updated.clone()));
            Edit::Save(true)
        })
        .await;
    let stored = match written {
        Ok(Written::Merged {
            value: true,
            record,
            ..
        }) => record,
        Ok(_) => {
            // Taken over meanwhile: the other pass records its own reading.
            if let Some(next) = &next {
                let _ = ledger.unschedule(next).await;
            }
            return Ok(Visited::Skipped);
        }
        // The takeover marker stays: a later pass reads the run again.
        Err(e) => return Err(e),
    };
    ledger.unschedule(&takeover).await?;
    let run = stored.run.as_deref().unwrap_or(&updated);
    let line = format!(
        "{} {}: GitHub run {}: {}",
        stored.model,
        stored.version,
        run.url.as_deref().unwrap_or("(not found yet)"),
        run.describe()
    );
    match (&run.problem, run.is_open()) {
        (Some(problem), true) => log.warn(format!("{line} ({problem}; asking again later)")),
        (_, false) if run.outcome().is_none() => log.warn(line),
        _ => log.info(line),
    }
    if let Some(outcome) = run.outcome() {
        pipeline
            .notifier()
            .announce(ledger, &stored.key, outcome, log)
            .await;
    }
    Ok(Visited::Followed)
}
