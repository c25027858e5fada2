//! The `rollout:` block of an `azureml:` rule: how traffic moves to a new deployment.

use serde_norway::Value;

use super::problems::{Walker, join, present};
use crate::canary::AnalysisSpec;

/// `rollout.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Mirror (optional) → canary → bake → 100%.
    BlueGreen,
    /// Mirror (optional) → each of `steps`, baked → 100%.
    Linear,
    /// 100% once the smoke test passes.
    AllAtOnce,
}

/// `rollout:`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RolloutSpec {
    /// Strategy.
    pub strategy: Strategy,
    /// Shadow traffic share during the mirror phase (0: no mirror phase), at most 50.
    pub mirror_percent: u8,
    /// Live traffic share during the canary phase.
    pub canary_percent: u8,
    /// How long the canary bakes (each Reconcile during it repeats the smoke test).
    pub bake_minutes: u32,
    /// How long the previous deployment stays (at 0%) so rollback is instant.
    pub retain_previous_minutes: u32,
    /// `linear`: the new deployment's share at each step (strictly increasing, below 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<u8>,
    /// `approval`: a person approves before 100%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Box<ApprovalSpec>>,
    /// `analysis`: each step judged on Azure Monitor metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Box<AnalysisSpec>>,
}

/// `rollout.approval`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApprovalSpec {
    /// The model version tag that approves when `true` (set after the approval was requested).
    pub tag: String,
    /// Not approved by then: rolled back.
    pub timeout_hours: f64,
    /// `distinct_approver`: the approver must not be the identity that registered the version
    /// (`systemData.createdBy`), and an approval by an OS user (no Azure identity) is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub distinct_approver: bool,
}

impl RolloutSpec {
    /// The new deployment's share at each step before 100%: the canary for blue-green, `steps`
    /// for linear, none for all-at-once.
    pub fn traffic_steps(&self) -> Vec<u32> {
        match self.strategy {
            Strategy::BlueGreen => vec![u32::from(self.canary_percent)],
            Strategy::Linear => self.steps.iter().map(|s| u32::from(*s)).collect(),
            Strategy::AllAtOnce => Vec::new(),
        }
    }
}

impl Strategy {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
            Strategy::Linear => "linear",
            Strategy::AllAtOnce => "all-at-once",
        }
    }
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            strategy: Strategy::BlueGreen,
            mirror_percent: 0,
            canary_percent: 10,
            bake_minutes: 15,
            retain_previous_minutes: 60,
            steps: Vec::new(),
            approval: None,
            analysis: None,
        }
    }
}

