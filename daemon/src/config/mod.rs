//! Configuration: the TOML wire form (`wire`) turned into a validated form the daemon runs on.
//! Validation is pure; `load` is the only function that touches the filesystem.

pub(crate) mod directory;
pub(crate) mod group;
mod plain;
pub(crate) mod unlock_records;
pub(crate) mod wire;

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub(crate) use wire::WireConfig;
use wire::{CONFIG_VERSION, WireCertificate};

/// Where the packaged service keeps its state; systemd's `StateDirectory=` exports it too.
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/netunlockd";
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/netunlockd/netunlockd.toml";
/// The escrow listener's total connection limit (`escrow::ServerLimits`), the ceiling of the
/// per-client one. A number here, not the escrow type, so the config fuzz target needs no escrow.
const MAX_CONNECTIONS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The file this came from (None = built-in defaults).
    pub(crate) source: Option<PathBuf>,
    pub(crate) state_dir: PathBuf,
    pub(crate) log_filter: String,
    pub(crate) log_format: LogFormat,
    pub(crate) metrics_listen: Option<SocketAddr>,
    pub(crate) unlock: Option<UnlockSettings>,
    pub(crate) escrow: Option<EscrowSettings>,
    /// `[directory]`: directory sign-in for the console (needs `[escrow]`).
    pub(crate) directory: Option<directory::DirectorySettings>,
    /// `[unlock_records]`: Network Unlock outcomes kept in the escrow database.
    pub(crate) unlock_records: Option<unlock_records::UnlockRecordSettings>,
}

#[derive(Debug, Clone)]
pub(crate) struct UnlockSettings {
    pub(crate) interfaces: Vec<String>,
    pub(crate) v4_listen: Option<SocketAddrV4>,
    pub(crate) v6_port: Option<u16>,
    pub(crate) v4_client_port: u16,
    pub(crate) v6_client_port: u16,
    pub(crate) v4_relay_port: u16,
    pub(crate) v6_relay_port: u16,
    pub(crate) subnet_policy: Option<PathBuf>,
    pub(crate) workers: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) max_request_age: Duration,
    pub(crate) rate_limit_burst: u32,
    pub(crate) rate_limit_per_second: f64,
    pub(crate) receive_buffer_bytes: usize,
    /// Sources whose relayed requests are believed (host bits cleared).
    pub(crate) trusted_relays: Vec<ipnet::IpNet>,
    pub(crate) relay_share: u32,
    /// Empty: the daemon generates and uses the certificate in `<state>/network-unlock/`.
    pub(crate) certificates: Vec<CertificateSettings>,
    /// Several appliances sharing the work (issue 11); None for a single appliance.
    pub(crate) group: Option<group::GroupSettings>,
}

#[derive(Debug, Clone)]
pub(crate) struct CertificateSettings {
    pub(crate) cert: PathBuf,
    pub(crate) key: Option<PathBuf>,
    pub(crate) pfx_password_file: Option<PathBuf>,
    pub(crate) enabled: bool,
    pub(crate) allowed_subnets: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone)]
pub(crate) struct EscrowSettings {
    pub(crate) listen: SocketAddr,
    /// None: self-generated certificate in `<state>/escrow-tls/`.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) tls_names: Vec<String>,
    pub(crate) database_url: String,
    /// Which database `database_url` names (the escrow store's rule).
    pub(crate) backend: escrow::Backend,
    pub(crate) kek_file: PathBuf,
    pub(crate) max_body_bytes: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) max_connections_per_client: usize,
    pub(crate) stale_after: Duration,
    /// `unlock_records.no_unlock_days` when unlock outcomes are recorded (the fleet report's window).
    pub(crate) unlock_window_days: Option<u32>,
    /// Default lifetime of new API tokens (`api_token_lifetime_days`).
    pub(crate) api_token_lifetime: Option<Duration>,
    /// The web console served beside the API (`[console]`).
    pub(crate) console: escrow::web::ConsoleSettings,
}

/// Command-line overrides that win over the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) log_format: Option<LogFormat>,
}

/// Reads and validates the configuration. `path = None` looks for the packaged default file and
/// falls back to built-in defaults when it does not exist.
pub(crate) fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config> {
    let (wire, source) = match path {
        Some(p) => (read_file(p)?, Some(p.to_path_buf())),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            let p = Path::new(DEFAULT_CONFIG_PATH);
            (read_file(p)?, Some(p.to_path_buf()))
        }
        None => (WireConfig::default(), None),
    };
    let env_state = std::env::var_os("STATE_DIRECTORY").map(PathBuf::from);
    validate(wire, source, overrides, env_state)
}

fn read_file(path: &Path) -> Result<WireConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}

/// Parses TOML text into the wire form (errors carry line and column).
pub(crate) fn parse(text: &str) -> Result<WireConfig> {
    toml::from_str::<WireConfig>(text)
        .map_err(|e| anyhow::anyhow!(plain::plain_words(&e.to_string())))
}

