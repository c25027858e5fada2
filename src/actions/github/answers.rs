//! How GitHub's answers are read: which are retried and after how long, and what a transport
//! failure or a final refusal says.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::actions::ActionError;
use crate::http::SendError;
use crate::redact::Redactor;
use crate::retry::retry_after;

/// A response we did not retry: success or a final refusal.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) content_type: Option<String>,
    pub(super) body: Vec<u8>,
    pub(super) attempts: u32,
}

/// `None` when the reply is final; else `Some` of the wait GitHub asked for (`None` inside: the
/// backoff's).
pub(super) fn retry_wait(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Option<Duration>> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let retry_after = retry_after(headers);
    let rate_limit_reset = match header("x-ratelimit-remaining") {
        Some("0") => header("x-ratelimit-reset")
            .and_then(|s| s.parse::<u64>().ok())
            .map(|reset| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                Duration::from_secs(reset.saturating_sub(now) + 1)
            }),
        _ => None,
    };
    let rate_limited = retry_after.is_some() || rate_limit_reset.is_some();
    let retryable = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (rate_limited || String::from_utf8_lossy(body).contains("rate limit")));
    if !retryable {
        return None;
    }
    Some(match (retry_after, rate_limit_reset) {
        (Some(wait), _) | (None, Some(wait)) => Some(wait),
        // GitHub: a secondary rate limit without headers means waiting at least a minute.
        (None, None)
            if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS =>
        {
            Some(Duration::from_secs(60))
        }
        (None, None) => None,
    })
}

/// A redirect to another host is final: following it would send the credential or the payload
/// where it does not belong, and trying again changes nothing.
pub(super) fn refused_redirect(e: &SendError) -> Option<ActionError> {
    match e {
        SendError::LeavesOrigin { status, to } => Some(ActionError::Rejected {
            status: *status,
            message: format!(
                "GitHub redirected to {to}, another scheme, host or port; redirects are followed only \
                 within GitHub's own origin, so nothing was sent there (is GITHUB_API_URL right?)"
            ),
        }),
        _ => None,
    }
}

pub(super) fn transport_error(e: &SendError, redactor: &Redactor) -> String {
    let e = match e {
        SendError::Transport(e) => e,
        redirect => return format!("a transport error ({redirect})"),
    };
    if e.is_timeout() {
        "a timeout".to_string()
    } else if e.is_connect() {
        "a connection error".to_string()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        format!(
            "a transport error ({})",
            redactor.redact(&text).chars().take(200).collect::<String>()
        )
    }
}

/// A final refusal with GitHub's message (redacted; a body without one is described by its
/// content type and a redacted excerpt) and a hint at the usual cause.
pub(super) fn refusal(reply: &Reply, redactor: &Redactor, doing: &str) -> ActionError {
    let status = reply.status;
    let mut message = serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .map(|m| redactor.redact(&m))
        .unwrap_or_else(|| redactor.excerpt(reply.content_type.as_deref(), &reply.body));
    if message.chars().count() > 300 {
        message = message.chars().take(300).collect::<String>() + "…";
    }
    let hint = match status.as_u16() {
        401 => {
            "the credential is invalid or expired: check GITHUB_TOKEN or the GitHub App id and key"
        }
        403 => {
            "the credential lacks permission: repository_dispatch needs Contents: write, workflow_dispatch needs Actions: write"
        }
        404 => {
            "the repository or workflow does not exist, or the credential cannot see it (is the GitHub App installed on it?)"
        }
        422 => {
            "GitHub rejected the request: does the workflow have a workflow_dispatch trigger, does the ref exist, are all inputs declared?"
        }
        _ => "unexpected answer",
    };
    ActionError::Rejected {
        status: status.as_u16(),
        message: format!("{doing}: {message} ({hint})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::github::client::BACKOFF;
    use crate::retry::Backoff;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_is_honoured() {
        let wait = retry_wait(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "3")]),
            b"",
        );
        assert_eq!(wait, Some(Some(Duration::from_secs(3))));
    }

    #[test]
    fn forbidden_without_rate_limit_is_final() {
        assert_eq!(
            retry_wait(
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                b"{\"message\":\"Resource not accessible\"}"
            ),
            None
        );
        assert!(
            retry_wait(
                StatusCode::FORBIDDEN,
                &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "0")]),
                b""
            )
            .is_some()
        );
    }

    #[test]
    fn client_errors_are_final_and_server_errors_retry() {
        for status in [400, 401, 404, 422] {
            assert_eq!(
                retry_wait(
                    StatusCode::from_u16(status).unwrap(),
                    &HeaderMap::new(),
                    b""
                ),
                None
            );
        }
        for status in [500, 502, 503] {
            assert!(
                retry_wait(
                    StatusCode::from_u16(status).unwrap(),
                    &HeaderMap::new(),
                    b""
                )
                .is_some()
            );
        }
    }

    #[test]
    fn backoff_starts_at_half_a_second_with_jitter_and_is_capped() {
        assert_eq!(
            BACKOFF,
            Backoff {
                first: Duration::from_millis(500),
                cap: Duration::from_secs(8),
                jitter: true
            }
        );
        // Without Retry-After or rate-limit headers a 5xx waits the backoff.
        assert_eq!(
            retry_wait(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b""),
            Some(None)
        );
        assert_eq!(
            retry_wait(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), b""),
            Some(Some(Duration::from_secs(60)))
        );
    }
}
