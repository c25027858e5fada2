//! The `az ml` deployment YAML translator on arbitrary YAML: problems, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(yaml) = serde_norway::from_str::<serde_norway::Value>(text)
    {
        let _ = aml_autodeploy::deployment::translate::translate(
            &yaml,
            Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"),
            // Relative paths in the input resolve against the seed layout's folder.
            std::path::Path::new("tests/fixtures/azml/seed/aml_yamls"),
            &aml_autodeploy::config::ConfigFolder::of(std::path::Path::new(
                "tests/fixtures/azml/seed/autodeploy.yml",
            )),
        );
    }
});
