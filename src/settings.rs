//! Environment (Function App settings) → typed [`Settings`], read once at start.
//!
//! Settings that are merely *wrong* (an unresolved Key Vault reference, an unparsable number) do not
//! stop the process: `serve` must still answer the host's readiness probe, or the host restarts us
//! three times and shuts the whole Function App down. Such problems are collected in
//! [`Settings::problems`] (or inside the GitHub auth setting) and reported on every invocation.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// Where settings come from: the process environment in production, a map in tests (so tests never
/// call the `unsafe` `set_var`).
pub trait Env {
    /// The value of `name`, if set. Empty values count as unset.
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name).filter(|v| !v.trim().is_empty())
    }
}

/// Structured log output format (`AUTODEPLOY_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default; Application Insights parses it).
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

/// What `serve` prints on stdout under the Functions host (`AUTODEPLOY_LOG_STDOUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStdout {
    /// One summary line per invocation (the detail is in `Logs`); warnings and errors on stderr.
    Summary,
    /// Every line on stdout, as before the summary (for people who tail the process).
    All,
}

/// Default total time budget for one invocation's outbound retries: Event Grid gives up waiting
/// after 30 s, and a late answer means a duplicate delivery.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(20);

/// Default GitHub REST API base URL.
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// Every typed setting of the process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`: the loopback port the Functions host talks to.
    pub port: u16,
    /// `AUTODEPLOY_CONFIG`: path of the rules file.
    pub config_path: PathBuf,
    /// `AUTODEPLOY_PAUSED`: decide and log, act on nothing.
    pub paused: bool,
    /// `AUTODEPLOY_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `AUTODEPLOY_LOG_STDOUT`.
    pub log_stdout: LogStdout,
    /// `AUTODEPLOY_RETRY_BUDGET_SECS`.
    pub retry_budget: Duration,
    /// GitHub endpoint and credentials.
    pub github: GithubSettings,
    /// Where the ledger lives (`AUTODEPLOY_STORAGE`, else `AzureWebJobsStorage`), or why it
    /// could not be read.
    pub storage: Result<crate::ledger::connection::StorageTarget, String>,
    /// `AUTODEPLOY_CONTAINER`.
    pub container: String,
    /// `AUTODEPLOY_CLAIM_TIMEOUT_SECS`, `AUTODEPLOY_RETRY_FIRST_DELAY_SECS`, `AUTODEPLOY_GIVE_UP_AFTER`.
    pub ledger: crate::ledger::LedgerOptions,
    /// `AUTODEPLOY_CLOUD`, `AUTODEPLOY_ARM_ENDPOINT`, `AUTODEPLOY_ARM_API_VERSION`.
    pub arm: crate::azure::arm::ArmSettings,
    /// The process's Azure credential (`AUTODEPLOY_CREDENTIAL` or the documented order), or why
    /// it could not be created. Built once: its token cache is what keeps us to one token per hour.
    pub credential: Result<std::sync::Arc<crate::azure::CachedCredential>, String>,
    /// Problems found while reading settings; each fails every invocation until fixed.
    pub problems: Vec<String>,
    /// Settings that work but are risky; printed at start.
    pub warnings: Vec<String>,
    /// `AUTODEPLOY_RECONCILE_INTERVAL_SECS`: webhook mode's internal Reconcile timer.
    pub reconcile_interval: Duration,
    /// `AUTODEPLOY_WEBHOOK_DEADLINE_SECS` (default 25, at least 1): webhook mode's deadline for one
    /// delivery (Event Grid waits 30 s); what is not finished by then is left to `Reconcile`.
    pub webhook_deadline: Duration,
    /// `AUTODEPLOY_MIN_STEP_SECS` (default 1): the shortest wait between two rollout steps, so a
    /// rollout never spins on ARM. Tests set 0.
    pub min_step: Duration,
    /// Every secret value read ([`crate::redact::loaded_secrets`]), for the process's redactor.
    pub secrets: Vec<SecretString>,
}

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

