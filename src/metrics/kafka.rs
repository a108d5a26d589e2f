//! The Kafka producer: records handed to it, delivery reports and their
//! latency, and librdkafka's own statistics.

use std::fmt::Display;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::core::Collector as _;
use prometheus::{GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use rdkafka::Statistics;
use tracing::{error, warn};

use super::limit::LogLimit;

use super::{ErrorClass, Metrics, Reg, Stream};

/// Buckets for enqueue-to-acknowledgement latency (linger, batching, `acks=all`).
const DELIVERY_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
];

pub(super) struct Kafka {
    pub(super) enqueued: IntCounterVec,
    deliveries: IntCounterVec,
    pub(super) unconfirmed: IntGauge,
    queue_messages: IntGauge,
    queue_bytes: IntGauge,
    queue_max_messages: IntGauge,
    queue_max_bytes: IntGauge,
    brokers_up: IntGauge,
    fatal_error: IntGauge,
    broker_rtt: GaugeVec,
    /// The series counted on every record, by stream, resolved once.
    enqueued_of: Vec<IntCounter>,
    delivered_of: Vec<IntCounter>,
    latency: HistogramVec,
    /// Created on first use: a stream with no delivery yet shows no
    /// latency series.
    latency_of: [OnceLock<Histogram>; Stream::ALL.len()],
    /// `deliveries{result="failed"}` by stream and error class.
    failed_of: Vec<Vec<IntCounter>>,
    too_large_lines: LogLimit,
    failed_lines: LogLimit,
}

impl Kafka {
    pub(super) fn new(r: &Reg<'_>) -> Self {
        let enqueued = r.counter_vec(
            "kafka_enqueued_total",
            "Records handed to the Kafka producer's queue, by stream.",
            &["stream"],
        );
        let deliveries = r.counter_vec(
            "kafka_deliveries_total",
            "Delivery reports from the Kafka producer, by stream, result and error class.",
            &["stream", "result", "error_class"],
        );
        let latency = r.histogram_vec(
            "kafka_delivery_latency_seconds",
            "Time from handing a record to the producer to the broker's acknowledgement, by stream.",
            DELIVERY_BUCKETS,
            &["stream"],
        );
        let per_stream =
            |f: &dyn Fn(Stream) -> IntCounter| Stream::ALL.iter().map(|s| f(*s)).collect();
        Kafka {
            enqueued_of: per_stream(&|s| enqueued.with_label_values(&[s.as_str()])),
            delivered_of: per_stream(&|s| {
                deliveries.with_label_values(&[s.as_str(), "delivered", "none"])
            }),
            failed_of: Stream::ALL
                .iter()
                .map(|s| {
                    ErrorClass::ALL
                        .iter()
                        .map(|c| deliveries.with_label_values(&[s.as_str(), "failed", c.as_str()]))
                        .collect()
                })
                .collect(),
            latency,
            latency_of: Default::default(),
            too_large_lines: LogLimit::default(),
            failed_lines: LogLimit::default(),
            enqueued,
            deliveries,
            unconfirmed: r.gauge(
                "kafka_unconfirmed_events",
                "Records answered OK and handed to the producer whose delivery report has not arrived yet.",
            ),
            queue_messages: r.gauge(
                "kafka_producer_queue_messages",
                "Messages in the producer's queue (librdkafka msg_cnt, from statistics).",
            ),
            queue_bytes: r.gauge(
                "kafka_producer_queue_bytes",
                "Bytes in the producer's queue (librdkafka msg_size, from statistics).",
            ),
            queue_max_messages: r.gauge(
                "kafka_producer_queue_max_messages",
                "Capacity of the producer's queue in messages (queue.buffering.max.messages).",
            ),
            queue_max_bytes: r.gauge(
                "kafka_producer_queue_max_bytes",
                "Capacity of the producer's queue in bytes (queue.buffering.max.kbytes).",
            ),
            brokers_up: r.gauge(
                "kafka_brokers_up",
                "Brokers the producer has an open connection to (state UP, from statistics).",
            ),
            fatal_error: r.gauge(
                "kafka_fatal_error",
                "1 once the producer has a fatal error: it delivers nothing until the bridge restarts, and /readyz says why (issue 13).",
            ),
            broker_rtt: r.float_gauge_vec(
                "kafka_broker_rtt_seconds",
                "Average request round-trip time per broker over the last statistics window.",
                &["broker"],
            ),
        }
    }

