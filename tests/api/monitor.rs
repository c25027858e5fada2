//! Canary analysis' metrics reads: the real ARM client's `endpoint_figures` against the fake Azure
//! Monitor (tests/common/fake_monitor.rs), which answers the real response shape.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use serde_json::Value;
use time::OffsetDateTime;

use aml_autodeploy::azure::Cloud;
use aml_autodeploy::azure::arm::{ArmClient, ArmSettings};
use aml_autodeploy::azure::monitor::MonitorError;
use aml_autodeploy::azure::monitor::{LatencyStat, Window};
use aml_autodeploy::canary::window;

use crate::fake_monitor::{self, MonitorState};

const ENDPOINT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ml-ws/onlineEndpoints/credit-ep";

#[derive(Debug)]
struct Token;

#[async_trait::async_trait]
impl TokenCredential for Token {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            "arm-token",
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

struct Monitor {
    state: Arc<Mutex<MonitorState>>,
    client: ArmClient,
    uri: String,
}

async fn start(state: MonitorState, budget: Duration) -> Monitor {
    let state = Arc::new(Mutex::new(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .fallback(
            |State(s): State<Arc<Mutex<MonitorState>>>, uri: Uri, headers: HeaderMap| async move {
                fake_monitor::handle(&mut s.lock().unwrap(), &uri, &headers)
            },
        )
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = ArmClient::new(
        &ArmSettings {
            cloud: Cloud::Public,
            endpoint: uri.clone(),
            api_version: "2025-12-01".into(),
            budget,
        },
        Arc::new(Token),
        aml_autodeploy::http::Http::new(),
    )
    .unwrap();
    Monitor { state, client, uri }
}

/// The last ten complete minutes of a step that began half an hour ago.
fn last_ten_minutes() -> Window {
    let now = OffsetDateTime::now_utc();
    window(now, now - time::Duration::minutes(30), 10).unwrap()
}

#[tokio::test]
async fn two_reads_give_every_deployments_requests_failures_and_latency() {
    let mut state = MonitorState::steady("blue", 90, 0.0, 400.0);
    state.set_steady_codes(
        "Green",
        &[(200, 17.0), (424, 1.0), (408, 1.0), (503, 0.5), (429, 2.0)],
        Some(650.0),
    );
    let monitor = start(state, Duration::from_secs(5)).await;
    let window = last_ten_minutes();
    let figures = monitor
        .client
        .endpoint_figures(ENDPOINT, &window, LatencyStat::P95)
        .await
        .unwrap();
    let blue = figures.of("blue");
    assert_eq!(
        (blue.requests, blue.errors, blue.latency_ms),
        (900, 0, Some(400.0))
    );
    let green = figures.of("green");
    assert_eq!(
        (green.requests, green.errors, green.latency_ms),
        (215, 25, Some(650.0))
    );

    let s = monitor.state.lock().unwrap();
    assert_eq!(s.violations, Vec::<String>::new());
    assert_eq!(s.calls.len(), 2, "exactly two reads");
    let requests = s.calls_for("RequestsPerMinute")[0];
    assert_eq!(requests.resource, ENDPOINT);
    assert_eq!(requests.param("api-version"), Some("2024-02-01"));
    assert_eq!(
        requests.param("$filter"),
        Some("deployment eq '*' and statusCode eq '*'")
    );
    assert_eq!(requests.param("aggregation"), Some("Average"));
    assert_eq!(requests.param("interval"), Some("PT1M"));
    assert_eq!(requests.param("top"), Some("50"));
    assert_eq!(requests.param("timespan"), Some(window.timespan().as_str()));
    let latency = s.calls_for("RequestLatency_P95")[0];
    assert_eq!(latency.param("$filter"), Some("deployment eq '*'"));
}

#[tokio::test]
async fn the_fake_reproduces_the_counting_trap_the_split_avoids() {
    let mut state = MonitorState::default();
    state.set_steady_codes("blue", &[(200, 397.0), (500, 3.0)], Some(100.0));
    let monitor = start(state, Duration::from_secs(5)).await;
    let window = last_ten_minutes();
    let url = format!(
        "{}{ENDPOINT}/providers/Microsoft.Insights/metrics?api-version=2024-02-01&metricnames=RequestsPerMinute&aggregation=Average&interval=PT1M&timespan={}&$filter=deployment%20eq%20%27*%27",
        monitor.uri,
        window.timespan()
    );
    let body: Value = reqwest::Client::new()
        .get(url)
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let series = &body["value"][0]["timeseries"];
    assert_eq!(series.as_array().unwrap().len(), 1);
    assert_eq!(
        series[0]["metadatavalues"][0]["name"]["value"],
        "deployment"
    );
    assert_eq!(
        series[0]["data"][0]["average"], 200.0,
        "Sum / Count over collapsed status codes"
    );
    let figures = monitor
        .client
        .endpoint_figures(ENDPOINT, &window, LatencyStat::Average)
        .await
        .unwrap();
    assert_eq!(figures.of("blue").requests, 4000);
    assert_eq!(figures.of("blue").errors, 30);
}

#[tokio::test]
async fn more_series_than_the_default_ten_are_all_counted() {
    let mut state = MonitorState::default();
    for i in 0..8 {
        state.set_steady(&format!("d{i}"), 10, 0.1, 50.0);
    }
    let monitor = start(state, Duration::from_secs(5)).await;
    let figures = monitor
        .client
        .endpoint_figures(ENDPOINT, &last_ten_minutes(), LatencyStat::P99)
        .await
        .unwrap();
    assert_eq!(figures.by_deployment.len(), 8);
    assert!(
        figures
            .by_deployment
            .values()
            .all(|f| f.requests == 100 && f.errors == 10)
    );
}

#[tokio::test]
async fn a_deployment_without_traffic_has_no_figures_and_empty_answers_are_no_error() {
    let monitor = start(MonitorState::default(), Duration::from_secs(5)).await;
    let figures = monitor
        .client
        .endpoint_figures(ENDPOINT, &last_ten_minutes(), LatencyStat::P50)
        .await
        .unwrap();
    assert!(figures.by_deployment.is_empty());
    assert_eq!(figures.of("green").requests, 0);
}

#[tokio::test]
async fn passing_failures_are_retried_then_not_judged() {
    let mut state = MonitorState::steady("blue", 10, 0.0, 10.0);
    state.fail_next = 2;
    state.fail_status = 503;
    let monitor = start(state, Duration::from_secs(5)).await;
    let window = last_ten_minutes();
    let figures = monitor
        .client
        .endpoint_figures(ENDPOINT, &window, LatencyStat::P95)
        .await;
    assert_eq!(
        figures.unwrap().of("blue").requests,
        100,
        "retried within the budget"
    );

    monitor.state.lock().unwrap().fail_next = 100;
    monitor.state.lock().unwrap().fail_status = 429;
    let err = monitor
        .client
        .endpoint_figures(ENDPOINT, &window, LatencyStat::P95)
        .await
        .unwrap_err();
    assert!(matches!(err, MonitorError::NotJudged(_)), "{err:?}");

    {
        let mut s = monitor.state.lock().unwrap();
        s.fail_next = 0;
        s.metric_error = Some(("RequestLatency_P95".into(), "InternalError".into()));
    }
    let err = monitor
        .client
        .endpoint_figures(ENDPOINT, &window, LatencyStat::P95)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        MonitorError::NotJudged("RequestLatency_P95: InternalError: Scripted metric error.".into())
    );
}

#[tokio::test]
async fn a_missing_role_and_a_refused_query_are_told_apart() {
    let mut state = MonitorState::steady("blue", 10, 0.0, 10.0);
    state.refuse = Some(403);
    let monitor = start(state, Duration::from_secs(5)).await;
    let window = last_ten_minutes();
    let err = monitor
        .client
        .endpoint_figures(ENDPOINT, &window, LatencyStat::P95)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MonitorError::Forbidden(m) if m.contains("microsoft.insights/metrics/read")),
        "{err:?}"
    );
    assert!(err.to_string().contains("Monitoring Reader"));

    monitor.state.lock().unwrap().refuse = None;
    let deployment = format!("{ENDPOINT}/deployments/blue");
    let err = monitor
        .client
        .endpoint_figures(&deployment, &window, LatencyStat::P95)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MonitorError::Invalid(m) if m.contains("Failed to find metric configuration")),
        "{err:?}"
    );
    assert_eq!(
        monitor.state.lock().unwrap().violations,
        Vec::<String>::new()
    );
}
