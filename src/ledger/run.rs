//! The GitHub workflow run a dispatch started, as the record follows it (`run`): `Reconcile` finds
//! it (by its id from `workflow_dispatch`'s run details, or by the event id in its `run-name`),
//! then reads it once per pass until it completes or `github.follow_hours` pass. The version's
//! state stays `dispatched`: following never sends anything again.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::claim::Claim;

/// Failed jobs a record keeps.
pub const MAX_FAILED_JOBS: usize = 5;
/// Failed steps kept per job.
pub const MAX_FAILED_STEPS: usize = 5;

/// Where following stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Follow {
    /// The run's id is not known yet: looking for it among the repository's recent runs.
    Finding,
    /// Reading the run until it completes.
    Polling,
    /// Done: completed (`conclusion`), or given up (`reason`).
    Ended,
}

/// A failed job of the run and its failed steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedJob {
    /// The job's name.
    pub name: String,
    /// Its conclusion (`failure`, `cancelled`, `timed_out`, …).
    #[serde(default)]
    pub conclusion: String,
    /// Its page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Its failed steps' names, in order (at most [`MAX_FAILED_STEPS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
}

/// The run part of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Where following stands.
    pub follow: Follow,
    /// GitHub's run id, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The run's page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `run_attempt` (a re-run counts up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// GitHub's `status` as last read: `queued`, `in_progress`, `waiting`, `completed`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// GitHub's `conclusion` once completed: `success`, `failure`, `cancelled`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    /// For a run that did not succeed: its failed jobs (at most [`MAX_FAILED_JOBS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_jobs: Vec<FailedJob>,
    /// The last answer's ETag: the next read is conditional, and an unchanged run answers 304,
    /// which GitHub does not count against the rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Why following ended without a conclusion (not found, a refusal, the time bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Following ended because of something an operator must fix (a permission, a workflow that
    /// does not carry the event id).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub configuration_problem: bool,
    /// The last transient problem (GitHub down, rate limited), cleared by the next good answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Transient problems in a row.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// When the dispatch was accepted (runs are looked for from there).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// When following stops at the latest (`github.follow_hours` after the dispatch).
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    /// The last request's time.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub checked_at: Option<OffsetDateTime>,
    /// The earliest time of the next request (a rate limit's reset, a backoff).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_check_at: Option<OffsetDateTime>,
    /// Requests sent so far, and how many of them GitHub answered 304 (the polling cost).
    #[serde(default)]
    pub requests: u32,
    /// See `requests`.
    #[serde(default)]
    pub unchanged: u32,
    /// The `Reconcile` pass reading the run right now (several instances may run passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RunState {
    /// Following a run dispatched at `now`, for `hours`; `id` and `url` when GitHub answered with
    /// the run's details.
    pub fn start(id: Option<u64>, url: Option<String>, now: OffsetDateTime, hours: u32) -> Self {
        Self {
            follow: if id.is_some() {
                Follow::Polling
            } else {
                Follow::Finding
            },
            id,
            url,
            attempt: None,
            status: None,
            conclusion: None,
            failed_jobs: Vec::new(),
            etag: None,
            reason: None,
            configuration_problem: false,
            problem: None,
            failures: 0,
            since: now,
            until: now + time::Duration::hours(i64::from(hours)),
            checked_at: None,
            next_check_at: None,
            requests: 0,
            unchanged: 0,
            claim: None,
        }
    }

    /// Whether `Reconcile` still reads it.
    pub fn is_open(&self) -> bool {
        self.follow != Follow::Ended
    }

    /// The notification outcome its end announces: `run_succeeded` or `run_failed` (`None` while
    /// open, and when following ended without a conclusion).
    pub fn outcome(&self) -> Option<&'static str> {
        match (self.follow, self.conclusion.as_deref()) {
            (Follow::Ended, Some("success")) => Some("run_succeeded"),
            (Follow::Ended, Some(_)) => Some("run_failed"),
            _ => None,
        }
    }

    /// The first failed job and step, as `job › step`.
    pub fn failing_step(&self) -> Option<String> {
        let job = self.failed_jobs.first()?;
        Some(match job.steps.first() {
            Some(step) => format!("{} › {step}", job.name),
            None => job.name.clone(),
        })
    }

    /// Where it stands, in words: `running`, `waiting for reviewers`, `succeeded`, `failed
    /// (failure) at deploy › Deploy`, `not found: …`.
    pub fn describe(&self) -> String {
        match (
            self.follow,
            self.conclusion.as_deref(),
            self.status.as_deref(),
        ) {
            (Follow::Ended, Some("success"), _) => "succeeded".into(),
            (Follow::Ended, Some(conclusion), _) => match self.failing_step() {
                Some(step) => format!("failed ({conclusion}) at {step}"),
                None => format!("failed ({conclusion})"),
            },
            (Follow::Ended, None, _) => match &self.reason {
                Some(reason) => format!("not followed to its end: {reason}"),
                None => "not followed to its end".into(),
            },
            (Follow::Finding, _, _) => "not found yet (looking for the run)".into(),
            (Follow::Polling, _, Some("waiting")) => {
                "waiting for reviewers (an environment's protection rules)".into()
            }
            (Follow::Polling, _, Some("queued" | "requested" | "pending")) => "queued".into(),
            (Follow::Polling, _, _) => "running".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(follow: Follow, status: Option<&str>, conclusion: Option<&str>) -> RunState {
        let mut run = RunState::start(Some(1), None, OffsetDateTime::UNIX_EPOCH, 6);
        run.follow = follow;
        run.status = status.map(str::to_string);
        run.conclusion = conclusion.map(str::to_string);
        run
    }

    #[test]
    fn how_a_run_is_described_and_announced() {
        let mut failed = run(Follow::Ended, Some("completed"), Some("failure"));
        failed.failed_jobs = vec![FailedJob {
            name: "deploy".into(),
            conclusion: "failure".into(),
            url: None,
            steps: vec!["Deploy model".into()],
        }];
        let mut lost = run(Follow::Ended, None, None);
        lost.reason = Some("run not found within 30 min".into());
        let cases = [
            (run(Follow::Polling, Some("queued"), None), "queued", None),
            (
                run(Follow::Polling, Some("in_progress"), None),
                "running",
                None,
            ),
            (
                run(Follow::Polling, Some("waiting"), None),
                "waiting for reviewers (an environment's protection rules)",
                None,
            ),
            (
                run(Follow::Ended, Some("completed"), Some("success")),
                "succeeded",
                Some("run_succeeded"),
            ),
            (
                failed,
                "failed (failure) at deploy › Deploy model",
                Some("run_failed"),
            ),
            (
                run(Follow::Ended, Some("completed"), Some("cancelled")),
                "failed (cancelled)",
                Some("run_failed"),
            ),
            (
                lost,
                "not followed to its end: run not found within 30 min",
                None,
            ),
            (
                run(Follow::Finding, None, None),
                "not found yet (looking for the run)",
                None,
            ),
        ];
        for (run, words, outcome) in cases {
            assert_eq!(run.describe(), words);
            assert_eq!(run.outcome(), outcome, "{words}");
        }
    }

    #[test]
    fn the_bound_counts_from_the_dispatch_and_an_id_skips_finding() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let known = RunState::start(Some(7), Some("u".into()), at, 6);
        assert_eq!(known.follow, Follow::Polling);
        assert_eq!(known.until - known.since, time::Duration::hours(6));
        assert_eq!(RunState::start(None, None, at, 1).follow, Follow::Finding);
    }
}
