use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::client::{ServerTrust, client_tls_config};

pub(super) struct Pair {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) der: Vec<u8>,
}

pub(super) fn write_pair(dir: &Path, name: &str) -> Pair {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Pair {
        cert,
        key,
        der: ck.cert.der().to_vec(),
    }
}

/// Accepts one TLS connection, answers with the SHA-256 of the client certificate (or "none").
async fn serve_one(listener: &TcpListener, reloader: &TlsReloader) -> Result<(), String> {
    serve_with(listener, reloader.acceptor()).await
}

/// `serve_one` with a given acceptor (e.g. a configuration limited to one TLS version).
pub(super) async fn serve_with(
    listener: &TcpListener,
    acceptor: TlsAcceptor,
) -> Result<(), String> {
    let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
    let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| cert_sha256_hex(c.as_ref()))
        .unwrap_or_else(|| "none".into());
    tls.write_all(peer.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    tls.shutdown().await.map_err(|e| e.to_string())
}

pub(super) async fn connect(
    addr: std::net::SocketAddr,
    config: rustls::ClientConfig,
) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tls.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out)
}

pub(super) fn pinned(der: &[u8]) -> ServerTrust {
    ServerTrust::PinnedSha256(cert_sha256_hex(der))
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_connections_without_rebinding() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_pair(dir.path(), "a");
    let b = write_pair(dir.path(), "b");
    let live_cert = dir.path().join("live.crt");
    let live_key = dir.path().join("live.key");
    std::fs::copy(&a.cert, &live_cert).unwrap();
    std::fs::copy(&a.key, &live_key).unwrap();

    let reloader = TlsReloader::new(&live_cert, &live_key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let client_a = client_tls_config(&pinned(&a.der), None).unwrap();
    let client_b = client_tls_config(&pinned(&b.der), None).unwrap();

    let (srv, cli) = tokio::join!(
        serve_one(&listener, &reloader),
        connect(addr, client_a.clone())
    );
    srv.unwrap();
    assert_eq!(cli.unwrap(), "none", "no client certificate was presented");

    std::fs::copy(&b.cert, &live_cert).unwrap();
    std::fs::copy(&b.key, &live_key).unwrap();
    reloader.reload().unwrap();

    // Same listener: a client pinned to the old certificate is refused, the new pin works.
    let (srv, cli) = tokio::join!(serve_one(&listener, &reloader), connect(addr, client_a));
    assert!(srv.is_err());
    let err = cli.unwrap_err();
    assert!(err.contains("pinned"), "{err}");
    let (srv, cli) = tokio::join!(serve_one(&listener, &reloader), connect(addr, client_b));
    srv.unwrap();
    assert_eq!(cli.unwrap(), "none");
}

#[tokio::test]
async fn a_failed_reload_keeps_the_previous_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_pair(dir.path(), "a");
    let reloader = TlsReloader::new(&a.cert, &a.key).unwrap();
    std::fs::write(&a.key, "not a key").unwrap();
    let err = reloader.reload().unwrap_err();
    assert!(
        matches!(&err, EscrowError::Io(m) if m.contains("private key")),
        "{err}"
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = client_tls_config(&pinned(&a.der), None).unwrap();
    let (srv, cli) = tokio::join!(serve_one(&listener, &reloader), connect(addr, client));
    srv.unwrap();
    assert_eq!(cli.unwrap(), "none");
}

#[test]
fn unusable_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_pair(dir.path(), "a");
    let missing = dir.path().join("missing.crt");
    assert!(matches!(
        TlsReloader::new(&missing, &a.key).unwrap_err(),
        TlsError::Certificate { .. }
    ));
    let empty = dir.path().join("empty.crt");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(
        TlsReloader::new(&empty, &a.key).unwrap_err(),
        TlsError::NoCertificate { .. }
    ));
    let b = write_pair(dir.path(), "b");
    let err = TlsReloader::new(&a.cert, &b.key).unwrap_err();
    assert!(matches!(err, TlsError::Config(_)), "{err}");
}

#[tokio::test]
async fn a_client_certificate_is_optional_and_its_hash_is_visible_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = write_pair(dir.path(), "server");
    let agent = write_pair(dir.path(), "agent");
    let reloader = TlsReloader::new(&server.cert, &server.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = client_tls_config(&pinned(&server.der), Some((&agent.cert, &agent.key))).unwrap();
    let (srv, cli) = tokio::join!(serve_one(&listener, &reloader), connect(addr, client));
    srv.unwrap();
    assert_eq!(cli.unwrap(), cert_sha256_hex(&agent.der));
}

/// Presents certificate A but signs the handshake with key B: the stolen-certificate case.
#[derive(Debug)]
pub(super) struct WrongKeyResolver(pub(super) Arc<CertifiedKey>);

impl ResolvesClientCert for WrongKeyResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_client_certificate_without_its_private_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = write_pair(dir.path(), "server");
    let victim = rcgen::generate_simple_self_signed(vec!["victim".to_string()]).unwrap();
    let attacker = rcgen::KeyPair::generate().unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(attacker.serialize_der()));
    let signer = provider().key_provider.load_private_key(key).unwrap();
    let certified = CertifiedKey::new(
        vec![CertificateDer::from(victim.cert.der().to_vec())],
        signer,
    );

    let mut client = client_tls_config(&pinned(&server.der), None).unwrap();
    client.client_auth_cert_resolver = Arc::new(WrongKeyResolver(Arc::new(certified)));

    let reloader = TlsReloader::new(&server.cert, &server.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (srv, cli) = tokio::join!(serve_one(&listener, &reloader), connect(addr, client));
    let err = srv.unwrap_err();
    assert!(err.to_lowercase().contains("signature"), "{err}");
    assert!(cli.is_err());
}

#[tokio::test]
async fn a_malformed_client_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = write_pair(dir.path(), "server");
    let attacker = rcgen::KeyPair::generate().unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(attacker.serialize_der()));
    let signer = provider().key_provider.load_private_key(key).unwrap();
    let certified = CertifiedKey::new(
        vec![CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])],
        signer,
    );
    let mut client = client_tls_config(&pinned(&server.der), None).unwrap();
    client.client_auth_cert_resolver = Arc::new(WrongKeyResolver(Arc::new(certified)));

    let reloader = TlsReloader::new(&server.cert, &server.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (srv, cli) = tokio::join!(serve_one(&listener, &reloader), connect(addr, client));
    assert!(srv.unwrap_err().to_lowercase().contains("encoding"));
    assert!(cli.is_err());
}

#[test]
fn fingerprints_are_normalised() {
    let hexed = "AB:".repeat(31) + "AB";
    assert_eq!(
        crate::client::normalise_fingerprint(&hexed).unwrap(),
        "ab".repeat(32)
    );
    assert!(crate::client::normalise_fingerprint("abcd").is_err());
}
