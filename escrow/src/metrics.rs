//! Prometheus metrics of the escrow API, registered on the Registry the daemon passes in (never
//! the global one). Labels are bounded: `route` is the route template, never the raw path.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use std::time::Duration;

use crate::error::EscrowError;
use crate::model::FleetGauges;

#[derive(Clone, Debug)]
pub struct EscrowMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub disclosures: IntCounterVec,
    pub devices: IntGaugeVec,
    pub volumes_without_key: IntGauge,
    pub disclosed_unrotated: IntGauge,
    pub oldest_unrotated_seconds: IntGauge,
    pub audit_chain_length: IntGauge,
    pub protector_conflicts: IntGauge,
    pub escrow_batch: Histogram,
}

fn reg_err(e: prometheus::Error) -> EscrowError {
    EscrowError::Io(format!("cannot register escrow metrics: {e}"))
}

impl EscrowMetrics {
    pub fn register(registry: &Registry) -> Result<Self, EscrowError> {
        let requests = IntCounterVec::new(
            Opts::new(
                "netunlockd_escrow_requests_total",
                "Escrow API requests by route template and outcome (success, client_error, server_error, ...)",
            ),
            &["route", "outcome"],
        )
        .map_err(reg_err)?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "netunlockd_escrow_http_request_duration_seconds",
                "Escrow API request latency by route template",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )
        .map_err(reg_err)?;
        let disclosures = IntCounterVec::new(
            Opts::new(
                "netunlockd_disclosures_total",
                "Recovery passwords disclosed, by reason code",
            ),
            &["reason"],
        )
        .map_err(reg_err)?;
        let devices = IntGaugeVec::new(
            Opts::new(
                "netunlockd_escrow_devices",
                "Enrolled (not revoked) devices by check-in freshness",
            ),
            &["freshness"],
        )
        .map_err(reg_err)?;
        let volumes_without_key = IntGauge::new(
            "netunlockd_escrow_volumes_without_key",
            "Volumes reported by agents with no escrowed recovery protector",
        )
        .map_err(reg_err)?;
        let disclosed_unrotated = IntGauge::new(
            "netunlockd_escrow_disclosed_unrotated_keys",
            "Disclosed recovery passwords whose rotation is not done yet",
        )
        .map_err(reg_err)?;
        let oldest_unrotated_seconds = IntGauge::new(
            "netunlockd_escrow_oldest_unrotated_disclosure_seconds",
            "Age of the oldest disclosure whose key has not been rotated (0 when none)",
        )
        .map_err(reg_err)?;
        let audit_chain_length = IntGauge::new(
            "netunlockd_audit_chain_length",
            "Number of records in the escrow audit hash chain",
        )
        .map_err(reg_err)?;
        let protector_conflicts = IntGauge::new(
            "netunlockd_escrow_protector_conflicts",
            "Times a device escrowed a recovery key ID that another device already held (cloned or rogue device)",
        )
        .map_err(reg_err)?;
        let escrow_batch = Histogram::with_opts(
            HistogramOpts::new(
                "netunlockd_escrow_items_per_call",
                "Protectors per agent escrow call",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 64.0]),
        )
        .map_err(reg_err)?;
        let m = Self {
            requests,
            duration,
            disclosures,
            devices,
            volumes_without_key,
            disclosed_unrotated,
            oldest_unrotated_seconds,
            audit_chain_length,
            protector_conflicts,
            escrow_batch,
        };
        registry
            .register(Box::new(m.requests.clone()))
            .map_err(reg_err)?;
        registry
            .register(Box::new(m.duration.clone()))
            .map_err(reg_err)?;
        registry
            .register(Box::new(m.disclosures.clone()))
            .map_err(reg_err)?;
        registry
            .register(Box::new(m.devices.clone()))
            .map_err(reg_err)?;
        registry
            .register(Box::new(m.volumes_without_key.clone()))
            .map_err(reg_err)?;
        registry
            .register(Box::new(m.disclosed_unrotated.clone()))
            .map_err(reg_err)?;
        registry
            .register(Box::new(m.oldest_unrotated_seconds.clone()))
            .map_err(reg_err)?;
        registry
            .register(Box::new(m.audit_chain_length.clone()))
            .map_err(reg_err)?;
        registry
            .register(Box::new(m.protector_conflicts.clone()))
            .map_err(reg_err)?;
        registry
            .register(Box::new(m.escrow_batch.clone()))
            .map_err(reg_err)?;
        Ok(m)
    }

    /// Copies the service's fleet numbers into the gauges. The service buckets check-in age at
    /// 1, 7 and 30 days; "stale" is the bucket boundary nearest above `stale_after`.
    pub fn set_gauges(&self, g: &FleetGauges, stale_after: Duration) {
        let day = Duration::from_secs(86_400);
        let fresh = if stale_after <= day {
            g.devices_fresh_1d
        } else if stale_after <= day * 7 {
            g.devices_fresh_1d + g.devices_1d_to_7d
        } else {
            g.devices_fresh_1d + g.devices_1d_to_7d + g.devices_7d_to_30d
        };
        let stale = (g.devices_active - fresh).max(0);
        self.devices.with_label_values(&["fresh"]).set(fresh);
        self.devices.with_label_values(&["stale"]).set(stale);
        self.volumes_without_key.set(g.volumes_without_key);
        self.disclosed_unrotated.set(g.disclosed_not_rotated);
        self.oldest_unrotated_seconds
            .set(g.oldest_disclosed_not_rotated_secs);
        self.audit_chain_length.set(g.audit_chain_length);
        self.protector_conflicts.set(g.protector_conflicts);
    }

    /// Records one finished request.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        let outcome = outcome_label(status);
        self.requests.with_label_values(&[route, outcome]).inc();
        self.duration.with_label_values(&[route]).observe(seconds);
    }
}

/// Bounded outcome label from an HTTP status.
pub fn outcome_label(status: u16) -> &'static str {
    match status {
        200..=299 => "success",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        410 => "gone",
        413 => "too_large",
        429 => "rate_limited",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders_expected_names() {
        let registry = Registry::new();
        let m = EscrowMetrics::register(&registry).unwrap();
        m.observe("/api/v1/agent/escrow", 200, 0.002);
        m.observe("/api/v1/agent/escrow", 409, 0.002);
        m.disclosures.with_label_values(&["lost_pin"]).inc();
        m.devices.with_label_values(&["fresh"]).set(3);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for n in [
            "netunlockd_escrow_requests_total",
            "netunlockd_escrow_http_request_duration_seconds",
            "netunlockd_disclosures_total",
            "netunlockd_escrow_devices",
            "netunlockd_escrow_volumes_without_key",
            "netunlockd_escrow_disclosed_unrotated_keys",
            "netunlockd_escrow_oldest_unrotated_disclosure_seconds",
            "netunlockd_audit_chain_length",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        // A second registration on the same registry is an error, not a panic.
        assert!(EscrowMetrics::register(&registry).is_err());
        assert_eq!(outcome_label(409), "conflict");
        assert_eq!(outcome_label(503), "server_error");
    }
}
