//! The rig of the group tests (issue 11): three `netunlockd` members in three namespaces on one
//! bridge, a relay namespace running ISC `dhcrelay` that forwards every request to all three, a
//! client namespace behind the relay, and a throwaway PostgreSQL cluster (its own initdb, started
//! and stopped by the tests) listening on the bridge. Everything is torn down on Drop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netunlock::client::{
    ClientSecrets, V4ClientParams, V6ClientParams, build_v4_request, build_v6_request,
    new_key_protector, verify_v4_reply, verify_v6_reply,
};
use socket2::{Domain, Protocol, Socket, Type};

use crate::harness::{Daemon, METRICS, Netns, UnlockCert, metric, run, scrape, skip_reason};

/// Members of the standard rig.
pub const MEMBERS: usize = 3;
const BRIDGE_V4: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 254);
const BRIDGE_V6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 0xfe);
const DOWN_V4: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);
const SERVER_IF: &str = "veth-s";
const CLIENT_IF: &str = "veth-c";
const RELAY_DOWN_IF: &str = "r-c";
/// Heartbeat settings of the test group: a takeover within 1.25 s, well inside the client's 2 s retry.
pub const HEARTBEAT_MS: u64 = 250;
pub const DEAD_AFTER_MS: u64 = 1000;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn member_v4(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, u8::try_from(k + 1).unwrap())
}
fn member_v6(k: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, u16::try_from(k + 1).unwrap())
}

/// Why the group tests cannot run here, if they cannot.
pub fn group_skip_reason() -> Option<String> {
    if let Some(r) = skip_reason() {
        return Some(r);
    }
    if !Path::new("/usr/sbin/dhcrelay").is_file() {
        return Some("ISC dhcrelay is not installed (apt-get install isc-dhcp-relay)".into());
    }
    if pg_bin_dir().is_none() {
        return Some("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin".into());
    }
    if Command::new("id")
        .arg("postgres")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        return Some("no `postgres` system user to run a throwaway cluster".into());
    }
    None
}

fn pg_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// A throwaway PostgreSQL cluster in a temp dir, listening on the bridge address inside the relay
/// namespace (never the machine's shared server). Removed on Drop.
pub struct Pg {
    dir: PathBuf,
    bin: PathBuf,
    netns: String,
    running: bool,
}

impl Pg {
    fn init(netns: &str) -> Self {
        let bin = pg_bin_dir().expect("postgres binaries");
        let dir = std::env::temp_dir().join(format!(
            "nu-group-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("chown").args(["postgres:postgres"]).arg(&dir));
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.join("data")));
        let hba = dir.join("data/pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).unwrap();
        text.push_str("host all all 10.78.0.0/24 trust\n");
        std::fs::write(&hba, text).unwrap();
        Self {
            dir,
            bin,
            netns: netns.to_owned(),
            running: false,
        }
    }

    pub fn url() -> String {
        format!("postgres://postgres@{BRIDGE_V4}:5432/postgres")
    }

    fn pg_ctl(&self, args: &[&str]) {
        let opts = format!(
            "-c listen_addresses={BRIDGE_V4} -p 5432 -k {} -c fsync=off -c synchronous_commit=off",
            self.dir.display()
        );
        run(Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "runuser",
                "-u",
                "postgres",
                "--",
            ])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-o", &opts, "-w"])
            .args(args));
    }

    pub fn start(&mut self) {
        self.pg_ctl(&["start"]);
        self.running = true;
    }

    /// Stops at once, as a crash or a lost network would look to the members.
    pub fn stop(&mut self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
        self.running = false;
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.running {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop()));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which family the rig relays.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fam {
    V4,
    V6,
}

impl Fam {
    pub fn label(self) -> &'static str {
        match self {
            Self::V4 => "v4",
            Self::V6 => "v6",
        }
    }
}

/// The whole group set-up. Field order = drop order: processes die before their namespaces go.
pub struct Rig {
    pub daemons: Vec<Option<Daemon>>,
    relay_proc: Child,
    pub pg: Pg,
    pub fam: Fam,
    /// How many members (daemons) the rig runs.
    pub n: usize,
    pub cert: UnlockCert,
    pub dirs: Vec<tempfile::TempDir>,
    relay_log: PathBuf,
    pub servers: Vec<Netns>,
    pub client: Netns,
    pub relay: Netns,
}

