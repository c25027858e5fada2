//! The CLI commands other than `serve`: `replay` and `check-config`.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::config::{Config, GithubTarget, Mode, RuleAction};
use crate::host;
use crate::ledger::record::rfc3339;
use crate::ledger::{Ledger, Record, StoreError};
use crate::logs::InvocationLog;
use crate::pipeline::{Execution, Invocation, Pipeline};

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
                let RuleAction::Github(github) = &rule.action;
                let action = match &github.target {
                    GithubTarget::RepositoryDispatch { event_type } => {
                        format!(
                            "repository_dispatch {:?} to {}",
                            event_type.source(),
                            github.repository
                        )
                    }
                    GithubTarget::WorkflowDispatch {
                        workflow, git_ref, ..
                    } => {
                        format!(
                            "workflow_dispatch {workflow} on {} in {}",
                            git_ref.source(),
                            github.repository
                        )
                    }
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

/// The events in a replay file: a host envelope, an Event Grid array, a CloudEvents batch, a single
/// event (either schema), or an Event Grid dead-letter blob (an event with extra fields).
pub fn events_in_file(text: &str) -> Result<Vec<Value>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if host::is_envelope(&value) {
        let object = value.as_object().cloned().unwrap_or_default();
        return host::take_binding(&object)
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
        };
        let result = pipeline.handle(event, &invocation, &log).await;
        for line in log.lines() {
            writeln!(out, "  {line}")?;
        }
        match result {
            Ok(mut handled) => {
                // The request is printed in full below; keep the decision short.
                if let Some(map) = handled.return_value.as_object_mut() {
                    map.remove("request");
                }
                writeln!(
                    out,
                    "ReturnValue: {}",
                    serde_json::to_string_pretty(&handled.return_value).unwrap_or_default()
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
            if let Some(next) = r.next_attempt_at {
                outcome = format!("{outcome}; next try {}", rfc3339(next));
            }
            if outcome.chars().count() > 90 {
                outcome = outcome.chars().take(89).collect::<String>() + "…";
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
