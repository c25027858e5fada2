//! Which storage the ledger uses: `AUTODEPLOY_STORAGE`, else the Function App's own
//! `AzureWebJobsStorage`, in the same forms the Functions runtime accepts.

use std::sync::Arc;

use azure_core::http::Url;
use secrecy::{ExposeSecret, SecretString};

use super::blob::{BlobAuth, BlobStore, SharedKeyPolicy};
use super::store::{MemoryStore, Store};
use crate::env::{Env, read_secret};

/// Azurite's well-known development account (public, documented by Microsoft).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Where the ledger lives.
#[derive(Clone)]
pub enum StorageTarget {
    /// In process; nothing survives a restart.
    Memory {
        /// True when chosen because nothing was configured (worth a warning).
        defaulted: bool,
    },
    /// A storage account with Shared Key (connection string, Azurite).
    SharedKey {
        /// Blob service endpoint.
        endpoint: Url,
        /// Account name.
        account: String,
        /// Account key (base64).
        key: SecretString,
        /// The setting it came from.
        source: String,
    },
    /// A storage account with Microsoft Entra ID (managed identity).
    Identity {
        /// Blob service endpoint (https).
        endpoint: Url,
        /// Client id of a user-assigned identity; system-assigned when absent.
        client_id: Option<String>,
        /// The setting prefix it came from.
        source: String,
    },
}

impl std::fmt::Debug for StorageTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl StorageTarget {
    /// A description without secrets.
    pub fn describe(&self) -> String {
        match self {
            StorageTarget::Memory { defaulted: true } => {
                "in-memory ledger (no AUTODEPLOY_STORAGE or AzureWebJobsStorage set)".into()
            }
            StorageTarget::Memory { defaulted: false } => "in-memory ledger".into(),
            StorageTarget::SharedKey {
                endpoint, source, ..
            } => format!("{endpoint} with Shared Key (from {source})"),
            StorageTarget::Identity {
                endpoint,
                client_id,
                source,
            } => format!(
                "{endpoint} with {} managed identity (from {source})",
                if client_id.is_some() {
                    "a user-assigned"
                } else {
                    "the system-assigned"
                }
            ),
        }
    }

    /// Reads the storage settings.
    pub fn from_env(env: &dyn Env, cloud: crate::azure::Cloud) -> Result<StorageTarget, String> {
        for prefix in ["AUTODEPLOY_STORAGE", "AzureWebJobsStorage"] {
            if let Some(value) = read_secret(env, prefix)? {
                if value.expose_secret().trim().eq_ignore_ascii_case("memory") {
                    return Ok(StorageTarget::Memory { defaulted: false });
                }
                return parse_connection_string(value.expose_secret(), prefix);
            }
            if let Some(target) = identity_from_env(env, prefix, cloud)? {
                return Ok(target);
            }
        }
        Ok(StorageTarget::Memory { defaulted: true })
    }

    /// Opens the store. `credential` serves the identity form (injected, so it can be tested).
    pub fn open(
        &self,
        container: &str,
        http: &crate::http::Http,
        credential: impl FnOnce(
            Option<&str>,
        )
            -> Result<Arc<dyn azure_core::credentials::TokenCredential>, String>,
    ) -> Result<Arc<dyn Store>, String> {
        Ok(match self {
            StorageTarget::Memory { .. } => Arc::new(MemoryStore::new()),
            StorageTarget::SharedKey {
                endpoint,
                account,
                key,
                ..
            } => Arc::new(BlobStore::new(
                endpoint,
                container,
                BlobAuth::SharedKey(SharedKeyPolicy::new(account, key.expose_secret())?),
                http,
            )?),
            StorageTarget::Identity {
                endpoint,
                client_id,
                ..
            } => Arc::new(BlobStore::new(
                endpoint,
                container,
                BlobAuth::Token(credential(client_id.as_deref())?),
                http,
            )?),
        })
    }
}

