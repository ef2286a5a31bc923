//! The RSA worker pool: OS threads that take jobs from the fair queue, compute the reply and send it.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;

use super::dhcp::Dhcp;
use super::error::ResponderError;
use super::fairq::is_expired;
use super::hooks::{ClientIdentity, Hooks, OutcomeRecord};
use super::metrics::NetunlockMetrics;
use super::outcome::{LogGate, Outcome};
use super::receive::WorkQueue;
use crate::family::Family;
use crate::keystore::KeyStore;
use crate::nkpu::Thumbprint;

/// What every job carries for its log line, metrics and outcome record.
pub(crate) struct Meta {
    pub family: Family,
    pub received: Instant,
    pub identity: ClientIdentity,
    /// The client's address as the trust checks established it.
    pub address: IpAddr,
    /// The IP source (the client, or its relay).
    pub source: IpAddr,
    pub relay: Option<IpAddr>,
    pub thumbprint: Thumbprint,
    pub interface: Arc<str>,
}

/// A queued request, whatever its family.
pub(crate) trait Work: Send {
    fn run(self: Box<Self>, shared: &Shared);
}

/// One request accepted for an answer, waiting for a worker.
pub(crate) struct Job<F: Dhcp> {
    pub meta: Meta,
    /// The key store snapshot the decision was made with (a reload meanwhile does not change it).
    pub keys: Arc<KeyStore>,
    /// The socket the request arrived on; the reply leaves by it.
    pub sock: Arc<UdpSocket>,
    pub req: F::Request,
    pub dest: F::Dest,
    /// 0 = by the routing table; otherwise out of this interface (on-link clients).
    pub oif: u32,
    pub local: F::Local,
}

/// What workers share.
pub(crate) struct Shared {
    pub metrics: Arc<NetunlockMetrics>,
    pub server_duid: Vec<u8>,
    pub max_age: Duration,
    /// The age up to which a finished reply is still sent: max_age minus 1 % (20 ms for 2 s), so a
    /// thread preempted between this check and sendmsg cannot deliver it after the client gave up.
    pub send_deadline: Duration,
    pub gate: Arc<LogGate>,
    pub hooks: Hooks,
}

impl Shared {
    pub fn new(
        metrics: Arc<NetunlockMetrics>,
        server_duid: Vec<u8>,
        max_age: Duration,
        gate: Arc<LogGate>,
        hooks: Hooks,
    ) -> Self {
        Self {
            metrics,
            server_duid,
            max_age,
            send_deadline: max_age.saturating_sub(max_age / 100),
            gate,
            hooks,
        }
    }

    /// Counts and records the final outcome of a job; says whether its log line may be written.
    fn finish(&self, meta: &Meta, outcome: Outcome) -> bool {
        self.metrics.count(meta.family, outcome);
        self.hooks.outcomes.record(&OutcomeRecord {
            family: meta.family,
            client: &meta.identity,
            address: meta.address,
            interface: &meta.interface,
            relay: meta.relay,
            thumbprint: &meta.thumbprint,
            outcome,
            at: SystemTime::now(),
        });
        self.gate
            .admit(meta.family, outcome, meta.source, Instant::now())
    }

    fn expired(&self, meta: &Meta, stage: &'static str) {
        if self.finish(meta, Outcome::Expired) {
            tracing::warn!(
                family = %meta.family,
                client_id = %meta.identity,
                client = %meta.address,
                source = %meta.source,
                thumbprint = %hex::encode(meta.thumbprint),
                interface = %meta.interface,
                outcome = Outcome::Expired.as_str(),
                waited_ms = meta.received.elapsed().as_millis() as u64,
                stage,
                "Network Unlock request not answered: {}",
                Outcome::Expired.explanation()
            );
        }
    }

    fn send_failed(&self, meta: &Meta, to: SocketAddr, error: &dyn std::fmt::Display) {
        self.metrics.send_error(meta.family);
        if self.finish(meta, Outcome::SendFailed) {
            tracing::warn!(
                family = %meta.family,
                client_id = %meta.identity,
                client = %meta.address,
                interface = %meta.interface,
                reply_to = %to,
                outcome = Outcome::SendFailed.as_str(),
                "cannot send the Network Unlock reply: {error} (is there a route to the client or relay?)"
            );
        }
    }
}

impl<F: Dhcp> Work for Job<F> {
    fn run(self: Box<Self>, shared: &Shared) {
        let meta = &self.meta;
        if is_expired(meta.received, Instant::now(), shared.max_age) {
            return shared.expired(meta, "queued");
        }
        let to: SocketAddr = self.dest.into();
        let Some(key) = self.keys.key(&meta.thumbprint) else {
            // Cannot happen: the decision was made on this same snapshot. Stay silent regardless.
            shared.finish(meta, Outcome::UnknownCertificate);
            return;
        };
        let kpr = key.answer(&F::nkpu(&self.req).key_protector);
        let reply = match F::build(&self.req, &kpr, &shared.server_duid) {
            Ok(r) => r,
            Err(e) => return shared.send_failed(meta, to, &e),
        };
        if is_expired(meta.received, Instant::now(), shared.send_deadline) {
            return shared.expired(meta, "answered");
        }
        let sent =
            send_with_retry(|| F::send(self.sock.as_fd(), &reply, self.dest, self.oif, self.local));
        let elapsed = meta.received.elapsed();
        match sent {
            Ok(n) => {
                shared.metrics.sent(meta.family, n);
                shared.metrics.observe_duration(meta.family, elapsed);
                if shared.finish(meta, Outcome::Answered) {
                    tracing::info!(
                        family = %meta.family,
                        client_id = %meta.identity,
                        client = %meta.address,
                        thumbprint = %hex::encode(meta.thumbprint),
                        interface = %meta.interface,
                        reply_to = %to,
                        outcome = Outcome::Answered.as_str(),
                        latency_us = elapsed.as_micros() as u64,
                        "Network Unlock request answered"
                    );
                }
            }
            Err(e) => shared.send_failed(meta, to, &e),
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
        queue: Arc<WorkQueue>,
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
                        job.run(&shared);
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
