//! Loading: parser events to the values `yaml.safe_load` builds, with PyYAML's
//! YAML 1.1 implicit resolution (resolver.py) and SafeConstructor's conversions.

use std::cmp::Ordering;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// How deep collections may nest; far beyond any conda file, and it keeps the
/// recursive loader and emitter off the end of the stack.
const MAX_DEPTH: usize = 200;

/// A Python value as `yaml.safe_load` returns it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    /// Python ints are unbounded; values beyond `i128` are refused.
    Int(i128),
    Float(f64),
    Str(String),
    /// `datetime.date` as (year, month, day).
    Date(i32, u32, u32),
    DateTime(DateTime),
    Seq(Vec<Value>),
    /// A dict in insertion order, keys unique under Python's `==`.
    Map(Vec<(Value, Value)>),
}

/// `datetime.datetime`; `tz` is the UTC offset in minutes when aware.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct DateTime {
    pub date: (i32, u32, u32),
    pub time: (u32, u32, u32),
    pub micro: u32,
    pub tz: Option<i32>,
}

/// What a plain scalar resolves to, in resolver.py's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Timestamp,
    /// `<<`: only meaningful as a merge key, which is refused.
    Merge,
    /// `=`: SafeConstructor has no constructor for it.
    ValueTag,
    Str,
}

/// The implicit tag PyYAML gives a plain scalar.
pub(super) fn implicit_kind(s: &str) -> Kind {
    if matches!(s, "" | "~" | "null" | "Null" | "NULL") {
        Kind::Null
    } else if BOOLS
        .iter()
        .any(|(word, _)| *word == s.to_ascii_lowercase())
        && is_bool_spelling(s)
    {
        Kind::Bool
    } else if is_float(s) {
        Kind::Float
    } else if is_int(s) {
        Kind::Int
    } else if s == "<<" {
        Kind::Merge
    } else if s == "=" {
        Kind::ValueTag
    } else if timestamp(s, true).is_some() {
        Kind::Timestamp
    } else {
        Kind::Str
    }
}

const BOOLS: [(&str, bool); 6] = [
    ("yes", true),
    ("no", false),
    ("true", true),
    ("false", false),
    ("on", true),
    ("off", false),
];

/// The resolver only takes all-lower, Capitalized or ALL-UPPER spellings.
fn is_bool_spelling(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let mut capital = lower.clone();
    if let Some(first) = capital.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    s == lower || s == capital || s == s.to_ascii_uppercase()
}

fn digits(b: &[u8], ok: impl Fn(u8) -> bool) -> usize {
    b.iter().take_while(|c| ok(**c)).count()
}

fn strip_sign(b: &[u8]) -> &[u8] {
    match b.first() {
        Some(b'+' | b'-') => &b[1..],
        _ => b,
    }
}

/// `(?::[0-5]?[0-9])+` followed by `rest`; returns what follows the groups.
fn sexagesimal_tail(mut b: &[u8]) -> Option<&[u8]> {
    let mut groups = 0;
    while let Some(rest) = b.strip_prefix(b":") {
        let n = digits(rest, |c| c.is_ascii_digit());
        if n == 0 || n > 2 || (n == 2 && rest[0] > b'5') {
            return None;
        }
        b = &rest[n..];
        groups += 1;
    }
    (groups > 0).then_some(b)
}

fn digit_or_underscore(c: u8) -> bool {
    c.is_ascii_digit() || c == b'_'
}