/// The managed identity credential the Functions runtime would use for an identity-based
/// connection (`__credential=managedidentity`, optional `__clientId`).
pub fn managed_identity(
    client_id: Option<&str>,
) -> Result<Arc<dyn azure_core::credentials::TokenCredential>, String> {
    use azure_identity::{
        ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    };
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: client_id.map(|id| UserAssignedId::ClientId(id.to_string())),
        ..ManagedIdentityCredentialOptions::default()
    };
    let credential = ManagedIdentityCredential::new(Some(options))
        .map_err(|e| format!("cannot create the managed identity credential for storage: {e}"))?;
    Ok(credential)
}

fn identity_from_env(
    env: &dyn Env,
    prefix: &str,
    cloud: crate::azure::Cloud,
) -> Result<Option<StorageTarget>, String> {
    let uri = env.get(&format!("{prefix}__blobServiceUri"));
    let account = env.get(&format!("{prefix}__accountName"));
    let endpoint = match (uri, account) {
        (Some(uri), _) => {
            Url::parse(uri.trim()).map_err(|_| format!("{prefix}__blobServiceUri is not a URL"))?
        }
        (None, Some(account)) => Url::parse(&format!(
            "https://{}.blob.{}",
            account.trim(),
            cloud.storage_suffix()
        ))
        .map_err(|_| format!("{prefix}__accountName is not a storage account name"))?,
        (None, None) => return Ok(None),
    };
    if endpoint.scheme() != "https" {
        return Err(format!(
            "{prefix}__blobServiceUri must be https: identity-based storage sends bearer tokens"
        ));
    }
    if let Some(kind) = env.get(&format!("{prefix}__credential"))
        && !kind.trim().eq_ignore_ascii_case("managedidentity")
    {
        return Err(format!(
            "{prefix}__credential must be managedidentity (got {:?})",
            kind.trim()
        ));
    }
    Ok(Some(StorageTarget::Identity {
        endpoint,
        client_id: env
            .get(&format!("{prefix}__clientId"))
            .map(|c| c.trim().to_string()),
        source: format!("{prefix}__*"),
    }))
}

