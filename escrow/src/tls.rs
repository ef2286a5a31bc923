//! TLS for the escrow listener: a rustls `ServerConfig` built on the aws-lc-rs provider (passed
//! explicitly, never the process default), optional client certificates proven by the handshake
//! signature, and a hot-reloadable configuration shared with the accept loop.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use crate::error::EscrowError;

/// Why the TLS configuration could not be built or reloaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read TLS certificate file {path}: {reason}; check tls_cert in the [escrow] config"
    )]
    Certificate { path: PathBuf, reason: String },
    #[error(
        "TLS certificate file {path} holds no certificate; give it the server certificate (chain) in PEM"
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "cannot read TLS private key file {path}: {reason}; give it a PKCS#8, PKCS#1 or SEC1 PEM key"
    )]
    PrivateKey { path: PathBuf, reason: String },
    #[error(
        "the TLS certificate and private key do not go together (or the key type is unsupported): {0}"
    )]
    Config(String),
}

impl From<TlsError> for EscrowError {
    fn from(e: TlsError) -> Self {
        Self::Io(e.to_string())
    }
}

/// The crypto provider every escrow TLS object uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Lower-case hex SHA-256 of a DER certificate: the identity a device binds at enrollment.
pub fn cert_sha256_hex(der: &[u8]) -> String {
    certs::sha256_fingerprint_hex(der)
}

/// Reads the certificate chain (PEM, or one DER certificate) with the project's certificate
/// loader, so `config check` and the listener accept exactly the same files.
pub fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs::load_certificate_chain(path).map_err(|e| match e {
        certs::CertError::NoCertificate { .. } => TlsError::NoCertificate {
            path: path.to_owned(),
        },
        other => TlsError::Certificate {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// Reads the private key (the error never includes key bytes).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    certs::load_private_key(path).map_err(|e| TlsError::PrivateKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Builds the server configuration: TLS 1.2 + 1.3, ALPN http/1.1, optional client certificates.
pub fn build_server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = load_cert_chain(cert)?;
    let key = load_private_key(key)?;
    let provider = provider();
    let verifier = Arc::new(SelfSignedClientCertVerifier::new(&provider));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any well-formed client certificate (agents use self-signed ones, possibly TPM-backed)
/// but only after the handshake signature proves the client holds its private key. Identity is
/// then decided by the SHA-256 binding made at enrollment, not by a CA. Client certificates are
/// optional: operators authenticate with bearer tokens and present none.
#[derive(Debug)]
pub struct SelfSignedClientCertVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl SelfSignedClientCertVerifier {
    pub fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for SelfSignedClientCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Expiry is deliberately not checked: the binding is the certificate hash, and an agent
        // whose self-signed certificate lapsed must still be able to reach the server to re-enroll.
        match x509_parser::parse_x509_certificate(end_entity.as_ref()) {
            Ok((&[], _)) => Ok(ClientCertVerified::assertion()),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Holds the live server configuration; each new connection takes the current one, so a reload
/// (SIGHUP, renewed certificate) never restarts the listener or drops open connections.
#[derive(Clone)]
pub struct TlsReloader {
    current: Arc<ArcSwap<ServerConfig>>,
    cert: PathBuf,
    key: PathBuf,
}

impl fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsReloader")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// Loads the certificate and key now; fails if they are unusable.
    pub fn new(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let config = build_server_config(cert, key)?;
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(config)),
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Re-reads the certificate and key files; on error the previous configuration stays live.
    pub fn reload(&self) -> Result<(), EscrowError> {
        let config = build_server_config(&self.cert, &self.key)?;
        self.current.store(Arc::new(config));
        tracing::info!(cert = %self.cert.display(), "escrow TLS certificate reloaded");
        Ok(())
    }

    /// An acceptor for one new connection, using the configuration current at this moment.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod agent_key_tests;
