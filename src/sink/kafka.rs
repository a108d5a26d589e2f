//! The Kafka producer: record layout (key, CloudEvents headers), the delivery
//! callback, readiness probe and flush.
//!
//! One `ThreadedProducer` with a `ProducerContext`: delivery reports arrive on
//! librdkafka's poll thread and go to [`Metrics`], to a waiting request
//! (`delivered` mode), or, on failure, to the spool; there is no task or
//! future per message. `send` never waits for the broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext, Message, Statistics};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tracing::{debug, error, info, warn};

use super::record::OutRecord;
use super::spool::{Spool, SpoolError, Ticket};
use crate::config::KafkaConfig;
use crate::health::Draining;
use crate::metrics::{Discard, ErrorClass, Metrics, SpoolCause, Stream};

/// Why a record could not be handed to the producer.
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

/// Who is waiting for a record's delivery report.
pub enum Origin {
    /// A live callback. `waiter` is set in `delivered` mode: it hears
    /// `true` (delivered) or `false` (failed; the waiter spools its copy).
    /// Without a waiter, a failed record is spooled by the delivery callback.
    Live {
        /// The request waiting for the outcome, if any.
        waiter: Option<oneshot::Sender<bool>>,
    },
    /// A record read back from the spool.
    Replay {
        /// Its place in the spool, resolved once delivered or re-spooled.
        ticket: Ticket,
        /// Bounds the forwarder's records in flight; released with the report.
        permit: OwnedSemaphorePermit,
    },
}

/// What the delivery callback needs to know about a record.
pub struct Delivery {
    stream: Stream,
    id: String,
    enqueued_at: Instant,
    origin: Origin,
}

/// librdkafka callbacks: logs, errors, statistics and delivery reports.
struct BridgeContext {
    metrics: Arc<Metrics>,
    spool: Spool,
    draining: Draining,
}

impl BridgeContext {
    fn failed(&self, delivery: Delivery, error: &KafkaError, message: &BorrowedMessage<'_>) {
        self.metrics
            .delivery_failed(delivery.stream, error_class(error), &delivery.id, error);
        match delivery.origin {
            Origin::Live {
                waiter: Some(waiter),
            } => {
                // The waiting request spools its own copy; if it already gave
                // up waiting (deadline), it has spooled it already.
                let _ = waiter.send(false);
            }
            Origin::Live { waiter: None } => {
                let record = rebuild(delivery.stream, delivery.id, message);
                if let Err(e) = self
                    .spool
                    .append_blocking(&record, SpoolCause::DeliveryFailed)
                {
                    self.metrics
                        .event_discarded(spool_discard_reason(&e), &record.id, &e);
                }
            }
            Origin::Replay { ticket, permit } => {
                drop(permit);
                if self.draining.get() {
                    // Still in its segment: replayed on the next start.
                    return;
                }
                let record = rebuild(delivery.stream, delivery.id, message);
                match self
                    .spool
                    .append_blocking(&record, SpoolCause::ReplayFailed)
                {
                    Ok(()) => self.spool.resolve(ticket),
                    // Left unresolved in its segment: kept on disk, replayed after a restart.
                    Err(e) => warn!(
                        event_id = %record.id,
                        error = %e,
                        "Replay failed and the spool is full; the event stays in its old segment."
                    ),
                }
            }
        }
    }
}

/// Bounded reason for a record the spool refused.
pub fn spool_discard_reason(e: &SpoolError) -> Discard {
    match e {
        SpoolError::Full => Discard::SpoolFull,
        SpoolError::Io(_) => Discard::SpoolWriteFailed,
        SpoolError::Closed => Discard::SpoolClosed,
    }
}

/// The [`OutRecord`] librdkafka hands back with a failed delivery.
fn rebuild(stream: Stream, id: String, m: &BorrowedMessage<'_>) -> OutRecord {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    OutRecord {
        stream,
        topic: Some(Arc::from(m.topic())),
        id,
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        headers,
        payload: m.payload().unwrap_or_default().to_vec(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
    }
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
        let delivery = *delivery;
        match result {
            Ok(_) => {
                self.metrics
                    .delivered(delivery.stream, delivery.enqueued_at.elapsed());
                match delivery.origin {
                    Origin::Live { waiter } => {
                        if let Some(w) = waiter {
                            let _ = w.send(true);
                        }
                    }
                    Origin::Replay { ticket, permit } => {
                        drop(permit);
                        self.metrics.replayed();
                        self.spool.resolve(ticket);
                    }
                }
            }
            Err((error, message)) => self.failed(delivery, error, message),
        }
    }
}

/// Bounded label for a delivery error.
pub fn error_class(error: &KafkaError) -> ErrorClass {
    use ErrorClass as E;
    use RDKafkaErrorCode as C;
    let Some(code) = error.rdkafka_error_code() else {
        return E::Other;
    };
    // librdkafka has hundreds of codes; everything not named here is "other".
    match code {
        C::MessageTimedOut | C::RequestTimedOut => E::Timeout,
        C::MessageSizeTooLarge => E::MessageTooLarge,
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => E::UnknownTopic,
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication => E::Authorization,
        C::PurgeQueue | C::PurgeInflight => E::Purged,
        C::AllBrokersDown | C::BrokerTransportFailure | C::BrokerNotAvailable => {
            E::BrokerUnavailable
        }
        C::NotEnoughReplicas | C::NotEnoughReplicasAfterAppend => E::NotEnoughReplicas,
        C::Fatal | C::OutOfOrderSequenceNumber | C::InvalidProducerEpoch => E::Fatal,
        _ => E::Other,
    }
}

