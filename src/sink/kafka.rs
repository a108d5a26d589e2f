//! The Kafka producer: record layout (key, CloudEvents headers), the delivery
//! callback, queue-full policy, readiness probe and flush.
//!
//! One `ThreadedProducer` with a `ProducerContext`: delivery reports arrive on
//! librdkafka's poll thread and go straight to [`Metrics`]; there is no task
//! or future per message. `send` never waits for the broker.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Statistics};
use tracing::{debug, error, info, warn};

use crate::config::KafkaConfig;
use crate::event::{DeadLetter, Event};
use crate::metrics::{Metrics, Stream};

/// Why a record could not be handed to the producer. The request is then
/// answered 503 and nothing was acknowledged.
#[derive(Debug)]
pub enum EnqueueError {
    /// The producer's queue is at `queue.buffering.max.*`.
    QueueFull,
    /// The record is larger than `message.max.bytes`.
    TooLarge,
    /// Anything else librdkafka refused (fatal idempotence error, closed handle).
    Other(KafkaError),
}

impl std::fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnqueueError::QueueFull => f.write_str("the Kafka producer's queue is full"),
            EnqueueError::TooLarge => f.write_str("the record is larger than message.max.bytes"),
            EnqueueError::Other(e) => write!(f, "the Kafka producer refused the record: {e}"),
        }
    }
}

impl std::error::Error for EnqueueError {}

/// What the delivery callback needs to know about a record.
struct Delivery {
    stream: Stream,
    id: String,
    enqueued_at: Instant,
}

/// librdkafka callbacks: logs, errors, statistics and delivery reports.
struct BridgeContext {
    metrics: Arc<Metrics>,
}

impl ClientContext for BridgeContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(target: "librdkafka", facility = fac, "{message}"),
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility = fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility = fac, "{message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        self.metrics.kafka_statistics(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Transient connection errors are retried by librdkafka; readiness and
        // kafka_brokers_up show their effect. Fatal ones end in delivery failures.
        warn!(target: "librdkafka", %error, reason, "Kafka client error.");
    }
}

impl ProducerContext for BridgeContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        match result {
            Ok(_) => self
                .metrics
                .delivered(delivery.stream, delivery.enqueued_at.elapsed()),
            Err((error, _message)) => {
                self.metrics.delivery_failed(
                    delivery.stream,
                    error_class(error),
                    &delivery.id,
                    error,
                );
            }
        }
    }
}

/// Bounded label for a delivery error.
pub fn error_class(error: &KafkaError) -> &'static str {
    use RDKafkaErrorCode as C;
    let Some(code) = error.rdkafka_error_code() else {
        return "other";
    };
    // librdkafka has hundreds of codes; everything not named here is "other".
    match code {
        C::MessageTimedOut | C::RequestTimedOut => "timeout",
        C::MessageSizeTooLarge => "message_too_large",
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => "unknown_topic",
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication => "authorization",
        C::PurgeQueue | C::PurgeInflight => "purged",
        C::AllBrokersDown | C::BrokerTransportFailure | C::BrokerNotAvailable => {
            "broker_unavailable"
        }
        C::NotEnoughReplicas | C::NotEnoughReplicasAfterAppend => "not_enough_replicas",
        C::Fatal | C::OutOfOrderSequenceNumber | C::InvalidProducerEpoch => "fatal",
        _ => "other",
    }
}

/// The producer and the two topics it writes.
pub struct KafkaSink {
    producer: ThreadedProducer<BridgeContext>,
    topic: String,
    dlq_topic: String,
    metrics: Arc<Metrics>,
}

/// The bridge's producer defaults; any of them can be overridden by a
/// user-supplied librdkafka property.
pub fn producer_defaults(max_body_bytes: usize) -> Vec<(&'static str, String)> {
    // A record is the body plus our envelope; leave room for both.
    let message_max = (2 * max_body_bytes + 64 * 1024).max(1_000_000);
    vec![
        ("client.id", "chat-kafka-bridge".into()),
        ("enable.idempotence", "true".into()),
        ("acks", "all".into()),
        ("compression.type", "lz4".into()),
        ("partitioner", "murmur2_random".into()),
        ("linger.ms", "5".into()),
        ("queue.buffering.max.messages", "100000".into()),
        ("queue.buffering.max.kbytes", "65536".into()),
        ("message.max.bytes", message_max.to_string()),
        ("statistics.interval.ms", "5000".into()),
    ]
}

