//! `decide(event, config, facts) -> Decision`: pure, no I/O, no clock.
//!
//! The decision carries its own explanation; the reasons flow unchanged into `Logs`, the
//! `ReturnValue` and (later) the ledger. Nobody re-derives a reason.

use serde_json::{Map, Value, json};

use crate::config::{
    Config, GithubTarget, MAX_EVENT_TYPE_LEN, MAX_WORKFLOW_INPUTS, Mode, Rule, RuleAction,
    RuleName, TemplateValues,
};
use crate::domain::action::{ActionPlan, GithubPlan, GithubRequest};
use crate::event::{Event, EventKind, ModelRegistered};

/// GitHub refuses a `client_payload` of 64 KB or more.
pub const MAX_CLIENT_PAYLOAD_BYTES: usize = 64 * 1024;
/// GitHub refuses a `client_payload` with more than 10 top-level keys.
pub const MAX_CLIENT_PAYLOAD_KEYS: usize = 10;

/// When no rule matches, the explanation lists at most this many rules whose name patterns match
/// but whose tags do not (in rule order), and counts the rest.
pub const MAX_LISTED_TAG_MISSES: usize = 5;
/// ... then at most this many of the rules whose name patterns do not match, the nearest by name
/// first, and counts the rest: with a thousand rules the answer stays a few kilobytes.
pub const MAX_LISTED_NAME_MISSES: usize = 3;
/// A rule's patterns, or an event's tag value, are quoted up to this many in an explanation.
const MAX_QUOTED_PATTERNS: usize = 3;
const MAX_QUOTED_CHARS: usize = 64;

/// Facts from outside the event and the config, passed in so `decide` stays pure.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// `AUTODEPLOY_PAUSED`.
    pub paused: bool,
    /// The `workflow_dispatch` inputs the configured GitHub accepts (25; 10 on GitHub
    /// Enterprise Server: [`crate::config::max_workflow_inputs`]).
    pub max_workflow_inputs: usize,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            paused: false,
            max_workflow_inputs: MAX_WORKFLOW_INPUTS,
        }
    }
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A rule matched in `act` mode: send the action.
    Act(Plan),
    /// A rule matched in `observe` mode: record what would be sent, send nothing.
    Observe(Plan),
    /// A rule matched but everything is paused: log what would be sent, send nothing.
    Paused(Plan),
    /// Nothing to do, and why.
    Skip(SkipReason),
    /// A rule matched, but what it renders for this version breaks a limit of the receiving
    /// API (e.g. GitHub's 100-character `event_type`): a configuration problem. The version
    /// fails, recorded; nothing is sent and nothing retries, since sending again cannot help.
    Misconfigured {
        /// The rule that matched.
        rule: RuleName,
        /// What is wrong.
        problem: String,
    },
}

/// A matched rule and the exact action it produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The rule that matched.
    pub rule: RuleName,
    /// The action, fully rendered.
    pub action: ActionPlan,
    /// Things worth a log line (e.g. tags dropped to fit GitHub's payload limit).
    pub notes: Vec<String>,
}

/// Why nothing is done.
#[derive(Debug, Clone, PartialEq)]
pub enum SkipReason {
    /// Not a ModelRegistered event.
    NotModelRegistered {
        /// Its type.
        event_type: String,
        /// Whether it is a type we know by name.
        known: bool,
    },
    /// The event comes from a workspace other than the configured one.
    OtherWorkspace {
        /// The event's workspace.
        event: String,
        /// The configured one.
        expected: String,
    },
    /// No rule matched: the closest rules and why each missed, and how many others missed.
    NoRuleMatched {
        /// `name:version`.
        model: String,
        /// Rule name and why it did not match: first the rules whose name patterns match but whose
        /// tags do not (at most [`MAX_LISTED_TAG_MISSES`], in rule order), then the rules nearest
        /// by name (at most [`MAX_LISTED_NAME_MISSES`], closest first).
        misses: Vec<(String, String)>,
        /// Rules whose name patterns match, but whose tags do not, beyond those listed.
        more_tag_misses: usize,
        /// Rules whose name patterns do not match, beyond those listed.
        more_name_misses: usize,
    },
}

impl Decision {
    /// A one-word label: `act`, `observe`, `paused` or `skip`.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Act(_) => "act",
            Decision::Observe(_) => "observe",
            Decision::Paused(_) => "paused",
            Decision::Skip(_) => "skip",
            Decision::Misconfigured { .. } => "misconfigured",
        }
    }

    /// The matched plan, if any.
    pub fn plan(&self) -> Option<&Plan> {
        match self {
            Decision::Act(p) | Decision::Observe(p) | Decision::Paused(p) => Some(p),
            Decision::Skip(_) | Decision::Misconfigured { .. } => None,
        }
    }

    /// One human-readable sentence saying what was decided and why.
    pub fn explain(&self) -> String {
        match self {
            Decision::Act(p) => format!("rule {} matched: {}", p.rule, p.action.describe()),
            Decision::Observe(p) => format!(
                "rule {} matched in observe mode: would {}; nothing sent",
                p.rule,
                p.action.describe()
            ),
            Decision::Paused(p) => format!(
                "rule {} matched but AUTODEPLOY_PAUSED is set: would {}; nothing sent",
                p.rule,
                p.action.describe()
            ),
            Decision::Skip(reason) => reason.explain(),
            Decision::Misconfigured { rule, problem } => format!(
                "rule {rule} matched, but this version cannot be sent: {problem}; a configuration problem: fix the rule (nothing sent, no retry)"
            ),
        }
    }
}

