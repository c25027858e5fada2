//! Azure Monitor metrics of a managed online endpoint, read for canary analysis
//! (`shared/reference/azure-monitor-metrics.md`).
//!
//! Request metrics live only on the endpoint resource, split per deployment by the `deployment`
//! dimension. One judgement makes exactly two ARM reads: `RequestsPerMinute` split by deployment
//! and status code (an unsplit Average undercounts), and the chosen latency metric split by
//! deployment (it has no status dimension, so it is asked for separately). The answer is turned
//! into figures by the pure functions of `monitor/figures.rs`.

mod figures;
mod metrics;

use super::arm::{ArmClient, ArmError};
pub use metrics::{
    DeploymentFigures, EndpointFigures, LatencyStat, MonitorError, TOP_SERIES, Window,
};

/// The metrics API version (the newest stable `metrics_API.json`); not Machine Learning's.
pub const METRICS_API_VERSION: &str = "2024-02-01";
/// Requests per minute, with `deployment`, `statusCode`, `statusCodeClass`, `modelStatusCode`.
pub const REQUESTS_METRIC: &str = "RequestsPerMinute";
const REQUESTS_FILTER: &str = "deployment eq '*' and statusCode eq '*'";
const LATENCY_FILTER: &str = "deployment eq '*'";

impl ArmClient {
    /// Every deployment's requests, failed requests and `latency` statistic on the endpoint
    /// `endpoint_id` in `window`.
    pub async fn endpoint_figures(
        &self,
        endpoint_id: &str,
        window: &Window,
        latency: LatencyStat,
    ) -> Result<EndpointFigures, MonitorError> {
        let requests = self
            .metric(endpoint_id, window, REQUESTS_METRIC, REQUESTS_FILTER)
            .await?;
        let latencies = self
            .metric(endpoint_id, window, latency.metric_name(), LATENCY_FILTER)
            .await?;
        figures::endpoint_figures(&requests, &latencies)
    }

    /// One metric's series in `window`, split as `filter` says.
    async fn metric(
        &self,
        endpoint_id: &str,
        window: &Window,
        metric: &str,
        filter: &str,
    ) -> Result<Vec<figures::Series>, MonitorError> {
        let id = format!(
            "{}/providers/Microsoft.Insights/metrics",
            endpoint_id.trim_end_matches('/')
        );
        // `resource_url` adds Machine Learning's api-version; the metrics API wants its own.
        let mut url = self.resource_url(&id).map_err(from_arm)?;
        url.set_query(Some(&metrics_query(metric, filter, window)));
        let body = self.get_azureml(url).await.map_err(from_arm)?;
        figures::series(&body, metric, window)
    }
}

/// The query of one metrics read. Spaces and quotes in `$filter` are percent-encoded by the URL.
fn metrics_query(metric: &str, filter: &str, window: &Window) -> String {
    format!(
        "api-version={METRICS_API_VERSION}&metricnames={metric}&aggregation=Average&interval=PT1M&timespan={}&top={TOP_SERIES}&$filter={filter}",
        window.timespan()
    )
}

/// What an ARM failure means for a judgement.
fn from_arm(e: ArmError) -> MonitorError {
    match &e {
        ArmError::Http {
            status: status @ (401 | 403),
            code,
            message,
            ..
        } => MonitorError::Forbidden(format!("HTTP {status} {code}: {message}")),
        ArmError::Http {
            status: 400,
            code,
            message,
            ..
        } => MonitorError::Invalid(format!("{code}: {message}")),
        ArmError::Http { status: 408, .. } => MonitorError::NotJudged(e.to_string()),
        _ if e.is_transient() => MonitorError::NotJudged(e.to_string()),
        _ => MonitorError::Invalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn http(status: u16) -> ArmError {
        ArmError::Http {
            method: "GET".into(),
            path: "/x/providers/Microsoft.Insights/metrics".into(),
            status,
            code: "Code".into(),
            message: "the service's words".into(),
        }
    }

    #[test]
    fn the_query_asks_for_one_minute_averages_split_and_untruncated() {
        let window = Window {
            start: datetime!(2026-11-26 09:47 UTC),
            end: datetime!(2026-11-26 09:57 UTC),
        };
        assert_eq!(
            metrics_query(REQUESTS_METRIC, REQUESTS_FILTER, &window),
            "api-version=2024-02-01&metricnames=RequestsPerMinute&aggregation=Average&interval=PT1M&timespan=2026-11-26T09:47:00Z/2026-11-26T09:57:00Z&top=50&$filter=deployment eq '*' and statusCode eq '*'"
        );
        let mut url = reqwest::Url::parse(
            "https://management.azure.com/e/providers/Microsoft.Insights/metrics",
        )
        .unwrap();
        url.set_query(Some(&metrics_query(
            "RequestLatency_P95",
            LATENCY_FILTER,
            &window,
        )));
        assert!(
            url.as_str()
                .ends_with("&top=50&$filter=deployment%20eq%20%27*%27"),
            "{url}"
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs.iter().filter(|(k, _)| k == "api-version").count(), 1);
        assert!(pairs.contains(&("$filter".into(), "deployment eq '*'".into())));
    }

    #[test]
    fn arm_failures_map_to_what_the_caller_does() {
        let cases = [
            (http(401), "Forbidden"),
            (http(403), "Forbidden"),
            (http(400), "Invalid"),
            (http(404), "Invalid"),
            (http(408), "NotJudged"),
            (http(429), "NotJudged"),
            (http(500), "NotJudged"),
            (http(529), "NotJudged"),
            (ArmError::Unavailable("a timeout".into()), "NotJudged"),
            (ArmError::Credential("no token".into()), "NotJudged"),
        ];
        for (error, expected) in cases {
            let got = from_arm(error.clone());
            let kind = match &got {
                MonitorError::NotJudged(_) => "NotJudged",
                MonitorError::Forbidden(_) => "Forbidden",
                MonitorError::Invalid(_) => "Invalid",
            };
            assert_eq!(kind, expected, "{error:?}");
        }
        assert_eq!(
            from_arm(http(400)),
            MonitorError::Invalid("Code: the service's words".into())
        );
        assert!(
            from_arm(http(403))
                .to_string()
                .contains("Monitoring Reader")
        );
    }
}
