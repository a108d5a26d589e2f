//! Every command Tencent sends, routed: the built-in table, configured
//! routes, several apps with topics of their own, Before audit events, the
//! Push batch split and the de-duplication window, all read back from Kafka.

use std::collections::HashMap;
use std::time::Duration;

use chat_kafka_bridge::callback::sign;
use serde_json::{Value, json};

use crate::contract::assert_schema_valid;
use crate::harness::{
    APP_ID, PARTITIONS, Record, TestBridge, consume, count_records, create_bridge_topics,
    create_topic, fixture, java_partition, now_secs, post, signed_url, unique,
};

/// Sends `body` as `command` for the test app.
async fn send_as(bridge: &TestBridge, command: &str, body: Value) -> u16 {
    let r = post(
        &signed_url(&bridge.base, command, now_secs()),
        serde_json::to_vec(&body).expect("JSON"),
    )
    .await;
    assert_eq!(
        r.json,
        json!({"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}),
        "{command}"
    );
    r.status
}

/// Records by `(command, key)`, each checked against the schema and against
/// the partition Java's partitioner picks for its key.
fn by_command_and_key(records: &[Record]) -> HashMap<(String, Option<String>), Vec<Value>> {
    let mut out: HashMap<_, Vec<Value>> = HashMap::new();
    for r in records {
        let event = r.json();
        assert_schema_valid(&event, "routed event");
        if let Some(key) = &r.key {
            assert_eq!(r.partition, java_partition(key, PARTITIONS), "{key}");
        }
        out.entry((
            event["command"].as_str().expect("command").to_owned(),
            r.key.clone(),
        ))
        .or_default()
        .push(event);
    }
    out
}

/// The built-in table: Group by GroupId, State by Info.To_Account, one event
/// per Push item keyed by its recipient, a command nobody has heard of by
/// its first account field (counted as `other`), an Official Account
/// command without a type of its own to the Official Account topic; all
/// `callback` events with the body unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_is_routed_to_its_topic_and_key() {
    let bridge = TestBridge::start(&[]).await;
    assert_eq!(bridge.send_other_families().await, 4);
    let unknown = json!({"CallbackCommand": "Brand.NewThing", "EventTime": 1_732_770_000_200u64,
        "Operator_Account": "op_1", "Member_Account": "m_1", "Big": 12345678901234567890123u128});
    assert_eq!(send_as(&bridge, "Brand.NewThing", unknown).await, 200);
    let before = json!({"CallbackCommand": "C2C.CallbackBeforeSendMsg",
        "From_Account": "user_li", "To_Account": "user_wang", "MsgBody": []});
    assert_eq!(
        send_as(&bridge, "C2C.CallbackBeforeSendMsg", before).await,
        200
    );
    let new_oa = json!({"CallbackCommand": "OfficialAccount.CallbackAfterSomethingNew",
        "EventTime": 1_732_770_000_300u64, "Official_Account": "@TOA#_new"});
    assert_eq!(
        send_as(&bridge, "OfficialAccount.CallbackAfterSomethingNew", new_oa).await,
        200
    );

    let general = consume(&bridge.general, 6, Duration::from_secs(30)).await;
    assert_eq!(
        general.len(),
        6,
        "group, state, 2 push items, unknown, C2C before"
    );
    let got = by_command_and_key(&general);
    let one = |command: &str, key: &str| -> &Value {
        let events = got
            .get(&(command.to_owned(), Some(key.to_owned())))
            .unwrap_or_else(|| panic!("no {command} keyed {key}: {:?}", got.keys()));
        assert_eq!(events.len(), 1, "{command} {key}");
        &events[0]
    };

    let group = one("Group.CallbackAfterSendMsg", "@TGS#2J4SZEAEL");
    assert_eq!(group["type"], "callback");
    assert_eq!(group["data"]["family"], "group");
    assert_eq!(
        group["data"]["body"]["MsgBody"][0]["MsgContent"]["Text"],
        "red packet"
    );
    assert_eq!(group["data"]["body"]["Random"], 123456);
    assert_eq!(group["event_time_ms"], 1670574414123u64);
    assert_eq!(group["event_time_source"], "callback");
    assert_eq!(group["operator_account"], "admin");
    assert_eq!(group["before"], false);

    let state = one("State.StateChange", "testuser316");
    assert_eq!(state["data"]["body"]["Info"]["Action"], "Login");
    assert_eq!(state["data"]["family"], "state");

    // A user push keyed by its recipient, a group push by its group (issue 11).
    let w = one("Push.OfflinePush", "user2");
    let z = one("Push.OfflinePush", "@TGS#12DEVUDHQ");
    assert_ne!(w["id"], z["id"]);
    assert_eq!(w["data"]["batch"]["index"], 0);
    assert_eq!(z["data"]["batch"]["index"], 1);
    assert_eq!(z["data"]["batch"]["size"], 2);
    assert_eq!(w["data"]["batch"]["id"], z["data"]["batch"]["id"]);
    assert_eq!(
        z["data"]["body"]["PushID"],
        "6710c631_85_392fcbcff_200000b2f2c6820_200002c869bfb81"
    );
    // Push times are seconds (Tencent's "Other Push Callbacks" page).
    assert_eq!(z["event_time_ms"], 1557481127000u64);
    assert_eq!(z["event_time_unit"], "s");
    assert_eq!(z["data"]["body"]["EventTime"], 1557481127u64);

    let other = one("Brand.NewThing", "op_1");
    assert_eq!(other["data"]["family"], "other");
    // Numbers keep their exact text, however large.
    let raw = general
        .iter()
        .find(|r| r.key.as_deref() == Some("op_1"))
        .expect("the unknown command's record");
    assert!(
        String::from_utf8_lossy(&raw.payload).contains("12345678901234567890123"),
        "{}",
        String::from_utf8_lossy(&raw.payload)
    );
    assert_eq!(other["event_time_source"], "callback");

    let audit = one("C2C.CallbackBeforeSendMsg", "user_li");
    assert_eq!(audit["before"], true);
    assert_eq!(audit["event_time_source"], "received");

    let oa = consume(&bridge.topic, 1, Duration::from_secs(30)).await;
    assert_eq!(oa.len(), 1);
    assert_eq!(oa[0].key.as_deref(), Some("@TOA#_new"));
    let e = oa[0].json();
    assert_schema_valid(&e, "new OA command");
    assert_eq!(e["type"], "callback");
    assert_eq!(e["official_account"], "@TOA#_new");
    assert_eq!(oa[0].headers["ce_type"], "com.tencentcloud.chat.callback");
    assert_eq!(oa[0].headers["ce_subject"], "@TOA#_new");

    for (family, outcome, n) in [
        ("group", "published", 1.0),
        ("state", "published", 1.0),
        ("push", "published", 1.0),
        ("other", "published", 1.0),
        ("c2c", "published", 1.0),
        ("official_account", "published", 1.0),
    ] {
        let sample =
            format!(r#"chat_bridge_callbacks_total{{family="{family}",outcome="{outcome}"}}"#);
        assert_eq!(bridge.metric(&sample).await, n, "{sample}");
    }
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_events_total{family="push"}"#)
            .await,
        2.0
    );
    assert_eq!(count_records(&bridge.dlq).await, 0);
}

/// A Push batch that is not a list of callbacks is dead-lettered whole; an
/// empty one is answered OK and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_are_dead_lettered_and_empty_ones_counted() {
    let bridge = TestBridge::start(&[]).await;
    assert_eq!(
        send_as(&bridge, "Push.OfflinePush", json!({"Events": [1, 2]})).await,
        200
    );
    assert_eq!(
        send_as(&bridge, "Push.OfflinePush", json!({"Events": []})).await,
        200
    );
    let dlq = consume(&bridge.dlq, 1, Duration::from_secs(30)).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].headers["bridge_reason"], "body_invalid_field");
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_callbacks_total{family="push",outcome="counted"}"#)
            .await,
        1.0
    );
    assert_eq!(count_records(&bridge.general).await, 0);
}

