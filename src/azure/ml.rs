//! The Azure ML resources we read and change through ARM: workspaces, model versions, online
//! endpoints and deployments, and endpoint keys.

use secrecy::SecretString;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::arm::{ArmClient, ArmError, Operation};
use crate::event::WorkspaceId;

/// The parts of a workspace we use.
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    /// ARM id.
    pub id: String,
    /// Region.
    pub location: String,
    /// `properties.mlFlowTrackingUri`, when present.
    pub mlflow_tracking_uri: Option<String>,
}

/// The parts of a model version we use.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    /// ARM id.
    pub id: String,
    /// `properties.tags`.
    pub tags: Map<String, Value>,
    /// `properties.properties`.
    pub properties: Map<String, Value>,
    /// `properties.jobName`: the training job (MLflow run) that produced it.
    pub job_name: Option<String>,
    /// `systemData.createdAt`: when it was registered.
    pub created_at: Option<String>,
    /// `systemData`: who registered it, and who changed it last and when.
    pub system_data: SystemData,
}

/// ARM's `systemData` of a resource (each part only when present and well-formed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemData {
    /// `createdBy`: the identity that registered it.
    pub created_by: Option<String>,
    /// `createdByType` (`User`, `Application`, `ManagedIdentity`, `Key`).
    pub created_by_type: Option<String>,
    /// `lastModifiedAt`: when it last changed (tags included).
    pub last_modified_at: Option<OffsetDateTime>,
    /// `lastModifiedBy`: who changed it last.
    pub last_modified_by: Option<String>,
    /// `lastModifiedByType`.
    pub last_modified_by_type: Option<String>,
}

impl SystemData {
    fn from_value(value: &Value) -> Self {
        let text = |key: &str| {
            value[key]
                .as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Self {
            created_by: text("createdBy"),
            created_by_type: text("createdByType"),
            last_modified_at: value["lastModifiedAt"]
                .as_str()
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()),
            last_modified_by: text("lastModifiedBy"),
            last_modified_by_type: text("lastModifiedByType"),
        }
    }
}

/// An online endpoint's scoring keys. `Debug` is redacted.
pub struct EndpointKeys {
    /// `primaryKey`.
    pub primary: SecretString,
    /// `secondaryKey`.
    pub secondary: SecretString,
}

impl std::fmt::Debug for EndpointKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndpointKeys(<redacted>)")
    }
}

impl ArmClient {
    /// The workspace.
    pub async fn workspace(&self, workspace: &WorkspaceId) -> Result<Workspace, ArmError> {
        let value = self.get(workspace.as_ref()).await?;
        Ok(Workspace {
            id: value["id"]
                .as_str()
                .unwrap_or(workspace.as_ref())
                .to_string(),
            location: value["location"].as_str().unwrap_or_default().to_string(),
            mlflow_tracking_uri: value["properties"]["mlFlowTrackingUri"]
                .as_str()
                .map(str::to_string),
        })
    }

    /// A model version.
    pub async fn model_version(
        &self,
        workspace: &WorkspaceId,
        name: &str,
        version: &str,
    ) -> Result<ModelVersion, ArmError> {
        let id = format!(
            "{}/models/{name}/versions/{version}",
            workspace.as_ref().trim_end_matches('/')
        );
        let value = self.get(&id).await?;
        let object = |v: &Value| v.as_object().cloned().unwrap_or_default();
        Ok(ModelVersion {
            id: value["id"].as_str().unwrap_or(&id).to_string(),
            tags: object(&value["properties"]["tags"]),
            properties: object(&value["properties"]["properties"]),
            job_name: value["properties"]["jobName"].as_str().map(str::to_string),
            created_at: value["systemData"]["createdAt"]
                .as_str()
                .filter(|t| OffsetDateTime::parse(t, &Rfc3339).is_ok())
                .map(str::to_string),
            system_data: SystemData::from_value(&value["systemData"]),
        })
    }

    /// The ARM id of an online endpoint.
    pub fn online_endpoint_id(workspace: &WorkspaceId, endpoint: &str) -> String {
        format!(
            "{}/onlineEndpoints/{endpoint}",
            workspace.as_ref().trim_end_matches('/')
        )
    }

    /// An online endpoint, if it exists.
    pub async fn online_endpoint(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
    ) -> Result<Option<Value>, ArmError> {
        self.get_optional(&Self::online_endpoint_id(workspace, endpoint))
            .await
    }

