//! A consumer of the bridge's events, as another team would write one: a
//! consumer group that deserializes [`Event`], keeps each account's events in
//! order and drops repeats by event id. See `docs/events.md` ("Consuming
//! events") and `docs/reliability.md` ("Ordering").
//!
//! ```sh
//! cargo run --example consumer -- --brokers HOST:PORT [--topic official-account-events] \
//!     [--group example-consumer] [--reorder-window-ms 2000] [--dedup-ids 100000] \
//!     [--max-events N] [--idle-exit-secs S]
//! ```
//!
//! What it does with each record:
//!
//! 1. **Deserialize.** The value is an [`Event`]; a `version` other than 1
//!    or a `type` this build does not know is skipped and counted (the
//!    compatibility rules let new types appear within version 1).
//! 2. **De-duplicate.** An `id` seen among the last `--dedup-ids` ids is
//!    dropped (Tencent's retries and replays after a bridge crash carry the
//!    same id). Memory is bounded: a FIFO of that many ids.
//! 3. **Order per account.** One account's events are on one partition, in
//!    offset order, except that replays after a Kafka outage can come later
//!    than events accepted after them. Each record is held for
//!    `--reorder-window-ms` in a per-account buffer kept sorted the way
//!    `docs/reliability.md` says: by `bridge_seq` within one
//!    `bridge_instance`, by `event_time_ms` across instances. It is handled
//!    when its time in the buffer is up.
//! 4. **Commit.** Offsets are stored only below the oldest record still
//!    buffered in each partition and committed by the client's auto-commit,
//!    so a restart re-reads (and de-duplicates) rather than loses.
//!
//! An example, not a library: on a rebalance it does not hand its buffer
//! over (the next owner re-reads from the committed offset, which is safe),
//! and "handling" an event is printing one line.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chat_kafka_bridge::event::{Event, Payload};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Reads the bridge's events in a consumer group, in order per account, without repeats.
#[derive(Parser, Debug)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// Events topic.
    #[arg(long, default_value = "official-account-events")]
    topic: String,
    /// Consumer group id.
    #[arg(long, default_value = "example-consumer")]
    group: String,
    /// How long a record waits in its account's buffer for earlier ones.
    #[arg(long, default_value_t = 2000)]
    reorder_window_ms: u64,
    /// How many recent event ids are remembered for de-duplication.
    #[arg(long, default_value_t = 100_000)]
    dedup_ids: usize,
    /// Most records held in the reorder buffers; past it the oldest are handled early.
    #[arg(long, default_value_t = 10_000)]
    max_buffered: usize,
    /// Exit after handling this many events.
    #[arg(long)]
    max_events: Option<u64>,
    /// Exit after this many seconds without a record once partitions are
    /// assigned (after handling the buffer).
    #[arg(long)]
    idle_exit_secs: Option<u64>,
}

