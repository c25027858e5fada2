//! The container a `startPendingUpload` answered with, and the requests a code folder's upload
//! makes there, as az ml does (`_blob_storage_helper.py`): each file once, never overwriting an
//! existing blob (small files in one Put Blob, larger ones as Put Block + Put Block List), then
//! the completion marker (`upload_status=completed`, `name`, `version`) on the indicator blob.
//! The streaming of files through these requests is [`super::stream`]. The container's SAS URL
//! is used exactly as the service returned it: it carries its own authorization, so no credential
//! of ours is attached (the blob client gets none). It must be `https` (plain `http` only to a
//! loopback address, for tests): a SAS sent in clear text is readable by anyone on the way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::Bytes;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RequestContent, RetryOptions};
use azure_core::http::{StatusCode, Transport, Url};
use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders as _, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientUploadOptions, BlockListType, BlockLookupList,
};
use azure_storage_blob::{BlobClient, BlobClientOptions};
use md5::{Digest as _, Md5};
use thiserror::Error;

use crate::http::Http;
use crate::ledger::blob::StorageTransport;

/// Longest single blob request (one block, or one small file, of at most
/// [`super::stream::BLOCK_SIZE`]: 4 MiB in 30 s is about 1.1 Mbit/s).
pub const UPLOAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// A blob of that name is already in the container with other content than the file's.
    #[error(
        "{blob} is already in the upload container with other content; the code folder changed during its upload (replay the event)"
    )]
    Differs {
        /// The blob.
        blob: String,
    },
    /// A file's size or content is not what the plan hashed.
    #[error(
        "{path} changed since the event was planned; replay the event to deploy the current files"
    )]
    Changed {
        /// The file's blob name.
        path: String,
    },
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
#[derive(Clone)]
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
        if url.cannot_be_a_base() {
            return Err(UploadError::BadUrl(redact(sas_uri)));
        }
        if !(url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url))) {
            return Err(UploadError::BadUrl(format!(
                "{} (the SAS would travel in clear text: only https is used, and plain http only to a loopback address)",
                redact(sas_uri)
            )));
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

    /// Uploads `bytes` as `name` in one request unless a blob of that name exists: a resumed
    /// upload skips what an earlier attempt wrote (`false` then, once its Content-MD5 shows it
    /// holds the same bytes), and nothing is ever overwritten.
    pub async fn put_new(&self, name: &str, bytes: Bytes) -> Result<bool, UploadError> {
        let md5 = Md5::digest(&bytes).to_vec();
        let options = BlockBlobClientUploadOptions {
            blob_content_md5: (!bytes.is_empty()).then(|| md5.clone()),
            ..BlockBlobClientUploadOptions::default()
        }
        .if_not_exists();
        let blob = self.blob(name)?;
        match blob
            .upload(azure_core::http::Body::Bytes(bytes).into(), Some(options))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => {
                let there = blob
                    .get_properties(None)
                    .await
                    .map_err(|e| failure(name, &e))?;
                // An empty blob carries no MD5 (none was sent for it).
                let same = match there.content_md5().ok().flatten() {
                    Some(theirs) => theirs == md5,
                    None => {
                        there.content_length().ok().flatten() == Some(0)
                            && md5 == Md5::digest(b"").to_vec()
                    }
                };
                if same {
                    Ok(false)
                } else {
                    Err(UploadError::Differs {
                        blob: name.to_string(),
                    })
                }
            }
            Err(e) => Err(failure(name, &e)),
        }
    }

    /// The block ids of `name`, committed and staged (empty when the blob does not exist).
    pub async fn blocks(&self, name: &str) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>), UploadError> {
        let client = self.blob(name)?.block_blob_client();
        match client.get_block_list(BlockListType::All, None).await {
            Ok(response) => {
                let list = response.into_model().map_err(|e| failure(name, &e))?;
                let ids = |blocks: Option<Vec<azure_storage_blob::models::Block>>| {
                    blocks
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|b| b.name)
                        .collect::<Vec<_>>()
                };
                Ok((ids(list.committed_blocks), ids(list.uncommitted_blocks)))
            }
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok((Vec::new(), Vec::new())),
            Err(e) => Err(failure(name, &e)),
        }
    }

    /// Put Block: stages `bytes` as block `id` of `name`. (No transactional MD5, as the SDK
    /// sends none: the id already names the content, and TLS protects it on the way.)
    pub async fn stage(&self, name: &str, id: &[u8], bytes: Bytes) -> Result<(), UploadError> {
        let client = self.blob(name)?.block_blob_client();
        let length = bytes.len() as u64;
        client
            .stage_block(
                id,
                length,
                azure_core::http::Body::Bytes(bytes).into(),
                None,
            )
            .await
            .map(|_| ())
            .map_err(|e| failure(name, &e))
    }

    /// Put Block List: commits `ids` as `name` unless a blob of that name exists; one that
    /// exists is accepted only when it is made of the same blocks (a commit retried after an
    /// answer was lost), and never overwritten.
    pub async fn commit_new(&self, name: &str, ids: Vec<Vec<u8>>) -> Result<(), UploadError> {
        let client = self.blob(name)?.block_blob_client();
        let list = BlockLookupList {
            latest: Some(ids.clone()),
            ..BlockLookupList::default()
        };
        let body: RequestContent<BlockLookupList, azure_core::http::XmlFormat> = list
            .try_into()
            .map_err(|e: azure_core::Error| failure(name, &e))?;
        let options = BlockBlobClientCommitBlockListOptions {
            if_none_match: Some("*".into()),
            ..BlockBlobClientCommitBlockListOptions::default()
        };
        match client.commit_block_list(body, Some(options)).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => {
                let (committed, _) = self.blocks(name).await?;
                if committed == ids {
                    Ok(())
                } else {
                    Err(UploadError::Differs {
                        blob: name.to_string(),
                    })
                }
            }
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

/// `127.0.0.0/8`, `::1` or `localhost`.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A URL without its query (the SAS).
pub fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((head, _)) => format!("{head}?<SAS redacted>"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sas_is_used_only_over_https_or_to_loopback() {
        let http = Http::new();
        for (url, ok) in [
            ("https://acct.blob.core.windows.net/c?sig=x", true),
            ("http://127.0.0.1:10000/devstoreaccount1/c?sig=x", true),
            ("http://localhost:10000/devstoreaccount1/c?sig=x", true),
            ("http://[::1]:10000/devstoreaccount1/c?sig=x", true),
            ("http://acct.blob.core.windows.net/c?sig=x", false),
            ("http://10.0.0.1/c?sig=x", false),
            ("ftp://acct/c?sig=x", false),
        ] {
            let got = SasContainer::new(url, &http);
            assert_eq!(got.is_ok(), ok, "{url}");
            if let Err(e) = got {
                assert!(!e.to_string().contains("sig=x"), "{e}");
            }
        }
    }
}
