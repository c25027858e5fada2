//! Per-invocation human-readable log lines.
//!
//! Each line goes twice: into the host response's `Logs` array (which the Functions host attaches to
//! the invocation in Application Insights, but only on a 2xx), and to structured `tracing` output on
//! stdout inside the invocation's span (so the invocation id, event id and model are on every line
//! even when the host discards `Logs` after a non-2xx).

use std::sync::Mutex;

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
        tracing::info!("{line}");
        self.push(line);
    }

    /// Records a warning line.
    pub fn warn(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::warn!("{line}");
        self.push(format!("warning: {line}"));
    }

    /// Records an error line.
    pub fn error(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::error!("{line}");
        self.push(format!("error: {line}"));
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn push(&self, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line);
        }
    }
}
