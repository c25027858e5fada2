//! The quality gate: a model metric against bounds and against the model serving traffic now.
//! This file is the arithmetic (pure, table-tested); [`lookup`] reads the numbers from Azure ML.

pub mod lookup;

use serde::{Deserialize, Serialize};

use crate::config::gate::{GateSpec, Improvement, OnMissing};

/// The model serving traffic now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Champion {
    /// `name:version`.
    pub model: String,
    /// Its deployment.
    pub deployment: String,
    /// Its metric, when found.
    pub metric: Option<f64>,
}

/// The gate's numbers and verdict, as recorded on the version and returned to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateSummary {
    /// The metric's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The new version's value, when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Where the value was found (a tag, a property, a job's metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The model serving traffic now, when compared against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<Champion>,
    /// What the gate said; none when the lookup failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<GateVerdict>,
    /// What was checked, in words (accepted versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Why it was refused or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the numbers could not be read (a transient lookup failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The verdict's label in a [`GateSummary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateVerdict {
    /// Passed.
    Accepted,
    /// Shipped despite the gate (`autodeploy.force`, `evaluate --force`).
    Forced,
    /// Refused: final for the version.
    Rejected,
    /// `autodeploy.skip=true`: never shipped.
    Skip,
}

impl GateSummary {
    /// A summary of `metric` with nothing found or decided yet.
    pub fn of(metric: Option<String>) -> Self {
        GateSummary {
            metric,
            value: None,
            source: None,
            champion: None,
            verdict: None,
            notes: Vec::new(),
            reason: None,
            error: None,
        }
    }

    /// A lookup that failed transiently: no numbers, only the error.
    pub fn lookup_failed(error: &str) -> Self {
        GateSummary {
            error: Some(error.to_string()),
            ..GateSummary::of(None)
        }
    }
}

/// Model-version tags that override the gate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `autodeploy.force=true` (or `evaluate --force`): ship despite the gate.
    pub force: bool,
    /// `autodeploy.skip=true`: never ship.
    pub skip: bool,
}

/// The gate's answer, with the numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Ship it; the notes say what was checked.
    Accept {
        /// What was checked, in words.
        notes: Vec<String>,
        /// Shipped only because of an override.
        forced: bool,
    },
    /// Do not ship it, ever (for this version).
    Reject {
        /// Why, with the numbers.
        reason: String,
    },
    /// The version asked not to be shipped (`autodeploy.skip=true`).
    Skip {
        /// Why.
        reason: String,
    },
}

/// Decides. `candidate` is the new version's metric (non-finite values are treated as missing);
/// `champion` the live model, when there is one and `compare_to_live` is set.
pub fn evaluate(
    spec: &GateSpec,
    candidate: Option<f64>,
    champion: Option<&Champion>,
    overrides: Overrides,
) -> Verdict {
    if overrides.skip {
        return Verdict::Skip {
            reason: "the model version is tagged autodeploy.skip=true: never shipped".into(),
        };
    }
    let verdict = judge(spec, candidate.filter(|v| v.is_finite()), champion);
    match verdict {
        Verdict::Reject { reason } if overrides.force => Verdict::Accept {
            notes: vec![format!(
                "forced despite the gate (autodeploy.force): it said {reason}"
            )],
            forced: true,
        },
        other => other,
    }
}

