//! Test harness: the bridge on ephemeral ports against the real broker, a
//! topic of its own per test, signed requests built from fixtures, a real
//! consumer, a `/metrics` reader and `assert_eventually!`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chat_kafka_bridge::app::{self, Listeners};
use chat_kafka_bridge::callback::sign;
use chat_kafka_bridge::config::{Cli, Config};
use chat_kafka_bridge::metrics::Snapshot;
use clap::Parser as _;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::kafka::bootstrap;

/// App id and token every test bridge accepts.
pub const APP_ID: u64 = 1_400_000_001;
/// See [`APP_ID`].
pub const TOKEN: &str = "it-secret-token";
/// Partitions of every test topic (more than one, so partitioning is visible).
pub const PARTITIONS: i32 = 6;

/// Retries `$cond` (an expression returning `bool`) until it holds or
/// `$timeout` passes; then fails with `$($msg)*`.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $timeout:expr, $($msg:tt)*) => {{
        let deadline = std::time::Instant::now() + $timeout;
        loop {
            if $cond {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!("not true within {:?}: {}", $timeout, format!($($msg)*));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }};
}

/// A fresh topic name, unique in this run.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "it-{prefix}-{}-{now}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `topic` with [`PARTITIONS`] partitions on the shared broker.
pub async fn create_topic(topic: &str) {
    create_topic_on(bootstrap(), topic, 1).await;
}

/// Creates the three topics a test bridge writes, on the shared broker:
/// `topic` (Official Account events), `{topic}-general` and `{topic}-dlq`.
pub async fn create_bridge_topics(topic: &str) {
    create_bridge_topics_on(bootstrap(), topic, 1).await;
}

/// [`create_bridge_topics`] on the cluster at `brokers`.
pub async fn create_bridge_topics_on(brokers: &str, topic: &str, replication: i32) {
    for t in [
        topic.to_owned(),
        general_topic(topic),
        format!("{topic}-dlq"),
    ] {
        create_topic_on(brokers, &t, replication).await;
    }
}

/// The general topic of the test bridge whose Official Account topic is `topic`.
pub fn general_topic(topic: &str) -> String {
    format!("{topic}-general")
}

