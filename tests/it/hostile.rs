//! Hostile input: every limit trips and is counted, ambiguous and forged
//! requests are refused, and an abuse run (a thousand hostile requests
//! beside real traffic) leaves the bridge up, loses nothing real and
//! publishes nothing forged.

use std::time::{Duration, Instant};

use chat_kafka_bridge::callback::sign;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{APP_ID, TOKEN, TestBridge, consume, count_records, fixture, now_secs, post};

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
    let body = fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json");
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
    let body = fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json");
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

    // Under a valid signature, a body that nests too deep is refused before
    // parsing; one that is not UTF-8 JSON is authentic as far as anyone can
    // tell, so it is dead-lettered (issue 11: refusing it would only lose it).
    let r = post(
        &format!("{base}{}", signed_path(CMD, TOKEN, now_secs())),
        format!("{}{}", "[".repeat(100), "]".repeat(100)).into_bytes(),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json["ErrorCode"], 4005);
    for body in [
        b"{\"CallbackCommand\": \"Off".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
    ] {
        let r = post(
            &format!("{base}{}", signed_path(CMD, TOKEN, now_secs())),
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json["ErrorCode"], 0);
    }
    assert_eq!(bridge.metric(&rejected("body_too_deep")).await, 1.0);
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_callbacks_dead_lettered_total{reason="body_not_json"}"#)
            .await,
        2.0
    );
    // Only the two valid callbacks (idle and TE tests) reached the events
    // topic; the two non-JSON bodies are dead letters, byte for byte.
    assert_eq!(count_records(&bridge.topic).await, 2);
    let dead = consume(&bridge.dlq, 2, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter()
            .all(|d| d.headers["bridge_reason"] == "body_not_json")
    );
    assert!(dead.iter().any(|d| d.payload == b"\xff\xfe\x00garbage"));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_allow_list_and_the_trusted_proxy_header() {
    let direct = TestBridge::start(&["--allowed-sources", "198.51.100.0/24"]).await;
    let url = format!("{}{}", direct.base, signed_path(CMD, TOKEN, now_secs()));
    let r = post(
        &url,
        fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json"),
    )
    .await;
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
        let body = fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json");
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
    let body = fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json");
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
            post(
                &url,
                fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json")
            )
            .await
            .status,
            status,
            "{token}"
        );
    }
    bridge.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One hostile request on a connection of its own; the answer's status (0: none).
async fn hostile(addr: String, bytes: Vec<u8>) -> u16 {
    let Ok(mut s) = TcpStream::connect(&addr).await else {
        return 0;
    };
    if s.write_all(&bytes).await.is_err() {
        return 0;
    }
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    status_of(&answer)
}

