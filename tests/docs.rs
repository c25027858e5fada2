//! The documentation cannot drift from the code: every YAML example in `README.md` and `docs/` is
//! loaded the way the program loads it, every YAML file under `examples/` too, and every link
//! between the pages points at a file and heading that exist.
//!
//! Each ```` ```yaml ```` fence is preceded by a marker naming what it is (`docs/README.md` lists
//! them), e.g. `<!-- example: rule -->`. A fence without a known marker fails, so a new example
//! cannot skip the check.

use std::fmt;
use std::path::{Path, PathBuf};

use aml_autodeploy::config::Config;
use serde_norway::{Mapping, Value};

/// What an example is, and so how it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A whole `autodeploy.yml`.
    Config,
    /// One rule or a list of rules (the items of `rules:`).
    Rule,
    /// A rule's `gate:` section.
    Gate,
    /// An `azureml:` rule's `rollout:` section.
    Rollout,
    /// The top-level `notify:` section.
    Notify,
    /// An `az ml` managed online deployment YAML.
    Deployment,
    /// An `az ml` batch deployment YAML.
    BatchDeployment,
    /// A GitHub Actions workflow.
    Workflow,
}

impl Kind {
    fn parse(word: &str) -> Option<Kind> {
        Some(match word {
            "config" => Kind::Config,
            "rule" => Kind::Rule,
            "gate" => Kind::Gate,
            "rollout" => Kind::Rollout,
            "notify" => Kind::Notify,
            "deployment" => Kind::Deployment,
            "batch-deployment" => Kind::BatchDeployment,
            "workflow" => Kind::Workflow,
            _ => return None,
        })
    }
}

/// A marker: the kind, and for a documented mistake whether it must be refused and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    kind: Kind,
    /// `Some` for `invalid`: the message the docs claim (empty when they claim none).
    refused_with: Option<String>,
}

impl Marker {
    /// Parses the inside of `<!-- example: … -->`.
    fn parse(spec: &str) -> Result<Marker, String> {
        let spec = spec.trim();
        let Some(rest) = spec.strip_prefix("invalid") else {
            return Kind::parse(spec)
                .map(|kind| Marker {
                    kind,
                    refused_with: None,
                })
                .ok_or_else(|| format!("unknown example kind {spec:?}"));
        };
        let (kind, message) = match rest.split_once(':') {
            Some((kind, message)) => (kind.trim(), message.trim()),
            None => (rest.trim(), ""),
        };
        let kind = if kind.is_empty() {
            Kind::Config
        } else {
            Kind::parse(kind).ok_or_else(|| format!("unknown example kind {kind:?}"))?
        };
        Ok(Marker {
            kind,
            refused_with: Some(message.to_string()),
        })
    }
}

/// One YAML fence of a page.
struct Example {
    /// The page, relative to the crate root.
    file: String,
    /// The line of the opening fence (1-based).
    line: usize,
    marker: Marker,
    text: String,
}

impl fmt::Display for Example {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({:?})", self.file, self.line, self.marker.kind)
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `README.md` and every page under `docs/`, relative to the crate root.
fn pages() -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir() {
                walk(&path, &format!("{prefix}{name}/"), out);
            } else if name.ends_with(".md") {
                out.push(format!("{prefix}{name}"));
            }
        }
    }
    let mut pages = vec!["README.md".to_string()];
    walk(&root().join("docs"), "docs/", &mut pages);
    pages.sort();
    pages
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// The opening fence of a code block: its backticks (or tildes) and its info string.
fn opening_fence(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim_start();
    let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let fence_len = trimmed.chars().take_while(|c| *c == fence_char).count();
    (fence_len >= 3).then(|| trimmed.split_at(fence_len))
}

