//! The `aml-autodeploy` binary: CLI parsing, telemetry, and a call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use aml_autodeploy::commands;
use aml_autodeploy::http::Http;
use aml_autodeploy::pipeline::Execution;
use aml_autodeploy::settings::{ProcessEnv, Settings};
use aml_autodeploy::startup::{Application, LedgerChoice, build_pipeline, open_ledger};
use aml_autodeploy::telemetry::{self, Sink};

#[derive(Parser)]
#[command(
    name = "aml-autodeploy",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("AUTODEPLOY_GIT_COMMIT"), ")"),
    about = "Azure ML model registered → safe, audited deployment"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Functions custom handler (the default), or with --webhook a standalone Event Grid
    /// webhook (Container Apps, Kubernetes).
    Serve {
        /// Serve Event Grid directly: POST /api/events, GET /healthz; authentication is mandatory
        /// (AUTODEPLOY_WEBHOOK_KEY and/or Microsoft Entra ID settings).
        #[arg(long)]
        webhook: bool,
        /// Address to listen on in webhook mode.
        #[arg(long, default_value = "0.0.0.0:8080", requires = "webhook")]
        bind: String,
    },
    /// Run one event file through the pipeline; a dry run unless --execute.
    Replay {
        /// A bare event, an Event Grid array, a CloudEvent, or a host envelope.
        file: PathBuf,
        /// Config file (default: AUTODEPLOY_CONFIG, else autodeploy.yml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Send the action instead of printing it.
        #[arg(long)]
        execute: bool,
    },
    /// Read model versions from Azure ML and run them through the pipeline, as if just
    /// registered; a dry run unless --execute (then recorded as manually triggered).
    Evaluate {
        /// One or more MODEL:VERSION.
        #[arg(required = true)]
        targets: Vec<String>,
        /// Act and record, instead of only showing the decision.
        #[arg(long)]
        execute: bool,
        /// Ship despite the quality gate and the stale check (recorded as forced); also re-runs a
        /// rejected, stale or failed version.
        #[arg(long)]
        force: bool,
        /// Config file (default: AUTODEPLOY_CONFIG, else autodeploy.yml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Workspace ARM id (default: the config's `workspace`).
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Restore an endpoint's traffic to what it was before the last rollout (while the previous
    /// deployments are retained).
    Rollback {
        /// The online endpoint.
        endpoint: String,
        /// Workspace ARM id (default: from the config rule that deploys to ENDPOINT).
        #[arg(long)]
        workspace: Option<String>,
        /// Config file (default: AUTODEPLOY_CONFIG, else autodeploy.yml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the config file and print every problem.
    CheckConfig {
        /// Config file (default: AUTODEPLOY_CONFIG, else autodeploy.yml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Instead, list the files the config refers to (deployment YAMLs, smoke-test requests),
        /// relative to the config file's folder, one per line (for packaging).
        #[arg(long)]
        list_files: bool,
    },
    /// Show what the ledger knows: recent records, one model's versions, or one whole record.
    Status {
        /// MODEL for its history, MODEL:VERSION for the whole record; nothing for the most recent.
        target: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// How many records at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// A storage connection string (default: the app's settings, AUTODEPLOY_STORAGE or
        /// AzureWebJobsStorage).
        #[arg(long)]
        storage: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings::from_env(&ProcessEnv);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("aml-autodeploy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve {
            webhook: false,
            bind: String::new(),
        }) {
            Command::Serve { webhook: false, .. } => serve(settings).await,
            Command::Serve {
                webhook: true,
                bind,
            } => serve_webhook(settings, bind).await,
            Command::Replay {
                file,
                config,
                execute,
            } => replay(settings, file, config, execute).await,
            Command::Status {
                target,
                json,
                limit,
                storage,
            } => status(settings, target, json, limit, storage).await,
            Command::Evaluate {
                targets,
                execute,
                force,
                config,
                workspace,
            } => evaluate(settings, targets, execute, force, config, workspace).await,
            Command::Rollback {
                endpoint,
                workspace,
                config,
            } => rollback(settings, endpoint, workspace, config).await,
            Command::CheckConfig { config, list_files } => {
                let path = config.unwrap_or_else(|| settings.config_path.clone());
                let ok = if list_files {
                    commands::list_config_files(&path, &mut std::io::stdout())?
                } else {
                    commands::check_config(&path, &mut std::io::stdout())?
                };
                Ok(ok)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("aml-autodeploy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<bool> {
    telemetry::init(settings.log_format, Sink::Stdout, "info");
    let pipeline = build_pipeline(
        &settings,
        &settings.config_path,
        LedgerChoice::Configured,
        &Http::new(),
    );
    if !pipeline.ledger().is_durable() {
        eprintln!(
            "aml-autodeploy: warning: the ledger is in memory ({}): duplicates are only detected until a restart; \
             set AUTODEPLOY_STORAGE or AzureWebJobsStorage for a durable ledger",
            settings
                .storage
                .as_ref()
                .map(|s| s.describe())
                .unwrap_or_default()
        );
    }
    tracing::info!(ledger = %pipeline.ledger().describe(), "ledger");
    for warning in &settings.warnings {
        eprintln!("aml-autodeploy: warning: {warning}");
    }
    if let Some(problems) = pipeline.problems() {
        // Keep serving: exiting would make the host restart us and, after three restarts, shut the
        // whole Function App down. Every invocation fails with these problems instead.
        for problem in problems {
            eprintln!("aml-autodeploy: CONFIGURATION ERROR: {problem}");
        }
        eprintln!(
            "aml-autodeploy: every invocation will fail (non-2xx, so Event Grid keeps the events) until this is fixed"
        );
    }
    let app = Application::build(pipeline, settings.port)
        .await
        .with_context(|| format!("failed to bind 127.0.0.1:{}", settings.port))?;
    tracing::info!(
        port = app.port(),
        "aml-autodeploy listening on 127.0.0.1:{}",
        app.port()
    );
    app.run_until(shutdown_signal())
        .await
        .context("server failed")?;
    Ok(true)
}

async fn serve_webhook(settings: Settings, bind: String) -> anyhow::Result<bool> {
    telemetry::init(settings.log_format, Sink::Stdout, "info");
    // Authentication cannot be skipped: no credentials configured means no server.
    let http = Http::new();
    let auth = aml_autodeploy::settings::webhook_auth(&ProcessEnv, settings.arm.cloud, &http)
        .map_err(|e| anyhow::anyhow!("refusing to start the webhook: {e}"))?;
    let pipeline = build_pipeline(
        &settings,
        &settings.config_path,
        LedgerChoice::Configured,
        &http,
    );
    if let Some(problems) = pipeline.problems() {
        for problem in problems {
            eprintln!("aml-autodeploy: CONFIGURATION ERROR: {problem}");
        }
    }
    for warning in &settings.warnings {
        eprintln!("aml-autodeploy: warning: {warning}");
    }
    let addr: std::net::SocketAddr = bind
        .parse()
        .with_context(|| format!("--bind {bind:?} is not an address"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to bind {addr}"))?;
    let pipeline = std::sync::Arc::new(pipeline);
    let interval = settings.reconcile_interval;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let timer = tokio::spawn(aml_autodeploy::webhook::reconcile_loop(
        pipeline.clone(),
        interval,
        async move {
            let mut stop_rx = stop_rx;
            let _ = stop_rx.changed().await;
        },
    ));
    tracing::info!(
        address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "aml-autodeploy webhook listening on {}",
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    let app = aml_autodeploy::webhook::router(aml_autodeploy::webhook::WebhookState {
        pipeline,
        auth: std::sync::Arc::new(auth),
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    let _ = stop_tx.send(true);
    let _ = timer.await;
    Ok(true)
}

async fn replay(
    settings: Settings,
    file: PathBuf,
    config: Option<PathBuf>,
    execute: bool,
) -> anyhow::Result<bool> {
    telemetry::init(settings.log_format, Sink::Stderr, "warn");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("failed to read {}", file.display()))?;
    let config_path = config.unwrap_or_else(|| settings.config_path.clone());
    // A dry run writes nothing anywhere: it gets a scratch ledger.
    let (execution, choice) = if execute {
        (Execution::Send, LedgerChoice::Configured)
    } else {
        (Execution::DryRun, LedgerChoice::Scratch)
    };
    let pipeline = build_pipeline(&settings, &config_path, choice, &Http::new());
    let ok = commands::replay(&pipeline, &text, execution, &mut std::io::stdout()).await?;
    Ok(ok)
}

async fn status(
    mut settings: Settings,
    target: Option<String>,
    json: bool,
    limit: usize,
    storage: Option<String>,
) -> anyhow::Result<bool> {
    telemetry::init(settings.log_format, Sink::Stderr, "warn");
    if let Some(connection) = storage {
        settings.storage = if connection.trim().eq_ignore_ascii_case("memory") {
            Ok(aml_autodeploy::ledger::connection::StorageTarget::Memory { defaulted: false })
        } else {
            aml_autodeploy::ledger::connection::parse_connection_string(&connection, "--storage")
        };
    }
    let ledger = open_ledger(&settings).map_err(|e| anyhow::anyhow!(e))?;
    let ok = commands::status(
        &ledger,
        target.as_deref(),
        json,
        limit.max(1),
        &mut std::io::stdout(),
    )
    .await
    .context("failed to read the ledger")?;
    Ok(ok)
}

async fn evaluate(
    settings: Settings,
    targets: Vec<String>,
    execute: bool,
    force: bool,
    config: Option<PathBuf>,
    workspace: Option<String>,
) -> anyhow::Result<bool> {
    telemetry::init(settings.log_format, Sink::Stderr, "warn");
    let config_path = config.unwrap_or_else(|| settings.config_path.clone());
    let workspace = match workspace {
        Some(ws) => ws,
        None => aml_autodeploy::config::Config::load(&config_path)
            .ok()
            .and_then(|c| c.workspace.map(|w| w.to_string()))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "evaluate needs the workspace: pass --workspace /subscriptions/…/workspaces/NAME or set `workspace:` in {}",
                    config_path.display()
                )
            })?,
    };
    let workspace = aml_autodeploy::event::WorkspaceId::parse(&workspace)
        .map_err(|e| anyhow::anyhow!("--workspace {e}"))?;
    let credential = settings
        .credential
        .clone()
        .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "Azure credential: {} · ARM: {} (api-version {})",
        credential.kind().as_str(),
        settings.arm.endpoint,
        settings.arm.api_version
    );
    let http = Http::new();
    let arm = aml_autodeploy::azure::arm::ArmClient::new(&settings.arm, credential, http.clone())
        .map_err(|e| anyhow::anyhow!(e))?;
    let (execution, choice) = if execute {
        (Execution::Send, LedgerChoice::Configured)
    } else {
        (Execution::DryRun, LedgerChoice::Scratch)
    };
    let pipeline = build_pipeline(&settings, &config_path, choice, &http);
    // A dry run reads (never writes) the app's ledger to say what --execute would find.
    let ledger = if execute {
        None
    } else {
        open_ledger(&settings).ok()
    };
    let ok = commands::evaluate(
        &pipeline,
        &arm,
        &workspace,
        &targets,
        commands::EvaluateMode { execution, force },
        ledger.as_ref(),
        &mut std::io::stdout(),
    )
    .await?;
    Ok(ok)
}

async fn rollback(
    settings: Settings,
    endpoint: String,
    workspace: Option<String>,
    config: Option<PathBuf>,
) -> anyhow::Result<bool> {
    telemetry::init(settings.log_format, Sink::Stderr, "warn");
    let config_path = config.unwrap_or_else(|| settings.config_path.clone());
    let workspace = match workspace {
        Some(ws) => ws,
        None => {
            let config = aml_autodeploy::config::Config::load(&config_path)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            config
                .rules
                .iter()
                .find_map(|rule| match &rule.action {
                    aml_autodeploy::config::RuleAction::AzureMl(a) if a.endpoint == endpoint => a
                        .target_workspace
                        .clone()
                        .or_else(|| config.workspace.clone())
                        .map(|w| w.to_string()),
                    _ => None,
                })
                .ok_or_else(|| anyhow::anyhow!("pass --workspace: no rule in {} deploys to {endpoint} with a known workspace", config_path.display()))?
        }
    };
    let workspace = aml_autodeploy::event::WorkspaceId::parse(&workspace)
        .map_err(|e| anyhow::anyhow!("--workspace {e}"))?;
    let pipeline = build_pipeline(
        &settings,
        &config_path,
        LedgerChoice::Configured,
        &Http::new(),
    );
    let deployer = pipeline.deployer().map_err(|e| anyhow::anyhow!("{e}"))?;
    let ok = commands::rollback(deployer, &workspace, &endpoint, &mut std::io::stdout())
        .await
        .context("rollback failed")?;
    Ok(ok)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