    /// Starts creating or updating an online endpoint (traffic changes go through here).
    pub async fn begin_put_online_endpoint(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
        body: &Value,
    ) -> Result<Operation, ArmError> {
        self.begin_put(&Self::online_endpoint_id(workspace, endpoint), body)
            .await
    }

    /// An online deployment, if it exists.
    pub async fn online_deployment(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
        deployment: &str,
    ) -> Result<Option<Value>, ArmError> {
        self.get_optional(&format!(
            "{}/deployments/{deployment}",
            Self::online_endpoint_id(workspace, endpoint)
        ))
        .await
    }

    /// Starts creating or updating an online deployment.
    pub async fn begin_put_online_deployment(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
        deployment: &str,
        body: &Value,
    ) -> Result<Operation, ArmError> {
        self.begin_put(
            &format!(
                "{}/deployments/{deployment}",
                Self::online_endpoint_id(workspace, endpoint)
            ),
            body,
        )
        .await
    }

    /// Starts deleting an online deployment.
    pub async fn begin_delete_online_deployment(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
        deployment: &str,
    ) -> Result<Operation, ArmError> {
        self.begin_delete(&format!(
            "{}/deployments/{deployment}",
            Self::online_endpoint_id(workspace, endpoint)
        ))
        .await
    }

    /// The last `tail` lines of a deployment container's log (`POST …/getLogs` with
    /// `DeploymentLogsRequest {containerType, tail}`; the answer is `DeploymentLogs {content}`),
    /// reading at most `limit` bytes of the answer. `None` when the service sent no content.
    /// The text is the service's, unredacted: the caller redacts it.
    pub async fn deployment_logs(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
        deployment: &str,
        container: &str,
        tail: u32,
        limit: usize,
    ) -> Result<Option<String>, ArmError> {
        let answer = self
            .post_capped(
                &format!(
                    "{}/deployments/{deployment}/getLogs",
                    Self::online_endpoint_id(workspace, endpoint)
                ),
                Some(&serde_json::json!({"containerType": container, "tail": tail})),
                limit,
            )
            .await?;
        match &answer {
            Value::Object(map) => Ok(map
                .get("content")
                .and_then(Value::as_str)
                .map(str::to_string)),
            Value::Null => Ok(None),
            // Never quoted: it is not the documented object.
            other => Err(ArmError::Unavailable(format!(
                "getLogs answered a JSON {} instead of a DeploymentLogs object",
                match other {
                    Value::Array(_) => "array",
                    Value::String(_) => "string",
                    _ => "scalar",
                }
            ))),
        }
    }

    /// An endpoint's scoring keys (`listKeys`).
    pub async fn list_keys(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
    ) -> Result<EndpointKeys, ArmError> {
        let value = self
            .post(
                &format!("{}/listKeys", Self::online_endpoint_id(workspace, endpoint)),
                None,
            )
            .await?;
        let key = |name: &str| {
            let key = value[name].as_str().unwrap_or_default();
            self.redactor().add_minted(key);
            SecretString::from(key.to_string())
        };
        Ok(EndpointKeys {
            primary: key("primaryKey"),
            secondary: key("secondaryKey"),
        })
    }
}

/// Where a pending upload goes: the container (`blobUri`) and its SAS URL. `Debug` is redacted.
pub struct PendingUpload {
    /// `pendingUploadId`: asking again with it gives the same container and a fresh SAS.
    pub id: Option<String>,
    /// `blobReferenceForConsumption.blobUri`: the container, without authorization.
    pub blob_uri: String,
    /// `blobReferenceForConsumption.credential.sasUri`: the container with its SAS.
    pub sas_uri: SecretString,
}

impl std::fmt::Debug for PendingUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingUpload({}, <SAS redacted>)", self.blob_uri)
    }
}

/// The asset versions `az ml` registers before a deployment (code, environments, data), with the
/// calls it makes.
impl ArmClient {
    fn asset_id(workspace: &WorkspaceId, kind: &str, name: &str, version: Option<&str>) -> String {
        let base = format!("{}/{kind}/{name}", workspace.as_ref().trim_end_matches('/'));
        match version {
            Some(v) => format!("{base}/versions/{v}"),
            None => base,
        }
    }

