//! The real `chat-kafka-bridge` binary: configuration errors, `--help`, the
//! zero-config embedded default, SIGTERM in every mode and SIGKILL + restart.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chat_kafka_bridge::callback::sign;

use crate::harness::{
    APP_ID, TOKEN, bootstrap, consume_blocking, create_bridge_topics, general_topic, get, now_secs,
    unique,
};
use crate::load::{Load, report, verify};

pub const BIN: &str = env!("CARGO_BIN_EXE_chat-kafka-bridge");

pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BRIDGE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A running bridge process whose JSON log lines are collected.
pub struct Bridge {
    pub child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    pub callback: String,
    pub admin: String,
}

impl Bridge {
    /// Creates fresh topics named after `name` on the shared broker and
    /// spawns the binary for the test app on them, with `extra` variables
    /// besides. Returns the bridge and its Official Account topic.
    pub async fn spawn_on_shared_kafka(name: &str, extra: &[(&str, &str)]) -> (Bridge, String) {
        let topic = unique(name);
        create_bridge_topics(&topic).await;
        let app = APP_ID.to_string();
        let general = general_topic(&topic);
        let mut env = vec![
            ("BRIDGE_KAFKA_BROKERS", bootstrap()),
            ("BRIDGE_KAFKA_TOPIC", topic.as_str()),
            ("BRIDGE_KAFKA_GENERAL_TOPIC", general.as_str()),
            ("BRIDGE_SDKAPPID", app.as_str()),
            ("BRIDGE_CALLBACK_TOKEN", TOKEN),
        ];
        env.extend_from_slice(extra);
        (Bridge::spawn(&env), topic)
    }

    pub fn spawn(env: &[(&str, &str)]) -> Bridge {
        Self::spawn_with(command(), env)
    }

