//! What a rule asks of canary analysis (`rollout.analysis`), stored in the plan.

use serde::{Deserialize, Serialize};

use crate::azure::monitor::LatencyStat;

/// What to do when a step has too few requests to judge (`on_insufficient_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInsufficientData {
    /// Extend the bake, up to `max_bake_minutes`.
    Wait,
    /// Go on as if it had passed.
    Promote,
    /// Roll back.
    Rollback,
}

impl OnInsufficientData {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            OnInsufficientData::Wait => "wait",
            OnInsufficientData::Promote => "promote",
            OnInsufficientData::Rollback => "rollback",
        }
    }
}

/// `rollout.analysis`: how every step is judged. Rates are fractions (`"1%"` is `0.01`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSpec {
    /// Look-back of each judgement, in minutes (clipped to the step).
    pub window_minutes: u32,
    /// The highest failed share of the new deployment's requests.
    pub max_error_rate: Option<f64>,
    /// The highest failed share above the baseline's, in the same window (percentage points).
    pub max_error_rate_increase: Option<f64>,
    /// Which latency statistic the latency limits are about.
    pub latency: LatencyStat,
    /// The highest latency of the new deployment, in milliseconds.
    pub max_latency_ms: Option<f64>,
    /// The highest latency above the baseline's, relative (`0.2`: 20% slower).
    pub max_latency_increase: Option<f64>,
    /// Fewer requests to the new deployment in the window: not judged yet.
    pub min_requests: u64,
    /// What too few requests lead to.
    pub on_insufficient_data: OnInsufficientData,
    /// How long `wait` may extend a step's bake, in minutes from the step's start.
    pub max_bake_minutes: u32,
}

#[cfg(test)]
impl AnalysisSpec {
    /// The documented example (`rollout.analysis` in docs/direct-deployment.md), shared by the
    /// judge's tests and the config reader's.
    pub(crate) fn example() -> Self {
        Self {
            window_minutes: 10,
            max_error_rate: Some(0.01),
            max_error_rate_increase: Some(0.005),
            latency: LatencyStat::P95,
            max_latency_ms: Some(800.0),
            max_latency_increase: Some(0.2),
            min_requests: 100,
            on_insufficient_data: OnInsufficientData::Wait,
            max_bake_minutes: 120,
        }
    }
}
