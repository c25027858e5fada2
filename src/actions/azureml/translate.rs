//! `az ml` managed online deployment YAML → the ARM `OnlineDeployments_CreateOrUpdate` body, field
//! by field as the Azure ML CLI/SDK translates it (`azure-ai-ml` `OnlineDeployment._to_rest_object`).
//!
//! Only registered assets are accepted: uploading local code or building an inline environment is
//! what the CLI does before the REST call, and it has no place in an event handler.

use serde_json::{Map, Value, json};

/// Keys of a managed online deployment YAML we translate (or knowingly ignore).
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
];

/// The translated deployment: the ARM body without `location` and `properties.model` (both filled
/// at deploy time from the target workspace and the event's model).
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentTemplate {
    /// The body.
    pub body: Value,
}

/// Translates a deployment YAML (already parsed) for `workspace` (where `azureml:` references
/// resolve). Returns every problem found.
pub fn translate(
    yaml: &serde_norway::Value,
    workspace: Option<&str>,
) -> Result<DeploymentTemplate, Vec<String>> {
    let mut problems = Vec::new();
    let Some(map) = yaml.as_mapping() else {
        return Err(vec!["the deployment file is not a YAML mapping".into()]);
    };
    let get = |key: &str| map.get(key);
    for key in map.keys() {
        match key.as_str() {
            Some(k) if KNOWN_KEYS.contains(&k) => {}
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

    let mut properties = Map::new();
    properties.insert("endpointComputeType".into(), json!("Managed"));

    match get("instance_type").and_then(|v| v.as_str()) {
        Some(t) if !t.trim().is_empty() => {
            properties.insert("instanceType".into(), json!(t.trim()));
        }
        _ => problems.push("instance_type is required (e.g. Standard_DS3_v2)".into()),
    }
    let capacity = match get("instance_count") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => {
                problems.push("instance_count must be a whole number ≥ 1".into());
                1
            }
        },
    };

    match get("environment") {
        None | Some(serde_norway::Value::Null) => {} // MLflow models need none
        Some(serde_norway::Value::String(reference)) => match asset_id(reference, "environments", workspace) {
            Ok(id) => {
                properties.insert("environmentId".into(), json!(id));
            }
            Err(e) => problems.push(format!("environment: {e}")),
        },
        Some(_) => problems.push(
            "environment: an inline environment would have to be built first; register it and reference it as azureml:NAME:VERSION"
                .into(),
        ),
    }

    if let Some(code) = get("code_configuration") {
        let code_ref = code.get("code").and_then(|v| v.as_str());
        let script = code.get("scoring_script").and_then(|v| v.as_str());
        match (code_ref, script) {
            (Some(code_ref), Some(script)) => match asset_id(code_ref, "codes", workspace) {
                Ok(id) => {
                    properties.insert(
                        "codeConfiguration".into(),
                        json!({"codeId": id, "scoringScript": script}),
                    );
                }
                Err(e) => problems.push(format!("code_configuration.code: {e}")),
            },
            _ => problems.push("code_configuration needs code and scoring_script".into()),
        }
    }

    if let Some(settings) = get("request_settings") {
        let mut out = Map::new();
        for (key, rest) in [
            ("request_timeout_ms", "requestTimeout"),
            ("max_queue_wait_ms", "maxQueueWait"),
        ] {
            if let Some(v) = settings.get(key) {
                match v.as_u64() {
                    Some(ms) => {
                        out.insert(rest.into(), json!(iso8601_from_millis(ms)));
                    }
                    None => problems.push(format!(
                        "request_settings.{key} must be a number of milliseconds"
                    )),
                }
            }
        }
        if let Some(v) = settings.get("max_concurrent_requests_per_instance") {
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
        ("startup_probe", "startupProbe"),
    ] {
        if let Some(probe) = get(key) {
            let mut out = Map::new();
            for (field, rest_field) in [
                ("initial_delay", "initialDelay"),
                ("period", "period"),
                ("timeout", "timeout"),
            ] {
                if let Some(v) = probe.get(field) {
                    match v.as_u64() {
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
                if let Some(v) = probe.get(field) {
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

    if let Some(vars) = get("environment_variables") {
        match string_map(vars) {
            Some(map) => {
                properties.insert("environmentVariables".into(), Value::Object(map));
            }
            None => {
                problems.push("environment_variables must be a mapping of names to values".into())
            }
        }
    }
    if let Some(v) = get("app_insights_enabled") {
        match v.as_bool() {
            Some(b) => {
                properties.insert("appInsightsEnabled".into(), json!(b));
            }
            None => problems.push("app_insights_enabled must be true or false".into()),
        }
    }
    if let Some(v) = get("egress_public_network_access") {
        match v.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("enabled") => {
                properties.insert("egressPublicNetworkAccess".into(), json!("Enabled"));
            }
            Some("disabled") => {
                properties.insert("egressPublicNetworkAccess".into(), json!("Disabled"));
            }
            _ => problems.push("egress_public_network_access must be enabled or disabled".into()),
        }
    }
    if let Some(v) = get("properties") {
        match string_map(v) {
            Some(map) => {
                properties.insert("properties".into(), Value::Object(map));
            }
            None => problems.push("properties must be a mapping of names to values".into()),
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
    let tags = match get("tags") {
        None => Map::new(),
        Some(v) => string_map(v).unwrap_or_else(|| {
            problems.push("tags must be a mapping of names to values".into());
            Map::new()
        }),
    };

    if problems.is_empty() {
        Ok(DeploymentTemplate {
            body: json!({
                "sku": {"name": "Default", "capacity": capacity},
                "tags": tags,
                "properties": properties,
            }),
        })
    } else {
        Err(problems)
    }
}

/// A registered asset reference → its id: `azureml:NAME:VERSION` resolves in `workspace`; curated
/// `azureml:AzureML-…` environments resolve in the `azureml` registry; ARM ids and
/// `azureml://registries/…` pass through.
pub fn asset_id(reference: &str, kind: &str, workspace: Option<&str>) -> Result<String, String> {
    let reference = reference.trim();
    // The CLI schema strips `azureml:` and passes ids through.
    let bare = if reference.starts_with("azureml://") {
        reference
    } else {
        reference.strip_prefix("azureml:").unwrap_or(reference)
    };
    if bare.starts_with("/subscriptions/") || bare.starts_with("azureml://") {
        return Ok(bare.to_string());
    }
    if !reference.starts_with("azureml:") {
        return Err(format!(
            "{reference:?} looks like a local path; only registered assets (azureml:NAME:VERSION, an ARM id or azureml://registries/…) can be deployed directly"
        ));
    }
    if bare.contains('@') {
        return Err(format!(
            "{reference:?}: labels such as @latest need a lookup; pin a version (azureml:NAME:VERSION)"
        ));
    }
    let Some((name, version)) = bare.split_once(':') else {
        return Err(format!(
            "{reference:?}: Version must be provided (azureml:NAME:VERSION)"
        ));
    };
    if name.is_empty() || version.is_empty() || name.contains('/') || version.contains(['/', ':']) {
        return Err(format!("{reference:?}: expected azureml:NAME:VERSION"));
    }
    // Curated environments live in the shared `azureml` registry; the SDK passes the reference
    // through unchanged and the service resolves it.
    if kind == "environments" && name.starts_with("AzureML-") {
        return Ok(reference.to_string());
    }
    match workspace {
        Some(ws) => Ok(format!(
            "{}/{kind}/{name}/versions/{version}",
            ws.trim_end_matches('/')
        )),
        // Resolved per event when no target workspace is configured.
        None => Ok(format!("{{workspace}}/{kind}/{name}/versions/{version}")),
    }
}

/// Milliseconds → ISO-8601 duration as Python's `isodate` writes it (5000 → `PT5S`, 500 → `PT0.5S`,
/// 90000 → `PT1M30S`).
pub fn iso8601_from_millis(ms: u64) -> String {
    if ms == 0 {
        return "PT0S".into();
    }
    let hours = ms / 3_600_000;
    let minutes = (ms % 3_600_000) / 60_000;
    let rest_ms = ms % 60_000;
    let mut out = String::from("PT");
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

fn string_map(value: &serde_norway::Value) -> Option<Map<String, Value>> {
    let map = value.as_mapping()?;
    let mut out = Map::new();
    for (k, v) in map {
        let key = k.as_str()?.to_string();
        let text = match v {
            serde_norway::Value::String(s) => s.clone(),
            serde_norway::Value::Number(n) => n.to_string(),
            serde_norway::Value::Bool(b) => b.to_string(),
            _ => return None,
        };
        out.insert(key, json!(text));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WS: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";

    fn yaml(text: &str) -> serde_norway::Value {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn every_cli_field_is_translated() {
        let t = translate(
            &yaml(
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
environment_variables: { WORKERS: 2, MODE: fast }
app_insights_enabled: true
egress_public_network_access: disabled
tags: { team: risk }
properties: { owner: ml }
description: credit model
model_mount_path: /var/model
"#,
            ),
            Some(WS),
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
                    "environmentVariables": {"WORKERS": "2", "MODE": "fast"},
                    "appInsightsEnabled": true,
                    "egressPublicNetworkAccess": "Disabled",
                    "properties": {"owner": "ml"},
                    "description": "credit model",
                    "modelMountPath": "/var/model"
                }
            })
        );
    }

    #[test]
    fn mlflow_models_need_no_environment_or_code() {
        let t = translate(&yaml("instance_type: Standard_DS2_v2"), Some(WS)).unwrap();
        assert_eq!(t.body["sku"]["capacity"], 1);
        assert!(t.body["properties"].get("environmentId").is_none());
    }

    #[test]
    fn asset_references_resolve_like_the_cli() {
        let cases = [
            (
                "azureml:env:1",
                Ok(format!("{WS}/environments/env/versions/1")),
            ),
            (
                "azureml:AzureML-sklearn-1.5:7",
                Ok("azureml:AzureML-sklearn-1.5:7".into()),
            ),
            (
                &format!("azureml:{WS}/environments/e/versions/3"),
                Ok(format!("{WS}/environments/e/versions/3")),
            ),
            (
                "azureml:azureml://registries/r/environments/e/versions/1",
                Ok("azureml://registries/r/environments/e/versions/1".into()),
            ),
            ("azureml:a/b:1", Err("expected azureml:NAME:VERSION")),
            (
                "azureml://registries/shared/environments/e/versions/2",
                Ok("azureml://registries/shared/environments/e/versions/2".into()),
            ),
            (
                &format!("{WS}/environments/e/versions/9"),
                Ok(format!("{WS}/environments/e/versions/9")),
            ),
            ("azureml:env@latest", Err("pin a version")),
            ("azureml:env", Err("Version must be provided")),
            ("./environment/conda.yml", Err("local path")),
        ];
        for (reference, expected) in cases {
            match (asset_id(reference, "environments", Some(WS)), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(needle)) => assert!(got.contains(needle), "{got}"),
                (got, want) => panic!("{reference}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn unsupported_deployments_are_clear_errors() {
        let cases = [
            ("type: kubernetes\ninstance_type: x", "only managed"),
            (
                "instance_type: x\nenvironment: { image: mcr.microsoft.com/x, conda_file: env.yml }",
                "inline environment",
            ),
            (
                "instance_type: x\ncode_configuration: { code: ./src, scoring_script: score.py }",
                "local path",
            ),
            ("environment: azureml:e:1", "instance_type is required"),
            (
                "instance_type: x\nscale_settings: { type: target_utilization }",
                "only default",
            ),
            (
                "instance_type: x\ndata_collector: {}",
                "unknown or unsupported key `data_collector`",
            ),
        ];
        for (text, needle) in cases {
            let problems = translate(&yaml(text), Some(WS)).unwrap_err();
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
            (0, "PT0S"),
        ] {
            assert_eq!(iso8601_from_millis(ms), iso);
        }
    }
}
