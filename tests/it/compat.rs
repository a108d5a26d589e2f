//! The compatibility suite (issue 13): the same checks against every broker
//! of the matrix, so that "the bridge works with the Kafka our users run"
//! stays true and `docs/kafka.md` can say what was shown.
//!
//! Every broker here is the suite's own: one node with PLAINTEXT, SASL
//! (PLAIN and SCRAM-SHA-512) and TLS listeners ([`kafka::Spec::secure`]),
//! started once and shared by every check; the restart check has it to
//! itself while it kills and restarts it. It is not the shared broker of
//! the other tests, which a restart would disturb.
//!
//! - `cargo test` runs every check against one broker of
//!   [`kafka::DEFAULT_VERSION`] (4.1.1, KRaft).
//! - `BRIDGE_TEST_KAFKA_MATRIX=all` runs them against every version of
//!   [`kafka::MATRIX`] (2.4.1, 2.8.2 and 3.2.3 with ZooKeeper, 3.9.1 and
//!   4.1.1 in KRaft mode); a comma-separated list (`2.4.1,3.2.3`) picks
//!   versions. `.ci/kafka-matrix` runs `all` and prints the table.
//!
//! Each check prints one line per broker, pass or fail, and fails at the end
//! if any broker failed it:
//! `[compat] version=2.4.1 mode=ZooKeeper check=publish result=pass sent=17 found=17 secs=2.1 ...`

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::RwLock;

use crate::binary::Bridge;
use crate::harness::{
    APP_ID, PARTITIONS, Record, TOKEN, TestBridge, consume_blocking, count_records_on,
    create_bridge_topics_on, create_topic_on, fixture, fixture_names, general_topic, get,
    java_partition, now_secs, post, signed_url, unique,
};
use crate::kafka::{self, Cluster, Listener, Spec};
use crate::load::{Load, report, verify};

/// The versions this run tests: [`kafka::DEFAULT_VERSION`], or
/// `BRIDGE_TEST_KAFKA_MATRIX`.
fn versions() -> Vec<String> {
    match std::env::var("BRIDGE_TEST_KAFKA_MATRIX") {
        Err(_) => vec![kafka::DEFAULT_VERSION.to_owned()],
        Ok(v) if v.trim() == "all" => kafka::MATRIX.iter().map(|v| (*v).to_owned()).collect(),
        Ok(v) => {
            let list: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            assert!(
                !list.is_empty(),
                "BRIDGE_TEST_KAFKA_MATRIX={v:?} names no version: use `all` or e.g. `2.4.1,3.2.3`"
            );
            list
        }
    }
}

/// One broker of the matrix.
pub struct Target {
    version: String,
    cluster: Result<Cluster, String>,
    /// Read by every check; written (held alone) by the restart check.
    lock: RwLock<()>,
}

static TARGETS: OnceLock<Vec<Target>> = OnceLock::new();

/// Every broker of this run, started on first use (in parallel, once each).
async fn targets() -> &'static [Target] {
    tokio::task::spawn_blocking(|| {
        TARGETS
            .get_or_init(|| {
                let began = Instant::now();
                let versions = versions();
                let targets: Vec<Target> = std::thread::scope(|s| {
                    let handles: Vec<_> = versions
                        .iter()
                        .map(|v| {
                            s.spawn(move || {
                                Cluster::start_spec(&Spec {
                                    version: v.clone(),
                                    nodes: 1,
                                    secure: true,
                                })
                            })
                        })
                        .collect();
                    versions
                        .iter()
                        .zip(handles)
                        .map(|(v, h)| Target {
                            version: v.clone(),
                            cluster: h
                                .join()
                                .unwrap_or_else(|_| Err("the start thread panicked".into())),
                            lock: RwLock::new(()),
                        })
                        .collect()
                });
                eprintln!(
                    "[compat] brokers {versions:?} started in {:.1}s on {}",
                    began.elapsed().as_secs_f64(),
                    kafka::java_version()
                );
                targets
            })
            .as_slice()
    })
    .await
    .expect("broker start thread")
}

