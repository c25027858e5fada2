//! The metrics API's answer → figures: pure, no I/O.
//!
//! Missing data, decided explicitly: a filter matching nothing is `"timeseries": []`; a minute
//! without a sample carries only `timeStamp` (read as no requests, and never averaged into a
//! latency); a metric whose `errorCode` is not `Success` is "not judged", not healthy.
//!
//! Impossible data is "not judged" too, never counted: a negative or non-finite value, a minute
//! that appears twice in a series, a series (the same dimension values) that appears twice, sums
//! too large to be finite, and an answer with as many series as `top` asked for (it may have been
//! cut: the deployments left out would go unseen).

use std::collections::BTreeMap;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::metrics::{DeploymentFigures, EndpointFigures, MonitorError, TOP_SERIES, Window};

/// One series of one metric: its dimension values and its minute averages.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Series {
    /// `metadatavalues`, names lower-cased.
    pub dimensions: BTreeMap<String, String>,
    /// (minute as Unix time, when readable; its average, when there was a sample).
    pub points: Vec<(Option<i64>, Option<f64>)>,
}

impl Series {
    /// The deployment, lower-cased.
    fn deployment(&self) -> Option<String> {
        self.dimensions
            .get("deployment")
            .map(|d| d.to_ascii_lowercase())
    }
}

/// The series of `metric` in a metrics answer, with points outside `window` dropped.
pub(crate) fn series(
    body: &Value,
    metric: &str,
    window: &Window,
) -> Result<Vec<Series>, MonitorError> {
    let Some(entry) = body["value"].as_array().and_then(|metrics| {
        metrics.iter().find(|m| {
            m["name"]["value"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(metric))
        })
    }) else {
        return Err(MonitorError::NotJudged(format!(
            "the metrics answer has no {metric}"
        )));
    };
    match entry["errorCode"].as_str() {
        None | Some("Success") => {}
        Some(code) => {
            let message = entry["errorMessage"].as_str().unwrap_or_default();
            return Err(MonitorError::NotJudged(
                format!("{metric}: {code}: {message}")
                    .trim_end_matches([' ', ':'])
                    .to_string(),
            ));
        }
    }
    let (start, end) = (window.start.unix_timestamp(), window.end.unix_timestamp());
    let timeseries = entry["timeseries"].as_array().map(Vec::as_slice);
    let count = timeseries.map_or(0, <[Value]>::len);
    if count >= TOP_SERIES as usize {
        return Err(MonitorError::NotJudged(format!(
            "{metric}: the answer has {count} series, as many as `top` asked for ({TOP_SERIES}): it may have been cut, and a deployment left out would go unseen"
        )));
    }
    let series: Vec<Series> = timeseries
        .unwrap_or_default()
        .iter()
        .map(|ts| Series {
            dimensions: ts["metadatavalues"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|d| {
                    let name = d["name"]["value"].as_str()?.to_ascii_lowercase();
                    Some((name, d["value"].as_str()?.to_string()))
                })
                .collect(),
            points: ts["data"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    let minute = p["timeStamp"]
                        .as_str()
                        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                        .map(OffsetDateTime::unix_timestamp);
                    (minute, p["average"].as_f64())
                })
                // Unreadable timestamps stay: the service answered for the timespan asked.
                .filter(|(minute, _)| minute.is_none_or(|m| (start..end).contains(&m)))
                .collect(),
        })
        .collect();
    check(metric, &series)?;
    Ok(series)
}

/// Refuses what no real answer holds: negative or non-finite values, a minute twice in a
/// series, the same series twice.
fn check(metric: &str, series: &[Series]) -> Result<(), MonitorError> {
    let bad = |why: String| Err(MonitorError::NotJudged(format!("{metric}: {why}")));
    let mut seen = std::collections::BTreeSet::new();
    for s in series {
        if !seen.insert(&s.dimensions) {
            return bad(format!(
                "the series {:?} appears twice; its samples are not counted",
                s.dimensions
            ));
        }
        let mut minutes = std::collections::BTreeSet::new();
        for (minute, average) in &s.points {
            if let Some(value) = average
                && (!value.is_finite() || *value < 0.0)
            {
                return bad(format!("a sample of {value} is not a possible value"));
            }
            if let Some(m) = minute
                && !minutes.insert(*m)
            {
                return bad(format!(
                    "the minute {m} appears twice in one series; its samples are not counted"
                ));
            }
        }
    }
    Ok(())
}

/// Whether a status code counts as failed: 5xx, 408 (the model timed out) and 424 (the model
/// answered an error). 429 is the caller's excess, not the deployment's fault.
pub(crate) fn is_failure(status: &str) -> bool {
    status
        .trim()
        .parse::<u16>()
        .is_ok_and(|s| s >= 500 || s == 408 || s == 424)
}

/// Figures per deployment from `RequestsPerMinute` split by deployment and status code, and a
/// latency metric split by deployment. Requests are the sum of the per-series minute averages;
/// latency is weighted by each minute's requests, or (no requests matched) the plain mean of the
/// minutes that have a value.
pub(crate) fn endpoint_figures(
    requests: &[Series],
    latencies: &[Series],
) -> Result<EndpointFigures, MonitorError> {
    let mut totals: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut per_minute: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for s in requests {
        let Some(deployment) = s.deployment() else {
            continue;
        };
        let failed = s
            .dimensions
            .get("statuscode")
            .is_some_and(|c| is_failure(c));
        let total = totals.entry(deployment.clone()).or_default();
        for (minute, average) in &s.points {
            let n = average.unwrap_or(0.0);
            total.0 += n;
            if failed {
                total.1 += n;
            }
            if let Some(m) = minute {
                *per_minute.entry((deployment.clone(), *m)).or_default() += n;
            }
        }
    }
    let mut latency: BTreeMap<String, [f64; 4]> = BTreeMap::new();
    for s in latencies {
        let Some(deployment) = s.deployment() else {
            continue;
        };
        let sums = latency.entry(deployment.clone()).or_default();
        for (minute, average) in &s.points {
            let Some(value) = average else { continue };
            let weight = minute
                .and_then(|m| per_minute.get(&(deployment.clone(), m)).copied())
                .unwrap_or(0.0);
            sums[0] += value * weight;
            sums[1] += weight;
            sums[2] += value;
            sums[3] += 1.0;
        }
    }
    let mut figures = EndpointFigures::default();
    for name in totals.keys().chain(latency.keys()) {
        let (requests, errors) = totals.get(name).copied().unwrap_or_default();
        let latency_ms = latency
            .get(name)
            .and_then(|[weighted, weight, sum, count]| {
                if *weight > 0.0 {
                    Some(weighted / weight)
                } else {
                    (*count > 0.0).then(|| sum / count)
                }
            });
        if !requests.is_finite() || latency_ms.is_some_and(|l| !l.is_finite()) {
            return Err(MonitorError::NotJudged(format!(
                "the figures of {name} are too large to add up"
            )));
        }
        figures.by_deployment.insert(
            name.clone(),
            DeploymentFigures {
                requests: requests.round() as u64,
                errors: errors.round() as u64,
                latency_ms,
            },
        );
    }
    Ok(figures)
}

#[cfg(test)]
mod tests;
