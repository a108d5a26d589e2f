//! Rate limits for log lines that an attacker (or an outage) can repeat by
//! the thousand: at most one line a second per kind, after a burst, each
//! saying how many were suppressed since the last; the counters stay exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Lines allowed at once before the rate applies.
const BURST: u64 = 10;
/// One line per this many milliseconds after the burst.
const EVERY_MS: u64 = 1000;

/// The state of one kind of line.
#[derive(Debug)]
pub struct LogLimit {
    /// Milliseconds since `start` when the next line may be written, in
    /// "budget" form: each line advances it by `EVERY_MS`; it may lag `now`
    /// by at most `BURST * EVERY_MS`.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit {
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

/// The clock all limits share.
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) + BURST * EVERY_MS
}

impl LogLimit {
    /// `Some(n)` when a line may be written now, `n` being how many were
    /// suppressed since the last; `None` when this one is suppressed.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(now_ms())
    }

    fn allow_at(&self, now: u64) -> Option<u64> {
        let floor = now.saturating_sub(BURST * EVERY_MS);
        let granted = self
            .next_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |next| {
                let next = next.max(floor);
                (next < now).then_some(next + EVERY_MS)
            })
            .is_ok();
        if granted {
            Some(self.suppressed.swap(0, Ordering::AcqRel))
        } else {
            self.suppressed.fetch_add(1, Ordering::AcqRel);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_a_second_with_the_suppressed_count() {
        let l = LogLimit::default();
        let t0 = BURST * EVERY_MS;
        let allowed = (0..1000).filter(|_| l.allow_at(t0).is_some()).count();
        assert_eq!(allowed as u64, BURST);
        // A second later: one more line, saying 990 were suppressed.
        assert_eq!(l.allow_at(t0 + EVERY_MS), Some(1000 - BURST));
        assert_eq!(l.allow_at(t0 + EVERY_MS), None);
        // After a long quiet time, the burst is back (not more).
        let later = t0 + 100 * EVERY_MS;
        let allowed = (0..100).filter(|_| l.allow_at(later).is_some()).count();
        assert_eq!(allowed as u64, BURST);
    }
}