impl SkipReason {
    /// Short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::NotModelRegistered { .. } => "not_model_registered",
            SkipReason::OtherWorkspace { .. } => "other_workspace",
            SkipReason::NoRuleMatched { .. } => "no_rule_matched",
        }
    }

    /// One human-readable sentence.
    pub fn explain(&self) -> String {
        match self {
            SkipReason::NotModelRegistered { event_type, known } => format!(
                "ignored: {event_type} is {} event type, not a ModelRegistered event",
                if *known { "a known" } else { "an unknown" }
            ),
            SkipReason::OtherWorkspace { event, expected } => format!(
                "refused: the event comes from workspace {event}, but this app only accepts {expected}"
            ),
            SkipReason::NoRuleMatched {
                model,
                misses,
                more_tag_misses,
                more_name_misses,
            } => {
                let mut parts: Vec<String> = misses
                    .iter()
                    .map(|(rule, why)| format!("{rule}: {why}"))
                    .collect();
                if *more_tag_misses > 0 {
                    parts.push(format!(
                        "and {more_tag_misses} more {} whose name patterns match but whose tags do not",
                        rules_word(*more_tag_misses)
                    ));
                }
                if *more_name_misses > 0 {
                    parts.push(format!(
                        "and {more_name_misses} more {} whose name patterns do not match",
                        rules_word(*more_name_misses)
                    ));
                }
                if parts.is_empty() {
                    format!("skipped: no rule matched {model} (the config has no rules)")
                } else {
                    format!("skipped: no rule matched {model} ({})", parts.join("; "))
                }
            }
        }
    }
}

fn rules_word(n: usize) -> &'static str {
    if n == 1 { "rule" } else { "rules" }
}

/// Decides what to do with `event` under `config`.
pub fn decide(event: &Event, config: &Config, facts: Facts) -> Decision {
    let model = match &event.kind {
        EventKind::ModelRegistered(model) => model,
        EventKind::Other { known } => {
            return Decision::Skip(SkipReason::NotModelRegistered {
                event_type: event.event_type.to_string(),
                known: *known,
            });
        }
    };
    if let Some(expected) = &config.workspace
        && !expected.same_as(&event.source)
    {
        return Decision::Skip(SkipReason::OtherWorkspace {
            event: event.source.to_string(),
            expected: expected.to_string(),
        });
    }

    // One pass over the name finds every rule whose patterns match it; tags are then checked per
    // candidate, in rule order, and the first that matches wins.
    let candidates = config.names.matching(model.name.as_ref());
    let mut misses = Vec::new();
    let mut more_tag_misses = 0;
    for &at in &candidates {
        let rule = &config.rules[at];
        if let Some(why) = tag_mismatch(rule, model) {
            if misses.len() < MAX_LISTED_TAG_MISSES {
                misses.push((rule.name.to_string(), why));
            } else {
                more_tag_misses += 1;
            }
            continue;
        }
        let plan = plan(rule, event, model);
        if let Some(problem) = beyond_limits(&plan.action, facts) {
            return Decision::Misconfigured {
                rule: rule.name.clone(),
                problem,
            };
        }
        return if facts.paused {
            Decision::Paused(plan)
        } else if rule.mode == Mode::Observe {
            Decision::Observe(plan)
        } else {
            Decision::Act(plan)
        };
    }
    let nearest = config.names.nearest(
        &config.rules,
        model.name.as_ref(),
        &candidates,
        MAX_LISTED_NAME_MISSES,
    );
    let more_name_misses = config.rules.len() - candidates.len() - nearest.len();
    for at in nearest {
        let rule = &config.rules[at];
        misses.push((rule.name.to_string(), name_mismatch(rule, model)));
    }
    Decision::Skip(SkipReason::NoRuleMatched {
        model: format!("{}:{}", model.name, model.version),
        misses,
        more_tag_misses,
        more_name_misses,
    })
}

/// Why a rule none of whose patterns match the name does not match (its first few patterns).
fn name_mismatch(rule: &Rule, model: &ModelRegistered) -> String {
    let patterns = &rule.model_patterns;
    let shown = patterns[..patterns.len().min(MAX_QUOTED_PATTERNS)].join(", ");
    match patterns.len().saturating_sub(MAX_QUOTED_PATTERNS) {
        0 => format!("name {} does not match {shown}", model.name),
        more => format!(
            "name {} does not match {shown} (or {more} more patterns)",
            model.name
        ),
    }
}

