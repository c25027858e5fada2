//! `approve MODEL:VERSION` / `reject MODEL:VERSION`: the decision a rollout in
//! `awaiting_approval` waits for, recorded with who ran it (the Azure credential's identity when
//! it can be read, else the OS user) for that one request (`requested_at`), and picked up by the
//! next `Reconcile`. Under `approval.distinct_approver` an approval by an OS user is refused here,
//! and one by whoever registered the version is refused by the rollout.

use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use time::OffsetDateTime;

use crate::actions::ActionPlan;
use crate::actions::azureml::rollout::{ApprovalDecision, MAX_IDENTITIES, Phase};
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
        &mut super::terminal::Visible::new(std::io::stdout()),
    )
    .await
    .map_err(CliError::ReadLedger)
}

/// Who runs the command.
#[derive(Debug, Clone, PartialEq)]
pub struct Approver {
    /// The name recorded as `by`.
    pub label: String,
    /// `credential` (an Azure identity from a token) or `os_user`.
    pub via: &'static str,
    /// Every name the token gives (empty for an OS user).
    pub identities: Vec<String>,
}

/// Records `approved` by `who` on the version's rollout, if it waits for approval.
pub async fn decide(
    ledger: &Ledger,
    target: &str,
    approved: bool,
    who: &Approver,
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
    let distinct = match record.action.as_deref() {
        Some(ActionPlan::AzureMl(plan)) => plan
            .rollout
            .approval
            .as_ref()
            .is_some_and(|a| a.distinct_approver),
        _ => false,
    };
    if approved && distinct && who.via != "credential" {
        writeln!(
            out,
            "{target}: not approved: approval.distinct_approver is set, and an approval must come from an Azure identity (sign in with `az login`, or run where the app's credential works), not the OS user {}",
            who.label
        )?;
        return Ok(false);
    }
    let Some(requested_at) = record
        .rollout
        .as_ref()
        .and_then(|ro| ro.approval.as_ref())
        .map(|a| a.requested_at)
    else {
        writeln!(out, "{target}: not waiting for approval yet")?;
        return Ok(false);
    };
    let now = OffsetDateTime::now_utc();
    let decision = ApprovalDecision {
        approved,
        by: who.label.clone(),
        at: now,
        via: Some(who.via.to_string()),
        identities: who.identities.clone(),
        for_request: Some(requested_at),
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
            // Decided already, or another request (a later rollout) than the one read.
            if approval.decision.is_some() || approval.requested_at != requested_at {
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
            "{target}: {} by {}; the next Reconcile {}",
            if approved { "approved" } else { "rejected" },
            who.label,
            if approved && distinct {
                "checks that you did not register the version (approval.distinct_approver) and moves it to 100%"
            } else if approved {
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
async fn who_am_i(settings: &Settings) -> Approver {
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
            && let Some(approver) = identity_in_token(token.token.secret())
        {
            return approver;
        }
    }
    Approver {
        label: std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .map(|u| format!("{u} (OS user)"))
            .unwrap_or_else(|_| "unknown (OS user)".into()),
        via: "os_user",
        identities: Vec::new(),
    }
}

/// The person or app a JWT names (its payload is read, not verified: the token came from our
/// own credential), with every name it gives: `systemData.createdBy` may hold any of them.
fn identity_in_token(token: &str) -> Option<Approver> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let names: Vec<String> = [
        "upn",
        "unique_name",
        "preferred_username",
        "email",
        "name",
        "appid",
        "azp",
        "oid",
    ]
    .iter()
    .filter_map(|c| claims[*c].as_str().map(str::trim))
    .filter(|n| !n.is_empty() && n.len() <= 256)
    .map(str::to_string)
    .fold(Vec::new(), |mut all, n| {
        if !all.contains(&n) && all.len() < MAX_IDENTITIES {
            all.push(n);
        }
        all
    });
    let label = ["upn", "unique_name", "preferred_username", "appid", "oid"]
        .iter()
        .find_map(|c| claims[*c].as_str().map(str::to_string))?;
    Some(Approver {
        label,
        via: "credential",
        identities: names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_comes_from_the_tokens_claims() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"oid":"1234","upn":"ada@contoso.com"}"#);
        let who = identity_in_token(&format!("h.{payload}.s")).unwrap();
        assert_eq!(who.label, "ada@contoso.com");
        assert_eq!(who.via, "credential");
        assert_eq!(who.identities, ["ada@contoso.com", "1234"]);
        assert_eq!(identity_in_token("not-a-jwt"), None);
    }
}
