//! The `aml-autodeploy` binary: parses the command line, reads the settings, starts telemetry and
//! the async runtime, and runs the command ([`aml_autodeploy::cli`]).

use std::process::ExitCode;

use clap::Parser;

use aml_autodeploy::cli::{self, Cli};
use aml_autodeploy::env::ProcessEnv;
use aml_autodeploy::startup::Settings;
use aml_autodeploy::telemetry;

fn main() -> ExitCode {
    let command = Cli::parse().into_command();
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
    if let Some((sink, default_filter)) = command.telemetry(&settings) {
        telemetry::init(settings.log_format, sink, default_filter);
    }
    match runtime.block_on(cli::run(command, settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            // `{:#}` prints the causes after the message, `: `-separated.
            // Errors quote upstream text: no escape sequence reaches the terminal.
            eprintln!(
                "aml-autodeploy: {}",
                aml_autodeploy::cli::terminal::visible(&format!("{:#}", anyhow::Error::from(e)))
            );
            ExitCode::FAILURE
        }
    }
}
