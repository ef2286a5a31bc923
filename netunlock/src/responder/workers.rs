//! The RSA worker pool: OS threads that take jobs from the bounded queue, compute the reply and send it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::error::ResponderError;
use super::metrics::NetunlockMetrics;
use super::outcome::{Family, LogLimiter, Outcome};
use super::pktinfo;
use super::queue::{BoundedQueue, is_expired};
use crate::keystore::KeyStore;
use crate::nkpu::Thumbprint;
use crate::{v4, v6};

/// The request itself, per family.
pub(crate) enum Request {
    V4 {
        req: v4::V4Request,
        target: SocketAddrV4,
        source: Ipv4Addr,
    },
    V6 {
        req: v6::V6Request,
        target: SocketAddrV6,
        source: Ipv6Addr,
    },
}

/// One request accepted for an answer, waiting for a worker.
pub(crate) struct Job {
    pub received: Instant,
    /// The key store snapshot the decision was made with (a reload meanwhile does not change it).
    pub keys: Arc<KeyStore>,
    /// Interface the reply is pinned to: the arrival interface for an on-link client (its address may
    /// only be reachable there: broadcast arrival, link-local v6); 0 for a routed relay, whose reply
    /// follows the routing table like any unicast.
    pub oif: u32,
    pub interface: Arc<str>,
    /// For the log line: MAC (v4) or DUID (v6) and the client's address.
    pub client_id: String,
    pub client_addr: IpAddr,
    pub request: Request,
}

impl Job {
    fn family(&self) -> Family {
        match self.request {
            Request::V4 { .. } => Family::V4,
            Request::V6 { .. } => Family::V6,
        }
    }

    fn thumbprint(&self) -> &Thumbprint {
        match &self.request {
            Request::V4 { req, .. } => &req.nkpu.thumbprint,
            Request::V6 { req, .. } => &req.nkpu.thumbprint,
        }
    }
}

/// What workers share: sockets to send on, metrics, and the v6 server DUID.
pub(crate) struct Shared {
    v4: Option<Arc<UdpSocket>>,
    v6: Option<Arc<UdpSocket>>,
    metrics: Arc<NetunlockMetrics>,
    server_duid: Vec<u8>,
    max_age: Duration,
    /// The age up to which a finished reply is still sent: max_age minus 1 % (20 ms for 2 s), so a
    /// thread preempted between this check and sendmsg cannot deliver it after the client gave up.
    send_deadline: Duration,
    log_limit: Mutex<LogLimiter>,
}

impl Shared {
    pub fn new(
        v4: Option<Arc<UdpSocket>>,
        v6: Option<Arc<UdpSocket>>,
        metrics: Arc<NetunlockMetrics>,
        server_duid: Vec<u8>,
        max_age: Duration,
    ) -> Self {
        Self {
            v4,
            v6,
            metrics,
            server_duid,
            max_age,
            send_deadline: max_age.saturating_sub(max_age / 100),
            log_limit: Mutex::new(LogLimiter::new(5)),
        }
    }

    fn expired(&self, job: &Job, stage: &'static str) {
        let family = job.family();
        self.metrics.count(family, Outcome::Expired);
        let admitted = self
            .log_limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(Outcome::Expired, Instant::now());
        if let Some(suppressed) = admitted {
            tracing::warn!(
                %family,
                client_id = %job.client_id,
                client = %job.client_addr,
                thumbprint = %hex::encode(job.thumbprint()),
                interface = %job.interface,
                outcome = Outcome::Expired.as_str(),
                waited_ms = job.received.elapsed().as_millis() as u64,
                stage,
                suppressed,
                "Network Unlock request dropped: older than the client's retry window (more requests than the \
                 workers can answer in time; add cores or spread the boots)"
            );
        }
    }

