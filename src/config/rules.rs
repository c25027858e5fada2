//! The `rules:` list: each rule's name, model-name globs, tags and mode, and which action it takes.
//!
//! The globs of all rules are compiled into one [`NameIndex`] when the config loads, so finding the
//! rules whose patterns match a model name is one pass over the name, however many rules there are.

use std::collections::BTreeMap;
use std::fmt;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_norway::{Mapping, Value};

use super::azureml::AzureMlAction;
use super::gate::GateSpec;
use super::github::GithubAction;
use super::problems::{Walker, describe, join, kind, present, scalar_text};

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name, used in logs, payloads and records.
    pub name: RuleName,
    /// The glob patterns as written (compiled once, for all rules, into the config's
    /// [`NameIndex`]).
    pub model_patterns: Vec<String>,
    /// Tags that must all be present with these exact values.
    /// Sorted by name. A list, not a map: a one-entry `BTreeMap` allocates a node with room for
    /// eleven, half a kilobyte per rule.
    pub tags: Vec<(String, String)>,
    /// Act, or only decide and record.
    pub mode: Mode,
    /// What to do on a match.
    pub action: RuleAction,
    /// The quality gate, if any.
    pub gate: Option<GateSpec>,
}

/// Every rule's parsed globs, each with its rule and its position among the rule's patterns.
pub(super) type ParsedGlobs = Vec<(Glob, u32, u32)>;

/// Every rule's model-name globs compiled into one set, plus the patterns sorted as text (to name
/// the rules nearest to a name that none matches). Built once, when the config loads.
#[derive(Debug, Clone, Default)]
pub struct NameIndex {
    /// All patterns of all rules, in rule order.
    globs: GlobSet,
    /// For each glob of `globs`: the rule it belongs to, and its position in `model_patterns`.
    owners: Vec<(u32, u32)>,
    /// The globs' numbers, sorted by their pattern text.
    by_text: Vec<u32>,
}

impl NameIndex {
    /// Compiles `globs` (each with its rule and its position in the rule's patterns), or says why
    /// they cannot be compiled together.
    fn build(rules: &[Rule], globs: ParsedGlobs) -> Result<NameIndex, String> {
        let mut builder = GlobSetBuilder::new();
        let mut owners = Vec::with_capacity(globs.len());
        for (glob, rule, pattern) in globs {
            builder.add(glob);
            owners.push((rule, pattern));
        }
        let globs = builder.build().map_err(|e| e.to_string())?;
        let text = |g: u32| {
            let (rule, pattern) = owners[g as usize];
            rules[rule as usize].model_patterns[pattern as usize].as_str()
        };
        let mut by_text: Vec<u32> = (0..owners.len() as u32).collect();
        by_text.sort_by(|a, b| text(*a).cmp(text(*b)).then(a.cmp(b)));
        Ok(NameIndex {
            globs,
            owners,
            by_text,
        })
    }

    /// The rules (by position) with a pattern that matches `model_name`, in rule order.
    pub fn matching(&self, model_name: &str) -> Vec<usize> {
        if self.owners.is_empty() {
            return Vec::new();
        }
        let mut rules: Vec<usize> = self
            .globs
            .matches(model_name)
            .into_iter()
            .map(|g| self.owners[g].0 as usize)
            .collect();
        rules.sort_unstable();
        rules.dedup();
        rules
    }

