//! A real Apache Kafka broker for the tests: one KRaft node on 127.0.0.1,
//! started from the jars Maven resolves (`tests/kafka/pom.xml`), shared by
//! every test in this binary and stopped when the binary exits.
//!
//! `BRIDGE_TEST_KAFKA_BROKERS=host:port` uses an external broker instead.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

const POM: &str = include_str!("../kafka/pom.xml");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");
/// How long the broker may take to answer metadata after start.
const START_TIMEOUT: Duration = Duration::from_secs(120);

const HOW_TO: &str = "The integration tests need Java 17+ and Maven on PATH (they start Apache Kafka \
from jars Maven resolves; see tests/kafka/pom.xml), or an external broker named by \
BRIDGE_TEST_KAFKA_BROKERS=host:port. `bash .ci/run` installs everything.";

static BROKER: OnceLock<Result<String, String>> = OnceLock::new();

/// `bootstrap.servers` of the shared broker, starting it on first use.
/// Panics with instructions if no broker can be had: tests never skip.
pub fn bootstrap() -> &'static str {
    match BROKER.get_or_init(start) {
        Ok(b) => b,
        Err(e) => panic!("No Kafka broker for the tests: {e}\n{HOW_TO}"),
    }
}

fn start() -> Result<String, String> {
    if let Ok(external) = std::env::var("BRIDGE_TEST_KAFKA_BROKERS") {
        wait_for_metadata(&external, START_TIMEOUT, || Ok(()))
            .map_err(|e| format!("BRIDGE_TEST_KAFKA_BROKERS={external} did not answer: {e}"))?;
        eprintln!("[it] using external Kafka at {external}");
        return Ok(external);
    }
    let began = Instant::now();
    let libs = resolve_jars()?;
    let run_dir = PathBuf::from(TMP).join(format!("kafka-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(run_dir.join("data"))
        .map_err(|e| format!("creating {run_dir:?}: {e}"))?;
    let port = free_port()?;
    let controller_port = free_port()?;
    let props = run_dir.join("server.properties");
    std::fs::write(
        &props,
        format!(
            "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
            data = run_dir.join("data").display()
        ),
    )
    .map_err(|e| format!("writing {props:?}: {e}"))?;

    let classpath = format!("{}/*", libs.display());
    let log4j = format!("-Dlog4j2.configurationFile={MANIFEST_DIR}/tests/kafka/log4j2.properties");
    let java_opts = ["-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"];
    // A fixed, valid cluster id: each run formats a fresh directory.
    let format = Command::new("java")
        .args(java_opts)
        .arg(&log4j)
        .args(["-cp", &classpath, "kafka.tools.StorageTool", "format"])
        .args(["-t", "Y2hhdC1rYWZrYS1icmlkZw", "-c"])
        .arg(&props)
        .output()
        .map_err(|e| format!("running java: {e}"))?;
    if !format.status.success() {
        return Err(format!(
            "formatting the KRaft log dir failed: {}{}",
            String::from_utf8_lossy(&format.stdout),
            String::from_utf8_lossy(&format.stderr)
        ));
    }

    // The broker runs under a watchdog shell that stops it (and removes its
    // data) as soon as this test process is gone, however it ends.
    let log = run_dir.join("broker.log");
    let watchdog = format!(
        r#"java {opts} '{log4j}' -cp '{classpath}' kafka.Kafka '{props}' > '{log}' 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null' TERM INT
while kill -0 {parent} 2>/dev/null && kill -0 $broker 2>/dev/null; do sleep 0.5; done
kill $broker 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 $broker 2>/dev/null || break; sleep 0.5; done
kill -9 $broker 2>/dev/null
wait $broker 2>/dev/null
case "{run_dir}" in */kafka-run-*) rm -rf '{run_dir}';; esac
"#,
        opts = java_opts.join(" "),
        props = props.display(),
        log = log.display(),
        parent = std::process::id(),
        run_dir = run_dir.display(),
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(watchdog)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the broker: {e}"))?;
    let bootstrap = format!("127.0.0.1:{port}");
    wait_for_metadata(&bootstrap, START_TIMEOUT, || match child.try_wait() {
        Ok(Some(status)) => Err(format!("the broker exited ({status})")),
        _ => Ok(()),
    })
    .map_err(|e| {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: String = tail
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "Kafka at {bootstrap} did not start: {e}\n--- {} (tail) ---\n{tail}",
            log.display()
        )
    })?;
    eprintln!(
        "[it] Kafka started at {bootstrap} in {:.1}s (log: {})",
        began.elapsed().as_secs_f64(),
        log.display()
    );
    // The watchdog owns the broker from here on.
    std::mem::forget(child);
    Ok(bootstrap)
}

/// Resolves the broker's runtime classpath once per pom.xml content.
fn resolve_jars() -> Result<PathBuf, String> {
    let digest = POM.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let libs = PathBuf::from(TMP).join(format!("kafka-libs-{digest:016x}"));
    if libs.join(".complete").exists() {
        return Ok(libs);
    }
    let partial = libs.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let began = Instant::now();
    eprintln!(
        "[it] resolving Kafka jars with Maven into {} ...",
        libs.display()
    );
    let out = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(Path::new(MANIFEST_DIR).join("tests/kafka/pom.xml"))
        .args(["dependency:copy-dependencies", "-DincludeScope=runtime"])
        .arg(format!("-DoutputDirectory={}", partial.display()))
        .output()
        .map_err(|e| format!("running mvn: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mvn could not resolve the Kafka jars: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(partial.join(".complete"), "").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&libs);
    std::fs::rename(&partial, &libs).map_err(|e| format!("moving jars into place: {e}"))?;
    eprintln!(
        "[it] Kafka jars resolved in {:.1}s",
        began.elapsed().as_secs_f64()
    );
    Ok(libs)
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Waits until `bootstrap` answers a metadata request with at least one broker.
fn wait_for_metadata(
    bootstrap: &str,
    timeout: Duration,
    mut still_alive: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "0")
        .create()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        still_alive()?;
        match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(md) if !md.brokers().is_empty() => return Ok(()),
            Ok(_) => last = "metadata lists no brokers".into(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("no metadata within {timeout:?}: {last}"))
}
