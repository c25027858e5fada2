//! The `analysis:` block of a direct-deployment rule's `rollout:`: how each step is judged on
//! Azure Monitor metrics ([`AnalysisSpec`]).

use serde_norway::{Mapping, Value};

use super::problems::{Walker, describe, join, present};
use crate::azure::monitor::LatencyStat;
use crate::canary::{AnalysisSpec, OnInsufficientData};

const KEYS: &[&str] = &[
    "window_minutes",
    "max_error_rate",
    "max_error_rate_increase",
    "latency",
    "max_latency_ms",
    "max_latency_increase",
    "min_requests",
    "on_insufficient_data",
    "max_bake_minutes",
];
const LIMITS: &[&str] = &[
    "max_error_rate",
    "max_error_rate_increase",
    "max_latency_ms",
    "max_latency_increase",
];
/// A week, as `bake_minutes` allows.
const MAX_MINUTES: u64 = 7 * 24 * 60;
/// `min_requests` when not set.
pub(super) const DEFAULT_MIN_REQUESTS: u64 = 100;
/// How much longer than `bake_minutes` a step may wait for data when `max_bake_minutes` is not set.
pub(super) const DEFAULT_EXTRA_BAKE_MINUTES: u32 = 60;

impl Walker<'_> {
    /// `rollout.analysis` at `location`, for a rollout baking `bake_minutes` per step.
    pub(super) fn analysis(
        &mut self,
        value: &Value,
        location: &str,
        bake_minutes: u32,
    ) -> Option<AnalysisSpec> {
        let map = self.mapping(value, location)?;
        let before = self.problems.len();
        self.check_keys(map, KEYS, location);
        let window_minutes = self
            .minutes(map, "window_minutes", location, 1)
            .unwrap_or(bake_minutes.max(1));
        let max_error_rate = self.percentage(map, "max_error_rate", location);
        let max_error_rate_increase = self.percentage(map, "max_error_rate_increase", location);
        let max_latency_increase = self.percentage(map, "max_latency_increase", location);
        let latencies = LatencyStat::ALL.map(|l| (l.as_str(), l));
        let latency = self.named(map, "latency", location, LatencyStat::P95, &latencies);
        let policies = [
            OnInsufficientData::Wait,
            OnInsufficientData::Promote,
            OnInsufficientData::Rollback,
        ]
        .map(|o| (o.as_str(), o));
        let on_insufficient_data = self.named(
            map,
            "on_insufficient_data",
            location,
            OnInsufficientData::Wait,
            &policies,
        );
        let max_latency_ms = self.milliseconds(map, "max_latency_ms", location);
        let min_requests = match present(map, "min_requests") {
            None => DEFAULT_MIN_REQUESTS,
            Some(v) => v.as_u64().unwrap_or_else(|| {
                self.problem(
                    &join(location, "min_requests"),
                    format!("must be a whole number of 0 or more, got {}", describe(v)),
                );
                0
            }),
        };
        let max_bake_minutes = self
            .minutes(map, "max_bake_minutes", location, u64::from(bake_minutes))
            .unwrap_or(bake_minutes.saturating_add(DEFAULT_EXTRA_BAKE_MINUTES));
        if LIMITS.iter().all(|k| present(map, k).is_none()) {
            self.problem(
                location,
                format!("needs at least one limit: {}", LIMITS.join(", ")),
            );
        }
        (self.problems.len() == before).then_some(AnalysisSpec {
            window_minutes,
            max_error_rate,
            max_error_rate_increase,
            latency,
            max_latency_ms,
            max_latency_increase,
            min_requests,
            on_insufficient_data,
            max_bake_minutes,
        })
    }

    /// A whole number of minutes from `min` to a week under `key`; `None` when absent or wrong
    /// (reported).
    fn minutes(&mut self, map: &Mapping, key: &str, location: &str, min: u64) -> Option<u32> {
        let value = present(map, key)?;
        match value.as_u64() {
            Some(n) if (min..=MAX_MINUTES).contains(&n) => u32::try_from(n).ok(),
            _ => {
                let floor = if key == "max_bake_minutes" {
                    format!("{min} (bake_minutes)")
                } else {
                    min.to_string()
                };
                self.problem(
                    &join(location, key),
                    format!(
                        "must be a whole number of minutes from {floor} to {MAX_MINUTES}, got {}",
                        describe(value)
                    ),
                );
                None
            }
        }
    }

    /// A percentage under `key` (`1`, `0.5`, `"1%"` or `"0.5 %"`) from 0 to 100, as a fraction.
    fn percentage(&mut self, map: &Mapping, key: &str, location: &str) -> Option<f64> {
        let value = present(map, key)?;
        let number = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok()),
            _ => None,
        };
        match number {
            Some(n) if (0.0..=100.0).contains(&n) => Some(n / 100.0),
            _ => {
                self.problem(
                    &join(location, key),
                    format!(
                        "must be a percentage from 0 to 100, such as \"1%\" or 1, got {}",
                        describe(value)
                    ),
                );
                None
            }
        }
    }

    /// A positive number of milliseconds under `key`.
    fn milliseconds(&mut self, map: &Mapping, key: &str, location: &str) -> Option<f64> {
        let value = present(map, key)?;
        match value.as_f64() {
            Some(n) if n > 0.0 && n.is_finite() => Some(n),
            _ => {
                self.problem(
                    &join(location, key),
                    format!(
                        "must be a number of milliseconds above 0, got {}",
                        describe(value)
                    ),
                );
                None
            }
        }
    }

    /// One of `options` under `key` (`default` when absent); anything else is reported, a
    /// number or a list too.
    fn named<T: Clone>(
        &mut self,
        map: &Mapping,
        key: &str,
        location: &str,
        default: T,
        options: &[(&str, T)],
    ) -> T {
        match present(map, key) {
            None => default,
            Some(Value::String(_)) => self
                .choice(map, key, location, default.clone(), options)
                .unwrap_or(default),
            Some(other) => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.problem(
                    &join(location, key),
                    format!(
                        "must be one of {}, got {}",
                        names.join(", "),
                        describe(other)
                    ),
                );
                default
            }
        }
    }
}

#[cfg(test)]
mod tests;
