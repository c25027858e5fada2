use serde_json::{Value, json};
use time::macros::datetime;

use super::*;

/// The trimmed real response of the reference (rsethur/validate-metrics, recorded 2021 from a
/// managed online endpoint; filter `deployment eq 'blue' and statusCodeClass ne '2xx'`).
const REAL: &str = r#"{"cost": 24, "timespan": "2021-02-21T21:14:00Z/2021-02-21T21:39:00Z", "interval": "PT1M",
 "namespace": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints", "resourceregion": "eastus2euap",
 "value": [{"id": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/demo-endpoint/providers/Microsoft.Insights/metrics/RequestsPerMinute",
   "type": "Microsoft.Insights/metrics", "name": {"value": "RequestsPerMinute", "localizedValue": "Requests Per Minute"},
   "displayDescription": "The number of requests sent to online endpoint within a minute", "unit": "Count", "errorCode": "Success",
   "timeseries": [
     {"metadatavalues": [{"name": {"value": "deployment", "localizedValue": "deployment"}, "value": "blue"},
                         {"name": {"value": "statuscodeclass", "localizedValue": "statuscodeclass"}, "value": "5xx"}],
      "data": [{"timeStamp": "2021-02-21T21:35:00Z", "average": 0.0},
               {"timeStamp": "2021-02-21T21:36:00Z", "average": 47.0},
               {"timeStamp": "2021-02-21T21:37:00Z", "average": 102.0}]}]}]}"#;

fn window() -> Window {
    Window {
        start: datetime!(2026-11-26 09:47 UTC),
        end: datetime!(2026-11-26 09:50 UTC),
    }
}

/// A metrics answer for `metric` with `(dimensions, [(minute, average)])` series.
/// Dimensions and `(minute, average)` points of one series.
type Scripted<'a> = (&'a [(&'a str, &'a str)], &'a [(&'a str, Option<f64>)]);

