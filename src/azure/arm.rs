//! A small Azure Resource Manager client for `Microsoft.MachineLearningServices`.
//!
//! Built on our own `reqwest` client with an injected `TokenCredential` rather than on
//! `azure_core`'s pipeline: its bearer-token policy refuses plain http, which the loopback fakes
//! in tests need, and we want exact control of which hosts ever see a token. Long-running
//! operations follow `Azure-AsyncOperation` (PUT) or `Location` (DELETE, 202), honour `Retry-After`,
//! and surface the operation's `error` verbatim.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use reqwest::{Method, StatusCode, Url};
use secrecy::SecretString;
use serde_json::Value;
use thiserror::Error;

use super::Cloud;
use crate::event::WorkspaceId;
use crate::http::{Answer, Http};
use crate::retry::{Backoff, Failure, Stop, retry, retry_after};

/// The pinned `Microsoft.MachineLearningServices` API version (`AUTODEPLOY_ARM_API_VERSION`
/// overrides it).
pub const DEFAULT_API_VERSION: &str = "2025-12-01";
/// Poll interval when the service gives no `Retry-After`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
const PER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most bytes of one answer read: ARM's documents are small, and an answer without end must
/// not hold the process's memory.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// Retry delays: 0.5 s doubling up to 8 s, without jitter.
const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(500),
    cap: Duration::from_secs(8),
    jitter: false,
};

/// Where ARM is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ArmSettings {
    /// The cloud (token scope, Azure ML host suffix).
    pub cloud: Cloud,
    /// ARM endpoint (`AUTODEPLOY_ARM_ENDPOINT`, default the cloud's).
    pub endpoint: String,
    /// `api-version` for Microsoft.MachineLearningServices.
    pub api_version: String,
    /// Total retry time per request.
    pub budget: Duration,
}

impl ArmSettings {
    /// `AUTODEPLOY_ARM_ENDPOINT` (default the cloud's) and `AUTODEPLOY_ARM_API_VERSION`, with
    /// `budget` per request.
    pub fn from_env(env: &dyn crate::env::Env, cloud: Cloud, retry_budget: Duration) -> Self {
        ArmSettings {
            cloud,
            endpoint: env
                .get("AUTODEPLOY_ARM_ENDPOINT")
                .map(|e| e.trim().trim_end_matches('/').to_string())
                .unwrap_or_else(|| cloud.arm_endpoint().to_string()),
            api_version: env
                .get("AUTODEPLOY_ARM_API_VERSION")
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| DEFAULT_API_VERSION.to_string()),
            budget: retry_budget,
        }
    }
}

/// Why an ARM call failed.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum ArmError {
    /// No token could be had.
    #[error("Azure credential: {0}")]
    Credential(String),
    /// ARM answered with an error (after retries for 429/5xx).
    #[error("ARM {method} {path}: HTTP {status}: {code}: {message}")]
    Http {
        /// Method.
        method: String,
        /// URL path (no query, no host).
        path: String,
        /// Status.
        status: u16,
        /// ARM's `error.code`.
        code: String,
        /// ARM's `error.message`, verbatim.
        message: String,
    },
    /// A long-running operation ended `Failed` or `Canceled`.
    #[error("ARM operation {status}: {code}: {message}")]
    OperationFailed {
        /// `Failed` or `Canceled`.
        status: String,
        /// The operation's `error.code`.
        code: String,
        /// The operation's `error.message`, verbatim.
        message: String,
    },
    /// A URL from a response points at a host that must not receive our token.
    #[error(
        "refused to follow {0}: its host is not ARM or the cloud's Azure ML host, so no token is sent there"
    )]
    ForeignUrl(String),
    /// ARM could not be reached, or kept failing, within the budget.
    #[error("ARM unavailable: {0}")]
    Unavailable(String),
    /// A long-running operation did not finish in the time allowed.
    #[error("ARM operation still running after {0:?}")]
    StillRunning(Duration),
    /// An answer longer than the caller reads: only its first `limit` bytes were read.
    #[error("ARM {method} {path}: the answer is larger than {limit} bytes, so it was not read")]
    TooLarge {
        /// Method.
        method: String,
        /// URL path (no query, no host).
        path: String,
        /// The most bytes read.
        limit: usize,
    },
}

