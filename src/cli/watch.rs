//! `status MODEL:VERSION --watch`: a live view of one version's rollout, refreshed from the
//! ledger: phase, a bar of the traffic split, time left in the bake, the last judgement's figures,
//! what it waits for, the failed deployment's last log lines. Ends when the rollout ends: success
//! for promoted, failure otherwise. For a GitHub dispatch, the same for its run: success when it
//! concluded `success`.

use std::io::Write;
use std::time::Duration;

use time::OffsetDateTime;

use crate::actions::azureml::rollout::{Phase, RolloutState};
use crate::ledger::record::rfc3339;
use crate::ledger::run::RunState;
use crate::ledger::{Ledger, Record};

use super::errors::LedgerCommandError;

/// Refreshes the view of `target` every `every` until its rollout ends.
pub async fn watch(
    ledger: &Ledger,
    target: &str,
    every: Duration,
    out: &mut dyn Write,
) -> Result<bool, LedgerCommandError> {
    let Some((model, version)) = target.rsplit_once(':') else {
        writeln!(out, "--watch needs MODEL:VERSION, got {target:?}")?;
        return Ok(false);
    };
    loop {
        let records = ledger.version_records(model, version).await?;
        // A GitHub dispatch: its run, followed by Reconcile.
        if let Some((record, run)) = records
            .iter()
            .find_map(|r| r.run.as_ref().map(|run| (r, run)))
        {
            writeln!(out, "{}", run_view(record, run, OffsetDateTime::now_utc()))?;
            out.flush()?;
            if !run.is_open() {
                return Ok(run.outcome() == Some("run_succeeded"));
            }
            tokio::time::sleep(every).await;
            continue;
        }
        if records.iter().any(|r| {
            r.state == crate::ledger::State::Dispatched
                && matches!(
                    r.action.as_deref(),
                    Some(crate::actions::ActionPlan::Github(_))
                )
        }) {
            writeln!(
                out,
                "{target}: dispatched to GitHub, but its run is not followed (github.follow: false, or dispatched before following existed): nothing to watch"
            )?;
            return Ok(false);
        }
        let Some((record, rollout)) = records
            .iter()
            .find_map(|r| r.rollout.as_ref().map(|ro| (r, ro)))
        else {
            // Started before the event arrived (or before its rollout began): keep looking.
            writeln!(
                out,
                "{target}: no rollout yet ({} record(s)); waiting",
                records.len()
            )?;
            out.flush()?;
            tokio::time::sleep(every).await;
            continue;
        };
        writeln!(out, "{}", view(record, rollout, OffsetDateTime::now_utc()))?;
        out.flush()?;
        match rollout.phase {
            Phase::Retaining | Phase::Cleaning | Phase::Done => return Ok(true),
            Phase::RolledBack | Phase::Failed => return Ok(false),
            _ => tokio::time::sleep(every).await,
        }
    }
}

/// One refresh of a GitHub run's view.
pub fn run_view(record: &Record, run: &RunState, now: OffsetDateTime) -> String {
    let mut lines = vec![format!(
        "── {}:{} · GitHub run · {} · {}",
        record.model,
        record.version,
        run.status.as_deref().unwrap_or("-"),
        seconds(now)
    )];
    lines.extend(
        super::story::run_lines(run)
            .into_iter()
            .map(|l| format!("  {l}")),
    );
    // Printed through `terminal::Visible`: escape sequences from upstreams show as text.
    lines.join("\n")
}

/// A time to the second (`2026-12-02T10:00:00Z`).
fn seconds(at: OffsetDateTime) -> String {
    rfc3339(at.replace_nanosecond(0).unwrap_or(at))
}

/// One refresh of the view.
pub fn view(record: &Record, rollout: &RolloutState, now: OffsetDateTime) -> String {
    let mut lines = vec![format!(
        "── {}:{} · {} · phase {}{} · {}",
        record.model,
        record.version,
        rollout.endpoint,
        rollout.phase.as_str(),
        if rollout.phase == Phase::Canary {
            format!(" (step {})", rollout.step + 1)
        } else {
            String::new()
        },
        seconds(now)
    )];
    let traffic = if rollout.traffic.is_empty() {
        &rollout.previous_traffic
    } else {
        &rollout.traffic
    };
    for (deployment, share) in traffic {
        let filled = (*share as usize).div_ceil(5).min(20);
        lines.push(format!(
            "  {deployment:<32} {}{} {share:>3}%",
            "█".repeat(filled),
            "░".repeat(20 - filled)
        ));
    }
    if let Some(until) = rollout.hold_until
        && until > now
    {
        let left = (until - now).whole_seconds();
        let what = match rollout.phase {
            Phase::AwaitingApproval => "approval",
            Phase::Retaining => "retention",
            _ => "bake",
        };
        lines.push(format!(
            "  {what} left: {}h {:02}m {:02}s (until {})",
            left / 3600,
            left % 3600 / 60,
            left % 60,
            seconds(until)
        ));
    }
    if let Some(last) = rollout.judgements.last() {
        let f = &last.judgement.figures;
        let pct = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{:.2}%", r * 100.0));
        let ms = |l: Option<f64>| l.map_or("-".to_string(), |l| format!("{l:.0} ms"));
        lines.push(format!(
            "  last judgement (step {}, {}): requests {}, errors {} ({}; baseline {}), {} {} (baseline {})",
            last.step,
            last.judgement.summary().split(' ').nth(2).unwrap_or_default(),
            f.requests,
            f.errors,
            pct(f.error_rate),
            pct(f.baseline_error_rate),
            f.thresholds.latency.as_str(),
            ms(f.latency_ms),
            ms(f.baseline_latency_ms)
        ));
    }
    if let Some(problem) = &rollout.metrics_problem {
        lines.push(format!("  metrics: {problem}"));
    }
    if let Some(failure) = &rollout.failure {
        lines.push(format!("  failed: {failure}"));
    }
    if let Some(logs) = &rollout.logs {
        lines.extend(
            super::story::log_lines(logs)
                .into_iter()
                .map(|l| format!("  {l}")),
        );
    }
    lines.push(format!("  next: {}", rollout.next_step));
    // Printed through `terminal::Visible`: escape sequences from upstreams show as text.
    lines.join("\n")
}
