//! `rollback`: restores an endpoint's traffic to what it was before the last rollout, while the
//! previous deployments are retained.

use std::io::Write;

use crate::actions::ActionPlan;
use crate::actions::azureml::deploy::Deployer;
use crate::actions::azureml::rollout::Phase;
use crate::config::{Config, RuleAction};
use crate::event::WorkspaceId;
use crate::http::Http;
use crate::ledger::State;
use crate::startup::Settings;
use crate::startup::{LedgerChoice, build_pipeline};

use super::config_arg::ConfigArg;
use super::errors::{CliError, LedgerCommandError};

/// The rollout's failure after a manual rollback.
const ROLLED_BACK_BY_HAND: &str = "rolled back by hand (aml-autodeploy rollback)";

/// `rollback ENDPOINT [--workspace ID] [--config F]`.
#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// The online endpoint (or batch endpoint: its previous default becomes the default again).
    endpoint: String,
    /// Workspace ARM id (default: from the config rule that deploys to ENDPOINT).
    #[arg(long)]
    workspace: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
}

/// Rolls back the endpoint `args` names, on stdout.
pub async fn run(args: RollbackArgs, settings: Settings, http: &Http) -> Result<bool, CliError> {
    let config_path = args.config.resolve(&settings);
    let endpoint = args.endpoint;
    let workspace = match args.workspace {
        Some(ws) => ws,
        None => {
            let config = Config::load(&config_path).map_err(|e| CliError::Setup(e.to_string()))?;
            config
                .rules
                .iter()
                .find_map(|rule| match &rule.action {
                    RuleAction::AzureMl(a) if a.endpoint == endpoint => a
                        .target_workspace
                        .clone()
                        .or_else(|| config.workspace.clone())
                        .map(|w| w.to_string()),
                    _ => None,
                })
                .ok_or_else(|| {
                    CliError::Setup(format!(
                        "pass --workspace: no rule in {} deploys to {endpoint} with a known workspace",
                        config_path.display()
                    ))
                })?
        }
    };
    let workspace =
        WorkspaceId::parse(&workspace).map_err(|e| CliError::Setup(format!("--workspace {e}")))?;
    let pipeline = build_pipeline(&settings, &config_path, LedgerChoice::Configured, http);
    let deployer = pipeline
        .deployer()
        .map_err(|e| CliError::Setup(e.to_string()))?;
    rollback(
        deployer,
        &workspace,
        &endpoint,
        &mut super::terminal::Visible::new(std::io::stdout()),
    )
    .await
    .map_err(CliError::Rollback)
}

/// `rollback ENDPOINT`: restores the traffic map from before the last rollout this program
/// promoted on the endpoint, while its previous deployments are still retained.
pub async fn rollback(
    deployer: &Deployer,
    workspace: &WorkspaceId,
    endpoint: &str,
    out: &mut dyn Write,
) -> Result<bool, LedgerCommandError> {
    let engine = &deployer.engine;
    let lock = engine.lock(workspace.as_ref(), endpoint).await?;
    if let Some(active) = &lock.active {
        writeln!(
            out,
            "a rollout is in progress on {endpoint} ({active}); it rolls back by itself if it fails"
        )?;
        return Ok(false);
    }
    let Some(key) = lock.last_promoted else {
        writeln!(
            out,
            "nothing to roll back on {endpoint}: no rollout of aml-autodeploy was promoted there"
        )?;
        return Ok(false);
    };
    let Some((mut record, etag)) = deployer.ledger.load(&key).await? else {
        writeln!(out, "the record {key} is missing")?;
        return Ok(false);
    };
    let Some(mut rollout) = record.rollout.clone() else {
        writeln!(out, "{key} has no rollout state")?;
        return Ok(false);
    };
    if rollout.phase != Phase::Retaining {
        writeln!(
            out,
            "cannot roll back {} {} on {endpoint}: it is in phase {} and the previous deployments ({}) are no longer retained",
            record.model,
            record.version,
            rollout.phase.as_str(),
            rollout
                .previous_traffic
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        return Ok(false);
    }
    // Hold the endpoint so no rollout starts meanwhile, and mark the record first so Reconcile
    // does not delete the previous deployments while their traffic comes back.
    if !engine
        .hold_for_rollback(workspace.as_ref(), endpoint, &key)
        .await?
    {
        writeln!(
            out,
            "a rollout just started on {endpoint}; try again when it is finished"
        )?;
        return Ok(false);
    }
    if matches!(record.action.as_deref(), Some(ActionPlan::AzureMl(plan)) if plan.batch.is_some()) {
        return super::rollback_batch::rollback_default(
            deployer, workspace, endpoint, record, etag, rollout, out,
        )
        .await;
    }
    writeln!(
        out,
        "rolling back {endpoint}: {} {} ({}) → previous traffic {:?}",
        record.model, record.version, rollout.deployment, rollout.previous_traffic
    )?;
    // Its logs first, while it still serves the traffic the rollback takes away (bounded; a
    // failure to read them is noted and changes nothing).
    let log = crate::logs::InvocationLog::new();
    let logs = engine
        .read_logs(
            workspace.as_ref(),
            endpoint,
            &rollout.deployment,
            ROLLED_BACK_BY_HAND,
            &log,
        )
        .await;
    for line in logs.last_lines(5) {
        writeln!(out, "  {line}")?;
    }
    let now = time::OffsetDateTime::now_utc();
    let before = rollout.clone();
    rollout.logs = Some(logs);
    rollout.cleanup.clear();
    rollout.hold_until = None;
    rollout.phase = Phase::RolledBack;
    rollout.failure = Some(ROLLED_BACK_BY_HAND.into());
    rollout.next_step = "restoring the previous traffic (manual rollback)".into();
    record.rollout = Some(rollout.clone());
    record.next_attempt_at = None;
    record.transition(State::RolledBack, "manual rollback started", now);
    let etag = match deployer.ledger.save(&record, &etag).await {
        Ok(etag) => etag,
        Err(e) => {
            let _ = engine
                .release_rollback(workspace.as_ref(), endpoint, &key)
                .await;
            return Err(e.into());
        }
    };
    let restored = async {
        let operation = engine
            .put_traffic(
                workspace,
                endpoint,
                &before.previous_traffic,
                &before.previous_mirror,
            )
            .await?;
        engine
            .arm()
            .wait(operation, std::time::Duration::from_secs(600))
            .await
    }
    .await;
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
    match restored {
        Ok(_) => {
            rollout.traffic = before.previous_traffic.clone();
            rollout.mirror = before.previous_mirror.clone();
            rollout.next_step = format!(
                "nothing; {} is kept at 0% for inspection",
                rollout.deployment
            );
            record.rollout = Some(rollout.clone());
            record.transition(
                State::RolledBack,
                "manual rollback: previous traffic restored",
                now,
            );
            deployer.ledger.save(&record, &etag).await?;
            writeln!(
                out,
                "done: traffic restored; {} recorded as rolled_back",
                record.key
            )?;
            Ok(true)
        }
        Err(e) => {
            // Nothing changed on the endpoint: put the record back as it was (with the logs read).
            let mut before = before;
            before.logs = rollout.logs.take();
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
