//! After the load: read the bridge's topic back and check that every
//! callback answered OK is there exactly once, under the event id the
//! library computes for the body that was sent; and measure end-to-end
//! latency (client send time, carried in the body, to the broker's append
//! time, which the benchmark's topics record as the record timestamp).

use std::collections::HashSet;
use std::ops::Range;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, Timestamp, TopicPartitionList};
use serde::Deserialize;

use crate::client::histogram;
use crate::workload::Workload;

/// One record in this many is also read as a whole `event::Event`.
const SAMPLE: usize = 16;

/// Partitions of the benchmark's topics.
pub const PARTITIONS: i32 = 6;

/// Creates `topic` and its dead-letter topic. The events topic stamps records
/// with the broker's append time (`LogAppendTime`), so a record's timestamp
/// is its arrival in Kafka.
pub async fn create_topics(brokers: &str, topic: &str) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| e.to_string())?;
    let dlq = format!("{topic}-dlq");
    let general = format!("{topic}-general");
    let topics = [
        NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))
            .set("message.timestamp.type", "LogAppendTime"),
        NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)),
        NewTopic::new(&general, 1, TopicReplication::Fixed(1)),
    ];
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(|e| e.to_string())?;
    for r in results {
        r.map_err(|(t, e)| format!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// What the topic holds compared with what was answered OK.
pub struct Verdict {
    /// Callbacks answered OK.
    pub acked: usize,
    /// Records in the events topic.
    pub records: usize,
    /// Distinct event ids among them.
    pub distinct: usize,
    /// Answered OK, not in Kafka.
    pub lost: usize,
    /// Records beyond the first of an event id (or of a request).
    pub duplicates: usize,
    /// In Kafka but never answered OK (the client gave up waiting): allowed.
    pub unanswered: usize,
    /// Records whose id is not the one the library computes for the body sent.
    pub wrong_id: usize,
    /// Records in the dead-letter topic (the benchmark sends none that
    /// should go there).
    pub dead_letters: usize,
    /// `chat_bridge_events_discarded_total` at shutdown.
    pub discarded: u64,
    /// Sampled records (one in [`SAMPLE`]) that are not a v1 `Event`.
    pub not_event: usize,
    /// Mean size of a record's value, bytes.
    pub mean_bytes: f64,
    /// End-to-end latency in µs per phase (same order as the phases given).
    pub e2e: Vec<Histogram<u64>>,
}

impl Verdict {
    /// Every acknowledged callback arrived exactly once, and nothing else is wrong.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.wrong_id == 0
            && self.dead_letters == 0
            && self.discarded == 0
            && self.not_event == 0
    }
}

#[derive(Deserialize)]
struct Value {
    id: String,
    extra: Extra,
}

#[derive(Deserialize)]
struct Extra {
    #[serde(rename = "BenchSeq")]
    seq: u64,
    #[serde(rename = "BenchSentUs")]
    sent_us: u64,
}

/// Reads `topic` (and its dead-letter topic) to the end and compares it with
/// `acked` (sorted request numbers). `phases` are the request-number ranges
/// whose end-to-end latency is wanted.
pub fn verify(
    brokers: &str,
    topic: &str,
    acked: &[u64],
    phases: &[Range<u64>],
    workload: &Workload,
    discarded: u64,
) -> Result<Verdict, String> {
    let mut v = Verdict {
        acked: acked.len(),
        records: 0,
        distinct: 0,
        lost: 0,
        duplicates: 0,
        unanswered: 0,
        wrong_id: 0,
        dead_letters: 0,
        discarded,
        not_event: 0,
        mean_bytes: 0.0,
        e2e: phases.iter().map(|_| histogram()).collect(),
    };
    let mut bytes = 0usize;
    let mut ids = HashSet::with_capacity(acked.len());
    let mut seen: HashSet<u64> = HashSet::with_capacity(acked.len());
    let mut bad = 0usize;
    read(brokers, topic, acked.len(), |payload, ts| {
        v.records += 1;
        bytes += payload.len();
        if v.records % SAMPLE == 1
            && serde_json::from_slice::<chat_kafka_bridge::event::Event>(payload).is_err()
        {
            v.not_event += 1;
        }
        let Ok(value) = serde_json::from_slice::<Value>(payload) else {
            bad += 1;
            return;
        };
        let (seq, sent_us) = (value.extra.seq, value.extra.sent_us);
        if workload.expected_id(seq, sent_us).as_deref() != Some(value.id.as_str()) {
            v.wrong_id += 1;
        }
        let fresh_id = ids.insert(value.id);
        let fresh_seq = seen.insert(seq);
        if !fresh_id || !fresh_seq {
            v.duplicates += 1;
        }
        if let (Some(arrived_ms), true) = (ts, fresh_seq)
            && let Some(i) = phases.iter().position(|r| r.contains(&seq))
        {
            let e2e = (arrived_ms * 1000).saturating_sub(sent_us);
            v.e2e[i].saturating_record(e2e.max(1));
        }
    })?;
    v.distinct = ids.len();
    v.mean_bytes = bytes as f64 / v.records.max(1) as f64;
    v.wrong_id += bad;
    v.lost = acked.iter().filter(|s| !seen.contains(s)).count();
    let acked_set: HashSet<u64> = acked.iter().copied().collect();
    v.unanswered = seen.iter().filter(|s| !acked_set.contains(s)).count();
    v.dead_letters = read(brokers, &format!("{topic}-dlq"), 0, |_, _| {})?;
    Ok(v)
}

/// Reads every record of `topic` from the beginning: calls `each(value,
/// append time in ms)` and returns the count.
fn read(
    brokers: &str,
    topic: &str,
    expected: usize,
    mut each: impl FnMut(&[u8], Option<u64>),
) -> Result<usize, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "8388608")
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let partitions = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    let mut tpl = TopicPartitionList::new();
    let mut total = 0usize;
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
        let (lo, hi) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        total += (hi - lo) as usize;
    }
    if total == 0 {
        return Ok(0);
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120 + (expected / 20_000) as u64);
    let mut n = 0;
    while n < total {
        if Instant::now() > deadline {
            return Err(format!(
                "read only {n} of {total} records of {topic} in time"
            ));
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.map_err(|e| format!("consuming {topic}: {e}"))?;
        let ts = match msg.timestamp() {
            Timestamp::LogAppendTime(ms) => u64::try_from(ms).ok(),
            _ => None,
        };
        each(msg.payload().unwrap_or_default(), ts);
        n += 1;
    }
    Ok(n)
}
