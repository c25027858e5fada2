//! One delivery (a batch of events) within its deadline: a few events at a time, and what is not
//! finished when the deadline nears is recorded in the ledger for `Reconcile` (or, with an
//! in-memory ledger, the delivery is answered `503` so Event Grid redelivers it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use super::auth;
use super::response::json_response;
use super::state::WebhookState;
use crate::logs::InvocationLog;
use crate::pipeline::{Execution, Invocation, Outcome, Pipeline, PipelineError};

/// Events of one delivery handled at once.
const CONCURRENCY: usize = 4;

pub(super) async fn events(
    State(state): State<WebhookState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The clock starts when the delivery arrived (the body is read), authentication included.
    let deadline = Instant::now() + state.deadline;
    if let Err(denied) = auth::authenticate(&state.auth, &headers, query.as_deref()).await {
        return denied;
    }
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("delivery", delivery_id = %delivery_id);
    async move {
        let value: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": format!("the body is not JSON: {e}") }),
                );
            }
        };
        let kind = headers
            .get("aeg-event-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("Notification");
        if kind.eq_ignore_ascii_case("SubscriptionValidation") {
            return validation_handshake(&value);
        }
        // An Event Grid array, a CloudEvents batch, or one CloudEvent / event.
        let events = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        let results = run_batch(&state.pipeline, events, &delivery_id, deadline).await;
        answer(results)
    }
    .instrument(span)
    .await
}

fn validation_handshake(value: &Value) -> Response {
    let code = value
        .as_array()
        .and_then(|a| a.first())
        .and_then(|e| crate::event::get_ci(e.as_object()?, "data"))
        .and_then(|d| d.get("validationCode").or_else(|| d.get("ValidationCode")))
        .and_then(Value::as_str);
    match code {
        Some(code) => {
            tracing::info!("Event Grid subscription validated");
            json_response(StatusCode::OK, json!({ "validationResponse": code }))
        }
        None => json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": "a SubscriptionValidation request without a validationCode" }),
        ),
    }
}

fn invocation(delivery_id: &str, i: usize) -> Invocation {
    Invocation {
        id: format!("{delivery_id}#{i}"),
        execution: Execution::Send,
        trigger: "event",
        force: false,
    }
}

fn event_span(invocation: &Invocation) -> tracing::Span {
    tracing::info_span!(
        "invocation",
        invocation_id = %invocation.id,
        event_id = tracing::field::Empty,
        model = tracing::field::Empty,
        version = tracing::field::Empty,
        rule = tracing::field::Empty,
        decision = tracing::field::Empty,
    )
}

/// Handles `events`, [`CONCURRENCY`] at a time, until the cut-off (`deadline` less
/// [`recording_reserve`]); then records what is not finished for `Reconcile`, by `deadline`. Events
/// still running at the cut-off go on in the background; the ledger's claims keep them from
/// acting twice with `Reconcile`.
async fn run_batch(
    pipeline: &Arc<Pipeline>,
    events: Vec<Value>,
    delivery_id: &str,
    deadline: Instant,
) -> Vec<Result<Outcome, PipelineError>> {
    let left = deadline.saturating_duration_since(Instant::now());
    let cutoff = deadline - recording_reserve(left);
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    // Events about the same subject (model version) run in batch order, one after the other.
    let mut last_of_subject: HashMap<String, oneshot::Receiver<()>> = HashMap::new();
    let tasks: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let (pipeline, permits, event) = (pipeline.clone(), permits.clone(), event.clone());
            let invocation = invocation(delivery_id, i);
            let span = event_span(&invocation);
            let (done, next) = oneshot::channel::<()>();
            let previous = subject(&event).and_then(|s| last_of_subject.insert(s, next));
            tokio::spawn(
                async move {
                    // Resolves when the previous event of the subject is finished (its sender
                    // dropped), however it ended.
                    let _done = done;
                    if let Some(previous) = previous
                        && timeout_at(cutoff, previous).await.is_err()
                    {
                        return None;
                    }
                    let Ok(Ok(_permit)) = timeout_at(cutoff, permits.acquire_owned()).await else {
                        return None;
                    };
                    let log = InvocationLog::new();
                    let handled = pipeline.handle(&event, &invocation, &log).await;
                    Some(handled.map(|h| h.outcome))
                }
                .instrument(span),
            )
        })
        .collect();
    // One entry per event: its result, or `None` when it was not finished by the cut-off.
    let mut progress = Vec::with_capacity(tasks.len());
    for task in tasks {
        progress.push(match timeout_at(cutoff, task).await {
            Ok(Ok(Some(result))) => Some(result),
            Ok(Ok(None)) | Err(_) => None,
            Ok(Err(panicked)) => Some(Err(PipelineError::Misconfigured(vec![format!(
                "handling the event failed unexpectedly: {panicked}"
            )]))),
        });
    }
    let late = progress.iter().filter(|p| p.is_none()).count();
    if late > 0 {
        tracing::warn!(
            late,
            "events not finished before the delivery's deadline; leaving them to Reconcile"
        );
    }
    let events = &events;
    let deferrals = progress.into_iter().enumerate().map(|(i, p)| async move {
        match p {
            Some(result) => result,
            None => defer(pipeline, &events[i], delivery_id, i, deadline).await,
        }
    });
    futures_util::future::join_all(deferrals).await
}

/// The part of the time `left` kept for recording late events: a fifth, at least a second (but
/// never more than half).
fn recording_reserve(left: Duration) -> Duration {
    (left / 5).max(Duration::from_secs(1)).min(left / 2)
}

/// The event's source and subject (for a model event, its version), when it has them.
fn subject(event: &Value) -> Option<String> {
    let object = event.as_object()?;
    let source = crate::event::get_ci(object, "topic")
        .or_else(|| crate::event::get_ci(object, "source"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let subject = crate::event::get_ci(object, "subject")?.as_str()?;
    Some(format!("{source}|{subject}").to_ascii_lowercase())
}

/// Records a late event for `Reconcile`, by `deadline`. With an in-memory ledger nothing durable
/// can hold it: the error makes Event Grid redeliver the batch.
async fn defer(
    pipeline: &Pipeline,
    event: &Value,
    delivery_id: &str,
    i: usize,
    deadline: Instant,
) -> Result<Outcome, PipelineError> {
    let not_reached = || {
        PipelineError::Action(crate::actions::ActionError::Unavailable(
            "not every event was handled before the delivery's deadline; Event Grid redelivers the batch"
                .into(),
        ))
    };
    if !pipeline.ledger().is_durable() {
        return Err(not_reached());
    }
    let invocation = invocation(delivery_id, i);
    let span = event_span(&invocation);
    let log = InvocationLog::new();
    match timeout_at(
        deadline,
        pipeline.defer(event, &invocation, &log).instrument(span),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(not_reached()),
    }
}

/// The delivery's answer: `200` with one result per event, or the first failure's status (Event
/// Grid redelivers the batch; the ledger makes the events already handled duplicates).
fn answer(results: Vec<Result<Outcome, PipelineError>>) -> Response {
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(outcome) => outcomes.push(outcome),
            Err(PipelineError::Storage(e)) => {
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": format!("the ledger is unavailable: {e}") }),
                );
            }
            Err(e @ PipelineError::Misconfigured(_)) => {
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": e.to_string() }),
                );
            }
            Err(e @ PipelineError::Action(_)) => {
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": e.to_string() }),
                );
            }
        }
    }
    json_response(StatusCode::OK, json!({ "results": outcomes }))
}
