//! The Azure ML batch resources we read and change through ARM (`Microsoft.MachineLearningServices`,
//! 2025-12-01): batch endpoints (their default deployment), batch deployments, and the jobs a
//! batch deployment runs.

use serde_json::Value;

use super::arm::{ArmClient, ArmError, Operation};
use crate::event::WorkspaceId;

impl ArmClient {
    /// The ARM id of a batch endpoint.
    pub fn batch_endpoint_id(workspace: &WorkspaceId, endpoint: &str) -> String {
        format!(
            "{}/batchEndpoints/{endpoint}",
            workspace.as_ref().trim_end_matches('/')
        )
    }

    /// A batch endpoint, if it exists.
    pub async fn batch_endpoint(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
    ) -> Result<Option<Value>, ArmError> {
        self.get_optional(&Self::batch_endpoint_id(workspace, endpoint))
            .await
    }

    /// Starts a batch endpoint PUT (the default switch goes through here: PATCH cannot set it).
    pub async fn begin_put_batch_endpoint(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
        body: &Value,
    ) -> Result<Operation, ArmError> {
        self.begin_put(&Self::batch_endpoint_id(workspace, endpoint), body)
            .await
    }

    fn batch_deployment_id(workspace: &WorkspaceId, endpoint: &str, deployment: &str) -> String {
        format!(
            "{}/deployments/{deployment}",
            Self::batch_endpoint_id(workspace, endpoint)
        )
    }

    /// A batch deployment, if it exists.
    pub async fn batch_deployment(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
        deployment: &str,
    ) -> Result<Option<Value>, ArmError> {
        self.get_optional(&Self::batch_deployment_id(workspace, endpoint, deployment))
            .await
    }

    /// Starts creating or updating a batch deployment.
    pub async fn begin_put_batch_deployment(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
        deployment: &str,
        body: &Value,
    ) -> Result<Operation, ArmError> {
        self.begin_put(
            &Self::batch_deployment_id(workspace, endpoint, deployment),
            body,
        )
        .await
    }

    /// Starts deleting a batch deployment.
    pub async fn begin_delete_batch_deployment(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
        deployment: &str,
    ) -> Result<Operation, ArmError> {
        self.begin_delete(&Self::batch_deployment_id(workspace, endpoint, deployment))
            .await
    }

    /// The ARM id of a job.
    pub fn job_id(workspace: &WorkspaceId, name: &str) -> String {
        format!("{}/jobs/{name}", workspace.as_ref().trim_end_matches('/'))
    }

    /// A job (`properties.status`, `properties.services`), if it exists.
    pub async fn job(
        &self,
        workspace: &WorkspaceId,
        name: &str,
    ) -> Result<Option<Value>, ArmError> {
        self.get_optional(&Self::job_id(workspace, name)).await
    }

    /// Asks the service to cancel a job (`POST jobs/{name}/cancel`, answered 202).
    pub async fn cancel_job(&self, workspace: &WorkspaceId, name: &str) -> Result<(), ArmError> {
        self.post(&format!("{}/cancel", Self::job_id(workspace, name)), None)
            .await
            .map(|_| ())
    }
}