/// Configured routes (a named topic with its own key, a counted family),
/// Before callbacks only counted, and a second app whose events go to topics
/// of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_routes_app_topics_and_before_audit_off() {
    let c2c_topic = unique("c2c");
    let app2 = unique("app2");
    create_topic(&c2c_topic).await;
    create_bridge_topics(&app2).await;
    let app2_id: u64 = 1_400_000_777;
    let app2_token = "second-app-token";
    let file = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{app2}.toml"));
    std::fs::write(
        &file,
        format!(
            r#"
publish_before = false

[[apps]]
sdk_app_id = {app2_id}
token = "{app2_token}"
topic = "{app2}"
general_topic = "{app2}-general"
dlq_topic = "{app2}-dlq"

[[routes]]
command = "C2C.*"
topic = "{c2c_topic}"
key = ["To_Account", "From_Account"]

[[routes]]
command = "Group.*"
action = "count"
"#
        ),
    )
    .expect("write config");
    let bridge = TestBridge::start(&["--config", file.to_str().expect("utf-8")]).await;

    let c2c = json!({"CallbackCommand": "C2C.CallbackAfterSendMsg",
        "From_Account": "user_li", "To_Account": "user_wang", "MsgBody": []});
    assert_eq!(send_as(&bridge, "C2C.CallbackAfterSendMsg", c2c).await, 200);
    assert_eq!(
        bridge
            .send_fixture("Group.CallbackAfterSendMsg.json")
            .await
            .status,
        200
    );
    // Before callbacks: answered "allow" at once, counted, not published.
    assert_eq!(
        bridge
            .send_fixture("OfficialAccount.CallbackBeforeSendMsg.json")
            .await
            .status,
        200
    );
    let before = json!({"CallbackCommand": "C2C.CallbackBeforeSendMsg",
        "From_Account": "user_li", "To_Account": "user_wang"});
    assert_eq!(
        send_as(&bridge, "C2C.CallbackBeforeSendMsg", before).await,
        200
    );
    // The second app, with its own token and topics.
    let t = now_secs().to_string();
    let url = format!(
        "{}/callback?SdkAppid={app2_id}&CallbackCommand=OfficialAccount.CallbackAfterOfficialAccountFull\
         &contenttype=json&ClientIP=203.0.113.7&OptPlatform=RESTAPI&Sign={}&RequestTime={t}",
        bridge.base,
        sign(app2_token, &t)
    );
    assert_eq!(
        post(
            &url,
            fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json")
        )
        .await
        .status,
        200
    );
    let url = url.replace(
        "OfficialAccount.CallbackAfterOfficialAccountFull",
        "State.StateChange",
    );
    assert_eq!(
        post(&url, fixture("State.StateChange.json")).await.status,
        200
    );
    // The second app's token does not sign for the first app.
    let wrong = url.replace(
        &format!("SdkAppid={app2_id}"),
        &format!("SdkAppid={APP_ID}"),
    );
    assert_eq!(
        post(&wrong, fixture("State.StateChange.json")).await.status,
        401
    );

    let routed = consume(&c2c_topic, 1, Duration::from_secs(30)).await;
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0].key.as_deref(), Some("user_wang"));
    assert_schema_valid(&routed[0].json(), "routed C2C");
    let app2_oa = consume(&app2, 1, Duration::from_secs(30)).await;
    assert_eq!(app2_oa.len(), 1);
    assert_eq!(app2_oa[0].json()["sdk_app_id"], app2_id);
    assert_eq!(app2_oa[0].json()["type"], "official_account.full");
    let app2_general = consume(&format!("{app2}-general"), 1, Duration::from_secs(30)).await;
    assert_eq!(app2_general.len(), 1);
    assert_eq!(app2_general[0].key.as_deref(), Some("testuser316"));

    for (family, n) in [("group", 1.0), ("official_account", 1.0), ("c2c", 1.0)] {
        let sample =
            format!(r#"chat_bridge_callbacks_total{{family="{family}",outcome="counted"}}"#);
        assert_eq!(bridge.metric(&sample).await, n, "{sample}");
    }
    // Nothing reached the first app's topics.
    assert_eq!(count_records(&bridge.topic).await, 0);
    assert_eq!(count_records(&bridge.general).await, 0);
    assert_eq!(count_records(&c2c_topic).await, 1);
}

