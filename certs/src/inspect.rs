//! Operator-facing inspection of a certificate: what it is and what is wrong with it for Network Unlock.

use std::fmt;
use std::path::Path;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::der::{parse_application_policies, parse_oid_sequence};
use crate::error::{CertError, in_memory};
use crate::generate::{APPLICATION_POLICIES_OID, NETWORK_UNLOCK_EKU};
use crate::identity::{asn1_time, describe_public_key, parse_cert};
use crate::pfx;
use crate::source::{is_der_certificate, looks_like_pem, pem_certificates, read_file};
use crate::thumbprint::thumbprint_hex;

/// Certificates expiring sooner than this get a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub thumbprint_hex: String,
    pub subject: String,
    pub issuer: String,
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub key_algorithm: String,
    pub key_bits: Option<usize>,
    pub extended_key_usages: Vec<String>,
    pub application_policies: Vec<String>,
    pub key_encipherment: bool,
    pub warnings: Vec<String>,
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.iter()
            .map(|o| match o.as_str() {
                NETWORK_UNLOCK_EKU => format!("{o} (BitLocker Network Unlock)"),
                "1.3.6.1.5.5.7.3.1" => format!("{o} (serverAuth)"),
                "1.3.6.1.5.5.7.3.2" => format!("{o} (clientAuth)"),
                _ => o.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Thumbprint (SHA-1):   {}", self.thumbprint_hex)?;
        writeln!(f, "Subject:              {}", self.subject)?;
        writeln!(f, "Issuer:               {}", self.issuer)?;
        writeln!(f, "Serial:               {}", self.serial_hex)?;
        writeln!(f, "Valid from:           {}", fmt_time(self.not_before))?;
        writeln!(f, "Valid until:          {}", fmt_time(self.not_after))?;
        match self.key_bits {
            Some(b) => writeln!(f, "Public key:           {} {b}-bit", self.key_algorithm)?,
            None => writeln!(f, "Public key:           {}", self.key_algorithm)?,
        }
        writeln!(
            f,
            "Extended key usages:  {}",
            list(&self.extended_key_usages)
        )?;
        writeln!(
            f,
            "Application policies: {}",
            list(&self.application_policies)
        )?;
        writeln!(
            f,
            "Key encipherment:     {}",
            if self.key_encipherment { "yes" } else { "no" }
        )?;
        if self.warnings.is_empty() {
            write!(f, "Network Unlock:       suitable")
        } else {
            write!(f, "Warnings:")?;
            for w in &self.warnings {
                write!(f, "\n  - {w}")?;
            }
            Ok(())
        }
    }
}

/// Reads a certificate from PEM (first certificate), DER, or a PKCS#12 file without password.
pub fn read_certificate_der(path: &Path) -> Result<Vec<u8>, CertError> {
    read_certificate_der_with_password(path, None)
}

/// As [`read_certificate_der`], with the password of a PKCS#12 file (None = empty). For a .pfx the
/// certificate returned is the one matching the private key when there is one, else the first.
pub fn read_certificate_der_with_password(
    path: &Path,
    pfx_password: Option<&str>,
) -> Result<Vec<u8>, CertError> {
    let bytes = read_file(path)?;
    if looks_like_pem(&bytes) {
        return pem_certificates(&bytes, path)?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::NoCertificate {
                path: path.to_path_buf(),
            });
    }
    if is_der_certificate(&bytes) {
        return Ok(bytes.to_vec());
    }
    if pfx::looks_like_pfx(&bytes) {
        if let Ok(id) = crate::load_unlock_identity(path, None, pfx_password) {
            return Ok(id.cert_der().to_vec());
        }
        let contents = pfx::open(&bytes, pfx_password, path)?;
        return contents
            .certs
            .into_iter()
            .next()
            .ok_or_else(|| CertError::NoCertificate {
                path: path.to_path_buf(),
            });
    }
    Err(CertError::NoCertificate {
        path: path.to_path_buf(),
    })
}

/// Describes a certificate and lists what would stop it working for Network Unlock at `now`.
pub fn inspect_certificate(cert_der: &[u8], now: OffsetDateTime) -> Result<Inspection, CertError> {
    let path = in_memory();
    let cert = parse_cert(cert_der, &path)?;
    let validity = cert.validity();
    let not_before = asn1_time(validity.not_before.timestamp(), &path)?;
    let not_after = asn1_time(validity.not_after.timestamp(), &path)?;
    let (key_algorithm, key_bits) = describe_public_key(cert.public_key());

    let mut extended_key_usages = Vec::new();
    let mut application_policies = Vec::new();
    let mut key_usage_present = false;
    let mut key_encipherment = false;
    let mut warnings = Vec::new();
    for ext in cert.extensions() {
        match ext.oid.to_id_string().as_str() {
            "2.5.29.37" => match parse_oid_sequence(ext.value) {
                Some(v) => extended_key_usages = v,
                None => warnings.push("the extended key usage extension is malformed".into()),
            },
            APPLICATION_POLICIES_OID => match parse_application_policies(ext.value) {
                Some(v) => application_policies = v,
                None => warnings.push("the application policies extension is malformed".into()),
            },
            "2.5.29.15" => {
                key_usage_present = true;
                // KeyUsage BIT STRING: content = unused-bits octet, then bits; keyEncipherment is bit 2.
                key_encipherment = match crate::der::read_tlv(ext.value) {
                    Some((t, _)) if t.tag == 0x03 => {
                        t.content.get(1).is_some_and(|b| b & 0x20 != 0)
                    }
                    _ => false,
                };
                if key_encipherment && !ext.critical {
                    warnings.push("the key usage extension is not marked critical (the Windows template marks it critical)".into());
                }
            }
            _ => {}
        }
    }

    if !(key_algorithm == "RSA" && key_bits == Some(2048)) {
        warnings.push(match key_bits {
            Some(b) => {
                format!("the key is {key_algorithm} {b}-bit; Network Unlock needs RSA 2048-bit")
            }
            None => format!("the key is {key_algorithm}; Network Unlock needs RSA 2048-bit"),
        });
    }
    if !extended_key_usages.iter().any(|o| o == NETWORK_UNLOCK_EKU) {
        warnings.push(format!(
            "no BitLocker Network Unlock extended key usage ({NETWORK_UNLOCK_EKU})"
        ));
    }
    if !key_encipherment {
        warnings.push(if key_usage_present {
            "key usage does not allow keyEncipherment".into()
        } else {
            "no key usage extension (keyEncipherment expected)".into()
        });
    }
    if now > not_after {
        warnings.push(format!("expired on {}", fmt_time(not_after)));
    } else if now < not_before {
        warnings.push(format!("not valid before {}", fmt_time(not_before)));
    } else if not_after - now < Duration::days(EXPIRY_WARNING_DAYS) {
        warnings.push(format!(
            "expires in less than {EXPIRY_WARNING_DAYS} days ({}); prepare a new certificate and load both during the change-over",
            fmt_time(not_after)
        ));
    }

    Ok(Inspection {
        thumbprint_hex: thumbprint_hex(cert_der),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial_hex: hex::encode(cert.raw_serial()),
        not_before,
        not_after,
        key_algorithm,
        key_bits,
        extended_key_usages,
        application_policies,
        key_encipherment,
        warnings,
    })
}
