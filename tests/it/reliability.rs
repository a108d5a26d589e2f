//! Delivery modes and Kafka faults, against real brokers: every callback
//! answered OK must end up in Kafka. Each scenario prints a `[fault]` line
//! with its figures (copied into docs/reliability.md).

use std::sync::Arc;
use std::time::Duration;

use crate::harness::{TestBridge, consume, count_records, create_bridge_topics_on, get, unique};
use crate::kafka::Cluster;
use crate::load::{Load, report, verify};

async fn cluster(nodes: usize) -> Arc<Cluster> {
    let c = tokio::task::spawn_blocking(move || Cluster::start(nodes))
        .await
        .expect("cluster thread")
        .unwrap_or_else(|e| panic!("starting a {nodes}-node Kafka cluster: {e}"));
    Arc::new(c)
}

/// A dedicated cluster of `nodes` with the events and dead-letter topics
/// (replication = nodes) created on it, and the brokers' address.
async fn cluster_with_topics(nodes: usize, name: &str) -> (Arc<Cluster>, String, String) {
    let kafka = cluster(nodes).await;
    let brokers = kafka.bootstrap();
    let topic = unique(name);
    let replication = i32::try_from(nodes).expect("a few nodes");
    create_bridge_topics_on(&brokers, &topic, replication).await;
    (kafka, brokers, topic)
}

/// A bridge on `brokers` writing `topic`, ready.
async fn ready_bridge(brokers: &str, topic: &str, extra: &[&str]) -> TestBridge {
    let bridge = TestBridge::start_with(brokers, topic, extra).await;
    bridge.wait_ready().await;
    bridge
}

async fn signal(c: &Arc<Cluster>, node: usize, sig: &'static str) {
    let c = c.clone();
    tokio::task::spawn_blocking(move || c.signal(node, sig))
        .await
        .expect("signal thread");
}

async fn restart(c: &Arc<Cluster>, node: usize) {
    let c = c.clone();
    tokio::task::spawn_blocking(move || {
        c.restart(node);
        c.wait_ready(Duration::from_secs(90)).expect("cluster back");
    })
    .await
    .expect("restart thread");
}

