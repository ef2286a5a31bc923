//! Prometheus metrics of the responder, registered on an explicit Registry (never the global one).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::outcome::Outcome;
use crate::family::Family;
use crate::keystore::KeyStore;

pub const REQUESTS_TOTAL: &str = "netunlockd_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "netunlockd_request_duration_seconds";
pub const QUEUE_DEPTH: &str = "netunlockd_queue_depth";
pub const RECEIVED_BYTES_TOTAL: &str = "netunlockd_received_bytes_total";
pub const SENT_BYTES_TOTAL: &str = "netunlockd_sent_bytes_total";
pub const SEND_ERRORS_TOTAL: &str = "netunlockd_send_errors_total";
pub const CERTIFICATES_LOADED: &str = "netunlockd_certificates_loaded";
pub const CERTIFICATE_EXPIRY_SECONDS: &str = "netunlockd_certificate_expiry_seconds";
pub const SOCKET_RECEIVE_BUFFER_BYTES: &str = "netunlockd_socket_receive_buffer_bytes";

/// Receive → reply sent; the client gives up after about 2 s, so the buckets end there.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Clone)]
pub struct NetunlockMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    queue_depth: IntGauge,
    received_bytes: IntCounterVec,
    sent_bytes: IntCounterVec,
    send_errors: IntCounterVec,
    certificates_loaded: IntGauge,
    certificate_expiry: GaugeVec,
    receive_buffer: IntGaugeVec,
}

impl NetunlockMetrics {
    pub fn register(registry: &Registry) -> Result<Arc<Self>, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                REQUESTS_TOTAL,
                "Network Unlock requests by address family and outcome",
            ),
            &["family", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                REQUEST_DURATION_SECONDS,
                "Time from receiving a Network Unlock request to sending its reply",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["family"],
        )?;
        let queue_depth = IntGauge::new(QUEUE_DEPTH, "Requests waiting for an RSA worker")?;
        let received_bytes = IntCounterVec::new(
            Opts::new(
                RECEIVED_BYTES_TOTAL,
                "UDP payload bytes received on the DHCP ports",
            ),
            &["family"],
        )?;
        let sent_bytes = IntCounterVec::new(
            Opts::new(SENT_BYTES_TOTAL, "UDP payload bytes of replies sent"),
            &["family"],
        )?;
        let send_errors = IntCounterVec::new(
            Opts::new(SEND_ERRORS_TOTAL, "Replies the kernel refused to send"),
            &["family"],
        )?;
        let certificates_loaded = IntGauge::new(
            CERTIFICATES_LOADED,
            "Network Unlock certificates currently loaded",
        )?;
        let certificate_expiry = GaugeVec::new(
            Opts::new(
                CERTIFICATE_EXPIRY_SECONDS,
                "Seconds until the certificate's notAfter (negative once expired)",
            ),
            &["thumbprint"],
        )?;
        let receive_buffer = IntGaugeVec::new(
            Opts::new(
                SOCKET_RECEIVE_BUFFER_BYTES,
                "Effective SO_RCVBUF of the DHCP sockets",
            ),
            &["family"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(received_bytes.clone()))?;
        registry.register(Box::new(sent_bytes.clone()))?;
        registry.register(Box::new(send_errors.clone()))?;
        registry.register(Box::new(certificates_loaded.clone()))?;
        registry.register(Box::new(certificate_expiry.clone()))?;
        registry.register(Box::new(receive_buffer.clone()))?;
        // Every series exists from the start so rate() and alerts see zeros, not absent series.
        for f in Family::ALL {
            for o in Outcome::ALL {
                requests.with_label_values(&[f.as_str(), o.as_str()]);
            }
            received_bytes.with_label_values(&[f.as_str()]);
            sent_bytes.with_label_values(&[f.as_str()]);
            send_errors.with_label_values(&[f.as_str()]);
            duration.with_label_values(&[f.as_str()]);
        }
        Ok(Arc::new(Self {
            requests,
            duration,
            queue_depth,
            received_bytes,
            sent_bytes,
            send_errors,
            certificates_loaded,
            certificate_expiry,
            receive_buffer,
        }))
    }

    /// Sets the loaded-certificate gauges; call after start and after every reload. The expiry series
    /// are reset first so only loaded certificates have one (bounded label set).
    pub fn set_certificates(&self, keys: &KeyStore, now: OffsetDateTime) {
        let now_unix = now.unix_timestamp() as f64;
        self.certificate_expiry.reset();
        let mut n = 0i64;
        for (key, _policy) in keys.keys() {
            n += 1;
            let identity = key.identity();
            let not_after = identity.not_after().unix_timestamp() as f64;
            self.certificate_expiry
                .with_label_values(&[identity.thumbprint_hex().as_str()])
                .set(not_after - now_unix);
        }
        self.certificates_loaded.set(n);
    }

    pub fn count(&self, family: Family, outcome: Outcome) {
        self.requests
            .with_label_values(&[family.as_str(), outcome.as_str()])
            .inc();
    }

    pub fn observe_duration(&self, family: Family, d: Duration) {
        self.duration
            .with_label_values(&[family.as_str()])
            .observe(d.as_secs_f64());
    }

    pub fn received(&self, family: Family, bytes: usize) {
        self.received_bytes
            .with_label_values(&[family.as_str()])
            .inc_by(bytes as u64);
    }

    pub fn sent(&self, family: Family, bytes: usize) {
        self.sent_bytes
            .with_label_values(&[family.as_str()])
            .inc_by(bytes as u64);
    }

    pub fn send_error(&self, family: Family) {
        self.send_errors.with_label_values(&[family.as_str()]).inc();
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub fn set_receive_buffer(&self, family: Family, bytes: usize) {
        self.receive_buffer
            .with_label_values(&[family.as_str()])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Current value of `netunlockd_requests_total{family,outcome}` (tests and the load tool).
    pub fn requests(&self, family: Family, outcome: Outcome) -> u64 {
        self.requests
            .with_label_values(&[family.as_str(), outcome.as_str()])
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    fn scrape(r: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&r.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn registers_all_series_with_zeroes() {
        let r = Registry::new();
        let m = NetunlockMetrics::register(&r).unwrap();
        m.count(Family::V4, Outcome::Answered);
        m.observe_duration(Family::V4, Duration::from_millis(3));
        m.set_receive_buffer(Family::V6, 4 << 20);
        let text = scrape(&r);
        assert!(text.contains(r#"netunlockd_requests_total{family="v4",outcome="answered"} 1"#));
        assert!(text.contains(r#"netunlockd_requests_total{family="v6",outcome="expired"} 0"#));
        assert!(
            text.contains(
                r#"netunlockd_request_duration_seconds_bucket{family="v4",le="0.005"} 1"#
            )
        );
        assert!(text.contains(r#"netunlockd_socket_receive_buffer_bytes{family="v6"} 4194304"#));
        assert_eq!(m.requests(Family::V4, Outcome::Answered), 1);
    }

    #[test]
    fn registering_twice_on_one_registry_is_an_error() {
        let r = Registry::new();
        NetunlockMetrics::register(&r).unwrap();
        assert!(NetunlockMetrics::register(&r).is_err());
    }

    #[test]
    fn empty_keystore_sets_zero_certificates() {
        let r = Registry::new();
        let m = NetunlockMetrics::register(&r).unwrap();
        m.set_certificates(&KeyStore::empty(), OffsetDateTime::now_utc());
        assert!(scrape(&r).contains("netunlockd_certificates_loaded 0"));
    }
}