/// Turns the wire form into the validated form. Pure: only `env_state_dir` comes from outside.
pub(crate) fn validate(
    wire: WireConfig,
    source: Option<PathBuf>,
    overrides: &Overrides,
    env_state_dir: Option<PathBuf>,
) -> Result<Config> {
    if wire.version != CONFIG_VERSION {
        bail!(
            "configuration version {} is not supported by this netunlockd (it reads version {CONFIG_VERSION}); \
             see docs/configuration.md for the upgrade notes",
            wire.version
        );
    }
    // systemd's $STATE_DIRECTORY may hold several colon-separated paths; the first is ours.
    let env_state = env_state_dir.and_then(|p| {
        p.to_str()
            .and_then(|s| s.split(':').next())
            .map(PathBuf::from)
    });
    let state_dir = overrides
        .state_dir
        .clone()
        .or(wire.state_dir.clone())
        .or(env_state)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    if state_dir.as_os_str().is_empty() {
        bail!("state_dir must not be empty");
    }
    let state_dir = absolute(&state_dir)?;

    let log_format = match overrides.log_format {
        Some(f) => f,
        None => match wire.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("log.format must be \"text\" or \"json\", not {other:?}"),
        },
    };
    tracing_subscriber::EnvFilter::try_new(&wire.log.level).with_context(|| {
        format!(
            "log.level {:?} is not a valid filter (e.g. \"info,netunlock=debug\")",
            wire.log.level
        )
    })?;

    let unlock = if wire.unlock.enabled {
        Some(validate_unlock(&wire)?)
    } else {
        None
    };
    let mut escrow = if wire.escrow.enabled {
        Some(validate_escrow(&wire, &state_dir)?)
    } else {
        None
    };
    let unlock = match unlock {
        Some(u) => Some(UnlockSettings {
            group: group::validate(wire.unlock.group.as_ref(), escrow.as_ref())?,
            ..u
        }),
        None => None,
    };
    if unlock.is_none() && escrow.is_none() {
        bail!("both [unlock] and [escrow] are disabled: there would be nothing to serve");
    }
    let directory = match &wire.directory {
        Some(_) if escrow.is_none() => {
            bail!("[directory] signs people in to the escrow console, but [escrow] is disabled")
        }
        Some(d) => Some(directory::validate(d)?),
        None => None,
    };
    let unlock_records =
        unlock_records::validate(&wire.unlock_records, unlock.is_some() && escrow.is_some())?;
    if let (Some(e), Some(r)) = (escrow.as_mut(), unlock_records.as_ref()) {
        e.unlock_window_days = Some(r.no_unlock_days);
    }
    let metrics_listen = wire.metrics.enabled.then_some(wire.metrics.listen);
    if let (Some(m), Some(e)) = (metrics_listen, escrow.as_ref())
        && m == e.listen
    {
        bail!("metrics.listen and escrow.listen are both {m}; give them different ports");
    }

    Ok(Config {
        source,
        state_dir,
        log_filter: wire.log.level.clone(),
        log_format,
        metrics_listen,
        unlock,
        escrow,
        directory,
        unlock_records,
    })
}

fn validate_unlock(wire: &WireConfig) -> Result<UnlockSettings> {
    let u = &wire.unlock;
    if !u.v4 && !u.v6 {
        bail!("[unlock] has both v4 and v6 turned off; set enabled = false instead");
    }
    if u.v6 && u.v6_port == 0 {
        bail!("unlock.v6_port must not be 0");
    }
    if u.v4 && u.v4_listen.port() == 0 {
        bail!("unlock.v4_listen must name a port (normally 67)");
    }
    if u.queue_capacity == 0 {
        bail!("unlock.queue_capacity must be at least 1");
    }
    if !(100..=30_000).contains(&u.max_request_age_ms) {
        bail!(
            "unlock.max_request_age_ms must be between 100 and 30000 (clients retry after about 2000 ms)"
        );
    }
    if u.rate_limit_burst == 0
        || !(u.rate_limit_per_second > 0.0 && u.rate_limit_per_second.is_finite())
    {
        bail!("unlock.rate_limit_burst must be ≥ 1 and unlock.rate_limit_per_second > 0");
    }
    if !(1..=100_000).contains(&u.relay_share) {
        bail!("unlock.relay_share must be between 1 and 100000");
    }
    for net in &u.trusted_relays {
        if net.prefix_len() == 0 {
            bail!(
                "unlock.trusted_relays: {net} would trust every address as a relay (anyone could then \
                 claim any client address); list your relay agents' addresses or subnets"
            );
        }
        if net.network().is_multicast() || net.network().is_loopback() {
            bail!("unlock.trusted_relays: {net} is not a unicast network");
        }
    }
    for name in &u.interfaces {
        if name.is_empty() || name.len() > 15 || name.contains('/') {
            bail!("unlock.interfaces: {name:?} is not a valid interface name");
        }
    }
    let certificates = u
        .certificate
        .iter()
        .map(validate_certificate)
        .collect::<Result<Vec<_>>>()?;
    Ok(UnlockSettings {
        interfaces: u.interfaces.clone(),
        v4_listen: u.v4.then_some(u.v4_listen),
        v6_port: u.v6.then_some(u.v6_port),
        v4_client_port: u.v4_client_port,
        v6_client_port: u.v6_client_port,
        v4_relay_port: u.v4_relay_port,
        v6_relay_port: u.v6_relay_port,
        subnet_policy: u.subnet_policy.clone(),
        workers: u.workers,
        queue_capacity: u.queue_capacity,
        max_request_age: Duration::from_millis(u.max_request_age_ms),
        rate_limit_burst: u.rate_limit_burst,
        rate_limit_per_second: u.rate_limit_per_second,
        receive_buffer_bytes: u.receive_buffer_bytes,
        trusted_relays: u.trusted_relays.iter().map(ipnet::IpNet::trunc).collect(),
        relay_share: u.relay_share,
        certificates,
        group: None,
    })
}

