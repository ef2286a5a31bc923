//! The whole responder pipeline over real sockets, in two network namespaces joined by a veth pair:
//! receive → parse → trust → decide → ownership → limits → fair queue → RSA worker → reply, and the
//! outcome counted, recorded and logged for each path. (The real binary is tested the same way by the
//! end-to-end tests; these drive the library directly, with its hooks.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use common::netns::{self, CLIENT_IF, CLIENT_V4, SERVER_IF, SERVER_V4, TestNet, in_ns};
use netunlock::client::{
    ClientSecrets, V4ClientParams, V6ClientParams, build_v4_request, build_v6_request,
    new_key_protector, verify_v4_reply, verify_v6_reply,
};
use netunlock::responder::{
    ClientIdentity, Family, Heartbeat, Hooks, NetunlockMetrics, Outcome, OutcomeRecord,
    OutcomeSink, Ownership, RateLimit, Responder, ResponderConfig,
};
use netunlock::{CertificatePolicy, KeyStore, RejectionSecret, UnlockKey};
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

/// One generated certificate for all tests (RSA key generation is the slow part).
fn identity() -> (Arc<certs::UnlockIdentity>, Vec<u8>) {
    static ID: OnceLock<(Arc<certs::UnlockIdentity>, Vec<u8>)> = OnceLock::new();
    ID.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let g = certs::generate_unlock_certificate("pipeline test", 30).unwrap();
        let files = certs::write_unlock_files(dir.path(), "t", &g).unwrap();
        let id = certs::load_unlock_identity(&files.cert_pem, Some(&files.key), None).unwrap();
        (Arc::new(id), g.cert_der)
    })
    .clone()
}

fn store() -> Arc<KeyStore> {
    let (id, _) = identity();
    Arc::new(
        KeyStore::new(vec![(
            UnlockKey::new(id, &RejectionSecret::from_bytes([7; 32])),
            CertificatePolicy::allow_all(),
        )])
        .unwrap(),
    )
}

/// Records every outcome the pipeline reports.
#[derive(Default)]
struct Records(Mutex<Vec<(Outcome, String, IpAddr)>>);

impl OutcomeSink for Records {
    fn record(&self, r: &OutcomeRecord<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((r.outcome, r.client.to_string(), r.address));
    }
}

/// Not ours: one MAC.
struct NotThisMac(Vec<u8>);

impl Ownership for NotThisMac {
    fn is_mine(&self, client: &ClientIdentity) -> bool {
        *client != ClientIdentity::Mac(self.0.clone())
    }
}

struct Running {
    net: TestNet,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    metrics: Arc<NetunlockMetrics>,
    heartbeat: Arc<Heartbeat>,
    records: Arc<Records>,
}

impl Running {
    /// Starts the responder in the server namespace, or says why it cannot run here.
    fn start(tweak: impl FnOnce(&mut ResponderConfig) + Send) -> Option<Self> {
        Self::start_with(tweak, |_| {})
    }

    fn start_with(
        tweak: impl FnOnce(&mut ResponderConfig) + Send,
        hooks: impl FnOnce(&mut Hooks) + Send,
    ) -> Option<Self> {
        let net = match TestNet::new() {
            Ok(n) => n,
            Err(reason) => {
                println!("SKIP: {reason}");
                return None;
            }
        };
        let mut config = ResponderConfig::with_defaults(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
        config.interfaces = vec![SERVER_IF.into()];
        config.workers = 1;
        config.recv_buffer_bytes = 1 << 20;
        tweak(&mut config);
        let records = Arc::new(Records::default());
        let mut h = Hooks {
            outcomes: records.clone(),
            ..Hooks::default()
        };
        hooks(&mut h);
        let shutdown = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let server = net.server.clone();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            netns::enter(&server);
            let registry = prometheus::Registry::new();
            let metrics = NetunlockMetrics::register(&registry).unwrap();
            let responder =
                Responder::bind(config, Arc::new(ArcSwap::new(store())), metrics.clone(), h)
                    .unwrap();
            tx.send((metrics, responder.heartbeat())).unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(responder.run(token)).unwrap();
        });
        let (metrics, heartbeat) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Some(Self {
            net,
            shutdown,
            thread: Some(thread),
            metrics,
            heartbeat,
            records,
        })
    }

    fn count(&self, f: Family, o: Outcome) -> u64 {
        self.metrics.requests(f, o)
    }

    /// Waits until the counter reaches `n` (counters move on other threads).
    fn wait_count(&self, f: Family, o: Outcome, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.count(f, o) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.count(f, o)
    }

    fn total(&self, f: Family) -> u64 {
        Outcome::ALL.iter().map(|o| self.count(f, *o)).sum()
    }

    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        self.shutdown.cancel();
        if let Some(th) = self.thread.take() {
            th.join().unwrap();
        }
        t.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(th) = self.thread.take() {
            let _ = th.join();
        }
    }
}

