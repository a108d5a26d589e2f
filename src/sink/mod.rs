//! Where events go: the Kafka producer, and the embedded broker used when no
//! brokers are configured. Only [`crate::event`] types are written to Kafka.

mod embedded;
mod kafka;

pub use embedded::EmbeddedKafka;
pub use kafka::{EnqueueError, KafkaSink, error_class, now_ms, producer_defaults, rfc3339_ms};
