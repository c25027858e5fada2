//! The `azureml:` block of a rule: direct deployment to a managed online endpoint (or, with
//! `batch_endpoint`, to a batch endpoint: [`super::batch`]), with its deployment YAML, deployment
//! name, target workspace and smoke test (`rollout:` is in [`super::rollout`]).

use std::path::PathBuf;

use serde_norway::Value;

use super::batch::BatchTarget;
use super::problems::workspace_arm_id;
use super::problems::{Walker, join, present};
use super::rollout::RolloutSpec;
use super::template::Template;
use crate::deployment::batch::translate_batch;
use crate::deployment::translate::{DeploymentTemplate, translate};
use crate::event::WorkspaceId;

/// The `azureml:` block of a rule.
#[derive(Debug, Clone)]
pub struct AzureMlAction {
    /// Online endpoint name (wins over the YAML's `endpoint_name`); with `batch`, the batch
    /// endpoint's (`batch_endpoint`).
    pub endpoint: String,
    /// The deployment YAML, resolved against the config file's folder.
    pub deployment_file: PathBuf,
    /// The translated deployment body.
    pub template: DeploymentTemplate,
    /// Deployment name template (default `{modelName}-{modelVersion}`), sanitised per event.
    pub name: Template,
    /// Where to deploy; default: the event's workspace.
    pub target_workspace: Option<WorkspaceId>,
    /// Request to score the new deployment with before it gets traffic.
    pub smoke_test: Option<SmokeTest>,
    /// How traffic moves.
    pub rollout: Box<RolloutSpec>,
    /// A batch endpoint rule (`batch_endpoint`): the deployment YAML is an `az ml
    /// batch-deployment` one and the new deployment becomes the endpoint's default.
    pub batch: Option<Box<BatchTarget>>,
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

impl Walker<'_> {
    pub(super) fn azureml(&mut self, value: &Value, location: &str) -> Option<AzureMlAction> {
        let map = self.mapping(value, location)?;
        self.check_keys(
            map,
            &[
                "endpoint",
                "batch_endpoint",
                "deployment",
                "name",
                "target_workspace",
                "smoke_test",
                "smoke_job",
                "rollout",
            ],
            location,
        );
        let batch = present(map, "batch_endpoint").is_some();
        let (key, kind) = if batch {
            ("batch_endpoint", "a batch endpoint")
        } else {
            ("endpoint", "an online endpoint")
        };
        if batch && present(map, "endpoint").is_some() {
            self.problem(
                location,
                "exactly one of `endpoint` (an online endpoint) or `batch_endpoint` (a batch endpoint), not both",
            );
        }
        if !batch && present(map, "endpoint").is_none() {
            self.problem(
                &join(location, "endpoint"),
                "is required: the online endpoint to deploy to (or `batch_endpoint` for a batch endpoint)",
            );
        }
        self.endpoint_kind_keys(map, batch, location);
        let endpoint = self.parsed(map, key, location, batch, |e| {
            let e = e.trim();
            if valid_azureml_name(e) {
                Ok(e.to_string())
            } else {
                Err(format!("{e:?} is not {kind} name (3-32 letters, digits and '-', starting with a letter)"))
            }
        });
        let target_workspace = self.parsed(map, "target_workspace", location, false, |raw| {
            workspace_arm_id(raw, "")
        });
        let name = match present(map, "name") {
            None => Template::parse("{modelName}-{modelVersion}").ok(),
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

        let loc = join(location, "deployment");
        let deployment = self
            .file(map, "deployment", location)
            .and_then(|(path, text)| {
                let yaml: Value = match serde_norway::from_str(&text) {
                    Ok(yaml) => yaml,
                    Err(e) => {
                        self.problem(&loc, format!("{}: not valid YAML: {e}", path.display()));
                        return None;
                    }
                };
                let ws = target_workspace.as_ref().map(|w| w.as_ref());
                let base = path.parent().unwrap_or(std::path::Path::new(""));
                let translated = if batch {
                    translate_batch(&yaml, ws, base, &self.folder)
                } else {
                    translate(&yaml, ws, base, &self.folder)
                };
                match translated {
                    Ok(template) => Some((path, template)),
                    Err(problems) => {
                        for p in problems {
                            self.problem(&loc, format!("{}: {p}", path.display()));
                        }
                        None
                    }
                }
            });

        let smoke_test = match present(map, "smoke_test") {
            Some(v) if !batch => self.smoke_test(v, &join(location, "smoke_test")).map(Some),
            _ => Some(None),
        };
        let smoke_job = match present(map, "smoke_job") {
            Some(v) if batch => self.smoke_job(v, &join(location, "smoke_job")).map(Some),
            _ => Some(None),
        };
        let rollout = match present(map, "rollout") {
            None => Some(RolloutSpec::default()),
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
            rollout: Box::new(rollout?),
            batch: if batch {
                Some(Box::new(BatchTarget {
                    smoke_job: smoke_job?,
                }))
            } else {
                None
            },
        })
    }

