//! `az ml batch-deployment` YAML → the ARM `BatchDeployments_CreateOrUpdate` body, as azure-ai-ml
//! 1.35.2 builds it (`BatchDeployment._to_rest_object`, `ModelBatchDeployment._to_rest_object`),
//! checked key by key against the SDK's goldens (`tests/fixtures/azml-batch/`). The assets it
//! references (a local code folder, an inline environment, `@latest`) are the online
//! translation's: the same [`assets`] code registers them in the same `preparing_assets` phase.
//!
//! The layout follows `type:` as `az ml batch-deployment create` picks its loader: `model` (a
//! `settings:` block), `pipeline` (component deployments: refused here), or none (the older flat
//! keys, with `instance_count` under `resources`).
//!
//! [`assets`]: crate::deployment::assets

use std::path::Path;

use serde_json::{Map, Value, json};

use super::assets::{self, AssetTemplate};
use super::translate::{DeploymentTemplate, environment_and_code, iso8601_from_millis};
use crate::folder::ConfigFolder;

/// Keys every batch layout reads (or knowingly ignores: `name`, `endpoint_name` and `model` come
/// from the rule and the event, as `--name`, `--endpoint-name` and `--set model=…` would).
const COMMON_KEYS: &[&str] = &[
    "$schema",
    "name",
    "endpoint_name",
    "type",
    "description",
    "tags",
    "properties",
    "model",
    "code_configuration",
    "environment",
    "environment_variables",
    "compute",
    "resources",
];

/// The scoring settings: under `settings:` with `type: model`, at the top without a type.
const SETTINGS_KEYS: &[&str] = &[
    "max_concurrency_per_instance",
    "mini_batch_size",
    "output_action",
    "output_file_name",
    "retry_settings",
    "error_threshold",
    "logging_level",
    "environment_variables",
];

/// Keys of a managed online deployment that a batch deployment does not have.
const ONLINE_ONLY_KEYS: &[&str] = &[
    "instance_type",
    "request_settings",
    "liveness_probe",
    "readiness_probe",
    "startup_probe",
    "scale_settings",
    "app_insights_enabled",
    "egress_public_network_access",
    "model_mount_path",
    "data_collector",
];

/// Keys of a pipeline component deployment.
const PIPELINE_KEYS: &[&str] = &["component", "job_definition", "deployment_configuration"];

/// `resources:` keys (`JobResourceConfigurationSchema`) and their REST names.
const RESOURCE_KEYS: &[(&str, &str)] = &[
    ("instance_count", "instanceCount"),
    ("instance_type", "instanceType"),
    ("shm_size", "shmSize"),
    ("docker_args", "dockerArgs"),
    ("locations", "locations"),
    ("max_instance_count", "maxInstanceCount"),
    ("properties", "properties"),
];

/// How the YAML is read, from its `type:`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// `type: model`: `settings:`, `compute` required.
    Model,
    /// No type (or a type az ml loads with the flat schema): the settings at the top.
    /// `model_body`: `type: Model`/`MODEL`, flat keys but the model deployment's body.
    Flat { model_body: bool },
}

