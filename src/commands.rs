//! The CLI commands other than `serve`: `replay` and `check-config`.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::azure::arm::ArmClient;
use crate::config::{Config, GithubTarget, Mode, RuleAction};
use crate::event::WorkspaceId;
use crate::host;
use crate::ledger::record::rfc3339;
use crate::ledger::{Ledger, Record, State, StoreError};
use crate::logs::InvocationLog;
use crate::pipeline::{Execution, Invocation, Label, Pipeline};

/// `check-config`: prints every problem (or a summary of the rules) and returns whether the
/// config is valid.
pub fn check_config(path: &Path, out: &mut dyn Write) -> std::io::Result<bool> {
    match Config::load(path) {
        Ok(config) => {
            writeln!(
                out,
                "{}: OK, {} rule(s)",
                path.display(),
                config.rules.len()
            )?;
            if let Some(ws) = &config.workspace {
                writeln!(out, "  only events from workspace {ws}")?;
            }
            for rule in &config.rules {
                let action = match &rule.action {
                    RuleAction::Github(github) => match &github.target {
                        GithubTarget::RepositoryDispatch { event_type } => format!(
                            "repository_dispatch {:?} to {}",
                            event_type.source(),
                            github.repository
                        ),
                        GithubTarget::WorkflowDispatch {
                            workflow, git_ref, ..
                        } => format!(
                            "workflow_dispatch {workflow} on {} in {}",
                            git_ref.source(),
                            github.repository
                        ),
                    },
                    RuleAction::AzureMl(azureml) => format!(
                        "deploy to endpoint {} ({}, {}{})",
                        azureml.endpoint,
                        azureml.deployment_file.display(),
                        azureml.rollout.strategy.as_str(),
                        if azureml.smoke_test.is_some() {
                            ", smoke test"
                        } else {
                            ""
                        }
                    ),
                };
                let tags = if rule.tags.is_empty() {
                    String::new()
                } else {
                    let pairs: Vec<String> =
                        rule.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!(" with tags {}", pairs.join(", "))
                };
                let mode = if rule.mode == Mode::Observe {
                    " [observe]"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "  {}{mode}: models {}{tags} → {action}",
                    rule.name,
                    rule.model_patterns.join(", ")
                )?;
            }
            Ok(true)
        }
        Err(error) => {
            let lines = error.lines();
            for line in &lines {
                writeln!(out, "{line}")?;
            }
            writeln!(out, "{} problem(s) found", lines.len())?;
            Ok(false)
        }
    }
}

/// `check-config --list-files`: the files the config refers to, relative to its folder, one per
/// line. Fails (listing the problems) when the config is invalid or refers to a file outside its
/// folder, which a package could not carry.
pub fn list_config_files(path: &Path, out: &mut dyn Write) -> std::io::Result<bool> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            for line in error.lines() {
                writeln!(out, "{line}")?;
            }
            return Ok(false);
        }
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let mut files = Vec::new();
    for rule in &config.rules {
        if let RuleAction::AzureMl(azureml) = &rule.action {
            files.push(azureml.deployment_file.clone());
            if let Some(smoke) = &azureml.smoke_test {
                files.push(smoke.request_file.clone());
            }
        }
    }
    files.sort();
    files.dedup();
    let mut ok = true;
    for file in files {
        match file.strip_prefix(base) {
            Ok(relative) if !relative.is_absolute() && !relative.starts_with("..") => {
                writeln!(out, "{}", relative.display())?;
            }
            _ => {
                eprintln!(
                    "{}: {} is outside the config file's folder; use a path relative to it so the package can carry it",
                    path.display(),
                    file.display()
                );
                ok = false;
            }
        }
    }
    Ok(ok)
}

/// The events in a replay file: a host envelope, an Event Grid array, a CloudEvents batch, a single
/// event (either schema), or an Event Grid dead-letter blob (an event with extra fields).
pub fn events_in_file(text: &str) -> Result<Vec<Value>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if host::is_envelope(&value)
        && let Value::Object(object) = value
    {
        return host::take_binding(object)
            .map(|event| vec![event])
            .ok_or_else(|| "a host envelope without a Data.eventGridEvent value".to_string());
    }
    match value {
        Value::Array(items) if items.is_empty() => Err("an empty array: no events".into()),
        Value::Array(items) => Ok(items),
        other => Ok(vec![other]),
    }
}

