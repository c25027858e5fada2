//! Who may call the webhook: the shared key or an Entra ID bearer token, checked before anything
//! else is touched.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::keys::{EntraValidator, TokenError};
use super::response::json_response;

/// Whether `presented` is the key, in constant time (`subtle`), so a wrong key's timing says
/// nothing about the right one. Both full lengths take part (as `u64`, never truncated), so the
/// key followed by padding is refused. Only the length can show, and it is public (at least 16).
pub(super) fn key_matches(presented: &[u8], key: &[u8]) -> bool {
    let same_length = (presented.len() as u64).ct_eq(&(key.len() as u64));
    // `subtle` compares slices of different lengths as unequal without reading them.
    let same_bytes = presented.ct_eq(key);
    (same_length & same_bytes).into()
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

/// Authenticates a request; `Err` is the response to send (`401`, or `503` when the signing keys
/// cannot be read). Touches nothing else.
pub(super) async fn authenticate(
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
        return match entra.validate(token.trim()).await {
            Ok(()) => Ok(()),
            Err(error @ TokenError::KeysUnavailable(_)) => {
                tracing::warn!(error = %error, "webhook request not authenticated: retry later");
                Err(json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": error.to_string() }),
                ))
            }
            Err(TokenError::Invalid(why)) => {
                tracing::warn!(reason = %why, "webhook request refused");
                Err(json_response(
                    StatusCode::UNAUTHORIZED,
                    json!({ "error": format!("unauthorized: {why}") }),
                ))
            }
        };
    }
    tracing::warn!("webhook request refused: no valid credentials");
    Err(json_response(
        StatusCode::UNAUTHORIZED,
        json!({ "error": "unauthorized" }),
    ))
}

impl WebhookAuth {
    /// Webhook mode's authentication: `AUTODEPLOY_WEBHOOK_KEY`, and/or Microsoft Entra ID with
    /// `AUTODEPLOY_WEBHOOK_TENANT_ID` + `AUTODEPLOY_WEBHOOK_AUDIENCE` (optional
    /// `AUTODEPLOY_WEBHOOK_ISSUER`, `AUTODEPLOY_WEBHOOK_OPENID_METADATA_URL`). Neither is an error.
    /// The signing keys are fetched through `http`.
    pub fn from_env(
        env: &dyn crate::env::Env,
        cloud: crate::azure::Cloud,
        http: &crate::http::Http,
    ) -> Result<Self, String> {
        let key = crate::env::read_secret(env, "AUTODEPLOY_WEBHOOK_KEY")?;
        if key.as_ref().is_some_and(|k| k.expose_secret().len() < 16) {
            return Err("AUTODEPLOY_WEBHOOK_KEY must be at least 16 characters".into());
        }
        let entra = match (env.get("AUTODEPLOY_WEBHOOK_TENANT_ID"), env.get("AUTODEPLOY_WEBHOOK_AUDIENCE")) {
            (Some(tenant), Some(audience)) => {
                let tenant = tenant.trim().to_string();
                let authority = cloud.authority_host();
                let issuers = match env.get("AUTODEPLOY_WEBHOOK_ISSUER") {
                    Some(list) => list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
                    // Event Grid's tokens are v1 by default; v2 when the app asks for them.
                    None => vec![format!("https://sts.windows.net/{tenant}/"), format!("{authority}/{tenant}/v2.0")],
                };
                let audiences = audience.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                let metadata_url = env
                    .get("AUTODEPLOY_WEBHOOK_OPENID_METADATA_URL")
                    .unwrap_or_else(|| format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration"));
                Some(EntraValidator::new(issuers, audiences, metadata_url, http.clone()))
            }
            (None, None) => None,
            _ => return Err("Entra ID authentication needs both AUTODEPLOY_WEBHOOK_TENANT_ID and AUTODEPLOY_WEBHOOK_AUDIENCE".into()),
        };
        if key.is_none() && entra.is_none() {
            return Err(
                "no authentication configured: set AUTODEPLOY_WEBHOOK_KEY (shared key) and/or AUTODEPLOY_WEBHOOK_TENANT_ID \
                 with AUTODEPLOY_WEBHOOK_AUDIENCE (Microsoft Entra ID)"
                    .into(),
            );
        }
        Ok(WebhookAuth { key, entra })
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

    #[test]
    fn the_key_followed_by_padding_is_refused() {
        let key = b"whk_0123456789abcdef";
        for pad in [1usize, 255, 256, 257, 512] {
            let mut presented = key.to_vec();
            presented.extend(std::iter::repeat_n(0u8, pad));
            assert!(!key_matches(&presented, key), "{pad} NUL bytes");
        }
    }
}
