//! Azure access: which cloud, which credential, the Azure Resource Manager client ([`arm`]) and
//! the Azure ML resources read and changed through it ([`ml`]).
//!
//! Credentials come from the official `azure_identity` crate. It has no `DefaultAzureCredential`
//! any more, so the selection order below is ours (and documented in docs/azure-access.md); each credential
//! is wrapped in a [`CachedCredential`] so every kind, the Azure CLI included, costs one token per
//! audience per hour for the whole process.

pub mod arm;
pub mod batch;
pub mod ml;
pub mod monitor;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use azure_core::cloud::CloudConfiguration;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::ClientOptions;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::env::{Env, read_secret};

/// A token is renewed when less than this is left (the SDK's own margin is also 5 minutes).
const TOKEN_RENEW_MARGIN: time::Duration = time::Duration::minutes(5);

/// An Azure cloud (`AUTODEPLOY_CLOUD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Azure public cloud (default).
    Public,
    /// Azure Government.
    UsGov,
    /// Azure operated by 21Vianet (China).
    China,
}

impl Cloud {
    /// `AUTODEPLOY_CLOUD` (default public); an unknown cloud is a problem.
    pub fn from_env(env: &dyn Env, problems: &mut Vec<String>) -> Cloud {
        match env.get("AUTODEPLOY_CLOUD") {
            None => Cloud::Public,
            Some(raw) => Cloud::parse(&raw).unwrap_or_else(|e| {
                problems.push(e);
                Cloud::Public
            }),
        }
    }

    /// Parses `public`, `usgov` or `china` (also the SDK's names).
    pub fn parse(raw: &str) -> Result<Cloud, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "public" | "azurepublic" | "azurecloud" => Ok(Cloud::Public),
            "usgov" | "azuregovernment" | "azureusgovernment" => Ok(Cloud::UsGov),
            "china" | "azurechina" | "azurechinacloud" => Ok(Cloud::China),
            other => Err(format!(
                "AUTODEPLOY_CLOUD must be public, usgov or china, got {other:?}"
            )),
        }
    }

    /// The Azure Resource Manager endpoint.
    pub fn arm_endpoint(self) -> &'static str {
        match self {
            Cloud::Public => "https://management.azure.com",
            Cloud::UsGov => "https://management.usgovcloudapi.net",
            Cloud::China => "https://management.chinacloudapi.cn",
        }
    }

    /// The token scope for ARM (also the audience of Azure ML's MLflow API).
    pub fn arm_scope(self) -> String {
        format!("{}/.default", self.arm_endpoint())
    }

    /// The Microsoft Entra ID authority host.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::UsGov => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// The storage endpoint suffix (`{account}.blob.{suffix}`).
    pub fn storage_suffix(self) -> &'static str {
        match self {
            Cloud::Public => "core.windows.net",
            Cloud::UsGov => "core.usgovcloudapi.net",
            Cloud::China => "core.chinacloudapi.cn",
        }
    }

    /// The Azure ML regional API host suffix (`{region}.{suffix}`, e.g. MLflow tracking).
    pub fn azureml_host_suffix(self) -> &'static str {
        match self {
            Cloud::Public => "api.azureml.ms",
            Cloud::UsGov => "api.ml.azure.us",
            Cloud::China => "api.ml.azure.cn",
        }
    }

    /// The domain of managed online endpoints' scoring URIs (`{endpoint}.{region}.{suffix}`).
    pub fn inference_suffix(self) -> &'static str {
        match self {
            Cloud::Public => "inference.ml.azure.com",
            Cloud::UsGov => "inference.ml.azure.us",
            Cloud::China => "inference.ml.azure.cn",
        }
    }

    /// The token scope for Azure ML data-plane calls (scoring `AADToken` endpoints).
    pub fn ml_scope(self) -> &'static str {
        match self {
            Cloud::Public => "https://ml.azure.com/.default",
            Cloud::UsGov => "https://ml.azure.us/.default",
            Cloud::China => "https://ml.azure.cn/.default",
        }
    }

    /// The SDK's cloud configuration (authority host for the credentials).
    pub fn configuration(self) -> CloudConfiguration {
        match self {
            Cloud::Public => CloudConfiguration::AzurePublic,
            Cloud::UsGov => CloudConfiguration::AzureGovernment,
            Cloud::China => CloudConfiguration::AzureChina,
        }
    }
}

/// Which credential the process uses (`AUTODEPLOY_CREDENTIAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// App Service / Functions managed identity (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`), or the
    /// VM/IMDS endpoint elsewhere; `AZURE_CLIENT_ID` selects a user-assigned identity.
    ManagedIdentity,
    /// Workload identity federation (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`).
    WorkloadIdentity,
    /// A service principal secret (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`).
    ClientSecret,
    /// The developer's `az login` (local development).
    AzureCli,
}