fn request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The abuse run: real signed traffic flows while a second client sends more
/// than a thousand hostile requests. The bridge stays up, answers every real
/// callback OK and publishes it, publishes nothing unauthenticated, keeps its
/// memory bounded, and its rejection counters add up to what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_run_keeps_serving_and_publishes_nothing_forged() {
    use crate::binary::Bridge;
    use crate::harness::bootstrap;
    use crate::load::{Load, report, verify};
    use std::collections::BTreeMap;

    let (mut bridge, topic) = Bridge::spawn_on_shared_kafka(
        "abuse",
        &[
            ("BRIDGE_HEADER_READ_TIMEOUT", "2s"),
            ("BRIDGE_MAX_BODY_BYTES", "65536"),
            ("BRIDGE_MAX_CONNECTIONS", "2000"),
            ("RUST_LOG", "info,chat_kafka_bridge::metrics=error"),
        ],
    )
    .await;
    let dlq = format!("{topic}-dlq");
    let pid = bridge.child.id();
    let admin = bridge.admin.clone();
    assert_eventually!(
        crate::harness::get(&format!("{admin}/readyz")).await.0 == 200,
        Duration::from_secs(30),
        "bridge ready"
    );
    let base = bridge.callback.trim_end_matches("/callback").to_owned();
    let target = addr(&base);
    let rss_start = rss_kib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_start));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let load = Load::start(&bridge.callback, 2, 50.0, 2_000, "abuse_valid");

    // Requests answered by our handler, by the reason we expect.
    let mut cases: Vec<(&'static str, u16, Vec<u8>)> = Vec::new();
    let body = fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json");
    let t = now_secs();
    for i in 0..200 {
        let path = signed_path(CMD, &format!("wrong-token-{i}"), t);
        cases.push(("signature_mismatch", 401, request(&path, &body)));
    }
    for i in 0..100 {
        let path =
            format!("/callback?SdkAppid={APP_ID}&CallbackCommand={CMD}&Sign=zz{i}&RequestTime={t}");
        cases.push(("signature_malformed", 401, request(&path, &body)));
    }
    for i in 0..100 {
        cases.push((
            "signature_stale",
            401,
            request(&signed_path(CMD, TOKEN, t - 3600 - i), &body),
        ));
    }
    for i in 0..100 {
        let t = t.to_string();
        let path = format!(
            "/callback?SdkAppid={}&CallbackCommand={CMD}&Sign={}&RequestTime={t}",
            1_500_000_000 + i,
            sign(TOKEN, &t)
        );
        cases.push(("unknown_app", 403, request(&path, &body)));
    }
    for _ in 0..50 {
        let path = format!("/callback?SdkAppid={APP_ID}&CallbackCommand={CMD}");
        cases.push(("signature_missing", 401, request(&path, &body)));
    }
    for _ in 0..50 {
        // Announces more than BRIDGE_MAX_BODY_BYTES; refused before any body byte.
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\nconnection: close\r\n\r\n",
            signed_path(CMD, TOKEN, t)
        );
        cases.push(("body_too_large", 413, head.into_bytes()));
    }
    // A valid signature replayed with forged bodies.
    for _ in 0..50 {
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        cases.push((
            "body_too_deep",
            400,
            request(&signed_path(CMD, TOKEN, t), deep.as_bytes()),
        ));
    }
    // Not UTF-8 JSON under a valid signature: dead-lettered (200), raw.
    for _ in 0..50 {
        cases.push((
            "dead_lettered",
            200,
            request(
                &signed_path(CMD, TOKEN, t),
                b"\xc3\x28\xff{\"CallbackCommand\":1}",
            ),
        ));
    }
    // Valid JSON whose number no field can hold: authentic as far as anyone
    // can tell, so it is dead-lettered raw (200), not published as an event.
    for i in 0..50 {
        let huge = format!(
            r#"{{"CallbackCommand":"{CMD}","Official_Account":"@TOA#_float_{i}","EventTime":1e999}}"#
        );
        cases.push((
            "dead_lettered",
            200,
            request(&signed_path(CMD, TOKEN, t), huge.as_bytes()),
        ));
    }
    for i in 0..50 {
        let huge = format!(
            r#"{{"CallbackCommand":"{CMD}","Official_Account":"@TOA#_huge_{i}","EventTime":123456789012345678901234567890}}"#
        );
        cases.push((
            "dead_lettered",
            200,
            request(&signed_path(CMD, TOKEN, t), huge.as_bytes()),
        ));
    }
    // Issue 12's shapes under a valid signature. Tiny values by the ten
    // thousand: refused before parsing.
    for _ in 0..50 {
        let many = format!("[{}0]", "0,".repeat(10_000));
        cases.push((
            "body_too_complex",
            400,
            request(&signed_path(CMD, TOKEN, t), many.as_bytes()),
        ));
    }
    // A batch over Tencent's 100 items, a time past 9999, a key with
    // control characters: authentic as far as anyone can tell, so each is
    // dead-lettered whole (200), never split, panicked on or published.
    let push = "Push.OfflinePush";
    for i in 0..20 {
        let items = vec![r#"{"To_Account":"u","EventTime":1557481127}"#; 101].join(",");
        let batch = format!(r#"{{"CallbackCommand":"{push}","Events":[{items}],"N":{i}}}"#);
        cases.push((
            "dead_lettered",
            200,
            request(&signed_path(push, TOKEN, t), batch.as_bytes()),
        ));
    }
    let group = "Group.CallbackAfterSendMsg";
    for i in 0..20 {
        let y10k = format!(r#"{{"GroupId":"@TGS#y{i}","EventTime":99999999999999999}}"#);
        cases.push((
            "dead_lettered",
            200,
            request(&signed_path(group, TOKEN, t), y10k.as_bytes()),
        ));
        let evil = format!(r#"{{"GroupId":"@TGS#{i}\r\nX-Evil: 1"}}"#);
        cases.push((
            "dead_lettered",
            200,
            request(&signed_path(group, TOKEN, t), evil.as_bytes()),
        ));
    }
    let answered_cases = cases.len();

    // Connection-level abuse: slow-drip heads from 300 connections, pipelined
    // garbage, truncated bodies.
    let drip: Vec<_> = (0..300)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut s) = TcpStream::connect(&target).await else {
                    return false;
                };
                let head = b"POST /callback?SdkAppid=1 HTTP/1.1\r\nhost: x\r\nx-slow: ";
                for b in head
                    .iter()
                    .chain(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter())
                {
                    if s.write_all(&[*b]).await.is_err() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
                closed
            })
        })
        .collect();
    // Silent connections: connect, send nothing. The header timeout (2 s)
    // runs from accept, so they are closed too, long before the 60 s idle
    // timeout that held them before (20 s of room for a loaded machine).
    // Spread over a second, each connect retried, so that a full accept
    // queue or a refused connect is not counted as "left open".
    let silent: Vec<_> = (0..100u64)
        .map(|i| {
            let target = target.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10 * i)).await;
                let mut error = String::new();
                for _ in 0..10 {
                    match TcpStream::connect(&target).await {
                        Ok(mut s) => {
                            let began = Instant::now();
                            let (_, closed) =
                                read_until_closed(&mut s, Duration::from_secs(20)).await;
                            return if closed {
                                Ok(())
                            } else {
                                Err(format!("open after {:?}", began.elapsed()))
                            };
                        }
                        Err(e) => error = format!("connect: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error)
            })
        })
        .collect();
    let mut extra = 0usize;
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut set = tokio::task::JoinSet::new();
    for (reason, want, bytes) in cases {
        let permit = semaphore.clone().acquire_owned().await.expect("semaphore");
        let target = target.clone();
        set.spawn(async move {
            let got = hostile(target, bytes).await;
            drop(permit);
            (reason, want, got)
        });
    }
    for _ in 0..10 {
        let garbage = b"GARBAGE /\x00\x01 NOPE\r\n\r\n".repeat(20);
        let target = target.clone();
        set.spawn(async move { ("malformed_http", 400, hostile(target, garbage).await) });
        extra += 20;
    }
    for _ in 0..50 {
        // Announces 500 bytes, sends 100, hangs up.
        let mut r = format!(
            "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n",
            signed_path(CMD, TOKEN, t)
        )
        .into_bytes();
        r.extend_from_slice(&[b'{'; 100]);
        if let Ok(mut s) = TcpStream::connect(&target).await {
            let _ = s.write_all(&r).await;
        }
        extra += 1;
    }
    let mut wrong = Vec::new();
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let (reason, want, got) = r.expect("hostile task");
        *by_reason.entry(reason).or_default() += 1;
        if got != want {
            wrong.push((reason, want, got));
        }
    }
    let mut drips_closed = 0;
    for d in drip {
        if d.await.expect("drip task") {
            drips_closed += 1;
        }
    }
    let mut silent_closed = 0;
    let mut silent_errors = Vec::new();
    for d in silent {
        match d.await.expect("silent task") {
            Ok(()) => silent_closed += 1,
            Err(e) => silent_errors.push(e),
        }
    }
    let hostile_sent = answered_cases + 300 + 100 + extra;

    let result = load.stop().await;
    sampling.abort();
    let peak_kib = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        wrong.is_empty(),
        "unexpected answers (reason, wanted, got): {:?}",
        &wrong[..wrong.len().min(10)]
    );
    assert!(
        bridge.child.try_wait().expect("try_wait").is_none(),
        "the bridge died"
    );
    assert_eq!(
        crate::harness::get(&format!("{admin}/healthz")).await.0,
        200
    );

    // Every real callback answered OK and published; nothing forged published.
    assert_eq!(
        result.statuses.get(&200).copied().unwrap_or(0),
        result.sent,
        "{:?}",
        result.statuses
    );
    let v = verify(bootstrap(), &topic, &result.acked).await;
    report("abuse run, valid traffic", &result, &v);
    assert_eq!(v.lost, 0);
    assert_eq!(
        v.records,
        result.acked.len(),
        "records beyond the valid traffic"
    );
    assert_eq!(
        count_records(&dlq).await,
        210,
        "only the 210 authentic-looking dead letters"
    );

    // The counters add up to what was sent.
    let m = |s: String| {
        let admin = admin.clone();
        async move { crate::harness::metric(&admin, &s).await as usize }
    };
    for reason in [
        "signature_mismatch",
        "signature_malformed",
        "signature_stale",
        "unknown_app",
        "signature_missing",
        "body_too_large",
        "body_too_deep",
        "body_too_complex",
    ] {
        let counted = m(format!(
            r#"chat_bridge_callbacks_rejected_total{{reason="{reason}"}}"#
        ))
        .await;
        assert_eq!(counted, by_reason[reason], "{reason}");
    }
    let header_timeouts =
        m(r#"chat_bridge_http_connections_closed_total{reason="header_timeout"}"#.into()).await;
    let malformed =
        m(r#"chat_bridge_http_connections_closed_total{reason="malformed_http"}"#.into()).await;
    let truncated = m(r#"chat_bridge_callbacks_rejected_total{reason="body_read_failed"}"#.into())
        .await
        + m(r#"chat_bridge_http_connections_closed_total{reason="incomplete_request"}"#.into())
            .await;
    assert_eq!(drips_closed, 300, "slow-drip connections left open");
    assert_eq!(silent_closed, 100, "silent connections: {silent_errors:?}");
    assert!(header_timeouts >= 400, "{header_timeouts}");
    assert_eq!(malformed, 10);
    assert!(truncated <= 50);
    let dead =
        m(r#"chat_bridge_callbacks_dead_lettered_total{reason="body_invalid_field"}"#.into()).await;
    let dead_by_reason: Vec<String> = crate::harness::get(&format!("{admin}/metrics"))
        .await
        .1
        .lines()
        .filter(|l| l.starts_with("chat_bridge_callbacks_dead_lettered_total"))
        .map(str::to_owned)
        .collect();
    assert_eq!(dead, 160, "{dead_by_reason:?}");
    let not_json =
        m(r#"chat_bridge_callbacks_dead_lettered_total{reason="body_not_json"}"#.into()).await;
    assert_eq!(not_json, 50);
    eprintln!(
        "[abuse] hostile requests {hostile_sent} ({answered_cases} answered by the handler: {by_reason:?}; 300 slow-drip and 100 silent connections, all closed; 10 pipelined-garbage connections; 50 truncated bodies, {truncated} counted); valid callbacks {} answered OK, {} in Kafka, lost {}; header_timeout closes {header_timeouts}; RSS {} KiB at start, {} KiB peak",
        result.acked.len(),
        v.records,
        v.lost,
        rss_start,
        peak_kib
    );
    assert!(peak_kib < 128 * 1024, "RSS peaked at {peak_kib} KiB");
    bridge.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || bridge.wait(Duration::from_secs(30)))
        .await
        .expect("wait");
    assert!(status.success());
}

/// TLS in the bridge itself: a callback over HTTPS is answered and
/// published; plain HTTP to the TLS port is refused at the handshake and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_in_the_bridge() {
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
    let (cert, key) = (format!("{dir}/cert.pem"), format!("{dir}/key.pem"));
    let bridge = TestBridge::start(&["--tls-cert-file", &cert, "--tls-key-file", &key]).await;

    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(format!("{dir}/ca.pem")).expect("CA file") {
        roots.add(c.expect("cert")).expect("root");
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr(&bridge.base))
        .await
        .expect("connect");
    let server = ServerName::try_from("127.0.0.1").expect("name");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server, tcp)
        .await
        .expect("TLS handshake with the bridge");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP over TLS");
    tokio::spawn(conn);
    let req = hyper::Request::post(signed_path(CMD, TOKEN, now_secs()))
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::from(fixture(
            "OfficialAccount.CallbackAfterOfficialAccountFull.json",
        ))))
        .expect("request");
    let resp = sender.send_request(req).await.expect("answer");
    assert_eq!(resp.status(), 200);
    #[allow(clippy::disallowed_methods)] // our own small answer
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        &body[..],
        br#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#
    );
    assert_eq!(
        crate::harness::consume(&bridge.topic, 1, Duration::from_secs(30))
            .await
            .len(),
        1
    );

    // Plain HTTP to the TLS port: no answer, counted.
    let (answer, _) = exchange(
        &bridge.base,
        b"GET /callback HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");
    assert_eventually!(
        bridge
            .metric(r#"chat_bridge_http_connections_closed_total{reason="tls_handshake"}"#)
            .await
            == 1.0,
        Duration::from_secs(5),
        "tls_handshake counted"
    );
    bridge.stop().await;
}
