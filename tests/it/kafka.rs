//! Real Apache Kafka for the tests: brokers on 127.0.0.1, started from the
//! jars Maven resolves (`tests/kafka/pom.xml` for 4.x, `tests/kafka/reload4j/pom.xml`
//! for the older versions), on the `java` found on PATH.
//!
//! - [`bootstrap`]: one shared single-node 4.1 KRaft broker for every test in
//!   this binary, stopped when the binary exits. `BRIDGE_TEST_KAFKA_BROKERS`
//!   names an external broker instead.
//! - [`Cluster`]: a dedicated cluster that a test may kill (`kill -9`), stall
//!   (`kill -STOP`) and restart. [`Cluster::start`] makes 1 or 3 nodes of the
//!   default version; [`Cluster::start_spec`] one node of any version of the
//!   compatibility matrix ([`MATRIX`]: 2.4 to 3.2 with ZooKeeper, started
//!   from the same classpath, 3.9 and 4.x in KRaft mode), optionally with
//!   SASL/PLAIN, SASL/SCRAM-SHA-512 and TLS listeners besides the
//!   PLAINTEXT one the harness itself uses ([`Spec::secure`]).
//!
//! The load benchmark (`benches/load`) includes this file too (`#[path]`),
//! so there is one broker launcher.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

const POM: &str = include_str!("../kafka/pom.xml");
const RELOAD4J_POM: &str = include_str!("../kafka/reload4j/pom.xml");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");
/// How long a cluster may take to answer metadata after start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const JAVA_OPTS: [&str; 3] = ["-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"];
/// A fixed, valid cluster id (base64 of 16 bytes): each run formats fresh dirs.
const CLUSTER_ID: &str = "Y2hhdC1rYWZrYS1icmlkZw";
/// ZooKeeper session timeout of the ZooKeeper-mode brokers. After a
/// `kill -9` the broker's registration lives this long, and a broker
/// restarted before it expires exits ("node already exists"), so
/// [`Cluster::restart`] waits it out.
const ZK_SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// The version of the shared broker and of [`Cluster::start`].
pub const DEFAULT_VERSION: &str = "4.1.1";
/// The broker versions of the compatibility matrix (`tests/it/compat.rs`):
/// the instance versions Tencent's CKafka sells (2.4.1; 2.8.x, whose last
/// Apache release is 2.8.2; 3.2.3) with ZooKeeper, the last 3.x in KRaft
/// mode, and the default.
pub const MATRIX: [&str; 5] = ["2.4.1", "2.8.2", "3.2.3", "3.9.1", DEFAULT_VERSION];

/// Test credentials of a secure broker ([`Spec::secure`]). Distinctive
/// strings, so that a test can look for them in logs and metrics.
pub const PLAIN_USER: &str = "bridge-plain";
/// See [`PLAIN_USER`].
pub const PLAIN_PASSWORD: &str = "plain-pw-Q7z1xR9k";
/// A SCRAM user named like CKafka's users, `instanceId#user`. (A `#` cannot
/// appear in a PLAIN user of the broker's own JAAS file format, which the
/// JAAS parser rejects, so PLAIN uses a plain name.)
pub const SCRAM_USER: &str = "ckafka-7a1b2c3d#bridge";
/// See [`SCRAM_USER`].
pub const SCRAM_PASSWORD: &str = "scram-pw-Vb38Kd2m";
/// A PLAIN user allowed only to write and describe topics, without the
/// cluster's `IdempotentWrite` (the ACLs of a managed Kafka that grants
/// topic rights only); every other user of a secure broker is a super user.
pub const ACL_USER: &str = "bridge-topics-only";
/// See [`ACL_USER`].
pub const ACL_PASSWORD: &str = "acl-pw-Lm4pW9sT";
const KEYSTORE_PASSWORD: &str = "test-keystore";

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

/// How a broker keeps its metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In ZooKeeper (Kafka up to 3.x), started by the harness from the same
    /// classpath.
    ZooKeeper,
    /// In its own Raft quorum (combined broker + controller nodes).
    KRaft,
}

impl Mode {
    /// `ZooKeeper` or `KRaft`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ZooKeeper => "ZooKeeper",
            Mode::KRaft => "KRaft",
        }
    }
}

