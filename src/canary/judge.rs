//! `judge(spec, new, baseline, figures, window) -> Judgement`: pure, no I/O, no clock.
//!
//! The judgement carries its own explanation and the numbers it was made on; both are recorded
//! on the version's ledger record and shown by `status`. Nobody re-derives a reason.

use serde::{Deserialize, Serialize};

use super::spec::AnalysisSpec;
use crate::azure::monitor::{DeploymentFigures, EndpointFigures, LatencyStat, Window};

/// Room for rounding when a figure equals its limit (limits are inclusive).
const EPSILON: f64 = 1e-9;

/// What a judgement says about a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every limit held.
    Pass,
    /// A limit was exceeded.
    Fail,
    /// Too few requests (or no latency figures) to say.
    Inconclusive,
}

/// The limits a judgement applied, copied from the spec so the record stands alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// `max_error_rate`, a fraction.
    pub max_error_rate: Option<f64>,
    /// `max_error_rate_increase`, a fraction (percentage points over the baseline).
    pub max_error_rate_increase: Option<f64>,
    /// `latency`.
    pub latency: LatencyStat,
    /// `max_latency_ms`.
    pub max_latency_ms: Option<f64>,
    /// `max_latency_increase`, a fraction of the baseline's latency.
    pub max_latency_increase: Option<f64>,
    /// `min_requests`.
    pub min_requests: u64,
}

/// The numbers a judgement was made on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgedFigures {
    /// The minutes read.
    pub window: Window,
    /// Requests to the new deployment.
    pub requests: u64,
    /// Failed requests to the new deployment.
    pub errors: u64,
    /// `errors / requests`; `None` without requests.
    pub error_rate: Option<f64>,
    /// Requests to the baseline deployments together.
    pub baseline_requests: u64,
    /// The baseline's failed share; `None` without baseline requests.
    pub baseline_error_rate: Option<f64>,
    /// The new deployment's latency statistic, in milliseconds.
    pub latency_ms: Option<f64>,
    /// The baseline's: the request-weighted mean over its deployments.
    pub baseline_latency_ms: Option<f64>,
    /// The limits applied.
    pub thresholds: Thresholds,
}

/// A step's judgement: the verdict, one reason per check, and the figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// Pass, fail or inconclusive.
    pub verdict: Verdict,
    /// Why, one sentence per check made (or skipped).
    pub reasons: Vec<String>,
    /// The numbers.
    pub figures: JudgedFigures,
}

impl Judgement {
    /// One line for logs: the verdict and its reasons.
    pub fn summary(&self) -> String {
        let verdict = match self.verdict {
            Verdict::Pass => "passed",
            Verdict::Fail => "failed",
            Verdict::Inconclusive => "inconclusive",
        };
        format!(
            "canary analysis {verdict} ({}): {}",
            self.figures.window.timespan(),
            self.reasons.join("; ")
        )
    }
}

/// Judges `new_deployment` on `figures` against `spec`, relative to the `baseline` deployments
/// (the other live ones; the new one is left out if listed).
pub fn judge(
    spec: &AnalysisSpec,
    new_deployment: &str,
    baseline: &[String],
    figures: &EndpointFigures,
    window: &Window,
) -> Judgement {
    let new = figures.of(new_deployment);
    let base = baseline_figures(new_deployment, baseline, figures);
    let judged = JudgedFigures {
        window: *window,
        requests: new.requests,
        errors: new.errors,
        error_rate: rate(new.errors, new.requests),
        baseline_requests: base.requests,
        baseline_error_rate: rate(base.errors, base.requests),
        latency_ms: new.latency_ms,
        baseline_latency_ms: base.latency_ms,
        thresholds: Thresholds {
            max_error_rate: spec.max_error_rate,
            max_error_rate_increase: spec.max_error_rate_increase,
            latency: spec.latency,
            max_latency_ms: spec.max_latency_ms,
            max_latency_increase: spec.max_latency_increase,
            min_requests: spec.min_requests,
        },
    };
    let mut checks = Checks::default();
    if new.requests == 0 || new.requests < spec.min_requests {
        checks.inconclusive(if new.requests < spec.min_requests {
            format!(
                "{new_deployment} had {} in the window, fewer than min_requests {}",
                requests(new.requests),
                spec.min_requests
            )
        } else {
            format!("{new_deployment} had no requests in the window")
        });
        return checks.into_judgement(judged);
    }
    error_checks(spec, &judged, &mut checks);
    latency_checks(spec, new_deployment, &judged, &mut checks);
    checks.into_judgement(judged)
}

