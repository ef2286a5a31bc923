//! The daemon as an operator meets it: the CLI, first start, readiness, health, logs, signals.
//! These run without network namespaces (loopback and high ports), so they need neither root
//! nor `ip` — except the privilege test, which needs root to drop to an unprivileged user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{free_port, netunlockd_bin};

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon on loopback high ports with its own state directory.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    metrics: u16,
    escrow: u16,
    config: PathBuf,
    /// Kept alive as long as the daemon; a test may take it to inspect the state after a stop.
    dir: Option<tempfile::TempDir>,
    state: PathBuf,
}

fn config_text(state: &Path, metrics: u16, escrow: u16, extra: &str) -> String {
    format!(
        r#"
state_dir = "{state}"
[metrics]
listen = "127.0.0.1:{metrics}"
[unlock]
interfaces = ["lo"]
v4_listen = "127.0.0.1:{v4}"
v6 = false
[escrow]
listen = "127.0.0.1:{escrow}"
{extra}
"#,
        state = state.display(),
        v4 = free_udp_port(),
    )
}

impl Daemon {
    fn start(extra_args: &[&str], extra_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (metrics, escrow) = (free_port(), free_port());
        let config = dir.path().join("netunlockd.toml");
        std::fs::write(&config, config_text(&state, metrics, escrow, extra_config)).unwrap();
        let mut child = Command::new(netunlockd_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(extra_args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Self {
            child,
            lines,
            log: Vec::new(),
            metrics,
            escrow,
            config: config.clone(),
            dir: Some(dir),
            state,
        };
        d.wait_for("netunlockd ready", Duration::from_secs(60));
        d
    }

    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line containing {needle:?} within {timeout:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.metrics);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let resp = reqwest::get(&url).await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(netunlockd_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn first_start_generates_certificates_reports_health_and_stops_cleanly_on_sigterm() {
    let mut d = Daemon::start(&[], "");
    let log = d.log.join("\n");
    for expected in [
        "listening: network unlock (DHCPv4)",
        "listening: escrow API (HTTPS)",
        "network unlock certificate",
        "generated a new Network Unlock certificate",
        "escrow database open",
    ] {
        assert!(
            log.contains(expected),
            "start-up summary lacks {expected:?}:\n{log}"
        );
    }
    assert!(d.state.join("network-unlock/network-unlock.cer").exists());
    assert!(d.state.join("escrow-tls/escrow.pem").exists());
    assert!(d.state.join("kek.bin").exists());

    let (status, metrics) = d.get("/metrics");
    assert_eq!(status, 200);
    for name in [
        "netunlockd_build_info{",
        "process_resident_memory_bytes",
        "netunlockd_certificate_expiry_seconds{",
        "netunlockd_audit_chain_ok 1",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    promtool_check_metrics(&metrics);

    // The first health report is computed before READY, so it is complete right away.
    let (status, body) = d.get("/healthz");
    assert_eq!(status, 200, "/healthz right after READY: {body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["responder"]["state"], "ok");
    assert_eq!(health["database"]["state"], "ok");
    assert_eq!(health["certificates"]["state"], "ok");
    assert_eq!(health["audit_chain"]["state"], "ok");

    let status = run(&["status", "--metrics", &format!("127.0.0.1:{}", d.metrics)]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains("overall       ok"),
        "{}",
        text(&status.stdout)
    );

    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_for("netunlockd stopped", Duration::from_secs(15));
    let code = d.child.wait().unwrap();
    assert!(code.success(), "exit status after SIGTERM: {code:?}");
    let _ = d.escrow;
}

#[test]
fn second_start_reuses_the_generated_certificate() {
    let mut d = Daemon::start(&[], "");
    let cer = std::fs::read(d.state.join("network-unlock/network-unlock.cer")).unwrap();
    let state = d.state.clone();
    let _keep = d.dir.take();
    drop(d);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, config_text(&state, free_port(), free_port(), "")).unwrap();
    let out = run(&["config", "check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 certificate(s) loaded"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read(state.join("network-unlock/network-unlock.cer")).unwrap(),
        cer
    );
}

#[test]
fn json_log_format_emits_one_json_object_per_line() {
    let d = Daemon::start(&["--log-format", "json"], "");
    for line in &d.log {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    assert!(d.log.iter().any(|l| l.contains("netunlockd ready")));
}

#[test]
fn config_check_rejects_bad_files_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("typo = 1", "unknown field"),
        (
            "[unlock]\nsubnet_policy = \"/nonexistent/bde-network-unlock.ini\"\n[[unlock.certificate]]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"",
            "cannot read",
        ),
        ("version = 9", "version 9"),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(
            &path,
            format!("state_dir = \"{}\"\n{body}", dir.path().join("s").display()),
        )
        .unwrap();
        let out = run(&["config", "check", "--config", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{body:?} was accepted");
        let err = text(&out.stderr);
        assert!(err.contains(expected), "{body:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_world_readable_unlock_key_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "certs",
        "new-unlock",
        "--out-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = dir.path().join("network-unlock.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[escrow]\nenabled = false\n[[unlock.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.path().join("s").display(),
            dir.path().join("network-unlock.pem").display(),
            key.display()
        ),
    )
    .unwrap();
    let out = run(&["config", "check", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn certs_new_unlock_and_inspect_agree_on_the_thumbprint() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "certs",
        "new-unlock",
        "--out-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let thumb = stdout
        .lines()
        .find_map(|l| l.strip_prefix("thumbprint: "))
        .expect("thumbprint line")
        .trim()
        .to_string();
    assert_eq!(thumb.len(), 40);
    assert!(
        stdout.contains("BitLocker Drive Encryption Network Unlock Certificate"),
        "{stdout}"
    );
    let out = run(&[
        "certs",
        "inspect",
        dir.path().join("network-unlock.cer").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "inspect warned: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).to_lowercase().contains(&thumb),
        "{}",
        text(&out.stdout)
    );
    // Refuses to overwrite an existing key.
    let again = run(&[
        "certs",
        "new-unlock",
        "--out-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    // Garbage is an error, not a crash.
    let junk = dir.path().join("junk.cer");
    std::fs::write(&junk, b"not a certificate").unwrap();
    let out = run(&["certs", "inspect", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn serving_privileged_ports_without_privilege_says_how_to_fix_it() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: needs root to run the daemon as an unprivileged user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    nix::unistd::chown(
        &state,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[escrow]\nenabled = false\n[metrics]\nenabled = false\n",
            state.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(netunlockd_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("CAP_NET_BIND_SERVICE"), "{err}");
    assert!(err.contains("root"), "{err}");
    assert!(
        !err.contains("os error 13)") || err.contains("CAP_NET_BIND_SERVICE"),
        "{err}"
    );
}

/// `promtool check metrics` lints a real scrape (names, units, help texts); .ci/run installs it.
fn promtool_check_metrics(scrape: &str) {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!("SKIP: promtool not installed (Debian package prometheus); metrics lint not run");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Runs a CLI command against a running daemon's configuration (and so its escrow API).
fn cli(d: &Daemon, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(netunlockd_bin());
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env("NETUNLOCKD_CONFIG", &d.config);
    match token {
        Some(t) => cmd.env("NETUNLOCKD_TOKEN", t),
        None => cmd.env_remove("NETUNLOCKD_TOKEN"),
    };
    cmd.output().unwrap()
}

#[test]
fn operator_cli_commands_go_through_the_api_with_the_operators_identity() {
    let d = Daemon::start(&[], "");
    // The first admin is created locally, straight in the database.
    let out = cli(&d, None, &["operator", "bootstrap", "--name", "root-admin"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let admin = text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .trim()
        .to_string();

    // Without a token the remote commands say how to get one.
    let out = cli(&d, None, &["operator", "list"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("operator bootstrap"),
        "{}",
        text(&out.stderr)
    );

    let out = cli(
        &d,
        Some(&admin),
        &[
            "operator", "create", "--name", "alice", "--role", "helpdesk", "--output", "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let alice_id = created["id"].to_string();
    let out = cli(
        &d,
        Some(&admin),
        &["operator", "token", &alice_id, "--output", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alice: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let alice = alice["token"]
        .as_str()
        .expect("token in answer")
        .to_string();

    let out = cli(&d, Some(&admin), &["operator", "list"]);
    assert!(text(&out.stdout).contains("alice"), "{}", text(&out.stdout));
    let out = cli(
        &d,
        Some(&admin),
        &[
            "enroll-token",
            "create",
            "--uses",
            "3",
            "--hours",
            "2",
            "--note",
            "rack 4",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&d, Some(&admin), &["enroll-token", "list"]);
    assert!(
        text(&out.stdout).contains("rack 4"),
        "{}",
        text(&out.stdout)
    );

    // A helpdesk operator may search but not manage operators; errors are clear and non-zero.
    let out = cli(
        &d,
        Some(&alice),
        &["escrow", "find", "--prefix", "24B0AA32"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&d, Some(&alice), &["operator", "list"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    let out = cli(
        &d,
        Some(&alice),
        &[
            "escrow",
            "disclose",
            "{24B0AA32-F8D0-40BA-BB05-73A800324C09}",
            "--device",
            "srv1",
            "--reason",
            "lost_pin",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    // The failed disclosure and the operator changes are in the audit report, under their names.
    let out = cli(
        &d,
        Some(&admin),
        &["escrow", "report", "audit", "--format", "csv"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    assert!(csv.contains("alice") && csv.contains("root-admin"), "{csv}");

    // Local tools: chain verification and an encrypted backup.
    let out = cli(&d, None, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("intact"));
    let dir = tempfile::tempdir().unwrap();
    let (backup, key) = (
        dir.path().join("escrow.backup"),
        dir.path().join("backup.key"),
    );
    let out = cli(
        &d,
        None,
        &[
            "escrow",
            "backup",
            "--out",
            backup.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let raw = std::fs::read(&backup).unwrap();
    assert!(
        !raw.windows(5).any(|w| w == b"alice"),
        "the backup is not encrypted"
    );

    // Tokens never reach the daemon's log.
    let mut d = d;
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_for("netunlockd stopped", Duration::from_secs(15));
    let log = d.log.join("\n");
    assert!(
        !log.contains(&admin) && !log.contains(&alice),
        "a token leaked into the log"
    );
}
