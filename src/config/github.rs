//! The `github:` block of a rule: repository dispatch (`event_type`) or workflow dispatch
//! (`workflow`, `ref`, `inputs`), and the repository slug both name.

use std::fmt;

use serde_norway::{Mapping, Value};

use super::problems::{ConfigProblem, Walker, join, kind, present, scalar_text};
use super::template::Placeholder;
use super::template::Template;

/// Default GitHub REST API base URL.
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// GitHub's limit on `workflow_dispatch` inputs on github.com: 25 keys (raised from 10; see
/// `shared/reference/github-api-and-peers.md` and github/docs#15710, where the old 10 was first
/// documented: "you may only define up to 10 inputs for a workflow_dispatch event").
pub const MAX_WORKFLOW_INPUTS: usize = 25;
/// GitHub Enterprise Server's limit on `workflow_dispatch` inputs: still 10, as in the REST
/// description GHES ships ("Input keys and values configured in the workflow file. The maximum
/// number of properties is 10", `ActionsCreateWorkflowDispatchRequest` in the generated clients
/// octocrab and openapi-github, docs.rs).
pub const MAX_WORKFLOW_INPUTS_GHES: usize = 10;
/// GitHub's limit on a `repository_dispatch` `event_type`: 100 characters
/// (`github/rest-api-description`, `api.github.com.2022-11-28.yaml`, "Create a repository
/// dispatch event": "This parameter must not exceed 100 characters"; the docs corpus search
/// found no page contradicting it).
pub const MAX_EVENT_TYPE_LEN: usize = 100;

