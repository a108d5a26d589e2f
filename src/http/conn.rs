//! One connection, on either port: HTTP/1.1 with keep-alive, and the clocks
//! hyper does not keep for us.
//!
//! A watchdog looks at each connection a few times a second and closes it
//! when it:
//!
//! - takes longer than the header timeout to send a head, counted from the
//!   head's first byte ([`super::scan`] finds it in the raw stream, even in
//!   the same read as the previous request), or, for the first request,
//!   from the accept: a connection that sends nothing is closed at the
//!   header timeout (issue 12, finding 8);
//! - stays idle, between an answer and the next head's first byte, longer
//!   than the idle timeout (the header timeout while the port's connection
//!   slots are nearly all taken, so idle connections cannot hoard them);
//! - leaves a write unaccepted for longer than [`WRITE_TIMEOUT`] (a client
//!   that pipelines requests and reads no answer).
//!
//! Body reads are bounded in [`super::callback`]. Every trip is counted.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};

use super::scan::Scanner;
use super::{State, admin, callback};
use crate::metrics::ConnectionClose;

/// How long a write may stay unaccepted by the client.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the watchdog looks at a connection.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);
/// `u64::MAX` as "not set" in the atomics below.
const NEVER: u64 = u64::MAX;

/// Which port a connection is on, and so what it serves.
#[derive(Clone)]
pub enum Port {
    /// Tencent's callbacks.
    Callback,
    /// `/metrics`, `/healthz`, `/readyz`; `probes_only` for connections
    /// admitted beyond the port's limit into the probes' reserve.
    Admin {
        /// Only `/healthz` and `/readyz` are answered.
        probes_only: bool,
    },
}

/// The clocks one connection keeps, in milliseconds since it was accepted.
struct Activity {
    start: Instant,
    /// A request is being handled.
    busy: AtomicBool,
    /// No request has been answered yet.
    first: AtomicBool,
    /// When the last answer was produced (or the accept).
    answered_ms: AtomicU64,
    /// When the current head's first byte arrived; `NEVER` outside a head.
    head_ms: AtomicU64,
    /// Since when a write has been waiting for the client; `NEVER` if none.
    write_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            busy: AtomicBool::new(false),
            first: AtomicBool::new(true),
            answered_ms: AtomicU64::new(0),
            head_ms: AtomicU64::new(NEVER),
            write_ms: AtomicU64::new(NEVER),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    fn age(&self, since: &AtomicU64) -> Option<Duration> {
        match since.load(Ordering::Relaxed) {
            NEVER => None,
            t => Some(Duration::from_millis(self.now_ms().saturating_sub(t))),
        }
    }
}

