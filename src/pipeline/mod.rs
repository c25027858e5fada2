//! One event through the whole flow: parse → decide → gate → act → record → outcome. Shared by
//! the HTTP handler, the webhook, `replay`, `evaluate` and `Reconcile`'s gate re-checks, so a dry
//! run exercises the production path.
//!
//! - [`outcome`]: the typed answer, serialised as the host's `ReturnValue`.
//! - `delivery`: the per-event context, and the ledger writes that record a decision or a claim.
//! - `gate`: running the quality gate and recording its refusals and retries.
//! - `defer`: leaving a version to `Reconcile` (a failed gate lookup, a webhook deadline).
//! - `act`: the stale-version check, then the GitHub dispatch or the start of a rollout.

mod act;
mod defer;
mod delivery;
mod gate;
mod invocation;
pub mod outcome;

use std::sync::Arc;

use time::OffsetDateTime;
use tracing::Span;

use crate::actions::ActionPlan;
use crate::actions::azureml::deploy::Deployer;
use crate::actions::github::GithubClient;
use crate::actions::github::dispatch::Dispatcher;
use crate::config::Config;
use crate::event::{self, Event, EventKind};
use crate::ledger::{Ledger, State};
use crate::logs::InvocationLog;
use crate::notify::Notifier;
use crate::policy::{self, Decision, SkipReason};

pub use delivery::claim;
pub use gate::GatePassed;
pub use invocation::{Execution, Handled, Invocation, Pipeline, PipelineError};
pub use outcome::{Label, Outcome};

use delivery::Delivery;

impl Pipeline {
    /// The notifier.
    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// The direct-deployment runner, or why there is none (no Azure credential).
    pub fn deployer(&self) -> Result<&Arc<Deployer>, &str> {
        self.deployer.as_ref().map_err(String::as_str)
    }

    /// The problems that make every invocation fail, if any.
    pub fn problems(&self) -> Option<&[String]> {
        self.config.as_ref().err().map(Vec::as_slice)
    }

    /// The loaded config, when it is valid.
    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref().ok().map(|c| c.as_ref())
    }

    /// `AUTODEPLOY_PAUSED`.
    pub fn paused(&self) -> bool {
        self.facts.paused
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The sender shared with `Reconcile`.
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher {
            ledger: self.ledger.clone(),
            github: self.github.clone(),
        }
    }

    /// The GitHub client.
    pub fn github(&self) -> &Arc<GithubClient> {
        &self.github
    }

    /// Handles one event value (object or JSON string) from an envelope or a file.
    pub async fn handle(
        &self,
        raw_event: &serde_json::Value,
        invocation: &Invocation,
        log: &InvocationLog,
    ) -> Result<Handled, PipelineError> {
        let mut decided = None;
        let result = self
            .handle_event(raw_event, invocation, log, &mut decided)
            .await;
        // The same label in stdout as in the ReturnValue, so a search for one finds both.
        match &result {
            Ok(handled) if decided != Some(handled.outcome.decision) => {
                Span::current().record("decision", handled.outcome.decision.as_str());
            }
            Err(PipelineError::Action(_)) => {
                Span::current().record("decision", "failed");
            }
            _ => {}
        }
        result
    }

    async fn handle_event(
        &self,
        raw_event: &serde_json::Value,
        invocation: &Invocation,
        log: &InvocationLog,
        decided: &mut Option<Label>,
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
        let dry_run = invocation.execution == Execution::DryRun;
        let event = match event::parse(raw_event) {
            Ok(event) => event,
            Err(error) => {
                // A warning: the invocation succeeds (redelivery cannot fix it), and the host
                // files the stderr line as a Warning.
                log.warn(format!(
                    "malformed event, acknowledged without action (redelivery cannot fix it): {error}"
                ));
                let mut outcome = Outcome::malformed(error.to_string());
                if !dry_run {
                    let name = self
                        .ledger
                        .record_malformed(
                            raw_event,
                            &error.to_string(),
                            &invocation.id,
                            OffsetDateTime::now_utc(),
                        )
                        .await?;
                    log.info(format!("recorded as {name}"));
                    outcome.recorded_as = Some(name);
                }
                return Ok(outcome.into());
            }
        };
        let decision = policy::decide(&event, config, self.facts);
        let explanation = decision.explain();
        let mut outcome = Outcome::decided(&event, &decision, &explanation);
        *decided = Some(outcome.decision);
        record_on_span(
            &event,
            outcome.decision.as_str(),
            decision.plan().map(|plan| plan.rule.as_ref()),
        );
        describe_event(&event, log);
        log.info(explanation.as_str());
        let EventKind::ModelRegistered(model) = &event.kind else {
            return Ok(outcome.into());
        };
        let delivery = Delivery::new(&event, model, &decision, &explanation, invocation, log);

        let plan = match &decision {
            // Events from another workspace are not ours to record.
            Decision::Skip(SkipReason::OtherWorkspace { .. }) => return Ok(outcome.into()),
            Decision::Skip(_) => {
                if !dry_run {
                    self.record_decision(&delivery, None, State::Skipped)
                        .await?;
                }
                return Ok(outcome.into());
            }
            // Sending cannot succeed: the version fails, recorded, and nothing retries it.
            Decision::Misconfigured { .. } => {
                log.error(decision.explain());
                if !dry_run {
                    self.record_decision(&delivery, None, State::Failed).await?;
                }
                return Ok(outcome.into());
            }
            Decision::Act(plan) | Decision::Observe(plan) | Decision::Paused(plan) => plan,
        };
        for note in &plan.notes {
            log.warn(note.clone());
        }
        let acting = matches!(decision, Decision::Act(_));

        // The quality gate, for acting and observing rules (a paused app decides nothing new).
        // Boxed, like the other rare branches: inline, their state would make every invocation's
        // future (moved several times per request) tens of kilobytes.
        let gate = if matches!(decision, Decision::Paused(_)) {
            GatePassed::new(invocation.force)
        } else {
            match Box::pin(self.apply_gate(config, &delivery, plan, &mut outcome)).await? {
                Some(gate) => gate,
                None => return Ok(outcome.into()),
            }
        };

        let prepared = self.prepare(&plan.action);
        if !acting || dry_run {
            if acting {
                // Direct deployments register their assets first: say what would be registered.
                if let ActionPlan::AzureMl(azureml) = &plan.action {
                    for (n, step) in azureml.assets.steps().iter().enumerate() {
                        log.info(format!("dry run: asset step {}: {step}", n + 1));
                    }
                    for line in azureml.rollout_steps() {
                        log.info(format!("dry run: {line}"));
                    }
                }
                log.info(format!(
                    "dry run: would send {} {}",
                    prepared.method, prepared.url
                ));
                outcome = outcome.relabel(Label::DryRun);
            } else if !dry_run {
                let state = if matches!(decision, Decision::Observe(_)) {
                    State::Observed
                } else {
                    State::Skipped
                };
                self.record_decision(&delivery, Some(plan), state).await?;
            }
            return Ok(Handled {
                outcome: outcome.with_request(&prepared),
                prepared: Some(prepared),
            });
        }

        Box::pin(self.act(&delivery, plan, gate, outcome)).await
    }
}

