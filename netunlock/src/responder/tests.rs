//! The whole responder pipeline over real loopback sockets: receive → classify → rate limit → queue →
//! RSA worker → reply, and the outcome counters for each path.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::client::{
    ClientSecrets, V4ClientParams, V6ClientParams, build_v4_request, build_v6_request,
    new_key_protector, verify_v4_reply, verify_v6_reply,
};
use crate::{CertificatePolicy, UnlockKey};

/// One generated certificate for all tests (RSA key generation is the slow part).
fn identity() -> (Arc<certs::UnlockIdentity>, Vec<u8>) {
    static ID: OnceLock<(Arc<certs::UnlockIdentity>, Vec<u8>)> = OnceLock::new();
    ID.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let g = certs::generate_unlock_certificate("responder test", 30).unwrap();
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
            UnlockKey::new(id, [7u8; 32]),
            CertificatePolicy::allow_all(),
        )])
        .unwrap(),
    )
}

struct Running {
    rt: tokio::runtime::Runtime,
    task: Option<tokio::task::JoinHandle<Result<(), ResponderError>>>,
    shutdown: CancellationToken,
    metrics: Arc<NetunlockMetrics>,
    server: Vec<SocketAddr>,
    client: UdpSocket,
    heartbeat: Arc<Heartbeat>,
}

impl Running {
    fn start(v6: bool, tweak: impl FnOnce(&mut ResponderConfig)) -> Self {
        let client = if v6 {
            UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap()
        } else {
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
        };
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let client_port = client.local_addr().unwrap().port();
        let mut config = ResponderConfig::with_defaults(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
        config.interfaces = vec!["lo".into()];
        config.v4 = (!v6).then(|| SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        config.v6_port = v6.then_some(0);
        config.v4_client_port = client_port;
        config.v6_client_port = client_port;
        config.workers = 1;
        config.recv_buffer_bytes = 1 << 20;
        tweak(&mut config);
        let registry = prometheus::Registry::new();
        let metrics = NetunlockMetrics::register(&registry).unwrap();
        let responder =
            Responder::bind(config, Arc::new(ArcSwap::new(store())), metrics.clone()).unwrap();
        let server = responder.local_addrs();
        let heartbeat = responder.heartbeat();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let task = Some(rt.spawn(responder.run(shutdown.clone())));
        Self {
            rt,
            task,
            shutdown,
            metrics,
            server,
            client,
            heartbeat,
        }
    }

    fn send(&self, d: &[u8]) {
        self.client.send_to(d, self.server[0]).unwrap();
    }

    fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        self.client.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 2048];
        self.client
            .recv_from(&mut buf)
            .ok()
            .map(|(n, _)| buf[..n].to_vec())
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

    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            self.rt.block_on(task).unwrap().unwrap();
        }
        t.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn v4_request(n: u32, corrupt: bool) -> (Vec<u8>, u32, [u8; 6], ClientSecrets) {
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
        ciaddr: Ipv4Addr::LOCALHOST,
        giaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: Ipv4Addr::UNSPECIFIED,
        lease_options: false,
        message_type: None,
    };
    let thumb = certs::thumbprint(&der);
    (build_v4_request(&params, &thumb, &kp), xid, mac, secrets)
}

#[test]
fn v4_request_is_answered_and_counted() {
    let mut r = Running::start(false, |_| {});
    let (req, xid, mac, secrets) = v4_request(1, false);
    r.send(&req);
    let reply = r.recv(Duration::from_secs(5)).expect("a reply");
    verify_v4_reply(&reply, xid, &mac, &secrets).expect("decrypts to our CK");
    assert_eq!(r.wait_count(Family::V4, Outcome::Answered, 1), 1);
    assert!(r.heartbeat.healthy(Duration::from_secs(5)));
    assert!(r.stop() < Duration::from_secs(3), "shutdown is bounded");
}

#[test]
fn v6_request_is_answered_over_loopback() {
    let r = Running::start(true, |_| {});
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
    let to = match r.server[0] {
        SocketAddr::V6(a) => SocketAddrV6::new(Ipv6Addr::LOCALHOST, a.port(), 0, 0),
        other => panic!("not v6: {other}"),
    };
    r.client.send_to(&req, to).unwrap();
    let reply = r.recv(Duration::from_secs(5)).expect("a v6 reply");
    verify_v6_reply(&reply, xid, &secrets).expect("decrypts to our CK");
    assert_eq!(r.wait_count(Family::V6, Outcome::Answered, 1), 1);
}