/// What one check saw on one broker.
struct Outcome {
    /// Events (or callbacks) the check made the bridge publish.
    sent: usize,
    /// Of those, found in Kafka.
    found: usize,
    /// Anything else worth a column.
    detail: String,
}

/// The text of a panic payload.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `check` against every broker of the run in turn (each in a task of
/// its own, so one broker's failure does not hide the next one's result),
/// prints one `[compat]` line for each, and fails if any failed.
async fn across_matrix<F, Fut>(check: &str, exclusive: bool, f: F)
where
    F: Fn(&'static Cluster) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let mut failed = Vec::new();
    for t in targets().await {
        let mut began = Instant::now();
        let mode = t.cluster.as_ref().map_or("?", |c| c.mode().as_str());
        let result = match &t.cluster {
            Err(e) => Err(format!("the broker did not start: {e}")),
            Ok(cluster) => {
                let _shared;
                let _alone;
                if exclusive {
                    _alone = t.lock.write().await;
                } else {
                    _shared = t.lock.read().await;
                }
                // The time of the check itself, not of the wait for the broker.
                began = Instant::now();
                tokio::spawn(f(cluster)).await.map_err(|e| {
                    if e.is_panic() {
                        panic_text(e.into_panic())
                    } else {
                        e.to_string()
                    }
                })
            }
        };
        let secs = began.elapsed().as_secs_f64();
        match result {
            Ok(o) => eprintln!(
                "[compat] version={} mode={mode} check={check} result=pass sent={} found={} secs={secs:.1} {}",
                t.version, o.sent, o.found, o.detail
            ),
            Err(e) => {
                let e = e.replace('\n', " | ");
                eprintln!(
                    "[compat] version={} mode={mode} check={check} result=FAIL secs={secs:.1} {e}",
                    t.version
                );
                failed.push(format!("{} ({mode}): {e}", t.version));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{check} failed on {} broker(s):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// Fresh topics (events, general, dead letters) on `c`, and a ready
/// in-process bridge writing them through the PLAINTEXT listener.
async fn bridge_on(c: &Cluster, name: &str, extra: &[&str]) -> TestBridge {
    let brokers = c.bootstrap();
    let topic = unique(&format!("{name}-{}", c.version()));
    create_bridge_topics_on(&brokers, &topic, 1).await;
    let bridge = TestBridge::start_with(&brokers, &topic, extra).await;
    bridge.wait_ready().await;
    bridge
}

/// Every record of `topic` on `c` (at least `expected`, within 30 s).
async fn read(c: &Cluster, topic: &str, expected: usize) -> Vec<Record> {
    let (brokers, topic) = (c.bootstrap(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        consume_blocking(&brokers, &topic, expected, Duration::from_secs(30))
    })
    .await
    .expect("consumer thread")
}

/// Waits until the bridge has nothing unconfirmed and nothing spooled.
async fn drained(bridge: &TestBridge, within: Duration) {
    assert_eventually!(
        bridge.metric("chat_bridge_kafka_unconfirmed_events").await == 0.0
            && bridge.metric("chat_bridge_spool_events").await == 0.0,
        within,
        "the bridge never drained (unconfirmed {}, spooled {})",
        bridge.metric("chat_bridge_kafka_unconfirmed_events").await,
        bridge.metric("chat_bridge_spool_events").await
    );
}

const FATAL: &str =
    r#"chat_bridge_kafka_deliveries_total{error_class="fatal",result="failed",stream="events"}"#;

// ---------------------------------------------------------------------------
// The checks, one test each.

/// Every fixture, through the bridge's defaults (idempotent producer,
/// `acks=all`, lz4, CloudEvents headers, `murmur2_random`): one event per
/// callback (two for the push batch), none lost or doubled, each valid
/// against the schema, with its headers, on the partition Java's default
/// partitioner picks for its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_publish_every_fixture() {
    across_matrix("publish", false, |c| async move {
        let bridge = bridge_on(c, "compat-publish", &[]).await;
        let (mut oa, mut general) = (0, 0);
        for name in fixture_names() {
            let body = fixture(&name);
            let r = bridge.send_fixture(&name).await;
            assert_eq!(r.status, 200, "{name}: {r:?}");
            let v: Value = serde_json::from_slice(&body).expect("fixture is JSON");
            let events = v["Events"].as_array().map_or(1, Vec::len);
            if name.starts_with("OfficialAccount.") {
                oa += events;
            } else {
                general += events;
            }
        }
        let events = read(c, &bridge.topic, oa).await;
        let others = read(c, &bridge.general, general).await;
        assert_eq!(events.len(), oa, "Official Account events");
        assert_eq!(others.len(), general, "events of other families");
        let mut ids = HashSet::new();
        let mut keyed = 0;
        for r in events.iter().chain(&others) {
            let e = r.json();
            crate::contract::assert_schema_valid(&e, "event read back");
            let id = e["id"].as_str().expect("id").to_owned();
            assert_eq!(r.headers.get("ce_id"), Some(&id), "CloudEvents headers");
            assert_eq!(r.headers["ce_specversion"], "1.0");
            assert!(ids.insert(id.clone()), "{id} twice");
            if let Some(key) = &r.key {
                assert_eq!(
                    r.partition,
                    java_partition(key, PARTITIONS),
                    "{key}: not the partition Java's partitioner picks"
                );
                keyed += 1;
            }
        }
        assert!(keyed >= oa, "every Official Account event has a key");
        let totals = bridge.stop().await;
        assert_eq!(totals.delivered as usize, oa + general);
        assert_eq!((totals.failed, totals.discarded), (0, 0));
        Outcome {
            sent: oa + general,
            found: events.len() + others.len(),
            detail: format!("keyed_on_javas_partition={keyed} headers=ok"),
        }
    })
    .await;
}

/// The broker is killed (`kill -9`) under steady load, stays down 10 s and
/// is restarted: every callback answered OK is in Kafka once. No record
/// twice is the idempotent producer at work (librdkafka retries what the
/// dead broker never acknowledged), and nothing went through the spool: the
/// producer's retries carried the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_broker_restart_under_load() {
    across_matrix("restart", true, |c| async move {
        let bridge = bridge_on(c, "compat-restart", &[]).await;
        let tag = format!("compat_{}", c.version().replace('.', "_"));
        let load = Load::start(&format!("{}/callback", bridge.base), 4, 25.0, 20_000, &tag);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let down = Instant::now();
        tokio::task::spawn_blocking(move || c.signal(0, "-9"))
            .await
            .expect("kill thread");
        tokio::time::sleep(Duration::from_secs(10)).await;
        tokio::task::spawn_blocking(move || {
            c.restart(0);
            c.wait_ready(Duration::from_secs(90))
                .unwrap_or_else(|e| panic!("the broker did not come back: {e}"));
        })
        .await
        .expect("restart thread");
        let down = down.elapsed();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let result = load.stop().await;
        drained(&bridge, Duration::from_secs(120)).await;
        let v = verify(&c.bootstrap(), &bridge.topic, &result.acked).await;
        report(
            &format!("Kafka {} restarted under load", c.version()),
            &result,
            &v,
        );
        assert!(
            result.acked.len() > 1_000,
            "load too thin: {}",
            result.acked.len()
        );
        assert_eq!(v.lost, 0, "acknowledged callbacks missing");
        assert_eq!(v.duplicates, 0, "records written twice");
        assert_eq!(bridge.metric(FATAL).await, 0.0, "fatal producer errors");
        assert_eq!(
            bridge.metric("chat_bridge_spool_appends_total").await,
            0.0,
            "the restart should be shorter than message.timeout.ms"
        );
        let totals = bridge.stop().await;
        assert_eq!(totals.discarded, 0);
        Outcome {
            sent: result.acked.len(),
            found: v.records,
            detail: format!(
                "down_secs={:.1} lost={} duplicates={} 5xx={}",
                down.as_secs_f64(),
                v.lost,
                v.duplicates,
                result.server_errors()
            ),
        }
    })
    .await;
}

/// Authentic bodies that cannot be normalized go raw to the dead-letter
/// topic, byte for byte, with their reason in headers; none reaches the
/// events topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_dead_letters() {
    across_matrix("dead_letter", false, |c| async move {
        let bridge = bridge_on(c, "compat-dlq", &[]).await;
        let full = "OfficialAccount.CallbackAfterOfficialAccountFull";
        let cases: [(&str, &[u8], &str); 3] = [
            (full, b"[1,2,3]", "body_not_object"),
            (
                full,
                br#"{"CallbackCommand":"OfficialAccount.CallbackAfterOfficialAccountFull","EventTime":1}"#,
                "body_missing_field",
            ),
            (
                "OfficialAccount.CallbackAfterAddSubscriber",
                br#"{"Official_Account":"@TOA#_x","SubscribeAccountList":"everyone"}"#,
                "body_invalid_field",
            ),
        ];
        for (command, body, _) in &cases {
            let r = post(&signed_url(&bridge.base, command, now_secs()), body.to_vec()).await;
            assert_eq!(r.status, 200, "{command}: {r:?}");
        }
        let records = read(c, &bridge.dlq, cases.len()).await;
        assert_eq!(records.len(), cases.len());
        for (command, body, reason) in &cases {
            let rec = records
                .iter()
                .find(|r| r.payload == *body)
                .unwrap_or_else(|| panic!("raw body of {command} not found byte for byte"));
            assert_eq!(rec.headers["bridge_reason"], *reason, "{command}");
            assert_eq!(rec.headers["bridge_command"], *command);
            assert_eq!(rec.headers["bridge_sdk_app_id"], APP_ID.to_string());
        }
        assert_eq!(count_records_on(&c.bootstrap(), &bridge.topic).await, 0);
        let totals = bridge.stop().await;
        assert_eq!(totals.dead_lettered as usize, cases.len());
        Outcome {
            sent: cases.len(),
            found: records.len(),
            detail: "raw_bytes=ok reason_headers=ok".into(),
        }
    })
    .await;
}

/// Readiness follows the broker's metadata: not ready (503, saying why)
/// while one of its topics is missing, ready once it exists, and then
/// publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_readiness() {
    across_matrix("readiness", false, |c| async move {
        let brokers = c.bootstrap();
        let topic = unique(&format!("compat-ready-{}", c.version()));
        // Events and general topics only: the dead-letter topic is missing.
        create_topic_on(&brokers, &topic, 1).await;
        create_topic_on(&brokers, &general_topic(&topic), 1).await;
        let bridge = TestBridge::start_with(&brokers, &topic, &[]).await;
        let url = format!("{}/readyz", bridge.admin);
        // Two probe rounds (2 s apart) have answered by now.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (status, body) = get(&url).await;
        assert_eq!(status, 503, "ready without its dead-letter topic: {body}");
        assert!(body.contains("no Kafka metadata"), "{body}");
        create_topic_on(&brokers, &bridge.dlq, 1).await;
        let began = Instant::now();
        bridge.wait_ready().await;
        let became_ready = began.elapsed();
        assert_eq!(
            bridge
                .send_fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json")
                .await
                .status,
            200
        );
        let found = read(c, &bridge.topic, 1).await.len();
        assert_eq!(found, 1);
        bridge.stop().await;
        Outcome {
            sent: 1,
            found,
            detail: format!(
                "missing_topic=503 ready_after_create_secs={:.1}",
                became_ready.as_secs_f64()
            ),
        }
    })
    .await;
}

