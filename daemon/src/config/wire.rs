//! The TOML file as written by operators. Every key has a default; unknown keys are rejected so a
//! typo is an error instead of a silently ignored setting.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use serde::Deserialize;

/// The only config format version this build understands.
pub(crate) const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireConfig {
    #[serde(default = "default_version")]
    pub(crate) version: u32,
    pub(crate) state_dir: Option<PathBuf>,
    #[serde(default)]
    pub(crate) log: WireLog,
    #[serde(default)]
    pub(crate) metrics: WireMetrics,
    #[serde(default)]
    pub(crate) unlock: WireUnlock,
    #[serde(default)]
    pub(crate) escrow: WireEscrow,
    /// Directory sign-in for the console; absent: no directory sign-in.
    #[serde(default)]
    pub(crate) directory: Option<super::directory::WireDirectory>,
    #[serde(default)]
    pub(crate) unlock_records: super::unlock_records::WireUnlockRecords,
    #[serde(default)]
    pub(crate) console: WireConsole,
}

impl Default for WireConfig {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            state_dir: None,
            log: WireLog::default(),
            metrics: WireMetrics::default(),
            unlock: WireUnlock::default(),
            escrow: WireEscrow::default(),
            directory: None,
            unlock_records: Default::default(),
            console: WireConsole::default(),
        }
    }
}

fn default_version() -> u32 {
    CONFIG_VERSION
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireLog {
    /// tracing filter directives, e.g. "info" or "info,netunlock=debug".
    #[serde(default = "default_log_level")]
    pub(crate) level: String,
    /// "text" (journal-friendly) or "json".
    #[serde(default = "default_log_format")]
    pub(crate) format: String,
}

impl Default for WireLog {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: default_log_format(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}
fn default_log_format() -> String {
    "text".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireMetrics {
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    #[serde(default = "default_metrics_listen")]
    pub(crate) listen: SocketAddr,
}

impl Default for WireMetrics {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_metrics_listen(),
        }
    }
}

pub(crate) fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9567))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireUnlock {
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    /// Interfaces to serve; empty means every interface.
    #[serde(default)]
    pub(crate) interfaces: Vec<String>,
    #[serde(default = "yes")]
    pub(crate) v4: bool,
    #[serde(default = "default_v4_listen")]
    pub(crate) v4_listen: SocketAddrV4,
    #[serde(default = "yes")]
    pub(crate) v6: bool,
    #[serde(default = "default_v6_port")]
    pub(crate) v6_port: u16,
    #[serde(default = "default_v4_client_port")]
    pub(crate) v4_client_port: u16,
    #[serde(default = "default_v6_client_port")]
    pub(crate) v6_client_port: u16,
    #[serde(default = "default_v4_relay_port")]
    pub(crate) v4_relay_port: u16,
    #[serde(default = "default_v6_port")]
    pub(crate) v6_relay_port: u16,
    /// A WDS `bde-network-unlock.ini` subnet policy file.
    pub(crate) subnet_policy: Option<PathBuf>,
    /// RSA worker threads; 0 = one per core.
    #[serde(default)]
    pub(crate) workers: usize,
    #[serde(default = "default_queue_capacity")]
    pub(crate) queue_capacity: usize,
    #[serde(default = "default_max_request_age_ms")]
    pub(crate) max_request_age_ms: u64,
    #[serde(default = "default_rate_limit_burst")]
    pub(crate) rate_limit_burst: u32,
    #[serde(default = "default_rate_limit_per_second")]
    pub(crate) rate_limit_per_second: f64,
    #[serde(default = "default_receive_buffer_bytes")]
    pub(crate) receive_buffer_bytes: usize,
    /// Relay agents whose relayed requests are answered (CIDRs matched against the IP source).
    #[serde(default)]
    pub(crate) trusted_relays: Vec<ipnet::IpNet>,
    /// How many hosts' worth of request rate and queue share one trusted relay gets.
    #[serde(default = "default_relay_share")]
    pub(crate) relay_share: u32,
    /// Network Unlock certificates. Empty: one is generated in the state directory on first start.
    #[serde(default)]
    pub(crate) certificate: Vec<WireCertificate>,
    /// `[unlock.group]`: share the work with other appliances (see docs/scale-out.md).
    pub(crate) group: Option<super::group::WireGroup>,
}

