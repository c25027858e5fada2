//! Structured `tracing` output: JSON (default) or pretty, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::settings::LogFormat;

/// Where log lines go: stdout for `serve` (the host forwards it as Information), stderr for the
/// CLI commands whose stdout is their result.
#[derive(Debug, Clone, Copy)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, sink: Sink, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // JSON lines come from `json-subscriber`, not `tracing_subscriber::fmt().json()`: the latter
    // re-parses a span's fields from a JSON string on every event and re-serialises them on every
    // `Span::record`, which cost a third of the handler's time per invocation.
    let writer = match sink {
        Sink::Stdout => BoxMakeWriter::new(std::io::stdout),
        Sink::Stderr => BoxMakeWriter::new(std::io::stderr),
    };
    let result = match format {
        LogFormat::Json => json_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .try_init(),
        LogFormat::Pretty => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_writer(writer)
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
