//! Standalone Event Grid webhook mode (`serve --webhook`), for Container Apps and Kubernetes where
//! there is no Functions host: Event Grid's handshakes, batches, mandatory authentication, and an
//! internal `Reconcile` timer with one leader among replicas (a blob lease).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;
use tracing::Instrument;

use crate::http::Http;
use crate::logs::InvocationLog;
use crate::pipeline::{Execution, Invocation, Pipeline, PipelineError};

/// Event Grid delivers at most 1 MB per request; a little slack for the envelope.
pub const MAX_BODY_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// The app role Event Grid's service principal holds (secure webhook delivery).
pub const EVENT_GRID_ROLE: &str = "AzureEventGridSecureWebhookSubscriber";
/// Longest fetch of the OpenID metadata or the signing keys.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `presented` is the key, in constant time (`subtle`), so a wrong key's timing says
/// nothing about the right one. Only the length can show, and it is public (at least 16).
fn key_matches(presented: &[u8], key: &[u8]) -> bool {
    presented.ct_eq(key).into()
}

/// How requests authenticate. At least one must be configured.
pub struct WebhookAuth {
    /// `AUTODEPLOY_WEBHOOK_KEY`, from `x-autodeploy-key` or `?code=`.
    pub key: Option<SecretString>,
    /// Microsoft Entra ID bearer tokens.
    pub entra: Option<EntraValidator>,
}

impl std::fmt::Debug for WebhookAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookAuth")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("entra", &self.entra.is_some())
            .finish()
    }
}

/// Validates Entra ID access tokens: signature (keys from the OpenID metadata's JWKS), issuer,
/// audience, lifetime and the Event Grid app role.
pub struct EntraValidator {
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (the app id and/or its URI).
    pub audiences: Vec<String>,
    /// OpenID metadata document URL.
    pub metadata_url: String,
    http: Http,
    keys: RwLock<Option<(HashMap<String, jsonwebtoken::DecodingKey>, Instant)>>,
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
            keys: RwLock::new(None),
        }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, jsonwebtoken::DecodingKey>, String> {
        let metadata: Value = self
            .http
            .client()
            .get(&self.metadata_url)
            .timeout(KEY_FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("OpenID metadata: {}", e.without_url()))?
            .json()
            .await
            .map_err(|e| format!("OpenID metadata: {}", e.without_url()))?;
        let jwks_uri = metadata["jwks_uri"]
            .as_str()
            .ok_or("OpenID metadata without jwks_uri")?;
        let set: jsonwebtoken::jwk::JwkSet = self
            .http
            .client()
            .get(jwks_uri)
            .timeout(KEY_FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("JWKS: {}", e.without_url()))?
            .json()
            .await
            .map_err(|e| format!("JWKS: {}", e.without_url()))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), Ok(key)) = (
                jwk.common.key_id.clone(),
                jsonwebtoken::DecodingKey::from_jwk(jwk),
            ) {
                keys.insert(kid, key);
            }
        }
        Ok(keys)
    }

    async fn key(&self, kid: &str) -> Result<jsonwebtoken::DecodingKey, String> {
        if let Some((keys, fetched)) = self.keys.read().await.as_ref()
            && let Some(key) = keys.get(kid)
            && fetched.elapsed() < Duration::from_secs(24 * 3600)
        {
            return Ok(key.clone());
        }
        // Unknown key id (rotation) or stale cache: fetch again, at most every 5 minutes.
        let mut cache = self.keys.write().await;
        let fresh_enough = cache
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < Duration::from_secs(300));
        if !fresh_enough || cache.as_ref().is_none_or(|(k, _)| !k.contains_key(kid)) {
            if let Ok(keys) = self.fetch_keys().await {
                *cache = Some((keys, Instant::now()));
            } else if cache.is_none() {
                return Err("cannot read the signing keys".into());
            }
        }
        cache
            .as_ref()
            .and_then(|(keys, _)| keys.get(kid).cloned())
            .ok_or_else(|| "unknown signing key".to_string())
    }

    /// Checks a bearer token; the error says why (never echoes the token).
    pub async fn validate(&self, token: &str) -> Result<(), String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| "malformed token".to_string())?;
        let kid = header.kid.ok_or("token without a key id")?;
        let key = self.key(&kid).await?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&self.audiences);
        validation.set_issuer(&self.issuers);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 60;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| format!("token rejected: {e}"))?;
        let has_role = data.claims["roles"]
            .as_array()
            .is_some_and(|roles| roles.iter().any(|r| r.as_str() == Some(EVENT_GRID_ROLE)));
        if !has_role {
            return Err(format!("token lacks the {EVENT_GRID_ROLE} role"));
        }
        Ok(())
    }
}

/// The webhook server's state.
#[derive(Clone)]
pub struct WebhookState {
    /// The event pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Authentication.
    pub auth: Arc<WebhookAuth>,
}