/// Waits until the bridge has nothing unconfirmed and nothing spooled.
async fn drained(bridge: &TestBridge, within: Duration) {
    assert_eventually!(
        bridge.metric("chat_bridge_kafka_unconfirmed_events").await == 0.0
            && bridge.metric("chat_bridge_spool_events").await == 0.0,
        within,
        "the bridge never drained (unconfirmed {}, spooled {})",
        bridge.metric("chat_bridge_kafka_unconfirmed_events").await,
        bridge.metric("chat_bridge_spool_events").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_mode_answers_after_fsync_and_the_forwarder_publishes() {
    let bridge = TestBridge::start(&["--ack-mode", "spooled"]).await;
    let names: Vec<String> = crate::harness::fixture_names()
        .into_iter()
        .filter(|n| n.starts_with("OfficialAccount."))
        .collect();
    for name in &names {
        assert_eq!(bridge.send_fixture(name).await.status, 200, "{name}");
    }
    // "Before" callbacks are answered once queued, whatever the mode; the
    // others only once spooled.
    let before = names
        .iter()
        .filter(|n| n.contains("CallbackBefore"))
        .count();
    assert_eq!(before, 3, "{names:?}");
    let n = (names.len() - before) as f64;
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_spool_appends_total{cause="accepted"}"#)
            .await,
        n,
        "every After callback was spooled before its answer"
    );
    assert_eq!(
        consume(&bridge.topic, names.len(), Duration::from_secs(30))
            .await
            .len(),
        names.len()
    );
    drained(&bridge, Duration::from_secs(30)).await;
    assert_eq!(bridge.metric("chat_bridge_spool_replayed_total").await, n);
    let totals = bridge.stop().await;
    assert_eq!(totals.discarded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_mode_answers_after_kafka_acknowledged() {
    let bridge = TestBridge::start(&["--ack-mode", "delivered"]).await;
    for (i, name) in [
        "OfficialAccount.CallbackAfterCreateOfficialAccount.json",
        "OfficialAccount.CallbackAfterOfficialAccountInfoChanged.json",
        "OfficialAccount.CallbackAfterOfficialAccountFull.json",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(bridge.send_fixture(name).await.status, 200);
        // No waiting: the answer came after the broker's acknowledgement.
        assert_eq!(count_records(&bridge.topic).await, i + 1, "{name}");
    }
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_kafka_deliveries_total{error_class="none",result="delivered",stream="events"}"#)
            .await,
        3.0
    );
    assert_eq!(bridge.metric("chat_bridge_spool_appends_total").await, 0.0);
    bridge.stop().await;
}

/// Fault 1: the broker is killed with SIGKILL under steady load and
/// restarted 30 s later (enqueued mode: librdkafka holds and retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_broker_killed_and_restarted_30s_later() {
    let (kafka, brokers, topic) = cluster_with_topics(1, "kill9").await;
    let bridge = ready_bridge(&brokers, &topic, &[]).await;
    let load = Load::start(
        &format!("{}/callback", bridge.base),
        4,
        50.0,
        20_000,
        "kill9",
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    signal(&kafka, 0, "-9").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    restart(&kafka, 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let result = load.stop().await;
    drained(&bridge, Duration::from_secs(120)).await;
    let v = verify(&brokers, &topic, &result.acked).await;
    report(
        "broker SIGKILL, restarted after 30 s (enqueued)",
        &result,
        &v,
    );
    assert!(
        result.acked.len() > 5_000,
        "load too thin: {}",
        result.acked.len()
    );
    assert_eq!(v.lost, 0);
    let totals = bridge.stop().await;
    assert_eq!(totals.discarded, 0);
}

/// Fault 2: the broker stays down longer than `message.timeout.ms`, so
/// deliveries fail; the failed events go to the spool and are replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_broker_down_longer_than_the_message_timeout() {
    let (kafka, brokers, topic) = cluster_with_topics(1, "timeout").await;
    let bridge = ready_bridge(
        &brokers,
        &topic,
        &["--kafka-property", "message.timeout.ms=5000"],
    )
    .await;
    let load = Load::start(
        &format!("{}/callback", bridge.base),
        4,
        25.0,
        20_000,
        "timeout",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&kafka, 0, "-9").await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    restart(&kafka, 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let result = load.stop().await;
    drained(&bridge, Duration::from_secs(90)).await;
    let v = verify(&brokers, &topic, &result.acked).await;
    report(
        "broker down 15 s > message.timeout.ms 5 s (enqueued)",
        &result,
        &v,
    );
    let spilled = bridge
        .metric(r#"chat_bridge_spool_appends_total{cause="delivery_failed"}"#)
        .await;
    assert!(
        spilled > 0.0,
        "no delivery ever timed out: the scenario did not happen"
    );
    assert!(bridge.metric("chat_bridge_spool_replayed_total").await >= spilled);
    assert_eq!(v.lost, 0);
    assert_eq!(result.server_errors(), 0);
    let totals = bridge.stop().await;
    assert_eq!(totals.discarded, 0);
}

/// Fault 5: three brokers (replication 3, min.insync.replicas 2), one killed
/// under load: no loss and no 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_three_brokers_lose_one_under_load() {
    let (kafka, brokers, topic) = cluster_with_topics(3, "rf3").await;
    let bridge = ready_bridge(&brokers, &topic, &[]).await;
    let load = Load::start(&format!("{}/callback", bridge.base), 4, 50.0, 20_000, "rf3");
    tokio::time::sleep(Duration::from_secs(5)).await;
    signal(&kafka, 2, "-9").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let result = load.stop().await;
    drained(&bridge, Duration::from_secs(90)).await;
    let v = verify(&brokers, &topic, &result.acked).await;
    report(
        "3 brokers, one SIGKILLed (enqueued, RF 3, min ISR 2)",
        &result,
        &v,
    );
    assert!(
        result.acked.len() > 2_000,
        "load too thin: {}",
        result.acked.len()
    );
    assert_eq!(result.server_errors(), 0, "{:?}", result.statuses);
    assert_eq!(v.lost, 0);
    let totals = bridge.stop().await;
    assert_eq!(totals.discarded, 0);
}

/// Fault 6 (and Kafka unreachable at startup): with the broker gone before
/// the bridges start, spooled mode is ready and spools, enqueued mode is not
/// ready; the spool fills, 503s begin; when Kafka returns, everything
/// acknowledged is published and callbacks are answered OK again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_spool_fills_then_recovers_when_kafka_returns() {
    let (kafka, brokers, topic) = cluster_with_topics(1, "spoolfull").await;
    signal(&kafka, 0, "-9").await;

    let spooled = TestBridge::start_with(
        &brokers,
        &topic,
        &["--ack-mode", "spooled", "--spool-max-bytes", "131072"],
    )
    .await;
    let enqueued = TestBridge::start_with(&brokers, &topic, &[]).await;

    let (spooled_admin, enqueued_admin) = (spooled.admin.clone(), enqueued.admin.clone());
    assert_eventually!(
        get(&format!("{spooled_admin}/readyz")).await.0 == 200,
        Duration::from_secs(10),
        "spooled mode is ready without Kafka"
    );
    assert_eq!(get(&format!("{enqueued_admin}/readyz")).await.0, 503);

    let load = Load::start(
        &format!("{}/callback", spooled.base),
        1,
        1000.0,
        5_000,
        "full",
    );
    assert_eventually!(
        spooled
            .metric(r#"chat_bridge_callbacks_rejected_total{reason="spool_full"}"#)
            .await
            > 0.0,
        Duration::from_secs(30),
        "503s never began"
    );
    let mut result = load.stop().await;
    let acked_while_down = result.acked.len();
    assert!(acked_while_down > 100, "{acked_while_down}");
    assert!(result.statuses.get(&503).copied().unwrap_or(0) > 0);
    assert_eventually!(
        get(&format!("{spooled_admin}/readyz")).await.0 == 503,
        Duration::from_secs(5),
        "a full spool makes spooled mode unready"
    );

    restart(&kafka, 0).await;
    drained(&spooled, Duration::from_secs(60)).await;
    assert_eventually!(
        get(&format!("{spooled_admin}/readyz")).await.0 == 200
            && get(&format!("{enqueued_admin}/readyz")).await.0 == 200,
        Duration::from_secs(15),
        "both bridges ready once Kafka is back"
    );
    // Answered OK again.
    let after = Load::start(&format!("{}/callback", spooled.base), 1, 100.0, 20, "after");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = after.stop().await;
    assert_eq!(after.acked.len(), 20, "{:?}", after.statuses);
    result.merge(after);

    drained(&spooled, Duration::from_secs(30)).await;
    let v = verify(&brokers, &topic, &result.acked).await;
    report(
        "spool filled to its limit while Kafka was down (spooled)",
        &result,
        &v,
    );
    assert_eq!(v.lost, 0);
    let totals = spooled.stop().await;
    assert_eq!(totals.discarded, 0);
    enqueued.stop().await;
}