impl Rig {
    /// Builds the network, the database (started when `db_up`), the relay and the three members.
    pub fn start(fam: Fam, db_up: bool) -> Self {
        Self::start_with(fam, db_up, MEMBERS, true)
    }

    /// `n` members behind the relay; `group = false` runs them as independent appliances (each
    /// answers every request), the set-up a group replaces.
    pub fn start_with(fam: Fam, db_up: bool, n: usize, group: bool) -> Self {
        Self::start_full(fam, db_up, n, group, false)
    }

    /// As [`Rig::start_with`]; with `escrow`, the first member also runs the escrow service on the
    /// group's database.
    pub fn start_full(fam: Fam, db_up: bool, n: usize, group: bool, escrow: bool) -> Self {
        let id = format!(
            "ng{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let relay = Netns::create(format!("{id}r"));
        let client = Netns::create(format!("{id}c"));
        let servers: Vec<Netns> = (0..n).map(|k| Netns::create(format!("{id}s{k}"))).collect();
        relay.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
        relay.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{BRIDGE_V4}/24"),
            "dev",
            "br0",
        ]);
        relay.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{BRIDGE_V6}/64"),
            "dev",
            "br0",
            "nodad",
        ]);
        relay.exec(&["ip", "link", "set", "br0", "up"]);
        for (k, ns) in servers.iter().enumerate() {
            let port = format!("p{k}");
            run(Command::new("ip").args([
                "link",
                "add",
                SERVER_IF,
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &relay.name,
            ]));
            relay.exec(&["ip", "link", "set", &port, "master", "br0", "up"]);
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", member_v4(k)),
                "dev",
                SERVER_IF,
            ]);
            ns.exec(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{}/64", member_v6(k)),
                "dev",
                SERVER_IF,
                "nodad",
            ]);
            ns.exec(&["ip", "link", "set", SERVER_IF, "up"]);
            ns.exec(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &BRIDGE_V4.to_string(),
            ]);
            ns.exec(&[
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                &BRIDGE_V6.to_string(),
            ]);
        }
        run(Command::new("ip").args([
            "link",
            "add",
            CLIENT_IF,
            "netns",
            &client.name,
            "type",
            "veth",
            "peer",
            "name",
            RELAY_DOWN_IF,
            "netns",
            &relay.name,
        ]));
        relay.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{DOWN_V4}/24"),
            "dev",
            RELAY_DOWN_IF,
        ]);
        relay.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            "fd79::1/64",
            "dev",
            RELAY_DOWN_IF,
            "nodad",
        ]);
        relay.exec(&["ip", "link", "set", RELAY_DOWN_IF, "up"]);
        client.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{CLIENT_V4}/24"),
            "dev",
            CLIENT_IF,
        ]);
        client.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            "fd79::2/64",
            "dev",
            CLIENT_IF,
            "nodad",
        ]);
        client.exec(&["ip", "link", "set", CLIENT_IF, "up"]);
        client.exec(&["ip", "route", "add", "default", "via", &DOWN_V4.to_string()]);
        wait_link_local(&client, CLIENT_IF);
        wait_link_local(&relay, RELAY_DOWN_IF);

        let mut pg = Pg::init(&relay.name);
        if db_up {
            pg.start();
        }
        let dirs: Vec<tempfile::TempDir> = (0..=n).map(|_| tempfile::tempdir().unwrap()).collect();
        let cert = UnlockCert::generate(dirs[n].path(), "group");
        let relay_log = dirs[n].path().join("dhcrelay.log");
        let relay_proc = start_relay(&relay, fam, n, dirs[n].path(), &relay_log);
        let daemons = servers
            .iter()
            .enumerate()
            .map(|(k, ns)| {
                let config = member_config(k, dirs[k].path(), &cert, fam, group, escrow && k == 0);
                Some(Daemon::start(ns, dirs[k].path(), &config))
            })
            .collect();
        Self {
            daemons,
            relay_proc,
            pg,
            fam,
            n,
            cert,
            dirs,
            relay_log,
            servers,
            client,
            relay,
        }
    }

    pub fn member_id(k: usize) -> String {
        format!("nu-{}", k + 1)
    }

    /// The daemons' logs and the relay's, for assertion messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (k, d) in self.daemons.iter().enumerate() {
            if let Some(d) = d {
                out.push_str(&format!(
                    "---- {} ----\n{}\n",
                    Self::member_id(k),
                    tail(&d.log_text(), 40)
                ));
            }
        }
        out.push_str(&format!(
            "---- dhcrelay ----\n{}\n",
            tail(
                &std::fs::read_to_string(&self.relay_log).unwrap_or_default(),
                20
            )
        ));
        out
    }

    /// Members still running.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.n).filter(|k| self.daemons[*k].is_some()).collect()
    }

    pub fn kill9(&mut self, k: usize) {
        if let Some(d) = &self.daemons[k] {
            d.signal(nix::sys::signal::Signal::SIGKILL);
        }
        // Drop reaps it.
        self.daemons[k] = None;
    }

    pub fn metrics(&self, k: usize) -> String {
        scrape(&self.servers[k], METRICS)
    }

    /// Waits until every running member reports `members` live members and not degraded.
    pub fn wait_sharing(&self, members: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.alive().iter().all(|k| {
                let t = self.metrics(*k);
                metric(&t, "netunlockd_group_members") == members as f64
                    && metric(&t, "netunlockd_group_degraded") == 0.0
            });
            if ok {
                // Views are refreshed at every heartbeat; let a full round pass so all agree.
                std::thread::sleep(Duration::from_millis(2 * HEARTBEAT_MS));
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the group did not form with {members} members\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running member says it is degraded (answering everything).
    pub fn wait_degraded(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self
            .alive()
            .iter()
            .all(|k| metric(&self.metrics(*k), "netunlockd_group_degraded") == 1.0)
        {
            assert!(
                Instant::now() < deadline,
                "the members did not degrade\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Requests answered so far by member `k`.
    pub fn answered(&self, k: usize) -> f64 {
        metric(
            &self.metrics(k),
            &format!(
                r#"netunlockd_requests_total{{family="{}",outcome="answered"}}"#,
                self.fam.label()
            ),
        )
    }

    /// The client socket in the client namespace.
    pub fn client_socket(&self) -> UdpSocket {
        let fam = self.fam;
        self.client.enter(move || {
            let (domain, bind) = match fam {
                Fam::V4 => (Domain::IPV4, SocketAddr::from(([0, 0, 0, 0], 68))),
                Fam::V6 => (Domain::IPV6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 546))),
            };
            let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).unwrap();
            s.set_reuse_address(true).unwrap();
            if fam == Fam::V6 {
                s.set_only_v6(true).unwrap();
            }
            s.set_broadcast(true).unwrap();
            s.set_recv_buffer_size(4 << 20).unwrap();
            s.bind_device(Some(CLIENT_IF.as_bytes())).unwrap();
            s.bind(&bind.into()).unwrap();
            s.into()
        })
    }

    /// Where clients send: the limited broadcast (v4) or All_DHCP_Relay_Agents_and_Servers (v6).
    pub fn destination(&self) -> SocketAddr {
        match self.fam {
            Fam::V4 => SocketAddr::from(([255, 255, 255, 255], 67)),
            Fam::V6 => {
                let index = ifindex(&self.client, CLIENT_IF);
                SocketAddr::V6(SocketAddrV6::new(
                    "ff02::1:2".parse().unwrap(),
                    547,
                    0,
                    index,
                ))
            }
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn ifindex(ns: &Netns, ifname: &str) -> u32 {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{ifname}/ifindex")]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn wait_link_local(ns: &Netns, ifname: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ns.exec(&["ip", "-6", "addr", "show", "dev", ifname, "scope", "link"]);
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("fe80::") && !text.contains("tentative") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no link-local address on {ifname}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_relay(relay: &Netns, fam: Fam, n: usize, dir: &Path, log: &Path) -> Child {
    let mut cmd = relay.command(Path::new("/usr/sbin/dhcrelay"));
    let pid = dir.join("dhcrelay.pid");
    match fam {
        Fam::V4 => {
            cmd.args(["-4", "-d", "-pf"])
                .arg(&pid)
                .args(["-iu", "br0", "-id", RELAY_DOWN_IF]);
            for k in 0..n {
                cmd.arg(member_v4(k).to_string());
            }
        }
        Fam::V6 => {
            cmd.args(["-6", "-d", "-pf"])
                .arg(&pid)
                .args(["-l", RELAY_DOWN_IF]);
            for k in 0..n {
                cmd.args(["-u", &format!("{}%br0", member_v6(k))]);
            }
        }
    }
    let file = std::fs::File::create(log).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start dhcrelay");
    // dhcrelay prints its interfaces once it listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("Sending on") || text.contains("Listening on") {
            std::thread::sleep(Duration::from_millis(300));
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("dhcrelay exited ({status}):\n{text}");
        }
        assert!(Instant::now() < deadline, "dhcrelay did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.relay_proc.kill();
        let _ = self.relay_proc.wait();
        for d in &mut self.daemons {
            *d = None;
        }
    }
}

/// Where the first member's escrow service listens (inside its namespace) when the rig runs one.
pub const ESCROW_LISTEN: &str = "127.0.0.1:8443";

fn member_config(
    k: usize,
    state: &Path,
    cert: &UnlockCert,
    fam: Fam,
    group: bool,
    escrow: bool,
) -> String {
    let escrow = if escrow {
        format!(
            "[escrow]\nlisten = \"{ESCROW_LISTEN}\"\ndatabase_url = \"{}\"\n\n\
             [unlock_records]\ngauge_refresh_secs = 1\n",
            Pg::url()
        )
    } else {
        "[escrow]\nenabled = false\n".to_owned()
    };
    let (v4, v6, trusted) = match fam {
        Fam::V4 => (true, false, format!("{BRIDGE_V4}/32")),
        Fam::V6 => (false, true, format!("{BRIDGE_V6}/128")),
    };
    let group = if group {
        format!(
            "[unlock.group]\nname = \"e2e\"\nmember_id = \"{id}\"\ndatabase_url = \"{url}\"\n\
             heartbeat_interval_ms = {HEARTBEAT_MS}\ndead_after_ms = {DEAD_AFTER_MS}\n\n",
            id = Rig::member_id(k),
            url = Pg::url(),
        )
    } else {
        String::new()
    };
    format!(
        "state_dir = {state:?}\n\n[log]\nlevel = \"info\"\n\n[metrics]\nlisten = \"{METRICS}\"\n\n\
         [unlock]\ninterfaces = [\"{SERVER_IF}\"]\nworkers = 1\nv4 = {v4}\nv6 = {v6}\n\
         trusted_relays = [\"{trusted}\"]\nrelay_share = 100000\n\n{group}\
         [[unlock.certificate]]\ncert = {cert:?}\nkey = {key:?}\n\n{escrow}",
        state = state.display().to_string(),
        cert = cert.cert_pem.display().to_string(),
        key = cert.key.display().to_string(),
    )
}

// ---- Clients ---------------------------------------------------------------------------------

/// One simulated server at boot: its request and what it needs to check the answer.
pub struct Boot {
    pub xid: u32,
    datagram: Vec<u8>,
    mac: [u8; 6],
    secrets: ClientSecrets,
    fam: Fam,
}

impl Boot {
    /// Client number `n` (unique across a test: it is the xid, MAC and DUID).
    pub fn new(fam: Fam, cert: &UnlockCert, n: u32) -> Self {
        let (secrets, kp) = new_key_protector(&cert.der).unwrap();
        let b = n.to_be_bytes();
        let mac = [0x02, 0x4e, b[0], b[1], b[2], b[3]];
        let datagram = match fam {
            Fam::V4 => build_v4_request(
                &V4ClientParams {
                    xid: n,
                    mac,
                    ciaddr: Ipv4Addr::new(10, 79, 0, 2),
                    giaddr: Ipv4Addr::UNSPECIFIED,
                    siaddr: Ipv4Addr::UNSPECIFIED,
                    lease_options: false,
                    message_type: None,
                },
                &cert.thumbprint,
                &kp,
            ),
            Fam::V6 => build_v6_request(
                &V6ClientParams {
                    xid: [b[1], b[2], b[3]],
                    client_duid: vec![
                        0, 4, 0x4e, 0x55, 0, 0, b[0], b[1], b[2], b[3], 1, 2, 3, 4, 5, 6, 7, 8,
                    ],
                },
                &cert.thumbprint,
                &kp,
            ),
        };
        Self {
            xid: n & 0x00ff_ffff,
            datagram,
            mac,
            secrets,
            fam,
        }
    }

    fn accepts(&self, reply: &[u8]) -> bool {
        match self.fam {
            Fam::V4 => verify_v4_reply(reply, self.xid, &self.mac, &self.secrets).is_ok(),
            Fam::V6 => {
                let b = self.xid.to_be_bytes();
                verify_v6_reply(reply, [b[1], b[2], b[3]], &self.secrets).is_ok()
            }
        }
    }
}

fn reply_xid(fam: Fam, d: &[u8]) -> Option<u32> {
    match fam {
        Fam::V4 => d
            .get(4..8)
            .map(|x| u32::from_be_bytes(x.try_into().unwrap())),
        Fam::V6 => d
            .get(1..4)
            .map(|x| u32::from_be_bytes([0, x[0], x[1], x[2]])),
    }
}

/// What a storm saw: valid replies per client, and replies that did not verify.
pub struct Tally {
    pub replies: Vec<u32>,
    pub invalid: u32,
    pub retried: usize,
}

impl Tally {
    pub fn unanswered(&self) -> usize {
        self.replies.iter().filter(|c| **c == 0).count()
    }
    /// Clients with a reply count other than `n`, as (client index, count), first few.
    pub fn not_exactly(&self, n: u32) -> (usize, Vec<(usize, u32)>) {
        let bad: Vec<(usize, u32)> = self
            .replies
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, c)| *c != n)
            .collect();
        (bad.len(), bad.into_iter().take(10).collect())
    }
}

/// Sends every boot's request at `per_second`, calling `after_send(i)` after the i-th; with
/// `retry`, a client without an answer 2 s after its request sends it once more (as Windows does).
/// Returns once `settle` has passed after the last send.
pub fn storm(
    sock: &UdpSocket,
    dest: SocketAddr,
    boots: &[Boot],
    per_second: u32,
    retry: bool,
    settle: Duration,
    mut after_send: impl FnMut(usize),
) -> Tally {
    let fam = boots.first().map_or(Fam::V4, |b| b.fam);
    let index: HashMap<u32, usize> = boots.iter().enumerate().map(|(i, b)| (b.xid, i)).collect();
    let counts: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(vec![0; boots.len()]));
    let invalid = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rx = sock.try_clone().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::scope(|scope| {
        {
            let (counts, invalid, stop, index) =
                (counts.clone(), invalid.clone(), stop.clone(), &index);
            scope.spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, _)) = rx.recv_from(&mut buf) else {
                        continue;
                    };
                    let d = &buf[..n];
                    let hit = reply_xid(fam, d)
                        .and_then(|x| index.get(&x))
                        .filter(|i| boots[**i].accepts(d));
                    match hit {
                        Some(i) => counts.lock().unwrap()[*i] += 1,
                        None => {
                            invalid.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        let gap = Duration::from_secs(1) / per_second.max(1);
        let start = Instant::now();
        let mut sent_at = Vec::with_capacity(boots.len());
        for (i, b) in boots.iter().enumerate() {
            let due = start + gap * u32::try_from(i).unwrap();
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            sock.send_to(&b.datagram, dest).expect("send a request");
            sent_at.push(Instant::now());
            after_send(i);
        }
        let mut retried = 0;
        if retry {
            for (i, b) in boots.iter().enumerate() {
                if let Some(wait) =
                    (sent_at[i] + Duration::from_secs(2)).checked_duration_since(Instant::now())
                {
                    std::thread::sleep(wait);
                }
                if counts.lock().unwrap()[i] == 0 {
                    sock.send_to(&b.datagram, dest).expect("resend a request");
                    retried += 1;
                }
            }
        }
        std::thread::sleep(settle);
        stop.store(true, Ordering::Relaxed);
        Tally {
            replies: counts.lock().unwrap().clone(),
            invalid: invalid.load(Ordering::Relaxed),
            retried,
        }
    })
}

/// `n` boots numbered from `first`.
pub fn boots(fam: Fam, cert: &UnlockCert, first: u32, n: u32) -> Vec<Boot> {
    (first..first + n)
        .map(|i| Boot::new(fam, cert, i))
        .collect()
}
