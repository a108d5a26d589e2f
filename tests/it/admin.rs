//! The admin port: health, readiness (Kafka metadata, shutdown) and metrics,
//! and the graceful drain of in-flight requests.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{TestBridge, consume, fixture, get, now_secs, signed_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let bridge = TestBridge::start(&[]).await;
    assert_eq!(
        get(&format!("{}/healthz", bridge.admin)).await,
        (200, "ok\n".into())
    );
    assert_eq!(
        get(&format!("{}/readyz", bridge.admin)).await,
        (200, "ready\n".into())
    );
    assert_eq!(get(&format!("{}/nope", bridge.admin)).await.0, 404);
    assert_eq!(
        bridge
            .send_fixture("OfficialAccount.CallbackAfterSendMsg.json")
            .await
            .status,
        200
    );
    let (status, text) = get(&format!("{}/metrics", bridge.admin)).await;
    assert_eq!(status, 200);
    for name in [
        "chat_bridge_build_info",
        "chat_bridge_callbacks_total",
        "chat_bridge_http_request_duration_seconds_bucket",
        "chat_bridge_kafka_enqueued_total",
        "chat_bridge_kafka_unconfirmed_events",
        "chat_bridge_ready 1",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    // Delivery is confirmed asynchronously, then counted with its latency.
    assert_eventually!(
        bridge
            .metric(r#"chat_bridge_kafka_deliveries_total{error_class="none",result="delivered",stream="events"}"#)
            .await
            == 1.0,
        Duration::from_secs(15),
        "delivery report counted"
    );
    assert_eq!(
        bridge.metric("chat_bridge_kafka_unconfirmed_events").await,
        0.0
    );
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_kafka_delivery_latency_seconds_count{stream="events"}"#)
            .await,
        1.0
    );
    // librdkafka statistics arrive every 5 s.
    assert_eventually!(
        bridge.metric("chat_bridge_kafka_brokers_up").await >= 1.0
            && bridge
                .metric("chat_bridge_kafka_producer_queue_max_messages")
                .await
                > 0.0,
        Duration::from_secs(15),
        "librdkafka statistics exported"
    );
    bridge.stop().await;
}

/// docs/metrics.md documents exactly the metrics the bridge exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exported_metric_is_documented() {
    let bridge = TestBridge::start(&[]).await;
    bridge.exercise_every_outcome().await;
    assert_eventually!(
        bridge.metric("chat_bridge_kafka_brokers_up").await >= 1.0,
        Duration::from_secs(15),
        "statistics exported"
    );
    let text = get(&format!("{}/metrics", bridge.admin)).await.1;
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let documented: std::collections::BTreeSet<&str> = doc
        .lines()
        .filter(|l| l.starts_with("| `chat_bridge_"))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    assert_eq!(
        exported, documented,
        "docs/metrics.md and /metrics disagree"
    );
    bridge.stop().await;
}

/// With no reachable broker the bridge is alive but not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_without_kafka() {
    // Port 1 on loopback: nothing listens there.
    let bridge = TestBridge::without_kafka("unreachable", &[]).await;
    assert_eventually!(
        get(&format!("{}/healthz", bridge.admin)).await.0 == 200,
        Duration::from_secs(10),
        "healthz"
    );
    // It must stay unready across more than one probe (every 2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, text) = get(&format!("{}/readyz", bridge.admin)).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("Kafka"), "{text}");
    assert_eq!(bridge.metric("chat_bridge_ready").await, 0.0);
    drop(bridge);
}

/// SIGTERM semantics in-process: readiness turns false at once, while a
/// request already in flight still completes and is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_turns_unready_and_finishes_in_flight_requests() {
    let mut bridge = TestBridge::start(&[]).await;
    let body = fixture("OfficialAccount.CallbackAfterCreateOfficialAccount.json");
    let url = signed_url(
        &bridge.base,
        "OfficialAccount.CallbackAfterCreateOfficialAccount",
        now_secs(),
    );
    let path = url.trim_start_matches(&bridge.base).to_owned();
    let mut conn = TcpStream::connect(bridge.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    // Headers and half the body: the request is in flight.
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    conn.write_all(&body[..body.len() / 2])
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;

    bridge.begin_stop();
    let admin = bridge.admin.clone();
    assert_eventually!(
        get(&format!("{admin}/readyz")).await == (503, "not ready: shutting down\n".into()),
        Duration::from_secs(5),
        "readiness turns false on shutdown"
    );
    // New connections are refused once accepting stops.
    let addr = bridge.base.trim_start_matches("http://").to_owned();
    assert_eventually!(
        TcpStream::connect(&addr).await.is_err(),
        Duration::from_secs(5),
        "callback port still accepting new connections"
    );
    conn.write_all(&body[body.len() / 2..])
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""ActionStatus":"OK""#), "{answer}");
    let topic = bridge.topic.clone();
    let totals = bridge.join().await;
    assert_eq!(totals.delivered, 1);
    assert_eq!(consume(&topic, 1, Duration::from_secs(30)).await.len(), 1);
}