/// `replay`: runs each event in the file through the pipeline. Returns whether every event was
/// handled (a failed action or a broken config make it `false`).
pub async fn replay(
    pipeline: &Pipeline,
    text: &str,
    execution: Execution,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let events = match events_in_file(text) {
        Ok(events) => events,
        Err(e) => {
            writeln!(out, "cannot replay: {e}")?;
            return Ok(false);
        }
    };
    let mut all_ok = true;
    for (i, event) in events.iter().enumerate() {
        writeln!(out, "── event {} of {} ──", i + 1, events.len())?;
        let log = InvocationLog::new();
        let invocation = Invocation {
            id: format!("replay-{}", i + 1),
            execution,
            trigger: "replay",
            force: false,
        };
        let result = pipeline.handle(event, &invocation, &log).await;
        all_ok &= print_outcome(&log, result, execution, out)?;
    }
    Ok(all_ok)
}

/// Prints one handled event: its log lines, the decision, and the request (dry runs).
fn print_outcome(
    log: &InvocationLog,
    result: Result<crate::pipeline::Handled, crate::pipeline::PipelineError>,
    execution: Execution,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let mut all_ok = true;
    {
        for line in log.lines() {
            writeln!(out, "  {line}")?;
        }
        match result {
            Ok(mut handled) => {
                if execution == Execution::Send
                    && matches!(
                        handled.outcome.decision,
                        Label::State(State::Retrying | State::Failed | State::RolledBack)
                    )
                {
                    // Recorded, but not done: the caller asked to act and it did not happen.
                    all_ok = false;
                }
                // The request is printed in full below; keep the decision short.
                handled.outcome.request = None;
                writeln!(
                    out,
                    "ReturnValue: {}",
                    serde_json::to_string_pretty(&handled.outcome).unwrap_or_default()
                )?;
                if let Some(request) = handled.prepared {
                    writeln!(
                        out,
                        "Request {}:",
                        if execution == Execution::DryRun {
                            "that --execute would send"
                        } else {
                            "not sent"
                        }
                    )?;
                    write!(out, "{request}")?;
                }
            }
            Err(error) => {
                all_ok = false;
                writeln!(out, "FAILED: {error}")?;
            }
        }
    }
    Ok(all_ok)
}

/// How `evaluate` runs.
#[derive(Debug, Clone, Copy)]
pub struct EvaluateMode {
    /// Send (`--execute`) or dry run.
    pub execution: Execution,
    /// `--force`.
    pub force: bool,
}

/// `evaluate`: reads each model version from ARM (tags, properties, registration time), builds
/// the event Azure ML would have sent, and runs it through the pipeline, recorded as manually
/// triggered. Returns whether every version was handled.
pub async fn evaluate(
    pipeline: &Pipeline,
    arm: &ArmClient,
    workspace: &WorkspaceId,
    targets: &[String],
    mode: EvaluateMode,
    ledger_for_dry_run: Option<&Ledger>,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let EvaluateMode { execution, force } = mode;
    let mut all_ok = true;
    for target in targets {
        writeln!(out, "── {target} ──")?;
        let Some((name, version)) = target.rsplit_once(':') else {
            writeln!(out, "FAILED: {target:?} is not MODEL:VERSION")?;
            all_ok = false;
            continue;
        };
        let model = match arm.model_version(workspace, name, version).await {
            Ok(model) => model,
            Err(e) => {
                writeln!(
                    out,
                    "FAILED: cannot read model {name} version {version} from {workspace}: {e}"
                )?;
                all_ok = false;
                continue;
            }
        };
        if let Some(ledger) = ledger_for_dry_run {
            let key = crate::ledger::record_key(workspace.as_ref(), name, version);
            match ledger.load(&key).await {
                Ok(Some((record, _))) => writeln!(
                    out,
                    "  the ledger has this version as {} ({}); --execute would {}",
                    record.state,
                    record.last_outcome(),
                    if record.state.open_to_action() {
                        "act on it"
                    } else {
                        "report it as already handled"
                    }
                )?,
                Ok(None) => writeln!(out, "  the ledger has no record of this version yet")?,
                Err(e) => writeln!(out, "  (the ledger could not be read: {e})")?,
            }
        }
        let event_time = model
            .created_at
            .clone()
            .unwrap_or_else(|| rfc3339(time::OffsetDateTime::now_utc()));
        let event = serde_json::json!({
            "id": format!("evaluate-{}", uuid::Uuid::new_v4()),
            "topic": workspace.as_ref(),
            "subject": format!("models/{name}:{version}"),
            "eventType": crate::event::MODEL_REGISTERED,
            "eventTime": event_time,
            "data": {
                "modelName": name,
                "modelVersion": version,
                "modelTags": model.tags,
                "modelProperties": model.properties,
            },
            "dataVersion": "2",
            "metadataVersion": "1",
        });
        let log = InvocationLog::new();
        log.info(format!(
            "manually triggered: model {name} version {version} read from {}",
            model.id
        ));
        let invocation = Invocation {
            id: "evaluate".into(),
            execution,
            trigger: "manual",
            force,
        };
        let result = pipeline.handle(&event, &invocation, &log).await;
        all_ok &= print_outcome(&log, result, execution, out)?;
    }
    Ok(all_ok)
}