    /// `(delivered, failed)` reports so far.
    pub(super) fn deliveries(&self) -> (u64, u64) {
        let mut delivered = 0;
        let mut failed = 0;
        for m in self
            .deliveries
            .collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
        {
            let n = m.get_counter().get_value() as u64;
            for l in m.get_label() {
                if l.name() == "result" {
                    match l.value() {
                        "delivered" => delivered += n,
                        "failed" => failed += n,
                        _ => {}
                    }
                }
            }
        }
        (delivered, failed)
    }
}

impl Metrics {
    /// A record was handed to the producer's queue.
    pub fn enqueued(&self, stream: Stream) {
        self.kafka.enqueued_of[stream as usize].inc();
        self.kafka.unconfirmed.inc();
    }

    /// The broker acknowledged a record.
    pub fn delivered(&self, stream: Stream, latency: Duration) {
        let k = &self.kafka;
        k.unconfirmed.dec();
        k.delivered_of[stream as usize].inc();
        k.latency_of[stream as usize]
            .get_or_init(|| k.latency.with_label_values(&[stream.as_str()]))
            .observe(latency.as_secs_f64());
    }

    /// The producer gave up on a record; the caller spools it.
    pub fn delivery_failed(
        &self,
        stream: Stream,
        class: ErrorClass,
        event_id: &str,
        error: &dyn Display,
    ) {
        self.kafka.unconfirmed.dec();
        self.kafka.failed_of[stream as usize][class as usize].inc();
        // In an outage these come by the thousand: rate-limited.
        if let Some(suppressed) = self.kafka.failed_lines.allow() {
            warn!(
                stream = stream.as_str(),
                error_class = class.as_str(),
                event_id,
                %error,
                suppressed,
                "Kafka delivery failed; the event goes to the spool."
            );
        }
    }

    /// Kafka refused a record as too large (permanent: it is never sent
    /// again; its trimmed dead letter is spooled). Logged at ERROR, at most
    /// about once a second; counted with the delivery failures
    /// (`error_class="message_too_large"`).
    pub fn record_too_large(&self, stream: Stream, id: &str, bytes: usize, error: &dyn Display) {
        self.kafka.unconfirmed.dec();
        self.kafka.failed_of[stream as usize][ErrorClass::MessageTooLarge as usize].inc();
        if let Some(suppressed) = self.kafka.too_large_lines.allow() {
            error!(
                stream = stream.as_str(),
                event_id = id,
                bytes,
                %error,
                suppressed,
                "Kafka refused a record as too large; it is dead-lettered, trimmed to fit, and not sent again. Lower BRIDGE_KAFKA_MAX_RECORD_BYTES to the topic's max.message.bytes."
            );
        }
    }

    /// The readiness probe found the producer failed fatally (an
    /// idempotent producer the cluster refuses, say): raised for good, and
    /// logged the first time, with `advice` (the cause and the fix).
    pub fn kafka_fatal_error(&self, advice: &dyn Display) {
        if self.kafka.fatal_error.get() == 0 {
            self.kafka.fatal_error.set(1);
            error!(%advice, "The Kafka producer failed fatally: it delivers nothing until the bridge restarts; /readyz says what to change.");
        }
    }

    /// librdkafka emitted its periodic statistics.
    pub fn kafka_statistics(&self, stats: &Statistics) {
        let k = &self.kafka;
        k.queue_messages
            .set(i64::try_from(stats.msg_cnt).unwrap_or(i64::MAX));
        k.queue_bytes
            .set(i64::try_from(stats.msg_size).unwrap_or(i64::MAX));
        k.queue_max_messages
            .set(i64::try_from(stats.msg_max).unwrap_or(i64::MAX));
        k.queue_max_bytes
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
                k.broker_rtt
                    .with_label_values(&[&broker.nodeid.to_string()])
                    .set(rtt.avg as f64 / 1e6);
            }
        }
        k.brokers_up.set(up);
    }
}
