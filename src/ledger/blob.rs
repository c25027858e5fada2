//! The ledger on Azure Blob Storage, through the official `azure_storage_blob` crate.
//!
//! The crate authenticates with Microsoft Entra ID tokens only (over https); it has no Shared Key
//! or connection-string support (Azure/azure-sdk-for-rust#2789). Azurite and connection strings
//! need Shared Key, so [`SharedKeyPolicy`] is the one hand-written piece: a per-try pipeline policy
//! that signs each request as the Storage service documents ("Authorize with Shared Key").

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{AsyncRawResponse, HttpClient, Transport};
use azure_core::http::{ClientOptions, Context, Request, RequestContent, StatusCode, Url};
use azure_core::http::{ExponentialRetryOptions, RetryOptions};
use azure_storage_blob::BlobContainerClient;
use azure_storage_blob::BlobContainerClientOptions;
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobContainerClientListBlobsOptions, BlockBlobClientUploadOptions,
};
use base64::Engine as _;
use futures_util::TryStreamExt as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use tokio::sync::OnceCell;

use super::store::{ETag, Store, StoreError};
use crate::http::Http;

/// Longest single storage request: the ledger sits on the invocation's critical path.
const STORAGE_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest storage operation, retries and token acquisition included.
const STORAGE_OPERATION_TIMEOUT: Duration = Duration::from_secs(8);

/// Bounds an operation: a token endpoint or an account that never answers must not hold the
/// invocation (Event Grid stops waiting after 30 s).
async fn bounded<T>(
    operation: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(STORAGE_OPERATION_TIMEOUT, operation)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no answer from storage within {}s",
                STORAGE_OPERATION_TIMEOUT.as_secs()
            )))
        })
}

/// The storage SDK's transport: the process's one HTTP client, with the storage request timeout on
/// every request (the shared client has no client-wide timeout; each caller sets its own). The
/// timeout covers the answer's head; a body that stalls is bounded by [`bounded`].
#[derive(Debug)]
pub(crate) struct StorageTransport {
    pub(crate) http: Http,
    /// Longest single request ([`STORAGE_REQUEST_TIMEOUT`] for the ledger; longer for uploads).
    pub(crate) timeout: Duration,
}

#[async_trait::async_trait]
impl HttpClient for StorageTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        match tokio::time::timeout(self.timeout, self.http.client().execute_request(request)).await
        {
            Ok(answer) => answer,
            // `Io`, as reqwest's own timeout was: the SDK's retry policy tries again.
            Err(_) => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Io,
                format!("no answer from storage within {}s", self.timeout.as_secs()),
            )),
        }
    }
}

/// Signs requests with an account key (Shared Key authorization, service version 2015-02-21+).
pub struct SharedKeyPolicy {
    account: String,
    key: SecretSlice<u8>,
}

impl std::fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl SharedKeyPolicy {
    /// A policy for `account` with its base64 `key`.
    pub fn new(account: &str, key_base64: &str) -> Result<Self, String> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_base64.trim())
            .map_err(|_| "the storage AccountKey is not valid base64".to_string())?;
        Ok(Self {
            account: account.to_string(),
            key: SecretSlice::from(key),
        })
    }

    /// The string to sign, per the Shared Key specification.
    fn string_to_sign(&self, request: &Request) -> String {
        let header = |name: &str| -> String {
            request
                .headers()
                .iter()
                .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str().to_string())
                .unwrap_or_default()
        };
        // Since 2015-02-21 a zero length is signed as an empty string.
        let content_length = match request.body().len() {
            Some(0) | None => String::new(),
            Some(n) => n.to_string(),
        };
        let mut ms_headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.as_str().trim().to_string(),
                )
            })
            .filter(|(k, _)| k.starts_with("x-ms-"))
            .collect();
        ms_headers.sort();
        let canonical_headers: String = ms_headers
            .iter()
            .map(|(k, v)| format!("{k}:{v}\n"))
            .collect();

        let url = request.url();
        let mut resource = format!("/{}{}", self.account, url.path());
        let mut params: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
            .collect();
        params.sort();
        let mut i = 0;
        while i < params.len() {
            let name = params[i].0.clone();
            let mut values = Vec::new();
            while i < params.len() && params[i].0 == name {
                values.push(params[i].1.clone());
                i += 1;
            }
            resource.push_str(&format!("\n{name}:{}", values.join(",")));
        }

        format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n{}{}",
            request.method().as_str(),
            header("content-encoding"),
            header("content-language"),
            content_length,
            header("content-md5"),
            header("content-type"),
            header("if-modified-since"),
            header("if-match"),
            header("if-none-match"),
            header("if-unmodified-since"),
            header("range"),
            canonical_headers,
            resource
        )
    }
}

