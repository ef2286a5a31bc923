//! Certificates for netunlockd: the BitLocker Network Unlock certificate (generation, loading from
//! PEM/DER/PKCS#12, inspection, thumbprints) and TLS material for the escrow endpoint and agents.
//!
//! Pure parsing and checks take bytes; the functions that take paths only add file reading and
//! writing around them.

mod der;
mod error;
mod files;
mod generate;
mod gpo;
mod identity;
mod inspect;
mod key;
mod pfx;
mod source;
mod thumbprint;
mod tls;

pub use error::CertError;
pub use files::{
    UnlockFiles, check_private_key_permissions, write_private_pem, write_public_file,
    write_unlock_files,
};
pub use generate::{
    APPLICATION_POLICIES_OID, GeneratedUnlockCert, NETWORK_UNLOCK_EKU, generate_unlock_certificate,
    generate_unlock_certificate_valid,
};
pub use gpo::gpo_instructions;
pub use identity::{UnlockIdentity, load_unlock_identity};
pub use inspect::{
    EXPIRY_WARNING_DAYS, Inspection, inspect_certificate, read_certificate_der,
    read_certificate_der_with_password,
};
pub use thumbprint::{sha256_fingerprint_hex, thumbprint, thumbprint_hex};
pub use tls::{
    GeneratedTlsCert, ServerCertNames, generate_client_certificate,
    generate_tls_server_certificate, load_certificate_chain, load_private_key,
    server_certificate_names,
};