impl Walker<'_> {
    pub(super) fn rollout(&mut self, value: &Value, location: &str) -> Option<RolloutSpec> {
        let map = self.mapping(value, location)?;
        self.check_keys(
            map,
            &[
                "strategy",
                "mirror_percent",
                "canary_percent",
                "bake_minutes",
                "retain_previous_minutes",
                "steps",
                "approval",
                "analysis",
            ],
            location,
        );
        let mut spec = RolloutSpec::default();
        let strategies =
            [Strategy::BlueGreen, Strategy::Linear, Strategy::AllAtOnce].map(|s| (s.as_str(), s));
        let strategy = self.choice(map, "strategy", location, spec.strategy, &strategies);
        let mut ok = strategy.is_some();
        spec.strategy = strategy.unwrap_or(spec.strategy);
        let mut number = |key: &str, max: u64| -> Option<u64> {
            let n = present(map, key)?;
            match n.as_u64() {
                Some(n) if n <= max => Some(n),
                _ => {
                    self.problem(
                        &join(location, key),
                        format!("must be a whole number from 0 to {max}"),
                    );
                    ok = false;
                    None
                }
            }
        };
        if let Some(n) = number("mirror_percent", 50) {
            spec.mirror_percent = n as u8;
        }
        if let Some(n) = number("canary_percent", 99) {
            spec.canary_percent = n as u8;
        }
        if let Some(n) = number("bake_minutes", 7 * 24 * 60) {
            spec.bake_minutes = n as u32;
        }
        if let Some(n) = number("retain_previous_minutes", 30 * 24 * 60) {
            spec.retain_previous_minutes = n as u32;
        }
        if ok && spec.strategy == Strategy::BlueGreen && spec.canary_percent == 0 {
            self.problem(
                &join(location, "canary_percent"),
                "must be at least 1 for blue-green (or use strategy: all-at-once)",
            );
            ok = false;
        }
        match (present(map, "steps"), spec.strategy) {
            (Some(steps), Strategy::Linear) => match linear_steps(steps) {
                Ok(steps) => spec.steps = steps,
                Err(why) => {
                    self.problem(&join(location, "steps"), why);
                    ok = false;
                }
            },
            (Some(_), _) => {
                self.problem(&join(location, "steps"), "only applies to strategy: linear");
                ok = false;
            }
            (None, Strategy::Linear) => {
                self.problem(
                    &join(location, "steps"),
                    "strategy: linear needs its steps, e.g. [10, 30, 60]",
                );
                ok = false;
            }
            (None, _) => {}
        }
        if let Some(analysis) = present(map, "analysis") {
            match self.analysis(analysis, &join(location, "analysis"), spec.bake_minutes) {
                Some(a) if spec.traffic_steps().is_empty() => {
                    let _ = a;
                    self.problem(
                        &join(location, "analysis"),
                        "judges traffic steps: use strategy blue-green or linear",
                    );
                    ok = false;
                }
                Some(a) => spec.analysis = Some(Box::new(a)),
                None => ok = false,
            }
        }
        if let Some(approval) = present(map, "approval") {
            match self.approval(approval, &join(location, "approval")) {
                Some(a) => spec.approval = Some(Box::new(a)),
                None => ok = false,
            }
        }
        ok.then_some(spec)
    }

    fn approval(&mut self, value: &Value, location: &str) -> Option<ApprovalSpec> {
        let map = self.mapping(value, location)?;
        self.check_keys(
            map,
            &["tag", "timeout_hours", "distinct_approver"],
            location,
        );
        let tag = match present(map, "tag") {
            None => Some("autodeploy.approved".to_string()),
            Some(v) => match v.as_str().map(str::trim) {
                Some(t) if valid_tag_name(t) => Some(t.to_string()),
                _ => {
                    self.problem(
                        &join(location, "tag"),
                        "must be a tag name (1-256 characters, none of < > % & \\ ? /)",
                    );
                    None
                }
            },
        };
        let timeout_hours = match present(map, "timeout_hours") {
            None => Some(72.0),
            Some(v) => match v.as_f64() {
                Some(h) if h > 0.0 && h <= 24.0 * 365.0 => Some(h),
                _ => {
                    self.problem(
                        &join(location, "timeout_hours"),
                        "must be a number of hours above 0 (decimals allowed)",
                    );
                    None
                }
            },
        };
        let distinct_approver = match present(map, "distinct_approver") {
            None => Some(false),
            Some(v) => match v.as_bool() {
                Some(b) => Some(b),
                None => {
                    self.problem(
                        &join(location, "distinct_approver"),
                        "must be true or false",
                    );
                    None
                }
            },
        };
        Some(ApprovalSpec {
            tag: tag?,
            timeout_hours: timeout_hours?,
            distinct_approver: distinct_approver?,
        })
    }
}

/// `steps`: whole percentages, strictly increasing, each in (0, 100).
fn linear_steps(value: &Value) -> Result<Vec<u8>, String> {
    let items = value
        .as_sequence()
        .filter(|s| !s.is_empty())
        .ok_or("must be a list of percentages, e.g. [10, 30, 60]")?;
    let mut steps = Vec::new();
    for item in items {
        let n = percent(item)
            .filter(|n| (1.0..100.0).contains(n) && n.fract() == 0.0)
            .ok_or_else(|| {
                format!(
                    "{} is not a whole percentage from 1 to 99",
                    show_scalar(item)
                )
            })? as u8;
        if steps.last().is_some_and(|last| *last >= n) {
            return Err(format!(
                "must be strictly increasing, got {n} after {}",
                steps.last().unwrap_or(&0)
            ));
        }
        steps.push(n);
    }
    Ok(steps)
}