#[async_trait::async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        request.insert_header("x-ms-date", httpdate::fmt_http_date(SystemTime::now()));
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.key.expose_secret()) else {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "cannot use the storage account key for signing",
            ));
        };
        mac.update(self.string_to_sign(request).as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{signature}", self.account),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// How the blob client authenticates.
pub enum BlobAuth {
    /// Shared Key (connection strings, Azurite).
    SharedKey(SharedKeyPolicy),
    /// Microsoft Entra ID tokens for `https://storage.azure.com/.default`.
    Token(Arc<dyn TokenCredential>),
}

/// A container in Azure Blob Storage.
pub struct BlobStore {
    container: BlobContainerClient,
    description: String,
    redactor: crate::redact::Redactor,
    container_ready: OnceCell<()>,
}

impl BlobStore {
    /// A store on `container` at the blob service `endpoint` (e.g.
    /// `https://acct.blob.core.windows.net` or `http://127.0.0.1:10000/devstoreaccount1`).
    /// Requests go through `http`, the process's one HTTP client.
    pub fn new(
        endpoint: &Url,
        container: &str,
        auth: BlobAuth,
        http: &Http,
    ) -> Result<Self, String> {
        let mut container_url = endpoint.clone();
        {
            let path = format!("{}/{container}", endpoint.path().trim_end_matches('/'));
            container_url.set_path(&path);
        }
        let mut client_options = ClientOptions {
            // A short retry inside the call: the invocation's budget is shared with GitHub.
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: azure_core::time::Duration::milliseconds(200),
                max_retries: 2,
                max_total_elapsed: azure_core::time::Duration::seconds(8),
                max_delay: azure_core::time::Duration::seconds(2),
            }),
            transport: Some(Transport::new(Arc::new(StorageTransport {
                http: http.clone(),
                timeout: STORAGE_REQUEST_TIMEOUT,
            }))),
            ..ClientOptions::default()
        };
        let credential = match auth {
            BlobAuth::SharedKey(policy) => {
                client_options.per_try_policies.push(Arc::new(policy));
                None
            }
            BlobAuth::Token(credential) => Some(credential),
        };
        let options = BlobContainerClientOptions {
            client_options,
            ..BlobContainerClientOptions::default()
        };
        let description = format!("Azure Blob container {container_url}");
        let container = BlobContainerClient::new(container_url, credential, Some(options))
            .map_err(|e| format!("cannot create the blob client: {e}"))?;
        Ok(Self {
            container,
            description,
            redactor: http.redactor().clone(),
            container_ready: OnceCell::new(),
        })
    }

    /// Creates the container on first use (not at start: storage being down must not delay the
    /// host's readiness probe).
    async fn ready(&self) -> Result<(), StoreError> {
        self.container_ready
            .get_or_try_init(|| async {
                match self.container.create(None).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
                    Err(e) => Err(self.unavailable(&e)),
                }
            })
            .await
            .map(|_| ())
    }
}

impl BlobStore {
    /// Storage's error, redacted (before it is cut, so no secret is half shown) and short.
    fn unavailable(&self, e: &azure_core::Error) -> StoreError {
        let message = match e.http_status() {
            Some(status) => format!("HTTP {}: {e}", u16::from(status)),
            None => e.to_string(),
        };
        StoreError::Unavailable(self.redactor.redact(&message).chars().take(300).collect())
    }
}

fn etag_of(etag: Option<&azure_core::http::Etag>) -> ETag {
    ETag(etag.map(|e| e.to_string()).unwrap_or_default())
}

impl BlobStore {
    async fn create_unbounded(&self, name: &str, body: Vec<u8>) -> Result<ETag, StoreError> {
        let options = BlockBlobClientUploadOptions::default().if_not_exists();
        match self.upload_json(name, body, options).await? {
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => {
                Err(StoreError::AlreadyExists)
            }
            written => written.map_err(|e| self.unavailable(&e)),
        }
    }

