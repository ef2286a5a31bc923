//! Receive loops: parse, classify, rate-limit and queue. No RSA here, so a storm cannot stall receiving.

use std::net::{IpAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::interfaces::{NameCache, Served};
use super::metrics::NetunlockMetrics;
use super::outcome::{Family, LogLimiter, Outcome};
use super::pktinfo;
use super::queue::{BoundedQueue, PushError};
use super::ratelimit::{ClientKey, RateLimiter};
use super::workers::{Job, Request};
use super::{Heartbeat, ResponderConfig, ResponderError};
use crate::keystore::{Decision, KeyStore};
use crate::{v4, v6};

/// Largest datagram read; anything longer is cut, flagged truncated and ignored.
const RECV_BUFFER: usize = 9216;
/// Clients tracked by the rate limiter per family (a bucket is ~100 bytes).
const RATE_LIMIT_ENTRIES: usize = 65_536;
/// Datagrams handled per readiness event before yielding to other tasks.
const BATCH: usize = 256;

pub(crate) struct Context {
    pub config: ResponderConfig,
    pub keys: Arc<ArcSwap<KeyStore>>,
    pub metrics: Arc<NetunlockMetrics>,
    pub served: Served,
    pub queue: Arc<BoundedQueue<Job>>,
    pub heartbeat: Arc<Heartbeat>,
}

/// Per-loop mutable state (each loop owns its own; no locks on the hot path).
struct LoopState {
    limiter: RateLimiter,
    log_limit: LogLimiter,
    names: NameCache,
}

impl LoopState {
    fn new(ctx: &Context) -> Self {
        Self {
            limiter: RateLimiter::new(ctx.config.rate_limit, RATE_LIMIT_ENTRIES),
            log_limit: LogLimiter::new(5),
            names: NameCache::default(),
        }
    }
}

/// Fields of a per-request log line.
struct Seen<'a> {
    family: Family,
    client_id: &'a str,
    client: IpAddr,
    thumbprint: [u8; 20],
    interface: &'a str,
}

