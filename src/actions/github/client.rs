//! One GitHub REST call with retries inside the time budget: headers, the credential, and which
//! answers are retried (5xx, 429, rate limits; an expired App token once).

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Mutex;

use super::answers::Reply;
use super::answers::{refused_redirect, retry_wait, transport_error};
use super::settings::{GithubCredential, GithubSettings};
use super::tokens::AppTokenCache;
use crate::actions::ActionError;
use crate::http::{Answer, Http};
use crate::logs::InvocationLog;
use crate::retry::{Backoff, Failure, Stop, retry};

/// The most bytes of one answer read: GitHub's answers are small, and one without end must not
/// hold the process's memory.
pub(super) const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// Longest single request; the total is bounded by the retry budget.
pub(super) const PER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delays: 0.5 s doubling up to 8 s, with jitter.
pub(super) const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(500),
    cap: Duration::from_secs(8),
    jitter: true,
};

/// The REST API version we speak (supported by github.com and current GitHub Enterprise Server).
pub const API_VERSION: &str = "2022-11-28";

/// The GitHub action executor. One per process: it owns the HTTP client and the App token cache.
pub struct GithubClient {
    pub(super) api_url: String,
    pub(super) credential: Result<Option<GithubCredential>, String>,
    pub(super) budget: Duration,
    pub(super) user_agent: String,
    pub(super) http: Http,
    pub(super) app_tokens: Mutex<AppTokenCache>,
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
}

impl GithubClient {
    pub(super) fn credential_label(&self) -> &'static str {
        match &self.credential {
            Ok(Some(GithubCredential::Token(_))) => "Bearer <redacted: GITHUB_TOKEN>",
            Ok(Some(GithubCredential::App(_))) => {
                "Bearer <redacted: GitHub App installation token>"
            }
            _ => "<no GitHub credential configured>",
        }
    }

    pub(super) fn headers(&self) -> HeaderMap {
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
    pub(super) async fn call(
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
                let response = sent.map_err(|e| match refused_redirect(&e) {
                    Some(refused) => Failure::Final(refused),
                    None => Failure::Transient {
                        why: transport_error(&e, self.http.redactor()),
                        asked: None,
                    },
                })?;
                let answer = Answer::read(response, MAX_ANSWER_BYTES).await;
                let (status, headers) = (answer.status, answer.headers);
                // A longer answer is cut: GitHub's documents are small, and it reads as not JSON.
                let body = answer.body.map(|c| c.bytes).unwrap_or_default();
                let content_type = answer.content_type;
                match retry_wait(status, &headers, &body) {
                    None => Ok(Reply {
                        status,
                        content_type,
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
}