/// The YAML examples of one page, and every marker or fence problem found in it.
fn examples(file: &str, text: &str) -> (Vec<Example>, Vec<String>) {
    let mut examples = Vec::new();
    let mut problems = Vec::new();
    let mut pending: Option<(usize, Result<Marker, String>)> = None;
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let number = index + 1;
        if let Some(spec) = line
            .trim()
            .strip_prefix("<!-- example:")
            .and_then(|rest| rest.strip_suffix("-->"))
        {
            if let Some((at, _)) = pending.replace((number, Marker::parse(spec))) {
                problems.push(format!(
                    "{file}:{at}: example marker not followed by a YAML fence"
                ));
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let marker = pending.take();
        let Some((fence, info)) = opening_fence(line) else {
            if let Some((at, _)) = marker {
                problems.push(format!(
                    "{file}:{at}: example marker not followed by a YAML fence"
                ));
            }
            continue;
        };
        let is_yaml = matches!(
            info.split_whitespace().next(),
            Some("yaml" | "yml" | "YAML" | "YML")
        );
        let mut body = Vec::new();
        for (_, line) in lines.by_ref() {
            let trimmed = line.trim_start();
            if trimmed.starts_with(fence) && trimmed[fence.len()..].trim().is_empty() {
                break;
            }
            body.push(line);
        }
        match (is_yaml, marker) {
            (true, Some((_, Ok(marker)))) => examples.push(Example {
                file: file.to_string(),
                line: number,
                marker,
                text: body.join("\n") + "\n",
            }),
            (true, Some((at, Err(e)))) => problems.push(format!("{file}:{at}: {e}")),
            (true, None) => problems.push(format!(
                "{file}:{number}: YAML fence without an `<!-- example: KIND -->` marker on the line before"
            )),
            (false, Some((at, _))) => {
                problems.push(format!("{file}:{at}: example marker not followed by a YAML fence"));
            }
            (false, None) => {}
        }
    }
    if let Some((at, _)) = pending {
        problems.push(format!(
            "{file}:{at}: example marker not followed by a YAML fence"
        ));
    }
    (examples, problems)
}

/// Removes the common indentation, so a fragment shown at its place in a file parses alone.
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn yaml(text: &str) -> Result<Value, Vec<String>> {
    serde_norway::from_str(&dedent(text)).map_err(|e| vec![format!("not valid YAML: {e}")])
}

/// `{key: X}` → `X`, so a fragment may be shown with or without its key.
fn unwrap_key(value: Value, key: &str) -> Value {
    match value {
        Value::Mapping(map) if map.len() == 1 && map.contains_key(key) => map[key].clone(),
        other => other,
    }
}

fn mapping(pairs: Vec<(&str, Value)>) -> Value {
    let mut map = Mapping::new();
    for (k, v) in pairs {
        map.insert(Value::from(k), v);
    }
    Value::Mapping(map)
}

fn github_rule() -> Value {
    serde_norway::from_str(
        "{name: docs-github, models: ['*'], github: {repository: contoso/ml-deploy, event_type: deploy-model}}",
    )
    .unwrap()
}

fn azureml_rule(deployment: &str) -> Value {
    mapping(vec![
        ("name", "docs-direct".into()),
        ("models", Value::Sequence(vec!["*".into()])),
        (
            "azureml",
            mapping(vec![
                ("endpoint", "docs-ep".into()),
                ("deployment", deployment.into()),
            ]),
        ),
    ])
}

fn rules(rules: Vec<Value>) -> Value {
    mapping(vec![("rules", Value::Sequence(rules))])
}

/// Writes the files the config's rules refer to that are not in `dir` yet, from `examples/`.
fn provide_referenced_files(config: &str, dir: &Path) {
    let Ok(value) = serde_norway::from_str::<Value>(config) else {
        return; // the loader reports it
    };
    let Some(Value::Sequence(rules)) = value.get("rules") else {
        return;
    };
    let examples = root().join("examples");
    for azureml in rules.iter().filter_map(|r| r.get("azureml")) {
        let deployment = if azureml.get("batch_endpoint").is_some() {
            "deployments/churn-batch.yml"
        } else {
            "deployments/churn.yml"
        };
        let wanted = [
            (azureml.get("deployment"), deployment),
            (
                azureml.get("smoke_test").and_then(|s| s.get("request")),
                "requests/churn.json",
            ),
        ];
        for (path, example) in wanted {
            let Some(path) = path.and_then(Value::as_str) else {
                continue;
            };
            let target = dir.join(path);
            if !target.exists() {
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::copy(examples.join(example), &target).unwrap();
            }
        }
        if let Some(path) = azureml.get("deployment").and_then(Value::as_str) {
            provide_deployment_files(&dir.join(path));
        }
    }
}

/// Writes the local files a deployment YAML names that do not exist yet, from `examples/deployments/`:
/// a local `code_configuration.code` folder (a copy of `scripts/`) and an `environment.conda_file`
/// (a copy of `environments/churn-env.yml`).
fn provide_deployment_files(deployment: &Path) {
    let Ok(text) = std::fs::read_to_string(deployment) else {
        return;
    };
    let Ok(value) = serde_norway::from_str::<Value>(&text) else {
        return; // the loader reports it
    };
    let base = deployment.parent().unwrap();
    let examples = root().join("examples/deployments");
    let code = value
        .get("code_configuration")
        .and_then(|c| c.get("code"))
        .and_then(Value::as_str)
        .filter(|c| !c.starts_with("azureml:") && !c.contains("://"));
    if let Some(code) = code
        && !base.join(code).exists()
    {
        // The example folder of that name, else the one holding the scoring script (the online
        // `scripts/` or the batch `batch-scripts/`).
        let script = value
            .get("code_configuration")
            .and_then(|c| c.get("scoring_script"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let named = examples.join(code);
        let source = if named.join(script).is_file() {
            named
        } else if examples.join("batch-scripts").join(script).is_file() {
            examples.join("batch-scripts")
        } else {
            examples.join("scripts")
        };
        copy_dir(&source, &base.join(code));
    }
    let conda = value
        .get("environment")
        .and_then(|e| e.get("conda_file"))
        .and_then(Value::as_str);
    if let Some(conda) = conda
        && !base.join(conda).exists()
    {
        let target = base.join(conda);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(examples.join("environments/churn-env.yml"), &target).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

/// Loads `text` as `kind`; `Err` holds every problem reported.
fn load(kind: Kind, text: &str) -> Result<(), Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let config = match kind {
        Kind::Workflow => return workflow(text),
        Kind::Config => text.to_string(),
        Kind::Rule => match yaml(text)? {
            Value::Sequence(items) => to_text(&rules(items)),
            rule => to_text(&rules(vec![rule])),
        },
        Kind::Gate => {
            let mut rule = github_rule();
            rule["gate"] = unwrap_key(yaml(text)?, "gate");
            to_text(&rules(vec![rule]))
        }
        Kind::Rollout => {
            let mut rule = azureml_rule("deployments/docs.yml");
            rule["azureml"]["rollout"] = unwrap_key(yaml(text)?, "rollout");
            to_text(&rules(vec![rule]))
        }
        Kind::Notify => {
            let mut config = rules(vec![github_rule()]);
            config["notify"] = unwrap_key(yaml(text)?, "notify");
            to_text(&config)
        }
        Kind::Deployment => {
            let path = dir.path().join("deployments/example.yml");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, dedent(text)).unwrap();
            to_text(&rules(vec![azureml_rule("deployments/example.yml")]))
        }
        Kind::BatchDeployment => {
            let path = dir.path().join("deployments/example.yml");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, dedent(text)).unwrap();
            let mut rule = azureml_rule("deployments/example.yml");
            let azureml = rule["azureml"].as_mapping_mut().unwrap();
            azureml.remove("endpoint");
            azureml.insert("batch_endpoint".into(), "docs-batch".into());
            to_text(&rules(vec![rule]))
        }
    };
    provide_referenced_files(&config, dir.path());
    let path = dir.path().join("autodeploy.yml");
    std::fs::write(&path, &config).unwrap();
    let problems: Vec<String> = match Config::load(&path) {
        Ok(_) => return Ok(()),
        Err(e) => e
            .lines()
            .into_iter()
            .filter(|p| !unset_setting(p))
            .collect(),
    };
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Loads the deployment YAML at `path` (whose local files are beside it) as a direct-deployment
/// rule's deployment file, from a config read as if it were beside it (referenced files stay
/// inside the config file's folder; nothing is written there).
fn deployment_in_place(path: &Path, batch: bool) -> Result<(), Vec<String>> {
    let folder = path.parent().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let mut rule = azureml_rule(name);
    if batch {
        let azureml = rule["azureml"].as_mapping_mut().unwrap();
        azureml.remove("endpoint");
        azureml.insert("batch_endpoint".into(), "docs-batch".into());
    }
    Config::parse(
        &to_text(&rules(vec![rule])),
        &folder.join("autodeploy.docs-check.yml"),
    )
    .map(drop)
    .map_err(|e| e.lines())
}

fn to_text(value: &Value) -> String {
    serde_norway::to_string(value).unwrap()
}

/// `notify[i].url_env: the setting NAME is not set`, for a NAME this process does not have: an
/// example names an app setting the test cannot set (`unsafe_code` forbids `set_var`).
fn unset_setting(problem: &str) -> bool {
    problem
        .rsplit_once(".url_env: the setting ")
        .and_then(|(_, rest)| rest.strip_suffix(" is not set"))
        .is_some_and(|name| std::env::var_os(name).is_none())
}

fn workflow(text: &str) -> Result<(), Vec<String>> {
    let value = yaml(text)?;
    let missing: Vec<String> = ["on", "jobs"]
        .into_iter()
        .filter(|key| value.get(*key).is_none())
        .map(|key| format!("a workflow needs `{key}`"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// Checks one example against its marker; `Err` says what is wrong.
fn check(example: &Example) -> Result<(), String> {
    let result = load(example.marker.kind, &example.text);
    match (&example.marker.refused_with, result) {
        (None, Ok(())) => Ok(()),
        (None, Err(problems)) => Err(format!("refused:\n    {}", problems.join("\n    "))),
        (Some(_), Ok(())) => Err("documented as refused, but it loads".into()),
        (Some(claim), Err(problems)) => {
            if problems.iter().any(|p| p.contains(claim.as_str())) {
                Ok(())
            } else {
                Err(format!(
                    "refused, but not with {claim:?}:\n    {}",
                    problems.join("\n    ")
                ))
            }
        }
    }
}

#[test]
fn every_yaml_example_in_the_docs_loads_as_its_marker_says() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let (examples, problems) = examples(&page, &read(&page));
        failures.extend(problems);
        for example in &examples {
            checked += 1;
            if let Err(why) = check(example) {
                failures.push(format!("{example}: {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} broken documentation example(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The docs hold several examples: finding none means the scan itself broke.
    assert!(checked >= 5, "only {checked} YAML examples found");
}

#[test]
fn every_yaml_file_under_examples_loads() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("examples"), &mut files);
    files.sort();
    let mut failures = Vec::new();
    let mut configs = 0;
    for path in &files {
        let name = path.strip_prefix(root()).unwrap().display().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let value: Value = match serde_norway::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: not valid YAML: {e}"));
                continue;
            }
        };
        let result = if value.get("rules").is_some() {
            configs += 1;
            // Loaded in place: the files it refers to must exist beside it.
            Config::load(path).map(drop).map_err(|e| e.lines())
        } else if value.get("jobs").is_some() {
            workflow(&text)
        } else if value.get("instance_type").is_some()
            || value
                .get("$schema")
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains("OnlineDeployment"))
        {
            // Loaded in place too: its code folder and conda file must exist beside it.
            deployment_in_place(path, false)
        } else if value
            .get("$schema")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("BatchDeployment"))
        {
            deployment_in_place(path, true)
        } else if value.get("dependencies").is_some_and(Value::is_sequence) {
            Ok(()) // a conda file; the deployment that names it checks it
        } else {
            Err(vec![
                "neither a config (rules), a workflow (jobs), a deployment ($schema, instance_type) nor a conda file (dependencies)"
                    .into(),
            ])
        };
        if let Err(problems) = result {
            failures.push(format!("{name}:\n    {}", problems.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(configs >= 1, "no config found under examples/");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings (outside code blocks), numbered like GitHub's when repeated.
fn anchors(text: &str) -> Vec<String> {
    let mut anchors: Vec<String> = Vec::new();
    for (_, line) in outside_code(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let base = slug(heading.trim_start_matches('#'));
        let repeats = anchors
            .iter()
            .filter(|a| {
                **a == base
                    || a.strip_prefix(&format!("{base}-"))
                        .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count();
        anchors.push(if repeats == 0 {
            base
        } else {
            format!("{base}-{repeats}")
        });
    }
    anchors
}

/// The lines of a page that are not inside a fenced code block, with their numbers (1-based).
fn outside_code(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (index, line) in text.lines().enumerate() {
        match (fence, opening_fence(line)) {
            (None, Some((f, _))) => fence = Some(f),
            (None, None) => out.push((index + 1, line)),
            (Some(f), _)
                if line.trim_start().starts_with(f)
                    && line.trim_start()[f.len()..].trim().is_empty() =>
            {
                fence = None;
            }
            (Some(_), _) => {}
        }
    }
    out
}

/// A line without its code spans (`` `…` ``), which may hold brackets that are no link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let run = rest[start..].chars().take_while(|c| *c == '`').count();
        let after = &rest[start + run..];
        match after.find(&"`".repeat(run)) {
            Some(end) => rest = &after[end + run..],
            None => return out + &rest[start..],
        }
    }
    out + rest
}

/// The targets of the inline links `[text](target)` on a line, outside code spans.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        targets.push(after[..end].to_string());
        rest = &after[end..];
    }
    targets
}

#[test]
fn links_between_the_pages_point_at_files_and_headings_that_exist() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        let dir = Path::new(&page).parent().unwrap_or(Path::new(""));
        for (number, line) in outside_code(&text) {
            for target in &link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = match target.split_once('#') {
                    Some((file, anchor)) => (file, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let linked = if file.is_empty() {
                    PathBuf::from(&page)
                } else {
                    dir.join(file)
                };
                let at = format!("{page}:{number}: link {target:?}");
                let Ok(linked_text) = std::fs::read_to_string(root().join(&linked)) else {
                    if !root().join(&linked).is_dir() {
                        failures.push(format!("{at}: {} does not exist", linked.display()));
                    }
                    continue;
                };
                if let Some(anchor) = anchor
                    && !anchors(&linked_text).iter().any(|a| a == anchor)
                {
                    failures.push(format!(
                        "{at}: no heading #{anchor} in {}",
                        linked.display()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 10, "only {checked} links found");
}

#[test]
fn markers_are_read_as_documented() {
    let marker = |kind, refused_with: Option<&str>| Marker {
        kind,
        refused_with: refused_with.map(str::to_string),
    };
    assert_eq!(Marker::parse(" rule "), Ok(marker(Kind::Rule, None)));
    assert_eq!(Marker::parse("invalid"), Ok(marker(Kind::Config, Some(""))));
    assert_eq!(
        Marker::parse("invalid: a: b"),
        Ok(marker(Kind::Config, Some("a: b")))
    );
    assert_eq!(
        Marker::parse("invalid deployment: type: kubernetes"),
        Ok(marker(Kind::Deployment, Some("type: kubernetes")))
    );
    assert!(Marker::parse("yaml").is_err());
    let (found, problems) = examples(
        "page.md",
        "```yaml\na: 1\n```\n\n<!-- example: rule -->\n\ntext\n<!-- example: config -->\n```yml\nrules: []\n```\n",
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 9);
    assert_eq!(
        problems,
        [
            "page.md:1: YAML fence without an `<!-- example: KIND -->` marker on the line before",
            "page.md:5: example marker not followed by a YAML fence",
        ]
    );
    assert_eq!(
        anchors(
            "# A `b` (c.yml)\n## A `b` (c.yml)\n```\n# not\n```\n## Local debugging with `func start`\n"
        ),
        ["a-b-cyml", "a-b-cyml-1", "local-debugging-with-func-start"]
    );
}