/// A client socket in the current namespace bound to `bind` on the client veth.
fn socket(bind: SocketAddr) -> UdpSocket {
    let domain = if bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    if bind.is_ipv6() {
        s.set_only_v6(true).unwrap();
    }
    s.bind_device(Some(CLIENT_IF.as_bytes())).unwrap();
    s.set_broadcast(true).unwrap();
    s.bind(&bind.into()).unwrap();
    s.into()
}

fn collect(sock: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => got.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    got
}

fn v4_request(n: u32, ciaddr: Ipv4Addr, corrupt: bool) -> (Vec<u8>, u32, [u8; 6], ClientSecrets) {
    let (_, der) = identity();
    let (secrets, mut kp) = new_key_protector(&der).unwrap();
    if corrupt {
        kp[100] ^= 0x42;
    }
    let b = n.to_be_bytes();
    let mac = [2, 0, b[0], b[1], b[2], b[3]];
    let xid = 0x7700_0000 | n;
    let params = V4ClientParams {
        xid,
        mac,
        ciaddr,
        giaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: Ipv4Addr::UNSPECIFIED,
        lease_options: false,
        message_type: None,
    };
    let thumb = certs::thumbprint(&der);
    (build_v4_request(&params, &thumb, &kp), xid, mac, secrets)
}

const BROADCAST_67: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

#[test]
fn v4_request_is_answered_counted_and_recorded() {
    let Some(mut r) = Running::start(|_| {}) else {
        return;
    };
    let (req, xid, mac, secrets) = v4_request(1, CLIENT_V4, false);
    let got = in_ns(&r.net.client, || {
        let s = socket(SocketAddr::from((CLIENT_V4, 68)));
        s.send_to(&req, BROADCAST_67).unwrap();
        collect(&s, Duration::from_secs(5))
    });
    assert!(
        got.iter()
            .any(|d| verify_v4_reply(d, xid, &mac, &secrets).is_ok()),
        "a reply that decrypts to our CK"
    );
    assert_eq!(r.wait_count(Family::V4, Outcome::Answered, 1), 1);
    let records = r.records.0.lock().unwrap().clone();
    assert_eq!(
        records,
        vec![(
            Outcome::Answered,
            "02:00:00:00:00:01".to_string(),
            IpAddr::V4(CLIENT_V4)
        )]
    );
    assert!(r.heartbeat.healthy(Duration::from_secs(5)));
    assert!(r.stop() < Duration::from_secs(4), "shutdown is bounded");
}

