//! The `rollout:` block of an `azureml:` rule: how traffic moves to a new deployment.

use serde_norway::Value;

use super::problems::{Walker, join, present};

/// `rollout.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Mirror (optional) → canary → bake → 100%.
    BlueGreen,
    /// 100% once the smoke test passes.
    AllAtOnce,
}

/// `rollout:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
}

impl Strategy {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
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
            ],
            location,
        );
        let mut spec = RolloutSpec::default();
        let strategies = [Strategy::BlueGreen, Strategy::AllAtOnce].map(|s| (s.as_str(), s));
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
        ok.then_some(spec)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::problems;

    /// The problems of a direct-deployment rule with this `rollout:`.
    fn rollout(spec: &str) -> Vec<String> {
        problems(&format!(
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
    fn unknown_strategies_and_out_of_range_numbers_are_rejected() {
        assert_eq!(
            rollout("{strategy: red, mirror_percent: 51}"),
            [
                "rules[0] (a).azureml.rollout.strategy: must be blue-green or all-at-once, got \"red\"",
                "rules[0] (a).azureml.rollout.mirror_percent: must be a whole number from 0 to 50",
            ]
        );
    }
}