/// The record batches the bridge wrote, as the broker stores them (Kafka's
/// `DumpLogSegments` on the broker's files): every batch carries a producer
/// id and sequence numbers, so the broker accepted `enable.idempotence` and
/// de-duplicates retries; and every batch is compressed with the codec
/// asked for: lz4 by default, zstd when configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_idempotence_and_compression() {
    across_matrix("idempotence_compression", false, |c| async move {
        let n = 40;
        let mut detail = Vec::new();
        let mut found = 0;
        for (codec, extra) in [
            ("lz4", &[][..]),
            ("zstd", &["--kafka-property", "compression.type=zstd"][..]),
        ] {
            let bridge = bridge_on(c, &format!("compat-{codec}"), extra).await;
            let tag = format!("{codec}_{}", c.version().replace('.', "_"));
            let load = Load::start(&format!("{}/callback", bridge.base), 1, 200.0, n, &tag);
            assert_eventually!(
                load.ok() == n,
                Duration::from_secs(30),
                "{n} callbacks answered OK"
            );
            let result = load.stop().await;
            assert_eq!(result.acked.len(), n);
            drained(&bridge, Duration::from_secs(30)).await;
            assert_eq!(bridge.metric(FATAL).await, 0.0);
            let topic = bridge.topic.clone();
            let dump = tokio::task::spawn_blocking(move || c.dump_log_segments(&topic))
                .await
                .expect("dump thread")
                .unwrap_or_else(|e| panic!("{e}"));
            let batches = batches(&dump);
            assert!(!batches.is_empty(), "no record batch in:\n{dump}");
            let mut records = 0;
            for b in &batches {
                let field = |k: &str| -> &str {
                    b.iter()
                        .find(|(name, _)| name == k)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or_else(|| panic!("batch without {k}: {b:?}"))
                };
                let pid: i64 = field("producerId").parse().expect("producerId");
                let seq: i64 = field("baseSequence").parse().expect("baseSequence");
                assert!(pid >= 0 && seq >= 0, "a batch without idempotence: {b:?}");
                assert!(
                    field("compresscodec").eq_ignore_ascii_case(codec),
                    "{codec} asked, batch has {b:?}"
                );
                records += field("count").parse::<usize>().expect("count");
            }
            assert_eq!(records, n, "records in the log");
            found += records;
            detail.push(format!("{codec}_batches={}", batches.len()));
            bridge.stop().await;
        }
        detail.push("producer_id=yes sequence=yes".into());
        Outcome {
            sent: 2 * n,
            found,
            detail: detail.join(" "),
        }
    })
    .await;
}

