//! The composition of every part's settings: the environment (Function App settings) → typed
//! [`Settings`], read once at start. Each part reads its own settings next to its code
//! (`LedgerOptions::from_env`, `GithubSettings::from_env`, …); this file only assembles them.
//!
//! Settings that are merely *wrong* (an unresolved Key Vault reference, an unparsable number) do not
//! stop the process: `serve` must still answer the host's readiness probe, or the host restarts us
//! three times and shuts the whole Function App down. Such problems are collected in
//! [`Settings::problems`] (or inside the GitHub auth setting) and reported on every invocation.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::actions::github::GithubSettings;
use crate::env::{Env, duration, parse_bool};
use crate::telemetry::{LogFormat, LogStdout};

/// Default total time budget for one invocation's outbound retries: Event Grid gives up waiting
/// after 30 s, and a late answer means a duplicate delivery.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(20);

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
        let log_format = LogFormat::from_env(env, &mut problems);
        let mut warnings = Vec::new();
        let log_stdout = LogStdout::from_env(env, &mut warnings);
        let github = GithubSettings::from_env(env, &mut problems);
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

        let ledger = crate::ledger::LedgerOptions::from_env(env, &mut problems);
        let reconcile_interval = duration(
            env,
            "AUTODEPLOY_RECONCILE_INTERVAL_SECS",
            Duration::from_secs(60),
            &mut problems,
        );
        let min_step = duration(
            env,
            "AUTODEPLOY_MIN_STEP_SECS",
            Duration::from_secs(1),
            &mut problems,
        );
        let webhook_deadline = duration(
            env,
            "AUTODEPLOY_WEBHOOK_DEADLINE_SECS",
            crate::webhook::DEFAULT_DEADLINE,
            &mut problems,
        );
        let container = crate::ledger::container_from_env(env, &mut problems);
        let cloud = crate::azure::Cloud::from_env(env, &mut problems);
        let arm = crate::azure::arm::ArmSettings::from_env(env, cloud, retry_budget);
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
        let secrets = crate::redact::loaded_secrets(env, github.secrets());

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_GITHUB_API_URL;
    use crate::env::test_env as env;

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
    fn bad_numbers_become_problems_not_crashes() {
        let s = Settings::from_env(&env(&[
            ("AUTODEPLOY_RETRY_BUDGET_SECS", "soon"),
            ("AUTODEPLOY_PAUSED", "maybe"),
        ]));
        assert_eq!(s.problems.len(), 2, "{:?}", s.problems);
        assert!(s.paused, "an unreadable pause switch fails safe");
    }
}
