//! netunlockd: BitLocker Network Unlock responder and recovery-key escrow service.

mod cli;
mod commands;
mod config;
mod health;
mod keys;
mod logging;
mod metrics;
mod metrics_http;
mod security;
mod serve;
mod state;
mod unlock_records;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    security::install_abort_on_panic();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: "what failed: why".
            eprintln!("netunlockd: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Config(cmd) => commands::config::run(cmd),
        Command::Certs(cmd) => commands::certs::run(cmd),
        Command::Probe(args) => commands::probe::run(args),
        Command::Status(args) => commands::status::run(args),
        Command::Operator(cmd) => commands::escrow::run_operator(cmd),
        Command::EnrollToken(cmd) => commands::escrow::run_enroll_token(cmd),
        Command::Escrow(cmd) => commands::escrow::run_escrow(cmd),
        Command::Audit(cmd) => commands::escrow::run_audit(cmd),
        Command::GenerateAssets { out_dir } => commands::assets::run(&out_dir),
    }
}