/// The baseline deployments' figures together: summed counts, request-weighted latency.
fn baseline_figures(
    new_deployment: &str,
    baseline: &[String],
    figures: &EndpointFigures,
) -> DeploymentFigures {
    let mut names: Vec<String> = baseline
        .iter()
        .map(|b| b.to_ascii_lowercase())
        .filter(|b| !b.eq_ignore_ascii_case(new_deployment))
        .collect();
    names.sort();
    names.dedup();
    let mut total = DeploymentFigures::default();
    let (mut weighted, mut weight) = (0.0, 0.0);
    for name in &names {
        let f = figures.of(name);
        // Saturating: counts come from upstream, and a sum must never wrap (or panic).
        total.requests = total.requests.saturating_add(f.requests);
        total.errors = total.errors.saturating_add(f.errors);
        if let Some(latency) = f.latency_ms
            && f.requests > 0
        {
            weighted += latency * f.requests as f64;
            weight += f.requests as f64;
        }
    }
    total.latency_ms = (weight > 0.0).then(|| weighted / weight);
    total
}

fn error_checks(spec: &AnalysisSpec, f: &JudgedFigures, checks: &mut Checks) {
    let Some(rate) = f.error_rate else { return };
    let shown = format!(
        "error rate {} ({} of {})",
        percent(rate),
        f.errors,
        requests(f.requests)
    );
    if let Some(max) = spec.max_error_rate {
        checks.limit(
            rate > max + EPSILON,
            format!("{shown} is above max_error_rate {}", percent(max)),
            format!("{shown} is within max_error_rate {}", percent(max)),
        );
    }
    if let Some(max) = spec.max_error_rate_increase {
        match f.baseline_error_rate {
            None => checks.note(
                "max_error_rate_increase not applied: the baseline had no requests in the window",
            ),
            Some(base) => {
                let increase = rate - base;
                let text = format!(
                    "error rate {} is {} points {} the baseline's {} (max_error_rate_increase {})",
                    percent(rate),
                    percent(increase.abs()).trim_end_matches('%'),
                    if increase < 0.0 { "below" } else { "above" },
                    percent(base),
                    percent(max)
                );
                checks.limit(increase > max + EPSILON, text.clone(), text);
            }
        }
    }
}

fn latency_checks(spec: &AnalysisSpec, new: &str, f: &JudgedFigures, checks: &mut Checks) {
    if spec.max_latency_ms.is_none() && spec.max_latency_increase.is_none() {
        return;
    }
    let stat = spec.latency.as_str();
    let Some(latency) = f.latency_ms else {
        checks.inconclusive(format!("no {stat} latency for {new} in the window"));
        return;
    };
    if let Some(max) = spec.max_latency_ms {
        checks.limit(
            latency > max + EPSILON,
            format!(
                "{stat} latency {} is above max_latency_ms {}",
                ms(latency),
                ms(max)
            ),
            format!(
                "{stat} latency {} is within max_latency_ms {}",
                ms(latency),
                ms(max)
            ),
        );
    }
    if let Some(max) = spec.max_latency_increase {
        match f.baseline_latency_ms {
            Some(base) if base > 0.0 => {
                let increase = latency / base - 1.0;
                let text = format!(
                    "{stat} latency {} is {} {} the baseline's {} (max_latency_increase {})",
                    ms(latency),
                    percent(increase.abs()),
                    if increase < 0.0 { "below" } else { "above" },
                    ms(base),
                    percent(max)
                );
                checks.limit(increase > max + EPSILON, text.clone(), text);
            }
            _ => checks.note(
                "max_latency_increase not applied: the baseline had no requests with latency in the window",
            ),
        }
    }
}

/// The checks made so far and what they found.
#[derive(Default)]
struct Checks {
    failed: bool,
    inconclusive: bool,
    failures: Vec<String>,
    others: Vec<String>,
}

impl Checks {
    fn limit(&mut self, exceeded: bool, failed: String, held: String) {
        if exceeded {
            self.failed = true;
            self.failures.push(failed);
        } else {
            self.others.push(held);
        }
    }

    fn inconclusive(&mut self, why: String) {
        self.inconclusive = true;
        self.others.push(why);
    }

    fn note(&mut self, why: &str) {
        self.others.push(why.to_string());
    }

    /// A failed limit decides; otherwise missing figures; otherwise a pass. Failures come first.
    fn into_judgement(self, figures: JudgedFigures) -> Judgement {
        let verdict = if self.failed {
            Verdict::Fail
        } else if self.inconclusive {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        };
        let mut reasons = self.failures;
        reasons.extend(self.others);
        Judgement {
            verdict,
            reasons,
            figures,
        }
    }
}

fn rate(errors: u64, requests: u64) -> Option<f64> {
    (requests > 0).then(|| errors as f64 / requests as f64)
}

fn requests(n: u64) -> String {
    if n == 1 {
        "1 request".into()
    } else {
        format!("{n} requests")
    }
}

/// A fraction as a percentage with at most two decimals: `0.0125` → `1.25%`.
fn percent(fraction: f64) -> String {
    let text = format!("{:.2}", fraction * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Milliseconds with at most one decimal: `812.34` → `812.3 ms`.
fn ms(value: f64) -> String {
    let text = format!("{value:.1}");
    format!("{} ms", text.trim_end_matches('0').trim_end_matches('.'))
}

#[cfg(test)]
mod tests;