impl Settings {
    /// Reads every setting from `env`. Never fails: problems are collected (see the module docs).
    pub fn from_env(env: &dyn Env) -> Settings {
        let mut problems = Vec::new();

        let port = match env.get("FUNCTIONS_CUSTOMHANDLER_PORT") {
            None => 0,
            Some(raw) => raw.trim().parse::<u16>().unwrap_or_else(|_| {
                problems.push(format!(
                    "FUNCTIONS_CUSTOMHANDLER_PORT must be a port number, got {raw:?}"
                ));
                0
            }),
        };
        let config_path = env
            .get("AUTODEPLOY_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("autodeploy.yml"));
        let paused = match env.get("AUTODEPLOY_PAUSED") {
            None => false,
            Some(raw) => parse_bool(&raw).unwrap_or_else(|| {
                // Unknown value: failing safe means pausing, and saying so.
                problems.push(format!(
                    "AUTODEPLOY_PAUSED must be true or false, got {raw:?}; treating it as true"
                ));
                true
            }),
        };
        let log_format = match env.get("AUTODEPLOY_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                problems.push(format!(
                    "AUTODEPLOY_LOG_FORMAT must be json or pretty, got {other:?}"
                ));
                LogFormat::Json
            }
        };
        let mut warnings = Vec::new();
        let log_stdout = match env.get("AUTODEPLOY_LOG_STDOUT").as_deref().map(str::trim) {
            None | Some("summary") => LogStdout::Summary,
            Some("all") => LogStdout::All,
            Some(other) => {
                // Only where lines go: not worth failing invocations for.
                warnings.push(format!(
                    "AUTODEPLOY_LOG_STDOUT must be all or summary, got {other:?}; using summary"
                ));
                LogStdout::Summary
            }
        };
        let retry_budget = match env.get("AUTODEPLOY_RETRY_BUDGET_SECS") {
            None => DEFAULT_RETRY_BUDGET,
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(secs) if (0.0..=3600.0).contains(&secs) => Duration::from_secs_f64(secs),
                _ => {
                    problems.push(format!(
                        "AUTODEPLOY_RETRY_BUDGET_SECS must be a number of seconds (0-3600), got {raw:?}"
                    ));
                    DEFAULT_RETRY_BUDGET
                }
            },
        };
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

        let defaults = crate::ledger::LedgerOptions::default();
        let mut duration = |name: &str, default: Duration| {
            match env.get(name) {
            None => default,
            Some(raw) => parse_duration(&raw).unwrap_or_else(|| {
                problems.push(format!(
                    "{name} must be a duration such as 90s, 10m, 24h or 1d (or a number of seconds), got {raw:?}"
                ));
                default
            }),
        }
        };
        let ledger = crate::ledger::LedgerOptions {
            claim_timeout: duration("AUTODEPLOY_CLAIM_TIMEOUT_SECS", defaults.claim_timeout),
            first_retry_delay: duration(
                "AUTODEPLOY_RETRY_FIRST_DELAY_SECS",
                defaults.first_retry_delay,
            ),
            give_up_after: duration("AUTODEPLOY_GIVE_UP_AFTER", defaults.give_up_after),
        };
        let reconcile_interval = duration(
            "AUTODEPLOY_RECONCILE_INTERVAL_SECS",
            Duration::from_secs(60),
        );
        let min_step = duration("AUTODEPLOY_MIN_STEP_SECS", Duration::from_secs(1));
        let webhook_deadline = duration(
            "AUTODEPLOY_WEBHOOK_DEADLINE_SECS",
            crate::webhook::DEFAULT_DEADLINE,
        );
        let container = env
            .get("AUTODEPLOY_CONTAINER")
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|| "autodeploy".to_string());
        let container_ok = (3..=63).contains(&container.len())
            && container
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !container.starts_with('-')
            && !container.ends_with('-')
            && !container.contains("--");
        if !container_ok {
            problems.push(format!(
                "AUTODEPLOY_CONTAINER {container:?} is not a valid blob container name (3-63 lowercase letters, digits and single hyphens)"
            ));
        }
        let cloud = match env.get("AUTODEPLOY_CLOUD") {
            None => crate::azure::Cloud::Public,
            Some(raw) => crate::azure::Cloud::parse(&raw).unwrap_or_else(|e| {
                problems.push(e);
                crate::azure::Cloud::Public
            }),
        };
        let arm = crate::azure::arm::ArmSettings {
            cloud,
            endpoint: env
                .get("AUTODEPLOY_ARM_ENDPOINT")
                .map(|e| e.trim().trim_end_matches('/').to_string())
                .unwrap_or_else(|| cloud.arm_endpoint().to_string()),
            api_version: env
                .get("AUTODEPLOY_ARM_API_VERSION")
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| crate::azure::arm::DEFAULT_API_VERSION.to_string()),
            budget: retry_budget,
        };
        let credential = crate::azure::CredentialKind::select(env)
            .and_then(|kind| crate::azure::build_credential(kind, env, cloud));
        let storage = crate::ledger::connection::StorageTarget::from_env(env, cloud);
        if retry_budget.is_zero() {
            problems.push("AUTODEPLOY_RETRY_BUDGET_SECS must be more than 0".into());
        } else if retry_budget > Duration::from_secs(25) {
            warnings.push(format!(
                "AUTODEPLOY_RETRY_BUDGET_SECS is {}s: Event Grid stops waiting after 30 s and then delivers the event again",
                retry_budget.as_secs_f32()
            ));
        }
        warnings.extend(plain_http_warnings(env));
        if ledger.claim_timeout < retry_budget + Duration::from_secs(30) {
            warnings.push(format!(
                "AUTODEPLOY_CLAIM_TIMEOUT_SECS ({}s) is shorter than the retry budget plus 30 s: a slow but live attempt could be taken over and sent twice",
                ledger.claim_timeout.as_secs_f32()
            ));
        }
        let secrets = crate::redact::loaded_secrets(env, &github.auth);

        Settings {
            port,
            config_path,
            paused,
            log_format,
            log_stdout,
            retry_budget,
            github,
            storage,
            container,
            ledger,
            arm,
            credential,
            problems,
            warnings,
            reconcile_interval: reconcile_interval.max(Duration::from_secs(1)),
            webhook_deadline: webhook_deadline.max(Duration::from_secs(1)),
            min_step,
            secrets,
        }
    }
}

