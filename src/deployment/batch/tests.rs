//! The batch translation's rules one by one (the SDK goldens in `../goldens.rs` cover whole YAMLs).

use super::*;

const WS: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";

fn translated(text: &str) -> Result<DeploymentTemplate, Vec<String>> {
    translate_batch(
        &serde_norway::from_str(text).unwrap(),
        Some(WS),
        Path::new("."),
        &ConfigFolder::of(Path::new("autodeploy.yml")),
    )
}

#[test]
fn compute_in_every_spelling_becomes_the_arm_id() {
    let id = format!("{WS}/computes/cpu");
    for written in ["cpu", "azureml:cpu", id.as_str(), &format!("azureml:{id}")] {
        let t = translated(&format!("compute: {written}")).unwrap();
        assert_eq!(t.body["properties"]["compute"], json!(id), "{written}");
    }
    for bad in [
        "azureml://registries/r/computes/c",
        "a/b",
        "/subscriptions/s/resourceGroups/rg",
    ] {
        let problems = translated(&format!("compute: {bad}")).unwrap_err();
        assert!(problems[0].starts_with("compute: "), "{problems:?}");
    }
}

#[test]
fn bad_input_names_its_yaml_key() {
    let cases = [
        (
            "type: model\nsettings: {mini_batch_size: 1}",
            "compute is required",
        ),
        ("type: pipeline\ncomponent: azureml:c:1", "type: pipeline"),
        ("type: kubernetes", "type: kubernetes"),
        (
            "instance_type: Standard_DS3_v2",
            "`instance_type` is a managed online",
        ),
        (
            "request_settings: {}",
            "`request_settings` is a managed online",
        ),
        ("instance_count: 2", "resources.instance_count"),
        (
            "type: model\ncompute: c\nmini_batch_size: 2",
            "settings.mini_batch_size",
        ),
        (
            "settings: {mini_batch_size: 1}",
            "`settings` needs `type: model`",
        ),
        (
            "type: model\ncompute: c\nsettings: {max_concurrency_per_instance: 2}",
            "settings.mini_batch_size is required",
        ),
        ("output_action: append", "output_action must be"),
        (
            "output_action: summary_only\noutput_file_name: x.csv",
            "output_file_name cannot",
        ),
        ("retry_settings: {timeout: PT30S}", "retry_settings.timeout"),
        ("retry_settings: {tries: 3}", "retry_settings.tries"),
        ("resources: {nodes: 2}", "resources.nodes"),
        (
            "type: model\ncompute: c\nresources: {instance_count: 1}\nsettings: {instance_count: 2, mini_batch_size: 1}",
            "settings.instance_count",
        ),
        ("component: azureml:c:1", "`component` belongs to pipeline"),
        (
            "environment_variables: [a]",
            "environment_variables must be",
        ),
    ];
    for (text, needle) in cases {
        let problems = translated(text).unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{text}: {problems:?}"
        );
    }
}

#[test]
fn settings_are_sent_only_when_set() {
    let t = translated("type: model\ncompute: c").unwrap();
    assert_eq!(
        t.body,
        json!({"tags": {}, "properties": {"compute": format!("{WS}/computes/c"), "properties": {}}})
    );
    let flat = translated("compute: c").unwrap();
    assert_eq!(flat.body["properties"]["environmentVariables"], json!({}));
}