/// Translates a batch deployment YAML (already parsed) whose folder is `base`, for `workspace`
/// (where `azureml:` references and compute names resolve; `None`: the event's, filled per
/// event). Local files it names must stay inside `root`. Every problem names its YAML key.
pub fn translate_batch(
    yaml: &serde_norway::Value,
    workspace: Option<&str>,
    base: &Path,
    root: &ConfigFolder,
) -> Result<DeploymentTemplate, Vec<String>> {
    let Some(map) = yaml.as_mapping() else {
        return Err(vec!["the deployment file is not a YAML mapping".into()]);
    };
    let workspace = workspace.unwrap_or("{workspace}");
    let get = |key: &str| map.get(key).filter(|v| !v.is_null());
    let mut problems = Vec::new();

    let layout = match get("type") {
        None => Layout::Flat { model_body: false },
        Some(serde_norway::Value::String(t)) if t == "model" => Layout::Model,
        Some(serde_norway::Value::String(t)) if t.eq_ignore_ascii_case("pipeline") => {
            return Err(vec![
                "type: pipeline (a pipeline component deployment) is not deployed directly: only model deployments (type: model, or the flat layout without type) are; deploy components with a `github:` rule".into(),
            ]);
        }
        // az ml compares `model` exactly to pick its loader; the flat schema lower-cases it.
        Some(serde_norway::Value::String(t)) if t.eq_ignore_ascii_case("model") => {
            Layout::Flat { model_body: true }
        }
        Some(other) => {
            return Err(vec![format!(
                "type: {} is not a batch deployment type (model, pipeline, or none for the flat layout)",
                assets::scalar(other).unwrap_or_else(|| "?".into())
            )]);
        }
    };

    for key in map.keys() {
        let Some(k) = key.as_str() else {
            problems.push("keys must be strings".into());
            continue;
        };
        let settings_key = SETTINGS_KEYS.contains(&k);
        let known = COMMON_KEYS.contains(&k)
            || match layout {
                Layout::Model => k == "settings",
                Layout::Flat { .. } => settings_key,
            };
        if known {
            continue;
        }
        problems.push(if ONLINE_ONLY_KEYS.contains(&k) {
            format!(
                "`{k}` is a managed online deployment key, not a batch one (a batch deployment runs on `compute`); use `azureml.endpoint` for online deployments"
            )
        } else if k == "instance_count" {
            "`instance_count` must sit under `resources` (resources.instance_count)".into()
        } else if PIPELINE_KEYS.contains(&k) {
            format!(
                "`{k}` belongs to pipeline component deployments (type: pipeline), which are not deployed directly"
            )
        } else if settings_key {
            format!("`{k}` belongs under `settings:` with type: model (settings.{k})")
        } else if k == "settings" {
            "`settings` needs `type: model` (without a type the settings keys sit at the top)"
                .into()
        } else {
            format!("unknown or unsupported key `{k}` for a batch deployment")
        });
    }

    let mut assets = AssetTemplate::default();
    let mut properties = Map::new();

    if let Some(v) = get("description") {
        match v.as_str() {
            Some(text) => {
                properties.insert("description".into(), json!(text));
            }
            None => problems.push("description must be text".into()),
        }
    }

    match get("compute") {
        Some(v) => match v.as_str().map(|c| compute_id(c, workspace)) {
            Some(Ok(id)) => {
                properties.insert("compute".into(), json!(id));
            }
            Some(Err(e)) => problems.push(format!("compute: {e}")),
            None => problems.push("compute must be text (a compute cluster's name)".into()),
        },
        None if layout == Layout::Model => problems.push(
            "compute is required with type: model (the compute cluster that runs the batch jobs, e.g. azureml:cpu-cluster)".into(),
        ),
        None => {}
    }

    environment_and_code(
        get("environment"),
        get("code_configuration"),
        (base, root, workspace),
        &mut properties,
        &mut assets,
        &mut problems,
    );

    let mut resources = match get("resources") {
        None => None,
        Some(v) => resources_body(v, &mut problems),
    };

    // The scoring settings: where they are depends on the layout.
    let settings = match layout {
        Layout::Model => get("settings"),
        Layout::Flat { .. } => Some(yaml),
    };
    let settings_map = match settings.map(|s| (s, s.as_mapping())) {
        Some((_, Some(m))) => Some(m),
        Some((_, None)) => {
            problems.push("settings must be a mapping".into());
            None
        }
        None => None,
    };
    let prefix = if layout == Layout::Model {
        "settings."
    } else {
        ""
    };
    if let Some(settings) = settings_map {
        let sget = |key: &str| settings.get(key).filter(|v| !v.is_null());
        if layout == Layout::Model {
            for key in settings.keys() {
                match key.as_str() {
                    Some(k) if SETTINGS_KEYS.contains(&k) || k == "instance_count" => {}
                    Some(k) => problems.push(format!(
                        "unknown key `settings.{k}` (allowed: {}, instance_count)",
                        SETTINGS_KEYS.join(", ")
                    )),
                    None => problems.push("settings: keys must be strings".into()),
                }
            }
            // az ml's ModelBatchDeploymentSettings cannot be built without it.
            if sget("mini_batch_size").is_none() {
                problems.push("settings.mini_batch_size is required when settings is given (az ml refuses settings without it)".into());
            }
            // A count under settings moves to resources, unless resources gives one (az ml).
            if let Some(v) = sget("instance_count") {
                match whole(v) {
                    Some(0) => {}
                    Some(_) if resources.is_some() => {
                        problems.push("settings.instance_count: cannot be set when resources is given (use resources.instance_count)".into());
                    }
                    Some(n) => resources = Some(json!({"instanceCount": n, "properties": {}})),
                    None => problems.push("settings.instance_count must be a whole number".into()),
                }
            }
        }
        for (key, rest) in [
            ("max_concurrency_per_instance", "maxConcurrencyPerInstance"),
            ("mini_batch_size", "miniBatchSize"),
            ("error_threshold", "errorThreshold"),
        ] {
            if let Some(v) = sget(key) {
                match whole(v) {
                    Some(n) => {
                        properties.insert(rest.into(), json!(n));
                    }
                    None => problems.push(format!("{prefix}{key} must be a whole number")),
                }
            }
        }
        let output_action = match sget("output_action") {
            None => None,
            Some(v) => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("append_row") => Some("AppendRow"),
                Some("summary_only") => Some("SummaryOnly"),
                _ => {
                    problems.push(format!(
                        "{prefix}output_action must be append_row or summary_only"
                    ));
                    None
                }
            },
        };
        if let Some(action) = output_action {
            properties.insert("outputAction".into(), json!(action));
        }
        if let Some(v) = sget("output_file_name") {
            match v.as_str() {
                Some(_) if output_action == Some("SummaryOnly") => problems.push(format!(
                    "{prefix}output_file_name cannot be given with output_action: summary_only (az ml refuses it)"
                )),
                Some(name) => {
                    properties.insert("outputFileName".into(), json!(name));
                }
                None => problems.push(format!("{prefix}output_file_name must be text")),
            }
        }
        if let Some(v) = sget("logging_level") {
            match v.as_str() {
                Some(level) => {
                    properties.insert("loggingLevel".into(), json!(level));
                }
                None => problems.push(format!(
                    "{prefix}logging_level must be text (warning, info or debug)"
                )),
            }
        }
        if let Some(v) = sget("retry_settings") {
            match retry_body(v) {
                Ok(body) => {
                    properties.insert("retrySettings".into(), body);
                }
                Err(e) => problems.push(format!("{prefix}retry_settings{e}")),
            }
        }
    }

    // Environment variables: the settings' with type: model (the top-level ones only without a
    // settings block), always sent (even empty) by the flat layout, values keep their YAML type.
    let env_source = match layout {
        Layout::Model if get("settings").is_some() => settings_map
            .and_then(|s| s.get("environment_variables").filter(|v| !v.is_null()))
            .map(|v| (v, "settings.environment_variables")),
        _ => get("environment_variables").map(|v| (v, "environment_variables")),
    };
    let environment_variables = match env_source {
        Some((v, key)) => match assets::json_map(v) {
            Some(m) => Some(m),
            None => {
                problems.push(format!("{key} must be a mapping of names to values"));
                None
            }
        },
        None => None,
    };
    match (environment_variables, layout) {
        (Some(vars), _) => {
            properties.insert("environmentVariables".into(), Value::Object(vars));
        }
        (None, Layout::Flat { model_body: false }) => {
            properties.insert("environmentVariables".into(), json!({}));
        }
        (None, _) => {}
    }

    if let Some(resources) = resources {
        properties.insert("resources".into(), resources);
    }
    let json_map = |key: &str, problems: &mut Vec<String>| match get(key) {
        None => Map::new(),
        Some(v) => assets::json_map(v).unwrap_or_else(|| {
            problems.push(format!("{key} must be a mapping of names to values"));
            Map::new()
        }),
    };
    let extra_properties = json_map("properties", &mut problems);
    let tags = json_map("tags", &mut problems);
    properties.insert("properties".into(), Value::Object(extra_properties));

    if problems.is_empty() {
        Ok(DeploymentTemplate {
            body: json!({"tags": tags, "properties": properties}),
            assets: Box::new(assets),
        })
    } else {
        Err(problems)
    }
}

