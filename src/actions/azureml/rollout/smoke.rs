//! The smoke test: the configured request sent to the new deployment through the endpoint's
//! scoring URI, with the endpoint's key or an Entra token, before and while it takes traffic.

use std::time::Duration;

use reqwest::Url;

use super::engine::{Next, RolloutEngine};
use super::machine::*;
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::RolloutState;
use crate::logs::InvocationLog;

/// The longest a scoring request may take, unless the outbound budget is shorter.
pub(super) const SCORING_TIMEOUT: Duration = Duration::from_secs(20);

impl RolloutEngine {
    pub(super) async fn smoke_phase(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        self.smoke(plan, log).await?;
        self.first_traffic_change(plan, state, log).await
    }

    /// Scores the new deployment directly (`azureml-model-deployment` header).
    pub(super) async fn smoke(
        &self,
        plan: &AzureMlPlan,
        log: &InvocationLog,
    ) -> Result<(), StepError> {
        let Some(test) = &plan.smoke_test else {
            return Ok(());
        };
        let workspace = ws(&plan.workspace)?;
        let endpoint = self
            .arm
            .online_endpoint(&workspace, &plan.endpoint)
            .await
            .map_err(StepError::from_arm)?
            .ok_or_else(|| StepError::Fail {
                why: format!("endpoint {} disappeared during the rollout", plan.endpoint),
                configuration: true,
            })?;
        let url = self.scoring_url(
            &endpoint,
            &format!("endpoint {}", plan.endpoint),
            "managed online endpoint domain; no key or token is sent there, and the smoke test fails",
        )?;
        use secrecy::ExposeSecret;
        let bearer = match endpoint["properties"]["authMode"].as_str().unwrap_or("Key") {
            "AADToken" => {
                let token = self
                    .credential
                    .get_token(&[self.arm.ml_scope()], None)
                    .await
                    .map_err(|e| {
                        StepError::Transient(format!("no Entra token for scoring: {e}"))
                    })?;
                // Registered like every minted credential: an answer quoting it is redacted.
                self.http.redactor().add_minted(token.token.secret());
                token.token.secret().to_string()
            }
            "AMLToken" => self
                .arm
                .endpoint_token(&workspace, &plan.endpoint)
                .await
                .map_err(StepError::from_arm)?
                .expose_secret()
                .to_string(),
            _ => {
                let keys = self
                    .arm
                    .list_keys(&workspace, &plan.endpoint)
                    .await
                    .map_err(StepError::from_arm)?;
                keys.primary.expose_secret().to_string()
            }
        };
        let response = self
            .http
            .client()
            .post(url)
            .bearer_auth(bearer)
            .header("azureml-model-deployment", &plan.deployment)
            // Never past the outbound budget: the first steps run inside the event's invocation.
            .timeout(SCORING_TIMEOUT.min(self.arm.budget()))
            .json(&test.request)
            .send()
            .await;
        match response {
            Ok(r) if r.status().as_u16() == test.expect_status => {
                log.info(format!(
                    "smoke test of {} passed (HTTP {})",
                    plan.deployment, test.expect_status
                ));
                Ok(())
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let content_type = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let bytes = r.bytes().await.unwrap_or_default();
                // The scoring container's answer is upstream text: described, redacted, cut.
                let body = self
                    .http
                    .redactor()
                    .excerpt(content_type.as_deref(), &bytes);
                Err(StepError::Fail {
                    why: format!(
                        "smoke test of {} answered HTTP {status}, expected {}: {body}",
                        plan.deployment, test.expect_status
                    ),
                    configuration: false,
                })
            }
            Err(e) => Err(StepError::Fail {
                why: format!(
                    "smoke test of {} failed: {}",
                    plan.deployment,
                    if e.is_timeout() {
                        "timeout".to_string()
                    } else {
                        e.to_string()
                    }
                ),
                configuration: false,
            }),
        }
    }
}

impl RolloutEngine {
    /// The scoring URI of `endpoint` (an online or batch endpoint's ARM answer, `named` in messages),
    /// refused unless it may receive credentials: checked before any key or token is fetched, so
    /// nothing is sent to a foreign scoring URI. `refusal` ends the message (the cloud's domain and
    /// what fails).
    pub(super) fn scoring_url(
        &self,
        endpoint: &serde_json::Value,
        named: &str,
        refusal: &str,
    ) -> Result<Url, StepError> {
        let scoring_uri = endpoint["properties"]["scoringUri"]
            .as_str()
            .unwrap_or_default();
        let url = Url::parse(scoring_uri)
            .map_err(|_| StepError::Transient(format!("{named} has no scoring URI yet")))?;
        if !self.arm.may_receive_scoring_credentials(&url) {
            return Err(StepError::Fail {
                why: format!(
                    "{named}'s scoring URI {}://{}{} is not https on the cloud's {refusal}",
                    url.scheme(),
                    url.host_str().unwrap_or_default(),
                    url.port().map(|p| format!(":{p}")).unwrap_or_default()
                ),
                configuration: true,
            });
        }
        Ok(url)
    }
}