/// Creates `topic` with [`PARTITIONS`] partitions and replication factor
/// `replication` on the cluster at `brokers`.
pub async fn create_topic_on(brokers: &str, topic: &str, replication: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                PARTITIONS,
                TopicReplication::Fixed(replication),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("CreateTopics request");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// A bridge running in this process.
pub struct TestBridge {
    /// `http://127.0.0.1:<port>` of the callback port.
    pub base: String,
    /// `http://127.0.0.1:<port>` of the admin port.
    pub admin: String,
    /// Events topic.
    pub topic: String,
    /// General topic (every command outside `OfficialAccount.*`).
    pub general: String,
    /// Dead-letter topic.
    pub dlq: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<Snapshot>>>,
}

impl TestBridge {
    /// Starts a bridge with fresh topics on the shared broker. `extra` are
    /// additional command-line flags.
    pub async fn start(extra: &[&str]) -> TestBridge {
        let topic = unique("events");
        create_bridge_topics(&topic).await;
        let bridge = Self::start_with(bootstrap(), &topic, extra).await;
        bridge.wait_ready().await;
        bridge
    }

    /// Starts a bridge with nothing listening where its Kafka should be
    /// (port 1 on loopback): not ready, and every record it must deliver
    /// fails. Topics are named after `name`.
    pub async fn without_kafka(name: &str, extra: &[&str]) -> TestBridge {
        Self::start_with("127.0.0.1:1", &unique(name), extra).await
    }

    /// Starts a bridge against `brokers` writing `topic` (and `{topic}-dlq`,
    /// `{topic}-general`) without creating topics or waiting, with a spool
    /// directory of its own.
    pub async fn start_with(brokers: &str, topic: &str, extra: &[&str]) -> TestBridge {
        let dlq = format!("{topic}-dlq");
        let app_id = APP_ID.to_string();
        let spool = spool_dir(&unique("spool"));

        let spool = spool.to_str().expect("utf-8 path");
        let own_spool = !extra.contains(&"--spool-dir");
        let general = general_topic(topic);
        let mut args = vec![
            "chat-kafka-bridge",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--kafka-brokers",
            brokers,
            "--kafka-topic",
            topic,
            "--kafka-dlq-topic",
            &dlq,
            "--kafka-general-topic",
            &general,
            "--sdk-app-id",
            &app_id,
            "--callback-token",
            TOKEN,
            "--shutdown-timeout",
            "15s",
        ];
        if own_spool {
            args.extend_from_slice(&["--spool-dir", spool]);
        }

        args.extend_from_slice(extra);
        let cli = Cli::try_parse_from(args).expect("valid test flags");
        let config = Config::load(cli, Vec::new()).expect("valid test config");
        let callback = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (cb, ad): (SocketAddr, SocketAddr) = (
            callback.local_addr().expect("addr"),
            admin.local_addr().expect("addr"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app::run(
            config,
            Listeners { callback, admin },
            async move {
                let _ = stopped.await;
            },
        ));
        TestBridge {
            base: format!("http://{cb}"),
            admin: format!("http://{ad}"),
            topic: topic.to_owned(),
            general: general.clone(),
            dlq,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.admin);
        assert_eventually!(
            get(&url).await.0 == 200,
            Duration::from_secs(30),
            "bridge at {} never became ready",
            self.admin
        );
    }

    /// POSTs a signed callback built from `body` (command read from the body
    /// unless `command` is given).
    pub async fn send(&self, body: &[u8]) -> Response {
        let command = command_of(body);
        post(&signed_url(&self.base, &command, now_secs()), body.to_vec()).await
    }

    /// Sends a fixture file from `tests/fixtures/callbacks/` as the
    /// command its file name names.
    pub async fn send_fixture(&self, name: &str) -> Response {
        let command = command_of_fixture(name);
        post(&signed_url(&self.base, &command, now_secs()), fixture(name)).await
    }

    /// Sends the fixtures of other families (a group message, a status
    /// change, a push batch of two) and returns the events they make (4).
    pub async fn send_other_families(&self) -> usize {
        for name in [
            "Group.CallbackAfterSendMsg.json",
            "State.StateChange.json",
            "Push.OfflinePush.json",
        ] {
            assert_eq!(self.send_fixture(name).await.status, 200, "{name}");
        }
        4
    }

    /// Sends one callback of each outcome that creates a labelled series on
    /// demand (published, refused by method, dead-lettered), so that every
    /// metric family the bridge has is on `/metrics`.
    pub async fn exercise_every_outcome(&self) {
        assert_eq!(
            self.send_fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json")
                .await
                .status,
            200
        );
        assert_eq!(get(&format!("{}/callback", self.base)).await.0, 405);
        let url = signed_url(
            &self.base,
            "OfficialAccount.CallbackAfterOfficialAccountFull",
            now_secs(),
        );
        // A dead letter: JSON, but not an object.
        assert_eq!(post(&url, b"[1]".to_vec()).await.status, 200);
    }

    /// Current value of one sample on `/metrics` (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        metric(&self.admin, sample).await
    }

    /// Triggers shutdown and returns the final counts.
    pub async fn stop(mut self) -> Snapshot {
        self.begin_stop();
        self.join().await
    }

    /// Triggers shutdown without waiting.
    pub fn begin_stop(&mut self) {
        self.stop.take().map(|s| s.send(()));
    }

    /// Waits for a shutdown begun with [`TestBridge::begin_stop`].
    pub async fn join(mut self) -> Snapshot {
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("bridge stops within 30s")
            .expect("bridge task did not panic")
            .expect("bridge run returned Ok")
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A fresh spool directory for the bridge that writes `topic`.
pub fn spool_dir(topic: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("spool-{topic}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A callback URL with every query parameter Tencent sends, signed with [`TOKEN`].
pub fn signed_url(base: &str, command: &str, request_time: i64) -> String {
    let t = request_time.to_string();
    format!(
        "{base}/callback?SdkAppid={APP_ID}&CallbackCommand={command}&contenttype=json\
         &ClientIP=203.0.113.7&OptPlatform=RESTAPI&Sign={}&RequestTime={t}",
        sign(TOKEN, &t)
    )
}

/// Bytes of `tests/fixtures/callbacks/<name>`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/callbacks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every fixture file name, sorted.
pub fn fixture_names() -> Vec<String> {
    let dir = format!("{}/tests/fixtures/callbacks", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The command a fixture is a callback of: its file name before `.json`
/// (and before a `+variant` suffix), `Group.CallbackAfterSendMsg.json` ->
/// `Group.CallbackAfterSendMsg`, `variants/X+name-only.json` -> `X`.
pub fn command_of_fixture(name: &str) -> String {
    let file = name.rsplit('/').next().expect("a name");
    let stem = file.strip_suffix(".json").unwrap_or(file);
    stem.split('+').next().expect("a name").to_owned()
}

/// The body's `CallbackCommand`, or the first item's for a batch.
pub fn command_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).expect("fixture is JSON");
    v["CallbackCommand"]
        .as_str()
        .or_else(|| v["Events"][0]["CallbackCommand"].as_str())
        .expect("a CallbackCommand")
        .to_owned()
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body parsed as JSON (`Null` if it is not JSON).
    pub json: serde_json::Value,
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// POSTs `body` to `url`.
pub async fn post(url: &str, body: Vec<u8>) -> Response {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = client().request(req).await.expect("POST");
    let status = resp.status().as_u16();
    #[allow(clippy::disallowed_methods)] // test client reading our own small answers
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Response {
        status,
        json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

/// GETs `url`: status and body text.
pub async fn get(url: &str) -> (u16, String) {
    request("GET", url).await
}

/// Sends a body-less request with `method`.
pub async fn request(method: &str, url: &str) -> (u16, String) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    match client().request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            #[allow(clippy::disallowed_methods)] // test client reading our own small answers
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// One sample from `/metrics`, e.g. `chat_bridge_callbacks_rejected_total{reason="unknown_app"}`.
/// Labels must be written in the order the exposition prints them (sorted).
pub async fn metric(admin: &str, sample: &str) -> f64 {
    let (status, text) = get(&format!("{admin}/metrics")).await;
    assert_eq!(status, 200, "/metrics answered {status}");
    parse_metrics(&text).get(sample).copied().unwrap_or(0.0)
}

/// Every sample of a Prometheus text exposition.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition it landed on.
    pub partition: i32,
    /// Key, as UTF-8.
    pub key: Option<String>,
    /// Value bytes.
    pub payload: Vec<u8>,
    /// Headers, as UTF-8.
    pub headers: HashMap<String, String>,
}

impl Record {
    /// The value parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("record value is JSON")
    }
}

/// Reads `topic` from the beginning until `expected` records arrived (or
/// `timeout` passed), then returns them. Checks the high watermarks too, so
/// the result is every record in the topic, not just the first `expected`.
pub async fn consume(topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    let topic = topic.to_owned();
    let bootstrap = bootstrap().to_owned();
    tokio::task::spawn_blocking(move || consume_blocking(&bootstrap, &topic, expected, timeout))
        .await
        .expect("consumer thread")
}

/// As [`consume`], from any broker, blocking.
pub fn consume_blocking(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let partitions = md.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    // Every record in the topic, by the high watermarks. A failed lookup is
    // an error, never "0 records": that would end the read early.
    let total = |c: &BaseConsumer| -> usize {
        (0..partitions)
            .map(|p| {
                let (lo, hi) = c
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
                (hi - lo) as usize
            })
            .sum()
    };
    let mut want = expected.max(total(&consumer));
    while Instant::now() < deadline {
        if out.len() >= want {
            // Records may have arrived since: read those too.
            want = total(&consumer);
            if out.len() >= want {
                break;
            }
        }

        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = match msg {
            Ok(msg) => msg,
            // A broker of a cluster going away (the fault tests kill one) is
            // reported and retried by librdkafka: keep reading.
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::BrokerTransportFailure
                            | RDKafkaErrorCode::AllBrokersDown
                            | RDKafkaErrorCode::NotLeaderForPartition
                            | RDKafkaErrorCode::LeaderNotAvailable
                    )
                ) =>
            {
                continue;
            }
            Err(e) => panic!("consume: {e:?}"),
        };
        let headers = msg
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: msg.partition(),
            key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: msg.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    out
}

/// Records in `topic` right now, from the high watermarks.
pub async fn count_records(topic: &str) -> usize {
    count_records_on(bootstrap(), topic).await
}

/// Records in `topic` on the cluster at `brokers`.
pub async fn count_records_on(brokers: &str, topic: &str) -> usize {
    let topic = topic.to_owned();
    let bootstrap = brokers.to_owned();

    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("consumer");
        (0..PARTITIONS)
            .map(|p| {
                let (lo, hi) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .expect("watermarks");
                (hi - lo) as usize
            })
            .sum()
    })
    .await
    .expect("watermark thread")
}

/// Kafka's murmur2 (as in `org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Java's default partitioner picks for a non-empty key.
pub fn java_partition(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_matches_kafkas_test_vectors() {
    assert_eq!(murmur2(b"21"), -973_932_308);
    assert_eq!(murmur2(b"foobar"), -790_332_482);
    assert_eq!(murmur2(b"abc"), 479_470_107);
}
