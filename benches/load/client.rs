//! The load generator: many keep-alive HTTP/1.1 connections (hyper's client
//! connection, one request in flight each), closed loop (each connection
//! sends again as soon as it has its answer: the maximum rate) or open loop
//! (request k of connection c is due at a fixed time, whether or not earlier
//! answers came back; when the connection was still waiting for an earlier
//! answer at that time, latency counts from the due time, so a stall is not
//! hidden by coordinated omission; when it was idle, from the moment the
//! request left, so the timer's 1 ms granularity is not charged to the server).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::workload::{Workload, signed_path};

/// The answer every callback must get.
pub const OK_BODY: &[u8] = chat_kafka_bridge::http::respond::OK_BODY.as_bytes();
/// A request without an answer after this long counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as answers come back.
    Closed,
    /// A fixed rate in requests per second, spread over the connections.
    Open(f64),
}

/// One measured stretch of load against one server.
pub struct Phase {
    /// The server.
    pub addr: SocketAddr,
    /// Keep-alive connections.
    pub connections: usize,
    /// How long requests are started.
    pub duration: Duration,
    /// At most this many requests.
    pub max_requests: u64,
    /// Closed or open loop.
    pub pace: Pace,
}

/// What the client saw in one phase.
pub struct Outcome {
    /// The request numbers (`BenchSeq`) this phase used.
    pub seqs: Range<u64>,
    /// Requests answered 200 with the OK body, by number.
    pub acked: Vec<u64>,
    /// Answers other than 200 + OK body, by status.
    pub refused: BTreeMap<u16, u64>,
    /// Requests without an answer (timeout, connection error).
    pub errors: u64,
    /// From the first request due to the last answer.
    pub elapsed: Duration,
    /// Answer latency in µs, every answered request.
    pub latency: Histogram<u64>,
}

impl Outcome {
    /// OK answers per second.
    pub fn rate(&self) -> f64 {
        self.acked.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A histogram of µs from 1 µs to 5 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 300_000_000, 3).expect("valid bounds")
}

/// Unix time in µs.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

struct Shared {
    phase: Phase,
    workload: Arc<Workload>,
    seq: Arc<AtomicU64>,
    seq_limit: u64,
    start: Instant,
    end: Instant,
}

#[derive(Default)]
struct PerConnection {
    acked: Vec<u64>,
    refused: BTreeMap<u16, u64>,
    errors: u64,
    latency: Option<Histogram<u64>>,
    last_answer: Option<Instant>,
}

/// Runs `phase`, numbering requests from `seq`.
pub async fn run(phase: Phase, workload: Arc<Workload>, seq: Arc<AtomicU64>) -> Outcome {
    let first = seq.load(Ordering::SeqCst);
    // Connect first, one at a time: a burst of connects can overflow the
    // server's accept queue, and a dropped handshake costs a retransmission
    // (about a second) that would be measured as the server's latency.
    let mut senders = Vec::with_capacity(phase.connections);
    for _ in 0..phase.connections {
        senders.push(connect(phase.addr).await);
    }
    let start = Instant::now() + Duration::from_millis(200);
    let shared = Arc::new(Shared {
        end: start + phase.duration,
        seq_limit: first + phase.max_requests,
        phase,
        workload,
        seq: seq.clone(),
        start,
    });
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(c, sender)| tokio::spawn(connection(shared.clone(), c, sender)))
        .collect();
    let mut out = Outcome {
        seqs: first..first,
        acked: Vec::new(),
        refused: BTreeMap::new(),
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    let mut last = start;
    for t in tasks {
        let c = t.await.expect("client connection task");
        out.acked.extend(c.acked);
        for (s, n) in c.refused {
            *out.refused.entry(s).or_default() += n;
        }
        out.errors += c.errors;
        if let Some(h) = c.latency {
            out.latency.add(h).expect("same bounds");
        }
        last = last.max(c.last_answer.unwrap_or(start));
    }
    let used = seq.load(Ordering::SeqCst).min(shared.seq_limit);
    seq.store(used, Ordering::SeqCst);
    out.seqs = first..used;
    out.elapsed = last.saturating_duration_since(start);
    out.acked.sort_unstable();
    out
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

/// Signed request targets, one per command, re-signed every second.
struct Targets {
    second: u64,
    uris: Vec<Uri>,
}

impl Targets {
    fn get(&mut self, workload: &Workload, command: usize, now_us: u64) -> Uri {
        let second = now_us / 1_000_000;
        if second != self.second || self.uris.is_empty() {
            self.second = second;
            self.uris = workload
                .commands()
                .iter()
                .map(|c| {
                    signed_path("/callback", c, second)
                        .parse()
                        .expect("a valid path")
                })
                .collect();
        }
        self.uris[command].clone()
    }
}

async fn connection(
    shared: Arc<Shared>,
    c: usize,
    mut sender: Option<SendRequest<Full<Bytes>>>,
) -> PerConnection {
    let phase = &shared.phase;
    let host = phase.addr.to_string();
    let mut out = PerConnection {
        latency: Some(histogram()),
        ..PerConnection::default()
    };
    let mut targets = Targets {
        second: 0,
        uris: Vec::new(),
    };
    let mut body = Vec::new();
    // Open loop: this connection's share of the rate, offset so that the
    // connections do not all fire at once.
    let interval = match phase.pace {
        Pace::Closed => Duration::ZERO,
        Pace::Open(rate) => Duration::from_secs_f64(phase.connections as f64 / rate),
    };
    let offset = interval.mul_f64(c as f64 / phase.connections as f64);
    tokio::time::sleep_until(shared.start.into()).await;
    let mut k: u32 = 0;
    // When the previous answer arrived (open loop: was the connection idle
    // at the next request's due time?).
    let mut idle_since = shared.start;
    loop {
        let due = match phase.pace {
            Pace::Closed => Instant::now(),
            Pace::Open(_) => shared.start + offset + interval * k,
        };
        if due >= shared.end {
            break;
        }
        k += 1;
        if let Pace::Open(_) = phase.pace {
            tokio::time::sleep_until(due.into()).await;
        }
        let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
        if seq >= shared.seq_limit {
            break;
        }
        if sender.is_none() {
            sender = connect(phase.addr).await;
        }
        let Some(s) = sender.as_mut() else {
            out.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let sent_us = unix_us();
        shared.workload.render(seq, sent_us, &mut body);
        let uri = targets.get(&shared.workload, shared.workload.command_of(seq), sent_us);
        let req = Request::post(uri)
            .header(header::HOST, host.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::copy_from_slice(&body)))
            .expect("a valid request");
        let began = match phase.pace {
            Pace::Open(_) if idle_since > due => due,
            Pace::Closed | Pace::Open(_) => Instant::now(),
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(s, req)).await {
            Ok(Some((status, ok))) => {
                let now = Instant::now();
                idle_since = now;
                let us = now.duration_since(began).as_micros() as u64;
                if let Some(h) = out.latency.as_mut() {
                    h.saturating_record(us.max(1));
                }
                out.last_answer = Some(now);
                if ok {
                    out.acked.push(seq);
                } else {
                    *out.refused.entry(status).or_default() += 1;
                }
            }
            Ok(None) | Err(_) => {
                out.errors += 1;
                sender = None;
                idle_since = Instant::now();
            }
        }
    }
    out
}

/// Sends one request and reads the whole answer: (status, is it 200 + OK body).
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Option<(u16, bool)> {
    sender.ready().await.ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    #[allow(clippy::disallowed_methods)] // our own servers' small answers
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, status == 200 && body.as_ref() == OK_BODY))
}
