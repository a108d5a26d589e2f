//! Every metric handle, and one method per thing that happens.
//!
//! Each method both logs and counts, so a log line and a counter can never
//! disagree. Label values come only from enums and `&'static str`s (bounded
//! sets); raw error text goes into the log's `error` field, never into a label.
//! The registry belongs to the app instance, so parallel tests never share
//! counters.

use std::fmt::Display;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use rdkafka::Statistics;
use tracing::{debug, error, info, warn};

use crate::callback::Family;

/// Metric name prefix shared by every metric the bridge exports.
pub const PREFIX: &str = "chat_bridge";

/// Which Kafka stream a record belongs to: normalized events or dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Normalized events on `BRIDGE_KAFKA_TOPIC`.
    Events,
    /// Raw callbacks that could not be normalized, on `BRIDGE_KAFKA_DLQ_TOPIC`.
    DeadLetter,
}

impl Stream {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Events => "events",
            Stream::DeadLetter => "dead_letter",
        }
    }
}

/// Every `reason` of `chat_bridge_http_connections_closed_total`.
pub const CONNECTION_CLOSE_REASONS: [&str; 7] = [
    "tls_handshake",
    "idle_timeout",
    "header_timeout",
    "headers_too_large",
    "malformed_http",
    "incomplete_request",
    "io_error",
];

/// Every `reason` of `chat_bridge_events_discarded_total`.
pub const DISCARD_REASONS: [&str; 5] = [
    "spool_full",
    "spool_write_failed",
    "spool_closed",
    "record_too_large",
    "undecodable",
];

/// Why a record went to the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolCause {
    /// `BRIDGE_ACK_MODE=spooled`: every callback is spooled before the answer.
    Accepted,
    /// The producer's queue was full.
    QueueFull,
    /// The producer refused the record for another reason.
    ProducerError,
    /// The producer reported a delivery failure.
    DeliveryFailed,
    /// `BRIDGE_ACK_MODE=delivered`: no acknowledgement within the deadline.
    Deadline,
    /// A replayed record failed again.
    ReplayFailed,
}

impl SpoolCause {
    /// Every cause.
    pub const ALL: [SpoolCause; 6] = [
        SpoolCause::Accepted,
        SpoolCause::QueueFull,
        SpoolCause::ProducerError,
        SpoolCause::DeliveryFailed,
        SpoolCause::Deadline,
        SpoolCause::ReplayFailed,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SpoolCause::Accepted => "accepted",
            SpoolCause::QueueFull => "queue_full",
            SpoolCause::ProducerError => "producer_error",
            SpoolCause::DeliveryFailed => "delivery_failed",
            SpoolCause::Deadline => "deadline",
            SpoolCause::ReplayFailed => "replay_failed",
        }
    }
}

/// What happened to a callback that was answered `200 OK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Its events were handed to the acknowledgement mode.
    Published,
    /// Authentic but not parseable: handed to the producer for the dead-letter topic.
    DeadLettered,
    /// Counted, not published: its route's action is `count`, it is a Before
    /// callback with `BRIDGE_PUBLISH_BEFORE=false`, or it is an empty batch.
    Counted,
    /// Every event it carried was published within `BRIDGE_DEDUP_WINDOW`.
    Duplicate,
}

impl Accepted {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Accepted::Published => "published",
            Accepted::DeadLettered => "dead_lettered",
            Accepted::Counted => "counted",
            Accepted::Duplicate => "duplicate",
        }
    }

    /// Every outcome, in declaration order (`outcome as usize` indexes it).
    pub const ALL: [Accepted; 4] = [
        Accepted::Published,
        Accepted::DeadLettered,
        Accepted::Counted,
        Accepted::Duplicate,
    ];
}

