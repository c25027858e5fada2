//! Event Grid and CloudEvents 1.0 envelopes → a typed [`Event`].
//!
//! No crate models Event Grid system events for consumers (the SDK crate is publisher-only), so the
//! envelope is read from `serde_json::Value` by hand. Keys are matched case-insensitively at every
//! level: the official samples use PascalCase data keys (`ModelName`), live events camelCase, and an
//! SDK-serialized envelope may arrive PascalCase (`EventType`).

mod types;

use std::borrow::Cow;

use serde_json::{Map, Value};
use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use types::{EventId, EventType, ModelName, ModelVersion, WorkspaceId};

/// The Azure ML event type this product acts on.
pub const MODEL_REGISTERED: &str = "Microsoft.MachineLearningServices.ModelRegistered";

/// Azure ML and Event Grid event types we recognise by name (and acknowledge as ignored).
pub const KNOWN_OTHER_TYPES: &[&str] = &[
    "Microsoft.MachineLearningServices.ModelDeployed",
    "Microsoft.MachineLearningServices.RunCompleted",
    "Microsoft.MachineLearningServices.RunStatusChanged",
    "Microsoft.MachineLearningServices.DatasetDriftDetected",
    "Microsoft.EventGrid.SubscriptionValidationEvent",
    "Microsoft.EventGrid.SubscriptionDeletedEvent",
];

/// Which envelope schema an event arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// The Event Grid schema (`eventType`, `topic`, `eventTime`).
    EventGrid,
    /// CloudEvents 1.0 (`type`, `source`, `time`).
    CloudEvents,
}

impl Schema {
    /// Short name for logs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Schema::EventGrid => "EventGrid",
            Schema::CloudEvents => "CloudEvents",
        }
    }
}

/// One parsed event, whatever its type.
#[derive(Debug, Clone)]
pub struct Event {
    /// The envelope's `id`.
    pub id: EventId,
    /// The envelope schema.
    pub schema: Schema,
    /// `topic` (EventGrid) or `source` (CloudEvents): for Azure ML, the workspace ARM id.
    pub source: WorkspaceId,
    /// `subject`, if any.
    pub subject: Option<String>,
    /// `eventTime` / `time`, verbatim (the extension's formatting differs between versions).
    pub time_raw: Option<String>,
    /// The same time, parsed, when it is valid RFC 3339.
    pub time: Option<OffsetDateTime>,
    /// The envelope's event type.
    pub event_type: EventType,
    /// What the event says, by type.
    pub kind: EventKind,
}

/// The type-specific part of an event.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// `Microsoft.MachineLearningServices.ModelRegistered`.
    ModelRegistered(ModelRegistered),
    /// Any other type: recognised by name and acknowledged as ignored.
    Other {
        /// Whether the type is one we know (an Azure ML or Event Grid system event).
        known: bool,
    },
}

/// The data of a ModelRegistered event.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRegistered {
    /// `modelName`.
    pub name: ModelName,
    /// `modelVersion` (string or number on the wire).
    pub version: ModelVersion,
    /// `modelTags` (empty when absent).
    pub tags: Map<String, Value>,
    /// `modelProperties` (empty when absent).
    pub properties: Map<String, Value>,
}

impl ModelRegistered {
    /// The Azure ML CLI reference: `azureml:{name}:{version}`.
    pub fn model_id(&self) -> String {
        format!("azureml:{}:{}", self.name, self.version)
    }

    /// A tag's value as text (numbers and booleans stringified), matched case-sensitively by key
    /// first, then case-insensitively.
    pub fn tag(&self, key: &str) -> Option<String> {
        let value = self.tags.get(key).or_else(|| get_ci(&self.tags, key))?;
        Some(match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })
    }
}

