//! The deployment YAML's `environment:` as az ml resolves it (azure-ai-ml 1.35.2,
//! `_operation_orchestrator.py`, `entities/_assets/environment.py`): a registered reference becomes
//! an id without a call; `@latest` is looked up when the rollout starts; an inline mapping becomes
//! an environment version to PUT, anonymous ones named by the same content hash az ml computes, so
//! the service reuses the image it already built for that content.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::pyyaml;
use crate::folder::ConfigFolder;

/// The name az ml gives every anonymous environment.
pub const ANONYMOUS_ENVIRONMENT: &str = "CliV2AnonymousEnvironment";

/// Keys of an inline environment mapping.
const ENVIRONMENT_KEYS: &[&str] = &[
    "$schema",
    "name",
    "version",
    "description",
    "tags",
    "properties",
    "image",
    "conda_file",
    "build",
    "inference_config",
    "os_type",
    "datastore",
];

/// What `environment:` says, resolved as far as it can be without a call.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvironmentRef {
    /// An id (or curated/registry reference) to put in `environmentId` as is.
    Id(String),
    /// An environment version to register first.
    Inline(InlineEnvironment),
}

/// An environment version to register before the deployment, or a label to resolve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InlineEnvironment {
    /// `CliV2AnonymousEnvironment` at the content hash (PUT is idempotent: same content, same version).
    Anonymous {
        /// The content hash az ml computes.
        version: String,
        /// The PUT body.
        body: Value,
    },
    /// A named inline environment; without a version, the next one (as az ml auto-increments).
    Named {
        /// Name.
        name: String,
        /// Version, when the YAML gives one.
        version: Option<String>,
        /// The PUT body.
        body: Value,
    },
    /// `azureml:NAME@latest`: the most recently created version, looked up at rollout start.
    Latest {
        /// Name.
        name: String,
    },
}

impl InlineEnvironment {
    /// In words, for dry runs and `status`.
    pub fn describe(&self) -> String {
        match self {
            InlineEnvironment::Anonymous { version, .. } => {
                format!("register environment {ANONYMOUS_ENVIRONMENT}:{version}")
            }
            InlineEnvironment::Named {
                name,
                version: Some(version),
                ..
            } => format!("register environment {name}:{version}"),
            InlineEnvironment::Named {
                name,
                version: None,
                ..
            } => format!("register environment {name} as its next version"),
            InlineEnvironment::Latest { name } => {
                format!("resolve environment {name}@latest (the most recently created version)")
            }
        }
    }
}

/// SHA-256 of `text`, lower-case hex (the SDK's `get_sha256_string`).
fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Python's `separator.join(text)`: the characters of `text` with `separator` between them.
fn python_join(separator: &str, text: &str) -> String {
    let chars: Vec<String> = text.chars().map(String::from).collect();
    chars.join(separator)
}

/// The anonymous version az ml computes: `H(H(image))`, or `H(H(image) ⋈ H(conda))`, with the
/// inference config's text folded in the same way (`environment.py`, `_generate_anonymous_env_hash`).
pub fn anonymous_version(
    image: &str,
    inference_config: Option<&str>,
    conda: Option<&str>,
) -> String {
    let mut text = sha256_hex(image);
    if let Some(ic) = inference_config {
        text = python_join(&text, &sha256_hex(ic));
    }
    if let Some(conda) = conda {
        text = python_join(&text, &sha256_hex(conda));
    }
    sha256_hex(&text)
}

/// Resolves `environment:` (a string or an inline mapping) relative to the YAML's folder `base`.
/// `workspace` is the target workspace id (or `{workspace}`, filled per event). `files` collects
/// every local file the environment needs (for packaging).
pub fn parse(
    value: &serde_norway::Value,
    base: &Path,
    root: &ConfigFolder,
    workspace: &str,
    files: &mut Vec<PathBuf>,
) -> Result<EnvironmentRef, Vec<String>> {
    match value {
        serde_norway::Value::String(reference) => reference_id(reference, workspace)
            .map_err(|e| vec![format!("environment: {e}")]),
        serde_norway::Value::Mapping(map) => inline(map, base, root, files),
        _ => Err(vec![
            "environment: must be a reference (azureml:NAME:VERSION) or a mapping with image and conda_file".into(),
        ]),
    }
}