#[test]
fn v6_multicast_request_is_answered() {
    let Some(r) = Running::start(|_| {}) else {
        return;
    };
    let (_, der) = identity();
    let (secrets, kp) = new_key_protector(&der).unwrap();
    let xid = [1, 2, 3];
    let req = build_v6_request(
        &V6ClientParams {
            xid,
            client_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 9],
        },
        &certs::thumbprint(&der),
        &kp,
    );
    let ll = r.net.client_link_local();
    let ifindex = in_ns(&r.net.client, || {
        nix::net::if_::if_nametoindex(CLIENT_IF).unwrap()
    });
    let got = in_ns(&r.net.client, || {
        let s = socket(SocketAddr::V6(SocketAddrV6::new(ll, 546, 0, ifindex)));
        let to = SocketAddrV6::new(
            netunlock::v6::ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
            547,
            0,
            ifindex,
        );
        s.send_to(&req, to).unwrap();
        collect(&s, Duration::from_secs(5))
    });
    assert!(
        got.iter()
            .any(|d| verify_v6_reply(d, xid, &secrets).is_ok()),
        "a v6 reply that decrypts"
    );
    assert_eq!(r.wait_count(Family::V6, Outcome::Answered, 1), 1);
}

#[test]
fn unknown_thumbprint_and_garbage_get_silence() {
    let Some(r) = Running::start(|_| {}) else {
        return;
    };
    let (mut req, ..) = v4_request(2, CLIENT_V4, false);
    // Thumbprint starts after the options' 43/len/1/len bytes; flip one byte of it.
    let pos = req.windows(2).position(|w| w == [1, 20]).unwrap() + 2;
    req[pos] ^= 0xff;
    let got = in_ns(&r.net.client, || {
        let s = socket(SocketAddr::from((CLIENT_V4, 68)));
        s.send_to(&req, BROADCAST_67).unwrap();
        s.send_to(b"garbage", BROADCAST_67).unwrap();
        s.send_to(&[], BROADCAST_67).unwrap();
        collect(&s, Duration::from_millis(500))
    });
    assert!(got.is_empty(), "silence");
    assert_eq!(r.wait_count(Family::V4, Outcome::UnknownCertificate, 1), 1);
    assert_eq!(r.wait_count(Family::V4, Outcome::NotNkpu, 2), 2);
    assert_eq!(r.count(Family::V4, Outcome::Answered), 0);
}

#[test]
fn corrupted_key_protector_is_answered_but_does_not_decrypt() {
    let Some(r) = Running::start(|_| {}) else {
        return;
    };
    let (req, xid, mac, secrets) = v4_request(3, CLIENT_V4, true);
    let got = in_ns(&r.net.client, || {
        let s = socket(SocketAddr::from((CLIENT_V4, 68)));
        s.send_to(&req, BROADCAST_67).unwrap();
        collect(&s, Duration::from_secs(3))
    });
    let reply = got.first().expect("no-oracle: a reply");
    assert!(verify_v4_reply(reply, xid, &mac, &secrets).is_err());
    assert_eq!(
        r.wait_count(Family::V4, Outcome::Answered, 1),
        1,
        "counted as answered"
    );
}

/// The finding: one source with a new MAC per request used to get a fresh bucket each time.
#[test]
fn one_source_is_limited_whatever_macs_it_claims_others_are_not() {
    let Some(r) = Running::start(|c| {
        c.rate_limit = RateLimit {
            burst: 2,
            per_second: 0.01,
        };
    }) else {
        return;
    };
    let other = Ipv4Addr::new(10, 88, 0, 3);
    r.net.add_client_v4(other);
    let floods: Vec<_> = (0..6)
        .map(|i| v4_request(10 + i, CLIENT_V4, false).0)
        .collect();
    let (req, xid, mac, secrets) = v4_request(20, other, false);
    let got = in_ns(&r.net.client, || {
        let s = socket(SocketAddr::from((CLIENT_V4, 68)));
        for f in &floods {
            s.send_to(f, BROADCAST_67).unwrap();
        }
        let o = socket(SocketAddr::from((other, 68)));
        o.send_to(&req, BROADCAST_67).unwrap();
        collect(&o, Duration::from_secs(4))
    });
    assert_eq!(r.wait_count(Family::V4, Outcome::RateLimited, 4), 4);
    assert_eq!(r.wait_count(Family::V4, Outcome::Answered, 3), 3);
    assert!(
        got.iter()
            .any(|d| verify_v4_reply(d, xid, &mac, &secrets).is_ok()),
        "the other host got its answer"
    );
}