/// The router: `POST /api/events`, `OPTIONS /api/events`, `GET /healthz`.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/events", post(events).options(abuse_protection))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Authenticates a request; `Err` is the 401 to send. Touches nothing else.
async fn authenticate(
    auth: &WebhookAuth,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), Response> {
    if let Some(key) = &auth.key {
        let presented = headers
            .get("x-autodeploy-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                query.and_then(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "code")
                        .map(|(_, v)| v.into_owned())
                })
            });
        if let Some(presented) = presented
            && key_matches(presented.as_bytes(), key.expose_secret().as_bytes())
        {
            return Ok(());
        }
    }
    if let Some(entra) = &auth.entra
        && let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    {
        match entra.validate(token.trim()).await {
            Ok(()) => return Ok(()),
            Err(why) => {
                tracing::warn!(reason = %why, "webhook request refused");
                return Err(json_response(
                    StatusCode::UNAUTHORIZED,
                    json!({ "error": format!("unauthorized: {why}") }),
                ));
            }
        }
    }
    tracing::warn!("webhook request refused: no valid credentials");
    Err(json_response(
        StatusCode::UNAUTHORIZED,
        json!({ "error": "unauthorized" }),
    ))
}

/// CloudEvents abuse protection: echo the requesting origin back.
async fn abuse_protection(
    State(state): State<WebhookState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = authenticate(&state.auth, &headers, query.as_deref()).await {
        return denied;
    }
    let origin = headers
        .get("webhook-request-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*")
        .to_string();
    (
        StatusCode::OK,
        [
            ("webhook-allowed-origin", origin),
            ("webhook-allowed-rate", "120".to_string()),
            ("allow", "POST".to_string()),
        ],
    )
        .into_response()
}

async fn events(
    State(state): State<WebhookState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = authenticate(&state.auth, &headers, query.as_deref()).await {
        return denied;
    }
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("delivery", delivery_id = %delivery_id);
    async move {
        let value: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": format!("the body is not JSON: {e}") }),
                );
            }
        };
        let kind = headers
            .get("aeg-event-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("Notification");
        if kind.eq_ignore_ascii_case("SubscriptionValidation") {
            let code = value
                .as_array()
                .and_then(|a| a.first())
                .and_then(|e| crate::event::get_ci(e.as_object()?, "data"))
                .and_then(|d| d.get("validationCode").or_else(|| d.get("ValidationCode")))
                .and_then(Value::as_str);
            return match code {
                Some(code) => {
                    tracing::info!("Event Grid subscription validated");
                    json_response(StatusCode::OK, json!({ "validationResponse": code }))
                }
                None => json_response(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "a SubscriptionValidation request without a validationCode" }),
                ),
            };
        }
        // An Event Grid array, a CloudEvents batch, or one CloudEvent / event.
        let events = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        let mut results = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let log = InvocationLog::new();
            let invocation = Invocation {
                id: format!("{delivery_id}#{i}"),
                execution: Execution::Send,
                trigger: "event",
                force: false,
            };
            let span = tracing::info_span!(
                "invocation",
                invocation_id = %invocation.id,
                event_id = tracing::field::Empty,
                model = tracing::field::Empty,
                version = tracing::field::Empty,
                rule = tracing::field::Empty,
                decision = tracing::field::Empty,
            );
            match state
                .pipeline
                .handle(event, &invocation, &log)
                .instrument(span)
                .await
            {
                Ok(handled) => results.push(handled.outcome),
                // Nothing durable holds the work: Event Grid must redeliver (the ledger makes the
                // events already handled in this batch duplicates next time).
                Err(PipelineError::Storage(e)) => {
                    return json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({ "error": format!("the ledger is unavailable: {e}") }),
                    );
                }
                Err(e @ PipelineError::Misconfigured(_)) => {
                    return json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({ "error": e.to_string() }),
                    );
                }
                Err(e @ PipelineError::Action(_)) => {
                    return json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({ "error": e.to_string() }),
                    );
                }
            }
        }
        json_response(StatusCode::OK, json!({ "results": results }))
    }
    .instrument(span)
    .await
}

/// Runs `Reconcile` every `interval` while this replica holds the leader lease (always, with an
/// in-memory ledger). Ends when `stop` resolves.
pub async fn reconcile_loop(
    pipeline: Arc<Pipeline>,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let holder = format!("replica-{}", uuid::Uuid::new_v4());
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        let leader = match pipeline
            .ledger()
            .lead("leader/reconcile", &holder, interval * 3)
            .await
        {
            Ok(leader) => leader,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the ledger for the leader lease");
                false
            }
        };
        if !leader {
            continue;
        }
        let log = InvocationLog::new();
        match crate::reconcile::reconcile(&pipeline, &log)
            .instrument(tracing::info_span!("reconcile", invocation_id = %holder))
            .await
        {
            Ok(summary) => tracing::info!(summary = %summary, "Reconcile pass"),
            Err(e) => tracing::warn!(error = %e, "Reconcile pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_in_constant_time_and_correctly() {
        assert!(key_matches(b"abc", b"abc"));
        assert!(!key_matches(b"abc", b"abd"));
        assert!(!key_matches(b"abc", b"abcd"));
        assert!(!key_matches(b"", b"a"));
    }
}
