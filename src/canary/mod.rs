//! Canary analysis: each rollout step is judged on the endpoint's real traffic, as Azure Monitor
//! counts it, against absolute limits and against the live (baseline) deployments.
//!
//! This file holds what a judgement is about: the rule's [`AnalysisSpec`] (stored in the plan),
//! the [`Window`] of complete minutes to read, and the figures read for it
//! ([`EndpointFigures`](crate::azure::monitor::EndpointFigures), from [`crate::azure::monitor`]). [`judge`] (in `canary/judge.rs`) is
//! pure: figures in, a [`Judgement`] with its reasons out.

mod judge;
mod spec;

use time::OffsetDateTime;

pub use judge::{JudgedFigures, Judgement, Thresholds, Verdict, judge};
pub use spec::{AnalysisSpec, OnInsufficientData};

use crate::azure::monitor::Window;

/// Azure Monitor metrics reach the store within about a minute; the newest minutes can read as
/// zero before they fill in. Windows end this many minutes before the current minute.
pub const INGESTION_LAG_MINUTES: i64 = 2;

/// The window a step started at `step_started` is judged on at `now`: complete minutes only,
/// ending [`INGESTION_LAG_MINUTES`] before the current minute, at most `window_minutes` long and
/// starting no earlier than the first full minute of the step. `None` while that is empty.
pub fn window(
    now: OffsetDateTime,
    step_started: OffsetDateTime,
    window_minutes: u32,
) -> Option<Window> {
    let end = minute_floor(now)? - INGESTION_LAG_MINUTES * 60;
    let first_full = {
        let floor = minute_floor(step_started)?;
        if floor == step_started.unix_timestamp() && step_started.nanosecond() == 0 {
            floor
        } else {
            floor + 60
        }
    };
    let start = (end - i64::from(window_minutes) * 60).max(first_full);
    if start >= end {
        return None;
    }
    Some(Window {
        start: OffsetDateTime::from_unix_timestamp(start).ok()?,
        end: OffsetDateTime::from_unix_timestamp(end).ok()?,
    })
}

/// The Unix time of the start of `t`'s minute.
fn minute_floor(t: OffsetDateTime) -> Option<i64> {
    let secs = t.unix_timestamp();
    secs.checked_div_euclid(60)?.checked_mul(60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::monitor::{DeploymentFigures, EndpointFigures, LatencyStat};
    use time::macros::datetime;

    #[test]
    fn latency_statistics_name_their_metric() {
        let names: Vec<_> = LatencyStat::ALL.iter().map(|s| s.metric_name()).collect();
        assert_eq!(
            names,
            [
                "RequestLatency",
                "RequestLatency_P50",
                "RequestLatency_P90",
                "RequestLatency_P95",
                "RequestLatency_P99"
            ]
        );
    }

    #[test]
    fn windows_cover_complete_minutes_of_the_step_only() {
        // On 2026-11-26: (now, step started, window minutes, expected start–end or None).
        let at = |hms: &str| {
            let f = time::macros::format_description!("[hour]:[minute]:[second]");
            time::Time::parse(hms, &f)
                .map(|t| datetime!(2026-11-26 00:00 UTC).replace_time(t))
                .unwrap()
        };
        let cases = [
            // A long-running step: the last 10 complete minutes, 2 minutes of lag.
            ("10:00:30", "09:00:00", 10, Some(("09:48:00", "09:58:00"))),
            // Clipped to the first full minute after the step began.
            ("10:00:30", "09:52:10", 10, Some(("09:53:00", "09:58:00"))),
            // A step starting on a whole minute keeps that minute.
            ("10:00:00", "09:55:00", 10, Some(("09:55:00", "09:58:00"))),
            // Too young: nothing complete yet.
            ("10:00:59", "09:57:01", 10, None),
            ("10:00:59", "09:57:00", 10, Some(("09:57:00", "09:58:00"))),
            // A step "starting" in the future has no window.
            ("10:00:00", "10:30:00", 10, None),
        ];
        for (now, started, minutes, expected) in cases {
            let got = window(at(now), at(started), minutes).map(|w| (w.start, w.end));
            let expected = expected.map(|(s, e)| (at(s), at(e)));
            assert_eq!(got, expected, "{now} {started} {minutes}");
        }
        // Other offsets are read in UTC.
        let w = window(datetime!(2026-11-26 11:00:30 +01:00), at("09:00:00"), 1);
        assert_eq!(
            w.map(|w| (w.start, w.end)),
            Some((at("09:57:00"), at("09:58:00")))
        );
    }

    #[test]
    fn a_window_reads_as_a_timespan_and_round_trips_as_rfc3339() {
        let w = window(
            datetime!(2026-11-26 09:59:59 UTC),
            datetime!(2026-11-26 09:00:00 UTC),
            10,
        )
        .unwrap();
        assert_eq!(w.timespan(), "2026-11-26T09:47:00Z/2026-11-26T09:57:00Z");
        assert_eq!(w.minutes(), 10);
        let json = serde_json::to_value(w).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"start": "2026-11-26T09:47:00Z", "end": "2026-11-26T09:57:00Z"})
        );
        assert_eq!(serde_json::from_value::<Window>(json).unwrap(), w);
    }

    #[test]
    fn figures_are_found_without_case() {
        let mut figures = EndpointFigures::default();
        figures.by_deployment.insert(
            "green".into(),
            DeploymentFigures {
                requests: 5,
                errors: 1,
                latency_ms: Some(3.0),
            },
        );
        assert_eq!(figures.of("Green").requests, 5);
        assert_eq!(figures.of("blue"), DeploymentFigures::default());
    }
}
