//! One event through the whole flow: parse → decide → act → outcome. Shared by the HTTP handler
//! and the `replay` command, so a dry run exercises exactly the production path.

use std::sync::Arc;

use serde_json::{Value, json};
use thiserror::Error;
use tracing::Span;

use crate::actions::{Action, ActionError, ActionOutcome, PreparedRequest};
use crate::config::Config;
use crate::event::{self, Event, EventKind};
use crate::logs::InvocationLog;
use crate::policy::{self, Decision, Facts, SkipReason};

/// Whether actions are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// Send them (the handler, `replay --execute`).
    Send,
    /// Only show what would be sent (`replay` without `--execute`).
    DryRun,
}

/// Why an event could not be handled. Each answers the invocation with a non-2xx, so Event Grid
/// redelivers it later; the event itself is fine.
#[derive(Debug, Clone, Error)]
pub enum PipelineError {
    /// The config file or a setting is broken: nothing can be decided until an operator fixes it.
    #[error("aml-autodeploy is misconfigured: {}", .0.join("; "))]
    Misconfigured(Vec<String>),
    /// The action failed.
    #[error(transparent)]
    Action(#[from] ActionError),
}

/// The result of a handled event: the `ReturnValue` and, for dry runs, the request not sent.
#[derive(Debug, Clone)]
pub struct Handled {
    /// The decision record returned to the host.
    pub return_value: Value,
    /// The request the action would send (dry runs, observe mode, pause).
    pub prepared: Option<PreparedRequest>,
}

/// Everything needed to handle events; built once at start.
pub struct Pipeline {
    config: Result<Arc<Config>, Vec<String>>,
    facts: Facts,
    action: Arc<dyn Action>,
}

impl Pipeline {
    /// A pipeline over a loaded config (or the problems that prevented loading it).
    pub fn new(
        config: Result<Arc<Config>, Vec<String>>,
        facts: Facts,
        action: Arc<dyn Action>,
    ) -> Self {
        Self {
            config,
            facts,
            action,
        }
    }

    /// The problems that make every invocation fail, if any.
    pub fn problems(&self) -> Option<&[String]> {
        self.config.as_ref().err().map(Vec::as_slice)
    }

    /// Handles one event value (object or JSON string) from an envelope or a file.
    pub async fn handle(
        &self,
        raw_event: &Value,
        execution: Execution,
        log: &InvocationLog,
    ) -> Result<Handled, PipelineError> {
        let config = match &self.config {
            Ok(config) => config,
            Err(problems) => {
                for problem in problems {
                    log.error(problem.clone());
                }
                return Err(PipelineError::Misconfigured(problems.clone()));
            }
        };

        let event = match event::parse(raw_event) {
            Ok(event) => event,
            Err(error) => {
                Span::current().record("decision", "malformed");
                log.error(format!(
                    "malformed event, acknowledged without action (redelivery cannot fix it): {error}"
                ));
                return Ok(Handled {
                    return_value: json!({ "decision": "malformed", "reason": error.to_string() }),
                    prepared: None,
                });
            }
        };
        describe_event(&event, log);

        let decision = policy::decide(&event, config, self.facts);
        let span = Span::current();
        span.record("decision", decision.label());
        if let Some(plan) = decision.plan() {
            span.record("rule", plan.rule.as_ref());
        }
        let mut return_value = base_return_value(&event, &decision);

        let plan = match &decision {
            Decision::Skip(_) => {
                log.info(decision.explain());
                return Ok(Handled {
                    return_value,
                    prepared: None,
                });
            }
            Decision::Act(plan) | Decision::Observe(plan) | Decision::Paused(plan) => plan,
        };
        log.info(decision.explain());
        for note in &plan.notes {
            log.warn(note.clone());
        }
        let prepared = self.action.prepare(&plan.action);
        if !matches!(decision, Decision::Act(_)) || execution == Execution::DryRun {
            if matches!(decision, Decision::Act(_)) {
                log.info(format!(
                    "dry run: would send {} {}",
                    prepared.method, prepared.url
                ));
                return_value["decision"] = json!("dry_run");
            }
            return_value["request"] =
                json!({ "method": prepared.method, "url": prepared.url, "body": prepared.body });
            return Ok(Handled {
                return_value,
                prepared: Some(prepared),
            });
        }

        match self.action.execute(&plan.action, log).await {
            Ok(outcome) => {
                log.info(success_line(&outcome));
                return_value["status"] = json!(outcome.status);
                return_value["attempts"] = json!(outcome.attempts);
                if let Some(url) = &outcome.run_url {
                    return_value["runUrl"] = json!(url);
                }
                if let Some(id) = outcome.run_id {
                    return_value["runId"] = json!(id);
                }
                Ok(Handled {
                    return_value,
                    prepared: None,
                })
            }
            Err(error) => {
                span.record("decision", "failed");
                log.error(format!(
                    "{error}; answering non-2xx so Event Grid redelivers the event later"
                ));
                Err(PipelineError::Action(error))
            }
        }
    }
}

fn describe_event(event: &Event, log: &InvocationLog) {
    let span = Span::current();
    span.record("event_id", event.id.as_ref());
    match &event.kind {
        EventKind::ModelRegistered(model) => {
            span.record("model", model.name.as_ref());
            span.record("version", model.version.as_ref());
            log.info(format!(
                "event {} ({} schema): model {} version {} registered in {}",
                event.id,
                event.schema.as_str(),
                model.name,
                model.version,
                event.source
            ));
        }
        EventKind::Other { .. } => log.info(format!(
            "event {} ({} schema): {} from {}",
            event.id,
            event.schema.as_str(),
            event.event_type,
            event.source
        )),
    }
}

fn base_return_value(event: &Event, decision: &Decision) -> Value {
    let (label, reason_code) = match decision {
        Decision::Act(_) => ("dispatched", None),
        Decision::Observe(_) => ("observed", None),
        Decision::Paused(_) => ("skipped", Some("paused")),
        Decision::Skip(reason) => ("skipped", Some(reason.code())),
    };
    let mut value = json!({
        "decision": label,
        "reason": decision.explain(),
        "eventId": event.id.as_ref(),
        "eventType": event.event_type.as_ref(),
        "schema": event.schema.as_str(),
        "workspace": event.source.as_ref(),
    });
    if let Some(code) = reason_code {
        value["skip"] = json!(code);
    }
    if let EventKind::ModelRegistered(model) = &event.kind {
        value["model"] = json!(model.name.as_ref());
        value["version"] = json!(model.version.as_ref());
    }
    if let Some(plan) = decision.plan() {
        value["rule"] = json!(plan.rule.as_ref());
        value["action"] = json!(plan.action.describe());
    }
    if let Decision::Skip(SkipReason::NoRuleMatched { misses, .. }) = decision {
        value["misses"] = misses
            .iter()
            .map(|(rule, why)| json!({ "rule": rule, "why": why }))
            .collect();
    }
    value
}

fn success_line(outcome: &ActionOutcome) -> String {
    let mut line = format!(
        "GitHub accepted the dispatch: HTTP {} after {} attempt(s)",
        outcome.status, outcome.attempts
    );
    if let Some(url) = &outcome.run_url {
        line.push_str(&format!("; workflow run: {url}"));
    }
    line
}
