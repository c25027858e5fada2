//! `autodeploy.yml` → a validated [`Config`].
//!
//! The YAML is loaded with `serde_norway` (the maintained drop-in fork of `serde_yaml`) into a
//! generic value and then walked by hand, rather than derived: `check-config` must report *every*
//! problem with its location, and a derived deserializer stops at the first one.
//!
//! One file per section, its types beside its parser: `rules` (name, globs, tags, mode, action),
//! `github`, `azureml`, `rollout`, [`gate`] and [`notify`]. `problems` holds the walker they all
//! extend (every problem with its location), [`template`] the `{placeholder}` templates. Their
//! types are re-exported here, so `crate::config::X` paths do not depend on the file layout.

mod analysis;
mod azureml;
mod batch;
pub mod gate;
mod github;
pub mod notify;
mod problems;
mod rollout;
mod rules;
pub mod template;

use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};
use thiserror::Error;

use crate::env::{Env, ProcessEnv};
use crate::event::WorkspaceId;
use problems::{Walker, present, workspace_arm_id};

pub use crate::folder::{ConfigFolder, PathProblem, lexical};
pub use azureml::{AzureMlAction, SmokeTest, valid_azureml_name};
pub use batch::{
    BatchTarget, DEFAULT_SMOKE_JOB_MINUTES, SmokeJob, check_input as batch_check_input,
};
pub use github::{
    DEFAULT_FOLLOW_HOURS, DEFAULT_GITHUB_API_URL, GithubAction, GithubTarget, MAX_EVENT_TYPE_LEN,
    MAX_FOLLOW_HOURS, MAX_WORKFLOW_INPUTS, MAX_WORKFLOW_INPUTS_GHES, RepoSlug, max_workflow_inputs,
};
pub use problems::ConfigProblem;
pub use rollout::{ApprovalSpec, RolloutSpec, Strategy};
pub use rules::{Mode, NameIndex, Rule, RuleAction, RuleName};
pub use template::{Template, TemplateValues};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (later issues resolve relative files against it).
    pub path: PathBuf,
    /// Events from any other workspace are refused.
    pub workspace: Option<WorkspaceId>,
    /// Rules in file order; the first match wins.
    pub rules: Vec<Rule>,
    /// All rules' model patterns, compiled into one set.
    pub names: NameIndex,
    /// Where outcomes are announced.
    pub notify: Vec<notify::NotifyTarget>,
    /// What is allowed but may fail at run time (printed by `check-config`, never failing it).
    pub warnings: Vec<ConfigProblem>,
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
    /// Reads and validates the file at `path`, reading `url_env` settings from the process
    /// environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &ProcessEnv)
    }

    /// Reads and validates the file at `path`, reading `url_env` settings from `env`.
    pub fn load_with(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Config::parse_with(&text, path, env)
    }

    /// Validates YAML text; `path` is only used in messages and to resolve relative files.
    /// `url_env` settings are read from the process environment.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, &ProcessEnv)
    }

    /// [`Config::parse`], reading `url_env` settings from `env`.
    pub fn parse_with(text: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let root: Value = serde_norway::from_str(text).map_err(|e| ConfigError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut walker = Walker {
            problems: Vec::new(),
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            folder: ConfigFolder::of(path),
            warnings: Vec::new(),
            workspace_len: None,
            env,
        };
        let walked = walker.config(&root, path);
        // The YAML tree is not needed any more. Freed before the patterns are compiled (with
        // thousands of rules, the two together were the load's peak memory), and on another
        // thread: freeing 10,000 rules' tree is a tenth of the load's time.
        // (When no thread can be started, the closure, and the tree with it, is dropped here.)
        let _ = std::thread::Builder::new().spawn(move || drop(root));
        let config = walked.map(|(config, globs)| Config {
            names: walker.name_index(&config.rules, globs),
            ..config
        });
        match config {
            Some(config) if walker.problems.is_empty() => Ok(Config {
                warnings: walker.warnings,
                ..config
            }),
            _ => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: walker.problems,
            }),
        }
    }
}

impl Walker<'_> {
    /// The config, its patterns not yet compiled (`names` is empty), and the patterns.
    fn config(&mut self, root: &Value, path: &Path) -> Option<(Config, rules::ParsedGlobs)> {
        let root = match root {
            // An empty file: report the missing rules rather than "expected a mapping".
            Value::Null => &Value::Mapping(Mapping::new()),
            other => other,
        };
        let map = self.mapping(root, "")?;
        self.check_keys(map, &["workspace", "rules", "notify"], "");

        let workspace = self.parsed(map, "workspace", "", false, |raw| {
            workspace_arm_id(
                raw,
                " (/subscriptions/…/resourceGroups/…/providers/Microsoft.MachineLearningServices/workspaces/…)",
            )
        });
        self.workspace_len = workspace.as_ref().map(|w| w.as_ref().chars().count());
        let (rules, globs) = match present(map, "rules") {
            None => {
                self.problem("rules", "is required: a list of rules");
                Default::default()
            }
            Some(v) => self.rules(v),
        };
        let notify = present(map, "notify")
            .map(|v| self.notify(v))
            .unwrap_or_default();
        Some((
            Config {
                path: path.to_path_buf(),
                workspace,
                rules,
                names: NameIndex::default(),
                notify,
                warnings: Vec::new(),
            },
            globs,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::parse(yaml, Path::new("autodeploy.yml"))
    }

    /// Every problem of an invalid config, as `location: message` lines.
    pub(super) fn problems(yaml: &str) -> Vec<String> {
        let found = problems_or_none(yaml);
        assert!(!found.is_empty(), "expected problems in {yaml}");
        found
    }

    /// Every problem of a config, none when it is valid.
    pub(super) fn problems_or_none(yaml: &str) -> Vec<String> {
        match parse(yaml) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(other) => panic!("expected problems, got {other:?}"),
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
        assert_eq!(config.names.matching("credit-risk"), [0]);
        assert_eq!(config.names.matching("fraud"), [1]);
        assert!(config.names.matching("credit").is_empty());
        assert_eq!(
            config.rules[0].tags,
            [("stage".to_string(), "production".to_string())]
        );
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
    fn invalid_yaml_reports_line_and_column() {
        let err = parse("rules: [\n  - name: a\n").unwrap_err();
        assert!(matches!(err, ConfigError::Yaml { .. }));
        assert!(err.to_string().contains("line"), "{err}");
    }

    #[test]
    fn empty_file_asks_for_rules() {
        let found = problems("");
        assert!(found[0].starts_with("rules: is required"), "{found:?}");
    }
}
