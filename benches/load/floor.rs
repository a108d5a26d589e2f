//! `--floor-server`: the least code that does the bridge's job for the
//! benchmark's bodies, as a yardstick for what that job costs. Per callback:
//! the same query check and signature (the library's `verify`), one borrowed
//! parse of the body (each field a raw JSON slice, sorted by name), the same
//! content id (SHA-256 over the app, the command, `EventTime` and the other
//! fields in canonical JSON), a v1 event with the same fields (written by
//! hand from the raw slices), the same nine headers and key, one record
//! through librdkafka's `ThreadedProducer` with the bridge's producer
//! defaults (`producer_defaults`), and the OK answer.
//!
//! What it leaves out is what the bridge adds on purpose: validation of
//! every field (it trusts the benchmark's bodies), routing, metrics, logs,
//! the spool and dead letters, de-duplication, limits. Its shortcut for the
//! id: the benchmark's bodies are serde_json's compact output with sorted
//! keys, so each raw value already is its canonical JSON; verification
//! checks every id against the library's `event_id`, which proves it.
//!
//! Control on stdin: `in_flight` prints the producer's unconfirmed records;
//! EOF flushes the producer, prints `failed <n>` (records not delivered or
//! refused) and exits.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::BufRead;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chat_kafka_bridge::callback::verify;
use chat_kafka_bridge::clock::{now_ms, rfc3339_ms};
use chat_kafka_bridge::sink::producer_defaults;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::workload::{APP_ID, TOKEN};

/// The bridge's defaults: `BRIDGE_MAX_BODY_BYTES`, `BRIDGE_SIGNATURE_MAX_SKEW`,
/// `BRIDGE_KAFKA_MAX_RECORD_BYTES`.
const MAX_BODY: usize = 1024 * 1024;
const MAX_SKEW: Duration = Duration::from_secs(60);
const MAX_RECORD: usize = 1_000_000;

/// How an Official Account command's fields become the event's `data`.
#[derive(Clone, Copy)]
enum Shape {
    Lifecycle,
    Info,
    Subscribers,
    Full,
    Send,
    Sent,
    Withdraw,
}

/// Command, event type, shape (`docs/events.md`).
const COMMANDS: [(&str, &str, Shape); 11] = [
    (
        "OfficialAccount.CallbackBeforeCreateOfficialAccount",
        "before_create",
        Shape::Lifecycle,
    ),
    (
        "OfficialAccount.CallbackAfterCreateOfficialAccount",
        "created",
        Shape::Lifecycle,
    ),
    (
        "OfficialAccount.CallbackAfterOfficialAccountDestroyed",
        "destroyed",
        Shape::Lifecycle,
    ),
    (
        "OfficialAccount.CallbackAfterOfficialAccountInfoChanged",
        "info_changed",
        Shape::Info,
    ),
    (
        "OfficialAccount.CallbackBeforeAddSubscriber",
        "before_subscribe",
        Shape::Subscribers,
    ),
    (
        "OfficialAccount.CallbackAfterAddSubscriber",
        "subscribed",
        Shape::Subscribers,
    ),
    (
        "OfficialAccount.CallbackAfterDeleteSubscriber",
        "unsubscribed",
        Shape::Subscribers,
    ),
    (
        "OfficialAccount.CallbackAfterOfficialAccountFull",
        "full",
        Shape::Full,
    ),
    (
        "OfficialAccount.CallbackBeforeSendMsg",
        "before_message_send",
        Shape::Send,
    ),
    (
        "OfficialAccount.CallbackAfterSendMsg",
        "message_sent",
        Shape::Sent,
    ),
    (
        "OfficialAccount.CallbackAfterMsgWithDraw",
        "messages_withdrawn",
        Shape::Withdraw,
    ),
];

/// Counts records that were not delivered.
#[derive(Default)]
struct Counter(AtomicU64);

impl ClientContext for Counter {}

impl ProducerContext for Counter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Floor {
    producer: ThreadedProducer<Counter>,
    topic: String,
    instance: String,
    seq: AtomicU64,
}

/// Serves until stdin closes; `FLOOR_BROKERS` and `FLOOR_TOPIC` say where to write.
pub fn serve_floor() {
    let mut config = ClientConfig::new();
    config.set(
        "bootstrap.servers",
        std::env::var("FLOOR_BROKERS").expect("FLOOR_BROKERS"),
    );
    for (k, v) in producer_defaults(MAX_RECORD) {
        config.set(k, v);
    }
    let floor = Arc::new(Floor {
        producer: config
            .create_with_context(Counter::default())
            .expect("a producer"),
        topic: std::env::var("FLOOR_TOPIC").expect("FLOOR_TOPIC"),
        instance: format!("{:016x}", now_ms() ^ u64::from(std::process::id()) << 40),
        seq: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        println!("{}", listener.local_addr().expect("an address"));
        let control = floor.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if line == "in_flight" {
                    println!("{}", control.producer.in_flight_count());
                }
            }
            let _ = control.producer.flush(Duration::from_secs(30));
            let failed = control.producer.context().0.load(Ordering::Relaxed)
                + control.producer.in_flight_count().max(0) as u64;
            println!("failed {failed}");
            let _ = std::io::stdout().flush();
            std::process::exit(0);
        });
        crate::servers::serve_http(listener, move || {
            let floor = floor.clone();
            service_fn(move |req| answer(floor.clone(), req))
        })
        .await;
    });
}

