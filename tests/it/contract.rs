//! The consumer contract, checked from outside the bridge's own code:
//!
//! - every event validates against `deploy/schemas/event-v1.schema.json`
//!   (with the `jsonschema` crate here and in `publish.rs`, and with Python's
//!   `jsonschema` behind a `confluent-kafka` consumer);
//! - `deploy/asyncapi.yaml` parses, its `$ref`s resolve, and its topics and
//!   headers are the ones the bridge writes;
//! - Apache `kafka-clients` (Java's default partitioner) puts each key on the
//!   partition the bridge used: the promise "partitioned by account" makes.
//!
//! The Python packages (`tests/contract/requirements.txt`, from PyPI) go into a
//! virtualenv and the Java client (`tests/contract/java/pom.xml`, from Maven
//! Central) into a directory, both under `target/tmp`, once per content of
//! those files. If they cannot be installed the tests fail and say why.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    PARTITIONS, Record, TestBridge, bootstrap, consume, create_topic, fixture, fixture_names,
    now_secs, post, signed_url, unique,
};
use crate::kafka::resolve_maven;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const SCHEMA_PATH: &str = "deploy/schemas/event-v1.schema.json";
const REQUIREMENTS: &str = include_str!("../contract/requirements.txt");
const JAVA_POM: &str = include_str!("../contract/java/pom.xml");
const JAVA_SOURCE: &str = include_str!("../contract/java/SameKeyPartitions.java");

/// The library's own schema check, the same file its unit tests use.
#[path = "../../src/event/schema_check.rs"]
mod schema_check;
pub use schema_check::assert_valid as assert_schema_valid;

fn digest(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The virtualenv's `python`, created and filled from PyPI on first use.
fn python() -> PathBuf {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let py = PY.get_or_init(|| {
        let dir = PathBuf::from(TMP).join(format!("py-contract-{:016x}", digest(REQUIREMENTS)));
        let python = dir.join("bin/python");
        if dir.join(".complete").exists() {
            return Ok(python);
        }
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "[it] installing tests/contract/requirements.txt into {} ...",
            dir.display()
        );
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&dir),
            "python3 -m venv (needs python3 with the venv module; Debian: python3-venv)",
        )?;
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(Path::new(MANIFEST_DIR).join("tests/contract/requirements.txt")),
            "pip install -r tests/contract/requirements.txt (from PyPI)",
        )?;
        std::fs::write(dir.join(".complete"), "").map_err(|e| e.to_string())?;
        Ok(python)
    });
    match py {
        Ok(p) => p.clone(),
        Err(e) => panic!(
            "The cross-language contract tests need a Python virtualenv with \
             confluent-kafka and jsonschema, and it could not be made:\n{e}"
        ),
    }
}

/// Runs a script of `tests/contract/` in the virtualenv; its stdout as JSON.
fn python_script(script: &str, args: &[&str]) -> Value {
    let out = run(
        Command::new(python())
            .arg(Path::new(MANIFEST_DIR).join("tests/contract").join(script))
            .args(args),
        script,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {out}"))
}

/// `-cp` for `SameKeyPartitions`: kafka-clients from Maven, the class compiled by javac.
/// Reads `expected` records of `topic` with `consume_validate.py` (a
/// confluent-kafka consumer group, Python's jsonschema) and returns what it
/// printed for each.
async fn python_consume_validate(topic: &str, expected: usize) -> Vec<Value> {
    let topic = topic.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let schema = Path::new(MANIFEST_DIR).join(SCHEMA_PATH);
        python_script(
            "consume_validate.py",
            &[
                bootstrap(),
                &topic,
                &expected.to_string(),
                schema.to_str().expect("utf-8 path"),
                "60",
            ],
        )
    })
    .await
    .expect("python thread");
    let py = out["records"].as_array().expect("records").clone();
    assert_eq!(py.len(), expected, "Python read {} of {expected}", py.len());
    py
}

