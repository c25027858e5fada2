use super::*;
use std::path::Path;

const WS: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";

fn config(yaml: &str) -> Config {
    Config::parse(yaml, Path::new("t.yml")).unwrap()
}

fn event(name: &str, tags: Value, workspace: &str) -> Event {
    crate::event::parse(&json!({
        "id": "e-1", "topic": workspace, "subject": format!("models/{name}:3"),
        "eventType": crate::event::MODEL_REGISTERED, "eventTime": "2024-10-24T14:32:17Z",
        "data": {"modelName": name, "modelVersion": 3, "modelTags": tags}
    }))
    .unwrap()
}

const RULES: &str = r#"
workspace: /subscriptions/S/resourceGroups/RG/providers/Microsoft.MachineLearningServices/workspaces/WS
rules:
  - name: prod-only
    models: ["credit-*"]
    tags: { stage: production }
    github: { repository: o/r, event_type: "deploy-{modelName}" }
  - name: watch
    models: ["fraud*"]
    mode: observe
    github: { repository: o/r, workflow: deploy.yml, inputs: { v: "{modelVersion}", id: "{modelId}" } }
"#;

#[test]
fn decisions_table() {
    let cfg = config(RULES);
    let other_ws = WS.replace("/ws", "/other");
    let cases: Vec<(Event, Facts, &str, &str)> = vec![
        (
            event("credit-a", json!({"stage":"production"}), WS),
            Facts::default(),
            "act",
            "rule prod-only matched",
        ),
        (
            event("credit-a", json!({"stage":"dev"}), WS),
            Facts::default(),
            "skip",
            "tag stage is \"dev\", expected \"production\"",
        ),
        (
            event("credit-a", json!({}), WS),
            Facts::default(),
            "skip",
            "tag stage is missing",
        ),
        (
            event("fraud", json!({}), WS),
            Facts::default(),
            "observe",
            "observe mode",
        ),
        (
            event("credit-a", json!({"stage":"production"}), WS),
            Facts {
                paused: true,
                ..Facts::default()
            },
            "paused",
            "AUTODEPLOY_PAUSED",
        ),
        (
            event("other", json!({}), WS),
            Facts::default(),
            "skip",
            "name other does not match credit-*",
        ),
        (
            event("credit-a", json!({"stage":"production"}), &other_ws),
            Facts::default(),
            "skip",
            "refused",
        ),
    ];
    for (event, facts, label, needle) in cases {
        let d = decide(&event, &cfg, facts);
        assert_eq!(d.label(), label, "{}", d.explain());
        assert!(
            d.explain().contains(needle),
            "{} lacks {needle}",
            d.explain()
        );
    }
}

#[test]
fn non_model_events_are_ignored_by_name() {
    let e = crate::event::parse(&json!({"id":"1","topic":WS,"eventType":"Microsoft.MachineLearningServices.RunCompleted","data":{}})).unwrap();
    let d = decide(&e, &config(RULES), Facts::default());
    assert!(
        d.explain().contains("RunCompleted is a known event type"),
        "{}",
        d.explain()
    );
}

#[test]
fn repository_dispatch_payload_is_exact() {
    let d = decide(
        &event("credit-a", json!({"stage":"production"}), WS),
        &config(RULES),
        Facts::default(),
    );
    let Some(Plan {
        action: ActionPlan::Github(plan),
        ..
    }) = d.plan()
    else {
        panic!()
    };
    let GithubRequest::RepositoryDispatch {
        event_type,
        client_payload,
    } = &plan.request
    else {
        panic!()
    };
    assert_eq!(event_type, "deploy-credit-a");
    assert_eq!(
        client_payload,
        &json!({"modelName":"credit-a","modelVersion":"3","modelId":"azureml:credit-a:3","workspace":WS,
                    "eventId":"e-1","eventTime":"2024-10-24T14:32:17Z","modelTags":{"stage":"production"},"rule":"prod-only"})
    );
}

