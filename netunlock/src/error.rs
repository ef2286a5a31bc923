//! Error types of the pure layer.
//!
//! `NotNkpu` says why a datagram is not a Network Unlock request. It exists for debug logs, metrics
//! and tests only: the responder answers every one of these with silence.

/// Why a datagram is not a well-formed MS-NKPU request (the responder stays silent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotNkpu {
    #[error("datagram too short for a DHCP message")]
    TooShort,
    #[error("datagram longer than the accepted maximum")]
    TooLong,
    #[error("DHCPv4 op is not BOOTREQUEST (1)")]
    NotBootRequest,
    #[error("DHCPv4 hardware address length is over 16")]
    BadHardwareLength,
    #[error("DHCPv4 magic cookie missing")]
    BadMagicCookie,
    #[error("an option or sub-option runs past the end of its field")]
    Truncated,
    #[error("DHCPv4 option 52 (overload) is malformed")]
    BadOverload,
    #[error("no vendor class \"BITLOCKER\" (v4 option 60 / v6 option 16 enterprise 311)")]
    NotBitlocker,
    #[error("DHCPv4 message type {0} is neither absent, DISCOVER (1) nor INFORM (8)")]
    WrongMessageType(u8),
    #[error("DHCPv6 message type {0} is neither Information-Request (11) nor Relay-Forward (12)")]
    WrongV6MessageType(u8),
    #[error("no vendor-specific information (v4 option 43 / v6 option 17 enterprise 311)")]
    MissingVendorInfo,
    #[error("no DHCPv4 option 125 block for enterprise 311")]
    MissingVendorIdentifyingInfo,
    #[error("an option that must appear once appears twice")]
    DuplicateOption,
    #[error("a sub-option appears twice")]
    DuplicateSubOption,
    #[error("certificate thumbprint sub-option missing")]
    MissingThumbprint,
    #[error("certificate thumbprint sub-option is not 20 bytes")]
    BadThumbprintLength,
    #[error("encrypted buffer (key protector) sub-option missing")]
    MissingKeyProtector,
    #[error("encrypted buffer (key protector) sub-option has the wrong length")]
    BadKeyProtectorLength,
    #[error("DHCPv6 relay nesting deeper than the accepted maximum")]
    RelayTooDeep,
    #[error("DHCPv6 Relay-Forward without a Relay-Message option")]
    MissingRelayMessage,
}

/// A `bde-network-unlock.ini` (WDS subnet policy) that cannot be used. The daemon refuses to start with it
/// (or keeps the previous policy on reload), mirroring WDS, which stops answering when the file is corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IniError {
    #[error("the file is neither UTF-8 nor UTF-16 with a byte-order mark; save it as UTF-8")]
    Encoding,
    #[error(
        "line {line}: text outside any [section]; start the file with [SUBNETS] or a [<thumbprint>] section"
    )]
    OutsideSection { line: usize },
    #[error(
        "line {line}: section [{name}] is neither [SUBNETS] nor a 40-hex-digit certificate thumbprint \
         (write the thumbprint without spaces, e.g. [2158a767e1c14e88e27a4c0aee111d2de2eafe60])"
    )]
    UnknownSection { line: usize, name: String },
    #[error("line {line}: malformed section header; expected [SUBNETS] or [<40 hex digits>]")]
    BadSectionHeader { line: usize },
    #[error("line {line}: section [{name}] appears twice; merge the two sections into one")]
    DuplicateSection { line: usize, name: String },
    #[error("line {line}: expected NAME=CIDR in [SUBNETS] (e.g. SUBNET1=10.185.250.0/24)")]
    BadSubnetLine { line: usize },
    #[error("line {line}: subnet name `{name}` is reserved; choose another name")]
    ReservedSubnetName { line: usize, name: String },
    #[error("line {line}: subnet name `{name}` is defined twice; give each subnet a unique name")]
    DuplicateSubnet { line: usize, name: String },
    #[error(
        "line {line}: `{value}` is not a subnet in CIDR notation (e.g. 10.0.0.0/24 or 2001:db8::/64)"
    )]
    BadCidr { line: usize, value: String },
    #[error(
        "line {line}: `{name}` is not a subnet defined in [SUBNETS]; define it there or comment it out with `;`"
    )]
    UndefinedSubnet { line: usize, name: String },
    #[error(
        "line {line}: expected a subnet name or DISABLED in a certificate section, found `{text}`"
    )]
    BadCertificateLine { line: usize, text: String },
}

/// Building a key store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyStoreError {
    #[error(
        "certificate {thumbprint} is loaded twice; each Network Unlock certificate may be configured only once"
    )]
    DuplicateThumbprint { thumbprint: String },
}

/// The client side could not build a key protector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("the certificate could not be parsed as X.509 DER: {0}")]
    BadCertificate(String),
    #[error("the certificate's public key is not an RSA-2048 key (Network Unlock needs RSA-2048)")]
    NotRsa2048,
    #[error("RSA PKCS#1 v1.5 encryption of the key protector failed")]
    Encrypt,
    #[error("the system random number generator failed")]
    Random,
}

/// A datagram is not an acceptable Network Unlock reply for the request a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply malformed: {0}")]
    Malformed(&'static str),
    #[error("not a reply of the expected type")]
    WrongMessageType,
    #[error("transaction id does not match the request")]
    XidMismatch,
    #[error("client hardware address does not match the request")]
    ChaddrMismatch,
    #[error("reply lacks the Network Unlock options")]
    NotNkpu,
    #[error("reply lacks a DHCPv6 Server Identifier")]
    MissingServerId,
    #[error("the key protector response does not authenticate under this client's session key")]
    BadTag,
    #[error("the key protector response decrypts to a different network key")]
    WrongKey,
}