/// `compute` in any spelling az ml accepts (`azureml:NAME`, `NAME`, an ARM id, `azureml:` + an
/// ARM id) → the full ARM id, without a lookup.
fn compute_id(written: &str, workspace: &str) -> Result<String, String> {
    let trimmed = written.trim();
    let bare = trimmed.strip_prefix("azureml:").unwrap_or(trimmed);
    if bare.starts_with("/subscriptions/") {
        let lower = bare.to_ascii_lowercase();
        if !lower.contains("/providers/microsoft.machinelearningservices/workspaces/")
            || !lower.contains("/computes/")
        {
            return Err(format!(
                "{trimmed:?} is not the ARM id of a workspace compute"
            ));
        }
        return Ok(bare.to_string());
    }
    let valid = !bare.is_empty()
        && bare.len() <= 255
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(format!(
            "{trimmed:?} is not a compute name (azureml:NAME, NAME or the compute's ARM id)"
        ));
    }
    Ok(format!(
        "{}/computes/{bare}",
        workspace.trim_end_matches('/')
    ))
}

/// `resources:` → `{instanceCount, …, properties: {}}` (properties always sent, as az ml does).
fn resources_body(value: &serde_norway::Value, problems: &mut Vec<String>) -> Option<Value> {
    let Some(map) = value.as_mapping() else {
        problems.push("resources must be a mapping (e.g. instance_count: 2)".into());
        return None;
    };
    let mut out = Map::new();
    out.insert("properties".into(), json!({}));
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            problems.push("resources: keys must be strings".into());
            continue;
        };
        let Some((_, rest)) = RESOURCE_KEYS.iter().find(|(yaml, _)| *yaml == key) else {
            problems.push(format!(
                "unknown key `resources.{key}` (allowed: {})",
                RESOURCE_KEYS
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        };
        if v.is_null() {
            continue;
        }
        let converted = match key {
            "instance_count" | "max_instance_count" => whole(v).map(|n| json!(n)),
            "instance_type" | "shm_size" | "docker_args" => v.as_str().map(|s| json!(s)),
            "locations" => v.as_sequence().and_then(|items| {
                items
                    .iter()
                    .map(|i| i.as_str().map(|s| json!(s)))
                    .collect::<Option<Vec<_>>>()
                    .map(Value::Array)
            }),
            _ => assets::json_map(v).map(Value::Object),
        };
        match converted {
            Some(value) => {
                out.insert((*rest).into(), value);
            }
            None => problems.push(format!("resources.{key} has the wrong type")),
        }
    }
    Some(Value::Object(out))
}

