//! Sending a claimed record's action and recording what happened: shared by the event handler
//! (first attempt) and `Reconcile` (retries and takeovers).

use std::sync::Arc;

use time::OffsetDateTime;

use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::answers::refusal;
use super::client::GithubClient;
use super::settings::GithubCredential;
use crate::actions::GithubPlan;
use crate::actions::{ActionError, ActionOutcome};
use crate::ledger::run::RunState;
use crate::ledger::{ETag, Edit, Ledger, Marker, Record, State, StoreError, Written, after};
use crate::logs::InvocationLog;

impl GithubClient {
    /// Sends `repository_dispatch` or `workflow_dispatch` (with run details where GitHub
    /// supports them).
    pub(super) async fn dispatch(
        &self,
        plan: &GithubPlan,
        log: &InvocationLog,
    ) -> Result<ActionOutcome, ActionError> {
        let deadline = Instant::now() + self.budget;
        let (url, mut body) = self.endpoint(plan);
        let mut attempts = 0;
        let mut renewed_token = false;
        let mut dropped_run_details = false;
        loop {
            let bearer = self.bearer(&plan.repository, deadline, log).await?;
            let reply = self
                .call(Method::POST, &url, &bearer, Some(&body), deadline, log)
                .await?;
            attempts += reply.attempts;
            let status = reply.status;
            if status.is_success() {
                let mut outcome = ActionOutcome {
                    status: status.as_u16(),
                    attempts,
                    ..ActionOutcome::default()
                };
                // workflow_dispatch with return_run_details answers 200 with the run; GitHub Enterprise
                // Server (and older API behaviour) answers a plain 204.
                if let Ok(details) = serde_json::from_slice::<Value>(&reply.body) {
                    outcome.run_id = details.get("workflow_run_id").and_then(Value::as_u64);
                    outcome.run_url = details
                        .get("html_url")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                return Ok(outcome);
            }
            if status == StatusCode::UNAUTHORIZED
                && !renewed_token
                && matches!(self.credential, Ok(Some(GithubCredential::App(_))))
            {
                // A revoked or expired installation token: mint a new one once.
                renewed_token = true;
                self.forget_app_token().await;
                log.warn("GitHub answered 401 to the installation token; minting a new one");
                continue;
            }
            if status == StatusCode::UNPROCESSABLE_ENTITY
                && !dropped_run_details
                && body.get("return_run_details").is_some()
                && String::from_utf8_lossy(&reply.body).contains("return_run_details")
            {
                // Older GitHub Enterprise Server versions reject the parameter they do not know.
                dropped_run_details = true;
                if let Some(map) = body.as_object_mut() {
                    map.remove("return_run_details");
                }
                log.warn("GitHub does not accept return_run_details here; dispatching without run details");
                continue;
            }
            return Err(refusal(&reply, self.http.redactor(), "dispatching"));
        }
    }
}

/// What became of a claimed attempt.
#[derive(Debug)]
pub enum Sent {
    /// The action was accepted and recorded.
    Dispatched(ActionOutcome),
    /// The action failed; the record is `retrying` and `Reconcile` will try again at `at`.
    Retrying {
        /// When.
        at: OffsetDateTime,
        /// Why it failed.
        error: ActionError,
    },
    /// The action failed and the version is past `AUTODEPLOY_GIVE_UP_AFTER`: `failed`.
    GaveUp(ActionError),
    /// The action was accepted but the record could not be updated: a takeover after the claim
    /// timeout may repeat it (the documented window).
    Unrecorded(ActionOutcome),
}

/// Sends actions for claimed records.
pub struct Dispatcher {
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// The GitHub client.
    pub github: Arc<GithubClient>,
}

impl Dispatcher {
    /// Sends the action of `record`, which the caller has claimed (state `dispatching`, claim with
    /// the last attempt's id, `claim_marker` for a takeover), then records the outcome.
    ///
    /// Storage errors while recording a *failure* are returned, so the caller answers non-2xx and
    /// Event Grid redelivers; after a *success* they only produce [`Sent::Unrecorded`].
    pub async fn send_claimed(
        &self,
        record: Record,
        etag: ETag,
        claim_marker: Marker,
        log: &InvocationLog,
    ) -> Result<Sent, StoreError> {
        let Some(plan) = record.action.clone() else {
            return Err(StoreError::Corrupt(format!(
                "record {} has no action to send",
                record.key
            )));
        };
        let attempt_id = record
            .claim
            .as_ref()
            .map(|c| c.attempt_id.clone())
            .unwrap_or_default();
        let result = self.github.execute(&plan, log).await;
        let now = OffsetDateTime::now_utc();

        let failures = record
            .attempts
            .iter()
            .filter(|a| a.outcome == "transient_error" || a.outcome == "refused")
            .count() as u32
            + 1;
        let give_up_at = after(
            record.acting_since.unwrap_or(record.first_received),
            self.ledger.options.give_up_after,
        );
        let next_at = after(now, self.ledger.retry_delay(failures));
        let sent = match result {
            Ok(outcome) => Sent::Dispatched(outcome),
            Err(error) if next_at >= give_up_at => Sent::GaveUp(error),
            Err(error) => Sent::Retrying { at: next_at, error },
        };

        // The retry marker first: if we die before the record says `retrying`, the claim marker
        // still leads `Reconcile` here. Likewise the marker that has the next pass follow the run.
        let follow = match plan.as_ref() {
            crate::actions::ActionPlan::Github(github) => github.follow,
            _ => crate::actions::FollowPlan::default(),
        };
        let retry_marker = match &sent {
            Sent::Retrying { at, .. } => Some(self.ledger.schedule(&record.key, *at).await?),
            Sent::Dispatched(_) if follow.enabled => {
                match self.ledger.schedule(&record.key, now).await {
                    Ok(marker) => Some(marker),
                    Err(e) => {
                        // Not worth failing a dispatch GitHub accepted: the run is then not
                        // followed (the record says so).
                        log.warn(format!("the run will not be followed: {e}"));
                        None
                    }
                }
            }
            _ => None,
        };

        // Apply the outcome; on an ETag conflict (another delivery noted itself) the ledger
        // re-reads and this applies again, for as long as the claim is still ours.
        let key = record.key.clone();
        let ours = record.clone();
        let written = self
            .ledger
            .update(&key, Some((record, etag)), |stored| {
                if stored.claim.as_ref().map(|c| c.attempt_id.as_str()) != Some(attempt_id.as_str())
                {
                    return Edit::Keep(false);
                }
                stored.merge_deliveries(&ours);
                apply(stored, &attempt_id, &sent, now);
                if let Sent::Dispatched(outcome) = &sent
                    && follow.enabled
                    && retry_marker.is_some()
                {
                    stored.run = Some(Box::new(RunState::start(
                        outcome.run_id,
                        outcome.run_url.clone(),
                        now,
                        follow.hours,
                    )));
                }
                Edit::Save(true)
            })
            .await;
        match written {
            Ok(Written::Merged { value: true, .. }) => {
                let _ = self.ledger.unschedule(&claim_marker).await;
                Ok(sent)
            }
            Ok(_) => {
                log.warn(format!(
                    "record {key} was taken over by another attempt while this one ran; its outcome is not recorded here",
                ));
                if let Some(marker) = &retry_marker {
                    let _ = self.ledger.unschedule(marker).await;
                }
                Ok(match sent {
                    Sent::Dispatched(outcome) => Sent::Unrecorded(outcome),
                    other => other,
                })
            }
            Err(e) => match sent {
                Sent::Dispatched(outcome) => {
                    if e == StoreError::Conflict {
                        log.error(
                            "the action was accepted but the ledger kept changing under us; Reconcile will reconcile the claim",
                        );
                    } else {
                        log.error(format!(
                            "the action was accepted but the ledger could not record it ({e}); after the claim \
                             timeout Reconcile will take the claim over, which may repeat the dispatch once"
                        ));
                    }
                    Ok(Sent::Unrecorded(outcome))
                }
                _ => Err(e),
            },
        }
    }
}

fn apply(record: &mut Record, attempt_id: &str, sent: &Sent, now: OffsetDateTime) {
    let (outcome, status, run_url, error) = match sent {
        Sent::Dispatched(o) | Sent::Unrecorded(o) => {
            ("dispatched", Some(o.status), o.run_url.clone(), None)
        }
        Sent::Retrying { error, .. } | Sent::GaveUp(error) => (
            if error.is_transient() {
                "transient_error"
            } else {
                "refused"
            },
            match error {
                ActionError::Rejected { status, .. } => Some(*status),
                _ => None,
            },
            None,
            Some(error.to_string()),
        ),
    };
    if let Some(attempt) = record.attempt_mut(attempt_id) {
        attempt.finished_at = Some(now);
        attempt.outcome = outcome.to_string();
        attempt.status = status;
        attempt.run_url = run_url.clone();
        attempt.error = error.clone();
    }
    record.claim = None;
    match sent {
        Sent::Dispatched(o) | Sent::Unrecorded(o) => {
            record.next_attempt_at = None;
            let note = match &o.run_url {
                Some(url) => format!(
                    "GitHub accepted the dispatch (HTTP {}); run {url}",
                    o.status
                ),
                None => format!("GitHub accepted the dispatch (HTTP {})", o.status),
            };
            record.transition(State::Dispatched, note, now);
        }
        Sent::Retrying { at, error } => {
            record.next_attempt_at = Some(*at);
            record.transition(
                State::Retrying,
                format!(
                    "{error}; Reconcile retries at {}",
                    crate::ledger::record::rfc3339(*at)
                ),
                now,
            );
        }
        Sent::GaveUp(error) => {
            record.next_attempt_at = None;
            record.transition(
                State::Failed,
                format!("gave up (AUTODEPLOY_GIVE_UP_AFTER passed): {error}"),
                now,
            );
        }
    }
}
