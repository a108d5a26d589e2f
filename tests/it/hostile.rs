//! Hostile input: every limit trips and is counted, ambiguous and forged
//! requests are refused, and an abuse run (a thousand hostile requests
//! beside real traffic) leaves the bridge up, loses nothing real and
//! publishes nothing forged.

use std::time::{Duration, Instant};

use chat_kafka_bridge::callback::sign;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{APP_ID, TOKEN, TestBridge, count_records, fixture, now_secs, post};

const CMD: &str = "OfficialAccount.CallbackAfterOfficialAccountFull";

fn signed_path(command: &str, token: &str, t: i64) -> String {
    let t = t.to_string();
    format!(
        "/callback?SdkAppid={APP_ID}&CallbackCommand={command}&Sign={}&RequestTime={t}",
        sign(token, &t)
    )
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Writes `bytes`, then reads until the server closes or `within` passes.
/// Returns what was read and whether the server closed the connection.
async fn exchange(base: &str, bytes: &[u8], within: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr(base)).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_until_closed(&mut s, within).await
}

async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

fn status_of(answer: &str) -> u16 {
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_trips_answers_and_is_counted() {
    let bridge = TestBridge::start(&[
        "--header-read-timeout",
        "1s",
        "--idle-timeout",
        "1s",
        "--body-read-timeout",
        "1s",
        "--max-header-bytes",
        "4096",
        "--max-json-depth",
        "8",
    ])
    .await;
    let base = bridge.base.clone();
    let closed =
        |reason: &str| format!(r#"chat_bridge_http_connections_closed_total{{reason="{reason}"}}"#);
    let rejected =
        |reason: &str| format!(r#"chat_bridge_callbacks_rejected_total{{reason="{reason}"}}"#);

    // A head that never ends: closed without an answer after the header timeout.
    let began = Instant::now();
    let (answer, was_closed) = exchange(
        &base,
        b"POST /callback HTTP/1.1\r\nhost: x\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(was_closed && answer.is_empty(), "{answer:?}");
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(bridge.metric(&closed("header_timeout")).await, 1.0);

    // A keep-alive connection that stays idle is closed after the idle timeout.
    let body = fixture("oa-full.json");
    let mut request = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        signed_path(CMD, TOKEN, now_secs()),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let (answer, was_closed) = exchange(&base, &request, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(was_closed, "idle connection left open");
    assert_eventually!(
        bridge.metric(&closed("idle_timeout")).await == 1.0,
        Duration::from_secs(3),
        "idle_timeout counted"
    );

    // A body that stops coming: 408 with a FAIL body.
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{{\"a\":",
        signed_path(CMD, TOKEN, now_secs())
    );
    let (answer, _) = exchange(&base, head.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains(r#""ErrorCode":4080"#), "{answer}");
    assert_eq!(bridge.metric(&rejected("body_timeout")).await, 1.0);

    // Headers over the limit: 431 from hyper, counted.
    let big = format!(
        "POST /callback HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(8000)
    );
    let (answer, _) = exchange(&base, big.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert_eq!(bridge.metric(&closed("headers_too_large")).await, 1.0);

    // Not HTTP, and two different Content-Lengths: 400 from hyper, counted.
    let (answer, _) = exchange(&base, b"GARBAGE\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    let two_lengths = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{{}}",
        signed_path(CMD, TOKEN, now_secs())
    );
    let (answer, _) = exchange(&base, two_lengths.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(bridge.metric(&closed("malformed_http")).await, 2.0);

    // Content-Length beside Transfer-Encoding: the length is ignored, the
    // request is judged on its chunked body, and the connection is closed so
    // nothing can be smuggled behind it.
    let body = fixture("oa-full.json");
    let te_cl = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n",
        signed_path(CMD, TOKEN, now_secs()),
        body.len(),
        String::from_utf8_lossy(&body)
    );
    let (answer, was_closed) = exchange(&base, te_cl.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(was_closed);
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "the smuggled request was served: {answer}"
    );

    // Bodies that are not UTF-8 JSON, or nest too deep, under a valid signature.
    for (body, code, reason) in [
        (
            b"{\"CallbackCommand\": \"Off".to_vec(),
            4004,
            "body_not_json",
        ),
        (b"\xff\xfe\x00garbage".to_vec(), 4004, "body_not_json"),
        (
            format!("{}{}", "[".repeat(100), "]".repeat(100)).into_bytes(),
            4005,
            "body_too_deep",
        ),
    ] {
        let r = post(
            &format!("{base}{}", signed_path(CMD, TOKEN, now_secs())),
            body,
        )
        .await;
        assert_eq!(r.status, 400, "{reason}: {r:?}");
        assert_eq!(r.json["ErrorCode"], code, "{reason}");
    }
    assert_eq!(bridge.metric(&rejected("body_not_json")).await, 2.0);
    assert_eq!(bridge.metric(&rejected("body_too_deep")).await, 1.0);
    // Only the two valid callbacks (idle and TE tests) reached Kafka.
    assert_eq!(count_records(&bridge.topic).await, 2);
    assert_eq!(count_records(&bridge.dlq).await, 0);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_allow_list_and_the_trusted_proxy_header() {
    let direct = TestBridge::start(&["--allowed-sources", "198.51.100.0/24"]).await;
    let url = format!("{}{}", direct.base, signed_path(CMD, TOKEN, now_secs()));
    let r = post(&url, fixture("oa-full.json")).await;
    assert_eq!(
        (r.status, r.json["ErrorCode"].as_u64()),
        (403, Some(4031)),
        "{r:?}"
    );
    direct.stop().await;

    // Behind a proxy: the header's last address is the client's.
    let proxied = TestBridge::start(&[
        "--allowed-sources",
        "198.51.100.0/24",
        "--trusted-proxy-header",
        "X-Forwarded-For",
    ])
    .await;
    for (forwarded, status) in [
        ("203.0.113.9, 198.51.100.7", 200),
        ("198.51.100.7, 203.0.113.9", 403),
        ("not-an-address", 403),
    ] {
        let body = fixture("oa-full.json");
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: x\r\nx-forwarded-for: {forwarded}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            signed_path(CMD, TOKEN, now_secs()),
            body.len()
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        let (answer, _) = exchange(&proxied.base, &bytes, Duration::from_secs(5)).await;
        assert_eq!(status_of(&answer), status, "{forwarded}: {answer}");
    }
    proxied.stop().await;

    // The header counts only from a trusted proxy: 127.0.0.1 is not one here.
    let untrusted = TestBridge::start(&[
        "--allowed-sources",
        "198.51.100.0/24",
        "--trusted-proxy-header",
        "X-Forwarded-For",
        "--trusted-proxies",
        "10.0.0.0/8",
    ])
    .await;
    let body = fixture("oa-full.json");
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 198.51.100.7\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        signed_path(CMD, TOKEN, now_secs()),
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    let (answer, _) = exchange(&untrusted.base, &bytes, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    untrusted.stop().await;
}

/// Token rotation: while an app lists two tokens, callbacks signed with
/// either are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tokens_are_valid_during_a_rotation() {
    let dir = std::env::temp_dir().join(format!("ckb-it-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("apps.toml");
    std::fs::write(
        &file,
        "[[apps]]\nsdk_app_id = 1400000555\ntokens = [\"old-token\", \"new-token\"]\n",
    )
    .expect("write");
    let bridge = TestBridge::start(&["--config", file.to_str().expect("utf-8")]).await;
    for (token, status) in [("old-token", 200), ("new-token", 200), ("other", 401)] {
        let t = now_secs().to_string();
        let url = format!(
            "{}/callback?SdkAppid=1400000555&CallbackCommand={CMD}&Sign={}&RequestTime={t}",
            bridge.base,
            sign(token, &t)
        );
        assert_eq!(
            post(&url, fixture("oa-full.json")).await.status,
            status,
            "{token}"
        );
    }
    bridge.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