/// Why an event could not be understood. Retrying cannot fix any of these: the handler records,
/// logs and acknowledges them.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum EventError {
    /// The event is a string that is not JSON.
    #[error("the event is a string that is not valid JSON: {0}")]
    NotJson(String),
    /// The event is not a JSON object.
    #[error("the event is not a JSON object (got {0})")]
    NotAnObject(&'static str),
    /// Neither `eventType` (EventGrid) nor `specversion` + `type` (CloudEvents) is present.
    #[error(
        "the event has neither `eventType` (Event Grid schema) nor `specversion` and `type` (CloudEvents 1.0)"
    )]
    UnknownSchema,
    /// A required envelope or data field is absent.
    #[error("the event has no `{0}`")]
    Missing(&'static str),
    /// A field is present but unusable.
    #[error("`{field}` is invalid: {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Parses one event (object, or a JSON string holding one; a one-element array is unwrapped).
pub fn parse(value: &Value) -> Result<Event, EventError> {
    let decoded = decode_strings(value)?;
    let value = match decoded.as_ref() {
        Value::Array(items) if items.len() == 1 => &items[0],
        other => other,
    };
    let Value::Object(obj) = value else {
        return Err(EventError::NotAnObject(json_kind(value)));
    };

    let (schema, type_key, source_key, time_key) = if get_ci(obj, "specversion").is_some() {
        (Schema::CloudEvents, "type", "source", "time")
    } else if get_ci(obj, "eventType").is_some() {
        (Schema::EventGrid, "eventType", "topic", "eventTime")
    } else {
        return Err(EventError::UnknownSchema);
    };
    if schema == Schema::CloudEvents {
        let version = get_ci(obj, "specversion").and_then(Value::as_str);
        if version != Some("1.0") {
            return Err(EventError::Invalid {
                field: "specversion",
                reason: format!("only CloudEvents 1.0 is supported, got {version:?}"),
            });
        }
    }

    let event_type = EventType::parse(required_str(obj, type_key, static_name(type_key))?)
        .map_err(|reason| EventError::Invalid {
            field: static_name(type_key),
            reason,
        })?;
    let id =
        EventId::parse(required_str(obj, "id", "id")?).map_err(|reason| EventError::Invalid {
            field: "id",
            reason,
        })?;
    let source = WorkspaceId::parse(required_str(obj, source_key, static_name(source_key))?)
        .map_err(|reason| EventError::Invalid {
            field: static_name(source_key),
            reason,
        })?;
    let subject = optional_str(obj, "subject")?;
    let time_raw = optional_str(obj, time_key)?;
    let time = time_raw
        .as_deref()
        .and_then(|raw| OffsetDateTime::parse(raw, &Rfc3339).ok());

    let kind = if event_type.as_ref().eq_ignore_ascii_case(MODEL_REGISTERED) {
        let data = event_data(obj, schema)?;
        EventKind::ModelRegistered(parse_model_registered(data.as_deref(), subject.as_deref())?)
    } else {
        EventKind::Other {
            known: KNOWN_OTHER_TYPES
                .iter()
                .any(|t| t.eq_ignore_ascii_case(event_type.as_ref())),
        }
    };

    Ok(Event {
        id,
        schema,
        source,
        subject,
        time_raw,
        time,
        event_type,
        kind,
    })
}

/// The Functions host (and people pasting events) may hand us the event as a JSON string, possibly
/// encoded twice; decode until it is not a string any more.
fn decode_strings(value: &Value) -> Result<Cow<'_, Value>, EventError> {
    let mut current = Cow::Borrowed(value);
    for _ in 0..2 {
        match current.as_ref() {
            Value::String(text) => {
                current = Cow::Owned(
                    serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?,
                );
            }
            _ => return Ok(current),
        }
    }
    match current.as_ref() {
        Value::String(_) => Err(EventError::NotAnObject("a string encoded more than twice")),
        _ => Ok(current),
    }
}

/// `data` as an object: absent → None; a JSON string holding an object is decoded; CloudEvents
/// `data_base64` is decoded when it holds JSON.
fn event_data(
    obj: &Map<String, Value>,
    schema: Schema,
) -> Result<Option<Cow<'_, Map<String, Value>>>, EventError> {
    let data = match get_ci(obj, "data") {
        Some(Value::Null) | None => {
            if schema == Schema::CloudEvents
                && let Some(encoded) = get_ci(obj, "data_base64")
            {
                let text = encoded.as_str().ok_or(EventError::Invalid {
                    field: "data_base64",
                    reason: "not a string".into(),
                })?;
                let bytes = base64_decode(text).ok_or(EventError::Invalid {
                    field: "data_base64",
                    reason: "not valid base64".into(),
                })?;
                let value: Value =
                    serde_json::from_slice(&bytes).map_err(|e| EventError::Invalid {
                        field: "data_base64",
                        reason: format!("does not hold JSON: {e}"),
                    })?;
                value
            } else {
                return Ok(None);
            }
        }
        Some(Value::String(text)) => {
            serde_json::from_str(text).map_err(|_| EventError::Invalid {
                field: "data",
                reason: "a string that is not a JSON object".into(),
            })?
        }
        Some(Value::Object(map)) => return Ok(Some(Cow::Borrowed(map))),
        Some(other) => other.clone(),
    };
    match data {
        Value::Object(map) => Ok(Some(Cow::Owned(map))),
        other => Err(EventError::Invalid {
            field: "data",
            reason: format!("expected an object, got {}", json_kind(&other)),
        }),
    }
}