    /// Answers one job, or drops it if it is too old.
    pub fn process(&self, job: Job) {
        if is_expired(job.received, Instant::now(), self.max_age) {
            return self.expired(&job, "queued");
        }
        let family = job.family();
        let Some((key, _)) = job
            .keys
            .keys()
            .find(|(k, _)| k.thumbprint() == *job.thumbprint())
        else {
            // Cannot happen: the decision was made on this same snapshot. Stay silent regardless.
            self.metrics.count(family, Outcome::UnknownCertificate);
            return;
        };
        let (datagram, to, sent) = match &job.request {
            Request::V4 {
                req,
                target,
                source,
            } => {
                let kpr = key.answer(&req.nkpu.key_protector);
                let reply = v4::build_reply(req, &kpr);
                if is_expired(job.received, Instant::now(), self.send_deadline) {
                    return self.expired(&job, "answered");
                }
                let sent = match &self.v4 {
                    Some(s) => send_with_retry(|| {
                        pktinfo::send_v4(s.as_fd(), &reply, *target, job.oif, *source)
                    }),
                    None => Err(std::io::Error::other("DHCPv4 socket is off")),
                };
                (reply.len(), SocketAddr::V4(*target), sent)
            }
            Request::V6 {
                req,
                target,
                source,
            } => {
                let kpr = key.answer(&req.nkpu.key_protector);
                let reply = v6::build_reply(req, &self.server_duid, &kpr);
                if is_expired(job.received, Instant::now(), self.send_deadline) {
                    return self.expired(&job, "answered");
                }
                let sent = match &self.v6 {
                    Some(s) => send_with_retry(|| {
                        pktinfo::send_v6(s.as_fd(), &reply, *target, job.oif, *source)
                    }),
                    None => Err(std::io::Error::other("DHCPv6 socket is off")),
                };
                (reply.len(), SocketAddr::V6(*target), sent)
            }
        };
        let elapsed = job.received.elapsed();
        match sent {
            Ok(n) => {
                self.metrics.count(family, Outcome::Answered);
                self.metrics.sent(family, n);
                self.metrics.observe_duration(family, elapsed);
                tracing::info!(
                    %family,
                    client_id = %job.client_id,
                    client = %job.client_addr,
                    thumbprint = %hex::encode(job.thumbprint()),
                    interface = %job.interface,
                    reply_to = %to,
                    outcome = Outcome::Answered.as_str(),
                    latency_us = elapsed.as_micros() as u64,
                    "Network Unlock request answered"
                );
            }
            Err(e) => {
                self.metrics.send_error(family);
                tracing::warn!(
                    %family,
                    client_id = %job.client_id,
                    client = %job.client_addr,
                    interface = %job.interface,
                    reply_to = %to,
                    bytes = datagram,
                    "cannot send the Network Unlock reply: {e} (is there a route to the client or relay?)"
                );
            }
        }
    }
}

/// Sends, waiting briefly for buffer space if the (non-blocking) socket's send buffer is momentarily
/// full. Workers are plain threads, so a short sleep is the simplest correct wait.
fn send_with_retry(mut send: impl FnMut() -> std::io::Result<usize>) -> std::io::Result<usize> {
    for _ in 0..20 {
        match send() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
    send()
}

/// The worker threads.
pub(crate) struct Pool {
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    pub fn start(
        n: usize,
        queue: Arc<BoundedQueue<Job>>,
        shared: Arc<Shared>,
    ) -> Result<Self, ResponderError> {
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let queue = queue.clone();
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("nkpu-worker-{i}"))
                .spawn(move || {
                    while let Some(job) = queue.pop() {
                        shared.metrics.set_queue_depth(queue.len());
                        shared.process(job);
                    }
                })
                .map_err(ResponderError::Spawn)?;
            threads.push(handle);
        }
        Ok(Self { threads })
    }

    /// Waits for the threads (the queue must be closed first). Returns false if `grace` ran out; the
    /// remaining threads are detached (they exit once the queue is empty).
    pub fn join(self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        let mut all = true;
        for t in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                all = false;
            }
        }
        all
    }
}
