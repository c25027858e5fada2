//! Per-invocation human-readable log lines.
//!
//! Each line goes into the host response's `Logs` array (which the Functions host attaches to the
//! invocation in Application Insights, but only on a 2xx), and is a `tracing` event (target
//! [`TARGET`]) inside the invocation's span, so the invocation id, event id and model are on it.
//! Where that event is printed is [`crate::telemetry`]'s business: under the Functions host the
//! informational ones are left to `Logs` and warnings and errors go to stderr; elsewhere every
//! line is printed.

use std::sync::Mutex;

/// The `tracing` target of every invocation line (the module's path, as `RUST_LOG` knows it).
pub const TARGET: &str = "aml_autodeploy::logs";

/// Collects one invocation's log lines. Shared by reference across the pipeline's steps.
#[derive(Debug, Default)]
pub struct InvocationLog {
    lines: Mutex<Vec<String>>,
}

impl InvocationLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an informational line.
    pub fn info(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(target: TARGET, "{line}");
        self.push(line);
    }

    /// Records a warning line.
    pub fn warn(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::warn!(target: TARGET, "{line}");
        self.push(format!("warning: {line}"));
    }

    /// Records an error line.
    pub fn error(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::error!(target: TARGET, "{line}");
        self.push(format!("error: {line}"));
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The lines, when nothing will be added any more.
    pub fn into_lines(self) -> Vec<String> {
        self.lines.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_target_is_the_module_path() {
        assert_eq!(Some(super::TARGET), module_path!().strip_suffix("::tests"));
    }
}
