//! The command line. Man pages and shell completions are generated from these definitions.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "netunlockd",
    version,
    about = "BitLocker Network Unlock responder (MS-NKPU over DHCPv4/DHCPv6) and recovery-key escrow service",
    long_about = "netunlockd answers BitLocker Network Unlock requests so TPM+PIN Windows servers reboot \
                  without anyone typing a PIN while they are on the trusted network, and hosts the HTTPS \
                  endpoint where agents escrow BitLocker recovery keys and help-desk staff retrieve them."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon: the Network Unlock responder, the escrow API and the metrics endpoint.
    Serve(ServeArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Network Unlock certificate tools.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Act as a Network Unlock client: send a real request and check the reply decrypts.
    Probe(ProbeArgs),
    /// Ask a running daemon for its health (responder bound, database, certificates, audit chain).
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
    #[command(hide = true, name = "generate-assets")]
    GenerateAssets {
        #[arg(long)]
        out_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormatArg {
    Text,
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
    Check {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Generate an RSA-2048 Network Unlock key and self-signed certificate (.key, .pem, .cer).
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
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Show a certificate's thumbprint, subject, validity, key size and EKU, with warnings.
    Inspect {
        /// PEM or DER certificate, or a .pfx.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FamilyArg {
    V4,
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
}

/// How CLI commands reach the daemon's escrow API.
#[derive(Debug, Clone, Args)]
pub(crate) struct ApiArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Escrow API base URL (default: https://127.0.0.1:<escrow port>).
    #[arg(long, env = "NETUNLOCKD_URL")]
    pub(crate) url: Option<String>,
    /// Operator API token.
    #[arg(long, env = "NETUNLOCKD_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// CA or server certificate (PEM) to trust (default: the appliance's own escrow certificate).
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// Trust the server certificate with this SHA-256 fingerprint (64 hex digits, colons
    /// allowed), as agents pin it with -ServerCertSha256; for a remote appliance.
    #[arg(long, conflicts_with = "ca")]
    pub(crate) pin_sha256: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum OperatorCommand {
    /// Create the first admin operator and token directly in the database (run on the appliance).
    Bootstrap {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long, default_value = "admin")]
        name: String,
        /// Also when an admin exists: recovers a lost admin token on the appliance (creates or
        /// re-enables the admin `--name` with a new token; audited as a forced bootstrap).
        #[arg(long)]
        force: bool,
    },
    /// Create an operator.
    Create {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "helpdesk", "auditor"])]
        role: String,
    },
    /// List operators.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Change an operator's role.
    SetRole {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        #[arg(value_parser = ["admin", "helpdesk", "auditor"])]
        role: String,
    },
    /// Disable an operator (their tokens stop working).
    Disable {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Create an API token for an operator (printed once).
    Token {
        #[command(flatten)]
        api: ApiArgs,
        operator_id: String,
        /// Lifetime in days (default: no expiry).
        #[arg(long)]
        days: Option<u32>,
    },
    /// List API tokens (ids, owners, creation and expiry; never secrets), to find a leaked one.
    Tokens {
        #[command(flatten)]
        api: ApiArgs,
        /// Only this operator's tokens.
        #[arg(long)]
        operator_id: Option<i64>,
    },
    /// Revoke an API token.
    RevokeToken {
        #[command(flatten)]
        api: ApiArgs,
        token_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EnrollTokenCommand {
    /// Create an enrollment token (printed once).
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// How many devices may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        hours: u32,
        #[arg(long)]
        note: Option<String>,
    },
    /// List enrollment tokens.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke an enrollment token.
    Revoke {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EscrowCommand {
    /// Find recovery keys by the first 8 hex digits of the key ID, or by device name (no secrets shown).
    Find {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, conflicts_with = "device", required_unless_present = "device")]
        prefix: Option<String>,
        #[arg(long)]
        device: Option<String>,
    },
    /// Disclose a recovery password (audited; the key is then rotated by the agent).
    Disclose {
        #[command(flatten)]
        api: ApiArgs,
        /// Full recovery key ID.
        key_id: String,
        /// Device name (required for the helpdesk role).
        #[arg(long)]
        device: Option<String>,
        /// boot_order_changed, bios_changed, os_files_modified, lost_startup_key, lost_pin, tpm_reset,
        /// lost_passphrase, lost_smartcard, other
        #[arg(long)]
        reason: String,
        /// Free text (required with --reason other).
        #[arg(long)]
        text: Option<String>,
    },
    /// List enrolled devices.
    Devices {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a device's enrollment.
    RevokeDevice {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Allow a device to enroll again (e.g. after a reinstall).
    AllowReenroll {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Reports: the recovery audit report or the fleet state.
    Report {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(value_parser = ["audit", "fleet"])]
        kind: String,
        /// json or csv (audit only).
        #[arg(long, default_value = "json")]
        format: String,
        /// Fleet: devices not checked in for this many days are stale.
        #[arg(long, default_value_t = 30)]
        stale_days: u32,
    },
    /// Write a consistent, encrypted backup of the escrow database (run on the appliance).
    Backup {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        out: PathBuf,
        /// 32-byte backup key file (created 0600 if it does not exist). Keep it apart from the backup.
        #[arg(long)]
        key: PathBuf,
    },
    /// Restore a backup into an empty database (run on the appliance, daemon stopped).
    Restore {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Re-wrap every stored secret under a new key-encryption key (run on the appliance, daemon stopped).
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
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
    },
}
