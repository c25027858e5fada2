//! What every webhook request handler shares.

use std::sync::Arc;
use std::time::Duration;

use super::auth::WebhookAuth;
use crate::pipeline::Pipeline;

/// The webhook server's state.
#[derive(Clone)]
pub struct WebhookState {
    /// The event pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Authentication.
    pub auth: Arc<WebhookAuth>,
    /// One delivery's deadline, shared by its events (`AUTODEPLOY_WEBHOOK_DEADLINE_SECS`).
    pub deadline: Duration,
}