/// Every Prometheus handle of one bridge instance.
pub struct Metrics {
    registry: Registry,
    callbacks: IntCounterVec,
    events: IntCounterVec,
    dedup_duplicates: IntCounter,
    dedup_evicted: IntCounter,
    dedup_entries: IntGauge,
    rejections: IntCounterVec,
    dead_lettered: IntCounterVec,
    enqueued: IntCounterVec,
    deliveries: IntCounterVec,
    request_duration: Histogram,
    delivery_latency: HistogramVec,
    unconfirmed: IntGauge,
    queue_messages: IntGauge,
    queue_bytes: IntGauge,
    queue_max_messages: IntGauge,
    queue_max_bytes: IntGauge,
    brokers_up: IntGauge,
    broker_rtt: prometheus::GaugeVec,
    ready: IntGauge,
    spool_events: IntGauge,
    spool_bytes: IntGauge,
    spool_max_bytes: IntGauge,
    spool_oldest_age: prometheus::Gauge,
    spool_appends: IntCounterVec,
    spool_replayed: IntCounter,
    spool_write: Histogram,
    spool_syncs: IntCounter,
    spool_torn_bytes: IntCounter,
    discarded: IntCounterVec,
    connections: IntGauge,
    connections_rejected: IntCounter,
    connections_closed: IntCounterVec,
    generic_seen: [AtomicBool; Family::ALL.len()],
    counted_seen: [AtomicBool; Family::ALL.len()],
    hot: Hot,
}

/// The labelled series counted on every callback and every delivery report,
/// resolved on first use (so `/metrics` lists the same series as before)
/// instead of hashing their label values each time.
#[derive(Default)]
struct Hot {
    accepted: [[OnceLock<IntCounter>; Accepted::ALL.len()]; Family::ALL.len()],
    events: [OnceLock<IntCounter>; Family::ALL.len()],
    enqueued: [OnceLock<IntCounter>; 2],
    delivered: [OnceLock<IntCounter>; 2],
    delivery_latency: [OnceLock<Histogram>; 2],
}

fn name(suffix: &str) -> String {
    format!("{PREFIX}_{suffix}")
}

/// Buckets for answer latency: the bridge answers in tens of microseconds,
/// Tencent gives up after 2 seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.0, 5.0,
];

/// Buckets for enqueue-to-acknowledgement latency (linger, batching, `acks=all`).
const DELIVERY_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
];

