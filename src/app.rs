//! Wiring: start the sink (and the embedded broker when no brokers are
//! configured), the readiness probe and both listeners; then the shutdown
//! sequence.
//!
//! Shutdown: readiness goes false → stop accepting → finish in-flight
//! requests → stop the forwarder → flush the producer (what does not flush
//! in time is purged, and so spooled) → close the spool → log final counts.
//! The drain is bounded by `BRIDGE_SHUTDOWN_TIMEOUT`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Config, DEMO_SDK_APP_ID, DEMO_TOKEN};
use crate::health::Health;
use crate::http::{self, State};
use crate::metrics::{Metrics, Snapshot};
use crate::sink::{EmbeddedKafka, KafkaSink, Publisher, Spool, forward};

/// How often readiness asks Kafka for the events topic's metadata.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// The two bound listeners. Tests bind `127.0.0.1:0` and read the ports.
pub struct Listeners {
    /// Callback port.
    pub callback: TcpListener,
    /// Admin port.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses from `config`.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let callback = TcpListener::bind(config.listen.callback)
            .await
            .with_context(|| {
                format!("cannot listen on BRIDGE_LISTEN={}", config.listen.callback)
            })?;
        let admin = TcpListener::bind(config.listen.admin)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on BRIDGE_ADMIN_LISTEN={}",
                    config.listen.admin
                )
            })?;
        Ok(Listeners { callback, admin })
    }

    /// Bound addresses (callback, admin).
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.callback.local_addr()?, self.admin.local_addr()?))
    }
}