/// The batch lines of a `DumpLogSegments` output, as (field, value) pairs.
fn batches(dump: &str) -> Vec<Vec<(String, String)>> {
    dump.lines()
        .filter(|l| l.starts_with("baseOffset:"))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .windows(2)
                .filter(|w| w[0].ends_with(':'))
                .map(|w| (w[0].trim_end_matches(':').to_owned(), w[1].to_owned()))
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// SASL and TLS, through the real binary: credentials come from its
// environment or its configuration file, as in production, and what it logs
// and exposes is read back to check that no password is in it.

/// How a bridge is given its Kafka security settings.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// `BRIDGE_KAFKA_PROP_<NAME>` variables.
    Env,
    /// `[kafka.properties]` of the file `BRIDGE_CONFIG` names.
    File,
}

/// Spawns the binary on fresh topics of `c`, talking to `listener` with the
/// librdkafka `properties` given the way `source` says.
async fn secure_bridge(
    c: &Cluster,
    name: &str,
    listener: Listener,
    properties: &[(&str, String)],
    source: Source,
) -> (Bridge, String) {
    let topic = unique(&format!("{name}-{}", c.version()));
    create_bridge_topics_on(&c.bootstrap(), &topic, 1).await;
    let brokers = c.bootstrap_of(listener).expect("a secure broker");
    let mut props: Vec<(&str, String)> = vec![("security.protocol", listener.protocol().into())];
    props.extend(properties.iter().cloned());
    let general = general_topic(&topic);
    let app = APP_ID.to_string();
    let mut env: Vec<(String, String)> = vec![
        // Debug logs too: more places where a secret could slip out.
        ("RUST_LOG".into(), "debug".into()),
        ("BRIDGE_KAFKA_BROKERS".into(), brokers),
        ("BRIDGE_KAFKA_TOPIC".into(), topic.clone()),
        ("BRIDGE_KAFKA_GENERAL_TOPIC".into(), general),
        ("BRIDGE_SDKAPPID".into(), app),
        ("BRIDGE_CALLBACK_TOKEN".into(), TOKEN.into()),
    ];
    match source {
        Source::Env => {
            for (k, v) in &props {
                env.push((
                    format!(
                        "BRIDGE_KAFKA_PROP_{}",
                        k.to_ascii_uppercase().replace('.', "_")
                    ),
                    v.clone(),
                ));
            }
        }
        Source::File => {
            let mut toml = String::from("[kafka.properties]\n");
            for (k, v) in &props {
                toml.push_str(&format!("{k:?} = {v:?}\n"));
            }
            let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{topic}.toml"));
            std::fs::write(&file, toml).expect("write the config file");
            env.push(("BRIDGE_CONFIG".into(), file.display().to_string()));
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (Bridge::spawn(&env), topic)
}

/// Waits for readiness, sends three fixtures, and reads them back (through
/// the PLAINTEXT listener); returns how many were found.
async fn publish_through(bridge: &Bridge, c: &Cluster, topic: &str) -> usize {
    let admin = bridge.admin.clone();
    assert_eventually!(
        get(&format!("{admin}/readyz")).await.0 == 200,
        Duration::from_secs(30),
        "never ready: {}",
        bridge.log_text()
    );
    let base = bridge.callback.trim_end_matches("/callback");
    let names = [
        "OfficialAccount.CallbackAfterOfficialAccountFull.json",
        "OfficialAccount.CallbackAfterCreateOfficialAccount.json",
        "OfficialAccount.CallbackAfterOfficialAccountInfoChanged.json",
    ];
    for name in names {
        let body = fixture(name);
        let command = crate::harness::command_of_fixture(name);
        let r = post(&signed_url(base, &command, now_secs()), body).await;
        assert_eq!(r.status, 200, "{name}: {r:?}");
    }
    let found = read(c, topic, names.len()).await.len();
    assert_eq!(found, names.len(), "records through the secure listener");
    found
}

/// No password in anything the bridge logged or exposes on `/metrics`.
async fn assert_no_secret(bridge: &Bridge, secrets: &[&str]) {
    let (status, metrics) = get(&format!("{}/metrics", bridge.admin)).await;
    assert_eq!(status, 200);
    let logs = bridge.log_text();
    assert!(logs.contains("listening."), "the log was not read: {logs}");
    for s in secrets {
        assert!(!logs.contains(s), "a password in the logs:\n{logs}");
        assert!(!metrics.contains(s), "a password on /metrics");
    }
}

fn sasl(mechanism: &str, user: &str, password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("sasl.mechanisms", mechanism.into()),
        ("sasl.username", user.into()),
        ("sasl.password", password.into()),
    ]
}

fn ca() -> (&'static str, String) {
    ("ssl.ca.location", kafka::ca_file().display().to_string())
}

/// SASL/PLAIN, over plaintext with the credentials in the environment and
/// over TLS (the test CA) with them in the configuration file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_sasl_plain() {
    across_matrix("sasl_plain", false, |c| async move {
        let plain = sasl("PLAIN", kafka::PLAIN_USER, kafka::PLAIN_PASSWORD);
        let mut with_ca = plain.clone();
        with_ca.push(ca());
        let mut found = 0;
        for (listener, props, source) in [
            (Listener::SaslPlaintext, plain, Source::Env),
            (Listener::SaslSsl, with_ca, Source::File),
        ] {
            let (bridge, topic) = secure_bridge(c, "compat-plain", listener, &props, source).await;
            found += publish_through(&bridge, c, &topic).await;
            assert_no_secret(&bridge, &[kafka::PLAIN_PASSWORD]).await;
        }
        Outcome {
            sent: 6,
            found,
            detail: "SASL_PLAINTEXT/env=ok SASL_SSL/file=ok".into(),
        }
    })
    .await;
}

