//! Two network namespaces joined by a veth pair, for tests and the load tool that run the responder
//! in-process: the responder's threads in one namespace, clients in the other. Needs root and `ip`;
//! without them `TestNet::new` returns the reason to skip. Torn down on Drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SERVER_IF: &str = "nu-s";
pub const CLIENT_IF: &str = "nu-c";
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd88, 0, 0, 0, 0, 0, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd88, 0, 0, 0, 0, 0, 0, 2);
/// The client side's subnet (/16), so tests can add many client addresses.
pub const PREFIX_LEN: u8 = 16;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why these tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("network-namespace tests need root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the `ip` command (iproute2) is not installed".into()),
    }
}

/// Server and client namespaces with `nu-s` (10.88.0.1/16, fd88::1/64) and `nu-c` (10.88.0.2/16,
/// fd88::2/64).
pub struct TestNet {
    pub server: String,
    pub client: String,
}

impl TestNet {
    pub fn new() -> Result<Self, String> {
        if let Some(reason) = skip_reason() {
            return Err(reason);
        }
        let id = format!(
            "nt{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let net = Self {
            server: format!("{id}s"),
            client: format!("{id}c"),
        };
        for ns in [&net.server, &net.client] {
            ip(&["netns", "add", ns]);
            net.exec(ns, &["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"]);
            net.exec(ns, &["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
            net.exec(ns, &["ip", "link", "set", "lo", "up"]);
        }
        ip(&[
            "link",
            "add",
            SERVER_IF,
            "netns",
            &net.server,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_IF,
            "netns",
            &net.client,
        ]);
        for (ns, ifname, v4, v6) in [
            (&net.server, SERVER_IF, SERVER_V4, SERVER_V6),
            (&net.client, CLIENT_IF, CLIENT_V4, CLIENT_V6),
        ] {
            net.exec(
                ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{v4}/{PREFIX_LEN}"),
                    "dev",
                    ifname,
                ],
            );
            net.exec(
                ns,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    ifname,
                    "nodad",
                ],
            );
            net.exec(ns, &["ip", "link", "set", ifname, "up"]);
        }
        net.wait_for_link_local();
        Ok(net)
    }

    pub fn exec(&self, ns: &str, args: &[&str]) {
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Adds an IPv4 address to the client side (a further client host on the link).
    pub fn add_client_v4(&self, addr: Ipv4Addr) {
        self.exec(
            &self.client,
            &["ip", "addr", "add", &format!("{addr}/32"), "dev", CLIENT_IF],
        );
    }

    fn wait_for_link_local(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for (ns, ifname) in [(&self.server, SERVER_IF), (&self.client, CLIENT_IF)] {
            loop {
                let out = Command::new("ip")
                    .args([
                        "netns", "exec", ns, "ip", "-6", "addr", "show", "dev", ifname,
                    ])
                    .output()
                    .expect("ip");
                let text = String::from_utf8_lossy(&out.stdout);
                if text.contains("fe80::") && !text.contains("tentative") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no link-local address on {ifname}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The client side's link-local address.
    pub fn client_link_local(&self) -> Ipv6Addr {
        in_ns(&self.client, || {
            netunlock::netif::find_interface(CLIENT_IF)
                .expect("client interface")
                .link_local_v6()
                .expect("link-local")
        })
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Moves the calling thread into namespace `ns` (threads it spawns afterwards inherit it).
pub fn enter(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// Runs `f` on a thread inside namespace `ns`.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
