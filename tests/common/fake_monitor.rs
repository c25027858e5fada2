//! A fake Azure Monitor metrics API for managed online endpoints, reached through the fake ARM
//! (`GET {endpointId}/providers/Microsoft.Insights/metrics`). It answers the real response shape
//! (`shared/reference/azure-monitor-metrics.md`) from scripted traffic: per deployment, per minute,
//! requests per status code and a latency. It honours `metricnames`, `timespan`, `interval`,
//! `aggregation`, `top` (default 10) and `$filter` (`dim eq '*'` splits, `dim eq 'v'` filters,
//! `or` within one dimension, `and` between them), and reproduces the counting trap: dimensions
//! the filter does not name are collapsed into Average = Sum / Count. Every call is recorded; a
//! wrong api-version, a missing timespan or token, or another grain is recorded as a violation.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const API_VERSION: &str = "2024-02-01";
const REQUESTS: &str = "RequestsPerMinute";
const LATENCIES: [&str; 5] = [
    "RequestLatency",
    "RequestLatency_P50",
    "RequestLatency_P90",
    "RequestLatency_P95",
    "RequestLatency_P99",
];
const REQUEST_DIMENSIONS: [&str; 4] = [
    "deployment",
    "statuscode",
    "statuscodeclass",
    "modelstatuscode",
];

/// One deployment's minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Minute {
    /// Requests by the status code the caller got.
    pub requests: BTreeMap<u16, f64>,
    /// The latency every latency statistic answers (`None`: no sample, a NULL point).
    pub latency_ms: Option<f64>,
}

/// One deployment's traffic: the same every minute, except the minutes scripted one by one.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// Every complete minute not in `minutes` (none when `None`).
    pub steady: Option<Minute>,
    /// By minute (Unix time of its start).
    pub minutes: BTreeMap<i64, Minute>,
}

/// One metrics request.
#[derive(Debug, Clone)]
pub struct MonitorCall {
    /// The resource asked about (the path before `/providers/Microsoft.Insights/metrics`).
    pub resource: String,
    /// The decoded query, in order.
    pub query: Vec<(String, String)>,
}

impl MonitorCall {
    /// The first value of `key` in the query.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
pub struct MonitorState {
    /// Scripted traffic by deployment name.
    pub deployments: BTreeMap<String, Traffic>,
    /// The next N calls answer `fail_status` (503 when 0; 429 and 529 carry `Retry-After: 1`).
    pub fail_next: u32,
    pub fail_status: u16,
    /// Every call answers this status (401, 403 or 400) with ARM's error body.
    pub refuse: Option<u16>,
    /// This metric answers HTTP 200 with this `errorCode` and no series.
    pub metric_error: Option<(String, String)>,
    /// Steady minutes this recent (before the current minute) have no data yet.
    pub lag_minutes: i64,
    /// Every call, in order.
    pub calls: Vec<MonitorCall>,
    /// Rules the client broke.
    pub violations: Vec<String>,
}

impl MonitorState {
    /// One deployment serving `requests_per_minute` every minute, `error_share` of them 500s,
    /// at `latency_ms`.
    pub fn steady(
        deployment: &str,
        requests_per_minute: u32,
        error_share: f64,
        latency_ms: f64,
    ) -> Self {
        let mut state = MonitorState::default();
        state.set_steady(deployment, requests_per_minute, error_share, latency_ms);
        state
    }

    /// Adds (or replaces) a steady deployment; see [`MonitorState::steady`].
    pub fn set_steady(
        &mut self,
        deployment: &str,
        requests_per_minute: u32,
        error_share: f64,
        latency_ms: f64,
    ) {
        let total = f64::from(requests_per_minute);
        let errors = (total * error_share).round();
        self.set_steady_codes(
            deployment,
            &[(200, total - errors), (500, errors)],
            Some(latency_ms),
        );
    }

