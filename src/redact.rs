//! The one home for keeping secrets out of what upstreams say: a [`Redactor`] that knows every
//! secret value the process holds and replaces it with `[REDACTED]` in any text.
//!
//! Secrets are registered when loaded ([`loaded_secrets`], from the settings) or minted (GitHub
//! installation tokens and App JWTs, Entra tokens, endpoint scoring keys and tokens, SAS URLs).
//! Every place that turns an upstream's answer (an error body, a transport error) into text goes
//! through [`Redactor::redact`] or [`Redactor::excerpt`] before the text reaches an error, a log
//! line, the host response, a ledger record or CLI output.
//!
//! Each secret is matched as is, JSON-escaped and URL-encoded (so `Bearer <token>`, a token
//! quoted inside a JSON string and a key in a query string are all caught). Values shorter than
//! [`MIN_SECRET_LEN`] are not registered: replacing them would mangle ordinary text.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use secrecy::{ExposeSecret, SecretString};

use crate::env::{Env, read_secret};

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";
/// Shorter values are not treated as secrets.
pub const MIN_SECRET_LEN: usize = 8;
/// Minted secrets kept (oldest forgotten first): tokens live an hour, so this is many hours' worth.
const MAX_MINTED: usize = 256;
/// Characters of a non-JSON body kept in an excerpt.
const EXCERPT_CHARS: usize = 200;

/// Settings whose whole value is a secret (connection strings are also split into their parts).
const SECRET_SETTINGS: [&str; 6] = [
    "GITHUB_TOKEN",
    "GITHUB_APP_PRIVATE_KEY",
    "AZURE_CLIENT_SECRET",
    "AUTODEPLOY_WEBHOOK_KEY",
    "AUTODEPLOY_STORAGE",
    "AzureWebJobsStorage",
];

/// Replaces registered secrets in text. Clones share one set of secrets.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Secrets>>,
}

#[derive(Default)]
struct Secrets {
    /// Loaded secrets' patterns, kept for the process's life.
    loaded: Vec<String>,
    /// Minted secrets, each with its patterns, newest last.
    minted: VecDeque<(String, Vec<String>)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (loaded, minted) = self
            .secrets
            .read()
            .map(|s| (s.loaded.len(), s.minted.len()))
            .unwrap_or_default();
        f.debug_struct("Redactor")
            .field("loaded_patterns", &loaded)
            .field("minted", &minted)
            .finish()
    }
}

impl Redactor {
    /// A redactor that knows no secret yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret for the process's life (settings).
    pub fn add(&self, secret: &str) {
        let patterns = patterns(secret);
        if let Ok(mut secrets) = self.secrets.write() {
            for pattern in patterns {
                if !secrets.loaded.contains(&pattern) {
                    secrets.loaded.push(pattern);
                }
            }
        }
    }

    /// Registers every secret in `secrets`.
    pub fn add_all(&self, secrets: &[SecretString]) {
        for secret in secrets {
            self.add(secret.expose_secret());
        }
    }

    /// Registers a secret minted at run time (tokens, JWTs, keys read from a service); the most
    /// recent are kept.
    pub fn add_minted(&self, secret: &str) {
        let secret = secret.trim();
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        let Ok(mut secrets) = self.secrets.write() else {
            return;
        };
        if secrets.minted.iter().any(|(known, _)| known == secret) {
            return;
        }
        if secrets.minted.len() >= MAX_MINTED {
            secrets.minted.pop_front();
        }
        secrets
            .minted
            .push_back((secret.to_string(), patterns(secret)));
    }

    /// `text` with every registered secret (in any of its forms) replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let Ok(secrets) = self.secrets.read() else {
            return REDACTED.to_string();
        };
        let mut all: Vec<&str> = secrets
            .loaded
            .iter()
            .chain(secrets.minted.iter().flat_map(|(_, p)| p.iter()))
            .map(String::as_str)
            .collect();
        // Longest first: a secret that contains another is replaced whole.
        all.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let mut text = text.to_string();
        for pattern in all {
            if text.contains(pattern) {
                text = text.replace(pattern, REDACTED);
            }
        }
        text
    }

    /// A short, redacted description of a body that is not the JSON we expected: its content
    /// type and its first characters (redacted before they are cut, so a secret across the cut
    /// is not half shown).
    pub fn excerpt(&self, content_type: Option<&str>, body: &[u8]) -> String {
        let text = self.redact(&String::from_utf8_lossy(body));
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut shown: String = text.chars().take(EXCERPT_CHARS).collect();
        if shown.len() < text.len() {
            shown.push('…');
        }
        let kind = content_type.unwrap_or("no content type");
        if shown.is_empty() {
            format!("an empty body ({kind})")
        } else {
            format!("a {kind} body: {shown}")
        }
    }
}

