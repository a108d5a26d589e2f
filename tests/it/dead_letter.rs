//! Authentic callbacks whose JSON body cannot be normalized are published raw
//! to the dead-letter topic and still answered OK; forged ones never are, and
//! bodies that are not JSON at all are refused (tests/it/hostile.rs).

use std::time::Duration;

use crate::harness::{APP_ID, TestBridge, consume, count_records, now_secs, post, signed_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_authentic_bodies_go_raw_to_the_dead_letter_topic() {
    let bridge = TestBridge::start(&[]).await;
    let full = "OfficialAccount.CallbackAfterOfficialAccountFull";
    let cases: Vec<(&str, &[u8], &str)> = vec![
        (full, b"[1,2,3]", "body_not_object"),
        (full, br#"{"CallbackCommand":"OfficialAccount.CallbackAfterOfficialAccountFull","EventTime":1}"#, "body_missing_field"),
        (
            "OfficialAccount.CallbackAfterAddSubscriber",
            br#"{"Official_Account":"@TOA#_x","SubscribeAccountList":"everyone"}"#,
            "body_invalid_field",
        ),
        // A string where an object belongs, in a family we do not publish: kept all the same.
        ("Group.CallbackAfterSendMsg", br#""just a string""#, "body_not_object"),
    ];
    for (command, body, _) in &cases {
        let r = post(
            &signed_url(&bridge.base, command, now_secs()),
            body.to_vec(),
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{command} {:?}: {r:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(r.json["ActionStatus"], "OK");
    }
    // Forged garbage (bad signature) is rejected and never dead-lettered.
    let forged = format!(
        "{}/callback?SdkAppid={APP_ID}&CallbackCommand={full}&Sign={}&RequestTime={}",
        bridge.base,
        "0".repeat(64),
        now_secs()
    );
    assert_eq!(post(&forged, b"not json".to_vec()).await.status, 401);

    let records = consume(&bridge.dlq, cases.len(), Duration::from_secs(30)).await;
    assert_eq!(records.len(), cases.len());
    assert_eq!(
        count_records(&bridge.dlq).await,
        cases.len(),
        "the forged one is absent"
    );
    for (command, body, reason) in &cases {
        let rec = records
            .iter()
            .find(|r| r.payload == *body)
            .unwrap_or_else(|| panic!("raw body of {command} not found byte for byte"));
        assert_eq!(rec.headers["bridge_reason"], *reason, "{command}");
        assert_eq!(rec.headers["bridge_command"], *command);
        assert_eq!(rec.headers["bridge_sdk_app_id"], APP_ID.to_string());
        assert_eq!(rec.headers["bridge_client_ip"], "203.0.113.7");
        assert_eq!(rec.headers["bridge_id"].len(), 32);
        assert!(!rec.headers["bridge_error"].is_empty());
        let sample = format!(r#"chat_bridge_callbacks_dead_lettered_total{{reason="{reason}"}}"#);
        assert!(bridge.metric(&sample).await >= 1.0, "{sample}");
    }
    assert_eq!(
        count_records(&bridge.topic).await,
        0,
        "no event from a bad body"
    );
    let totals = bridge.stop().await;
    assert_eq!(totals.dead_lettered as usize, cases.len());
    assert_eq!(totals.delivered as usize, cases.len());
}