fn validate_certificate(c: &WireCertificate) -> Result<CertificateSettings> {
    let is_pfx = c
        .cert
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pfx") || e.eq_ignore_ascii_case("p12"));
    if !is_pfx && c.key.is_none() {
        bail!(
            "unlock.certificate {}: `key` is required unless the certificate is a .pfx/.p12 file",
            c.cert.display()
        );
    }
    Ok(CertificateSettings {
        cert: c.cert.clone(),
        key: c.key.clone(),
        pfx_password_file: c.pfx_password_file.clone(),
        enabled: c.enabled,
        allowed_subnets: c.allowed_subnets.iter().map(ipnet::IpNet::trunc).collect(),
    })
}

fn validate_escrow(wire: &WireConfig, state_dir: &Path) -> Result<EscrowSettings> {
    let e = &wire.escrow;
    let tls = match (&e.tls_cert, &e.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => bail!(
            "escrow.tls_cert and escrow.tls_key must be given together (or neither, for a self-generated certificate)"
        ),
    };
    let database_url = match &e.database_url {
        Some(u) => u.clone(),
        None => format!(
            "sqlite://{}?mode=rwc",
            state_dir.join("escrow.db").display()
        ),
    };
    let backend =
        escrow::Backend::of_url(&database_url).map_err(|e| anyhow::anyhow!("escrow.{e}"))?;
    if e.max_body_bytes < 1024 {
        bail!("escrow.max_body_bytes must be at least 1024");
    }
    if e.request_timeout_secs == 0 {
        bail!("escrow.request_timeout_secs must be at least 1");
    }
    if !(1..=MAX_CONNECTIONS).contains(&e.max_connections_per_client) {
        bail!(
            "escrow.max_connections_per_client must be 1 to {MAX_CONNECTIONS} (the listener's total)"
        );
    }
    if e.api_token_lifetime_days == Some(0) {
        bail!(
            "escrow.api_token_lifetime_days must be at least 1 (leave it out for tokens that do not expire)"
        );
    }
    Ok(EscrowSettings {
        listen: e.listen,
        tls,
        tls_names: e.tls_names.clone(),
        database_url,
        backend,
        kek_file: e
            .kek_file
            .clone()
            .unwrap_or_else(|| state_dir.join("kek.bin")),
        max_body_bytes: e.max_body_bytes,
        request_timeout: Duration::from_secs(e.request_timeout_secs),
        max_connections_per_client: e.max_connections_per_client,
        stale_after: Duration::from_secs(u64::from(e.stale_after_days) * 86_400),
        api_token_lifetime: e
            .api_token_lifetime_days
            .map(|d| Duration::from_secs(u64::from(d) * 86_400)),
        // Set once `[unlock_records]` is validated (it depends on `[unlock]` too).
        unlock_window_days: None,
        console: validate_console(&wire.console)?,
    })
}

fn validate_console(c: &wire::WireConsole) -> Result<escrow::web::ConsoleSettings> {
    if c.idle_timeout_secs == 0 {
        bail!("console.idle_timeout_secs must be at least 1");
    }
    if c.absolute_timeout_secs < c.idle_timeout_secs {
        bail!(
            "console.absolute_timeout_secs ({}) must not be shorter than console.idle_timeout_secs ({})",
            c.absolute_timeout_secs,
            c.idle_timeout_secs
        );
    }
    Ok(escrow::web::ConsoleSettings {
        enabled: c.enabled,
        sessions: escrow::SessionPolicy {
            idle: Duration::from_secs(c.idle_timeout_secs),
            absolute: Duration::from_secs(c.absolute_timeout_secs),
        },
    })
}

/// Hides a password in a database URL before it reaches an error message or a log (the escrow
/// store's rule, so the daemon and the store redact alike).
pub(crate) use escrow::store::redact_url;

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("cannot read the current directory")?
            .join(p))
    }
}

#[cfg(test)]
mod tests;
