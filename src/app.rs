//! Wiring and the shutdown sequence.
//!
//! [`run`] starts the bridge (`Bridge::start`: the embedded broker when
//! no brokers are configured, the spool, the producer, the request state),
//! spawns its background tasks (`Tasks`: the readiness probe, the spool's
//! upkeep, the forwarder, the admin port), serves callbacks until the
//! shutdown signal, and then stops in named steps (`Bridge::shutdown`):
//! readiness goes false → stop accepting → finish in-flight requests →
//! publish the spool while Kafka is up → stop the forwarder → flush the
//! producer (what does not flush in time is purged, and so spooled) →
//! close the spool → stop the tasks → log final counts. The whole drain is
//! bounded by `BRIDGE_SHUTDOWN_TIMEOUT`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{Config, DEMO_SDK_APP_ID, DEMO_TOKEN};
use crate::health::{Health, KafkaReachable};
use crate::http::{self, State};
use crate::metrics::{Metrics, Snapshot};
use crate::sink::{EmbeddedKafka, KafkaSink, Publisher, Spool, forward};

/// How often readiness asks Kafka for the topics' metadata.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How often the spool's gauges, checkpoint and fullness are refreshed:
/// the checkpoint bounds what a crash replays.
const SPOOL_UPKEEP_INTERVAL: Duration = Duration::from_millis(250);

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
        let at = &config.listen;
        let callback = TcpListener::bind(at.callback)
            .await
            .with_context(|| format!("cannot listen on BRIDGE_LISTEN={}", at.callback))?;
        let admin = TcpListener::bind(at.admin)
            .await
            .with_context(|| format!("cannot listen on BRIDGE_ADMIN_LISTEN={}", at.admin))?;
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
    let (callback_addr, admin_addr) = listeners.local_addrs()?;
    let bridge = Bridge::start(config)?;
    bridge.announce(callback_addr, admin_addr);
    let tasks = bridge.spawn_tasks(listeners.admin);
    let signalled = bridge.serve(listeners.callback, shutdown).await;
    Ok(bridge.shutdown(signalled, tasks).await)
}

/// A started bridge: what the shutdown steps need.
struct Bridge {
    state: Arc<State>,
    kafka: Arc<KafkaSink>,
    spool: Spool,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown_timeout: Duration,
    /// Kept alive until the producer is gone.
    embedded: Option<EmbeddedKafka>,
}

/// The background tasks and how to stop them.
struct Tasks {
    /// Stops the probe, the upkeep and the admin port (last).
    stop: watch::Sender<bool>,
    /// Stops the forwarder (before the flush).
    stop_forwarder: watch::Sender<bool>,
    forwarder: JoinHandle<()>,
    others: Vec<JoinHandle<()>>,
}

