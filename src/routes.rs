//! HTTP routes the Functions host calls, and the one place errors become responses.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use thiserror::Error;
use tracing::Instrument;
use tracing::field::Empty;

use crate::actions::ActionError;
use crate::host::{self, EnvelopeError};
use crate::ledger::StoreError;
use crate::logs::InvocationLog;
use crate::pipeline::{Execution, Invocation, Pipeline, PipelineError};

/// Shared state of the server.
#[derive(Clone)]
pub struct AppState {
    /// The event pipeline.
    pub pipeline: Arc<Pipeline>,
}

/// The router: `GET /` (readiness) and `POST /ModelRegistered`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(ready))
        .route("/ModelRegistered", post(model_registered))
        .route("/Reconcile", post(reconcile))
        .fallback(not_found)
        .with_state(state)
}

/// The host polls `GET /` every 25 ms until anything answers; answer at once, whatever the config.
async fn ready() -> &'static str {
    "ok"
}

/// Unknown paths. Like every route, it reads the body (bounded, as the extractor does) before
/// answering: the host sends bodies chunked, and an answer sent while it still writes shows up
/// on its side as a reset connection or a broken pipe.
async fn not_found(_body: Bytes) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({ "error": "no such function: this handler serves POST /ModelRegistered" }),
    )
}

async fn model_registered(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let invocation_id = headers
        .get("x-azure-functions-invocationid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    let span = tracing::info_span!(
        "invocation",
        invocation_id = %invocation_id,
        event_id = Empty,
        model = Empty,
        version = Empty,
        rule = Empty,
        decision = Empty,
    );
    async move {
        let started = Instant::now();
        let log = InvocationLog::new();
        let result = match host::event_from_envelope(&body) {
            Err(e) => Err(HandlerError::Envelope(e)),
            Ok(event) => {
                let invocation = Invocation {
                    id: invocation_id.clone(),
                    execution: Execution::Send,
                    trigger: "event",
                    force: false,
                };
                state
                    .pipeline
                    .handle(&event, &invocation, &log)
                    .await
                    .map_err(HandlerError::from)
            }
        };
        match result {
            Ok(handled) => {
                // The one stdout line of the invocation; its fields are the span's (decision,
                // event id, model, version, rule, invocation id).
                tracing::info!(duration_ms = millis(started), "invocation done");
                json_response(
                    StatusCode::OK,
                    host::response(log.into_lines(), handled.outcome),
                )
            }
            Err(error) => error.into_failure(&log, started),
        }
    }
    .instrument(span)
    .await
}

/// The timer function: one pass over the ledger's outbox. The body (the timer's envelope) carries
/// nothing we need, but it is read all the same (see [`not_found`]).
async fn reconcile(State(state): State<AppState>, headers: HeaderMap, _body: Bytes) -> Response {
    let invocation_id = headers
        .get("x-azure-functions-invocationid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    let span = tracing::info_span!("reconcile", invocation_id = %invocation_id);
    async move {
        let started = Instant::now();
        let log = InvocationLog::new();
        if let Some(problems) = state.pipeline.problems() {
            let error = HandlerError::Pipeline(PipelineError::Misconfigured(problems.to_vec()));
            return error.into_failure(&log, started);
        }
        match crate::reconcile::reconcile(&state.pipeline, &log).await {
            Ok(summary) => {
                let count = |key: &str| summary[key].as_u64().unwrap_or(0);
                tracing::info!(
                    duration_ms = millis(started),
                    due = count("due"),
                    dispatched = count("dispatched"),
                    retrying = count("retrying"),
                    failed = count("failed"),
                    found_existing_run = count("foundExistingRun"),
                    stale = count("stale"),
                    skipped = count("skipped"),
                    cleaned = count("cleaned"),
                    rollouts = count("rollouts"),
                    gate_rechecks = count("gateRechecks"),
                    errors = count("errors"),
                    "Reconcile done"
                );
                json_response(StatusCode::OK, host::response(log.lines(), summary))
            }
            Err(e) => {
                log.error(format!("Reconcile stopped: the ledger is unavailable: {e}"));
                HandlerError::Pipeline(PipelineError::Storage(e)).into_failure(&log, started)
            }
        }
    }
    .instrument(span)
    .await
}

/// Milliseconds since `started`, to the microsecond.
fn millis(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// Every way an invocation can fail, and its status.
#[derive(Debug, Error)]
pub enum HandlerError {
    /// 400: the request is not a host envelope.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// 500: the config or settings are broken (the host fails the invocation; Event Grid retries).
    /// 502: GitHub refused the request; 503: GitHub unavailable within the budget (in-memory
    /// ledger only) or the ledger unavailable.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl HandlerError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            HandlerError::Envelope(_) => StatusCode::BAD_REQUEST,
            HandlerError::Pipeline(PipelineError::Misconfigured(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            HandlerError::Pipeline(PipelineError::Action(ActionError::Unavailable(_))) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HandlerError::Pipeline(PipelineError::Action(ActionError::Credentials(_))) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            HandlerError::Pipeline(PipelineError::Action(ActionError::Rejected { .. })) => {
                StatusCode::BAD_GATEWAY
            }
            HandlerError::Pipeline(PipelineError::Storage(StoreError::Unavailable(_)))
            | HandlerError::Pipeline(PipelineError::Storage(_)) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The failed invocation's line and response. The host discards a non-2xx reply's body and
    /// `Logs`, so the reason and the lines that explain it go into one error line (on stderr under
    /// the host, where it stays an Error); the JSON body is for people debugging with curl or
    /// `func start`.
    fn into_failure(self, log: &InvocationLog, started: Instant) -> Response {
        let status = self.status();
        let logs = log.lines();
        tracing::error!(
            error = %self,
            status = status.as_u16(),
            duration_ms = millis(started),
            logs = %logs.join(" | "),
            "invocation failed"
        );
        json_response(status, json!({ "error": self.to_string(), "Logs": logs }))
    }
}

fn json_response(status: StatusCode, body: impl serde::Serialize) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        // Straight to bytes (`to_string` goes through `fmt::Write`, twice as slow), into a buffer
        // that holds a typical answer without growing.
        {
            let mut bytes = Vec::with_capacity(2048);
            match serde_json::to_writer(&mut bytes, &body) {
                Ok(()) => bytes,
                Err(_) => Vec::new(),
            }
        },
    )
        .into_response()
}
