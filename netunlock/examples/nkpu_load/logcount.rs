//! Counts the responder's log lines during a run (a minimal `tracing` subscriber, so the tool needs
//! no subscriber crate): per-request lines versus the summaries that replace them under a flood.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Default)]
pub(crate) struct LogCount {
    pub(crate) per_request: AtomicU64,
    pub(crate) summaries: AtomicU64,
    pub(crate) other: AtomicU64,
}

pub(crate) static LOG: LogCount = LogCount {
    per_request: AtomicU64::new(0),
    summaries: AtomicU64::new(0),
    other: AtomicU64::new(0),
};

/// Installs the counter as the global subscriber (INFO and above, as the daemon logs by default).
pub(crate) fn install() {
    tracing::subscriber::set_global_default(Counter).expect("one subscriber");
}

struct Counter;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Counter {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        let counter = if m.0.contains("not logged one by one") {
            &LOG.summaries
        } else if m.0.starts_with("Network Unlock request") {
            &LOG.per_request
        } else {
            &LOG.other
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}
