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

mod record;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

pub use record::{Frame, decode, encode_frame, read_frame};

use crate::metrics::{Metrics, SpoolCause};
use crate::sink::OutRecord;

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
    metrics: Arc<Metrics>,
    writer: Mutex<Option<JoinHandle<()>>>,
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
        let mut total = 0;
        for id in &ids {
            let path = segment_path(dir, *id);
            let seg = recover_segment(&path, &metrics)
                .with_context(|| format!("recovering spool segment {}", path.display()))?;
            if seg.records == 0 {
                let _ = fs::remove_file(&path);
                continue;
            }
            total += seg.len;
            segments.map.insert(*id, seg);
        }
        let next_id = ids.last().map_or(1, |last| last + 1);
        let pending: u64 = segments.map.values().map(|s| s.records).sum();
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
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            max_bytes,
            reserved: AtomicU64::new(total),
            tx,
            segments: Mutex::new(segments),
            written,
            metrics,
            writer: Mutex::new(None),
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

    /// The oldest position in the spool.
    pub fn start(&self) -> Cursor {
        let segs = self.inner.segments.lock().expect("not poisoned");
        Cursor {
            segment: segs.map.keys().next().copied().unwrap_or(0),
            offset: 0,
        }
    }

    /// Reads up to `max` records after `cursor` (only durable data) and
    /// advances it. Returns each record with its segment id for [`Spool::resolve`].
    pub fn read(&self, cursor: &mut Cursor, max: usize) -> io::Result<Vec<(u64, OutRecord)>> {
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
                match decode(&payload) {
                    Some(rec) => out.push((cursor.segment, rec)),
                    None => {
                        // CRC-clean but undecodable: a format we do not know.
                        self.inner.metrics.spool_discarded("undecodable");
                        self.resolve(cursor.segment);
                    }
                }
            }
        }
        Ok(out)
    }

    /// One record of `segment` was delivered or re-spooled.
    pub fn resolve(&self, segment: u64) {
        let mut segs = self.inner.segments.lock().expect("not poisoned");
        let Some(seg) = segs.map.get_mut(&segment) else {
            return;
        };
        seg.resolved += 1;
        if seg.sealed && seg.resolved >= seg.records {
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
        self.inner
            .metrics
            .spool_state(events, self.inner.reserved.load(Ordering::Acquire), oldest);
    }

    /// Refreshes the age gauge (called periodically).
    pub fn tick(&self) {
        self.update_gauges();
    }

    /// Stops the writer after everything queued so far is durable.
    pub fn close(&self) {
        let _ = self.inner.tx.blocking_send(Op::Close);
        let handle = self.inner.writer.lock().expect("not poisoned").take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Scans a segment, cuts a torn tail, and returns its bookkeeping (sealed).
fn recover_segment(path: &Path, metrics: &Metrics) -> io::Result<Segment> {
    let data = fs::read(path)?;
    let mut seg = Segment {
        sealed: true,
        ..Segment::default()
    };
    let mut at = 0;
    loop {
        match read_frame(&data[at..]) {
            Frame::Whole(payload, size) => {
                if seg.first_ts_ms.is_none() {
                    seg.first_ts_ms = decode(payload).map(|r| r.timestamp_ms);
                }
                seg.records += 1;
                at += size;
            }
            Frame::End => break,
            Frame::Torn => {
                let dropped = data.len() - at;
                warn!(
                    segment = %path.display(),
                    kept_records = seg.records,
                    dropped_bytes = dropped,
                    "Spool segment ends in a torn write (the process died mid-append); cutting it off. Those bytes were never acknowledged."
                );
                metrics.spool_torn_bytes(dropped as u64);
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(at as u64)?;
                f.sync_all()?;
                break;
            }
        }
    }
    seg.len = at as u64;
    Ok(seg)
}

fn open_segment(dir: &Path, id: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, id))?;
    // Make the new file's directory entry durable too.
    File::open(dir)?.sync_all()?;
    Ok(f)
}

