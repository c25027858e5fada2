//! The `preparing_assets` phase: registers what the deployment references, in az ml's order (data
//! assets, the code folder, the environment), one bounded step per call and resumable from the
//! record, then PUTs the deployment. Nothing is deployed that references an asset not fully
//! registered: the deployment PUT is the last step, after every id is known.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::machine::*;
use super::*;
use crate::actions::azureml::AzureMlPlan;
use crate::actions::azureml::assets::code::CodeFolder;
use crate::actions::azureml::assets::environment::ANONYMOUS_ENVIRONMENT;
use crate::actions::azureml::assets::upload::{self, SasContainer, UploadError};
use crate::actions::azureml::assets::{InlineEnvironment, LocalCode};
use crate::azure::arm::ArmError;
use crate::logs::InvocationLog;

/// Longest time one step spends uploading files before recording its progress.
const UPLOAD_STEP_BUDGET: Duration = Duration::from_secs(20);

/// What the assets phase has done so far. Stored in the record's `rollout.assets`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssetProgress {
    /// Data assets registered (in the plan's order).
    #[serde(default)]
    pub data_registered: usize,
    /// The code version's name: a fresh UUID, as az ml mints one per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_name: Option<String>,
    /// The workspace was asked for a code version with the same content hash.
    #[serde(default)]
    pub code_looked_up: bool,
    /// The pending upload's container (no authorization; the SAS is asked for again each step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_uri: Option<String>,
    /// Files known to be in that container.
    #[serde(default)]
    pub files_uploaded: usize,
    /// The completion marker is written.
    #[serde(default)]
    pub upload_complete: bool,
    /// The code version's id (registered, or reused by hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_id: Option<String>,
    /// The environment version's id (registered, or `@latest` resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
}

/// The role to grant when the workspace refuses an asset write.
const ASSET_ROLE: &str = "grant the deploying identity the AzureML Data Scientist role on the workspace (or a custom role that reads and writes Microsoft.MachineLearningServices/workspaces/codes/*, …/environments/* and …/data/*, which includes starting a code version's pending upload)";

fn asset_error(e: ArmError, doing: &str) -> StepError {
    if let ArmError::Http {
        status: 401 | 403, ..
    } = &e
    {
        return StepError::Fail {
            why: format!("{doing}: {e}; {ASSET_ROLE}"),
            configuration: true,
        };
    }
    StepError::from_arm_permanent(e, doing)
}

fn upload_error(e: UploadError) -> StepError {
    match e {
        UploadError::Unavailable { .. } => StepError::Transient(e.to_string()),
        UploadError::Refused { status: 403, .. } => StepError::Fail {
            why: format!(
                "uploading the code folder: {e}; the container's SAS from startPendingUpload was refused (check the workspace storage account's network rules and that the identity may call startPendingUpload)"
            ),
            configuration: true,
        },
        other => StepError::Fail {
            why: format!("uploading the code folder: {other}"),
            configuration: true,
        },
    }
}

impl RolloutEngine {
    /// One step of `preparing_assets`.
    pub(super) async fn preparing(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let workspace = ws(&plan.workspace)?;
        let mut progress = state.assets.clone().unwrap_or_default();
        let next = self
            .asset_step(plan, &workspace, &mut progress, state, log)
            .await;
        state.assets = Some(progress);
        next
    }

    async fn asset_step(
        &self,
        plan: &AzureMlPlan,
        workspace: &crate::event::WorkspaceId,
        progress: &mut AssetProgress,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let assets = &plan.assets;
        if let Some(data) = assets.data.get(progress.data_registered) {
            let doing = format!("registering data asset {}:{}", data.name, data.version);
            match self
                .arm
                .put_asset_version(workspace, "data", &data.name, &data.version, &data.body())
                .await
            {
                Ok(_) => {}
                // As az ml: a version that exists already is read back and used.
                Err(e) if e.to_string().contains("already exists") => {
                    self.arm
                        .asset_version(workspace, "data", &data.name, &data.version)
                        .await
                        .map_err(|e| asset_error(e, &doing))?;
                }
                Err(e) => return Err(asset_error(e, &doing)),
            }
            log.info(format!(
                "data asset {}:{} registered",
                data.name, data.version
            ));
            progress.data_registered += 1;
            state.next_step = "register the next asset".into();
            return Ok(Next::Now);
        }
        if let Some(code) = &assets.code
            && progress.code_id.is_none()
        {
            return self.code_step(workspace, code, progress, state, log).await;
        }
        if let Some(environment) = &assets.environment
            && progress.environment_id.is_none()
        {
            let id = self.environment_step(workspace, environment, log).await?;
            progress.environment_id = Some(id);
            state.next_step = "create the deployment".into();
            return Ok(Next::Now);
        }
        // Every asset is registered: only now may the deployment reference them.
        let body = plan.deployment_body(
            progress.code_id.as_deref(),
            progress.environment_id.as_deref(),
            "",
        );
        if plan.batch.is_some() {
            return self.put_batch_deployment(plan, body, state, log).await;
        }
        self.put_deployment(plan, body, state, log).await
    }