    /// A steady deployment with these `(status, requests per minute)`.
    pub fn set_steady_codes(
        &mut self,
        deployment: &str,
        codes: &[(u16, f64)],
        latency_ms: Option<f64>,
    ) {
        let requests = codes.iter().filter(|(_, n)| *n > 0.0).copied().collect();
        self.deployments
            .entry(deployment.to_string())
            .or_default()
            .steady = Some(Minute {
            requests,
            latency_ms,
        });
    }

    /// Scripts one minute of one deployment.
    pub fn set_minute(&mut self, deployment: &str, minute: OffsetDateTime, data: Minute) {
        let start = minute.unix_timestamp().div_euclid(60) * 60;
        self.deployments
            .entry(deployment.to_string())
            .or_default()
            .minutes
            .insert(start, data);
    }

    /// The calls for `metric`.
    pub fn calls_for(&self, metric: &str) -> Vec<&MonitorCall> {
        self.calls
            .iter()
            .filter(|c| {
                c.param("metricnames")
                    .is_some_and(|m| m.eq_ignore_ascii_case(metric))
            })
            .collect()
    }

    /// A deployment's minute, if it has data then.
    fn minute(&self, deployment: &str, start: i64, now: i64) -> Option<&Minute> {
        let traffic = self.deployments.get(deployment)?;
        traffic.minutes.get(&start).or_else(|| {
            let complete = now.div_euclid(60) * 60 - self.lag_minutes * 60;
            traffic.steady.as_ref().filter(|_| start < complete)
        })
    }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    if status.as_u16() == 429 || status.as_u16() == 529 {
        response
            .headers_mut()
            .insert("retry-after", "1".parse().unwrap());
    }
    response
}

/// One clause of `$filter`: a dimension and the values it may take (`None`: any, and split).
#[derive(Debug)]
struct Clause {
    dimension: String,
    values: Option<Vec<String>>,
    negated: bool,
}

fn parse_filter(filter: &str) -> Result<Vec<Clause>, String> {
    let mut clauses = Vec::new();
    for group in filter.split(" and ") {
        let mut clause: Option<Clause> = None;
        for term in group.split(" or ") {
            let parts: Vec<&str> = term.trim().splitn(3, ' ').collect();
            let [dimension, op, value] = parts[..] else {
                return Err(format!("cannot parse filter term {term:?}"));
            };
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .ok_or_else(|| format!("filter values are quoted: {term:?}"))?;
            let negated = match op {
                "eq" => false,
                "ne" => true,
                other => return Err(format!("unsupported operator {other:?}")),
            };
            let dimension = dimension.to_ascii_lowercase();
            let c = clause.get_or_insert(Clause {
                dimension: dimension.clone(),
                values: Some(Vec::new()),
                negated,
            });
            if c.dimension != dimension {
                return Err(format!(
                    "'or' joins values of one dimension only: {group:?}"
                ));
            }
            match (value, c.values.as_mut()) {
                ("*", _) => c.values = None,
                (v, Some(values)) => values.push(v.to_ascii_lowercase()),
                (_, None) => {}
            }
        }
        clauses.extend(clause);
    }
    Ok(clauses)
}

/// Answers one metrics request.
pub fn handle(state: &mut MonitorState, uri: &Uri, headers: &HeaderMap) -> Response {
    let path = uri.path();
    let resource = match path
        .to_ascii_lowercase()
        .find("/providers/microsoft.insights/metrics")
    {
        Some(i) => path[..i].to_string(),
        None => return error(404, "NotFound", "not a metrics path"),
    };
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let call = MonitorCall {
        resource: resource.clone(),
        query,
    };
    state.calls.push(call.clone());

    let versions: Vec<&str> = call
        .query
        .iter()
        .filter(|(k, _)| k == "api-version")
        .map(|(_, v)| v.as_str())
        .collect();
    if versions != [API_VERSION] {
        state.violations.push(format!(
            "metrics read with api-version {versions:?}, not [{API_VERSION:?}]"
        ));
        return error(
            400,
            "InvalidApiVersionParameter",
            &format!("The api-version '{}' is invalid.", versions.join(",")),
        );
    }
    if !headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "))
    {
        state
            .violations
            .push("metrics read without a bearer token".into());
        return error(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        );
    }
    if let Some(status) = state.refuse {
        return match status {
            401 | 403 => error(
                status,
                "AuthorizationFailed",
                &format!(
                    "The client 'f1e2' with object id 'f1e2' does not have authorization to perform action 'microsoft.insights/metrics/read' over scope '{resource}/providers/microsoft.insights' or the scope is invalid."
                ),
            ),
            other => error(other, "BadRequest", "Refused by the test."),
        };
    }
    if state.fail_next > 0 {
        state.fail_next -= 1;
        let status = if state.fail_status == 0 {
            503
        } else {
            state.fail_status
        };
        return error(
            status,
            "ServiceUnavailable",
            "The metrics backend is busy (scripted).",
        );
    }
    match answer(state, &call) {
        Ok(body) => axum::Json(body).into_response(),
        Err((status, message)) => error(status, "BadRequest", &message),
    }
}

fn answer(state: &mut MonitorState, call: &MonitorCall) -> Result<Value, (u16, String)> {
    let bad = |m: String| (400, m);
    let names: Vec<&str> = call
        .param("metricnames")
        .unwrap_or("")
        .split(',')
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Err(bad("metricnames is required".into()));
    }
    let known: Vec<&str> = if call.resource.to_ascii_lowercase().contains("/deployments/") {
        Vec::new() // request metrics exist only on the endpoint
    } else {
        std::iter::once(REQUESTS).chain(LATENCIES).collect()
    };
    let mut metrics = Vec::new();
    for name in &names {
        match known.iter().find(|k| k.eq_ignore_ascii_case(name)) {
            Some(k) => metrics.push(*k),
            None => {
                return Err(bad(format!(
                    "Failed to find metric configuration for provider: Microsoft.MachineLearningServices, resource Type: workspaces/onlineEndpoints, metric: {name}, Valid metrics: {}",
                    known.join(",")
                )));
            }
        }
    }
    let interval = call.param("interval").unwrap_or("PT1M");
    if !interval.eq_ignore_ascii_case("PT1M") {
        state
            .violations
            .push(format!("metrics read with interval {interval}"));
        return Err(bad(format!(
            "Invalid time grain {interval} (the fake answers PT1M only)"
        )));
    }
    let Some(timespan) = call.param("timespan") else {
        state
            .violations
            .push("metrics read without a timespan".into());
        return Err(bad("the fake needs a timespan".into()));
    };
    let (start, end) = timespan
        .split_once('/')
        .and_then(|(s, e)| {
            Some((
                OffsetDateTime::parse(s, &Rfc3339).ok()?,
                OffsetDateTime::parse(e, &Rfc3339).ok()?,
            ))
        })
        .ok_or_else(|| bad(format!("Invalid timespan {timespan}")))?;
    let filter = parse_filter(call.param("$filter").unwrap_or("")).map_err(bad)?;
    let top: usize = call.param("top").and_then(|t| t.parse().ok()).unwrap_or(10);
    let averaged = call.param("aggregation").is_none_or(|a| {
        a.to_ascii_lowercase()
            .split(',')
            .any(|x| x.trim() == "average")
    });
    let first = start.unix_timestamp().div_euclid(60) * 60;
    let minutes: Vec<i64> = (first..end.unix_timestamp()).step_by(60).collect();
    let mut value = Vec::new();
    for metric in metrics {
        let mut entry = json!({
            "id": format!("{}/providers/Microsoft.Insights/metrics/{metric}", call.resource),
            "type": "Microsoft.Insights/metrics",
            "name": {"value": metric, "localizedValue": metric},
            "displayDescription": "",
            "unit": if metric == REQUESTS { "Count" } else { "MilliSeconds" },
            "errorCode": "Success",
            "timeseries": [],
        });
        let scripted_error = state
            .metric_error
            .as_ref()
            .filter(|(m, _)| m.eq_ignore_ascii_case(metric));
        if let Some((_, code)) = scripted_error {
            entry["errorCode"] = json!(code);
            entry["errorMessage"] = json!("Scripted metric error.");
        } else if !averaged {
            entry["errorCode"] = json!("InvalidSamplingType");
            entry["errorMessage"] =
                json!("Sampling type is not found. Valid sampling types: Average");
        } else {
            let allowed: &[&str] = if metric == REQUESTS {
                &REQUEST_DIMENSIONS
            } else {
                &["deployment"]
            };
            if let Some(c) = filter
                .iter()
                .find(|c| !allowed.contains(&c.dimension.as_str()))
            {
                return Err(bad(format!(
                    "Metric: {metric} does not support requested dimension combination: {}",
                    c.dimension
                )));
            }
            entry["timeseries"] = json!(timeseries(state, metric, &filter, &minutes, top));
        }
        value.push(entry);
    }
    Ok(json!({
        "cost": minutes.len() * names.len(),
        "timespan": timespan,
        "interval": "PT1M",
        "namespace": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "resourceregion": "westeurope",
        "value": value,
    }))
}

