//! The top-level `notify:` list: webhooks that announce outcomes (Teams, Slack or raw JSON).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_norway::Value;

use super::problems::{Walker, join, present};

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
    pub url: Option<SecretString>,
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
    "awaiting_approval",
    "run_succeeded",
    "run_failed",
];

impl Walker<'_> {
    pub(super) fn notify(&mut self, value: &Value) -> Vec<NotifyTarget> {
        let Value::Sequence(items) = value else {
            self.problem("notify", "expected a list of notification targets");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let location = format!("notify[{i}]");
            if let Some(target) = self.notify_target(item, &location) {
                out.push(target);
            }
        }
        out
    }

    fn notify_target(&mut self, item: &Value, location: &str) -> Option<NotifyTarget> {
        let map = self.mapping(item, location)?;
        self.check_keys(map, &["url_env", "url", "format", "on"], location);
        let (label, url) = match (
            map.get("url_env").and_then(Value::as_str),
            map.get("url").and_then(Value::as_str),
        ) {
            (Some(name), None) => {
                let name = name.trim().to_string();
                let value = self.env.get(&name);
                if value.is_none() {
                    self.problem(
                        &join(location, "url_env"),
                        format!("the setting {name} is not set"),
                    );
                }
                (name, value.map(SecretString::from))
            }
            (None, Some(url)) => (
                location.to_string(),
                Some(SecretString::from(url.trim().to_string())),
            ),
            _ => {
                self.problem(
                    location,
                    "set url_env (the app setting holding the webhook URL, recommended) or url",
                );
                return None;
            }
        };
        let format = self.choice(
            map,
            "format",
            location,
            NotifyFormat::Raw,
            &[
                ("teams", NotifyFormat::Teams),
                ("slack", NotifyFormat::Slack),
                ("raw", NotifyFormat::Raw),
            ],
        )?;
        let on: Vec<String> = match present(map, "on") {
            None => vec![
                "rejected".into(),
                "failed".into(),
                "rolled_back".into(),
                "run_failed".into(),
            ],
            Some(Value::Sequence(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(_) => {
                self.problem(&join(location, "on"), "must be a list of outcomes");
                return None;
            }
        };
        for outcome in &on {
            if !NOTIFY_OUTCOMES.contains(&outcome.as_str()) {
                self.problem(
                    &join(location, "on"),
                    format!(
                        "unknown outcome {outcome:?}; known: {}",
                        NOTIFY_OUTCOMES.join(", ")
                    ),
                );
            }
        }
        Some(NotifyTarget {
            label,
            url,
            format,
            on,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use secrecy::ExposeSecret;

    use crate::config::{Config, ConfigError};

    const YAML: &str = "
rules: [{name: a, models: [x], github: {repository: o/r, event_type: e}}]
notify: [{url_env: TEAMS_WEBHOOK_URL, format: teams}]
";

    #[test]
    fn url_env_is_read_from_the_given_env() {
        let env =
            |name: &str| (name == "TEAMS_WEBHOOK_URL").then(|| "https://hook.test/x".to_string());
        let config = Config::parse_with(YAML, Path::new("autodeploy.yml"), &env).unwrap();
        let target = &config.notify[0];
        assert_eq!(target.label, "TEAMS_WEBHOOK_URL");
        let url = target.url.as_ref().expect("the env's value");
        assert_eq!(url.expose_secret(), "https://hook.test/x");
    }

    #[test]
    fn url_env_naming_an_unset_or_blank_setting_is_a_problem() {
        let env = |_: &str| Some("  ".to_string());
        let err = Config::parse_with(YAML, Path::new("autodeploy.yml"), &env).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            problems[0].to_string(),
            "notify[0].url_env: the setting TEAMS_WEBHOOK_URL is not set"
        );
    }
}
