//! One event through the whole flow: parse → decide → ledger claim → act → record → outcome.
//! Shared by the HTTP handler and the `replay` command, so a dry run exercises the production path.

use std::sync::Arc;

use serde_json::{Value, json};
use thiserror::Error;
use time::OffsetDateTime;
use tracing::Span;

use crate::actions::ActionPlan;
use crate::actions::azureml::deploy::Deployer;
use crate::actions::github::dispatch::{Dispatcher, Sent};
use crate::actions::{Action, ActionError, ActionOutcome, PreparedRequest};
use crate::config::Config;
use crate::event::{self, Event, EventKind, ModelRegistered};
use crate::gate::lookup::{LookupError, MetricLookup};
use crate::gate::{self as gate_policy, Overrides, Verdict};
use crate::ledger::record::rfc3339;
use crate::ledger::{Attempt, Claim, ETag, Ledger, Record, State, StoreError, after};
use crate::logs::InvocationLog;
use crate::notify::Notifier;
use crate::policy::{self, Decision, Facts, Plan, SkipReason};

/// Whether actions are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// Send them and record them (the handler, `replay --execute`).
    Send,
    /// Only show what would be sent; nothing is written to the ledger (`replay`).
    DryRun,
}

/// Who is asking: the invocation id (for logs and the record), whether to send, and what
/// triggered it.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `X-Azure-Functions-InvocationId`, or a label such as `replay`.
    pub id: String,
    /// Send or dry run.
    pub execution: Execution,
    /// `event` (Event Grid), `replay`, `manual` (`evaluate`) or `reconcile`: recorded on the attempt.
    pub trigger: &'static str,
    /// `evaluate --force`: act despite the gate and the stale check (recorded as forced).
    pub force: bool,
}