fn judge(spec: &GateSpec, candidate: Option<f64>, champion: Option<&Champion>) -> Verdict {
    let metric = &spec.metric;
    let Some(value) = candidate else {
        return match spec.on_missing_metric {
            OnMissing::Reject => Verdict::Reject {
                reason: format!(
                    "rejected: metric {metric} not found for this version (on_missing_metric: reject)"
                ),
            },
            OnMissing::Allow => Verdict::Accept {
                notes: vec![format!(
                    "metric {metric} not found; allowed by on_missing_metric: allow"
                )],
                forced: false,
            },
        };
    };
    if let Some(min) = spec.min
        && value < min
    {
        return Verdict::Reject {
            reason: format!("rejected: {metric} {} < min {}", show(value), show(min)),
        };
    }
    if let Some(max) = spec.max
        && value > max
    {
        return Verdict::Reject {
            reason: format!("rejected: {metric} {} > max {}", show(value), show(max)),
        };
    }
    let mut notes = vec![format!("{metric} {} is within bounds", show(value))];
    if !spec.compare_to_live {
        return Verdict::Accept {
            notes,
            forced: false,
        };
    }
    let Some(champion) = champion else {
        notes.push("no champion (the endpoint serves no traffic): only the bounds apply".into());
        return Verdict::Accept {
            notes,
            forced: false,
        };
    };
    let Some(live) = champion.metric.filter(|v| v.is_finite()) else {
        notes.push(format!(
            "champion {} has no {metric}: only the bounds apply",
            champion.model
        ));
        return Verdict::Accept {
            notes,
            forced: false,
        };
    };
    let (needed, shown_improvement) = match spec.min_improvement {
        Improvement::Absolute(d) => (
            if spec.higher_is_better {
                live + d
            } else {
                live - d
            },
            show(d),
        ),
        Improvement::Relative(fraction) => {
            if live <= 0.0 {
                return Verdict::Reject {
                    reason: format!(
                        "rejected: a relative min_improvement needs a champion value > 0, champion {} has {metric} {}",
                        champion.model,
                        show(live)
                    ),
                };
            }
            (
                if spec.higher_is_better {
                    live * (1.0 + fraction)
                } else {
                    live * (1.0 - fraction)
                },
                format!("{}%", show(fraction * 100.0)),
            )
        }
    };
    let (better, op, sign) = if spec.higher_is_better {
        (value >= needed, "<", "+")
    } else {
        (value <= needed, ">", "-")
    };
    if !better {
        return Verdict::Reject {
            reason: format!(
                "rejected: {metric} {} {op} champion {} {} {sign} {shown_improvement}",
                show(value),
                champion.model,
                show(live)
            ),
        };
    }
    notes.push(format!(
        "{metric} {} vs champion {} {} (needed {} {})",
        show(value),
        champion.model,
        show(live),
        if spec.higher_is_better { "≥" } else { "≤" },
        show(needed)
    ));
    Verdict::Accept {
        notes,
        forced: false,
    }
}

