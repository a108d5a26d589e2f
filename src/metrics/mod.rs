//! Every metric, and one method per thing that happens.
//!
//! Each method both logs and counts, so a log line and a counter can never
//! disagree. Label values come only from the closed enums of [`labels`];
//! raw error text goes into the log's `error` field, never into a label.
//! The registry belongs to the app instance, so parallel tests never share
//! counters. One file per area, each metric created and registered in one
//! call: `callbacks.rs` (answers, events, de-duplication), `kafka.rs`
//! (producer and deliveries), `spool.rs`, `http.rs` (connections).

mod callbacks;
mod http;
mod kafka;
pub mod labels;
mod limit;
mod spool;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use labels::{
    Accepted, ConnectionClose, Counted, Discard, ErrorClass, Reason, SpoolCause, Stream,
};

/// Metric name prefix shared by every metric the bridge exports.
pub const PREFIX: &str = "chat_bridge";

/// Buckets for answer latency: the bridge answers in tens of microseconds,
/// Tencent gives up after 2 seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.0, 5.0,
];

/// Every Prometheus handle of one bridge instance.
pub struct Metrics {
    registry: Registry,
    callbacks: callbacks::Callbacks,
    kafka: kafka::Kafka,
    spool: spool::Spool,
    http: http::Http,
    ready: IntGauge,
}

/// Creates a metric and registers it, in one call.
struct Reg<'a>(&'a Registry);

impl Reg<'_> {
    fn add<C: Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("metric names are unique constants");
        c
    }

    fn opts(name: &str, help: &str) -> Opts {
        Opts::new(format!("{PREFIX}_{name}"), help)
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::with_opts(Self::opts(name, help)).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Self::opts(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::with_opts(Self::opts(name, help)).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Self::opts(name, help), labels).expect("valid metric"))
    }

    fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::with_opts(Self::opts(name, help)).expect("valid metric"))
    }

    fn float_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Self::opts(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(format!("{PREFIX}_{name}"), help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(format!("{PREFIX}_{name}"), help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

impl Metrics {
    /// Creates every metric in a registry of its own, with the series that
    /// alerts and dashboards rely on present from the start, at 0.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = Reg(&registry);
        let build_info = r.gauge_vec(
            "build_info",
            "Always 1; labelled with the bridge's version.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics {
            callbacks: callbacks::Callbacks::new(&r),
            kafka: kafka::Kafka::new(&r),
            spool: spool::Spool::new(&r),
            http: http::Http::new(&r),
            ready: r.gauge(
                "ready",
                "1 when the bridge reports ready on /readyz, else 0.",
            ),
            registry,
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into a Vec cannot fail");
        out
    }

    /// Readiness changed.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Value of a counter or gauge, for the final summary and for tests.
    pub fn snapshot(&self) -> Snapshot {
        let (delivered, failed) = self.kafka.deliveries();
        Snapshot {
            spooled: sum(&self.spool.appends),
            replayed: self.spool.replayed.get(),
            discarded: sum(&self.spool.discarded),
            accepted: sum(&self.callbacks.callbacks),
            rejected: sum(&self.callbacks.rejections),
            dead_lettered: sum(&self.callbacks.dead_lettered),
            enqueued: sum(&self.kafka.enqueued),
            delivered,
            failed,
            unconfirmed: self.kafka.unconfirmed.get(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The sum of every series of a counter.
fn sum(v: &IntCounterVec) -> u64 {
    v.collect()
        .iter()
        .flat_map(|mf| mf.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// Totals since start, logged at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Callbacks answered 200 OK.
    pub accepted: u64,
    /// Requests answered with a FAIL body.
    pub rejected: u64,
    /// Callbacks sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Records handed to the producer (events and dead letters).
    pub enqueued: u64,
    /// Records the broker acknowledged.
    pub delivered: u64,
    /// Records the producer gave up on.
    pub failed: u64,
    /// Records still waiting for a delivery report.
    pub unconfirmed: i64,
    /// Records written to the spool.
    pub spooled: u64,
    /// Spooled records that reached Kafka.
    pub replayed: u64,
    /// Acknowledged events dropped (must be 0).
    pub discarded: u64,
}
