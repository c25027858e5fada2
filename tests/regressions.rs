//! Inputs that once broke a parser (found by `scripts/fuzz.sh`, kept in tests/fuzz-regressions/):
//! each must now be handled without a panic.

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn fuzz_regressions_are_handled() {
    let mut seen = 0;
    for (name, data) in inputs("envelope_event") {
        seen += 1;
        if let Ok(event) = aml_autodeploy::host::event_from_envelope(&data) {
            let _ = aml_autodeploy::event::parse(&event);
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&data) {
            let _ = aml_autodeploy::event::parse(&value);
        }
        let _ = name;
    }
    for (_, data) in inputs("config") {
        seen += 1;
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = aml_autodeploy::config::Config::parse(text, Path::new("autodeploy.yml"));
        }
    }
    for (_, data) in inputs("translate") {
        seen += 1;
        if let Ok(text) = std::str::from_utf8(&data)
            && let Ok(yaml) = serde_norway::from_str::<serde_norway::Value>(text)
        {
            let _ = aml_autodeploy::deployment::translate::translate(
                &yaml,
                None,
                Path::new("tests/fixtures/azml/seed/aml_yamls"),
                &aml_autodeploy::config::ConfigFolder::of(Path::new(
                    "tests/fixtures/azml/seed/autodeploy.yml",
                )),
            );
        }
    }
    // The seed inputs below are always present, so this test cannot pass vacuously.
    assert!(seen >= 3, "no regression inputs found");
}