/// SASL/SCRAM-SHA-512 with a CKafka-style user name (`instanceId#user`),
/// over plaintext (environment) and over TLS (configuration file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_sasl_scram() {
    across_matrix("sasl_scram", false, |c| async move {
        let scram = sasl("SCRAM-SHA-512", kafka::SCRAM_USER, kafka::SCRAM_PASSWORD);
        let mut with_ca = scram.clone();
        with_ca.push(ca());
        let mut found = 0;
        for (listener, props, source) in [
            (Listener::SaslPlaintext, scram, Source::Env),
            (Listener::SaslSsl, with_ca, Source::File),
        ] {
            let (bridge, topic) = secure_bridge(c, "compat-scram", listener, &props, source).await;
            found += publish_through(&bridge, c, &topic).await;
            assert_no_secret(&bridge, &[kafka::SCRAM_PASSWORD]).await;
        }
        Outcome {
            sent: 6,
            found,
            detail: "SASL_PLAINTEXT/env=ok SASL_SSL/file=ok user=instanceId#user".into(),
        }
    })
    .await;
}

/// TLS without SASL: with the test CA the bridge publishes; without it
/// (the system's CAs) it stays running and not ready, and says why. The
/// two bridges run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_tls() {
    across_matrix("tls", false, |c| async move {
        let with_ca = async {
            let (bridge, topic) =
                secure_bridge(c, "compat-tls", Listener::Ssl, &[ca()], Source::Env).await;
            publish_through(&bridge, c, &topic).await
        };
        let without_ca = async {
            let (mut bridge, _) =
                secure_bridge(c, "compat-tls-noca", Listener::Ssl, &[], Source::Env).await;
            refused(&mut bridge, &["certificate verify failed"]).await
        };
        let (found, why) = tokio::join!(with_ca, without_ca);
        Outcome {
            sent: 3,
            found,
            detail: format!("with_ca=ok without_ca=not_ready ({why})"),
        }
    })
    .await;
}

