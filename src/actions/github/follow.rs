//! Following the run a dispatch started: one request per `Reconcile` pass. While the run's id is
//! unknown (`repository_dispatch`, or a `workflow_dispatch` answered with a bare 204), list the
//! runs of that event created since the dispatch and find the one whose `run-name` carries the
//! event id; then read the run, conditionally (`If-None-Match`: an unchanged run answers 304, which
//! GitHub does not count against the rate limit), until it completes, and list its jobs once
//! when it did not succeed. What a request saw ([`Seen`]) is applied to the record's run by
//! [`progress`], which is pure.
//!
//! Requests here are sent once, never retried inside the pass: the next pass is the retry, and a
//! rate limit's reset is waited for between passes, never inside one.

mod matching;
pub mod progress;

pub use matching::{carried_event_ids, matching_run};

use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;
use time::OffsetDateTime;

use super::answers::{retry_wait, transport_error};
use super::client::GithubClient;
use super::settings::GithubCredential;
use crate::actions::{GithubPlan, GithubRequest};
use crate::domain::tail::clip;
use crate::ledger::run::{FailedJob, Follow, MAX_FAILED_JOBS, MAX_FAILED_STEPS, RunState};
use crate::logs::InvocationLog;

/// Longest single request while following.
const FOLLOW_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of one answer read (a page of 100 runs is well under 1 MiB).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Characters kept of a name GitHub sends (a job, a step, a status).
const MAX_NAME_CHARS: usize = 200;

/// What one pass's request saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// 304: the run (or the list) is as last read.
    Unchanged,
    /// The run, read by its id or found in the list; with its failed jobs when it completed
    /// without success.
    Run(Box<RunAnswer>),
    /// The list has no run carrying the event id (yet); the list's ETag for the next read.
    NotListed {
        /// The list's ETag.
        etag: Option<String>,
    },
    /// Try again later (GitHub down, rate limited, an answer that is not JSON): at `retry_at` when
    /// GitHub said so, else after the backoff.
    Transient {
        /// What happened (redacted, bounded).
        why: String,
        /// When GitHub asked to be asked again (a rate limit's reset, `retry-after`).
        retry_at: Option<OffsetDateTime>,
    },
    /// Following cannot go on until an operator changes something (a permission, a workflow).
    Refused {
        /// Why (redacted, bounded).
        why: String,
    },
}

/// The parts of a run we keep.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunAnswer {
    /// `id`.
    pub id: u64,
    /// `html_url`.
    pub url: Option<String>,
    /// `run_attempt`.
    pub attempt: Option<u32>,
    /// `status`.
    pub status: Option<String>,
    /// `conclusion`.
    pub conclusion: Option<String>,
    /// The answer's ETag (the run's own; `None` when it came from the list).
    pub etag: Option<String>,
    /// Failed jobs, when it completed without success and they could be read.
    pub failed_jobs: Vec<FailedJob>,
    /// Why the jobs could not be read, if they could not.
    pub jobs_problem: Option<String>,
    /// Requests this observation took (the run, and its jobs).
    pub requests: u32,
}

/// One answer: status, ETag, retry wait, body (bounded).
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    wait: Option<Option<Duration>>,
    content_type: Option<String>,
    body: Vec<u8>,
    cut: bool,
}

impl GithubClient {
    /// One step of following `run` for a dispatch of `plan` carrying `event_ids`.
    pub async fn check_run(
        &self,
        plan: &GithubPlan,
        run: &RunState,
        event_ids: &[String],
        log: &InvocationLog,
    ) -> Seen {
        match (run.follow, run.id) {
            (Follow::Polling, Some(id)) => self.read_run(plan, id, run.etag.as_deref(), log).await,
            _ => self.find_run(plan, run, event_ids, log).await,
        }
    }

    async fn read_run(
        &self,
        plan: &GithubPlan,
        id: u64,
        etag: Option<&str>,
        log: &InvocationLog,
    ) -> Seen {
        let url = format!("{}/actions/runs/{id}", self.repo_url(plan));
        let answer = match self.get_once(plan, &url, etag, log).await {
            Ok(answer) => answer,
            Err(seen) => return seen,
        };
        if answer.status == StatusCode::NOT_MODIFIED && etag.is_some() {
            return Seen::Unchanged;
        }
        if let Some(seen) = self.not_ok(&answer, "reading the run") {
            return seen;
        }
        let Some(value) = self.json(&answer) else {
            return self.unreadable(&answer, "the run");
        };
        let mut run = self.run_answer(&value, id);
        run.etag = answer.etag.clone();
        self.with_jobs(plan, run, log).await
    }

