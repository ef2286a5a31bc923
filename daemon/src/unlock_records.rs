//! Unlock ↔ escrow: the responder's outcomes carried into the escrow database. The responder calls
//! [`UnlockRecorder::record`] on its hot paths, so that only converts and `try_send`s into a bounded
//! queue (a full queue drops the record and counts it; the responder never waits). A writer task
//! drains the queue in batches into `EscrowService::record_unlock_events`, prunes records older
//! than the retention, and refreshes the unlock gauges. `netunlock` and `escrow` stay unaware of
//! each other: this module is the adapter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use escrow::{EscrowService, MacAddress, UnlockEvent};
use netunlock::responder::{ClientIdentity, OutcomeRecord, OutcomeSink};
use prometheus::{IntCounter, IntGauge, Registry};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::unlock_records::UnlockRecordSettings;

/// Records written per database transaction at most.
const BATCH: usize = 512;
/// How often the writer prunes old records.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// The responder's [`OutcomeSink`]: converts and queues, never blocks.
pub(crate) struct UnlockRecorder {
    queue: mpsc::Sender<UnlockEvent>,
    metrics: RecorderMetrics,
}

#[derive(Clone)]
struct RecorderMetrics {
    dropped: IntCounter,
    written: IntCounter,
    write_failures: IntCounter,
    devices_without_unlock: IntGauge,
    unknown_adapters: IntGauge,
    stored: IntGauge,
}