#[test]
fn requests_older_than_max_age_are_dropped_not_answered_late() {
    let Some(r) = Running::start(|c| c.max_request_age = Duration::from_nanos(1)) else {
        return;
    };
    let reqs: Vec<_> = (0..3)
        .map(|i| v4_request(30 + i, CLIENT_V4, false).0)
        .collect();
    let got = in_ns(&r.net.client, || {
        let s = socket(SocketAddr::from((CLIENT_V4, 68)));
        for q in &reqs {
            s.send_to(q, BROADCAST_67).unwrap();
        }
        collect(&s, Duration::from_millis(500))
    });
    assert_eq!(r.wait_count(Family::V4, Outcome::Expired, 3), 3);
    assert!(got.is_empty(), "nothing is sent late");
    assert_eq!(r.count(Family::V4, Outcome::Answered), 0);
}

/// A source that fills its share of the queue is refused; a host sending one request still gets in.
#[test]
fn a_full_source_share_drops_and_counts_and_others_still_get_in() {
    let Some(r) = Running::start(|c| {
        c.workers = 1;
        c.rate_limit = RateLimit {
            burst: 0,
            per_second: 0.0,
        };
    }) else {
        return;
    };
    let other = Ipv4Addr::new(10, 88, 0, 4);
    r.net.add_client_v4(other);
    let n = 40u32;
    let reqs: Vec<_> = (0..n)
        .map(|i| v4_request(100 + i, CLIENT_V4, false).0)
        .collect();
    let (late, xid, mac, secrets) = v4_request(200, other, false);
    let got = in_ns(&r.net.client, || {
        let s = socket(SocketAddr::from((CLIENT_V4, 68)));
        for q in &reqs {
            s.send_to(q, BROADCAST_67).unwrap();
        }
        let o = socket(SocketAddr::from((other, 68)));
        o.send_to(&late, BROADCAST_67).unwrap();
        collect(&o, Duration::from_secs(4))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.total(Family::V4) < u64::from(n) + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let full = r.count(Family::V4, Outcome::QueueFull);
    let answered = r.count(Family::V4, Outcome::Answered);
    let expired = r.count(Family::V4, Outcome::Expired);
    assert!(full >= 1, "one source cannot queue {n} requests");
    assert_eq!(
        full + answered + expired,
        u64::from(n) + 1,
        "every request has exactly one outcome"
    );
    assert!(
        got.iter()
            .any(|d| verify_v4_reply(d, xid, &mac, &secrets).is_ok()),
        "the other host is served despite the backlog"
    );
}

#[test]
fn a_client_the_ownership_hook_declines_is_not_answered() {
    let mac = vec![2, 0, 0, 0, 0, 5];
    let Some(r) = Running::start_with(|_| {}, |h| h.ownership = Arc::new(NotThisMac(mac.clone())))
    else {
        return;
    };
    let (req, ..) = v4_request(5, CLIENT_V4, false);
    let got = in_ns(&r.net.client, || {
        let s = socket(SocketAddr::from((CLIENT_V4, 68)));
        s.send_to(&req, BROADCAST_67).unwrap();
        collect(&s, Duration::from_millis(500))
    });
    assert!(got.is_empty());
    assert_eq!(r.wait_count(Family::V4, Outcome::NotMine, 1), 1);
}

#[test]
fn datagrams_from_unserved_interfaces_are_ignored() {
    // Serve loopback only: traffic on the veth is then not ours.
    let Some(r) = Running::start(|c| c.interfaces = vec!["lo".into()]) else {
        return;
    };
    let (req, ..) = v4_request(6, CLIENT_V4, false);
    let got = in_ns(&r.net.client, || {
        let s = socket(SocketAddr::from((CLIENT_V4, 68)));
        s.send_to(&req, SocketAddrV4::new(SERVER_V4, 67)).unwrap();
        collect(&s, Duration::from_millis(400))
    });
    assert!(got.is_empty());
    assert_eq!(r.total(Family::V4), 0, "not counted either");
}
