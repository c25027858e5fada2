//! aml-autodeploy: an Azure Functions custom handler that turns Azure Machine Learning
//! "model registered" events into safe, audited deployments.
//!
//! # Layout
//! The data flows top to bottom through these steps (folders in brackets):
//!
//! 1. [`startup`] / [`routes`]: the HTTP server the Functions host talks to (`GET /`,
//!    `POST /ModelRegistered`, `POST /Reconcile`), and the one place errors become responses.
//! 2. [`host`]: the custom-handler envelope in, `{Outputs, Logs, ReturnValue}` out.
//! 3. [`event`] (`event/`): Event Grid or CloudEvents envelope → typed [`event::Event`].
//! 4. [`config`] (`config/`, one file per section): `autodeploy.yml` → validated rules, every
//!    referenced file kept inside the config's [`folder`]; a rule's `az ml` deployment YAML read as
//!    az ml reads it by [`deployment`] (the translation, and the assets it plans: code folder
//!    hash, inline environments, labels, data collectors).
//! 5. [`policy`]: `decide(event, config, facts) -> Decision`, pure; [`gate`] (`gate/`): the
//!    quality gate's verdict (pure) and its metric [`gate::lookup`] in Azure ML. What a rule
//!    decided, and a rollout's progress, are [`domain`] types (`domain/`), stored in the record.
//! 6. [`actions`] (`actions/`): one home per action: [`actions::github`] (settings, client, App
//!    auth, dispatch) and [`actions::azureml`]: the rollout (lock, assets phase and streaming code upload,
//!    smoke test, traffic steps, judging by the pure [`canary`] judge, approval, phase machine; for
//!    batch endpoints the smoke job and the default switch, with [`actions::azureml::batch`]'s wire
//!    bodies),
//!    and [`actions::azureml::deploy`], which runs rollouts from the ledger.
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
//! Around them: [`cli`] (`cli/`, one file per subcommand), [`env`](mod@env) (the environment, through the
//! [`env::Env`] seam; each part reads its own settings and [`startup`] composes them), [`azure`]
//! (`azure/`: clouds, credentials, the ARM client and Azure ML resources, Azure Monitor metrics
//! and the figures they answer with), [`http`] (the process's one HTTP client, with the
//! [`redact`]or every upstream answer is turned into text through), [`retry`] (backoff inside a
//! time budget), [`logs`] (per-invocation lines) and [`telemetry`] (tracing output).
//!
//! # Layers
//! Imports point one way: a module uses only its own room (top-level module) and the rooms below
//! it, so each room can be read and changed knowing only what lies under it. `tests/layers.rs`
//! checks every arrow against this list and that no file sits in an import circle
//! (`scripts/layers.sh` prints the arrows). Within a line, a room may use those left of it.
//! Layers, bottom first:
//!
//! 1. [`env`](mod@env): reading the environment; imports nothing of ours.
//! 2. [`redact`], [`retry`], [`logs`], [`telemetry`], [`http`]: the process's plumbing.
//! 3. [`folder`], [`event`], [`host`]: a config's folder, the typed event, the host envelope.
//! 4. [`azure`]: the Azure clients and the answers they give.
//! 5. [`canary`], [`deployment`]: pure judgement of metrics; the `az ml` YAML and its assets.
//! 6. [`config`]: the rules.
//! 7. [`gate`], [`domain`], [`policy`]: the verdict, what a version's record holds, `decide`.
//! 8. [`ledger`]: durable records, their compare-and-swap and the outbox.
//! 9. [`notify`], [`actions`]: announcing; acting (GitHub, the rollout engine).
//! 10. [`pipeline`], [`reconcile`]: one event; the timer's pass.
//! 11. [`webhook`], [`routes`], [`startup`], [`cli`]: the ways in, and the composition root.

pub mod actions;
pub mod azure;
pub mod canary;
pub mod cli;
pub mod config;
pub mod deployment;
pub mod domain;
pub mod env;
pub mod event;
pub mod folder;
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

pub mod startup;
pub mod telemetry;
pub mod webhook;
