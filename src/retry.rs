//! Retrying a request inside a total time budget, for the GitHub and ARM clients.
//!
//! Built on `backon`: its exponential builder gives the delays (first delay, doubling, cap) and its
//! retry future drives the attempts. Three things are ours, in its `adjust` hook:
//! - the budget is a wall-clock deadline (Event Grid stops waiting after 30 s), not backon's
//!   `with_total_delay`, which only adds up the sleeps and not the time the requests took;
//! - a wait the server asked for ([`retry_after`], a rate-limit reset) replaces the backoff;
//! - jitter is ±20% around the delay (backon's adds 0–100%, which would change the first delay
//!   and the cap).
//!
//! A wait that would end past the deadline is not started: the caller hears why right away.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};

/// The delays between attempts: `first`, doubling up to `cap`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub first: Duration,
    /// The longest delay.
    pub cap: Duration,
    /// Spread each delay by ±20%, so parallel invocations do not retry in lockstep.
    pub jitter: bool,
}

/// What a failed attempt means.
#[derive(Debug)]
pub enum Failure<E> {
    /// Stop now with this error.
    Final(E),
    /// Try again: after `asked` when the server said how long, else after the backoff.
    Transient {
        /// What went wrong, for messages (`HTTP 503`, `a timeout`).
        why: String,
        /// The wait the server asked for.
        asked: Option<Duration>,
    },
}

/// Why [`retry`] ended without a success.
#[derive(Debug, PartialEq)]
pub enum Stop<E> {
    /// An attempt failed for good.
    Final(E),
    /// An attempt failed transiently and the next would start past the deadline.
    OutOfTime {
        /// The last failure.
        why: String,
        /// Attempts made.
        attempt: u32,
        /// The wait before the next attempt.
        wait: Duration,
        /// Time left until the deadline.
        remaining: Duration,
    },
}

/// Runs `attempt(1)`, `attempt(2)`, … until one succeeds, one fails for good, or the next wait
/// would end past `deadline`. `on_retry(why, attempt, wait)` hears of each wait before it starts.
pub async fn retry<T, E, F, Fut>(
    backoff: Backoff,
    deadline: Instant,
    mut attempt: F,
    mut on_retry: impl FnMut(&str, u32, Duration),
) -> Result<T, Stop<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    let attempts = AtomicU32::new(0);
    let out_of_time = Mutex::new(None);
    let delays = ExponentialBuilder::new()
        .with_min_delay(backoff.first)
        .with_max_delay(backoff.cap)
        .with_factor(2.0)
        .without_max_times();
    let result = (|| attempt(attempts.fetch_add(1, Ordering::Relaxed) + 1))
        .retry(delays)
        .sleep(tokio::time::sleep)
        .when(|failure| matches!(failure, Failure::Transient { .. }))
        .adjust(|failure, next| {
            let Failure::Transient { asked, .. } = failure else {
                return None;
            };
            let wait = asked.unwrap_or_else(|| {
                let delay = next.unwrap_or(backoff.cap);
                if backoff.jitter { jitter(delay) } else { delay }
            });
            let remaining = deadline.saturating_duration_since(Instant::now());
            if wait >= remaining {
                *out_of_time.lock().unwrap_or_else(|e| e.into_inner()) = Some((wait, remaining));
                return None;
            }
            Some(wait)
        })
        .notify(|failure, wait| {
            if let Failure::Transient { why, .. } = failure {
                on_retry(why, attempts.load(Ordering::Relaxed), wait);
            }
        })
        .await;
    result.map_err(|failure| match failure {
        Failure::Final(e) => Stop::Final(e),
        Failure::Transient { why, .. } => {
            let (wait, remaining) = out_of_time
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_default();
            Stop::OutOfTime {
                why,
                attempt: attempts.load(Ordering::Relaxed),
                wait,
                remaining,
            }
        }
    })
}

/// `Retry-After` in seconds or as an HTTP date, capped at an hour (a hostile or broken value must
/// not overflow a deadline).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs.min(3600)),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    };
    Some(wait.min(Duration::from_secs(3600)))
}

/// `delay` spread by ±20%, from the clock's nanoseconds (good enough to break lockstep).
fn jitter(delay: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    delay.mul_f64(0.8 + 0.4 * f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;

    const PLAIN: Backoff = Backoff {
        first: Duration::from_millis(500),
        cap: Duration::from_secs(8),
        jitter: false,
    };

    #[test]
    fn delays_double_from_the_first_up_to_the_cap() {
        let delays: Vec<Duration> = ExponentialBuilder::new()
            .with_min_delay(PLAIN.first)
            .with_max_delay(PLAIN.cap)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .take(7)
            .collect();
        let secs: Vec<f32> = delays.iter().map(Duration::as_secs_f32).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let headers = |value: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("retry-after", value.parse().unwrap());
            h
        };
        assert_eq!(retry_after(&headers(" 3 ")), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(&headers("999999")),
            Some(Duration::from_secs(3600))
        );
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(retry_after(&headers(&past)), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new()), None);
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..50 {
            let d = jitter(Duration::from_secs(8));
            assert!(d >= Duration::from_millis(6400) && d <= Duration::from_millis(9600));
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_with_backoff_then_succeeds() {
        let quick = Backoff {
            first: Duration::from_millis(5),
            cap: Duration::from_millis(80),
            jitter: false,
        };
        let mut waits = Vec::new();
        let got = retry(
            quick,
            Instant::now() + Duration::from_secs(30),
            |n| async move {
                if n < 3 {
                    Err(Failure::<()>::Transient {
                        why: "HTTP 503".into(),
                        asked: None,
                    })
                } else {
                    Ok(n)
                }
            },
            |_, n, wait| waits.push((n, wait)),
        )
        .await;
        assert_eq!(got, Ok(3));
        assert_eq!(
            waits,
            [
                (1, Duration::from_millis(5)),
                (2, Duration::from_millis(10))
            ]
        );
    }

    #[tokio::test]
    async fn a_final_failure_stops_at_once() {
        let got: Result<(), _> = retry(
            PLAIN,
            Instant::now() + Duration::from_secs(30),
            |_| async { Err(Failure::Final("no")) },
            |_, _, _| panic!("no retry expected"),
        )
        .await;
        assert_eq!(got, Err(Stop::Final("no")));
    }

    #[tokio::test]
    async fn an_asked_wait_wins_and_one_past_the_deadline_is_not_started() {
        let mut waits = Vec::new();
        let got: Result<(), Stop<()>> = retry(
            PLAIN,
            Instant::now() + Duration::from_millis(500),
            |n| async move {
                Err(Failure::Transient {
                    why: format!("HTTP 429 #{n}"),
                    asked: Some(Duration::from_millis(300)),
                })
            },
            |_, _, wait| waits.push(wait),
        )
        .await;
        assert_eq!(waits, [Duration::from_millis(300)]);
        let Err(Stop::OutOfTime {
            why,
            attempt,
            wait,
            remaining,
        }) = got
        else {
            panic!("{got:?}");
        };
        assert_eq!((why.as_str(), attempt), ("HTTP 429 #2", 2));
        assert_eq!(wait, Duration::from_millis(300));
        assert!(remaining <= Duration::from_millis(200));
    }
}
