//! The Functions custom-handler contract: the request envelope in, the response shape out.
//!
//! The host POSTs `{"Data":{"<binding>":<event>},"Metadata":{…}}` (chunked, no Content-Length) and
//! expects `200` + `application/json` + `{"Outputs":{},"Logs":[…],"ReturnValue":…}`. An empty or
//! non-JSON 200 makes the invocation hang until `functionTimeout`, so every reply is a JSON object.

use serde_json::{Map, Value};
use thiserror::Error;

/// The binding name in `ModelRegistered/function.json`.
pub const EVENT_BINDING: &str = "eventGridEvent";

/// A request that is not a host envelope at all (answered `400`).
#[derive(Debug, Clone, Error, PartialEq)]
pub enum EnvelopeError {
    /// The body is not JSON.
    #[error("the request body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not `{"Data":{…}}`.
    #[error("not a Functions host envelope: {0}")]
    NotAnEnvelope(String),
}

/// Takes the trigger value out of a host envelope. The value itself is not judged here: a malformed
/// event inside a valid envelope is the pipeline's business (acknowledged, not retried).
pub fn event_from_envelope(body: &[u8]) -> Result<Value, EnvelopeError> {
    // Fast path: only `Data` becomes a `Value`; `Metadata` (the host's copy of the trigger and
    // system properties, often larger than the event) is skipped without building it.
    #[derive(serde::Deserialize)]
    struct DataOnly {
        #[serde(rename = "Data")]
        data: Map<String, Value>,
    }
    if let Ok(DataOnly { data }) = serde_json::from_slice::<DataOnly>(body) {
        return take_data_binding(data).ok_or_else(missing_binding);
    }
    // Anything else is an error; build the whole document to say which.
    let envelope: Value =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let Value::Object(envelope) = envelope else {
        return Err(EnvelopeError::NotAnEnvelope(
            "expected a JSON object with a `Data` object".into(),
        ));
    };
    take_binding(envelope).ok_or_else(missing_binding)
}

fn missing_binding() -> EnvelopeError {
    EnvelopeError::NotAnEnvelope(format!(
        "expected `Data.{EVENT_BINDING}` (the binding name in function.json)"
    ))
}

/// `Data.eventGridEvent`; if the binding was renamed, the single value in `Data`.
pub fn take_binding(mut envelope: Map<String, Value>) -> Option<Value> {
    // Exactly `Data`: a bare event has a lower-case `data` object, and must not pass for an envelope.
    match envelope.remove("Data")? {
        Value::Object(data) => take_data_binding(data),
        _ => None,
    }
}

fn take_data_binding(mut data: Map<String, Value>) -> Option<Value> {
    if let Some(value) = data.remove(EVENT_BINDING) {
        return Some(value);
    }
    if let Some(key) = data
        .keys()
        .find(|k| k.eq_ignore_ascii_case(EVENT_BINDING))
        .cloned()
    {
        return data.remove(&key);
    }
    match data.len() {
        1 => data.into_iter().next().map(|(_, value)| value),
        _ => None,
    }
}

/// Whether a JSON document is a host envelope (used by `replay` to tell file formats apart).
pub fn is_envelope(value: &Value) -> bool {
    value
        .as_object()
        .and_then(|o| o.get("Data"))
        .is_some_and(Value::is_object)
}

/// The response body the host expects: `{"Outputs":{},"Logs":[…],"ReturnValue":…}`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostResponse<T> {
    outputs: Map<String, Value>,
    logs: Vec<String>,
    return_value: T,
}

/// The response body the host expects.
pub fn response<T: serde::Serialize>(logs: Vec<String>, return_value: T) -> HostResponse<T> {
    HostResponse {
        outputs: Map::new(),
        logs,
        return_value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_binding_value_is_taken_as_is() {
        let body = br#"{"Data":{"eventGridEvent":"{\"id\":1}"},"Metadata":{}}"#;
        assert_eq!(event_from_envelope(body).unwrap(), json!("{\"id\":1}"));
    }

    #[test]
    fn non_envelopes_are_rejected() {
        assert!(matches!(
            event_from_envelope(b"nope"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            event_from_envelope(b"[1]"),
            Err(EnvelopeError::NotAnEnvelope(_))
        ));
        assert!(matches!(
            event_from_envelope(br#"{"id":"1"}"#),
            Err(EnvelopeError::NotAnEnvelope(_))
        ));
        assert!(matches!(
            event_from_envelope(br#"{"Data":{"a":1,"b":2}}"#),
            Err(EnvelopeError::NotAnEnvelope(_))
        ));
    }
}