/// The producer, and the topics it writes.
pub struct KafkaSink {
    producer: ThreadedProducer<BridgeContext>,
    /// Where records without a topic go (spooled by bridges before 0.2).
    topic: String,
    dlq_topic: String,
    /// Every topic readiness asks about.
    probe_topics: Vec<String>,
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
        // A short memory buffer: past it (and past the message timeout),
        // records wait in the spool on disk, not in memory.
        ("queue.buffering.max.messages", "20000".into()),
        ("queue.buffering.max.kbytes", "32768".into()),
        ("message.timeout.ms", "60000".into()),
        ("message.max.bytes", message_max.to_string()),
        ("statistics.interval.ms", "5000".into()),
    ]
}

impl KafkaSink {
    /// Creates the producer for `bootstrap_servers`. Does not wait for the
    /// brokers: readiness does that ([`KafkaSink::probe`]).
    pub fn new(
        config: &KafkaConfig,
        probe_topics: Vec<String>,
        bootstrap_servers: &str,
        max_body_bytes: usize,
        metrics: Arc<Metrics>,
        spool: Spool,
        draining: Draining,
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
                spool,
                draining,
            })
            .map_err(|e| anyhow::anyhow!("invalid Kafka producer configuration: {e}"))?;
        Ok(KafkaSink {
            producer,
            topic: config.topic.clone(),
            dlq_topic: config.dlq_topic.clone(),
            probe_topics,
            metrics,
        })
    }

    /// Hands `record` to the producer's queue; never waits for the broker.
    pub fn send(&self, record: &OutRecord, origin: Origin) -> Result<(), EnqueueError> {
        let topic = match (&record.topic, record.stream) {
            (Some(t), _) => t,
            (None, Stream::Events) => self.topic.as_str(),
            (None, Stream::DeadLetter) => self.dlq_topic.as_str(),
        };
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key: key.as_str(),
                value: Some(value.as_slice()),
            });
        }
        let delivery = Box::new(Delivery {
            stream: record.stream,
            id: record.id.clone(),
            enqueued_at: Instant::now(),
            origin,
        });
        let mut base = BaseRecord::with_opaque_to(topic, delivery)
            .payload(&record.payload)
            .headers(headers)
            .timestamp(record.timestamp_ms);
        if let Some(key) = &record.key {
            base = base.key(key.as_str());
        }
        match self.producer.send(base) {
            Ok(()) => {
                self.metrics.enqueued(record.stream);
                Ok(())
            }
            Err((e, _)) => Err(match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::QueueFull) => EnqueueError::QueueFull,
                Some(RDKafkaErrorCode::MessageSizeTooLarge) => EnqueueError::TooLarge,
                _ => EnqueueError::Other(e),
            }),
        }
    }

    /// Asks the cluster for the metadata of every topic the bridge may
    /// write: `Ok` when each exists and has partitions. Blocks up to
    /// `timeout` per topic: call from a blocking thread.
    pub fn probe(&self, timeout: Duration) -> Result<(), String> {
        for topic in &self.probe_topics {
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

    /// Gives up on every queued and in-flight record: each gets a failed
    /// delivery report (and so goes to the spool). For the end of shutdown.
    pub fn purge(&self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_errors_are_classified() {
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(error_class(&e), ErrorClass::Timeout);
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(error_class(&e), ErrorClass::Authorization);
        let e = KafkaError::Canceled;
        assert_eq!(error_class(&e), ErrorClass::Other);
        // One code of each class; together they cover ErrorClass::ALL.
        let cases = [
            (RDKafkaErrorCode::MessageTimedOut, ErrorClass::Timeout),
            (
                RDKafkaErrorCode::MessageSizeTooLarge,
                ErrorClass::MessageTooLarge,
            ),
            (RDKafkaErrorCode::UnknownTopic, ErrorClass::UnknownTopic),
            (
                RDKafkaErrorCode::SaslAuthenticationFailed,
                ErrorClass::Authorization,
            ),
            (RDKafkaErrorCode::PurgeQueue, ErrorClass::Purged),
            (
                RDKafkaErrorCode::AllBrokersDown,
                ErrorClass::BrokerUnavailable,
            ),
            (
                RDKafkaErrorCode::NotEnoughReplicas,
                ErrorClass::NotEnoughReplicas,
            ),
            (RDKafkaErrorCode::Fatal, ErrorClass::Fatal),
            (RDKafkaErrorCode::InvalidConfig, ErrorClass::Other),
        ];
        for (code, class) in cases {
            assert_eq!(
                error_class(&KafkaError::MessageProduction(code)),
                class,
                "{code:?}"
            );
        }
        assert_eq!(cases.len(), ErrorClass::ALL.len());
    }
}
