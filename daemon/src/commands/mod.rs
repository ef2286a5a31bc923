//! One module per CLI command group (besides `serve`).

pub(crate) mod assets;
pub(crate) mod certs;
pub(crate) mod config;
pub(crate) mod escrow;
pub(crate) mod probe;
pub(crate) mod status;

use anyhow::{Context, Result};

/// A small runtime for one-shot commands.
pub(crate) fn block_on<F: Future<Output = Result<T>>, T>(f: F) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// Loads the configuration for a one-shot command (no logging set-up beyond warnings).
pub(crate) fn load_config(args: &crate::cli::ConfigArgs) -> Result<crate::config::Config> {
    let overrides = crate::config::Overrides {
        state_dir: args.state_dir.clone(),
        log_format: None,
    };
    crate::config::load(args.config.as_deref(), &overrides)
}