impl Context {
    /// Counts a request that is not answered and logs it at its level (rate-limited where a flood could
    /// fill the log).
    fn refuse(&self, st: &mut LoopState, seen: &Seen<'_>, outcome: Outcome) {
        self.metrics.count(seen.family, outcome);
        let suppressed = if outcome.log_is_limited() {
            match st.log_limit.admit(outcome, Instant::now()) {
                Some(s) => s,
                None => return,
            }
        } else {
            0
        };
        let why = match outcome {
            Outcome::UnknownCertificate => {
                "no loaded certificate has this thumbprint (the client's Group Policy certificate differs \
                 from the ones configured here)"
            }
            Outcome::SubnetRefused => {
                "the client's address is not in the certificate's allowed subnets"
            }
            Outcome::Disabled => {
                "the certificate is disabled (config or bde-network-unlock.ini DISABLED)"
            }
            Outcome::RateLimited => "the client exceeded its request rate",
            Outcome::QueueFull => {
                "the request queue is full (boot storm); raise queue_capacity or workers"
            }
            _ => "",
        };
        macro_rules! line {
            ($lvl:ident) => {
                tracing::$lvl!(
                    family = %seen.family,
                    client_id = %seen.client_id,
                    client = %seen.client,
                    thumbprint = %hex::encode(seen.thumbprint),
                    interface = %seen.interface,
                    outcome = outcome.as_str(),
                    suppressed,
                    "Network Unlock request not answered: {why}"
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
        from: std::net::SocketAddr,
        interface: &str,
        reason: &dyn std::fmt::Display,
    ) {
        self.metrics.count(family, Outcome::NotNkpu);
        tracing::debug!(%family, %from, interface, outcome = Outcome::NotNkpu.as_str(), "ignored datagram: {reason}");
    }

    /// Rate-limits and queues an answerable request.
    fn admit(&self, st: &mut LoopState, seen: &Seen<'_>, key: ClientKey, job: Job) {
        if !st.limiter.allow(&key, job.received) {
            return self.refuse(st, seen, Outcome::RateLimited);
        }
        match self.queue.push(job) {
            Ok(depth) => self.metrics.set_queue_depth(depth),
            Err(PushError::Full(_)) => self.refuse(st, seen, Outcome::QueueFull),
            // Shutting down: stay silent.
            Err(PushError::Closed(_)) => {}
        }
    }

    fn handle_v4(
        &self,
        st: &mut LoopState,
        data: &[u8],
        from: SocketAddrV4,
        arrival: pktinfo::V4Arrival,
        received: Instant,
    ) {
        let interface = st.names.name(&self.served, arrival.ifindex);
        let req = match v4::parse_request(data) {
            Ok(r) => r,
            Err(reason) => return self.not_nkpu(Family::V4, from.into(), &interface, &reason),
        };
        // Subnet policy is keyed on ciaddr (a relay's address is the IP source), the source if ciaddr is 0.
        let client = if req.ciaddr.is_unspecified() {
            *from.ip()
        } else {
            req.ciaddr
        };
        let mac = req.mac();
        let seen = Seen {
            family: Family::V4,
            client_id: &mac,
            client: IpAddr::V4(client),
            thumbprint: req.nkpu.thumbprint,
            interface: &interface,
        };
        let keys = self.keys.load_full();
        match keys.decide(&req.nkpu.thumbprint, IpAddr::V4(client)) {
            Decision::Answer(_) => {}
            Decision::UnknownCertificate => {
                return self.refuse(st, &seen, Outcome::UnknownCertificate);
            }
            Decision::SubnetRefused => return self.refuse(st, &seen, Outcome::SubnetRefused),
            Decision::Disabled => return self.refuse(st, &seen, Outcome::Disabled),
        }
        let (target, oif) = match v4::reply_target(&req) {
            Some(v4::ReplyTarget::Relay(a)) => {
                (SocketAddrV4::new(*a.ip(), self.config.v4_relay_port), 0)
            }
            Some(v4::ReplyTarget::Client(a)) => (
                SocketAddrV4::new(*a.ip(), self.config.v4_client_port),
                arrival.ifindex,
            ),
            None => {
                return self.not_nkpu(
                    Family::V4,
                    from.into(),
                    &interface,
                    &"neither ciaddr nor giaddr is set, so there is no address to answer",
                );
            }
        };
        let hlen = usize::from(req.hlen).min(req.chaddr.len());
        let key = ClientKey::V4 {
            mac: req.chaddr[..hlen].to_vec(),
            ciaddr: req.ciaddr,
        };
        let client_id = mac.clone();
        let job = Job {
            received,
            keys,
            oif,
            interface: interface.clone(),
            client_id,
            client_addr: IpAddr::V4(client),
            request: Request::V4 {
                req,
                target,
                source: arrival.local,
            },
        };
        self.admit(st, &seen, key, job);
    }

    fn handle_v6(
        &self,
        st: &mut LoopState,
        data: &[u8],
        from: SocketAddrV6,
        arrival: pktinfo::V6Arrival,
        received: Instant,
    ) {
        let interface = st.names.name(&self.served, arrival.ifindex);
        let req = match v6::parse_request(data) {
            Ok(r) => r,
            Err(reason) => return self.not_nkpu(Family::V6, from.into(), &interface, &reason),
        };
        let relayed = !req.relay_hops.is_empty();
        // Direct: the source is the client. Relayed: the innermost relay's peer-address is the client.
        let client = if relayed {
            req.innermost_peer().unwrap_or(*from.ip())
        } else {
            *from.ip()
        };
        let duid = req.client_duid_hex().unwrap_or_else(|| "-".to_string());
        let seen = Seen {
            family: Family::V6,
            client_id: &duid,
            client: IpAddr::V6(client),
            thumbprint: req.nkpu.thumbprint,
            interface: &interface,
        };
        let keys = self.keys.load_full();
        match keys.decide(&req.nkpu.thumbprint, IpAddr::V6(client)) {
            Decision::Answer(_) => {}
            Decision::UnknownCertificate => {
                return self.refuse(st, &seen, Outcome::UnknownCertificate);
            }
            Decision::SubnetRefused => return self.refuse(st, &seen, Outcome::SubnetRefused),
            Decision::Disabled => return self.refuse(st, &seen, Outcome::Disabled),
        }
        let port = if relayed {
            self.config.v6_relay_port
        } else {
            self.config.v6_client_port
        };
        // A link-local destination needs the arrival interface as scope.
        let scope = if is_link_local(from.ip()) {
            arrival.ifindex
        } else {
            0
        };
        let target = SocketAddrV6::new(*from.ip(), port, 0, scope);
        // A direct client is on the arrival link; a relay with a routable address is reached by routing.
        let oif = if relayed && scope == 0 {
            0
        } else {
            arrival.ifindex
        };
        let key = match &req.client_id {
            Some(d) => ClientKey::V6Duid(d.clone()),
            None => ClientKey::V6Addr(client),
        };
        let job = Job {
            received,
            keys,
            oif,
            interface: interface.clone(),
            client_id: duid.clone(),
            client_addr: IpAddr::V6(client),
            request: Request::V6 {
                req,
                target,
                source: pktinfo::v6_reply_source(arrival.header_dst),
            },
        };
        self.admit(st, &seen, key, job);
    }
}

fn is_link_local(a: &std::net::Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

fn transient(e: &std::io::Error) -> bool {
    // ICMP errors from earlier sends surface on the next recv of a UDP socket; none are fatal.
    !matches!(
        e.raw_os_error(),
        Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EINVAL)
    )
}

macro_rules! receive_loop {
    ($name:ident, $family:expr, $recv:path, $handle:ident) => {
        pub(crate) async fn $name(
            ctx: Arc<Context>,
            sock: Arc<UdpSocket>,
            shutdown: CancellationToken,
        ) -> Result<(), ResponderError> {
            let mut st = LoopState::new(&ctx);
            let mut buf = vec![0u8; RECV_BUFFER];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut errors = LogLimiter::new(1);
            ctx.heartbeat.beat($family);
            let result = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break Ok(()),
                    _ = tick.tick() => ctx.heartbeat.beat($family),
                    ready = sock.readable() => {
                        if let Err(e) = ready {
                            break Err(ResponderError::Receive(e));
                        }
                        let mut fatal = None;
                        for _ in 0..BATCH {
                            // try_io clears tokio's readiness when the kernel says WouldBlock.
                            let got = match sock.try_io(Interest::READABLE, || $recv(sock.as_fd(), &mut buf)) {
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                other => other,
                            };
                            let now = Instant::now();
                            match got {
                                Ok(r) => {
                                    // The client's clock started when the kernel got the datagram.
                                    // An age beyond a minute means the wall clock was stepped: ignore it.
                                    let received = r
                                        .kernel_age
                                        .filter(|age| *age < Duration::from_secs(60))
                                        .and_then(|age| now.checked_sub(age))
                                        .unwrap_or(now);
                                    ctx.metrics.received($family, r.len);
                                    let Some(arrival) = r.arrival else {
                                        ctx.not_nkpu($family, r.from.into(), "?", &"no packet info from the kernel");
                                        continue;
                                    };
                                    if !ctx.served.serves(arrival.ifindex) {
                                        // Not an interface we serve: not ours to count or answer.
                                        continue;
                                    }
                                    if r.truncated {
                                        let name = st.names.name(&ctx.served, arrival.ifindex);
                                        ctx.not_nkpu($family, r.from.into(), &name, &"datagram larger than any NKPU request");
                                        continue;
                                    }
                                    ctx.$handle(&mut st, &buf[..r.len], r.from, arrival, received);
                                }
                                Err(e) if transient(&e) => {
                                    if errors.admit(Outcome::NotNkpu, now).is_some() {
                                        tracing::debug!(family = %$family, "receive error (ignored): {e}");
                                    }
                                }
                                Err(e) => {
                                    fatal = Some(e);
                                    break;
                                }
                            }
                        }
                        ctx.heartbeat.beat($family);
                        if let Some(e) = fatal {
                            break Err(ResponderError::Receive(e));
                        }
                    }
                }
            };
            ctx.heartbeat.stop($family);
            result
        }
    };
}

receive_loop!(run_v4, Family::V4, pktinfo::recv_v4, handle_v4);
receive_loop!(run_v6, Family::V6, pktinfo::recv_v6, handle_v6);
