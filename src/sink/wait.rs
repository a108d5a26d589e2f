//! `delivered` mode's hand-over between a request waiting for Kafka's
//! acknowledgement and the delivery callback that reports it.
//!
//! Exactly one of them spools a record whose delivery failed, whatever
//! happens first: the request takes the record back when it times out or
//! hears of the failure; the callback spools it when the request is gone
//! (hyper drops a request's future when its client disconnects, issue 12,
//! finding 2); and if the callback reported a failure that the request
//! never read, the request's drop spools it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::oneshot;

use super::record::OutRecord;
use super::spool::Spool;
use crate::metrics::{Metrics, SpoolCause};

/// The request is waiting; nobody has taken the record.
const WAITING: u8 = 0;
/// The request took the record back (it spools it, or it was delivered).
const REQUEST: u8 = 1;
/// The callback reported a failure to the waiting request.
const REPORTED: u8 = 2;
/// The request went away without taking the record: the callback spools it.
const ABANDONED: u8 = 3;

/// The callback's end: given to the producer with the record.
pub struct Waiter {
    tx: oneshot::Sender<bool>,
    state: Arc<AtomicU8>,
}

/// What the callback must do after a failed delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Failed {
    /// The request spools (or has spooled) its copy.
    RequestSpools,
    /// The request is gone: the callback spools the record.
    CallbackSpools,
}

impl Waiter {
    /// The broker acknowledged the record.
    pub fn delivered(self) {
        let _ = self.tx.send(true);
    }

    /// The delivery failed; says who spools the record.
    pub fn failed(self) -> Failed {
        match self
            .state
            .compare_exchange(WAITING, REPORTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // If the request goes away before reading this, its drop
                // sees REPORTED and spools the record.
                let _ = self.tx.send(false);
                Failed::RequestSpools
            }
            Err(ABANDONED) => Failed::CallbackSpools,
            Err(_) => Failed::RequestSpools,
        }
    }
}

/// The request's end: the record, until it is delivered or taken back.
pub struct Wait {
    rx: oneshot::Receiver<bool>,
    state: Arc<AtomicU8>,
    record: Option<OutRecord>,
    spool: Spool,
    metrics: Arc<Metrics>,
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Kafka acknowledged the record.
    Delivered,
    /// The delivery failed: the request spools the record.
    Failed(OutRecord),
    /// No report before the deadline: the request spools the record (if it
    /// is delivered later, Kafka gets it twice, with the same id).
    TimedOut(OutRecord),
}

/// A waiter for `record`, and the request's end of it.
pub fn pair(record: OutRecord, spool: Spool, metrics: Arc<Metrics>) -> (Waiter, Wait) {
    let (tx, rx) = oneshot::channel();
    let state = Arc::new(AtomicU8::new(WAITING));
    let waiter = Waiter {
        tx,
        state: state.clone(),
    };
    let wait = Wait {
        rx,
        state,
        record: Some(record),
        spool,
        metrics,
    };
    (waiter, wait)
}

impl Wait {
    /// The record, while the wait holds it.
    pub fn record(&self) -> &OutRecord {
        self.record.as_ref().expect("held until taken")
    }

    /// Gives up the wait before it began (the producer refused the record):
    /// the request takes the record back.
    pub fn cancel(mut self) -> OutRecord {
        self.take().0
    }

    /// Waits for the report until `deadline`.
    pub async fn until(mut self, deadline: tokio::time::Instant) -> Outcome {
        let heard = tokio::time::timeout_at(deadline, &mut self.rx).await;
        let (record, before) = self.take();
        match heard {
            Ok(Ok(true)) => Outcome::Delivered,
            Ok(_) => Outcome::Failed(record),
            // The failure was reported just as the deadline passed.
            Err(_) if before == REPORTED => Outcome::Failed(record),
            Err(_) => Outcome::TimedOut(record),
        }
    }

    /// Takes the record back: from now on the request owns it (a failure
    /// reported after this is the request's to spool). Returns the state
    /// before.
    fn take(&mut self) -> (OutRecord, u8) {
        let before = self.state.swap(REQUEST, Ordering::AcqRel);
        (self.record.take().expect("taken once"), before)
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        let Some(record) = self.record.take() else {
            return;
        };
        match self
            .state
            .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        {
            // The callback spools it if the delivery fails.
            Ok(_) => {}
            // A failure was reported and nobody read it.
            Err(REPORTED) => {
                if let Err(e) = self
                    .spool
                    .append_detached(record, SpoolCause::DeliveryFailed)
                {
                    self.metrics
                        .event_discarded(super::spool_discard_reason(&e), "-", &e);
                }
            }
            Err(_) => {}
        }
    }
}