fn parse_model_registered(
    data: Option<&Map<String, Value>>,
    subject: Option<&str>,
) -> Result<ModelRegistered, EventError> {
    let empty = Map::new();
    let data = data.unwrap_or(&empty);
    // The subject is `models/{name}:{version}`; names cannot contain ':' but versions are free text,
    // so split on the last ':'.
    let from_subject = subject
        .and_then(|s| s.strip_prefix("models/"))
        .and_then(|rest| rest.rsplit_once(':'));

    let name = match get_ci(data, "modelName") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => match from_subject {
            Some((name, _)) => name.to_string(),
            None => return Err(EventError::Missing("data.modelName")),
        },
        Some(other) => {
            return Err(EventError::Invalid {
                field: "data.modelName",
                reason: format!("expected a string, got {}", json_kind(other)),
            });
        }
    };
    let version = match get_ci(data, "modelVersion") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => v.to_string(),
            None => {
                return Err(EventError::Invalid {
                    field: "data.modelVersion",
                    reason: format!("{n} is not a whole, non-negative number"),
                });
            }
        },
        Some(Value::Null) | None => match from_subject {
            Some((_, version)) => version.to_string(),
            None => return Err(EventError::Missing("data.modelVersion")),
        },
        Some(other) => {
            return Err(EventError::Invalid {
                field: "data.modelVersion",
                reason: format!("expected a string or a number, got {}", json_kind(other)),
            });
        }
    };
    let name = ModelName::parse(&name).map_err(|reason| EventError::Invalid {
        field: "data.modelName",
        reason,
    })?;
    let version = ModelVersion::parse(&version).map_err(|reason| EventError::Invalid {
        field: "data.modelVersion",
        reason,
    })?;
    Ok(ModelRegistered {
        name,
        version,
        tags: object_or_empty(get_ci(data, "modelTags"), "data.modelTags")?,
        properties: object_or_empty(get_ci(data, "modelProperties"), "data.modelProperties")?,
    })
}

fn object_or_empty(
    value: Option<&Value>,
    field: &'static str,
) -> Result<Map<String, Value>, EventError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(other) => Err(EventError::Invalid {
            field,
            reason: format!("expected an object, got {}", json_kind(other)),
        }),
    }
}

/// Case-insensitive key lookup: an exact match wins, then any ASCII-case-insensitive one.
pub fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a str, EventError> {
    match get_ci(obj, key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) | Some(Value::Null) | None => Err(EventError::Missing(field)),
        Some(other) => Err(EventError::Invalid {
            field,
            reason: format!("expected a string, got {}", json_kind(other)),
        }),
    }
}

fn optional_str(obj: &Map<String, Value>, key: &'static str) -> Result<Option<String>, EventError> {
    match get_ci(obj, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(EventError::Invalid {
            field: key,
            reason: format!("expected a string, got {}", json_kind(other)),
        }),
    }
}

fn static_name(key: &str) -> &'static str {
    match key {
        "type" => "type",
        "eventType" => "eventType",
        "source" => "source",
        "topic" => "topic",
        "time" => "time",
        _ => "eventTime",
    }
}

