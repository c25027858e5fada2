//! The `preparing_assets` phase: registers what the deployment references, in az ml's order (data
//! assets, the code folder, the environment), one bounded step per call and resumable from the
//! record, then PUTs the deployment. Nothing is deployed that references an asset not fully
//! registered: the deployment PUT is the last step, after every id is known.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use serde_json::json;

use super::engine::{Next, RolloutEngine};
use super::machine::*;
use crate::actions::azureml::stream::{self, Outgoing};
use crate::actions::azureml::upload::{SasContainer, UploadError};
use crate::azure::arm::ArmError;
use crate::deployment::assets::code::{CodeFolder, UploadChain};
use crate::deployment::assets::environment::ANONYMOUS_ENVIRONMENT;
use crate::deployment::assets::{InlineEnvironment, LocalCode};
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::{AssetProgress, RolloutState};
use crate::logs::InvocationLog;

/// Longest time one step spends uploading files before recording its progress.
const UPLOAD_STEP_BUDGET: Duration = Duration::from_secs(20);
/// How long requests already sent may run past a step's end before they are cut off (the
/// next step finds what they did).
const UPLOAD_GRACE: Duration = Duration::from_secs(15);

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
        UploadError::Changed { .. } | UploadError::Differs { .. } => StepError::Fail {
            why: format!("uploading the code folder: {e}"),
            configuration: true,
        },
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
    /// One step of `preparing_assets`; an upload stops sending by `deadline`.
    pub(super) async fn preparing(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        deadline: Instant,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let workspace = ws(&plan.workspace)?;
        let mut progress = state.assets.clone().unwrap_or_default();
        let next = self
            .asset_step(plan, &workspace, &mut progress, state, deadline, log)
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
        deadline: Instant,
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
            return self
                .code_step(workspace, code, progress, state, deadline, log)
                .await;
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
        self.put_deployment(plan, body, state, log).await
    }

    async fn code_step(
        &self,
        workspace: &crate::event::WorkspaceId,
        code: &LocalCode,
        progress: &mut AssetProgress,
        state: &mut RolloutState,
        deadline: Instant,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        if let Some(why) = &code.problem {
            return Err(StepError::Fail {
                why: format!(
                    "code folder {} could not be hashed when the event was planned: {why}; fix it and replay the event",
                    code.yaml_path
                ),
                configuration: true,
            });
        }
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
                .upload_step(workspace, code, &name, progress, state, deadline, log)
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

    #[allow(clippy::too_many_arguments)]
    async fn upload_step(
        &self,
        workspace: &crate::event::WorkspaceId,
        code: &LocalCode,
        name: &str,
        progress: &mut AssetProgress,
        state: &mut RolloutState,
        deadline: Instant,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let changed = |why: String| StepError::Fail {
            why: format!(
                "code folder {} changed since the event was planned ({why}); replay the event to deploy the current files",
                code.yaml_path
            ),
            configuration: true,
        };
        // Listed again (no content read): a file that now resolves outside the config folder
        // is refused before anything is sent.
        let folder =
            CodeFolder::list(&code.folder, code.boundary()).map_err(|e| StepError::Fail {
                why: format!("code_configuration.code: {e}"),
                configuration: true,
            })?;
        let planned = if code.upload_digest.is_empty() {
            // A record from an older release: hash now, and hold the files to the plan's hash.
            let scanned =
                CodeFolder::scan(&code.folder, code.boundary()).map_err(|e| StepError::Fail {
                    why: format!("code_configuration.code: {e}"),
                    configuration: true,
                })?;
            if scanned.hash() != code.hash {
                return Err(changed(format!(
                    "content hash {} now, {} planned",
                    scanned.hash(),
                    code.hash
                )));
            }
            scanned.upload_digest().to_string()
        } else {
            code.upload_digest.clone()
        };
        if folder.files().len() != code.files {
            return Err(changed(format!(
                "{} file(s) now, {} planned",
                folder.files().len(),
                code.files
            )));
        }
        // Recorded before it is used: every later step asks for this same pending upload.
        let id = progress
            .pending_upload_id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
            .clone();
        let pending = self
            .arm
            .start_pending_upload(workspace, name, "1", Some(&id))
            .await
            .map_err(|e| asset_error(e, "starting the code upload (startPendingUpload)"))?;
        if progress.blob_uri.as_deref() != Some(pending.blob_uri.as_str()) {
            if progress.blob_uri.is_some() {
                log.warn(format!(
                    "code folder {}: startPendingUpload answered another container than before; the upload starts again there",
                    code.yaml_path
                ));
            }
            // Another container than last time: what was uploaded there does not count.
            progress.blob_uri = Some(pending.blob_uri.clone());
            progress.files_uploaded = 0;
            progress.sent_digest = None;
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
        let files: Vec<Outgoing> = folder
            .upload_order()
            .into_iter()
            .map(|f| Outgoing {
                blob: folder.blob_name(f),
                path: f.path.clone(),
                size: f.size,
            })
            .collect();
        let chain = progress
            .sent_digest
            .as_deref()
            .and_then(UploadChain::from_hex)
            .unwrap_or_default();
        let start = if progress.sent_digest.is_some() || progress.files_uploaded == 0 {
            progress.files_uploaded.min(files.len())
        } else {
            // Progress from an older release, without a digest: check every file again.
            0
        };
        let step_end = deadline.min(Instant::now() + UPLOAD_STEP_BUDGET);
        let began = Instant::now();
        // Cut off at the step's end plus a grace: nothing here may hold the pass longer.
        let sent = tokio::time::timeout(
            step_end.saturating_duration_since(Instant::now()) + UPLOAD_GRACE,
            stream::send(&container, &files, start, chain, step_end),
        )
        .await;
        let sent = match sent {
            Ok(sent) => sent,
            Err(_) => {
                state.next_step = format!(
                    "upload the code folder ({} of {} files done; storage was slow)",
                    progress.files_uploaded,
                    files.len()
                );
                return Ok(Next::After(Duration::ZERO));
            }
        };
        let gained = sent.done.saturating_sub(start);
        progress.files_uploaded = sent.done;
        progress.sent_digest = Some(sent.chain.hex());
        if gained > 0 || sent.bytes > 0 {
            log.info(format!(
                "code folder {}: {} of {} file(s) uploaded ({} MiB sent in {:.1}s)",
                code.yaml_path,
                sent.done,
                files.len(),
                sent.bytes / (1024 * 1024),
                began.elapsed().as_secs_f64()
            ));
        }
        if let Some(e) = sent.error {
            return Err(upload_error(e));
        }
        if sent.done < files.len() {
            state.next_step = format!(
                "upload the code folder ({} of {} files done)",
                sent.done,
                files.len()
            );
            return Ok(Next::After(Duration::ZERO));
        }
        // What was sent, byte for byte, must be what the plan hashed.
        if sent.chain.hex() != planned {
            return Err(changed(
                "the files sent differ from the files hashed when the event was planned".into(),
            ));
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