/// A string reference, as the SDK's orchestrator resolves it.
fn reference_id(reference: &str, workspace: &str) -> Result<EnvironmentRef, String> {
    let reference = reference.trim();
    if reference.starts_with("azureml://") {
        return Ok(EnvironmentRef::Id(reference.to_string()));
    }
    if reference.starts_with("/subscriptions/") {
        // az ml's schema refuses a bare id: it must carry the prefix.
        return Err(format!(
            "{reference:?}: an existing environment's ARM id must be prefixed with 'azureml:' (azureml:/subscriptions/…)"
        ));
    }
    let Some(bare) = reference.strip_prefix("azureml:") else {
        return Err(format!(
            "{reference:?} is neither azureml:NAME:VERSION, azureml:NAME@latest, an ARM id nor azureml://registries/…; an inline environment is a mapping with image (and conda_file)"
        ));
    };
    if bare.starts_with("/subscriptions/") || bare.starts_with("azureml://") {
        return Ok(EnvironmentRef::Id(bare.to_string()));
    }
    // Curated environments live in the shared `azureml` registry; the SDK passes them through
    // with the prefix and the service resolves them.
    if bare.starts_with("AzureML-") {
        return Ok(EnvironmentRef::Id(format!("azureml:{bare}")));
    }
    if let Some((name, label)) = bare.split_once('@') {
        if name.is_empty() || name.contains(['/', ':']) {
            return Err(format!("{reference:?}: expected azureml:NAME@latest"));
        }
        if label == "latest" {
            return Ok(EnvironmentRef::Inline(InlineEnvironment::Latest {
                name: name.to_string(),
            }));
        }
        // az ml has a resolver for `latest` only; it refuses any other label client-side.
        return Err(format!(
            "Asset {name} with version label {label} does not exist in workspace. (only @latest can be resolved; pin a version: azureml:{name}:VERSION)"
        ));
    }
    let Some((name, version)) = bare.split_once(':') else {
        return Err(format!(
            "{reference:?}: Version must be provided (azureml:NAME:VERSION or azureml:NAME@latest)"
        ));
    };
    if name.is_empty() || version.is_empty() || name.contains('/') || version.contains(['/', ':']) {
        return Err(format!("{reference:?}: expected azureml:NAME:VERSION"));
    }
    Ok(EnvironmentRef::Id(format!(
        "{}/environments/{name}/versions/{version}",
        workspace.trim_end_matches('/')
    )))
}

/// An inline mapping: the environment version az ml would register.
fn inline(
    map: &serde_norway::Mapping,
    base: &Path,
    root: &ConfigFolder,
    files: &mut Vec<PathBuf>,
) -> Result<EnvironmentRef, Vec<String>> {
    let mut problems = Vec::new();
    let get = |key: &str| map.get(key).filter(|v| !v.is_null());
    for key in map.keys() {
        match key.as_str() {
            Some("channels" | "dependencies") => problems.push(format!(
                "environment.{}: conda channels and dependencies belong in the conda file (environment.conda_file), not in the environment mapping",
                key.as_str().unwrap_or_default()
            )),
            Some(k) if ENVIRONMENT_KEYS.contains(&k) => {}
            Some(k) => problems.push(format!("environment.{k}: unknown key for an environment")),
            None => problems.push("environment: keys must be strings".into()),
        }
    }
    if get("build").is_some() {
        problems.push(
            "environment.build: a Docker build context is built by the service from an upload az ml makes through the datastore; build the environment once with `az ml environment create --file ENV.yml` and reference it as azureml:NAME:VERSION"
                .into(),
        );
    }
    let image = match get("image") {
        Some(v) => match v.as_str().map(str::trim) {
            Some(image) if !image.is_empty() => Some(image.to_string()),
            _ => {
                problems.push("environment.image must be an image reference".into());
                None
            }
        },
        None => {
            if get("build").is_none() {
                problems.push("environment: one of image or build is required".into());
            }
            None
        }
    };
    let conda = match get("conda_file") {
        None => None,
        Some(v) => match v.as_str() {
            Some(rel) => match root.resolve(base, rel) {
                Err(e) => {
                    problems.push(format!("environment.conda_file: {e}"));
                    None
                }
                Ok(path) => match std::fs::read_to_string(&path) {
                    Ok(text) => match pyyaml::conda_text(&text) {
                        Ok(canonical) => {
                            files.push(path);
                            Some(canonical)
                        }
                        Err(e) => {
                            problems
                                .push(format!("environment.conda_file {}: {e}", path.display()));
                            None
                        }
                    },
                    Err(e) => {
                        problems.push(format!(
                            "environment.conda_file: cannot read {}: {e}",
                            path.display()
                        ));
                        None
                    }
                },
            },
            None => {
                problems.push("environment.conda_file must be a path to a conda YAML file".into());
                None
            }
        },
    };
    let inference_config = match get("inference_config") {
        None => None,
        Some(v) => match inference_config(v) {
            Ok(ic) => Some(ic),
            Err(e) => {
                problems.push(format!("environment.inference_config: {e}"));
                None
            }
        },
    };
    let text_map = |key: &str, problems: &mut Vec<String>| -> Option<Map<String, Value>> {
        let v = get(key)?;
        match super::values::json_map(v) {
            Some(m) => Some(m),
            None => {
                problems.push(format!("environment.{key} must be a mapping"));
                None
            }
        }
    };
    let tags = text_map("tags", &mut problems);
    let properties = text_map("properties", &mut problems);
    let description = get("description")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let os_type = get("os_type").and_then(|v| v.as_str()).map(str::to_string);
    let name = match get("name") {
        None => None,
        Some(v) => match super::values::scalar(v) {
            Some(n) if !n.is_empty() => Some(n),
            _ => {
                problems.push("environment.name must be text".into());
                None
            }
        },
    };
    // A version without a name is dropped by the SDK (with a warning): anonymous versions are hashes.
    let version = name
        .as_ref()
        .and_then(|_| get("version"))
        .and_then(super::values::scalar);
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some(image) = image else {
        return Err(vec![
            "environment: one of image or build is required".into(),
        ]);
    };

    // The PUT body, in the SDK's key order.
    let mut properties_out = Map::new();
    if let Some(conda) = &conda {
        properties_out.insert("condaFile".into(), json!(conda));
    }
    if let Some(description) = &description {
        properties_out.insert("description".into(), json!(description));
    }
    properties_out.insert("image".into(), json!(image));
    if let Some((ic, _)) = &inference_config {
        properties_out.insert("inferenceConfig".into(), ic.clone());
    }
    properties_out.insert("isAnonymous".into(), json!(name.is_none()));
    properties_out.insert("isArchived".into(), json!(false));
    if let Some(os) = &os_type {
        properties_out.insert("osType".into(), json!(os));
    }
    if let Some(p) = properties {
        properties_out.insert("properties".into(), Value::Object(p));
    }
    if let Some(t) = tags {
        properties_out.insert("tags".into(), Value::Object(t));
    }
    let body = json!({ "properties": properties_out });
    Ok(EnvironmentRef::Inline(match name {
        Some(name) => InlineEnvironment::Named {
            name,
            version,
            body,
        },
        None => InlineEnvironment::Anonymous {
            version: anonymous_version(
                &image,
                inference_config.as_ref().map(|(_, text)| text.as_str()),
                conda.as_deref(),
            ),
            body,
        },
    }))
}

