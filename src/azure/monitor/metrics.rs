//! The metrics client's vocabulary: what it is asked for (a latency statistic, a [`Window`] of
//! complete minutes) and what it answers ([`EndpointFigures`], or a [`MonitorError`]). The canary
//! judge (`canary`) consumes these; it is not imported from here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

/// Series per answer: the service's default of 10 would cut off deployments × status codes.
pub const TOP_SERIES: u32 = 50;

/// Which latency statistic is judged (`rollout.analysis.latency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencyStat {
    /// `RequestLatency`: the mean latency.
    Average,
    /// `RequestLatency_P50`.
    P50,
    /// `RequestLatency_P90`.
    P90,
    /// `RequestLatency_P95`.
    P95,
    /// `RequestLatency_P99`.
    P99,
}

impl LatencyStat {
    /// Every statistic, in config order.
    pub const ALL: [LatencyStat; 5] = [
        LatencyStat::Average,
        LatencyStat::P50,
        LatencyStat::P90,
        LatencyStat::P95,
        LatencyStat::P99,
    ];

    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            LatencyStat::Average => "average",
            LatencyStat::P50 => "p50",
            LatencyStat::P90 => "p90",
            LatencyStat::P95 => "p95",
            LatencyStat::P99 => "p99",
        }
    }

    /// The Azure Monitor metric of the online endpoint that carries it (split by `deployment`).
    pub fn metric_name(self) -> &'static str {
        match self {
            LatencyStat::Average => "RequestLatency",
            LatencyStat::P50 => "RequestLatency_P50",
            LatencyStat::P90 => "RequestLatency_P90",
            LatencyStat::P95 => "RequestLatency_P95",
            LatencyStat::P99 => "RequestLatency_P99",
        }
    }
}

/// The complete minutes a judgement reads: `[start, end)`, both on whole minutes, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// First minute read.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// The minute after the last one read.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
}

impl Window {
    /// Whole minutes in the window.
    pub fn minutes(&self) -> i64 {
        (self.end - self.start).whole_minutes()
    }

    /// The metrics API's `timespan`: `start/end` in ISO 8601, UTC.
    pub fn timespan(&self) -> String {
        format!("{}/{}", iso(self.start), iso(self.end))
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, to the second.
fn iso(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// One deployment's traffic in a window, as Azure Monitor counts it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct DeploymentFigures {
    /// Requests answered (every status), rounded to whole requests.
    pub requests: u64,
    /// Failed requests: 5xx, 408 (the model timed out) and 424 (the model answered an error).
    pub errors: u64,
    /// The latency statistic asked for: the request-weighted mean of its per-minute values;
    /// `None` when no minute had any.
    pub latency_ms: Option<f64>,
}

/// Every deployment's figures in one window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EndpointFigures {
    /// By deployment name, lower-cased (Azure Monitor's dimension values are matched without case).
    pub by_deployment: BTreeMap<String, DeploymentFigures>,
}

impl EndpointFigures {
    /// The figures of `deployment` (any case); zero requests and no latency when it had no traffic.
    pub fn of(&self, deployment: &str) -> DeploymentFigures {
        self.by_deployment
            .get(&deployment.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }
}

/// Why no figures could be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MonitorError {
    /// A passing failure (429, 5xx, 529, a timeout, a metric's `errorCode` other than
    /// `Success`): no judgement this time; try again later. Never a pass, never a failure.
    #[error("metrics not read, not judged: {0}")]
    NotJudged(String),
    /// 401/403: the identity may not read metrics (it needs Monitoring Reader). A configuration
    /// problem; meanwhile there is no data.
    #[error(
        "Azure Monitor refused to show the endpoint's metrics (give the identity the Monitoring Reader role on the endpoint or its resource group): {0}"
    )]
    Forbidden(String),
    /// 400 and other refusals: the query is wrong (an unknown metric name, grain or filter); the
    /// service's message.
    #[error("Azure Monitor refused the metrics query: {0}")]
    Invalid(String),
}
