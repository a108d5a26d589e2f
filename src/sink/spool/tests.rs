//! Spool tests: order, rotation, recovery, torn tails, group commit, limits.

use std::io::Write as _;

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
        topic: Some("events".into()),
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

fn read_all(spool: &Spool, cursor: &mut Cursor) -> Vec<(Ticket, OutRecord)> {
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
    let segments: std::collections::BTreeSet<u64> = got.iter().map(|(t, _)| t.segment).collect();
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
    // The checkpoint written at close covers the three resolved records.
    assert_eq!(spool.pending(), 7);
    let mut cursor = spool.start();
    let again = read_all(&spool, &mut cursor);
    let ids: Vec<_> = again.iter().map(|(_, r)| r.id.clone()).collect();
    let want: Vec<_> = (3..10).map(|i| format!("id-{i}")).collect();
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

mod concurrency {
    use super::*;

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
                        topic: Some("events".into()),
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

/// A batch's records are written in order and synced together, not once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_all_keeps_order_and_shares_syncs() {
    let d = dir("append-all");
    let m = Arc::new(Metrics::new());
    let spool = Spool::open(&d, 1 << 24, 1 << 20, m.clone()).expect("open");
    let records: Vec<OutRecord> = (0..50).map(|i| record(i, 300)).collect();
    spool
        .append_all(&records, SpoolCause::Accepted)
        .await
        .expect("append_all");
    let syncs = metric(&m, "chat_bridge_spool_syncs_total");
    assert!(syncs < 10.0, "50 records took {syncs} syncs");
    assert_eq!(
        metric(&m, "chat_bridge_spool_appends_total{cause=\"accepted\"}"),
        50.0
    );
    let mut cursor = spool.start();
    let got: Vec<OutRecord> = read_all(&spool, &mut cursor)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(got, records);
    tokio::task::block_in_place(|| spool.close());
    let _ = fs::remove_dir_all(&d);
}

/// When the spool cannot take every record, the error comes back and what
/// was written is counted, nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_all_reports_a_full_spool() {
    let d = dir("append-all-full");
    let m = Arc::new(Metrics::new());
    let spool = Spool::open(&d, 64 * 1024, 16 * 1024, m.clone()).expect("open");
    let records: Vec<OutRecord> = (0..100).map(|i| record(i, 1000)).collect();
    let e = spool
        .append_all(&records, SpoolCause::Accepted)
        .await
        .expect_err("100 KB do not fit in 56 KB");
    assert!(matches!(e, SpoolError::Full), "{e}");
    let written = metric(&m, "chat_bridge_spool_appends_total{cause=\"accepted\"}");
    assert!(written > 0.0 && written < 100.0, "{written}");
    let mut cursor = spool.start();
    assert_eq!(read_all(&spool, &mut cursor).len() as f64, written);
    tokio::task::block_in_place(|| spool.close());
    let _ = fs::remove_dir_all(&d);
}
