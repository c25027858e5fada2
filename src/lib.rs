//! aml-autodeploy: an Azure Functions custom handler that turns Azure Machine Learning
//! "model registered" events into safe, audited deployments.
//!
//! # Layout
//! The modules follow the data, one step each:
//!
//! 1. [`routes`] / [`startup`]: the HTTP server the Functions host talks to (`GET /`, `POST /ModelRegistered`).
//! 2. [`host`]: the custom-handler envelope in, `{Outputs, Logs, ReturnValue}` out.
//! 3. [`event`]: Event Grid or CloudEvents envelope → typed [`event::Event`].
//! 4. [`config`]: `autodeploy.yml` → validated rules (and `check-config`).
//! 5. [`policy`]: `decide(event, config, facts) -> Decision`, pure.
//! 6. [`ledger`]: one durable record per model version: the claim before acting, the outcome after.
//! 7. [`actions`]: the action behind a trait ([`actions::github`]: repository/workflow dispatch),
//!    sent and recorded by [`dispatch`].
//! 8. [`pipeline`]: steps 3–7 for one event, shared by the handler and `replay`.
//! 9. [`reconcile`]: the timer's pass over the ledger's outbox (retries, takeovers, giving up).
//!
//! [`webhook`] replaces steps 1–2 when there is no Functions host (`serve --webhook`): Event Grid's
//! handshakes, batches and mandatory authentication, with an internal `Reconcile` timer.
//!
//! Around them: [`azure`] (clouds, credentials, the ARM client), [`http`] (the process's one HTTP
//! client), [`retry`] (backoff inside a time budget), [`settings`] (environment read once), [`logs`] (per-invocation lines),
//! [`telemetry`] (tracing output) and [`cli`] (the subcommands, one file each).

pub mod actions;
pub mod azure;
pub mod cli;
pub mod config;
pub mod event;
pub mod gate;
pub mod host;
pub mod http;
pub mod ledger;
pub mod logs;
pub mod notify;
pub mod pipeline;
pub mod policy;
pub mod reconcile;
pub mod retry;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod webhook;
