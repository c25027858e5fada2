//! `approve MODEL:VERSION` / `reject MODEL:VERSION`: the decision a rollout in
//! `awaiting_approval` waits for, recorded with who ran it (the Azure credential's identity when
//! it can be read, else the OS user) and picked up by the next `Reconcile`.

use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use time::OffsetDateTime;

use crate::actions::azureml::rollout::{ApprovalDecision, Phase};
use crate::http::Http;
use crate::ledger::connection::{StorageTarget, parse_connection_string};
use crate::ledger::{Edit, Ledger, Written};
use crate::startup::Settings;
use crate::startup::open_ledger;

use super::errors::{CliError, LedgerCommandError};

/// `approve|reject MODEL:VERSION [--storage CONNECTION]`.
#[derive(Debug, Clone, clap::Args)]
pub struct DecisionArgs {
    /// The version waiting for approval, as MODEL:VERSION.
    target: String,
    /// A storage connection string (default: the app's settings).
    #[arg(long)]
    storage: Option<String>,
}

/// Records the decision; `approved` is `approve` (else `reject`).
pub async fn run(
    args: DecisionArgs,
    approved: bool,
    mut settings: Settings,
    http: &Http,
) -> Result<bool, CliError> {
    if let Some(connection) = &args.storage {
        settings.storage = parse_connection_string(connection, "--storage");
        if connection.trim().eq_ignore_ascii_case("memory") {
            settings.storage = Ok(StorageTarget::Memory { defaulted: false });
        }
    }
    let ledger = open_ledger(&settings, http).map_err(CliError::Setup)?;
    let who = who_am_i(&settings).await;
    decide(
        &ledger,
        &args.target,
        approved,
        &who,
        &mut std::io::stdout(),
    )
    .await
    .map_err(CliError::ReadLedger)
}

/// Records `approved` by `who` on the version's rollout, if it waits for approval.
pub async fn decide(
    ledger: &Ledger,
    target: &str,
    approved: bool,
    who: &str,
    out: &mut dyn Write,
) -> Result<bool, LedgerCommandError> {
    let Some((model, version)) = target.rsplit_once(':') else {
        writeln!(out, "expected MODEL:VERSION, got {target:?}")?;
        return Ok(false);
    };
    let records = ledger.version_records(model, version).await?;
    let waiting: Vec<_> = records
        .iter()
        .filter(|r| {
            r.rollout
                .as_ref()
                .is_some_and(|ro| ro.phase == Phase::AwaitingApproval)
        })
        .collect();
    let [record] = waiting.as_slice() else {
        if waiting.is_empty() {
            writeln!(
                out,
                "{target} is not waiting for approval ({})",
                records
                    .iter()
                    .map(|r| r
                        .rollout
                        .as_ref()
                        .map_or(r.state.to_string(), |ro| ro.phase.as_str().to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        } else {
            writeln!(
                out,
                "{target} waits for approval in several workspaces; decide in the studio with the tag instead"
            )?;
        }
        return Ok(false);
    };
    let now = OffsetDateTime::now_utc();
    let decision = ApprovalDecision {
        approved,
        by: who.to_string(),
        at: now,
    };
    let written = ledger
        .update(&record.key, None, |r| {
            let Some(approval) = r
                .rollout
                .as_mut()
                .filter(|ro| ro.phase == Phase::AwaitingApproval)
                .and_then(|ro| ro.approval.as_mut())
            else {
                return Edit::Keep(false);
            };
            if approval.decision.is_some() {
                return Edit::Keep(false);
            }
            approval.decision = Some(decision.clone());
            r.next_attempt_at = Some(now);
            Edit::Save(true)
        })
        .await?;
    let recorded = matches!(written, Written::Merged { value: true, .. });
    if recorded {
        // The next Reconcile acts on it.
        ledger.schedule(&record.key, now).await?;
        writeln!(
            out,
            "{target}: {} by {who}; the next Reconcile {}",
            if approved { "approved" } else { "rejected" },
            if approved {
                "moves it to 100%"
            } else {
                "rolls it back"
            }
        )?;
    } else {
        writeln!(out, "{target}: already decided, or no longer waiting")?;
    }
    Ok(recorded)
}

/// Who runs the command: the Azure credential's identity (`upn`, `unique_name`,
/// `preferred_username`, else the app or object id in its ARM token), else the OS user.
async fn who_am_i(settings: &Settings) -> String {
    if let Ok(credential) = &settings.credential {
        let scope = settings.arm.cloud.arm_scope();
        let token = tokio::time::timeout(
            Duration::from_secs(10),
            azure_core::credentials::TokenCredential::get_token(
                credential.as_ref(),
                &[scope.as_str()],
                None,
            ),
        )
        .await;
        if let Ok(Ok(token)) = token
            && let Some(name) = identity_in_token(token.token.secret())
        {
            return name;
        }
    }
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .map(|u| format!("{u} (OS user)"))
        .unwrap_or_else(|_| "unknown".into())
}

/// The person or app a JWT names (its payload is read, not verified: it is only a label).
fn identity_in_token(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    ["upn", "unique_name", "preferred_username", "appid", "oid"]
        .iter()
        .find_map(|c| claims[*c].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_comes_from_the_tokens_claims() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"oid":"1234","upn":"ada@contoso.com"}"#);
        assert_eq!(
            identity_in_token(&format!("h.{payload}.s")).as_deref(),
            Some("ada@contoso.com")
        );
        assert_eq!(identity_in_token("not-a-jwt"), None);
    }
}