impl CredentialKind {
    /// The setting value naming this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ManagedIdentity => "managed-identity",
            CredentialKind::WorkloadIdentity => "workload-identity",
            CredentialKind::ClientSecret => "client-secret",
            CredentialKind::AzureCli => "azure-cli",
        }
    }

    /// The documented selection: `AUTODEPLOY_CREDENTIAL` if set; else workload identity when a
    /// federated token file is configured; else a client secret when tenant, client id and secret
    /// are all set; else managed identity on App Service / Functions (`IDENTITY_ENDPOINT` or
    /// `MSI_ENDPOINT`); else the Azure CLI.
    pub fn select(env: &dyn Env) -> Result<CredentialKind, String> {
        if let Some(forced) = env.get("AUTODEPLOY_CREDENTIAL") {
            return match forced.trim() {
                "managed-identity" => Ok(CredentialKind::ManagedIdentity),
                "workload-identity" => Ok(CredentialKind::WorkloadIdentity),
                "client-secret" => Ok(CredentialKind::ClientSecret),
                "azure-cli" => Ok(CredentialKind::AzureCli),
                other => Err(format!(
                    "AUTODEPLOY_CREDENTIAL must be managed-identity, workload-identity, client-secret or azure-cli, got {other:?}"
                )),
            };
        }
        let has = |name: &str| env.get(name).is_some();
        Ok(if has("AZURE_FEDERATED_TOKEN_FILE") {
            CredentialKind::WorkloadIdentity
        } else if has("AZURE_TENANT_ID") && has("AZURE_CLIENT_ID") && has("AZURE_CLIENT_SECRET") {
            CredentialKind::ClientSecret
        } else if has("IDENTITY_ENDPOINT") || has("MSI_ENDPOINT") {
            CredentialKind::ManagedIdentity
        } else {
            CredentialKind::AzureCli
        })
    }
}

/// Builds the credential of `kind`, cached. Reads its settings from `env`; secrets are checked for
/// unresolved Key Vault references.
pub fn build_credential(
    kind: CredentialKind,
    env: &dyn Env,
    cloud: Cloud,
) -> Result<Arc<CachedCredential>, String> {
    let client_options = || ClientOptions {
        cloud: Some(Arc::new(cloud.configuration())),
        ..ClientOptions::default()
    };
    let fail =
        |e: azure_core::Error| format!("cannot create the {} credential: {e}", kind.as_str());
    let inner: Arc<dyn TokenCredential> = match kind {
        CredentialKind::ManagedIdentity => {
            use azure_identity::{
                ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
            };
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: env
                    .get("AZURE_CLIENT_ID")
                    .map(|id| UserAssignedId::ClientId(id.trim().to_string())),
                client_options: ClientOptions::default(),
            }))
            .map_err(fail)?
        }
        CredentialKind::WorkloadIdentity => {
            use azure_identity::{
                ClientAssertionCredentialOptions, WorkloadIdentityCredential,
                WorkloadIdentityCredentialOptions,
            };
            let require = |name: &str| {
                env.get(name)
                    .map(|v| v.trim().to_string())
                    .ok_or_else(|| format!("workload identity needs {name}"))
            };
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(),
                },
                client_id: Some(require("AZURE_CLIENT_ID")?),
                tenant_id: Some(require("AZURE_TENANT_ID")?),
                token_file_path: Some(PathBuf::from(require("AZURE_FEDERATED_TOKEN_FILE")?)),
            }))
            .map_err(fail)?
        }
        CredentialKind::ClientSecret => {
            use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
            let tenant = env
                .get("AZURE_TENANT_ID")
                .ok_or("a client secret credential needs AZURE_TENANT_ID")?;
            let client = env
                .get("AZURE_CLIENT_ID")
                .ok_or("a client secret credential needs AZURE_CLIENT_ID")?;
            let secret = read_secret(env, "AZURE_CLIENT_SECRET")?
                .ok_or("a client secret credential needs AZURE_CLIENT_SECRET")?;
            ClientSecretCredential::new(
                tenant.trim(),
                client.trim().to_string(),
                Secret::new(secret.expose_secret().to_string()),
                Some(ClientSecretCredentialOptions {
                    client_options: client_options(),
                }),
            )
            .map_err(fail)?
        }
        CredentialKind::AzureCli => azure_identity::AzureCliCredential::new(None).map_err(fail)?,
    };
    Ok(Arc::new(CachedCredential::new(kind, inner)))
}

/// A credential that keeps each audience's token until shortly before it expires. The SDK's
/// credentials mostly cache too, but the Azure CLI one spawns `az` on every call.
pub struct CachedCredential {
    kind: CredentialKind,
    inner: Arc<dyn TokenCredential>,
    tokens: tokio::sync::Mutex<HashMap<String, AccessToken>>,
}

impl std::fmt::Debug for CachedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedCredential")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl CachedCredential {
    /// Wraps `inner`.
    pub fn new(kind: CredentialKind, inner: Arc<dyn TokenCredential>) -> Self {
        Self {
            kind,
            inner,
            tokens: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Which kind it is.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }
}