/// `inference_config` → the REST shape, and a stable text for the version hash. (az ml hashes a
/// dump of its own internal model class there, which changes between SDK releases; ours is stable.)
fn inference_config(value: &serde_norway::Value) -> Result<(Value, String), String> {
    let mut out = Map::new();
    for (key, rest) in [
        ("liveness_route", "livenessRoute"),
        ("readiness_route", "readinessRoute"),
        ("scoring_route", "scoringRoute"),
    ] {
        let route = value
            .get(key)
            .ok_or_else(|| format!("{key} is required (port and path)"))?;
        let port = route
            .get("port")
            .and_then(|p| p.as_u64())
            .ok_or_else(|| format!("{key}.port must be a port number"))?;
        let path = route
            .get("path")
            .and_then(|p| p.as_str())
            .ok_or_else(|| format!("{key}.path must be a URL path"))?;
        out.insert(rest.into(), json!({"port": port, "path": path}));
    }
    let value = Value::Object(out);
    let text = value.to_string();
    Ok((value, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_join_puts_the_separator_between_characters() {
        assert_eq!(python_join("-", "abc"), "a-b-c");
        assert_eq!(python_join("xy", "a"), "a");
        assert_eq!(
            python_join(&"s".repeat(64), &"h".repeat(64)).len(),
            64 + 63 * 64
        );
    }

    #[test]
    fn references_resolve_like_the_sdk() {
        let ws = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";
        let ok = |r: &str| reference_id(r, ws).unwrap();
        let err = |r: &str| reference_id(r, ws).unwrap_err();
        assert_eq!(
            ok("azureml:env:3"),
            EnvironmentRef::Id(format!("{ws}/environments/env/versions/3"))
        );
        assert_eq!(
            ok("azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest"),
            EnvironmentRef::Id("azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest".into())
        );
        assert_eq!(
            ok("azureml://registries/azureml/environments/sklearn-1.5/versions/1"),
            EnvironmentRef::Id(
                "azureml://registries/azureml/environments/sklearn-1.5/versions/1".into()
            )
        );
        assert_eq!(
            ok("azureml:fraud-env@latest"),
            EnvironmentRef::Inline(InlineEnvironment::Latest {
                name: "fraud-env".into()
            })
        );
        assert!(err("azureml:fraud-env@prod").contains("version label prod does not exist"));
        assert!(err("azureml:fraud-env").contains("Version must be provided"));
        assert!(err("./env.yml").contains("inline environment is a mapping"));
        assert!(
            err("/subscriptions/s/x/environments/e/versions/1")
                .contains("prefixed with 'azureml:'")
        );
    }
}
