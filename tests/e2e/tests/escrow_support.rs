//! Escrow e2e support: a real `netunlockd serve` with only the escrow API enabled (loopback, high
//! ports, state in a tempdir, SQLite or a fresh PostgreSQL database), its complete log output
//! kept for secret greps, and API clients over real TLS (operators by token, agents by their own
//! self-signed client certificate).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use escrow::client::{ApiClient, ApiClientConfig, ServerTrust};
use escrow::wire;

pub(crate) use crate::harness::{free_port, netunlockd_bin};

pub(crate) const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Sqlite,
    /// Admin URL of a server; each daemon gets a fresh database on it.
    Postgres(String),
}

/// Which PostgreSQL to use: $NETUNLOCKD_TEST_POSTGRES, $DATABASE_URL, or the local default.
pub(crate) fn postgres_admin_url() -> String {
    std::env::var("NETUNLOCKD_TEST_POSTGRES")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| DEFAULT_PG.to_string())
}

/// `Some(Backend::Postgres)` when a server answers, else prints the SKIP line and returns None.
pub(crate) async fn postgres_or_skip(test: &str) -> Option<Backend> {
    let url = postgres_admin_url();
    let reachable = tokio::time::timeout(Duration::from_secs(5), async {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&url).await.map(|_| ())
    })
    .await;
    match reachable {
        Ok(Ok(())) => Some(Backend::Postgres(url)),
        _ => {
            println!(
                "SKIP: PostgreSQL not reachable ({test}); set NETUNLOCKD_TEST_POSTGRES or DATABASE_URL"
            );
            None
        }
    }
}

#[derive(Default)]
struct LogBuf {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// One running daemon (restartable on the same state and database).
pub(crate) struct EscrowDaemon {
    child: Option<Child>,
    log: Arc<LogBuf>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    pub(crate) port: u16,
    pub(crate) metrics: u16,
    pub(crate) server_sha256: String,
    pub(crate) database_url: String,
    pg_drop: Option<(String, String)>,
}

fn pipe_lines<R: Read + Send + 'static>(r: R, log: Arc<LogBuf>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let mut g = log.lines.lock().unwrap();
            g.push(line);
            log.changed.notify_all();
        }
    });
}

impl EscrowDaemon {
    pub(crate) async fn start(backend: &Backend) -> Self {
        Self::start_with(backend, "info", "").await
    }

    /// `extra` is appended to the [escrow] section.
    pub(crate) async fn start_with(backend: &Backend, log_level: &str, extra: &str) -> Self {
        let db = Self::database(backend).await;
        let mut d = Self::configure(db, log_level, extra);
        d.spawn();
        d
    }

    /// A second appliance on this one's (PostgreSQL) database, with its own state directory;
    /// `extra` is appended to its [escrow] section (e.g. `kek_file = "…"`). Not started yet.
    pub(crate) fn peer(&self, extra: &str) -> Self {
        Self::configure((self.database_url.clone(), None), "info", extra)
    }

    /// Starts a daemon made by [`Self::peer`].
    pub(crate) fn launch(&mut self) {
        self.spawn();
    }