impl Default for WireUnlock {
    fn default() -> Self {
        Self {
            enabled: true,
            interfaces: Vec::new(),
            v4: true,
            v4_listen: default_v4_listen(),
            v6: true,
            v6_port: default_v6_port(),
            v4_client_port: default_v4_client_port(),
            v6_client_port: default_v6_client_port(),
            v4_relay_port: default_v4_relay_port(),
            v6_relay_port: default_v6_port(),
            subnet_policy: None,
            workers: 0,
            queue_capacity: default_queue_capacity(),
            max_request_age_ms: default_max_request_age_ms(),
            rate_limit_burst: default_rate_limit_burst(),
            rate_limit_per_second: default_rate_limit_per_second(),
            receive_buffer_bytes: default_receive_buffer_bytes(),
            trusted_relays: Vec::new(),
            relay_share: default_relay_share(),
            certificate: Vec::new(),
            group: None,
        }
    }
}

fn default_v4_listen() -> SocketAddrV4 {
    SocketAddrV4::new([0, 0, 0, 0].into(), 67)
}
fn default_v6_port() -> u16 {
    547
}
fn default_v4_client_port() -> u16 {
    68
}
fn default_v6_client_port() -> u16 {
    546
}
fn default_v4_relay_port() -> u16 {
    67
}
fn default_queue_capacity() -> usize {
    16_384
}
fn default_max_request_age_ms() -> u64 {
    2_000
}
fn default_rate_limit_burst() -> u32 {
    6
}
fn default_rate_limit_per_second() -> f64 {
    1.0
}
fn default_receive_buffer_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_relay_share() -> u32 {
    64
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireCertificate {
    /// PEM/DER certificate, or a PKCS#12 (.pfx) file holding certificate and key.
    pub(crate) cert: PathBuf,
    /// Private key (PKCS#8 or PKCS#1 PEM, PKCS#8 DER). Not used with a .pfx.
    pub(crate) key: Option<PathBuf>,
    /// File holding the .pfx password (first line).
    pub(crate) pfx_password_file: Option<PathBuf>,
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    /// Client subnets this certificate may unlock; empty means all.
    #[serde(default)]
    pub(crate) allowed_subnets: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireEscrow {
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    #[serde(default = "default_escrow_listen")]
    pub(crate) listen: SocketAddr,
    /// TLS certificate chain (PEM). Default: self-generated in the state directory.
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    /// Names put in a self-generated TLS certificate (DNS names or IP addresses).
    #[serde(default)]
    pub(crate) tls_names: Vec<String>,
    /// `sqlite://…` or `postgres://…`. Default: SQLite in the state directory.
    pub(crate) database_url: Option<String>,
    /// Key-encryption key file. Default: `kek.bin` in the state directory, or the systemd
    /// credential `escrow-kek` when present.
    pub(crate) kek_file: Option<PathBuf>,
    #[serde(default = "default_max_body_bytes")]
    pub(crate) max_body_bytes: usize,
    #[serde(default = "default_request_timeout_secs")]
    pub(crate) request_timeout_secs: u64,
    /// Most concurrent connections from one client address; raise it when agents reach the
    /// appliance through a NAT or proxy that gives them one address.
    #[serde(default = "default_max_connections_per_client")]
    pub(crate) max_connections_per_client: usize,
    /// A device that has not checked in for this many days counts as stale.
    #[serde(default = "default_stale_after_days")]
    pub(crate) stale_after_days: u32,
    /// Lifetime of new operator API tokens created without one; absent: they do not expire.
    pub(crate) api_token_lifetime_days: Option<u32>,
}

impl Default for WireEscrow {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_escrow_listen(),
            tls_cert: None,
            tls_key: None,
            tls_names: Vec::new(),
            database_url: None,
            kek_file: None,
            max_body_bytes: default_max_body_bytes(),
            request_timeout_secs: default_request_timeout_secs(),
            max_connections_per_client: default_max_connections_per_client(),
            stale_after_days: default_stale_after_days(),
            api_token_lifetime_days: None,
        }
    }
}

fn default_escrow_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
fn default_max_body_bytes() -> usize {
    256 * 1024
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_max_connections_per_client() -> usize {
    64
}
fn default_stale_after_days() -> u32 {
    30
}

fn yes() -> bool {
    true
}

/// `[console]`: the help-desk web console on the escrow listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireConsole {
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    /// A session ends after this many seconds without a request.
    #[serde(default = "default_console_idle_secs")]
    pub(crate) idle_timeout_secs: u64,
    /// A session ends this many seconds after sign-in, however active.
    #[serde(default = "default_console_absolute_secs")]
    pub(crate) absolute_timeout_secs: u64,
}

impl Default for WireConsole {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout_secs: default_console_idle_secs(),
            absolute_timeout_secs: default_console_absolute_secs(),
        }
    }
}

fn default_console_idle_secs() -> u64 {
    15 * 60
}
fn default_console_absolute_secs() -> u64 {
    8 * 3600
}
