//! Structured `tracing` output: JSON (default) or pretty, filtered by `RUST_LOG`, and routed to
//! stdout or stderr the way the reader of each command needs it ([`Sink`]).
//!
//! Under the Functions host ([`Sink::Functions`]) the routing follows what the host does with a
//! custom handler's output (`WorkerProcess` in `azure-functions-host`): every stdout line becomes
//! an Information trace; a stderr line a Warning when it contains "warn" (any case), else an
//! Error; and a 2xx reply's `Logs` array is ingested too, attached to the invocation. So:
//! - an invocation's informational lines ([`crate::logs::TARGET`]) are left to `Logs` and not
//!   printed (the handler prints one summary line per invocation instead);
//! - warnings go to stderr (the level field, `WARN`, holds the word);
//! - errors go to stderr with every "warn" in the line escaped ([`unwarn`]), so the host files them
//!   as errors even when they quote a name or a message that contains the word;
//! - everything else (start-up lines, the per-invocation summary) goes to stdout.

use std::borrow::Cow;
use std::io::{self, Write};

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::env::Env;

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

impl LogFormat {
    /// `AUTODEPLOY_LOG_FORMAT`: `json` (default) or `pretty`; anything else is a problem.
    pub fn from_env(env: &dyn Env, problems: &mut Vec<String>) -> Self {
        match env.get("AUTODEPLOY_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                problems.push(format!(
                    "AUTODEPLOY_LOG_FORMAT must be json or pretty, got {other:?}"
                ));
                LogFormat::Json
            }
        }
    }
}

impl LogStdout {
    /// `AUTODEPLOY_LOG_STDOUT`: `summary` (default) or `all`; anything else only warns.
    pub fn from_env(env: &dyn Env, warnings: &mut Vec<String>) -> Self {
        match env.get("AUTODEPLOY_LOG_STDOUT").as_deref().map(str::trim) {
            None | Some("summary") => LogStdout::Summary,
            Some("all") => LogStdout::All,
            Some(other) => {
                // Only where lines go: not worth failing invocations for.
                warnings.push(format!(
                    "AUTODEPLOY_LOG_STDOUT must be all or summary, got {other:?}; using summary"
                ));
                LogStdout::Summary
            }
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Every line on standard output: `serve --webhook` (containers collect stdout), and
    /// `serve` with `AUTODEPLOY_LOG_STDOUT=all`.
    Stdout,
    /// Every line on standard error: the CLI commands, whose stdout is their result.
    Stderr,
    /// `serve` under the Functions host: see the module's documentation.
    Functions,
}

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, sink: Sink, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Under the host, an invocation's informational lines are already in its `Logs`: not even
    // formatted. `RUST_LOG` still decides what is enabled at all.
    let printed = filter_fn(move |meta| sink != Sink::Functions || !left_to_logs(meta));
    let writer = Router(sink);
    // JSON lines come from `json-subscriber`, not `tracing_subscriber::fmt().json()`: the latter
    // re-parses a span's fields from a JSON string on every event and re-serialises them on every
    // `Span::record`, which cost a third of the handler's time per invocation.
    let result = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(
                json_subscriber::fmt::layer()
                    .with_target(false)
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer)
                    .with_filter(printed),
            )
            .try_init(),
        LogFormat::Pretty => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_writer(writer)
                    .with_filter(printed),
            )
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// An invocation's informational line, which the host gets in `Logs`.
fn left_to_logs(meta: &Metadata<'_>) -> bool {
    meta.is_event() && meta.target() == crate::logs::TARGET && *meta.level() > Level::WARN
}

/// `text` with every "warn" (any case) written `w\u0061rn`: the Functions host files a stderr line
/// that contains "warn" as a Warning, and an error must stay an Error. Inside a JSON line this is
/// the same text once parsed: "warn" can only occur inside a JSON string, where `\u0061` is an
/// escaped `a` (and a `w` cannot end an escape sequence).
pub fn unwarn(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let is_warn = |i: usize| {
        bytes
            .get(i..i + 4)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"warn"))
    };
    if !(0..bytes.len()).any(is_warn) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        if is_warn(i) {
            out.push(bytes[i] as char);
            out.push_str(if bytes[i + 1] == b'a' {
                "\\u0061"
            } else {
                "\\u0041"
            });
            i += 2;
            continue;
        }
        // Copy up to the next `w`/`W` (always a character boundary: ASCII).
        let next = bytes[i + 1..]
            .iter()
            .position(|b| b.eq_ignore_ascii_case(&b'w'))
            .map_or(bytes.len(), |p| i + 1 + p);
        out.push_str(&text[i..next]);
        i = next;
    }
    Cow::Owned(out)
}

/// Prints an error line on stderr, written so the Functions host files it as an error
/// ([`unwarn`]).
pub fn eprint_error(line: &str) {
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "{}", unwarn(line));
}

/// Chooses each line's stream from its level ([`Sink`]).
struct Router(Sink);

/// One line on its way out.
enum Line {
    Stdout(io::Stdout),
    Stderr(io::Stderr),
    /// An error line under the host: collected, then written once, escaped, when dropped (both
    /// formatters write a whole line at once, but a "warn" must not be split across writes).
    Error(Vec<u8>),
}

impl<'a> MakeWriter<'a> for Router {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        match self.0 {
            Sink::Stderr => Line::Stderr(io::stderr()),
            Sink::Stdout | Sink::Functions => Line::Stdout(io::stdout()),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        match (self.0, *meta.level()) {
            (Sink::Functions, Level::ERROR) => Line::Error(Vec::with_capacity(512)),
            (Sink::Functions, Level::WARN) => Line::Stderr(io::stderr()),
            _ => self.make_writer(),
        }
    }
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Line::Stdout(out) => out.write(buf),
            Line::Stderr(err) => err.write(buf),
            Line::Error(line) => {
                line.extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Line::Stdout(out) => out.write_all(buf),
            Line::Stderr(err) => err.write_all(buf),
            Line::Error(line) => {
                line.extend_from_slice(buf);
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Line::Stdout(out) => out.flush(),
            Line::Stderr(err) => err.flush(),
            Line::Error(_) => Ok(()),
        }
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if let Line::Error(line) = self
            && !line.is_empty()
        {
            let text = String::from_utf8_lossy(line);
            let _ = io::stderr().lock().write_all(unwarn(&text).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwarn_escapes_every_warn_in_any_case_and_nothing_else() {
        assert!(matches!(
            unwarn("GitHub refused: HTTP 422"),
            Cow::Borrowed(_)
        ));
        let escaped =
            unwarn(r#"{"model":"early-Warning","rule":"WARN-team","w":"wa","x":"warnwarn"}"#);
        assert!(!escaped.to_ascii_lowercase().contains("warn"), "{escaped}");
        assert_eq!(
            escaped,
            r#"{"model":"early-W\u0061rning","rule":"W\u0041RN-team","w":"wa","x":"w\u0061rnw\u0061rn"}"#
        );
        assert_eq!(unwarn("wär warn ✓"), "wär w\\u0061rn ✓");
        assert_eq!(unwarn("w"), "w");
    }

    #[test]
    fn an_escaped_json_line_parses_back_to_the_same_value() {
        let line =
            serde_json::json!({"message": "rule warn-team: \"Warning\" quoted", "level": "ERROR"})
                .to_string();
        let escaped = unwarn(&line);
        assert!(!escaped.to_ascii_lowercase().contains("warn"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&escaped).unwrap(),
            serde_json::from_str::<serde_json::Value>(&line).unwrap()
        );
    }
}