impl Metrics {
    /// Creates every metric in a registry of its own.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry
                .register(c)
                .expect("metric names are unique constants");
        };

        let callbacks = IntCounterVec::new(
            Opts::new(
                name("callbacks_total"),
                "Callbacks answered 200 OK, by command family and what the bridge did with them.",
            ),
            &["family", "outcome"],
        )
        .expect("valid metric");
        let events = IntCounterVec::new(
            Opts::new(
                name("events_total"),
                "Events built from callbacks and handed to the acknowledgement mode, by command family (a batch callback makes one per item).",
            ),
            &["family"],
        )
        .expect("valid metric");
        let dedup_duplicates = IntCounter::with_opts(Opts::new(
            name("dedup_duplicates_total"),
            "Events not published because their id was published within BRIDGE_DEDUP_WINDOW.",
        ))
        .expect("valid metric");
        let dedup_evicted = IntCounter::with_opts(Opts::new(
            name("dedup_evicted_total"),
            "Event ids forgotten before their de-duplication window ended, to stay within BRIDGE_DEDUP_MAX_ENTRIES.",
        ))
        .expect("valid metric");
        let dedup_entries = IntGauge::with_opts(Opts::new(
            name("dedup_entries"),
            "Event ids the de-duplication window holds now.",
        ))
        .expect("valid metric");
        let rejections = IntCounterVec::new(
            Opts::new(
                name("callbacks_rejected_total"),
                "Requests on the callback port answered with a FAIL body, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let dead_lettered = IntCounterVec::new(
            Opts::new(
                name("callbacks_dead_lettered_total"),
                "Authentic callbacks that could not be normalized and were sent raw to the dead-letter topic, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let enqueued = IntCounterVec::new(
            Opts::new(
                name("kafka_enqueued_total"),
                "Records handed to the Kafka producer's queue, by stream.",
            ),
            &["stream"],
        )
        .expect("valid metric");
        let deliveries = IntCounterVec::new(
            Opts::new(
                name("kafka_deliveries_total"),
                "Delivery reports from the Kafka producer, by stream, result and error class.",
            ),
            &["stream", "result", "error_class"],
        )
        .expect("valid metric");
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                name("http_request_duration_seconds"),
                "Time from a callback request's arrival to its answer, all outcomes.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let delivery_latency = HistogramVec::new(
            HistogramOpts::new(
                name("kafka_delivery_latency_seconds"),
                "Time from handing a record to the producer to the broker's acknowledgement, by stream.",
            )
            .buckets(DELIVERY_BUCKETS.to_vec()),
            &["stream"],
        )
        .expect("valid metric");
        let unconfirmed = IntGauge::new(
            name("kafka_unconfirmed_events"),
            "Records answered OK and handed to the producer whose delivery report has not arrived yet.",
        )
        .expect("valid metric");
        let queue_messages = IntGauge::new(
            name("kafka_producer_queue_messages"),
            "Messages in the producer's queue (librdkafka msg_cnt, from statistics).",
        )
        .expect("valid metric");
        let queue_bytes = IntGauge::new(
            name("kafka_producer_queue_bytes"),
            "Bytes in the producer's queue (librdkafka msg_size, from statistics).",
        )
        .expect("valid metric");
        let queue_max_messages = IntGauge::new(
            name("kafka_producer_queue_max_messages"),
            "Capacity of the producer's queue in messages (queue.buffering.max.messages).",
        )
        .expect("valid metric");
        let queue_max_bytes = IntGauge::new(
            name("kafka_producer_queue_max_bytes"),
            "Capacity of the producer's queue in bytes (queue.buffering.max.kbytes).",
        )
        .expect("valid metric");
        let brokers_up = IntGauge::new(
            name("kafka_brokers_up"),
            "Brokers the producer has an open connection to (state UP, from statistics).",
        )
        .expect("valid metric");
        let broker_rtt = prometheus::GaugeVec::new(
            Opts::new(
                name("kafka_broker_rtt_seconds"),
                "Average request round-trip time per broker over the last statistics window.",
            ),
            &["broker"],
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            name("ready"),
            "1 when the bridge reports ready on /readyz, else 0.",
        )
        .expect("valid metric");
        let spool_events = IntGauge::new(
            name("spool_events"),
            "Events in the spool not yet confirmed by Kafka.",
        )
        .expect("valid metric");
        let spool_bytes = IntGauge::new(
            name("spool_bytes"),
            "Bytes the spool uses on disk (plus appends being written).",
        )
        .expect("valid metric");
        let spool_max_bytes = IntGauge::new(
            name("spool_max_bytes"),
            "BRIDGE_SPOOL_MAX_BYTES: at this size new spool appends are refused.",
        )
        .expect("valid metric");
        let spool_oldest_age = prometheus::Gauge::new(
            name("spool_oldest_age_seconds"),
            "Age of the oldest spool segment that still holds unconfirmed events; 0 when none.",
        )
        .expect("valid metric");
        let spool_appends = IntCounterVec::new(
            Opts::new(
                name("spool_appends_total"),
                "Records written to the spool, by cause.",
            ),
            &["cause"],
        )
        .expect("valid metric");
        let spool_replayed = IntCounter::new(
            name("spool_replayed_total"),
            "Spooled records that reached Kafka.",
        )
        .expect("valid metric");
        let spool_write = Histogram::with_opts(
            HistogramOpts::new(
                name("spool_write_duration_seconds"),
                "Time to write and fsync one group-committed batch of spool appends.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let spool_syncs = IntCounter::new(
            name("spool_syncs_total"),
            "fsyncs of the spool; spool_appends_total / spool_syncs_total is the group-commit factor.",
        )
        .expect("valid metric");
        let spool_torn_bytes = IntCounter::new(
            name("spool_torn_bytes_total"),
            "Bytes of torn (never acknowledged) writes cut off spool segments at start.",
        )
        .expect("valid metric");
        let discarded = IntCounterVec::new(
            Opts::new(
                name("events_discarded_total"),
                "Acknowledged events dropped because neither Kafka nor the spool could take them. Must stay 0.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let connections = IntGauge::new(
            name("http_connections"),
            "Open connections on the callback port.",
        )
        .expect("valid metric");
        let connections_rejected = IntCounter::new(
            name("http_connections_rejected_total"),
            "Connections closed at once because BRIDGE_MAX_CONNECTIONS were already open.",
        )
        .expect("valid metric");
        let connections_closed = IntCounterVec::new(
            Opts::new(
                name("http_connections_closed_total"),
                "Callback connections the bridge closed or that ended in a protocol error, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in CONNECTION_CLOSE_REASONS {
            connections_closed.with_label_values(&[reason]).reset();
        }
        let build_info = IntGaugeVec::new(
            Opts::new(
                name("build_info"),
                "Always 1; labelled with the bridge's version.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Series that alerts and dashboards rely on exist from the start, at 0.
        for reason in DISCARD_REASONS {
            discarded.with_label_values(&[reason]).reset();
        }
        for cause in SpoolCause::ALL {
            spool_appends.with_label_values(&[cause.as_str()]).reset();
        }
        for stream in [Stream::Events, Stream::DeadLetter] {
            enqueued.with_label_values(&[stream.as_str()]).reset();
            deliveries
                .with_label_values(&[stream.as_str(), "delivered", "none"])
                .reset();
        }
        // A body that is not JSON is refused, never dead-lettered.
        for reason in crate::callback::BodyError::REASONS
            .into_iter()
            .filter(|r| *r != "body_not_json")
        {
            dead_lettered.with_label_values(&[reason]).reset();
        }
        events
            .with_label_values(&[Family::OfficialAccount.as_str()])
            .reset();
        for outcome in Accepted::ALL {
            callbacks
                .with_label_values(&[Family::OfficialAccount.as_str(), outcome.as_str()])
                .reset();
        }

        reg(Box::new(callbacks.clone()));
        reg(Box::new(events.clone()));
        reg(Box::new(dedup_duplicates.clone()));
        reg(Box::new(dedup_evicted.clone()));
        reg(Box::new(dedup_entries.clone()));
        reg(Box::new(rejections.clone()));
        reg(Box::new(dead_lettered.clone()));
        reg(Box::new(enqueued.clone()));
        reg(Box::new(deliveries.clone()));
        reg(Box::new(request_duration.clone()));
        reg(Box::new(delivery_latency.clone()));
        reg(Box::new(unconfirmed.clone()));
        reg(Box::new(queue_messages.clone()));
        reg(Box::new(queue_bytes.clone()));
        reg(Box::new(queue_max_messages.clone()));
        reg(Box::new(queue_max_bytes.clone()));
        reg(Box::new(brokers_up.clone()));
        reg(Box::new(broker_rtt.clone()));
        reg(Box::new(ready.clone()));
        reg(Box::new(spool_events.clone()));
        reg(Box::new(spool_bytes.clone()));
        reg(Box::new(spool_max_bytes.clone()));
        reg(Box::new(spool_oldest_age.clone()));
        reg(Box::new(spool_appends.clone()));
        reg(Box::new(spool_replayed.clone()));
        reg(Box::new(spool_write.clone()));
        reg(Box::new(spool_syncs.clone()));
        reg(Box::new(spool_torn_bytes.clone()));
        reg(Box::new(discarded.clone()));
        reg(Box::new(connections.clone()));
        reg(Box::new(connections_rejected.clone()));
        reg(Box::new(connections_closed.clone()));
        reg(Box::new(build_info));

        Metrics {
            registry,
            callbacks,
            events,
            dedup_duplicates,
            dedup_evicted,
            dedup_entries,
            rejections,
            dead_lettered,
            enqueued,
            deliveries,
            request_duration,
            delivery_latency,
            unconfirmed,
            queue_messages,
            queue_bytes,
            queue_max_messages,
            queue_max_bytes,
            brokers_up,
            broker_rtt,
            ready,
            spool_events,
            spool_bytes,
            spool_max_bytes,
            spool_oldest_age,
            spool_appends,
            spool_replayed,
            spool_write,
            spool_syncs,
            spool_torn_bytes,
            discarded,
            connections,
            connections_rejected,
            connections_closed,
            generic_seen: std::array::from_fn(|_| AtomicBool::new(false)),
            counted_seen: std::array::from_fn(|_| AtomicBool::new(false)),
            hot: Hot::default(),
        }
    }

    /// Creates, at 0, the labelled series that alerts watch and whose label
    /// values are defined elsewhere: rejection reasons and delivery error classes.
    pub fn init_series(&self, rejection_reasons: &[&str], error_classes: &[&str]) {
        for reason in rejection_reasons {
            self.rejections.with_label_values(&[reason]).reset();
        }
        for stream in [Stream::Events, Stream::DeadLetter] {
            for class in error_classes {
                self.deliveries
                    .with_label_values(&[stream.as_str(), "failed", class])
                    .reset();
            }
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

    /// A request on the callback port was refused with a FAIL body.
    pub fn callback_rejected(&self, reason: &'static str, status: u16, error: &dyn Display) {
        warn!(reason, status, %error, "Callback rejected.");
        self.rejections.with_label_values(&[reason]).inc();
    }

    /// A callback was answered 200 OK.
    pub fn callback_accepted(&self, family: Family, outcome: Accepted) {
        self.hot.accepted[family as usize][outcome as usize]
            .get_or_init(|| {
                self.callbacks
                    .with_label_values(&[family.as_str(), outcome.as_str()])
            })
            .inc();
    }

    /// A callback was answered OK and only counted (`why`: `route`,
    /// `before` or `empty_batch`). Logged at INFO the first time for each
    /// family, at DEBUG afterwards.
    pub fn callback_counted(&self, family: Family, command: &str, why: &'static str) {
        if !self.counted_seen[family as usize].swap(true, Ordering::Relaxed) {
            info!(
                family = family.as_str(),
                command,
                why,
                "Callback answered OK and counted, not published (further ones of this family are logged at DEBUG)."
            );
        } else {
            debug!(
                family = family.as_str(),
                command, why, "Callback answered OK and counted, not published."
            );
        }
        self.callback_accepted(family, Accepted::Counted);
    }

    /// `n` events of one callback were handed to the acknowledgement mode.
    /// `callback` events (a command without a type of its own) are logged at
    /// INFO the first time for each family.
    pub fn events_published(&self, family: Family, command: &str, generic: bool, n: usize) {
        if generic && !self.generic_seen[family as usize].swap(true, Ordering::Relaxed) {
            info!(
                family = family.as_str(),
                command,
                "Publishing this family's callbacks as generic `callback` events, body unchanged (logged once per family)."
            );
        }
        self.hot.events[family as usize]
            .get_or_init(|| self.events.with_label_values(&[family.as_str()]))
            .inc_by(n as u64);
    }

    /// An event was not published again: its id was published within the
    /// de-duplication window.
    pub fn event_duplicate(&self, command: &str, id: &str) {
        debug!(
            command,
            event_id = id,
            "Event published within the de-duplication window: not published again."
        );
        self.dedup_duplicates.inc();
    }

    /// The de-duplication window after a claim.
    pub fn dedup_claimed(&self, outcome: &crate::dedup::Outcome) {
        if outcome.evicted_early > 0 {
            self.dedup_evicted.inc_by(outcome.evicted_early);
        }
        self.dedup_entries
            .set(i64::try_from(outcome.entries).unwrap_or(i64::MAX));
    }

    /// An authentic callback could not be normalized and goes to the dead-letter topic.
    pub fn callback_dead_lettered(
        &self,
        family: Family,
        reason: &'static str,
        command: &str,
        error: &dyn Display,
    ) {
        warn!(
            reason,
            command,
            %error,
            "Callback could not be normalized; publishing it raw to the dead-letter topic."
        );
        self.dead_lettered.with_label_values(&[reason]).inc();
        self.callback_accepted(family, Accepted::DeadLettered);
    }

    /// A record was handed to the producer's queue.
    pub fn enqueued(&self, stream: Stream) {
        self.hot.enqueued[stream as usize]
            .get_or_init(|| self.enqueued.with_label_values(&[stream.as_str()]))
            .inc();
        self.unconfirmed.inc();
    }

    /// The broker acknowledged a record.
    pub fn delivered(&self, stream: Stream, latency: Duration) {
        self.unconfirmed.dec();
        self.hot.delivered[stream as usize]
            .get_or_init(|| {
                self.deliveries
                    .with_label_values(&[stream.as_str(), "delivered", "none"])
            })
            .inc();
        self.hot.delivery_latency[stream as usize]
            .get_or_init(|| self.delivery_latency.with_label_values(&[stream.as_str()]))
            .observe(latency.as_secs_f64());
    }

    /// The producer gave up on a record; the caller spools it.
    pub fn delivery_failed(
        &self,
        stream: Stream,
        class: &'static str,
        event_id: &str,
        error: &dyn Display,
    ) {
        self.unconfirmed.dec();
        warn!(
            stream = stream.as_str(),
            error_class = class,
            event_id,
            %error,
            "Kafka delivery failed; the event goes to the spool."
        );
        self.deliveries
            .with_label_values(&[stream.as_str(), "failed", class])
            .inc();
    }

    /// A record was appended to the spool.
    pub fn spooled(&self, cause: SpoolCause) {
        self.spool_appends
            .with_label_values(&[cause.as_str()])
            .inc();
    }

    /// A spooled record reached Kafka.
    pub fn replayed(&self) {
        self.spool_replayed.inc();
    }

    /// One group-committed spool batch took `elapsed` to write and sync.
    pub fn spool_write(&self, elapsed: Duration) {
        self.spool_syncs.inc();
        self.spool_write.observe(elapsed.as_secs_f64());
    }

    /// The spool's size changed.
    pub fn spool_state(&self, events: u64, bytes: u64, oldest_ts_ms: Option<i64>) {
        self.spool_events
            .set(i64::try_from(events).unwrap_or(i64::MAX));
        self.spool_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let age = oldest_ts_ms.map_or(0.0, |ts| {
            let now = crate::clock::now_ms() as f64;
            ((now - ts as f64) / 1000.0).max(0.0)
        });
        self.spool_oldest_age.set(age);
    }

    /// The configured spool size.
    pub fn spool_capacity(&self, max_bytes: u64) {
        self.spool_max_bytes
            .set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
    }

    /// Torn bytes were cut off a segment at start.
    pub fn spool_torn_bytes(&self, bytes: u64) {
        self.spool_torn_bytes.inc_by(bytes);
    }

    /// A spool record was dropped (see `events_discarded`). `reason` is one
    /// of [`DISCARD_REASONS`].
    pub fn spool_discarded(&self, reason: &'static str) {
        debug_assert!(DISCARD_REASONS.contains(&reason), "{reason}");
        error!(reason, "A spooled event was dropped.");
        self.discarded.with_label_values(&[reason]).inc();
    }

    /// An acknowledged event could be neither delivered nor spooled. `reason`
    /// is one of [`DISCARD_REASONS`].
    pub fn event_discarded(&self, reason: &'static str, event_id: &str, error: &dyn Display) {
        debug_assert!(DISCARD_REASONS.contains(&reason), "{reason}");

        error!(
            reason,
            event_id,
            %error,
            "An acknowledged event was dropped: Kafka failed and the spool could not take it."
        );
        self.discarded.with_label_values(&[reason]).inc();
    }

    /// One answered callback request took `elapsed`.
    pub fn request_finished(&self, elapsed: Duration) {
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    /// Readiness changed.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// A connection on the callback port opened (`+1`) or closed (`-1`).
    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    /// A connection on the callback port closed.
    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// A connection was refused because the connection limit was reached.
    pub fn connection_refused(&self, limit: usize) {
        warn!(
            limit,
            "Connection closed at once: BRIDGE_MAX_CONNECTIONS reached."
        );
        self.connections_rejected.inc();
    }

    /// The bridge closed a callback connection (`idle_timeout`, `header_timeout`).
    pub fn connection_closed_by(&self, reason: &'static str) {
        debug!(reason, "Callback connection closed.");
        self.connections_closed.with_label_values(&[reason]).inc();
    }

    /// A callback connection ended with a protocol or I/O error. Logged at
    /// DEBUG: under attack these come by the thousand; the counter shows them.
    pub fn connection_error(&self, reason: &'static str, error: &dyn Display) {
        debug!(reason, %error, "Callback connection ended with an error.");
        self.connections_closed.with_label_values(&[reason]).inc();
    }

    /// librdkafka emitted its periodic statistics.
    pub fn kafka_statistics(&self, stats: &Statistics) {
        self.queue_messages
            .set(i64::try_from(stats.msg_cnt).unwrap_or(i64::MAX));
        self.queue_bytes
            .set(i64::try_from(stats.msg_size).unwrap_or(i64::MAX));
        self.queue_max_messages
            .set(i64::try_from(stats.msg_max).unwrap_or(i64::MAX));
        self.queue_max_bytes
            .set(i64::try_from(stats.msg_size_max).unwrap_or(i64::MAX));
        let mut up = 0;
        for broker in stats.brokers.values() {
            // Bootstrap ("configured") entries are replaced by learned ones
            // once metadata arrives; internal/logical ones are not brokers.
            if broker.nodeid < 0 {
                continue;
            }
            if broker.state == "UP" {
                up += 1;
            }
            if let Some(rtt) = &broker.rtt {
                self.broker_rtt
                    .with_label_values(&[&broker.nodeid.to_string()])
                    .set(rtt.avg as f64 / 1e6);
            }
        }
        self.brokers_up.set(up);
    }

    /// Value of a counter or gauge, for the final summary and for tests.
    pub fn snapshot(&self) -> Snapshot {
        let sum = |v: &IntCounterVec| -> u64 {
            v.collect()
                .iter()
                .flat_map(|mf| mf.get_metric())
                .map(|m| m.get_counter().get_value() as u64)
                .sum()
        };
        let deliveries = |result: &str| -> u64 {
            self.deliveries
                .collect()
                .iter()
                .flat_map(|mf| mf.get_metric())
                .filter(|m| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == "result" && l.value() == result)
                })
                .map(|m| m.get_counter().get_value() as u64)
                .sum()
        };
        Snapshot {
            spooled: sum(&self.spool_appends),
            replayed: self.spool_replayed.get(),
            discarded: sum(&self.discarded),
            accepted: sum(&self.callbacks),
            rejected: sum(&self.rejections),
            dead_lettered: sum(&self.dead_lettered),
            enqueued: sum(&self.enqueued),
            delivered: deliveries("delivered"),
            failed: deliveries("failed"),
            unconfirmed: self.unconfirmed.get(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

use prometheus::core::Collector as _;

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
