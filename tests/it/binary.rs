//! The real `chat-kafka-bridge` binary: configuration errors, `--help`, the
//! zero-config embedded default, and SIGTERM under traffic.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_kafka_bridge::callback::sign;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::harness::{
    APP_ID, TOKEN, bootstrap, consume, consume_blocking, create_topic, get, now_secs, unique,
};

const BIN: &str = env!("CARGO_BIN_EXE_chat-kafka-bridge");

fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BRIDGE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A running bridge process whose JSON log lines are collected.
struct Bridge {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    callback: String,
    admin: String,
}

impl Bridge {
    fn spawn(env: &[(&str, &str)]) -> Bridge {
        let mut cmd = command();
        cmd.env("BRIDGE_LOG_FORMAT", "json")
            .env("BRIDGE_LISTEN", "127.0.0.1:0")
            .env("BRIDGE_ADMIN_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the bridge binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        // Owned from here on, so a failed start still kills and reaps it (Drop).
        let mut bridge = Bridge {
            child,
            lines: lines.clone(),
            callback: String::new(),
            admin: String::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or(serde_json::json!({ "raw": line }));
                let _ = tx.send(v.clone());
                lines.lock().expect("lock").push(v);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(v) = rx.recv_timeout(left) else {
                panic!(
                    "the bridge never logged that it was listening: {:?}",
                    bridge.lines.lock().expect("lock")
                );
            };
            if v["message"]
                .as_str()
                .is_some_and(|m| m.ends_with("listening."))
            {
                bridge.callback = v["callback"].as_str().expect("callback field").to_owned();
                bridge.admin = v["admin"].as_str().expect("admin field").to_owned();
                return bridge;
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the bridge did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_with(&self, message_start: &str) -> Option<serde_json::Value> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .find(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message_start))
            })
            .cloned()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_bad_setting_exits_nonzero_with_one_line_naming_it() {
    for (var, value) in [
        ("BRIDGE_LISTEN", "not-an-address"),
        ("BRIDGE_MAX_BODY_BYTES", "lots"),
        ("BRIDGE_SIGNATURE_MAX_SKEW", "a minute"),
        ("BRIDGE_LOG_FORMAT", "xml"),
    ] {
        let out = command().env(var, value).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{var}: {stderr}");
        assert!(
            stderr.contains(var) && stderr.contains(value),
            "{var}: {stderr}"
        );
    }
    let out = command()
        .env("BRIDGE_KAFKA_BROKERS", "127.0.0.1:1")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BRIDGE_SDKAPPID"));
}

/// `--help` explains every setting, and docs/configuration.md documents
/// exactly the settings `--help` lists.
#[test]
fn help_and_configuration_docs_list_the_same_settings() {
    let out = command().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let vars = |text: &str| -> HashSet<String> {
        text.split(|c: char| !(c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
            .filter(|w| {
                w.starts_with("BRIDGE_")
                    && !w.ends_with('_')
                    && !w.starts_with("BRIDGE_KAFKA_PROP_")
            })
            .map(str::to_owned)
            .collect()
    };
    let in_help = vars(&help);
    let mut in_docs = vars(&docs);
    in_docs.remove("BRIDGE_TEST_KAFKA_BROKERS");
    assert!(in_help.len() >= 16, "{in_help:?}");
    assert_eq!(
        in_help, in_docs,
        "--help and docs/configuration.md disagree"
    );
}

/// The README's run command: no brokers, no app. The embedded broker is
/// reachable by any Kafka client at the address the log prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_run_publishes_to_the_embedded_broker() {
    let mut bridge = Bridge::spawn(&[]);
    let line = bridge
        .log_with("Embedded Kafka broker started: bootstrap.servers=")
        .expect("bootstrap line logged");
    let servers = line["message"]
        .as_str()
        .expect("message")
        .rsplit('=')
        .next()
        .expect("address")
        .to_owned();
    let admin = bridge.admin.clone();
    assert_eventually!(
        get(&format!("{admin}/readyz")).await.0 == 200,
        Duration::from_secs(20),
        "embedded bridge ready"
    );
    let t = now_secs().to_string();
    let url = format!(
        "{}?SdkAppid=1400000001&CallbackCommand=OfficialAccount.CallbackAfterOfficialAccountInfoChanged&Sign={}&RequestTime={t}",
        bridge.callback,
        sign("demo-token", &t)
    );
    let r = crate::harness::post(&url, crate::harness::fixture("oa-info-changed.json")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let records = tokio::task::spawn_blocking(move || {
        consume_blocking(
            &servers,
            "official-account-events",
            1,
            Duration::from_secs(30),
        )
    })
    .await
    .expect("consumer");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].json()["type"], "official_account.info_changed");
    bridge.signal("-INT");
    assert!(bridge.wait(Duration::from_secs(30)).success());
}

/// SIGTERM while eight clients send as fast as they can: every callback
/// answered OK is in Kafka exactly once, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_traffic_loses_no_acknowledged_callback() {
    let topic = unique("sigterm");
    create_topic(&topic).await;
    create_topic(&format!("{topic}-dlq")).await;
    let app = APP_ID.to_string();
    let mut bridge = Bridge::spawn(&[
        ("BRIDGE_KAFKA_BROKERS", bootstrap()),
        ("BRIDGE_KAFKA_TOPIC", &topic),
        ("BRIDGE_SDKAPPID", &app),
        ("BRIDGE_CALLBACK_TOKEN", TOKEN),
        ("BRIDGE_SHUTDOWN_TIMEOUT", "20s"),
    ]);
    let admin = bridge.admin.clone();
    assert_eventually!(
        get(&format!("{admin}/readyz")).await.0 == 200,
        Duration::from_secs(30),
        "bridge ready"
    );

    const CLIENTS: usize = 8;
    const MAX_PER_CLIENT: usize = 5_000;
    let acked = Arc::new(Mutex::new(HashSet::<(String, u64)>::new()));
    let ok_count = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (acked, ok_count, sent, failed, stop) = (
            acked.clone(),
            ok_count.clone(),
            sent.clone(),
            failed.clone(),
            stop.clone(),
        );
        let base = bridge.callback.clone();
        tasks.push(tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let account = format!("@TOA#_load_{c}");
            for i in 0..MAX_PER_CLIENT as u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let event_time = 1_732_770_000_000 + i;
                let body = format!(
                    r#"{{"CallbackCommand":"OfficialAccount.CallbackAfterOfficialAccountFull","Official_Account":"{account}","EventTime":{event_time}}}"#
                );
                let t = now_secs().to_string();
                let url = format!(
                    "{base}?SdkAppid={APP_ID}&CallbackCommand=OfficialAccount.CallbackAfterOfficialAccountFull&Sign={}&RequestTime={t}",
                    sign(TOKEN, &t)
                );
                let req = hyper::Request::post(url)
                    .body(Full::new(Bytes::from(body)))
                    .expect("request");
                sent.fetch_add(1, Ordering::Relaxed);
                match client.request(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        acked.lock().expect("lock").insert((account.clone(), event_time));
                        ok_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) => panic!("unexpected status {} under load", resp.status()),
                    Err(_) => {
                        // The bridge stopped accepting: connection refused or closed.
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }

    // Let traffic build up, then SIGTERM mid-stream.
    let counter = ok_count.clone();
    assert_eventually!(
        counter.load(Ordering::Relaxed) >= 500,
        Duration::from_secs(30),
        "traffic flowing"
    );
    bridge.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let s = bridge.wait(Duration::from_secs(40));
        (s, bridge)
    })
    .await
    .expect("wait thread");
    let (status, bridge) = status;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    assert!(status.success(), "exit status {status}");

