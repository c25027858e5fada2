//! Uploads a code folder to the container a `startPendingUpload` answered with, as az ml does
//! (`_blob_storage_helper.py`): each file once, never overwriting an existing blob, then the
//! completion marker (`upload_status=completed`, `name`, `version`) on the indicator blob. The
//! container's SAS URL is used exactly as the service returned it: it carries its own
//! authorization, so no credential of ours is attached (the blob client gets none).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::{ClientOptions, ExponentialRetryOptions, RequestContent, RetryOptions};
use azure_core::http::{StatusCode, Transport, Url};
use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders as _, BlockBlobClientUploadOptions,
};
use azure_storage_blob::{BlobClient, BlobClientOptions};
use md5::{Digest as _, Md5};
use thiserror::Error;

use crate::http::Http;
use crate::ledger::blob::StorageTransport;

/// Longest single blob request (a file of a code folder is one request).
const UPLOAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an upload step did not complete.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum UploadError {
    /// Storage refused the SAS (403) or the container is gone: an operator must look.
    #[error("the upload container refused {blob}: HTTP {status}: {message}")]
    Refused {
        /// The blob.
        blob: String,
        /// HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
    /// Storage could not be reached or failed (5xx, timeouts): try again later.
    #[error("the upload container failed for {blob}: {message}")]
    Unavailable {
        /// The blob.
        blob: String,
        /// What happened.
        message: String,
    },
    /// The SAS URL is not one we can use.
    #[error("startPendingUpload answered an unusable container URL: {0}")]
    BadUrl(String),
    /// A local file could not be read.
    #[error("cannot read {path}: {message}")]
    Local {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

impl UploadError {
    /// Whether trying again later can succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, UploadError::Unavailable { .. })
    }
}

/// The container behind a pending upload's SAS URL.
pub struct SasContainer {
    url: Url,
    options: BlobClientOptions,
}

impl std::fmt::Debug for SasContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The query is the SAS: never print it.
        write!(
            f,
            "SasContainer({}{})",
            self.url.origin().ascii_serialization(),
            self.url.path()
        )
    }
}

impl SasContainer {
    /// The container at `sas_uri` (`https://acct.blob.core.windows.net/container?sv=…&sig=…`),
    /// reached through `http`.
    pub fn new(sas_uri: &str, http: &Http) -> Result<Self, UploadError> {
        let url = Url::parse(sas_uri).map_err(|_| UploadError::BadUrl(redact(sas_uri)))?;
        if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() {
            return Err(UploadError::BadUrl(redact(sas_uri)));
        }
        let client_options = ClientOptions {
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: azure_core::time::Duration::milliseconds(500),
                max_retries: 2,
                max_total_elapsed: azure_core::time::Duration::seconds(10),
                max_delay: azure_core::time::Duration::seconds(4),
            }),
            transport: Some(Transport::new(Arc::new(StorageTransport {
                http: http.clone(),
                timeout: UPLOAD_REQUEST_TIMEOUT,
            }))),
            ..ClientOptions::default()
        };
        Ok(Self {
            url,
            options: BlobClientOptions {
                client_options,
                ..BlobClientOptions::default()
            },
        })
    }

    /// The blob `name` (`scripts/lib/a.py`): each path segment percent-encoded, the SAS kept.
    fn blob(&self, name: &str) -> Result<BlobClient, UploadError> {
        let mut url = self.url.clone();
        url.path_segments_mut()
            .map_err(|_| UploadError::BadUrl(redact(self.url.as_str())))?
            .pop_if_empty()
            .extend(name.split('/'));
        // No credential: the SAS in the query is the authorization.
        BlobClient::new(url, None, Some(self.options.clone()))
            .map_err(|e| UploadError::BadUrl(e.to_string()))
    }

    /// Whether `indicator` already carries `upload_status=completed` (an earlier upload finished).
    pub async fn completed(&self, indicator: &str) -> Result<bool, UploadError> {
        match self.blob(indicator)?.get_properties(None).await {
            Ok(response) => Ok(response
                .metadata()
                .ok()
                .and_then(|m| m.get("upload_status").cloned())
                .is_some_and(|s| s == "completed")),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(false),
            Err(e) => Err(failure(indicator, &e)),
        }
    }

    /// Uploads `bytes` as `name` unless a blob of that name exists (`false` then): a resumed
    /// upload skips what an earlier attempt wrote, and nothing is ever overwritten.
    pub async fn put_new(&self, name: &str, bytes: Vec<u8>) -> Result<bool, UploadError> {
        let md5 = (!bytes.is_empty()).then(|| Md5::digest(&bytes).to_vec());
        let options = BlockBlobClientUploadOptions {
            blob_content_md5: md5,
            ..BlockBlobClientUploadOptions::default()
        }
        .if_not_exists();
        match self
            .blob(name)?
            .upload(RequestContent::from(bytes), Some(options))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(false),
            Err(e) => Err(failure(name, &e)),
        }
    }

    /// Marks the upload complete, as az ml does: metadata on the indicator blob.
    pub async fn mark_completed(
        &self,
        indicator: &str,
        asset_name: &str,
        asset_version: &str,
    ) -> Result<(), UploadError> {
        let metadata = HashMap::from([
            ("upload_status".to_string(), "completed".to_string()),
            ("name".to_string(), asset_name.to_string()),
            ("version".to_string(), asset_version.to_string()),
        ]);
        self.blob(indicator)?
            .set_metadata(&metadata, None)
            .await
            .map(|_| ())
            .map_err(|e| failure(indicator, &e))
    }
}

fn failure(blob: &str, e: &azure_core::Error) -> UploadError {
    let mut message = e.to_string();
    message.truncate(300);
    match e.http_status() {
        Some(status)
            if u16::from(status) < 500 && u16::from(status) != 408 && u16::from(status) != 429 =>
        {
            UploadError::Refused {
                blob: blob.to_string(),
                status: status.into(),
                message,
            }
        }
        _ => UploadError::Unavailable {
            blob: blob.to_string(),
            message,
        },
    }
}

/// A URL without its query (the SAS).
pub fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((head, _)) => format!("{head}?<SAS redacted>"),
        None => url.to_string(),
    }
}

/// Reads a file to upload.
pub fn read(path: &std::path::Path) -> Result<Vec<u8>, UploadError> {
    std::fs::read(path).map_err(|e| UploadError::Local {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
