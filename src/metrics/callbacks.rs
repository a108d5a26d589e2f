//! Callbacks: how each request was answered, the events it made, the
//! dead letters, the de-duplication window and answer latency.

use std::fmt::Display;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use tracing::{debug, info, warn};

use super::limit::LogLimit;
use super::{Accepted, Counted, Metrics, REQUEST_BUCKETS, Reason, Reg};
use crate::callback::{Family, Fault};

pub(super) struct Callbacks {
    pub(super) callbacks: IntCounterVec,
    events: IntCounterVec,
    pub(super) rejections: IntCounterVec,
    pub(super) dead_lettered: IntCounterVec,
    dedup_duplicates: IntCounter,
    dedup_evicted: IntCounter,
    dedup_entries: IntGauge,
    request_duration: Histogram,
    /// `rejections` by [`Reason`], resolved once.
    rejected: Vec<IntCounter>,
    /// The rejection log lines, rate-limited per reason.
    rejected_lines: Vec<LogLimit>,
    /// `callbacks` by family and outcome, resolved on first use (so
    /// `/metrics` lists only the series that happened) instead of hashing
    /// their label values each time.
    accepted: [[OnceLock<IntCounter>; Accepted::ALL.len()]; Family::ALL.len()],
    events_of: [OnceLock<IntCounter>; Family::ALL.len()],
    generic_seen: [AtomicBool; Family::ALL.len()],
    counted_seen: [AtomicBool; Family::ALL.len()],
}

impl Callbacks {
    pub(super) fn new(r: &Reg<'_>) -> Self {
        let callbacks = r.counter_vec(
            "callbacks_total",
            "Callbacks answered 200 OK, by command family and what the bridge did with them.",
            &["family", "outcome"],
        );
        let events = r.counter_vec(
            "events_total",
            "Events built from callbacks and handed to the acknowledgement mode, by command family (a batch callback makes one per item).",
            &["family"],
        );
        let rejections = r.counter_vec(
            "callbacks_rejected_total",
            "Requests on the callback port answered with a FAIL body, by reason.",
            &["reason"],
        );
        let dead_lettered = r.counter_vec(
            "callbacks_dead_lettered_total",
            "Authentic callbacks that could not be normalized and were sent raw to the dead-letter topic, by reason.",
            &["reason"],
        );
        // Series that alerts and dashboards rely on exist from the start, at 0.
        let rejected = Reason::ALL
            .iter()
            .map(|r| rejections.with_label_values(&[r.as_str()]))
            .collect();
        for fault in Fault::ALL {
            dead_lettered.with_label_values(&[fault.as_str()]).reset();
        }
        events
            .with_label_values(&[Family::OfficialAccount.as_str()])
            .reset();
        for outcome in Accepted::ALL {
            callbacks
                .with_label_values(&[Family::OfficialAccount.as_str(), outcome.as_str()])
                .reset();
        }
        Callbacks {
            callbacks,
            events,
            rejections,
            dead_lettered,
            rejected,
            rejected_lines: Reason::ALL.iter().map(|_| LogLimit::default()).collect(),
            dedup_duplicates: r.counter(
                "dedup_duplicates_total",
                "Events not published because their id was published within BRIDGE_DEDUP_WINDOW.",
            ),
            dedup_evicted: r.counter(
                "dedup_evicted_total",
                "Event ids forgotten before their de-duplication window ended, to stay within BRIDGE_DEDUP_MAX_ENTRIES.",
            ),
            dedup_entries: r.gauge(
                "dedup_entries",
                "Event ids the de-duplication window holds now.",
            ),
            request_duration: r.histogram(
                "http_request_duration_seconds",
                "Time from a callback request's arrival to its answer, all outcomes.",
                REQUEST_BUCKETS,
            ),
            accepted: Default::default(),
            events_of: Default::default(),
            generic_seen: std::array::from_fn(|_| AtomicBool::new(false)),
            counted_seen: std::array::from_fn(|_| AtomicBool::new(false)),
        }
    }
}

impl Metrics {
    /// A request on the callback port was refused with a FAIL body.
    /// Logged at WARN, at most about one line a second per reason (with the
    /// count of lines suppressed since the last); always counted.
    pub fn callback_rejected(&self, reason: Reason, status: u16, error: &dyn Display) {
        self.callbacks.rejected[reason as usize].inc();
        if let Some(suppressed) = self.callbacks.rejected_lines[reason as usize].allow() {
            warn!(reason = reason.as_str(), status, %error, suppressed, "Callback rejected.");
        }
    }

    /// A callback was answered 200 OK.
    pub fn callback_accepted(&self, family: Family, outcome: Accepted) {
        let c = &self.callbacks;
        c.accepted[family as usize][outcome as usize]
            .get_or_init(|| {
                c.callbacks
                    .with_label_values(&[family.as_str(), outcome.as_str()])
            })
            .inc();
    }

    /// A callback was answered OK and only counted. Logged at INFO the first
    /// time for each family, at DEBUG afterwards.
    pub fn callback_counted(&self, family: Family, command: &str, why: Counted) {
        let why = why.as_str();
        if !self.callbacks.counted_seen[family as usize].swap(true, Ordering::Relaxed) {
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
        let c = &self.callbacks;
        if generic && !c.generic_seen[family as usize].swap(true, Ordering::Relaxed) {
            info!(
                family = family.as_str(),
                command,
                "Publishing this family's callbacks as generic `callback` events, body unchanged (logged once per family)."
            );
        }
        c.events_of[family as usize]
            .get_or_init(|| c.events.with_label_values(&[family.as_str()]))
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
        self.callbacks.dedup_duplicates.inc();
    }

    /// The de-duplication window after a claim.
    pub fn dedup_claimed(&self, outcome: &crate::dedup::Outcome) {
        if outcome.evicted_early > 0 {
            self.callbacks.dedup_evicted.inc_by(outcome.evicted_early);
        }
        self.callbacks
            .dedup_entries
            .set(i64::try_from(outcome.entries).unwrap_or(i64::MAX));
    }

    /// An authentic callback could not be normalized and goes to the dead-letter topic.
    pub fn callback_dead_lettered(
        &self,
        family: Family,
        fault: Fault,
        command: &str,
        error: &dyn Display,
    ) {
        warn!(
            reason = fault.as_str(),
            command,
            %error,
            "Callback could not be normalized; publishing it raw to the dead-letter topic."
        );
        self.callbacks
            .dead_lettered
            .with_label_values(&[fault.as_str()])
            .inc();
        self.callback_accepted(family, Accepted::DeadLettered);
    }

    /// One answered callback request took `elapsed`.
    pub fn request_finished(&self, elapsed: Duration) {
        self.callbacks
            .request_duration
            .observe(elapsed.as_secs_f64());
    }
}
