use std::path::PathBuf;

use super::*;
use crate::env::ProcessEnv;

const AT: &str = "rules[0] (a).azureml.rollout.analysis";

/// The spec (if any) and every problem of `analysis: {yaml}` for a rollout baking 15 minutes.
fn analysis(yaml: &str) -> (Option<AnalysisSpec>, Vec<String>) {
    let value: Value = serde_norway::from_str(yaml).unwrap();
    let mut walker = Walker {
        problems: Vec::new(),
        base: PathBuf::from("."),
        folder: crate::folder::ConfigFolder::of(std::path::Path::new("autodeploy.yml")),
        warnings: Vec::new(),
        workspace_len: None,
        env: &ProcessEnv,
    };
    let spec = walker.analysis(&value, AT, 15);
    let problems = walker.problems.iter().map(ToString::to_string).collect();
    (spec, problems)
}

fn problems(yaml: &str) -> Vec<String> {
    let (spec, problems) = analysis(yaml);
    assert!(spec.is_none(), "{yaml}: problems but a spec");
    problems
}

#[test]
fn the_documented_example_is_read_exactly() {
    let (spec, problems) = analysis(
        r#"
window_minutes: 10
max_error_rate: "1%"
max_error_rate_increase: "0.5%"
latency: p95
max_latency_ms: 800
max_latency_increase: "20%"
min_requests: 100
on_insufficient_data: wait
max_bake_minutes: 120
"#,
    );
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(spec, Some(AnalysisSpec::example()));
}

#[test]
fn defaults_follow_the_bake() {
    let (spec, problems) = analysis("{max_error_rate: 2}");
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(
        spec,
        Some(AnalysisSpec {
            window_minutes: 15,
            max_error_rate: Some(0.02),
            max_error_rate_increase: None,
            latency: LatencyStat::P95,
            max_latency_ms: None,
            max_latency_increase: None,
            min_requests: DEFAULT_MIN_REQUESTS,
            on_insufficient_data: OnInsufficientData::Wait,
            max_bake_minutes: 15 + DEFAULT_EXTRA_BAKE_MINUTES,
        })
    );
}

#[test]
fn every_choice_and_percentage_form_is_accepted() {
    type Check = fn(&AnalysisSpec) -> bool;
    let cases: [(&str, Check); 13] = [
        ("{max_latency_ms: 1, latency: average}", |s| {
            s.latency == LatencyStat::Average
        }),
        ("{max_latency_ms: 1, latency: p50}", |s| {
            s.latency == LatencyStat::P50
        }),
        ("{max_latency_ms: 1, latency: p90}", |s| {
            s.latency == LatencyStat::P90
        }),
        ("{max_latency_ms: 1, latency: p99}", |s| {
            s.latency == LatencyStat::P99
        }),
        ("{max_latency_ms: 0.5}", |s| s.max_latency_ms == Some(0.5)),
        ("{max_error_rate: 0, on_insufficient_data: promote}", |s| {
            s.on_insufficient_data == OnInsufficientData::Promote && s.max_error_rate == Some(0.0)
        }),
        (
            "{max_error_rate: 100, on_insufficient_data: rollback}",
            |s| {
                s.on_insufficient_data == OnInsufficientData::Rollback
                    && s.max_error_rate == Some(1.0)
            },
        ),
        ("{max_error_rate: 0.5}", |s| s.max_error_rate == Some(0.005)),
        ("{max_error_rate: ' 2.5 % '}", |s| {
            s.max_error_rate == Some(0.025)
        }),
        ("{max_latency_increase: 100%}", |s| {
            s.max_latency_increase == Some(1.0)
        }),
        ("{max_error_rate_increase: '0%', min_requests: 0}", |s| {
            s.max_error_rate_increase == Some(0.0) && s.min_requests == 0
        }),
        (
            "{max_error_rate: 1, window_minutes: 1, max_bake_minutes: 15}",
            |s| s.window_minutes == 1 && s.max_bake_minutes == 15,
        ),
        ("{max_error_rate: 1, max_latency_ms: null}", |s| {
            s.max_latency_ms.is_none()
        }),
    ];
    for (yaml, check) in cases {
        let (spec, problems) = analysis(yaml);
        assert_eq!(problems, Vec::<String>::new(), "{yaml}");
        let spec = spec.unwrap();
        assert!(check(&spec), "{yaml}: {spec:?}");
    }
}

#[test]
fn every_wrong_key_is_named() {
    let cases: [(&str, &[&str]); 14] = [
        (
            "{max_error_rate: '1', latency: p95}",
            &[r#".max_error_rate: must be a percentage from 0 to 100, such as "1%" or 1, got "1""#],
        ),
        (
            "{max_error_rate: 101}",
            &[
                ".max_error_rate: must be a percentage from 0 to 100, such as \"1%\" or 1, got \"101\"",
            ],
        ),
        (
            "{max_error_rate: -1%}",
            &[".max_error_rate: must be a percentage"],
        ),
        (
            "{max_error_rate_increase: [1]}",
            &[
                ".max_error_rate_increase: must be a percentage from 0 to 100, such as \"1%\" or 1, got a list",
            ],
        ),
        (
            "{max_latency_increase: 'twenty%'}",
            &[".max_latency_increase: must be a percentage"],
        ),
        (
            "{max_latency_ms: 0}",
            &[".max_latency_ms: must be a number of milliseconds above 0, got \"0\""],
        ),
        (
            "{max_latency_ms: fast}",
            &[".max_latency_ms: must be a number of milliseconds"],
        ),
        (
            "{max_latency_ms: 800, latency: p999}",
            &[".latency: must be average, p50, p90, p95 or p99, got \"p999\""],
        ),
        (
            "{max_latency_ms: 800, latency: 95}",
            &[".latency: must be one of average, p50, p90, p95, p99, got \"95\""],
        ),
        (
            "{max_error_rate: 1, on_insufficient_data: skip}",
            &[".on_insufficient_data: must be wait, promote or rollback, got \"skip\""],
        ),
        (
            "{max_error_rate: 1, window_minutes: 0}",
            &[".window_minutes: must be a whole number of minutes from 1 to 10080, got \"0\""],
        ),
        (
            "{max_error_rate: 1, max_bake_minutes: 14}",
            &[
                ".max_bake_minutes: must be a whole number of minutes from 15 (bake_minutes) to 10080, got \"14\"",
            ],
        ),
        (
            "{max_error_rate: 1, min_requests: -5}",
            &[".min_requests: must be a whole number of 0 or more, got \"-5\""],
        ),
        (
            "{max_error_rate: 1, max_errors: 3, Latency: p95}",
            &[
                ".max_errors: unknown key `max_errors`; allowed here: window_minutes,",
                ".Latency: unknown key `Latency` (did you mean `latency`?)",
            ],
        ),
    ];
    for (yaml, wanted) in cases {
        let got = problems(yaml);
        assert_eq!(got.len(), wanted.len(), "{yaml}: {got:?}");
        for (got, wanted) in got.iter().zip(wanted.iter()) {
            assert!(got.starts_with(&format!("{AT}{wanted}")), "{yaml}: {got}");
        }
    }
}

#[test]
fn a_judge_without_limits_or_a_mapping_is_refused() {
    assert_eq!(
        problems("{latency: p99, min_requests: 10}"),
        [format!(
            "{AT}: needs at least one limit: max_error_rate, max_error_rate_increase, max_latency_ms, max_latency_increase"
        )]
    );
    assert_eq!(
        problems("[1]"),
        [format!("{AT}: expected a mapping, got a list")]
    );
}