    async fn code_step(
        &self,
        workspace: &crate::event::WorkspaceId,
        code: &LocalCode,
        progress: &mut AssetProgress,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let name = progress
            .code_name
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
            .clone();
        if !progress.code_looked_up {
            let found = self
                .arm
                .code_with_hash(workspace, &name, &code.hash)
                .await
                .map_err(|e| asset_error(e, "looking up the code folder's hash"))?;
            progress.code_looked_up = true;
            if let Some(id) = found {
                log.info(format!(
                    "code folder {}: reusing {id} (same content hash {})",
                    code.yaml_path, code.hash
                ));
                progress.code_id = Some(id);
            }
            state.next_step = "upload the code folder".into();
            return Ok(Next::Now);
        }
        if !progress.upload_complete {
            return self
                .upload_step(workspace, code, &name, progress, state, log)
                .await;
        }
        let Some(blob_uri) = progress.blob_uri.clone() else {
            // Cannot happen (the upload records it); start the upload again rather than guess.
            progress.upload_complete = false;
            return Ok(Next::Now);
        };
        let code_uri = code_uri(&blob_uri, &code.folder_name);
        let body = json!({"properties": {
            "codeUri": code_uri,
            "isAnonymous": true,
            "properties": {"hash_sha256": code.hash, "hash_version": 202208},
        }});
        let id = self
            .arm
            .put_asset_version(workspace, "codes", &name, "1", &body)
            .await
            .map_err(|e| asset_error(e, "registering the code version"))?;
        log.info(format!("code folder {} registered as {id}", code.yaml_path));
        progress.code_id = Some(id);
        state.next_step = "register the next asset".into();
        Ok(Next::Now)
    }

    async fn upload_step(
        &self,
        workspace: &crate::event::WorkspaceId,
        code: &LocalCode,
        name: &str,
        progress: &mut AssetProgress,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        // The files must still be the ones the plan hashed: the deployment must run what was
        // planned (and checked) for this version, not whatever the folder holds now.
        let folder = CodeFolder::scan(&code.folder).map_err(|e| StepError::Fail {
            why: format!("code_configuration.code: {e}"),
            configuration: true,
        })?;
        if folder.hash() != code.hash {
            return Err(StepError::Fail {
                why: format!(
                    "code folder {} changed since this version was planned (content hash {} now, {} planned); replay the event to deploy the current files",
                    code.yaml_path,
                    folder.hash(),
                    code.hash
                ),
                configuration: true,
            });
        }
        let pending = self
            .arm
            .start_pending_upload(workspace, name, "1")
            .await
            .map_err(|e| asset_error(e, "starting the code upload (startPendingUpload)"))?;
        if progress.blob_uri.as_deref() != Some(pending.blob_uri.as_str()) {
            // Another container than last time: what was uploaded there does not count.
            progress.blob_uri = Some(pending.blob_uri.clone());
            progress.files_uploaded = 0;
        }
        let container =
            SasContainer::new(pending.sas_uri.expose_secret(), &self.http).map_err(upload_error)?;
        let indicator = folder.blob_name(folder.indicator());
        if container
            .completed(&indicator)
            .await
            .map_err(upload_error)?
        {
            progress.upload_complete = true;
            state.next_step = "register the code version".into();
            return Ok(Next::Now);
        }
        let files = folder.upload_order();
        let started = Instant::now();
        for file in files.iter().skip(progress.files_uploaded) {
            let bytes = upload::read(&file.path).map_err(upload_error)?;
            container
                .put_new(&folder.blob_name(file), bytes)
                .await
                .map_err(upload_error)?;
            progress.files_uploaded += 1;
            if started.elapsed() > UPLOAD_STEP_BUDGET && progress.files_uploaded < files.len() {
                state.next_step = format!(
                    "upload the code folder ({} of {} files done)",
                    progress.files_uploaded,
                    files.len()
                );
                return Ok(Next::After(Duration::ZERO));
            }
        }
        // Last, as az ml: a folder without the marker is never taken for a finished upload.
        container
            .mark_completed(&indicator, name, "1")
            .await
            .map_err(upload_error)?;
        log.info(format!(
            "code folder {}: {} file(s) uploaded to {}",
            code.yaml_path,
            files.len(),
            pending.blob_uri
        ));
        progress.upload_complete = true;
        state.next_step = "register the code version".into();
        Ok(Next::Now)
    }

