//! Dumping: a port of the parts of PyYAML's SafeRepresenter and Emitter that
//! `yaml.dump(data, sort_keys=True)` reaches for safe_load's values. The state
//! machine is kept as PyYAML has it (column, whitespace, indention, indents),
//! since the exact bytes depend on it.

use super::resolve::{Kind, Value, implicit_kind, py_cmp};

/// PyYAML's default `width`.
const BEST_WIDTH: usize = 80;
/// PyYAML's default `indent`.
const BEST_INDENT: usize = 2;

/// Python's `repr(float)` ("shortest repr"), then `represent_float`'s tweaks.
pub(super) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits as Python.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let point = exp + 1;
    let mut out = String::from(if f.is_sign_negative() { "-" } else { "" });
    if !(-4 < point && point <= 16) {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        // Python writes `1e+16`; PyYAML inserts the `.0` so that it resolves as a float.
        out.push('.');
        out.push_str(if rest.is_empty() { "0" } else { rest });
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
    } else if point <= 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat(point.unsigned_abs() as usize));
        out.push_str(&digits);
    } else {
        let point = point.unsigned_abs() as usize;
        if digits.len() <= point {
            out.push_str(&digits);
            out.push_str(&"0".repeat(point - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    }
    out
}

/// The scalar text, the length of its prepared tag (`!!str` …) and whether it
/// may be written plain (the serializer's `implicit[0]`).
fn represent(v: &Value) -> (String, usize, bool) {
    match v {
        Value::Null => ("null".into(), 6, true),
        Value::Bool(b) => (b.to_string(), 6, true),
        Value::Int(i) => (i.to_string(), 5, true),
        Value::Float(f) => (float_repr(*f), 7, true),
        Value::Str(s) => (s.clone(), 5, implicit_kind(s) == Kind::Str),
        Value::Date(y, m, d) => (format!("{y:04}-{m:02}-{d:02}"), 11, true),
        Value::DateTime(t) => {
            let ((y, mo, d), (h, mi, s)) = (t.date, t.time);
            let mut text = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
            if t.micro != 0 {
                text.push_str(&format!(".{:06}", t.micro));
            }
            if let Some(tz) = t.tz {
                let sign = if tz < 0 { '-' } else { '+' };
                text.push_str(&format!("{sign}{:02}:{:02}", tz.abs() / 60, tz.abs() % 60));
            }
            (text, 11, true)
        }
        Value::Seq(_) | Value::Map(_) => (String::new(), 0, false),
    }
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_space_or_break(c: char) -> bool {
    matches!(c, '\0' | ' ' | '\t' | '\r') || is_break(c)
}

/// `Emitter.analyze_scalar` with `allow_unicode=False`.
struct Analysis {
    empty: bool,
    multiline: bool,
    allow_block_plain: bool,
    allow_single_quoted: bool,
}

fn analyze(text: &[char]) -> Analysis {
    if text.is_empty() {
        return Analysis {
            empty: true,
            multiline: false,
            allow_block_plain: true,
            allow_single_quoted: true,
        };
    }
    let mut block_indicators = false;
    let (mut line_breaks, mut special) = (false, false);
    let (mut leading, mut trailing, mut break_space, mut space_break) =
        (false, false, false, false);
    let starts = |p: &str| text.iter().take(3).copied().eq(p.chars());
    if starts("---") || starts("...") {
        block_indicators = true;
    }
    let mut preceded_by_ws = true;
    let (mut previous_space, mut previous_break) = (false, false);
    let last = text.len() - 1;
    for (index, &ch) in text.iter().enumerate() {
        let followed_by_ws = text.get(index + 1).is_none_or(|c| is_space_or_break(*c));
        if index == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(ch) || (matches!(ch, '?' | ':' | '-') && followed_by_ws)
            {
                block_indicators = true;
            }
        } else if (ch == ':' && followed_by_ws) || (ch == '#' && preceded_by_ws) {
            block_indicators = true;
        }
        if is_break(ch) {
            line_breaks = true;
        }
        if !(ch == '\n' || (' '..='~').contains(&ch)) {
            // Printable non-ASCII is "unicode", special when allow_unicode is off.
            special = true;
        }
        if ch == ' ' || is_break(ch) {
            leading |= index == 0;
            trailing |= index == last;
            if ch == ' ' {
                break_space |= previous_break;
            } else {
                space_break |= previous_space;
            }
        }
        previous_space = ch == ' ';
        previous_break = is_break(ch);
        preceded_by_ws = is_space_or_break(ch);
    }
    let plain = !(leading
        || trailing
        || break_space
        || space_break
        || special
        || line_breaks
        || block_indicators);
    Analysis {
        empty: false,
        multiline: line_breaks,
        allow_block_plain: plain,
        allow_single_quoted: !(break_space || space_break || special),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Plain,
    Single,
    Double,
}

/// Where a node sits, as `expect_node` records it.
#[derive(Clone, Copy, Default)]
struct Context {
    root: bool,
    mapping: bool,
    simple_key: bool,
}

#[derive(Default)]
struct Emitter {
    out: String,
    column: usize,
    whitespace: bool,
    indention: bool,
    open_ended: bool,
    indent: Option<usize>,
    indents: Vec<Option<usize>>,
}

impl Emitter {
    fn write(&mut self, data: &str) {
        self.column += data.chars().count();
        self.out.push_str(data);
    }

    fn write_indicator(
        &mut self,
        indicator: &str,
        need_whitespace: bool,
        whitespace: bool,
        indention: bool,
    ) {
        if !self.whitespace && need_whitespace {
            self.write(" ");
        }
        self.write(indicator);
        self.whitespace = whitespace;
        self.indention = self.indention && indention;
        self.open_ended = false;
    }

    fn write_indent(&mut self) {
        let indent = self.indent.unwrap_or(0);
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.write_line_break(None);
        }
        if self.column < indent {
            self.whitespace = true;
            let pad = " ".repeat(indent - self.column);
            self.write(&pad);
        }
    }

    fn write_line_break(&mut self, br: Option<char>) {
        self.out.push(br.unwrap_or('\n'));
        self.whitespace = true;
        self.indention = true;
        self.column = 0;
    }

    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        self.indents.push(self.indent);
        self.indent = match self.indent {
            None if flow => Some(BEST_INDENT),
            None => Some(0),
            Some(i) if !indentless => Some(i + BEST_INDENT),
            same => same,
        };
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().flatten();
    }

    fn node(&mut self, v: &Value, ctx: Context) {
        match v {
            Value::Seq(items) if items.is_empty() => self.empty_flow("[", "]"),
            Value::Map(entries) if entries.is_empty() => self.empty_flow("{", "}"),
            Value::Seq(items) => {
                let indentless = ctx.mapping && !self.indention;
                self.increase_indent(false, indentless);
                for item in items {
                    self.write_indent();
                    self.write_indicator("-", true, false, true);
                    self.node(item, Context::default());
                }
                self.pop_indent();
            }
            Value::Map(entries) => {
                let mut sorted: Vec<&(Value, Value)> = entries.iter().collect();
                // `sorted(dict.items())`; on a TypeError PyYAML keeps dict order.
                if sorted
                    .windows(2)
                    .all(|w| py_cmp(&w[0].0, &w[1].0).is_some())
                    && entries
                        .iter()
                        .all(|(k, _)| py_cmp(k, &entries[0].0).is_some())
                {
                    sorted.sort_by(|a, b| py_cmp(&a.0, &b.0).unwrap_or(std::cmp::Ordering::Equal));
                }
                self.increase_indent(false, false);
                for (key, value) in sorted {
                    self.write_indent();
                    let (text, tag_len, _) = represent(key);
                    let chars: Vec<char> = text.chars().collect();
                    let a = analyze(&chars);
                    let key_ctx = Context {
                        mapping: true,
                        ..Context::default()
                    };
                    if chars.len() + tag_len < 128 && !a.empty && !a.multiline {
                        self.node(
                            key,
                            Context {
                                simple_key: true,
                                ..key_ctx
                            },
                        );
                        self.write_indicator(":", false, false, false);
                    } else {
                        self.write_indicator("?", true, false, true);
                        self.node(key, key_ctx);
                        self.write_indent();
                        self.write_indicator(":", true, false, true);
                    }
                    self.node(value, key_ctx);
                }
                self.pop_indent();
            }
            scalar => {
                self.increase_indent(true, false);
                self.scalar(scalar, ctx);
                self.pop_indent();
            }
        }
    }

    fn empty_flow(&mut self, open: &str, close: &str) {
        self.write_indicator(open, true, true, false);
        self.increase_indent(true, false);
        self.pop_indent();
        self.write_indicator(close, false, false, false);
    }

    fn scalar(&mut self, v: &Value, ctx: Context) {
        let (text, _, implicit) = represent(v);
        let chars: Vec<char> = text.chars().collect();
        let a = analyze(&chars);
        // `choose_scalar_style`; flow_level is always 0 here, as the only flow
        // collections written are the empty ones.
        let style =
            if implicit && !(ctx.simple_key && (a.empty || a.multiline)) && a.allow_block_plain {
                Style::Plain
            } else if a.allow_single_quoted && !(ctx.simple_key && a.multiline) {
                Style::Single
            } else {
                Style::Double
            };
        let split = !ctx.simple_key;
        match style {
            Style::Plain => {
                if ctx.root {
                    self.open_ended = true;
                }
                self.write_plain(&chars, split);
            }
            Style::Single => self.write_single_quoted(&chars, split),
            Style::Double => self.write_double_quoted(&chars, split),
        }
    }

    fn write_chars(&mut self, text: &[char]) {
        let s: String = text.iter().collect();
        self.write(&s);
    }

    fn write_breaks(&mut self, text: &[char]) {
        if text.first() == Some(&'\n') {
            self.write_line_break(None);
        }
        for &br in text {
            self.write_line_break(Some(br));
        }
        self.write_indent();
    }

    fn write_plain(&mut self, text: &[char], split: bool) {
        if text.is_empty() {
            return;
        }
        if !self.whitespace {
            self.write(" ");
        }
        self.whitespace = false;
        self.indention = false;
        let (mut spaces, mut breaks) = (false, false);
        let mut start = 0;
        for end in 0..=text.len() {
            let ch = text.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end && self.column > BEST_WIDTH && split {
                        self.write_indent();
                        self.whitespace = false;
                        self.indention = false;
                    } else {
                        self.write_chars(&text[start..end]);
                    }
                    start = end;
                }
            } else if breaks {
                if !ch.is_some_and(is_break) {
                    self.write_breaks(&text[start..end]);
                    self.whitespace = false;
                    self.indention = false;
                    start = end;
                }
            } else if ch.is_none_or(|c| c == ' ' || is_break(c)) {
                self.write_chars(&text[start..end]);
                start = end;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                breaks = is_break(c);
            }
        }
    }

    fn write_single_quoted(&mut self, text: &[char], split: bool) {
        self.write_indicator("'", true, false, false);
        let (mut spaces, mut breaks) = (false, false);
        let mut start = 0;
        for end in 0..=text.len() {
            let ch = text.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end
                        && self.column > BEST_WIDTH
                        && split
                        && start != 0
                        && end != text.len()
                    {
                        self.write_indent();
                    } else {
                        self.write_chars(&text[start..end]);
                    }
                    start = end;
                }
            } else if breaks {
                if !ch.is_some_and(is_break) {
                    self.write_breaks(&text[start..end]);
                    start = end;
                }
            } else if ch.is_none_or(|c| c == ' ' || c == '\'' || is_break(c)) && start < end {
                self.write_chars(&text[start..end]);
                start = end;
            }
            if ch == Some('\'') {
                self.write("''");
                start = end + 1;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                breaks = is_break(c);
            }
        }
        self.write_indicator("'", false, false, false);
    }

    fn write_double_quoted(&mut self, text: &[char], split: bool) {
        self.write_indicator("\"", true, false, false);
        let mut start = 0;
        for end in 0..=text.len() {
            let ch = text.get(end).copied();
            if ch.is_none_or(|c| {
                matches!(
                    c,
                    '"' | '\\' | '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{FEFF}'
                ) || !(' '..='~').contains(&c)
            }) {
                if start < end {
                    self.write_chars(&text[start..end]);
                    start = end;
                }
                if let Some(c) = ch {
                    let escaped = match c {
                        '\0' => "\\0".to_string(),
                        '\x07' => "\\a".into(),
                        '\x08' => "\\b".into(),
                        '\t' => "\\t".into(),
                        '\n' => "\\n".into(),
                        '\x0B' => "\\v".into(),
                        '\x0C' => "\\f".into(),
                        '\r' => "\\r".into(),
                        '\x1B' => "\\e".into(),
                        '"' => "\\\"".into(),
                        '\\' => "\\\\".into(),
                        '\u{85}' => "\\N".into(),
                        '\u{A0}' => "\\_".into(),
                        '\u{2028}' => "\\L".into(),
                        '\u{2029}' => "\\P".into(),
                        c if u32::from(c) <= 0xFF => format!("\\x{:02X}", u32::from(c)),
                        c if u32::from(c) <= 0xFFFF => format!("\\u{:04X}", u32::from(c)),
                        c => format!("\\U{:08X}", u32::from(c)),
                    };
                    self.write(&escaped);
                    start = end + 1;
                }
            }
            if 0 < end
                && end + 1 < text.len()
                && (ch == Some(' ') || start >= end)
                && self.column + end > BEST_WIDTH + start
                && split
            {
                let mut data: String = text.get(start..end).unwrap_or_default().iter().collect();
                data.push('\\');
                if start < end {
                    start = end;
                }
                self.write(&data);
                self.write_indent();
                self.whitespace = false;
                self.indention = false;
                if text.get(start) == Some(&' ') {
                    self.write("\\");
                }
            }
        }
        self.write_indicator("\"", false, false, false);
    }
}

/// `yaml.dump(value, sort_keys=True)` with the other arguments at their defaults.
pub(super) fn dump(value: &Value) -> String {
    let mut e = Emitter {
        whitespace: true,
        indention: true,
        ..Emitter::default()
    };
    e.node(
        value,
        Context {
            root: true,
            ..Context::default()
        },
    );
    // expect_document_end, then expect_document_start at the stream end.
    e.write_indent();
    if e.open_ended {
        e.write_indicator("...", true, false, false);
        e.write_indent();
    }
    e.out
}