    /// Up to `count` rules (by position), none of them in `excluded` (sorted), whose patterns share
    /// the longest beginning with `model_name`, closest first; when no other pattern shares even
    /// its first character, the first rules in file order. Looks only at the patterns next to
    /// where `model_name` sorts among them, where the longest shared beginnings are.
    pub fn nearest(
        &self,
        rules: &[Rule],
        model_name: &str,
        excluded: &[usize],
        count: usize,
    ) -> Vec<usize> {
        let text = |g: u32| {
            let (rule, pattern) = self.owners[g as usize];
            rules[rule as usize].model_patterns[pattern as usize].as_str()
        };
        let shared = |g: u32| {
            text(g)
                .bytes()
                .zip(model_name.bytes())
                .take_while(|(a, b)| a == b)
                .count()
        };
        let at = self.by_text.partition_point(|g| text(*g) < model_name);
        let (mut below, mut above) = (at, at);
        let mut out: Vec<usize> = Vec::with_capacity(count);
        while out.len() < count && (below > 0 || above < self.by_text.len()) {
            let left = (below > 0).then(|| self.by_text[below - 1]);
            let right = (above < self.by_text.len()).then(|| self.by_text[above]);
            let (take_left, best) = match (left, right) {
                (Some(l), Some(r)) => {
                    let (sl, sr) = (shared(l), shared(r));
                    let left_first = sl > sr
                        || (sl == sr && self.owners[l as usize].0 <= self.owners[r as usize].0);
                    (left_first, sl.max(sr))
                }
                (Some(l), None) => (true, shared(l)),
                (None, Some(r)) => (false, shared(r)),
                (None, None) => unreachable!("the loop stops when both sides are done"),
            };
            if best == 0 {
                break;
            }
            let g = if take_left {
                below -= 1;
                self.by_text[below]
            } else {
                above += 1;
                self.by_text[above - 1]
            };
            let rule = self.owners[g as usize].0 as usize;
            if excluded.binary_search(&rule).is_err() && !out.contains(&rule) {
                out.push(rule);
            }
        }
        let mut first = (0..rules.len()).filter(|r| excluded.binary_search(r).is_err());
        while out.len() < count {
            match first.next() {
                Some(rule) if !out.contains(&rule) => out.push(rule),
                Some(_) => {}
                None => break,
            }
        }
        out
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
    /// Deploy directly to an Azure ML managed online endpoint (boxed: it is several times the
    /// size of a GitHub action, and a config may hold thousands of rules).
    AzureMl(Box<AzureMlAction>),
}

impl Walker<'_> {
    /// The `rules:` list (already known to be present), and its patterns parsed, each with its
    /// rule and its position among the rule's patterns (compiled by [`Walker::name_index`] once
    /// the YAML tree is gone).
    pub(super) fn rules(&mut self, value: &Value) -> (Vec<Rule>, ParsedGlobs) {
        let Value::Sequence(items) = value else {
            self.problem("rules", format!("expected a list, got {}", kind(value)));
            return Default::default();
        };
        let mut rules = Vec::with_capacity(items.len());
        let mut globs = Vec::with_capacity(items.len());
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
            if let Some((rule, compiled)) = self.rule(item, &label) {
                let at = rules.len() as u32;
                globs.extend(
                    compiled
                        .into_iter()
                        .enumerate()
                        .map(|(n, glob)| (glob, at, n as u32)),
                );
                rules.push(rule);
            }
        }
        (rules, globs)
    }

    /// All rules' patterns compiled into one set (empty when a problem was found: the config is
    /// then refused anyway).
    pub(super) fn name_index(&mut self, rules: &[Rule], globs: ParsedGlobs) -> NameIndex {
        if !self.problems.is_empty() {
            return NameIndex::default();
        }
        match NameIndex::build(rules, globs) {
            Ok(index) => index,
            Err(e) => {
                self.problem(
                    "rules",
                    format!("the rules' model patterns cannot be compiled together: {e}"),
                );
                NameIndex::default()
            }
        }
    }

    /// One rule, and its patterns parsed (compiled with every other rule's by [`Walker::rules`]).
    fn rule(&mut self, value: &Value, label: &str) -> Option<(Rule, Vec<Glob>)> {
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
                .map(|azureml| RuleAction::AzureMl(Box::new(azureml))),
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
        let rule = Rule {
            name: name?,
            model_patterns: patterns?,
            tags: tags?,
            mode: mode?,
            action: action?,
            gate: gate?,
        };
        Some((rule, models?))
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

    /// Parses the patterns (`None` when there are none, or one is not a glob: reported).
    fn globs(&mut self, patterns: Option<&[String]>, label: &str) -> Option<Vec<Glob>> {
        let mut globs = Vec::new();
        let mut ok = patterns.is_some();
        for (i, pattern) in patterns.into_iter().flatten().enumerate() {
            match Glob::new(pattern) {
                Ok(glob) => globs.push(glob),
                Err(e) => {
                    ok = false;
                    self.problem(
                        &format!("{label}.models[{i}]"),
                        format!("bad glob {pattern:?}: {}", e.kind()),
                    );
                }
            }
        }
        ok.then_some(globs)
    }

    fn tags(&mut self, map: &Mapping, label: &str) -> Option<Vec<(String, String)>> {
        let location = join(label, "tags");
        match present(map, "tags") {
            None => Some(Vec::new()),
            Some(Value::Mapping(m)) => {
                let mut tags = Vec::with_capacity(m.len());
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
                            tags.push((key.to_string(), text));
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
                // YAML refuses duplicate keys, so sorting is all a map would have done.
                tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
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