async fn answer(
    floor: Arc<Floor>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let received_at_ms = now_ms();
    let (parts, body) = req.into_parts();
    let status = match Query::check(parts.uri.query().unwrap_or(""), received_at_ms) {
        Err(status) => status,
        #[allow(clippy::disallowed_methods)] // bounded by Limited, as in the bridge
        Ok(q) => match Limited::new(body, MAX_BODY).collect().await {
            Err(_) => StatusCode::BAD_REQUEST,
            Ok(b) => floor.publish(&q, &b.to_bytes(), received_at_ms),
        },
    };
    let body: &'static [u8] = if status == StatusCode::OK {
        crate::client::OK_BODY
    } else {
        b"{}"
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// The query fields the event uses (the benchmark's queries need no decoding).
struct Query<'a> {
    command: &'a str,
    client_ip: Option<&'a str>,
    platform: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// The app must be ours and the signature good and fresh.
    fn check(query: &'a str, now_ms: u64) -> Result<Query<'a>, StatusCode> {
        let (mut app, mut sign, mut time) = (None, None, None);
        let mut q = Query {
            command: "",
            client_ip: None,
            platform: None,
        };
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "SdkAppid" => app = v.parse::<u64>().ok(),
                "CallbackCommand" => q.command = v,
                "ClientIP" => q.client_ip = Some(v),
                "OptPlatform" => q.platform = Some(v),
                "Sign" => sign = Some(v),
                "RequestTime" => time = Some(v),
                _ => {}
            }
        }
        if app != Some(APP_ID) || q.command.is_empty() {
            return Err(StatusCode::BAD_REQUEST);
        }
        let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        verify(TOKEN, sign, time, now, MAX_SKEW).map_err(|_| StatusCode::UNAUTHORIZED)?;
        Ok(q)
    }
}

/// The body: each field's raw JSON, sorted by name.
type Fields<'a> = BTreeMap<Cow<'a, str>, &'a RawValue>;

#[derive(Deserialize)]
struct Subscriber<'a> {
    #[serde(rename = "Subscriber_Account", borrow)]
    account: &'a RawValue,
}

#[derive(Deserialize)]
struct Withdrawn<'a> {
    #[serde(rename = "MsgKey", borrow)]
    key: &'a RawValue,
}

impl Floor {
    fn publish(&self, q: &Query<'_>, body: &[u8], received_at_ms: u64) -> StatusCode {
        match self.record(q, body, received_at_ms) {
            Some(Ok(())) => StatusCode::OK,
            Some(Err(())) => StatusCode::SERVICE_UNAVAILABLE,
            None => StatusCode::BAD_REQUEST,
        }
    }

