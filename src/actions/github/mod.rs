//! GitHub REST client: `repository_dispatch`, `workflow_dispatch`, GitHub App authentication and
//! rate-limit-aware retries inside a total time budget.
//!
//! Written on `reqwest` rather than `octocrab`: we call three endpoints, need exact control of the
//! retry budget (Event Grid stops waiting after 30 s), and octocrab's App-auth and retry layers
//! would each add their own waiting.

mod answers;
pub mod dispatch;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Mutex;

use super::{ActionError, ActionOutcome, ActionPlan, GithubPlan, GithubRequest, PreparedRequest};
use answers::{refusal, retry_wait, transport_error};

use crate::config::RepoSlug;
use crate::http::Http;
use crate::logs::InvocationLog;
use crate::retry::{Backoff, Failure, Stop, retry};
use crate::settings::{GithubAppCredential, GithubCredential, GithubSettings};

/// The REST API version we speak (supported by github.com and current GitHub Enterprise Server).
pub const API_VERSION: &str = "2022-11-28";
/// Longest single request; the total is bounded by the retry budget.
const PER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delays: 0.5 s doubling up to 8 s, with jitter.
const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(500),
    cap: Duration::from_secs(8),
    jitter: true,
};
/// An installation token is renewed when less than this is left of its hour.
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The GitHub action executor. One per process: it owns the HTTP client and the App token cache.
pub struct GithubClient {
    api_url: String,
    credential: Result<Option<GithubCredential>, String>,
    budget: Duration,
    user_agent: String,
    http: Http,
    app_tokens: Mutex<AppTokenCache>,
}

impl std::fmt::Debug for GithubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubClient")
            .field("api_url", &self.api_url)
            .field("credential", &self.credential)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct AppTokenCache {
    installation_by_repo: HashMap<String, u64>,
    tokens: HashMap<u64, CachedToken>,
}

struct CachedToken {
    token: SecretString,
    renew_at: Instant,
}

/// A response we did not retry: success or a final refusal.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    attempts: u32,
}

impl GithubClient {
    /// A client for `settings`, retrying within `budget` per action, sending through `http`.
    pub fn new(settings: &GithubSettings, budget: Duration, http: Http) -> Self {
        Self {
            api_url: settings.api_url.clone(),
            credential: settings.auth.clone(),
            budget,
            user_agent: format!("aml-autodeploy/{}", env!("CARGO_PKG_VERSION")),
            http,
            app_tokens: Mutex::new(AppTokenCache::default()),
        }
    }

    fn endpoint(&self, plan: &GithubPlan) -> (String, Value) {
        let repo = &plan.repository;
        match &plan.request {
            GithubRequest::RepositoryDispatch {
                event_type,
                client_payload,
            } => (
                format!(
                    "{}/repos/{}/{}/dispatches",
                    self.api_url,
                    repo.owner(),
                    repo.name()
                ),
                json!({ "event_type": event_type, "client_payload": client_payload }),
            ),
            GithubRequest::WorkflowDispatch {
                workflow,
                git_ref,
                inputs,
            } => (
                format!(
                    "{}/repos/{}/{}/actions/workflows/{}/dispatches",
                    self.api_url,
                    repo.owner(),
                    repo.name(),
                    workflow
                ),
                json!({ "ref": git_ref, "inputs": inputs, "return_run_details": true }),
            ),
        }
    }