/// Numbers as people write them: no float noise (0.1 + 0.2 shows as 0.3).
fn show(v: f64) -> String {
    let rounded = (v * 1e9).round() / 1e9;
    let text = format!("{rounded}");
    if text.contains('e') {
        format!("{v}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::gate::{MetricRun, MetricSource};

    fn spec(higher: bool) -> GateSpec {
        GateSpec {
            metric: "accuracy".into(),
            source: MetricSource::Auto,
            higher_is_better: higher,
            min: None,
            max: None,
            compare_to_live: true,
            min_improvement: Improvement::Absolute(0.0),
            on_missing_metric: OnMissing::Reject,
            champion_endpoint: Some("ep".into()),
            metric_run: MetricRun::Own,
        }
    }

    fn champ(v: Option<f64>) -> Champion {
        Champion {
            model: "fraud:12".into(),
            deployment: "blue".into(),
            metric: v,
        }
    }

    fn accepted(v: &Verdict) -> bool {
        matches!(v, Verdict::Accept { .. })
    }

    #[test]
    fn decisions_table() {
        let none = Overrides::default();
        let with = |f: &dyn Fn(&mut GateSpec)| {
            let mut s = spec(true);
            f(&mut s);
            s
        };
        type Case = (
            GateSpec,
            Option<f64>,
            Option<Champion>,
            Overrides,
            bool,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            // Bounds.
            (
                with(&|s| s.min = Some(0.8)),
                Some(0.79),
                None,
                none,
                false,
                "rejected: accuracy 0.79 < min 0.8",
            ),
            (
                with(&|s| s.min = Some(0.8)),
                Some(0.8),
                None,
                none,
                true,
                "within bounds",
            ),
            (
                with(&|s| s.max = Some(0.2)),
                Some(0.3),
                None,
                none,
                false,
                "rejected: accuracy 0.3 > max 0.2",
            ),
            // Champion, higher is better.
            (
                spec(true),
                Some(0.871),
                Some(champ(Some(0.893))),
                none,
                false,
                "rejected: accuracy 0.871 < champion fraud:12 0.893 + 0",
            ),
            (
                spec(true),
                Some(0.893),
                Some(champ(Some(0.893))),
                none,
                true,
                "needed ≥ 0.893",
            ),
            (
                spec(true),
                Some(0.95),
                Some(champ(Some(0.893))),
                none,
                true,
                "vs champion fraud:12",
            ),
            // Lower is better (e.g. RMSE).
            (
                spec(false),
                Some(1.2),
                Some(champ(Some(1.1))),
                none,
                false,
                "rejected: accuracy 1.2 > champion fraud:12 1.1 - 0",
            ),
            (
                spec(false),
                Some(1.0),
                Some(champ(Some(1.1))),
                none,
                true,
                "needed ≤ 1.1",
            ),
            // Improvement, absolute and relative.
            (
                with(&|s| s.min_improvement = Improvement::Absolute(0.01)),
                Some(0.9),
                Some(champ(Some(0.895))),
                none,
                false,
                "+ 0.01",
            ),
            (
                with(&|s| s.min_improvement = Improvement::Relative(0.01)),
                Some(0.91),
                Some(champ(Some(0.9))),
                none,
                true,
                "needed ≥ 0.909",
            ),
            (
                with(&|s| s.min_improvement = Improvement::Relative(0.01)),
                Some(0.905),
                Some(champ(Some(0.9))),
                none,
                false,
                "+ 1%",
            ),
            (
                with(&|s| s.min_improvement = Improvement::Relative(0.01)),
                Some(0.5),
                Some(champ(Some(0.0))),
                none,
                false,
                "needs a champion value > 0",
            ),
            (
                {
                    let mut s = spec(false);
                    s.min_improvement = Improvement::Relative(0.1);
                    s
                },
                Some(0.85),
                Some(champ(Some(1.0))),
                none,
                true,
                "needed ≤ 0.9",
            ),
            // Missing and non-finite metrics.
            (
                spec(true),
                None,
                Some(champ(Some(0.9))),
                none,
                false,
                "not found",
            ),
            (
                spec(true),
                Some(f64::NAN),
                Some(champ(Some(0.9))),
                none,
                false,
                "not found",
            ),
            (
                with(&|s| s.on_missing_metric = OnMissing::Allow),
                None,
                None,
                none,
                true,
                "allowed by on_missing_metric",
            ),
            (
                spec(true),
                Some(0.5),
                Some(champ(Some(f64::INFINITY))),
                none,
                true,
                "has no accuracy: only the bounds",
            ),
            // No champion; champion without the metric; comparison off.
            (
                with(&|s| s.min = Some(0.8)),
                Some(0.85),
                None,
                none,
                true,
                "no champion",
            ),
            (
                spec(true),
                Some(0.5),
                Some(champ(None)),
                none,
                true,
                "only the bounds apply",
            ),
            (
                with(&|s| s.compare_to_live = false),
                Some(0.1),
                Some(champ(Some(0.9))),
                none,
                true,
                "within bounds",
            ),
            // Overrides.
            (
                spec(true),
                Some(0.1),
                Some(champ(Some(0.9))),
                Overrides {
                    force: true,
                    skip: false,
                },
                true,
                "forced despite the gate",
            ),
            (
                spec(true),
                Some(0.99),
                Some(champ(Some(0.9))),
                Overrides {
                    force: false,
                    skip: true,
                },
                false,
                "autodeploy.skip=true",
            ),
            (
                spec(true),
                Some(0.99),
                None,
                Overrides {
                    force: true,
                    skip: true,
                },
                false,
                "never shipped",
            ),
        ];
        for (spec, candidate, champion, overrides, accept, needle) in cases {
            let verdict = evaluate(&spec, candidate, champion.as_ref(), overrides);
            let text = format!("{verdict:?}");
            assert_eq!(accepted(&verdict), accept, "{text}");
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
    }

    #[test]
    fn ties_with_the_champion_pass_when_no_improvement_is_required() {
        let v = evaluate(
            &spec(true),
            Some(0.9),
            Some(&champ(Some(0.9))),
            Overrides::default(),
        );
        assert!(accepted(&v));
    }
}