/// Waits until the bridge has logged a line containing one of `clues`,
/// then checks that it is not ready and still running 10 s later (no crash
/// loop); returns the line's message.
async fn refused(bridge: &mut Bridge, clues: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let logs = bridge.log_text();
        if let Some(l) = logs.lines().find(|l| {
            clues
                .iter()
                .any(|c| l.to_lowercase().contains(&c.to_lowercase()))
        }) {
            break l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line says {clues:?} within 30 s:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        bridge.running(),
        "the bridge exited:\n{}",
        bridge.log_text()
    );
    let (status, body) = get(&format!("{}/readyz", bridge.admin)).await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&line).unwrap_or_default();
    let why: Vec<&str> = ["message", "error", "reason"]
        .iter()
        .filter_map(|k| v[*k].as_str())
        .collect();
    let text = if why.is_empty() { line } else { why.join(" ") };
    text.chars().take(200).collect()
}

/// A wrong password (PLAIN over plaintext, SCRAM over TLS, side by side):
/// the bridge keeps running, is not ready, logs why, and never prints the
/// password it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_wrong_password() {
    across_matrix("wrong_password", false, |c| async move {
        let wrong = "wrong-pw-Hx81Lq2z";
        let mut scram = sasl("SCRAM-SHA-512", kafka::SCRAM_USER, wrong);
        scram.push(ca());
        let plain = sasl("PLAIN", kafka::PLAIN_USER, wrong);
        let one = |listener: Listener, props: Vec<(&'static str, String)>| async move {
            let (mut bridge, topic) =
                secure_bridge(c, "compat-wrongpw", listener, &props, Source::Env).await;
            let why = refused(
                &mut bridge,
                &["authentication failed", "sasl authentication error"],
            )
            .await;
            assert_no_secret(&bridge, &[wrong]).await;
            assert_eq!(count_records_on(&c.bootstrap(), &topic).await, 0);
            format!("{}: {why}", listener.protocol())
        };
        let (a, b) = tokio::join!(
            one(Listener::SaslPlaintext, plain),
            one(Listener::SaslSsl, scram)
        );
        Outcome {
            sent: 0,
            found: 0,
            detail: format!("running=yes ready=no said=[{a}; {b}]"),
        }
    })
    .await;
}

