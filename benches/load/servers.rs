//! The servers under load, each its own process so that its CPU time and
//! peak RSS can be read from `/proc`: the bridge's binary (built in the same
//! profile as this benchmark), a bare hyper server (this benchmark's own
//! executable, re-run with `--bare-server`) and the floor server (the same
//! executable with `--floor-server`, see `floor.rs`). With `--pin` every
//! server runs on CPU 1 (`taskset`), the client and the broker on CPU 0.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::workload::{APP_ID, TOKEN};

/// The bridge's default `BRIDGE_MAX_BODY_BYTES`; bare hyper reads bodies
/// under the same bound.
const MAX_BODY: usize = 1024 * 1024;

/// A server process: its pid and address.
pub struct Server {
    /// Table label, e.g. `bridge enqueued`.
    pub name: String,
    /// Callback address.
    pub addr: SocketAddr,
    child: Child,
    /// Admin address (bridges only).
    admin: Option<SocketAddr>,
    log: Option<PathBuf>,
    /// Where callgrind writes its counts, when the server runs under it.
    callgrind: Option<PathBuf>,
    /// The floor server's control pipe (stdin, stdout).
    control: Option<Mutex<Control>>,
}

/// A control pipe: the server's stdin and stdout.
type Control = (ChildStdin, BufReader<ChildStdout>);

