//! The process's one HTTP client: one connection pool for GitHub, ARM (and the gate's metric
//! lookups through it), the ledger's blob storage, notifications, the webhook's signing-key
//! fetcher and the rollout's smoke test.
//!
//! Settings that used to differ per client and how each is kept:
//! - Timeouts are per request ([`reqwest::RequestBuilder::timeout`]), with each caller's value.
//! - Redirects: never followed by the client (ARM and the scoring endpoint must not carry a token
//!   elsewhere; the key fetcher never followed them either). GitHub and notifications send through
//!   [`Http::send_following_redirects`], which follows a redirect only to the same scheme, host and
//!   port (GitHub's 307 for a renamed repository) and refuses any other, so neither a credential
//!   nor a payload ever reaches another host.
//! - Secrets: the [`Redactor`] every client turns upstream answers into text with.
//! - Connect timeout 5 s for all (the key fetcher had none, only its 10 s total).
//! - No default headers and no client user agent: each caller sets its own per request.
//! - Idle connections are closed after 60 s (GitHub's setting; the others had reqwest's 90 s).
//!
//! The Storage ledger sends through it too (as `azure_core`'s transport, with the storage timeout
//! on each request). Only the `azure_identity` credentials build their own client inside the SDK.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, REFERER, TRANSFER_ENCODING};
use reqwest::{Method, Request, Response, StatusCode, Url};

use crate::redact::Redactor;

/// Redirects followed (same origin only), as reqwest's default policy (`Policy::limited(10)`).
const MAX_REDIRECTS: usize = 10;

/// A handle on the process's one HTTP client; clones share it. Made once at start and passed to
/// every client type.
#[derive(Clone, Default)]
pub struct Http {
    // Built on first use, so process start (and the host's readiness probe) does not wait for the
    // TLS root store to load.
    client: Arc<OnceLock<reqwest::Client>>,
    redactor: Redactor,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("built", &self.client.get().is_some())
            .finish()
    }
}

/// Why [`Http::send_following_redirects`] got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request failed.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    /// More than ten redirects, or one to a scheme other than http(s).
    #[error("error following redirect to {0}: {1}")]
    Redirect(Url, &'static str),
    /// A redirect to another scheme, host or port: not followed, so nothing was sent there.
    #[error(
        "HTTP {status} redirects to {to}, another scheme, host or port; redirects are followed only \
         to the same origin, so nothing was sent there"
    )]
    LeavesOrigin {
        /// The redirect's status.
        status: u16,
        /// Where it pointed: scheme, host and port only (a path or query may hold a secret).
        to: String,
    },
}

impl Http {
    /// A handle; the client itself is built on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process's redactor: register secrets with it, and turn upstream answers into text
    /// through it.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The shared client.
    pub fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_secs(60))
                // Never follow redirects: a redirect could carry a token elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_else(|_| reqwest::Client::new())
        })
    }

    /// Sends `request` following redirects to the same scheme, host and port only, otherwise as
    /// reqwest's default policy does: at most ten; 301 and 302 turn a POST into a GET, 303 turns
    /// anything but HEAD into a GET (both without the body), 307 and 308 resend method and body;
    /// `Referer` is set. A redirect elsewhere is [`SendError::LeavesOrigin`]. The request's
    /// timeout bounds all hops together.
    pub async fn send_following_redirects(
        &self,
        mut request: Request,
    ) -> Result<Response, SendError> {
        let deadline = request.timeout().map(|t| Instant::now() + *t);
        let mut hops = 0;
        loop {
            if let Some(deadline) = deadline {
                *request.timeout_mut() = Some(deadline.saturating_duration_since(Instant::now()));
            }
            // A streamed body cannot be sent twice: then the redirect is the answer.
            let again = request.try_clone();
            let previous = request.url().clone();
            let response = self.client().execute(request).await?;
            let status = response.status();
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| previous.join(l).ok());
            let (Some(mut next), Some(target)) = (again, location) else {
                return Ok(response);
            };
            let method = match status {
                StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND
                    if next.method() == Method::POST =>
                {
                    Method::GET
                }
                StatusCode::SEE_OTHER if next.method() != Method::HEAD => Method::GET,
                StatusCode::MOVED_PERMANENTLY
                | StatusCode::FOUND
                | StatusCode::SEE_OTHER
                | StatusCode::TEMPORARY_REDIRECT
                | StatusCode::PERMANENT_REDIRECT => next.method().clone(),
                _ => return Ok(response),
            };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(SendError::Redirect(previous, "too many redirects"));
            }
            if !matches!(target.scheme(), "http" | "https") {
                return Err(SendError::Redirect(target, "URL scheme is not allowed"));
            }
            if target.scheme() != previous.scheme()
                || target.host_str() != previous.host_str()
                || target.port_or_known_default() != previous.port_or_known_default()
            {
                return Err(SendError::LeavesOrigin {
                    status: status.as_u16(),
                    to: origin(&target),
                });
            }
            if method != *next.method() || status == StatusCode::SEE_OTHER {
                *next.method_mut() = method;
                *next.body_mut() = None;
                for name in [
                    CONTENT_TYPE,
                    CONTENT_LENGTH,
                    CONTENT_ENCODING,
                    TRANSFER_ENCODING,
                ] {
                    next.headers_mut().remove(name);
                }
            }
            let headers = next.headers_mut();
            // As reqwest: not from https to http, and never with credentials or a fragment.
            if !(previous.scheme() == "https" && target.scheme() == "http") {
                let mut referer = previous.clone();
                let _ = referer.set_username("");
                let _ = referer.set_password(None);
                referer.set_fragment(None);
                if let Ok(value) = referer.as_str().parse() {
                    headers.insert(REFERER, value);
                }
            }
            *next.url_mut() = target;
            request = next;
        }
    }
}

