//! The smoke job: a batch job that invokes the new deployment itself (not the default), submitted
//! as `az ml batch-endpoint invoke --deployment-name NEW --input …` submits it (azure-ai-ml
//! 1.35.2 `batch_endpoints.invoke`: a POST to the endpoint's scoring URI with an Entra token for
//! the Azure ML audience, naming the deployment in `azureml-model-deployment`), then followed
//! through ARM (`GET {workspace}/jobs/{name}`) on each visit until it completes, fails or runs past
//! its bound. Anything but `Completed` keeps the previous default.

use std::time::Duration;

use time::OffsetDateTime;

use super::super::engine::{Next, RolloutEngine};
use super::super::machine::*;
use crate::actions::azureml::batch::wire::{
    DEPLOYMENT_HEADER, JobOutcome, REQUEST_ID_HEADER, job_error, job_input, job_outcome,
    needs_data_asset,
};
use crate::config::SmokeJob;
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::{RolloutState, SmokeJobRun};
use crate::ledger::after;
use crate::logs::InvocationLog;

/// When a running smoke job is looked at again: the next visit (Reconcile's timer sets the pace),
/// no sooner than `AUTODEPLOY_MIN_STEP_SECS`, which the deployer applies; never zero (that would
/// look again within the same visit).
const JOB_RECHECK: Duration = Duration::from_millis(1);
/// The longest a submission may take, unless the outbound budget is shorter.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Job statuses and errors are upstream text: kept short in the record.
const MAX_JOB_TEXT: usize = 500;

impl RolloutEngine {
    pub(super) async fn smoke_job_step(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let Some(job) = plan.batch.as_ref().and_then(|b| b.smoke_job.clone()) else {
            return Ok(self.before_switch(plan, state, log));
        };
        let progress = state.batch.get_or_insert_with(Default::default);
        let Some(run) = progress.smoke_job.clone() else {
            // Written ahead: the name and request id are recorded before the submission.
            let id = uuid::Uuid::new_v4().simple().to_string();
            progress.smoke_job = Some(SmokeJobRun {
                name: job_name(&plan.deployment, &id),
                request_id: uuid::Uuid::new_v4().to_string(),
                submitted: false,
                id: None,
                status: None,
                error: None,
                submitted_at: None,
                deadline: None,
            });
            state.next_step = format!("submit the smoke job on {}", plan.deployment);
            return Ok(Next::Now);
        };
        let workspace = ws(&plan.workspace)?;
        if !run.submitted {
            // A submission the service accepted before this step was recorded is found by name.
            let found = self
                .arm
                .job(&workspace, &run.name)
                .await
                .map_err(StepError::from_arm)?;
            let (id, status) = match found {
                Some(existing) => (
                    existing["id"].as_str().map(str::to_string),
                    existing["properties"]["status"]
                        .as_str()
                        .map(str::to_string),
                ),
                None => self.submit(plan, &job, &run, log).await?,
            };
            let now = OffsetDateTime::now_utc();
            let deadline = after(
                now,
                Duration::from_secs(u64::from(job.timeout_minutes) * 60),
            );
            if let Some(run) = state.batch.as_mut().and_then(|b| b.smoke_job.as_mut()) {
                run.submitted = true;
                run.id = id
                    .or_else(|| Some(crate::azure::arm::ArmClient::job_id(&workspace, &run.name)));
                run.status = status.map(|s| cut(&s));
                run.submitted_at = Some(now);
                run.deadline = Some(deadline);
            }
            state.next_step = format!(
                "wait for the smoke job {} (until {})",
                run.name,
                crate::ledger::record::rfc3339(deadline)
            );
            return Ok(Next::After(JOB_RECHECK));
        }
        self.follow(plan, &job, &run, state, log).await
    }

