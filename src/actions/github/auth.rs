//! GitHub App authentication: a signed app JWT, the installation for a repository, and
//! installation tokens cached per installation until shortly before they expire.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::answers::refusal;
use super::client::GithubClient;
use super::settings::{GithubAppCredential, GithubCredential};
use super::tokens::{CachedToken, TOKEN_RENEW_MARGIN};
use crate::actions::ActionError;
use crate::config::RepoSlug;
use crate::logs::InvocationLog;

impl GithubClient {
    /// The bearer token for `repo`: the PAT, or a (cached) GitHub App installation token.
    pub(super) async fn bearer(
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

    pub(super) async fn installation_token(
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
                let jwt = self.app_jwt(app)?;
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
                        &reply,
                        self.http.redactor(),
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
        let jwt = self.app_jwt(app)?;
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
                &reply,
                self.http.redactor(),
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
        self.http.redactor().add_minted(token);
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

    pub(super) async fn forget_app_token(&self) {
        self.app_tokens.lock().await.tokens.clear();
    }

    /// A fresh App JWT, registered with the redactor.
    fn app_jwt(&self, app: &GithubAppCredential) -> Result<SecretString, ActionError> {
        let jwt = app_jwt(app)?;
        self.http.redactor().add_minted(jwt.expose_secret());
        Ok(jwt)
    }
}

/// A signed app JWT (RS256, `iat` 60 s in the past against clock drift, `exp` 9 min ahead: GitHub
/// allows at most 10).
pub(super) fn app_jwt(app: &GithubAppCredential) -> Result<SecretString, ActionError> {
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