/// With a de-duplication window, a callback Tencent sends again (same
/// content, new signature) is answered OK and counted, not published again;
/// a repeated batch publishes none of its items again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dedup_window_publishes_a_repeat_once() {
    let bridge = TestBridge::start(&["--dedup-window", "10m"]).await;
    for _ in 0..3 {
        assert_eq!(
            bridge
                .send_fixture("OfficialAccount.CallbackAfterSendMsg.json")
                .await
                .status,
            200
        );
        assert_eq!(
            bridge.send_fixture("Push.OfflinePush.json").await.status,
            200
        );
    }
    // A different callback is not a duplicate.
    assert_eq!(
        bridge
            .send_fixture("OfficialAccount.CallbackAfterOfficialAccountFull.json")
            .await
            .status,
        200
    );
    let oa = consume(&bridge.topic, 2, Duration::from_secs(30)).await;
    assert_eq!(oa.len(), 2, "one message_sent, one full");
    let general = consume(&bridge.general, 2, Duration::from_secs(30)).await;
    assert_eq!(general.len(), 2, "the two push items, once");
    for (sample, n) in [
        (
            r#"chat_bridge_callbacks_total{family="official_account",outcome="duplicate"}"#,
            2.0,
        ),
        (
            r#"chat_bridge_callbacks_total{family="push",outcome="duplicate"}"#,
            2.0,
        ),
        ("chat_bridge_dedup_duplicates_total", 6.0),
        ("chat_bridge_dedup_entries", 4.0),
        ("chat_bridge_dedup_evicted_total", 0.0),
    ] {
        assert_eq!(bridge.metric(sample).await, n, "{sample}");
    }
}