    async fn environment_step(
        &self,
        workspace: &crate::event::WorkspaceId,
        environment: &InlineEnvironment,
        log: &InvocationLog,
    ) -> Result<String, StepError> {
        let put = |name: String, version: String, body: serde_json::Value| async move {
            self.arm
                .put_asset_version(workspace, "environments", &name, &version, &body)
                .await
        };
        let id = match environment {
            InlineEnvironment::Anonymous { version, body } => put(
                ANONYMOUS_ENVIRONMENT.to_string(),
                version.clone(),
                body.clone(),
            )
            .await
            .map_err(|e| asset_error(e, "registering the environment"))?,
            InlineEnvironment::Named {
                name,
                version: Some(version),
                body,
            } => put(name.clone(), version.clone(), body.clone())
                .await
                .map_err(|e| asset_error(e, "registering the environment"))?,
            InlineEnvironment::Named {
                name,
                version: None,
                body,
            } => {
                // As az ml auto-increments: the latest version first (the same definition is
                // accepted again), and the next one when the service says it differs (409).
                let container = self
                    .arm
                    .environment_container(workspace, name)
                    .await
                    .map_err(|e| asset_error(e, "reading the environment"))?;
                let field = |key: &str| {
                    container
                        .as_ref()
                        .and_then(|c| c["properties"][key].as_str().map(str::to_string))
                };
                let latest = field("latestVersion").unwrap_or_else(|| "1".into());
                match put(name.clone(), latest, body.clone()).await {
                    Ok(id) => id,
                    Err(ArmError::Http { status: 409, .. }) if field("nextVersion").is_some() => {
                        put(
                            name.clone(),
                            field("nextVersion").unwrap_or_default(),
                            body.clone(),
                        )
                        .await
                        .map_err(|e| asset_error(e, "registering the environment"))?
                    }
                    Err(e) => return Err(asset_error(e, "registering the environment")),
                }
            }
            InlineEnvironment::Latest { name } => {
                let version = self
                    .arm
                    .latest_environment_version(workspace, name)
                    .await
                    .map_err(|e| asset_error(e, "resolving the environment label"))?
                    .ok_or_else(|| StepError::Fail {
                        why: format!(
                            "environment: Asset {name} with version label latest does not exist in workspace {}",
                            workspace.as_ref()
                        ),
                        configuration: true,
                    })?;
                log.info(format!("environment {name}@latest is version {version}"));
                format!(
                    "{}/environments/{name}/versions/{version}",
                    workspace.as_ref().trim_end_matches('/')
                )
            }
        };
        log.info(format!("environment {id} ready"));
        Ok(id)
    }
}

/// `codeUri`: the pending upload's `blobUri` joined with `<container>/<folder>` (URL-join, as the
/// SDK's `urljoin`), where the container is `blobUri`'s last segment.
pub fn code_uri(blob_uri: &str, folder_name: &str) -> String {
    let container = blob_uri
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    match reqwest::Url::parse(blob_uri)
        .and_then(|base| base.join(&format!("{container}/{folder_name}")))
    {
        Ok(url) => url.to_string(),
        Err(_) => format!("{}/{folder_name}", blob_uri.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_uri_is_the_container_and_folder() {
        assert_eq!(
            code_uri("https://acct.blob.core.windows.net/c0ffee", "src"),
            "https://acct.blob.core.windows.net/c0ffee/src"
        );
        assert_eq!(
            code_uri(
                "http://127.0.0.1:10000/devstoreaccount1/up-1",
                "onlinescoring"
            ),
            "http://127.0.0.1:10000/devstoreaccount1/up-1/onlinescoring"
        );
    }
}
