//! Properties over generated inputs: parsing never panics, events round-trip through both schemas
//! and both encodings, and the rollout arithmetic keeps its invariants.

use proptest::prelude::*;
use serde_json::{Value, json};

use aml_autodeploy::event::{self, EventKind};

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("id"),
            Just("eventType"),
            Just("specversion"),
            Just("data"),
            Just("modelVersion")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("topic".to_string()),
                    Just("source".to_string()),
                    Just("eventType".to_string()),
                    Just("type".to_string()),
                    Just("specversion".to_string()),
                    Just("subject".to_string()),
                    Just("data".to_string()),
                    Just("modelName".to_string()),
                    Just("ModelVersion".to_string()),
                    Just("modelTags".to_string()),
                    Just("Data".to_string()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..8,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn event_parsing_never_panics(value in arbitrary_json()) {
        let _ = event::parse(&value);
        let _ = event::parse(&Value::String(value.to_string()));
        let _ = aml_autodeploy::host::event_from_envelope(value.to_string().as_bytes());
    }

    #[test]
    fn envelope_parsing_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = aml_autodeploy::host::event_from_envelope(&bytes);
    }

    #[test]
    fn config_parsing_never_panics(text in "(\\PC|\\n){0,300}") {
        let _ = aml_autodeploy::config::Config::parse(&text, std::path::Path::new("autodeploy.yml"));
    }

    #[test]
    fn model_events_round_trip_through_both_schemas_and_encodings(
        name in "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,30}",
        version in "[0-9]{1,6}|[a-zA-Z0-9][a-zA-Z0-9._-]{0,20}",
        numeric in any::<bool>(),
        tags in prop::collection::btree_map("[a-z]{1,8}", "[ -~]{0,12}", 0..5),
        pascal in any::<bool>(),
    ) {
        let (n, v, t) = if pascal { ("ModelName", "ModelVersion", "ModelTags") } else { ("modelName", "modelVersion", "modelTags") };
        let version_value = match version.parse::<u64>() {
            Ok(number) if numeric && number.to_string() == version => json!(number),
            _ => json!(version),
        };
        let ws = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";
        let data = json!({ n: name, v: version_value, t: tags });
        let grid = json!({"id": "e1", "topic": ws, "subject": format!("models/{name}:{version}"),
                          "eventType": event::MODEL_REGISTERED, "eventTime": "2026-11-26T10:00:00Z", "data": data});
        let cloud = json!({"specversion": "1.0", "id": "e1", "source": ws, "type": event::MODEL_REGISTERED,
                           "time": "2026-11-26T10:00:00Z", "data": data});
        for value in [grid.clone(), cloud.clone(), Value::String(grid.to_string()), json!([cloud])] {
            let parsed = event::parse(&value).unwrap();
            let EventKind::ModelRegistered(model) = parsed.kind else { panic!("not a model event") };
            prop_assert_eq!(model.name.as_ref(), name.as_str());
            prop_assert_eq!(model.version.as_ref(), version.as_str());
            prop_assert_eq!(model.tags.len(), tags.len());
            prop_assert!(parsed.source.same_as(&aml_autodeploy::event::WorkspaceId::parse(ws).unwrap()));
        }
    }

    #[test]
    fn deployment_names_are_always_valid(wanted in "[ -~]{0,60}", version in "[a-zA-Z0-9._-]{0,40}") {
        let name = aml_autodeploy::actions::azureml::deployment_name(&wanted, &version);
        prop_assert!(aml_autodeploy::config::valid_azureml_name(&name), "{wanted:?} → {name:?}");
    }

    #[test]
    fn canary_splits_always_sum_to_100(
        shares in prop::collection::btree_map("[a-z]{1,6}", 1u32..100, 1..5),
        canary in 1u32..100,
    ) {
        let split = aml_autodeploy::actions::azureml::rollout::canary_split(&shares, "new-deployment", canary);
        prop_assert_eq!(split.values().sum::<u32>(), 100);
        prop_assert_eq!(split.get("new-deployment").copied(), Some(canary));
    }
}
