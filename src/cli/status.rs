//! `status`: what the ledger knows: recent records, one model's versions, or one whole record.

use std::io::Write;

use crate::http::Http;
use crate::ledger::connection::{StorageTarget, parse_connection_string};
use crate::ledger::record::rfc3339;
use crate::ledger::{Ledger, Record};
use crate::startup::Settings;
use crate::startup::open_ledger;

use super::errors::{CliError, LedgerCommandError};

/// `status [MODEL[:VERSION]] [--json] [--limit N] [--storage CONNECTION]`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// MODEL for its history, MODEL:VERSION for the whole record; nothing for the most recent.
    target: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// How many records at most.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// A storage connection string (default: the app's settings, AUTODEPLOY_STORAGE or
    /// AzureWebJobsStorage).
    #[arg(long)]
    storage: Option<String>,
    /// With MODEL:VERSION: refresh a live view of its rollout until it ends (exit 0 when
    /// promoted, 1 when rolled back or failed).
    #[arg(long)]
    watch: bool,
    /// Seconds between two refreshes of --watch.
    #[arg(long, default_value_t = 5)]
    interval: u64,
}

/// Shows the ledger `args` (or the settings) name, on stdout.
pub async fn run(args: StatusArgs, mut settings: Settings, http: &Http) -> Result<bool, CliError> {
    if let Some(connection) = args.storage {
        settings.storage = if connection.trim().eq_ignore_ascii_case("memory") {
            Ok(StorageTarget::Memory { defaulted: false })
        } else {
            parse_connection_string(&connection, "--storage")
        };
    }
    let ledger = open_ledger(&settings, http).map_err(CliError::Setup)?;
    if args.watch {
        return super::watch::watch(
            &ledger,
            args.target.as_deref().unwrap_or_default(),
            std::time::Duration::from_secs(args.interval.max(1)),
            &mut super::terminal::Visible::new(std::io::stdout()),
        )
        .await
        .map_err(CliError::ReadLedger);
    }
    status(
        &ledger,
        args.target.as_deref(),
        args.json,
        args.limit.max(1),
        &mut super::terminal::Visible::new(std::io::stdout()),
    )
    .await
    .map_err(CliError::ReadLedger)
}

/// `status`: what the ledger knows. No target: the most recent records; `MODEL`: that model's
/// versions; `MODEL:VERSION`: the record(s) in words (its run, its rollout and the failed
/// deployment's last log lines), or whole with `--json`.
pub async fn status(
    ledger: &Ledger,
    target: Option<&str>,
    as_json: bool,
    limit: usize,
    out: &mut dyn Write,
) -> Result<bool, LedgerCommandError> {
    let (records, whole) = match target {
        None => (ledger.recent(limit).await?, false),
        Some(target) => match target.rsplit_once(':') {
            Some((model, version)) => (ledger.version_records(model, version).await?, true),
            None => (ledger.model_history(target, limit).await?, false),
        },
    };
    if whole && !as_json {
        if records.is_empty() {
            writeln!(out, "no record for {}", target.unwrap_or_default())?;
            return Ok(false);
        }
        let now = time::OffsetDateTime::now_utc();
        for record in &records {
            writeln!(out, "{}", super::story::record_view(record, now))?;
        }
        return Ok(true);
    }
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
            } else if let Some(run) = &r.run {
                outcome = format!(
                    "run {}: {}",
                    run.url.as_deref().unwrap_or("(not found yet)"),
                    run.describe()
                );
            } else if let Some(next) = r.next_attempt_at {
                outcome = format!("{outcome}; next try {}", rfc3339(next));
            }
            // Record text is upstream text: never replayed on the terminal as escapes.
            let outcome = crate::domain::tail::clip(&outcome, 160);
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
