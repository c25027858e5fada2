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
        let key =
            |name: &str| SecretString::from(value[name].as_str().unwrap_or_default().to_string());
        Ok(EndpointKeys {
            primary: key("primaryKey"),
            secondary: key("secondaryKey"),
        })
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
