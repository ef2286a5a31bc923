//! What the daemon plugs into the pipeline without `netunlock` learning where the answers come from:
//! whether a client is this appliance's to answer (a group of appliances sharing the unlock work),
//! and where the outcome of each request goes (the escrow database). Both default to no-ops.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::outcome::Outcome;
use crate::family::Family;
use crate::nkpu::Thumbprint;

/// Who a request says it is: the client hardware address (DHCPv4 chaddr) or DUID (DHCPv6 Client-ID).
/// Chosen by the sender; used for fairness inside one source, ownership and records, never for trust.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientIdentity {
    Mac(Vec<u8>),
    Duid(Vec<u8>),
    /// A DHCPv6 request without a Client-ID.
    Unknown,
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mac(m) => {
                for (i, b) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(":")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
            Self::Duid(d) => f.write_str(&hex::encode(d)),
            Self::Unknown => f.write_str("-"),
        }
    }
}

/// Decides whether this appliance answers a client (issue 11: several appliances share the work and
/// each answers its share). Called after parsing and policy, before a request is queued; it must be
/// quick and must not block (the daemon keeps the membership in memory).
pub trait Ownership: Send + Sync {
    fn is_mine(&self, client: &ClientIdentity) -> bool;
}

/// Every client is ours (a single appliance).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllMine;

impl Ownership for AllMine {
    fn is_mine(&self, _client: &ClientIdentity) -> bool {
        true
    }
}

/// The outcome of one parsed request, as the daemon records it (issue 10).
#[derive(Debug, Clone)]
pub struct OutcomeRecord<'a> {
    pub family: Family,
    pub client: &'a ClientIdentity,
    /// The client's address as established by the trust checks (for a relayed request: `ciaddr` or
    /// the innermost peer address; for a refused one: the IP source).
    pub address: IpAddr,
    pub interface: &'a str,
    /// The trusted relay that forwarded the request, if any.
    pub relay: Option<IpAddr>,
    pub thumbprint: &'a Thumbprint,
    pub outcome: Outcome,
    pub at: SystemTime,
}

/// Receives the outcome of every parsed request. Called on the receive loop and on the RSA workers:
/// it must not block (queue the record and write it elsewhere).
pub trait OutcomeSink: Send + Sync {
    fn record(&self, record: &OutcomeRecord<'_>);
}

/// Records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRecords;

impl OutcomeSink for NoRecords {
    fn record(&self, _record: &OutcomeRecord<'_>) {}
}

/// The daemon's plug-ins for a responder.
#[derive(Clone)]
pub struct Hooks {
    pub ownership: Arc<dyn Ownership>,
    pub outcomes: Arc<dyn OutcomeSink>,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            ownership: Arc::new(AllMine),
            outcomes: Arc::new(NoRecords),
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}
