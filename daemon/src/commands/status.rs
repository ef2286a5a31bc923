//! `netunlockd status`: asks the running daemon's /healthz.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::StatusArgs;

pub(crate) fn run(args: StatusArgs) -> Result<ExitCode> {
    let addr = match args.metrics {
        Some(a) => a,
        None => match super::load_config(&args.config)?.metrics_listen {
            Some(a) => a,
            None => bail!("metrics are disabled in the configuration; pass --metrics ADDR"),
        },
    };
    let host = if addr.ip().is_unspecified() {
        if addr.is_ipv4() {
            "127.0.0.1".to_string()
        } else {
            "[::1]".to_string()
        }
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let url = format!("http://{host}:{}/healthz", addr.port());
    let (status, body) = super::block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let resp =
            client.get(&url).send().await.with_context(|| {
                format!("cannot reach the daemon at {url}; is netunlockd running?")
            })?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .context("the daemon sent an unreadable health report")?;
        Ok((status, body))
    })?;
    for key in ["responder", "database", "certificates", "audit_chain"] {
        let state = body[key]["state"].as_str().unwrap_or("?");
        let detail = body[key]["detail"].as_str().unwrap_or("");
        println!("{key:<13} {state:<9} {detail}");
    }
    println!("overall       {}", body["status"].as_str().unwrap_or("?"));
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