#[async_trait::async_trait]
impl TokenCredential for CachedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let key = scopes.join(" ");
        // Held across the fetch: concurrent callers wait for one token instead of each fetching.
        let mut tokens = self.tokens.lock().await;
        if let Some(token) = tokens.get(&key)
            && token.expires_on - TOKEN_RENEW_MARGIN > OffsetDateTime::now_utc()
        {
            return Ok(token.clone());
        }
        let token = self.inner.get_token(scopes, options).await?;
        tokens.insert(key, token.clone());
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::test_env as env;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn clouds_table() {
        let cases = [
            (
                "public",
                "https://management.azure.com",
                "https://login.microsoftonline.com",
                "core.windows.net",
                "api.azureml.ms",
            ),
            (
                "usgov",
                "https://management.usgovcloudapi.net",
                "https://login.microsoftonline.us",
                "core.usgovcloudapi.net",
                "api.ml.azure.us",
            ),
            (
                "china",
                "https://management.chinacloudapi.cn",
                "https://login.chinacloudapi.cn",
                "core.chinacloudapi.cn",
                "api.ml.azure.cn",
            ),
        ];
        for (name, arm, authority, storage, aml) in cases {
            let cloud = Cloud::parse(name).unwrap();
            assert_eq!(cloud.arm_endpoint(), arm);
            assert_eq!(cloud.arm_scope(), format!("{arm}/.default"));
            assert_eq!(cloud.authority_host(), authority);
            assert_eq!(cloud.storage_suffix(), storage);
            assert_eq!(cloud.azureml_host_suffix(), aml);
        }
        assert!(Cloud::parse("mars").is_err());
    }

    #[test]
    fn credential_selection_order() {
        type Case<'a> = (Vec<(&'a str, &'a str)>, Result<CredentialKind, ()>);
        let cases: Vec<Case> = vec![
            (vec![], Ok(CredentialKind::AzureCli)),
            (
                vec![("IDENTITY_ENDPOINT", "http://x"), ("IDENTITY_HEADER", "h")],
                Ok(CredentialKind::ManagedIdentity),
            ),
            (
                vec![("MSI_ENDPOINT", "http://x")],
                Ok(CredentialKind::ManagedIdentity),
            ),
            (
                vec![
                    ("IDENTITY_ENDPOINT", "http://x"),
                    ("AZURE_TENANT_ID", "t"),
                    ("AZURE_CLIENT_ID", "c"),
                    ("AZURE_CLIENT_SECRET", "s"),
                ],
                Ok(CredentialKind::ClientSecret),
            ),
            (
                vec![("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")],
                Ok(CredentialKind::AzureCli),
            ),
            (
                vec![
                    ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
                    ("AZURE_TENANT_ID", "t"),
                    ("AZURE_CLIENT_ID", "c"),
                    ("AZURE_CLIENT_SECRET", "s"),
                ],
                Ok(CredentialKind::WorkloadIdentity),
            ),
            (
                vec![
                    ("AUTODEPLOY_CREDENTIAL", "azure-cli"),
                    ("IDENTITY_ENDPOINT", "http://x"),
                ],
                Ok(CredentialKind::AzureCli),
            ),
            (
                vec![("AUTODEPLOY_CREDENTIAL", "managed-identity")],
                Ok(CredentialKind::ManagedIdentity),
            ),
            (
                vec![("AUTODEPLOY_CREDENTIAL", "client-secret")],
                Ok(CredentialKind::ClientSecret),
            ),
            (
                vec![("AUTODEPLOY_CREDENTIAL", "workload-identity")],
                Ok(CredentialKind::WorkloadIdentity),
            ),
            (vec![("AUTODEPLOY_CREDENTIAL", "default")], Err(())),
        ];
        for (vars, expected) in cases {
            let got = CredentialKind::select(&env(&vars)).map_err(|_| ());
            assert_eq!(got, expected, "{vars:?}");
        }
    }

    #[test]
    fn client_secret_needs_all_three_settings_and_refuses_key_vault_leftovers() {
        let err = build_credential(
            CredentialKind::ClientSecret,
            &env(&[("AZURE_TENANT_ID", "t")]),
            Cloud::Public,
        )
        .unwrap_err();
        assert!(err.contains("AZURE_CLIENT_ID"), "{err}");
        let err = build_credential(
            CredentialKind::ClientSecret,
            &env(&[
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                (
                    "AZURE_CLIENT_SECRET",
                    "@Microsoft.KeyVault(VaultName=v;SecretName=s)",
                ),
            ]),
            Cloud::Public,
        )
        .unwrap_err();
        assert!(
            err.contains("AZURE_CLIENT_SECRET holds an unresolved Key Vault reference"),
            "{err}"
        );
    }

    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    #[async_trait::async_trait]
    impl TokenCredential for Counting {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(AccessToken::new(
                format!("token-{n}"),
                OffsetDateTime::now_utc() + time::Duration::hours(1),
            ))
        }
    }

    #[tokio::test]
    async fn one_token_per_scope_until_it_nears_expiry() {
        let inner = Arc::new(Counting::default());
        let cached = CachedCredential::new(CredentialKind::AzureCli, inner.clone());
        for _ in 0..5 {
            cached
                .get_token(&["https://management.azure.com/.default"], None)
                .await
                .unwrap();
        }
        cached
            .get_token(&["https://storage.azure.com/.default"], None)
            .await
            .unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
    }
}
