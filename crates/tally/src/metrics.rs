//! Prometheus metrics: what ingestion accepted, deduplicated and rejected (by reason), and how
//! long group commits take.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub events: Family<OutcomeLabel, Counter>,
    pub rejected: Family<ReasonLabel, Counter>,
    pub commit_seconds: Histogram,
    pub commit_events: Histogram,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("tally");
        let events = Family::<OutcomeLabel, Counter>::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let commit_events = Histogram::new(exponential_buckets(1.0, 4.0, 9));
        registry.register("ingest_events", "Events received, by outcome (accepted, duplicate, rejected)", events.clone());
        registry.register("ingest_rejected_events", "Rejected events, by reason", rejected.clone());
        registry.register("commit_batch_seconds", "Duration of one group-commit transaction", commit_seconds.clone());
        registry.register("commit_batch_events", "Events in one group-commit transaction", commit_events.clone());
        Arc::new(Metrics { registry, events, rejected, commit_seconds, commit_events })
    }

    pub fn observe_commit(&self, events: usize, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_events.observe(events as f64);
    }

    pub fn count(&self, outcome: &'static str, n: usize) {
        self.events.get_or_create(&OutcomeLabel { outcome }).inc_by(n as u64);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
