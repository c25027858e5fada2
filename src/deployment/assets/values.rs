//! YAML values as az ml reads them: a scalar's text, a mapping of scalars as typed JSON.

use serde_json::{Map, Value};

/// A YAML scalar's text (strings, numbers, booleans).
pub(crate) fn scalar(value: &serde_norway::Value) -> Option<String> {
    match value {
        serde_norway::Value::String(s) => Some(s.clone()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A YAML mapping of names to scalars → JSON, keeping each scalar's type as the SDK sends it
/// (`DEBUG: false` stays `false`, `WORKERS: 4` stays `4`).
pub(crate) fn json_map(value: &serde_norway::Value) -> Option<Map<String, Value>> {
    let map = value.as_mapping()?;
    let mut out = Map::new();
    for (k, v) in map {
        let key = scalar(k)?;
        let v = match v {
            serde_norway::Value::String(s) => Value::String(s.clone()),
            serde_norway::Value::Bool(b) => Value::Bool(*b),
            serde_norway::Value::Number(n) => serde_json::to_value(n).ok()?,
            serde_norway::Value::Null => Value::Null,
            _ => return None,
        };
        out.insert(key, v);
    }
    Some(out)
}
