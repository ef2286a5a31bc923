//! MS-NKPU (BitLocker Network Unlock) for netunlockd.
//!
//! The pure layer — codec (`v4`, `v6`, on `dhcproto`), crypto, key store, policy, trust decisions,
//! the WDS ini reader and the client — decodes requests, decides and builds replies without any I/O,
//! so it is table-tested against the vectors of `ms-nkpu.md`. The socket layer (`responder`, `probe`,
//! `netif`) drives it.

pub mod client;
pub mod crypto;
pub mod error;
pub mod family;
pub mod keystore;
pub mod netif;
pub mod nkpu;
pub mod policy;
pub mod probe;
pub mod responder;
pub mod trust;
pub mod v4;
mod v4_options;
pub mod v6;
pub mod wds_ini;

pub use crypto::{RandomError, RejectionSecret, UnlockKey};
pub use error::{ClientError, IniError, KeyStoreError, NotNkpu, ReplyError};
pub use family::Family;
pub use keystore::condition::{CertificateCondition, DisabledBy, EXPIRY_WARNING};
pub use keystore::{Decision, KeyStore};
pub use nkpu::{
    ENTERPRISE_MICROSOFT, KP_LEN, KPR_LEN, NkpuRequest, THUMBPRINT_LEN, Thumbprint, open_kpr,
    seal_kpr,
};
pub use policy::{CertificatePolicy, PolicyAddrs};
pub use trust::{HostAddrs, IfAddrs, TrustedRelays};
pub use v4::V4Request;
pub use v6::{RelayHop, V6Request};
pub use wds_ini::{WdsPolicy, decode_ini_bytes, parse_wds_ini};