impl ArmError {
    /// Whether trying again later can succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            // A token endpoint that throttles, times out or answers garbage is as passing as ARM
            // doing so; and a missing identity or role, once an operator fixes it, should let the
            // pending version proceed rather than leave it failed. `Reconcile` retries until
            // AUTODEPLOY_GIVE_UP_AFTER either way.
            ArmError::Unavailable(_) | ArmError::StillRunning(_) | ArmError::Credential(_) => true,
            ArmError::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// Whether ARM said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ArmError::Http { status: 404, .. })
    }
}

/// A long-running operation in progress, or its result.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Finished: the resource (PUT) or nothing (DELETE).
    Done(Option<Value>),
    /// Still running.
    Pending {
        /// Where to poll.
        poll_url: Url,
        /// `Azure-AsyncOperation` (status body) or `Location` (202 until done).
        via_location: bool,
        /// What to GET when done (PUT: the resource itself).
        final_url: Option<Url>,
        /// How long the service asked us to wait.
        retry_after: Duration,
    },
}

/// The ARM client. One per process.
pub struct ArmClient {
    endpoint: Url,
    api_version: String,
    scope: String,
    aml_suffix: String,
    inference_suffix: &'static str,
    ml_scope: &'static str,
    budget: Duration,
    credential: Arc<dyn TokenCredential>,
    http: Http,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl ArmClient {
    /// A client for `settings` using `credential`, sending through `http`.
    pub fn new(
        settings: &ArmSettings,
        credential: Arc<dyn TokenCredential>,
        http: Http,
    ) -> Result<Self, String> {
        let endpoint = Url::parse(settings.endpoint.trim_end_matches('/')).map_err(|_| {
            format!(
                "AUTODEPLOY_ARM_ENDPOINT is not a URL: {:?}",
                settings.endpoint
            )
        })?;
        Ok(Self {
            endpoint,
            api_version: settings.api_version.clone(),
            scope: settings.cloud.arm_scope(),
            aml_suffix: settings.cloud.azureml_host_suffix().to_string(),
            inference_suffix: settings.cloud.inference_suffix(),
            ml_scope: settings.cloud.ml_scope(),
            budget: settings.budget,
            credential,
            http,
        })
    }

    /// Whether `url` may receive our token: the ARM endpoint itself, or (https only) the cloud's
    /// regional Azure ML hosts (MLflow).
    pub fn may_receive_token(&self, url: &Url) -> bool {
        let same_origin = url.scheme() == self.endpoint.scheme()
            && url.host_str() == self.endpoint.host_str()
            && url.port_or_known_default() == self.endpoint.port_or_known_default();
        let azureml = url.scheme() == "https"
            && url.host_str().is_some_and(|h| {
                h.to_ascii_lowercase()
                    .ends_with(&format!(".{}", self.aml_suffix))
            });
        same_origin || azureml
    }

    /// Whether a scoring URI may receive an endpoint key or token: https on the cloud's managed
    /// online endpoint domain (`*.inference.ml.azure.com`), or the ARM endpoint's own origin (the
    /// loopback fakes in tests). The URI comes from the endpoint resource; a tampered or
    /// misconfigured one must not collect credentials.
    pub fn may_receive_scoring_credentials(&self, url: &Url) -> bool {
        let same_origin = url.scheme() == self.endpoint.scheme()
            && url.host_str() == self.endpoint.host_str()
            && url.port_or_known_default() == self.endpoint.port_or_known_default();
        let inference = url.scheme() == "https"
            && url.host_str().is_some_and(|h| {
                h.to_ascii_lowercase()
                    .ends_with(&format!(".{}", self.inference_suffix))
            });
        same_origin || inference
    }

    /// The full URL of an ARM resource id (or id plus action), with `api-version`.
    pub fn resource_url(&self, id: &str) -> Result<Url, ArmError> {
        let mut url = self.endpoint.clone();
        let base = self.endpoint.path().trim_end_matches('/');
        url.set_path(&format!("{base}/{}", id.trim_start_matches('/')));
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version);
        Ok(url)
    }

