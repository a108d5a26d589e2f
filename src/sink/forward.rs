//! The forwarder: reads the spool in order and publishes it to Kafka while
//! Kafka is reachable. In `spooled` mode it carries every event; in the other
//! modes only those whose delivery failed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::spool::Spool;
use super::{EnqueueError, KafkaSink, Origin, spool_discard_reason};
use crate::health::KafkaReachable;
use crate::metrics::{Discard, Metrics, SpoolCause};

/// Records the forwarder may have in the producer at once.
const MAX_IN_FLIGHT: usize = 10_000;
/// Records read from disk per batch.
const BATCH: usize = 500;
/// How long an idle forwarder waits before looking at the spool again,
/// besides being woken by a write.
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// Runs until `stopped` resolves, publishing while `kafka` (the readiness
/// probe's view) says Kafka is reachable.
pub async fn run(
    spool: Spool,
    sink: Arc<KafkaSink>,
    kafka: KafkaReachable,
    metrics: Arc<Metrics>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut written = spool.subscribe();
    let mut cursor = spool.start();
    let mut announced = false;
    loop {
        if !kafka.get() {
            tokio::select! {
                () = &mut stopped => return,
                () = tokio::time::sleep(Duration::from_millis(250)) => continue,
            }
        }
        let reader = spool.clone();
        let read = tokio::task::spawn_blocking(move || {
            let batch = reader.read(&mut cursor, BATCH);
            (cursor, batch)
        })
        .await;
        let batch = match read {
            Ok((c, Ok(batch))) => {
                cursor = c;
                batch
            }
            Ok((c, Err(e))) => {
                cursor = c;
                warn!(error = %e, "Reading the spool failed; retrying in 1 s.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                warn!(error = %e, "Spool reader task failed.");
                continue;
            }
        };
        if batch.is_empty() {
            announced = false;
            tokio::select! {
                () = &mut stopped => return,
                _ = written.changed() => {}
                () = tokio::time::sleep(IDLE_WAIT) => {}
            }
            continue;
        }
        if !announced && spool.pending() > batch.len() as u64 {
            info!(
                pending = spool.pending(),
                "Publishing spooled events to Kafka."
            );
            announced = true;
        }
        for (ticket, record) in batch {
            loop {
                let permit = tokio::select! {
                    () = &mut stopped => return,
                    p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                };
                match sink.send(&record, Origin::Replay { ticket, permit }) {
                    Ok(()) => break,
                    Err(EnqueueError::QueueFull) | Err(EnqueueError::Other(_)) => {
                        // Back off; the record is still only in the spool.
                        tokio::select! {
                            () = &mut stopped => return,
                            () = tokio::time::sleep(Duration::from_millis(50)) => {}
                        }
                    }
                    Err(EnqueueError::TooLarge) => {
                        // Larger than the limit now (the setting or the topic
                        // changed since it was spooled): it can never be sent.
                        // Its dead letter, trimmed to fit, takes its place.
                        match sink.limits().trimmed_dead_letter(&record) {
                            Some(dl) => {
                                if let Err(e) = spool.append(&dl, SpoolCause::TooLarge).await {
                                    metrics.event_discarded(
                                        spool_discard_reason(&e),
                                        &record.id,
                                        &e,
                                    );
                                }
                            }
                            None => metrics.spool_discarded(Discard::RecordTooLarge),
                        }
                        spool.resolve(ticket);
                        break;
                    }
                }
            }
        }
    }
}