/// CPU the servers run on under `--pin`; the client and the broker get CPU 0.
pub const SERVER_CPU: &str = "1";
/// CPU of the client and the broker under `--pin`.
pub const CLIENT_CPU: &str = "0";

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a bridge named `name` against `brokers` writing `topic`, in `mode`; under
    /// callgrind (counting nothing until [`Server::count`]) when `callgrind`
    /// names its output file.
    #[allow(clippy::too_many_arguments)] // each a setting of the bridge under test
    pub fn bridge(
        name: String,
        binary: &Path,
        brokers: &str,
        topic: &str,
        mode: &str,
        dir: &Path,
        callgrind: Option<PathBuf>,
        pin: bool,
    ) -> Result<Server, String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{dir:?}: {e}"))?;
        let log = dir.join("bridge.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("{log:?}: {e}"))?;
        let child = command(binary, callgrind.as_deref(), pin)
            .env("BRIDGE_LISTEN", "127.0.0.1:0")
            .env("BRIDGE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("BRIDGE_KAFKA_BROKERS", brokers)
            .env("BRIDGE_KAFKA_TOPIC", topic)
            .env("BRIDGE_KAFKA_DLQ_TOPIC", format!("{topic}-dlq"))
            .env("BRIDGE_KAFKA_GENERAL_TOPIC", format!("{topic}-general"))
            .env("BRIDGE_SDKAPPID", APP_ID.to_string())
            .env("BRIDGE_CALLBACK_TOKEN", TOKEN)
            .env("BRIDGE_ACK_MODE", mode)
            .env("BRIDGE_SPOOL_DIR", dir.join("spool"))
            .env("BRIDGE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        watchdog(child.id());
        let mut server = Server {
            name,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            admin: None,
            log: Some(log.clone()),
            callgrind,
            control: None,
        };
        // The bridge logs its addresses once it listens.
        let deadline = Instant::now() + Duration::from_secs(120);
        while server.admin.is_none() {
            if Instant::now() > deadline {
                return Err(format!("the bridge did not log its addresses; see {log:?}"));
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("the bridge exited ({status}); see {log:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
            for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let addr = |k: &str| {
                    v[k].as_str()
                        .and_then(|u| u.strip_prefix("http://"))
                        .and_then(|u| u.split('/').next())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                };
                if let (Some(cb), Some(ad)) = (addr("callback"), addr("admin")) {
                    server.addr = cb;
                    server.admin = Some(ad);
                }
            }
        }
        // Ready: Kafka metadata for every topic it writes (or room in the spool).
        while get(server.admin, "/readyz").map(|(s, _)| s) != Some(200) {
            if Instant::now() > deadline {
                return Err(format!("the bridge never became ready; see {log:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// Starts bare hyper: this executable with `--bare-server`.
    pub fn bare(callgrind: Option<PathBuf>, pin: bool) -> Result<Server, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut c = command(&exe, callgrind.as_deref(), pin);
        c.arg("--bare-server");
        let (child, addr, _) = own_server(c, "bare hyper")?;
        Ok(Server {
            name: "bare hyper".into(),
            addr,
            child,
            admin: None,
            log: None,
            callgrind,
            control: None,
        })
    }

    /// Starts the floor server: this executable with `--floor-server`,
    /// writing to `topic`.
    pub fn floor(
        brokers: &str,
        topic: &str,
        callgrind: Option<PathBuf>,
        pin: bool,
    ) -> Result<Server, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut c = command(&exe, callgrind.as_deref(), pin);
        c.arg("--floor-server")
            .env("FLOOR_BROKERS", brokers)
            .env("FLOOR_TOPIC", topic);
        let (mut child, addr, stdout) = own_server(c, "the floor server")?;
        let stdin = child.stdin.take().expect("piped");
        Ok(Server {
            name: "floor".into(),
            addr,
            child,
            admin: None,
            log: None,
            callgrind,
            control: Some(Mutex::new((stdin, stdout))),
        })
    }

    /// Under callgrind: starts (`true`) or stops counting instructions.
    pub fn count(&self, on: bool) {
        if self.callgrind.is_some() {
            let _ = Command::new("callgrind_control")
                .args(["-i", if on { "on" } else { "off" }, &self.pid().to_string()])
                .stdout(Stdio::null())
                .status();
        }
    }

    /// Under callgrind, once stopped: the instructions counted.
    pub fn instructions(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.callgrind.as_ref()?).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// One sample from the bridge's `/metrics` (summed over its labels).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = get(self.admin, "/metrics")?;
        Some(
            text.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with([' ', '{']))
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum(),
        )
    }

    /// Waits until a bridge has no record waiting for Kafka (producer queue
    /// and spool), so that one phase's backlog does not load the next.
    pub fn wait_quiet(&self, timeout: Duration) {
        if self.admin.is_none() && self.control.is_none() {
            return;
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let busy = match &self.control {
                Some(control) => {
                    let mut control = control.lock().expect("not poisoned");
                    ask(&mut control, "in_flight")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1.0)
                }
                None => {
                    self.metric("chat_bridge_kafka_unconfirmed_events")
                        .unwrap_or(1.0)
                        + self.metric("chat_bridge_spool_events").unwrap_or(1.0)
                }
            };
            if busy == 0.0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("[load] {}: still busy after {timeout:?}", self.name);
    }

    /// Stops the server (SIGTERM: a bridge drains and flushes) and, for a
    /// bridge, returns its final `discarded` count.
    pub fn stop(&mut self) -> Result<u64, String> {
        if let Some(control) = self.control.take() {
            let (stdin, mut stdout) = control.into_inner().expect("not poisoned");
            // The floor flushes its producer when its stdin closes, then
            // says how many records it could not deliver.
            drop(stdin);
            let mut line = String::new();
            while stdout.read_line(&mut line).map_err(|e| e.to_string())? > 0 {
                if let Some(n) = line.trim().strip_prefix("failed ") {
                    let _ = self.child.wait();
                    return n.parse().map_err(|_| format!("the floor said {line:?}"));
                }
                line.clear();
            }
            return Err("the floor server exited without its count".into());
        }
        if self.child.stdin.take().is_some() {
            // Bare hyper exits cleanly when its stdin closes.
            for _ in 0..100 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // A server that already exited (bare hyper, above) needs no signal.
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = self.child.kill();
                    return Err(format!("{} did not stop within 60 s", self.name));
                }
            }
        }
        let Some(log) = &self.log else {
            return Ok(0);
        };
        let text = std::fs::read_to_string(log).map_err(|e| e.to_string())?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "Stopped. Final counts.")
            .and_then(|v| v["discarded"].as_u64())
            .ok_or_else(|| format!("{} logged no final counts; see {log:?}", self.name))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program`, or `program` under callgrind writing to `out`; on
/// [`SERVER_CPU`] when `pin`.
fn command(program: &Path, out: Option<&Path>, pin: bool) -> Command {
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if pin {
        argv.extend(["taskset", "-c", SERVER_CPU].map(Into::into));
    }
    if let Some(out) = out {
        argv.extend(["valgrind", "--tool=callgrind", "--instr-atstart=no"].map(Into::into));
        argv.push(format!("--callgrind-out-file={}", out.display()).into());
    }
    argv.push(program.into());
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

/// Spawns one of this executable's own servers (`c`), which print their
/// address first: the child, the address and its stdout.
fn own_server(
    mut c: Command,
    what: &str,
) -> Result<(Child, SocketAddr, BufReader<ChildStdout>), String> {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    stdout.read_line(&mut line).map_err(|e| e.to_string())?;
    let addr = line
        .trim()
        .parse()
        .map_err(|_| format!("{what} printed {line:?}, not an address"))?;
    Ok((child, addr, stdout))
}

/// Sends `command` on a control pipe and reads the answer line.
fn ask(control: &mut Control, command: &str) -> Option<String> {
    writeln!(control.0, "{command}").ok()?;
    control.0.flush().ok()?;
    let mut line = String::new();
    control.1.read_line(&mut line).ok()?;
    Some(line.trim().to_owned())
}

/// Pins `pid` (all its threads) to `cpu` with `taskset`.
pub fn pin(pid: u32, cpu: &str) -> Result<(), String> {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?
        .success();
    if ok {
        Ok(())
    } else {
        Err(format!("taskset could not pin {pid} to CPU {cpu}"))
    }
}

/// The pid of the process listening on `addr`'s port (the broker), from `ss`.
pub fn listener_pid(addr: &str) -> Option<u32> {
    let port = addr.rsplit(':').next()?;
    let out = Command::new("ss")
        .args(["-Hltnp", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let at = text.find("pid=")? + 4;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Kills `pid` when this process is gone, however it ends.
fn watchdog(pid: u32) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill -9 {pid} 2>/dev/null",
        me = std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A blocking `GET` on loopback: (status, body).
fn get(addr: Option<SocketAddr>, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_owned()))
}

/// CPU time (user + system) of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): 14 and 15 overall.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Peak RSS of `pid` in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets `pid`'s peak RSS to its current RSS; false where not allowed.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The machine's (busy, total) CPU ticks from `/proc/stat`, all cores.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// `--bare-server`: hyper on 127.0.0.1:0 with the bridge's connection
/// settings; reads each whole body and answers the OK body. Prints its
/// address, then serves until its stdin closes or SIGTERM.
pub fn serve_bare() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        println!("{}", listener.local_addr().expect("an address"));
        std::thread::spawn(|| {
            // The parent holds our stdin: EOF means it is gone.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0);
        });
        serve_http(listener, || service_fn(answer)).await;
    });
}

/// The yardsticks' accept loop (bare hyper's and the floor's): HTTP/1.1
/// with keep-alive and a 10 s head timeout, one task per connection, for
/// ever.
pub async fn serve_http<S>(listener: tokio::net::TcpListener, service: impl Fn() -> S)
where
    S: hyper::service::Service<
            Request<hyper::body::Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Duration::from_secs(10));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection(TokioIo::new(stream), service());
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    #[allow(clippy::disallowed_methods)] // bounded by Limited, as in the bridge
    let read = Limited::new(req.into_body(), MAX_BODY).collect().await;
    let (status, body) = match read {
        Ok(_) => (StatusCode::OK, crate::client::OK_BODY),
        Err(_) => (StatusCode::BAD_REQUEST, &b"{}"[..]),
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