/// The last `cap` ids seen, in a set and a FIFO: bounded memory.
struct Dedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Dedup {
    fn new(cap: usize) -> Self {
        Dedup {
            seen: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// `true` the first time `id` is seen within the window.
    fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// A record waiting in its account's buffer.
struct Pending {
    event: Event,
    partition: i32,
    offset: i64,
    instance: String,
    seq: u64,
    arrived: Instant,
}

impl Pending {
    /// Whether `self` happened before `other` (docs/reliability.md, "Restoring order").
    fn precedes(&self, other: &Pending) -> bool {
        if self.instance == other.instance {
            self.seq < other.seq
        } else {
            self.event.event_time_ms < other.event.event_time_ms
        }
    }
}

#[derive(Default, Debug)]
struct Counts {
    records: u64,
    handled: u64,
    duplicates: u64,
    reordered: u64,
    unknown_type: u64,
    malformed: u64,
}

struct Reader {
    by_account: HashMap<String, VecDeque<Pending>>,
    buffered: usize,
    /// Per partition: offsets still buffered, and the next offset after the last one read.
    in_buffer: BTreeMap<i32, BTreeSet<i64>>,
    next_offset: BTreeMap<i32, i64>,
    dedup: Dedup,
    counts: Counts,
}

fn header(msg: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    msg.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

impl Reader {
    fn take(&mut self, msg: &BorrowedMessage<'_>) {
        self.counts.records += 1;
        self.next_offset.insert(msg.partition(), msg.offset() + 1);
        let payload = msg.payload().unwrap_or_default();
        let event: Event = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                // A type this build does not know is allowed within v1: skip it.
                let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
                if v["version"] == 1 && v["type"].is_string() {
                    self.counts.unknown_type += 1;
                } else {
                    self.counts.malformed += 1;
                    eprintln!(
                        "skipping malformed record {}/{}: {e}",
                        msg.partition(),
                        msg.offset()
                    );
                }
                return;
            }
        };
        if event.version != 1 {
            self.counts.unknown_type += 1;
            return;
        }
        if !self.dedup.first_time(&event.id) {
            self.counts.duplicates += 1;
            return;
        }
        let pending = Pending {
            partition: msg.partition(),
            offset: msg.offset(),
            instance: header(msg, "bridge_instance").unwrap_or_default(),
            seq: header(msg, "bridge_seq")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            arrived: Instant::now(),
            event,
        };
        let account = msg
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        self.insert(account, pending);
    }

    /// Puts `pending` into its account's buffer, in order.
    fn insert(&mut self, account: String, pending: Pending) {
        let queue = self.by_account.entry(account).or_default();
        // Insert after everything that precedes it; before what it precedes.
        let at = queue
            .iter()
            .position(|p| pending.precedes(p))
            .unwrap_or(queue.len());
        if at < queue.len() {
            self.counts.reordered += 1;
        }
        self.in_buffer
            .entry(pending.partition)
            .or_default()
            .insert(pending.offset);
        queue.insert(at, pending);
        self.buffered += 1;
    }

    /// Handles every record whose wait is over (all of them if `all`), in order per account.
    fn release(&mut self, window: Duration, max_buffered: usize, all: bool) -> Vec<Pending> {
        let now = Instant::now();
        let force = all || self.buffered > max_buffered;
        let mut out = Vec::new();
        for queue in self.by_account.values_mut() {
            while let Some(front) = queue.front() {
                if !force && now.duration_since(front.arrived) < window {
                    break;
                }
                out.extend(queue.pop_front());
            }
        }
        self.by_account.retain(|_, q| !q.is_empty());
        for p in &out {
            if let Some(set) = self.in_buffer.get_mut(&p.partition) {
                set.remove(&p.offset);
            }
        }
        self.buffered -= out.len();
        out
    }

    /// Offsets safe to commit: below the oldest record still buffered.
    fn safe_offsets(&self, topic: &str) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (&partition, &next) in &self.next_offset {
            let safe = self
                .in_buffer
                .get(&partition)
                .and_then(|s| s.first().copied())
                .unwrap_or(next);
            let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(safe));
        }
        tpl
    }
}

/// What a real service would do with the event; here, one line.
fn handle(p: &Pending) {
    let e = &p.event;
    let what = match &e.payload {
        Payload::Subscribed(s) | Payload::Unsubscribed(s) | Payload::BeforeSubscribe(s) => {
            format!("subscribers={:?}", s.subscribers)
        }
        Payload::InfoChanged(c) => format!("changes={:?}", c.changes),
        Payload::MessageSent(m) | Payload::BeforeMessageSend(m) => format!("key={:?}", m.key),
        Payload::Callback(c) => format!("{} fields={}", c.family, c.body.len()),
        _ => String::new(),
    };
    println!(
        "{}/{} {} {} {} {what}",
        p.partition,
        p.offset,
        e.official_account.as_deref().unwrap_or("-"),
        e.payload.type_name(),
        e.id
    );
}

