//! What the CLI prints comes from records and upstreams (a scoring container's error body, a
//! model's tags, an ARM message): untrusted text. [`Visible`] wraps the CLI's output so that no
//! control character or escape sequence reaches the terminal: each is shown as `\u{1b}` (so a
//! window-title, clear-screen or colour sequence is visible as text, and does nothing).

use std::io::{self, Write};

/// Whether `c` must not reach a terminal as is: C0 controls but newline and tab, DEL, C1
/// controls (U+0080–U+009F: `U+009B` is a one-character CSI), and the bidirectional overrides
/// and isolates that reorder what is shown.
fn hidden(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// `text` with every control character made visible (`\u{1b}`).
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A writer that passes text through [`visible`]. Bytes that are not UTF-8 are shown as `\xNN`.
pub struct Visible<W: Write> {
    inner: W,
    /// An incomplete UTF-8 sequence at the end of the last write.
    pending: Vec<u8>,
}

impl<W: Write> Visible<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }
}

impl<W: Write> Write for Visible<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(buf);
        let mut rest = bytes.as_slice();
        let mut out = String::new();
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(&visible(text));
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(&visible(std::str::from_utf8(good).unwrap_or_default()));
                    match e.error_len() {
                        // Cut in the middle of a character: wait for the rest.
                        None => {
                            self.pending = bad.to_vec();
                            break;
                        }
                        Some(n) => {
                            for b in &bad[..n] {
                                out.push_str(&format!("\\x{b:02x}"));
                            }
                            rest = &bad[n..];
                        }
                    }
                }
            }
        }
        self.inner.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_shown_not_obeyed() {
        let cases = [
            ("plain\ttext\n", "plain\ttext\n"),
            ("\u{1b}]0;pwned\u{7}", "\\u{1b}]0;pwned\\u{7}"),
            (
                "\u{1b}[2J\u{1b}[32mpromoted",
                "\\u{1b}[2J\\u{1b}[32mpromoted",
            ),
            ("a\rb", "a\\u{d}b"),
            ("\u{9b}31m", "\\u{9b}31m"),
            ("abc\u{202e}fed", "abc\\u{202e}fed"),
            ("caf\u{e9} ✓", "caf\u{e9} ✓"),
        ];
        for (raw, shown) in cases {
            assert_eq!(visible(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn the_writer_keeps_characters_split_across_writes_and_shows_bad_bytes() {
        let mut out = Visible::new(Vec::new());
        let text = "é\u{1b}x".as_bytes();
        out.write_all(&text[..1]).unwrap();
        out.write_all(&text[1..]).unwrap();
        out.write_all(b"\xff!").unwrap();
        assert_eq!(String::from_utf8(out.inner).unwrap(), "é\\u{1b}x\\xff!");
    }
}