/// Runs the bridge until `shutdown` resolves, then drains and returns the
/// final counts.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<Snapshot> {
    tracing::debug!(?config, "Configuration loaded.");
    if let Some(files) = &config.listen.tls {
        // Fail at start, with the file named, rather than on the first connection.
        http::tls_acceptor(files)?;
    }
    let metrics = Arc::new(Metrics::new());

    let topics = config.topics();
    let embedded = match &config.kafka.brokers {
        Some(_) => None,
        None => {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let e = EmbeddedKafka::start(&names)?;
            warn!(
                "No Kafka brokers configured (BRIDGE_KAFKA_BROKERS): using an embedded in-memory broker. Events are NOT persisted."
            );
            info!(
                topics = topics.join(","),
                "Embedded Kafka broker started: bootstrap.servers={}",
                e.bootstrap_servers()
            );
            Some(e)
        }
    };
    let bootstrap = match (&config.kafka.brokers, &embedded) {
        (Some(b), _) => b.clone(),
        (None, Some(e)) => e.bootstrap_servers().to_owned(),
        (None, None) => unreachable!("embedded broker started above when no brokers are set"),
    };
    if config.is_demo() {
        warn!(
            sdk_app_id = DEMO_SDK_APP_ID,
            token = DEMO_TOKEN,
            "No app configured: accepting the demo app. Set BRIDGE_SDKAPPID and BRIDGE_CALLBACK_TOKEN for real use."
        );
    }
    for app in config.apps.values() {
        if app.tokens.is_empty() {
            warn!(
                sdk_app_id = app.sdk_app_id,
                "App has no callback token: its callbacks are accepted without a signature."
            );
        }
    }

    let health = Arc::new(Health::new(config.spool.ack_mode));
    let segment_bytes = (config.spool.max_bytes / 8).clamp(16 * 1024, 64 * 1024 * 1024);
    let spool = Spool::open(
        &config.spool.dir,
        config.spool.max_bytes,
        segment_bytes,
        metrics.clone(),
    )?;
    metrics.spool_capacity(config.spool.max_bytes);
    let kafka = Arc::new(KafkaSink::new(
        &config.kafka,
        topics,
        &bootstrap,
        config.limits.max_body_bytes,
        metrics.clone(),
        spool.clone(),
        health.draining(),
    )?);
    let publisher = Publisher::new(
        kafka.clone(),
        spool.clone(),
        config.spool.ack_mode,
        config.spool.delivery_timeout,
    );
    let shutdown_timeout = config.shutdown_timeout;
    let (callback_addr, admin_addr) = listeners.local_addrs()?;
    info!(
        callback = %format!("http://{callback_addr}{}", config.listen.callback_path),
        admin = %format!("http://{admin_addr}"),
        topic = %config.kafka.topic,
        general_topic = %config.kafka.general_topic,
        dlq_topic = %config.kafka.dlq_topic,
        routes = config.routing.routes.iter().filter(|r| r.origin != "built-in").count(),
        publish_before = config.routing.publish_before,
        dedup_window = ?config.routing.dedup_window,
        ack_mode = config.spool.ack_mode.as_str(),
        spool_dir = %config.spool.dir.display(),
        apps = config.apps.len(),
        "chat-kafka-bridge {} listening.",
        env!("CARGO_PKG_VERSION")
    );
    let dedup = config
        .routing
        .dedup_window
        .map(|w| crate::dedup::Dedup::new(w, config.routing.dedup_max_entries));
    let state = Arc::new(State {
        config,
        dedup,
        metrics: metrics.clone(),
        publisher,
        health: health.clone(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let (forward_stop_tx, forward_stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let probe = tokio::spawn(probe_kafka(
        state.clone(),
        kafka.clone(),
        spool.clone(),
        stopped(stop_rx.clone()),
    ));
    let admin = tokio::spawn(http::serve_admin(
        listeners.admin,
        state.clone(),
        stopped(stop_rx.clone()),
    ));
    let forwarder = tokio::spawn(forward::run(
        spool.clone(),
        kafka.clone(),
        health.kafka(),
        metrics.clone(),
        stopped(forward_stop_rx),
    ));

    let began = Arc::new(OnceLock::<Instant>::new());
    let began_in_signal = began.clone();
    let state_in_signal = state.clone();
    let on_shutdown = async move {
        shutdown.await;
        let _ = began_in_signal.set(Instant::now());
        state_in_signal.health.set_shutting_down();
        state_in_signal.metrics.set_ready(false);
        info!(timeout = ?shutdown_timeout, "Shutdown requested: readiness is now false; draining.");
    };
    http::serve_callbacks(
        listeners.callback,
        state.clone(),
        on_shutdown,
        shutdown_timeout,
    )
    .await;

    // While Kafka is reachable, publish what the spool holds (on an emptyDir
    // it would be gone with the pod), keeping a second for the flush; what
    // is still there after that stays for the next start.
    let kafka_reachable = health.kafka();
    let spool_deadline = began.get().copied().unwrap_or_else(Instant::now) + shutdown_timeout;
    let spool_drain_began = Instant::now();
    while spool.pending() > 0
        && kafka_reachable.get()
        && Instant::now() + Duration::from_secs(1) < spool_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if spool_drain_began.elapsed() > Duration::from_millis(20) {
        info!(
            left_in_spool = spool.pending(),
            elapsed_ms = spool_drain_began.elapsed().as_millis() as u64,
            "Published the spool before stopping."
        );
    }
    let _ = forward_stop_tx.send(true);
    let _ = forwarder.await;
    // The drain so far counts against the same shutdown timeout.
    let drained_for = began.get().map_or(Duration::ZERO, Instant::elapsed);
    let mut left = shutdown_timeout.saturating_sub(drained_for);
    if !kafka_reachable.get() {
        // Kafka is unreachable: waiting would only delay the restart. What
        // is queued goes to the spool now.
        left = left.min(Duration::from_secs(1));
        info!("Kafka is unreachable: spooling queued events instead of waiting to flush them.");
    }
    let flush_kafka = kafka.clone();
    let flushed = tokio::task::spawn_blocking(move || {
        let result = flush_kafka.flush(left);
        if result.is_err() {
            // Whatever Kafka did not confirm in time fails now, and its
            // delivery report puts it in the spool.
            flush_kafka.purge();
            let _ = flush_kafka.flush(Duration::from_secs(5));
        }
        result
    })
    .await;
    match flushed {
        Ok(Ok(())) => info!("Kafka producer flushed."),
        Ok(Err(e)) => warn!(
            error = %e,
            "Kafka did not confirm every event within the shutdown timeout; the rest was spooled for the next start."
        ),
        Err(e) => error!(error = %e, "Flush task failed."),
    }
    let closing = spool.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || closing.close()).await {
        error!(error = %e, "Closing the spool failed.");
    }

    let _ = stop_tx.send(true);
    let _ = probe.await;
    let _ = admin.await;
    let totals = metrics.snapshot();
    info!(
        accepted = totals.accepted,
        rejected = totals.rejected,
        dead_lettered = totals.dead_lettered,
        enqueued = totals.enqueued,
        delivered = totals.delivered,
        failed = totals.failed,
        unconfirmed = totals.unconfirmed,
        spooled = totals.spooled,
        replayed = totals.replayed,
        spool_pending = spool.pending(),
        discarded = totals.discarded,
        "Stopped. Final counts."
    );
    drop(state);
    drop(kafka);
    drop(embedded);
    Ok(totals)
}

/// Keeps `Health`'s Kafka flag current by asking for every topic's metadata.
async fn probe_kafka(
    state: Arc<State>,
    kafka: Arc<KafkaSink>,
    spool: Spool,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut last_error = None::<String>;
    loop {
        spool.tick();
        let room_for = (state.config.limits.max_body_bytes as u64).min(64 * 1024);
        state.health.set_spool_full(spool.is_full(room_for));
        let k = kafka.clone();
        let result = tokio::task::spawn_blocking(move || k.probe(PROBE_INTERVAL))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let ok = result.is_ok();
        let was = state.health.set_kafka(ok);
        match result {
            Ok(()) if !was => info!("Kafka metadata for every topic is available: ready."),
            Ok(()) => {}
            Err(e) => {
                if was || last_error.as_deref() != Some(e.as_str()) {
                    warn!(error = %e, "No Kafka metadata for the topics: not ready.");
                }
                last_error = Some(e);
            }
        }
        state
            .metrics
            .set_ready(state.health.not_ready_reason().is_none());
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}
