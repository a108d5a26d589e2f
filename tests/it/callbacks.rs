//! Every command of the command table (`src/callback/commands.toml`), as
//! Tencent sends it: its fixture (Tencent's sample), or for a command with
//! none the smallest body the table allows, lands on its topic, one event
//! per batch item, keyed as the table says on the partition Java's
//! partitioner picks, with `event_time_ms` read in the table's unit
//! (issue 11). The table is read here independently of the bridge's own
//! parser, so a row and the code cannot agree by sharing a mistake.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::contract::{assert_schema_valid, java_partitions};
use crate::harness::{
    PARTITIONS, Record, TestBridge, consume, fixture, now_secs, post, signed_url,
};

/// A day, in milliseconds: how close `event_time_ms` must be to the sample's
/// documented time read in the table's unit (a unit error is off by years).
const DAY_MS: i64 = 86_400_000;
/// 2015-01-01 and 2030-01-01 in Unix milliseconds: every sample's time, read
/// in its unit, falls between them (a unit wrong in the table itself lands
/// in 1970 or in the year 50000, so this does not trust the table).
const PLAUSIBLE_MS: std::ops::Range<i64> = 1_420_070_400_000..1_893_456_000_000;

/// One row of the table, the fields this test needs.
struct Row {
    name: String,
    family: String,
    kind: String,
    batch: String,
    key: Vec<String>,
    event_time: String,
    unit: Option<String>,
    body_command: bool,
    answer: String,
    fixture: String,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/callback/commands.toml"
    ))
    .expect("commands.toml");
    let table: toml::Value = toml::from_str(&text).expect("TOML");
    let s = |r: &toml::Value, k: &str| r[k].as_str().expect(k).to_owned();
    table["command"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let event_time = s(r, "event_time");
            Row {
                name: s(r, "name"),
                family: s(r, "family"),
                kind: s(r, "kind"),
                batch: s(r, "batch"),
                key: r["key"]
                    .as_array()
                    .expect("key")
                    .iter()
                    .map(|k| k.as_str().expect("path").to_owned())
                    .collect(),
                unit: r["times"]
                    .get(&event_time)
                    .and_then(|u| u.as_str())
                    .map(str::to_owned),
                event_time,
                body_command: r["body_command"].as_bool().expect("body_command"),
                answer: s(r, "answer"),
                fixture: s(r, "fixture"),
            }
        })
        .collect()
}