/// Why an event could not be handled. Each answers the invocation with a non-2xx, so Event Grid
/// redelivers it later; the event itself is fine.
#[derive(Debug, Clone, Error)]
pub enum PipelineError {
    /// The config file or a setting is broken: nothing can be decided until an operator fixes it.
    #[error("aml-autodeploy is misconfigured: {}", .0.join("; "))]
    Misconfigured(Vec<String>),
    /// The action failed and nothing durable holds the retry (in-memory ledger).
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The ledger could not be read or written: nothing was acted on.
    #[error("the ledger is unavailable, nothing was acted on: {0}")]
    Storage(#[from] StoreError),
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
    ledger: Arc<Ledger>,
    deployer: Result<Arc<Deployer>, String>,
    metrics: Arc<MetricLookup>,
    notifier: Arc<Notifier>,
}

impl Pipeline {
    /// A pipeline over a loaded config (or the problems that prevented loading it).
    pub fn new(
        config: Result<Arc<Config>, Vec<String>>,
        facts: Facts,
        action: Arc<dyn Action>,
        ledger: Arc<Ledger>,
        deployer: Result<Arc<Deployer>, String>,
        metrics: Arc<MetricLookup>,
        notifier: Arc<Notifier>,
    ) -> Self {
        Self {
            config,
            facts,
            action,
            ledger,
            deployer,
            metrics,
            notifier,
        }
    }

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
            action: self.action.clone(),
        }
    }

    /// The action executor.
    pub fn action(&self) -> &Arc<dyn Action> {
        &self.action
    }

    /// Handles one event value (object or JSON string) from an envelope or a file.
    pub async fn handle(
        &self,
        raw_event: &Value,
        invocation: &Invocation,
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
        let dry_run = invocation.execution == Execution::DryRun;

        let event = match event::parse(raw_event) {
            Ok(event) => event,
            Err(error) => {
                Span::current().record("decision", "malformed");
                log.error(format!(
                    "malformed event, acknowledged without action (redelivery cannot fix it): {error}"
                ));
                let mut return_value =
                    json!({ "decision": "malformed", "reason": error.to_string() });
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
                    return_value["recordedAs"] = json!(name);
                }
                return Ok(Handled {
                    return_value,
                    prepared: None,
                });
            }
        };
        describe_event(&event, log);

        let decision = policy::decide(&event, config, self.facts);
        let explanation = decision.explain();
        let mut return_value = base_return_value(&event, &decision, &explanation);
        // The same label in stdout as in the ReturnValue, so a search for one finds both.
        let span = Span::current();
        span.record("decision", return_value["decision"].as_str());
        if let Some(plan) = decision.plan() {
            span.record("rule", plan.rule.as_ref());
        }
        log.info(explanation);
        let model = match &event.kind {
            EventKind::ModelRegistered(model) => model,
            EventKind::Other { .. } => {
                return Ok(Handled {
                    return_value,
                    prepared: None,
                });
            }
        };

        let plan = match &decision {
            // Events from another workspace are not ours to record.
            Decision::Skip(SkipReason::OtherWorkspace { .. }) => {
                return Ok(Handled {
                    return_value,
                    prepared: None,
                });
            }
            Decision::Skip(_) => {
                if !dry_run {
                    self.record_decision(
                        &event,
                        model,
                        &decision,
                        None,
                        State::Skipped,
                        invocation,
                        log,
                    )
                    .await?;
                }
                return Ok(Handled {
                    return_value,
                    prepared: None,
                });
            }
            Decision::Act(plan) | Decision::Observe(plan) | Decision::Paused(plan) => plan,
        };
        for note in &plan.notes {
            log.warn(note.clone());
        }
        let acting = matches!(decision, Decision::Act(_));

        // The quality gate, for acting and observing rules (a paused app decides nothing new).
        let mut gate = GatePassed {
            forced: invocation.force,
            summary: None,
        };
        if !matches!(decision, Decision::Paused(_))
            && let Some(spec) = config
                .rules
                .iter()
                .find(|r| r.name == plan.rule)
                .and_then(|r| r.gate.as_ref())
        {
            let overrides = Overrides {
                force: invocation.force || tag_is_true(model, "autodeploy.force"),
                skip: tag_is_true(model, "autodeploy.skip"),
            };
            // Boxed, like the other rare branches: inline, their state would make every
            // invocation's future (moved several times per request) tens of kilobytes.
            match Box::pin(self.run_gate(spec, &event, model, plan, overrides, log)).await {
                GateOutcome::Pass {
                    notes,
                    forced,
                    summary,
                } => {
                    for note in notes {
                        log.info(format!("gate: {note}"));
                    }
                    gate.forced |= forced;
                    return_value["gate"] = summary.clone();
                    gate.summary = Some(summary);
                }
                GateOutcome::Stop {
                    state,
                    reason,
                    summary,
                } => {
                    log.warn(reason.clone());
                    return_value["gate"] = summary.clone();
                    if acting {
                        return_value["decision"] = json!(state.as_str());
                        return_value["reason"] = json!(reason);
                        Span::current().record("decision", state.as_str());
                        if !dry_run {
                            let key = Box::pin(self.record_gate_stop(
                                &event, model, &decision, plan, state, &reason, summary,
                                invocation, log,
                            ))
                            .await?;
                            Box::pin(self.notifier.announce(
                                &self.ledger,
                                &key,
                                state.as_str(),
                                log,
                            ))
                            .await;
                        }
                        return Ok(Handled {
                            return_value,
                            prepared: None,
                        });
                    }
                }
                GateOutcome::Retry { error } => {
                    return_value["gate"] = json!({ "error": error });
                    if acting && !dry_run {
                        return Box::pin(self.record_gate_retry(
                            &event,
                            model,
                            &decision,
                            plan,
                            &error,
                            invocation,
                            log,
                            return_value,
                        ))
                        .await;
                    }
                    log.warn(format!("gate: {error}"));
                }
            }
        }

        let prepared = self.prepare(&plan.action);
        if !acting || dry_run {
            if acting {
                log.info(format!(
                    "dry run: would send {} {}",
                    prepared.method, prepared.url
                ));
                return_value["decision"] = json!("dry_run");
            } else if !dry_run {
                let state = if matches!(decision, Decision::Observe(_)) {
                    State::Observed
                } else {
                    State::Skipped
                };
                self.record_decision(&event, model, &decision, Some(plan), state, invocation, log)
                    .await?;
            }
            return_value["request"] =
                json!({ "method": prepared.method, "url": prepared.url, "body": prepared.body });
            return Ok(Handled {
                return_value,
                prepared: Some(prepared),
            });
        }

        Box::pin(self.act(
            &event,
            model,
            &decision,
            plan,
            gate,
            invocation,
            log,
            return_value,
        ))
        .await
    }

    /// The request an action would send first (dry runs, observe mode).
    fn prepare(&self, action: &ActionPlan) -> PreparedRequest {
        match action {
            ActionPlan::Github(_) => self.action.prepare(action),
            ActionPlan::AzureMl(plan) => {
                let url = match &self.deployer {
                    Ok(deployer) => deployer
                        .engine
                        .arm()
                        .resource_url(&format!(
                            "{}/onlineEndpoints/{}/deployments/{}",
                            plan.workspace, plan.endpoint, plan.deployment
                        ))
                        .map(|u| u.to_string())
                        .unwrap_or_default(),
                    Err(_) => format!(
                        "{{ARM}}{}/onlineEndpoints/{}/deployments/{}",
                        plan.workspace, plan.endpoint, plan.deployment
                    ),
                };
                let mut body = plan.body.clone();
                body["location"] = json!("<the workspace's region>");
                PreparedRequest {
                    method: "PUT",
                    url,
                    headers: vec![(
                        "authorization".into(),
                        "Bearer <redacted: Azure credential>".into(),
                    )],
                    body,
                }
            }
        }
    }

    /// The record a decision creates.
    #[allow(clippy::too_many_arguments)]
    fn new_record(
        &self,
        event: &Event,
        model: &ModelRegistered,
        decision: &Decision,
        plan: Option<&Plan>,
        state: State,
        invocation: &Invocation,
        now: OffsetDateTime,
    ) -> Record {
        let key = crate::ledger::record_key(
            event.source.as_ref(),
            model.name.as_ref(),
            model.version.as_ref(),
        );
        let mut record = Record {
            schema: crate::ledger::record::SCHEMA,
            key,
            workspace: event.source.to_string(),
            model: model.name.to_string(),
            version: model.version.to_string(),
            state,
            forced: false,
            rule: plan.map(|p| p.rule.to_string()),
            decision: state.as_str().to_string(),
            reasons: Vec::new(),
            event_ids: vec![event.id.to_string()],
            event_time: event.time_raw.clone(),
            first_received: now,
            last_received: now,
            invocation_ids: Vec::new(),
            action: plan.map(|p| p.action.clone()),
            claim: None,
            acting_since: None,
            next_attempt_at: None,
            attempts: Vec::new(),
            rollout: None,
            model_tags: model.tags.clone(),
            model_properties: model.properties.clone(),
            gate: None,
            gate_pending: false,
            notifications: Vec::new(),
            history: Vec::new(),
        };
        let explanation = decision.explain();
        record.reasons.push(explanation.clone());
        record.note_delivery(event.id.as_ref(), &invocation.id, now);
        record.transition(state, explanation, now);
        record
    }

    /// Records a decision that sends nothing (skipped, observed, paused). An existing record that
    /// was acted on keeps its state; the delivery is noted.
    #[allow(clippy::too_many_arguments)]
    async fn record_decision(
        &self,
        event: &Event,
        model: &ModelRegistered,
        decision: &Decision,
        plan: Option<&Plan>,
        state: State,
        invocation: &Invocation,
        log: &InvocationLog,
    ) -> Result<(), PipelineError> {
        let now = OffsetDateTime::now_utc();
        let record = self.new_record(event, model, decision, plan, state, invocation, now);
        let (mut existing, mut etag) = match self.ledger.create(&record).await? {
            Ok(_) => return Ok(()),
            Err(existing) => existing,
        };
        for _ in 0..3 {
            existing.note_delivery(event.id.as_ref(), &invocation.id, now);
            if existing.state.open_to_action() {
                existing.rule = record.rule.clone();
                existing.action = record.action.clone();
                existing.decision = record.decision.clone();
                existing.reasons = record.reasons.clone();
                if existing.state != state {
                    existing.transition(state, decision.explain(), now);
                }
            } else {
                log.info(format!(
                    "the ledger already has model {} version {} as {}",
                    model.name, model.version, existing.state
                ));
            }
            match self.ledger.save(&existing, &etag).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict) => match self.ledger.load(&record.key).await? {
                    Some((fresh, fresh_etag)) => {
                        existing = fresh;
                        etag = fresh_etag;
                    }
                    None => return Ok(()),
                },
                Err(e) => return Err(e.into()),
            }
        }
        // Lost three races to other deliveries of the same version: they recorded it.
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        event: &Event,
        model: &ModelRegistered,
        decision: &Decision,
        plan: &Plan,
        gate: GatePassed,
        invocation: &Invocation,
        log: &InvocationLog,
        mut return_value: Value,
    ) -> Result<Handled, PipelineError> {
        let now = OffsetDateTime::now_utc();
        let workspace = event.source.as_ref();
        let mut record = self.new_record(
            event,
            model,
            decision,
            Some(plan),
            State::Dispatching,
            invocation,
            now,
        );

        record.forced = gate.forced;
        record.gate = gate.summary;
        if gate.forced {
            record
                .reasons
                .push("forced: the gate and the stale check do not apply".into());
        }

        // A late retry of an old version must never overwrite a newer one (unless forced).
        if !gate.forced
            && let Some((newer, newer_time)) = self
                .ledger
                .newer_version_acted(
                    workspace,
                    plan.rule.as_ref(),
                    model.name.as_ref(),
                    event.time,
                )
                .await?
        {
            let why = format!(
                "stale: version {newer} (event time {newer_time}) was already acted on for rule {} and is newer than this event ({})",
                plan.rule,
                event.time_raw.as_deref().unwrap_or("?")
            );
            log.warn(why.clone());
            record.reasons.push(why.clone());
            record.decision = "stale".into();
            record.transition(State::Stale, why.clone(), now);
            match self.ledger.create(&record).await? {
                Ok(_) => {
                    self.notifier
                        .announce(&self.ledger, &record.key, "stale", log)
                        .await
                }
                Err(existing) => log.info(format!(
                    "the ledger already has this version as {}",
                    existing.0.state
                )),
            }
            return_value["decision"] = json!("stale");
            return_value["reason"] = json!(why);
            Span::current().record("decision", "stale");
            return Ok(Handled {
                return_value,
                prepared: None,
            });
        }

        if let ActionPlan::AzureMl(_) = &plan.action {
            return self
                .act_rollout(record, invocation, log, return_value)
                .await;
        }

        let attempt_id = uuid::Uuid::new_v4().to_string();
        claim(
            &mut record,
            &attempt_id,
            invocation.trigger,
            event.id.as_ref(),
            now,
        );
        // The takeover marker goes first: if this process dies after claiming, Reconcile finds it.
        let claim_marker = self
            .ledger
            .schedule(&record.key, after(now, self.ledger.options.claim_timeout))
            .await?;

        let etag = match self.ledger.create(&record).await {
            Ok(Ok(etag)) => etag,
            Ok(Err((existing, existing_etag))) => {
                match self
                    .claim_existing(
                        existing,
                        existing_etag,
                        &record,
                        &attempt_id,
                        event,
                        invocation,
                        now,
                        log,
                    )
                    .await
                {
                    Ok(Claimed::Ours(claimed, etag)) => {
                        let claimed = *claimed;
                        record = claimed;
                        etag
                    }
                    Ok(Claimed::Duplicate { state, what }) => {
                        let _ = self.ledger.unschedule(&claim_marker).await;
                        return_value["decision"] = json!("duplicate");
                        return_value["reason"] = json!(format!("already handled: {what}"));
                        return_value["ledgerState"] = json!(state.as_str());
                        Span::current().record("decision", "duplicate");
                        return Ok(Handled {
                            return_value,
                            prepared: None,
                        });
                    }
                    Err(e) => {
                        let _ = self.ledger.unschedule(&claim_marker).await;
                        return Err(e);
                    }
                }
            }
            // The takeover marker stays: the create may have been applied with its answer lost
            // (a timeout, a dropped connection), and then only Reconcile can find the claimed
            // record; if nothing was written, Reconcile drops the marker.
            Err(e) => return Err(e.into()),
        };

        // Two versions in flight at once: only the newest may be sent.
        match self
            .ledger
            .advance_latest(
                workspace,
                plan.rule.as_ref(),
                model.name.as_ref(),
                model.version.as_ref(),
                event.time,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                let why = format!(
                    "stale: a newer version of {} was acted on for rule {} while this one was being claimed; not sent",
                    model.name, plan.rule
                );
                log.warn(why.clone());
                record.claim = None;
                record.decision = "stale".into();
                record.transition(State::Stale, why.clone(), now);
                self.ledger.save(&record, &etag).await?;
                let _ = self.ledger.unschedule(&claim_marker).await;
                self.notifier
                    .announce(&self.ledger, &record.key, "stale", log)
                    .await;
                return_value["decision"] = json!("stale");
                return_value["reason"] = json!(why);
                Span::current().record("decision", "stale");
                return Ok(Handled {
                    return_value,
                    prepared: None,
                });
            }
            Err(e) => log.warn(format!(
                "could not update the newest-version pointer ({e}); continuing"
            )),
        }

        let key = record.key.clone();
        let sent = self
            .dispatcher()
            .send_claimed(record, etag, claim_marker, log)
            .await?;
        match &sent {
            Sent::Dispatched(_) => {
                self.notifier
                    .announce(&self.ledger, &key, "dispatched", log)
                    .await
            }
            Sent::GaveUp(_) => {
                self.notifier
                    .announce(&self.ledger, &key, "failed", log)
                    .await
            }
            _ => {}
        }
        match sent {
            Sent::Dispatched(outcome) | Sent::Unrecorded(outcome) => {
                log.info(success_line(&outcome));
                fill_outcome(&mut return_value, &outcome);
                Ok(Handled {
                    return_value,
                    prepared: None,
                })
            }
            Sent::Retrying { at, error } if self.ledger.is_durable() && error.is_transient() => {
                log.warn(format!(
                    "{error}; recorded as retrying: Reconcile tries again at {} (no Event Grid redelivery needed)",
                    rfc3339(at)
                ));
                return_value["decision"] = json!("retrying");
                return_value["nextAttemptAt"] = json!(rfc3339(at));
                return_value["error"] = json!(error.to_string());
                Span::current().record("decision", "retrying");
                Ok(Handled {
                    return_value,
                    prepared: None,
                })
            }
            Sent::Retrying { at, error } if self.ledger.is_durable() => {
                // Recorded and owned by Reconcile, but an operator must fix something (token,
                // repository, workflow): fail the invocation so it shows up in monitoring.
                Span::current().record("decision", "failed");
                log.error(format!(
                    "{error}; recorded as retrying (Reconcile tries again at {}); answering non-2xx so the failure is visible",
                    rfc3339(at)
                ));
                Err(PipelineError::Action(error))
            }
            Sent::Retrying { error, .. } | Sent::GaveUp(error) => {
                Span::current().record("decision", "failed");
                log.error(format!(
                    "{error}; answering non-2xx so Event Grid redelivers the event later"
                ));
                Err(PipelineError::Action(error))
            }
        }
    }

    /// Direct deployment: record the version `queued`, then take the endpoint and start the
    /// deployment PUT (or queue behind a running rollout). Never waits for provisioning.
    async fn act_rollout(
        &self,
        mut record: Record,
        invocation: &Invocation,
        log: &InvocationLog,
        mut return_value: Value,
    ) -> Result<Handled, PipelineError> {
        let deployer = match &self.deployer {
            Ok(deployer) => deployer.clone(),
            Err(why) => {
                log.error(why.clone());
                return Err(PipelineError::Misconfigured(vec![why.clone()]));
            }
        };
        let now = record.first_received;
        record.state = State::Queued;
        record.decision = "queued".into();
        if let Some(last) = record.history.last_mut() {
            last.state = State::Queued;
        }
        let claim_marker = self
            .ledger
            .schedule(&record.key, after(now, self.ledger.options.claim_timeout))
            .await?;
        let etag = match self.ledger.create(&record).await {
            Ok(Ok(etag)) => etag,
            Ok(Err((mut existing, etag))) => {
                let event_id = record.event_ids.first().cloned().unwrap_or_default();
                existing.note_delivery(&event_id, &invocation.id, now);
                let forced_again = invocation.force
                    && matches!(
                        existing.state,
                        State::Rejected
                            | State::Stale
                            | State::Failed
                            | State::Superseded
                            | State::RolledBack
                    );
                if (existing.open_to_action() && existing.state != State::Queued) || forced_again {
                    existing.forced |= record.forced;
                    existing.gate = record.gate.clone().or(existing.gate.take());
                    existing.gate_pending = false;
                    existing.rule = record.rule.clone();
                    existing.action = record.action.clone();
                    existing.reasons.extend(record.reasons.iter().cloned());
                    existing.decision = "queued".into();
                    existing.transition(State::Queued, "acting on it now", now);
                    match self.ledger.save(&existing, &etag).await {
                        Ok(etag) => {
                            record = existing;
                            etag
                        }
                        Err(e) => {
                            let _ = self.ledger.unschedule(&claim_marker).await;
                            if e == StoreError::Conflict {
                                return_value["decision"] = json!("duplicate");
                                return Ok(Handled {
                                    return_value,
                                    prepared: None,
                                });
                            }
                            return Err(e.into());
                        }
                    }
                } else {
                    let _ = self.ledger.unschedule(&claim_marker).await;
                    let phase = existing
                        .rollout
                        .as_ref()
                        .and_then(|r| r["phase"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    log.info(format!(
                        "duplicate delivery: model {} version {} is already {}{}; nothing started",
                        existing.model,
                        existing.version,
                        existing.state,
                        if phase.is_empty() {
                            String::new()
                        } else {
                            format!(" (rollout phase {phase})")
                        }
                    ));
                    if !matches!(existing.state, State::Queued | State::Deploying) {
                        let _ = self.ledger.save(&existing, &etag).await;
                    }
                    return_value["decision"] = json!("duplicate");
                    return_value["ledgerState"] = json!(existing.state.as_str());
                    Span::current().record("decision", "duplicate");
                    return Ok(Handled {
                        return_value,
                        prepared: None,
                    });
                }
            }
            // The marker stays, as for a dispatch: the create may have been applied.
            Err(e) => return Err(e.into()),
        };
        // Two versions in flight at once: only the newest may roll out (unless forced).
        if !record.forced
            && let Some(rule) = record.rule.clone()
        {
            let time = record.event_time.as_deref().and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
            match self
                .ledger
                .advance_latest(
                    &record.workspace,
                    &rule,
                    &record.model,
                    &record.version,
                    time,
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    let why = format!(
                        "stale: a newer version of {} was acted on for rule {rule}; not deployed",
                        record.model
                    );
                    log.warn(why.clone());
                    let mut record = record;
                    record.decision = "stale".into();
                    record.transition(State::Stale, why.clone(), now);
                    self.ledger.save(&record, &etag).await?;
                    let _ = self.ledger.unschedule(&claim_marker).await;
                    self.notifier
                        .announce(&self.ledger, &record.key, "stale", log)
                        .await;
                    return_value["decision"] = json!("stale");
                    return_value["reason"] = json!(why);
                    return Ok(Handled {
                        return_value,
                        prepared: None,
                    });
                }
                Err(e) => log.warn(format!(
                    "could not update the newest-version pointer ({e}); continuing"
                )),
            }
        }
        let record = deployer.start(record, etag, claim_marker, log).await?;
        return_value["decision"] = json!(record.state.as_str());
        if let Some(rollout) = &record.rollout {
            return_value["rollout"] = json!({
                "phase": rollout["phase"],
                "endpoint": rollout["endpoint"],
                "deployment": rollout["deployment"],
                "previousTraffic": rollout["previous_traffic"],
                "nextStep": rollout["next_step"],
            });
        }
        Span::current().record("decision", record.state.as_str());
        if (record.state == State::Failed
            || record.state == State::RolledBack
            || record.state == State::Stale)
            && let Some(why) = record.reasons.last()
        {
            return_value["reason"] = json!(why);
        }
        Ok(Handled {
            return_value,
            prepared: None,
        })
    }

    /// A delivery found the version's record already there. Claims it when nothing was sent for
    /// it yet; otherwise says what happened to it.
    #[allow(clippy::too_many_arguments)]
    async fn claim_existing(
        &self,
        mut existing: Record,
        mut etag: ETag,
        fresh: &Record,
        attempt_id: &str,
        event: &Event,
        invocation: &Invocation,
        now: OffsetDateTime,
        log: &InvocationLog,
    ) -> Result<Claimed, PipelineError> {
        for _ in 0..5 {
            let new_event = !existing.event_ids.iter().any(|e| e == event.id.as_ref());
            existing.note_delivery(event.id.as_ref(), &invocation.id, now);
            // With the in-memory ledger nothing else retries, so a redelivery takes the retry.
            let claimable = existing.open_to_action()
                || (!self.ledger.is_durable() && existing.state == State::Retrying)
                || (invocation.force
                    && matches!(
                        existing.state,
                        State::Rejected | State::Stale | State::Failed | State::Superseded
                    ));
            if claimable {
                existing.rule = fresh.rule.clone();
                existing.action = fresh.action.clone();
                existing.reasons.extend(fresh.reasons.iter().cloned());
                existing.forced |= fresh.forced;
                existing.gate = fresh.gate.clone().or(existing.gate.take());
                existing.gate_pending = false;
                claim(
                    &mut existing,
                    attempt_id,
                    invocation.trigger,
                    event.id.as_ref(),
                    now,
                );
                match self.ledger.save(&existing, &etag).await {
                    Ok(new_etag) => return Ok(Claimed::Ours(Box::new(existing), new_etag)),
                    Err(StoreError::Conflict) => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                let claim_timeout = self.ledger.options.claim_timeout;
                let what = match existing.state {
                    State::Dispatching
                        if crate::ledger::claim_expired(&existing, claim_timeout, now) =>
                    {
                        // Its owner died: make sure Reconcile takes it over now.
                        self.ledger.schedule(&existing.key, now).await?;
                        "a previous attempt died while sending it; Reconcile takes it over"
                            .to_string()
                    }
                    State::Dispatching => "another delivery is sending it right now".to_string(),
                    State::Retrying => format!(
                        "it is queued for retry by Reconcile{}",
                        existing
                            .next_attempt_at
                            .map(|t| format!(" at {}", rfc3339(t)))
                            .unwrap_or_default()
                    ),
                    state => {
                        let outcome = existing.last_outcome();
                        if outcome.is_empty() {
                            format!("it is {state}")
                        } else {
                            format!("it is {state}: {outcome}")
                        }
                    }
                };
                log.info(format!(
                    "duplicate delivery: model {} version {} is already handled ({what}); nothing sent",
                    existing.model, existing.version
                ));
                let state = existing.state;
                self.note_duplicate(existing, etag, new_event, event, invocation, now)
                    .await;
                return Ok(Claimed::Duplicate { state, what });
            }
            match self.ledger.load(&existing.key).await? {
                Some((reloaded, reloaded_etag)) => {
                    existing = reloaded;
                    etag = reloaded_etag;
                }
                None => {
                    return Ok(Claimed::Duplicate {
                        state: State::Received,
                        what: "the record vanished".into(),
                    });
                }
            }
        }
        log.info("duplicate delivery: another delivery claimed this version first; nothing sent");
        Ok(Claimed::Duplicate {
            state: State::Dispatching,
            what: "another delivery claimed it first".into(),
        })
    }
}

impl Pipeline {
    /// Notes a duplicate delivery on the record. A new event id is always worth recording (the
    /// outcome writer merges it if they race); a repeat of a known event is only noted on records
    /// that are no longer in flight, to keep writes away from the attempt recording its outcome.
    async fn note_duplicate(
        &self,
        mut record: Record,
        mut etag: ETag,
        new_event: bool,
        event: &Event,
        invocation: &Invocation,
        now: OffsetDateTime,
    ) {
        let in_flight = matches!(
            record.state,
            State::Dispatching | State::Retrying | State::Queued | State::Deploying
        );
        if !new_event && in_flight {
            return;
        }
        for _ in 0..10 {
            record.note_delivery(event.id.as_ref(), &invocation.id, now);
            let Err(StoreError::Conflict) = self.ledger.save(&record, &etag).await else {
                return;
            };
            // Lost a race: try again only while the new event id is still missing.
            match self.ledger.load(&record.key).await {
                Ok(Some((fresh, fresh_etag)))
                    if new_event && !fresh.event_ids.iter().any(|e| e == event.id.as_ref()) =>
                {
                    record = fresh;
                    etag = fresh_etag;
                }
                _ => return,
            }
        }
    }
}

/// What a delivery that found an existing record got.
enum Claimed {
    /// The claim: the record is ours to send.
    Ours(Box<Record>, ETag),
    /// Already handled (or being handled); nothing to send.
    Duplicate {
        /// The record's state.
        state: State,
        /// What happened to it, in words.
        what: String,
    },
}

/// Marks `record` as claimed by a new attempt.
pub fn claim(
    record: &mut Record,
    attempt_id: &str,
    trigger: &str,
    event_id: &str,
    now: OffsetDateTime,
) {
    // A new round of acting (first time, or again after nothing was sent) restarts the give-up
    // clock; retries and takeovers keep it.
    if record.acting_since.is_none() || record.state.open_to_action() {
        record.acting_since = Some(now);
    }
    record.claim = Some(Claim {
        attempt_id: attempt_id.to_string(),
        claimed_at: now,
    });
    record.next_attempt_at = None;
    record.decision = "dispatching".into();
    record.attempts.push(Attempt {
        id: attempt_id.to_string(),
        trigger: trigger.to_string(),
        event_id: event_id.to_string(),
        started_at: now,
        finished_at: None,
        outcome: String::new(),
        status: None,
        run_url: None,
        error: None,
    });
    if record.state != State::Dispatching
        || record
            .history
            .last()
            .is_none_or(|t| t.state != State::Dispatching)
    {
        record.transition(
            State::Dispatching,
            format!("attempt {attempt_id} ({trigger})"),
            now,
        );
    }
}

fn fill_outcome(return_value: &mut Value, outcome: &ActionOutcome) {
    return_value["status"] = json!(outcome.status);
    return_value["attempts"] = json!(outcome.attempts);
    if let Some(url) = &outcome.run_url {
        return_value["runUrl"] = json!(url);
    }
    if let Some(id) = outcome.run_id {
        return_value["runId"] = json!(id);
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

fn base_return_value(event: &Event, decision: &Decision, explanation: &str) -> Value {
    let (label, reason_code) = match decision {
        Decision::Act(_) => ("dispatched", None),
        Decision::Observe(_) => ("observed", None),
        Decision::Paused(_) => ("skipped", Some("paused")),
        Decision::Skip(reason) => ("skipped", Some(reason.code())),
    };
    let mut value = json!({
        "decision": label,
        "reason": explanation,
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

/// What passing the gate carries into acting.
#[derive(Debug, Clone, Default)]
pub struct GatePassed {
    /// Shipped despite the gate or the stale check.
    pub forced: bool,
    /// The gate's numbers, for the record.
    pub summary: Option<Value>,
}

/// The gate's answer, with I/O failures.
enum GateOutcome {
    Pass {
        notes: Vec<String>,
        forced: bool,
        summary: Value,
    },
    Stop {
        state: State,
        reason: String,
        summary: Value,
    },
    Retry {
        error: String,
    },
}

/// Whether a model tag is set to true (`true`, `1`, `yes`).
fn tag_is_true(model: &ModelRegistered, key: &str) -> bool {
    model
        .tag(key)
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

impl Pipeline {
    /// Looks the numbers up and asks the gate.
    async fn run_gate(
        &self,
        spec: &crate::config::gate::GateSpec,
        event: &Event,
        model: &ModelRegistered,
        plan: &Plan,
        overrides: Overrides,
        log: &InvocationLog,
    ) -> GateOutcome {
        if overrides.skip {
            let reason =
                "skipped: the model version is tagged autodeploy.skip=true, so it is never shipped"
                    .to_string();
            return GateOutcome::Stop {
                state: State::Skipped,
                summary: json!({ "metric": spec.metric, "verdict": "skip", "reason": reason }),
                reason,
            };
        }
        let candidate = match self
            .metrics
            .metric(
                spec,
                &event.source,
                model.name.as_ref(),
                model.version.as_ref(),
                &model.tags,
                &model.properties,
            )
            .await
        {
            Ok(found) => found,
            Err(LookupError::Transient(e)) => return GateOutcome::Retry { error: e },
            Err(LookupError::Permanent(e)) => {
                log.warn(format!("gate: {e}; the metric counts as missing"));
                None
            }
        };
        let champion_workspace = match &plan.action {
            ActionPlan::AzureMl(p) => crate::event::WorkspaceId::parse(&p.workspace)
                .unwrap_or_else(|_| event.source.clone()),
            ActionPlan::Github(_) => event.source.clone(),
        };
        let champion = match (&spec.champion_endpoint, spec.compare_to_live) {
            (Some(endpoint), true) => match self
                .metrics
                .champion(spec, &champion_workspace, endpoint)
                .await
            {
                Ok(champion) => champion,
                Err(LookupError::Transient(e)) => return GateOutcome::Retry { error: e },
                Err(LookupError::Permanent(e)) => {
                    log.warn(format!(
                        "gate: cannot read the champion ({e}); only the bounds apply"
                    ));
                    None
                }
            },
            _ => None,
        };
        let verdict = gate_policy::evaluate(
            spec,
            candidate.as_ref().map(|f| f.value),
            champion.as_ref(),
            overrides,
        );
        let mut summary = json!({
            "metric": spec.metric,
            "value": candidate.as_ref().map(|f| f.value),
            "source": candidate.as_ref().map(|f| f.source.clone()),
            "champion": champion,
        });
        match verdict {
            Verdict::Accept { notes, forced } => {
                summary["verdict"] = json!(if forced { "forced" } else { "accepted" });
                summary["notes"] = json!(notes);
                GateOutcome::Pass {
                    notes,
                    forced,
                    summary,
                }
            }
            Verdict::Reject { reason } => {
                summary["verdict"] = json!("rejected");
                summary["reason"] = json!(reason);
                GateOutcome::Stop {
                    state: State::Rejected,
                    reason,
                    summary,
                }
            }
            Verdict::Skip { reason } => {
                summary["verdict"] = json!("skip");
                GateOutcome::Stop {
                    state: State::Skipped,
                    reason,
                    summary,
                }
            }
        }
    }

    /// Records a gate refusal (final for the version). Returns the record's key.
    #[allow(clippy::too_many_arguments)]
    async fn record_gate_stop(
        &self,
        event: &Event,
        model: &ModelRegistered,
        decision: &Decision,
        plan: &Plan,
        state: State,
        reason: &str,
        summary: Value,
        invocation: &Invocation,
        log: &InvocationLog,
    ) -> Result<String, PipelineError> {
        let now = OffsetDateTime::now_utc();
        let mut record =
            self.new_record(event, model, decision, Some(plan), state, invocation, now);
        record.decision = state.as_str().into();
        record.reasons.push(reason.to_string());
        record.gate = Some(summary.clone());
        if let Some(last) = record.history.last_mut() {
            last.note = reason.to_string();
        }
        let key = record.key.clone();
        let (mut existing, mut etag) = match self.ledger.create(&record).await? {
            Ok(_) => return Ok(key),
            Err(existing) => existing,
        };
        for _ in 0..5 {
            existing.note_delivery(event.id.as_ref(), &invocation.id, now);
            if existing.open_to_action() {
                existing.gate = Some(summary.clone());
                existing.gate_pending = false;
                existing.next_attempt_at = None;
                existing.rule = record.rule.clone();
                existing.action = record.action.clone();
                existing.reasons.push(reason.to_string());
                existing.decision = state.as_str().into();
                existing.transition(state, reason, now);
            } else {
                log.info(format!(
                    "the ledger already has this version as {}",
                    existing.state
                ));
            }
            match self.ledger.save(&existing, &etag).await {
                Ok(_) => return Ok(key),
                Err(StoreError::Conflict) => match self.ledger.load(&key).await? {
                    Some((fresh, fresh_etag)) => {
                        existing = fresh;
                        etag = fresh_etag;
                    }
                    None => return Ok(key),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Ok(key)
    }

    /// A metric lookup failed transiently: with a durable ledger the version waits as `retrying`
    /// (gate pending) and `Reconcile` runs the gate again; in memory, Event Grid keeps the retry.
    #[allow(clippy::too_many_arguments)]
    async fn record_gate_retry(
        &self,
        event: &Event,
        model: &ModelRegistered,
        decision: &Decision,
        plan: &Plan,
        error: &str,
        invocation: &Invocation,
        log: &InvocationLog,
        mut return_value: Value,
    ) -> Result<Handled, PipelineError> {
        if !self.ledger.is_durable() {
            log.error(format!(
                "gate: {error}; answering non-2xx so Event Grid redelivers the event later"
            ));
            return Err(PipelineError::Action(ActionError::Unavailable(
                error.to_string(),
            )));
        }
        let now = OffsetDateTime::now_utc();
        let at = after(now, self.ledger.retry_delay(1));
        let why = format!(
            "the quality gate's metric lookup failed ({error}); Reconcile runs the gate again at {}",
            rfc3339(at)
        );
        let mut record = self.new_record(
            event,
            model,
            decision,
            Some(plan),
            State::Retrying,
            invocation,
            now,
        );
        record.gate_pending = true;
        record.next_attempt_at = Some(at);
        record.decision = "retrying".into();
        record.reasons.push(why.clone());
        if let Some(last) = record.history.last_mut() {
            last.note = why.clone();
        }
        let marker = self.ledger.schedule(&record.key, at).await?;
        match self.ledger.create(&record).await? {
            Ok(_) => {}
            Err((mut existing, etag)) if existing.open_to_action() => {
                existing.note_delivery(event.id.as_ref(), &invocation.id, now);
                existing.gate_pending = true;
                existing.next_attempt_at = Some(at);
                existing.rule = record.rule.clone();
                existing.action = record.action.clone();
                existing.decision = "retrying".into();
                existing.transition(State::Retrying, why.clone(), now);
                if let Err(e) = self.ledger.save(&existing, &etag).await {
                    let _ = self.ledger.unschedule(&marker).await;
                    if e != StoreError::Conflict {
                        return Err(e.into());
                    }
                }
            }
            Err((existing, _)) => {
                let _ = self.ledger.unschedule(&marker).await;
                return_value["decision"] = json!("duplicate");
                return_value["ledgerState"] = json!(existing.state.as_str());
                return Ok(Handled {
                    return_value,
                    prepared: None,
                });
            }
        }
        log.warn(why.clone());
        return_value["decision"] = json!("retrying");
        return_value["nextAttemptAt"] = json!(rfc3339(at));
        return_value["reason"] = json!(why);
        Span::current().record("decision", "retrying");
        Ok(Handled {
            return_value,
            prepared: None,
        })
    }
}
