//! Looking up the quality gate's numbers: the new version's metric and the champion's, from model
//! tags, model properties or the MLflow run of the training job. All I/O; the verdict itself is
//! [`crate::gate::evaluate`].

use std::sync::Arc;

use reqwest::Url;
use serde_json::{Map, Value, json};

use crate::azure::arm::{ArmClient, ArmError};
use crate::azure::ml::ModelVersion;
use crate::config::gate::{GateSpec, MetricRun, MetricSource};
use crate::event::WorkspaceId;
use crate::gate::Champion;

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LookupError {
    /// Worth trying again later (ARM or MLflow unavailable, throttled).
    #[error("metric lookup failed, will retry: {0}")]
    Transient(String),
    /// Will not get better by waiting (the caller treats the metric as missing).
    #[error("metric lookup failed: {0}")]
    Permanent(String),
}

impl From<ArmError> for LookupError {
    fn from(e: ArmError) -> Self {
        if e.is_transient() {
            LookupError::Transient(e.to_string())
        } else {
            LookupError::Permanent(e.to_string())
        }
    }
}

/// A metric value and where it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The value (always finite).
    pub value: f64,
    /// `event tags`, `model tags`, `event properties`, `model properties` or `mlflow run …`.
    pub source: String,
}

/// Looks metrics up through ARM and the workspace's MLflow API.
pub struct MetricLookup {
    arm: Result<Arc<ArmClient>, String>,
}

impl MetricLookup {
    /// A lookup over `arm` (or why there is no ARM access: then only the event's own tags and
    /// properties can be read).
    pub fn new(arm: Result<Arc<ArmClient>, String>) -> Self {
        Self { arm }
    }

    fn arm(&self) -> Result<&ArmClient, LookupError> {
        self.arm.as_deref().map_err(|why| {
            LookupError::Permanent(format!("no Azure access for the metric lookup: {why}"))
        })
    }

    /// The metric of model `name:version`: tags and properties from the event first, then from the
    /// model version resource; then MLflow (per `spec.source`).
    pub async fn metric(
        &self,
        spec: &GateSpec,
        workspace: &WorkspaceId,
        name: &str,
        version: &str,
        event_tags: &Map<String, Value>,
        event_properties: &Map<String, Value>,
    ) -> Result<Option<Found>, LookupError> {
        let metric = spec.metric.as_str();
        let wants = |s: MetricSource| spec.source == MetricSource::Auto || spec.source == s;
        let mut resource: Option<ModelVersion> = None;
        if wants(MetricSource::Tags) {
            if let Some(v) = number(event_tags, metric) {
                return Ok(Some(Found {
                    value: v,
                    source: "event tags".into(),
                }));
            }
            let model = self.model(&mut resource, workspace, name, version).await?;
            if let Some(v) = model.and_then(|m| number(&m.tags, metric)) {
                return Ok(Some(Found {
                    value: v,
                    source: "model tags".into(),
                }));
            }
        }
        if wants(MetricSource::Properties) {
            if let Some(v) = number(event_properties, metric) {
                return Ok(Some(Found {
                    value: v,
                    source: "event properties".into(),
                }));
            }
            let model = self.model(&mut resource, workspace, name, version).await?;
            if let Some(v) = model.and_then(|m| number(&m.properties, metric)) {
                return Ok(Some(Found {
                    value: v,
                    source: "model properties".into(),
                }));
            }
        }
        if wants(MetricSource::Mlflow) {
            let Some(job) = self
                .model(&mut resource, workspace, name, version)
                .await?
                .and_then(|m| m.job_name.clone())
            else {
                return Ok(None);
            };
            return self.mlflow_metric(spec, workspace, &job).await;
        }
        Ok(None)
    }

