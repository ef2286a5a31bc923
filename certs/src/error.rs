//! Errors of the certs crate. Every message names the file and says what the operator can do.

use std::path::PathBuf;

/// Label used in place of a path when the material came from memory rather than a file.
pub(crate) const IN_MEMORY: &str = "(in-memory data)";

pub(crate) fn in_memory() -> PathBuf {
    PathBuf::from(IN_MEMORY)
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {}: {source}; check the path and that netunlockd may read it", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{} contains no certificate; expected a PEM file with a 'BEGIN CERTIFICATE' block, a DER certificate (.cer) or a PKCS#12 file (.pfx/.p12)",
        path.display()
    )]
    NoCertificate { path: PathBuf },

    #[error("{} holds an invalid certificate ({reason}); export it again (DER or Base-64 .cer, or .pfx)", path.display())]
    InvalidCertificate { path: PathBuf, reason: String },

    #[error(
        "{} is a certificate without its private key; give the key file as well (PKCS#8 or PKCS#1 PEM, or PKCS#8 DER), or use a .pfx that contains the key",
        path.display()
    )]
    KeyRequired { path: PathBuf },

    #[error(
        "{} contains no private key; expected PEM 'BEGIN PRIVATE KEY' or 'BEGIN RSA PRIVATE KEY', or PKCS#8 DER",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },

    #[error("{} holds an unusable private key ({reason}); export the key again as PKCS#8 PEM", path.display())]
    InvalidKey { path: PathBuf, reason: String },

    #[error(
        "{}: Network Unlock needs an RSA 2048-bit key, found {found}; create a suitable certificate with `netunlockd certs new-unlock`",
        path.display()
    )]
    NotRsa2048 { path: PathBuf, found: String },

    #[error(
        "the private key {} does not belong to the certificate {}; give the key that was generated with this certificate",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    #[error(
        "wrong password for PKCS#12 file {} (or the file is damaged); give the password used when it was exported",
        path.display()
    )]
    PfxPassword { path: PathBuf },

    #[error("cannot decode PKCS#12 file {} ({reason}); export it again from the certificate store", path.display())]
    Pfx { path: PathBuf, reason: String },

    #[error(
        "PKCS#12 file {} holds no private key with a matching certificate; export it again with 'Yes, export the private key'",
        path.display()
    )]
    PfxNoKey { path: PathBuf },

    #[error("certificate generation failed: {reason}")]
    Generate { reason: String },

    #[error("invalid parameter {what}: {reason}")]
    InvalidParameter { what: String, reason: String },

    #[error("refusing to overwrite existing file {}; move it away or choose another directory or name", path.display())]
    Exists { path: PathBuf },

    #[error("cannot write {}: {source}; check that the directory exists and is writable", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "private key file {} is accessible by group or others (mode {mode:04o}); run `chmod 600 {}` (and make it owned by the netunlockd user)",
        path.display(),
        path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },

    #[error("{} is not a regular file; give the path of the key file itself", path.display())]
    NotAFile { path: PathBuf },
}