/// The writer thread: batches appends, writes them, syncs once per batch.
fn writer(inner: Arc<Inner>, mut rx: mpsc::Receiver<Op>, mut active: u64, segment_bytes: u64) {
    let mut file: Option<File> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut buf = Vec::new();
    loop {
        let Some(first) = rx.blocking_recv() else {
            return;
        };
        let mut closing = false;
        batch.clear();
        match first {
            Op::Close => closing = true,
            op => batch.push(op),
        }
        while !closing && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Op::Close) => closing = true,
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            buf.clear();
            let mut first_ts = None;
            for op in &batch {
                if let Op::Append {
                    frame,
                    timestamp_ms,
                    ..
                } = op
                {
                    buf.extend_from_slice(frame);
                    first_ts.get_or_insert(*timestamp_ms);
                }
            }
            let started = Instant::now();
            let result = write_batch(
                &inner,
                &mut file,
                &mut active,
                segment_bytes,
                &buf,
                first_ts,
                batch.len() as u64,
            );
            inner.metrics.spool_write(started.elapsed());
            let reply = match result {
                Ok(()) => Ok(()),
                Err(e) => {
                    error!(error = %e, "Writing to the spool failed.");
                    inner.reserved.fetch_sub(buf.len() as u64, Ordering::AcqRel);
                    // A failed write may have left a partial frame: start a new segment.
                    file = None;
                    Err(SpoolError::Io(e.to_string()))
                }
            };
            let failed = reply.is_err();
            for op in batch.drain(..) {
                if let Op::Append { done, .. } = op {
                    match done {
                        Some(done) => {
                            let _ = done.send(reply.clone());
                        }
                        None if failed => inner.metrics.spool_discarded("spool_write_failed"),
                        None => {}
                    }
                }
            }
            inner.written.send_modify(|n| *n += 1);
            Spool {
                inner: inner.clone(),
            }
            .update_gauges();
        }
        if closing {
            if let Some(f) = &file {
                let _ = f.sync_all();
            }
            return;
        }
    }
}

