use time::macros::datetime;

use super::*;

fn spec() -> AnalysisSpec {
    AnalysisSpec::example()
}

fn window() -> Window {
    Window {
        start: datetime!(2026-11-26 09:47 UTC),
        end: datetime!(2026-11-26 09:57 UTC),
    }
}

/// `(requests, errors, latency)` per deployment; `green` is the new one.
fn figures(deployments: &[(&str, u64, u64, Option<f64>)]) -> EndpointFigures {
    let mut f = EndpointFigures::default();
    for (name, requests, errors, latency_ms) in deployments {
        f.by_deployment.insert(
            name.to_string(),
            DeploymentFigures {
                requests: *requests,
                errors: *errors,
                latency_ms: *latency_ms,
            },
        );
    }
    f
}

fn baseline() -> Vec<String> {
    vec!["blue".into()]
}

#[test]
fn judgements_table() {
    type Case = (
        &'static str,
        fn(&mut AnalysisSpec),
        Vec<(&'static str, u64, u64, Option<f64>)>,
        Verdict,
        Vec<&'static str>,
    );
    let same: fn(&mut AnalysisSpec) = |_| {};
    let cases: Vec<Case> = vec![
        (
            "healthy canary passes every check",
            same,
            vec![
                ("green", 200, 1, Some(500.0)),
                ("blue", 2000, 10, Some(480.0)),
            ],
            Verdict::Pass,
            vec![
                "error rate 0.5% (1 of 200 requests) is within max_error_rate 1%",
                "error rate 0.5% is 0 points above the baseline's 0.5% (max_error_rate_increase 0.5%)",
                "p95 latency 500 ms is within max_latency_ms 800 ms",
                "p95 latency 500 ms is 4.17% above the baseline's 480 ms (max_latency_increase 20%)",
            ],
        ),
        (
            "too few requests is inconclusive, whatever the errors",
            same,
            vec![
                ("green", 99, 99, Some(5000.0)),
                ("blue", 2000, 0, Some(480.0)),
            ],
            Verdict::Inconclusive,
            vec!["green had 99 requests in the window, fewer than min_requests 100"],
        ),
        (
            "no traffic at all is inconclusive",
            same,
            vec![("blue", 2000, 0, Some(480.0))],
            Verdict::Inconclusive,
            vec!["green had 0 requests in the window, fewer than min_requests 100"],
        ),
        (
            "no traffic with min_requests 0 is still inconclusive",
            |s| s.min_requests = 0,
            vec![],
            Verdict::Inconclusive,
            vec!["green had no requests in the window"],
        ),
        (
            "one request is enough when min_requests is 1",
            |s| s.min_requests = 1,
            vec![("green", 1, 0, Some(10.0)), ("blue", 1, 0, Some(10.0))],
            Verdict::Pass,
            vec!["error rate 0% (0 of 1 request) is within max_error_rate 1%"],
        ),
        (
            "exactly min_requests is judged",
            same,
            vec![("green", 100, 0, Some(10.0)), ("blue", 100, 0, Some(10.0))],
            Verdict::Pass,
            vec![],
        ),
        (
            "an error rate above the limit fails",
            same,
            vec![
                ("green", 200, 4, Some(500.0)),
                ("blue", 2000, 40, Some(500.0)),
            ],
            Verdict::Fail,
            vec!["error rate 2% (4 of 200 requests) is above max_error_rate 1%"],
        ),
        (
            "an error rate equal to the limit holds",
            |s| s.max_error_rate_increase = None,
            vec![
                ("green", 200, 2, Some(500.0)),
                ("blue", 2000, 0, Some(500.0)),
            ],
            Verdict::Pass,
            vec!["error rate 1% (2 of 200 requests) is within max_error_rate 1%"],
        ),
        (
            "an error rate rising over the baseline fails",
            |s| s.max_error_rate = Some(0.05),
            vec![
                ("green", 200, 4, Some(500.0)),
                ("blue", 2000, 10, Some(500.0)),
            ],
            Verdict::Fail,
            vec![
                "error rate 2% is 1.5 points above the baseline's 0.5% (max_error_rate_increase 0.5%)",
            ],
        ),
        (
            "an error rate below the baseline holds",
            |s| s.max_error_rate = None,
            vec![
                ("green", 200, 0, Some(500.0)),
                ("blue", 2000, 100, Some(500.0)),
            ],
            Verdict::Pass,
            vec![
                "error rate 0% is 5 points below the baseline's 5% (max_error_rate_increase 0.5%)",
            ],
        ),
        (
            "increase limits without baseline traffic are not applied, and said so",
            same,
            vec![("green", 200, 0, Some(500.0))],
            Verdict::Pass,
            vec![
                "max_error_rate_increase not applied: the baseline had no requests in the window",
                "max_latency_increase not applied: the baseline had no requests with latency in the window",
            ],
        ),
        (
            "a baseline with requests but no latency figures skips the latency increase",
            same,
            vec![("green", 200, 0, Some(500.0)), ("blue", 2000, 0, None)],
            Verdict::Pass,
            vec!["max_latency_increase not applied"],
        ),
        (
            "latency above the limit fails",
            |s| s.max_latency_increase = None,
            vec![
                ("green", 200, 0, Some(812.34)),
                ("blue", 2000, 0, Some(800.0)),
            ],
            Verdict::Fail,
            vec!["p95 latency 812.3 ms is above max_latency_ms 800 ms"],
        ),
        (
            "latency rising over the baseline fails",
            |s| s.max_latency_ms = None,
            vec![
                ("green", 200, 0, Some(650.0)),
                ("blue", 2000, 0, Some(500.0)),
            ],
            Verdict::Fail,
            vec![
                "p95 latency 650 ms is 30% above the baseline's 500 ms (max_latency_increase 20%)",
            ],
        ),
        (
            "latency exactly at the increase limit holds",
            |s| s.max_latency_ms = None,
            vec![
                ("green", 200, 0, Some(600.0)),
                ("blue", 2000, 0, Some(500.0)),
            ],
            Verdict::Pass,
            vec!["is 20% above the baseline's 500 ms"],
        ),
        (
            "no latency with a latency limit is inconclusive",
            same,
            vec![("green", 200, 0, None), ("blue", 2000, 0, Some(500.0))],
            Verdict::Inconclusive,
            vec!["no p95 latency for green in the window"],
        ),
        (
            "no latency without latency limits passes on errors alone",
            |s| {
                s.max_latency_ms = None;
                s.max_latency_increase = None;
            },
            vec![("green", 200, 0, None), ("blue", 2000, 0, Some(500.0))],
            Verdict::Pass,
            vec![],
        ),
        (
            "a failed limit outweighs missing latency",
            same,
            vec![("green", 200, 20, None), ("blue", 2000, 0, Some(500.0))],
            Verdict::Fail,
            vec![
                "error rate 10% (20 of 200 requests) is above max_error_rate 1%",
                "no p95 latency",
            ],
        ),
        (
            "every exceeded limit is named, failures first",
            same,
            vec![
                ("green", 200, 20, Some(2000.0)),
                ("blue", 2000, 0, Some(500.0)),
            ],
            Verdict::Fail,
            vec![
                "is above max_error_rate 1%",
                "points above the baseline's 0% (max_error_rate_increase 0.5%)",
                "is above max_latency_ms 800 ms",
                "300% above the baseline's 500 ms",
            ],
        ),
        (
            "no limits at all passes once there are requests",
            |s| {
                s.max_error_rate = None;
                s.max_error_rate_increase = None;
                s.max_latency_ms = None;
                s.max_latency_increase = None;
            },
            vec![("green", 200, 200, None)],
            Verdict::Pass,
            vec![],
        ),
        (
            "the average statistic is named as such",
            |s| s.latency = LatencyStat::Average,
            vec![
                ("green", 200, 0, Some(900.0)),
                ("blue", 2000, 0, Some(900.0)),
            ],
            Verdict::Fail,
            vec!["average latency 900 ms is above max_latency_ms 800 ms"],
        ),
    ];
    for (name, change, deployments, verdict, reasons) in cases {
        let mut s = spec();
        change(&mut s);
        let j = judge(&s, "green", &baseline(), &figures(&deployments), &window());
        assert_eq!(j.verdict, verdict, "{name}: {:?}", j.reasons);
        for wanted in &reasons {
            assert!(
                j.reasons.iter().any(|r| r.contains(wanted)),
                "{name}: no reason contains {wanted:?}: {:?}",
                j.reasons
            );
        }
        if verdict == Verdict::Fail {
            assert!(
                j.reasons[0].contains("above"),
                "{name}: failures first: {:?}",
                j.reasons
            );
        }
    }
}

#[test]
fn the_baseline_is_every_other_live_deployment_weighted_by_requests() {
    let f = figures(&[
        ("green", 200, 2, Some(500.0)),
        ("blue", 3000, 30, Some(400.0)),
        ("red", 1000, 0, Some(800.0)),
        ("idle", 0, 0, Some(9000.0)),
    ]);
    let baseline: Vec<String> = ["Blue", "red", "idle", "green", "blue"]
        .map(String::from)
        .to_vec();
    let j = judge(&spec(), "GREEN", &baseline, &f, &window());
    assert_eq!(j.figures.requests, 200);
    assert_eq!(j.figures.errors, 2);
    assert_eq!(j.figures.error_rate, Some(0.01));
    assert_eq!(j.figures.baseline_requests, 4000);
    assert_eq!(j.figures.baseline_error_rate, Some(30.0 / 4000.0));
    // (3000 × 400 + 1000 × 800) / 4000; the idle deployment carries no weight.
    assert_eq!(j.figures.baseline_latency_ms, Some(500.0));
    assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
}

#[test]
fn the_judgement_records_its_numbers_and_limits() {
    let j = judge(
        &spec(),
        "green",
        &baseline(),
        &figures(&[
            ("green", 200, 4, Some(900.0)),
            ("blue", 1000, 5, Some(600.0)),
        ]),
        &window(),
    );
    let json = serde_json::to_value(&j).unwrap();
    assert_eq!(json["verdict"], "fail");
    assert_eq!(json["figures"]["window"]["start"], "2026-11-26T09:47:00Z");
    assert_eq!(json["figures"]["error_rate"], 0.02);
    assert_eq!(json["figures"]["baseline_error_rate"], 0.005);
    assert_eq!(json["figures"]["latency_ms"], 900.0);
    assert_eq!(json["figures"]["thresholds"]["latency"], "p95");
    assert_eq!(json["figures"]["thresholds"]["min_requests"], 100);
    assert_eq!(serde_json::from_value::<Judgement>(json).unwrap(), j);
    assert!(
        j.summary().starts_with(
            "canary analysis failed (2026-11-26T09:47:00Z/2026-11-26T09:57:00Z): error rate 2%"
        ),
        "{}",
        j.summary()
    );
}

#[test]
fn percentages_and_milliseconds_read_naturally() {
    let cases = [
        (0.01, "1%"),
        (0.005, "0.5%"),
        (0.0125, "1.25%"),
        (0.0, "0%"),
        (1.0, "100%"),
        (0.123456, "12.35%"),
    ];
    for (fraction, text) in cases {
        assert_eq!(percent(fraction), text);
    }
    assert_eq!(ms(800.0), "800 ms");
    assert_eq!(ms(812.34), "812.3 ms");
}

#[test]
fn huge_baseline_counts_saturate_and_never_panic() {
    let f = figures(&[
        ("green", 1_000, 1, Some(100.0)),
        ("blue", u64::MAX, u64::MAX, Some(100.0)),
        ("red", u64::MAX, 7, Some(100.0)),
    ]);
    let baseline = vec!["blue".to_string(), "red".to_string()];
    let judged = judge(&spec(), "green", &baseline, &f, &window());
    assert_eq!(judged.figures.baseline_requests, u64::MAX, "{judged:?}");
}