    fn credential_label(&self) -> &'static str {
        match &self.credential {
            Ok(Some(GithubCredential::Token(_))) => "Bearer <redacted: GITHUB_TOKEN>",
            Ok(Some(GithubCredential::App(_))) => {
                "Bearer <redacted: GitHub App installation token>"
            }
            _ => "<no GitHub credential configured>",
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "X-GitHub-Api-Version",
            HeaderValue::from_static(API_VERSION),
        );
        if let Ok(ua) = HeaderValue::from_str(&self.user_agent) {
            headers.insert(reqwest::header::USER_AGENT, ua);
        }
        headers
    }

    /// Sends one request, retrying transient failures until `deadline`. Returns the first reply that
    /// is not retryable (success or a refusal); transport failures and retryable statuses that
    /// outlast the budget become [`ActionError::Unavailable`].
    async fn call(
        &self,
        method: Method,
        url: &str,
        bearer: &SecretString,
        body: Option<&Value>,
        deadline: Instant,
        log: &InvocationLog,
    ) -> Result<Reply, ActionError> {
        let attempt = |attempt: u32| {
            let method = method.clone();
            async move {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(Failure::Final(ActionError::Unavailable(format!(
                        "retry budget of {}s used up after {} attempt(s) to {method} {url}",
                        self.budget.as_secs_f32(),
                        attempt - 1
                    ))));
                }
                let mut request = self
                    .http
                    .client()
                    .request(method, url)
                    .headers(self.headers())
                    .bearer_auth(bearer.expose_secret())
                    .timeout(remaining.min(PER_REQUEST_TIMEOUT));
                if let Some(body) = body {
                    request = request.json(body);
                }
                let sent = match request.build() {
                    Ok(request) => self.http.send_following_redirects(request).await,
                    Err(e) => Err(e.into()),
                };
                let response = sent.map_err(|e| Failure::Transient {
                    why: transport_error(&e),
                    asked: None,
                })?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response
                    .bytes()
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                match retry_wait(status, &headers, &body) {
                    None => Ok(Reply {
                        status,
                        body,
                        attempts: attempt,
                    }),
                    Some(asked) => Err(Failure::Transient {
                        why: format!("HTTP {}", status.as_u16()),
                        asked,
                    }),
                }
            }
        };
        let on_retry = |why: &str, attempt: u32, wait: Duration| {
            log.warn(format!(
                "GitHub: {method} {url} failed with {why} (attempt {attempt}); retrying in {:.1}s",
                wait.as_secs_f32()
            ));
        };
        retry(BACKOFF, deadline, attempt, on_retry)
            .await
            .map_err(|stop| match stop {
                Stop::Final(e) => e,
                Stop::OutOfTime {
                    why,
                    attempt,
                    wait,
                    remaining,
                } => ActionError::Unavailable(format!(
                    "{method} {url} failed with {why} on attempt {attempt}; the next try would be in {:.1}s, \
                     past the retry budget ({:.1}s left of {}s), so giving up now",
                    wait.as_secs_f32(),
                    remaining.as_secs_f32(),
                    self.budget.as_secs_f32()
                )),
            })
    }

    /// The bearer token for `repo`: the PAT, or a (cached) GitHub App installation token.
    async fn bearer(
        &self,
        repo: &RepoSlug,
        deadline: Instant,
        log: &InvocationLog,
    ) -> Result<SecretString, ActionError> {
        match &self.credential {
            Err(problem) => Err(ActionError::Credentials(problem.clone())),
            Ok(None) => Err(ActionError::Credentials(
                "no GitHub credential: set GITHUB_TOKEN, or GITHUB_APP_ID with GITHUB_APP_PRIVATE_KEY \
                 (or GITHUB_APP_PRIVATE_KEY_FILE)"
                    .to_string(),
            )),
            Ok(Some(GithubCredential::Token(token))) => Ok(token.clone()),
            Ok(Some(GithubCredential::App(app))) => {
                self.installation_token(app, repo, deadline, log).await
            }
        }
    }

    async fn installation_token(
        &self,
        app: &GithubAppCredential,
        repo: &RepoSlug,
        deadline: Instant,
        log: &InvocationLog,
    ) -> Result<SecretString, ActionError> {
        // One lock across lookup and mint: parallel invocations wait for one token instead of each
        // minting their own.
        let mut cache = self.app_tokens.lock().await;
        let repo_key = repo.to_string().to_ascii_lowercase();
        let installation = match app
            .installation_id
            .or_else(|| cache.installation_by_repo.get(&repo_key).copied())
        {
            Some(id) => id,
            None => {
                let jwt = app_jwt(app)?;
                let url = format!(
                    "{}/repos/{}/{}/installation",
                    self.api_url,
                    repo.owner(),
                    repo.name()
                );
                let reply = self
                    .call(Method::GET, &url, &jwt, None, deadline, log)
                    .await?;
                if !reply.status.is_success() {
                    return Err(refusal(
                        reply.status,
                        &reply.body,
                        "looking up the GitHub App installation for the repository",
                    ));
                }
                let id = serde_json::from_slice::<Value>(&reply.body)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_u64))
                    .ok_or_else(|| {
                        ActionError::Unavailable(format!(
                            "{url} answered without an installation id"
                        ))
                    })?;
                cache.installation_by_repo.insert(repo_key.clone(), id);
                id
            }
        };
        if let Some(cached) = cache.tokens.get(&installation)
            && Instant::now() < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        let jwt = app_jwt(app)?;
        let url = format!(
            "{}/app/installations/{installation}/access_tokens",
            self.api_url
        );
        let reply = self
            .call(Method::POST, &url, &jwt, None, deadline, log)
            .await?;
        if !reply.status.is_success() {
            // The App may have been reinstalled (new installation id): forget the looked-up id
            // so the next attempt looks it up again.
            if app.installation_id.is_none()
                && matches!(
                    reply.status,
                    StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED
                )
            {
                cache.installation_by_repo.remove(&repo_key);
            }
            return Err(refusal(
                reply.status,
                &reply.body,
                "minting a GitHub App installation token",
            ));
        }
        let parsed: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let token = parsed
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| ActionError::Unavailable(format!("{url} answered without a token")))?;
        // Tokens live one hour; trust `expires_at` when it parses, else assume the hour.
        let lifetime = parsed
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            .map(|at| at - OffsetDateTime::now_utc())
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::from_secs(3600));
        let token = SecretString::from(token.to_string());
        cache.tokens.insert(
            installation,
            CachedToken {
                token: token.clone(),
                renew_at: Instant::now() + lifetime.saturating_sub(TOKEN_RENEW_MARGIN),
            },
        );
        log.info(format!(
            "GitHub App: minted an installation token for installation {installation}"
        ));
        Ok(token)
    }

    async fn forget_app_token(&self) {
        self.app_tokens.lock().await.tokens.clear();
    }

    async fn dispatch(
        &self,
        plan: &GithubPlan,
        log: &InvocationLog,
    ) -> Result<ActionOutcome, ActionError> {
        let deadline = Instant::now() + self.budget;
        let (url, mut body) = self.endpoint(plan);
        let mut attempts = 0;
        let mut renewed_token = false;
        let mut dropped_run_details = false;
        loop {
            let bearer = self.bearer(&plan.repository, deadline, log).await?;
            let reply = self
                .call(Method::POST, &url, &bearer, Some(&body), deadline, log)
                .await?;
            attempts += reply.attempts;
            let status = reply.status;
            if status.is_success() {
                let mut outcome = ActionOutcome {
                    status: status.as_u16(),
                    attempts,
                    ..ActionOutcome::default()
                };
                // workflow_dispatch with return_run_details answers 200 with the run; GitHub Enterprise
                // Server (and older API behaviour) answers a plain 204.
                if let Ok(details) = serde_json::from_slice::<Value>(&reply.body) {
                    outcome.run_id = details.get("workflow_run_id").and_then(Value::as_u64);
                    outcome.run_url = details
                        .get("html_url")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                return Ok(outcome);
            }
            if status == StatusCode::UNAUTHORIZED
                && !renewed_token
                && matches!(self.credential, Ok(Some(GithubCredential::App(_))))
            {
                // A revoked or expired installation token: mint a new one once.
                renewed_token = true;
                self.forget_app_token().await;
                log.warn("GitHub answered 401 to the installation token; minting a new one");
                continue;
            }
            if status == StatusCode::UNPROCESSABLE_ENTITY
                && !dropped_run_details
                && body.get("return_run_details").is_some()
                && String::from_utf8_lossy(&reply.body).contains("return_run_details")
            {
                // Older GitHub Enterprise Server versions reject the parameter they do not know.
                dropped_run_details = true;
                if let Some(map) = body.as_object_mut() {
                    map.remove("return_run_details");
                }
                log.warn("GitHub does not accept return_run_details here; dispatching without run details");
                continue;
            }
            return Err(refusal(status, &reply.body, "dispatching"));
        }
    }
}

