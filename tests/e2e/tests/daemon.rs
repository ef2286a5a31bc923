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
        Self::start_in(tempfile::tempdir().unwrap(), extra_args, extra_config)
    }

    /// Starts with the state directory (and database) under `dir`, e.g. a stopped daemon's.
    fn start_in(dir: tempfile::TempDir, extra_args: &[&str], extra_config: &str) -> Self {
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

/// The DNS names and addresses of a PEM certificate.
fn cert_names(pem: &Path) -> (Vec<String>, String) {
    let der = certs::read_certificate_der(pem).unwrap();
    let names = certs::server_certificate_names(&der).unwrap().names;
    (names, certs::sha256_fingerprint_hex(&der))
}

#[test]
fn the_generated_https_certificate_names_the_hosts_addresses_and_follows_tls_names() {
    let mut d = Daemon::start(&[], "");
    let pem = d.state.join("escrow-tls/escrow.pem");
    let (names, first_sha) = cert_names(&pem);
    // Every address a remote CLI or agent may use, not only loopback and the host name.
    let host: Vec<String> = nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter(|i| {
            !i.flags
                .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        })
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| std::net::IpAddr::V4(v4.ip()))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| v6.ip())
                        .filter(|ip| !ip.is_unicast_link_local())
                        .map(std::net::IpAddr::V6)
                })
        })
        .map(|a| a.to_string())
        .collect();
    if host.is_empty() {
        println!("SKIP part: this host has no address besides loopback");
    }
    for want in host
        .iter()
        .map(String::as_str)
        .chain(["localhost", "127.0.0.1"])
    {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let mut dir = d.dir.take().unwrap();
    drop(d);

    // tls_names names what the certificate lacks: a new one, its fingerprint in the log.
    let tls_names = r#"tls_names = ["escrow.example.net", "192.0.2.10"]"#;
    let mut d = Daemon::start_in(dir, &[], tls_names);
    let (names, sha) = cert_names(&pem);
    assert_eq!(names, ["escrow.example.net", "192.0.2.10"]);
    assert_ne!(sha, first_sha);
    let logged = d
        .log
        .iter()
        .find(|l| l.contains("regenerated the self-signed escrow HTTPS certificate"))
        .unwrap_or_else(|| panic!("no regeneration logged:\n{}", d.log.join("\n")));
    assert!(logged.contains(&sha), "{logged}");

    // The CLI reaches it by an address the certificate does not name, by its pin.
    let out = cli(&d, None, &["operator", "bootstrap", "--name", "pinner"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .trim()
        .to_string();
    let url = format!("https://127.0.0.1:{}", d.escrow);
    for pin in [sha.clone(), colons(&sha)] {
        let out = cli(
            &d,
            Some(&token),
            &["operator", "list", "--url", &url, "--pin-sha256", &pin],
        );
        assert!(out.status.success(), "{pin}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("pinner"),
            "{}",
            text(&out.stdout)
        );
    }
    let out = cli(
        &d,
        Some(&token),
        &[
            "operator",
            "list",
            "--url",
            &url,
            "--pin-sha256",
            &first_sha,
        ],
    );
    assert!(!out.status.success(), "a wrong pin is refused");

    // Unchanged names: the same certificate on the next start.
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_for("netunlockd stopped", Duration::from_secs(15));
    dir = d.dir.take().unwrap();
    drop(d);
    let d = Daemon::start_in(dir, &[], tls_names);
    assert_eq!(cert_names(&pem).1, sha);
    assert!(
        !d.log.iter().any(|l| l.contains("regenerated")),
        "{}",
        d.log.join("\n")
    );
}

/// `AB:CD:…`, as certificate viewers show a fingerprint.
fn colons(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
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

/// The backup and restore commands of docs/operations.md ("## Backups"), continuation lines
/// joined, in order, with the packaged paths mapped under `root`.
fn documented_backup_commands(root: &Path) -> Vec<String> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md"),
    )
    .unwrap();
    let section = doc
        .split("\n## Backups\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/operations.md has a Backups section");
    let (mut out, mut in_block, mut pending) = (Vec::new(), false, String::new());
    for line in section.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        pending.push_str(line.trim().trim_end_matches('\\').trim());
        if line.trim_end().ends_with('\\') {
            pending.push(' ');
        } else {
            out.push(std::mem::take(&mut pending));
        }
    }
    let r = root.display().to_string();
    out.into_iter()
        .map(|c| {
            c.replace("/var/lib/", &format!("{r}/var/lib/"))
                .replace("/var/backups/", &format!("{r}/var/backups/"))
        })
        .collect()
}

/// Runs one documented line the way an operator would on the packaged appliance: `runuser -u
/// netunlockd --` becomes setpriv to the service user (uid 65534 here), `netunlockd` the binary
/// under test, the `netunlockd` owner of `install -d` that uid; `systemctl` lines are the test's
/// own business.
fn run_documented(line: &str, config: &Path) -> Option<std::process::Output> {
    if line.starts_with("systemctl ") {
        return None;
    }
    let bin = netunlockd_bin().display().to_string();
    let as_user = "setpriv --reuid=65534 --regid=65534 --clear-groups --";
    let cmd = line
        .replace("runuser -u netunlockd --", as_user)
        .replace("-o netunlockd -g netunlockd", "-o 65534 -g 65534")
        .replace(" netunlockd ", &format!(" {bin} "));
    let cmd = match cmd.strip_prefix("netunlockd ") {
        Some(rest) => format!("{bin} {rest}"),
        None => cmd,
    };
    Some(
        Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("NETUNLOCKD_CONFIG", config)
            .env_remove("RUST_LOG")
            .output()
            .unwrap(),
    )
}