/// `status`: what the ledger knows. No target: the most recent records; `MODEL`: that model's
/// versions; `MODEL:VERSION`: the whole record(s).
pub async fn status(
    ledger: &Ledger,
    target: Option<&str>,
    as_json: bool,
    limit: usize,
    out: &mut dyn Write,
) -> Result<bool, StatusError> {
    let (records, whole) = match target {
        None => (ledger.recent(limit).await?, false),
        Some(target) => match target.rsplit_once(':') {
            Some((model, version)) => (ledger.version_records(model, version).await?, true),
            None => (ledger.model_history(target, limit).await?, false),
        },
    };
    if as_json || whole {
        let value = if whole && records.len() == 1 {
            serde_json::to_value(&records[0]).unwrap_or_default()
        } else {
            serde_json::to_value(&records).unwrap_or_default()
        };
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )?;
        if whole && records.is_empty() {
            writeln!(out, "no record for {}", target.unwrap_or_default())?;
            return Ok(false);
        }
        return Ok(true);
    }
    if records.is_empty() {
        writeln!(out, "no records in {}", ledger.describe())?;
        return Ok(true);
    }
    print_table(&records, out)?;
    Ok(true)
}

fn print_table(records: &[Record], out: &mut dyn Write) -> std::io::Result<()> {
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            let when = r.history.last().map(|t| t.at).unwrap_or(r.last_received);
            let mut outcome = r.last_outcome();
            if outcome.is_empty() {
                outcome = r.history.last().map(|t| t.note.clone()).unwrap_or_default();
            }
            if let Some(rollout) = &r.rollout {
                let traffic = if rollout.traffic.is_empty() {
                    "unchanged".to_string()
                } else {
                    rollout
                        .traffic
                        .iter()
                        .map(|(k, v)| format!("{k}={v}%"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                outcome = format!(
                    "phase {}; set traffic {traffic}; next: {}",
                    rollout.phase.as_str(),
                    rollout.next_step
                );
            } else if let Some(next) = r.next_attempt_at {
                outcome = format!("{outcome}; next try {}", rfc3339(next));
            }
            if outcome.chars().count() > 160 {
                outcome = outcome.chars().take(159).collect::<String>() + "…";
            }
            [
                r.model.clone(),
                r.version.clone(),
                r.state.to_string(),
                r.rule.clone().unwrap_or_else(|| "-".into()),
                rfc3339(when),
                outcome,
            ]
        })
        .collect();
    let headers = ["MODEL", "VERSION", "STATE", "RULE", "WHEN", "OUTCOME"];
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(5) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < 5 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    c.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(headers.to_vec()).trim_end())?;
    for row in &rows {
        writeln!(
            out,
            "{}",
            line(row.iter().map(String::as_str).collect()).trim_end()
        )?;
    }
    Ok(())
}

/// Why `status` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The ledger could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `rollback ENDPOINT`: restores the traffic map from before the last rollout this program
/// promoted on the endpoint, while its previous deployments are still retained.
pub async fn rollback(
    deployer: &crate::actions::azureml::deploy::Deployer,
    workspace: &WorkspaceId,
    endpoint: &str,
    out: &mut dyn Write,
) -> Result<bool, StatusError> {
    use crate::actions::azureml::rollout::Phase;
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
    writeln!(
        out,
        "rolling back {endpoint}: {} {} ({}) → previous traffic {:?}",
        record.model, record.version, rollout.deployment, rollout.previous_traffic
    )?;
    let now = time::OffsetDateTime::now_utc();
    let before = rollout.clone();
    rollout.cleanup.clear();
    rollout.hold_until = None;
    rollout.phase = Phase::RolledBack;
    rollout.failure = Some("rolled back by hand (aml-autodeploy rollback)".into());
    rollout.next_step = "restoring the previous traffic (manual rollback)".into();
    record.rollout = Some(rollout.clone());
    record.next_attempt_at = None;
    record.transition(
        crate::ledger::State::RolledBack,
        "manual rollback started",
        now,
    );
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
                crate::ledger::State::RolledBack,
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
            // Nothing changed on the endpoint: put the record back as it was.
            record.rollout = Some(before.clone());
            record.transition(
                crate::ledger::State::Succeeded,
                format!("manual rollback failed: {e}"),
                now,
            );
            deployer.ledger.save(&record, &etag).await?;
            writeln!(out, "rollback failed: {e}")?;
            Ok(false)
        }
    }
}
