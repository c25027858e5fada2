//! `check-config`: validates the rules file and prints every problem, or lists the files it refers
//! to (for packaging).

use std::io::Write;
use std::path::Path;

use crate::config::{Config, GithubTarget, Mode, RuleAction, lexical};
use crate::startup::Settings;

use super::config_arg::ConfigArg;
use super::errors::CliError;

/// `check-config [--config F] [--list-files]`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Instead, list the files the config refers to (deployment YAMLs, the files of their code
    /// folders after the ignore file, conda files, smoke-test requests), relative to the config
    /// file's folder, one per line (for packaging).
    #[arg(long)]
    list_files: bool,
}

/// Checks (or lists) the config `args` name, on stdout.
pub fn run(args: CheckConfigArgs, settings: Settings) -> Result<bool, CliError> {
    let path = args.config.resolve(&settings);
    let ok = if args.list_files {
        list_config_files(&path, &mut super::terminal::Visible::new(std::io::stdout()))?
    } else {
        check_config(&path, &mut super::terminal::Visible::new(std::io::stdout()))?
    };
    Ok(ok)
}

/// `check-config`: prints every problem (or a summary of the rules) and returns whether the
/// config is valid.
pub fn check_config(path: &Path, out: &mut dyn Write) -> std::io::Result<bool> {
    match Config::load(path) {
        Ok(config) => {
            writeln!(
                out,
                "{}: OK, {} rule(s)",
                path.display(),
                config.rules.len()
            )?;
            if let Some(ws) = &config.workspace {
                writeln!(out, "  only events from workspace {ws}")?;
            }
            for rule in &config.rules {
                let action = match &rule.action {
                    RuleAction::Github(github) => match &github.target {
                        GithubTarget::RepositoryDispatch { event_type } => format!(
                            "repository_dispatch {:?} to {}",
                            event_type.source(),
                            github.repository
                        ),
                        GithubTarget::WorkflowDispatch {
                            workflow, git_ref, ..
                        } => format!(
                            "workflow_dispatch {workflow} on {} in {}",
                            git_ref.source(),
                            github.repository
                        ),
                    },
                    RuleAction::AzureMl(azureml) if azureml.batch.is_some() => format!(
                        "deploy to batch endpoint {} ({}, made the default{}{})",
                        azureml.endpoint,
                        azureml.deployment_file.display(),
                        if azureml
                            .batch
                            .as_ref()
                            .is_some_and(|b| b.smoke_job.is_some())
                        {
                            " after a smoke job"
                        } else {
                            ""
                        },
                        if azureml.rollout.approval.is_some() {
                            " and approval"
                        } else {
                            ""
                        }
                    ),
                    RuleAction::AzureMl(azureml) => format!(
                        "deploy to endpoint {} ({}, {}{})",
                        azureml.endpoint,
                        azureml.deployment_file.display(),
                        azureml.rollout.strategy.as_str(),
                        if azureml.smoke_test.is_some() {
                            ", smoke test"
                        } else {
                            ""
                        }
                    ),
                };
                let tags = if rule.tags.is_empty() {
                    String::new()
                } else {
                    let pairs: Vec<String> =
                        rule.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!(" with tags {}", pairs.join(", "))
                };
                let mode = if rule.mode == Mode::Observe {
                    " [observe]"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "  {}{mode}: models {}{tags} → {action}",
                    rule.name,
                    rule.model_patterns.join(", ")
                )?;
                // Loading only lists code folders; the hash is computed here, as a plan would.
                if let RuleAction::AzureMl(azureml) = &rule.action
                    && let Some(code) = &azureml.template.assets.code
                {
                    let code = code.hashed();
                    match &code.problem {
                        None => writeln!(
                            out,
                            "    code folder {}: {} file(s), sha256 {}",
                            code.yaml_path, code.files, code.hash
                        )?,
                        Some(why) => {
                            writeln!(out, "    code folder {}: {why}", code.yaml_path)?;
                            return Ok(false);
                        }
                    }
                }
            }
            for warning in &config.warnings {
                writeln!(out, "warning: {}: {warning}", path.display())?;
            }
            Ok(true)
        }
        Err(error) => {
            let lines = error.lines();
            for line in &lines {
                writeln!(out, "{line}")?;
            }
            writeln!(out, "{} problem(s) found", lines.len())?;
            Ok(false)
        }
    }
}

/// `check-config --list-files`: the files the config refers to, relative to its folder, one per
/// line. Fails (listing the problems) when the config is invalid or refers to a file outside its
/// folder, which a package could not carry.
pub fn list_config_files(path: &Path, out: &mut dyn Write) -> std::io::Result<bool> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            for line in error.lines() {
                writeln!(out, "{line}")?;
            }
            return Ok(false);
        }
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let mut files = Vec::new();
    for rule in &config.rules {
        if let RuleAction::AzureMl(azureml) = &rule.action {
            files.push(azureml.deployment_file.clone());
            // Code folders (after their ignore file) and conda files, as the rollout reads them.
            files.extend(azureml.template.files().iter().cloned());
            if let Some(smoke) = &azureml.smoke_test {
                files.push(smoke.request_file.clone());
            }
        }
    }
    let mut files: Vec<_> = files.iter().map(|f| lexical(f)).collect();
    files.sort();
    files.dedup();
    let mut ok = true;
    for file in files {
        match file.strip_prefix(lexical(base)) {
            Ok(relative) if !relative.is_absolute() && !relative.starts_with("..") => {
                writeln!(out, "{}", relative.display())?;
            }
            _ => {
                eprintln!(
                    "{}: {} is outside the config file's folder; use a path relative to it so the package can carry it",
                    path.display(),
                    file.display()
                );
                ok = false;
            }
        }
    }
    Ok(ok)
}