/// A user's action waits for a Before callback's answer, so it is answered
/// as soon as its audit event is queued, even in `delivered` mode with Kafka
/// unreachable, where an After callback waits out `BRIDGE_DELIVERY_TIMEOUT`
/// and is then spooled. Both are kept: the spool holds the After event, the
/// producer's queue the Before one (spooled too once it fails, at shutdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_callbacks_do_not_wait_for_the_ack_mode() {
    let bridge = TestBridge::without_kafka(
        "before-at-once",
        &["--ack-mode", "delivered", "--delivery-timeout", "1500ms"],
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(
        bridge
            .send_fixture("OfficialAccount.CallbackBeforeSendMsg.json")
            .await
            .status,
        200
    );
    let before = started.elapsed();
    let started = std::time::Instant::now();
    assert_eq!(
        bridge
            .send_fixture("OfficialAccount.CallbackAfterSendMsg.json")
            .await
            .status,
        200
    );
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "the After callback waited for Kafka: {after:?}"
    );
    assert!(
        before < Duration::from_millis(750),
        "the Before callback was answered without waiting for Kafka: {before:?}"
    );
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_spool_appends_total{cause="deadline"}"#)
            .await,
        1.0
    );
    let last = bridge.stop().await;
    assert_eq!(last.discarded, 0, "{last:?}");
    assert_eq!(last.spooled, 2, "{last:?}");
}

/// The items of a batch wait for Kafka together: in `delivered` mode with
/// Kafka unreachable, a 20-item `Push.OfflinePush` is answered after one
/// `BRIDGE_DELIVERY_TIMEOUT`, not twenty, inside Tencent's 2 s, with every
/// item spooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_for_kafka_once_not_once_per_item() {
    let bridge = TestBridge::without_kafka(
        "batch-deadline",
        &["--ack-mode", "delivered", "--delivery-timeout", "500ms"],
    )
    .await;
    let items: Vec<Value> = (0..20)
        .map(|i| {
            json!({"CallbackCommand": "Push.OfflinePush", "EventTime": 1_732_770_000u64 + i,
                "From_Account": "admin01", "To_Account": format!("user_{i}")})
        })
        .collect();
    let started = std::time::Instant::now();
    let status = send_as(&bridge, "Push.OfflinePush", json!({ "Events": items })).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(1800),
        "answered after {elapsed:?}"
    );
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_spool_appends_total{cause="deadline"}"#)
            .await,
        20.0
    );
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_events_total{family="push"}"#)
            .await,
        20.0
    );
    let last = bridge.stop().await;
    assert_eq!(last.discarded, 0, "{last:?}");
}