/// Which logging binding (and so which pom) a version needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Logging {
    /// Kafka 4.x: log4j 2.
    Log4j2,
    /// Kafka up to 3.9: log4j 1, as reload4j.
    Reload4j,
}

/// How the harness starts `version`: 2.4 to 3.8 with ZooKeeper (the mode
/// CKafka's instance versions run in), 3.9 and 4.x in KRaft mode.
fn flavour(version: &str) -> Result<(Mode, Logging), String> {
    let mut parts = version.split('.').map(str::parse::<u32>);
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        return Err(format!("{version:?} is not a Kafka version like 3.2.3"));
    };
    match (major, minor) {
        (4.., _) => Ok((Mode::KRaft, Logging::Log4j2)),
        (3, 9..) => Ok((Mode::KRaft, Logging::Reload4j)),
        (3, _) | (2, 4..) => Ok((Mode::ZooKeeper, Logging::Reload4j)),
        _ => Err(format!(
            "Kafka {version}: the harness starts 2.4.0 and later (the first with kafka_2.13 jars)"
        )),
    }
}

/// What [`Cluster::start_spec`] starts.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Apache Kafka version, e.g. `2.4.1`.
    pub version: String,
    /// Number of nodes: 1 or 3 in KRaft mode, 1 with ZooKeeper.
    pub nodes: usize,
    /// Adds SASL_PLAINTEXT, SSL and SASL_SSL listeners: SASL mechanisms PLAIN
    /// ([`PLAIN_USER`], [`ACL_USER`]) and SCRAM-SHA-512 ([`SCRAM_USER`]), TLS
    /// with the test CA's certificate for 127.0.0.1 ([`ca_file`]), no client
    /// certificates; and an ACL authorizer, under which the PLAINTEXT
    /// listener's anonymous user, [`PLAIN_USER`] and [`SCRAM_USER`] are super
    /// users and [`ACL_USER`] may only write and describe topics.
    pub secure: bool,
}

/// A listener of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// No TLS, no authentication: what the harness's own clients use.
    Plaintext,
    /// SASL (PLAIN or SCRAM-SHA-512) without TLS.
    SaslPlaintext,
    /// TLS without SASL.
    Ssl,
    /// SASL (PLAIN or SCRAM-SHA-512) over TLS.
    SaslSsl,
}

impl Listener {
    /// librdkafka's `security.protocol` for this listener.
    pub fn protocol(self) -> &'static str {
        match self {
            Listener::Plaintext => "PLAINTEXT",
            Listener::SaslPlaintext => "SASL_PLAINTEXT",
            Listener::Ssl => "SSL",
            Listener::SaslSsl => "SASL_SSL",
        }
    }
}

/// The test CA that signed the brokers' TLS certificate (PEM), for
/// librdkafka's `ssl.ca.location`.
pub fn ca_file() -> PathBuf {
    Path::new(MANIFEST_DIR).join("tests/fixtures/tls/ca.pem")
}

/// The broker's TLS keystore: the test certificate for 127.0.0.1 and its key
/// from `tests/fixtures/tls`, as PKCS#12 (which every version reads; PEM
/// keystores need Kafka 2.7+), made once per test process with `openssl`.
fn keystore() -> Result<PathBuf, String> {
    static KS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    KS.get_or_init(|| {
        let tls = Path::new(MANIFEST_DIR).join("tests/fixtures/tls");
        let dir = PathBuf::from(TMP).join(format!("kafka-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {dir:?}: {e}"))?;
        let out = dir.join("broker.p12");
        let status = Command::new("openssl")
            .args(["pkcs12", "-export", "-name", "broker", "-in"])
            .arg(tls.join("cert.pem"))
            .arg("-inkey")
            .arg(tls.join("key.pem"))
            .arg("-certfile")
            .arg(tls.join("ca.pem"))
            .arg("-out")
            .arg(&out)
            .arg("-passout")
            .arg(format!("pass:{KEYSTORE_PASSWORD}"))
            .output()
            .map_err(|e| {
                format!(
                    "running openssl (the TLS listener's keystore needs it; Debian: openssl): {e}"
                )
            })?;
        if !status.status.success() {
            return Err(format!(
                "openssl pkcs12 -export failed: {}",
                String::from_utf8_lossy(&status.stderr)
            ));
        }
        Ok(out)
    })
    .clone()
}

