//! The Kafka producer: record layout (key, CloudEvents headers), the delivery
//! callback, readiness probe and flush.
//!
//! One `ThreadedProducer` with a `ProducerContext`: delivery reports arrive on
//! librdkafka's poll thread and go to [`Metrics`], to a waiting request
//! (`delivered` mode), or, on failure, to the spool; there is no task or
//! future per message. `send` never waits for the broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext, Message, Statistics};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, info, warn};

use super::record::{OutRecord, trimmed_dead_letter};
use super::spool::{Spool, SpoolError, Ticket};
use super::wait::{Failed, Waiter};
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
        waiter: Option<Waiter>,
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
    limits: Arc<Limits>,
}

impl BridgeContext {
    fn failed(&self, delivery: Delivery, error: &KafkaError, message: &BorrowedMessage<'_>) {
        let class = error_class(error);
        if class == ErrorClass::MessageTooLarge {
            return self.too_large(delivery, error, message);
        }
        self.metrics
            .delivery_failed(delivery.stream, class, &delivery.id, error);
        match delivery.origin {
            Origin::Live {
                waiter: Some(waiter),
            } => {
                if waiter.failed() == Failed::CallbackSpools {
                    // The request that waited for it is gone (its client
                    // disconnected): nobody else holds the record.
                    self.spool_live(rebuild(delivery.stream, delivery.id, message));
                }
            }
            Origin::Live { waiter: None } => {
                self.spool_live(rebuild(delivery.stream, delivery.id, message));
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

impl BridgeContext {
    /// Spools an acknowledged record whose delivery failed.
    fn spool_live(&self, record: OutRecord) {
        if let Err(e) = self
            .spool
            .append_blocking(&record, SpoolCause::DeliveryFailed)
        {
            self.metrics
                .event_discarded(spool_discard_reason(&e), &record.id, &e);
        }
    }

    /// The broker refused the record as too large: permanent (sending it
    /// again would be refused again, issue 12, finding 1). Its dead letter,
    /// trimmed to fit, goes to the spool for the forwarder to publish; the
    /// record itself is never re-spooled.
    fn too_large(&self, delivery: Delivery, error: &KafkaError, message: &BorrowedMessage<'_>) {
        let record = rebuild(delivery.stream, delivery.id, message);
        self.metrics
            .record_too_large(delivery.stream, &record.id, record.size(), error);
        let trimmed = self.limits.trimmed_dead_letter(&record);
        let handled = match trimmed {
            Some(dl) => match self.spool.append_blocking(&dl, SpoolCause::TooLarge) {
                Ok(()) => true,
                Err(e) => {
                    self.metrics
                        .event_discarded(spool_discard_reason(&e), &record.id, &e);
                    false
                }
            },
            None => {
                self.metrics.event_discarded(
                    Discard::RecordTooLarge,
                    &record.id,
                    &"even its trimmed dead letter does not fit",
                );
                false
            }
        };
        match delivery.origin {
            // Handled here: the waiting request must not spool it again.
            Origin::Live {
                waiter: Some(waiter),
            } => waiter.delivered(),
            Origin::Live { waiter: None } => {}
            // Never replayed again, whether its dead letter fit or not
            // (then it is counted as discarded).
            Origin::Replay { ticket, permit } => {
                drop(permit);
                let _ = handled;
                self.spool.resolve(ticket);
            }
        }
    }
}

/// The size limits records must respect: the setting, lowered to the
/// smallest `max.message.bytes` of the topics (read by the readiness
/// probe), and where a too-large record's dead letter goes.
pub struct Limits {
    /// Largest record, in [`OutRecord::size`] bytes.
    max_record_bytes: AtomicUsize,
    /// Each app's dead-letter topic, by `SdkAppid`.
    dead_letter_topics: HashMap<u64, Arc<str>>,
    /// For records of an app this process no longer has.
    default_dead_letter_topic: Arc<str>,
}

impl Limits {
    /// The current record limit.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes.load(Ordering::Relaxed)
    }

    /// The dead letter for a record Kafka cannot take, its value trimmed so
    /// that the whole record fits; `None` when even that cannot fit.
    pub fn trimmed_dead_letter(&self, record: &OutRecord) -> Option<OutRecord> {
        let topic = record
            .sdk_app_id()
            .and_then(|id| self.dead_letter_topics.get(&id).cloned())
            .unwrap_or_else(|| self.default_dead_letter_topic.clone());
        trimmed_dead_letter(record, self.max_record_bytes(), topic)
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
                .map(|h| {
                    (
                        h.key.to_owned().into(),
                        h.value.unwrap_or_default().to_vec(),
                    )
                })
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
        // kafka_brokers_up show their effect. A fatal one (reported here
        // with its underlying code) ends the producer: the readiness probe
        // finds it and raises chat_bridge_kafka_fatal_error.
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
                            w.delivered();
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
    limits: Arc<Limits>,
    /// Asks the topics' `max.message.bytes` (created on the first probe).
    admin: std::sync::OnceLock<Result<AdminClient<DefaultClientContext>, String>>,
    client: ClientConfig,
    /// The configured limit, before the topics lower it.
    configured_max_record: usize,
}

/// Room librdkafka's `message.max.bytes` (a whole request's limit) leaves
/// above the largest record the bridge sends.
const MESSAGE_MAX_MARGIN: usize = 16 * 1024;

/// The bridge's producer defaults; any of them can be overridden by a
/// user-supplied librdkafka property. `max_record_bytes` is
/// `BRIDGE_KAFKA_MAX_RECORD_BYTES`, below a default broker's and topic's
/// 1 048 588.
pub fn producer_defaults(max_record_bytes: usize) -> Vec<(&'static str, String)> {
    let message_max = max_record_bytes + MESSAGE_MAX_MARGIN;
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
        dead_letter_topics: HashMap<u64, Arc<str>>,
        metrics: Arc<Metrics>,
        spool: Spool,
        draining: Draining,
    ) -> anyhow::Result<Self> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", bootstrap_servers);
        for (k, v) in producer_defaults(config.max_record_bytes) {
            client.set(k, v);
        }
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        let limits = Arc::new(Limits {
            max_record_bytes: AtomicUsize::new(config.max_record_bytes),
            dead_letter_topics,
            default_dead_letter_topic: Arc::from(config.dlq_topic.as_str()),
        });
        let producer: ThreadedProducer<BridgeContext> = client
            .create_with_context(BridgeContext {
                metrics: metrics.clone(),
                spool,
                draining,
                limits: limits.clone(),
            })
            .map_err(|e| anyhow::anyhow!("invalid Kafka producer configuration: {e}"))?;
        Ok(KafkaSink {
            producer,
            topic: config.topic.clone(),
            dlq_topic: config.dlq_topic.clone(),
            probe_topics,
            metrics,
            limits,
            admin: std::sync::OnceLock::new(),
            client,
            configured_max_record: config.max_record_bytes,
        })
    }

    /// The size limits records must respect.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Hands `record` to the producer's queue; never waits for the broker.
    /// A record larger than the limit is refused here, before any answer.
    pub fn send(&self, record: &OutRecord, origin: Origin) -> Result<(), EnqueueError> {
        if record.size() > self.limits.max_record_bytes() {
            return Err(EnqueueError::TooLarge);
        }
        let topic = match (&record.topic, record.stream) {
            (Some(t), _) => t,
            (None, Stream::Events) => self.topic.as_str(),
            (None, Stream::DeadLetter) => self.dlq_topic.as_str(),
        };
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key: key.as_ref(),
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
    /// write: `Ok` when each exists and has partitions, and the producer has
    /// no fatal error. Then reads the topics' `max.message.bytes` and lowers
    /// the record limit to the smallest (best effort: a user without
    /// DescribeConfigs rights keeps `BRIDGE_KAFKA_MAX_RECORD_BYTES`). Blocks up
    /// to `timeout` per request: call from a blocking thread in the runtime.
    pub fn probe(&self, timeout: Duration) -> Result<(), String> {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            let advice = fatal_advice(code, &reason);
            self.producer.context().metrics.kafka_fatal_error(&advice);
            return Err(advice);
        }
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
        self.read_topic_limits(timeout);
        Ok(())
    }

    /// Lowers the record limit to the topics' smallest `max.message.bytes`
    /// (less the batch's own overhead).
    fn read_topic_limits(&self, timeout: Duration) {
        let admin = self.admin.get_or_init(|| {
            self.client
                .create::<AdminClient<DefaultClientContext>>()
                .map_err(|e| e.to_string())
        });
        let Ok(admin) = admin else { return };
        let specs: Vec<ResourceSpecifier<'_>> = self
            .probe_topics
            .iter()
            .map(|t| ResourceSpecifier::Topic(t))
            .collect();
        let opts = AdminOptions::new().request_timeout(Some(timeout));
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let smallest = match handle.block_on(admin.describe_configs(&specs, &opts)) {
            Ok(results) => results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .filter_map(|r| {
                    r.get("max.message.bytes")?
                        .value
                        .as_deref()?
                        .parse::<usize>()
                        .ok()
                })
                .min(),
            Err(e) => {
                debug!(error = %e, "Could not read the topics' max.message.bytes; keeping BRIDGE_KAFKA_MAX_RECORD_BYTES.");
                None
            }
        };
        let limit = match smallest {
            Some(topic_max) => self
                .configured_max_record
                .min(topic_max.saturating_sub(MESSAGE_MAX_MARGIN)),
            None => self.configured_max_record,
        };
        let was = self.limits.max_record_bytes.swap(limit, Ordering::Relaxed);
        if was != limit {
            info!(
                max_record_bytes = limit,
                topics_max_message_bytes = ?smallest,
                "Record limit set from the topics' max.message.bytes and BRIDGE_KAFKA_MAX_RECORD_BYTES."
            );
        }
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

/// What a fatal producer error means and what to change: the idempotent
/// producer cannot go on, so the bridge is not ready (and says why) rather
/// than acknowledging callbacks it can never deliver (issue 13).
fn fatal_advice(code: RDKafkaErrorCode, reason: &str) -> String {
    let fix = match code {
        RDKafkaErrorCode::ClusterAuthorizationFailed
        | RDKafkaErrorCode::TopicAuthorizationFailed => {
            "grant the bridge's user IdempotentWrite on the cluster (brokers before 2.8 require it for idempotence), or set BRIDGE_KAFKA_PROP_ENABLE_IDEMPOTENCE=false and accept duplicates on retries"
        }
        _ => "restart the bridge; if it recurs, check the broker's logs",
    };
    format!("the Kafka producer has a fatal error ({code:?}: {reason}): {fix}")
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