    let acked = acked.lock().expect("lock").clone();
    let records = consume(&topic, acked.len(), Duration::from_secs(60)).await;
    let mut ids = HashSet::new();
    let mut in_kafka = HashSet::new();
    for r in &records {
        let e = r.json();
        ids.insert(e["id"].as_str().expect("id").to_owned());
        in_kafka.insert((
            e["official_account"].as_str().expect("account").to_owned(),
            e["event_time_ms"].as_u64().expect("time"),
        ));
    }
    let lost = acked.difference(&in_kafka).count();
    let duplicates = records.len() - ids.len();
    // Published but never answered (the client saw the connection close
    // first) is allowed: Tencent would count it failed, nothing is lost.
    let unanswered = in_kafka.difference(&acked).count();
    eprintln!(
        "[it] SIGTERM under load: sent {}, answered OK {}, refused after shutdown {}, records in Kafka {}, lost {lost}, duplicates {duplicates}, published but unanswered {unanswered}",
        sent.load(Ordering::Relaxed),
        acked.len(),
        failed.load(Ordering::Relaxed),
        records.len()
    );
    assert!(acked.len() >= 500);
    assert_eq!(lost, 0, "acknowledged callbacks missing from Kafka");
    assert_eq!(duplicates, 0);
    let last = bridge
        .log_with("Stopped. Final counts.")
        .expect("final counts logged");
    assert_eq!(last["failed"], 0, "{last}");
    assert_eq!(last["unconfirmed"], 0, "{last}");
    assert_eq!(
        last["delivered"].as_u64(),
        Some(records.len() as u64),
        "{last}"
    );
}
