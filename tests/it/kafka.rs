//! Real Apache Kafka for the tests: KRaft nodes on 127.0.0.1, started from
//! the jars Maven resolves (`tests/kafka/pom.xml`).
//!
//! - [`bootstrap`]: one shared single-node broker for every test in this
//!   binary, stopped when the binary exits. `BRIDGE_TEST_KAFKA_BROKERS`
//!   names an external broker instead.
//! - [`Cluster`]: a dedicated cluster of 1 or 3 nodes that a fault test may
//!   kill (`kill -9`), stall (`kill -STOP`) and restart.
//!
//! The load benchmark (`benches/load`) includes this file too (`#[path]`),
//! so there is one broker launcher.

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
/// How long a cluster may take to answer metadata after start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const JAVA_OPTS: [&str; 3] = ["-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"];
/// A fixed, valid cluster id (base64 of 16 bytes): each run formats fresh dirs.
const CLUSTER_ID: &str = "Y2hhdC1rYWZrYS1icmlkZw";

const HOW_TO: &str = "The integration tests need Java 17+ and Maven on PATH (they start Apache Kafka \
from jars Maven resolves; see tests/kafka/pom.xml), or an external broker named by \
BRIDGE_TEST_KAFKA_BROKERS=host:port. `bash .ci/run` installs everything.";

static SHARED: OnceLock<Result<(String, Option<Cluster>), String>> = OnceLock::new();

/// `bootstrap.servers` of the shared broker, starting it on first use.
/// Panics with instructions if no broker can be had: tests never skip.
pub fn bootstrap() -> &'static str {
    let shared = SHARED.get_or_init(|| {
        if let Ok(external) = std::env::var("BRIDGE_TEST_KAFKA_BROKERS") {
            wait_for_metadata(&external, 1, START_TIMEOUT, || Ok(()))
                .map_err(|e| format!("BRIDGE_TEST_KAFKA_BROKERS={external} did not answer: {e}"))?;
            eprintln!("[it] using external Kafka at {external}");
            return Ok((external, None));
        }
        let cluster = Cluster::start(1)?;
        Ok((cluster.bootstrap(), Some(cluster)))
    });
    match shared {
        Ok((b, _)) => b,
        Err(e) => panic!("No Kafka broker for the tests: {e}\n{HOW_TO}"),
    }
}

/// One KRaft node (broker + controller) of a [`Cluster`].
struct Node {
    dir: PathBuf,
    port: u16,
}

/// A dedicated Kafka cluster on loopback. Dropping it kills its nodes and
/// removes their data.
pub struct Cluster {
    nodes: Vec<Node>,
    classpath: String,
}