/// The forms a secret may appear in: as is, JSON-escaped and URL-encoded, and (for multi-line
/// values such as PEM keys) each long line on its own.
fn patterns(secret: &str) -> Vec<String> {
    let secret = secret.trim();
    let mut forms = Vec::new();
    let mut push = |form: String| {
        if form.len() >= MIN_SECRET_LEN && !forms.contains(&form) {
            forms.push(form);
        }
    };
    push(secret.to_string());
    if let Ok(quoted) = serde_json::to_string(secret) {
        push(quoted[1..quoted.len() - 1].to_string());
    }
    push(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect());
    push(percent_encoded(secret));
    for line in secret.lines().chain(secret.split("\\n")) {
        let line = line.trim();
        if line.len() >= 16 && !line.starts_with("-----") {
            push(line.to_string());
        }
    }
    forms
}

/// Percent-encoding of everything but RFC 3986's unreserved characters (`%20` for a space, where
/// form encoding writes `+`).
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every secret value the settings hold: the secret settings themselves, a connection string's
/// key and signature, and `more` (secrets a part read some other way, such as the GitHub App key
/// read from a file).
pub fn loaded_secrets(env: &dyn Env, more: Vec<SecretString>) -> Vec<SecretString> {
    let mut found = Vec::new();
    for name in SECRET_SETTINGS {
        let Ok(Some(value)) = read_secret(env, name) else {
            continue;
        };
        for part in value.expose_secret().split(';') {
            if let Some((key, part)) = part.split_once('=') {
                let key = key.trim().to_ascii_lowercase();
                if key == "accountkey" || key == "sharedaccesssignature" {
                    found.push(SecretString::from(part.trim().to_string()));
                }
            }
        }
        found.push(value);
    }
    found.extend(more);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ghp_ab/cd+ef\"gh ij";

    #[test]
    fn exact_json_escaped_and_url_encoded_forms_are_replaced() {
        let r = Redactor::new();
        r.add(TOKEN);
        let json =
            serde_json::to_string(&serde_json::json!({"auth": format!("Bearer {TOKEN}")})).unwrap();
        for text in [
            format!("Authorization: Bearer {TOKEN}"),
            json,
            format!(
                "?token={}",
                url::form_urlencoded::byte_serialize(TOKEN.as_bytes()).collect::<String>()
            ),
            format!("/x/{}", percent_encoded(TOKEN)),
        ] {
            let shown = r.redact(&text);
            assert!(shown.contains(REDACTED), "{shown}");
            assert!(
                !shown.contains("cd+ef") && !shown.contains("cd%2Bef"),
                "{shown}"
            );
        }
    }

    #[test]
    fn short_values_are_not_secrets_and_minted_ones_are_bounded() {
        let r = Redactor::new();
        r.add("k1");
        assert_eq!(r.redact("k1 stays"), "k1 stays");
        for n in 0..MAX_MINTED + 1 {
            r.add_minted(&format!("ghs_minted_token_{n:04}"));
        }
        assert_eq!(r.redact("ghs_minted_token_0000"), "ghs_minted_token_0000");
        assert_eq!(r.redact("ghs_minted_token_0001"), REDACTED);
    }

    #[test]
    fn pem_lines_and_connection_string_keys_are_secrets() {
        let pem =
            "-----BEGIN KEY-----\nMIIEowIBAAKCAQEAx1yZ2abc\nMIIEsecondlinexyz12\n-----END KEY-----";
        let r = Redactor::new();
        r.add(pem);
        assert_eq!(
            r.redact("line MIIEsecondlinexyz12 quoted"),
            format!("line {REDACTED} quoted")
        );
        let env = |name: &str| {
            (name == "AzureWebJobsStorage").then(|| {
                "AccountName=a;AccountKey=c2VjcmV0LWtleS12YWx1ZQ==;EndpointSuffix=x".to_string()
            })
        };
        let secrets = loaded_secrets(&env, Vec::new());
        let r = Redactor::new();
        r.add_all(&secrets);
        assert_eq!(
            r.redact("sig c2VjcmV0LWtleS12YWx1ZQ%3D%3D"),
            format!("sig {REDACTED}")
        );
    }

    #[test]
    fn excerpts_redact_before_cutting() {
        let r = Redactor::new();
        let secret = "s3cr3t-value-that-is-long";
        r.add(secret);
        let body = format!("{}{secret}", "x".repeat(EXCERPT_CHARS - 5));
        let shown = r.excerpt(Some("text/html"), body.as_bytes());
        assert!(shown.starts_with("a text/html body: "), "{shown}");
        assert!(!shown.contains("s3cr3"), "{shown}");
        assert_eq!(r.excerpt(None, b""), "an empty body (no content type)");
    }
}