impl Reader {
    fn new(dedup_ids: usize) -> Self {
        Reader {
            by_account: HashMap::new(),
            buffered: 0,
            in_buffer: BTreeMap::new(),
            next_offset: BTreeMap::new(),
            dedup: Dedup::new(dedup_ids),
            counts: Counts::default(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .create()?;
    consumer.subscribe(&[&args.topic])?;
    let window = Duration::from_millis(args.reorder_window_ms);
    let mut reader = Reader::new(args.dedup_ids);
    let mut last_record = Instant::now();
    loop {
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            reader.take(&msg?);
            last_record = Instant::now();
        } else if consumer.assignment()?.count() == 0 {
            // Still joining the group: that is not idleness.
            last_record = Instant::now();
        }
        let idle = args
            .idle_exit_secs
            .is_some_and(|s| last_record.elapsed() >= Duration::from_secs(s));
        for p in reader.release(window, args.max_buffered, idle) {
            handle(&p);
            reader.counts.handled += 1;
        }
        if let Err(e) = consumer.store_offsets(&reader.safe_offsets(&args.topic)) {
            // After a rebalance took a partition away; its new owner re-reads.
            eprintln!("storing offsets: {e}");
        }
        let done = args.max_events.is_some_and(|n| reader.counts.handled >= n);
        if idle || done {
            break;
        }
    }
    // What was not handled is read again by the next consumer of the group.
    match consumer.commit_consumer_state(CommitMode::Sync) {
        // Auto-commit already committed everything stored.
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => return Err(e.into()),
    }
    // Leave the group now, so the next member need not wait for our session to expire.
    consumer.unsubscribe();
    eprintln!("{:?}", reader.counts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(instance: &str, seq: u64, event_time_ms: u64, offset: i64) -> Pending {
        let mut event: Event = serde_json::from_value(serde_json::json!({
            "version": 1, "id": format!("{offset:032x}"), "type": "official_account.full",
            "data": {}, "command": "OfficialAccount.CallbackAfterOfficialAccountFull",
            "before": false, "sdk_app_id": 1, "official_account": "a", "operator_account": null,
            "event_time_ms": 0, "event_time_source": "callback", "received_at_ms": 0,
            "client_ip": null, "platform": null, "extra": {}
        }))
        .expect("an event");
        event.event_time_ms = event_time_ms;
        Pending {
            event,
            partition: 0,
            offset,
            instance: instance.into(),
            seq,
            arrived: Instant::now(),
        }
    }

    #[test]
    fn dedup_forgets_only_beyond_its_window() {
        let mut d = Dedup::new(2);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        assert!(d.first_time("b"));
        assert!(d.first_time("c")); // "a" falls out of the window
        assert!(!d.first_time("b"));
        assert!(d.first_time("a"));
        assert_eq!(d.seen.len(), 2);
    }

    /// A replay published late (offset 3, seq 1) goes back before the
    /// records its instance accepted after it; another instance's record is
    /// placed by event time. Offsets stay uncommitted until all are handled.
    #[test]
    fn replays_are_put_back_in_order() {
        let mut r = Reader::new(10);
        for p in [
            pending("x", 2, 20, 1),
            pending("x", 3, 30, 2),
            pending("x", 1, 10, 3),
            pending("y", 1, 25, 4),
        ] {
            r.next_offset.insert(0, p.offset + 1);
            r.in_buffer.entry(0).or_default().insert(p.offset);
            r.insert("a".into(), p);
        }
        let tpl = r.safe_offsets("t");
        assert_eq!(tpl.elements()[0].offset(), Offset::Offset(1));
        let out = r.release(Duration::from_secs(60), 100, true);
        let order: Vec<i64> = out.iter().map(|p| p.offset).collect();
        assert_eq!(order, [3, 1, 4, 2]);
        assert_eq!(r.counts.reordered, 2);
        assert_eq!(
            r.safe_offsets("t").elements()[0].offset(),
            Offset::Offset(5)
        );
    }
}