/// `(?:[eE][-+][0-9]+)?$`
fn exponent_end(b: &[u8]) -> bool {
    match b {
        [] => true,
        [b'e' | b'E', b'-' | b'+', rest @ ..] => {
            !rest.is_empty() && rest.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

fn is_float(s: &str) -> bool {
    let b = s.as_bytes();
    let unsigned = strip_sign(b);
    if matches!(unsigned, b".inf" | b".Inf" | b".INF") || matches!(b, b".nan" | b".NaN" | b".NAN") {
        return true;
    }
    if let Some(rest) = b.strip_prefix(b".") {
        let n = digits(rest, digit_or_underscore);
        return rest.first().is_some_and(u8::is_ascii_digit) && exponent_end(&rest[n..]);
    }
    if !unsigned.first().is_some_and(u8::is_ascii_digit) {
        return false;
    }
    let rest = &unsigned[digits(unsigned, digit_or_underscore)..];
    let (fraction, sexagesimal) = match rest.strip_prefix(b".") {
        Some(fraction) => (fraction, false),
        None => match sexagesimal_tail(rest).and_then(|r| r.strip_prefix(b".")) {
            Some(fraction) => (fraction, true),
            None => return false,
        },
    };
    let tail = &fraction[digits(fraction, digit_or_underscore)..];
    if sexagesimal {
        tail.is_empty()
    } else {
        exponent_end(tail)
    }
}

fn is_int(s: &str) -> bool {
    let b = strip_sign(s.as_bytes());
    let all = |b: &[u8], ok: fn(u8) -> bool| !b.is_empty() && b.iter().all(|c| ok(*c));
    if let Some(rest) = b.strip_prefix(b"0b") {
        return all(rest, |c| matches!(c, b'0' | b'1' | b'_'));
    }
    if let Some(rest) = b.strip_prefix(b"0x") {
        return all(rest, |c| c.is_ascii_hexdigit() || c == b'_');
    }
    if let Some(rest) = b.strip_prefix(b"0") {
        return rest.is_empty() || all(rest, |c| matches!(c, b'0'..=b'7' | b'_'));
    }
    if !b.first().is_some_and(|c| matches!(c, b'1'..=b'9')) {
        return false;
    }
    let rest = &b[digits(b, digit_or_underscore)..];
    rest.is_empty() || sexagesimal_tail(rest).is_some_and(<[u8]>::is_empty)
}

/// The timestamp regexps: with `resolver`, the implicit resolver's (date alone
/// needs two-digit month and day), else SafeConstructor's `timestamp_regexp`.
fn timestamp(s: &str, resolver: bool) -> Option<Value> {
    let b = s.as_bytes();
    let take = |b: &mut &[u8], min: usize, max: usize| -> Option<u32> {
        let n = digits(b, |c| c.is_ascii_digit()).min(max);
        if n < min {
            return None;
        }
        let v = std::str::from_utf8(&b[..n]).ok()?.parse().ok()?;
        *b = &b[n..];
        Some(v)
    };
    let lit = |b: &mut &[u8], c: u8| -> Option<()> {
        *b = b.strip_prefix(&[c])?;
        Some(())
    };
    let mut r = b;
    let year = take(&mut r, 4, 4)?;
    lit(&mut r, b'-')?;
    let month = take(&mut r, 1, 2)?;
    lit(&mut r, b'-')?;
    let day = take(&mut r, 1, 2)?;
    let date = (i32::try_from(year).ok()?, month, day);
    if r.is_empty() {
        return (!resolver || s.len() == 10).then_some(Value::Date(date.0, date.1, date.2));
    }
    match r.first() {
        Some(b'T' | b't') => r = &r[1..],
        Some(b' ' | b'\t') => r = &r[digits(r, |c| c == b' ' || c == b'\t')..],
        _ => return None,
    }
    let hour = take(&mut r, 1, 2)?;
    lit(&mut r, b':')?;
    let minute = take(&mut r, 2, 2)?;
    lit(&mut r, b':')?;
    let second = take(&mut r, 2, 2)?;
    let mut micro = 0;
    if let Some(rest) = r.strip_prefix(b".") {
        let n = digits(rest, |c| c.is_ascii_digit());
        let mut fraction: String = rest[..n.min(6)].iter().map(|c| char::from(*c)).collect();
        while fraction.len() < 6 {
            fraction.push('0');
        }
        micro = fraction.parse().ok()?;
        r = &rest[n..];
    }
    r = &r[digits(r, |c| c == b' ' || c == b'\t')..];
    let tz = match r.first() {
        None => None,
        Some(b'Z') if r.len() == 1 => Some(0),
        Some(sign @ (b'+' | b'-')) => {
            let negative = *sign == b'-';
            r = &r[1..];
            let hours = take(&mut r, 1, 2)?;
            let minutes = if r.is_empty() {
                0
            } else {
                lit(&mut r, b':').and_then(|()| take(&mut r, 2, 2))?
            };
            if !r.is_empty() {
                return None;
            }
            let total = i32::try_from(hours * 60 + minutes).ok()?;
            Some(if negative { -total } else { total })
        }
        Some(_) => return None,
    };
    Some(Value::DateTime(DateTime {
        date,
        time: (hour, minute, second),
        micro,
        tz,
    }))
}

/// Days since 0001-01-01 when the date exists in the proleptic Gregorian calendar.
fn days(y: i32, m: u32, d: u32) -> Option<i64> {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let lengths = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let month_len = *lengths.get(usize::try_from(m).ok()?.checked_sub(1)?)?;
    if !(1..=9999).contains(&y) || d == 0 || d > month_len {
        return None;
    }
    let before: u32 = lengths.iter().take(m as usize - 1).sum();
    let py = i64::from(y) - 1;
    Some(py * 365 + py / 4 - py / 100 + py / 400 + i64::from(before + d) - 1)
}

/// Python's checks in `date(...)`, `datetime(...)` and `timezone(...)`.
fn valid_timestamp(v: &Value) -> bool {
    match v {
        Value::Date(y, m, d) => days(*y, *m, *d).is_some(),
        Value::DateTime(t) => {
            let (y, m, d) = t.date;
            days(y, m, d).is_some()
                && t.time.0 < 24
                && t.time.1 < 60
                && t.time.2 < 60
                && t.tz.is_none_or(|tz| tz.abs() < 24 * 60)
        }
        _ => false,
    }
}

/// `construct_yaml_int`, on text the int resolver accepted.
fn construct_int(s: &str) -> Result<Value, String> {
    let text: String = s.chars().filter(|c| *c != '_').collect();
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text.as_str()),
    };
    let parse = |digits: &str, radix| i128::from_str_radix(digits, radix).ok();
    let magnitude = if body == "0" {
        Some(0)
    } else if let Some(bin) = body.strip_prefix("0b") {
        parse(bin, 2)
    } else if let Some(hex) = body.strip_prefix("0x") {
        parse(hex, 16)
    } else if body.starts_with('0') {
        parse(body, 8)
    } else if body.contains(':') {
        body.split(':').try_fold(0i128, |acc, part| {
            acc.checked_mul(60)?.checked_add(parse(part, 10)?)
        })
    } else {
        parse(body, 10)
    };
    let magnitude =
        magnitude.ok_or_else(|| format!("the integer {s:?} is invalid or too large"))?;
    Ok(Value::Int(if negative { -magnitude } else { magnitude }))
}

/// `construct_yaml_float`; Rust's `f64` parsing rounds correctly, like Python's.
fn construct_float(s: &str) -> Result<Value, String> {
    let text: String = s
        .chars()
        .filter(|c| *c != '_')
        .collect::<String>()
        .to_lowercase();
    let (sign, body) = match text.as_bytes().first() {
        Some(b'-') => (-1.0, &text[1..]),
        Some(b'+') => (1.0, &text[1..]),
        _ => (1.0, text.as_str()),
    };
    let bad = || format!("the float {s:?} is invalid");
    let value = if body == ".inf" {
        f64::INFINITY
    } else if body == ".nan" {
        return Ok(Value::Float(f64::NAN));
    } else if body.contains(':') {
        let parts: Vec<f64> = body
            .split(':')
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let (mut value, mut base) = (0.0, 1.0);
        for digit in parts.iter().rev() {
            value += digit * base;
            base *= 60.0;
        }
        value
    } else {
        body.trim().parse().map_err(|_| bad())?
    };
    Ok(Value::Float(sign * value))
}

fn construct_bool(s: &str) -> Result<Value, String> {
    let lower = s.to_ascii_lowercase();
    BOOLS
        .iter()
        .find(|(word, _)| *word == lower)
        .map(|(_, b)| Value::Bool(*b))
        .ok_or_else(|| format!("{s:?} is not a boolean"))
}

fn construct_timestamp(s: &str) -> Result<Value, String> {
    timestamp(s, false)
        .filter(valid_timestamp)
        .ok_or_else(|| format!("the timestamp {s:?} is not a valid date or time"))
}

/// A plain, untagged scalar through the implicit resolvers.
fn resolve_plain(s: String) -> Result<Value, String> {
    match implicit_kind(&s) {
        Kind::Null => Ok(Value::Null),
        Kind::Bool => construct_bool(&s),
        Kind::Int => construct_int(&s),
        Kind::Float => construct_float(&s),
        Kind::Timestamp => construct_timestamp(&s),
        Kind::Merge => Err("merge keys (<<) are not supported".into()),
        Kind::ValueTag => Err("a plain '=' is not a value safe_load can construct".into()),
        Kind::Str => Ok(Value::Str(s)),
    }
}

/// The `!!` suffix of a tag in the YAML core namespace, or an error for any other tag.
fn core_tag(tag: &Tag) -> Result<&str, String> {
    match tag.handle.as_str() {
        "tag:yaml.org,2002:" => Ok(tag.suffix.as_str()),
        _ => Err(format!(
            "the tag {}{} is not supported",
            tag.handle, tag.suffix
        )),
    }
}

fn explicit_scalar(tag: &Tag, s: String) -> Result<Value, String> {
    // Explicit tags run the constructor on any text; only the forms the
    // implicit resolver knows are accepted here, so Python's looser `int()` and
    // `float()` parsing never has to be mirrored.
    let expect = |kind: Kind| match implicit_kind(&s) == kind {
        true => Ok(()),
        false => Err(format!("{s:?} is not a valid !!{}", tag.suffix)),
    };
    match core_tag(tag)? {
        "str" => Ok(Value::Str(s)),
        "null" => Ok(Value::Null),
        "bool" => construct_bool(&s),
        "int" => expect(Kind::Int).and_then(|()| construct_int(&s)),
        "float" => expect(Kind::Float).and_then(|()| construct_float(&s)),
        "timestamp" => construct_timestamp(&s),
        other => Err(format!("the tag !!{other} is not supported on a scalar")),
    }
}

fn check_collection_tag(tag: Option<&Tag>, expected: &str) -> Result<(), String> {
    match tag.map(core_tag).transpose()? {
        None => Ok(()),
        Some(suffix) if suffix == expected => Ok(()),
        Some(other) => Err(format!("the tag !!{other} is not supported here")),
    }
}

/// Python `==` between two hashable values (dict keys).
fn py_eq(a: &Value, b: &Value) -> bool {
    py_cmp(a, b) == Some(Ordering::Equal) || matches!((a, b), (Value::Null, Value::Null))
}

fn numeric(v: &Value) -> Option<(i128, f64, bool)> {
    match v {
        Value::Bool(b) => Some((i128::from(*b), f64::from(u8::from(*b)), false)),
        Value::Int(i) => Some((*i, *i as f64, false)),
        Value::Float(f) => Some((0, *f, true)),
        _ => None,
    }
}

/// Python `<` between two dict keys; `None` where Python raises TypeError.
pub(super) fn py_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Date(..), Value::Date(..)) => Some(date_key(a).cmp(&date_key(b))),
        (Value::DateTime(x), Value::DateTime(y)) if x.tz.is_some() == y.tz.is_some() => {
            Some(instant(x).cmp(&instant(y)))
        }
        _ => {
            let ((i, f, float_a), (j, g, float_b)) = (numeric(a)?, numeric(b)?);
            match (float_a, float_b) {
                (false, false) => Some(i.cmp(&j)),
                // Exact for any int a conda file would hold (|i| < 2**53).
                _ => f.partial_cmp(&g),
            }
        }
    }
}