#[test]
fn huge_tags_are_dropped_to_fit_64_kb() {
    let cfg =
        config("rules: [{name: all, models: ['*'], github: {repository: o/r, event_type: e}}]");
    let big = "x".repeat(70 * 1024);
    let d = decide(
        &event("m", json!({"blob": big}), WS),
        &cfg,
        Facts::default(),
    );
    let plan = d.plan().unwrap();
    assert!(plan.notes[0].contains("modelTags dropped"));
    let ActionPlan::Github(GithubPlan {
        request: GithubRequest::RepositoryDispatch { client_payload, .. },
        ..
    }) = &plan.action
    else {
        panic!()
    };
    assert!(client_payload.to_string().len() < MAX_CLIENT_PAYLOAD_BYTES);
    assert_eq!(client_payload["modelTags"], json!({}));
}

#[test]
fn workflow_inputs_are_rendered() {
    let d = decide(
        &event("fraud", json!({}), WS),
        &config(RULES),
        Facts::default(),
    );
    let ActionPlan::Github(plan) = &d.plan().unwrap().action else {
        panic!("not a github plan")
    };
    let GithubRequest::WorkflowDispatch {
        inputs, git_ref, ..
    } = &plan.request
    else {
        panic!()
    };
    assert_eq!(git_ref, "main");
    assert_eq!(inputs["v"], "3");
    assert_eq!(inputs["id"], "azureml:fraud:3");
}

#[test]
fn first_matching_rule_wins() {
    let cfg = config(
        "rules: [{name: a, models: ['*'], github: {repository: o/a, event_type: e}}, {name: b, models: ['*'], github: {repository: o/b, event_type: e}}]",
    );
    let d = decide(&event("m", json!({}), WS), &cfg, Facts::default());
    assert_eq!(d.plan().unwrap().rule.as_ref(), "a");
}

/// 1,000 rules, one per model family (`r0000` for `fam-0000-*`, …), then seven rules for
/// `credit-*` that want `stage: production`, then one catch-all for `credit-*` on `tier: gold`.
fn many_rules() -> Config {
    let mut yaml = String::from("rules:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
                "  - {{name: r{i:04}, models: ['fam-{i:04}-*'], github: {{repository: o/r, event_type: e}}}}\n"
            ));
    }
    for i in 0..7 {
        yaml.push_str(&format!(
                "  - {{name: prod{i}, models: ['credit-*', 'loan-*'], tags: {{stage: production}}, github: {{repository: o/r, event_type: e}}}}\n"
            ));
    }
    yaml.push_str(
            "  - {name: gold, models: ['credit-*'], tags: {tier: gold}, github: {repository: o/r, event_type: e}}\n",
        );
    config(&yaml)
}

#[test]
fn with_many_rules_the_explanation_names_the_closest_and_counts_the_rest() {
    let cfg = many_rules();
    // (model, tags, label, rules listed in order, what the explanation says)
    type Case<'a> = (&'a str, Value, &'a str, Vec<&'a str>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "nobody",
            json!({}),
            "skip",
            vec!["r0000", "r0001", "r0002"],
            vec!["and 1005 more rules whose name patterns do not match"],
        ),
        (
            "fam-0500",
            json!({}),
            "skip",
            vec!["r0500", "r0501", "r0502"],
            vec![
                "r0500: name fam-0500 does not match fam-0500-*",
                "and 1005 more",
            ],
        ),
        (
            "credit-x",
            json!({"stage": "dev"}),
            "skip",
            vec![
                "prod0", "prod1", "prod2", "prod3", "prod4", "r0000", "r0001", "r0002",
            ],
            vec![
                "prod0: tag stage is \"dev\", expected \"production\"",
                "and 3 more rules whose name patterns match but whose tags do not",
                "and 997 more rules whose name patterns do not match",
            ],
        ),
        (
            "loan-x",
            json!({}),
            "skip",
            vec![
                "prod0", "prod1", "prod2", "prod3", "prod4", "r0000", "r0001", "r0002",
            ],
            vec![
                "tag stage is missing",
                "and 2 more rules whose name patterns match",
                "and 998 more rules whose name patterns do not match",
            ],
        ),
        (
            "fam-0042-a",
            json!({}),
            "act",
            vec![],
            vec!["rule r0042 matched"],
        ),
        (
            "credit-x",
            json!({"stage": "production", "tier": "gold"}),
            "act",
            vec![],
            vec!["rule prod0 matched"],
        ),
        (
            "credit-x",
            json!({"tier": "gold"}),
            "act",
            vec![],
            vec!["rule gold matched"],
        ),
    ];
    for (model, tags, label, listed, needles) in cases {
        let d = decide(&event(model, tags, WS), &cfg, Facts::default());
        let explanation = d.explain();
        assert_eq!(d.label(), label, "{model}: {explanation}");
        for needle in needles {
            assert!(
                explanation.contains(needle),
                "{model}: {explanation} lacks {needle:?}"
            );
        }
        let names: Vec<&str> = match &d {
            Decision::Skip(SkipReason::NoRuleMatched { misses, .. }) => {
                misses.iter().map(|(rule, _)| rule.as_str()).collect()
            }
            _ => vec![],
        };
        assert_eq!(names, listed, "{model}: {explanation}");
        assert!(
            explanation.len() < 1024,
            "{model}: {} bytes",
            explanation.len()
        );
    }
}

