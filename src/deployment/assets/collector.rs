//! `data_collector:` as az ml sends it (azure-ai-ml 1.35.2, `_register_collection_data_assets`,
//! `entities/_deployment/data_collector.py`): one data asset per collection, registered before the
//! deployment, and the deployment's `dataCollector` that points at them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One `collections:` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collection {
    /// The collection's name (`model_inputs`).
    pub name: String,
    /// `enabled` is "true" in any casing.
    pub enabled: bool,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `data.name`, overriding `{endpoint}-{deployment}-{collection}`.
    pub data_name: Option<String>,
    /// `data.version`, overriding `1`.
    pub data_version: Option<String>,
    /// `data.path`, overriding the default datastore path.
    pub data_path: Option<String>,
}

/// The `data_collector:` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectorSpec {
    /// Collections, in the YAML's order.
    pub collections: Vec<Collection>,
    /// `sampling_rate`, copied into every collection.
    pub sampling_rate: Option<f64>,
    /// `rolling_rate`, lower-cased.
    pub rolling_rate: Option<String>,
    /// `request_logging.capture_headers`.
    pub capture_headers: Option<Vec<String>>,
}

/// A data asset to register before the deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataAsset {
    /// The collection it is for.
    pub collection: String,
    /// Asset name.
    pub name: String,
    /// Asset version.
    pub version: String,
    /// `dataUri`.
    pub path: String,
}

impl DataAsset {
    /// The PUT body, as the SDK sends it.
    pub fn body(&self) -> Value {
        json!({"properties": {
            "dataType": "uri_folder",
            "dataUri": self.path,
            "isAnonymous": false,
            "isArchived": false,
            "tags": {},
            "properties": {},
        }})
    }

    /// The asset's id in `workspace`.
    pub fn id(&self, workspace: &str) -> String {
        format!(
            "{}/data/{}/versions/{}",
            workspace.trim_end_matches('/'),
            self.name,
            self.version
        )
    }
}

impl CollectorSpec {
    /// Reads `data_collector:`; problems name their YAML key.
    pub fn parse(value: &serde_norway::Value) -> Result<CollectorSpec, Vec<String>> {
        let mut problems = Vec::new();
        let Some(map) = value.as_mapping() else {
            return Err(vec!["data_collector must be a mapping".into()]);
        };
        for key in map.keys() {
            match key.as_str() {
                Some("collections" | "sampling_rate" | "rolling_rate" | "request_logging") => {}
                Some(other) => {
                    problems.push(format!("data_collector.{other}: unknown key"));
                }
                None => problems.push("data_collector: keys must be strings".into()),
            }
        }
        let mut collections = Vec::new();
        match map.get("collections").and_then(|c| c.as_mapping()) {
            None => problems
                .push("data_collector.collections must be a mapping of collection names".into()),
            Some(entries) => {
                for (name, entry) in entries {
                    let Some(name) = name.as_str() else {
                        problems.push("data_collector.collections: names must be text".into());
                        continue;
                    };
                    let at = format!("data_collector.collections.{name}");
                    let text = |v: Option<&serde_norway::Value>| v.and_then(super::values::scalar);
                    let data = entry.get("data");
                    if let Some(data) = data
                        && !data.is_mapping()
                    {
                        problems.push(format!("{at}.data must be a mapping (name, version, path)"));
                    }
                    // As az ml's schema: the version is text (`version: "1"`, not `version: 1`).
                    if let Some(version) = data.and_then(|d| d.get("version"))
                        && !version.is_string()
                    {
                        problems.push(format!(
                            "{at}.data.version: Not a valid string (quote it: version: \"{}\")",
                            super::values::scalar(version).unwrap_or_default()
                        ));
                    }
                    collections.push(Collection {
                        name: name.to_string(),
                        enabled: text(entry.get("enabled"))
                            .is_some_and(|e| e.eq_ignore_ascii_case("true")),
                        client_id: text(entry.get("client_id")),
                        data_name: text(data.and_then(|d| d.get("name"))),
                        data_version: text(data.and_then(|d| d.get("version"))),
                        data_path: text(data.and_then(|d| d.get("path"))),
                    });
                }
            }
        }
        let sampling_rate = match map.get("sampling_rate") {
            None => None,
            Some(v) => match v.as_f64() {
                Some(rate) => Some(rate),
                None => {
                    problems.push("data_collector.sampling_rate must be a number".into());
                    None
                }
            },
        };
        let rolling_rate = match map.get("rolling_rate") {
            None => None,
            Some(v) => match v.as_str().map(str::to_ascii_lowercase) {
                Some(rate) if ["minute", "hour", "day"].contains(&rate.as_str()) => Some(rate),
                _ => {
                    problems.push("data_collector.rolling_rate must be minute, hour or day".into());
                    None
                }
            },
        };
        let capture_headers = match map.get("request_logging").map(|r| r.get("capture_headers")) {
            None | Some(None) => None,
            Some(Some(list)) => match list.as_sequence() {
                Some(items) => Some(items.iter().filter_map(super::values::scalar).collect()),
                None => {
                    problems.push(
                        "data_collector.request_logging.capture_headers must be a list of header names"
                            .into(),
                    );
                    None
                }
            },
        };
        if problems.is_empty() {
            Ok(CollectorSpec {
                collections,
                sampling_rate,
                rolling_rate,
                capture_headers,
            })
        } else {
            Err(problems)
        }
    }

    /// The data assets for a deployment `deployment` on `endpoint`.
    pub fn data_assets(&self, endpoint: &str, deployment: &str) -> Vec<DataAsset> {
        self.collections
            .iter()
            .map(|c| DataAsset {
                collection: c.name.clone(),
                name: c
                    .data_name
                    .clone()
                    .unwrap_or_else(|| format!("{endpoint}-{deployment}-{}", c.name)),
                version: c.data_version.clone().unwrap_or_else(|| "1".into()),
                path: c.data_path.clone().unwrap_or_else(|| {
                    format!(
                        "azureml://datastores/workspaceblobstore/paths/modelDataCollector/{endpoint}/{deployment}/{}",
                        c.name
                    )
                }),
            })
            .collect()
    }

    /// The deployment's `dataCollector`, pointing at `assets` in `workspace`.
    pub fn body(&self, assets: &[DataAsset], workspace: &str) -> Value {
        let mut collections = Map::new();
        for (c, asset) in self.collections.iter().zip(assets) {
            let mut out = Map::new();
            if let Some(id) = &c.client_id {
                out.insert("clientId".into(), json!(id));
            }
            out.insert(
                "dataCollectionMode".into(),
                json!(if c.enabled { "enabled" } else { "disabled" }),
            );
            out.insert("dataId".into(), json!(asset.id(workspace)));
            if let Some(rate) = self.sampling_rate {
                out.insert("samplingRate".into(), json!(rate));
            }
            collections.insert(c.name.clone(), Value::Object(out));
        }
        let mut body = Map::new();
        body.insert("collections".into(), Value::Object(collections));
        if let Some(headers) = &self.capture_headers {
            body.insert("requestLogging".into(), json!({"captureHeaders": headers}));
        }
        if let Some(rate) = &self.rolling_rate {
            body.insert("rollingRate".into(), json!(rate));
        }
        Value::Object(body)
    }
}
