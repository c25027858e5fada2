//! `autodeploy.yml` → a validated [`Config`].
//!
//! The YAML is loaded with `serde_norway` (the maintained drop-in fork of `serde_yaml`) into a
//! generic value and then walked by hand, rather than derived: `check-config` must report *every*
//! problem with its location, and a derived deserializer stops at the first one.

pub mod gate;
pub mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_norway::{Mapping, Value};
use thiserror::Error;

use crate::event::WorkspaceId;
pub use template::{Template, TemplateValues};

/// GitHub's limit on `workflow_dispatch` inputs.
pub const MAX_WORKFLOW_INPUTS: usize = 25;
/// GitHub's limit on a `repository_dispatch` `event_type`.
pub const MAX_EVENT_TYPE_LEN: usize = 100;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (later issues resolve relative files against it).
    pub path: PathBuf,
    /// Events from any other workspace are refused.
    pub workspace: Option<WorkspaceId>,
    /// Rules in file order; the first match wins.
    pub rules: Vec<Rule>,
    /// Where outcomes are announced.
    pub notify: Vec<gate::NotifyTarget>,
}

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
    pub gate: Option<gate::GateSpec>,
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

/// The `azureml:` block of a rule.
#[derive(Debug, Clone)]
pub struct AzureMlAction {
    /// Online endpoint name (wins over the YAML's `endpoint_name`).
    pub endpoint: String,
    /// The deployment YAML, resolved against the config file's folder.
    pub deployment_file: PathBuf,
    /// The translated deployment body.
    pub template: crate::actions::azureml::translate::DeploymentTemplate,
    /// Deployment name template (default `{modelName}-{modelVersion}`), sanitised per event.
    pub name: Template,
    /// Where to deploy; default: the event's workspace.
    pub target_workspace: Option<WorkspaceId>,
    /// Request to score the new deployment with before it gets traffic.
    pub smoke_test: Option<SmokeTest>,
    /// How traffic moves.
    pub rollout: RolloutSpec,
}

/// `smoke_test:`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SmokeTest {
    /// The request file, resolved against the config file's folder.
    pub request_file: PathBuf,
    /// Its JSON content.
    pub request: serde_json::Value,
    /// The status a healthy deployment answers.
    pub expect_status: u16,
}

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

/// The `github:` block of a rule.
#[derive(Debug, Clone)]
pub struct GithubAction {
    /// `owner/repo`.
    pub repository: RepoSlug,
    /// Which dispatch API.
    pub target: GithubTarget,
}

/// `repository_dispatch` or `workflow_dispatch`.
#[derive(Debug, Clone)]
pub enum GithubTarget {
    /// `event_type:` → `POST /repos/{o}/{r}/dispatches`.
    RepositoryDispatch {
        /// The event type (templated).
        event_type: Template,
    },
    /// `workflow:` → `POST /repos/{o}/{r}/actions/workflows/{workflow}/dispatches`.
    WorkflowDispatch {
        /// Workflow file name (`deploy.yml`) or numeric id.
        workflow: String,
        /// `ref:` (templated), default `main`.
        git_ref: Template,
        /// `inputs:` in file order (values templated).
        inputs: Vec<(String, Template)>,
    },
}

/// A GitHub repository `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoSlug {
    owner: String,
    name: String,
}

impl RepoSlug {
    /// Parses `owner/repo` with GitHub's character rules.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = || format!("{raw:?} is not a GitHub repository (expected owner/repo)");
        let (owner, name) = raw.split_once('/').ok_or_else(bad)?;
        let owner_ok = !owner.is_empty()
            && owner.len() <= 39
            && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !owner.starts_with('-');
        let name_ok = !name.is_empty()
            && name.len() <= 100
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if owner_ok && name_ok {
            Ok(Self {
                owner: owner.to_string(),
                name: name.to_string(),
            })
        } else {
            Err(bad())
        }
    }

    /// The owner (user or organisation).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The repository name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl serde::Serialize for RepoSlug {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RepoSlug {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        RepoSlug::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RepoSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// A path such as `rules[1] (fraud-workflow).github.repository`.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, Clone, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {message}")]
    Io {
        /// The path tried.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The file is not valid YAML.
    #[error("{path}: not valid YAML: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The YAML is valid but its content is not.
    #[error("{path}: {} problem(s): {}", problems.len(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
}