/// Settings naming a URL that receives our credentials or vouches for a caller's: plain `http://`
/// there exposes them (or lets anyone vouch) on the network. Allowed, with a warning, except on
/// loopback addresses (local testing, fakes).
const CREDENTIAL_URLS: &[&str] = &[
    "GITHUB_API_URL",
    "AUTODEPLOY_ARM_ENDPOINT",
    "AUTODEPLOY_WEBHOOK_OPENID_METADATA_URL",
    "AZURE_AUTHORITY_HOST",
];

fn plain_http_warnings(env: &dyn Env) -> Vec<String> {
    CREDENTIAL_URLS
        .iter()
        .filter_map(|name| {
            let raw = env.get(name)?;
            let url = reqwest::Url::parse(raw.trim()).ok()?;
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            (url.scheme() == "http" && !loopback).then(|| {
                format!(
                    "{name} is plain http ({}): credentials sent or vouched for there cross the network unencrypted; use https",
                    url.host_str().unwrap_or_default()
                )
            })
        })
        .collect()
}

/// Parses `90`, `90s`, `10m`, `24h` or `1d`.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let s = raw.trim().to_ascii_lowercase();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s.as_str(), "s"),
    };
    let value: f64 = number.trim().parse().ok()?;
    let factor = match unit.trim() {
        "ms" => 0.001,
        "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        _ => return None,
    };
    let secs = value * factor;
    (0.0..1e9)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