/// Why a rule whose name patterns match does not match on tags, or `None` when it does.
fn tag_mismatch(rule: &Rule, model: &ModelRegistered) -> Option<String> {
    for (key, expected) in &rule.tags {
        match model.tag(key) {
            None => return Some(format!("tag {key} is missing (expected {expected:?})")),
            Some(actual) if &actual != expected => {
                return Some(format!(
                    "tag {key} is {}, expected {expected:?}",
                    quoted(&actual)
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// `value` quoted, cut to [`MAX_QUOTED_CHARS`] characters: an event's tags are unbounded.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{value:?}"),
        Some((end, _)) => format!(
            "{:?}… ({} characters)",
            &value[..end],
            value.chars().count()
        ),
    }
}

/// What in a rendered action GitHub would refuse, checked here rather than in the HTTP client
/// so that it is a decision (recorded, never retried) and not a 422 that looks transient.
fn beyond_limits(action: &ActionPlan, facts: Facts) -> Option<String> {
    let ActionPlan::Github(plan) = action else {
        return None;
    };
    match &plan.request {
        GithubRequest::RepositoryDispatch { event_type, .. } => {
            let len = event_type.chars().count();
            (len > MAX_EVENT_TYPE_LEN).then(|| {
                format!(
                    "event_type renders to {len} characters; GitHub accepts at most {MAX_EVENT_TYPE_LEN}"
                )
            })
        }
        GithubRequest::WorkflowDispatch { inputs, .. } => {
            (inputs.len() > facts.max_workflow_inputs).then(|| {
                format!(
                    "{} workflow_dispatch inputs; the configured GitHub accepts at most {}",
                    inputs.len(),
                    facts.max_workflow_inputs
                )
            })
        }
    }
}

fn plan(rule: &Rule, event: &Event, model: &ModelRegistered) -> Plan {
    let model_id = model.model_id();
    let values = TemplateValues {
        model_name: model.name.as_ref(),
        model_version: model.version.as_ref(),
        model_id: &model_id,
        event_id: event.id.as_ref(),
        workspace: event.source.as_ref(),
    };
    let mut notes = Vec::new();
    let action = match &rule.action {
        RuleAction::Github(github) => {
            let request = match &github.target {
                GithubTarget::RepositoryDispatch { event_type } => {
                    GithubRequest::RepositoryDispatch {
                        event_type: event_type.render(&values),
                        client_payload: client_payload(rule, event, model, &mut notes),
                    }
                }
                GithubTarget::WorkflowDispatch {
                    workflow,
                    git_ref,
                    inputs,
                } => GithubRequest::WorkflowDispatch {
                    workflow: workflow.clone(),
                    git_ref: git_ref.render(&values),
                    inputs: inputs
                        .iter()
                        .map(|(k, t)| (k.clone(), Value::String(t.render(&values))))
                        .collect(),
                },
            };
            ActionPlan::Github(GithubPlan {
                repository: github.repository.clone(),
                request,
                follow: crate::domain::action::FollowPlan {
                    enabled: github.follow,
                    hours: github.follow_hours,
                },
            })
        }
        RuleAction::AzureMl(azureml) => ActionPlan::AzureMl(crate::domain::azureml::plan(
            azureml,
            event.source.as_ref(),
            model.name.as_ref(),
            model.version.as_ref(),
            &azureml.name.render(&values),
        )),
    };
    Plan {
        rule: rule.name.clone(),
        action,
        notes,
    }
}

/// The `repository_dispatch` payload. GitHub allows at most 10 top-level keys (we use 8; later
/// additions nest under one key) and less than 64 KB in total: tags are the only unbounded part, so
/// they are dropped, with a note, when the payload would not fit.
fn client_payload(
    rule: &Rule,
    event: &Event,
    model: &ModelRegistered,
    notes: &mut Vec<String>,
) -> Value {
    let mut payload = json!({
        "modelName": model.name.as_ref(),
        "modelVersion": model.version.as_ref(),
        "modelId": model.model_id(),
        "workspace": event.source.as_ref(),
        "eventId": event.id.as_ref(),
        "eventTime": event.time_raw,
        "modelTags": Value::Object(model.tags.clone()),
        "rule": rule.name.as_ref(),
    });
    debug_assert!(payload.as_object().map(Map::len) <= Some(MAX_CLIENT_PAYLOAD_KEYS));
    let size = payload.to_string().len();
    if size >= MAX_CLIENT_PAYLOAD_BYTES
        && let Some(map) = payload.as_object_mut()
    {
        map.insert("modelTags".into(), Value::Object(Map::new()));
        notes.push(format!(
            "modelTags dropped from client_payload: with them it would be {size} bytes, GitHub accepts less than {MAX_CLIENT_PAYLOAD_BYTES}"
        ));
    }
    payload
}

#[cfg(test)]
mod tests;