/// A short name of a JSON value's kind, for error messages (never the value: it may be large).
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Standard base64, padded or not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let clean: String = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && *c != '=')
        .collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(clean)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WS: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";

    fn model(event: &Event) -> &ModelRegistered {
        match &event.kind {
            EventKind::ModelRegistered(m) => m,
            other => panic!("not a model event: {other:?}"),
        }
    }

    #[test]
    fn official_docs_sample_with_pascal_case_and_numeric_version_parses() {
        let raw = include_str!("../../tests/fixtures/model_registered.eventgrid.json");
        let event = parse(&serde_json::from_str(raw).unwrap()).unwrap();
        assert_eq!(event.schema, Schema::EventGrid);
        let m = model(&event);
        assert_eq!(m.name.as_ref(), "sklearn_regression_model");
        assert_eq!(m.version.as_ref(), "20");
        assert_eq!(m.tag("area").as_deref(), Some("diabetes"));
    }

    #[test]
    fn cloudevents_sample_parses_with_source_as_workspace() {
        let raw = include_str!("../../tests/fixtures/model_registered.cloudevents.json");
        let event = parse(&serde_json::from_str(raw).unwrap()).unwrap();
        assert_eq!(event.schema, Schema::CloudEvents);
        assert!(
            event
                .source
                .as_ref()
                .ends_with("/workspaces/{workspace-name}")
        );
        assert_eq!(model(&event).version.as_ref(), "20");
    }

    #[test]
    fn sdk_sample_array_of_one_parses() {
        let raw = include_str!("../../tests/fixtures/model_registered.eventgrid.sdk-test.json");
        let event = parse(&serde_json::from_str(raw).unwrap()).unwrap();
        assert_eq!(model(&event).version.as_ref(), "3");
        assert!(event.time.is_some());
    }

    #[test]
    fn event_as_json_string_is_decoded_even_twice() {
        let inner = json!({"id":"1","topic":WS,"subject":"models/m:1","eventType":MODEL_REGISTERED,
                           "data":{"modelName":"m","modelVersion":"1"}});
        let once = Value::String(inner.to_string());
        let twice = Value::String(once.to_string());
        assert_eq!(model(&parse(&once).unwrap()).name.as_ref(), "m");
        assert_eq!(model(&parse(&twice).unwrap()).name.as_ref(), "m");
    }

    #[test]
    fn name_and_version_fall_back_to_the_subject_split_on_the_last_colon() {
        let e = json!({"id":"1","topic":WS,"subject":"models/my:model:v2","eventType":MODEL_REGISTERED,"data":{}});
        let err = parse(&e).unwrap_err();
        // ':' is not allowed in model names, so this subject is refused rather than misread.
        assert!(
            matches!(
                err,
                EventError::Invalid {
                    field: "data.modelName",
                    ..
                }
            ),
            "{err:?}"
        );
        let e = json!({"id":"1","topic":WS,"subject":"models/my-model:2024.1","eventType":MODEL_REGISTERED});
        let m = parse(&e).unwrap();
        assert_eq!(model(&m).name.as_ref(), "my-model");
        assert_eq!(model(&m).version.as_ref(), "2024.1");
    }

    #[test]
    fn other_event_types_are_recognised_by_name() {
        let raw = include_str!("../../tests/fixtures/run_completed.eventgrid.json");
        let event = parse(&serde_json::from_str(raw).unwrap()).unwrap();
        assert!(matches!(event.kind, EventKind::Other { known: true }));
    }

    #[test]
    fn malformed_events_are_rejected_with_the_reason() {
        let cases = [
            (json!("not json {"), "not valid JSON"),
            (json!(42), "not a JSON object"),
            (json!({"hello":"world"}), "neither"),
            (json!({"eventType":MODEL_REGISTERED,"topic":WS}), "no `id`"),
            (json!({"id":"1","eventType":MODEL_REGISTERED}), "no `topic`"),
            (
                json!({"id":"1","topic":WS,"eventType":MODEL_REGISTERED,"data":{"modelName":"m"}}),
                "modelVersion",
            ),
            (
                json!({"id":"1","topic":WS,"eventType":MODEL_REGISTERED,"data":{"modelName":"m","modelVersion":1.5}}),
                "whole",
            ),
            (
                json!({"id":"1","topic":WS,"eventType":MODEL_REGISTERED,"data":{"modelName":7,"modelVersion":"1"}}),
                "expected a string",
            ),
            (
                json!({"id":"1","topic":WS,"eventType":MODEL_REGISTERED,"data":[1]}),
                "expected an object",
            ),
            (
                json!({"specversion":"0.3","type":MODEL_REGISTERED,"source":WS,"id":"1"}),
                "1.0",
            ),
        ];
        for (input, needle) in cases {
            let err = parse(&input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input} → {err}");
        }
    }

    #[test]
    fn base64_data_is_decoded_for_cloudevents() {
        // {"modelName":"m","modelVersion":"4"}
        let e = json!({"specversion":"1.0","type":MODEL_REGISTERED,"source":WS,"id":"1",
                       "data_base64":"eyJtb2RlbE5hbWUiOiJtIiwibW9kZWxWZXJzaW9uIjoiNCJ9"});
        assert_eq!(model(&parse(&e).unwrap()).version.as_ref(), "4");
    }
}