/// The socket (or TLS stream), telling the activity what it reads and
/// whether its writes are accepted.
struct TrackedIo<I> {
    inner: I,
    activity: Arc<Activity>,
    scanner: Scanner,
    /// The answer count the scanner last saw.
    answers_seen: u64,
    answers: Arc<AtomicU64>,
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let answers = self.answers.load(Ordering::Relaxed);
        if answers != self.answers_seen {
            self.answers_seen = answers;
            self.scanner.answered();
        }
        if buf.filled().len() > before {
            let seen = self.scanner.read(&buf.filled()[before..]);
            let a = &self.activity;
            if seen.head_began {
                a.head_ms.store(a.now_ms(), Ordering::Relaxed);
            } else if seen.head_ended {
                a.head_ms.store(NEVER, Ordering::Relaxed);
            }
            if seen.head_began && !self.scanner.in_head() {
                a.head_ms.store(NEVER, Ordering::Relaxed);
            }
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> TrackedIo<I> {
    fn track<T>(&self, poll: Poll<T>) -> Poll<T> {
        let a = &self.activity;
        match poll {
            Poll::Pending => {
                let _ = a.write_ms.compare_exchange(
                    NEVER,
                    a.now_ms(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => a.write_ms.store(NEVER, Ordering::Relaxed),
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(poll)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(poll)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(poll)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How long a connection may take, and how full its port is.
pub struct Limits {
    /// From a head's first byte (and from the accept) to its end.
    pub header_timeout: Duration,
    /// Between an answer and the next head's first byte.
    pub idle_timeout: Duration,
    /// Largest head.
    pub max_header_bytes: usize,
    /// The port's connection slots, to shrink the idle timeout when few are free.
    pub slots: Arc<Semaphore>,
    /// How many slots the port has.
    pub slot_count: usize,
}

impl Limits {
    /// Fewer than a tenth of the port's slots are free.
    fn under_pressure(&self) -> bool {
        self.slots.available_permits() < self.slot_count.div_ceil(10)
    }
}

/// Serves one connection until the client leaves, a timeout trips, or
/// `shutdown` turns true (then in-flight requests finish first).
pub async fn serve<I>(
    io: I,
    peer: SocketAddr,
    state: Arc<State>,
    port: Port,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let answers = Arc::new(AtomicU64::new(0));
    let service = {
        let (state, activity, answers) = (state.clone(), activity.clone(), answers.clone());
        service_fn(move |req| {
            let (state, activity, answers) = (state.clone(), activity.clone(), answers.clone());
            let port = port.clone();
            async move {
                activity.busy.store(true, Ordering::Relaxed);
                let response = match port {
                    Port::Callback => callback::serve(&state, req, peer).await,
                    Port::Admin { probes_only } => admin::handle(&state, &req, probes_only).await,
                };
                activity
                    .answered_ms
                    .store(activity.now_ms(), Ordering::Relaxed);
                activity.first.store(false, Ordering::Relaxed);
                answers.fetch_add(1, Ordering::Relaxed);
                activity.busy.store(false, Ordering::Relaxed);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192)
        .max_headers(100)
        // hyper's own head timer runs from the end of the previous request, so
        // it covers idle + head; the watchdog below trips first.
        .header_read_timeout(limits.idle_timeout + limits.header_timeout + Duration::from_secs(1));
    let io = TrackedIo {
        inner: io,
        activity: activity.clone(),
        scanner: Scanner::default(),
        answers_seen: 0,
        answers,
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(WATCHDOG_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    state.metrics.connection_error(classify(&e), &e);
                }
                return;
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tick.tick() => match watchdog(&activity, &limits) {
                Verdict::Fine => {}
                Verdict::Close(reason) => {
                    // No answer for a client that cannot send a head or take one.
                    state.metrics.connection_closed_by(reason);
                    return;
                }
                Verdict::Idle if !closing => {
                    state.metrics.connection_closed_by(ConnectionClose::IdleTimeout);
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Verdict::Idle => {}
            },
        }
    }
}

/// What the watchdog decides.
enum Verdict {
    Fine,
    /// Close at once.
    Close(ConnectionClose),
    /// Close after the answer in flight, if any.
    Idle,
}

fn watchdog(a: &Activity, limits: &Limits) -> Verdict {
    if a.age(&a.write_ms).is_some_and(|t| t > WRITE_TIMEOUT) {
        return Verdict::Close(ConnectionClose::WriteTimeout);
    }
    if a.age(&a.head_ms).is_some_and(|t| t > limits.header_timeout) {
        return Verdict::Close(ConnectionClose::HeaderTimeout);
    }
    if a.busy.load(Ordering::Relaxed) || a.head_ms.load(Ordering::Relaxed) != NEVER {
        return Verdict::Fine;
    }
    let quiet = a.age(&a.answered_ms).unwrap_or_default();
    if a.first.load(Ordering::Relaxed) {
        // Nothing sent since the accept.
        return if quiet > limits.header_timeout {
            Verdict::Close(ConnectionClose::HeaderTimeout)
        } else {
            Verdict::Fine
        };
    }
    let idle = if limits.under_pressure() {
        limits.header_timeout.min(limits.idle_timeout)
    } else {
        limits.idle_timeout
    };
    if quiet > idle {
        Verdict::Idle
    } else {
        Verdict::Fine
    }
}

/// Bounded label for a connection that ended with an error.
fn classify(e: &hyper::Error) -> ConnectionClose {
    if e.is_parse_too_large() {
        ConnectionClose::HeadersTooLarge
    } else if e.is_parse() || e.is_parse_status() {
        ConnectionClose::MalformedHttp
    } else if e.is_timeout() {
        ConnectionClose::HeaderTimeout
    } else if e.is_incomplete_message() {
        ConnectionClose::IncompleteRequest
    } else {
        ConnectionClose::IoError
    }
}
