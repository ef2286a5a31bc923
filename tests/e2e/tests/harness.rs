//! Network-namespace harness for the Network Unlock end-to-end tests.
//!
//! Each test gets its own pair of namespaces ("server" and "client", unique names per process and
//! test) joined by a veth pair, runs the real `netunlockd` in the server namespace and its clients in
//! the client namespace. Everything is torn down on Drop. Without root or `ip`, tests print
//! `SKIP: <reason>` and return.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SERVER_IF: &str = "veth-s";
pub const CLIENT_IF: &str = "veth-c";
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
pub const METRICS: &str = "127.0.0.1:9567";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why the netns tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("network-namespace tests need root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the `ip` command (iproute2) is not installed".into()),
    }
}

/// Runs a command and fails the test with its output if it does not succeed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// A named network namespace, deleted on Drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Self {
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        // No duplicate address detection: addresses are usable at once (no sleeping on DAD).
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a dedicated thread that has entered this namespace (the calling thread is untouched).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Server and client namespaces joined by veth-s <-> veth-c, with IPv4 and IPv6 (no DAD).
pub struct Topology {
    pub server: Netns,
    pub client: Netns,
}

impl Topology {
    pub fn new() -> Self {
        let id = format!(
            "nu{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let server = Netns::create(format!("{id}s"));
        let client = Netns::create(format!("{id}c"));
        // Created directly inside the namespaces: no name clash in the root namespace between tests.
        ip(&[
            "link",
            "add",
            SERVER_IF,
            "netns",
            &server.name,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_IF,
            "netns",
            &client.name,
        ]);
        for (ns, ifname, v4, v6) in [
            (&server, SERVER_IF, SERVER_V4, SERVER_V6),
            (&client, CLIENT_IF, CLIENT_V4, CLIENT_V6),
        ] {
            ns.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{ifname}.accept_dad=0"),
            ]);
            ns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", ifname]);
            ns.exec(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ]);
            ns.exec(&["ip", "link", "set", ifname, "up"]);
        }
        let topo = Self { server, client };
        topo.wait_for_link_local();
        topo
    }

    /// The kernel adds the link-local address when the link comes up; wait until both ends have one
    /// that is not tentative.
    fn wait_for_link_local(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for (ns, ifname) in [(&self.server, SERVER_IF), (&self.client, CLIENT_IF)] {
            loop {
                let out = ns.exec(&["ip", "-6", "addr", "show", "dev", ifname, "scope", "link"]);
                let text = String::from_utf8_lossy(&out.stdout);
                if text.contains("fe80::") && !text.contains("tentative") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no usable link-local address on {ifname}: {text}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The link-local address of an interface in a namespace.
    pub fn link_local(ns: &Netns, ifname: &str) -> Ipv6Addr {
        let out = ns.exec(&[
            "ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("fe80").map(|_| w))
            .and_then(|w| w.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no link-local address in: {text}"))
    }

    pub fn mac(ns: &Netns, ifname: &str) -> [u8; 6] {
        let out = ns.exec(&["cat", &format!("/sys/class/net/{ifname}/address")]);
        let text = String::from_utf8_lossy(&out.stdout);
        let bytes: Vec<u8> = text
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("MAC hex"))
            .collect();
        bytes.try_into().expect("6-byte MAC")
    }
}

/// The `netunlockd` binary built for this test run (target/<profile>/netunlockd).
pub fn netunlockd_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/netunlockd
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("netunlockd");
    assert!(
        bin.is_file(),
        "{} is missing: build the daemon first (`cargo build -p netunlockd` with the same profile as the \
         tests; scripts/test does this)",
        bin.display()
    );
    bin
}

/// A free TCP port on loopback (the listener is closed again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

/// A Network Unlock certificate + key written to a directory.
pub struct UnlockCert {
    pub cert_pem: PathBuf,
    pub cert_der_path: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
    pub thumbprint: [u8; 20],
}

impl UnlockCert {
    pub fn generate(dir: &Path, base: &str) -> Self {
        let generated = certs::generate_unlock_certificate(&format!("e2e {base}"), 365)
            .expect("generate unlock certificate");
        let files = certs::write_unlock_files(dir, base, &generated).expect("write unlock files");
        Self {
            cert_pem: files.cert_pem,
            cert_der_path: files.cert_cer,
            key: files.key,
            der: generated.cert_der.clone(),
            thumbprint: generated.thumbprint,
        }
    }

    pub fn thumbprint_hex(&self) -> String {
        hex::encode(self.thumbprint)
    }
}

/// One `[[unlock.certificate]]` entry.
pub struct CertEntry<'a> {
    pub cert: &'a UnlockCert,
    pub enabled: bool,
    pub allowed_subnets: Vec<&'a str>,
}

impl<'a> CertEntry<'a> {
    pub fn new(cert: &'a UnlockCert) -> Self {
        Self {
            cert,
            enabled: true,
            allowed_subnets: Vec::new(),
        }
    }
}

/// The daemon's TOML configuration for a test.
pub fn config_toml(state_dir: &Path, certs: &[CertEntry<'_>]) -> String {
    config_toml_with(state_dir, certs, "")
}

/// Like [`config_toml`], with extra `key = value` lines in `[unlock]` (e.g. `trusted_relays`).
pub fn config_toml_with(state_dir: &Path, certs: &[CertEntry<'_>], unlock_extra: &str) -> String {
    let mut s = format!(
        "state_dir = {state:?}\n\n[log]\nlevel = \"info,netunlock=debug\"\n\n[metrics]\nlisten = \"{METRICS}\"\n\n\
         [unlock]\ninterfaces = [\"{SERVER_IF}\"]\nworkers = 2\n{unlock_extra}\n\n",
        state = state_dir.display().to_string(),
    );
    for c in certs {
        let subnets: Vec<String> = c.allowed_subnets.iter().map(|n| format!("{n:?}")).collect();
        s.push_str(&format!(
            "[[unlock.certificate]]\ncert = {:?}\nkey = {:?}\nenabled = {}\nallowed_subnets = [{}]\n\n",
            c.cert.cert_pem.display().to_string(),
            c.cert.key.display().to_string(),
            c.enabled,
            subnets.join(", ")
        ));
    }
    s.push_str("[escrow]\nenabled = false\n");
    s
}

/// The real daemon running in the server namespace; killed on Drop.
pub struct Daemon {
    child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    pub config_path: PathBuf,
}

impl Daemon {
    /// Starts `netunlockd serve --config <file>` and waits for the `netunlockd ready` line.
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Self {
        let config_path = dir.join("netunlockd.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut child = ns
            .command(&netunlockd_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netunlockd");
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("netunlockd ready") {
                        let _ = ready_tx.send(());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut daemon = Self {
            child,
            log,
            config_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return daemon;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "netunlockd exited before ready ({status}):\n{}",
                    daemon.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "netunlockd not ready within 30 s:\n{}",
                daemon.log_text()
            );
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line containing all of `needles` appears.
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| needles.iter().all(|n| l.contains(n)))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill");
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `netunlockd probe …` in the client namespace.
pub fn probe(ns: &Netns, family: &str, cert: &UnlockCert, extra: &[&str]) -> Output {
    ns.command(&netunlockd_bin())
        .args(["probe", family, "--cert"])
        .arg(&cert.cert_pem)
        .args(["--interface", CLIENT_IF])
        .args(extra)
        .output()
        .expect("run netunlockd probe")
}

pub fn output_text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Fetches /metrics over plain HTTP/1.0 from inside a namespace.
pub fn scrape(ns: &Netns, addr: &str) -> String {
    let addr: SocketAddr = addr.parse().expect("metrics address");
    ns.enter(move || {
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect metrics");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send GET");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("read metrics");
        assert!(
            body.starts_with("HTTP/1.") && body.contains(" 200 "),
            "metrics: {body}"
        );
        body
    })
}

/// The value of one series in a Prometheus text exposition (exact label string), or 0 if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Scrapes until `series` reaches `min` (the daemon counts a reply just after sending it, so a client
/// can see the reply a moment before the counter moves). Returns the last scrape.
pub fn scrape_until(ns: &Netns, addr: &str, series: &str, min: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(ns, addr);
        if metric(&text, series) >= min || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