impl KafkaSink {
    /// Creates the producer for `bootstrap_servers`. Does not wait for the
    /// brokers: readiness does that ([`KafkaSink::probe`]).
    pub fn new(
        config: &KafkaConfig,
        bootstrap_servers: &str,
        max_body_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", bootstrap_servers);
        for (k, v) in producer_defaults(max_body_bytes) {
            client.set(k, v);
        }
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        let producer: ThreadedProducer<BridgeContext> = client
            .create_with_context(BridgeContext {
                metrics: metrics.clone(),
            })
            .map_err(|e| anyhow::anyhow!("invalid Kafka producer configuration: {e}"))?;
        Ok(KafkaSink {
            producer,
            topic: config.topic.clone(),
            dlq_topic: config.dlq_topic.clone(),
            metrics,
        })
    }

    /// Hands a normalized event to the producer's queue.
    pub fn publish_event(&self, event: &Event) -> Result<(), EnqueueError> {
        let payload = serde_json::to_vec(event).expect("events always serialize");
        let ce_type = format!("com.tencentcloud.chat.{}", event.payload.type_name());
        let source = format!("/tencent-cloud-chat/apps/{}", event.sdk_app_id);
        let time = rfc3339_ms(event.event_time_ms);
        let mut headers = OwnedHeaders::new_with_capacity(7)
            .insert(h("ce_specversion", "1.0"))
            .insert(h("ce_id", &event.id))
            .insert(h("ce_source", &source))
            .insert(h("ce_type", &ce_type))
            .insert(h("ce_time", &time))
            .insert(h("content-type", "application/json"));
        if let Some(account) = &event.official_account {
            headers = headers.insert(h("ce_subject", account));
        }
        self.send(
            Stream::Events,
            &self.topic,
            event.kafka_key(),
            &payload,
            headers,
            &event.id,
            event.received_at_ms,
        )
    }

    /// Hands a dead letter (the raw body, reason in headers) to the producer's queue.
    pub fn publish_dead_letter(&self, dl: &DeadLetter) -> Result<(), EnqueueError> {
        let app = dl.sdk_app_id.to_string();
        let received = dl.received_at_ms.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(9)
            .insert(h("bridge_id", &dl.id))
            .insert(h("bridge_reason", dl.reason))
            .insert(h("bridge_error", &dl.error))
            .insert(h("bridge_sdk_app_id", &app))
            .insert(h("bridge_command", &dl.command))
            .insert(h("bridge_received_at_ms", &received))
            .insert(h("content-type", "application/octet-stream"));
        if let Some(ip) = &dl.client_ip {
            headers = headers.insert(h("bridge_client_ip", ip));
        }
        if let Some(p) = &dl.platform {
            headers = headers.insert(h("bridge_platform", p));
        }
        self.send(
            Stream::DeadLetter,
            &self.dlq_topic,
            None,
            &dl.body,
            headers,
            &dl.id,
            dl.received_at_ms,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        stream: Stream,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        headers: OwnedHeaders,
        id: &str,
        timestamp_ms: u64,
    ) -> Result<(), EnqueueError> {
        let delivery = Box::new(Delivery {
            stream,
            id: id.to_owned(),
            enqueued_at: Instant::now(),
        });
        let mut record = BaseRecord::with_opaque_to(topic, delivery)
            .payload(payload)
            .headers(headers)
            .timestamp(i64::try_from(timestamp_ms).unwrap_or(i64::MAX));
        if let Some(key) = key {
            record = record.key(key);
        }
        match self.producer.send(record) {
            Ok(()) => {
                self.metrics.enqueued(stream);
                Ok(())
            }
            Err((e, _record)) => Err(match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::QueueFull) => EnqueueError::QueueFull,
                Some(RDKafkaErrorCode::MessageSizeTooLarge) => EnqueueError::TooLarge,
                _ => EnqueueError::Other(e),
            }),
        }
    }

    /// Asks the cluster for the metadata of both topics: `Ok` when each
    /// exists and has partitions. Blocks up to `timeout` per topic: call
    /// from a blocking thread.
    pub fn probe(&self, timeout: Duration) -> Result<(), String> {
        for topic in [&self.topic, &self.dlq_topic] {
            let md = self
                .producer
                .client()
                .fetch_metadata(Some(topic), timeout)
                .map_err(|e| e.to_string())?;
            match md.topics().iter().find(|t| t.name() == topic.as_str()) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {}
                Some(t) => {
                    return Err(match t.error() {
                        Some(e) => format!("topic {topic}: {:?}", RDKafkaErrorCode::from(e)),
                        None => format!("topic {topic} has no partitions"),
                    });
                }
                None => return Err(format!("topic {topic} is not in the metadata")),
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for every queued record's delivery report.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Records still waiting for a delivery report.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

fn h<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// `2024-11-28T05:40:00.123Z` for Unix milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_millis_and_utc() {
        assert_eq!(rfc3339_ms(1_732_770_000_125), "2024-11-28T05:00:00.125Z");
    }

    #[test]
    fn delivery_errors_are_classified() {
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(error_class(&e), "timeout");
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(error_class(&e), "authorization");
        let e = KafkaError::Canceled;
        assert_eq!(error_class(&e), "other");
    }
}
