//! The client keys the Windows agent creates, against the escrow client-certificate verifier:
//! ECDSA P-256 (its first choice, in the TPM) over TLS 1.3 and 1.2, and an RSA key that can only
//! make PKCS#1 v1.5 signatures — what many TPMs offer — which works over TLS 1.2 and cannot
//! authenticate over TLS 1.3 (RSA-PSS only). That last case is why the agent limits RSA client
//! keys to TLS 1.2.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, PKCS_RSA_SHA256,
};
use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::version::{TLS12, TLS13};
use rustls::{SignatureAlgorithm, SupportedProtocolVersion};
use tokio::net::TcpListener;

use super::tests::{WrongKeyResolver, connect, pinned, serve_with, write_pair};
use super::*;
use crate::client::client_tls_config;

/// The production listener's configuration, limited to one TLS version.
fn acceptor_for(
    cert: &Path,
    key: &Path,
    version: &'static SupportedProtocolVersion,
) -> TlsAcceptor {
    let provider = provider();
    let verifier = Arc::new(SelfSignedClientCertVerifier::new(&provider));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            load_cert_chain(cert).unwrap(),
            load_private_key(key).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// What the server saw as client certificate ("none" or its SHA-256), or the handshake error.
async fn handshake(
    version: &'static SupportedProtocolVersion,
    client_key: Arc<CertifiedKey>,
) -> (Result<(), String>, Result<String, String>) {
    let dir = tempfile::tempdir().unwrap();
    let server = write_pair(dir.path(), "server");
    let acceptor = acceptor_for(&server.cert, &server.key, version);
    let mut client = client_tls_config(&pinned(&server.der), None).unwrap();
    client.client_auth_cert_resolver = Arc::new(WrongKeyResolver(client_key));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::join!(serve_with(&listener, acceptor), connect(addr, client))
}

/// A certificate shaped like the agent's New-SelfSignedCertificate call: CN with the computer
/// name, EKU clientAuth, key usage digitalSignature, ten years.
fn agent_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "netunlockd-agent SRV-DB-01");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    params
}

fn signer(key_pkcs8: Vec<u8>) -> Arc<dyn SigningKey> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    provider().key_provider.load_private_key(key).unwrap()
}

fn ecdsa_p256_agent() -> (Vec<u8>, Arc<dyn SigningKey>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = agent_params().self_signed(&key).unwrap();
    (cert.der().to_vec(), signer(key.serialize_der()))
}

fn rsa_2048_agent() -> (Vec<u8>, Arc<dyn SigningKey>) {
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = rsa.as_der().unwrap().as_ref().to_vec();
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.clone()),
        &PKCS_RSA_SHA256,
    )
    .unwrap();
    let cert = agent_params().self_signed(&key).unwrap();
    (cert.der().to_vec(), signer(pkcs8))
}

/// An RSA key that signs only with PKCS#1 v1.5, like a TPM without RSA-PSS.
#[derive(Debug)]
struct Pkcs1Only(Arc<dyn SigningKey>);

impl SigningKey for Pkcs1Only {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let pkcs1: Vec<SignatureScheme> = offered
            .iter()
            .copied()
            .filter(|s| {
                matches!(
                    s,
                    SignatureScheme::RSA_PKCS1_SHA256
                        | SignatureScheme::RSA_PKCS1_SHA384
                        | SignatureScheme::RSA_PKCS1_SHA512
                )
            })
            .collect();
        self.0.choose_scheme(&pkcs1)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.0.algorithm()
    }
}

fn key_for(der: &[u8], signer: Arc<dyn SigningKey>) -> Arc<CertifiedKey> {
    Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(der.to_vec())],
        signer,
    ))
}

#[tokio::test]
async fn an_ecdsa_p256_client_certificate_is_accepted_over_tls13_and_tls12() {
    for version in [&TLS13, &TLS12] {
        let (der, signer) = ecdsa_p256_agent();
        let (srv, cli) = handshake(version, key_for(&der, signer)).await;
        srv.unwrap_or_else(|e| panic!("{version:?}: server: {e}"));
        assert_eq!(
            cli.unwrap_or_else(|e| panic!("{version:?}: client: {e}")),
            cert_sha256_hex(&der),
            "{version:?}: the server must see the agent's certificate"
        );
    }
}

#[tokio::test]
async fn an_rsa_client_key_is_accepted_over_tls13_and_tls12() {
    for version in [&TLS13, &TLS12] {
        let (der, signer) = rsa_2048_agent();
        let (srv, cli) = handshake(version, key_for(&der, signer)).await;
        srv.unwrap_or_else(|e| panic!("{version:?}: server: {e}"));
        assert_eq!(cli.unwrap(), cert_sha256_hex(&der), "{version:?}");
    }
}

#[tokio::test]
async fn an_rsa_key_limited_to_pkcs1_signatures_authenticates_over_tls12() {
    let (der, signer) = rsa_2048_agent();
    let (srv, cli) = handshake(&TLS12, key_for(&der, Arc::new(Pkcs1Only(signer)))).await;
    srv.unwrap();
    assert_eq!(cli.unwrap(), cert_sha256_hex(&der));
}

#[tokio::test]
async fn an_rsa_key_limited_to_pkcs1_signatures_cannot_authenticate_over_tls13() {
    // TLS 1.3 allows only RSA-PSS for handshake signatures: such a key (many TPMs) cannot prove
    // itself, so the agent caps RSA client keys at TLS 1.2.
    let (der, signer) = rsa_2048_agent();
    let (srv, cli) = handshake(&TLS13, key_for(&der, Arc::new(Pkcs1Only(signer)))).await;
    let seen = match (srv, cli) {
        (Ok(()), Ok(seen)) => seen,
        (srv, cli) => format!("handshake failed: {srv:?} {cli:?}"),
    };
    assert_ne!(seen, cert_sha256_hex(&der), "PKCS#1 cannot sign TLS 1.3");
}
