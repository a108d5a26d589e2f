//! The spool: what it holds, what was written to and replayed from it,
//! and what was dropped because it could not take it.

use std::fmt::Display;
use std::time::Duration;

use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge};
use tracing::error;

use super::{Discard, Metrics, REQUEST_BUCKETS, Reg, SpoolCause};

pub(super) struct Spool {
    events: IntGauge,
    bytes: IntGauge,
    max_bytes: IntGauge,
    oldest_age: Gauge,
    pub(super) appends: IntCounterVec,
    pub(super) replayed: IntCounter,
    write: Histogram,
    syncs: IntCounter,
    torn_bytes: IntCounter,
    pub(super) discarded: IntCounterVec,
    appended_of: Vec<IntCounter>,
    discarded_of: Vec<IntCounter>,
}

impl Spool {
    pub(super) fn new(r: &Reg<'_>) -> Self {
        let appends = r.counter_vec(
            "spool_appends_total",
            "Records written to the spool, by cause.",
            &["cause"],
        );
        let discarded = r.counter_vec(
            "events_discarded_total",
            "Acknowledged events dropped because neither Kafka nor the spool could take them. Must stay 0.",
            &["reason"],
        );
        Spool {
            appended_of: SpoolCause::ALL
                .iter()
                .map(|c| appends.with_label_values(&[c.as_str()]))
                .collect(),
            discarded_of: Discard::ALL
                .iter()
                .map(|d| discarded.with_label_values(&[d.as_str()]))
                .collect(),
            appends,
            discarded,
            events: r.gauge(
                "spool_events",
                "Events in the spool not yet confirmed by Kafka.",
            ),
            bytes: r.gauge(
                "spool_bytes",
                "Bytes the spool uses on disk (plus appends being written).",
            ),
            max_bytes: r.gauge(
                "spool_max_bytes",
                "BRIDGE_SPOOL_MAX_BYTES: at this size new spool appends are refused.",
            ),
            oldest_age: r.float_gauge(
                "spool_oldest_age_seconds",
                "Age of the oldest spool segment that still holds unconfirmed events; 0 when none.",
            ),
            replayed: r.counter(
                "spool_replayed_total",
                "Spooled records that reached Kafka.",
            ),
            write: r.histogram(
                "spool_write_duration_seconds",
                "Time to write and fsync one group-committed batch of spool appends.",
                REQUEST_BUCKETS,
            ),
            syncs: r.counter(
                "spool_syncs_total",
                "fsyncs of the spool; spool_appends_total / spool_syncs_total is the group-commit factor.",
            ),
            torn_bytes: r.counter(
                "spool_torn_bytes_total",
                "Bytes of torn (never acknowledged) writes cut off spool segments at start.",
            ),
        }
    }
}

impl Metrics {
    /// A record was appended to the spool.
    pub fn spooled(&self, cause: SpoolCause) {
        self.spool.appended_of[cause as usize].inc();
    }

    /// A spooled record reached Kafka.
    pub fn replayed(&self) {
        self.spool.replayed.inc();
    }

    /// One group-committed spool batch took `elapsed` to write and sync.
    pub fn spool_write(&self, elapsed: Duration) {
        self.spool.syncs.inc();
        self.spool.write.observe(elapsed.as_secs_f64());
    }

    /// The spool's size changed.
    pub fn spool_state(&self, events: u64, bytes: u64, oldest_ts_ms: Option<i64>) {
        let s = &self.spool;
        s.events.set(i64::try_from(events).unwrap_or(i64::MAX));
        s.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let age = oldest_ts_ms.map_or(0.0, |ts| {
            let now = crate::clock::now_ms() as f64;
            ((now - ts as f64) / 1000.0).max(0.0)
        });
        s.oldest_age.set(age);
    }

    /// The configured spool size.
    pub fn spool_capacity(&self, max_bytes: u64) {
        self.spool
            .max_bytes
            .set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
    }

    /// Torn bytes were cut off a segment at start.
    pub fn spool_torn_bytes(&self, bytes: u64) {
        self.spool.torn_bytes.inc_by(bytes);
    }

    /// A spool record was dropped (see `events_discarded`).
    pub fn spool_discarded(&self, reason: Discard) {
        error!(reason = reason.as_str(), "A spooled event was dropped.");
        self.spool.discarded_of[reason as usize].inc();
    }

    /// An acknowledged event could be neither delivered nor spooled.
    pub fn event_discarded(&self, reason: Discard, event_id: &str, error: &dyn Display) {
        error!(
            reason = reason.as_str(),
            event_id,
            %error,
            "An acknowledged event was dropped: Kafka failed and the spool could not take it."
        );
        self.spool.discarded_of[reason as usize].inc();
    }
}
