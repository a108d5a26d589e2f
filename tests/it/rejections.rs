//! Every rejection: its status, its Tencent-style FAIL body, its counter, and
//! that nothing was written to Kafka.

use std::time::Duration;

use chat_kafka_bridge::callback::sign;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    APP_ID, TOKEN, TestBridge, consume, count_records, fixture, now_secs, post, request,
};

const CMD: &str = "OfficialAccount.CallbackAfterOfficialAccountFull";

fn url(base: &str, query: &str) -> String {
    format!("{base}/callback?{query}")
}

fn signed_query(app: u64, command: &str, token: &str, t: i64) -> String {
    let t = t.to_string();
    format!(
        "SdkAppid={app}&CallbackCommand={command}&contenttype=json&Sign={}&RequestTime={t}",
        sign(token, &t)
    )
}

/// Sends raw bytes and returns the status code of the first response.
async fn raw(base: &str, bytes: &[u8]) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut buf = vec![0u8; 1024];
    let mut n = 0;
    while n < 12 {
        let m = s.read(&mut buf[n..]).await.expect("read");
        assert!(m > 0, "connection closed before a status line");
        n += m;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    line[9..12].parse().expect("status code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rejection_has_its_status_body_and_counter_and_writes_nothing() {
    let bridge = TestBridge::start(&["--max-body-bytes", "2048"]).await;
    let base = bridge.base.clone();
    let body = fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json");
    let t = now_secs();
    let good = signed_query(APP_ID, CMD, TOKEN, t);

    // (what, method, url, body, status, ErrorCode, reason)
    type Case<'a> = (&'a str, &'a str, String, Vec<u8>, u16, u64, &'a str);
    let cases: Vec<Case> = vec![
        (
            "unknown path",
            "POST",
            format!("{base}/nope?{good}"),
            body.clone(),
            404,
            4040,
            "not_found",
        ),
        (
            "GET",
            "GET",
            url(&base, &good),
            vec![],
            405,
            4050,
            "method_not_allowed",
        ),
        (
            "no SdkAppid",
            "POST",
            url(&base, &format!("CallbackCommand={CMD}")),
            body.clone(),
            400,
            4001,
            "query_malformed",
        ),
        (
            "no command",
            "POST",
            url(&base, &format!("SdkAppid={APP_ID}")),
            body.clone(),
            400,
            4001,
            "query_malformed",
        ),
        (
            "repeated SdkAppid",
            "POST",
            url(&base, &format!("{good}&sdkappid=1")),
            body.clone(),
            400,
            4001,
            "query_malformed",
        ),
        (
            "unknown app",
            "POST",
            url(&base, &signed_query(1_400_000_999, CMD, TOKEN, t)),
            body.clone(),
            403,
            4030,
            "unknown_app",
        ),
        (
            "unsigned",
            "POST",
            url(&base, &format!("SdkAppid={APP_ID}&CallbackCommand={CMD}")),
            body.clone(),
            401,
            4011,
            "signature_missing",
        ),
        (
            "sign not hex",
            "POST",
            url(
                &base,
                &format!("SdkAppid={APP_ID}&CallbackCommand={CMD}&Sign=xyz&RequestTime={t}"),
            ),
            body.clone(),
            401,
            4012,
            "signature_malformed",
        ),
        (
            "stale",
            "POST",
            url(&base, &signed_query(APP_ID, CMD, TOKEN, t - 3600)),
            body.clone(),
            401,
            4013,
            "signature_stale",
        ),
        (
            "from the future",
            "POST",
            url(&base, &signed_query(APP_ID, CMD, TOKEN, t + 3600)),
            body.clone(),
            401,
            4013,
            "signature_stale",
        ),
        (
            "wrong token",
            "POST",
            url(&base, &signed_query(APP_ID, CMD, "not-the-token", t)),
            body.clone(),
            401,
            4014,
            "signature_mismatch",
        ),
        (
            "too large",
            "POST",
            url(&base, &good),
            vec![b' '; 4096],
            413,
            4130,
            "body_too_large",
        ),
        (
            "command mismatch",
            "POST",
            url(
                &base,
                &signed_query(APP_ID, "OfficialAccount.CallbackAfterSendMsg", TOKEN, t),
            ),
            body.clone(),
            400,
            4003,
            "command_mismatch",
        ),
    ];

    for (what, method, url, body, status, code, reason) in &cases {
        let before = bridge
            .metric(&format!(
                r#"chat_bridge_callbacks_rejected_total{{reason="{reason}"}}"#
            ))
            .await;
        let (got_status, json) = if *method == "POST" {
            let r = post(url, body.clone()).await;
            (r.status, r.json)
        } else {
            let (s, text) = request(method, url).await;
            (s, serde_json::from_str(&text).unwrap_or_default())
        };
        assert_eq!(got_status, *status, "{what}");
        assert_eq!(json["ActionStatus"], "FAIL", "{what}: {json}");
        assert_eq!(json["ErrorCode"], *code, "{what}: {json}");
        assert!(
            json["ErrorInfo"]
                .as_str()
                .expect("ErrorInfo")
                .starts_with(reason),
            "{what}: {json}"
        );
        let after = bridge
            .metric(&format!(
                r#"chat_bridge_callbacks_rejected_total{{reason="{reason}"}}"#
            ))
            .await;
        assert_eq!(after - before, 1.0, "{what}: counter {reason}");
    }

    // A body too large without Content-Length (chunked) is cut off by the limit too.
    let head =
        format!("POST /callback?{good} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n");
    let mut req = head.into_bytes();
    for _ in 0..3 {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b' '; 0x400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw(&base, &req).await, 413, "chunked body over the limit");

    let rejected: f64 = {
        let text = crate::harness::get(&format!("{}/metrics", bridge.admin))
            .await
            .1;
        crate::harness::parse_metrics(&text)
            .iter()
            .filter(|(k, _)| k.starts_with("chat_bridge_callbacks_rejected_total"))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(rejected as usize, cases.len() + 1, "rejections add up");

    // Nothing rejected reached Kafka: after a valid sentinel has arrived, the
    // topics hold exactly that one record.
    assert_eq!(
        bridge
            .send_fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json")
            .await
            .status,
        200
    );
    assert_eq!(
        consume(&bridge.topic, 1, Duration::from_secs(30))
            .await
            .len(),
        1
    );
    assert_eq!(count_records(&bridge.topic).await, 1);
    assert_eq!(count_records(&bridge.dlq).await, 0);
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_kafka_enqueued_total{stream="events"}"#)
            .await,
        1.0
    );
    bridge.stop().await;
}

