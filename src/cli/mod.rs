//! The command line: the clap types, the shared `--config` argument, and [`run`], which dispatches
//! to one module per subcommand. Each module holds its arguments, its setup, and the command itself
//! (written against `&mut dyn Write` so it can be tested without a process).

use clap::{Parser, Subcommand};

use crate::startup::Settings;
use crate::telemetry::LogStdout;
use crate::telemetry::Sink;

pub mod approve;
pub mod check_config;
mod config_arg;
mod errors;
pub mod evaluate;
pub mod replay;
pub mod rollback;
mod rollback_batch;
pub mod serve;
pub mod status;
pub mod story;
pub mod terminal;
pub mod watch;

pub use config_arg::ConfigArg;
pub use errors::{CliError, LedgerCommandError};

/// `aml-autodeploy [COMMAND]`.
#[derive(Debug, Parser)]
#[command(
    name = "aml-autodeploy",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("AUTODEPLOY_GIT_COMMIT"), ")"),
    about = "Azure ML model registered → safe, audited deployment"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    /// The subcommand; none means `serve` (what the Functions host starts).
    pub fn into_command(self) -> Command {
        self.command
            .unwrap_or(Command::Serve(serve::ServeArgs::default()))
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Functions custom handler (the default), or with --webhook a standalone Event Grid
    /// webhook (Container Apps, Kubernetes).
    Serve(serve::ServeArgs),
    /// Run one event file through the pipeline; a dry run unless --execute.
    Replay(replay::ReplayArgs),
    /// Read model versions from Azure ML and run them through the pipeline, as if just
    /// registered; a dry run unless --execute (then recorded as manually triggered).
    Evaluate(evaluate::EvaluateArgs),
    /// Restore an endpoint's traffic to what it was before the last rollout, or a batch
    /// endpoint's previous default (while the previous deployments are retained).
    Rollback(rollback::RollbackArgs),
    /// Validate the config file and print every problem.
    CheckConfig(check_config::CheckConfigArgs),
    /// Show what the ledger knows: recent records, one model's versions, or one whole record.
    Status(status::StatusArgs),
    /// Approve a version waiting for approval (`rollout.approval`): it moves to 100%.
    Approve(approve::DecisionArgs),
    /// Reject a version waiting for approval: it is rolled back.
    Reject(approve::DecisionArgs),
}

impl Command {
    /// Where this command's log lines go and the filter when `RUST_LOG` is unset. `serve` logs
    /// for the Functions host ([`Sink::Functions`]: one summary line per invocation on stdout,
    /// warnings and errors on stderr), or everything on stdout with `--webhook` (containers collect
    /// stdout) or `AUTODEPLOY_LOG_STDOUT=all`; the others log to stderr since their stdout is their
    /// result. `None`: `check-config` logs nothing.
    pub fn telemetry(&self, settings: &Settings) -> Option<(Sink, &'static str)> {
        match self {
            Command::Serve(args) if args.webhook() => Some((Sink::Stdout, "info")),
            Command::Serve(_) => match settings.log_stdout {
                LogStdout::Summary => Some((Sink::Functions, "info")),
                LogStdout::All => Some((Sink::Stdout, "info")),
            },
            Command::CheckConfig(_) => None,
            Command::Replay(_)
            | Command::Evaluate(_)
            | Command::Rollback(_)
            | Command::Status(_)
            | Command::Approve(_)
            | Command::Reject(_) => Some((Sink::Stderr, "warn")),
        }
    }
}

/// Runs `command`. `Ok(false)`: the command ran and its verdict is a failure (exit 1), having said
/// why on its output.
pub async fn run(command: Command, settings: Settings) -> Result<bool, CliError> {
    // The process's one HTTP client (one connection pool), shared by every client a command
    // builds.
    let http = crate::http::Http::new();
    http.redactor().add_all(&settings.secrets);
    match command {
        Command::Serve(args) => serve::run(args, settings, &http).await,
        Command::Replay(args) => replay::run(args, settings, &http).await,
        Command::Evaluate(args) => evaluate::run(args, settings, &http).await,
        Command::Rollback(args) => rollback::run(args, settings, &http).await,
        Command::CheckConfig(args) => check_config::run(args, settings),
        Command::Status(args) => status::run(args, settings, &http).await,
        Command::Approve(args) => approve::run(args, true, settings, &http).await,
        Command::Reject(args) => approve::run(args, false, settings, &http).await,
    }
}
