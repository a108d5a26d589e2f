//! Why the spool is a log of our own: the same durable, group-committed
//! append workload against our spool and against redb (a well-kept embedded
//! B-tree store), measured in one run on one disk.
//!
//! `cargo bench --bench spool_store` prints appends per second and append
//! latency for: our spool; redb with the same group commit (one writer thread,
//! one durable transaction per batch of waiting appends); and redb with one
//! durable transaction per append. Ratios, not absolute numbers, are the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_kafka_bridge::metrics::{Metrics, SpoolCause, Stream};
use chat_kafka_bridge::sink::OutRecord;
use chat_kafka_bridge::sink::spool::{Spool, encode_frame};
use redb::{Database, TableDefinition};
use tokio::sync::{mpsc, oneshot};

const WRITERS: usize = 64;
const PER_WRITER: usize = 300;
const PAYLOAD: usize = 600;
const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("spool");

fn record(i: usize) -> OutRecord {
    OutRecord {
        stream: Stream::Events,
        topic: Some("official-account-events".into()),
        id: format!("{i:032x}"),
        key: Some(format!("@TOA#_{}", i % 97)),
        headers: vec![("ce_id".into(), format!("{i:032x}").into_bytes())],
        payload: vec![b'x'; PAYLOAD],
        timestamp_ms: 1_732_770_000_000,
    }
}

struct Figures {
    name: &'static str,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs WRITERS concurrent writers, each appending PER_WRITER records one
/// after another with `append`, and collects every append's latency.
async fn run<F, Fut>(name: &'static str, append: F) -> Figures
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let began = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let append = append.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(PER_WRITER);
                for i in 0..PER_WRITER {
                    let t = Instant::now();
                    append(w * PER_WRITER + i).await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    let elapsed = began.elapsed();
    all.sort();
    Figures {
        name,
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let base = std::env::temp_dir().join(format!("ckb-spool-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("dir");
    let mut results = Vec::new();

    // Our spool.
    let spool = Spool::open(
        &base.join("ours"),
        1 << 34,
        64 << 20,
        Arc::new(Metrics::new()),
    )
    .expect("spool");
    let s = spool.clone();
    results.push(rt.block_on(run("our spool (group commit)", move |i| {
        let s = s.clone();
        async move {
            s.append(&record(i), SpoolCause::Accepted)
                .await
                .expect("append");
        }
    })));
    spool.close();

    // redb behind the same group commit: one thread, one durable
    // transaction for every batch of appends waiting at that moment.
    let db = Database::create(base.join("grouped.redb")).expect("redb");
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, oneshot::Sender<()>)>(4096);
    let writer = std::thread::spawn(move || {
        let mut seq = 0u64;
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let txn = db.begin_write().expect("txn");
            {
                let mut table = txn.open_table(TABLE).expect("table");
                for (bytes, _) in &batch {
                    seq += 1;
                    table.insert(seq, bytes.as_slice()).expect("insert");
                }
            }
            txn.commit().expect("commit");
            for (_, done) in batch {
                let _ = done.send(());
            }
        }
    });
    let t = tx.clone();
    results.push(rt.block_on(run("redb, same group commit", move |i| {
        let t = t.clone();
        async move {
            let mut frame = Vec::new();
            encode_frame(&record(i), &mut frame);
            let (done, wait) = oneshot::channel();
            t.send((frame, done)).await.expect("send");
            wait.await.expect("committed");
        }
    })));
    drop(tx);
    writer.join().expect("writer");

    // redb, one durable transaction per append.
    let db = Arc::new(Database::create(base.join("single.redb")).expect("redb"));
    let d = db.clone();
    results.push(
        rt.block_on(run("redb, one transaction per append", move |i| {
            let d = d.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut frame = Vec::new();
                    encode_frame(&record(i), &mut frame);
                    let txn = d.begin_write().expect("txn");
                    {
                        let mut table = txn.open_table(TABLE).expect("table");
                        table.insert(i as u64, frame.as_slice()).expect("insert");
                    }
                    txn.commit().expect("commit");
                })
                .await
                .expect("blocking");
            }
        })),
    );

    let ours = results[0].per_sec;
    println!(
        "\n{WRITERS} concurrent writers x {PER_WRITER} durable appends of ~{PAYLOAD}-byte records\n"
    );
    println!("| store | appends/s | ratio to our spool | p50 latency | p99 latency |");
    println!("|---|---|---|---|---|");
    for f in &results {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} ms | {:.2} ms |",
            f.name,
            f.per_sec,
            f.per_sec / ours,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}
