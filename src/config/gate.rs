//! The `gate:` key of a rule and the top-level `notify:` list.

use serde::{Deserialize, Serialize};

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

/// A notification format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyFormat {
    /// An Adaptive Card for Teams Workflows webhooks.
    Teams,
    /// A Slack incoming-webhook message.
    Slack,
    /// A plain JSON document.
    Raw,
}

/// One `notify:` entry. The URL is a secret: it is resolved at start from `url_env` (or taken
/// from `url`) and never printed.
#[derive(Clone)]
pub struct NotifyTarget {
    /// A label for logs and records: the setting name, or `notify[N]`.
    pub label: String,
    /// The webhook URL (`None`: `url_env` names an unset setting, reported by `check-config`).
    pub url: Option<secrecy::SecretString>,
    /// Format.
    pub format: NotifyFormat,
    /// Outcomes that trigger it.
    pub on: Vec<String>,
}

impl std::fmt::Debug for NotifyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyTarget")
            .field("label", &self.label)
            .field("format", &self.format)
            .field("on", &self.on)
            .finish_non_exhaustive()
    }
}

/// Outcomes a notification can follow.
pub const NOTIFY_OUTCOMES: &[&str] = &[
    "rejected",
    "failed",
    "rolled_back",
    "succeeded",
    "dispatched",
    "stale",
    "skipped",
];

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