    async fn find_run(
        &self,
        plan: &GithubPlan,
        run: &RunState,
        event_ids: &[String],
        log: &InvocationLog,
    ) -> Seen {
        let ids = match carried_event_ids(plan, event_ids) {
            Ok(ids) => ids,
            Err(why) => return Seen::Refused { why },
        };
        let created = (run.since - time::Duration::minutes(1))
            .format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .unwrap_or_default();
        let (runs_of, event) = match &plan.request {
            GithubRequest::RepositoryDispatch { .. } => (String::new(), "repository_dispatch"),
            GithubRequest::WorkflowDispatch { workflow, .. } => {
                (format!("/workflows/{workflow}"), "workflow_dispatch")
            }
        };
        let url = format!(
            "{}/actions{runs_of}/runs?event={event}&created=%3E%3D{created}&per_page=100",
            self.repo_url(plan)
        );
        let answer = match self.get_once(plan, &url, run.etag.as_deref(), log).await {
            Ok(answer) => answer,
            Err(seen) => return seen,
        };
        if answer.status == StatusCode::NOT_MODIFIED && run.etag.is_some() {
            return Seen::Unchanged;
        }
        if let Some(seen) = self.not_ok(&answer, "listing the repository's workflow runs") {
            return seen;
        }
        let Some(value) = self.json(&answer) else {
            return self.unreadable(&answer, "the list of runs");
        };
        match matching_run(&value, &ids) {
            Some(found) => {
                let id = found["id"].as_u64().unwrap_or_default();
                let run = self.run_answer(found, id);
                self.with_jobs(plan, run, log).await
            }
            None => Seen::NotListed { etag: answer.etag },
        }
    }

    /// A completed run that did not succeed: its failed jobs and steps (one more request).
    async fn with_jobs(&self, plan: &GithubPlan, mut run: RunAnswer, log: &InvocationLog) -> Seen {
        run.requests = 1;
        let failed = run.status.as_deref() == Some("completed")
            && run.conclusion.as_deref() != Some("success");
        if failed {
            run.requests += 1;
            let url = format!(
                "{}/actions/runs/{}/jobs?per_page=100",
                self.repo_url(plan),
                run.id
            );
            let read = match self.get_once(plan, &url, None, log).await {
                Err(Seen::Transient { why, .. } | Seen::Refused { why }) => Err(why),
                Err(_) => Err("no answer".to_string()),
                Ok(answer) => match self.not_ok(&answer, "listing the run's jobs") {
                    Some(Seen::Transient { why, .. } | Seen::Refused { why }) => Err(why),
                    Some(_) => Err("no answer".to_string()),
                    None => self
                        .json(&answer)
                        .map(|jobs| self.failed_jobs(&jobs))
                        .ok_or_else(|| describe_body(self, &answer, "the run's jobs")),
                },
            };
            match read {
                Ok(jobs) => run.failed_jobs = jobs,
                Err(why) => {
                    run.jobs_problem = Some(format!("its failed jobs could not be read: {why}"))
                }
            }
        }
        Seen::Run(Box::new(run))
    }

    fn repo_url(&self, plan: &GithubPlan) -> String {
        format!(
            "{}/repos/{}/{}",
            self.api_url,
            plan.repository.owner(),
            plan.repository.name()
        )
    }

    /// One GET, not retried: the answer, or what to record when there is none.
    async fn get_once(
        &self,
        plan: &GithubPlan,
        url: &str,
        etag: Option<&str>,
        log: &InvocationLog,
    ) -> Result<Answer, Seen> {
        let deadline = Instant::now() + FOLLOW_REQUEST_TIMEOUT;
        let bearer = self
            .bearer(&plan.repository, deadline, log)
            .await
            .map_err(|e| match e {
                crate::actions::ActionError::Credentials(why) => Seen::Refused {
                    why: clip(&why, 300),
                },
                other => Seen::Transient {
                    why: clip(&other.to_string(), 300),
                    retry_at: None,
                },
            })?;
        let mut request = self
            .http
            .client()
            .request(Method::GET, url)
            .headers(self.headers())
            .bearer_auth(bearer.expose_secret())
            .timeout(FOLLOW_REQUEST_TIMEOUT);
        if let Some(value) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
            request = request.header(IF_NONE_MATCH, value);
        }
        let sent = match request.build() {
            Ok(request) => self.http.send_following_redirects(request).await,
            Err(e) => Err(e.into()),
        };
        let response = sent.map_err(|e| Seen::Transient {
            why: format!(
                "GitHub could not be reached: {}",
                transport_error(&e, self.http.redactor())
            ),
            retry_at: None,
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (etag, content_type) = (
            header("etag").filter(|e| e.len() <= 200),
            header("content-type"),
        );
        let capped = crate::http::read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| Seen::Transient {
                why: format!(
                    "GitHub's answer was cut off: {}",
                    clip(&self.http.redactor().redact(&e.to_string()), 200)
                ),
                retry_at: None,
            })?;
        let wait = retry_wait(status, &headers, &capped.bytes);
        Ok(Answer {
            status,
            etag,
            wait,
            content_type,
            body: capped.bytes,
            cut: capped.cut,
        })
    }