/// Webhook mode's authentication: `AUTODEPLOY_WEBHOOK_KEY`, and/or Microsoft Entra ID with
/// `AUTODEPLOY_WEBHOOK_TENANT_ID` + `AUTODEPLOY_WEBHOOK_AUDIENCE` (optional
/// `AUTODEPLOY_WEBHOOK_ISSUER`, `AUTODEPLOY_WEBHOOK_OPENID_METADATA_URL`). Neither is an error.
/// The signing keys are fetched through `http`.
pub fn webhook_auth(
    env: &dyn Env,
    cloud: crate::azure::Cloud,
    http: &crate::http::Http,
) -> Result<crate::webhook::WebhookAuth, String> {
    let key = read_secret(env, "AUTODEPLOY_WEBHOOK_KEY")?;
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
            Some(crate::webhook::EntraValidator::new(issuers, audiences, metadata_url, http.clone()))
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
    Ok(crate::webhook::WebhookAuth { key, entra })
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Reads a secret-bearing setting. An App Service Key Vault reference that the platform could not
/// resolve arrives verbatim (`@Microsoft.KeyVault(...)`); using it as a token would only produce a
/// confusing 401 later, so it is an error that names the setting (never its value).
pub fn read_secret(env: &dyn Env, name: &str) -> Result<Option<SecretString>, String> {
    match env.get(name) {
        None => Ok(None),
        Some(value) if value.trim_start().starts_with("@Microsoft.KeyVault(") => Err(format!(
            "setting {name} holds an unresolved Key Vault reference: the Function App could not read \
             the secret (check the reference, and that the app's identity may read secrets in that vault)"
        )),
        Some(value) => Ok(Some(SecretString::from(value.trim().to_string()))),
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

/// A map as an [`Env`], for tests (tests never call the `unsafe` `set_var`).
#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::test_env as env;

    #[test]
    fn log_stdout_is_summary_unless_all_and_a_bad_value_only_warns() {
        let stdout = |v: &str| Settings::from_env(&env(&[("AUTODEPLOY_LOG_STDOUT", v)]));
        assert_eq!(Settings::from_env(&env(&[])).log_stdout, LogStdout::Summary);
        assert_eq!(stdout("all").log_stdout, LogStdout::All);
        assert_eq!(stdout("summary").log_stdout, LogStdout::Summary);
        let bad = stdout("everything");
        assert_eq!(bad.log_stdout, LogStdout::Summary);
        assert!(bad.problems.is_empty(), "{:?}", bad.problems);
        assert!(
            bad.warnings
                .iter()
                .any(|w| w.contains("AUTODEPLOY_LOG_STDOUT")),
            "{:?}",
            bad.warnings
        );
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = Settings::from_env(&env(&[]));
        assert_eq!(s.config_path, PathBuf::from("autodeploy.yml"));
        assert!(!s.paused);
        assert_eq!(s.retry_budget, DEFAULT_RETRY_BUDGET);
        assert_eq!(s.github.api_url, DEFAULT_GITHUB_API_URL);
        assert!(matches!(s.github.auth, Ok(None)));
        assert!(s.problems.is_empty());
    }

    #[test]
    fn unresolved_key_vault_reference_is_an_error_naming_the_setting() {
        let s = Settings::from_env(&env(&[(
            "GITHUB_TOKEN",
            "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/gh/)",
        )]));
        let err = s.github.auth.unwrap_err();
        assert!(err.contains("GITHUB_TOKEN"), "{err}");
        assert!(!err.contains("kv.vault.azure.net"), "{err}");
    }

    #[test]
    fn plain_http_to_a_credential_url_is_a_warning_except_on_loopback() {
        let s = Settings::from_env(&env(&[
            ("GITHUB_API_URL", "http://ghe.example.com/api/v3"),
            ("AUTODEPLOY_ARM_ENDPOINT", "http://127.0.0.1:4000"),
            (
                "AUTODEPLOY_WEBHOOK_OPENID_METADATA_URL",
                "http://localhost:9/openid",
            ),
            ("AZURE_AUTHORITY_HOST", "http://login.example.com"),
        ]));
        let warned: Vec<&str> = s
            .warnings
            .iter()
            .filter(|w| w.contains("plain http"))
            .map(|w| w.split(' ').next().unwrap())
            .collect();
        assert_eq!(warned, ["GITHUB_API_URL", "AZURE_AUTHORITY_HOST"]);
        assert!(s.problems.is_empty(), "allowed: {:?}", s.problems);
    }

    #[test]
    fn token_debug_is_redacted() {
        let s = Settings::from_env(&env(&[("GITHUB_TOKEN", "ghp_supersecret")]));
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("ghp_supersecret"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn app_without_key_is_an_error() {
        let s = Settings::from_env(&env(&[("GITHUB_APP_ID", "123")]));
        assert!(
            s.github
                .auth
                .unwrap_err()
                .contains("GITHUB_APP_PRIVATE_KEY")
        );
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172800)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5 weeks"), None);
    }

    #[test]
    fn bad_numbers_become_problems_not_crashes() {
        let s = Settings::from_env(&env(&[
            ("AUTODEPLOY_RETRY_BUDGET_SECS", "soon"),
            ("AUTODEPLOY_PAUSED", "maybe"),
        ]));
        assert_eq!(s.problems.len(), 2, "{:?}", s.problems);
        assert!(s.paused, "an unreadable pause switch fails safe");
    }
}