impl RecorderMetrics {
    fn register(registry: &Registry) -> Result<Self> {
        let counter = |name: &str, help: &str| -> Result<IntCounter> {
            let c = IntCounter::new(name, help).with_context(|| format!("cannot create {name}"))?;
            registry
                .register(Box::new(c.clone()))
                .with_context(|| format!("cannot register {name}"))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge> {
            let g = IntGauge::new(name, help).with_context(|| format!("cannot create {name}"))?;
            registry
                .register(Box::new(g.clone()))
                .with_context(|| format!("cannot register {name}"))?;
            Ok(g)
        };
        Ok(Self {
            dropped: counter(
                "netunlockd_unlock_records_dropped_total",
                "Network Unlock outcomes not recorded in the escrow database because the record queue was full.",
            )?,
            written: counter(
                "netunlockd_unlock_records_written_total",
                "Network Unlock outcomes written to the escrow database.",
            )?,
            write_failures: counter(
                "netunlockd_unlock_record_write_failures_total",
                "Batches of Network Unlock outcomes lost because the escrow database refused the write.",
            )?,
            devices_without_unlock: gauge(
                "netunlockd_devices_without_unlock",
                "Enrolled devices that report adapters but had no answered Network Unlock request in the configured window.",
            )?,
            unknown_adapters: gauge(
                "netunlockd_unlock_unknown_adapters",
                "Adapters (MAC addresses) that asked for Network Unlock in the configured window but that no enrolled device reports.",
            )?,
            stored: gauge(
                "netunlockd_unlock_records_stored",
                "Network Unlock outcomes currently kept in the escrow database.",
            )?,
        })
    }
}

impl OutcomeSink for UnlockRecorder {
    fn record(&self, record: &OutcomeRecord<'_>) {
        if self.queue.try_send(to_event(record)).is_err() {
            self.metrics.dropped.inc();
        }
    }
}

enum Step {
    Received(usize),
    Maintain,
    Stop,
}

/// The queue's receiving end and what the writer needs; started once escrow is open.
pub(crate) struct RecorderWriter {
    queue: mpsc::Receiver<UnlockEvent>,
    metrics: RecorderMetrics,
    settings: UnlockRecordSettings,
}

/// Create the sink (for the responder) and its writer (for after the escrow service is open).
pub(crate) fn recorder(
    settings: &UnlockRecordSettings,
    registry: &Registry,
) -> Result<(Arc<UnlockRecorder>, RecorderWriter)> {
    let metrics = RecorderMetrics::register(registry)?;
    let (tx, rx) = mpsc::channel(settings.queue_capacity);
    Ok((
        Arc::new(UnlockRecorder {
            queue: tx,
            metrics: metrics.clone(),
        }),
        RecorderWriter {
            queue: rx,
            metrics,
            settings: settings.clone(),
        },
    ))
}

impl RecorderWriter {
    /// Write batches until shutdown (then flush what is queued), pruning and refreshing gauges
    /// every few minutes.
    pub(crate) async fn run(mut self, service: EscrowService, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut next_prune = Instant::now();
        let mut next_gauges = Instant::now();
        loop {
            if Instant::now() >= next_prune {
                self.prune(&service).await;
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            if Instant::now() >= next_gauges {
                self.refresh_gauges(&service).await;
                next_gauges = Instant::now() + self.settings.gauge_refresh;
            }
            let wait = next_prune
                .min(next_gauges)
                .saturating_duration_since(Instant::now());
            // The select only decides; the buffer is used after it, when no future borrows it.
            let step = tokio::select! {
                n = self.queue.recv_many(&mut batch, BATCH) => Step::Received(n),
                () = tokio::time::sleep(wait) => Step::Maintain,
                () = shutdown.cancelled() => Step::Stop,
            };
            match step {
                Step::Received(0) => return,
                Step::Received(_) => self.write(&service, &mut batch).await,
                Step::Maintain => {}
                Step::Stop => {
                    // Flush what the responder queued before it stopped.
                    while let Ok(event) = self.queue.try_recv() {
                        batch.push(event);
                        if batch.len() == BATCH {
                            self.write(&service, &mut batch).await;
                        }
                    }
                    if !batch.is_empty() {
                        self.write(&service, &mut batch).await;
                    }
                    return;
                }
            }
        }
    }

    async fn write(&self, service: &EscrowService, batch: &mut Vec<UnlockEvent>) {
        let n = batch.len() as u64;
        match service.record_unlock_events(batch).await {
            Ok(()) => self.metrics.written.inc_by(n),
            Err(e) => {
                self.metrics.write_failures.inc();
                tracing::warn!(error = %e, records = n, "cannot record Network Unlock outcomes in the escrow database");
            }
        }
        batch.clear();
    }

    async fn prune(&self, service: &EscrowService) {
        match service.prune_unlock_events(self.settings.retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned old Network Unlock records"),
            Err(e) => tracing::warn!(error = %e, "cannot prune Network Unlock records"),
        }
    }

    async fn refresh_gauges(&self, service: &EscrowService) {
        match service.unlock_gauges(self.settings.no_unlock_days).await {
            Ok(g) => {
                self.metrics
                    .devices_without_unlock
                    .set(g.devices_without_unlock);
                self.metrics.unknown_adapters.set(g.unknown_adapters);
                self.metrics.stored.set(g.events_stored);
            }
            Err(e) => tracing::warn!(error = %e, "cannot compute the Network Unlock gauges"),
        }
    }
}

/// The escrow's form of a responder outcome (pure).
fn to_event(r: &OutcomeRecord<'_>) -> UnlockEvent {
    UnlockEvent {
        at: time::OffsetDateTime::from(r.at),
        family: r.family.as_str().to_owned(),
        client: r.client.to_string(),
        mac: mac_of(r.client),
        address: r.address.to_string(),
        interface: r.interface.to_owned(),
        relay: r.relay.map(|a| a.to_string()),
        thumbprint: hex::encode(r.thumbprint),
        outcome: r.outcome.as_str().to_owned(),
    }
}

/// The adapter MAC a client identity carries: the DHCPv4 hardware address, or the link-layer
/// address inside a DHCPv6 DUID-LLT (type 1) or DUID-LL (type 3) of hardware type Ethernet (1).
/// UEFI firmware builds its DUID from the NIC's MAC, so v4 and v6 requests join the same adapter.
pub(crate) fn mac_of(client: &ClientIdentity) -> Option<MacAddress> {
    match client {
        ClientIdentity::Mac(m) => MacAddress::from_bytes(m),
        ClientIdentity::Duid(d) => match d.as_slice() {
            [0, 1, 0, 1, _, _, _, _, rest @ ..] | [0, 3, 0, 1, rest @ ..] => {
                MacAddress::from_bytes(rest)
            }
            _ => None,
        },
        ClientIdentity::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_come_from_chaddr_and_link_layer_duids() {
        let mac = MacAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        let m = mac.0;
        let cases: Vec<(ClientIdentity, Option<MacAddress>)> = vec![
            (ClientIdentity::Mac(m.to_vec()), Some(mac)),
            // DUID-LLT: type 1, hardware 1, 4 bytes of time, MAC.
            (
                ClientIdentity::Duid([&[0, 1, 0, 1, 0x2a, 0, 0, 1][..], &m].concat()),
                Some(mac),
            ),
            // DUID-LL: type 3, hardware 1, MAC.
            (
                ClientIdentity::Duid([&[0, 3, 0, 1][..], &m].concat()),
                Some(mac),
            ),
            // DUID-EN (type 2) and DUID-UUID (type 4) carry no MAC.
            (
                ClientIdentity::Duid([&[0, 2, 0, 0, 0x01, 0x37][..], &m].concat()),
                None,
            ),
            (ClientIdentity::Duid(vec![0, 4, 1, 2, 3]), None),
            // Not Ethernet (hardware type 6, IEEE 802), or a truncated address.
            (ClientIdentity::Duid([&[0, 3, 0, 6][..], &m].concat()), None),
            (ClientIdentity::Duid(vec![0, 3, 0, 1, 1, 2, 3]), None),
            (ClientIdentity::Mac(vec![1, 2, 3]), None),
            (ClientIdentity::Mac(vec![0; 6]), None),
            (ClientIdentity::Unknown, None),
        ];
        for (client, want) in cases {
            assert_eq!(mac_of(&client), want, "{client:?}");
        }
    }
}
