//! The accept loop in-process over real TLS: limits and shutdown. (The daemon-level behaviour is
//! covered by the e2e suite against the binary.)

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::*;
use crate::client::{ApiClient, ApiClientConfig, ServerTrust};
use crate::sealing::Kek;

struct Running {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    pin: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), EscrowError>>,
    registry: Registry,
}

async fn start(limits: ServerLimits) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("s.crt"), dir.path().join("s.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("e.db").display());
    let service = EscrowService::open(&url, Kek::generate()).await.unwrap();
    let registry = Registry::new();
    let config = EscrowServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: cert,
        tls_key: key,
        max_body_bytes: 4096,
        request_timeout: Duration::from_secs(5),
        database_url: url,
        stale_after: Duration::from_secs(86_400),
        unlock_window_days: None,
    };
    let server = EscrowServer::bind_with_limits(config, limits, service, &registry)
        .await
        .unwrap();
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    Running {
        _dir: dir,
        addr,
        pin: cert_sha256_hex(ck.cert.der()),
        shutdown,
        task,
        registry,
    }
}

fn client(r: &Running) -> ApiClient {
    ApiClient::new(&ApiClientConfig {
        base_url: format!("https://127.0.0.1:{}", r.addr.port()),
        trust: ServerTrust::PinnedSha256(r.pin.clone()),
        token: None,
        identity: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

#[tokio::test]
async fn serves_over_tls_and_stops_on_cancel() {
    let r = start(ServerLimits::default()).await;
    assert_eq!(client(&r).health().await.unwrap().status, "ok");
    let names: Vec<String> = r
        .registry
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    assert!(
        names.contains(&"netunlockd_escrow_requests_total".to_string()),
        "{names:?}"
    );
    r.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), r.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(r.addr).await.is_err(),
        "the listener is closed after run() returns"
    );
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_handshake_timeout() {
    let r = start(ServerLimits {
        handshake_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the server must close a connection that never starts TLS")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without data");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The server keeps serving others.
    assert_eq!(client(&r).health().await.unwrap().status, "ok");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let r = start(ServerLimits {
        max_connections: 1,
        handshake_timeout: Duration::from_millis(800),
        ..ServerLimits::default()
    })
    .await;
    // Occupy the only slot with a connection that never speaks TLS.
    let _hog = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    // Served only once the hog's handshake timeout frees the slot.
    assert_eq!(client(&r).health().await.unwrap().status, "ok");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served after {:?}, before the slot was free",
        started.elapsed()
    );
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let r = start(ServerLimits {
        max_connections_per_client: 2,
        handshake_timeout: Duration::from_secs(5),
        ..ServerLimits::default()
    })
    .await;
    let from = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let addr = r.addr;
        async move {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::new(ip, 0)).unwrap();
            s.connect(addr).await.unwrap()
        }
    };
    // Two idle connections from one host fill its share.
    let _hog1 = from("127.0.0.1").await;
    let hog2 = from("127.0.0.1").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A third from that host is closed at once…
    let mut third = from("127.0.0.1").await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf))
        .await
        .expect("the server closes a connection over the per-address cap at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // …while another host's connection is accepted and waits for its TLS handshake.
    let mut other = from("127.0.0.2").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), other.read(&mut buf))
            .await
            .is_err(),
        "a connection from another address must stay open"
    );
    // A slot given back serves that host again.
    drop(hog2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client(&r).health().await.unwrap().status, "ok");
}
