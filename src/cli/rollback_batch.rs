//! `rollback ENDPOINT` on a batch endpoint: the previous default becomes the default again (GET
//! the endpoint, PUT it back with `defaults.deploymentName`, as az ml does), while the previous
//! deployment is retained. The record says what is being restored before the PUT.

use std::io::Write;
use std::time::Duration;

use crate::actions::azureml::batch::wire::{default_deployment, default_switch_body};
use crate::actions::azureml::deploy::Deployer;
use crate::actions::azureml::rollout::{Phase, RolloutState};
use crate::azure::arm::ArmError;
use crate::event::WorkspaceId;
use crate::ledger::{ETag, Record, State};

use super::errors::LedgerCommandError;

/// The longest the default switch may take before `rollback` reports it as failed.
const SWITCH_WAIT: Duration = Duration::from_secs(600);

/// Makes the previous default of `endpoint` the default again; `record` is the last promoted
/// rollout there, in `retaining` (checked by the caller, who holds the endpoint's lock).
pub(super) async fn rollback_default(
    deployer: &Deployer,
    workspace: &WorkspaceId,
    endpoint: &str,
    mut record: Record,
    etag: ETag,
    mut rollout: Box<RolloutState>,
    out: &mut dyn Write,
) -> Result<bool, LedgerCommandError> {
    let engine = &deployer.engine;
    let Some(previous) = rollout
        .batch
        .as_ref()
        .and_then(|b| b.previous_default.clone())
    else {
        let _ = engine
            .release_rollback(workspace.as_ref(), endpoint, &record.key)
            .await;
        writeln!(
            out,
            "nothing to roll back on {endpoint}: {} had no default before {}",
            endpoint, rollout.deployment
        )?;
        return Ok(false);
    };
    writeln!(
        out,
        "rolling back batch endpoint {endpoint}: {} {} ({}) → previous default {previous}",
        record.model, record.version, rollout.deployment
    )?;
    let before = rollout.clone();
    let now = time::OffsetDateTime::now_utc();
    // Written ahead: Reconcile must not delete the previous deployment while it becomes the
    // default again, and a crash leaves the record saying what was being restored.
    rollout.cleanup.clear();
    rollout.hold_until = None;
    rollout.phase = Phase::RolledBack;
    rollout.failure = Some("rolled back by hand (aml-autodeploy rollback)".into());
    rollout.next_step = format!("making {previous} the default again (manual rollback)");
    if let Some(batch) = rollout.batch.as_mut() {
        batch.switching_to = Some(previous.clone());
    }
    record.rollout = Some(rollout.clone());
    record.next_attempt_at = None;
    record.transition(State::RolledBack, "manual rollback started", now);
    let etag = match deployer.ledger.save(&record, &etag).await {
        Ok(etag) => etag,
        Err(e) => {
            let _ = engine
                .release_rollback(workspace.as_ref(), endpoint, &record.key)
                .await;
            return Err(e.into());
        }
    };

    let switched = async {
        let arm = engine.arm();
        let current = arm
            .batch_endpoint(workspace, endpoint)
            .await?
            .ok_or_else(|| ArmError::Http {
                method: "GET".into(),
                path: crate::azure::arm::ArmClient::batch_endpoint_id(workspace, endpoint),
                status: 404,
                code: "NotFound".into(),
                message: format!("batch endpoint {endpoint} does not exist"),
            })?;
        if default_deployment(&current) == Some(previous.as_str()) {
            return Ok(());
        }
        let location = arm.workspace(workspace).await?.location;
        let operation = arm
            .begin_put_batch_endpoint(
                workspace,
                endpoint,
                &default_switch_body(&current, &previous, &location),
            )
            .await?;
        arm.wait(operation, SWITCH_WAIT).await?;
        let shown = arm
            .batch_endpoint(workspace, endpoint)
            .await?
            .and_then(|e| default_deployment(&e).map(str::to_string));
        if shown.as_deref() == Some(previous.as_str()) {
            Ok(())
        } else {
            Err(ArmError::Unavailable(format!(
                "the endpoint shows default {} instead of {previous}",
                shown.as_deref().unwrap_or("none")
            )))
        }
    }
    .await;
    let key = record.key.clone();
    if let Some(next) = engine
        .release_rollback(workspace.as_ref(), endpoint, &key)
        .await?
    {
        deployer
            .ledger
            .schedule(&next, time::OffsetDateTime::now_utc())
            .await?;
    }
    let now = time::OffsetDateTime::now_utc();
    match switched {
        Ok(()) => {
            rollout.traffic = [(previous.clone(), 100)].into_iter().collect();
            if let Some(batch) = rollout.batch.as_mut() {
                batch.switching_to = None;
            }
            rollout.next_step = format!("nothing; {} is kept for inspection", rollout.deployment);
            record.rollout = Some(rollout);
            record.transition(
                State::RolledBack,
                format!("manual rollback: {previous} is the default again"),
                now,
            );
            deployer.ledger.save(&record, &etag).await?;
            writeln!(
                out,
                "done: {previous} is the default again; {key} recorded as rolled_back"
            )?;
            Ok(true)
        }
        Err(e) => {
            // The endpoint's default did not change: put the record back as it was.
            record.rollout = Some(before);
            record.transition(
                State::Succeeded,
                format!("manual rollback failed: {e}"),
                now,
            );
            deployer.ledger.save(&record, &etag).await?;
            writeln!(out, "rollback failed: {e}")?;
            Ok(false)
        }
    }
}
