//! The `github:` block of a rule: repository dispatch (`event_type`) or workflow dispatch
//! (`workflow`, `ref`, `inputs`), and the repository slug both name.

use std::fmt;

use serde_norway::{Mapping, Value};

use super::problems::{ConfigProblem, Walker, join, kind, present, scalar_text};
use super::{Template, TemplateValues};

/// GitHub's limit on `workflow_dispatch` inputs.
pub const MAX_WORKFLOW_INPUTS: usize = 25;
/// GitHub's limit on a `repository_dispatch` `event_type`.
pub const MAX_EVENT_TYPE_LEN: usize = 100;

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

impl Walker<'_> {
    pub(super) fn github(&mut self, value: &Value, location: &str) -> Option<GithubAction> {
        let map = self.mapping(value, location)?;
        self.check_keys(
            map,
            &["repository", "event_type", "workflow", "ref", "inputs"],
            location,
        );
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
    fn repository_slugs_are_validated() {
        assert!(RepoSlug::parse("contoso/ml-deploy").is_ok());
        assert!(RepoSlug::parse("contoso/ml.deploy_2").is_ok());
        for bad in ["contoso", "/x", "o/", "o/r/x", "-o/r", "o/..", "o w/r"] {
            assert!(RepoSlug::parse(bad).is_err(), "{bad}");
        }
    }
}
