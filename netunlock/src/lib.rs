//! MS-NKPU (BitLocker Network Unlock) for netunlockd.
//!
//! The pure layer (this file's modules except `responder`/`probe`) decodes requests, performs the
//! crypto and builds replies without any I/O, so it is table-tested against the vectors of
//! `ms-nkpu.md`. The socket layer (`responder`, `probe`) drives it.

pub mod client;
pub mod crypto;
pub mod error;
pub mod keystore;
pub mod nkpu;
pub mod policy;
pub mod probe;
pub mod responder;
pub mod v4;
mod v4_options;
pub mod v6;
pub mod wds_ini;

pub use crypto::UnlockKey;
pub use error::{ClientError, IniError, KeyStoreError, NotNkpu, ReplyError};
pub use keystore::{Decision, KeyStore};
pub use nkpu::{
    ENTERPRISE_MICROSOFT, KP_LEN, KPR_LEN, NkpuRequest, THUMBPRINT_LEN, Thumbprint, open_kpr,
    seal_kpr,
};
pub use policy::CertificatePolicy;
pub use v4::{ReplyTarget, V4Request};
pub use v6::{RelayHop, V6Request};
pub use wds_ini::{WdsPolicy, decode_ini_bytes, parse_wds_ini};
