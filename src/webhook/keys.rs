//! Entra ID bearer tokens: the signing keys (OpenID metadata → JWKS), cached, and the token checks.
//!
//! Requests whose key id is in the cache never wait: they read the current key set (an `Arc`
//! behind a lock held only to clone it). A key id the cache lacks (key rotation, or a forged
//! token) asks for one refresh; refreshes are single-flight (one fetch at a time, later askers
//! wait for it and use its result) and happen at most once per [`REFRESH_EVERY`] after a
//! successful fetch, so a flood of unknown key ids costs at most one fetch per five minutes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde_json::Value;
use thiserror::Error;

use crate::http::Http;

/// The app role Event Grid's service principal holds (secure webhook delivery).
pub const EVENT_GRID_ROLE: &str = "AzureEventGridSecureWebhookSubscriber";

/// Longest fetch of the OpenID metadata or the signing keys.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one fetch per this long after a successful one, however many unknown key ids arrive.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// After a failed fetch, the next one waits this long (requests meanwhile get `503` at once).
const RETRY_FAILED_FETCH_AFTER: Duration = Duration::from_secs(10);
/// Keys older than this are refreshed before use (and still used if the refresh fails).
const KEYS_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 60;

/// Why a bearer token was not accepted.
#[derive(Debug, Error)]
pub enum TokenError {
    /// 401: the token is not valid (malformed, bad signature, unknown key, issuer, audience,
    /// lifetime, role). Never echoes the token.
    #[error("{0}")]
    Invalid(String),
    /// 503: the signing keys cannot be read and no cached key fits; Event Grid retries.
    #[error("the signing keys cannot be read: {0}")]
    KeysUnavailable(String),
}

/// The keys of one fetch.
struct KeySet {
    keys: HashMap<String, DecodingKey>,
    fetched: Instant,
}

/// The last fetch: when, and whether it failed (why).
struct LastFetch {
    at: Instant,
    error: Option<String>,
}

/// Validates Entra ID access tokens: signature (keys from the OpenID metadata's JWKS), issuer,
/// audience, lifetime (`exp` and `nbf`) and the Event Grid app role.
pub struct EntraValidator {
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (the app id and/or its URI).
    pub audiences: Vec<String>,
    /// OpenID metadata document URL.
    pub metadata_url: String,
    http: Http,
    /// The current key set; readers clone the `Arc` and never hold the lock across an await.
    current: RwLock<Option<Arc<KeySet>>>,
    /// Single flight: held while fetching; remembers the last fetch.
    refresh: tokio::sync::Mutex<Option<LastFetch>>,
}

impl EntraValidator {
    /// A validator fetching the signing keys through `http`.
    pub fn new(
        issuers: Vec<String>,
        audiences: Vec<String>,
        metadata_url: String,
        http: Http,
    ) -> Self {
        Self {
            issuers,
            audiences,
            metadata_url,
            http,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(None),
        }
    }

    /// Checks a bearer token.
    pub async fn validate(&self, token: &str) -> Result<(), TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("malformed token".into()))?;
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("token without a key id".into()))?;
        let key = self.key(&kid).await?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&self.audiences);
        validation.set_issuer(&self.issuers);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| TokenError::Invalid(format!("token rejected: {e}")))?;
        let has_role = data.claims["roles"]
            .as_array()
            .is_some_and(|roles| roles.iter().any(|r| r.as_str() == Some(EVENT_GRID_ROLE)));
        if !has_role {
            return Err(TokenError::Invalid(format!(
                "token lacks the {EVENT_GRID_ROLE} role"
            )));
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        // A poisoned lock only means a reader panicked; the value is still whole.
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn install(&self, set: KeySet) {
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Some(Arc::new(set));
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        if let Some(set) = self.snapshot()
            && set.fetched.elapsed() < KEYS_STALE_AFTER
            && let Some(key) = set.keys.get(kid)
        {
            return Ok(key.clone());
        }
        // Unknown key id or stale keys: one refresh at a time; whoever waited uses its result.
        let mut last = self.refresh.lock().await;
        let cached = self.snapshot();
        let fresh_fit = cached
            .as_ref()
            .filter(|set| set.fetched.elapsed() < KEYS_STALE_AFTER)
            .and_then(|set| set.keys.get(kid).cloned());
        if let Some(key) = fresh_fit {
            return Ok(key);
        }
        let may_fetch = match last.as_ref() {
            None => true,
            Some(LastFetch { at, error: None }) => at.elapsed() >= REFRESH_EVERY,
            Some(LastFetch { at, error: Some(_) }) => at.elapsed() >= RETRY_FAILED_FETCH_AFTER,
        };
        let mut cached = cached;
        if may_fetch {
            let fetched = self.fetch_keys().await;
            let error = match fetched {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "fetched the Entra ID signing keys");
                    self.install(KeySet {
                        keys,
                        fetched: Instant::now(),
                    });
                    cached = self.snapshot();
                    None
                }
                Err(why) => {
                    tracing::warn!(error = %why, "cannot fetch the Entra ID signing keys");
                    Some(why)
                }
            };
            *last = Some(LastFetch {
                at: Instant::now(),
                error,
            });
        }
        // A stale key still fits better than none when the refresh failed.
        if let Some(key) = cached.as_ref().and_then(|set| set.keys.get(kid).cloned()) {
            return Ok(key);
        }
        match last.as_ref().and_then(|l| l.error.clone()) {
            Some(why) => Err(TokenError::KeysUnavailable(why)),
            None => Err(TokenError::Invalid("unknown signing key".into())),
        }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let metadata: Value = self
            .get_json(&self.metadata_url)
            .await
            .map_err(|e| format!("OpenID metadata: {e}"))?;
        let jwks_uri = metadata["jwks_uri"]
            .as_str()
            .ok_or("OpenID metadata without jwks_uri")?;
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(
            self.get_json(jwks_uri)
                .await
                .map_err(|e| format!("JWKS: {e}"))?,
        )
        .map_err(|e| format!("JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) {
                keys.insert(kid, key);
            }
        }
        Ok(keys)
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        self.http
            .client()
            .get(url)
            .timeout(KEY_FETCH_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.without_url().to_string())?
            .json()
            .await
            .map_err(|e| e.without_url().to_string())
    }
}
