//! Upstream text as a record keeps it: printable (no terminal escapes or control characters, which
//! `status` would otherwise replay on an operator's terminal), each line and the whole bounded,
//! and, for logs, only the last lines. Callers redact secrets before handing text here; the
//! bounds apply after, so a secret is never half cut and half shown.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Lines of one container's log a record keeps (its end: where a traceback is).
pub const MAX_LOG_LINES: usize = 200;
/// Bytes of one container's log a record keeps.
pub const MAX_LOG_BYTES: usize = 16 * 1024;
/// Characters of one log line kept (its start; the rest is marked cut).
pub const MAX_LINE_CHARS: usize = 1000;

/// The logs of a failed deployment, read before it was deleted (`rollout.logs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentLogs {
    /// The deployment they are from.
    pub deployment: String,
    /// When they were read.
    #[serde(with = "time::serde::rfc3339")]
    pub read_at: OffsetDateTime,
    /// One entry per container asked (`InferenceServer`, and `StorageInitializer` when the
    /// failure is about downloading the model or code).
    #[serde(default)]
    pub containers: Vec<ContainerLogs>,
}

/// The end of one container's log, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerLogs {
    /// `InferenceServer` or `StorageInitializer` (the service's `containerType`).
    pub container: String,
    /// The last lines, oldest first, redacted and printable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
    /// Lines the service sent that are not kept (over the line or byte bound).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_lines: usize,
    /// Why nothing (or not everything) could be read: an error, a body that was not the
    /// expected JSON, an answer over the size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ContainerLogs {
    /// The last lines of `text` (already redacted), within [`MAX_LOG_LINES`] and
    /// [`MAX_LOG_BYTES`].
    pub fn from_text(container: &str, text: &str) -> Self {
        let (lines, dropped_lines) = last_lines(text, MAX_LOG_LINES, MAX_LOG_BYTES);
        Self {
            container: container.to_string(),
            lines,
            dropped_lines,
            problem: None,
        }
    }

    /// A container whose log could not be read, and why (already redacted).
    pub fn problem(container: &str, why: &str) -> Self {
        Self {
            container: container.to_string(),
            lines: Vec::new(),
            dropped_lines: 0,
            problem: Some(clip(why, 300)),
        }
    }
}

impl DeploymentLogs {
    /// The last `n` lines of every container, each container's headed by its name, for a person
    /// (a notification, `status`).
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.containers {
            let shown = c.lines.len().min(n);
            let kept = c.lines.len() + c.dropped_lines;
            let head = match &c.problem {
                Some(problem) => format!("{} (could not be read: {problem})", c.container),
                None if c.lines.is_empty() => format!("{}: no output", c.container),
                None => format!("{}: last {shown} of {kept} lines", c.container),
            };
            out.push(head);
            out.extend(
                c.lines[c.lines.len() - shown..]
                    .iter()
                    .map(|l| format!("  {l}")),
            );
        }
        out
    }
}

/// `text` without terminal escape sequences (CSI, OSC and two-character ones) and with every
/// other control character but tab replaced by `�`: safe to print on a terminal and in a chat.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC (and DCS, SOS, PM, APC strings): up to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // A two-character sequence (ESC c, ESC 7, …): both dropped.
                _ => {}
            },
            '\t' => out.push('\t'),
            // C1 controls include the one-character CSI (U+009B).
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// One printable line of at most `max` characters (line breaks become spaces; cut with `…`).
pub fn clip(text: &str, max: usize) -> String {
    let flat = printable(&text.replace(['\r', '\n'], " "));
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The last lines of `text` that fit in `max_lines` and `max_bytes`, each printable and at most
/// [`MAX_LINE_CHARS`] characters; and how many lines were left out.
pub fn last_lines(text: &str, max_lines: usize, max_bytes: usize) -> (Vec<String>, usize) {
    let all: Vec<&str> = text.lines().collect();
    // Trailing blank lines say nothing.
    let end = all
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    let mut kept = Vec::new();
    let mut bytes = 0;
    for line in all[..end].iter().rev() {
        if kept.len() == max_lines {
            break;
        }
        let mut line = printable(line.trim_end());
        if line.chars().count() > MAX_LINE_CHARS {
            line = line.chars().take(MAX_LINE_CHARS).collect::<String>() + " …[line cut]";
        }
        if bytes + line.len() + 1 > max_bytes {
            break;
        }
        bytes += line.len() + 1;
        kept.push(line);
    }
    kept.reverse();
    let dropped = end - kept.len();
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_never_reach_a_terminal() {
        let cases = [
            ("plain text\tand a tab", "plain text\tand a tab"),
            ("\u{1b}[31mred\u{1b}[0m", "red"),
            ("\u{1b}]0;title\u{7}after", "after"),
            ("\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\", "link"),
            (
                "bell\u{7} nul\u{0} csi\u{9b}31m",
                "bell\u{fffd} nul\u{fffd} csi\u{fffd}31m",
            ),
            ("\u{1b}cclear", "clear"),
            ("dangling \u{1b}[", "dangling "),
        ];
        for (input, expected) in cases {
            assert_eq!(printable(input), expected, "{input:?}");
        }
    }

    #[test]
    fn clip_makes_one_bounded_line() {
        assert_eq!(clip("a\nb\r\nc", 10), "a b  c");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 3), "abc");
    }

    #[test]
    fn the_last_lines_are_kept_within_both_bounds() {
        let text: String = (1..=500).map(|i| format!("line {i}\n")).collect();
        let (lines, dropped) = last_lines(&text, MAX_LOG_LINES, MAX_LOG_BYTES);
        assert_eq!(lines.len(), 200);
        assert_eq!(lines.last().unwrap(), "line 500");
        assert_eq!(dropped, 300);
        // Long lines: the byte bound wins, and each line is cut.
        let long = format!("{}\nend\n\n\n", "x".repeat(5000)).repeat(40);
        let (lines, dropped) = last_lines(&long, MAX_LOG_LINES, MAX_LOG_BYTES);
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert!(bytes <= MAX_LOG_BYTES, "{bytes}");
        assert_eq!(lines.last().unwrap(), "end", "trailing blank lines dropped");
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() <= MAX_LINE_CHARS + 12)
        );
        assert_eq!(
            dropped + lines.len(),
            158,
            "blank lines between count, trailing ones do not"
        );
        assert_eq!(last_lines("", 10, 100), (Vec::new(), 0));
    }

    #[test]
    fn a_person_sees_each_containers_last_lines_or_why_there_are_none() {
        let logs = DeploymentLogs {
            deployment: "d".into(),
            read_at: OffsetDateTime::UNIX_EPOCH,
            containers: vec![
                ContainerLogs::from_text("InferenceServer", "a\nb\nc\n"),
                ContainerLogs::problem("StorageInitializer", "HTTP 404"),
            ],
        };
        assert_eq!(
            logs.last_lines(2),
            [
                "InferenceServer: last 2 of 3 lines",
                "  b",
                "  c",
                "StorageInitializer (could not be read: HTTP 404)"
            ]
        );
    }
}