#[test]
fn unknown_thumbprint_and_garbage_get_silence() {
    let r = Running::start(false, |_| {});
    let (mut req, ..) = v4_request(2, false);
    // Thumbprint starts after the options' 43/len/1/len bytes; flip one byte of it.
    let pos = req.windows(2).position(|w| w == [1, 20]).unwrap() + 2;
    req[pos] ^= 0xff;
    r.send(&req);
    r.send(b"garbage");
    r.send(&[0u8; 0]);
    assert!(r.recv(Duration::from_millis(400)).is_none(), "silence");
    assert_eq!(r.wait_count(Family::V4, Outcome::UnknownCertificate, 1), 1);
    assert_eq!(r.wait_count(Family::V4, Outcome::NotNkpu, 2), 2);
    assert_eq!(r.count(Family::V4, Outcome::Answered), 0);
}

#[test]
fn corrupted_key_protector_is_answered_but_does_not_decrypt() {
    let r = Running::start(false, |_| {});
    let (req, xid, mac, secrets) = v4_request(3, true);
    r.send(&req);
    let reply = r.recv(Duration::from_secs(5)).expect("no-oracle: a reply");
    assert!(verify_v4_reply(&reply, xid, &mac, &secrets).is_err());
    assert_eq!(
        r.wait_count(Family::V4, Outcome::Answered, 1),
        1,
        "counted as answered"
    );
}

#[test]
fn one_client_over_its_rate_is_limited_others_are_not() {
    let r = Running::start(false, |c| {
        c.rate_limit = RateLimit {
            burst: 2,
            per_second: 0.01,
        };
    });
    let (req, ..) = v4_request(4, false);
    for _ in 0..4 {
        r.send(&req);
    }
    let (other, xid, mac, secrets) = v4_request(5, false);
    r.send(&other);
    assert_eq!(r.wait_count(Family::V4, Outcome::RateLimited, 2), 2);
    assert_eq!(r.wait_count(Family::V4, Outcome::Answered, 3), 3);
    let mut ok = 0;
    while let Some(d) = r.recv(Duration::from_millis(500)) {
        ok += usize::from(verify_v4_reply(&d, xid, &mac, &secrets).is_ok());
    }
    assert_eq!(ok, 1, "the other client got its answer");
}

#[test]
fn requests_older_than_max_age_are_dropped_not_answered_late() {
    let r = Running::start(false, |c| c.max_request_age = Duration::from_nanos(1));
    for i in 0..3 {
        r.send(&v4_request(10 + i, false).0);
    }
    assert_eq!(r.wait_count(Family::V4, Outcome::Expired, 3), 3);
    assert!(
        r.recv(Duration::from_millis(300)).is_none(),
        "nothing is sent late"
    );
    assert_eq!(r.count(Family::V4, Outcome::Answered), 0);
}

#[test]
fn a_full_queue_drops_and_counts() {
    let r = Running::start(false, |c| {
        c.queue_capacity = 1;
        c.workers = 1;
    });
    let n = 40u32;
    let reqs: Vec<_> = (0..n).map(|i| v4_request(100 + i, false).0).collect();
    for q in &reqs {
        r.send(q);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let total: u64 = Outcome::ALL.iter().map(|o| r.count(Family::V4, *o)).sum();
        if total >= u64::from(n) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let full = r.count(Family::V4, Outcome::QueueFull);
    let answered = r.count(Family::V4, Outcome::Answered);
    let expired = r.count(Family::V4, Outcome::Expired);
    assert!(
        full >= 1,
        "a 1-slot queue with one RSA worker overflows under a burst of {n}"
    );
    assert_eq!(
        full + answered + expired,
        u64::from(n),
        "every request has exactly one outcome"
    );
}

#[test]
fn datagrams_from_unserved_interfaces_are_ignored() {
    // Serve some interface other than loopback; traffic on lo is then not ours.
    let Some(other) = list_interfaces().unwrap().into_iter().find(|i| !i.loopback) else {
        eprintln!("SKIP: no non-loopback interface on this host");
        return;
    };
    let r = Running::start(false, |c| c.interfaces = vec![other.name.clone()]);
    r.send(&v4_request(6, false).0);
    assert!(r.recv(Duration::from_millis(400)).is_none());
    let total: u64 = Outcome::ALL.iter().map(|o| r.count(Family::V4, *o)).sum();
    assert_eq!(total, 0, "not counted either");
}