    /// `None` for a 2xx; else what the status means for following.
    fn not_ok(&self, answer: &Answer, doing: &str) -> Option<Seen> {
        if answer.status.is_success() {
            return None;
        }
        let status = answer.status.as_u16();
        if let Some(wait) = answer.wait {
            return Some(Seen::Transient {
                why: format!(
                    "{doing}: HTTP {status}{}",
                    if wait.is_some() {
                        " (rate limited; waiting for the reset)"
                    } else {
                        ""
                    }
                ),
                retry_at: wait.map(|w| crate::ledger::after(OffsetDateTime::now_utc(), w)),
            });
        }
        let message = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .map(|m| clip(&self.http.redactor().redact(&m), 200))
            .unwrap_or_else(|| describe_body(self, answer, "the answer"));
        let hint = match status {
            401 => "the credential is invalid or expired",
            403 => {
                "the credential cannot read Actions: a fine-grained token or a GitHub App needs Actions: read"
            }
            404 => "not found, or the credential cannot see it",
            _ => "unexpected answer",
        };
        let why = format!("{doing}: HTTP {status}: {message} ({hint})");
        // An App's installation token may just have been revoked: mint a new one next time.
        if status == 401 && matches!(self.credential, Ok(Some(GithubCredential::App(_)))) {
            return Some(Seen::Transient {
                why,
                retry_at: None,
            });
        }
        Some(Seen::Refused { why })
    }

    fn json(&self, answer: &Answer) -> Option<Value> {
        if answer.cut {
            return None;
        }
        serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .filter(Value::is_object)
    }

    fn unreadable(&self, answer: &Answer, what: &str) -> Seen {
        Seen::Transient {
            why: describe_body(self, answer, what),
            retry_at: None,
        }
    }

    fn run_answer(&self, value: &Value, id: u64) -> RunAnswer {
        let text = |key: &str, max: usize| {
            value[key]
                .as_str()
                .map(|s| clip(&self.http.redactor().redact(s), max))
        };
        RunAnswer {
            id: value["id"].as_u64().unwrap_or(id),
            url: text("html_url", 500),
            attempt: value["run_attempt"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok()),
            status: text("status", 40),
            conclusion: text("conclusion", 40),
            ..RunAnswer::default()
        }
    }

    /// The jobs that did not succeed and their failed steps, bounded.
    fn failed_jobs(&self, jobs: &Value) -> Vec<FailedJob> {
        let redact = |s: &str| clip(&self.http.redactor().redact(s), MAX_NAME_CHARS);
        let bad = |c: &Value| {
            matches!(
                c.as_str(),
                Some("failure" | "cancelled" | "timed_out" | "action_required" | "startup_failure")
            )
        };
        jobs["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|job| bad(&job["conclusion"]))
            .take(MAX_FAILED_JOBS)
            .map(|job| FailedJob {
                name: redact(job["name"].as_str().unwrap_or("(unnamed job)")),
                conclusion: redact(job["conclusion"].as_str().unwrap_or_default()),
                url: job["html_url"].as_str().map(|u| clip(u, 500)),
                steps: job["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|step| bad(&step["conclusion"]))
                    .take(MAX_FAILED_STEPS)
                    .map(|step| redact(step["name"].as_str().unwrap_or("(unnamed step)")))
                    .collect(),
            })
            .collect()
    }
}

/// An answer that is not the JSON expected: its status, content type and a redacted excerpt.
fn describe_body(client: &GithubClient, answer: &Answer, what: &str) -> String {
    if answer.cut {
        return format!(
            "{what}: GitHub's answer is larger than {} MiB, so it was not read",
            MAX_ANSWER_BYTES / (1024 * 1024)
        );
    }
    clip(
        &format!(
            "{what}: HTTP {} with {}",
            answer.status.as_u16(),
            client
                .http
                .redactor()
                .excerpt(answer.content_type.as_deref(), &answer.body)
        ),
        300,
    )
}
