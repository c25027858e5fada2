//! `az ml` managed online deployment YAML → the ARM `OnlineDeployments_CreateOrUpdate` body, field
//! by field as the Azure ML CLI/SDK translates it (azure-ai-ml 1.35.2,
//! `OnlineDeployment._to_rest_object`), plus the assets it registers first ([`assets`]): a local
//! code folder, an inline environment, an `@latest` label, data collector assets.
//!
//! [`assets`]: super::assets

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::assets::{self, AssetTemplate, CodeRef, CollectorSpec, EnvironmentRef};
use crate::folder::ConfigFolder;

/// Keys of a managed online deployment YAML we translate (or knowingly ignore: `name`,
/// `endpoint_name` and `model` come from the rule and the event, as `--name`, `--endpoint-name`
/// and `--set model=…` would replace them).
const KNOWN_KEYS: &[&str] = &[
    "$schema",
    "name",
    "endpoint_name",
    "type",
    "model",
    "environment",
    "code_configuration",
    "instance_type",
    "instance_count",
    "request_settings",
    "liveness_probe",
    "readiness_probe",
    "startup_probe",
    "scale_settings",
    "environment_variables",
    "app_insights_enabled",
    "egress_public_network_access",
    "tags",
    "properties",
    "description",
    "model_mount_path",
    "data_collector",
];

/// Keys of an `az ml batch-deployment` YAML that an online deployment does not have.
const BATCH_ONLY_KEYS: &[&str] = &[
    "compute",
    "resources",
    "settings",
    "mini_batch_size",
    "max_concurrency_per_instance",
    "output_action",
    "output_file_name",
    "retry_settings",
    "error_threshold",
    "logging_level",
    "component",
];

/// The translated deployment: the ARM body without `location` and `properties.model` (both filled
/// at deploy time from the target workspace and the event's model), and the assets to register
/// first (their ids are filled in when they are registered).
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentTemplate {
    /// The body.
    pub body: Value,
    /// The assets.
    pub assets: Box<AssetTemplate>,
}

impl DeploymentTemplate {
    /// Every local file the deployment needs (code files after the ignore file, conda files).
    pub fn files(&self) -> &[PathBuf] {
        &self.assets.files
    }
}