/// A response body read up to a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped {
    /// The bytes read: all of them, or the first `limit`.
    pub bytes: Vec<u8>,
    /// Whether the body went on past the limit (the rest was not read).
    pub cut: bool,
}

/// Reads `response`'s body, at most `limit` bytes: an upstream that answers without end (or with
/// a huge document) costs at most `limit` of memory, never the whole answer.
pub async fn read_capped(mut response: Response, limit: usize) -> Result<Capped, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > limit {
            bytes.extend_from_slice(&chunk[..limit - bytes.len()]);
            return Ok(Capped { bytes, cut: true });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Capped { bytes, cut: false })
}

/// An upstream's answer: status, headers, content type and body, read up to a limit (the body's
/// read error kept: callers differ on whether a cut-off success may be retried).
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// `Content-Type`, when readable.
    pub content_type: Option<String>,
    /// The body (at most the limit), or why it could not be read.
    pub body: Result<Capped, reqwest::Error>,
}

impl Answer {
    /// Reads `response`, at most `limit` bytes of its body.
    pub async fn read(response: Response, limit: usize) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_capped(response, limit).await;
        Answer {
            status,
            headers,
            content_type,
            body,
        }
    }
}

/// `scheme://host[:port]` of `url`: what a message may show of a URL it did not choose.
pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_string, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn redirect(status: u16, to: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).insert_header("location", to)
    }

    fn post(http: &Http, url: String) -> Request {
        http.client()
            .post(url)
            .bearer_auth("secret")
            .body("{}")
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_307_resends_method_body_and_token_on_the_same_host() {
        let server = MockServer::start().await;
        Mock::given(path("/old"))
            .respond_with(redirect(307, "/new"))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/new"))
            .and(header("authorization", "Bearer secret"))
            .and(body_string("{}"))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        let http = Http::new();
        let response = http
            .send_following_redirects(post(&http, format!("{}/old", server.uri())))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn a_redirect_to_another_port_is_refused_and_nothing_is_sent_there() {
        let (first, second) = (MockServer::start().await, MockServer::start().await);
        Mock::given(path("/a"))
            .respond_with(redirect(307, &format!("{}/b?sig=secret", second.uri())))
            .mount(&first)
            .await;
        let http = Http::new();
        let sent = http
            .send_following_redirects(post(&http, format!("{}/a", first.uri())))
            .await;
        match sent {
            Err(SendError::LeavesOrigin { status: 307, to }) => assert_eq!(to, second.uri()),
            other => panic!("{other:?}"),
        }
        assert!(second.received_requests().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_client_itself_does_not_follow_and_loops_end_after_ten() {
        let server = MockServer::start().await;
        Mock::given(path("/loop"))
            .respond_with(redirect(301, "/loop"))
            .mount(&server)
            .await;
        let http = Http::new();
        let url = format!("{}/loop", server.uri());
        let plain = http.client().get(&url).send().await.unwrap();
        assert_eq!(plain.status(), StatusCode::MOVED_PERMANENTLY);
        let followed = http
            .send_following_redirects(http.client().get(&url).build().unwrap())
            .await;
        assert!(
            matches!(followed, Err(SendError::Redirect(_, "too many redirects"))),
            "{followed:?}"
        );
        assert_eq!(server.received_requests().await.unwrap().len(), 1 + 11);
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_the_limit_and_no_further() {
        let server = MockServer::start().await;
        Mock::given(path("/big"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 100_000]))
            .mount(&server)
            .await;
        let http = Http::new();
        let get = || http.client().get(format!("{}/big", server.uri())).send();
        let cut = read_capped(get().await.unwrap(), 1000).await.unwrap();
        assert_eq!((cut.bytes.len(), cut.cut), (1000, true));
        let whole = read_capped(get().await.unwrap(), 100_000).await.unwrap();
        assert_eq!((whole.bytes.len(), whole.cut), (100_000, false));
    }

    #[test]
    fn clones_share_one_client() {
        let http = Http::new();
        let other = http.clone();
        assert!(std::ptr::eq(http.client(), other.client()));
    }
}