    /// `None`: a body the floor does not know; `Some(Err)`: the producer refused it.
    fn record(&self, q: &Query<'_>, body: &[u8], received_at_ms: u64) -> Option<Result<(), ()>> {
        let (_, type_name, shape) = *COMMANDS.iter().find(|(c, ..)| *c == q.command)?;
        let mut f: Fields<'_> = serde_json::from_slice(body).ok()?;
        f.remove("CallbackCommand");
        let event_time = f.get("EventTime").and_then(|v| int(v));

        // The id, as `callback::event_id` computes it.
        let mut canonical = Vec::with_capacity(body.len());
        canonical.push(b'{');
        for (k, v) in f.iter().filter(|(k, _)| *k != "EventTime") {
            if canonical.len() > 1 {
                canonical.push(b',');
            }
            serde_json::to_writer(&mut canonical, k).ok()?;
            canonical.push(b':');
            canonical.extend_from_slice(v.get().as_bytes());
        }
        canonical.push(b'}');
        let mut h = Sha256::new();
        h.update(b"chat-kafka-bridge/v1\0");
        h.update(format!("{APP_ID}\0{}\0", q.command));
        match event_time {
            Some(t) => h.update(t.to_string()),
            None => h.update(b"-"),
        }
        h.update(b"\0");
        h.update(&canonical);
        let id = hex::encode(&h.finalize()[..16]);

        // `data` and the mapped fields; what is left is `extra`.
        let account = f.remove("Official_Account");
        let mut data = Vec::with_capacity(body.len());
        let mut operator = None;
        let mut key = account;
        let raw = |v: Option<&RawValue>| v.map_or("null", RawValue::get).to_owned();
        match shape {
            Shape::Lifecycle => {
                operator = f.remove("Operator_Account");
                let owner = f.remove("Owner_Account");
                key = key.or(owner);
                let name = f.remove("Name");
                data = format!(r#"{{"owner_account":{},"name":{}}}"#, raw(owner), raw(name)).into();
            }
            Shape::Info => {
                operator = f.remove("Operator_Account");
                data.extend_from_slice(br#"{"changes":{"#);
                for (ours, theirs) in [
                    ("name", "Name"),
                    ("introduction", "Introduction"),
                    ("face_url", "FaceUrl"),
                    ("organization", "Organization"),
                ] {
                    if let Some(v) = f.remove(theirs) {
                        if data.len() > 12 {
                            data.push(b',');
                        }
                        write!(data, r#""{ours}":{}"#, v.get()).ok()?;
                    }
                }
                data.extend_from_slice(b"}}");
            }
            Shape::Subscribers => {
                operator = f.remove("Operator_Account");
                let list: Vec<Subscriber<'_>> =
                    serde_json::from_str(f.remove("SubscribeAccountList")?.get()).ok()?;
                let list: Vec<&str> = list.iter().map(|s| s.account.get()).collect();
                data = format!(r#"{{"subscribers":[{}]}}"#, list.join(",")).into();
            }
            Shape::Full => data.extend_from_slice(b"{}"),
            Shape::Send | Shape::Sent => {
                let (msg_key, time) = match shape {
                    Shape::Sent => (f.remove("MsgKey"), f.remove("MsgTime").and_then(int)),
                    _ => (None, None),
                };
                let online = f
                    .remove("OnlineOnlyFlag")
                    .and_then(int)
                    .is_some_and(|n| n != 0);
                let (body, custom) = (f.remove("MsgBody"), f.remove("CloudCustomData"));
                let time = time.map_or("null".into(), |s| (s * 1000).to_string());
                data = format!(
                    r#"{{"key":{},"time_ms":{time},"online_only":{online},"body":{},"cloud_custom_data":{}}}"#,
                    raw(msg_key), raw(body), raw(custom)
                )
                .into();
            }
            Shape::Withdraw => {
                let list: Vec<Withdrawn<'_>> =
                    serde_json::from_str(f.remove("WithdrawMsgList")?.get()).ok()?;
                let list: Vec<&str> = list.iter().map(|m| m.key.get()).collect();
                data = format!(r#"{{"message_keys":[{}]}}"#, list.join(",")).into();
            }
        }

        // The event, field by field in `event::Event`'s order.
        let (time_ms, source, unit) = match event_time {
            Some(t) => (t, "callback", r#""ms""#),
            None => (received_at_ms, "received", "null"),
        };
        let mut event = Vec::with_capacity(body.len() + 512);
        write!(
            event,
            r#"{{"version":1,"id":"{id}","type":"official_account.{type_name}","data":"#
        )
        .ok()?;
        event.extend_from_slice(&data);
        event.extend_from_slice(br#","command":"#);
        serde_json::to_writer(&mut event, q.command).ok()?;
        write!(
            event,
            r#","before":{},"sdk_app_id":{APP_ID},"official_account":{},"operator_account":{},"event_time_ms":{time_ms},"event_time_source":"{source}","event_time_unit":{unit},"event_time_unit_assumed":false,"received_at_ms":{received_at_ms},"client_ip":"#,
            q.command.starts_with("OfficialAccount.CallbackBefore"),
            raw(account),
            raw(operator)
        )
        .ok()?;
        serde_json::to_writer(&mut event, &q.client_ip).ok()?;
        event.extend_from_slice(br#","platform":"#);
        serde_json::to_writer(&mut event, &q.platform).ok()?;
        event.extend_from_slice(br#","extra":{"#);
        for (i, (k, v)) in f.iter().enumerate() {
            if i > 0 {
                event.push(b',');
            }
            serde_json::to_writer(&mut event, k).ok()?;
            event.push(b':');
            event.extend_from_slice(v.get().as_bytes());
        }
        event.extend_from_slice(b"}}");

        // The record: the bridge's key, headers and timestamp.
        let key: Option<String> = key.and_then(|k| serde_json::from_str(k.get()).ok());
        let account: Option<String> = account.and_then(|a| serde_json::from_str(a.get()).ok());
        let seq = (self.seq.fetch_add(1, Ordering::Relaxed) + 1).to_string();
        let source = format!("/tencent-cloud-chat/apps/{APP_ID}");
        let ce_type = format!("com.tencentcloud.chat.official_account.{type_name}");
        let ce_time = rfc3339_ms(time_ms);
        let mut headers = OwnedHeaders::new_with_capacity(9);
        for (k, v) in [
            ("ce_specversion", "1.0"),
            ("ce_id", id.as_str()),
            ("ce_source", source.as_str()),
            ("ce_type", ce_type.as_str()),
            ("ce_time", ce_time.as_str()),
            ("content-type", "application/json"),
        ]
        .into_iter()
        .chain(account.as_deref().map(|a| ("ce_subject", a)))
        .chain([
            ("bridge_instance", self.instance.as_str()),
            ("bridge_seq", seq.as_str()),
        ]) {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = BaseRecord::to(&self.topic)
            .payload(&event)
            .headers(headers)
            .timestamp(received_at_ms as i64);
        if let Some(k) = &key {
            record = record.key(k.as_str());
        }
        Some(self.producer.send(record).map_err(|_| ()))
    }
}

/// A non-negative integer, sent as a number or a string of digits.
fn int(v: &RawValue) -> Option<u64> {
    v.get().trim_matches('"').parse().ok()
}