fn write_batch(
    inner: &Inner,
    file: &mut Option<File>,
    active: &mut u64,
    segment_bytes: u64,
    buf: &[u8],
    first_ts: Option<i64>,
    records: u64,
) -> io::Result<()> {
    {
        let mut segs = inner.segments.lock().expect("not poisoned");
        let len = segs.map.get(active).map_or(0, |s| s.len);
        if file.is_none() || (len > 0 && len + buf.len() as u64 > segment_bytes) {
            // Seal the current segment (deleting it if already forwarded) and start the next.
            if let Some(seg) = segs.map.get_mut(active) {
                seg.sealed = true;
                if seg.resolved >= seg.records {
                    let len = seg.len;
                    segs.map.remove(active);
                    let _ = fs::remove_file(segment_path(&inner.dir, *active));
                    inner.reserved.fetch_sub(len, Ordering::AcqRel);
                }
            }
            if file.is_some() || segs.map.contains_key(active) {
                *active += 1;
            }
            while segs.map.contains_key(active) {
                *active += 1;
            }
            *file = Some(open_segment(&inner.dir, *active)?);
            segs.map.insert(*active, Segment::default());
        }
    }
    let f = file.as_mut().expect("opened above");
    f.write_all(buf)?;
    f.sync_data()?;
    let mut segs = inner.segments.lock().expect("not poisoned");
    let seg = segs.map.entry(*active).or_default();
    seg.len += buf.len() as u64;
    seg.records += records;
    if seg.first_ts_ms.is_none() {
        seg.first_ts_ms = first_ts;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Stream;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ckb-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn record(i: u32, size: usize) -> OutRecord {
        OutRecord {
            stream: Stream::Events,
            id: format!("id-{i}"),
            key: Some(format!("@TOA#_{}", i % 7)),
            headers: vec![("bridge_seq".into(), i.to_string().into_bytes())],
            payload: vec![b'x'; size],
            timestamp_ms: 1_732_770_000_000 + i64::from(i),
        }
    }

    fn metric(m: &Metrics, name: &str) -> f64 {
        let text = String::from_utf8(m.render()).expect("utf-8");
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn read_all(spool: &Spool, cursor: &mut Cursor) -> Vec<(u64, OutRecord)> {
        spool.read(cursor, usize::MAX).expect("read")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_read_back_in_order_and_resolved_segments_are_deleted() {
        let d = dir("order");
        let m = Arc::new(Metrics::new());
        let spool = Spool::open(&d, 1 << 20, 4096, m.clone()).expect("open");
        for i in 0..40 {
            spool
                .append(&record(i, 200), SpoolCause::Accepted)
                .await
                .expect("append");
        }
        assert_eq!(spool.pending(), 40);
        let mut cursor = spool.start();
        let got = read_all(&spool, &mut cursor);
        assert_eq!(got.len(), 40);
        for (i, (_, r)) in got.iter().enumerate() {
            assert_eq!(*r, record(i as u32, 200), "record {i}");
        }
        let segments: std::collections::BTreeSet<u64> = got.iter().map(|(s, _)| *s).collect();
        assert!(segments.len() > 2, "4 KiB segments rotate: {segments:?}");
        assert!(
            read_all(&spool, &mut cursor).is_empty(),
            "the cursor is at the end"
        );
        for (seg, _) in &got {
            spool.resolve(*seg);
        }
        assert_eq!(spool.pending(), 0);
        // Every sealed segment is gone; only the active one may remain.
        let files = fs::read_dir(&d)
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .expect("entry")
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        assert!(files <= 1, "{files} segment files left");
        assert_eq!(metric(&m, "chat_bridge_spool_events"), 0.0);
        tokio::task::block_in_place(|| spool.close());
        fs::remove_dir_all(&d).ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_replays_what_was_not_resolved_and_cuts_a_torn_tail() {
        let d = dir("restart");
        let m = Arc::new(Metrics::new());
        let spool = Spool::open(&d, 1 << 20, 1 << 20, m.clone()).expect("open");
        for i in 0..10 {
            spool
                .append(&record(i, 50), SpoolCause::QueueFull)
                .await
                .expect("append");
        }
        // Resolve the first three, as if delivered.
        let mut cursor = spool.start();
        let got = read_all(&spool, &mut cursor);
        for (seg, _) in &got[..3] {
            spool.resolve(*seg);
        }
        tokio::task::block_in_place(|| spool.close());
        drop(spool);
        // The process "dies" mid-append: half a frame at the end of the segment.
        let seg = fs::read_dir(&d)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .expect("a segment");
        let mut frame = Vec::new();
        encode_frame(&record(99, 500), &mut frame);
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&frame[..frame.len() / 2]).expect("write");
        drop(f);

        let m2 = Arc::new(Metrics::new());
        let spool =
            Spool::open(&d, 1 << 20, 1 << 20, m2.clone()).expect("reopen despite the torn tail");
        // Resolution is not persisted: all ten come back (at-least-once).
        assert_eq!(spool.pending(), 10);
        let mut cursor = spool.start();
        let again = read_all(&spool, &mut cursor);
        let ids: Vec<_> = again.iter().map(|(_, r)| r.id.clone()).collect();
        let want: Vec<_> = (0..10).map(|i| format!("id-{i}")).collect();
        assert_eq!(ids, want);
        assert_eq!(
            metric(&m2, "chat_bridge_spool_torn_bytes_total"),
            (frame.len() / 2) as f64
        );
        // New appends after recovery go to a new segment and read back after.
        spool
            .append(&record(10, 50), SpoolCause::QueueFull)
            .await
            .expect("append");
        let more = read_all(&spool, &mut cursor);
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].1.id, "id-10");
        tokio::task::block_in_place(|| spool.close());
        fs::remove_dir_all(&d).ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_spool_refuses_and_concurrent_appends_share_syncs() {
        let d = dir("full");
        let m = Arc::new(Metrics::new());
        let spool = Spool::open(&d, 64 * 1024, 16 * 1024, m.clone()).expect("open");
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = spool.clone();
            tasks.push(tokio::spawn(async move {
                s.append(&record(i, 400), SpoolCause::Accepted).await
            }));
        }
        let mut ok = 0;
        let mut full = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(()) => ok += 1,
                Err(SpoolError::Full) => full += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(ok > 100 && full > 0, "ok {ok}, full {full}");
        assert_eq!(spool.pending(), ok);
        assert!(spool.is_full(1024));
        let syncs = metric(&m, "chat_bridge_spool_syncs_total");
        assert!(
            syncs >= 1.0 && syncs < ok as f64,
            "{syncs} syncs for {ok} appends: no group commit"
        );
        // Draining makes room again.
        let mut cursor = spool.start();
        for (seg, _) in read_all(&spool, &mut cursor) {
            spool.resolve(seg);
        }
        spool
            .append(&record(1000, 100), SpoolCause::Accepted)
            .await
            .expect("room after draining");
        tokio::task::block_in_place(|| spool.close());
        fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn one_directory_serves_one_process() {
        let d = dir("lock");
        let m = Arc::new(Metrics::new());
        let first = Spool::open(&d, 1 << 20, 1 << 20, m.clone()).expect("open");
        let second = Spool::open(&d, 1 << 20, 1 << 20, m);
        let err = second.err().expect("a second open must fail").to_string();
        assert!(err.contains("in use"), "{err}");
        first.close();
        fs::remove_dir_all(&d).ok();
    }
}

#[cfg(test)]
mod concurrency_tests {
    use super::*;
    use crate::metrics::Stream;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_read_back_exactly_once_after_reopen() {
        let d = std::env::temp_dir().join(format!("ckb-spool-conc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let m = Arc::new(Metrics::new());
        let spool = Spool::open(&d, 1 << 30, 64 * 1024, m.clone()).expect("open");
        let mut tasks = Vec::new();
        for c in 0..8u32 {
            let s = spool.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..200u32 {
                    let r = OutRecord {
                        stream: Stream::Events,
                        id: format!("{c}-{i}"),
                        key: Some(format!("k{c}")),
                        headers: vec![],
                        payload: format!("payload {c} {i}").into_bytes(),
                        timestamp_ms: 1,
                    };
                    s.append(&r, SpoolCause::Accepted).await.expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        // Read some and resolve them, like the forwarder, while nothing else runs.
        let mut cursor = spool.start();
        let first = spool.read(&mut cursor, 300).expect("read");
        for (seg, _) in &first {
            spool.resolve(*seg);
        }
        tokio::task::block_in_place(|| spool.close());
        drop(spool);
        let spool = Spool::open(&d, 1 << 30, 64 * 1024, m).expect("reopen");
        let mut cursor = spool.start();
        let all = spool.read(&mut cursor, usize::MAX).expect("read");
        let ids: std::collections::HashSet<_> = all.iter().map(|(_, r)| r.id.clone()).collect();
        assert_eq!(ids.len(), all.len(), "duplicates after reopen");
        for (_, r) in &all {
            let (c, i) = r.id.split_once('-').expect("id");
            assert_eq!(
                r.payload,
                format!("payload {c} {i}").into_bytes(),
                "{}",
                r.id
            );
        }
        assert!(
            all.len() >= 1600 - 300 && all.len() <= 1600,
            "{}",
            all.len()
        );
        tokio::task::block_in_place(|| spool.close());
        fs::remove_dir_all(&d).ok();
    }
}