/// `retry_settings:` → `{maxRetries, timeout}`; the timeout is whole seconds, sent as an
/// ISO 8601 duration (a zero timeout is not sent, as az ml). Errors start with the sub-key.
fn retry_body(value: &serde_norway::Value) -> Result<Value, String> {
    let map = value
        .as_mapping()
        .ok_or_else(|| " must be a mapping (max_retries, timeout)".to_string())?;
    let mut out = Map::new();
    for (k, v) in map {
        match k.as_str() {
            Some("max_retries") if !v.is_null() => {
                let n = whole(v).ok_or(".max_retries must be a whole number")?;
                out.insert("maxRetries".into(), json!(n));
            }
            Some("timeout") if !v.is_null() => match whole(v) {
                Some(0) => {}
                Some(secs) if secs > 0 => {
                    out.insert(
                        "timeout".into(),
                        json!(iso8601_from_millis(secs as u64 * 1000)),
                    );
                }
                _ => return Err(".timeout must be a whole number of seconds".into()),
            },
            Some("max_retries" | "timeout") => {}
            Some(other) => {
                return Err(format!(
                    ".{other} is unknown (allowed: max_retries, timeout)"
                ));
            }
            None => return Err(": keys must be strings".into()),
        }
    }
    Ok(Value::Object(out))
}

/// A whole number as marshmallow's `Int` reads it: integers, and floats without a fraction.
fn whole(value: &serde_norway::Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

#[cfg(test)]
mod tests;