#[test]
fn an_explanation_quotes_long_values_and_pattern_lists_in_part() {
    let cfg = config(
        "rules: [{name: t, models: ['m'], tags: {stage: production}, github: {repository: o/r, event_type: e}}, \
             {name: p, models: ['a*', 'b*', 'c*', 'd*', 'e*'], github: {repository: o/r, event_type: e}}]",
    );
    let long = "x".repeat(10_000);
    let d = decide(
        &event("m", json!({"stage": long}), WS),
        &cfg,
        Facts::default(),
    );
    let explanation = d.explain();
    assert!(
        explanation.contains("… (10000 characters), expected \"production\""),
        "{explanation}"
    );
    assert!(
        explanation.contains("p: name m does not match a*, b*, c* (or 2 more patterns)"),
        "{explanation}"
    );
    assert!(explanation.len() < 400, "{explanation}");
}

#[test]
fn a_small_config_is_explained_rule_by_rule() {
    let d = decide(
        &event("other", json!({}), WS),
        &config(RULES),
        Facts::default(),
    );
    assert_eq!(
        d.explain(),
        "skipped: no rule matched other:3 (prod-only: name other does not match credit-*; watch: name other does not match fraud*)"
    );
}

#[test]
fn a_rendered_action_beyond_githubs_limits_is_a_configuration_problem() {
    let inputs: Vec<String> = (0..11).map(|i| format!("i{i}: v")).collect();
    let cfg = config(&format!(
        "rules: [{{name: long, models: ['long-*'], github: {{repository: o/r, event_type: 'deploy-{{modelName}}'}}}}, \
             {{name: many, models: ['many'], github: {{repository: o/r, workflow: d.yml, inputs: {{{}}}}}}}]",
        inputs.join(", ")
    ));
    let ghes = Facts {
        max_workflow_inputs: 10,
        ..Facts::default()
    };
    let long = format!("long-{}", "x".repeat(110));
    // (model, facts, label, what the explanation says)
    let cases = [
        ("long-a", Facts::default(), "act", "rule long matched"),
        (
            long.as_str(),
            Facts::default(),
            "misconfigured",
            "event_type renders to 122 characters; GitHub accepts at most 100",
        ),
        (
            long.as_str(),
            Facts {
                paused: true,
                ..Facts::default()
            },
            "misconfigured",
            "configuration problem",
        ),
        ("many", Facts::default(), "act", "rule many matched"),
        (
            "many",
            ghes,
            "misconfigured",
            "11 workflow_dispatch inputs; the configured GitHub accepts at most 10",
        ),
    ];
    for (model, facts, label, needle) in cases {
        let d = decide(&event(model, json!({}), WS), &cfg, facts);
        assert_eq!(d.label(), label, "{model}: {}", d.explain());
        assert!(d.explain().contains(needle), "{}", d.explain());
        assert_eq!(d.plan().is_none(), label == "misconfigured");
    }
}
