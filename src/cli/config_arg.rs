//! `--config`, shared by every subcommand that reads the rules file.

use std::path::PathBuf;

use crate::startup::Settings;

/// `--config`, shared by every subcommand that reads the rules file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArg {
    /// Config file (default: AUTODEPLOY_CONFIG, else autodeploy.yml).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// The rules file: `--config`, else the app's (`AUTODEPLOY_CONFIG`, else `autodeploy.yml`).
    pub fn resolve(&self, settings: &Settings) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| settings.config_path.clone())
    }
}
