//! The local spool: a durable FIFO of Kafka records that are not yet
//! confirmed by the broker.
//!
//! Segmented append-only log in `BRIDGE_SPOOL_DIR` (`<id>.seg` files), written
//! by one thread with group commit: appends that arrive while a sync is
//! running share the next `fdatasync`. Records are read back in order by the
//! forwarder ([`crate::sink::forward`]); a segment is deleted once every
//! record in it is *resolved* (delivered, or re-appended after a failed
//! replay). Crash safety: every frame carries its length and CRC, and on
//! start a torn tail is cut off (logged and counted), never blocking startup.
//! The resolved prefix is checkpointed every couple of seconds, so a crash
//! replays only the records after it.

mod progress;
mod record;
mod writer;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

pub use progress::Ticket;
pub use record::{Frame, decode, encode_frame, read_frame};

use progress::Progress;
use writer::{recover_segment, writer};

use crate::metrics::{Discard, Metrics, SpoolCause};
use crate::sink::record::OutRecord;

/// Why a record could not be spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolError {
    /// `BRIDGE_SPOOL_MAX_BYTES` would be exceeded.
    Full,
    /// The disk refused the write (the text says how).
    Io(String),
    /// The spool is shut down.
    Closed,
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::Full => f.write_str("the spool is full (BRIDGE_SPOOL_MAX_BYTES)"),
            SpoolError::Io(e) => write!(f, "writing the spool failed: {e}"),
            SpoolError::Closed => f.write_str("the spool is closed"),
        }
    }
}

impl std::error::Error for SpoolError {}

/// Where the forwarder is in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Segment id.
    pub segment: u64,
    /// Byte offset in that segment.
    pub offset: u64,
}

/// Handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes on disk plus bytes accepted for writing.
    reserved: AtomicU64,
    tx: mpsc::Sender<Op>,
    segments: Mutex<Segments>,
    /// Bumped after every durable batch, so the forwarder can wait for data.
    written: watch::Sender<u64>,
    /// Records written and not yet resolved, as of the last change.
    pending: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    writer: Mutex<Option<JoinHandle<()>>>,
    progress: Mutex<Progress>,
    /// Where reading starts: the checkpoint, or the oldest segment.
    start: Cursor,
    _lock: File,
}

#[derive(Default)]
struct Segments {
    map: BTreeMap<u64, Segment>,
}

#[derive(Debug, Default, Clone)]
struct Segment {
    /// Durable bytes.
    len: u64,
    /// Records written.
    records: u64,
    /// Records delivered or re-spooled.
    resolved: u64,
    /// No more writes will come.
    sealed: bool,
    /// Timestamp of the segment's first record.
    first_ts_ms: Option<i64>,
}

enum Op {
    Append {
        frame: Vec<u8>,
        timestamp_ms: i64,
        done: Option<oneshot::Sender<Result<(), SpoolError>>>,
    },
    Close,
}

/// New records may fill the spool only up to `max - max / HEADROOM_DIVISOR`;
/// the rest is kept for acknowledged records whose delivery fails later.
pub const HEADROOM_DIVISOR: u64 = 8;
/// Writes at most this many appends per sync.
const MAX_BATCH: usize = 1024;
/// Appends waiting for the writer (bounds the memory between request and disk).
const QUEUE: usize = 4096;

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

