//! The command line. Man pages and shell completions are generated from these definitions.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub(crate) use crate::output::OutputFormat;

/// `--output` for commands that print data.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct OutputArgs {
    /// Print for people (aligned tables) or for scripts (JSON).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Parser)]
#[command(
    name = "netunlockd",
    version,
    about = "BitLocker Network Unlock responder (MS-NKPU over DHCPv4/DHCPv6) and recovery-key escrow service",
    long_about = "netunlockd answers BitLocker Network Unlock requests so TPM+PIN Windows servers reboot \
                  without anyone typing a PIN while they are on the trusted network, and hosts the HTTPS \
                  endpoint where agents escrow BitLocker recovery keys and help-desk staff retrieve them.",
    after_help = crate::exit::help_text()
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon: the Network Unlock responder, the escrow API and the metrics endpoint.
    #[command(
        after_help = "Examples:\n  netunlockd serve --config /etc/netunlockd/netunlockd.toml\n  \
                            netunlockd serve --state-dir ./state --log-format json"
    )]
    Serve(ServeArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Network Unlock certificate tools.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Act as a Network Unlock client: send a real request and check the reply decrypts.
    #[command(after_help = "Examples:\n  \
        sudo netunlockd probe v4 --cert /var/lib/netunlockd/network-unlock/network-unlock.cer --interface eth0\n  \
        sudo netunlockd probe v6 --cert network-unlock.cer --interface eth0 --server fd00::10")]
    Probe(ProbeArgs),
    /// Ask a running daemon for its health (responder bound, database, certificates, audit chain).
    #[command(
        after_help = "Exit status: 0 healthy, 3 a check failed, 4 the daemon cannot be reached.\n\n\
        Examples:\n  netunlockd status\n  netunlockd status --metrics 127.0.0.1:9567 --output json"
    )]
    Status(StatusArgs),
    /// Manage help-desk operators and their API tokens.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Manage device enrollment tokens.
    #[command(subcommand, name = "enroll-token")]
    EnrollToken(EnrollTokenCommand),
    /// Find and disclose recovery keys, manage devices, reports, backups.
    #[command(subcommand)]
    Escrow(EscrowCommand),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write man pages and shell completions (used by the package build).
    #[command(
        hide = true,
        name = "generate-assets",
        after_help = "Example:\n  netunlockd generate-assets --out-dir target/assets"
    )]
    GenerateAssets {
        /// Directory to write man/ and completions/ into.
        #[arg(long)]
        out_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormatArg {
    /// Human-readable lines (the journal adds timestamps).
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the configuration and state are.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConfigArgs {
    /// Configuration file (TOML). Default: /etc/netunlockd/netunlockd.toml if it exists, else built-in defaults.
    #[arg(long, short = 'c', env = "NETUNLOCKD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// State directory (keys, certificates, database); overrides the file.
    #[arg(long, env = "NETUNLOCKD_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Log format; overrides log.format in the file.
    #[arg(long, value_enum)]
    pub(crate) log_format: Option<LogFormatArg>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Load and validate everything (config, certificates, keys, subnet policy); bind nothing.
    #[command(
        after_help = "Example:\n  netunlockd config check --config /etc/netunlockd/netunlockd.toml"
    )]
    Check {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Generate an RSA-2048 Network Unlock key and self-signed certificate (.key, .pem, .cer).
    #[command(
        after_help = "Example:\n  netunlockd certs new-unlock --out-dir /etc/netunlockd/unlock --days 1825"
    )]
    NewUnlock {
        /// Directory to write the files into (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// File name stem.
        #[arg(long, default_value = "network-unlock")]
        name: String,
        /// Certificate subject common name.
        #[arg(long, default_value = "BitLocker Network Unlock certificate")]
        common_name: String,
        /// Validity in days (1 to 36500).
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
    },
    /// Show a certificate's thumbprint, subject, validity, key size and EKU, with warnings.
    #[command(
        after_help = "Exit status: 0 no warnings, 5 warnings found (something would stop Network Unlock).\n\n\
        Examples:\n  netunlockd certs inspect /var/lib/netunlockd/network-unlock/network-unlock.cer\n  \
        netunlockd certs inspect wds-unlock.pfx --password-file wds-unlock.pass --output json"
    )]
    Inspect {
        /// PEM or DER certificate, or a .pfx.
        file: PathBuf,
        /// File whose first line is the .pfx password (mode 0600); without it an empty password is tried.
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FamilyArg {
    /// DHCPv4 (broadcast to UDP 67).
    V4,
    /// DHCPv6 (Information-Request to ff02::1:2, UDP 547).
    V6,
}

#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// DHCPv4 or DHCPv6.
    #[arg(value_enum)]
    pub(crate) family: FamilyArg,
    /// The Network Unlock certificate the clients hold (PEM, DER or .cer).
    #[arg(long)]
    pub(crate) cert: PathBuf,
    /// Interface to send from.
    #[arg(long, short = 'i')]
    pub(crate) interface: String,
    /// Server address to unicast to (default: broadcast / ff02::1:2).
    #[arg(long)]
    pub(crate) server: Option<IpAddr>,
    /// Server port (default 67 / 547).
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub(crate) timeout_ms: u64,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Metrics listener of the daemon (default: metrics.listen from the configuration).
    #[arg(long)]
    pub(crate) metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// How CLI commands reach the daemon's escrow API.
#[derive(Debug, Clone, Args)]
pub(crate) struct ApiArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Escrow server, scheme, host and port only, e.g. https://escrow.example:8443 (default:
    /// https://127.0.0.1:<escrow port>; the client adds /api/v1 itself).
    #[arg(long, env = "NETUNLOCKD_URL")]
    pub(crate) url: Option<String>,
    /// Operator API token.
    #[arg(long, env = "NETUNLOCKD_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// CA or server certificate (PEM) to trust (default: the appliance's own escrow certificate).
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    /// Trust the server certificate with this SHA-256 fingerprint (64 hex digits, colons
    /// allowed), as agents pin it with -ServerCertSha256; for a remote appliance.
    #[arg(long, conflicts_with = "ca")]
    pub(crate) pin_sha256: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum OperatorCommand {
    /// Create the first admin operator and token directly in the database (run on the appliance).
    #[command(
        after_help = "Example:\n  sudo -u netunlockd netunlockd operator bootstrap --name alice"
    )]
    Bootstrap {
        #[command(flatten)]
        config: ConfigArgs,
        /// Name of the first admin operator.
        #[arg(long, default_value = "admin")]
        name: String,
        /// Also when an admin exists: recovers a lost admin token on the appliance (creates or
        /// re-enables the admin `--name` with a new token; audited as a forced bootstrap).
        #[arg(long)]
        force: bool,
    },
    /// Create an operator.
    #[command(after_help = "Example:\n  netunlockd operator create --name bob --role helpdesk")]
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// Operator name (shown in the audit log).
        #[arg(long)]
        name: String,
        /// admin: everything; helpdesk: find and disclose keys; auditor: reports and the audit log.
        #[arg(long, value_parser = ["admin", "helpdesk", "auditor"])]
        role: String,
    },
    /// List operators.
    #[command(after_help = "Example:\n  netunlockd operator list --output json")]
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Change an operator's role.
    #[command(after_help = "Example:\n  netunlockd operator set-role 2 auditor")]
    SetRole {
        #[command(flatten)]
        api: ApiArgs,
        /// Operator id (see `netunlockd operator list`).
        id: String,
        /// The new role.
        #[arg(value_parser = ["admin", "helpdesk", "auditor"])]
        role: String,
    },
    /// Disable an operator (their tokens stop working).
    #[command(after_help = "Example:\n  netunlockd operator disable 2")]
    Disable {
        #[command(flatten)]
        api: ApiArgs,
        /// Operator id (see `netunlockd operator list`).
        id: String,
    },
    /// Create an API token for an operator (printed once).
    #[command(after_help = "Example:\n  netunlockd operator token 2 --days 90")]
    Token {
        #[command(flatten)]
        api: ApiArgs,
        /// Operator id (see `netunlockd operator list`).
        operator_id: String,
        /// Lifetime in days (default: escrow.api_token_lifetime_days, else no expiry).
        #[arg(long)]
        days: Option<u32>,
    },
    /// List API tokens (ids, owners, creation and expiry; never secrets), to find a leaked one.
    #[command(after_help = "Example:\n  netunlockd operator tokens --operator-id 3")]
    Tokens {
        #[command(flatten)]
        api: ApiArgs,
        /// Only this operator's tokens.
        #[arg(long)]
        operator_id: Option<i64>,
    },
    /// Revoke an API token.
    #[command(after_help = "Example:\n  netunlockd operator revoke-token 7")]
    RevokeToken {
        #[command(flatten)]
        api: ApiArgs,
        /// Token id (printed when the token was created).
        token_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EnrollTokenCommand {
    /// Create an enrollment token (printed once).
    #[command(
        after_help = "Example:\n  netunlockd enroll-token create --uses 50 --hours 72 --note \"rack 4 rollout\""
    )]
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// How many devices may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        hours: u32,
        /// Free text to recognise the token by in listings.
        #[arg(long)]
        note: Option<String>,
    },
    /// List enrollment tokens.
    #[command(after_help = "Example:\n  netunlockd enroll-token list")]
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke an enrollment token.
    #[command(after_help = "Example:\n  netunlockd enroll-token revoke 3")]
    Revoke {
        #[command(flatten)]
        api: ApiArgs,
        /// Enrollment token id (see `netunlockd enroll-token list`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EscrowCommand {
    /// Find recovery keys by the first 8 hex digits of the key ID, or by device name (no secrets shown).
    #[command(
        after_help = "Examples:\n  netunlockd escrow find --prefix 1A2B3C4D\n  netunlockd escrow find --device SRV-DB01"
    )]
    Find {
        #[command(flatten)]
        api: ApiArgs,
        /// First 8 hex digits of the recovery key ID, as the BitLocker recovery screen shows them.
        #[arg(long, conflicts_with = "device", required_unless_present = "device")]
        prefix: Option<String>,
        /// Computer name of the device.
        #[arg(long)]
        device: Option<String>,
    },
    /// Disclose a recovery password (audited; the key is then rotated by the agent).
    #[command(
        after_help = "Example:\n  netunlockd escrow disclose 1A2B3C4D-0000-4000-8000-000000000001 \
                            --device SRV-DB01 --reason bios_changed"
    )]
    Disclose {
        #[command(flatten)]
        api: ApiArgs,
        /// Full recovery key ID.
        key_id: String,
        /// Device name (required for the helpdesk role).
        #[arg(long)]
        device: Option<String>,
        /// Why the server needs its recovery password (recorded in the audit log).
        #[arg(long, value_parser = ["boot_order_changed", "bios_changed", "os_files_modified", "lost_startup_key",
            "lost_pin", "tpm_reset", "lost_passphrase", "lost_smartcard", "other"])]
        reason: String,
        /// Free text (required with --reason other).
        #[arg(long)]
        text: Option<String>,
    },
    /// List enrolled devices.
    #[command(after_help = "Example:\n  netunlockd escrow devices")]
    Devices {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a device's enrollment.
    #[command(after_help = "Example:\n  netunlockd escrow revoke-device 12")]
    RevokeDevice {
        #[command(flatten)]
        api: ApiArgs,
        /// Device id (see `netunlockd escrow devices`).
        id: String,
    },
    /// Allow a device to enroll again (e.g. after a reinstall).
    #[command(after_help = "Example:\n  netunlockd escrow allow-reenroll 12")]
    AllowReenroll {
        #[command(flatten)]
        api: ApiArgs,
        /// Device id (see `netunlockd escrow devices`).
        id: String,
    },
    /// Reports: the recovery audit report, the fleet state, or the Network Unlock fleet report.
    #[command(
        after_help = "Examples:\n  netunlockd escrow report fleet --stale-days 14\n  \
                            netunlockd escrow report unlocks --days 7\n  \
                            netunlockd escrow report audit --format csv > audit.csv"
    )]
    Report {
        #[command(flatten)]
        api: ApiArgs,
        /// audit: every audited action; fleet: stale devices, volumes without a key, pending
        /// rotations; unlocks: enrolled servers with no Network Unlock in N days, and requests
        /// from adapters no enrolled device reports.
        #[arg(value_parser = ["audit", "fleet", "unlocks"])]
        kind: String,
        /// Audit report only: csv instead of the --output format.
        #[arg(long, value_parser = ["json", "csv"])]
        format: Option<String>,
        /// Fleet: devices not checked in for this many days are stale.
        #[arg(long, default_value_t = 30)]
        stale_days: u32,
        /// Unlocks: the window in days (default: the server's unlock_records.no_unlock_days).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=365))]
        days: Option<u32>,
    },
    /// Write a consistent, encrypted backup of the escrow database (run on the appliance).
    #[command(
        after_help = "Example (the directory once, as root: install -d -m 0700 -o netunlockd -g netunlockd \
                            /var/backups/netunlockd-escrow):\n  runuser -u netunlockd -- netunlockd escrow backup \
                            --out /var/backups/netunlockd-escrow/escrow.nub --key /var/lib/netunlockd/backup.key"
    )]
    Backup {
        #[command(flatten)]
        config: ConfigArgs,
        /// Backup file to write.
        #[arg(long)]
        out: PathBuf,
        /// 32-byte backup key file (created 0600 if it does not exist, so the service user must be
        /// able to write its directory). Keep a copy apart from the backups.
        #[arg(long)]
        key: PathBuf,
    },
    /// Restore a backup into an empty database (run on the appliance, daemon stopped).
    #[command(
        after_help = "Needs the KEK the backup was taken with (kek.bin or the escrow-kek credential) in place.\n\
                            Example:\n  runuser -u netunlockd -- netunlockd escrow restore \
                            --in /var/backups/netunlockd-escrow/escrow.nub --key /var/lib/netunlockd/backup.key"
    )]
    Restore {
        #[command(flatten)]
        config: ConfigArgs,
        /// Backup file written by `netunlockd escrow backup`.
        #[arg(long = "in")]
        input: PathBuf,
        /// The backup key file used when the backup was written.
        #[arg(long)]
        key: PathBuf,
    },
    /// Re-wrap every stored secret under a new key-encryption key (run on the appliance, daemon stopped).
    #[command(
        after_help = "Example:\n  sudo -u netunlockd netunlockd escrow rewrap-kek --new-kek /var/lib/netunlockd/kek-2027.bin"
    )]
    RewrapKek {
        #[command(flatten)]
        config: ConfigArgs,
        /// New KEK file (created 0600 if it does not exist). Point escrow.kek_file at it afterwards.
        #[arg(long)]
        new_kek: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the audit hash chain; report the first edited, deleted or reordered record.
    #[command(
        after_help = "Exit status: 0 intact, 3 broken.\n\nExample:\n  sudo -u netunlockd netunlockd audit verify"
    )]
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}