    /// A code version with this content hash, anywhere in the workspace (`GET
    /// codes/{probe}/versions?hash=…&hashVersion=202208`; the service matches the hash across
    /// names, so `probe` is the fresh name az ml would use). Its id, read back as az ml does.
    pub async fn code_with_hash(
        &self,
        workspace: &WorkspaceId,
        probe: &str,
        hash: &str,
    ) -> Result<Option<String>, ArmError> {
        let list = self
            .get_with(
                &format!(
                    "{}/versions",
                    Self::asset_id(workspace, "codes", probe, None)
                ),
                &[("hash", hash), ("hashVersion", "202208")],
            )
            .await?;
        let Some(found) = list["value"].as_array().and_then(|v| v.first()) else {
            return Ok(None);
        };
        let Some(id) = found["id"].as_str() else {
            return Ok(None);
        };
        let version = self.get(id).await?;
        Ok(Some(version["id"].as_str().unwrap_or(id).to_string()))
    }

    /// `POST codes/{name}/versions/{version}/startPendingUpload` (`PendingUploadRequestDto`): a
    /// container to upload to. With `id` (`pendingUploadId`, which the service otherwise picks
    /// as a random GUID) the same pending upload again: its container, with a fresh SAS.
    pub async fn start_pending_upload(
        &self,
        workspace: &WorkspaceId,
        name: &str,
        version: &str,
        id: Option<&str>,
    ) -> Result<PendingUpload, ArmError> {
        let mut body = serde_json::json!({"pendingUploadType": "TemporaryBlobReference"});
        if let Some(id) = id {
            body["pendingUploadId"] = id.into();
        }
        let answer = self
            .post(
                &format!(
                    "{}/startPendingUpload",
                    Self::asset_id(workspace, "codes", name, Some(version))
                ),
                Some(&body),
            )
            .await?;
        let reference = &answer["blobReferenceForConsumption"];
        let (Some(blob_uri), Some(sas_uri)) = (
            reference["blobUri"].as_str(),
            reference["credential"]["sasUri"].as_str(),
        ) else {
            return Err(ArmError::Unavailable(
                "startPendingUpload answered without blobUri and credential.sasUri".into(),
            ));
        };
        // The whole SAS URL, its query and its signature on their own.
        self.redactor().add_minted(sas_uri);
        if let Some((_, query)) = sas_uri.split_once('?') {
            self.redactor().add_minted(query);
            for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
                if name == "sig" {
                    self.redactor().add_minted(&value);
                }
            }
        }
        Ok(PendingUpload {
            id: answer["pendingUploadId"].as_str().map(str::to_string),
            blob_uri: blob_uri.to_string(),
            sas_uri: SecretString::from(sas_uri.to_string()),
        })
    }

    /// PUTs an asset version (`codes`, `environments`, `data`) and returns its id.
    pub async fn put_asset_version(
        &self,
        workspace: &WorkspaceId,
        kind: &str,
        name: &str,
        version: &str,
        body: &Value,
    ) -> Result<String, ArmError> {
        let id = Self::asset_id(workspace, kind, name, Some(version));
        let answer = self.put(&id, body).await?;
        Ok(answer["id"].as_str().unwrap_or(&id).to_string())
    }

    /// GETs an asset version; `None` when it does not exist.
    pub async fn asset_version(
        &self,
        workspace: &WorkspaceId,
        kind: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<Value>, ArmError> {
        self.get_optional(&Self::asset_id(workspace, kind, name, Some(version)))
            .await
    }

    /// An environment's container (`latestVersion`, `nextVersion`); `None` when it does not exist.
    pub async fn environment_container(
        &self,
        workspace: &WorkspaceId,
        name: &str,
    ) -> Result<Option<Value>, ArmError> {
        self.get_optional(&Self::asset_id(workspace, "environments", name, None))
            .await
    }

    /// The most recently created version of an environment (az ml's `@latest`: by creation time,
    /// not by number); `None` when it has none.
    pub async fn latest_environment_version(
        &self,
        workspace: &WorkspaceId,
        name: &str,
    ) -> Result<Option<String>, ArmError> {
        let list = self
            .get_with(
                &format!(
                    "{}/versions",
                    Self::asset_id(workspace, "environments", name, None)
                ),
                &[("$orderBy", "createdtime desc"), ("$top", "1")],
            )
            .await?;
        Ok(list["value"]
            .as_array()
            .and_then(|v| v.first())
            .and_then(|item| {
                item["name"].as_str().map(str::to_string).or_else(|| {
                    item["id"]
                        .as_str()
                        .and_then(|id| id.rsplit('/').next())
                        .map(str::to_string)
                })
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_debug_is_redacted() {
        let keys = EndpointKeys {
            primary: SecretString::from("k1"),
            secondary: SecretString::from("k2"),
        };
        assert!(!format!("{keys:?}").contains("k1"));
    }
}