impl Spool {
    /// Opens (and recovers) the spool in `dir`, taking an exclusive lock on it.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Spool> {
        use anyhow::Context as _;
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create BRIDGE_SPOOL_DIR={}", dir.display()))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .with_context(|| format!("cannot open {}/LOCK", dir.display()))?;
        lock.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "BRIDGE_SPOOL_DIR={} is in use by another bridge process: give each replica its own spool directory",
                dir.display()
            )
        })?;

        let began = Instant::now();
        let mut segments = Segments::default();
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let checkpoint = progress::load(dir);
        let mut total = 0;
        let mut start = None;
        for id in &ids {
            let path = segment_path(dir, *id);
            // Records before the checkpoint are known to be in Kafka.
            let resolved_until = match checkpoint {
                Some(c) if c.segment > *id => u64::MAX,
                Some(c) if c.segment == *id => c.offset,
                _ => 0,
            };
            let seg = recover_segment(&path, &metrics, resolved_until)
                .with_context(|| format!("recovering spool segment {}", path.display()))?;
            if seg.records == 0 || seg.resolved >= seg.records {
                let _ = fs::remove_file(&path);
                continue;
            }
            if start.is_none() {
                start = Some(match checkpoint {
                    Some(c) if c.segment == *id => c,
                    _ => Cursor {
                        segment: *id,
                        offset: 0,
                    },
                });
            }
            total += seg.len;
            segments.map.insert(*id, seg);
        }
        let next_id = ids.last().map_or(1, |last| last + 1);
        let pending: u64 = segments.map.values().map(|s| s.records - s.resolved).sum();
        if pending > 0 {
            info!(
                dir = %dir.display(),
                events = pending,
                bytes = total,
                elapsed_ms = began.elapsed().as_millis() as u64,
                "Spool recovered: these events will be published when Kafka is reachable."
            );
        }

        let (tx, rx) = mpsc::channel(QUEUE);
        let (written, _) = watch::channel(0);
        let (pending_tx, _) = watch::channel(pending);
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            max_bytes,
            reserved: AtomicU64::new(total),
            tx,
            segments: Mutex::new(segments),
            written,
            pending: pending_tx,
            metrics,
            writer: Mutex::new(None),
            progress: Mutex::new(Progress::default()),
            start: start.unwrap_or_default(),
            _lock: lock,
        });
        let writer_inner = inner.clone();
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer(writer_inner, rx, next_id, segment_bytes))?;
        *inner.writer.lock().expect("not poisoned") = Some(handle);
        let spool = Spool { inner };
        spool.update_gauges();
        Ok(spool)
    }

    /// Appends a record that is not acknowledged yet (request path) and waits
    /// until it is durable (fsync'd). Keeps the last [`HEADROOM_DIVISOR`]th of
    /// the spool free for records that are already acknowledged.
    pub async fn append(&self, record: &OutRecord, cause: SpoolCause) -> Result<(), SpoolError> {
        let (done, wait) = oneshot::channel();
        let soft_max = self.inner.max_bytes - self.inner.max_bytes / HEADROOM_DIVISOR;
        let op = self.prepare(record, Some(done), soft_max)?;
        self.inner
            .tx
            .send(op)
            .await
            .map_err(|_| SpoolError::Closed)?;
        let result = wait.await.unwrap_or(Err(SpoolError::Closed));
        if result.is_ok() {
            self.inner.metrics.spooled(cause);
        }
        result
    }

    /// Appends `records` in order and returns once all are on disk: the
    /// writer syncs them together (one batch of a callback, e.g. the items of
    /// a `Push.OfflinePush`), rather than once each as sequential
    /// [`Spool::append`]s would. On error, the records before the failing one
    /// may be written.
    pub async fn append_all(
        &self,
        records: &[OutRecord],
        cause: SpoolCause,
    ) -> Result<(), SpoolError> {
        let soft_max = self.inner.max_bytes - self.inner.max_bytes / HEADROOM_DIVISOR;
        let mut waits = Vec::with_capacity(records.len());
        let mut first_error = None;
        for record in records {
            let (done, wait) = oneshot::channel();
            let sent = match self.prepare(record, Some(done), soft_max) {
                Ok(op) => self.inner.tx.send(op).await.map_err(|_| SpoolError::Closed),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => waits.push(wait),
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
        for wait in waits {
            match wait.await.unwrap_or(Err(SpoolError::Closed)) {
                Ok(()) => self.inner.metrics.spooled(cause),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Appends `record` from code that cannot wait (a request's drop, in the
    /// async runtime): queued for the writer at once, or, when its queue is
    /// full, handed to a task that waits for room. May use the headroom.
    pub fn append_detached(&self, record: OutRecord, cause: SpoolCause) -> Result<(), SpoolError> {
        let op = self.prepare(&record, None, self.inner.max_bytes)?;
        match self.inner.tx.try_send(op) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(SpoolError::Closed),
            Err(mpsc::error::TrySendError::Full(op)) => {
                let tx = self.inner.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(op).await;
                });
            }
        }
        self.inner.metrics.spooled(cause);
        Ok(())
    }

    /// Appends an acknowledged record whose delivery failed, without waiting
    /// for the disk; for librdkafka's thread. May use the headroom. Blocks if
    /// the writer's queue is full.
    pub fn append_blocking(&self, record: &OutRecord, cause: SpoolCause) -> Result<(), SpoolError> {
        let op = self.prepare(record, None, self.inner.max_bytes)?;
        self.inner
            .tx
            .blocking_send(op)
            .map_err(|_| SpoolError::Closed)?;
        self.inner.metrics.spooled(cause);
        Ok(())
    }

    fn prepare(
        &self,
        record: &OutRecord,
        done: Option<oneshot::Sender<Result<(), SpoolError>>>,
        max: u64,
    ) -> Result<Op, SpoolError> {
        let mut frame = Vec::with_capacity(64 + record.payload.len());
        encode_frame(record, &mut frame);
        let size = frame.len() as u64;
        self.inner
            .reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (r + size <= max).then_some(r + size)
            })
            .map_err(|_| SpoolError::Full)?;
        Ok(Op::Append {
            frame,
            timestamp_ms: record.timestamp_ms,
            done,
        })
    }

    /// `true` when a new (not yet acknowledged) record of `bytes` would not fit.
    pub fn is_full(&self, bytes: u64) -> bool {
        let soft_max = self.inner.max_bytes - self.inner.max_bytes / HEADROOM_DIVISOR;
        self.inner.reserved.load(Ordering::Acquire) + bytes > soft_max
    }

    /// Records written and not yet resolved.
    pub fn pending(&self) -> u64 {
        let segs = self.inner.segments.lock().expect("not poisoned");
        segs.map.values().map(|s| s.records - s.resolved).sum()
    }

    /// A receiver that changes after every durable batch.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.written.subscribe()
    }

    /// Where reading starts: after the last checkpoint, else the oldest segment.
    pub fn start(&self) -> Cursor {
        self.inner.start
    }

    /// Reads up to `max` records after `cursor` (only durable data) and
    /// advances it. Each record comes with the [`Ticket`] to pass to
    /// [`Spool::resolve`] once it is delivered or re-spooled.
    pub fn read(&self, cursor: &mut Cursor, max: usize) -> io::Result<Vec<(Ticket, OutRecord)>> {
        let mut out = Vec::new();
        while out.len() < max {
            let (len, sealed, next) = {
                let segs = self.inner.segments.lock().expect("not poisoned");
                let Some((&id, seg)) = segs.map.range(cursor.segment..).next() else {
                    break;
                };
                if id != cursor.segment {
                    *cursor = Cursor {
                        segment: id,
                        offset: 0,
                    };
                }
                let next = segs.map.range(id + 1..).next().map(|(&n, _)| n);
                (seg.len, seg.sealed, next)
            };
            if cursor.offset >= len {
                match (sealed, next) {
                    (true, Some(n)) => {
                        *cursor = Cursor {
                            segment: n,
                            offset: 0,
                        };
                        continue;
                    }
                    _ => break,
                }
            }
            let file = File::open(segment_path(&self.inner.dir, cursor.segment))?;
            let mut r = BufReader::with_capacity(256 * 1024, file);
            r.seek(SeekFrom::Start(cursor.offset))?;
            while out.len() < max && cursor.offset < len {
                let mut header = [0u8; record::FRAME_HEADER];
                r.read_exact(&mut header)?;
                let (n, crc) = record::parse_header(&header).ok_or_else(|| {
                    io::Error::other("corrupt frame header inside durable spool data")
                })?;
                let mut payload = vec![0; n];
                r.read_exact(&mut payload)?;
                if crc32fast::hash(&payload) != crc {
                    return Err(io::Error::other("CRC mismatch inside durable spool data"));
                }
                cursor.offset += (record::FRAME_HEADER + n) as u64;
                let ticket = self
                    .inner
                    .progress
                    .lock()
                    .expect("not poisoned")
                    .issue(*cursor);
                match decode(&payload) {
                    Some(rec) => out.push((ticket, rec)),
                    None => {
                        // CRC-clean but undecodable: a format we do not know.
                        self.inner.metrics.spool_discarded(Discard::Undecodable);
                        self.resolve(ticket);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The record of `ticket` was delivered or re-spooled.
    pub fn resolve(&self, ticket: Ticket) {
        self.inner
            .progress
            .lock()
            .expect("not poisoned")
            .resolve(ticket);
        let segment = ticket.segment;
        let mut segs = self.inner.segments.lock().expect("not poisoned");
        let Some(seg) = segs.map.get_mut(&segment) else {
            return;
        };
        seg.resolved += 1;
        // Also the segment being written: the writer counts records before
        // writing them, and starts a new segment when its own is gone.
        if seg.resolved >= seg.records {
            let len = seg.len;
            segs.map.remove(&segment);
            drop(segs);
            self.remove_segment(segment, len);
        } else {
            drop(segs);
        }
        self.update_gauges();
    }

    fn remove_segment(&self, id: u64, len: u64) {
        if let Err(e) = fs::remove_file(segment_path(&self.inner.dir, id)) {
            warn!(segment = id, error = %e, "Removing a forwarded spool segment failed.");
        }
        self.inner.reserved.fetch_sub(len, Ordering::AcqRel);
    }

    fn update_gauges(&self) {
        let segs = self.inner.segments.lock().expect("not poisoned");
        let events: u64 = segs.map.values().map(|s| s.records - s.resolved).sum();
        let oldest = segs
            .map
            .values()
            .find(|s| s.records > s.resolved)
            .and_then(|s| s.first_ts_ms);
        drop(segs);
        self.inner.pending.send_replace(events);
        self.inner
            .metrics
            .spool_state(events, self.inner.reserved.load(Ordering::Acquire), oldest);
    }

    /// Resolves once every record written so far is resolved (delivered or
    /// re-spooled into a later segment that is itself resolved).
    pub async fn until_empty(&self) {
        let mut pending = self.inner.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// Refreshes the gauges and writes the checkpoint (the bridge's spool
    /// upkeep calls it a few times a second).
    pub fn tick(&self) {
        self.update_gauges();
        self.checkpoint();
    }

    /// Persists how far delivery has got, if it moved (an fsync and a rename).
    pub fn checkpoint(&self) {
        let mut progress = self.inner.progress.lock().expect("not poisoned");
        if let Err(e) = progress.persist(&self.inner.dir) {
            warn!(error = %e, "Writing the spool checkpoint failed; a crash now would replay more.");
        }
    }

    /// Stops the writer after everything queued so far is durable.
    pub fn close(&self) {
        let _ = self.inner.tx.blocking_send(Op::Close);
        let handle = self.inner.writer.lock().expect("not poisoned").take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.checkpoint();
    }
}

#[cfg(test)]
mod tests;
