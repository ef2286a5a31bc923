//! Client-side TLS for `ApiClient`: trust a CA/certificate PEM file, or pin the SHA-256 of the
//! appliance's self-generated certificate (no CA involved). Built on the aws-lc-rs provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::ClientError;
use crate::tls::{cert_sha256_hex, load_cert_chain, load_private_key, provider};

/// How the client decides that it talks to the right server.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// PEM file with the CA (or CA-issued chain) that signed the server certificate.
    CaFile(PathBuf),
    /// SHA-256 (hex, colons and case ignored) of the server's leaf certificate, e.g. of the
    /// self-generated escrow certificate (`openssl x509 -noout -fingerprint -sha256`).
    PinnedSha256(String),
}

/// Normalises a fingerprint typed by a human: strips `:`/spaces, lower-cases, checks length.
pub fn normalise_fingerprint(pin: &str) -> Result<String, ClientError> {
    let hexed: String = pin
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    if hexed.len() != 64 || !hexed.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ClientError::Config(format!(
            "the pinned server certificate SHA-256 must be 64 hex digits (got {} characters)",
            hexed.len()
        )));
    }
    Ok(hexed)
}

/// Builds the rustls client configuration; `identity` is the agent's certificate + key (PEM
/// files) for mutual TLS, `None` for operators.
pub fn client_tls_config(
    trust: &ServerTrust,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, ClientError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let builder = match trust {
        ServerTrust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_cert_chain(path).map_err(|e| ClientError::Config(e.to_string()))? {
                roots.add(cert).map_err(|e| {
                    ClientError::Config(format!(
                        "the CA file {} holds a certificate rustls cannot use as a root: {e}",
                        path.display()
                    ))
                })?;
            }
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ClientError::Config(e.to_string()))?;
            builder.with_webpki_verifier(verifier)
        }
        ServerTrust::PinnedSha256(pin) => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedServerCertVerifier {
                    pin: normalise_fingerprint(pin)?,
                    algorithms: provider.signature_verification_algorithms,
                }))
        }
    };
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = load_cert_chain(cert).map_err(|e| ClientError::Config(e.to_string()))?;
            let key = load_private_key(key).map_err(|e| ClientError::Config(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Config(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts exactly one server certificate (by SHA-256), whatever its names or issuer, and still
/// checks the handshake signature so the server proves it holds that certificate's key.
#[derive(Debug)]
pub struct PinnedServerCertVerifier {
    pin: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if cert_sha256_hex(end_entity.as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server certificate does not match the pinned SHA-256 fingerprint".into(),
            ))
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