    async fn model<'a>(
        &self,
        cache: &'a mut Option<ModelVersion>,
        workspace: &WorkspaceId,
        name: &str,
        version: &str,
    ) -> Result<Option<&'a ModelVersion>, LookupError> {
        if cache.is_none() {
            match self.arm()?.model_version(workspace, name, version).await {
                Ok(model) => *cache = Some(model),
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(cache.as_ref())
    }

    /// The latest value of the metric in the run `metric_run` selects, starting from the job.
    async fn mlflow_metric(
        &self,
        spec: &GateSpec,
        workspace: &WorkspaceId,
        job: &str,
    ) -> Result<Option<Found>, LookupError> {
        let tracking = self
            .arm()?
            .workspace(workspace)
            .await?
            .mlflow_tracking_uri
            .ok_or_else(|| {
                LookupError::Permanent(format!("workspace {workspace} has no MLflow tracking URI"))
            })?;
        let base = self.mlflow_base(&tracking)?;
        let run = match self.get_run(&base, job).await? {
            Some(run) => run,
            None => return Ok(None),
        };
        let (run, label) = match &spec.metric_run {
            MetricRun::Own => (run, format!("mlflow run {job}")),
            MetricRun::Parent => {
                let Some(parent) = tag(&run, "mlflow.parentRunId") else {
                    return Ok(None);
                };
                match self.get_run(&base, &parent).await? {
                    Some(p) => (p, format!("mlflow parent run {parent}")),
                    None => return Ok(None),
                }
            }
            MetricRun::Child(step) => {
                let experiment = run["info"]["experiment_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let url = join(&base, "api/2.0/mlflow/runs/search")?;
                let body = json!({
                    "experiment_ids": [experiment],
                    "filter": format!("tags.mlflow.parentRunId = '{job}'"),
                    "max_results": 200,
                });
                let found = self.arm()?.post_azureml(url, &body).await?;
                let child = found["runs"].as_array().into_iter().flatten().find(|r| {
                    r["info"]["run_name"].as_str() == Some(step.as_str())
                        || tag(r, "mlflow.runName").as_deref() == Some(step.as_str())
                        || tag(r, "azureml.nodeid").as_deref() == Some(step.as_str())
                });
                match child {
                    Some(c) => {
                        let id = c["info"]["run_id"].as_str().unwrap_or_default().to_string();
                        (c.clone(), format!("mlflow child run {step} ({id})"))
                    }
                    None => return Ok(None),
                }
            }
        };
        Ok(latest(&run, &spec.metric).map(|value| Found {
            value,
            source: label,
        }))
    }

    /// `azureml://{host}/mlflow/v1.0/subscriptions/…` → `https://{host}/mlflow/v1.0/subscriptions/…/`.
    fn mlflow_base(&self, tracking: &str) -> Result<Url, LookupError> {
        let rest = tracking.strip_prefix("azureml://").unwrap_or(tracking);
        let rest = rest.strip_prefix("https://").unwrap_or(rest);
        let mut url =
            Url::parse(&format!("https://{}/", rest.trim_end_matches('/'))).map_err(|_| {
                LookupError::Permanent(format!("unusable MLflow tracking URI {tracking:?}"))
            })?;
        // A loopback or private ARM endpoint serving MLflow too keeps its own scheme.
        if let Ok(arm) = self.arm()
            && let Some(arm) = arm.endpoint()
            && url.host_str() == arm.host_str()
            && url.port() == arm.port()
        {
            let _ = url.set_scheme(arm.scheme());
        }
        Ok(url)
    }

    async fn get_run(&self, base: &Url, run_id: &str) -> Result<Option<Value>, LookupError> {
        let mut url = join(base, "api/2.0/mlflow/runs/get")?;
        url.query_pairs_mut().append_pair("run_id", run_id);
        match self.arm()?.get_azureml(url).await {
            Ok(value) => Ok(Some(value["run"].clone())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The champion of `endpoint`: the deployment with the most live traffic (ties: the most
    /// recently created), its model, and that model's metric from the same source.
    pub async fn champion(
        &self,
        spec: &GateSpec,
        workspace: &WorkspaceId,
        endpoint: &str,
    ) -> Result<Option<Champion>, LookupError> {
        let Some(ep) = self.arm()?.online_endpoint(workspace, endpoint).await? else {
            // No online endpoint of that name: a batch endpoint's champion is its default
            // deployment (endpoint names are unique within a region across both kinds).
            return self.batch_champion(spec, workspace, endpoint).await;
        };
        let traffic: Vec<(String, u64)> = ep["properties"]["traffic"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| (k.clone(), n)))
                    .collect()
            })
            .unwrap_or_default();
        let Some(top) = traffic.iter().map(|(_, n)| *n).max() else {
            return Ok(None);
        };
        let mut best: Option<(String, Value, String)> = None;
        for (name, _) in traffic.iter().filter(|(_, n)| *n == top) {
            let Some(dep) = self
                .arm()?
                .online_deployment(workspace, endpoint, name)
                .await?
            else {
                continue;
            };
            let created = dep["systemData"]["createdAt"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if best.as_ref().is_none_or(|(_, _, c)| created > *c) {
                best = Some((name.clone(), dep, created));
            }
        }
        let Some((deployment, dep, _)) = best else {
            return Ok(None);
        };
        let model_id = dep["properties"]["model"].as_str().unwrap_or_default();
        self.champion_model(spec, deployment, model_id).await
    }

    /// The champion of a batch endpoint: its default deployment and that deployment's model.
    async fn batch_champion(
        &self,
        spec: &GateSpec,
        workspace: &WorkspaceId,
        endpoint: &str,
    ) -> Result<Option<Champion>, LookupError> {
        let Some(ep) = self.arm()?.batch_endpoint(workspace, endpoint).await? else {
            return Ok(None);
        };
        let Some(deployment) = ep["properties"]["defaults"]["deploymentName"]
            .as_str()
            .filter(|d| !d.is_empty())
            .map(str::to_string)
        else {
            return Ok(None);
        };
        let Some(dep) = self
            .arm()?
            .batch_deployment(workspace, endpoint, &deployment)
            .await?
        else {
            return Ok(None);
        };
        let model_id = dep["properties"]["model"]["assetId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.champion_model(spec, deployment, &model_id).await
    }

    /// The champion serving `model_id` from `deployment`, with that model's metric.
    async fn champion_model(
        &self,
        spec: &GateSpec,
        deployment: String,
        model_id: &str,
    ) -> Result<Option<Champion>, LookupError> {
        // …/workspaces/{ws}/models/{name}/versions/{version}
        let parts: Vec<&str> = model_id.split('/').collect();
        let (Some(v_idx), true) = (
            parts
                .iter()
                .position(|p| p.eq_ignore_ascii_case("versions")),
            model_id.starts_with("/subscriptions/"),
        ) else {
            return Ok(Some(Champion {
                model: model_id.to_string(),
                deployment,
                metric: None,
            }));
        };
        let (name, version) = (
            parts[v_idx - 1],
            parts.get(v_idx + 1).copied().unwrap_or_default(),
        );
        let model_ws =
            WorkspaceId::parse(&parts[..v_idx - 2].join("/")).map_err(LookupError::Permanent)?;
        let metric = match self
            .metric(spec, &model_ws, name, version, &Map::new(), &Map::new())
            .await
        {
            Ok(found) => found.map(|f| f.value),
            Err(LookupError::Permanent(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(Some(Champion {
            model: format!("{name}:{version}"),
            deployment,
            metric,
        }))
    }
}

fn join(base: &Url, path: &str) -> Result<Url, LookupError> {
    let mut text = base.to_string();
    if !text.ends_with('/') {
        text.push('/');
    }
    Url::parse(&format!("{text}{path}")).map_err(|e| LookupError::Permanent(e.to_string()))
}

/// A finite number under `key` (case-insensitive), from a number or numeric text.
pub fn number(map: &Map<String, Value>, key: &str) -> Option<f64> {
    let value = crate::event::get_ci(map, key)?;
    let n = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    n.is_finite().then_some(n)
}

fn tag(run: &Value, key: &str) -> Option<String> {
    run["data"]["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"].as_str() == Some(key))
        .and_then(|t| t["value"].as_str().map(str::to_string))
}

/// The latest value of `metric` in an MLflow run (highest step, then latest timestamp).
fn latest(run: &Value, metric: &str) -> Option<f64> {
    run["data"]["metrics"]
        .as_array()?
        .iter()
        .filter(|m| m["key"].as_str() == Some(metric))
        .max_by_key(|m| {
            (
                m["step"].as_i64().unwrap_or(0),
                m["timestamp"].as_i64().unwrap_or(0),
            )
        })
        .and_then(|m| {
            m["value"]
                .as_f64()
                .or_else(|| m["value"].as_str().and_then(|s| s.parse().ok()))
        })
        .filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_finite_or_missing() {
        let map: Map<String, Value> = serde_json::from_value(
            json!({"Accuracy": "0.91", "nan": "NaN", "inf": "inf", "word": "high", "n": 3}),
        )
        .unwrap();
        assert_eq!(number(&map, "accuracy"), Some(0.91));
        assert_eq!(number(&map, "n"), Some(3.0));
        assert_eq!(number(&map, "nan"), None);
        assert_eq!(number(&map, "inf"), None);
        assert_eq!(number(&map, "word"), None);
        assert_eq!(number(&map, "missing"), None);
    }

    #[test]
    fn the_latest_step_wins() {
        let run = json!({"data": {"metrics": [
            {"key": "accuracy", "value": 0.5, "step": 0, "timestamp": 1},
            {"key": "accuracy", "value": 0.9, "step": 3, "timestamp": 2},
            {"key": "accuracy", "value": 0.7, "step": 1, "timestamp": 9},
            {"key": "loss", "value": 0.1, "step": 9, "timestamp": 9}
        ]}});
        assert_eq!(latest(&run, "accuracy"), Some(0.9));
        assert_eq!(latest(&run, "f1"), None);
    }
}
