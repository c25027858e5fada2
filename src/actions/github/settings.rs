//! The GitHub client's settings: the API base URL and the credential (`GITHUB_TOKEN`, or a GitHub
//! App), read from the environment.

use secrecy::{ExposeSecret, SecretString};

use crate::config::DEFAULT_GITHUB_API_URL;
use crate::env::{Env, read_secret};

/// GitHub API base URL and credentials.
#[derive(Debug, Clone)]
pub struct GithubSettings {
    /// `GITHUB_API_URL`, without a trailing slash.
    pub api_url: String,
    /// The credential, or why it could not be read. `Ok(None)`: no credential configured.
    pub auth: Result<Option<GithubCredential>, String>,
}

/// A GitHub credential. `Debug` never shows the secret parts.
#[derive(Clone)]
pub enum GithubCredential {
    /// A personal access token (`GITHUB_TOKEN`).
    Token(SecretString),
    /// A GitHub App (`GITHUB_APP_ID`, `GITHUB_APP_PRIVATE_KEY[_FILE]`, `GITHUB_APP_INSTALLATION_ID`).
    App(GithubAppCredential),
}

/// A GitHub App identity: the app (or client) id, its RSA private key, and optionally the
/// installation to act as.
#[derive(Clone)]
pub struct GithubAppCredential {
    /// App id or client id: the JWT's `iss`.
    pub app_id: String,
    /// PEM text of the RSA private key.
    pub private_key_pem: SecretString,
    /// Fixed installation id; when absent it is looked up per repository.
    pub installation_id: Option<u64>,
}

impl std::fmt::Debug for GithubCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GithubCredential::Token(_) => f.write_str("GithubCredential::Token(<redacted>)"),
            GithubCredential::App(app) => f
                .debug_struct("GithubCredential::App")
                .field("app_id", &app.app_id)
                .field("installation_id", &app.installation_id)
                .finish_non_exhaustive(),
        }
    }
}

impl GithubSettings {
    /// Reads `GITHUB_API_URL` and the credential; a bad URL is a problem.
    pub fn from_env(env: &dyn Env, problems: &mut Vec<String>) -> Self {
        let github = GithubSettings {
            api_url: env
                .get("GITHUB_API_URL")
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .unwrap_or_else(|| DEFAULT_GITHUB_API_URL.to_string()),
            auth: read_github_credential(env),
        };
        if !github.api_url.starts_with("https://") && !github.api_url.starts_with("http://") {
            problems.push(format!(
                "GITHUB_API_URL must be an http(s) URL, got {:?}",
                github.api_url
            ));
        }
        github
    }

    /// Secrets read other than from a secret setting (the App key from its file), for the
    /// process's redactor; `GITHUB_TOKEN` and `GITHUB_APP_PRIVATE_KEY` are secret settings already.
    pub fn secrets(&self) -> Vec<SecretString> {
        match &self.auth {
            Ok(Some(GithubCredential::App(app))) => vec![app.private_key_pem.clone()],
            _ => Vec::new(),
        }
    }
}

fn read_github_credential(env: &dyn Env) -> Result<Option<GithubCredential>, String> {
    let token = read_secret(env, "GITHUB_TOKEN")?;
    let Some(app_id) = env.get("GITHUB_APP_ID").map(|v| v.trim().to_string()) else {
        return Ok(token.map(GithubCredential::Token));
    };
    if app_id.starts_with("@Microsoft.KeyVault(") {
        return Err("setting GITHUB_APP_ID holds an unresolved Key Vault reference".to_string());
    }
    let inline = read_secret(env, "GITHUB_APP_PRIVATE_KEY")?;
    let pem = match (inline, env.get("GITHUB_APP_PRIVATE_KEY_FILE")) {
        // App Service settings are single-line, so PEM text often arrives with literal `\n`.
        (Some(inline), _) => inline.expose_secret().replace("\\n", "\n"),
        (None, Some(path)) => std::fs::read_to_string(path.trim()).map_err(|e| {
            format!(
                "GITHUB_APP_PRIVATE_KEY_FILE: cannot read {:?}: {e}",
                path.trim()
            )
        })?,
        (None, None) => {
            return Err(
                "GITHUB_APP_ID is set but neither GITHUB_APP_PRIVATE_KEY nor GITHUB_APP_PRIVATE_KEY_FILE is"
                    .to_string(),
            );
        }
    };
    // Fail now, with the setting's name, rather than on the first event.
    jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
        "GITHUB_APP_PRIVATE_KEY(_FILE) is not an RSA private key in PEM form (PKCS#1 or PKCS#8)"
            .to_string()
    })?;
    let installation_id =
        match env.get("GITHUB_APP_INSTALLATION_ID") {
            None => None,
            Some(raw) => Some(raw.trim().parse::<u64>().map_err(|_| {
                format!("GITHUB_APP_INSTALLATION_ID must be a number, got {raw:?}")
            })?),
        };
    Ok(Some(GithubCredential::App(GithubAppCredential {
        app_id,
        private_key_pem: SecretString::from(pem),
        installation_id,
    })))
}