    /// Submits the job; answers its id and status.
    async fn submit(
        &self,
        plan: &AzureMlPlan,
        job: &SmokeJob,
        run: &SmokeJobRun,
        log: &InvocationLog,
    ) -> Result<(Option<String>, Option<String>), StepError> {
        let workspace = ws(&plan.workspace)?;
        // As az ml: `azureml:NAME:VERSION` without a type is read for its type and id.
        let asset_type = match needs_data_asset(job) {
            Some((name, version)) => {
                let asset = self
                    .arm
                    .asset_version(&workspace, "data", name, version)
                    .await
                    .map_err(StepError::from_arm)?
                    .ok_or_else(|| StepError::Fail {
                        why: format!(
                            "smoke_job.input: data asset {name}:{version} does not exist in {}",
                            plan.workspace
                        ),
                        configuration: true,
                    })?;
                let kind = asset["properties"]["dataType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if kind != "uri_folder" && kind != "uri_file" {
                    return Err(StepError::Fail {
                        why: format!(
                            "smoke_job.input: data asset {name}:{version} is {}, not uri_folder or uri_file (the types a batch deployment reads)",
                            if kind.is_empty() {
                                "of no known type"
                            } else {
                                &kind
                            }
                        ),
                        configuration: true,
                    });
                }
                Some(kind)
            }
            None => None,
        };
        let input = job_input(job, workspace.as_ref(), asset_type.as_deref());
        let endpoint = self
            .arm
            .batch_endpoint(&workspace, &plan.endpoint)
            .await
            .map_err(StepError::from_arm)?
            .ok_or_else(|| StepError::Fail {
                why: format!(
                    "batch endpoint {} disappeared during the rollout",
                    plan.endpoint
                ),
                configuration: true,
            })?;
        let url = self.scoring_url(
            &endpoint,
            &format!("batch endpoint {}", plan.endpoint),
            "inference domain; no token is sent there, and the smoke job fails",
        )?;
        let token = self
            .credential
            .get_token(&[self.arm.ml_scope()], None)
            .await
            .map_err(|e| StepError::Transient(format!("no Entra token for the invoke: {e}")))?;
        self.http.redactor().add_minted(token.token.secret());
        let response = self
            .http
            .client()
            .post(url)
            .bearer_auth(token.token.secret())
            .header(DEPLOYMENT_HEADER, &plan.deployment)
            .header(REQUEST_ID_HEADER, &run.request_id)
            .timeout(SUBMIT_TIMEOUT.min(self.arm.budget()))
            .json(&input.body(Some(&run.name)))
            .send()
            .await
            .map_err(|e| {
                StepError::Transient(format!(
                    "submitting the smoke job: {}",
                    if e.is_timeout() {
                        "timeout".into()
                    } else {
                        "connection error".to_string()
                    }
                ))
            })?;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            let body = self
                .http
                .redactor()
                .excerpt(content_type.as_deref(), &bytes);
            let why = format!(
                "submitting the smoke job on {} answered HTTP {}: {body}",
                plan.deployment,
                status.as_u16()
            );
            return Err(if status.as_u16() == 429 || status.is_server_error() {
                StepError::Transient(why)
            } else {
                StepError::Fail {
                    why,
                    configuration: matches!(status.as_u16(), 400 | 401 | 403 | 404),
                }
            });
        }
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        log.info(format!(
            "smoke job {} submitted on {} (input {} as {})",
            run.name, plan.deployment, input.uri, input.kind
        ));
        Ok((
            answer["id"].as_str().map(str::to_string),
            answer["properties"]["status"].as_str().map(str::to_string),
        ))
    }

    /// One look at a submitted job: completed moves on, ended or late fails (the previous default
    /// stays), running waits.
    async fn follow(
        &self,
        plan: &AzureMlPlan,
        job: &SmokeJob,
        run: &SmokeJobRun,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let workspace = ws(&plan.workspace)?;
        let found = self
            .arm
            .job(&workspace, &run.name)
            .await
            .map_err(StepError::from_arm)?;
        let status = found
            .as_ref()
            .and_then(|j| j["properties"]["status"].as_str())
            .map(cut)
            .unwrap_or_else(|| "Missing".into());
        let error = found
            .as_ref()
            .and_then(job_error)
            .map(|e| cut(&self.http.redactor().redact(&e)));
        let id = found
            .as_ref()
            .and_then(|j| j["id"].as_str().map(str::to_string))
            .or_else(|| run.id.clone());
        if let Some(recorded) = state.batch.as_mut().and_then(|b| b.smoke_job.as_mut()) {
            recorded.status = Some(status.clone());
            recorded.error = error.clone();
            recorded.id = id.clone();
        }
        let shown_id = id.unwrap_or_else(|| run.name.clone());
        let outcome = if found.is_none() {
            JobOutcome::Ended
        } else {
            job_outcome(&status)
        };
        match outcome {
            JobOutcome::Completed => {
                log.info(format!(
                    "smoke job {} on {} completed",
                    run.name, plan.deployment
                ));
                Ok(self.before_switch(plan, state, log))
            }
            JobOutcome::Ended => Err(StepError::Fail {
                why: format!(
                    "smoke job {} ({shown_id}) ended {status}{}; the previous default stays",
                    run.name,
                    error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
                configuration: false,
            }),
            JobOutcome::Running => {
                let now = OffsetDateTime::now_utc();
                let deadline = run.deadline.unwrap_or(now);
                if now >= deadline {
                    // Best effort: a job past its bound should not keep the cluster busy.
                    if let Err(e) = self.arm.cancel_job(&workspace, &run.name).await {
                        log.warn(format!("could not cancel the smoke job {}: {e}", run.name));
                    }
                    if let Some(recorded) = state.batch.as_mut().and_then(|b| b.smoke_job.as_mut())
                    {
                        recorded.error = Some(format!(
                            "did not complete within {} min (canceled)",
                            job.timeout_minutes
                        ));
                    }
                    return Err(StepError::Fail {
                        why: format!(
                            "smoke job {} ({shown_id}) did not complete within {} min (status {status}); canceled; the previous default stays",
                            run.name, job.timeout_minutes
                        ),
                        configuration: false,
                    });
                }
                state.next_step = format!(
                    "wait for the smoke job {} ({status}, until {})",
                    run.name,
                    crate::ledger::record::rfc3339(deadline)
                );
                Ok(Next::After(JOB_RECHECK))
            }
        }
    }
}

/// A job name for the smoke job of `deployment`: letters, digits, `-` and `_`, unique by `id`.
fn job_name(deployment: &str, id: &str) -> String {
    format!("smoke-{deployment}-{}", &id[..id.len().min(8)])
}

/// Upstream text kept in the record: printable, bounded.
fn cut(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_JOB_TEXT)
        .collect();
    clean
}
