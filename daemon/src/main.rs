//! netunlockd: BitLocker Network Unlock responder and recovery-key escrow service.

mod cli;
mod commands;
mod config;
mod exit;
mod group;
mod health;
mod keys;
mod logging;
mod metrics;
mod metrics_http;
mod output;
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
        // `netunlockd … | head`: the reader has what it wanted; nothing to report.
        Err(err) if output::is_closed_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netunlockd: error: {}", describe_error(&err));
            exit::code(exit::FAILURE)
        }
    }
}

/// The context chain on one line ("what failed: why"), without a cause its parent already quotes.
fn describe_error(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if msg.is_empty() || text.contains(&msg) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&msg);
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_quoted_by_its_context_is_not_repeated() {
        let io = std::io::Error::other("connection refused");
        let err = anyhow::Error::from(io)
            .context("cannot reach the escrow API: connection refused")
            .context("listing operators");
        assert_eq!(
            describe_error(&err),
            "listing operators: cannot reach the escrow API: connection refused"
        );
        let err = anyhow::anyhow!("disk full").context("cannot write /x");
        assert_eq!(describe_error(&err), "cannot write /x: disk full");
    }
}