/// What the pipeline and `Reconcile` drive: the dry-run view, the send, the takeover check.
impl GithubClient {
    /// The exact request `execute` would send, secrets redacted (for dry runs).
    pub fn prepare(&self, plan: &ActionPlan) -> PreparedRequest {
        let ActionPlan::Github(plan) = plan else {
            return PreparedRequest {
                method: "NONE",
                url: String::new(),
                headers: Vec::new(),
                body: Value::Null,
            };
        };
        let (url, body) = self.endpoint(plan);
        let mut headers: Vec<(String, String)> = self
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        headers.push(("authorization".into(), self.credential_label().into()));
        headers.push(("content-type".into(), "application/json".into()));
        PreparedRequest {
            method: "POST",
            url,
            headers,
            body,
        }
    }

    /// Sends the dispatch, retrying transient failures within the configured budget.
    pub async fn execute(
        &self,
        plan: &ActionPlan,
        log: &InvocationLog,
    ) -> Result<ActionOutcome, ActionError> {
        let ActionPlan::Github(plan) = plan else {
            return Err(ActionError::Credentials("not a GitHub action".into()));
        };
        self.dispatch(plan, log).await
    }

    /// After a crash between sending and recording, whether the dispatch already took effect:
    /// the URL of a workflow run that carries one of `event_ids`, started since `since`. `None`
    /// when there is none, or when it cannot tell (then a takeover sends again).
    pub async fn find_existing_run(
        &self,
        plan: &ActionPlan,
        event_ids: &[String],
        since: OffsetDateTime,
        log: &InvocationLog,
    ) -> Result<Option<String>, ActionError> {
        let ActionPlan::Github(plan) = plan else {
            return Ok(None);
        };
        // repository_dispatch has no run id and no idempotency key: nothing to look for (the
        // documented duplicate window; the example workflow's concurrency group absorbs it).
        let GithubRequest::WorkflowDispatch {
            workflow, inputs, ..
        } = &plan.request
        else {
            return Ok(None);
        };
        // Only runs that carry the event id (an input, shown in the example's run-name) can be
        // recognised.
        let carried: Vec<&String> = event_ids
            .iter()
            .filter(|id| inputs.values().any(|v| v.as_str() == Some(id.as_str())))
            .collect();
        if carried.is_empty() {
            log.warn(
                "takeover cannot check for an existing workflow run: the rule's inputs do not pass {eventId}; sending again",
            );
            return Ok(None);
        }
        let deadline = Instant::now() + self.budget;
        let bearer = self.bearer(&plan.repository, deadline, log).await?;
        let created = (since - time::Duration::minutes(1))
            .format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .unwrap_or_default();
        let url = format!(
            "{}/repos/{}/{}/actions/workflows/{workflow}/runs?event=workflow_dispatch&per_page=100&created=%3E%3D{created}",
            self.api_url,
            plan.repository.owner(),
            plan.repository.name()
        );
        let reply = self
            .call(Method::GET, &url, &bearer, None, deadline, log)
            .await?;
        if !reply.status.is_success() {
            return Err(refusal(reply.status, &reply.body, "listing workflow runs"));
        }
        let runs: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        Ok(runs["workflow_runs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|run| {
                let title = format!(
                    "{} {}",
                    run["display_title"].as_str().unwrap_or_default(),
                    run["name"].as_str().unwrap_or_default()
                );
                carried.iter().any(|id| title.contains(id.as_str()))
            })
            .and_then(|run| run["html_url"].as_str().map(str::to_string)))
    }
}

/// A signed app JWT (RS256, `iat` 60 s in the past against clock drift, `exp` 9 min ahead: GitHub
/// allows at most 10).
fn app_jwt(app: &GithubAppCredential) -> Result<SecretString, ActionError> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iat: u64,
        exp: u64,
        iss: &'a str,
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(app.private_key_pem.expose_secret().as_bytes())
            .map_err(|_| {
                ActionError::Credentials(
                    "GITHUB_APP_PRIVATE_KEY is not an RSA private key in PEM form".into(),
                )
            })?;
    let claims = Claims {
        iat: now.saturating_sub(60),
        exp: now + 540,
        iss: &app.app_id,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .map(SecretString::from)
    .map_err(|e| ActionError::Credentials(format!("cannot sign the GitHub App JWT: {e}")))
}