/// An app configured without a token accepts unsigned callbacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_a_token_needs_no_signature() {
    let dir = std::env::temp_dir().join(format!("ckb-it-apps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("apps.toml");
    std::fs::write(&file, "[[apps]]\nsdk_app_id = 1400000777\n").expect("write");
    let bridge = TestBridge::start(&["--config", file.to_str().expect("utf-8")]).await;
    let r = post(
        &url(
            &bridge.base,
            &format!("SdkAppid=1400000777&CallbackCommand={CMD}"),
        ),
        fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // The signed app still needs its signature.
    let r = post(
        &url(
            &bridge.base,
            &format!("SdkAppid={APP_ID}&CallbackCommand={CMD}"),
        ),
        fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json"),
    )
    .await;
    assert_eq!(r.status, 401);
    let records = consume(&bridge.topic, 1, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].json()["sdk_app_id"], 1_400_000_777u64);
    bridge.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Kafka unreachable (enqueued mode): callbacks go to the producer's queue
/// (one slot here), then to the spool; once the spool is full, 503
/// (`spool_full`). The queued one's delivery failure is counted by class
/// and spooled, and nothing acknowledged is dropped, even at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_spills_to_the_spool_and_a_full_spool_is_503() {
    let bridge = TestBridge::without_kafka(
        "unreachable",
        &[
            "--kafka-property",
            "queue.buffering.max.messages=1",
            "--kafka-property",
            "message.timeout.ms=1500",
            "--spool-max-bytes",
            "65536",
        ],
    )
    .await;
    let admin = bridge.admin.clone();
    assert_eventually!(
        crate::harness::get(&format!("{admin}/healthz")).await.0 == 200,
        Duration::from_secs(10),
        "bridge up"
    );
    // In the queue, then timed out and spooled by the delivery callback.
    assert_eq!(
        bridge
            .send_fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json")
            .await
            .status,
        200
    );
    assert_eventually!(
        bridge
            .metric(r#"chat_bridge_kafka_deliveries_total{error_class="timeout",result="failed",stream="events"}"#)
            .await
            == 1.0
            && bridge
                .metric(r#"chat_bridge_spool_appends_total{cause="delivery_failed"}"#)
                .await
                == 1.0,
        Duration::from_secs(15),
        "the undeliverable event is counted as failed (timeout) and spooled"
    );
    // Fill the spool.
    let mut ok = 1;
    let mut refused = None;
    for _ in 0..2000 {
        let r = bridge
            .send_fixture("OfficialAccount.CallbackAfterSendMsg.json")
            .await;
        match r.status {
            200 => ok += 1,
            _ => {
                refused = Some(r);
                break;
            }
        }
    }
    let r = refused.expect("the spool never filled");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json["ErrorCode"], 5032, "{r:?}");
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_callbacks_rejected_total{reason="spool_full"}"#)
            .await,
        1.0
    );
    assert!(ok > 50, "only {ok} callbacks fit in 64 KiB");
    let totals = bridge.stop().await;
    assert_eq!(totals.accepted, ok);
    assert_eq!(totals.discarded, 0, "acknowledged events were dropped");
    // Everything acknowledged is in the spool (queued ones were purged into it).
    assert_eq!(totals.spooled, ok);
}