/// Resolves once `rx` turns true.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl Bridge {
    /// Wiring: the embedded broker (no brokers configured), the spool, the
    /// producer, the publisher and the request state.
    fn start(mut config: Config) -> anyhow::Result<Bridge> {
        fit_file_descriptors(&mut config)?;
        if let Some(files) = &config.listen.tls {
            // Fail at start, with the file named, rather than on the first connection.
            http::tls_acceptor(files)?;
        }
        let metrics = Arc::new(Metrics::new());
        let topics = config.topics();
        let embedded = match &config.kafka.brokers {
            Some(_) => None,
            None => Some(start_embedded(&topics)?),
        };
        let bootstrap = match (&config.kafka.brokers, &embedded) {
            (Some(b), _) => b.clone(),
            (None, Some(e)) => e.bootstrap_servers().to_owned(),
            (None, None) => unreachable!("embedded broker started above when no brokers are set"),
        };
        warn_about_apps(&config);

        let health = Arc::new(Health::new(config.spool.ack_mode));
        let max_bytes = config.spool.max_bytes;
        let segment_bytes = (max_bytes / 8).clamp(16 * 1024, 64 * 1024 * 1024);
        let spool = Spool::open(&config.spool.dir, max_bytes, segment_bytes, metrics.clone())?;
        metrics.spool_capacity(max_bytes);
        let dead_letter_topics = config
            .apps
            .values()
            .map(|a| (a.sdk_app_id, a.topics.dead_letter.clone()))
            .collect();
        let kafka = Arc::new(KafkaSink::new(
            &config.kafka,
            topics,
            &bootstrap,
            dead_letter_topics,
            metrics.clone(),
            spool.clone(),
            health.draining(),
        )?);
        let publisher = Publisher::new(
            kafka.clone(),
            spool.clone(),
            config.spool.ack_mode,
            config.spool.delivery_timeout,
            metrics.clone(),
        );
        let dedup = config
            .routing
            .dedup_window
            .map(|w| crate::dedup::Dedup::new(w, config.routing.dedup_max_entries));
        let shutdown_timeout = config.shutdown_timeout;
        let body_budget = Arc::new(tokio::sync::Semaphore::new(
            config.limits.max_inflight_body_bytes,
        ));
        let state = Arc::new(State {
            config,
            dedup,
            metrics: metrics.clone(),
            publisher,
            health: health.clone(),
            body_budget,
        });
        Ok(Bridge {
            state,
            kafka,
            spool,
            health,
            metrics,
            shutdown_timeout,
            embedded,
        })
    }

    /// The one "listening" line, with what an operator checks first.
    fn announce(&self, callback: SocketAddr, admin: SocketAddr) {
        let config = &self.state.config;
        info!(
            callback = %format!("http://{callback}{}", config.listen.callback_path),
            admin = %format!("http://{admin}"),
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
    }

    /// The readiness probe, the spool's upkeep, the forwarder and the admin port.
    fn spawn_tasks(&self, admin: TcpListener) -> Tasks {
        let (stop, stop_rx) = watch::channel(false);
        let (stop_forwarder, forwarder_rx) = watch::channel(false);
        let probe = tokio::spawn(probe_kafka(
            self.kafka.clone(),
            self.health.clone(),
            self.metrics.clone(),
            stopped(stop_rx.clone()),
        ));
        let room_for = (self.state.config.limits.max_body_bytes as u64).min(64 * 1024);
        let upkeep = tokio::spawn(spool_upkeep(
            self.spool.clone(),
            self.health.clone(),
            room_for,
            stopped(stop_rx.clone()),
        ));
        let admin = tokio::spawn(http::serve_admin(
            admin,
            self.state.clone(),
            stopped(stop_rx),
        ));
        let forwarder = tokio::spawn(forward::run(
            self.spool.clone(),
            self.kafka.clone(),
            self.health.kafka(),
            self.metrics.clone(),
            stopped(forwarder_rx),
        ));
        Tasks {
            stop,
            stop_forwarder,
            forwarder,
            others: vec![probe, upkeep, admin],
        }
    }

    /// Serves callbacks until `shutdown` resolves; then readiness goes false,
    /// the listener closes and in-flight requests finish (within the
    /// shutdown timeout). Returns when the signal came.
    async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Instant {
        let (stop_accepting, rx) = watch::channel(false);
        let server = tokio::spawn(http::serve_callbacks(
            listener,
            self.state.clone(),
            stopped(rx),
            self.shutdown_timeout,
        ));
        tokio::pin!(server);
        tokio::select! {
            () = shutdown => {}
            // The server gave up on its own (its TLS files changed since start).
            _ = &mut server => return Instant::now(),
        }
        let signalled = Instant::now();
        self.health.set_shutting_down();
        self.metrics.set_ready(false);
        info!(timeout = ?self.shutdown_timeout, "Shutdown requested: readiness is now false; draining.");
        let _ = stop_accepting.send(true);
        if let Err(e) = server.await {
            error!(error = %e, "The callback server failed.");
        }
        signalled
    }

    /// The rest of the shutdown sequence, after the HTTP drain, within what
    /// is left of the shutdown timeout since `signalled`.
    async fn shutdown(self, signalled: Instant, tasks: Tasks) -> Snapshot {
        let deadline = signalled + self.shutdown_timeout;
        let kafka_up = self.health.kafka();
        publish_spool(&self.spool, &kafka_up, deadline).await;
        let _ = tasks.stop_forwarder.send(true);
        let _ = tasks.forwarder.await;
        flush_producer(&self.kafka, &kafka_up, deadline).await;
        let closing = self.spool.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || closing.close()).await {
            error!(error = %e, "Closing the spool failed.");
        }
        let _ = tasks.stop.send(true);
        for task in tasks.others {
            let _ = task.await;
        }
        let totals = self.metrics.snapshot();
        log_final_counts(&totals, self.spool.pending());
        // The producer goes before the embedded broker it talks to.
        drop(self.state);
        drop(self.kafka);
        drop(self.embedded);
        totals
    }
}

/// File descriptors the bridge needs besides its callback connections: the
/// admin port's connections, Kafka's sockets, the spool's files, the runtime.
const FD_RESERVE: u64 = (http::ADMIN_CONNECTIONS + http::ADMIN_PROBE_RESERVE) as u64 + 128;

