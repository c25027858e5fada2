//! The `gate:` key of a rule: the quality gate a model version must pass before its action runs.

use serde::{Deserialize, Serialize};
use serde_norway::Value;

use super::azureml::valid_azureml_name;
use super::problems::{Walker, join, present};
// The `notify:` types' first home: `crate::config::gate::NotifyTarget` and friends keep working.
pub use super::notify::{NOTIFY_OUTCOMES, NotifyFormat, NotifyTarget};

/// Where a metric comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricSource {
    /// Tags, then properties, then MLflow.
    Auto,
    /// Model version tags.
    Tags,
    /// Model version properties.
    Properties,
    /// The MLflow run of the model's training job.
    Mlflow,
}

/// Which MLflow run holds the metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricRun {
    /// The model version's job itself.
    #[serde(rename = "self")]
    Own,
    /// Its parent (pipeline) run.
    Parent,
    /// The child run (pipeline step) with this name.
    Child(String),
}

/// How much better the challenger must be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Improvement {
    /// In the metric's unit.
    Absolute(f64),
    /// A fraction of the champion's value (`"1%"` → 0.01).
    Relative(f64),
}

/// What to do when the challenger's metric cannot be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Refuse the version.
    Reject,
    /// Ship it (bounds and comparison cannot apply).
    Allow,
}

/// A rule's quality gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateSpec {
    /// Metric name.
    pub metric: String,
    /// Where to look.
    pub source: MetricSource,
    /// Direction.
    pub higher_is_better: bool,
    /// Absolute lower bound.
    pub min: Option<f64>,
    /// Absolute upper bound.
    pub max: Option<f64>,
    /// Compare with the model serving traffic now.
    pub compare_to_live: bool,
    /// Required improvement over the champion.
    pub min_improvement: Improvement,
    /// Missing metric policy.
    pub on_missing_metric: OnMissing,
    /// The endpoint whose champion to compare with (github rules; azureml rules use their own).
    pub champion_endpoint: Option<String>,
    /// Which MLflow run.
    pub metric_run: MetricRun,
}

/// Parses `"1%"` or a number.
pub fn parse_improvement(value: &serde_norway::Value) -> Result<Improvement, String> {
    match value {
        serde_norway::Value::Number(n) => n
            .as_f64()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Improvement::Absolute)
            .ok_or_else(|| "must be a number ≥ 0 or a percentage such as \"1%\"".to_string()),
        serde_norway::Value::String(s) => {
            let text = s.trim();
            match text.strip_suffix('%') {
                Some(pct) => pct
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(|v| Improvement::Relative(v / 100.0))
                    .ok_or_else(|| format!("{text:?} is not a percentage such as \"1%\"")),
                None => text
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(Improvement::Absolute)
                    .ok_or_else(|| format!("{text:?} is not a number ≥ 0 or a percentage")),
            }
        }
        _ => Err("must be a number ≥ 0 or a percentage such as \"1%\"".into()),
    }
}