/// Translates a deployment YAML (already parsed) whose folder is `base`, for `workspace` (where
/// `azureml:` references resolve; `None`: the event's, filled per event). Local files it names
/// (code folder, conda file) must stay inside `root`, the config file's folder. Returns every
/// problem found, each naming its YAML key.
pub fn translate(
    yaml: &serde_norway::Value,
    workspace: Option<&str>,
    base: &Path,
    root: &ConfigFolder,
) -> Result<DeploymentTemplate, Vec<String>> {
    let mut problems = Vec::new();
    let Some(map) = yaml.as_mapping() else {
        return Err(vec!["the deployment file is not a YAML mapping".into()]);
    };
    let workspace = workspace.unwrap_or("{workspace}");
    let get = |key: &str| map.get(key).filter(|v| !v.is_null());
    for key in map.keys() {
        match key.as_str() {
            Some(k) if KNOWN_KEYS.contains(&k) => {}
            Some(k) if BATCH_ONLY_KEYS.contains(&k) => problems.push(format!(
                "`{k}` is a batch deployment key, not a managed online one; use `azureml.batch_endpoint` for a batch endpoint"
            )),
            Some(k) => problems.push(format!(
                "unknown or unsupported key `{k}` for a managed online deployment"
            )),
            None => problems.push("keys must be strings".into()),
        }
    }
    if let Some(kind) = get("type").and_then(|v| v.as_str())
        && !kind.eq_ignore_ascii_case("managed")
    {
        problems.push(format!(
            "type: {kind} is not supported: only managed online endpoints (type: managed) are deployed directly"
        ));
    }
    let mut assets = AssetTemplate::default();
    let mut properties = Map::new();
    properties.insert("endpointComputeType".into(), json!("Managed"));

    match get("instance_type").and_then(|v| v.as_str()) {
        Some(t) if !t.trim().is_empty() => {
            properties.insert("instanceType".into(), json!(t.trim()));
        }
        _ => problems.push("instance_type is required (e.g. Standard_DS3_v2)".into()),
    }
    // As az ml: no instance_count, no capacity (the service applies its default).
    let mut sku = Map::new();
    sku.insert("name".into(), json!("Default"));
    if let Some(v) = get("instance_count") {
        match v.as_u64() {
            Some(n) if n >= 1 => {
                sku.insert("capacity".into(), json!(n));
            }
            _ => problems.push("instance_count must be a whole number ≥ 1".into()),
        }
    }

    environment_and_code(
        get("environment"),
        get("code_configuration"),
        (base, root, workspace),
        &mut properties,
        &mut assets,
        &mut problems,
    );

    if let Some(collector) = get("data_collector") {
        match CollectorSpec::parse(collector) {
            Ok(spec) => assets.collector = Some(spec),
            Err(e) => problems.extend(e),
        }
    }

    if let Some(settings) = get("request_settings") {
        let mut out = Map::new();
        for (key, rest) in [
            ("request_timeout_ms", "requestTimeout"),
            ("max_queue_wait_ms", "maxQueueWait"),
        ] {
            if let Some(v) = settings.get(key).filter(|v| !v.is_null()) {
                match v.as_u64() {
                    // As az ml: a zero duration is not sent.
                    Some(0) => {}
                    Some(ms) => {
                        out.insert(rest.into(), json!(iso8601_from_millis(ms)));
                    }
                    None => problems.push(format!(
                        "request_settings.{key} must be a number of milliseconds"
                    )),
                }
            }
        }
        if let Some(v) = settings
            .get("max_concurrent_requests_per_instance")
            .filter(|v| !v.is_null())
        {
            match v.as_u64() {
                Some(n) => {
                    out.insert("maxConcurrentRequestsPerInstance".into(), json!(n));
                }
                None => problems.push(
                    "request_settings.max_concurrent_requests_per_instance must be a whole number"
                        .into(),
                ),
            }
        }
        properties.insert("requestSettings".into(), Value::Object(out));
    }

    for (key, rest) in [
        ("liveness_probe", "livenessProbe"),
        ("readiness_probe", "readinessProbe"),
        // Not in az ml's managed schema (it refuses the key), but in the REST API: kept as an
        // extension, translated like the other probes.
        ("startup_probe", "startupProbe"),
    ] {
        if let Some(probe) = get(key) {
            let mut out = Map::new();
            for (field, rest_field) in [
                ("initial_delay", "initialDelay"),
                ("period", "period"),
                ("timeout", "timeout"),
            ] {
                if let Some(v) = probe.get(field).filter(|v| !v.is_null()) {
                    match v.as_u64() {
                        Some(0) => {}
                        Some(secs) => {
                            out.insert(rest_field.into(), json!(iso8601_from_millis(secs * 1000)));
                        }
                        None => problems.push(format!("{key}.{field} must be a number of seconds")),
                    }
                }
            }
            for (field, rest_field) in [
                ("success_threshold", "successThreshold"),
                ("failure_threshold", "failureThreshold"),
            ] {
                if let Some(v) = probe.get(field).filter(|v| !v.is_null()) {
                    match v.as_u64() {
                        Some(n) => {
                            out.insert(rest_field.into(), json!(n));
                        }
                        None => problems.push(format!("{key}.{field} must be a whole number")),
                    }
                }
            }
            properties.insert(rest.into(), Value::Object(out));
        }
    }

    if let Some(scale) = get("scale_settings") {
        match scale.get("type").and_then(|v| v.as_str()) {
            None | Some("default") | Some("Default") => {
                properties.insert("scaleSettings".into(), json!({"scaleType": "Default"}));
            }
            Some(other) => problems.push(format!(
                "scale_settings.type: {other} is not available for managed deployments (only default)"
            )),
        }
    }

    // Always present, as az ml sends them, even when empty; values keep their YAML type.
    let json_map = |key: &str, problems: &mut Vec<String>| match get(key) {
        None => Map::new(),
        Some(v) => assets::json_map(v).unwrap_or_else(|| {
            problems.push(format!("{key} must be a mapping of names to values"));
            Map::new()
        }),
    };
    let environment_variables = json_map("environment_variables", &mut problems);
    let extra_properties = json_map("properties", &mut problems);
    let tags = json_map("tags", &mut problems);
    properties.insert(
        "environmentVariables".into(),
        Value::Object(environment_variables),
    );
    properties.insert("properties".into(), Value::Object(extra_properties));
    match get("app_insights_enabled") {
        None => {
            properties.insert("appInsightsEnabled".into(), json!(false));
        }
        Some(v) => match v.as_bool() {
            Some(b) => {
                properties.insert("appInsightsEnabled".into(), json!(b));
            }
            None => problems.push("app_insights_enabled must be true or false".into()),
        },
    }
    if let Some(v) = get("egress_public_network_access") {
        // The SDK's schema lower-cases it.
        match v.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some(value @ ("enabled" | "disabled")) => {
                properties.insert("egressPublicNetworkAccess".into(), json!(value));
            }
            _ => problems.push("egress_public_network_access must be enabled or disabled".into()),
        }
    }
    if let Some(v) = get("description") {
        match v.as_str() {
            Some(text) => {
                properties.insert("description".into(), json!(text));
            }
            None => problems.push("description must be text".into()),
        }
    }
    if let Some(v) = get("model_mount_path") {
        match v.as_str() {
            Some(text) => {
                properties.insert("modelMountPath".into(), json!(text));
            }
            None => problems.push("model_mount_path must be text".into()),
        }
    }

    if problems.is_empty() {
        Ok(DeploymentTemplate {
            body: json!({
                "sku": sku,
                "tags": tags,
                "properties": properties,
            }),
            assets: Box::new(assets),
        })
    } else {
        Err(problems)
    }
}

