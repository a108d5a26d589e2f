//! Delivery progress: which prefix of the spool is resolved, persisted as a
//! checkpoint so that a crash replays only what may not have reached Kafka.
//!
//! Records are read in order and each gets a [`Ticket`]. Resolutions arrive in
//! any order (partitions are independent); the *committed* position is the
//! end of the longest resolved prefix. `CHECKPOINT` holds it, written with
//! write-to-temp, fsync, rename.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::Cursor;

/// Identifies one record handed out by [`super::Spool::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The record's segment.
    pub segment: u64,
    seq: u64,
}

#[derive(Debug, Default)]
pub(super) struct Progress {
    next_seq: u64,
    /// (end of record, resolved?) for every record handed out and not yet
    /// part of the committed prefix, in read order.
    window: VecDeque<(Cursor, bool)>,
    committed: Option<Cursor>,
    persisted: Option<Cursor>,
}

const FILE: &str = "CHECKPOINT";

impl Progress {
    /// A ticket for the record that ends at `end`.
    pub(super) fn issue(&mut self, end: Cursor) -> Ticket {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.window.push_back((end, false));
        Ticket {
            segment: end.segment,
            seq,
        }
    }

    /// Marks `ticket` resolved and advances the committed prefix.
    pub(super) fn resolve(&mut self, ticket: Ticket) {
        let first = self.next_seq - self.window.len() as u64;
        let Some(index) = ticket.seq.checked_sub(first) else {
            return;
        };
        if let Some(entry) = self.window.get_mut(index as usize) {
            entry.1 = true;
        }
        while let Some(&(end, true)) = self.window.front() {
            self.committed = Some(end);
            self.window.pop_front();
        }
    }

    /// Writes the committed position if it moved since the last write.
    pub(super) fn persist(&mut self, dir: &Path) -> io::Result<()> {
        let Some(c) = self.committed else {
            return Ok(());
        };
        if self.persisted == Some(c) {
            return Ok(());
        }
        let tmp = dir.join("CHECKPOINT.tmp");
        let mut f = File::create(&tmp)?;
        writeln!(f, "{} {}", c.segment, c.offset)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(FILE))?;
        File::open(dir)?.sync_all()?;
        self.persisted = Some(c);
        Ok(())
    }
}

/// The last persisted position, if any (a corrupt file counts as none).
pub(super) fn load(dir: &Path) -> Option<Cursor> {
    let text = fs::read_to_string(dir.join(FILE)).ok()?;
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some(Cursor { segment, offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64, offset: u64) -> Cursor {
        Cursor { segment, offset }
    }

    #[test]
    fn the_committed_prefix_waits_for_the_oldest_record() {
        let mut p = Progress::default();
        let a = p.issue(at(1, 10));
        let b = p.issue(at(1, 20));
        let c = p.issue(at(2, 5));
        p.resolve(c);
        p.resolve(b);
        assert_eq!(p.committed, None, "the first record is still out");
        p.resolve(a);
        assert_eq!(p.committed, Some(at(2, 5)));
        assert!(p.window.is_empty());
        // Stale or repeated tickets change nothing.
        p.resolve(a);
        assert_eq!(p.committed, Some(at(2, 5)));
    }

    #[test]
    fn the_checkpoint_survives_a_reload() {
        let dir = std::env::temp_dir().join(format!("ckb-ckpt-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let mut p = Progress::default();
        let t = p.issue(at(3, 99));
        assert_eq!(load(&dir), None);
        p.resolve(t);
        p.persist(&dir).expect("persist");
        assert_eq!(load(&dir), Some(at(3, 99)));
        fs::write(dir.join(FILE), "garbage").expect("write");
        assert_eq!(load(&dir), None);
        fs::remove_dir_all(&dir).ok();
    }
}