/// The `workflow_dispatch` inputs GitHub at `api_url` accepts: 25 on github.com (and GHE.com,
/// `api.SUBDOMAIN.ghe.com`), 10 on GitHub Enterprise Server (any other host).
pub fn max_workflow_inputs(api_url: &str) -> usize {
    let host = api_url
        .split_once("://")
        .map_or(api_url, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host == "api.github.com" || host.ends_with(".ghe.com") {
        MAX_WORKFLOW_INPUTS
    } else {
        MAX_WORKFLOW_INPUTS_GHES
    }
}

/// The shortest workspace ARM id: `/subscriptions/{GUID}/resourceGroups/{1}/providers/
/// Microsoft.MachineLearningServices/workspaces/{3}`.
const MIN_WORKSPACE_LEN: usize =
    "/subscriptions//resourceGroups//providers/Microsoft.MachineLearningServices/workspaces/".len()
        + 36
        + 1
        + 3;

/// The least and most characters a placeholder renders; `workspace` is the configured one.
fn placeholder_bounds(p: Placeholder, workspace: Option<usize>) -> (usize, Option<usize>) {
    match p {
        // Azure ML model names: up to 255 characters.
        Placeholder::ModelName => (1, Some(255)),
        Placeholder::ModelVersion | Placeholder::EventId => (1, None),
        // azureml:{name}:{version}
        Placeholder::ModelId => ("azureml:x:1".len(), None),
        Placeholder::Workspace => match workspace {
            Some(len) => (len, Some(len)),
            None => (MIN_WORKSPACE_LEN, None),
        },
    }
}

/// `github.follow_hours` when absent: how long `Reconcile` follows a dispatched run at most.
pub const DEFAULT_FOLLOW_HOURS: u32 = 6;
/// The largest `github.follow_hours`: a week (a run waiting for reviewers longer is not news).
pub const MAX_FOLLOW_HOURS: u32 = 7 * 24;

/// The `github:` block of a rule.
#[derive(Debug, Clone)]
pub struct GithubAction {
    /// `owner/repo`.
    pub repository: RepoSlug,
    /// Which dispatch API.
    pub target: GithubTarget,
    /// `follow` (default true): `Reconcile` follows the run the dispatch started to its end.
    pub follow: bool,
    /// `follow_hours` (default 6): for at most this long after the dispatch.
    pub follow_hours: u32,
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

impl Walker<'_> {
    pub(super) fn github(&mut self, value: &Value, location: &str) -> Option<GithubAction> {
        let map = self.mapping(value, location)?;
        self.check_keys(
            map,
            &[
                "repository",
                "event_type",
                "workflow",
                "ref",
                "inputs",
                "follow",
                "follow_hours",
            ],
            location,
        );
        let follow = self.flag(map, "follow", location, true);
        let follow_hours = match present(map, "follow_hours") {
            None => Some(DEFAULT_FOLLOW_HOURS),
            Some(n) => match n.as_u64() {
                Some(n @ 1..) if n <= u64::from(MAX_FOLLOW_HOURS) => Some(n as u32),
                _ => {
                    self.problem(
                        &join(location, "follow_hours"),
                        format!("must be a whole number of hours from 1 to {MAX_FOLLOW_HOURS}"),
                    );
                    None
                }
            },
        };
        let repository = self.parsed(map, "repository", location, true, |raw| {
            RepoSlug::parse(raw.trim())
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
            (Some(event_type), None) => self.repository_dispatch(map, &event_type, location),
            (None, Some(workflow)) => self.workflow_dispatch(map, workflow.trim(), location),
        };
        Some(GithubAction {
            repository: repository?,
            target: target?,
            follow: follow?,
            follow_hours: follow_hours?,
        })
    }

    fn repository_dispatch(
        &mut self,
        map: &Mapping,
        event_type: &str,
        location: &str,
    ) -> Option<GithubTarget> {
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
        let template = self.template(event_type, &loc);
        if let Some(t) = &template {
            let workspace = self.workspace_len;
            let (least, most) = t.length_bounds(|p| placeholder_bounds(p, workspace));
            if least > MAX_EVENT_TYPE_LEN {
                self.problem(
                    &loc,
                    format!("always renders at least {least} characters; GitHub limits event_type to {MAX_EVENT_TYPE_LEN}"),
                );
            } else if most.is_none_or(|m| m > MAX_EVENT_TYPE_LEN) {
                self.warning(
                    &loc,
                    format!("can render more than {MAX_EVENT_TYPE_LEN} characters (a model name may have 255), which GitHub refuses; such a version fails as a configuration problem"),
                );
            }
        }
        template.map(|event_type| GithubTarget::RepositoryDispatch { event_type })
    }

    fn workflow_dispatch(
        &mut self,
        map: &Mapping,
        workflow: &str,
        location: &str,
    ) -> Option<GithubTarget> {
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
        let git_ref = match present(map, "ref") {
            None => Template::parse("main").ok(),
            Some(_) => self
                .string(map, "ref", location, false)
                .and_then(|r| self.template(r.trim(), &join(location, "ref"))),
        };
        let inputs = self.inputs(present(map, "inputs"), &join(location, "inputs"));
        match (valid, git_ref, inputs) {
            (true, Some(git_ref), Some(inputs)) => Some(GithubTarget::WorkflowDispatch {
                workflow: workflow.to_string(),
                git_ref,
                inputs,
            }),
            _ => None,
        }
    }

    fn inputs(&mut self, value: Option<&Value>, location: &str) -> Option<Vec<(String, Template)>> {
        let Some(value) = value else {
            return Some(Vec::new());
        };
        let map = self.mapping(value, location)?;
        let api_url = self.env.get("GITHUB_API_URL");
        let api_url = api_url.as_deref().unwrap_or(DEFAULT_GITHUB_API_URL);
        let limit = max_workflow_inputs(api_url);
        if map.len() > limit {
            let whose = if limit == MAX_WORKFLOW_INPUTS {
                "GitHub accepts".to_string()
            } else {
                format!("GitHub Enterprise Server (GITHUB_API_URL {api_url}) accepts")
            };
            self.problem(
                location,
                format!("{} inputs; {whose} at most {limit}", map.len()),
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
        (ok && map.len() <= limit).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::problems;

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
    fn following_is_on_for_six_hours_unless_the_rule_says_otherwise() {
        use crate::config::{Config, RuleAction};
        let read = |extra: &str| {
            let yaml = format!(
                "rules: [{{name: a, models: [x], github: {{repository: o/r, event_type: e{extra}}}}}]"
            );
            let config = Config::parse(&yaml, std::path::Path::new("a.yml")).unwrap();
            match &config.rules[0].action {
                RuleAction::Github(g) => (g.follow, g.follow_hours),
                _ => unreachable!(),
            }
        };
        assert_eq!(read(""), (true, 6));
        assert_eq!(read(", follow: false"), (false, 6));
        assert_eq!(read(", follow_hours: 48"), (true, 48));
        for (bad, says) in [
            (", follow: 'no'", "github.follow: must be true or false"),
            (
                ", follow_hours: 0",
                "github.follow_hours: must be a whole number of hours from 1 to 168",
            ),
            (", follow_hours: 169", "from 1 to 168"),
            (", follow_hours: 1.5", "from 1 to 168"),
        ] {
            let yaml = format!(
                "rules: [{{name: a, models: [x], github: {{repository: o/r, event_type: e{bad}}}}}]"
            );
            let found = problems(&yaml);
            assert!(found.iter().any(|p| p.contains(says)), "{bad}: {found:?}");
        }
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
    fn event_types_that_always_or_may_render_past_100_characters() {
        use crate::config::{Config, ConfigError};
        let ws = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";
        let x90 = "x".repeat(90);
        // (workspace line, event_type, problem or warning expected, what it says)
        let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
            ("", "deploy-model".into(), None, ""),
            (
                "",
                "deploy-{workspace}".into(),
                Some("problem"),
                "always renders at least 134",
            ),
            (
                "",
                "{modelVersion}".into(),
                Some("warning"),
                "can render more than 100",
            ),
            (
                "",
                "deploy-{modelName}".into(),
                Some("warning"),
                "a model name may have 255",
            ),
            (
                "",
                format!("{x90}-{{modelId}}"),
                Some("problem"),
                "always renders at least 102",
            ),
            (
                "",
                "x".repeat(101),
                Some("problem"),
                "always renders at least 101",
            ),
            (ws, "d-{workspace}".into(), Some("problem"), "at least 129"),
        ];
        for (workspace, event_type, expected, needle) in cases {
            let head = if workspace.is_empty() {
                String::new()
            } else {
                format!("workspace: {workspace}\n")
            };
            let yaml = format!(
                "{head}rules: [{{name: a, models: [x], github: {{repository: o/r, event_type: '{event_type}'}}}}]"
            );
            let found: Vec<String> = match Config::parse(&yaml, std::path::Path::new("a.yml")) {
                Ok(c) if expected == Some("problem") => panic!("{event_type}: accepted: {c:?}"),
                Ok(c) => c.warnings.iter().map(ToString::to_string).collect(),
                Err(ConfigError::Invalid { problems, .. }) if expected == Some("problem") => {
                    problems.iter().map(ToString::to_string).collect()
                }
                Err(e) => panic!("{event_type}: {e}"),
            };
            match expected {
                None => assert!(found.is_empty(), "{event_type}: {found:?}"),
                Some(_) => assert!(
                    found
                        .iter()
                        .any(|p| p.starts_with("rules[0] (a).github.event_type: ")
                            && p.contains(needle)),
                    "{event_type}: missing {needle:?} in {found:?}"
                ),
            }
        }
    }

    #[test]
    fn github_enterprise_server_accepts_ten_inputs() {
        for (url, limit) in [
            ("https://api.github.com", 25),
            ("https://API.GITHUB.COM/", 25),
            ("https://api.octocorp.ghe.com", 25),
            ("https://github.example.com/api/v3", 10),
            ("http://127.0.0.1:8080", 10),
        ] {
            assert_eq!(max_workflow_inputs(url), limit, "{url}");
        }
    }
}
