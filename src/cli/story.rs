//! How a version's story reads for a person: `status MODEL:VERSION` (without `--json`) and the
//! parts `--watch` shares: the GitHub run and the failed deployment's last log lines. Records hold
//! upstream text: the commands print these views through `terminal::Visible`, so no escape
//! sequence from it reaches a terminal (each shows as text).

use time::OffsetDateTime;

use crate::domain::tail::{DeploymentLogs, clip};
use crate::ledger::Record;
use crate::ledger::record::rfc3339;
use crate::ledger::run::RunState;

/// Log lines `status MODEL:VERSION` and `--watch` show per container (`--json` has them all).
pub const SHOWN_LOG_LINES: usize = 20;

/// The run, in a few lines.
pub fn run_lines(run: &RunState) -> Vec<String> {
    let mut lines = vec![format!(
        "run: {}{} · {}",
        run.url.as_deref().unwrap_or("(not found yet)"),
        run.attempt
            .filter(|a| *a > 1)
            .map(|a| format!(" (attempt {a})"))
            .unwrap_or_default(),
        run.describe()
    )];
    for job in &run.failed_jobs {
        lines.push(format!(
            "  failed job: {} ({}){}",
            job.name,
            job.conclusion,
            if job.steps.is_empty() {
                String::new()
            } else {
                format!(": {}", job.steps.join("; "))
            }
        ));
    }
    if let Some(problem) = &run.problem {
        lines.push(format!("  problem: {problem}"));
    }
    if run.is_open() {
        lines.push(format!(
            "  followed until {} ({} requests, {} answered 304 unchanged)",
            rfc3339(run.until),
            run.requests,
            run.unchanged
        ));
    }
    lines
}

/// The failed deployment's last lines.
pub fn log_lines(logs: &DeploymentLogs) -> Vec<String> {
    let mut lines = vec![format!(
        "logs of {} (read {}):",
        logs.deployment,
        rfc3339(logs.read_at)
    )];
    lines.extend(
        logs.last_lines(SHOWN_LOG_LINES)
            .into_iter()
            .map(|l| format!("  {l}")),
    );
    lines
}

/// `status MODEL:VERSION`: the record in words.
pub fn record_view(record: &Record, now: OffsetDateTime) -> String {
    let mut lines = vec![format!(
        "{}:{} · {} · rule {} · {}",
        record.model,
        record.version,
        record.state,
        record.rule.as_deref().unwrap_or("-"),
        record.workspace.rsplit('/').next().unwrap_or_default()
    )];
    if let Some(why) = record.reasons.first() {
        lines.push(format!("  why: {}", clip(why, 300)));
    }
    if let Some(last) = record.history.last() {
        lines.push(format!(
            "  last: {} {}: {}",
            rfc3339(last.at),
            last.state,
            clip(&last.note, 300)
        ));
    }
    let outcome = record.last_outcome();
    if !outcome.is_empty() {
        lines.push(format!("  last attempt: {outcome}"));
    }
    if let Some(next) = record.next_attempt_at.filter(|t| *t > now) {
        lines.push(format!("  next try: {}", rfc3339(next)));
    }
    if let Some(run) = &record.run {
        lines.extend(run_lines(run).into_iter().map(|l| format!("  {l}")));
    } else if record.state == crate::ledger::State::Dispatched {
        lines.push("  run: not followed".into());
    }
    if let Some(rollout) = &record.rollout {
        lines.push(format!(
            "  rollout: phase {} on {} (deployment {}); next: {}",
            rollout.phase.as_str(),
            rollout.endpoint,
            rollout.deployment,
            rollout.next_step
        ));
        if let Some(failure) = &rollout.failure {
            lines.push(format!("  failed: {}", clip(failure, 500)));
        }
        if let Some(logs) = &rollout.logs {
            lines.extend(log_lines(logs).into_iter().map(|l| format!("  {l}")));
        }
    }
    for n in &record.notifications {
        lines.push(format!(
            "  notified {} of {}{}",
            n.target,
            n.outcome,
            match (&n.status, &n.error) {
                (_, Some(e)) => format!(" (failed: {})", clip(e, 200)),
                (Some(s), None) => format!(" (HTTP {s})"),
                _ => String::new(),
            }
        ));
    }
    lines.push(format!(
        "  (the whole record: status {}:{} --json)",
        record.model, record.version
    ));
    // Printed through `terminal::Visible`: escape sequences from upstreams show as text.
    lines.join("\n")
}
