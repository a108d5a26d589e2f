//! The zero-config default: librdkafka's in-process mock cluster, reachable by
//! any Kafka client on a loopback port. Events live only in memory (and only
//! about 5 MB per partition), so this is for trying the bridge, not for use.

use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use rdkafka::mocking::MockCluster;

/// Partitions of each embedded topic.
pub const EMBEDDED_PARTITIONS: i32 = 3;

/// A running in-memory Kafka-protocol broker.
///
/// The mock cluster is not `Send`, so it lives on a thread of its own until
/// this handle is dropped.
pub struct EmbeddedKafka {
    bootstrap_servers: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a one-broker mock cluster and creates `topics` on it.
    pub fn start(topics: &[&str]) -> anyhow::Result<Self> {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let started = (|| {
                    let cluster = MockCluster::new(1).context("starting the mock cluster")?;
                    for t in &topics {
                        cluster
                            .create_topic(t, EMBEDDED_PARTITIONS, 1)
                            .with_context(|| format!("creating topic {t}"))?;
                    }
                    Ok(cluster)
                })();
                match started {
                    Ok(cluster) => {
                        let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                        // Keep the cluster alive until the handle is dropped.
                        let _ = stop_rx.recv();
                        drop(cluster);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .context("spawning the embedded Kafka thread")?;
        let bootstrap_servers = ready_rx
            .recv()
            .context("the embedded Kafka thread exited")??;
        Ok(EmbeddedKafka {
            bootstrap_servers,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `host:port` of the embedded broker.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