/// Milliseconds → ISO-8601 duration as Python's `isodate` writes it (5000 → `PT5S`, 500 → `PT0.5S`,
/// 90000 → `PT1M30S`, 86 400 000 → `P1D`).
pub fn iso8601_from_millis(ms: u64) -> String {
    if ms == 0 {
        return "PT0S".into();
    }
    let days = ms / 86_400_000;
    let ms = ms % 86_400_000;
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
        if ms == 0 {
            return out;
        }
    }
    out.push('T');
    let hours = ms / 3_600_000;
    let minutes = (ms % 3_600_000) / 60_000;
    let rest_ms = ms % 60_000;
    if hours > 0 {
        out.push_str(&format!("{hours}H"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}M"));
    }
    if rest_ms > 0 {
        let whole = rest_ms / 1000;
        let frac = rest_ms % 1000;
        if frac == 0 {
            out.push_str(&format!("{whole}S"));
        } else {
            let frac = format!("{frac:03}");
            out.push_str(&format!("{whole}.{}S", frac.trim_end_matches('0')));
        }
    }
    out
}

/// `environment` and `code_configuration`, read alike by online and batch deployments: ids go in
/// `properties`; an inline environment and a local code folder go in `assets` (registered first).
/// `folders` is (the YAML's folder, the config's folder, the workspace).
pub(super) fn environment_and_code(
    environment: Option<&serde_norway::Value>,
    code: Option<&serde_norway::Value>,
    (base, root, workspace): (&Path, &ConfigFolder, &str),
    properties: &mut Map<String, Value>,
    assets: &mut AssetTemplate,
    problems: &mut Vec<String>,
) {
    if let Some(env) = environment {
        match assets::environment::parse(env, base, root, workspace, &mut assets.files) {
            Ok(EnvironmentRef::Id(id)) => {
                properties.insert("environmentId".into(), json!(id));
            }
            Ok(EnvironmentRef::Inline(inline)) => assets.environment = Some(inline),
            Err(e) => problems.extend(e),
        }
    }

    if let Some(code) = code {
        let code_ref = code.get("code").and_then(|v| v.as_str());
        let script = code.get("scoring_script").and_then(|v| v.as_str());
        match (code_ref, script) {
            (Some(code_ref), Some(script)) => {
                match assets::code_ref(code_ref, script, base, root, workspace, &mut assets.files) {
                    Ok(reference) => {
                        let mut out = Map::new();
                        if let CodeRef::Id(id) = &reference {
                            out.insert("codeId".into(), json!(id));
                        }
                        out.insert("scoringScript".into(), json!(script));
                        properties.insert("codeConfiguration".into(), Value::Object(out));
                        if let CodeRef::Local(local) = reference {
                            assets.code = Some(local);
                        }
                    }
                    Err((key, e)) => problems.push(format!("code_configuration.{key}: {e}")),
                }
            }
            _ => problems.push("code_configuration needs code and scoring_script".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WS: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";

    fn yaml(text: &str) -> serde_norway::Value {
        serde_norway::from_str(text).unwrap()
    }

    fn translated(text: &str) -> Result<DeploymentTemplate, Vec<String>> {
        translate(
            &yaml(text),
            Some(WS),
            Path::new("."),
            &ConfigFolder::of(Path::new("autodeploy.yml")),
        )
    }

    // The goldens from the official SDK (assets/goldens.rs) cover real YAMLs; this covers every
    // key at once with registered assets.
    #[test]
    fn every_cli_field_is_translated() {
        let t = translated(
            r#"
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: ignored
endpoint_name: ignored
model: azureml:ignored:1
environment: azureml:sklearn-env:3
code_configuration: { code: azureml:score-code:2, scoring_script: score.py }
instance_type: Standard_DS3_v2
instance_count: 2
request_settings: { request_timeout_ms: 5000, max_queue_wait_ms: 500, max_concurrent_requests_per_instance: 4 }
liveness_probe: { initial_delay: 10, period: 10, timeout: 2, success_threshold: 1, failure_threshold: 30 }
readiness_probe: { initial_delay: 90, period: 5, timeout: 2, success_threshold: 1, failure_threshold: 3 }
scale_settings: { type: default }
environment_variables: { WORKERS: 2, MODE: fast, DEBUG: false }
app_insights_enabled: true
egress_public_network_access: Disabled
tags: { team: risk }
properties: { owner: ml }
description: credit model
model_mount_path: /var/model
"#,
        )
        .unwrap();
        assert_eq!(
            t.body,
            json!({
                "sku": {"name": "Default", "capacity": 2},
                "tags": {"team": "risk"},
                "properties": {
                    "endpointComputeType": "Managed",
                    "instanceType": "Standard_DS3_v2",
                    "environmentId": format!("{WS}/environments/sklearn-env/versions/3"),
                    "codeConfiguration": {"codeId": format!("{WS}/codes/score-code/versions/2"), "scoringScript": "score.py"},
                    "requestSettings": {"requestTimeout": "PT5S", "maxQueueWait": "PT0.5S", "maxConcurrentRequestsPerInstance": 4},
                    "livenessProbe": {"initialDelay": "PT10S", "period": "PT10S", "timeout": "PT2S", "successThreshold": 1, "failureThreshold": 30},
                    "readinessProbe": {"initialDelay": "PT1M30S", "period": "PT5S", "timeout": "PT2S", "successThreshold": 1, "failureThreshold": 3},
                    "scaleSettings": {"scaleType": "Default"},
                    "environmentVariables": {"WORKERS": 2, "MODE": "fast", "DEBUG": false},
                    "appInsightsEnabled": true,
                    "egressPublicNetworkAccess": "disabled",
                    "properties": {"owner": "ml"},
                    "description": "credit model",
                    "modelMountPath": "/var/model"
                }
            })
        );
        assert_eq!(*t.assets, AssetTemplate::default());
    }

    #[test]
    fn mlflow_models_need_no_environment_or_code() {
        let t = translated("instance_type: Standard_DS2_v2").unwrap();
        assert!(
            t.body["sku"].get("capacity").is_none(),
            "no instance_count, no capacity"
        );
        assert!(t.body["properties"].get("environmentId").is_none());
        assert_eq!(t.body["properties"]["appInsightsEnabled"], false);
    }

    #[test]
    fn unsupported_deployments_are_clear_errors_naming_the_key() {
        let cases = [
            ("type: kubernetes\ninstance_type: x", "only managed"),
            (
                "instance_type: x\nenvironment: { image: mcr.microsoft.com/x, conda_file: missing.yml }",
                "environment.conda_file: cannot read",
            ),
            (
                "instance_type: x\nenvironment: { build: { path: ./ctx } }",
                "environment.build",
            ),
            (
                "instance_type: x\nenvironment: { image: x, channels: [conda-forge] }",
                "environment.channels",
            ),
            (
                "instance_type: x\nenvironment: azureml:e@prod",
                "version label prod does not exist",
            ),
            (
                "instance_type: x\ncode_configuration: { code: ./no-such-folder, scoring_script: score.py }",
                "code_configuration.code",
            ),
            ("environment: azureml:e:1", "instance_type is required"),
            (
                "instance_type: x\nscale_settings: { type: target_utilization }",
                "only default",
            ),
            (
                "instance_type: x\ndata_collector: { collections: { a: { data: { version: 1 } } } }",
                "data_collector.collections.a.data.version",
            ),
            (
                "instance_type: x\nblue_green: {}",
                "unknown or unsupported key `blue_green`",
            ),
        ];
        for (text, needle) in cases {
            let problems = translated(text).unwrap_err();
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{text}: {problems:?}"
            );
        }
    }

    #[test]
    fn durations_match_isodate() {
        for (ms, iso) in [
            (5000, "PT5S"),
            (500, "PT0.5S"),
            (90_000, "PT1M30S"),
            (3_600_000, "PT1H"),
            (1_250, "PT1.25S"),
            (86_400_000, "P1D"),
            (90_000_000, "P1DT1H"),
            (0, "PT0S"),
        ] {
            assert_eq!(iso8601_from_millis(ms), iso);
        }
    }
}
