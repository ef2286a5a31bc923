//! `netunlockd probe v4|v6`: a real Network Unlock request from this host.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use netunlock::probe::{Family, ProbeOptions};

use crate::cli::{FamilyArg, ProbeArgs};

pub(crate) fn run(args: ProbeArgs) -> Result<ExitCode> {
    let cert_der = certs::read_certificate_der(&args.cert)?;
    let thumbprint = certs::thumbprint_hex(&cert_der);
    let opts = ProbeOptions {
        family: match args.family {
            FamilyArg::V4 => Family::V4,
            FamilyArg::V6 => Family::V6,
        },
        cert_der,
        interface: args.interface.clone(),
        server: args.server,
        server_port: args.port,
        timeout: Duration::from_millis(args.timeout_ms),
        ciaddr: None,
    };
    let result = super::block_on(async { Ok(netunlock::probe::probe(opts).await?) });
    match result {
        Ok(r) => {
            crate::output::line(format_args!(
                "unlock OK: reply from {} decrypted to this probe's network key (certificate {thumbprint}) in {:.1} ms",
                r.from,
                r.rtt.as_secs_f64() * 1000.0
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("netunlockd: probe failed on {}: {e:#}", args.interface);
            Ok(crate::exit::code(crate::exit::NO_UNLOCK))
        }
    }
}
