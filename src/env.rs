//! Reading the environment (Function App settings): the [`Env`] seam, secrets, and the parsing
//! helpers every part uses to read its own settings. A leaf: it imports nothing of the crate.
//!
//! Settings that are merely *wrong* (an unresolved Key Vault reference, an unparsable number) do not
//! stop the process: `serve` must still answer the host's readiness probe, or the host restarts us
//! three times and shuts the whole Function App down. Each part's reader therefore pushes such
//! problems onto a list instead of failing (see `startup::Settings`).

use std::time::Duration;

use secrecy::SecretString;

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

/// Reads `name` as a duration ([`parse_duration`]); an unreadable value is a problem and the
/// default applies.
pub fn duration(
    env: &dyn Env,
    name: &str,
    default: Duration,
    problems: &mut Vec<String>,
) -> Duration {
    match env.get(name) {
        None => default,
        Some(raw) => parse_duration(&raw).unwrap_or_else(|| {
            problems.push(format!(
                "{name} must be a duration such as 90s, 10m, 24h or 1d (or a number of seconds), got {raw:?}"
            ));
            default
        }),
    }
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

/// Parses `true`/`false` (and `1`/`0`, `yes`/`no`, `on`/`off`).
pub fn parse_bool(raw: &str) -> Option<bool> {
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

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172800)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5 weeks"), None);
    }
}
