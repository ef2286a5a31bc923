//! The daemon's Prometheus registry: build info and process metrics here; the libraries register
//! their own metrics into the same registry.

use anyhow::{Context, Result};
use prometheus::{IntGaugeVec, Opts, Registry};

pub(crate) const BUILD_INFO: &str = "netunlockd_build_info";

pub(crate) fn registry() -> Result<Registry> {
    let registry = Registry::new();
    let build = IntGaugeVec::new(
        Opts::new(BUILD_INFO, "Build information; the value is always 1."),
        &["version", "rustc"],
    )
    .context("cannot create netunlockd_build_info")?;
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION"), rustc_version()])
        .set(1);
    registry
        .register(Box::new(build))
        .context("cannot register netunlockd_build_info")?;
    // process_* (resident memory, open fds, start time, CPU) from /proc/self.
    let process = prometheus::process_collector::ProcessCollector::for_self();
    registry
        .register(Box::new(process))
        .context("cannot register the process metrics")?;
    Ok(registry)
}

fn rustc_version() -> &'static str {
    env!("NETUNLOCKD_RUSTC_VERSION")
}

/// Prometheus text exposition of everything registered.
pub(crate) fn render(registry: &Registry) -> Result<String> {
    let families = registry.gather();
    let mut out = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&families, &mut out)
        .context("cannot encode the metrics")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_process_metrics_are_exported() {
        let r = registry().unwrap();
        let text = render(&r).unwrap();
        assert!(text.contains("netunlockd_build_info{"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(text.contains("process_open_fds"), "{text}");
        assert!(text.contains("process_start_time_seconds"), "{text}");
    }
}
