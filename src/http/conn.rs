//! One callback connection: HTTP/1.1 with keep-alive, and the clocks hyper
//! does not keep for us.
//!
//! A connection is *idle* between requests, *reading a head* from its first
//! byte until the request reaches our service, and *busy* while we handle it.
//! A watchdog closes it when it stays idle longer than `BRIDGE_IDLE_TIMEOUT`
//! (gracefully) or takes longer than `BRIDGE_HEADER_READ_TIMEOUT` to send a
//! head (at once: a slow-drip client gets no more of our time). Body reads
//! are bounded in [`super::callback`]. Every trip is counted.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::{State, callback};
use crate::metrics::ConnectionClose;

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// What a connection is doing, and since when.
struct Activity {
    start: Instant,
    phase: AtomicU8,
    since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            phase: AtomicU8::new(IDLE),
            since_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn set(&self, phase: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Bytes arrived: an idle connection starts reading a head.
    fn bytes_read(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.set(HEAD);
        }
    }

    /// `(phase, how long in it)`.
    fn state(&self) -> (u8, Duration) {
        let since = self.since_ms.load(Ordering::Relaxed);
        let phase = self.phase.load(Ordering::Relaxed);
        (
            phase,
            Duration::from_millis(self.now_ms().saturating_sub(since)),
        )
    }
}

/// The socket (or TLS stream), noting when bytes arrive.
struct TrackedIo<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How often the watchdog looks at a connection.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);

/// Serves one connection until the client leaves, a timeout trips, or
/// `shutdown` turns true (then in-flight requests finish first).
pub async fn serve<I>(
    io: I,
    peer: SocketAddr,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &state.config;
    let (idle_timeout, header_timeout) = (
        config.limits.idle_timeout,
        config.limits.header_read_timeout,
    );
    let activity = Arc::new(Activity::new());
    let service = {
        let (state, activity) = (state.clone(), activity.clone());
        service_fn(move |req| {
            let (state, activity) = (state.clone(), activity.clone());
            async move {
                activity.set(BUSY);
                let response = callback::serve(&state, req, peer).await;
                activity.set(IDLE);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .max_header_size(config.limits.max_header_bytes)
        .max_buf_size(config.limits.max_header_bytes.max(8192) + 8192)
        .max_headers(100)
        // hyper's own head timer runs from the end of the previous request, so
        // it covers idle + head; the watchdog below trips first.
        .header_read_timeout(idle_timeout + header_timeout + Duration::from_secs(1));
    let io = TrackedIo {
        inner: io,
        activity: activity.clone(),
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
            _ = tick.tick() => {
                match activity.state() {
                    (IDLE, t) if t > idle_timeout && !closing => {
                        state.metrics.connection_closed_by(ConnectionClose::IdleTimeout);
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    (HEAD, t) if t > header_timeout => {
                        // No answer for a client that cannot send a head.
                        state.metrics.connection_closed_by(ConnectionClose::HeaderTimeout);
                        return;
                    }
                    _ => {}
                }
            }
        }
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
