//! aml-autodeploy: an Azure Functions custom handler that turns Azure Machine Learning
//! "model registered" events into safe, audited deployments.
//!
//! # Layout
//! The modules follow the data, one step each (folders in brackets):
//!
//! 1. [`startup`] / [`routes`]: the HTTP server the Functions host talks to (`GET /`,
//!    `POST /ModelRegistered`, `POST /Reconcile`), and the one place errors become responses.
//! 2. [`host`]: the custom-handler envelope in, `{Outputs, Logs, ReturnValue}` out.
//! 3. [`event`] (`event/`): Event Grid or CloudEvents envelope → typed [`event::Event`].
//! 4. [`config`] (`config/`, one file per section): `autodeploy.yml` → validated rules, every
//!    referenced file kept inside the config's folder.
//! 5. [`policy`]: `decide(event, config, facts) -> Decision`, pure; [`gate`] (`gate/`): the
//!    quality gate's verdict (pure) and its metric [`gate::lookup`] in Azure ML.
//! 6. [`actions`] (`actions/`): one home per action: [`actions::github`] (client, App auth,
//!    dispatch) and [`actions::azureml`]: the `az ml` YAML translation and the assets it registers
//!    first ([`actions::azureml::assets`]: code folder hash and upload, inline environments,
//!    labels, data collectors), canary [`actions::azureml::analysis`] (pure judge), the rollout
//!    (lock, assets phase, smoke test, traffic steps, judging, approval, phase machine; for batch
//!    endpoints, [`actions::azureml::batch`]: their YAML translation, and in the rollout the smoke
//!    job and the default switch), and [`actions::azureml::deploy`], which runs rollouts from the
//!    ledger.
//! 7. [`ledger`] (`ledger/`): one durable record per model version, written only through its
//!    compare-and-swap ([`ledger::write`]); the outbox of due work.
//! 8. [`pipeline`] (`pipeline/`): steps 3–7 for one event (decide and answer with a typed
//!    [`pipeline::Outcome`], run the gate, act), shared by the handler, the webhook and the CLI.
//! 9. [`reconcile`]: the timer's pass over the ledger's outbox (retries, takeovers, rollout steps,
//!    giving up); [`notify`] announces outcomes.
//!
//! [`webhook`] (`webhook/`: auth, signing keys, batch) replaces steps 1–2 when there is no
//! Functions host (`serve --webhook`): Event Grid's handshakes, batches within a deadline and
//! mandatory authentication, with an internal `Reconcile` timer.
//!
//! Around them: [`cli`] (`cli/`, one file per subcommand), [`settings`] (environment read once,
//! through the [`settings::Env`] seam), [`azure`] (`azure/`: clouds, credentials, the ARM client and
//! Azure ML resources, Azure Monitor metrics), [`http`] (the process's one HTTP client, with the [`redact`]or every
//! upstream answer is turned into text through), [`retry`] (backoff inside a time
//! budget), [`logs`] (per-invocation lines) and [`telemetry`] (tracing output).

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
pub mod redact;
pub mod retry;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod webhook;
