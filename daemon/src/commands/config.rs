//! `netunlockd config check`.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::ConfigCommand;
use crate::state::StateDir;

pub(crate) fn run(cmd: ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { config } => {
            let cfg = super::load_config(&config)?;
            let state = StateDir::new(&cfg.state_dir);
            let report = super::block_on(crate::serve::check_without_binding(&cfg, &state))?;
            match &cfg.source {
                Some(p) => println!("configuration {} is valid", p.display()),
                None => println!("no configuration file; built-in defaults are valid"),
            }
            println!("state directory: {}", cfg.state_dir.display());
            for line in report {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
