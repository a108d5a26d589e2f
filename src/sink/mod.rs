//! Where events go: the Kafka producer, the spool in front of and behind it,
//! the acknowledgement modes, and the embedded broker used when no brokers
//! are configured. Only [`crate::event`] types are written to Kafka.

mod embedded;
pub mod forward;
mod kafka;
pub mod record;
pub mod spool;
mod wait;

use std::sync::Arc;
use std::time::Duration;

pub use embedded::EmbeddedKafka;
pub use kafka::{
    Delivery, EnqueueError, KafkaSink, Origin, error_class, producer_defaults, spool_discard_reason,
};
pub use record::{OutRecord, Records};
pub use spool::{Spool, SpoolError};

use crate::config::AckMode;
use crate::event::{DeadLetter, Event};
use crate::metrics::{Metrics, SpoolCause};

/// Why an accepted callback cannot be acknowledged.
#[derive(Debug)]
pub enum AcceptError {
    /// The record is larger than the producer accepts.
    TooLarge,
    /// It had to be spooled, and the spool is full.
    SpoolFull,
    /// It had to be spooled, and writing the spool failed (or it is closed).
    SpoolFailed(SpoolError),
}

impl From<SpoolError> for AcceptError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Full => AcceptError::SpoolFull,
            SpoolError::Io(_) | SpoolError::Closed => AcceptError::SpoolFailed(e),
        }
    }
}

impl std::fmt::Display for AcceptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcceptError::TooLarge => EnqueueError::TooLarge.fmt(f),
            AcceptError::SpoolFull => SpoolError::Full.fmt(f),
            AcceptError::SpoolFailed(e) => e.fmt(f),
        }
    }
}

/// Applies `BRIDGE_ACK_MODE`: when a callback may be answered OK.
pub struct Publisher {
    kafka: Arc<KafkaSink>,
    records: Records,
    spool: Spool,
    mode: AckMode,
    deadline: Duration,
    metrics: Arc<Metrics>,
}

impl Publisher {
    /// Publishes through `kafka`, spooling to `spool`, acknowledging as
    /// `mode` says (`deadline`: how long `delivered` mode waits for Kafka).
    pub fn new(
        kafka: Arc<KafkaSink>,
        spool: Spool,
        mode: AckMode,
        deadline: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Publisher {
            kafka,
            records: Records::new(),
            spool,
            mode,
            deadline,
            metrics,
        }
    }

    /// Publishes the events of one callback to `topic`, each with its key;
    /// returns once all are as safe as the mode promises (`at_once`: once
    /// queued, for "Before" callbacks).
    pub async fn publish<'a>(
        &self,
        events: impl IntoIterator<Item = (&'a Event, Option<String>)>,
        topic: &Arc<str>,
        at_once: bool,
    ) -> Result<(), AcceptError> {
        let records = events
            .into_iter()
            .map(|(event, key)| self.records.event(event, topic.clone(), key))
            .collect();
        self.accept_all(records, at_once).await
    }

    /// Publishes a dead letter to `topic`; returns once it is as safe as the
    /// mode promises.
    pub async fn dead_letter(&self, dl: &DeadLetter, topic: Arc<str>) -> Result<(), AcceptError> {
        let record = self.records.dead_letter(dl, topic);
        self.accept_all(vec![record], false).await
    }

    /// Returns once every record of one callback is as safe as the mode
    /// promises (`at_once`: once queued, whatever the mode, for "Before"
    /// callbacks). Several records (a batch's items) are spooled in one sync,
    /// and in `delivered` mode wait for Kafka together, under one deadline,
    /// so a batch is answered as soon as a single event would be.
    async fn accept_all(&self, records: Vec<OutRecord>, at_once: bool) -> Result<(), AcceptError> {
        // Refused before anything is acknowledged, in every mode: a record
        // Kafka cannot take would otherwise loop between the producer and
        // the spool (issue 12, finding 1).
        let max = self.kafka.limits().max_record_bytes();
        if records.iter().any(|r| r.size() > max) {
            return Err(AcceptError::TooLarge);
        }
        match (self.mode, at_once) {
            (AckMode::Enqueued, _) | (_, true) => {
                for record in records {
                    self.accept_at_once(record).await?;
                }
                Ok(())
            }
            (AckMode::Spooled, false) => match records.as_slice() {
                [one] => self.spool(one, SpoolCause::Accepted).await,
                all => Ok(self.spool.append_all(all, SpoolCause::Accepted).await?),
            },
            (AckMode::Delivered, false) => self.deliver(records).await,
        }
    }

    /// `delivered` mode: sends every record, then waits for Kafka's reports
    /// under one deadline; what fails or is late is spooled. Every record sent
    /// is awaited (or spooled), even after an error, so that none is left to a
    /// waiter that is gone.
    async fn deliver(&self, records: Vec<OutRecord>) -> Result<(), AcceptError> {
        let mut first_error = None;
        let mut waiting = Vec::with_capacity(records.len());
        for record in records {
            let (waiter, wait) = wait::pair(record, self.spool.clone(), self.metrics.clone());
            let origin = Origin::Live {
                waiter: Some(waiter),
            };
            // The record travels in `wait`: if this request goes away (its
            // client disconnects), whoever holds it then spools it.
            match self.kafka.send(wait.record(), origin) {
                Ok(()) => waiting.push(wait),
                Err(e) => {
                    let record = wait.cancel();
                    if let Err(e) = self.spill(&record, e).await {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.deadline;
        for wait in waiting {
            let outcome = match wait.until(deadline).await {
                wait::Outcome::Delivered => Ok(()),
                wait::Outcome::Failed(record) => {
                    self.spool(&record, SpoolCause::DeliveryFailed).await
                }
                // Still in the producer's queue too: if it is delivered
                // later, Kafka gets it twice, with the same id.
                wait::Outcome::TimedOut(record) => self.spool(&record, SpoolCause::Deadline).await,
            };
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Returns once `record` is in the producer's queue (or, if the queue
    /// cannot take it, in the spool), whatever the mode: for `enqueued`, and
    /// for the audit events of "Before" callbacks, whose answer a user's
    /// action is waiting for. A failed delivery still goes to the spool.
    async fn accept_at_once(&self, record: OutRecord) -> Result<(), AcceptError> {
        match self.kafka.send(&record, Origin::Live { waiter: None }) {
            Ok(()) => Ok(()),
            Err(e) => self.spill(&record, e).await,
        }
    }

    async fn spill(&self, record: &OutRecord, e: EnqueueError) -> Result<(), AcceptError> {
        match e {
            EnqueueError::TooLarge => Err(AcceptError::TooLarge),
            EnqueueError::QueueFull => self.spool(record, SpoolCause::QueueFull).await,
            EnqueueError::Other(_) => self.spool(record, SpoolCause::ProducerError).await,
        }
    }

    async fn spool(&self, record: &OutRecord, cause: SpoolCause) -> Result<(), AcceptError> {
        Ok(self.spool.append(record, cause).await?)
    }
}
