//! Readiness: whether the bridge can take callbacks under its ack mode.
//!
//! [`Health`] holds three facts and says who may change each: the Kafka
//! probe ([`Health::set_kafka`], [`Health::set_spool_full`]) and the shutdown
//! sequence ([`Health::set_shutting_down`]) write; `/readyz` reads
//! [`Health::not_ready_reason`]. Other parts get read-only handles:
//! [`KafkaReachable`] for the forwarder and the shutdown drain, [`Draining`]
//! for the delivery callback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::AckMode;

/// Why `/readyz` says no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// SIGTERM received; draining.
    ShuttingDown,
    /// `enqueued` mode: the producer has no metadata for the topics.
    NoKafkaMetadata,
    /// `spooled` mode: the spool is full. `delivered` mode: the spool is
    /// full and Kafka is unreachable.
    SpoolFull,
}

impl NotReady {
    /// The `/readyz` body.
    pub fn as_str(self) -> &'static str {
        match self {
            NotReady::ShuttingDown => "not ready: shutting down\n",
            NotReady::NoKafkaMetadata => {
                "not ready: no Kafka metadata for the events and dead-letter topics yet\n"
            }
            NotReady::SpoolFull => "not ready: the spool is full and Kafka cannot take events\n",
        }
    }
}

/// Readiness inputs: can the bridge accept callbacks under its ack mode?
#[derive(Debug)]
pub struct Health {
    mode: AckMode,
    kafka: Arc<AtomicBool>,
    spool_full: AtomicBool,
    shutting_down: Arc<AtomicBool>,
}

/// Read-only view of the latest Kafka probe.
#[derive(Debug, Clone)]
pub struct KafkaReachable(Arc<AtomicBool>);

impl KafkaReachable {
    /// `true` when the last probe found metadata for every topic.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Read-only view of the shutdown flag.
#[derive(Debug, Clone)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// `true` once SIGTERM (or SIGINT) has been received.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Health {
    /// Not ready until the first probe succeeds.
    pub fn new(mode: AckMode) -> Self {
        Health {
            mode,
            kafka: Arc::new(AtomicBool::new(false)),
            spool_full: AtomicBool::new(false),
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// `None` when ready.
    pub fn not_ready_reason(&self) -> Option<NotReady> {
        let kafka = self.kafka.load(Ordering::Acquire);
        let spool_room = !self.spool_full.load(Ordering::Acquire);
        if self.shutting_down.load(Ordering::Acquire) {
            return Some(NotReady::ShuttingDown);
        }
        match self.mode {
            AckMode::Enqueued if !kafka => Some(NotReady::NoKafkaMetadata),
            AckMode::Spooled if !spool_room => Some(NotReady::SpoolFull),
            AckMode::Delivered if !kafka && !spool_room => Some(NotReady::SpoolFull),
            AckMode::Enqueued | AckMode::Spooled | AckMode::Delivered => None,
        }
    }

    /// A handle that reads the Kafka probe's result.
    pub fn kafka(&self) -> KafkaReachable {
        KafkaReachable(self.kafka.clone())
    }

    /// A handle that reads the shutdown flag.
    pub fn draining(&self) -> Draining {
        Draining(self.shutting_down.clone())
    }

    /// The Kafka probe: records its latest result; returns the previous one.
    pub fn set_kafka(&self, ok: bool) -> bool {
        self.kafka.swap(ok, Ordering::AcqRel)
    }

    /// The Kafka probe: records whether the spool can take another record.
    pub fn set_spool_full(&self, full: bool) {
        self.spool_full.store(full, Ordering::Release);
    }

    /// The shutdown sequence: marks the bridge as draining (irreversible).
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
}