/// A percentage written as a number (`10`) or as text (`"10%"`).
pub(super) fn percent(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s
            .trim()
            .strip_suffix('%')
            .unwrap_or(s.trim())
            .trim()
            .parse()
            .ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite())
}

fn show_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        _ => "the value".into(),
    }
}

/// Azure resource tag names: 1-256 characters, none of `< > % & \ ? /` (model tags follow ARM's rule).
fn valid_tag_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 256
        && !name.contains(['<', '>', '%', '&', '\\', '?', '/'])
}

#[cfg(test)]
mod tests {
    use crate::config::tests::problems_or_none;

    /// The problems of a direct-deployment rule with this `rollout:` (none when valid).
    fn rollout(spec: &str) -> Vec<String> {
        problems_or_none(&format!(
            "rules: [{{name: a, models: [x], azureml: {{endpoint: churn-ep, deployment: examples/deployments/churn.yml, rollout: {spec}}}}}]"
        ))
    }

    #[test]
    fn blue_green_needs_a_canary_share() {
        assert_eq!(
            rollout("{strategy: blue-green, canary_percent: 0}"),
            [
                "rules[0] (a).azureml.rollout.canary_percent: must be at least 1 for blue-green (or use strategy: all-at-once)"
            ]
        );
    }

    #[test]
    fn linear_steps_and_approval_are_checked() {
        let cases = [
            ("{strategy: linear, steps: [10, 30, 60]}", vec![]),
            ("{strategy: linear, steps: [\"10%\", 50]}", vec![]),
            (
                "{strategy: linear}",
                vec![
                    "rules[0] (a).azureml.rollout.steps: strategy: linear needs its steps, e.g. [10, 30, 60]",
                ],
            ),
            (
                "{strategy: linear, steps: [30, 10]}",
                vec![
                    "rules[0] (a).azureml.rollout.steps: must be strictly increasing, got 10 after 30",
                ],
            ),
            (
                "{strategy: linear, steps: [10, 100]}",
                vec![
                    "rules[0] (a).azureml.rollout.steps: 100 is not a whole percentage from 1 to 99",
                ],
            ),
            (
                "{strategy: linear, steps: [0, 50]}",
                vec![
                    "rules[0] (a).azureml.rollout.steps: 0 is not a whole percentage from 1 to 99",
                ],
            ),
            (
                "{strategy: blue-green, steps: [10]}",
                vec!["rules[0] (a).azureml.rollout.steps: only applies to strategy: linear"],
            ),
            (
                "{approval: {tag: autodeploy.approved, timeout_hours: 0.5}}",
                vec![],
            ),
            (
                "{approval: {tag: \"a/b\", timeout_hours: 0}}",
                vec![
                    "rules[0] (a).azureml.rollout.approval.tag: must be a tag name (1-256 characters, none of < > % & \\ ? /)",
                    "rules[0] (a).azureml.rollout.approval.timeout_hours: must be a number of hours above 0 (decimals allowed)",
                ],
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(rollout(spec), want, "{spec}");
        }
    }

    #[test]
    fn unknown_strategies_and_out_of_range_numbers_are_rejected() {
        assert_eq!(
            rollout("{strategy: red, mirror_percent: 51}"),
            [
                "rules[0] (a).azureml.rollout.strategy: must be blue-green, linear or all-at-once, got \"red\"",
                "rules[0] (a).azureml.rollout.mirror_percent: must be a whole number from 0 to 50",
            ]
        );
    }
}
