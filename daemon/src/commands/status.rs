//! `netunlockd status`: asks the running daemon's /healthz.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::StatusArgs;
use crate::exit;
use crate::output::{self, OutputFormat, Table};

pub(crate) fn run(args: StatusArgs) -> Result<ExitCode> {
    let addr = match args.metrics {
        Some(a) => a,
        None => match super::load_config(&args.config)?.metrics_listen {
            Some(a) => a,
            None => bail!("metrics are disabled in the configuration; pass --metrics ADDR"),
        },
    };
    let addr = connectable(addr);
    let (status, body) = match super::block_on(get_healthz(addr)) {
        Ok(answer) => answer,
        Err(e) => {
            // Unreachable is not unhealthy: monitoring tells "down" from "degraded" by the code.
            eprintln!("netunlockd: {e:#}");
            return Ok(exit::code(exit::UNREACHABLE));
        }
    };
    let body: serde_json::Value =
        serde_json::from_str(&body).context("the daemon sent an unreadable health report")?;
    match args.output.output {
        OutputFormat::Json => output::json(&body)?,
        OutputFormat::Text => {
            let mut table = Table::new(&["CHECK", "STATE", "DETAIL"]);
            for key in [
                "responder",
                "database",
                "certificates",
                "audit_chain",
                "group",
            ] {
                table.row(vec![
                    key.replace('_', " "),
                    body[key]["state"].as_str().unwrap_or("?").to_owned(),
                    body[key]["detail"].as_str().unwrap_or("").to_owned(),
                ]);
            }
            table.row(vec![
                "overall".into(),
                body["status"].as_str().unwrap_or("?").to_owned(),
                format!("netunlockd {}", body["version"].as_str().unwrap_or("?")),
            ]);
            output::raw(&table.render())?;
        }
    }
    Ok(exit::code(if status == 200 {
        exit::SUCCESS
    } else {
        exit::UNHEALTHY
    }))
}

/// A wildcard listen address is reached through loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// A plain HTTP/1.0 GET: the metrics listener is plain HTTP, and this keeps `status` working on a
/// minimal system (no CA bundle, no TLS set-up needed).
async fn get_healthz(addr: SocketAddr) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| {
                format!(
                    "cannot reach the daemon's health endpoint at {addr}; is netunlockd running?"
                )
            })?;
        stream
            .write_all(
                format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.take(1 << 20).read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("the daemon at {addr} did not answer within 5 s"))??;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response from the health endpoint")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .context("malformed HTTP status line from the health endpoint")?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_and_garbage_is_an_error() {
        let (s, b) =
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: x\r\n\r\n{\"a\":1}")
                .unwrap();
        assert_eq!((s, b.as_str()), (503, "{\"a\":1}"));
        assert!(parse_response(b"HTTP/1.1 200 OK").is_err());
        assert!(parse_response(b"nonsense\r\n\r\n").is_err());
        assert_eq!(
            connectable("0.0.0.0:9567".parse().unwrap()),
            "127.0.0.1:9567".parse().unwrap()
        );
        assert_eq!(
            connectable("[::]:9567".parse().unwrap()),
            "[::1]:9567".parse().unwrap()
        );
    }
}