#[test]
fn documented_backup_and_restore_work_as_the_service_user_in_the_packaged_layout() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: needs root to give the state to an unprivileged service user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let nobody = (
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    );
    // The packaged layout: /var/lib/netunlockd 0750 owned by the service user (tmpfiles),
    // /var/backups and /etc/netunlockd owned by root, /root private to root.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = root.join("var/lib/netunlockd");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(root.join("var/backups")).unwrap();
    std::fs::create_dir_all(root.join("etc/netunlockd")).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    nix::unistd::chown(&state, nobody.0, nobody.1).unwrap();
    let config = root.join("etc/netunlockd/netunlockd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[unlock]\nenabled = false\n[metrics]\nenabled = false\n\
             [escrow]\nlisten = \"127.0.0.1:{}\"\n",
            state.display(),
            free_port()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    // The daemon runs as the service user and creates its state (KEK, database).
    let mut daemon = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(netunlockd_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = daemon.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("netunlockd ready")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => log.push(l),
            Err(_) => panic!("the daemon did not start:\n{}", log.join("\n")),
        }
    }
    let as_user = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(netunlockd_bin())
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = as_user(&["operator", "bootstrap", "--name", "keeper"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let commands = documented_backup_commands(root);
    let split = commands
        .iter()
        .position(|c| c.contains("escrow restore") || c.starts_with("systemctl stop"))
        .expect("a documented restore");
    let (backup, restore) = commands.split_at(split);
    assert!(
        backup.iter().any(|c| c.contains("escrow backup")),
        "{commands:?}"
    );
    for line in backup {
        let out = run_documented(line, &config).unwrap();
        assert!(
            out.status.success(),
            "`{line}` failed in the packaged layout: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let backups: Vec<_> = std::fs::read_dir(root.join("var/backups/netunlockd-escrow"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");

    // A new appliance: no database, and the KEK not yet back from the offline copy.
    let _ = daemon.kill();
    let _ = daemon.wait();
    let kek = std::fs::read(state.join("kek.bin")).unwrap();
    for f in ["escrow.db", "escrow.db-wal", "escrow.db-shm", "kek.bin"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    let restore_line = restore
        .iter()
        .find(|c| c.contains("escrow restore"))
        .unwrap();
    let out = run_documented(restore_line, &config).unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("kek.bin") && err.contains("offline copy") && !err.contains("KEK file"),
        "restore without the KEK says what to put where: {err}"
    );
    // As the docs say: kek.bin back in place, 0600, owned by the service user.
    let kek_path = state.join("kek.bin");
    std::fs::write(&kek_path, &kek).unwrap();
    std::fs::set_permissions(&kek_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(&kek_path, nobody.0, nobody.1).unwrap();
    for line in restore {
        if let Some(out) = run_documented(line, &config) {
            assert!(
                out.status.success(),
                "`{line}` failed in the packaged layout: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
    let out = as_user(&["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The restored operator is there, readable by the service user.
    let out = as_user(&["operator", "bootstrap", "--name", "other"]);
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
}

/// A backup key file that cannot be created is called what it is, not "the KEK file".
#[test]
fn a_backup_key_that_cannot_be_created_is_named_the_backup_key() {
    let d = Daemon::start(&[], "");
    let out = cli(
        &d,
        None,
        &[
            "escrow",
            "backup",
            "--out",
            d.state.join("b.nub").to_str().unwrap(),
            "--key",
            "/nonexistent-dir/backup.key",
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("backup key file"), "{err}");
    assert!(!err.contains("KEK"), "{err}");
}

fn token_line(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .trim()
        .to_string()
}

#[test]
fn a_lost_admin_token_is_recovered_on_the_appliance_audited_and_tokens_get_the_default_lifetime() {
    let d = Daemon::start(&[], "api_token_lifetime_days = 7");
    let first = token_line(&cli(
        &d,
        None,
        &["operator", "bootstrap", "--name", "alice"],
    ));

    // With an admin in the database, bootstrap refuses and names the option that exists.
    let out = cli(&d, None, &["operator", "bootstrap", "--name", "bob"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("operator bootstrap --force"), "{err}");
    let help = cli(&d, None, &["operator", "bootstrap", "--help"]);
    assert!(
        text(&help.stdout).contains("--force"),
        "{}",
        text(&help.stdout)
    );
    // Every admin token lost: recovered locally, with a new token for the same admin.
    let recovered = token_line(&cli(
        &d,
        None,
        &["operator", "bootstrap", "--force", "--name", "alice"],
    ));
    assert_ne!(recovered, first);
    // One created through the API without a lifetime.
    let out = cli(
        &d,
        Some(&recovered),
        &["operator", "token", "1", "--output", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let third = created["token"].as_str().unwrap().to_string();

    // Listing shows every token without a secret, each expiring after the default lifetime.
    let out = cli(
        &d,
        Some(&recovered),
        &["operator", "tokens", "--output", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    for secret in [&first, &recovered, &third] {
        assert!(
            !listed.contains(secret.as_str()),
            "a secret is listed: {listed}"
        );
    }
    let list: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3, "{listed}");
    let week = time::OffsetDateTime::now_utc() + time::Duration::days(7);
    for t in tokens {
        let expires = time::OffsetDateTime::parse(
            t["expires_at"]
                .as_str()
                .unwrap_or_else(|| panic!("no expiry: {t}")),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!((expires - week).abs() < time::Duration::minutes(10), "{t}");
    }

    // The recovery is in the audit log, marked as forced.
    let out = cli(
        &d,
        Some(&recovered),
        &["escrow", "report", "audit", "--output", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let boots: Vec<&serde_json::Value> = report["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "operator_bootstrap")
        .collect();
    assert_eq!(boots.len(), 2, "{report}");
    assert!(
        boots.iter().any(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("\"forced\":true"))),
        "{boots:?}"
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
