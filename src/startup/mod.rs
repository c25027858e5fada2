//! Building the application from settings, and binding the port: the Functions custom handler
//! ([`Application`]) or the standalone webhook ([`WebhookApplication`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

mod settings;

pub use settings::Settings;

use crate::actions::azureml::deploy::Deployer;
use crate::actions::azureml::rollout::RolloutEngine;
use crate::actions::github::GithubClient;
use crate::azure::arm::ArmClient;
use crate::config::Config;
use crate::gate::lookup::MetricLookup;
use crate::http::Http;
use crate::ledger::connection::managed_identity;
use crate::ledger::{Ledger, MemoryStore};
use crate::notify::Notifier;
use crate::pipeline::Pipeline;
use crate::policy::Facts;
use crate::routes::{AppState, router};
use crate::webhook::{self, WebhookAuth, WebhookState, reconcile_loop};

/// Which ledger a pipeline uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerChoice {
    /// The one the settings name (`AUTODEPLOY_STORAGE` / `AzureWebJobsStorage`).
    Configured,
    /// A fresh in-memory one (dry runs: nothing is written anywhere).
    Scratch,
}

/// The ledger the settings name, or why it cannot be opened.
pub fn open_ledger(settings: &Settings, http: &Http) -> Result<Ledger, String> {
    let target = settings.storage.clone()?;
    // The Functions convention: `__clientId` names a user-assigned managed identity; otherwise
    // the process credential (managed identity on Azure, the CLI on a laptop).
    let store = target.open(&settings.container, http, |client_id| match client_id {
        Some(id) => managed_identity(Some(id)),
        None => settings
            .credential
            .clone()
            .map(|c| c as Arc<dyn azure_core::credentials::TokenCredential>),
    })?;
    Ok(Ledger::new(store, settings.ledger))
}

/// The pipeline for `settings`: loads the config and collects every problem (config or settings)
/// that must fail invocations until fixed. Every client in it sends through `http`, the process's
/// one HTTP client.
pub fn build_pipeline(
    settings: &Settings,
    config_path: &std::path::Path,
    choice: LedgerChoice,
    http: &Http,
) -> Pipeline {
    let mut problems = settings.problems.clone();
    let ledger = match choice {
        // In memory, but with the settings' timings (claim timeout, retry delays, give-up).
        LedgerChoice::Scratch => Ledger::new(Arc::new(MemoryStore::new()), settings.ledger),
        LedgerChoice::Configured => match open_ledger(settings, http) {
            Ok(ledger) => ledger,
            Err(problem) => {
                problems.push(problem);
                Ledger::in_memory()
            }
        },
    };
    let config = match Config::load(config_path) {
        Ok(config) => Some(Arc::new(config)),
        Err(e) => {
            problems.extend(e.lines());
            None
        }
    };
    let ledger = Arc::new(ledger);
    let notifier = Arc::new(Notifier::new(
        config
            .as_ref()
            .map(|c| c.notify.clone())
            .unwrap_or_default(),
        http.clone(),
    ));
    // Direct deployment and ARM metric lookups need an Azure credential; without one only the
    // features that need it fail.
    let arm = settings
        .credential
        .clone()
        .map_err(|e| format!("needs an Azure credential: {e}"))
        .and_then(|credential| {
            Ok((
                Arc::new(ArmClient::new(
                    &settings.arm,
                    credential.clone(),
                    http.clone(),
                )?),
                credential,
            ))
        });
    let metrics = Arc::new(MetricLookup::new(
        arm.as_ref().map(|(a, _)| a.clone()).map_err(Clone::clone),
    ));
    let deployer = arm
        .map_err(|e| format!("direct deployment (azureml rules) {e}"))
        .map(|(arm, credential)| {
            Arc::new(Deployer {
                ledger: ledger.clone(),
                engine: Arc::new(RolloutEngine::new(
                    arm,
                    credential,
                    ledger.clone(),
                    http.clone(),
                )),
                notifier: notifier.clone(),
                min_step: settings.min_step,
            })
        });
    let github = Arc::new(GithubClient::new(
        &settings.github,
        settings.retry_budget,
        http.clone(),
    ));
    let config = match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(problems),
    };
    Pipeline {
        config,
        facts: Facts {
            paused: settings.paused,
            max_workflow_inputs: crate::config::max_workflow_inputs(&settings.github.api_url),
        },
        github,
        ledger,
        deployer,
        metrics,
        notifier,
    }
}

/// A bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Binds `127.0.0.1:{port}` (0 picks a free port; the host forbids `::1`-only binds).
    pub async fn build(pipeline: Pipeline, port: u16) -> std::io::Result<Application> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        Ok(Application {
            listener,
            state: AppState {
                pipeline: Arc::new(pipeline),
            },
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// Serves until `shutdown` completes, then finishes in-flight invocations.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// A bound, not yet running standalone webhook server (`serve --webhook`): Event Grid's routes
/// plus the internal `Reconcile` timer, since there is no Functions host to fire it.
pub struct WebhookApplication {
    listener: TcpListener,
    state: WebhookState,
    reconcile_interval: Duration,
}

impl WebhookApplication {
    /// Binds `address` (port 0 picks a free port); `deadline` bounds each delivery. `auth` is mandatory: build it with
    /// [`WebhookAuth::from_env`].
    pub async fn build(
        pipeline: Pipeline,
        auth: WebhookAuth,
        address: SocketAddr,
        reconcile_interval: Duration,
        deadline: Duration,
    ) -> std::io::Result<WebhookApplication> {
        let listener = TcpListener::bind(address).await?;
        Ok(WebhookApplication {
            listener,
            state: WebhookState {
                pipeline: Arc::new(pipeline),
                auth: Arc::new(auth),
                deadline,
            },
            reconcile_interval,
        })
    }

    /// The bound address.
    pub fn address(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.address().map(|a| a.port()).unwrap_or_default()
    }

    /// Runs `Reconcile` on its timer and serves until `shutdown` completes; then finishes
    /// in-flight deliveries and stops the timer.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let timer = tokio::spawn(reconcile_loop(
            self.state.pipeline.clone(),
            self.reconcile_interval,
            async move {
                let _ = stop_rx.changed().await;
            },
        ));
        let served = axum::serve(self.listener, webhook::router(self.state))
            .with_graceful_shutdown(shutdown)
            .await;
        let _ = stop_tx.send(true);
        let _ = timer.await;
        served
    }
}
