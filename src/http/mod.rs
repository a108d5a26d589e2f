//! HTTP: the accept loops (callback and admin ports), connection limits and
//! timeouts, routing, and the graceful drain. Status codes are chosen only in
//! [`respond`].

pub mod admin;
pub mod callback;
mod conn;
pub mod respond;
mod scan;
mod tls;

pub use tls::acceptor as tls_acceptor;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::health::Health;
use crate::metrics::{ConnectionClose, Metrics};
use crate::sink::Publisher;

/// Everything a request handler needs, shared by all connections.
pub struct State {
    /// Validated configuration.
    pub config: Config,
    /// The de-duplication window, when `BRIDGE_DEDUP_WINDOW` is set.
    pub dedup: Option<crate::dedup::Dedup>,
    /// This instance's metrics.
    pub metrics: Arc<Metrics>,
    /// The producer, the spool and the acknowledgement mode.
    pub publisher: Publisher,
    /// Readiness inputs.
    pub health: Arc<Health>,
    /// Body bytes being read and parsed, process-wide
    /// (`BRIDGE_MAX_INFLIGHT_BODY_BYTES`, one permit a byte).
    pub body_budget: Arc<Semaphore>,
}

/// One open callback connection in `chat_bridge_http_connections`: counted
/// up when made, down when dropped (issue 12, finding 5: a worker that
/// panicked left the gauge one higher for good).
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.connection_opened();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// Serves the callback port until `shutdown` resolves, then stops accepting
/// and lets in-flight requests finish for at most `drain`.
pub async fn serve_callbacks(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let limit = state.config.limits.max_connections;
    let permits = Arc::new(Semaphore::new(limit));
    let acceptor = match &state.config.listen.tls {
        Some(files) => match tls::acceptor(files) {
            Ok(a) => Some(a),
            Err(e) => {
                // Checked at start (app::run), so this is a file changed since.
                error!(
                    error = format!("{e:#}"),
                    "TLS setup failed; not serving callbacks."
                );
                return;
            }
        },
        None => None,
    };
    let (closing_tx, closing_rx) = watch::channel(false);
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    state.metrics.accept_failed("callback", &e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            state.metrics.connection_refused(limit);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let closing = closing_rx.clone();
        let open = OpenConnection::new(state.metrics.clone());
        let acceptor = acceptor.clone();
        let limits = conn::Limits {
            header_timeout: state.config.limits.header_read_timeout,
            idle_timeout: state.config.limits.idle_timeout,
            max_header_bytes: state.config.limits.max_header_bytes,
            slots: permits.clone(),
            slot_count: limit,
        };
        tokio::spawn(async move {
            // Counted down however the task ends, a panic included.
            let _open = open;
            let port = conn::Port::Callback;
            match acceptor {
                None => conn::serve(stream, peer, state.clone(), port, limits, closing).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            conn::serve(tls, peer, state.clone(), port, limits, closing).await;
                        }
                        Ok(Err(e)) => state
                            .metrics
                            .connection_error(ConnectionClose::TlsHandshake, &e),
                        Err(_) => state.metrics.connection_error(
                            ConnectionClose::TlsHandshake,
                            &"handshake timed out",
                        ),
                    }
                }
            }
            drop(permit);
        });
    }

    drop(listener);
    info!("Stopped accepting callbacks; finishing in-flight requests.");
    let _ = closing_tx.send(true);
    let all = u32::try_from(limit).unwrap_or(u32::MAX);
    tokio::select! {
        _ = permits.acquire_many(all) => info!("In-flight requests finished."),
        () = tokio::time::sleep(drain) => warn!(
            timeout = ?drain,
            "In-flight requests did not finish within the shutdown timeout; closing their connections."
        ),
    }
}

/// How long an accept loop waits after a failed accept (out of file
/// descriptors, ...) before it tries again, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connections the admin port serves fully (`/metrics` included).
pub const ADMIN_CONNECTIONS: usize = 64;
/// More connections it takes when those are taken, answering only the
/// probes: stuck scrapes cannot keep `/healthz` and `/readyz` from the
/// kubelet (issue 12, finding 7).
pub const ADMIN_PROBE_RESERVE: usize = 64;
/// The admin port's header and idle timeouts: its clients are the kubelet
/// and Prometheus, on the local network.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin port until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) {
    let full = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
    let reserve = Arc::new(Semaphore::new(ADMIN_PROBE_RESERVE));
    let (_closing_tx, closing_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    state.metrics.accept_failed("admin", &e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let (permit, probes_only, slots, slot_count) = match full.clone().try_acquire_owned() {
            Ok(p) => (p, false, full.clone(), ADMIN_CONNECTIONS),
            Err(_) => match reserve.clone().try_acquire_owned() {
                Ok(p) => (p, true, reserve.clone(), ADMIN_PROBE_RESERVE),
                Err(_) => {
                    state
                        .metrics
                        .admin_connection_refused(ADMIN_CONNECTIONS + ADMIN_PROBE_RESERVE);
                    continue;
                }
            },
        };
        let state = state.clone();
        let closing = closing_rx.clone();
        let limits = conn::Limits {
            header_timeout: ADMIN_HEADER_TIMEOUT,
            idle_timeout: ADMIN_IDLE_TIMEOUT,
            max_header_bytes: 8192,
            slots,
            slot_count,
        };
        tokio::spawn(async move {
            let port = conn::Port::Admin { probes_only };
            conn::serve(stream, peer, state, port, limits, closing).await;
            drop(permit);
        });
    }
}
