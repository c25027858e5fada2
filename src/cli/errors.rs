//! Why a command stops: the one error type of the command line, mapped to the exit code in `main`.

use std::net::AddrParseError;
use std::path::PathBuf;

use crate::ledger::StoreError;

/// Why a command could not reach its verdict. Each message is printed with its causes after it,
/// separated by `: ` (main's `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A server could not bind its address.
    #[error("failed to bind {address}")]
    Bind {
        /// The address asked for.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A server stopped with an error.
    #[error("server failed")]
    Serve(#[source] std::io::Error),
    /// `serve --webhook` without valid authentication settings: no credentials, no server.
    #[error("refusing to start the webhook: {0}")]
    WebhookAuth(String),
    /// `--bind` is not a socket address.
    #[error("--bind {bind:?} is not an address")]
    BindAddress {
        /// What was passed.
        bind: String,
        /// Why it does not parse.
        #[source]
        source: AddrParseError,
    },
    /// An input file could not be read.
    #[error("failed to read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `status` could not read the ledger.
    #[error("failed to read the ledger")]
    ReadLedger(#[source] LedgerCommandError),
    /// `rollback` stopped on the ledger or the output.
    #[error("rollback failed")]
    Rollback(#[source] LedgerCommandError),
    /// A setting, the config or an argument stops the command before it starts (said in full).
    #[error("{0}")]
    Setup(String),
    /// Writing the output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Why a command working on the ledger (`status`, `rollback`) stopped.
#[derive(Debug, thiserror::Error)]
pub enum LedgerCommandError {
    /// The ledger could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
