//! The receive loop, written once for both families: parse, check trust, decide, ask ownership, limit
//! and queue. No RSA here, so a storm cannot stall receiving.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::dhcp::{Dhcp, peer_ip};
use super::fairq::{FairQueue, PushError};
use super::hooks::{ClientIdentity, Hooks, OutcomeRecord};
use super::limits::{Limits, Source};
use super::metrics::NetunlockMetrics;
use super::outcome::{LogGate, Outcome};
use super::workers::{Job, Meta, Work};
use super::{Heartbeat, ResponderConfig, ResponderError};
use crate::family::Family;
use crate::keystore::{Decision, KeyStore};
use crate::netif::{NameCache, Served};
use crate::nkpu::Thumbprint;
use crate::trust::{HostAddrs, Path, Refusal, TrustEnv, TrustedRelays};

/// Largest datagram read; anything longer is cut, flagged truncated and ignored.
const RECV_BUFFER: usize = 9216;
/// Keys tracked by each rate limiter per family (an entry is well under 100 bytes).
const RATE_LIMIT_KEYS: usize = 65_536;
/// Datagrams handled per readiness event before yielding to other tasks.
const BATCH: usize = 256;

/// The queue of answerable requests: fair across sources, then across clients.
pub(crate) type WorkQueue = FairQueue<Source, ClientIdentity, Box<dyn Work>>;

pub(crate) struct Context {
    pub config: ResponderConfig,
    pub keys: Arc<ArcSwap<KeyStore>>,
    pub relays: Arc<ArcSwap<TrustedRelays>>,
    pub host: Arc<ArcSwap<HostAddrs>>,
    pub metrics: Arc<NetunlockMetrics>,
    pub served: Served,
    pub queue: Arc<WorkQueue>,
    pub heartbeat: Arc<Heartbeat>,
    pub gate: Arc<LogGate>,
    pub hooks: Hooks,
}

/// Per-loop mutable state (each loop owns its own; no locks on the hot path).
struct LoopState {
    limits: Limits,
    names: NameCache,
}

/// A parsed request on its way through the checks, for the log line and the outcome record.
struct Seen<'a> {
    family: Family,
    identity: &'a ClientIdentity,
    /// The IP source (before the trust checks), then the client's address.
    address: IpAddr,
    source: IpAddr,
    relay: Option<IpAddr>,
    thumbprint: &'a Thumbprint,
    interface: &'a str,
}

impl Context {
    /// Counts, records and (within the log budget) logs a request that is not answered.
    fn refuse(&self, seen: &Seen<'_>, outcome: Outcome, detail: &str) {
        self.metrics.count(seen.family, outcome);
        self.hooks.outcomes.record(&OutcomeRecord {
            family: seen.family,
            client: seen.identity,
            address: seen.address,
            interface: seen.interface,
            relay: seen.relay,
            thumbprint: seen.thumbprint,
            outcome,
            at: SystemTime::now(),
        });
        if !self
            .gate
            .admit(seen.family, outcome, seen.source, Instant::now())
        {
            return;
        }
        let why = outcome.explanation();
        macro_rules! line {
            ($lvl:ident) => {
                tracing::$lvl!(
                    family = %seen.family,
                    client_id = %seen.identity,
                    client = %seen.address,
                    source = %seen.source,
                    thumbprint = %hex::encode(seen.thumbprint),
                    interface = %seen.interface,
                    outcome = outcome.as_str(),
                    "Network Unlock request not answered: {why}{detail}"
                )
            };
        }
        match outcome.level() {
            tracing::Level::WARN => line!(warn),
            tracing::Level::INFO => line!(info),
            _ => line!(debug),
        }
    }

    fn not_nkpu(
        &self,
        family: Family,
        from: SocketAddr,
        interface: &str,
        reason: &dyn std::fmt::Display,
    ) {
        self.metrics.count(family, Outcome::NotNkpu);
        if self
            .gate
            .admit(family, Outcome::NotNkpu, from.ip(), Instant::now())
        {
            tracing::debug!(%family, %from, interface, outcome = Outcome::NotNkpu.as_str(), "ignored datagram: {reason}");
        }
    }