impl Walker<'_> {
    /// `own_endpoint`: the rule's own endpoint (azureml rules), the champion by default.
    pub(super) fn gate(
        &mut self,
        value: &Value,
        location: &str,
        own_endpoint: Option<String>,
    ) -> Option<GateSpec> {
        let map = self.mapping(value, location)?;
        self.check_keys(
            map,
            &[
                "metric",
                "source",
                "higher_is_better",
                "min",
                "max",
                "compare_to_live",
                "min_improvement",
                "on_missing_metric",
                "champion_endpoint",
                "metric_run",
            ],
            location,
        );
        let mut ok = true;
        let metric = self.string(map, "metric", location, true);
        let source = self.choice(
            map,
            "source",
            location,
            MetricSource::Auto,
            &[
                ("auto", MetricSource::Auto),
                ("tags", MetricSource::Tags),
                ("properties", MetricSource::Properties),
                ("mlflow", MetricSource::Mlflow),
            ],
        );
        let higher_is_better = self.flag(map, "higher_is_better", location, true);
        let champion_endpoint = match present(map, "champion_endpoint") {
            None => Some(None),
            Some(Value::String(e)) if valid_azureml_name(e.trim()) => {
                Some(Some(e.trim().to_string()))
            }
            Some(_) => {
                self.problem(
                    &join(location, "champion_endpoint"),
                    "must be an online endpoint name",
                );
                None
            }
        };
        let endpoint_known = own_endpoint.is_some() || matches!(champion_endpoint, Some(Some(_)));
        let compare_to_live = self.flag(map, "compare_to_live", location, endpoint_known);
        if compare_to_live == Some(true) && !endpoint_known {
            self.problem(
                &join(location, "compare_to_live"),
                "needs champion_endpoint: the endpoint whose live model is the champion (azureml rules use their own endpoint)",
            );
            ok = false;
        }
        let mut bound = |key: &str| {
            let v = present(map, key)?;
            match v.as_f64().filter(|f| f.is_finite()) {
                Some(f) => Some(f),
                None => {
                    self.problem(&join(location, key), "must be a number");
                    ok = false;
                    None
                }
            }
        };
        let min = bound("min");
        let max = bound("max");
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            self.problem(location, format!("min ({lo}) is greater than max ({hi})"));
            ok = false;
        }
        let min_improvement = match present(map, "min_improvement") {
            None => Some(Improvement::Absolute(0.0)),
            Some(v) => parse_improvement(v)
                .map_err(|e| self.problem(&join(location, "min_improvement"), e))
                .ok(),
        };
        let on_missing_metric = self.choice(
            map,
            "on_missing_metric",
            location,
            OnMissing::Reject,
            &[("reject", OnMissing::Reject), ("allow", OnMissing::Allow)],
        );
        let metric_run = self.metric_run(map.get("metric_run"), location);
        if !ok {
            return None;
        }
        Some(GateSpec {
            metric: metric?.trim().to_string(),
            source: source?,
            higher_is_better: higher_is_better?,
            min,
            max,
            compare_to_live: compare_to_live?,
            min_improvement: min_improvement?,
            on_missing_metric: on_missing_metric?,
            champion_endpoint: champion_endpoint?.or(own_endpoint),
            metric_run: metric_run?,
        })
    }

    /// `metric_run:`: `self` (the default), `parent` or `child:<step-name>`.
    fn metric_run(&mut self, value: Option<&Value>, location: &str) -> Option<MetricRun> {
        match value.and_then(Value::as_str).map(str::trim) {
            None | Some("self") => Some(MetricRun::Own),
            Some("parent") => Some(MetricRun::Parent),
            Some(other) => match other.strip_prefix("child:").map(str::trim) {
                Some(step) if !step.is_empty() => Some(MetricRun::Child(step.to_string())),
                _ => {
                    self.problem(
                        &join(location, "metric_run"),
                        format!("must be self, parent or child:<step-name>, got {other:?}"),
                    );
                    None
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::problems;

    const GITHUB_RULE: &str = "name: a, models: [x], github: {repository: o/r, event_type: e}";

    #[test]
    fn gate_choices_and_flags_name_what_is_allowed() {
        let found = problems(&format!(
            "rules: [{{{GITHUB_RULE}, gate: {{metric: auc, source: bogus, on_missing_metric: maybe, higher_is_better: yes}}}}]"
        ));
        assert_eq!(
            found,
            [
                "rules[0] (a).gate.source: must be auto, tags, properties or mlflow, got \"bogus\"",
                "rules[0] (a).gate.higher_is_better: must be true or false",
                "rules[0] (a).gate.on_missing_metric: must be reject or allow, got \"maybe\"",
            ]
        );
    }

    #[test]
    fn comparing_to_live_needs_an_endpoint() {
        let found = problems(&format!(
            "rules: [{{{GITHUB_RULE}, gate: {{metric: auc, compare_to_live: true}}}}]"
        ));
        assert!(found[0].starts_with("rules[0] (a).gate.compare_to_live: needs champion_endpoint"));
    }
}
