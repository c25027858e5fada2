//! The `rules:` list: each rule's name, model-name globs, tags and mode, and which action it takes.

use std::collections::BTreeMap;
use std::fmt;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_norway::{Mapping, Value};

use super::gate::GateSpec;
use super::problems::{Walker, describe, join, kind, present, scalar_text};
use super::{AzureMlAction, GithubAction};

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name, used in logs, payloads and records.
    pub name: RuleName,
    /// The glob patterns as written.
    pub model_patterns: Vec<String>,
    models: GlobSet,
    /// Tags that must all be present with these exact values.
    pub tags: BTreeMap<String, String>,
    /// Act, or only decide and record.
    pub mode: Mode,
    /// What to do on a match.
    pub action: RuleAction,
    /// The quality gate, if any.
    pub gate: Option<GateSpec>,
}

impl Rule {
    /// Whether the model name matches one of the rule's globs.
    pub fn matches_name(&self, model_name: &str) -> bool {
        self.models.is_match(model_name)
    }
}

/// A rule's name: 1–64 letters, digits, `-`, `_`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleName(String);

impl RuleName {
    /// Validates a rule name.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(format!(
                "{raw:?} is not a rule name (1-64 letters, digits, '-', '_' or '.')"
            ))
        }
    }
}

impl AsRef<str> for RuleName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `mode:` of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send the action (default).
    Act,
    /// Decide and record, send nothing.
    Observe,
}

/// What a rule does.
#[derive(Debug, Clone)]
pub enum RuleAction {
    /// Trigger a GitHub Actions workflow.
    Github(GithubAction),
    /// Deploy directly to an Azure ML managed online endpoint.
    AzureMl(AzureMlAction),
}

impl Walker<'_> {
    /// The `rules:` list (already known to be present).
    pub(super) fn rules(&mut self, value: &Value) -> Vec<Rule> {
        let mut rules = Vec::new();
        let Value::Sequence(items) = value else {
            self.problem("rules", format!("expected a list, got {}", kind(value)));
            return rules;
        };
        if items.is_empty() {
            self.problem("rules", "is empty: no event would ever be acted on");
        }
        let mut seen = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let name = item.get("name").and_then(Value::as_str);
            let label = match name {
                Some(n) => format!("rules[{i}] ({n})"),
                None => format!("rules[{i}]"),
            };
            if let Some(name) = name
                && let Some(first) = seen.insert(name.to_string(), i)
            {
                self.problem(
                    &join(&label, "name"),
                    format!("duplicate rule name (also used by rules[{first}])"),
                );
            }
            if let Some(rule) = self.rule(item, &label) {
                rules.push(rule);
            }
        }
        rules
    }

    fn rule(&mut self, value: &Value, label: &str) -> Option<Rule> {
        let map = self.mapping(value, label)?;
        self.check_keys(
            map,
            &[
                "name", "models", "tags", "mode", "github", "azureml", "gate",
            ],
            label,
        );

        let name = self.parsed(map, "name", label, true, RuleName::parse);
        let patterns = self.patterns(map, label);
        let models = self.globs(patterns.as_deref(), label);
        let tags = self.tags(map, label);
        let mode = match present(map, "mode") {
            None => Some(Mode::Act),
            Some(Value::String(s)) if s == "act" => Some(Mode::Act),
            Some(Value::String(s)) if s == "observe" => Some(Mode::Observe),
            Some(other) => {
                self.problem(
                    &join(label, "mode"),
                    format!("must be `act` or `observe`, got {}", describe(other)),
                );
                None
            }
        };

        let action = match (present(map, "github"), present(map, "azureml")) {
            (None, None) => {
                self.problem(
                    label,
                    "rule has no action: add a `github:` block (workflow) or an `azureml:` block (direct deployment)",
                );
                None
            }
            (Some(_), Some(_)) => {
                self.problem(
                    label,
                    "a rule has one action: `github` or `azureml`, not both",
                );
                None
            }
            (Some(github), None) => self
                .github(github, &join(label, "github"))
                .map(RuleAction::Github),
            (None, Some(azureml)) => self
                .azureml(azureml, &join(label, "azureml"))
                .map(RuleAction::AzureMl),
        };

        let gate = match present(map, "gate") {
            None => Some(None),
            Some(v) => {
                let own_endpoint = match &action {
                    Some(RuleAction::AzureMl(a)) => Some(a.endpoint.clone()),
                    _ => None,
                };
                self.gate(v, &join(label, "gate"), own_endpoint).map(Some)
            }
        };
        Some(Rule {
            name: name?,
            model_patterns: patterns?,
            models: models?,
            tags: tags?,
            mode: mode?,
            action: action?,
            gate: gate?,
        })
    }

    fn patterns(&mut self, map: &Mapping, label: &str) -> Option<Vec<String>> {
        let location = join(label, "models");
        match present(map, "models") {
            None => {
                self.problem(
                    &location,
                    "is required: a list of model-name globs such as [\"credit-*\"]",
                );
                None
            }
            // A single pattern is accepted as a one-element list.
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(Value::Sequence(items)) if items.is_empty() => {
                self.problem(&location, "is empty: the rule would never match");
                None
            }
            Some(Value::Sequence(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if !s.trim().is_empty() => out.push(s.clone()),
                        other => self.problem(
                            &format!("{location}[{i}]"),
                            format!("expected a non-empty string, got {}", describe(other)),
                        ),
                    }
                }
                (out.len() == items.len()).then_some(out)
            }
            Some(other) => {
                self.problem(
                    &location,
                    format!("expected a list of globs, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// Compiles the patterns (`None` when there are none, or one is not a glob: reported).
    fn globs(&mut self, patterns: Option<&[String]>, label: &str) -> Option<GlobSet> {
        let mut builder = GlobSetBuilder::new();
        let mut ok = patterns.is_some();
        for (i, pattern) in patterns.into_iter().flatten().enumerate() {
            match Glob::new(pattern) {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(e) => {
                    ok = false;
                    self.problem(
                        &format!("{label}.models[{i}]"),
                        format!("bad glob {pattern:?}: {}", e.kind()),
                    );
                }
            }
        }
        if ok { builder.build().ok() } else { None }
    }

    fn tags(&mut self, map: &Mapping, label: &str) -> Option<BTreeMap<String, String>> {
        let location = join(label, "tags");
        let mut tags = BTreeMap::new();
        match present(map, "tags") {
            None => Some(tags),
            Some(Value::Mapping(m)) => {
                let mut ok = true;
                for (k, v) in m {
                    let Some(key) = k.as_str() else {
                        self.problem(
                            &location,
                            format!("tag names must be strings, got {}", kind(k)),
                        );
                        ok = false;
                        continue;
                    };
                    match scalar_text(v) {
                        Some(text) => {
                            tags.insert(key.to_string(), text);
                        }
                        None => {
                            self.problem(
                                &join(&location, key),
                                format!(
                                    "tag values must be strings, numbers or booleans, got {}",
                                    kind(v)
                                ),
                            );
                            ok = false;
                        }
                    }
                }
                ok.then_some(tags)
            }
            Some(other) => {
                self.problem(
                    &location,
                    format!("expected a mapping of tag: value, got {}", kind(other)),
                );
                None
            }
        }
    }
}