    /// A conditional JSON upload (create-only or If-Match); the caller reads the refusal.
    async fn upload_json(
        &self,
        name: &str,
        body: Vec<u8>,
        options: BlockBlobClientUploadOptions<'_>,
    ) -> Result<Result<ETag, azure_core::Error>, StoreError> {
        self.ready().await?;
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some("application/json".into()),
            ..options
        };
        Ok(self
            .container
            .blob_client(name)
            .upload(RequestContent::from(body), Some(options))
            .await
            .map(|result| etag_of(result.etag.as_ref())))
    }

    // Reads never create the container: `status` must work with read-only access, and a
    // mistyped container name must not be created by looking at it.
    async fn read_unbounded(&self, name: &str) -> Result<Option<(Vec<u8>, ETag)>, StoreError> {
        let options = BlobClientDownloadOptions {
            parallel: std::num::NonZero::new(1),
            ..BlobClientDownloadOptions::default()
        };
        match self
            .container
            .blob_client(name)
            .download(Some(options))
            .await
        {
            Ok(result) => {
                let etag = etag_of(result.properties.etag.as_ref());
                let body = result
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.unavailable(&e))?;
                Ok(Some((body.to_vec(), etag)))
            }
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(None),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    async fn replace_unbounded(
        &self,
        name: &str,
        body: Vec<u8>,
        etag: &ETag,
    ) -> Result<ETag, StoreError> {
        let options = BlockBlobClientUploadOptions {
            if_match: Some(etag.0.clone().into()),
            ..BlockBlobClientUploadOptions::default()
        };
        match self.upload_json(name, body, options).await? {
            Ok(etag) => Ok(etag),
            Err(e)
                if matches!(
                    e.http_status(),
                    Some(StatusCode::PreconditionFailed)
                        | Some(StatusCode::NotFound)
                        | Some(StatusCode::Conflict)
                ) =>
            {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    async fn put_unbounded(&self, name: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.ready().await?;
        self.container
            .blob_client(name)
            .upload(RequestContent::from(body), None)
            .await
            .map(|_| ())
            .map_err(|e| self.unavailable(&e))
    }

    async fn delete_unbounded(&self, name: &str) -> Result<(), StoreError> {
        match self.container.blob_client(name).delete(None).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(()),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    async fn list_unbounded(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(prefix.to_string()),
            maxresults: Some(limit.clamp(1, 5000) as i32),
            ..BlobContainerClientListBlobsOptions::default()
        };
        let mut names = Vec::new();
        let mut items = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| self.unavailable(&e))?;
        while names.len() < limit {
            match items.try_next().await {
                Ok(Some(item)) => {
                    if let Some(name) = item.name {
                        names.push(name);
                    }
                }
                Ok(None) => break,
                // No container yet: nothing was ever written.
                Err(e) if e.http_status() == Some(StatusCode::NotFound) => break,
                Err(e) => return Err(self.unavailable(&e)),
            }
        }
        Ok(names)
    }
}

#[async_trait::async_trait]
impl Store for BlobStore {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn is_durable(&self) -> bool {
        true
    }

    async fn create(&self, name: &str, body: Vec<u8>) -> Result<ETag, StoreError> {
        bounded(self.create_unbounded(name, body)).await
    }

    async fn read(&self, name: &str) -> Result<Option<(Vec<u8>, ETag)>, StoreError> {
        bounded(self.read_unbounded(name)).await
    }

    async fn replace(&self, name: &str, body: Vec<u8>, etag: &ETag) -> Result<ETag, StoreError> {
        bounded(self.replace_unbounded(name, body, etag)).await
    }

    async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), StoreError> {
        bounded(self.put_unbounded(name, body)).await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        bounded(self.delete_unbounded(name)).await
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        bounded(self.list_unbounded(prefix, limit)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::Method;

    #[test]
    fn string_to_sign_follows_the_shared_key_layout() {
        let policy = SharedKeyPolicy::new("devstoreaccount1", "AAAA").unwrap();
        let url = Url::parse("http://127.0.0.1:10000/devstoreaccount1/autodeploy/records/a.json?comp=list&restype=container").unwrap();
        let mut request = Request::new(url, Method::Put);
        request.insert_header("x-ms-version", "2025-11-05");
        request.insert_header("x-ms-date", "Thu, 26 Nov 2026 10:00:00 GMT");
        request.insert_header("if-none-match", "*");
        request.insert_header("content-type", "application/json");
        request.set_body(b"{}".to_vec());
        assert_eq!(
            policy.string_to_sign(&request),
            "PUT\n\n\n2\n\napplication/json\n\n\n\n*\n\n\nx-ms-date:Thu, 26 Nov 2026 10:00:00 GMT\nx-ms-version:2025-11-05\n\
             /devstoreaccount1/devstoreaccount1/autodeploy/records/a.json\ncomp:list\nrestype:container"
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let policy = SharedKeyPolicy::new("acct", "c2VjcmV0LWtleQ==").unwrap();
        assert!(!format!("{policy:?}").contains("c2VjcmV0"));
    }
}
