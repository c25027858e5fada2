//! What one pass's observation ([`Seen`]) does to the record's run, and when following ends
//! without asking GitHub (its bounds). Pure, so every branch is a row in a table test.

use std::time::Duration;

use time::OffsetDateTime;

use super::Seen;
use crate::ledger::after;
use crate::ledger::run::{Follow, RunState};

/// How long after the dispatch a run not found yet is looked for.
pub const FIND_WITHIN: Duration = Duration::from_secs(30 * 60);

/// Why following ends now, before any request: the run was not found in time, or
/// `github.follow_hours` passed. The flag says whether an operator must fix something.
pub fn overdue(run: &RunState, now: OffsetDateTime) -> Option<(String, bool)> {
    if run.follow == Follow::Finding && now >= after(run.since, FIND_WITHIN) {
        return Some((
            format!(
                "run not found within {} min of the dispatch: no run created since then shows the \
                 event id in its run-name (the receiving workflow's run-name must carry it, as \
                 examples/github/deploy-model.yml does)",
                FIND_WITHIN.as_secs() / 60
            ),
            true,
        ));
    }
    if now >= run.until {
        let hours = (run.until - run.since).whole_hours();
        return Some((
            format!(
                "still {} after {hours} h (github.follow_hours); no longer followed",
                run.describe()
            ),
            false,
        ));
    }
    None
}

/// Ends following without a conclusion.
pub fn end(run: &mut RunState, why: String, configuration: bool, now: OffsetDateTime) {
    run.follow = Follow::Ended;
    run.reason = Some(why);
    run.configuration_problem = configuration;
    run.next_check_at = None;
    run.checked_at = Some(now);
}