/// One Kafka node of a [`Cluster`] (broker + controller in KRaft mode).
struct Node {
    dir: PathBuf,
    /// The PLAINTEXT listener.
    port: u16,
    /// SASL_PLAINTEXT, SSL and SASL_SSL, when the cluster is secure.
    secure: Option<[u16; 3]>,
    killed_at: Mutex<Option<Instant>>,
}

/// The ZooKeeper of a ZooKeeper-mode cluster.
struct Zk {
    dir: PathBuf,
    port: u16,
}

/// A dedicated Kafka cluster on loopback. Dropping it kills its processes and
/// removes their data.
pub struct Cluster {
    nodes: Vec<Node>,
    zk: Option<Zk>,
    classpath: String,
    logging: Logging,
    version: String,
    mode: Mode,
}

impl Cluster {
    /// Formats and starts `n` nodes (1 or 3) of [`DEFAULT_VERSION`] in KRaft
    /// mode and waits until all answer.
    pub fn start(n: usize) -> Result<Cluster, String> {
        Self::start_spec(&Spec {
            version: DEFAULT_VERSION.to_owned(),
            nodes: n,
            secure: false,
        })
    }

    /// Starts the cluster `spec` describes and waits until every node answers.
    pub fn start_spec(spec: &Spec) -> Result<Cluster, String> {
        let began = Instant::now();
        let (mode, logging) = flavour(&spec.version)?;
        let n = spec.nodes;
        if mode == Mode::ZooKeeper && n != 1 {
            return Err(format!(
                "Kafka {}: the harness starts ZooKeeper-mode clusters of one node only",
                spec.version
            ));
        }
        let libs = resolve_jars(&spec.version, logging)?;
        let classpath = format!("{}/*", libs.display());
        let keystore = if spec.secure { Some(keystore()?) } else { None };
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
        let zk = match mode {
            Mode::ZooKeeper => Some(Zk {
                dir: base.join("zookeeper"),
                port: free_port()?,
            }),
            Mode::KRaft => None,
        };
        let rf = if n >= 3 { 3 } else { 1 };
        let min_isr = if n >= 3 { 2 } else { 1 };
        let mut nodes = Vec::new();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let dir = base.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(dir.join("data"))
                .map_err(|e| format!("creating {dir:?}: {e}"))?;
            let secure = match keystore {
                Some(_) => Some([free_port()?, free_port()?, free_port()?]),
                None => None,
            };
            let mut listeners = vec![format!("PLAINTEXT://127.0.0.1:{port}")];
            if let Some([sp, s, ss]) = secure {
                listeners.extend([
                    format!("SASL_PLAINTEXT://127.0.0.1:{sp}"),
                    format!("SSL://127.0.0.1:{s}"),
                    format!("SASL_SSL://127.0.0.1:{ss}"),
                ]);
            }
            let advertised = listeners.join(",");
            let protocols =
                "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL";
            let mut props = match (&zk, mode) {
                (_, Mode::KRaft) => format!(
                    "process.roles=broker,controller
node.id={id}
controller.quorum.voters={voters}
listeners={advertised},CONTROLLER://127.0.0.1:{cport}
advertised.listeners={advertised}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,{protocols}
",
                    id = i + 1,
                ),
                (Some(zk), Mode::ZooKeeper) => format!(
                    "broker.id={id}
zookeeper.connect=127.0.0.1:{zk_port}
zookeeper.session.timeout.ms={session}
listeners={advertised}
advertised.listeners={advertised}
listener.security.protocol.map={protocols}
",
                    id = i + 1,
                    zk_port = zk.port,
                    session = ZK_SESSION_TIMEOUT.as_millis(),
                ),
                (None, Mode::ZooKeeper) => unreachable!("a ZooKeeper-mode cluster has a ZooKeeper"),
            };
            props.push_str(&format!(
                "inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
default.replication.factor={rf}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
",
                data = dir.join("data").display()
            ));
            if logging == Logging::Log4j2 {
                props.push_str(&format!(
                    "share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={min_isr}
"
                ));
            }
            if let Some(ks) = &keystore {
                // The JAAS configuration, inline per listener and mechanism
                // (no JAAS file). PLAIN users are listed here; SCRAM users
                // live in ZooKeeper or the KRaft metadata (added below).
                let plain = format!(
                    "org.apache.kafka.common.security.plain.PlainLoginModule required user_{PLAIN_USER}=\"{PLAIN_PASSWORD}\" user_{ACL_USER}=\"{ACL_PASSWORD}\";"
                );
                let authorizer = match mode {
                    Mode::ZooKeeper => "kafka.security.authorizer.AclAuthorizer",
                    Mode::KRaft => "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                };
                let scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
                props.push_str(&format!(
                    "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config={plain}
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram}
listener.name.sasl_ssl.plain.sasl.jaas.config={plain}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}
ssl.keystore.type=PKCS12
ssl.keystore.location={ks}
ssl.keystore.password={KEYSTORE_PASSWORD}
ssl.key.password={KEYSTORE_PASSWORD}
ssl.client.auth=none
authorizer.class.name={authorizer}
super.users=User:ANONYMOUS;User:{PLAIN_USER};User:{SCRAM_USER}
allow.everyone.if.no.acl.found=false
",
                    ks = ks.display()
                ));
            }
            std::fs::write(dir.join("server.properties"), props)
                .map_err(|e| format!("writing properties: {e}"))?;
            nodes.push(Node {
                dir,
                port: *port,
                secure,
                killed_at: Mutex::new(None),
            });
        }
        let cluster = Cluster {
            nodes,
            zk,
            classpath,
            logging,
            version: spec.version.clone(),
            mode,
        };
        match &cluster.zk {
            Some(zk) => cluster.start_zookeeper(zk, spec.secure)?,
            None => {
                // Format all nodes in parallel (one JVM each).
                let results: Vec<Result<(), String>> = std::thread::scope(|s| {
                    let handles: Vec<_> = cluster
                        .nodes
                        .iter()
                        .map(|node| s.spawn(|| cluster.format(node, spec.secure)))
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
            }
        }
        for i in 0..n {
            cluster.launch(i)?;
        }
        cluster.wait_ready(START_TIMEOUT)?;
        if spec.secure && mode == Mode::KRaft {
            // KRaft keeps ACLs in its metadata: added through a broker.
            cluster.add_acl(&["--bootstrap-server".into(), cluster.bootstrap()])?;
        }
        eprintln!(
            "[it] Kafka {} ({}{}, {n} node{}{}) started at {} in {:.1}s on {} (logs: {})",
            cluster.version,
            mode.as_str(),
            cluster
                .zookeeper_version()
                .map(|v| format!(" {v}"))
                .unwrap_or_default(),
            if n == 1 { "" } else { "s" },
            if spec.secure {
                ", SASL and TLS listeners"
            } else {
                ""
            },
            cluster.bootstrap(),
            began.elapsed().as_secs_f64(),
            java_version(),
            base.display()
        );
        Ok(cluster)
    }

    /// The Apache Kafka version running.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// ZooKeeper or KRaft.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The version of the ZooKeeper on the classpath, e.g. `3.5.7`
    /// (ZooKeeper mode only), from the name of its jar.
    pub fn zookeeper_version(&self) -> Option<String> {
        self.zk.as_ref()?;
        let dir = self.classpath.trim_end_matches("/*");
        std::fs::read_dir(dir).ok()?.find_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("zookeeper-")?
                .strip_suffix(".jar")
                .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
                .map(str::to_owned)
        })
    }

    /// `bootstrap.servers` listing every node's PLAINTEXT listener.
    pub fn bootstrap(&self) -> String {
        self.bootstrap_of(Listener::Plaintext)
            .expect("every node has a PLAINTEXT listener")
    }

    /// `bootstrap.servers` of `listener` on every node; `None` when the
    /// cluster was not started with [`Spec::secure`].
    pub fn bootstrap_of(&self, listener: Listener) -> Option<String> {
        self.nodes
            .iter()
            .map(|n| {
                let port = match (listener, n.secure) {
                    (Listener::Plaintext, _) => n.port,
                    (Listener::SaslPlaintext, Some([p, _, _])) => p,
                    (Listener::Ssl, Some([_, p, _])) => p,
                    (Listener::SaslSsl, Some([_, _, p])) => p,
                    (_, None) => return None,
                };
                Some(format!("127.0.0.1:{port}"))
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(","))
    }

    /// JVM arguments that point the logging binding at its configuration.
    fn log_args(&self) -> Vec<String> {
        match self.logging {
            Logging::Log4j2 => vec![format!(
                "-Dlog4j2.configurationFile={MANIFEST_DIR}/tests/kafka/log4j2.properties"
            )],
            Logging::Reload4j => vec![
                format!("-Dlog4j.configuration=file:{MANIFEST_DIR}/tests/kafka/log4j.properties"),
                // ZooKeeper's log4j JMX beans are not in reload4j.
                "-Dzookeeper.jmx.log4j.disable=true".into(),
            ],
        }
    }

    /// Runs one Kafka tool (a main class on the broker's classpath) to completion.
    fn tool(&self, class: &str, args: &[String]) -> Result<String, String> {
        let out = Command::new("java")
            .args(JAVA_OPTS)
            .args(self.log_args())
            .args(["-cp", &self.classpath, class])
            .args(args)
            .output()
            .map_err(|e| format!("running java: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{class} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn format(&self, node: &Node, secure: bool) -> Result<(), String> {
        let mut args: Vec<String> = vec![
            "format".into(),
            "-t".into(),
            CLUSTER_ID.into(),
            "-c".into(),
            node.dir.join("server.properties").display().to_string(),
        ];
        if secure {
            args.push("--add-scram".into());
            args.push(format!(
                "SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"
            ));
        }
        self.tool("kafka.tools.StorageTool", &args)
            .map(|_| ())
            .map_err(|e| format!("formatting the KRaft log dir failed: {e}"))
    }

    /// Starts ZooKeeper, waits for its port, and adds the SCRAM user when
    /// the cluster is secure.
    fn start_zookeeper(&self, zk: &Zk, secure: bool) -> Result<(), String> {
        std::fs::create_dir_all(zk.dir.join("data"))
            .map_err(|e| format!("creating {:?}: {e}", zk.dir))?;
        let props = zk.dir.join("zookeeper.properties");
        std::fs::write(
            &props,
            format!(
                "dataDir={data}
clientPort={port}
clientPortAddress=127.0.0.1
admin.enableServer=false
tickTime=2000
maxClientCnxns=0
",
                data = zk.dir.join("data").display(),
                port = zk.port
            ),
        )
        .map_err(|e| format!("writing {props:?}: {e}"))?;
        self.spawn_watched(
            &zk.dir,
            "zookeeper",
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            &props,
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", zk.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "ZooKeeper did not listen on 127.0.0.1:{} within 60 s:\n{}",
                    zk.port,
                    tail(&zk.dir.join("zookeeper.log"))
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if secure {
            // SCRAM credentials live in ZooKeeper; `--zookeeper` is how
            // Kafka up to 3.x bootstraps them before any broker runs.
            self.tool(
                "kafka.admin.ConfigCommand",
                &[
                    "--zookeeper".into(),
                    format!("127.0.0.1:{}", zk.port),
                    "--alter".into(),
                    "--add-config".into(),
                    format!("SCRAM-SHA-512=[iterations=4096,password={SCRAM_PASSWORD}]"),
                    "--entity-type".into(),
                    "users".into(),
                    "--entity-name".into(),
                    SCRAM_USER.into(),
                ],
            )
            .map_err(|e| format!("adding the SCRAM user: {e}"))?;
            self.add_acl(&[
                "--authorizer-properties".into(),
                format!("zookeeper.connect=127.0.0.1:{}", zk.port),
            ])?;
        }
        Ok(())
    }

    /// Allows [`ACL_USER`] to write and describe every topic (and nothing on
    /// the cluster), through AclCommand with `how` (ZooKeeper or a broker).
    fn add_acl(&self, how: &[String]) -> Result<(), String> {
        // AclCommand moved from the broker's jar to kafka-tools in 4.0.
        let class = match self.logging {
            Logging::Log4j2 => "org.apache.kafka.tools.AclCommand",
            Logging::Reload4j => "kafka.admin.AclCommand",
        };
        let mut args = how.to_vec();
        args.extend(
            [
                "--add",
                "--allow-principal",
                &format!("User:{ACL_USER}"),
                "--operation",
                "Write",
                "--operation",
                "Describe",
                "--topic",
                "*",
            ]
            .map(str::to_owned),
        );
        self.tool(class, &args)
            .map(|_| ())
            .map_err(|e| format!("adding the ACLs: {e}"))
    }

    /// Starts `class props` in `dir` under a watchdog shell, with its pid in
    /// `dir/<what>.pid` and its output appended to `dir/<what>.log`. The
    /// watchdog kills the JVM and removes `dir` when this test process is
    /// gone, however it ends; if the JVM dies first (a test killed it), it
    /// leaves the data for a restart. The JVM's temporary files (lz4-java
    /// unpacks its native library there, and leaves it when killed) stay in
    /// `dir/tmp`, not in `/tmp`.
    fn spawn_watched(
        &self,
        dir: &Path,
        what: &str,
        class: &str,
        props: &Path,
    ) -> Result<(), String> {
        let script = format!(
            r#"mkdir -p '{dir}/tmp'
java {opts} -Djava.io.tmpdir='{dir}/tmp' {log_args} -cp '{cp}' {class} '{props}' >> '{log}' 2>&1 &
jvm=$!
echo $jvm > '{pidfile}'
trap 'kill $jvm 2>/dev/null' TERM INT
while kill -0 {parent} 2>/dev/null && kill -0 $jvm 2>/dev/null; do sleep 0.5; done
kill -0 {parent} 2>/dev/null && exit 0
kill $jvm 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 $jvm 2>/dev/null || break; sleep 0.5; done
kill -9 $jvm 2>/dev/null
wait $jvm 2>/dev/null
case '{dir}' in */kafka-run-*) rm -rf '{dir}';; esac
"#,
            opts = JAVA_OPTS.join(" "),
            log_args = self
                .log_args()
                .iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" "),
            cp = self.classpath,
            props = props.display(),
            log = dir.join(format!("{what}.log")).display(),
            pidfile = dir.join(format!("{what}.pid")).display(),
            parent = std::process::id(),
            dir = dir.display(),
        );
        let _ = std::fs::remove_file(dir.join(format!("{what}.pid")));
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {what}: {e}"))?;
        // The watchdog is reaped by init once this process exits; it must
        // outlive the Child handle, so the handle is dropped without wait().
        drop(child);
        Ok(())
    }

    /// Starts node `i` (0-based).
    fn launch(&self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        self.spawn_watched(
            &node.dir,
            "broker",
            "kafka.Kafka",
            &node.dir.join("server.properties"),
        )
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
            *self.nodes[i].killed_at.lock().expect("lock") = Some(Instant::now());
            // Wait until the JVM is really gone (its port closes).
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.nodes[i].port)).is_ok()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts node `i` again on the same ports and data. In ZooKeeper mode,
    /// first waits until the killed broker's ZooKeeper session has expired.
    pub fn restart(&self, i: usize) {
        let killed = *self.nodes[i].killed_at.lock().expect("lock");
        if let (Mode::ZooKeeper, Some(killed)) = (self.mode, killed) {
            let expired = killed + ZK_SESSION_TIMEOUT + Duration::from_secs(1);
            if let Some(wait) = expired.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        self.launch(i).expect("restart the broker");
    }

    /// Waits until every node answers metadata listing all nodes.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let exited = || {
            // A JVM that exits (bad configuration, a JDK it cannot run on)
            // fails the start at once instead of at the timeout.
            for n in &self.nodes {
                let Some(pid) = std::fs::read_to_string(n.dir.join("broker.pid"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                else {
                    continue;
                };
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|s| s.split_whitespace().next());
                if matches!(state, None | Some("Z" | "X")) {
                    return Err(format!("the broker (pid {pid}) exited"));
                }
            }
            Ok(())
        };
        wait_for_metadata(&self.bootstrap(), self.nodes.len(), timeout, exited).map_err(|e| {
            let mut logs: Vec<PathBuf> = self
                .nodes
                .iter()
                .map(|n| n.dir.join("broker.log"))
                .collect();
            if let Some(zk) = &self.zk {
                logs.push(zk.dir.join("zookeeper.log"));
            }
            let logs: Vec<String> = logs.iter().map(|l| tail(l)).collect();
            format!(
                "Kafka {} at {} did not start: {e}\n{}",
                self.version,
                self.bootstrap(),
                logs.join("\n")
            )
        })
    }

    /// What Kafka's own `DumpLogSegments` prints for every log segment of
    /// `topic` on node 0: one line per record batch with its producer id,
    /// sequence numbers and compression codec, read from the broker's files.
    pub fn dump_log_segments(&self, topic: &str) -> Result<String, String> {
        let data = self.nodes[0].dir.join("data");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&data).map_err(|e| format!("{data:?}: {e}"))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            // `<topic>-<partition>`; another topic may share the prefix.
            let is_partition = name
                .strip_prefix(topic)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !is_partition {
                continue;
            }
            for f in std::fs::read_dir(&path).map_err(|e| e.to_string())? {
                let f = f.map_err(|e| e.to_string())?.path();
                if f.extension().is_some_and(|x| x == "log") {
                    files.push(f.display().to_string());
                }
            }
        }
        if files.is_empty() {
            return Err(format!("no log segment of {topic} under {data:?}"));
        }
        files.sort();
        self.tool(
            "kafka.tools.DumpLogSegments",
            &["--files".into(), files.join(",")],
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut pidfiles: Vec<PathBuf> = self
            .nodes
            .iter()
            .map(|n| n.dir.join("broker.pid"))
            .collect();
        if let Some(zk) = &self.zk {
            pidfiles.push(zk.dir.join("zookeeper.pid"));
        }
        for pidfile in pidfiles {
            if let Ok(pid) = std::fs::read_to_string(pidfile) {
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
        if let Some(zk) = &self.zk {
            let _ = std::fs::remove_dir_all(&zk.dir);
        }
    }
}

/// The last 20 lines of a log file, headed by its name.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    format!(
        "--- {} (tail) ---\n{}",
        log.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// The first line of `java -version` (the JDK every broker runs on).
pub fn java_version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        Command::new("java")
            .arg("-version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "java (version unknown)".into())
    })
}

