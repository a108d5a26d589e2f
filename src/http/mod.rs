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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{error, info, warn};

use crate::config::{AckMode, Config};
use crate::metrics::Metrics;
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
}

/// Why `/readyz` says no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// SIGTERM received; draining.
    ShuttingDown,
    /// `enqueued` mode: the producer has no metadata for the topics.
    NoKafkaMetadata,
    /// `spooled` mode: the spool is full. `delivered` mode: the spool is
    /// full and Kafka is unreachable.
    SpoolFull,
}

impl NotReady {
    /// The `/readyz` body.
    pub fn as_str(self) -> &'static str {
        match self {
            NotReady::ShuttingDown => "not ready: shutting down\n",
            NotReady::NoKafkaMetadata => {
                "not ready: no Kafka metadata for the events and dead-letter topics yet\n"
            }
            NotReady::SpoolFull => "not ready: the spool is full and Kafka cannot take events\n",
        }
    }
}

/// Readiness inputs: can the bridge accept callbacks under its ack mode?
#[derive(Debug)]
pub struct Health {
    mode: AckMode,
    /// The latest Kafka probe (shared with the forwarder).
    pub kafka: Arc<AtomicBool>,
    spool_full: AtomicBool,
    /// Set on shutdown (shared with the delivery callback).
    pub shutting_down: Arc<AtomicBool>,
}

impl Health {
    /// Not ready until the first probe succeeds.
    pub fn new(mode: AckMode) -> Self {
        Health {
            mode,
            kafka: Arc::new(AtomicBool::new(false)),
            spool_full: AtomicBool::new(false),
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// `None` when ready.
    pub fn not_ready_reason(&self) -> Option<NotReady> {
        let kafka = self.kafka.load(Ordering::Acquire);
        let spool_room = !self.spool_full.load(Ordering::Acquire);
        if self.shutting_down.load(Ordering::Acquire) {
            return Some(NotReady::ShuttingDown);
        }
        match self.mode {
            AckMode::Enqueued if !kafka => Some(NotReady::NoKafkaMetadata),
            AckMode::Spooled if !spool_room => Some(NotReady::SpoolFull),
            AckMode::Delivered if !kafka && !spool_room => Some(NotReady::SpoolFull),
            AckMode::Enqueued | AckMode::Spooled | AckMode::Delivered => None,
        }
    }

    /// Records the latest Kafka probe; returns the previous value.
    pub fn set_kafka(&self, ok: bool) -> bool {
        self.kafka.swap(ok, Ordering::AcqRel)
    }

    /// Records whether the spool can take another record.
    pub fn set_spool_full(&self, full: bool) {
        self.spool_full.store(full, Ordering::Release);
    }

    /// Marks the bridge as draining (irreversible).
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
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
    let limit = state.config.max_connections;
    let permits = Arc::new(Semaphore::new(limit));
    let acceptor = match &state.config.tls {
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
        state.metrics.connection_opened();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => conn::serve(stream, peer, state.clone(), closing).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        state.config.header_read_timeout,
                        acceptor.accept(stream),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(tls)) => conn::serve(tls, peer, state.clone(), closing).await,
                        Ok(Err(e)) => state.metrics.connection_error("tls_handshake", &e),
                        Err(_) => state
                            .metrics
                            .connection_error("tls_handshake", &"handshake timed out"),
                    }
                }
            }
            state.metrics.connection_closed();
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