fn java_classpath() -> String {
    static CP: OnceLock<Result<String, String>> = OnceLock::new();
    let cp = CP.get_or_init(|| {
        let jars = resolve_maven("tests/contract/java/pom.xml", JAVA_POM, "java-clients")?;
        let classes = PathBuf::from(TMP).join(format!(
            "java-classes-{:016x}",
            digest(&format!("{JAVA_POM}{JAVA_SOURCE}"))
        ));
        let cp = format!("{}/*:{}", jars.display(), classes.display());
        if !classes.join("SameKeyPartitions.class").exists() {
            run(
                Command::new("javac")
                    .args(["-d"])
                    .arg(&classes)
                    .args(["-cp", &cp])
                    .arg(
                        Path::new(MANIFEST_DIR).join("tests/contract/java/SameKeyPartitions.java"),
                    ),
                "javac (needs a JDK 17+; Debian: openjdk-17-jdk-headless)",
            )?;
        }
        Ok(cp)
    });
    match cp {
        Ok(cp) => cp.clone(),
        Err(e) => panic!("The Java partitioning check could not be set up:\n{e}"),
    }
}

/// Account ids for keys: ASCII, `#`/`@`, spaces and non-ASCII (UTF-8 bytes
/// are what both partitioners hash).
fn accounts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("@TOA#acct_{i}"),
            1 => format!("公众号-{i}"),
            2 => format!("user with spaces {i}"),
            _ => format!("emoji-🙂-{i}"),
        })
        .collect()
}

/// Sends every Official Account fixture plus one `full` callback per account;
/// returns how many events that makes.
async fn send_events(bridge: &TestBridge, accounts: &[String]) -> usize {
    let mut n = 0;
    for name in fixture_names()
        .into_iter()
        .filter(|n| n.starts_with("OfficialAccount."))
    {
        let r = bridge.send(&fixture(&name)).await;
        assert_eq!(r.status, 200, "{name}: {r:?}");
        n += 1;
    }
    for (i, account) in accounts.iter().enumerate() {
        let body = json!({
            "CallbackCommand": "OfficialAccount.CallbackAfterOfficialAccountFull",
            "Official_Account": account,
            "EventTime": 1_732_770_100_000_u64 + i as u64,
        });
        let r = bridge.send(body.to_string().as_bytes()).await;
        assert_eq!(r.status, 200, "{account}: {r:?}");
        n += 1;
    }
    n
}