    /// [`Bridge::spawn`] with a command of the caller's (the binary under
    /// `prlimit`, say; see [`command`] and [`BIN`]).
    pub fn spawn_with(mut cmd: Command, env: &[(&str, &str)]) -> Bridge {
        // A working directory of its own, so the default spool dir is fresh.
        let cwd = crate::harness::spool_dir(&crate::harness::unique("cwd"));
        std::fs::create_dir_all(&cwd).expect("cwd");
        cmd.current_dir(&cwd);
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

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
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

    /// Every line the bridge has logged so far, one JSON object a line.
    pub fn log_text(&self) -> String {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .map(|v| v.to_string() + "\n")
            .collect()
    }

    /// Whether the bridge process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
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
    let r = crate::harness::post(
        &url,
        crate::harness::fixture("OfficialAccount.CallbackAfterOfficialAccountInfoChanged.json"),
    )
    .await;
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

/// Fault 3: SIGTERM while clients send, in every ack mode: every callback
/// answered OK is in Kafka, and the process exits 0 with nothing discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_traffic_loses_no_acknowledged_callback_in_any_mode() {
    for mode in ["enqueued", "spooled", "delivered"] {
        let (mut bridge, topic) = Bridge::spawn_on_shared_kafka(
            &format!("sigterm-{mode}"),
            &[
                ("BRIDGE_SHUTDOWN_TIMEOUT", "20s"),
                ("BRIDGE_ACK_MODE", mode),
            ],
        )
        .await;
        let admin = bridge.admin.clone();
        assert_eventually!(
            get(&format!("{admin}/readyz")).await.0 == 200,
            Duration::from_secs(30),
            "bridge ready"
        );
        let load = Load::start(&bridge.callback, 8, 200.0, 5_000, &format!("term_{mode}"));
        assert_eventually!(load.ok() >= 500, Duration::from_secs(30), "traffic flowing");
        bridge.signal("-TERM");
        let (status, bridge) = tokio::task::spawn_blocking(move || {
            let s = bridge.wait(Duration::from_secs(40));
            (s, bridge)
        })
        .await
        .expect("wait thread");
        let result = load.stop().await;
        assert!(status.success(), "{mode}: exit status {status}");
        let v = verify(bootstrap(), &topic, &result.acked).await;
        report(&format!("bridge SIGTERM under load ({mode})"), &result, &v);
        assert_eq!(
            v.lost, 0,
            "{mode}: acknowledged callbacks missing from Kafka"
        );
        assert_eq!(result.server_errors(), 0, "{mode}: {:?}", result.statuses);
        let last = bridge
            .log_with("Stopped. Final counts.")
            .expect("final counts logged");
        assert_eq!(last["discarded"], 0, "{mode}: {last}");
        assert_eq!(last["unconfirmed"], 0, "{mode}: {last}");
    }
}

/// Fault 4: SIGKILL under load in spooled mode, then a restart on the same
/// spool: everything answered OK reaches Kafka (duplicates allowed, same id).
/// Two rounds: with Kafka up (the forwarder keeps up and checkpoints, so few
/// records are replayed), and with Kafka unreachable until the restart (every
/// acknowledged record is only in the spool when the process dies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_spooled_mode_then_restart_loses_nothing() {
    for kafka_up in [true, false] {
        let topic = unique("sigkill");
        create_bridge_topics(&topic).await;
        let spool = crate::harness::spool_dir(&topic);
        let spool = spool.to_str().expect("utf-8").to_owned();
        let app = APP_ID.to_string();
        let env = |brokers: &'static str| {
            [
                ("BRIDGE_KAFKA_BROKERS", brokers.to_owned()),
                ("BRIDGE_KAFKA_TOPIC", topic.clone()),
                ("BRIDGE_KAFKA_GENERAL_TOPIC", general_topic(&topic)),
                ("BRIDGE_SDKAPPID", app.clone()),
                ("BRIDGE_CALLBACK_TOKEN", TOKEN.to_owned()),
                ("BRIDGE_ACK_MODE", "spooled".to_owned()),
                ("BRIDGE_SPOOL_DIR", spool.clone()),
            ]
        };
        let first = env(if kafka_up { bootstrap() } else { "127.0.0.1:1" });
        let first: Vec<(&str, &str)> = first.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let bridge = Bridge::spawn(&first);
        let admin = bridge.admin.clone();
        assert_eventually!(
            get(&format!("{admin}/readyz")).await.0 == 200,
            Duration::from_secs(30),
            "bridge ready (spooled mode is ready without Kafka)"
        );
        let load = Load::start(&bridge.callback, 8, 200.0, 5_000, "kill");
        assert_eventually!(
            load.ok() >= 1_000,
            Duration::from_secs(30),
            "traffic flowing"
        );
        // Long enough for the forwarder to have checkpointed its progress.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pending_at_kill = crate::harness::metric(&admin, "chat_bridge_spool_events").await;
        bridge.signal("-KILL");
        let result = load.stop().await;
        drop(bridge);

        let second = env(bootstrap());
        let second: Vec<(&str, &str)> = second.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let bridge = Bridge::spawn(&second);
        let admin = bridge.admin.clone();
        assert_eventually!(
            crate::harness::metric(&admin, "chat_bridge_spool_events").await == 0.0
                && crate::harness::metric(&admin, "chat_bridge_kafka_unconfirmed_events").await
                    == 0.0
                && get(&format!("{admin}/readyz")).await.0 == 200,
            Duration::from_secs(60),
            "the restarted bridge publishes its spool"
        );
        let replayed = crate::harness::metric(&admin, "chat_bridge_spool_replayed_total").await;
        let v = verify(bootstrap(), &topic, &result.acked).await;
        let scenario = if kafka_up {
            "Kafka up"
        } else {
            "Kafka unreachable before the kill"
        };
        report(
            &format!("bridge SIGKILL under load, restarted (spooled, {scenario})"),
            &result,
            &v,
        );
        eprintln!(
            "[fault]   in the spool at the kill (last scrape): {pending_at_kill}; replayed after restart: {replayed}"
        );
        assert_eq!(
            v.lost, 0,
            "{scenario}: acknowledged callbacks missing from Kafka"
        );
        if !kafka_up {
            assert!(
                replayed as usize >= result.acked.len(),
                "{scenario}: only {replayed} of {} replayed",
                result.acked.len()
            );
        }
        bridge.signal("-TERM");
    }
}
