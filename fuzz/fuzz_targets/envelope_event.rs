//! The host envelope and the event parser on arbitrary bytes: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = aml_autodeploy::host::event_from_envelope(data) {
        let _ = aml_autodeploy::event::parse(&event);
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = aml_autodeploy::event::parse(&value);
        let _ = aml_autodeploy::cli::replay::events_in_file(&value.to_string());
    }
});