fn header_names(records: &[Record]) -> Vec<BTreeSet<String>> {
    records
        .iter()
        .map(|r| r.headers.keys().cloned().collect())
        .collect()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// A Python consumer (confluent-kafka, in a consumer group) reads every event
/// the bridge wrote and validates it against the JSON Schema with Python's
/// `jsonschema`; the AsyncAPI document describes the topics and headers the
/// bridge really writes, events and dead letters alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_consumer_reads_and_validates_every_event() {
    let bridge = TestBridge::start(&[]).await;
    let expected = send_events(&bridge, &accounts(12)).await;
    // One dead letter: an authentic callback whose body is not an object.
    let r = post(
        &signed_url(
            &bridge.base,
            "OfficialAccount.CallbackAfterOfficialAccountFull",
            now_secs(),
        ),
        b"[1,2]".to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    let records = consume(&bridge.topic, expected, Duration::from_secs(30)).await;
    assert_eq!(records.len(), expected);
    let dead = consume(&bridge.dlq, 1, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1);

    let py = python_consume_validate(&bridge.topic, expected).await;
    let mut py_ids = HashSet::new();
    for r in py {
        assert_eq!(r["errors"], json!([]), "Python's jsonschema rejected {r}");
        assert_eq!(r["ce_id"], r["id"], "{r}");
        py_ids.insert(r["id"].as_str().expect("id").to_owned());
    }
    let rust_ids: HashSet<String> = records
        .iter()
        .map(|r| r.json()["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(py_ids, rust_ids, "Python and Rust read the same events");
    for r in &records {
        assert_schema_valid(&r.json(), "event read back");
    }

    // The AsyncAPI document: parses, resolves, and says what is on the wire.
    let doc = tokio::task::spawn_blocking(|| {
        let path = Path::new(MANIFEST_DIR).join("deploy/asyncapi.yaml");
        python_script("check_asyncapi.py", &[path.to_str().expect("utf-8 path")])
    })
    .await
    .expect("python thread");
    assert_eq!(doc["channels"]["events"], "official-account-events");
    assert_eq!(doc["channels"]["general"], "chat-callback-events");
    assert_eq!(
        doc["channels"]["deadLetters"],
        "official-account-events-dlq"
    );
    assert_eq!(
        doc["external_refs"],
        json!(["./schemas/event-v1.schema.json"])
    );
    let required = strings(&doc["event_headers"]);
    for (r, names) in records.iter().zip(header_names(&records)) {
        let optional: BTreeSet<String> = ["ce_subject".to_owned()].into();
        assert!(required.is_subset(&names), "{r:?} lacks documented headers");
        let undocumented: Vec<_> = names
            .difference(&required)
            .filter(|n| !optional.contains(*n))
            .collect();
        assert!(
            undocumented.is_empty(),
            "undocumented headers {undocumented:?}"
        );
    }
    let dl_required = strings(&doc["dead_letter_headers"]);
    let dl_names = &header_names(&dead)[0];
    assert!(dl_required.is_subset(dl_names), "{dead:?}");
    assert!(
        strings(&doc["dead_letter_reasons"]).contains(&dead[0].headers["bridge_reason"]),
        "{dead:?}"
    );
    bridge.stop().await;
}

/// The `callback` events of other families (group, status, the items of a
/// push batch, an unknown command) validate in Python too, on the general topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_consumer_validates_the_callback_events_of_other_families() {
    let bridge = TestBridge::start(&[]).await;
    let mut expected = bridge.send_other_families().await;
    let r = post(
        &signed_url(&bridge.base, "Brand.NewThing", now_secs()),
        br#"{"CallbackCommand":"Brand.NewThing","From_Account":"u1","N":1e400}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    expected += 1;
    let py = python_consume_validate(&bridge.general, expected).await;
    for r in py {
        assert_eq!(r["errors"], json!([]), "Python's jsonschema rejected {r}");
        assert_eq!(r["type"], "callback", "{r}");
    }
}

/// Apache kafka-clients, sending records with the bridge's keys to a topic of
/// the same partition count, puts every key on the partition the bridge did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_producer_puts_each_key_on_the_bridges_partition() {
    let bridge = TestBridge::start(&[]).await;
    let expected = send_events(&bridge, &accounts(40)).await;
    let records = consume(&bridge.topic, expected, Duration::from_secs(30)).await;
    assert_eq!(records.len(), expected);
    let mut bridge_partition = BTreeMap::new();
    for r in &records {
        let key = r.key.clone().expect("every test event has a key");
        let previous = bridge_partition.insert(key.clone(), r.partition);
        assert!(
            previous.is_none_or(|p| p == r.partition),
            "{key} on two partitions"
        );
    }
    let used: BTreeSet<i32> = bridge_partition.values().copied().collect();
    assert!(used.len() > 1, "keys spread over partitions: {used:?}");

    let keys: Vec<String> = bridge_partition.keys().cloned().collect();
    let java_partition = java_partitions(&keys).await;
    assert_eq!(java_partition.len(), bridge_partition.len());
    assert_eq!(
        java_partition, bridge_partition,
        "Java's default partitioner ({PARTITIONS} partitions) disagrees with the bridge"
    );
    bridge.stop().await;
}

/// The partition Apache kafka-clients (Java's default partitioner) puts
/// each of `keys` on, producing to a topic of [`PARTITIONS`] partitions.
pub async fn java_partitions(keys: &[String]) -> BTreeMap<String, i32> {
    let java_topic = unique("java");
    create_topic(&java_topic).await;
    let keys_file = PathBuf::from(TMP).join(format!("{java_topic}.keys"));
    std::fs::write(&keys_file, keys.join("\n") + "\n").expect("write keys");
    let out = tokio::task::spawn_blocking(move || {
        run(
            Command::new("java")
                .args(["-Xmx256m", "-XX:+UseSerialGC", "-cp", &java_classpath()])
                .arg("SameKeyPartitions")
                .arg(bootstrap())
                .arg(&java_topic)
                .arg(&keys_file),
            "java SameKeyPartitions",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    })
    .await
    .expect("java thread");
    out.lines()
        .map(|l| {
            let (p, k) = l.split_once('\t').expect("partition TAB key");
            (k.to_owned(), p.parse().expect("partition"))
        })
        .collect()
}