    fn smoke_test(&mut self, value: &Value, location: &str) -> Option<SmokeTest> {
        let map = self.mapping(value, location)?;
        self.check_keys(map, &["request", "expect_status"], location);
        let expect_status = match present(map, "expect_status") {
            None => Some(200),
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
        let request =
            self.file(map, "request", location).and_then(
                |(path, text)| match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(json) => Some((path, json)),
                    Err(e) => {
                        self.problem(
                            &join(location, "request"),
                            format!("{} is not JSON: {e}", path.display()),
                        );
                        None
                    }
                },
            );
        let (request_file, request) = request?;
        Some(SmokeTest {
            request_file,
            request,
            expect_status: expect_status?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    /// A config folder `root/config` holding a deployment, a request, a code folder and a conda
    /// file, with a secret beside the folder; returns the problems of `rule` (an `azureml:` block).
    fn problems_of(rule: &str, deployment_tail: &str) -> Vec<String> {
        let root = tempfile::tempdir().unwrap();
        let secret = "SECRET-CONTENT: do not print";
        std::fs::write(root.path().join("secret.json"), secret).unwrap();
        std::fs::write(root.path().join("secret.yml"), secret).unwrap();
        let config = root.path().join("config");
        std::fs::create_dir_all(config.join("scripts")).unwrap();
        std::fs::write(config.join("scripts/score.py"), "def run(x): return x\n").unwrap();
        std::fs::write(config.join("request.json"), "{}").unwrap();
        std::fs::write(
            config.join("deployment.yml"),
            format!("instance_type: Standard_DS3_v2\n{deployment_tail}"),
        )
        .unwrap();
        let yaml = format!("rules:\n  - name: d\n    models: [m]\n    azureml: {rule}\n");
        match Config::parse(&yaml, &config.join("autodeploy.yml")) {
            Err(ConfigError::Invalid { problems, .. }) => {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                assert!(!lines.iter().any(|l| l.contains("SECRET")), "{lines:?}");
                lines
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn referenced_files_must_stay_inside_the_config_folder() {
        let ok = "{ endpoint: ep-one, deployment: deployment.yml }";
        let abs = std::env::temp_dir().join("secret.json");
        let abs = abs.display();
        // (the azureml block, the deployment YAML's tail, the key and word the problem names)
        let cases: Vec<(String, &str, &str, &str)> = vec![
            (
                "{ endpoint: ep-one, deployment: ../secret.yml }".into(),
                "",
                "rules[0] (d).azureml.deployment: ",
                "outside the config file's folder",
            ),
            (
                "{ endpoint: ep-one, deployment: scripts/../../secret.yml }".into(),
                "",
                "rules[0] (d).azureml.deployment: ",
                "outside",
            ),
            (
                format!("{{ endpoint: ep-one, deployment: {abs} }}"),
                "",
                "rules[0] (d).azureml.deployment: ",
                "absolute path",
            ),
            (
                "{ endpoint: ep-one, deployment: deployment.yml, smoke_test: { request: ../secret.json } }".into(),
                "",
                "rules[0] (d).azureml.smoke_test.request: ",
                "outside",
            ),
            (
                format!("{{ endpoint: ep-one, deployment: deployment.yml, smoke_test: {{ request: {abs} }} }}"),
                "",
                "rules[0] (d).azureml.smoke_test.request: ",
                "absolute path",
            ),
            (
                ok.into(),
                "code_configuration: { code: ../, scoring_script: score.py }\n",
                "rules[0] (d).azureml.deployment: ",
                "code_configuration.code: \"../\" is outside",
            ),
            (
                ok.into(),
                "code_configuration: { code: ./scripts, scoring_script: ../../secret.json }\n",
                "rules[0] (d).azureml.deployment: ",
                "code_configuration.scoring_script: \"../../secret.json\" is not inside the code folder",
            ),
            (
                ok.into(),
                "environment: { image: mcr.microsoft.com/x, conda_file: ../secret.yml }\n",
                "rules[0] (d).azureml.deployment: ",
                "environment.conda_file: \"../secret.yml\" is outside",
            ),
            (
                ok.into(),
                "environment: { image: mcr.microsoft.com/x, conda_file: /etc/hostname }\n",
                "rules[0] (d).azureml.deployment: ",
                "environment.conda_file: \"/etc/hostname\" is an absolute path",
            ),
        ];
        for (rule, tail, key, word) in cases {
            let found = problems_of(&rule, tail);
            assert!(
                found.iter().any(|p| p.starts_with(key) && p.contains(word)),
                "{rule} {tail}: missing {key}…{word} in {found:#?}"
            );
        }
    }
}