fn answer(metric: &str, series: &[Scripted]) -> Value {
    let timeseries: Vec<Value> = series
        .iter()
        .map(|(dims, points)| {
            json!({
                "metadatavalues": dims.iter().map(|(n, v)| json!({"name": {"value": n, "localizedValue": n}, "value": v})).collect::<Vec<_>>(),
                "data": points.iter().map(|(minute, avg)| {
                    let t = format!("2026-11-26T09:{minute}:00Z");
                    match avg { Some(a) => json!({"timeStamp": t, "average": a}), None => json!({"timeStamp": t}) }
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"cost": 0, "timespan": "2026-11-26T09:47:00Z/2026-11-26T09:50:00Z", "interval": "PT1M",
           "value": [{"name": {"value": metric, "localizedValue": metric}, "unit": "Count",
                      "errorCode": "Success", "timeseries": timeseries}]})
}

#[test]
fn the_real_recording_reads_as_one_series_of_three_minutes() {
    let body: Value = serde_json::from_str(REAL).unwrap();
    let w = Window {
        start: datetime!(2021-02-21 21:14 UTC),
        end: datetime!(2021-02-21 21:39 UTC),
    };
    let got = series(&body, "RequestsPerMinute", &w).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].dimensions["deployment"], "blue");
    assert_eq!(got[0].dimensions["statuscodeclass"], "5xx");
    let averages: Vec<_> = got[0].points.iter().map(|p| p.1).collect();
    assert_eq!(averages, [Some(0.0), Some(47.0), Some(102.0)]);
    let figures = endpoint_figures(&got, &[]).unwrap();
    assert_eq!(figures.of("blue").requests, 149);
    // Split by class, not code: no status code, so nothing counts as failed.
    assert_eq!(figures.of("blue").errors, 0);
    // Points outside the window asked are not counted.
    let later = Window {
        start: datetime!(2021-02-21 21:36 UTC),
        end: datetime!(2021-02-21 21:37 UTC),
    };
    assert_eq!(
        endpoint_figures(&series(&body, "RequestsPerMinute", &later).unwrap(), &[])
            .unwrap()
            .of("blue")
            .requests,
        47
    );
}

#[test]
fn requests_sum_every_status_series_and_failures_are_5xx_408_and_424() {
    let requests = answer(
        "RequestsPerMinute",
        &[
            (
                &[("deployment", "blue"), ("statuscode", "200")],
                &[("47", Some(397.0)), ("48", Some(400.0))],
            ),
            (
                &[("deployment", "blue"), ("statuscode", "500")],
                &[("47", Some(3.0)), ("48", None)],
            ),
            (
                &[("deployment", "Green"), ("statuscode", "200")],
                &[("47", Some(90.0)), ("48", Some(0.0)), ("49", None)],
            ),
            (
                &[("deployment", "green"), ("statuscode", "424")],
                &[("47", Some(6.0))],
            ),
            (
                &[("deployment", "green"), ("statuscode", "408")],
                &[("47", Some(2.0))],
            ),
            (
                &[("deployment", "green"), ("statuscode", "429")],
                &[("47", Some(5.0))],
            ),
            (
                &[("deployment", "green"), ("statuscode", "503")],
                &[("48", Some(1.5))],
            ),
            (&[("statuscode", "200")], &[("47", Some(1000.0))]),
        ],
    );
    let got = endpoint_figures(
        &series(&requests, "RequestsPerMinute", &window()).unwrap(),
        &[],
    )
    .unwrap();
    assert_eq!(
        got.of("blue"),
        DeploymentFigures {
            requests: 800,
            errors: 3,
            latency_ms: None
        }
    );
    assert_eq!(got.of("green").requests, 105);
    assert_eq!(got.of("green").errors, 10); // 6 + 2 + 1.5, rounded
    assert_eq!(
        got.by_deployment.keys().collect::<Vec<_>>(),
        ["blue", "green"]
    );
}

#[test]
fn latency_is_weighted_by_each_minutes_requests_and_never_averages_nulls() {
    let requests = answer(
        "RequestsPerMinute",
        &[
            (
                &[("deployment", "blue"), ("statuscode", "200")],
                &[("47", Some(300.0)), ("48", Some(100.0))],
            ),
            (
                &[("deployment", "green"), ("statuscode", "200")],
                &[("47", Some(0.0))],
            ),
        ],
    );
    let latency = answer(
        "RequestLatency_P95",
        &[
            (
                &[("deployment", "blue")],
                &[("47", Some(100.0)), ("48", Some(500.0)), ("49", None)],
            ),
            // No requests recorded for green's minutes: the plain mean of minutes with a value.
            (
                &[("deployment", "green")],
                &[("47", Some(40.0)), ("48", None), ("49", Some(60.0))],
            ),
            (&[("deployment", "red")], &[("47", None)]),
        ],
    );
    let got = endpoint_figures(
        &series(&requests, "RequestsPerMinute", &window()).unwrap(),
        &series(&latency, "RequestLatency_P95", &window()).unwrap(),
    )
    .unwrap();
    assert_eq!(got.of("blue").latency_ms, Some(200.0)); // (300 × 100 + 100 × 500) / 400
    assert_eq!(got.of("green").latency_ms, Some(50.0));
    assert_eq!(
        got.of("red"),
        DeploymentFigures {
            requests: 0,
            errors: 0,
            latency_ms: None
        }
    );
}

#[test]
fn missing_data_is_decided_explicitly() {
    // No series at all: no figures, not an error.
    let empty = answer("RequestsPerMinute", &[]);
    assert_eq!(
        series(&empty, "RequestsPerMinute", &window()).unwrap(),
        vec![]
    );
    let no_key =
        json!({"value": [{"name": {"value": "RequestsPerMinute"}, "errorCode": "Success"}]});
    assert_eq!(
        series(&no_key, "requestsperminute", &window()).unwrap(),
        vec![]
    );
    // A metric that failed inside a 200: not judged, with the service's words.
    let failed = json!({"value": [{"name": {"value": "RequestLatency_P99"}, "errorCode": "InvalidSamplingType",
        "errorMessage": "Sampling type is not found.", "timeseries": []}]});
    assert_eq!(
        series(&failed, "RequestLatency_P99", &window()),
        Err(MonitorError::NotJudged(
            "RequestLatency_P99: InvalidSamplingType: Sampling type is not found.".into()
        ))
    );
    // The metric is not in the answer at all.
    assert!(matches!(
        series(&empty, "RequestLatency", &window()),
        Err(MonitorError::NotJudged(m)) if m.contains("no RequestLatency")
    ));
    assert!(matches!(
        series(&json!(null), "RequestsPerMinute", &window()),
        Err(MonitorError::NotJudged(_))
    ));
}

#[test]
fn dimension_names_are_read_without_case() {
    let body = answer(
        "RequestsPerMinute",
        &[(
            &[("Deployment", "BLUE"), ("StatusCode", "500")],
            &[("47", Some(2.0))],
        )],
    );
    let got =
        endpoint_figures(&series(&body, "RequestsPerMinute", &window()).unwrap(), &[]).unwrap();
    assert_eq!(got.of("blue").errors, 2);
}

#[test]
fn failed_statuses() {
    let cases = [
        ("200", false),
        ("201", false),
        ("400", false),
        ("404", false),
        ("408", true),
        ("424", true),
        ("429", false),
        ("500", true),
        ("502", true),
        ("503", true),
        ("5xx", false),
        ("", false),
    ];
    for (code, failed) in cases {
        assert_eq!(is_failure(code), failed, "{code}");
    }
}

#[test]
fn impossible_or_cut_answers_are_not_judged_never_counted() {
    let ok = [("deployment", "blue"), ("statuscode", "200")];
    let not_judged = |body: &Value, word: &str| match series(body, "RequestsPerMinute", &window()) {
        Err(MonitorError::NotJudged(why)) => assert!(why.contains(word), "{why}"),
        other => panic!("{word}: {other:?}"),
    };
    // A negative count, a minute twice, a series twice.
    not_judged(
        &answer("RequestsPerMinute", &[(&ok, &[("47", Some(-5.0))])]),
        "not a possible value",
    );
    not_judged(
        &answer(
            "RequestsPerMinute",
            &[(&ok, &[("47", Some(5.0)), ("47", Some(5.0))])],
        ),
        "appears twice",
    );
    not_judged(
        &answer(
            "RequestsPerMinute",
            &[(&ok, &[("47", Some(5.0))]), (&ok, &[("48", Some(5.0))])],
        ),
        "appears twice",
    );
    // As many series as `top`: possibly cut.
    let codes: Vec<String> = (0..TOP_SERIES).map(|c| format!("{}", 200 + c)).collect();
    let dims: Vec<[(&str, &str); 2]> = codes
        .iter()
        .map(|c| [("deployment", "blue"), ("statuscode", c.as_str())])
        .collect();
    let many: Vec<Scripted> = dims
        .iter()
        .map(|d| (&d[..], &[("47", Some(1.0))][..]))
        .collect();
    not_judged(&answer("RequestsPerMinute", &many), "may have been cut");
    // Counts that cannot add up: not judged, and no panic anywhere (the judge sums too).
    let huge = answer(
        "RequestsPerMinute",
        &[
            (&ok, &[("47", Some(f64::MAX)), ("48", Some(f64::MAX))]),
            (
                &[("deployment", "green"), ("statuscode", "200")],
                &[("47", Some(1e300))],
            ),
        ],
    );
    let read = series(&huge, "RequestsPerMinute", &window()).unwrap();
    assert!(matches!(
        endpoint_figures(&read, &[]),
        Err(MonitorError::NotJudged(why)) if why.contains("too large")
    ));
}