/// Applies what a request saw at `now`; `backoff` is the wait after a transient problem when
/// GitHub named no time.
pub fn apply(run: &mut RunState, seen: Seen, now: OffsetDateTime, backoff: Duration) {
    run.checked_at = Some(now);
    run.next_check_at = None;
    match seen {
        Seen::Unchanged => {
            run.requests += 1;
            run.unchanged += 1;
            run.failures = 0;
            run.problem = None;
        }
        Seen::NotListed { etag } => {
            run.requests += 1;
            run.etag = etag;
            run.failures = 0;
            run.problem = None;
        }
        Seen::Run(answer) => {
            run.requests += answer.requests.max(1);
            run.failures = 0;
            run.id = Some(answer.id);
            run.url = answer.url.or(run.url.take());
            run.attempt = answer.attempt.or(run.attempt);
            run.status = answer.status;
            run.conclusion = answer.conclusion;
            // A run found in a list has no ETag of its own yet: its first read is a full one.
            run.etag = answer.etag;
            run.problem = answer.jobs_problem;
            if run.status.as_deref() == Some("completed") {
                run.follow = Follow::Ended;
                run.failed_jobs = if run.conclusion.as_deref() == Some("success") {
                    Vec::new()
                } else {
                    answer.failed_jobs
                };
                if run.conclusion.is_none() {
                    run.conclusion = Some("unknown".into());
                }
            } else {
                run.follow = Follow::Polling;
                run.conclusion = None;
            }
        }
        Seen::Transient { why, retry_at } => {
            run.requests += 1;
            run.failures += 1;
            run.problem = Some(why);
            run.next_check_at = Some(retry_at.unwrap_or_else(|| after(now, backoff)));
        }
        Seen::Refused { why } => {
            run.requests += 1;
            end(run, why, true, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::RunAnswer;
    use super::*;
    use crate::ledger::run::FailedJob;

    const T0: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    fn answer(status: &str, conclusion: Option<&str>, etag: Option<&str>) -> Seen {
        Seen::Run(Box::new(RunAnswer {
            id: 42,
            url: Some("https://github.com/o/r/actions/runs/42".into()),
            attempt: Some(1),
            status: Some(status.into()),
            conclusion: conclusion.map(str::to_string),
            etag: etag.map(str::to_string),
            failed_jobs: vec![FailedJob {
                name: "deploy".into(),
                conclusion: "failure".into(),
                url: None,
                steps: vec!["Deploy".into()],
            }],
            jobs_problem: None,
            requests: if conclusion.is_some_and(|c| c != "success") {
                2
            } else {
                1
            },
        }))
    }

    #[test]
    fn each_observation_moves_the_run_as_the_table_says() {
        let later = T0 + time::Duration::minutes(5);
        let backoff = Duration::from_secs(60);
        // (start with an id?, seen, follow after, status, conclusion, etag, next check, failures)
        struct Row {
            known: bool,
            seen: Seen,
            follow: Follow,
            status: Option<&'static str>,
            describe: &'static str,
            etag: Option<&'static str>,
            next: Option<OffsetDateTime>,
            failures: u32,
        }
        let rows = [
            Row {
                known: true,
                seen: Seen::Unchanged,
                follow: Follow::Polling,
                status: None,
                describe: "running",
                etag: Some("e0"),
                next: None,
                failures: 0,
            },
            Row {
                known: true,
                seen: answer("in_progress", None, Some("e1")),
                follow: Follow::Polling,
                status: Some("in_progress"),
                describe: "running",
                etag: Some("e1"),
                next: None,
                failures: 0,
            },
            Row {
                known: true,
                seen: answer("waiting", None, Some("e2")),
                follow: Follow::Polling,
                status: Some("waiting"),
                describe: "waiting for reviewers (an environment's protection rules)",
                etag: Some("e2"),
                next: None,
                failures: 0,
            },
            Row {
                known: true,
                seen: answer("completed", Some("failure"), Some("e3")),
                follow: Follow::Ended,
                status: Some("completed"),
                describe: "failed (failure) at deploy › Deploy",
                etag: Some("e3"),
                next: None,
                failures: 0,
            },
            Row {
                known: false,
                seen: answer("queued", None, None),
                follow: Follow::Polling,
                status: Some("queued"),
                describe: "queued",
                etag: None,
                next: None,
                failures: 0,
            },
            Row {
                known: false,
                seen: Seen::NotListed {
                    etag: Some("list".into()),
                },
                follow: Follow::Finding,
                status: None,
                describe: "not found yet (looking for the run)",
                etag: Some("list"),
                next: None,
                failures: 0,
            },
            Row {
                known: true,
                seen: Seen::Transient {
                    why: "HTTP 503".into(),
                    retry_at: None,
                },
                follow: Follow::Polling,
                status: None,
                describe: "running",
                etag: Some("e0"),
                next: Some(later + time::Duration::minutes(1)),
                failures: 2,
            },
            Row {
                known: true,
                seen: Seen::Transient {
                    why: "rate limited".into(),
                    retry_at: Some(T0 + time::Duration::hours(1)),
                },
                follow: Follow::Polling,
                status: None,
                describe: "running",
                etag: Some("e0"),
                next: Some(T0 + time::Duration::hours(1)),
                failures: 2,
            },
            Row {
                known: false,
                seen: Seen::Refused {
                    why: "HTTP 403".into(),
                },
                follow: Follow::Ended,
                status: None,
                describe: "not followed to its end: HTTP 403",
                etag: None,
                next: None,
                failures: 1,
            },
        ];
        for (i, row) in rows.into_iter().enumerate() {
            let mut run = RunState::start(row.known.then_some(42), None, T0, 6);
            if row.known {
                run.etag = Some("e0".into());
            }
            run.failures = 1;
            apply(&mut run, row.seen, later, backoff);
            assert_eq!(run.follow, row.follow, "row {i}");
            assert_eq!(run.status.as_deref(), row.status, "row {i}");
            assert_eq!(run.describe(), row.describe, "row {i}");
            assert_eq!(run.etag.as_deref(), row.etag, "row {i}");
            assert_eq!(run.next_check_at, row.next, "row {i}");
            assert_eq!(run.failures, row.failures, "row {i}");
            assert_eq!(run.checked_at, Some(later), "row {i}");
        }
    }

    #[test]
    fn a_success_ends_without_failed_jobs_and_requests_are_counted() {
        let mut run = RunState::start(Some(42), None, T0, 6);
        apply(&mut run, Seen::Unchanged, T0, Duration::ZERO);
        apply(
            &mut run,
            answer("completed", Some("success"), Some("e")),
            T0,
            Duration::ZERO,
        );
        assert_eq!((run.requests, run.unchanged), (2, 1));
        assert_eq!(run.outcome(), Some("run_succeeded"));
        assert!(run.failed_jobs.is_empty());
        let mut failed = RunState::start(Some(42), None, T0, 6);
        apply(
            &mut failed,
            answer("completed", Some("timed_out"), None),
            T0,
            Duration::ZERO,
        );
        assert_eq!(failed.requests, 2, "the run and its jobs");
        assert_eq!(failed.outcome(), Some("run_failed"));
        assert_eq!(failed.failing_step().as_deref(), Some("deploy › Deploy"));
    }

    #[test]
    fn following_ends_at_its_bounds_without_a_request() {
        let finding = RunState::start(None, None, T0, 6);
        assert_eq!(overdue(&finding, T0 + time::Duration::minutes(29)), None);
        let (why, configuration) = overdue(&finding, T0 + time::Duration::minutes(30)).unwrap();
        assert!(why.starts_with("run not found within 30 min"), "{why}");
        assert!(configuration);
        let mut polling = RunState::start(Some(1), None, T0, 6);
        polling.status = Some("waiting".into());
        assert_eq!(overdue(&polling, T0 + time::Duration::minutes(359)), None);
        let (why, configuration) = overdue(&polling, T0 + time::Duration::hours(6)).unwrap();
        assert_eq!(
            why,
            "still waiting for reviewers (an environment's protection rules) after 6 h \
             (github.follow_hours); no longer followed"
        );
        assert!(!configuration);
        end(&mut polling, why, configuration, T0);
        assert!(!polling.is_open());
        assert_eq!(polling.outcome(), None, "no conclusion: nothing announced");
    }
}
