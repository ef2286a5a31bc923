//! Generation of the Network Unlock certificate (RSA-2048, aws-lc-rs key, rcgen certificate).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256, SerialNumber,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::error::CertError;
use crate::thumbprint::thumbprint;

pub const NETWORK_UNLOCK_EKU: &str = "1.3.6.1.4.1.311.67.1.1";
pub(crate) const NETWORK_UNLOCK_EKU_ARCS: [u64; 10] = [1, 3, 6, 1, 4, 1, 311, 67, 1, 1];
/// Microsoft Application Policies extension (szOID_APPLICATION_CERT_POLICIES).
pub const APPLICATION_POLICIES_OID: &str = "1.3.6.1.4.1.311.21.10";
const APPLICATION_POLICIES_ARCS: [u64; 9] = [1, 3, 6, 1, 4, 1, 311, 21, 10];
/// SEQUENCE { SEQUENCE { OID 1.3.6.1.4.1.311.67.1.1 } } — ms-nkpu.md §6.1.
const APPLICATION_POLICIES_VALUE: [u8; 16] = [
    0x30, 0x0e, 0x30, 0x0c, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x43, 0x01, 0x01,
];

/// A freshly generated Network Unlock certificate and its key.
pub struct GeneratedUnlockCert {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pkcs8_pem: Zeroizing<String>,
    pub thumbprint: [u8; 20],
}

impl std::fmt::Debug for GeneratedUnlockCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedUnlockCert")
            .field("thumbprint", &hex::encode(self.thumbprint))
            .finish_non_exhaustive()
    }
}

pub(crate) fn gen_err(reason: impl Into<String>) -> CertError {
    CertError::Generate {
        reason: reason.into(),
    }
}

/// Validity window starting now (truncated to whole seconds, as X.509 stores them).
pub(crate) fn validity(validity_days: u32) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
    if validity_days == 0 {
        return Err(CertError::InvalidParameter {
            what: "validity_days".into(),
            reason: "must be at least 1".into(),
        });
    }
    let now = OffsetDateTime::now_utc();
    let not_before = now
        .replace_nanosecond(0)
        .map_err(|e| gen_err(e.to_string()))?;
    let not_after = not_before
        .checked_add(Duration::days(i64::from(validity_days)))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| CertError::InvalidParameter {
            what: "validity_days".into(),
            reason: format!("{validity_days} days reaches past the year 9999"),
        })?;
    Ok((not_before, not_after))
}

/// A random positive 16-byte serial number (RFC 5280 allows up to 20 octets).
pub(crate) fn random_serial() -> Result<SerialNumber, CertError> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| gen_err("the system random generator failed"))?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01; // never a leading zero octet, so the encoding length is fixed
    Ok(SerialNumber::from_slice(&serial))
}

pub(crate) fn check_common_name(common_name: &str) -> Result<(), CertError> {
    if common_name.trim().is_empty()
        || common_name.len() > 64
        || common_name.chars().any(char::is_control)
    {
        return Err(CertError::InvalidParameter {
            what: "common name".into(),
            reason: "must be 1 to 64 printable characters".into(),
        });
    }
    Ok(())
}

/// Generates an RSA-2048 key (aws-lc-rs) and a self-signed Network Unlock certificate (rcgen) with
/// KeyUsage keyEncipherment (critical), EKU 1.3.6.1.4.1.311.67.1.1 and the MS Application Policies
/// extension, valid for `validity_days` from now.
pub fn generate_unlock_certificate(
    common_name: &str,
    validity_days: u32,
) -> Result<GeneratedUnlockCert, CertError> {
    let (not_before, not_after) = validity(validity_days)?;
    generate_unlock_certificate_valid(common_name, not_before, not_after)
}

/// Like [`generate_unlock_certificate`] with an explicit validity window, which may lie in the past
/// or the future (tests of expired and not-yet-valid certificates use it).
pub fn generate_unlock_certificate_valid(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<GeneratedUnlockCert, CertError> {
    check_common_name(common_name)?;
    if not_after <= not_before {
        return Err(CertError::InvalidParameter {
            what: "validity".into(),
            reason: "notAfter must be later than notBefore".into(),
        });
    }

    let rsa = RsaKeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| gen_err("RSA-2048 key generation failed"))?;
    let pkcs8 = rsa
        .as_der()
        .map_err(|_| gen_err("cannot encode the RSA key as PKCS#8"))?;
    let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
    let signing_key = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
        &PKCS_RSA_SHA256,
    )
    .map_err(|e| gen_err(format!("rcgen rejected the RSA key: {e}")))?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    // rcgen always marks KeyUsage critical, as the Windows template requires.
    params.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(
        NETWORK_UNLOCK_EKU_ARCS.to_vec(),
    )];
    params.custom_extensions = vec![CustomExtension::from_oid_content(
        &APPLICATION_POLICIES_ARCS,
        APPLICATION_POLICIES_VALUE.to_vec(),
    )];

    let cert = params
        .self_signed(&signing_key)
        .map_err(|e| gen_err(format!("cannot sign the certificate: {e}")))?;
    let cert_der = cert.der().to_vec();
    Ok(GeneratedUnlockCert {
        thumbprint: thumbprint(&cert_der),
        cert_pem: cert.pem(),
        key_pkcs8_pem: Zeroizing::new(signing_key.serialize_pem()),
        cert_der,
    })
}