    /// Runs `serve` expecting it to refuse to start; returns its exit status and output.
    pub(crate) fn serve_fails(&self) -> (std::process::ExitStatus, String) {
        let mut child = Command::new(netunlockd_bin())
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                return (status, text);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve kept running although it should have refused to start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    async fn database(backend: &Backend) -> (String, Option<(String, String)>) {
        match backend {
            Backend::Sqlite => (String::new(), None),
            Backend::Postgres(admin) => {
                let name = format!("nu_e2e_{}", uuid::Uuid::new_v4().simple());
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(admin).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
                (format!("{base}/{name}"), Some((admin.clone(), name)))
            }
        }
    }

    /// Writes the state directory, TLS files and configuration (an empty database URL means
    /// SQLite in the state directory).
    fn configure(db: (String, Option<(String, String)>), log_level: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let tls = certs::generate_tls_server_certificate(
            &["localhost".to_string(), "127.0.0.1".to_string()],
            30,
        )
        .unwrap();
        let cert = dir.path().join("escrow.crt");
        let key = dir.path().join("escrow.key");
        std::fs::write(&cert, &tls.cert_pem).unwrap();
        std::fs::write(&key, tls.key_pem.as_bytes()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let (database_url, pg_drop) = match db {
            (url, None) if url.is_empty() => (
                format!("sqlite://{}?mode=rwc", state.join("escrow.db").display()),
                None,
            ),
            other => other,
        };
        let port = free_port();
        let metrics = free_port();
        let config = dir.path().join("netunlockd.toml");
        std::fs::write(
            &config,
            format!(
                r#"state_dir = "{state}"
[log]
level = "{log_level}"
[metrics]
listen = "127.0.0.1:{metrics}"
[unlock]
enabled = false
[escrow]
listen = "127.0.0.1:{port}"
tls_cert = "{cert}"
tls_key = "{key}"
database_url = "{database_url}"
max_body_bytes = 65536
{extra}
"#,
                state = state.display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .unwrap();
        Self {
            child: None,
            log: Arc::new(LogBuf::default()),
            dir,
            config,
            port,
            metrics,
            server_sha256: certs::sha256_fingerprint_hex(&tls.cert_der),
            database_url,
            pg_drop,
        }
    }

    fn spawn(&mut self) {
        let mut child = Command::new(netunlockd_bin())
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        pipe_lines(child.stdout.take().unwrap(), self.log.clone());
        pipe_lines(child.stderr.take().unwrap(), self.log.clone());
        let from = self.log.lines.lock().unwrap().len();
        self.child = Some(child);
        self.wait_for_log("netunlockd ready", from, Duration::from_secs(60));
    }

    /// Waits for a log line (written after line index `from`) containing `needle`.
    pub(crate) fn wait_for_log(&self, needle: &str, from: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut g = self.log.lines.lock().unwrap();
        loop {
            if let Some(l) = g.iter().skip(from).find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no log line containing {needle:?} within {timeout:?}; log:\n{}",
                g.join("\n")
            );
            g = self.log.changed.wait_timeout(g, left).unwrap().0;
        }
    }

    /// Everything the daemon printed (stdout and stderr, all runs).
    pub(crate) fn log_text(&self) -> String {
        self.log.lines.lock().unwrap().join("\n")
    }

    /// SIGKILL, no chance to flush or clean up.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Writes a new server certificate over the configured files and sends SIGHUP; returns once
    /// the daemon logged the reload. `server_sha256` then pins the new certificate.
    pub(crate) fn rotate_tls_certificate(&mut self) -> String {
        let old = std::mem::take(&mut self.server_sha256);
        let tls = certs::generate_tls_server_certificate(&["127.0.0.1".to_string()], 30).unwrap();
        std::fs::write(self.dir.path().join("escrow.crt"), &tls.cert_pem).unwrap();
        std::fs::write(self.dir.path().join("escrow.key"), tls.key_pem.as_bytes()).unwrap();
        self.server_sha256 = certs::sha256_fingerprint_hex(&tls.cert_der);
        let from = self.log.lines.lock().unwrap().len();
        let pid = self.child.as_ref().unwrap().id() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        self.wait_for_log(
            "escrow TLS certificate reloaded",
            from,
            Duration::from_secs(20),
        );
        old
    }

    pub(crate) fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub(crate) fn metrics_addr(&self) -> String {
        format!("127.0.0.1:{}", self.metrics)
    }

    pub(crate) fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn trust(&self) -> ServerTrust {
        ServerTrust::PinnedSha256(self.server_sha256.clone())
    }

    /// Runs a netunlockd CLI command against this daemon's configuration.
    pub(crate) fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(netunlockd_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    /// `netunlockd operator bootstrap`: the first admin's token.
    pub(crate) fn bootstrap_admin(&self) -> String {
        let out = self.cli(&["operator", "bootstrap", "--name", "admin"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "bootstrap failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("token: "))
            .unwrap_or_else(|| panic!("bootstrap printed no `token:` line: {stdout}"))
            .trim()
            .to_string()
    }

    pub(crate) fn operator(&self, token: &str) -> ApiClient {
        ApiClient::new(&ApiClientConfig {
            base_url: self.base_url(),
            trust: self.trust(),
            token: Some(escrow::client::Zeroizing::new(token.to_string())),
            identity: None,
            timeout: Duration::from_secs(30),
        })
        .unwrap()
    }

    /// No token, no client certificate.
    pub(crate) fn anonymous(&self) -> ApiClient {
        ApiClient::new(&ApiClientConfig {
            base_url: self.base_url(),
            trust: self.trust(),
            token: None,
            identity: None,
            timeout: Duration::from_secs(30),
        })
        .unwrap()
    }

    /// A new agent identity (self-signed client certificate) — not enrolled yet.
    pub(crate) fn agent(&self, name: &str) -> Agent {
        let c = certs::generate_client_certificate(name, 30).unwrap();
        let cert = self
            .dir
            .path()
            .join(format!("{name}-{}.crt", uuid::Uuid::new_v4().simple()));
        let key = cert.with_extension("key");
        std::fs::write(&cert, &c.cert_pem).unwrap();
        std::fs::write(&key, c.key_pem.as_bytes()).unwrap();
        let client =
            escrow::client::agent_client(&self.base_url(), self.trust(), &cert, &key).unwrap();
        Agent {
            name: name.to_string(),
            client,
            cert_sha256: certs::sha256_fingerprint_hex(&c.cert_der),
            cert_path: cert,
            key_path: key,
        }
    }

    /// Admin client plus the objects most tests need.
    pub(crate) async fn admin(&self) -> ApiClient {
        self.operator(&self.bootstrap_admin())
    }
}

impl Drop for EscrowDaemon {
    fn drop(&mut self) {
        self.kill9();
        if let Some((admin, name)) = self.pg_drop.take() {
            // Best effort, on a private runtime because Drop may run inside or outside one.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

pub(crate) struct Agent {
    pub(crate) name: String,
    pub(crate) client: ApiClient,
    pub(crate) cert_sha256: String,
    pub(crate) cert_path: PathBuf,
    pub(crate) key_path: PathBuf,
}

impl Agent {
    /// The same agent identity talking to another daemon.
    pub(crate) fn on(&self, d: &EscrowDaemon) -> ApiClient {
        escrow::client::agent_client(&d.base_url(), d.trust(), &self.cert_path, &self.key_path)
            .unwrap()
    }

    pub(crate) async fn enroll(&self, token: &str) -> wire::DeviceView {
        self.client
            .enroll(&wire::EnrollRequest {
                token: token.to_string(),
                computer_name: self.name.clone(),
                domain: Some("CORP".into()),
                serial: None,
            })
            .await
            .unwrap()
    }
}

/// An enrollment token with `uses` uses, valid for an hour.
pub(crate) async fn enrollment_token(admin: &ApiClient, uses: u32) -> String {
    admin
        .create_enrollment_token(&wire::CreateEnrollmentToken {
            max_uses: uses,
            ttl_seconds: 3600,
            note: Some("e2e".into()),
        })
        .await
        .unwrap()
        .token
}

/// A valid recovery password derived from `seed` (each group = 11 * word).
pub(crate) fn recovery_password(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut groups = Vec::with_capacity(8);
    for _ in 0..8 {
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 29;
        groups.push(format!("{:06}", (x % 65_536) * 11));
    }
    groups.join("-")
}

pub(crate) fn guid() -> String {
    format!(
        "{{{}}}",
        uuid::Uuid::new_v4()
            .hyphenated()
            .to_string()
            .to_ascii_uppercase()
    )
}

pub(crate) fn item(volume: &str, protector: &str, password: &str) -> wire::EscrowItemBody {
    wire::EscrowItemBody {
        volume_guid: volume.to_string(),
        mount_point: Some("C:".into()),
        volume_type: "os".into(),
        protector_id: protector.to_string(),
        recovery_password: password.to_string(),
        key_package: None,
    }
}

pub(crate) fn status_of<T: std::fmt::Debug>(r: Result<T, escrow::client::ClientError>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e
            .status()
            .unwrap_or_else(|| panic!("not an API error: {e}")),
    }
}

/// Runs an async test body once per backend (PostgreSQL skipped with a printed reason).
macro_rules! both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body(crate::escrow_support::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(b) = crate::escrow_support::postgres_or_skip(stringify!($name)).await {
                    $body(b).await;
                }
            }
        }
    };
}
pub(crate) use both_backends;

/// Enrolls `name` (client certificate hash `cert_sha256`) straight through the service, as its
/// agent would, and records the adapters it reports at check-in.
pub async fn enroll_with_adapters(
    svc: &escrow::EscrowService,
    name: &str,
    cert_sha256: &str,
    adapters: &[escrow::MacAddress],
) -> escrow::DeviceInfo {
    let (_, secret) = svc
        .create_enrollment_token(
            &escrow::Actor::local("t"),
            1,
            Duration::from_secs(3600),
            None,
        )
        .await
        .unwrap();
    let dev = svc
        .enroll_device(&secret, name, Some("corp.example"), None, cert_sha256)
        .await
        .unwrap();
    svc.report_adapters(&dev, adapters).await.unwrap();
    dev
}
