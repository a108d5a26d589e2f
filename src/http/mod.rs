//! HTTP: the accept loops (callback and admin ports), connection limits and
//! timeouts, routing, and the graceful drain. Status codes are chosen only in
//! [`respond`].

pub mod admin;
pub mod callback;
mod conn;
pub mod respond;
mod tls;

pub use tls::acceptor as tls_acceptor;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
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
                    error!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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
        tokio::spawn(async move {
            // Counted down however the task ends, a panic included.
            let _open = open;
            match acceptor {
                None => conn::serve(stream, peer, state.clone(), closing).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        state.config.limits.header_read_timeout,
                        acceptor.accept(stream),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(tls)) => conn::serve(tls, peer, state.clone(), closing).await,
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

/// Serves the admin port until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) {
    const ADMIN_CONNECTIONS: usize = 64;
    let permits = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    error!(error = %e, "Accepting an admin connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(
                limit = ADMIN_CONNECTIONS,
                "Admin connection closed at once: too many open."
            );
            continue;
        };
        let state = state.clone();
        let service = service_fn(move |req| {
            let response = admin::handle(&state, &req);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
}