/// Makes `BRIDGE_MAX_CONNECTIONS` fit `RLIMIT_NOFILE` (issue 12, finding 9:
/// with 256 descriptors, 300 silent connections stopped callbacks and
/// `/healthz`): raises the soft limit to the hard one, and when that is
/// still too low, lowers the connection limit with a WARN naming both, or
/// refuses to start when too few would be left.
fn fit_file_descriptors(config: &mut Config) -> anyhow::Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let soft = limit.current.unwrap_or(u64::MAX);
    let soft = if soft < hard {
        match setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(hard),
                maximum: limit.maximum,
            },
        ) {
            Ok(()) => hard,
            Err(e) => {
                warn!(soft, hard, error = %e, "Could not raise RLIMIT_NOFILE to its hard limit.");
                soft
            }
        }
    } else {
        soft
    };
    let wanted = config.limits.max_connections as u64;
    if soft >= wanted + FD_RESERVE {
        return Ok(());
    }
    let fits = soft.saturating_sub(FD_RESERVE);
    if fits < 16 {
        anyhow::bail!(
            "RLIMIT_NOFILE is {soft}: too few file descriptors for even 16 callback connections \
             (the bridge keeps {FD_RESERVE} for the admin port, Kafka and the spool); raise it (ulimit -n)"
        );
    }
    warn!(
        rlimit_nofile = soft,
        configured = wanted,
        lowered_to = fits,
        "Lowering BRIDGE_MAX_CONNECTIONS to fit RLIMIT_NOFILE (raise it with ulimit -n, or set BRIDGE_MAX_CONNECTIONS yourself)."
    );
    config.limits.max_connections = usize::try_from(fits).unwrap_or(usize::MAX);
    Ok(())
}

/// librdkafka's mock cluster with `topics`, for zero-config runs.
fn start_embedded(topics: &[String]) -> anyhow::Result<EmbeddedKafka> {
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
    Ok(e)
}

/// Warns about the demo app and about apps without a token.
fn warn_about_apps(config: &Config) {
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
}

/// Shutdown step: while Kafka is reachable, publish what the spool holds
/// (on an emptyDir it would be gone with the pod), keeping a second of the
/// deadline for the flush; what is still there stays for the next start.
async fn publish_spool(spool: &Spool, kafka_up: &KafkaReachable, deadline: Instant) {
    let began = Instant::now();
    let until = tokio::time::Instant::from_std(deadline) - Duration::from_secs(1);
    while spool.pending() > 0 && kafka_up.get() && tokio::time::Instant::now() < until {
        // Woken when the spool empties; the timeout re-reads the probe.
        let _ = tokio::time::timeout_at(
            until.min(tokio::time::Instant::now() + Duration::from_millis(250)),
            spool.until_empty(),
        )
        .await;
    }
    if began.elapsed() > Duration::from_millis(20) {
        info!(
            left_in_spool = spool.pending(),
            elapsed_ms = began.elapsed().as_millis() as u64,
            "Published the spool before stopping."
        );
    }
}

/// Shutdown step: waits for Kafka to confirm what the producer holds, for
/// what is left of the deadline (a second when Kafka is unreachable);
/// whatever is not confirmed by then is purged, and its failed delivery
/// report puts it in the spool.
async fn flush_producer(kafka: &Arc<KafkaSink>, kafka_up: &KafkaReachable, deadline: Instant) {
    let mut left = deadline.saturating_duration_since(Instant::now());
    if !kafka_up.get() {
        // Waiting would only delay the restart: what is queued goes to the spool now.
        left = left.min(Duration::from_secs(1));
        info!("Kafka is unreachable: spooling queued events instead of waiting to flush them.");
    }
    let kafka = kafka.clone();
    let flushed = tokio::task::spawn_blocking(move || {
        let result = kafka.flush(left);
        if result.is_err() {
            kafka.purge();
            let _ = kafka.flush(Duration::from_secs(5));
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
}

/// The last line: what this process did.
fn log_final_counts(totals: &Snapshot, spool_pending: u64) {
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
        spool_pending,
        discarded = totals.discarded,
        "Stopped. Final counts."
    );
}

/// Keeps `Health`'s Kafka flag current by asking for every topic's metadata.
async fn probe_kafka(
    kafka: Arc<KafkaSink>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut last_error = None::<String>;
    loop {
        let k = kafka.clone();
        let result = tokio::task::spawn_blocking(move || k.probe(PROBE_INTERVAL))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let was = health.set_kafka(result.is_ok());
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
        metrics.set_ready(health.not_ready_reason().is_none());
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

/// The spool's one owner between start and close: refreshes its gauges,
/// writes its checkpoint (bounding what a crash replays) and tells
/// readiness whether a new record of `room_for` bytes still fits.
async fn spool_upkeep(
    spool: Spool,
    health: Arc<Health>,
    room_for: u64,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    loop {
        let s = spool.clone();
        let _ = tokio::task::spawn_blocking(move || s.tick()).await;
        health.set_spool_full(spool.is_full(room_for));
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(SPOOL_UPKEEP_INTERVAL) => {}
        }
    }
}
