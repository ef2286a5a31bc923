//! What the load tools share: a loopback TLS certificate, an escrow-only daemon config, and the
//! real `netunlockd serve` started and awaited until it logs that it is ready.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The daemon's HTTPS certificate for 127.0.0.1, and its SHA-256 pin for clients.
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pin: String,
}

pub fn write_tls(dir: &Path) -> Result<Tls, BoxError> {
    let tls = certs::generate_tls_server_certificate(&["127.0.0.1".to_string()], 7)?;
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &tls.cert_pem)?;
    std::fs::write(&key, tls.key_pem.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(Tls {
        cert,
        key,
        pin: certs::sha256_fingerprint_hex(&tls.cert_der),
    })
}

/// Writes `<dir>/netunlockd.toml`: escrow only, on a free loopback port, logging at `level` (the
/// ready line is INFO, so `warn` or quieter hides it), with `escrow_extra` lines in `[escrow]`.
/// Returns the file and the escrow port.
pub fn write_escrow_config(
    dir: &Path,
    state: &Path,
    tls: &Tls,
    database_url: &str,
    level: &str,
    escrow_extra: &str,
) -> Result<(PathBuf, u16), BoxError> {
    let port = free_port()?;
    let config = dir.join("netunlockd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{state}\"\n[log]\nlevel = \"{level}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [unlock]\nenabled = false\n[escrow]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{cert}\"\n\
             tls_key = \"{key}\"\ndatabase_url = \"{database_url}\"\n{escrow_extra}",
            state = state.display(),
            metrics = free_port()?,
            cert = tls.cert.display(),
            key = tls.key.display(),
        ),
    )?;
    Ok((config, port))
}

/// The running daemon; killed when dropped.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin serve --config config` and waits up to `ready_within` for "netunlockd ready".
pub fn start_daemon(bin: &Path, config: &Path, ready_within: Duration) -> Result<Daemon, BoxError> {
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let daemon = Daemon(child);
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep draining the log so the daemon never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut ready = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("netunlockd ready")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(ready_within).map_err(|_| {
        format!(
            "the daemon did not report ready within {} s",
            ready_within.as_secs()
        )
    })?;
    Ok(daemon)
}
