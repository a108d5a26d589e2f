//! Accepted callbacks: what lands in Kafka, keyed and partitioned as Java would.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::harness::{
    APP_ID, PARTITIONS, TestBridge, command_of, consume, fixture, fixture_names, java_partition,
    now_secs, post, signed_url,
};

/// Every Official Account fixture, through HTTP and Kafka: answered OK at
/// once, one record each, keyed by the account, on Java's partition for
/// that key, with the normalized payload and CloudEvents headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_official_account_command_lands_keyed_on_javas_partition() {
    let bridge = TestBridge::start(&[]).await;
    let names: Vec<String> = fixture_names()
        .into_iter()
        .filter(|n| n.starts_with("OfficialAccount."))
        .collect();
    let mut sent = HashMap::new();
    for name in &names {
        let body = fixture(name);
        let r = bridge.send(&body).await;
        assert_eq!(r.status, 200, "{name}: {r:?}");
        assert_eq!(
            r.json,
            serde_json::json!({"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}),
            "{name}"
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        // Tencent's samples share one EventTime: each command is sent once.
        sent.insert(
            v["CallbackCommand"].as_str().expect("a command").to_owned(),
            (name.clone(), v),
        );
    }

    let records = consume(&bridge.topic, names.len(), Duration::from_secs(30)).await;
    assert_eq!(records.len(), names.len(), "one record per callback");
    let mut commands = HashSet::new();
    for rec in &records {
        let e = rec.json();
        let (name, body) = &sent[e["command"].as_str().expect("command")];
        crate::contract::assert_schema_valid(&e, name);
        commands.insert(e["command"].as_str().expect("command").to_owned());

        assert_eq!(e["version"], 1, "{name}");
        assert_eq!(e["command"], body["CallbackCommand"], "{name}");
        assert_eq!(e["sdk_app_id"], APP_ID, "{name}");
        assert_eq!(e["client_ip"], "203.0.113.7", "{name}");
        assert_eq!(e["platform"], "RESTAPI", "{name}");
        assert_eq!(e["event_time_source"], "callback", "{name}");
        assert!(e["received_at_ms"].as_u64().expect("received_at_ms") > 1_700_000_000_000);
        let id = e["id"].as_str().expect("id");
        assert_eq!(id.len(), 32, "{name}");
        assert!(
            e["type"]
                .as_str()
                .expect("type")
                .starts_with("official_account."),
            "{name}"
        );

        // Key: Official_Account, or Owner_Account before the account exists.
        let expected_key = body
            .get("Official_Account")
            .or_else(|| body.get("Owner_Account"))
            .and_then(|k| k.as_str())
            .expect("a key field");
        assert_eq!(rec.key.as_deref(), Some(expected_key), "{name}");
        assert_eq!(
            e["official_account"],
            body.get("Official_Account").cloned().unwrap_or_default(),
            "{name}"
        );
        assert_eq!(
            rec.partition,
            java_partition(expected_key, PARTITIONS),
            "{name}: not the partition Java's murmur2 partitioner picks"
        );

        // CloudEvents Kafka binding, binary mode.
        let h = &rec.headers;
        assert_eq!(h["ce_specversion"], "1.0", "{name}");
        assert_eq!(h["ce_id"], id, "{name}");
        assert_eq!(
            h["ce_source"],
            format!("/tencent-cloud-chat/apps/{APP_ID}"),
            "{name}"
        );
        assert_eq!(
            h["ce_type"],
            format!(
                "com.tencentcloud.chat.{}",
                e["type"].as_str().expect("type")
            ),
            "{name}"
        );
        assert!(
            h["ce_time"].ends_with('Z') && h["ce_time"].contains('T'),
            "{name}: {}",
            h["ce_time"]
        );
        assert_eq!(h["content-type"], "application/json", "{name}");

        // Type-specific data, spot-checked against the body Tencent sent.
        match e["type"].as_str().expect("type") {
            "official_account.info_changed" => {
                let changes = e["data"]["changes"].as_object().expect("changes");
                for (ours, theirs) in [
                    ("name", "Name"),
                    ("introduction", "Introduction"),
                    ("face_url", "FaceUrl"),
                    ("organization", "Organization"),
                ] {
                    assert_eq!(changes.get(ours), body.get(theirs), "{name}: {ours}");
                }
            }
            "official_account.subscribed"
            | "official_account.unsubscribed"
            | "official_account.before_subscribe" => {
                let subs: Vec<_> = body["SubscribeAccountList"]
                    .as_array()
                    .expect("list")
                    .iter()
                    .map(|s| s["Subscriber_Account"].clone())
                    .collect();
                assert_eq!(
                    e["data"]["subscribers"],
                    serde_json::Value::Array(subs),
                    "{name}"
                );
            }
            "official_account.message_sent" => {
                assert_eq!(e["data"]["key"], body["MsgKey"], "{name}");
                assert_eq!(e["data"]["body"], body["MsgBody"], "{name}");
                assert_eq!(
                    e["data"]["time_ms"].as_u64(),
                    body["MsgTime"].as_u64().map(|s| s * 1000),
                    "{name}"
                );
            }
            _ => {}
        }
    }
    assert_eq!(commands.len(), 11, "all eleven commands: {commands:?}");
    assert_eq!(
        bridge
            .metric(r#"chat_bridge_callbacks_total{family="official_account",outcome="published"}"#)
            .await as usize,
        names.len()
    );
    let totals = bridge.stop().await;
    assert_eq!(totals.delivered as usize, names.len());
    assert_eq!(totals.failed, 0);
}

/// A retried callback (new RequestTime and Sign, same body) gets the same id;
/// a different callback gets a different one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_callback_twice_has_the_same_id() {
    let bridge = TestBridge::start(&[]).await;
    let body = fixture("OfficialAccount.CallbackAfterOfficialAccountInfoChanged.json");
    let command = command_of(&body);
    let t = now_secs();
    for request_time in [t, t - 5] {
        let r = post(
            &signed_url(&bridge.base, &command, request_time),
            body.clone(),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        bridge
            .send_fixture(
                "variants/OfficialAccount.CallbackAfterOfficialAccountInfoChanged+name-only.json"
            )
            .await
            .status,
        200
    );
    let records = consume(&bridge.topic, 3, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 3);
    for r in &records {
        crate::contract::assert_schema_valid(&r.json(), "retried callback");
    }
    let ids: Vec<String> = records
        .iter()
        .map(|r| r.json()["id"].as_str().expect("id").to_owned())
        .collect();
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 2, "{ids:?}");
}
