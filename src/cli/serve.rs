//! `serve`: the Functions custom handler (the default), or with `--webhook` the standalone Event
//! Grid webhook.

use crate::env::ProcessEnv;
use crate::http::Http;
use crate::startup::Settings;
use crate::startup::{Application, LedgerChoice, WebhookApplication, build_pipeline};
use crate::webhook::WebhookAuth;

use super::errors::CliError;

/// `serve [--webhook [--bind ADDR]]`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Serve Event Grid directly: POST /api/events, GET /healthz; authentication is mandatory
    /// (AUTODEPLOY_WEBHOOK_KEY and/or Microsoft Entra ID settings).
    #[arg(long)]
    webhook: bool,
    /// Address to listen on in webhook mode.
    #[arg(long, default_value = "0.0.0.0:8080", requires = "webhook")]
    bind: String,
}

impl ServeArgs {
    /// `--webhook`.
    pub fn webhook(&self) -> bool {
        self.webhook
    }
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs, settings: Settings, http: &Http) -> Result<bool, CliError> {
    if args.webhook {
        serve_webhook(settings, &args.bind, http).await
    } else {
        serve_functions(settings, http).await
    }
}

async fn serve_functions(settings: Settings, http: &Http) -> Result<bool, CliError> {
    let pipeline = build_pipeline(
        &settings,
        &settings.config_path,
        LedgerChoice::Configured,
        http,
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
    print_warnings(&settings);
    if let Some(problems) = pipeline.problems() {
        // Keep serving: exiting would make the host restart us and, after three restarts, shut the
        // whole Function App down. Every invocation fails with these problems instead.
        print_problems(problems);
        eprintln!(
            "aml-autodeploy: every invocation will fail (non-2xx, so Event Grid keeps the events) until this is fixed"
        );
    }
    let app = Application::build(pipeline, settings.port)
        .await
        .map_err(|source| CliError::Bind {
            address: format!("127.0.0.1:{}", settings.port),
            source,
        })?;
    tracing::info!(
        port = app.port(),
        "aml-autodeploy listening on 127.0.0.1:{}",
        app.port()
    );
    app.run_until(shutdown_signal())
        .await
        .map_err(CliError::Serve)?;
    Ok(true)
}

async fn serve_webhook(settings: Settings, bind: &str, http: &Http) -> Result<bool, CliError> {
    // Authentication cannot be skipped: no credentials configured means no server.
    let auth = WebhookAuth::from_env(&ProcessEnv, settings.arm.cloud, http)
        .map_err(CliError::WebhookAuth)?;
    let pipeline = build_pipeline(
        &settings,
        &settings.config_path,
        LedgerChoice::Configured,
        http,
    );
    if let Some(problems) = pipeline.problems() {
        print_problems(problems);
    }
    print_warnings(&settings);
    let address: std::net::SocketAddr = bind.parse().map_err(|source| CliError::BindAddress {
        bind: bind.to_string(),
        source,
    })?;
    let app = WebhookApplication::build(
        pipeline,
        auth,
        address,
        settings.reconcile_interval,
        settings.webhook_deadline,
    )
    .await
    .map_err(|source| CliError::Bind {
        address: address.to_string(),
        source,
    })?;
    let listening = app.address().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        address = %listening,
        "aml-autodeploy webhook listening on {listening}"
    );
    app.run_until(shutdown_signal())
        .await
        .map_err(CliError::Serve)?;
    Ok(true)
}

/// On stderr, one error line each: a problem may quote "warn" (a rule's name, a key), which
/// would make the Functions host file it as a warning ([`crate::telemetry::unwarn`]).
fn print_problems(problems: &[String]) {
    for problem in problems {
        crate::telemetry::eprint_error(&format!("aml-autodeploy: CONFIGURATION ERROR: {problem}"));
    }
}

fn print_warnings(settings: &Settings) {
    for warning in &settings.warnings {
        eprintln!("aml-autodeploy: warning: {warning}");
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what container runtimes and the host send).
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