/// A series' split dimensions and their values.
type GroupKey = Vec<(String, String)>;

/// The series of `metric`: samples per (deployment, status) combination and minute, filtered,
/// grouped by the split dimensions and averaged within each group (Sum / Count).
fn timeseries(
    state: &MonitorState,
    metric: &str,
    filter: &[Clause],
    minutes: &[i64],
    top: usize,
) -> Vec<Value> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut groups: BTreeMap<GroupKey, BTreeMap<i64, (f64, u32)>> = BTreeMap::new();
    for deployment in state.deployments.keys() {
        for &minute in minutes {
            let Some(data) = state.minute(deployment, minute, now) else {
                continue;
            };
            let samples: Vec<(BTreeMap<&str, String>, f64)> = if metric == REQUESTS {
                data.requests
                    .iter()
                    .map(|(code, n)| {
                        let dims = BTreeMap::from([
                            ("deployment", deployment.clone()),
                            ("statuscode", code.to_string()),
                            ("statuscodeclass", format!("{}xx", code / 100)),
                            (
                                "modelstatuscode",
                                if *code == 424 {
                                    "500".into()
                                } else {
                                    code.to_string()
                                },
                            ),
                        ]);
                        (dims, *n)
                    })
                    .collect()
            } else {
                data.latency_ms
                    .map(|l| (BTreeMap::from([("deployment", deployment.clone())]), l))
                    .into_iter()
                    .collect()
            };
            for (dims, sample) in samples {
                let kept = filter.iter().all(|c| {
                    let v = dims
                        .get(c.dimension.as_str())
                        .map(|v| v.to_ascii_lowercase())
                        .unwrap_or_default();
                    match &c.values {
                        None => true,
                        Some(values) => values.contains(&v) != c.negated,
                    }
                });
                if !kept {
                    continue;
                }
                let key = filter
                    .iter()
                    .map(|c| {
                        (
                            c.dimension.clone(),
                            dims.get(c.dimension.as_str()).cloned().unwrap_or_default(),
                        )
                    })
                    .collect();
                let cell = groups.entry(key).or_default().entry(minute).or_default();
                cell.0 += sample;
                cell.1 += 1;
            }
        }
    }
    if groups.is_empty() && filter.is_empty() {
        groups.insert(Vec::new(), BTreeMap::new());
    }
    groups
        .into_iter()
        .take(top)
        .map(|(key, cells)| {
            let data: Vec<Value> = minutes
                .iter()
                .map(|m| {
                    let t = OffsetDateTime::from_unix_timestamp(*m).unwrap().format(&Rfc3339).unwrap();
                    match cells.get(m) {
                        Some((sum, count)) => json!({"timeStamp": t, "average": sum / f64::from(*count)}),
                        None if metric == REQUESTS => json!({"timeStamp": t, "average": 0.0}),
                        None => json!({"timeStamp": t}),
                    }
                })
                .collect();
            let metadata: Vec<Value> = key
                .iter()
                .map(|(name, value)| json!({"name": {"value": name, "localizedValue": name}, "value": value}))
                .collect();
            json!({"metadatavalues": metadata, "data": data})
        })
        .collect()
}