/// A user with topic ACLs only (Write, Describe), as a managed Kafka that
/// grants per-topic rights may hand out: no `IdempotentWrite` on the
/// cluster. Kafka 2.8 and later (KIP-679: Write on a topic implies
/// IdempotentWrite) let such a user's idempotent producer write, and the
/// bridge must publish. Older brokers refuse the
/// producer id: then the bridge must name the cause in its log, keep
/// running, and lose nothing it acknowledged (the records wait in the
/// spool). Whether it stays ready meanwhile is printed, not asserted
/// (docs/kafka.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_topic_acls_without_idempotent_write() {
    across_matrix("topic_acls_only", false, |c| async move {
        let props = sasl("PLAIN", kafka::ACL_USER, kafka::ACL_PASSWORD);
        let (mut bridge, topic) =
            secure_bridge(c, "compat-acl", Listener::SaslPlaintext, &props, Source::Env).await;
        let admin = bridge.admin.clone();
        // Ready means the topics' metadata was read: the user can describe them.
        assert_eventually!(
            get(&format!("{admin}/readyz")).await.0 == 200,
            Duration::from_secs(30),
            "never ready: {}",
            bridge.log_text()
        );
        let base = bridge.callback.trim_end_matches("/callback").to_owned();
        let n = 3;
        for i in 0..n {
            let body = format!(
                r#"{{"CallbackCommand":"OfficialAccount.CallbackAfterOfficialAccountFull","Official_Account":"@TOA#_acl","EventTime":{}}}"#,
                1_732_770_000_000_u64 + i
            );
            let command = "OfficialAccount.CallbackAfterOfficialAccountFull";
            let r = post(&signed_url(&base, command, now_secs()), body.into_bytes()).await;
            assert_eq!(r.status, 200, "{r:?}");
        }
        let version: Vec<u32> = c
            .version()
            .split('.')
            .map(|p| p.parse().expect("a numeric version"))
            .collect();
        if version[..2] >= [2, 8][..] {
            let found = read(c, &topic, n as usize).await.len();
            assert_eq!(found, n as usize, "Kafka >= 2.8 needs no IdempotentWrite");
            assert_no_secret(&bridge, &[kafka::ACL_PASSWORD]).await;
            Outcome {
                sent: n as usize,
                found,
                detail: "publishes=yes (Write on the topics is enough)".into(),
            }
        } else {
            let clue = "cluster authorization failed";
            assert_eventually!(
                bridge.log_text().to_lowercase().contains(clue),
                Duration::from_secs(30),
                "no log line says {clue:?}:\n{}",
                bridge.log_text()
            );
            let line = bridge
                .log_text()
                .lines()
                .find(|l| l.to_lowercase().contains(clue))
                .map(str::to_owned)
                .unwrap_or_default();
            assert!(line.contains("idempotence"), "the cause is named: {line}");
            assert_eventually!(
                crate::harness::metric(&admin, "chat_bridge_spool_events").await == n as f64,
                Duration::from_secs(15),
                "every acknowledged callback waits in the spool"
            );
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(bridge.running(), "the bridge exited:\n{}", bridge.log_text());
            let found = count_records_on(&c.bootstrap(), &topic).await;
            assert_eq!(found, 0);
            // Not ready, and says so: nothing it acknowledges now can be
            // delivered until a restart with the fix.
            assert_eventually!(
                get(&format!("{admin}/readyz")).await.0 == 503,
                Duration::from_secs(15),
                "ready despite the fatal error"
            );
            assert_eq!(
                crate::harness::metric(&admin, "chat_bridge_kafka_fatal_error").await,
                1.0,
                "{}",
                bridge.log_text()
            );
            let ready = get(&format!("{admin}/readyz")).await.0 == 200;
            assert_no_secret(&bridge, &[kafka::ACL_PASSWORD]).await;
            Outcome {
                sent: n as usize,
                found,
                detail: format!(
                    "publishes=no fatal=ClusterAuthorizationFailed(InitProducerId) spooled={n} ready_meanwhile={}",
                    if ready { "yes" } else { "no" }
                ),
            }
        }
    })
    .await;
}