/// The value at a dotted path (a number segment indexes an array).
fn at<'a>(fields: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(fields, |v, part| match v {
        Value::Object(m) => m.get(part),
        Value::Array(a) => a.get(part.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A key's text: a non-empty string, or a number's digits.
fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The smallest body the table allows for a command Tencent publishes no
/// sample of: its command, its key fields, its time field in its unit.
fn minimal_body(row: &Row, now_secs: i64) -> Value {
    let mut body = Map::new();
    if row.body_command {
        body.insert("CallbackCommand".into(), json!(row.name));
    }
    if !row.event_time.is_empty() {
        let t = match row.unit.as_deref() {
            Some("s") => now_secs,
            _ => now_secs * 1000,
        };
        body.insert(row.event_time.clone(), json!(t));
    }
    let mut body = Value::Object(body);
    for path in row.key.iter().take(1) {
        // Nested paths are built as objects (or a one-item array).
        let mut parts: Vec<&str> = path.split('.').collect();
        let last = parts.pop().expect("a field");
        let mut v = json!({ last: format!("k-{}", row.name) });
        while let Some(p) = parts.pop() {
            v = match p.parse::<usize>() {
                Ok(_) => json!([v]),
                Err(_) => json!({ p: v }),
            };
        }
        merge(&mut body, v);
    }
    body
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

/// What one sent callback must become: an event per item.
struct Expected {
    row: usize,
    key: Option<String>,
    time_ms: Option<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_command_lands_on_its_topic_keyed_on_javas_partition() {
    let bridge = TestBridge::start(&[]).await;
    let rows = rows();
    assert!(rows.len() >= 70, "{} rows", rows.len());
    let now = now_secs();
    let mut expected: HashMap<String, Vec<Expected>> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let body = if row.fixture.is_empty() {
            serde_json::to_vec(&minimal_body(row, now)).expect("JSON")
        } else {
            fixture(&row.fixture)
        };
        let value: Value = serde_json::from_slice(&body).expect("JSON");
        let r = post(&signed_url(&bridge.base, &row.name, now), body).await;
        assert_eq!(r.status, 200, "{}: {r:?}", row.name);
        let answer: Value = if row.answer.is_empty() {
            json!({"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0})
        } else {
            serde_json::from_str(&row.answer).expect("answer")
        };
        assert_eq!(r.json, answer, "{}", row.name);
        let items: Vec<&Value> = if row.batch.is_empty() {
            vec![&value]
        } else {
            value[&row.batch]
                .as_array()
                .expect("a batch")
                .iter()
                .collect()
        };
        for item in items {
            let key = row.key.iter().find_map(|p| at(item, p).and_then(key_text));
            let time_ms = at(item, &row.event_time)
                .filter(|_| !row.event_time.is_empty())
                .map(|v| {
                    let n: i64 = match v {
                        Value::String(s) => s.parse().expect("numeric string"),
                        other => other.as_i64().expect("a number"),
                    };
                    if row.unit.as_deref() == Some("s") {
                        n * 1000
                    } else {
                        n
                    }
                });
            expected
                .entry(row.name.clone())
                .or_default()
                .push(Expected {
                    row: i,
                    key,
                    time_ms,
                });
        }
    }
    let oa: usize = rows
        .iter()
        .filter(|r| r.family == "OfficialAccount")
        .map(|r| expected[&r.name].len())
        .sum();
    let total: usize = expected.values().map(Vec::len).sum();
    let on_oa = consume(&bridge.topic, oa, Duration::from_secs(60)).await;
    assert_eq!(on_oa.len(), oa, "Official Account events");
    let general = consume(&bridge.general, total - oa, Duration::from_secs(60)).await;
    assert_eq!(general.len(), total - oa, "events of every other family");
    let records: Vec<(bool, Record)> = on_oa
        .into_iter()
        .map(|r| (true, r))
        .chain(general.into_iter().map(|r| (false, r)))
        .collect();

    let mut by_command: BTreeMap<String, Vec<&(bool, Record)>> = BTreeMap::new();
    for pair in &records {
        let r = &pair.1;
        let e = r.json();
        assert_schema_valid(&e, "a documented command's event");
        by_command
            .entry(e["command"].as_str().expect("command").to_owned())
            .or_default()
            .push(pair);
    }
    let mut keys = Vec::new();
    for (command, want) in &expected {
        let got = by_command
            .get(command)
            .unwrap_or_else(|| panic!("{command}: no event"));
        assert_eq!(got.len(), want.len(), "{command}: one event per item");
        let row = &rows[want[0].row];
        let on_oa_topic = row.family == "OfficialAccount";
        assert!(
            got.iter().all(|(oa, _)| *oa == on_oa_topic),
            "{command}: wrong topic"
        );
        // Items of a batch may be read back in any order: match by key and time.
        let mut unmatched: Vec<&Expected> = want.iter().collect();
        for (_, r) in got {
            let e = r.json();
            let time = e["event_time_ms"].as_i64().expect("event_time_ms");
            let found = unmatched.iter().position(|w| {
                w.key == r.key && w.time_ms.is_none_or(|t| (t - time).abs() <= DAY_MS)
            });
            let w = unmatched.remove(found.unwrap_or_else(|| {
                panic!(
                    "{command}: an event keyed {:?} at {time} was not expected",
                    r.key
                )
            }));
            match w.time_ms {
                Some(t) => {
                    assert!(
                        PLAUSIBLE_MS.contains(&t),
                        "{command}: the sample's time {t} ms is not 2015-2030"
                    );
                    assert!(
                        PLAUSIBLE_MS.contains(&time),
                        "{command}: event_time_ms {time}"
                    );
                    assert_eq!(e["event_time_source"], "callback", "{command}");
                    assert_eq!(
                        e["event_time_unit"],
                        row.unit.clone().map_or(Value::Null, Value::from),
                        "{command}"
                    );
                    assert_eq!(e["event_time_unit_assumed"], false, "{command}");
                }
                None if row.event_time.is_empty() => {}
                None => assert_eq!(e["event_time_source"], "received", "{command}"),
            }
            assert_eq!(e["before"], row.kind == "before", "{command}");
            if let Some(key) = &r.key {
                keys.push((key.clone(), r.partition));
            }
        }
    }
    // Every key on the partition Apache kafka-clients puts it on.
    let unique: Vec<String> = keys
        .iter()
        .map(|(k, _)| k.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let java = java_partitions(&unique).await;
    for (key, partition) in &keys {
        assert_eq!(
            java.get(key),
            Some(partition),
            "{key}: not Java's partition ({PARTITIONS} partitions)"
        );
    }
    assert!(keys.len() > 60, "{} keyed events", keys.len());
}