/// Parses an Azure Storage connection string. Errors never quote the string (it holds the key).
pub fn parse_connection_string(text: &str, source: &str) -> Result<StorageTarget, String> {
    let mut pairs = std::collections::HashMap::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| {
            format!("{source} is not a storage connection string (expected Key=Value;…)")
        })?;
        pairs.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let get = |k: &str| pairs.get(k).cloned();

    if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        let proxy = get("developmentstorageproxyuri").unwrap_or_else(|| "http://127.0.0.1".into());
        let endpoint = Url::parse(&format!(
            "{}:10000/{DEV_ACCOUNT}",
            proxy.trim_end_matches('/')
        ))
        .map_err(|_| format!("{source}: DevelopmentStorageProxyUri is not a URL"))?;
        return Ok(StorageTarget::SharedKey {
            endpoint,
            account: DEV_ACCOUNT.into(),
            key: SecretString::from(DEV_KEY),
            source: source.into(),
        });
    }
    if get("sharedaccesssignature").is_some() {
        return Err(format!(
            "{source}: SAS connection strings are not supported; use an account key or an identity-based connection"
        ));
    }
    let account = get("accountname")
        .ok_or_else(|| format!("{source}: the connection string has no AccountName"))?;
    let key = get("accountkey")
        .ok_or_else(|| format!("{source}: the connection string has no AccountKey"))?;
    let endpoint = match get("blobendpoint") {
        Some(endpoint) => endpoint,
        None => {
            let protocol = get("defaultendpointsprotocol").unwrap_or_else(|| "https".into());
            let suffix = get("endpointsuffix").unwrap_or_else(|| "core.windows.net".into());
            format!("{protocol}://{account}.blob.{suffix}")
        }
    };
    let endpoint =
        Url::parse(&endpoint).map_err(|_| format!("{source}: BlobEndpoint is not a URL"))?;
    Ok(StorageTarget::SharedKey {
        endpoint,
        account,
        key: SecretString::from(key),
        source: source.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::test_env as env;

    #[test]
    fn development_storage_points_at_azurite() {
        let t = StorageTarget::from_env(
            &env(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]),
            crate::azure::Cloud::Public,
        )
        .unwrap();
        match t {
            StorageTarget::SharedKey {
                endpoint, account, ..
            } => {
                assert_eq!(endpoint.as_str(), "http://127.0.0.1:10000/devstoreaccount1");
                assert_eq!(account, "devstoreaccount1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn autodeploy_storage_wins_over_the_function_app_storage() {
        let t = StorageTarget::from_env(
            &env(&[
                ("AUTODEPLOY_STORAGE", "memory"),
                ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
            ]),
            crate::azure::Cloud::Public,
        )
        .unwrap();
        assert!(matches!(t, StorageTarget::Memory { defaulted: false }));
    }

    #[test]
    fn account_key_strings_derive_the_endpoint() {
        let t = parse_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0;EndpointSuffix=core.usgovcloudapi.net",
            "X",
        )
        .unwrap();
        assert!(
            t.describe()
                .starts_with("https://acct.blob.core.usgovcloudapi.net/"),
            "{}",
            t.describe()
        );
        assert!(!format!("{t:?}").contains("c2VjcmV0"));
        let explicit = parse_connection_string(
            "AccountName=devstoreaccount1;AccountKey=c2VjcmV0;BlobEndpoint=http://127.0.0.1:12345/devstoreaccount1;",
            "X",
        )
        .unwrap();
        assert!(
            explicit
                .describe()
                .starts_with("http://127.0.0.1:12345/devstoreaccount1")
        );
    }

    #[test]
    fn bad_strings_are_errors_that_never_quote_the_key() {
        let err =
            parse_connection_string("AccountName=a;AccountKey", "AUTODEPLOY_STORAGE").unwrap_err();
        assert!(
            err.contains("AUTODEPLOY_STORAGE") && !err.contains("AccountKey="),
            "{err}"
        );
        assert!(
            parse_connection_string("AccountName=a", "X")
                .unwrap_err()
                .contains("AccountKey")
        );
        assert!(
            parse_connection_string("BlobEndpoint=https://x;SharedAccessSignature=sv=1", "X")
                .unwrap_err()
                .contains("SAS")
        );
    }

    #[test]
    fn identity_based_connections_use_managed_identity() {
        let t = StorageTarget::from_env(
            &env(&[
                ("AzureWebJobsStorage__accountName", "prodledger"),
                ("AzureWebJobsStorage__credential", "managedidentity"),
                ("AzureWebJobsStorage__clientId", "1111-2222"),
            ]),
            crate::azure::Cloud::Public,
        )
        .unwrap();
        match &t {
            StorageTarget::Identity {
                endpoint,
                client_id,
                ..
            } => {
                assert_eq!(
                    endpoint.as_str(),
                    "https://prodledger.blob.core.windows.net/"
                );
                assert_eq!(client_id.as_deref(), Some("1111-2222"));
            }
            other => panic!("{other:?}"),
        }
        // The injected credential is what the store is built with.
        let mut asked_for = None;
        let store = t.open("autodeploy", &crate::http::Http::new(), |client_id| {
            asked_for = Some(client_id.map(str::to_string));
            Ok(Arc::new(FakeCredential))
        });
        assert!(store.is_ok());
        assert_eq!(asked_for, Some(Some("1111-2222".to_string())));
        assert!(
            store
                .unwrap()
                .describe()
                .contains("https://prodledger.blob.core.windows.net/autodeploy")
        );
    }

    #[test]
    fn identity_based_connections_refuse_plain_http() {
        let err = StorageTarget::from_env(
            &env(&[(
                "AzureWebJobsStorage__blobServiceUri",
                "http://127.0.0.1:10000/x",
            )]),
            crate::azure::Cloud::Public,
        )
        .unwrap_err();
        assert!(err.contains("https"), "{err}");
    }

    #[derive(Debug)]
    struct FakeCredential;

    #[async_trait::async_trait]
    impl azure_core::credentials::TokenCredential for FakeCredential {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            Ok(azure_core::credentials::AccessToken::new(
                "fake-token",
                azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
            ))
        }
    }
}