fn date_key(v: &Value) -> (i32, u32, u32) {
    match v {
        Value::Date(y, m, d) => (*y, *m, *d),
        _ => (0, 0, 0),
    }
}

/// Microseconds since 0001-01-01, shifted to UTC for aware values.
fn instant(t: &DateTime) -> i64 {
    let (y, m, d) = t.date;
    let day = days(y, m, d).unwrap_or(0);
    let minutes =
        (day * 24 + i64::from(t.time.0)) * 60 + i64::from(t.time.1) - i64::from(t.tz.unwrap_or(0));
    (minutes * 60 + i64::from(t.time.2)) * 1_000_000 + i64::from(t.micro)
}

struct Loader<'a> {
    parser: Parser<std::str::Chars<'a>>,
    source: &'a str,
}

impl Loader<'_> {
    fn next(&mut self) -> Result<(Event, Marker), String> {
        self.parser
            .next_token()
            .map_err(|e| format!("the conda file is not valid YAML: {e}"))
    }

    fn node(&mut self, event: Event, mark: Marker, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("the conda file nests too deeply".into());
        }
        let at = |e: String| format!("{e} (line {}, column {})", mark.line(), mark.col() + 1);
        let anchored = match &event {
            Event::Scalar(_, _, anchor, _)
            | Event::SequenceStart(anchor, _)
            | Event::MappingStart(anchor, _) => *anchor != 0,
            _ => false,
        };
        if anchored {
            return Err(at("anchors and aliases are not supported".into()));
        }
        match event {
            Event::Alias(_) => Err(at("anchors and aliases are not supported".into())),
            Event::Scalar(s, TScalarStyle::Plain, _, None) => resolve_plain(s).map_err(at),
            Event::Scalar(s, _, _, None) => Ok(Value::Str(s)),
            Event::Scalar(s, _, _, Some(tag)) => explicit_scalar(&tag, s).map_err(at),
            Event::SequenceStart(_, tag) => {
                check_collection_tag(tag.as_ref(), "seq").map_err(at)?;
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        (Event::SequenceEnd, _) => return Ok(Value::Seq(items)),
                        (event, mark) => items.push(self.node(event, mark, depth + 1)?),
                    }
                }
            }
            Event::MappingStart(_, tag) => {
                check_collection_tag(tag.as_ref(), "map").map_err(at)?;
                let mut entries: Vec<(Value, Value)> = Vec::new();
                loop {
                    let (event, key_mark) = self.next()?;
                    if event == Event::MappingEnd {
                        return Ok(Value::Map(entries));
                    }
                    if matches!(&event, Event::Scalar(s, TScalarStyle::Plain, _, None) if s == "<<")
                    {
                        return Err(at("merge keys (<<) are not supported".into()));
                    }
                    // YAML 1.2 allows `: value` with no key; PyYAML only takes `? ` for that.
                    if matches!(&event, Event::Scalar(s, TScalarStyle::Plain, _, None) if s.is_empty())
                        && self.source.chars().nth(key_mark.index()) == Some(':')
                    {
                        return Err(at("a mapping entry has no key".into()));
                    }
                    let key = self.node(event, key_mark, depth + 1)?;
                    let (event, value_mark) = self.next()?;
                    let value = self.node(event, value_mark, depth + 1)?;
                    match key {
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(at("found unhashable key".into()));
                        }
                        Value::Float(f) if f.is_nan() => {
                            return Err(at("a NaN mapping key is not supported".into()));
                        }
                        _ => {}
                    }
                    // A dict keeps the first key object and the last value.
                    match entries.iter_mut().find(|(k, _)| py_eq(k, &key)) {
                        Some(entry) => entry.1 = value,
                        None => entries.push((key, value)),
                    }
                }
            }
            other => Err(at(format!(
                "the conda file is not valid YAML: unexpected {other:?}"
            ))),
        }
    }
}