impl Cluster {
    /// Formats and starts `n` nodes (1 or 3) and waits until all answer.
    pub fn start(n: usize) -> Result<Cluster, String> {
        let began = Instant::now();
        let libs = resolve_jars()?;
        let classpath = format!("{}/*", libs.display());
        static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = PathBuf::from(TMP).join(format!("kafka-run-{}-{run}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_, String>>()?;
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let rf = if n >= 3 { 3 } else { 1 };
        let min_isr = if n >= 3 { 2 } else { 1 };
        let mut nodes = Vec::new();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let dir = base.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(dir.join("data"))
                .map_err(|e| format!("creating {dir:?}: {e}"))?;
            std::fs::write(
                dir.join("server.properties"),
                format!(
                    "process.roles=broker,controller
node.id={id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
default.replication.factor={rf}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
",
                    id = i + 1,
                    data = dir.join("data").display()
                ),
            )
            .map_err(|e| format!("writing properties: {e}"))?;
            nodes.push(Node { dir, port: *port });
        }
        let cluster = Cluster { nodes, classpath };
        // Format all nodes in parallel (one JVM each).
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = cluster
                .nodes
                .iter()
                .map(|node| s.spawn(|| cluster.format(node)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("format thread panicked".into()))
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>, String>>()?;
        for i in 0..n {
            cluster.launch(i)?;
        }
        cluster.wait_ready(START_TIMEOUT)?;
        eprintln!(
            "[it] Kafka ({n} node{}) started at {} in {:.1}s (logs: {})",
            if n == 1 { "" } else { "s" },
            cluster.bootstrap(),
            began.elapsed().as_secs_f64(),
            base.display()
        );
        Ok(cluster)
    }

    /// `bootstrap.servers` listing every node.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn format(&self, node: &Node) -> Result<(), String> {
        let out = Command::new("java")
            .args(JAVA_OPTS)
            .arg(log4j())
            .args(["-cp", &self.classpath, "kafka.tools.StorageTool", "format"])
            .args(["-t", CLUSTER_ID, "-c"])
            .arg(node.dir.join("server.properties"))
            .output()
            .map_err(|e| format!("running java: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "formatting the KRaft log dir failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Starts node `i` (0-based) under a watchdog shell. The watchdog kills the
    /// broker and removes its data when this test process is gone, however
    /// it ends; if the broker dies first (a test killed it), it leaves the data
    /// for a restart.
    fn launch(&self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let script = format!(
            r#"java {opts} '{log4j}' -cp '{cp}' kafka.Kafka '{props}' >> '{log}' 2>&1 &
broker=$!
echo $broker > '{pidfile}'
trap 'kill $broker 2>/dev/null' TERM INT
while kill -0 {parent} 2>/dev/null && kill -0 $broker 2>/dev/null; do sleep 0.5; done
kill -0 {parent} 2>/dev/null && exit 0
kill $broker 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 $broker 2>/dev/null || break; sleep 0.5; done
kill -9 $broker 2>/dev/null
wait $broker 2>/dev/null
case '{dir}' in */kafka-run-*) rm -rf '{dir}';; esac
"#,
            opts = JAVA_OPTS.join(" "),
            log4j = log4j(),
            cp = self.classpath,
            props = node.dir.join("server.properties").display(),
            log = node.dir.join("broker.log").display(),
            pidfile = node.dir.join("broker.pid").display(),
            parent = std::process::id(),
            dir = node.dir.display(),
        );
        let _ = std::fs::remove_file(node.dir.join("broker.pid"));
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the broker: {e}"))?;
        // The watchdog is reaped by init once this process exits; it must
        // outlive the Child handle, so the handle is dropped without wait().
        drop(child);
        Ok(())
    }

    fn pid(&self, i: usize) -> Option<u32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = std::fs::read_to_string(self.nodes[i].dir.join("broker.pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return Some(pid);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (`-9`, `-STOP`, `-CONT`) to node `i`'s JVM.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.pid(i).expect("broker pid file");
        let ok = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {signal} {pid} failed");
        if signal == "-9" {
            // Wait until the JVM is really gone (its port closes).
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.nodes[i].port)).is_ok()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts node `i` again on the same ports and data.
    pub fn restart(&self, i: usize) {
        self.launch(i).expect("restart the broker");
    }

    /// Waits until every node answers metadata listing all nodes.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        wait_for_metadata(&self.bootstrap(), self.nodes.len(), timeout, || Ok(())).map_err(|e| {
            let logs: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    let log = n.dir.join("broker.log");
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    format!(
                        "--- {} (tail) ---\n{}",
                        log.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            format!(
                "Kafka at {} did not start: {e}\n{}",
                self.bootstrap(),
                logs.join("\n")
            )
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if let Ok(pid) = std::fs::read_to_string(self.nodes[i].dir.join("broker.pid")) {
                // Already gone if a test killed it: nothing to say then.
                let _ = Command::new("kill")
                    .args(["-9", pid.trim()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        for n in &self.nodes {
            let _ = std::fs::remove_dir_all(&n.dir);
        }
    }
}

fn log4j() -> String {
    format!("-Dlog4j2.configurationFile={MANIFEST_DIR}/tests/kafka/log4j2.properties")
}

/// Resolves the broker's runtime classpath once per pom.xml content.
fn resolve_jars() -> Result<PathBuf, String> {
    static LIBS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LIBS.get_or_init(|| resolve_maven("tests/kafka/pom.xml", POM, "kafka-libs"))
        .clone()
}

/// Copies the runtime dependencies of the pom at `pom` (relative to the
/// crate, with content `pom_text`) into `target/tmp/<name>-<digest>` with
/// Maven, once per pom content, and returns that directory.
pub fn resolve_maven(pom: &str, pom_text: &str, name: &str) -> Result<PathBuf, String> {
    let digest = pom_text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let libs = PathBuf::from(TMP).join(format!("{name}-{digest:016x}"));
    if libs.join(".complete").exists() {
        return Ok(libs);
    }
    let partial = libs.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let began = Instant::now();
    eprintln!(
        "[it] resolving {pom} with Maven into {} ...",
        libs.display()
    );
    let out = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(Path::new(MANIFEST_DIR).join(pom))
        .args(["dependency:copy-dependencies", "-DincludeScope=runtime"])
        .arg(format!("-DoutputDirectory={}", partial.display()))
        .output()
        .map_err(|e| format!("running mvn: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mvn could not resolve the jars of {pom}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(partial.join(".complete"), "").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&libs);
    std::fs::rename(&partial, &libs).map_err(|e| format!("moving jars into place: {e}"))?;
    eprintln!(
        "[it] {pom} resolved in {:.1}s",
        began.elapsed().as_secs_f64()
    );
    Ok(libs)
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Waits until `bootstrap` answers a metadata request listing `brokers` brokers.
fn wait_for_metadata(
    bootstrap: &str,
    brokers: usize,
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
            Ok(md) if md.brokers().len() >= brokers => return Ok(()),
            Ok(md) => last = format!("metadata lists {} of {brokers} brokers", md.brokers().len()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("no metadata within {timeout:?}: {last}"))
}
