//! `replay`: runs the events in a file through the pipeline; a dry run unless `--execute`.

use std::io::Write;
use std::path::PathBuf;

use serde_json::Value;

use crate::host;
use crate::http::Http;
use crate::ledger::State;
use crate::logs::InvocationLog;
use crate::pipeline::{Execution, Handled, Invocation, Label, Pipeline, PipelineError};
use crate::startup::Settings;
use crate::startup::{LedgerChoice, build_pipeline};

use super::config_arg::ConfigArg;
use super::errors::CliError;

/// `replay FILE [--config F] [--execute]`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// A bare event, an Event Grid array, a CloudEvent, or a host envelope.
    file: PathBuf,
    #[command(flatten)]
    config: ConfigArg,
    /// Send the action instead of printing it.
    #[arg(long)]
    execute: bool,
}

/// Replays the file `args` names, on stdout.
pub async fn run(args: ReplayArgs, settings: Settings, http: &Http) -> Result<bool, CliError> {
    let text = std::fs::read_to_string(&args.file).map_err(|source| CliError::ReadFile {
        path: args.file.clone(),
        source,
    })?;
    let config_path = args.config.resolve(&settings);
    let pipeline = build_pipeline(&settings, &config_path, ledger_for(args.execute), http);
    let ok = replay(
        &pipeline,
        &text,
        execution(args.execute),
        &mut super::terminal::Visible::new(std::io::stdout()),
    )
    .await?;
    Ok(ok)
}

/// `--execute` sends; otherwise a dry run.
pub(super) fn execution(execute: bool) -> Execution {
    if execute {
        Execution::Send
    } else {
        Execution::DryRun
    }
}

/// A dry run writes nothing anywhere: it gets a scratch ledger.
pub(super) fn ledger_for(execute: bool) -> LedgerChoice {
    if execute {
        LedgerChoice::Configured
    } else {
        LedgerChoice::Scratch
    }
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

/// Prints one handled event (shared with `evaluate`): its log lines, the decision, and the request (dry runs).
pub(super) fn print_outcome(
    log: &InvocationLog,
    result: Result<Handled, PipelineError>,
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