/// `yaml.safe_load(source)`.
pub(super) fn load(source: &str) -> Result<Value, String> {
    // YAML 1.1 (PyYAML) reads these as line breaks, YAML 1.2 (the parser) as
    // ordinary characters: refuse rather than guess.
    if let Some(c) = source
        .chars()
        .find(|c| matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}'))
    {
        return Err(format!(
            "the conda file contains the line separator U+{:04X}, which is not supported",
            u32::from(c)
        ));
    }
    // PyYAML rejects tabs as separators or indentation; finding which tabs sit
    // harmlessly in quotes or comments would need its scanner, so all are refused.
    if source.contains('\t') {
        return Err("the conda file contains a tab character; indent with spaces (and write \\t inside double quotes)".into());
    }
    // PyYAML's Reader accepts only printable characters.
    let printable = |c: char| matches!(c, '\n' | '\r' | ' '..='~' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..);
    if let Some(c) = source.chars().find(|c| !printable(*c)) {
        return Err(format!(
            "the conda file contains the unacceptable character #x{:04x}",
            u32::from(c)
        ));
    }
    // PyYAML's scanner skips one byte order mark at the very start.
    let source = source.strip_prefix('\u{FEFF}').unwrap_or(source);
    let mut loader = Loader {
        parser: Parser::new_from_str(source),
        source,
    };
    let mut root = None;
    loop {
        match loader.next()? {
            (Event::StreamEnd, _) => return Ok(root.unwrap_or(Value::Null)),
            (Event::DocumentStart, mark) => {
                if root.is_some() {
                    return Err(format!(
                        "the conda file holds more than one YAML document (line {})",
                        mark.line()
                    ));
                }
                let (event, mark) = loader.next()?;
                root = Some(loader.node(event, mark, 0)?);
            }
            _ => {}
        }
    }
}