/// Puts the event's id, model, version, decision and rule on the invocation's span (the fields of
/// every line it prints), in one record: `json-subscriber` re-serialises all of a span's fields on
/// each record, so recording them one by one cost five times as much on every invocation.
fn record_on_span(event: &Event, decision: &str, rule: Option<&str>) {
    use tracing::field::Value;
    let span = Span::current();
    let Some(fields) = span.metadata().map(|meta| meta.fields()) else {
        return;
    };
    let (model, version) = match &event.kind {
        EventKind::ModelRegistered(model) => {
            (Some(model.name.as_ref()), Some(model.version.as_ref()))
        }
        EventKind::Other { .. } => (None, None),
    };
    let event_id: &str = event.id.as_ref();
    let (Some(e), Some(m), Some(v), Some(d), Some(r)) = (
        fields.field("event_id"),
        fields.field("model"),
        fields.field("version"),
        fields.field("decision"),
        fields.field("rule"),
    ) else {
        return;
    };
    // `Span::record` is this call with one field (`record_all` is public, if hidden from the docs).
    span.record_all(&fields.value_set(&[
        (&e, Some(&event_id as &dyn Value)),
        (&m, model.as_ref().map(|t| t as &dyn Value)),
        (&v, version.as_ref().map(|t| t as &dyn Value)),
        (&d, Some(&decision as &dyn Value)),
        (&r, rule.as_ref().map(|t| t as &dyn Value)),
    ]));
}

fn describe_event(event: &Event, log: &InvocationLog) {
    match &event.kind {
        EventKind::ModelRegistered(model) => {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    use super::*;

    /// Every `record` call on a span, as the fields it carried.
    #[derive(Clone, Default)]
    struct Records(Arc<Mutex<Vec<Fields>>>);

    /// One record's fields, as (name, value).
    type Fields = Vec<(String, String)>;

    impl<S: tracing::Subscriber> Layer<S> for Records {
        fn on_record(
            &self,
            _: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _: Context<'_, S>,
        ) {
            struct Fields(Vec<(String, String)>);
            impl Visit for Fields {
                fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                    self.0
                        .push((field.name().to_string(), format!("{value:?}")));
                }
                fn record_str(&mut self, field: &Field, value: &str) {
                    self.0.push((field.name().to_string(), value.to_string()));
                }
            }
            let mut fields = Fields(Vec::new());
            values.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }

    #[test]
    fn the_event_and_the_decision_reach_the_span_in_one_record() {
        let records = Records::default();
        let subscriber = tracing_subscriber::registry().with(records.clone());
        let event = event::parse(&serde_json::json!({
            "id": "e-1",
            "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws",
            "subject": "models/credit-risk:7",
            "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
            "eventTime": "2026-11-26T10:00:00Z",
            "data": {"modelName": "credit-risk", "modelVersion": "7"}
        }))
        .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "invocation",
                invocation_id = "inv-1",
                event_id = tracing::field::Empty,
                model = tracing::field::Empty,
                version = tracing::field::Empty,
                rule = tracing::field::Empty,
                decision = tracing::field::Empty,
            );
            let _entered = span.enter();
            record_on_span(&event, "skipped", None);
            record_on_span(&event, "dispatched", Some("credit"));
        });
        let records = records.0.lock().unwrap();
        let text = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // json-subscriber re-serialises every field of a span on each record: one per call.
        assert_eq!(
            *records,
            [
                text(&[
                    ("event_id", "e-1"),
                    ("model", "credit-risk"),
                    ("version", "7"),
                    ("decision", "skipped"),
                ]),
                text(&[
                    ("event_id", "e-1"),
                    ("model", "credit-risk"),
                    ("version", "7"),
                    ("decision", "dispatched"),
                    ("rule", "credit"),
                ]),
            ]
        );
    }
}
