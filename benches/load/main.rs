//! Load benchmark: the bridge (its binary, as a separate process) against a
//! real Apache Kafka broker, compared in the same run, with the same client,
//! with a bare hyper server that only reads the body and answers OK, and
//! with the floor server (`floor.rs`), the least code that does the
//! bridge's job for these bodies.
//!
//! `cargo bench --bench load` runs it (see `docs/performance.md`); options
//! follow `--`, e.g. `cargo bench --bench load -- --duration 5 --connections 128`.
//! `cargo test --bench load` (no `--bench` argument) is a smoke run of a
//! few seconds that checks only that every event was verified. `--pin` runs
//! every server on CPU 1 and the client and the broker on CPU 0.
//!
//! Phases: a warm-up of each server; closed-loop rounds (as fast as answers
//! come back) in ABBA order; then open-loop phases at fixed fractions of each
//! bridge's best closed-loop rate (bare hyper at the `enqueued` bridge's). Then each
//! bridge is stopped (SIGTERM: drain and flush) and its topic is read back:
//! a bridge that lost or duplicated an acknowledged event FAILED, whatever
//! its speed, and the benchmark exits non-zero.

mod client;
mod floor;
#[allow(dead_code)] // the fault tests' parts of the launcher
#[path = "../../tests/it/kafka.rs"]
mod kafka;
mod report;
mod servers;
mod verify;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use client::{Pace, Phase};
use report::{Row, Run};
use servers::Server;
use workload::Workload;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// A short run that checks verification only.
    pub smoke: bool,
    /// Keep-alive connections.
    pub connections: usize,
    /// Seconds per measured phase.
    pub duration: Duration,
    /// Warm-up per server.
    pub warmup: Duration,
    /// Closed-loop rounds per server.
    pub rounds: usize,
    /// Open-loop rates, as fractions of each bridge's best closed-loop rate
    /// (bare hyper runs at the `enqueued` bridge's).
    pub fractions: Vec<f64>,
    /// Ack modes to run a bridge in.
    pub modes: Vec<String>,
    /// Most requests in one phase.
    pub max_requests: u64,
    /// Client runtime threads.
    pub client_threads: usize,
    /// Run the servers under callgrind and count instructions per request
    /// in one closed-loop phase of `max_requests` each.
    pub callgrind: bool,
    /// Servers on one CPU, the client and the broker on the other.
    pub pin: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let smoke = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--smoke");
        let mut o = if smoke {
            Options {
                smoke,
                connections: 16,
                duration: Duration::from_millis(1500),
                warmup: Duration::from_millis(300),
                rounds: 1,
                fractions: vec![0.5],
                modes: vec!["enqueued".into(), "spooled".into()],
                max_requests: 50_000,
                client_threads: 2,
                callgrind: false,
                pin: false,
            }
        } else {
            Options {
                smoke,
                connections: 64,
                duration: Duration::from_secs(10),
                warmup: Duration::from_secs(2),
                rounds: 2,
                fractions: vec![0.25, 0.5, 0.75],
                modes: vec!["enqueued".into(), "spooled".into()],
                max_requests: 3_000_000,
                client_threads: 2,
                callgrind: false,
                pin: false,
            }
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            let num = |name: &str, v: String| -> Result<f64, String> {
                v.parse::<f64>()
                    .map_err(|_| format!("{name}: {v:?} is not a number"))
            };
            match a.as_str() {
                "--bench" | "--smoke" => {}
                "--pin" => o.pin = true,
                "--callgrind" => {
                    o.callgrind = true;
                    o.rounds = 1;
                    o.fractions.clear();
                    o.warmup = Duration::ZERO;
                    o.duration = Duration::from_secs(900);
                    o.max_requests = 20_000;
                }
                "--connections" => o.connections = num(a, value(a)?)? as usize,
                "--duration" => o.duration = Duration::from_secs_f64(num(a, value(a)?)?),
                "--warmup" => o.warmup = Duration::from_secs_f64(num(a, value(a)?)?),
                "--rounds" => o.rounds = num(a, value(a)?)? as usize,
                "--max-requests" => o.max_requests = num(a, value(a)?)? as u64,
                "--client-threads" => o.client_threads = num(a, value(a)?)? as usize,
                "--rates" => {
                    o.fractions = value(a)?
                        .split(',')
                        .map(|f| num(a, f.to_owned()))
                        .collect::<Result<_, _>>()?;
                }
                "--modes" => {
                    o.modes = value(a)?.split(',').map(str::to_owned).collect();
                    if !o.modes.iter().any(|m| m == "enqueued") {
                        return Err(
                            "--modes must include enqueued (the rates are fractions of its best)"
                                .into(),
                        );
                    }
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?}; see benches/load/main.rs"
                    ));
                }
            }
        }
        if o.connections == 0 || o.rounds == 0 || o.client_threads == 0 {
            return Err("--connections, --rounds and --client-threads must be at least 1".into());
        }
        Ok(o)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--bare-server") {
        servers::serve_bare();
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--floor-server") {
        floor::serve_floor();
        return ExitCode::SUCCESS;
    }
    let options = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(run) => {
            run.print();
            match run.write_json(&results_dir()) {
                Ok(path) => println!("\nResults: {}", path.display()),
                Err(e) => eprintln!("load: writing the results: {e}"),
            }
            if run.verified() {
                ExitCode::SUCCESS
            } else {
                println!("\nFAILED: a bridge lost or duplicated acknowledged events (see above).");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `target/load-bench/`.
fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("load-bench")
}

fn run(o: &Options) -> Result<Run, String> {
    let began = Instant::now();
    if o.pin {
        // Before any thread or child exists: they inherit CPU 0 (the
        // broker too, when this process starts it).
        servers::pin(std::process::id(), servers::CLIENT_CPU)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let brokers = kafka::bootstrap().to_owned();
    if o.pin {
        match servers::listener_pid(&brokers) {
            Some(pid) => servers::pin(pid, servers::CLIENT_CPU)?,
            None => eprintln!("[load] --pin: the broker's pid is not known; it is not pinned"),
        }
    }
    let workload = Arc::new(Workload::new(1024));
    let mut run = Run::new(o.clone(), &workload);
    eprintln!("[load] {}", run.describe());

    // The servers: bare hyper and one bridge per mode, each its own process.
    // LOAD_BRIDGE_BIN runs another build of the bridge (e.g. before a
    // change) against the same client and broker.
    let binary = std::env::var_os("LOAD_BRIDGE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_chat-kafka-bridge")),
        PathBuf::from,
    );
    let binary = binary.as_path();
    eprintln!("[load] bridge binary: {}", binary.display());
    let tag = format!("{}-{}", std::process::id(), client::unix_us() / 1_000_000);
    let callgrind = |name: &str| {
        o.callgrind
            .then(|| results_dir().join(format!("callgrind-{name}-{tag}.out")))
    };
    if o.callgrind {
        std::fs::create_dir_all(results_dir()).map_err(|e| e.to_string())?;
    }
    let mut servers = vec![Server::bare(callgrind("bare"), o.pin)?];
    let mut topics = vec![None];
    let floor_topic = format!("bench-floor-{tag}");
    rt.block_on(verify::create_topics(&brokers, &floor_topic))?;
    servers.push(Server::floor(
        &brokers,
        &floor_topic,
        callgrind("floor"),
        o.pin,
    )?);
    topics.push(Some(floor_topic));
    // LOAD_COMPARE_BIN adds, for each mode, a bridge from another build
    // ("compare <mode>"), measured in the same rounds: a before/after
    // comparison that the machine's drift cannot bias.
    let compare = std::env::var_os("LOAD_COMPARE_BIN").map(PathBuf::from);
    let mut bridges: Vec<(String, &Path, &str)> = Vec::new();
    for mode in &o.modes {
        bridges.push((format!("bridge {mode}"), binary, mode));
        if let Some(other) = &compare {
            bridges.push((format!("compare {mode}"), other.as_path(), mode));
        }
    }
    for (name, binary, mode) in bridges {
        let slug = name.replace(' ', "-");
        let topic = format!("bench-{slug}-{tag}");
        rt.block_on(verify::create_topics(&brokers, &topic))?;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("load-{slug}-{tag}"));
        servers.push(Server::bridge(
            name,
            binary,
            &brokers,
            &topic,
            mode,
            &dir,
            callgrind(&slug),
            o.pin,
        )?);
        topics.push(Some(topic));
    }
    let seq = Arc::new(AtomicU64::new(0));
    let tck = servers::ticks_per_second();
    let measure = |server: &Server, pace: Pace, duration: Duration, label: String| -> Row {
        for s in &servers {
            s.wait_quiet(Duration::from_secs(60));
        }
        std::thread::sleep(Duration::from_millis(300));
        let pid = server.pid();
        let peak_reset = servers::reset_peak_rss(pid);
        let (cpu0, me0, m0) = (
            servers::cpu_ticks(pid),
            servers::cpu_ticks(std::process::id()),
            servers::machine_ticks(),
        );
        server.count(true);
        let outcome = rt.block_on(client::run(
            Phase {
                addr: server.addr,
                connections: o.connections,
                duration,
                max_requests: o.max_requests,
                pace,
            },
            workload.clone(),
            seq.clone(),
        ));
        server.count(false);
        let (cpu1, me1, m1) = (
            servers::cpu_ticks(pid),
            servers::cpu_ticks(std::process::id()),
            servers::machine_ticks(),
        );
        let row = Row {
            target: server.name.clone(),
            load: label,
            pace,
            server_cpu_s: (cpu1 - cpu0) as f64 / tck,
            client_cpu_s: (me1 - me0) as f64 / tck,
            machine_busy: (m1.0 - m0.0) as f64 / (m1.1 - m0.1).max(1) as f64,
            peak_rss_kib: servers::peak_rss_kib(pid),
            peak_since_start: !peak_reset,
            e2e: None,
            instructions: None,
            outcome,
        };
        eprintln!("[load] {}", row.brief());
        row
    };

    for s in servers.iter().filter(|_| !o.warmup.is_zero()) {
        let row = measure(s, Pace::Closed, o.warmup, "warm-up".into());
        run.warmups.push(row);
    }
    for round in 0..o.rounds {
        // ABBA: odd rounds run the servers in reverse order.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..servers.len()).collect()
        } else {
            (0..servers.len()).rev().collect()
        };
        for i in order {
            let label = format!("closed, round {}", round + 1);
            let row = measure(&servers[i], Pace::Closed, o.duration, label);
            run.rows.push(row);
        }
    }
    // Each bridge at fractions of its own best rate; bare hyper and the
    // floor at the enqueued bridge's, to set their latency beside it.
    let enqueued_best = run.best_rate("bridge enqueued").unwrap_or(0.0);
    let bests: Vec<f64> = servers
        .iter()
        .map(|s| match run.best_rate(&s.name) {
            Some(best) if !matches!(s.name.as_str(), "bare hyper" | "floor") => best,
            _ => enqueued_best,
        })
        .collect();
    for &f in &o.fractions {
        for (s, best) in servers.iter().zip(&bests) {
            let rate = (best * f).max(1.0);
            let label = format!("open {:.0}/s ({:.0}%)", rate, f * 100.0);
            let row = measure(s, Pace::Open(rate), o.duration, label);
            run.rows.push(row);
        }
    }

    // Stop each bridge (drain, flush) and read its topic back.
    for (server, topic) in servers.iter_mut().zip(&topics) {
        let Some(topic) = topic else {
            server.stop()?;
            continue;
        };
        let name = server.name.clone();
        let discarded = server.stop()?;
        let (acked, ranges) = run.acked_and_ranges(&name);
        let verdict = verify::verify(&brokers, topic, &acked, &ranges, &workload, discarded)?;
        eprintln!(
            "[load] {name}: {} answered OK, {} in Kafka: {}",
            verdict.acked,
            verdict.records,
            if verdict.passed() {
                "verified"
            } else {
                "FAILED"
            }
        );
        run.add_verdict(&name, verdict);
    }
    for server in &servers {
        if let Some(n) = server.instructions() {
            for row in run.rows.iter_mut().filter(|r| r.target == server.name) {
                row.instructions = Some(n);
            }
        }
    }
    run.elapsed = began.elapsed();
    Ok(run)
}