/// Resolves the classpath of Kafka `version` once per pom content and version.
fn resolve_jars(version: &str, logging: Logging) -> Result<PathBuf, String> {
    match logging {
        // The default keeps the cache directory it always had.
        Logging::Log4j2 if version == DEFAULT_VERSION => {
            resolve_maven("tests/kafka/pom.xml", POM, "kafka-libs")
        }
        Logging::Log4j2 => resolve_maven_with(
            "tests/kafka/pom.xml",
            POM,
            &format!("kafka-libs-{version}"),
            &[("kafka.version", version)],
        ),
        Logging::Reload4j => resolve_maven_with(
            "tests/kafka/reload4j/pom.xml",
            RELOAD4J_POM,
            &format!("kafka-libs-{version}"),
            &[("kafka.version", version)],
        ),
    }
}

/// Copies the runtime dependencies of the pom at `pom` (relative to the
/// crate, with content `pom_text`) into `target/tmp/<name>-<digest>` with
/// Maven, once per pom content, and returns that directory.
pub fn resolve_maven(pom: &str, pom_text: &str, name: &str) -> Result<PathBuf, String> {
    resolve_maven_with(pom, pom_text, name, &[])
}

/// [`resolve_maven`] with Maven properties (`-Dname=value`), which are part
/// of the cache key. One Maven at a time: they share `~/.m2`.
pub fn resolve_maven_with(
    pom: &str,
    pom_text: &str,
    name: &str,
    properties: &[(&str, &str)],
) -> Result<PathBuf, String> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let mut key = pom_text.to_owned();
    for (k, v) in properties {
        key.push_str(&format!("\0{k}={v}"));
    }
    let digest = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let libs = PathBuf::from(TMP).join(format!("{name}-{digest:016x}"));
    if libs.join(".complete").exists() {
        return Ok(libs);
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if libs.join(".complete").exists() {
        return Ok(libs);
    }
    let partial = libs.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let began = Instant::now();
    eprintln!(
        "[it] resolving {pom} {properties:?} with Maven into {} ...",
        libs.display()
    );
    let out = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(Path::new(MANIFEST_DIR).join(pom))
        .args(properties.iter().map(|(k, v)| format!("-D{k}={v}")))
        .args(["dependency:copy-dependencies", "-DincludeScope=runtime"])
        .arg(format!("-DoutputDirectory={}", partial.display()))
        .output()
        .map_err(|e| format!("running mvn: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mvn could not resolve the jars of {pom} {properties:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(partial.join(".complete"), "").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&libs);
    std::fs::rename(&partial, &libs).map_err(|e| format!("moving jars into place: {e}"))?;
    eprintln!(
        "[it] {pom} {properties:?} resolved in {:.1}s",
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
