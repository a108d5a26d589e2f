//! The optional de-duplication window (`BRIDGE_DEDUP_WINDOW`): event ids
//! published in the last window are remembered, and a callback whose event
//! id is among them is answered OK and counted instead of published again.
//!
//! Bounded: at most `max_entries` ids (16 bytes each, with its time in a
//! hash-map slot and a queue slot: about 100 bytes in all, counting the
//! tables' slack). When the table is full, the oldest id
//! is forgotten before its window ends, which is counted
//! (`chat_bridge_dedup_evicted_total`): the window is then shorter than
//! configured. It is per process: replicas do not see each other's ids, and
//! a restart forgets them all (docs/events.md says what consumers still do).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What [`Dedup::claim`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not seen in the window: publish it (and [`Dedup::release`] it if that fails).
    New,
    /// Published within the window: do not publish again.
    Duplicate,
}

/// The window of recently published event ids.
pub struct Dedup {
    window: Duration,
    max_entries: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Id → when it was claimed (the newest claim, if claimed again after expiry).
    seen: HashMap<u128, Instant>,
    /// Claims in time order; an entry is stale when `seen` holds a newer time.
    order: VecDeque<(u128, Instant)>,
}

/// What one claim changed, for the caller's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The decision.
    pub claim: Claim,
    /// Ids forgotten before their window ended, to stay within `max_entries`.
    pub evicted_early: u64,
    /// Ids held now.
    pub entries: usize,
}

impl Dedup {
    /// A window of `window` holding at most `max_entries` ids.
    pub fn new(window: Duration, max_entries: usize) -> Dedup {
        Dedup {
            window,
            max_entries: max_entries.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Claims `id` (32 hex digits) at `now`. Ids that are not 32 hex digits
    /// are never duplicates.
    pub fn claim(&self, id: &str, now: Instant) -> Outcome {
        let Some(key) = parse_id(id) else {
            return Outcome {
                claim: Claim::New,
                evicted_early: 0,
                entries: self.len(),
            };
        };
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what has left the window.
        while let Some(&(k, at)) = s.order.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            s.order.pop_front();
            if s.seen.get(&k) == Some(&at) {
                s.seen.remove(&k);
            }
        }
        if s.seen.contains_key(&key) {
            return Outcome {
                claim: Claim::Duplicate,
                evicted_early: 0,
                entries: s.seen.len(),
            };
        }
        let mut evicted_early = 0;
        while s.seen.len() >= self.max_entries {
            let Some((k, at)) = s.order.pop_front() else {
                break;
            };
            if s.seen.get(&k) == Some(&at) {
                s.seen.remove(&k);
                evicted_early += 1;
            }
        }
        s.seen.insert(key, now);
        s.order.push_back((key, now));
        Outcome {
            claim: Claim::New,
            evicted_early,
            entries: s.seen.len(),
        }
    }

    /// Forgets a claimed id whose publishing failed, so a retry is published.
    pub fn release(&self, id: &str) {
        if let Some(key) = parse_id(id) {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.seen.remove(&key);
        }
    }

    /// A set of claims that is released when dropped, unless [`Claims::keep`]
    /// is called: every path that does not end in an acknowledged record
    /// (an error, a panic, a request dropped by its client) forgets its ids,
    /// so Tencent's retry is published (issue 12, finding 3).
    pub fn claims(&self) -> Claims<'_> {
        Claims {
            dedup: self,
            ids: Vec::new(),
        }
    }

    /// Ids held now.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .len()
    }

    /// `true` when no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Ids claimed by one callback, released on drop unless kept.
pub struct Claims<'a> {
    dedup: &'a Dedup,
    ids: Vec<String>,
}

impl Claims<'_> {
    /// Claims `id`; `Claim::Duplicate` when it was published within the window.
    pub fn claim(&mut self, id: &str, now: Instant) -> Outcome {
        let outcome = self.dedup.claim(id, now);
        if outcome.claim == Claim::New {
            self.ids.push(id.to_owned());
        }
        outcome
    }

    /// The records are acknowledged: the ids stay claimed.
    pub fn keep(mut self) {
        self.ids.clear();
    }
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            self.dedup.release(id);
        }
    }
}

fn parse_id(id: &str) -> Option<u128> {
    if id.len() != 32 {
        return None;
    }
    u128::from_str_radix(id, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, finding 3: claims not kept (an error, a panic, a dropped
    /// request) are forgotten, so the retry is published; kept ones stay.
    #[test]
    fn claims_are_released_unless_kept() {
        let d = Dedup::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        let id = "0123456789abcdef0123456789abcdef";
        {
            let mut c = d.claims();
            assert_eq!(c.claim(id, now).claim, Claim::New);
        } // dropped: released
        assert_eq!(d.claim(id, now).claim, Claim::New, "a retry is new again");
        d.release(id);
        let result = std::panic::catch_unwind(|| {
            let mut c = d.claims();
            c.claim(id, now);
            panic!("building the record failed");
        });
        assert!(result.is_err());
        assert_eq!(
            d.claim(id, now).claim,
            Claim::New,
            "released by the unwinding"
        );
        d.release(id);
        let mut c = d.claims();
        c.claim(id, now);
        c.keep();
        assert_eq!(
            d.claim(id, now).claim,
            Claim::Duplicate,
            "kept after acknowledgement"
        );
    }

    fn id(n: u32) -> String {
        format!("{n:032x}")
    }

    #[test]
    fn a_repeat_within_the_window_is_a_duplicate_and_not_after_it() {
        let d = Dedup::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        assert_eq!(d.claim(&id(1), t0).claim, Claim::New);
        assert_eq!(
            d.claim(&id(1), t0 + Duration::from_secs(59)).claim,
            Claim::Duplicate
        );
        assert_eq!(d.claim(&id(2), t0).claim, Claim::New);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(d.claim(&id(1), later).claim, Claim::New);
        // Expired entries were dropped on the way.
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn released_ids_can_be_claimed_again() {
        let d = Dedup::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        assert_eq!(d.claim(&id(7), t0).claim, Claim::New);
        d.release(&id(7));
        assert_eq!(d.claim(&id(7), t0).claim, Claim::New);
        assert_eq!(d.claim(&id(7), t0).claim, Claim::Duplicate);
    }

    #[test]
    fn the_table_never_holds_more_than_max_entries() {
        let d = Dedup::new(Duration::from_secs(3600), 10);
        let t0 = Instant::now();
        let mut evicted = 0;
        for n in 0..25 {
            let o = d.claim(&id(n), t0);
            assert_eq!(o.claim, Claim::New);
            assert!(o.entries <= 10, "{o:?}");
            evicted += o.evicted_early;
        }
        assert_eq!(evicted, 15);
        // The oldest were forgotten early; the newest are still caught.
        assert_eq!(d.claim(&id(0), t0).claim, Claim::New);
        assert_eq!(d.claim(&id(24), t0).claim, Claim::Duplicate);
    }

    #[test]
    fn ids_that_are_not_ours_are_never_duplicates() {
        let d = Dedup::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(d.claim("not-an-id", t0).claim, Claim::New);
        }
        assert!(d.is_empty());
    }
}
