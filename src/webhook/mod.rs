//! Standalone Event Grid webhook mode (`serve --webhook`), for Container Apps and Kubernetes where
//! there is no Functions host: Event Grid's handshakes, batches, mandatory authentication, and an
//! internal `Reconcile` timer with one leader among replicas (a blob lease).
//!
//! - `auth`: the shared key or an Entra ID token, checked before anything else.
//! - `keys`: the Entra ID signing keys (cached, single-flight refresh) and the token checks.
//! - `batch`: one delivery (a batch of events) within its deadline.

mod auth;
mod batch;
mod keys;
mod response;
mod state;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tracing::Instrument;

use crate::logs::InvocationLog;
use crate::pipeline::Pipeline;

pub use auth::WebhookAuth;
pub use keys::{EVENT_GRID_ROLE, EntraValidator, TokenError};
use response::json_response;
pub use state::WebhookState;

/// Event Grid delivers at most 1 MB per request; a little slack for the envelope.
pub const MAX_BODY_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// Default deadline of one delivery (`AUTODEPLOY_WEBHOOK_DEADLINE_SECS`): Event Grid waits 30 s.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(25);

/// The router: `POST /api/events`, `OPTIONS /api/events`, `GET /healthz`; anything else `404`
/// after reading the body.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/events", post(batch::events).options(abuse_protection))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Unknown paths. The body is read first (bounded): answering while a client still sends it
/// makes the client see a reset connection.
async fn not_found(_body: Bytes) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({ "error": "not found: this server serves POST /api/events and GET /healthz" }),
    )
}

/// CloudEvents abuse protection: echo the requesting origin back.
async fn abuse_protection(
    State(state): State<WebhookState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    _body: Bytes,
) -> Response {
    if let Err(denied) = auth::authenticate(&state.auth, &headers, query.as_deref()).await {
        return denied;
    }
    let origin = headers
        .get("webhook-request-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*")
        .to_string();
    (
        StatusCode::OK,
        [
            ("webhook-allowed-origin", origin),
            ("webhook-allowed-rate", "120".to_string()),
            ("allow", "POST".to_string()),
        ],
    )
        .into_response()
}

/// Runs `Reconcile` every `interval` while this replica holds the leader lease (always, with an
/// in-memory ledger). Ends when `stop` resolves.
pub async fn reconcile_loop(
    pipeline: Arc<Pipeline>,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let holder = format!("replica-{}", uuid::Uuid::new_v4());
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        let leader = match pipeline
            .ledger()
            .lead("leader/reconcile", &holder, interval * 3)
            .await
        {
            Ok(leader) => leader,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the ledger for the leader lease");
                false
            }
        };
        if !leader {
            continue;
        }
        let log = InvocationLog::new();
        match crate::reconcile::reconcile(&pipeline, &log)
            .instrument(tracing::info_span!("reconcile", invocation_id = %holder))
            .await
        {
            Ok(summary) => tracing::info!(summary = %summary, "Reconcile pass"),
            Err(e) => tracing::warn!(error = %e, "Reconcile pass failed"),
        }
    }
}