impl ConfigError {
    /// One line per problem, each prefixed with the file, for `check-config` and stderr.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { path, problems } => problems
                .iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect(),
            other => vec![other.to_string()],
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Config::parse(&text, path)
    }

    /// Validates YAML text; `path` is only used in messages and to resolve relative files.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let root: Value = serde_norway::from_str(text).map_err(|e| ConfigError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut walker = Walker {
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            ..Walker::default()
        };
        let config = walker.config(&root, path);
        match config {
            Some(config) if walker.problems.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: walker.problems,
            }),
        }
    }
}

#[derive(Default)]
struct Walker {
    problems: Vec<ConfigProblem>,
    /// The config file's folder: relative files in the config resolve against it.
    base: PathBuf,
}

/// Azure ML endpoint and deployment names: 3-32 characters, a letter first, then letters, digits
/// and '-', not ending with '-'.
pub fn valid_azureml_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=32).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && !name.ends_with('-')
}

impl Walker {
    fn problem(&mut self, location: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            location: location.to_string(),
            message: message.into(),
        });
    }

    fn mapping<'a>(&mut self, value: &'a Value, location: &str) -> Option<&'a Mapping> {
        match value {
            Value::Mapping(m) => Some(m),
            other => {
                self.problem(location, format!("expected a mapping, got {}", kind(other)));
                None
            }
        }
    }

    /// Reports keys not in `allowed`, and non-string keys.
    fn check_keys(&mut self, map: &Mapping, allowed: &[&str], location: &str) {
        for key in map.keys() {
            match key.as_str() {
                Some(k) if allowed.contains(&k) => {}
                Some(k) => {
                    let hint = allowed
                        .iter()
                        .find(|a| {
                            a.eq_ignore_ascii_case(k)
                                || a.replace('_', "") == k.replace(['_', '-'], "")
                        })
                        .map(|a| format!(" (did you mean `{a}`?)"))
                        .unwrap_or_default();
                    self.problem(
                        &join(location, k),
                        format!(
                            "unknown key `{k}`{hint}; allowed here: {}",
                            allowed.join(", ")
                        ),
                    )
                }
                None => self.problem(location, format!("keys must be strings, got {}", kind(key))),
            }
        }
    }

    fn string(
        &mut self,
        map: &Mapping,
        key: &str,
        location: &str,
        required: bool,
    ) -> Option<String> {
        match map.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.problem(&join(location, key), "is required");
                }
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.problem(&join(location, key), "must not be empty");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problem(
                    &join(location, key),
                    format!("expected a string, got {}", kind(other)),
                );
                None
            }
        }
    }

    fn template(&mut self, source: &str, location: &str) -> Option<Template> {
        match Template::parse(source) {
            Ok(t) => Some(t),
            Err(problems) => {
                for p in problems {
                    self.problem(location, p);
                }
                None
            }
        }
    }

    fn config(&mut self, root: &Value, path: &Path) -> Option<Config> {
        let root = match root {
            // An empty file: report the missing rules rather than "expected a mapping".
            Value::Null => &Value::Mapping(Mapping::new()),
            other => other,
        };
        let map = self.mapping(root, "")?;
        self.check_keys(map, &["workspace", "rules", "notify"], "");

        let workspace = self
            .string(map, "workspace", "", false)
            .and_then(|raw| match WorkspaceId::parse(&raw) {
                Ok(ws) if ws.is_workspace_arm_id() => Some(ws),
                _ => {
                    self.problem(
                        "workspace",
                        format!(
                            "{raw:?} is not an Azure ML workspace ARM id \
                             (/subscriptions/…/resourceGroups/…/providers/Microsoft.MachineLearningServices/workspaces/…)"
                        ),
                    );
                    None
                }
            });

        let mut rules = Vec::new();
        match map.get("rules") {
            None | Some(Value::Null) => self.problem("rules", "is required: a list of rules"),
            Some(Value::Sequence(items)) => {
                if items.is_empty() {
                    self.problem("rules", "is empty: no event would ever be acted on");
                }
                let mut seen = BTreeMap::new();
                for (i, item) in items.iter().enumerate() {
                    let label = item
                        .get("name")
                        .and_then(Value::as_str)
                        .map(|n| format!("rules[{i}] ({n})"))
                        .unwrap_or_else(|| format!("rules[{i}]"));
                    if let Some(name) = item.get("name").and_then(Value::as_str)
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
            }
            Some(other) => self.problem("rules", format!("expected a list, got {}", kind(other))),
        }

        let notify = match map.get("notify") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => self.notify(v),
        };
        Some(Config {
            path: path.to_path_buf(),
            workspace,
            rules,
            notify,
        })
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

        let name =
            self.string(map, "name", label, true)
                .and_then(|raw| match RuleName::parse(&raw) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        self.problem(&join(label, "name"), e);
                        None
                    }
                });

        let patterns = self.patterns(map, label);
        let mut builder = GlobSetBuilder::new();
        let mut globs_ok = patterns.is_some();
        for (i, pattern) in patterns.iter().flatten().enumerate() {
            match Glob::new(pattern) {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(e) => {
                    globs_ok = false;
                    self.problem(
                        &format!("{label}.models[{i}]"),
                        format!("bad glob {pattern:?}: {}", e.kind()),
                    );
                }
            }
        }
        let models = if globs_ok { builder.build().ok() } else { None };

        let tags = self.tags(map, label);
        let mode = match map.get("mode") {
            None | Some(Value::Null) => Some(Mode::Act),
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

        let present = |key: &str| !matches!(map.get(key), None | Some(Value::Null));
        let action = match (present("github"), present("azureml")) {
            (false, false) => {
                self.problem(
                    label,
                    "rule has no action: add a `github:` block (workflow) or an `azureml:` block (direct deployment)",
                );
                None
            }
            (true, true) => {
                self.problem(
                    label,
                    "a rule has one action: `github` or `azureml`, not both",
                );
                None
            }
            (true, false) => map
                .get("github")
                .and_then(|github| self.github(github, &join(label, "github")))
                .map(RuleAction::Github),
            (false, true) => map
                .get("azureml")
                .and_then(|azureml| self.azureml(azureml, &join(label, "azureml")))
                .map(RuleAction::AzureMl),
        };

        let gate = match map.get("gate") {
            None | Some(Value::Null) => Some(None),
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
        match map.get("models") {
            None | Some(Value::Null) => {
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

    fn tags(&mut self, map: &Mapping, label: &str) -> Option<BTreeMap<String, String>> {
        let location = join(label, "tags");
        let mut tags = BTreeMap::new();
        match map.get("tags") {
            None | Some(Value::Null) => Some(tags),
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

    fn github(&mut self, value: &Value, location: &str) -> Option<GithubAction> {
        let map = self.mapping(value, location)?;
        self.check_keys(
            map,
            &["repository", "event_type", "workflow", "ref", "inputs"],
            location,
        );
        let repository = self
            .string(map, "repository", location, true)
            .and_then(|raw| match RepoSlug::parse(raw.trim()) {
                Ok(slug) => Some(slug),
                Err(e) => {
                    self.problem(&join(location, "repository"), e);
                    None
                }
            });
        let event_type = self.string(map, "event_type", location, false);
        let workflow = self.string(map, "workflow", location, false);

        let target = match (event_type, workflow) {
            (Some(_), Some(_)) => {
                self.problem(
                    location,
                    "set either `event_type` (repository_dispatch) or `workflow` (workflow_dispatch), not both",
                );
                None
            }
            (None, None) => {
                // Skip when `event_type`/`workflow` was present but unusable: already reported.
                let reported = |p: &ConfigProblem| {
                    p.location == join(location, "event_type")
                        || p.location == join(location, "workflow")
                };
                if !self.problems.iter().any(reported) {
                    self.problem(
                        location,
                        "no dispatch target: set `event_type` (repository_dispatch) or `workflow` (workflow_dispatch)",
                    );
                }
                None
            }
            (Some(event_type), None) => {
                for key in ["ref", "inputs"]
                    .into_iter()
                    .filter(|k| map.get(*k).is_some())
                {
                    self.problem(
                        &join(location, key),
                        "only applies to `workflow` (workflow_dispatch); repository_dispatch always runs the default branch",
                    );
                }
                let loc = join(location, "event_type");
                let template = self.template(&event_type, &loc);
                if let Some(t) = &template
                    && literal_len(t) > MAX_EVENT_TYPE_LEN
                {
                    self.problem(
                        &loc,
                        format!("GitHub limits event_type to {MAX_EVENT_TYPE_LEN} characters"),
                    );
                }
                template.map(|event_type| GithubTarget::RepositoryDispatch { event_type })
            }
            (None, Some(workflow)) => {
                let workflow = workflow.trim().to_string();
                let valid = workflow.chars().all(|c| c.is_ascii_digit())
                    || ((workflow.ends_with(".yml") || workflow.ends_with(".yaml"))
                        && !workflow.contains('/')
                        && !workflow.contains(char::is_whitespace));
                if !valid {
                    self.problem(
                        &join(location, "workflow"),
                        format!(
                            "{workflow:?} is not a workflow file name (e.g. deploy.yml, without .github/workflows/) or a numeric workflow id"
                        ),
                    );
                }
                let git_ref = match map.get("ref") {
                    None | Some(Value::Null) => Template::parse("main").ok(),
                    Some(_) => self
                        .string(map, "ref", location, false)
                        .and_then(|r| self.template(r.trim(), &join(location, "ref"))),
                };
                let inputs = self.inputs(map.get("inputs"), &join(location, "inputs"));
                match (valid, git_ref, inputs) {
                    (true, Some(git_ref), Some(inputs)) => Some(GithubTarget::WorkflowDispatch {
                        workflow,
                        git_ref,
                        inputs,
                    }),
                    _ => None,
                }
            }
        };
        Some(GithubAction {
            repository: repository?,
            target: target?,
        })
    }

    fn azureml(&mut self, value: &Value, location: &str) -> Option<AzureMlAction> {
        let map = self.mapping(value, location)?;
        self.check_keys(
            map,
            &[
                "endpoint",
                "deployment",
                "name",
                "target_workspace",
                "smoke_test",
                "rollout",
            ],
            location,
        );
        let endpoint = self.string(map, "endpoint", location, true).and_then(|e| {
            let e = e.trim().to_string();
            if valid_azureml_name(&e) {
                Some(e)
            } else {
                self.problem(
                    &join(location, "endpoint"),
                    format!("{e:?} is not an online endpoint name (3-32 letters, digits and '-', starting with a letter)"),
                );
                None
            }
        });
        let target_workspace = self
            .string(map, "target_workspace", location, false)
            .and_then(|raw| match WorkspaceId::parse(&raw) {
                Ok(ws) if ws.is_workspace_arm_id() => Some(Some(ws)),
                _ => {
                    self.problem(
                        &join(location, "target_workspace"),
                        format!("{raw:?} is not an Azure ML workspace ARM id"),
                    );
                    None
                }
            })
            .unwrap_or(None);
        let name = match map.get("name") {
            None | Some(Value::Null) => Template::parse("{modelName}-{modelVersion}").ok(),
            Some(_) => self
                .string(map, "name", location, false)
                .and_then(|n| self.template(&n, &join(location, "name")))
                .and_then(|t| {
                    // Each version needs its own deployment: without the version in the name, a
                    // new version would overwrite the live deployment instead of rolling out beside it.
                    if t.source().contains("{modelVersion}") || t.source().contains("{modelId}") {
                        Some(t)
                    } else {
                        self.problem(
                            &join(location, "name"),
                            "must contain {modelVersion}, so each version gets its own deployment",
                        );
                        None
                    }
                }),
        };

        let deployment = self
            .string(map, "deployment", location, true)
            .and_then(|file| {
                let loc = join(location, "deployment");
                let path = self.base.join(&file);
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(e) => {
                        self.problem(&loc, format!("cannot read {}: {e}", path.display()));
                        return None;
                    }
                };
                let yaml: Value = match serde_norway::from_str(&text) {
                    Ok(yaml) => yaml,
                    Err(e) => {
                        self.problem(&loc, format!("{}: not valid YAML: {e}", path.display()));
                        return None;
                    }
                };
                let ws = target_workspace.as_ref().map(|w| w.as_ref());
                match crate::actions::azureml::translate::translate(&yaml, ws) {
                    Ok(template) => Some((path, template)),
                    Err(problems) => {
                        for p in problems {
                            self.problem(&loc, format!("{}: {p}", path.display()));
                        }
                        None
                    }
                }
            });

        let smoke_test = match map.get("smoke_test") {
            None | Some(Value::Null) => Some(None),
            Some(v) => self.smoke_test(v, &join(location, "smoke_test")).map(Some),
        };
        let rollout = match map.get("rollout") {
            None | Some(Value::Null) => Some(RolloutSpec::default()),
            Some(v) => self.rollout(v, &join(location, "rollout")),
        };
        let (deployment_file, template) = deployment?;
        Some(AzureMlAction {
            endpoint: endpoint?,
            deployment_file,
            template,
            name: name?,
            target_workspace,
            smoke_test: smoke_test?,
            rollout: rollout?,
        })
    }

    fn smoke_test(&mut self, value: &Value, location: &str) -> Option<SmokeTest> {
        let map = self.mapping(value, location)?;
        self.check_keys(map, &["request", "expect_status"], location);
        let expect_status = match map.get("expect_status") {
            None | Some(Value::Null) => Some(200),
            Some(v) => match v.as_u64() {
                Some(s) if (100..600).contains(&s) => Some(s as u16),
                _ => {
                    self.problem(
                        &join(location, "expect_status"),
                        "must be an HTTP status such as 200",
                    );
                    None
                }
            },
        };
        let request = self
            .string(map, "request", location, true)
            .and_then(|file| {
                let path = self.base.join(&file);
                let loc = join(location, "request");
                match std::fs::read_to_string(&path) {
                    Err(e) => {
                        self.problem(&loc, format!("cannot read {}: {e}", path.display()));
                        None
                    }
                    Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(json) => Some((path, json)),
                        Err(e) => {
                            self.problem(&loc, format!("{} is not JSON: {e}", path.display()));
                            None
                        }
                    },
                }
            });
        let (request_file, request) = request?;
        Some(SmokeTest {
            request_file,
            request,
            expect_status: expect_status?,
        })
    }

    fn rollout(&mut self, value: &Value, location: &str) -> Option<RolloutSpec> {
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
        let mut ok = true;
        match map.get("strategy").and_then(Value::as_str) {
            None => {}
            Some("blue-green") => spec.strategy = Strategy::BlueGreen,
            Some("all-at-once") => spec.strategy = Strategy::AllAtOnce,
            Some(other) => {
                self.problem(
                    &join(location, "strategy"),
                    format!("must be blue-green or all-at-once, got {other:?}"),
                );
                ok = false;
            }
        }
        let mut number = |key: &str, max: u64| -> Option<u64> {
            match map.get(key) {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64() {
                    Some(n) if n <= max => Some(n),
                    _ => {
                        self.problem(
                            &join(location, key),
                            format!("must be a whole number from 0 to {max}"),
                        );
                        ok = false;
                        None
                    }
                },
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

    fn gate(
        &mut self,
        value: &Value,
        location: &str,
        own_endpoint: Option<String>,
    ) -> Option<gate::GateSpec> {
        use gate::{GateSpec, Improvement, MetricRun, MetricSource, OnMissing};
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
        let source = match map.get("source").and_then(Value::as_str) {
            None => MetricSource::Auto,
            Some("auto") => MetricSource::Auto,
            Some("tags") => MetricSource::Tags,
            Some("properties") => MetricSource::Properties,
            Some("mlflow") => MetricSource::Mlflow,
            Some(other) => {
                self.problem(
                    &join(location, "source"),
                    format!("must be auto, tags, properties or mlflow, got {other:?}"),
                );
                ok = false;
                MetricSource::Auto
            }
        };
        let mut flag = |key: &str, default: bool| match map.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.problem(&join(location, key), "must be true or false");
                ok = false;
                default
            }
        };
        let higher_is_better = flag("higher_is_better", true);
        let champion_endpoint = match map.get("champion_endpoint") {
            None | Some(Value::Null) => None,
            Some(Value::String(e)) if valid_azureml_name(e.trim()) => Some(e.trim().to_string()),
            Some(_) => {
                self.problem(
                    &join(location, "champion_endpoint"),
                    "must be an online endpoint name",
                );
                ok = false;
                None
            }
        };
        let endpoint_known = own_endpoint.is_some() || champion_endpoint.is_some();
        let compare_to_live = match map.get("compare_to_live") {
            None | Some(Value::Null) => endpoint_known,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.problem(&join(location, "compare_to_live"), "must be true or false");
                ok = false;
                false
            }
        };
        if compare_to_live && !endpoint_known {
            self.problem(
                &join(location, "compare_to_live"),
                "needs champion_endpoint: the endpoint whose live model is the champion (azureml rules use their own endpoint)",
            );
            ok = false;
        }
        let mut bound = |key: &str| match map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64().filter(|f| f.is_finite()) {
                Some(f) => Some(f),
                None => {
                    self.problem(&join(location, key), "must be a number");
                    ok = false;
                    None
                }
            },
        };
        let min = bound("min");
        let max = bound("max");
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            self.problem(location, format!("min ({lo}) is greater than max ({hi})"));
            ok = false;
        }
        let min_improvement = match map.get("min_improvement") {
            None | Some(Value::Null) => Improvement::Absolute(0.0),
            Some(v) => match gate::parse_improvement(v) {
                Ok(i) => i,
                Err(e) => {
                    self.problem(&join(location, "min_improvement"), e);
                    ok = false;
                    Improvement::Absolute(0.0)
                }
            },
        };
        let on_missing_metric = match map.get("on_missing_metric").and_then(Value::as_str) {
            None | Some("reject") => OnMissing::Reject,
            Some("allow") => OnMissing::Allow,
            Some(other) => {
                self.problem(
                    &join(location, "on_missing_metric"),
                    format!("must be reject or allow, got {other:?}"),
                );
                ok = false;
                OnMissing::Reject
            }
        };
        let metric_run = match map.get("metric_run").and_then(Value::as_str).map(str::trim) {
            None | Some("self") => MetricRun::Own,
            Some("parent") => MetricRun::Parent,
            Some(other) => match other.strip_prefix("child:").map(str::trim) {
                Some(step) if !step.is_empty() => MetricRun::Child(step.to_string()),
                _ => {
                    self.problem(
                        &join(location, "metric_run"),
                        format!("must be self, parent or child:<step-name>, got {other:?}"),
                    );
                    ok = false;
                    MetricRun::Own
                }
            },
        };
        if !ok {
            return None;
        }
        Some(GateSpec {
            metric: metric?.trim().to_string(),
            source,
            higher_is_better,
            min,
            max,
            compare_to_live,
            min_improvement,
            on_missing_metric,
            champion_endpoint: champion_endpoint.or(own_endpoint),
            metric_run,
        })
    }

    fn notify(&mut self, value: &Value) -> Vec<gate::NotifyTarget> {
        let Value::Sequence(items) = value else {
            self.problem("notify", "expected a list of notification targets");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let location = format!("notify[{i}]");
            let Some(map) = self.mapping(item, &location) else {
                continue;
            };
            self.check_keys(map, &["url_env", "url", "format", "on"], &location);
            let (label, url) = match (
                map.get("url_env").and_then(Value::as_str),
                map.get("url").and_then(Value::as_str),
            ) {
                (Some(name), None) => {
                    let name = name.trim().to_string();
                    let value = std::env::var(&name).ok().filter(|v| !v.trim().is_empty());
                    if value.is_none() {
                        self.problem(
                            &join(&location, "url_env"),
                            format!("the setting {name} is not set"),
                        );
                    }
                    (name, value.map(secrecy::SecretString::from))
                }
                (None, Some(url)) => (
                    location.clone(),
                    Some(secrecy::SecretString::from(url.trim().to_string())),
                ),
                _ => {
                    self.problem(
                        &location,
                        "set url_env (the app setting holding the webhook URL, recommended) or url",
                    );
                    continue;
                }
            };
            let format = match map.get("format").and_then(Value::as_str) {
                None | Some("raw") => gate::NotifyFormat::Raw,
                Some("teams") => gate::NotifyFormat::Teams,
                Some("slack") => gate::NotifyFormat::Slack,
                Some(other) => {
                    self.problem(
                        &join(&location, "format"),
                        format!("must be teams, slack or raw, got {other:?}"),
                    );
                    continue;
                }
            };
            let on: Vec<String> = match map.get("on") {
                None | Some(Value::Null) => {
                    vec!["rejected".into(), "failed".into(), "rolled_back".into()]
                }
                Some(Value::Sequence(list)) => list
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                Some(_) => {
                    self.problem(&join(&location, "on"), "must be a list of outcomes");
                    continue;
                }
            };
            for outcome in &on {
                if !gate::NOTIFY_OUTCOMES.contains(&outcome.as_str()) {
                    self.problem(
                        &join(&location, "on"),
                        format!(
                            "unknown outcome {outcome:?}; known: {}",
                            gate::NOTIFY_OUTCOMES.join(", ")
                        ),
                    );
                }
            }
            out.push(gate::NotifyTarget {
                label,
                url,
                format,
                on,
            });
        }
        out
    }

    fn inputs(&mut self, value: Option<&Value>, location: &str) -> Option<Vec<(String, Template)>> {
        let map = match value {
            None | Some(Value::Null) => return Some(Vec::new()),
            Some(v) => self.mapping(v, location)?,
        };
        if map.len() > MAX_WORKFLOW_INPUTS {
            self.problem(
                location,
                format!(
                    "{} inputs; GitHub accepts at most {MAX_WORKFLOW_INPUTS}",
                    map.len()
                ),
            );
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (k, v) in map {
            let Some(key) = k.as_str() else {
                self.problem(
                    location,
                    format!("input names must be strings, got {}", kind(k)),
                );
                ok = false;
                continue;
            };
            let loc = join(location, key);
            match scalar_text(v) {
                Some(text) => match self.template(&text, &loc) {
                    Some(t) => out.push((key.to_string(), t)),
                    None => ok = false,
                },
                None => {
                    self.problem(
                        &loc,
                        format!("input values must be strings, got {}", kind(v)),
                    );
                    ok = false;
                }
            }
        }
        (ok && map.len() <= MAX_WORKFLOW_INPUTS).then_some(out)
    }
}

/// The length of a template's literal text (placeholders count as empty): a lower bound on the
/// rendered length.
fn literal_len(t: &Template) -> usize {
    t.render(&TemplateValues {
        model_name: "",
        model_version: "",
        model_id: "",
        event_id: "",
        workspace: "",
    })
    .chars()
    .count()
}

fn join(location: &str, key: &str) -> String {
    if location.is_empty() {
        key.to_string()
    } else {
        format!("{location}.{key}")
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn describe(value: &Value) -> String {
    match scalar_text(value) {
        Some(text) => format!("{text:?}"),
        None => kind(value).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::parse(yaml, Path::new("autodeploy.yml"))
    }

    fn problems(yaml: &str) -> Vec<String> {
        match parse(yaml) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    const ISSUE_EXAMPLE: &str = r#"
workspace: /subscriptions/0000/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws
rules:
  - name: credit-to-github
    models: ["credit-*"]
    tags: { stage: production }
    mode: act
    github:
      repository: contoso/ml-deploy
      event_type: deploy-model
  - name: fraud-workflow
    models: ["fraud"]
    github:
      repository: contoso/ml-deploy
      workflow: deploy.yml
      ref: main
      inputs: { model: "{modelName}", version: "{modelVersion}" }
"#;

    #[test]
    fn the_documented_example_is_valid() {
        let config = parse(ISSUE_EXAMPLE).unwrap();
        assert_eq!(config.rules.len(), 2);
        assert!(config.rules[0].matches_name("credit-risk"));
        assert!(!config.rules[0].matches_name("fraud"));
        assert_eq!(config.rules[0].tags["stage"], "production");
        let RuleAction::Github(gh) = &config.rules[1].action else {
            panic!("not a github rule")
        };
        match &gh.target {
            GithubTarget::WorkflowDispatch {
                workflow,
                git_ref,
                inputs,
            } => {
                assert_eq!(workflow, "deploy.yml");
                assert_eq!(git_ref.source(), "main");
                assert_eq!(inputs.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_location() {
        let found = problems(
            r#"
workspace: not-an-arm-id
colour: blue
rules:
  - name: a
    models: ["credit-[*"]
    github:
      repository: contoso
      event_type: "deploy-{model}"
  - name: b
    models: ["x"]
  - name: a
    models: ["y"]
    mode: shout
    github: { repository: o/r, workflow: deploy.yml, inputs: { v: "{version}" }, extra: 1 }
"#,
        );
        let expect = [
            "workspace: \"not-an-arm-id\" is not an Azure ML workspace ARM id",
            "colour: unknown key `colour`",
            "rules[0] (a).models[0]: bad glob",
            "rules[0] (a).github.repository: \"contoso\" is not a GitHub repository",
            "rules[0] (a).github.event_type: unknown placeholder {model}",
            "rules[1] (b): rule has no action",
            "rules[2] (a).mode: must be `act` or `observe`",
            "rules[2] (a).github.extra: unknown key `extra`",
            "rules[2] (a).github.inputs.v: unknown placeholder {version}",
            "rules[2] (a).name: duplicate rule name",
        ];
        for needle in expect {
            assert!(
                found.iter().any(|p| p.starts_with(needle)),
                "missing {needle:?} in {found:#?}"
            );
        }
    }

    #[test]
    fn both_or_neither_dispatch_target_is_rejected() {
        let both = problems(
            "rules: [{name: a, models: [x], github: {repository: o/r, event_type: e, workflow: w.yml}}]",
        );
        assert!(both[0].contains("not both"), "{both:?}");
        let neither = problems("rules: [{name: a, models: [x], github: {repository: o/r}}]");
        assert!(neither[0].contains("no dispatch target"), "{neither:?}");
    }

    #[test]
    fn too_many_inputs_are_rejected() {
        let inputs: Vec<String> = (0..26).map(|i| format!("i{i}: v")).collect();
        let yaml = format!(
            "rules: [{{name: a, models: [x], github: {{repository: o/r, workflow: d.yml, inputs: {{{}}}}}}}]",
            inputs.join(", ")
        );
        assert!(problems(&yaml)[0].contains("at most 25"));
    }

    #[test]
    fn invalid_yaml_reports_line_and_column() {
        let err = parse("rules: [\n  - name: a\n").unwrap_err();
        assert!(matches!(err, ConfigError::Yaml { .. }));
        assert!(err.to_string().contains("line"), "{err}");
    }

    #[test]
    fn repository_slugs_are_validated() {
        assert!(RepoSlug::parse("contoso/ml-deploy").is_ok());
        assert!(RepoSlug::parse("contoso/ml.deploy_2").is_ok());
        for bad in ["contoso", "/x", "o/", "o/r/x", "-o/r", "o/..", "o w/r"] {
            assert!(RepoSlug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_file_asks_for_rules() {
        let found = problems("");
        assert!(found[0].starts_with("rules: is required"), "{found:?}");
    }
}