    async fn token(&self, scope: &str, deadline: Instant) -> Result<String, ArmError> {
        // Bounded: an unreachable token endpoint must not hold the invocation past its budget.
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, self.credential.get_token(&[scope], None)).await {
            Ok(Ok(token)) => {
                let token = token.token.secret().to_string();
                self.http.redactor().add_minted(&token);
                Ok(token)
            }
            Ok(Err(e)) => Err(ArmError::Credential(first_line(
                &self.http.redactor().redact(&e.to_string()),
            ))),
            Err(_) => Err(ArmError::Credential(format!(
                "no token for {scope} within the {:.0}s budget (is the token endpoint reachable?)",
                self.budget.as_secs_f32()
            ))),
        }
    }

    /// One request, retried on 429/5xx/transport errors inside the budget. Non-2xx final answers
    /// become [`ArmError::Http`] except 202/404 handling left to the caller via `accept`.
    async fn request(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        scope: &str,
        accept: &[u16],
    ) -> Result<Reply, ArmError> {
        self.request_capped(method, url, body, scope, accept, MAX_ANSWER_BYTES)
            .await
    }

    /// [`ArmClient::request`] reading at most `limit` bytes of the answer; a longer one is
    /// [`ArmError::TooLarge`] (not retried: it would be as long again).
    async fn request_capped(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        scope: &str,
        accept: &[u16],
        limit: usize,
    ) -> Result<Reply, ArmError> {
        if !self.may_receive_token(&url) {
            return Err(ArmError::ForeignUrl(redact_query(&url)));
        }
        let deadline = Instant::now() + self.budget;
        let attempt = |_| {
            let (method, url) = (method.clone(), url.clone());
            async move {
                let token = self.token(scope, deadline).await.map_err(Failure::Final)?;
                let remaining = deadline.saturating_duration_since(Instant::now());
                let mut request = self
                    .http
                    .client()
                    .request(method.clone(), url.clone())
                    .bearer_auth(token)
                    .header("accept", "application/json")
                    .header(
                        "user-agent",
                        concat!("aml-autodeploy/", env!("CARGO_PKG_VERSION")),
                    )
                    .timeout(remaining.clamp(Duration::from_millis(100), PER_REQUEST_TIMEOUT));
                if let Some(body) = body {
                    request = request.json(body);
                }
                let response = request.send().await.map_err(|e| Failure::Transient {
                    why: if e.is_timeout() {
                        "a timeout".into()
                    } else {
                        "a connection error".into()
                    },
                    asked: None,
                })?;
                let answer = Answer::read(response, limit).await;
                let (status, headers, bytes) = (answer.status, answer.headers, answer.body);
                let content_type = answer.content_type.as_deref();
                // ARM answers JSON. A success whose body is cut off or unreadable is not a
                // success we can act on (the change may not have been applied, and the
                // operation to follow may be lost with it): retry it, as every ARM PUT,
                // DELETE and listKeys/token POST is idempotent.
                let bytes = match bytes {
                    Ok(capped) if capped.cut => {
                        return Err(Failure::Final(ArmError::TooLarge {
                            method: method.to_string(),
                            path: self.http.redactor().redact(url.path()),
                            limit,
                        }));
                    }
                    Ok(capped) => Ok(capped.bytes),
                    Err(e) => Err(e),
                };
                let parsed: Option<Value> = match &bytes {
                    Ok(b) if b.is_empty() => Some(Value::Null),
                    Ok(b) => serde_json::from_slice(b).ok(),
                    Err(_) => None,
                };
                let readable = parsed.is_some();
                // Anything else is described, never quoted: content type and a redacted excerpt.
                let body = parsed.unwrap_or_else(|| match &bytes {
                    Ok(b) => Value::String(self.http.redactor().excerpt(content_type, b)),
                    Err(_) => Value::Null,
                });
                if status.is_success() && !readable {
                    Err(Failure::Transient {
                        why: format!(
                            "HTTP {} with a truncated or unreadable body",
                            status.as_u16()
                        ),
                        asked: None,
                    })
                } else if status.is_success() || accept.contains(&status.as_u16()) {
                    Ok(Reply {
                        status,
                        headers,
                        body,
                    })
                } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    Err(Failure::Transient {
                        why: format!("HTTP {}", status.as_u16()),
                        asked: retry_after(&headers),
                    })
                } else {
                    Err(Failure::Final(
                        self.http_error(&method, &url, status, &body),
                    ))
                }
            }
        };
        retry(BACKOFF, deadline, attempt, |_, _, _| {})
            .await
            .map_err(|stop| match stop {
                Stop::Final(e) => e,
                Stop::OutOfTime { why, attempt, .. } => ArmError::Unavailable(format!(
                    "{method} {} failed with {why} on attempt {attempt}; no time left in the {:.0}s budget",
                    url.path(),
                    self.budget.as_secs_f32()
                )),
            })
    }

    /// GETs a resource.
    pub async fn get(&self, id: &str) -> Result<Value, ArmError> {
        let url = self.resource_url(id)?;
        Ok(self
            .request(Method::GET, url, None, &self.scope, &[])
            .await?
            .body)
    }

    /// GETs a resource; `None` when it does not exist.
    pub async fn get_optional(&self, id: &str) -> Result<Option<Value>, ArmError> {
        match self.get(id).await {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GETs a resource (usually a list) with extra query parameters besides `api-version`.
    pub async fn get_with(&self, id: &str, query: &[(&str, &str)]) -> Result<Value, ArmError> {
        let mut url = self.resource_url(id)?;
        url.query_pairs_mut().extend_pairs(query);
        Ok(self
            .request(Method::GET, url, None, &self.scope, &[])
            .await?
            .body)
    }

    /// PUTs a resource that is created synchronously (asset versions) and returns it.
    pub async fn put(&self, id: &str, body: &Value) -> Result<Value, ArmError> {
        let url = self.resource_url(id)?;
        Ok(self
            .request(Method::PUT, url, Some(body), &self.scope, &[])
            .await?
            .body)
    }

    /// POSTs an action (e.g. `…/listKeys`).
    pub async fn post(&self, id_and_action: &str, body: Option<&Value>) -> Result<Value, ArmError> {
        self.post_capped(id_and_action, body, MAX_ANSWER_BYTES)
            .await
    }

    /// POSTs an action whose answer may be long (e.g. `…/getLogs`), reading at most `limit` bytes
    /// of it.
    pub async fn post_capped(
        &self,
        id_and_action: &str,
        body: Option<&Value>,
        limit: usize,
    ) -> Result<Value, ArmError> {
        let url = self.resource_url(id_and_action)?;
        Ok(self
            .request_capped(Method::POST, url, body, &self.scope, &[], limit)
            .await?
            .body)
    }

    /// The Entra scope for scoring `AADToken` endpoints in this cloud.
    pub fn ml_scope(&self) -> &'static str {
        self.ml_scope
    }

    /// An `AMLToken` endpoint's scoring token (`POST …/token`). `Debug`-safe: a secret string.
    pub async fn endpoint_token(
        &self,
        workspace: &WorkspaceId,
        endpoint: &str,
    ) -> Result<SecretString, ArmError> {
        let value = self
            .post(
                &format!("{}/token", Self::online_endpoint_id(workspace, endpoint)),
                None,
            )
            .await?;
        let token = value["accessToken"].as_str().unwrap_or_default();
        self.redactor().add_minted(token);
        Ok(SecretString::from(token.to_string()))
    }

    /// The retry budget of one request.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The ARM endpoint.
    pub fn endpoint(&self) -> Option<&Url> {
        Some(&self.endpoint)
    }

    /// POSTs to a URL on an Azure ML regional host (e.g. MLflow `runs/search`).
    pub async fn post_azureml(&self, url: Url, body: &Value) -> Result<Value, ArmError> {
        Ok(self
            .request(Method::POST, url, Some(body), &self.scope, &[])
            .await?
            .body)
    }

    /// GETs a URL on an Azure ML regional host (e.g. MLflow), with an ARM-audience token.
    pub async fn get_azureml(&self, url: Url) -> Result<Value, ArmError> {
        Ok(self
            .request(Method::GET, url, None, &self.scope, &[])
            .await?
            .body)
    }

    /// Starts a PUT (create or update).
    pub async fn begin_put(&self, id: &str, body: &Value) -> Result<Operation, ArmError> {
        let url = self.resource_url(id)?;
        let reply = self
            .request(Method::PUT, url.clone(), Some(body), &self.scope, &[])
            .await?;
        self.operation_from(reply, Some(url))
    }

    /// Starts a DELETE. A resource already gone counts as done.
    pub async fn begin_delete(&self, id: &str) -> Result<Operation, ArmError> {
        let url = self.resource_url(id)?;
        let reply = self
            .request(Method::DELETE, url, None, &self.scope, &[404])
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(Operation::Done(None));
        }
        self.operation_from(reply, None)
    }

    fn operation_from(&self, reply: Reply, final_url: Option<Url>) -> Result<Operation, ArmError> {
        let header_url = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| Url::parse(s).ok())
        };
        let retry_after = retry_after(&reply.headers).unwrap_or(DEFAULT_POLL_INTERVAL);
        if let Some(poll_url) = header_url("azure-asyncoperation") {
            self.check(&poll_url)?;
            return Ok(Operation::Pending {
                poll_url,
                via_location: false,
                final_url,
                retry_after,
            });
        }
        if reply.status == StatusCode::ACCEPTED
            && let Some(poll_url) = header_url("location")
        {
            self.check(&poll_url)?;
            return Ok(Operation::Pending {
                poll_url,
                via_location: true,
                final_url,
                retry_after,
            });
        }
        Ok(Operation::Done(match reply.body {
            Value::Null => None,
            body => Some(body),
        }))
    }

    fn check(&self, url: &Url) -> Result<(), ArmError> {
        if self.may_receive_token(url) {
            Ok(())
        } else {
            Err(ArmError::ForeignUrl(redact_query(url)))
        }
    }

    /// One poll of a pending operation.
    pub async fn poll(&self, operation: &Operation) -> Result<Operation, ArmError> {
        let Operation::Pending {
            poll_url,
            via_location,
            final_url,
            ..
        } = operation
        else {
            return Ok(operation.clone());
        };
        let reply = self
            .request(Method::GET, poll_url.clone(), None, &self.scope, &[])
            .await?;
        let retry_after = retry_after(&reply.headers).unwrap_or(DEFAULT_POLL_INTERVAL);
        if *via_location {
            if reply.status == StatusCode::ACCEPTED {
                return Ok(Operation::Pending {
                    poll_url: poll_url.clone(),
                    via_location: true,
                    final_url: final_url.clone(),
                    retry_after,
                });
            }
            return Ok(Operation::Done(match reply.body {
                Value::Null => None,
                body => Some(body),
            }));
        }
        let status = reply.body["status"]
            .as_str()
            .unwrap_or("InProgress")
            .to_string();
        match status.as_str() {
            "Succeeded" => match final_url {
                Some(url) => {
                    let done = self
                        .request(Method::GET, url.clone(), None, &self.scope, &[])
                        .await?;
                    Ok(Operation::Done(Some(done.body)))
                }
                None => Ok(Operation::Done(None)),
            },
            "Failed" | "Canceled" | "Cancelled" => Err(ArmError::OperationFailed {
                status,
                code: reply.body["error"]["code"]
                    .as_str()
                    .unwrap_or("Unknown")
                    .to_string(),
                message: self
                    .http
                    .redactor()
                    .redact(reply.body["error"]["message"].as_str().unwrap_or_default()),
            }),
            _ => Ok(Operation::Pending {
                poll_url: poll_url.clone(),
                via_location: false,
                final_url: final_url.clone(),
                retry_after,
            }),
        }
    }

    /// Polls until done, waiting as the service asks, for at most `max_wait`.
    pub async fn wait(
        &self,
        mut operation: Operation,
        max_wait: Duration,
    ) -> Result<Option<Value>, ArmError> {
        let deadline = Instant::now() + max_wait;
        loop {
            match &operation {
                Operation::Done(value) => return Ok(value.clone()),
                Operation::Pending { retry_after, .. } => {
                    if Instant::now()
                        .checked_add(*retry_after)
                        .is_none_or(|t| t > deadline)
                    {
                        return Err(ArmError::StillRunning(max_wait));
                    }
                    tokio::time::sleep(*retry_after).await;
                    operation = self.poll(&operation).await?;
                }
            }
        }
    }
}

impl ArmClient {
    /// A final refusal: ARM's `error.code` and (redacted) `error.message`, or the description of
    /// a body that is not ARM's JSON.
    fn http_error(&self, method: &Method, url: &Url, status: StatusCode, body: &Value) -> ArmError {
        let error = &body["error"];
        let redactor = self.http.redactor();
        ArmError::Http {
            method: method.to_string(),
            path: redactor.redact(url.path()),
            status: status.as_u16(),
            code: redactor.redact(error["code"].as_str().unwrap_or("Unknown")),
            message: error["message"]
                .as_str()
                .map(|m| redactor.redact(m))
                .unwrap_or_else(|| redactor.redact(body.as_str().unwrap_or_default())),
        }
    }

    /// The process's redactor (for secrets read through ARM: keys, tokens, SAS URLs).
    pub fn redactor(&self) -> &crate::redact::Redactor {
        self.http.redactor()
    }
}

/// A URL for messages: poll URLs can carry signatures in their query.
fn redact_query(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests;