    /// One datagram from a served interface.
    fn handle<F: Dhcp>(
        &self,
        st: &mut LoopState,
        sock: &Arc<UdpSocket>,
        data: &[u8],
        from: F::Peer,
        arrival: F::Arrival,
        received: Instant,
    ) {
        let ifindex = F::ifindex(&arrival);
        let interface = st.names.name(&self.served, ifindex);
        let req = match F::parse(data) {
            Ok(r) => r,
            Err(reason) => return self.not_nkpu(F::FAMILY, from.into(), &interface, &reason),
        };
        let identity = F::identity(&req);
        let thumbprint = F::nkpu(&req).thumbprint;
        let source = peer_ip(from);
        let mut seen = Seen {
            family: F::FAMILY,
            identity: &identity,
            address: source,
            source,
            relay: None,
            thumbprint: &thumbprint,
            interface: &interface,
        };

        let admission = {
            let host = self.host.load();
            let relays = self.relays.load();
            let env = TrustEnv {
                host: &host,
                relays: &relays,
            };
            F::admit(&req, from, ifindex, F::ports(&self.config), env)
        };
        let admission = match admission {
            Ok(a) => a,
            Err(refusal) => {
                let (outcome, detail) = match refusal {
                    Refusal::SourceMismatch { source, ciaddr } => (
                        Outcome::SourceMismatch,
                        format!(" (IP source {source}, ciaddr {ciaddr})"),
                    ),
                    Refusal::UntrustedRelay { source } => (
                        Outcome::UntrustedRelay,
                        format!(" ({source} is not in trusted_relays)"),
                    ),
                    Refusal::BadDestination { addr, why } => {
                        (Outcome::BadDestination, format!(" ({addr} is {why})"))
                    }
                };
                return self.refuse(&seen, outcome, &detail);
            }
        };
        seen.address = admission.client;
        let relayed = match admission.path {
            Path::Relayed(relay) => {
                seen.relay = Some(relay);
                true
            }
            Path::Direct => false,
        };

        let keys = self.keys.load_full();
        match keys.decide(&thumbprint, &admission.policy) {
            Decision::Answer(_) => {}
            Decision::UnknownCertificate => {
                return self.refuse(&seen, Outcome::UnknownCertificate, "");
            }
            Decision::SubnetRefused => return self.refuse(&seen, Outcome::SubnetRefused, ""),
            Decision::Disabled => return self.refuse(&seen, Outcome::Disabled, ""),
        }
        if !self.hooks.ownership.is_mine(&identity) {
            return self.refuse(&seen, Outcome::NotMine, "");
        }
        let key = Source {
            addr: source,
            relay: relayed,
        };
        if !st.limits.allow(key, &identity) {
            return self.refuse(&seen, Outcome::RateLimited, "");
        }
        let meta = Meta {
            family: F::FAMILY,
            received,
            identity: identity.clone(),
            address: admission.client,
            source,
            relay: seen.relay,
            thumbprint,
            interface: interface.clone(),
        };
        let job: Box<dyn Work> = Box::new(Job::<F> {
            meta,
            keys,
            sock: sock.clone(),
            req,
            dest: admission.reply_to,
            oif: admission.oif,
            local: F::reply_source(&arrival),
        });
        let weight = if relayed { self.config.relay_share } else { 1 };
        match self.queue.push(key, weight, identity.clone(), job) {
            Ok(depth) => self.metrics.set_queue_depth(depth),
            Err(PushError::Full(_)) => self.refuse(&seen, Outcome::QueueFull, ""),
            // Shutting down: the request is not answered; count it so nothing goes unaccounted.
            Err(PushError::Closed(_)) => self.refuse(&seen, Outcome::Expired, " (shutting down)"),
        }
    }
}

fn transient(e: &std::io::Error) -> bool {
    // ICMP errors from earlier sends surface on the next recv of a UDP socket; none are fatal.
    !matches!(
        e.raw_os_error(),
        Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EINVAL)
    )
}

/// The receive loop of one family's socket; returns when `shutdown` is cancelled or the socket fails.
pub(crate) async fn run<F: Dhcp>(
    ctx: Arc<Context>,
    sock: Arc<UdpSocket>,
    shutdown: CancellationToken,
) -> Result<(), ResponderError> {
    let family = F::FAMILY;
    let mut st = LoopState {
        limits: Limits::new(
            ctx.config.rate_limit,
            ctx.config.relay_share,
            RATE_LIMIT_KEYS,
        ),
        names: NameCache::default(),
    };
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_error_logged: Option<Instant> = None;
    ctx.heartbeat.beat(family);
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = tick.tick() => ctx.heartbeat.beat(family),
            ready = sock.readable() => {
                if let Err(e) = ready {
                    break Err(ResponderError::Receive(e));
                }
                let mut fatal = None;
                for _ in 0..BATCH {
                    // try_io clears tokio's readiness when the kernel says WouldBlock.
                    let got = match sock.try_io(Interest::READABLE, || F::recv(sock.as_fd(), &mut buf)) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        other => other,
                    };
                    let now = Instant::now();
                    match got {
                        Ok(r) => {
                            // The client's clock started when the kernel got the datagram. An age
                            // beyond a minute means the wall clock was stepped: ignore it.
                            let received = r
                                .kernel_age
                                .filter(|age| *age < Duration::from_secs(60))
                                .and_then(|age| now.checked_sub(age))
                                .unwrap_or(now);
                            ctx.metrics.received(family, r.len);
                            let Some(arrival) = r.arrival else {
                                ctx.not_nkpu(family, r.from.into(), "?", &"no packet info from the kernel");
                                continue;
                            };
                            if !ctx.served.serves(F::ifindex(&arrival)) {
                                // Not an interface we serve: not ours to count or answer.
                                continue;
                            }
                            if r.truncated {
                                let name = st.names.name(&ctx.served, F::ifindex(&arrival));
                                ctx.not_nkpu(family, r.from.into(), &name, &"datagram larger than any NKPU request");
                                continue;
                            }
                            ctx.handle::<F>(&mut st, &sock, &buf[..r.len], r.from, arrival, received);
                        }
                        Err(e) if transient(&e) => {
                            if last_error_logged.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                                last_error_logged = Some(now);
                                tracing::debug!(%family, "receive error (ignored): {e}");
                            }
                        }
                        Err(e) => {
                            fatal = Some(e);
                            break;
                        }
                    }
                }
                ctx.heartbeat.beat(family);
                if let Some(e) = fatal {
                    break Err(ResponderError::Receive(e));
                }
            }
        }
    };
    ctx.heartbeat.stop(family);
    result
}
