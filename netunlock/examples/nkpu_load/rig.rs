//! The test rig: two namespaces, the responder running in one, a raw client socket in the other, and
//! the helpers every scenario shares.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use netunlock::client::{ClientSecrets, V4ClientParams, build_v4_request, new_key_protector};
use netunlock::responder::pktinfo::send_v4;
use netunlock::responder::{
    Family, Hooks, NetunlockMetrics, Outcome, RateLimit, Responder, ResponderConfig,
};
use netunlock::{CertificatePolicy, KP_LEN, KeyStore, RejectionSecret, UnlockKey};
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use crate::netns::{self, CLIENT_IF, SERVER_IF, TestNet};

pub(crate) const LATE: Duration = Duration::from_secs(2);

/// The certificate, its key and a key store for it.
pub(crate) struct Keys {
    pub identity: Arc<certs::UnlockIdentity>,
    pub cert_der: Vec<u8>,
    pub thumbprint: [u8; 20],
    pub store: Arc<KeyStore>,
    _dir: tempfile::TempDir,
}

impl Keys {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let generated = certs::generate_unlock_certificate("nkpu-load", 30).expect("generate");
        let files = certs::write_unlock_files(dir.path(), "load", &generated).expect("write");
        let identity = Arc::new(
            certs::load_unlock_identity(&files.cert_pem, Some(&files.key), None).expect("load"),
        );
        let secret = RejectionSecret::generate().expect("rng");
        let key = UnlockKey::new(identity.clone(), &secret);
        let store = Arc::new(
            KeyStore::new(vec![(key, CertificatePolicy::allow_all())]).expect("key store"),
        );
        Self {
            identity,
            cert_der: generated.cert_der.clone(),
            thumbprint: generated.thumbprint,
            store,
            _dir: dir,
        }
    }

    /// Raw RSA-2048 PKCS#1 v1.5 decryptions per second on `threads` threads (aws-lc-rs).
    pub fn raw_rsa(&self, threads: usize, for_: Duration) -> f64 {
        let key =
            aws_lc_rs::rsa::Pkcs1PrivateDecryptingKey::new(self.identity.decrypting_key().clone())
                .expect("pkcs1 key");
        let (_, kp) = new_key_protector(&self.cert_der).expect("kp");
        let start = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut out = [0u8; KP_LEN];
                        let mut n = 0u64;
                        while start.elapsed() < for_ {
                            key.decrypt(&kp[..], &mut out).expect("decrypt");
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        total as f64 / start.elapsed().as_secs_f64()
    }
}

/// One prepared client request.
pub(crate) struct Client {
    pub addr: Ipv4Addr,
    pub xid: u32,
    pub mac: [u8; 6],
    pub secrets: ClientSecrets,
    pub request: Vec<u8>,
}

impl Client {
    pub fn new(keys: &Keys, index: u32, addr: Ipv4Addr) -> Self {
        let (secrets, kp) = new_key_protector(&keys.cert_der).expect("key protector");
        let xid = 0x4c00_0000 | index;
        let b = index.to_be_bytes();
        let mac = [0x02, 0x4c, b[0], b[1], b[2], b[3]];
        let params = V4ClientParams {
            xid,
            mac,
            ciaddr: addr,
            giaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            lease_options: true,
            message_type: None,
        };
        Self {
            addr,
            xid,
            mac,
            secrets,
            request: build_v4_request(&params, &keys.thumbprint, &kp),
        }
    }
}

/// The `n`-th extra client address: 10.88.1.0 onwards (the client side holds 10.88.0.0/16).
pub(crate) fn client_addr(n: usize) -> Ipv4Addr {
    let n = u32::try_from(n).expect("client index") + 256;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 88, 0, 0)) + n)
}

/// Adds `n` client addresses in one `ip -batch` call.
pub(crate) fn add_client_addrs(net: &TestNet, n: usize) {
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!("addr add {}/32 dev {CLIENT_IF}\n", client_addr(i)));
    }
    let path = std::env::temp_dir().join(format!("nkpu-load-{}.batch", std::process::id()));
    std::fs::write(&path, batch).expect("write batch");
    net.exec(
        &net.client,
        &["ip", "-batch", path.to_str().expect("utf-8 path")],
    );
    let _ = std::fs::remove_file(path);
}

/// The responder running in the server namespace.
pub(crate) struct Server {
    pub metrics: Arc<NetunlockMetrics>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(net: &TestNet, keys: &Keys, workers: usize, rate_limit: RateLimit) -> Self {
        let mut config = ResponderConfig::with_defaults(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
        config.interfaces = vec![SERVER_IF.into()];
        config.v6_port = None;
        config.workers = workers;
        config.queue_capacity = 16_384;
        config.rate_limit = rate_limit;
        config.recv_buffer_bytes = 16 << 20;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let server = net.server.clone();
        let store = keys.store.clone();
        let thread = std::thread::spawn(move || {
            netns::enter(&server);
            let registry = prometheus::Registry::new();
            let metrics = NetunlockMetrics::register(&registry).expect("metrics");
            let responder = Responder::bind(
                config,
                Arc::new(ArcSwap::new(store)),
                metrics.clone(),
                Hooks::default(),
            )
            .expect("bind responder");
            tx.send(metrics).expect("send");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(responder.run(token)).expect("responder");
        });
        let metrics = rx.recv_timeout(Duration::from_secs(10)).expect("started");
        Self {
            metrics,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn count(&self, o: Outcome) -> u64 {
        self.metrics.requests(Family::V4, o)
    }

    pub fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            t.join().expect("responder thread");
        }
    }
}

/// The client socket: 0.0.0.0:68 on the client veth; each datagram is sent from its client's own
/// address (IP_PKTINFO), and every reply to any client address:68 arrives here.
pub(crate) fn client_socket() -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    s.set_reuse_address(true).expect("reuse");
    s.bind_device(Some(CLIENT_IF.as_bytes())).expect("device");
    s.set_broadcast(true).expect("broadcast");
    let _ = s.set_recv_buffer_size(16 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
        .expect("IP_PKTINFO");
    // Reply arrival = the kernel's receive timestamp, so the receiver thread's own scheduling delay on
    // a busy machine is not counted as server latency.
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
        .expect("SO_TIMESTAMPNS");
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())
        .expect("bind client port");
    s.into()
}

/// Sends `datagram` to the server's broadcast port from `from` (a client address).
pub(crate) fn send_from(sock: &UdpSocket, datagram: &[u8], from: Ipv4Addr) {
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    for _ in 0..100 {
        match send_v4(sock.as_fd(), datagram, to, 0, from) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            _ => return,
        }
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
