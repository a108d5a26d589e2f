//! The writer thread (group commit, segment rotation) and segment recovery.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{error, warn};

use super::{
    Frame, Inner, MAX_BATCH, Op, Segment, Spool, SpoolError, decode, read_frame, segment_path,
};
use crate::metrics::{Discard, Metrics};

/// Scans a segment, cuts a torn tail, and returns its bookkeeping (sealed).
/// Records that end at or before `resolved_until` count as resolved.
pub(super) fn recover_segment(
    path: &Path,
    metrics: &Metrics,
    resolved_until: u64,
) -> io::Result<Segment> {
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
                if at as u64 <= resolved_until {
                    seg.resolved += 1;
                }
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

pub(super) fn open_segment(dir: &Path, id: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, id))?;
    // Make the new file's directory entry durable too.
    File::open(dir)?.sync_all()?;
    Ok(f)
}

/// The writer thread: batches appends, writes them, syncs once per batch.
pub(super) fn writer(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<Op>,
    mut active: u64,
    segment_bytes: u64,
) {
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
                        None if failed => inner.metrics.spool_discarded(Discard::SpoolWriteFailed),
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
        let current = segs.map.get(active).map(|s| s.len);
        // Rotate when there is no file yet, when the segment is full, or when
        // it was deleted because everything in it was delivered.
        let rotate = match (file.is_some(), current) {
            (false, _) | (true, None) => true,
            (true, Some(len)) => len > 0 && len + buf.len() as u64 > segment_bytes,
        };
        if rotate {
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
        // Count the records before writing them, so that a concurrent
        // resolve() never deletes the segment they are going into.
        let seg = segs.map.entry(*active).or_default();
        seg.records += records;
        if seg.first_ts_ms.is_none() {
            seg.first_ts_ms = first_ts;
        }
    }
    let f = file.as_mut().expect("opened above");
    let written = f.write_all(buf).and_then(|()| f.sync_data());
    let mut segs = inner.segments.lock().expect("not poisoned");
    let seg = segs.map.entry(*active).or_default();
    match written {
        Ok(()) => {
            seg.len += buf.len() as u64;
            Ok(())
        }
        Err(e) => {
            seg.records -= records;
            Err(e)
        }
    }
}
