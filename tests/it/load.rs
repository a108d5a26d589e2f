//! A bounded load generator for fault tests, and the check that follows:
//! every callback answered OK is in Kafka (by content), counted once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_kafka_bridge::callback::sign;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

use crate::harness::{APP_ID, TOKEN, consume_blocking, now_secs};

/// (account, EventTime) of one callback: unique per request.
pub type Sent = (String, u64);

/// What the clients saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Requests sent.
    pub sent: usize,
    /// Callbacks answered 200 OK.
    pub acked: HashSet<Sent>,
    /// Answers by status.
    pub statuses: BTreeMap<u16, usize>,
    /// Requests that got no answer (connection refused or closed).
    pub errors: usize,
}

impl LoadResult {
    /// Adds `other`'s figures to these.
    pub fn merge(&mut self, other: LoadResult) {
        self.sent += other.sent;
        self.acked.extend(other.acked);
        self.errors += other.errors;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
    }

    /// Answers with a 5xx status.
    pub fn server_errors(&self) -> usize {
        self.statuses.range(500..).map(|(_, n)| n).sum()
    }
}

/// Clients sending signed `OfficialAccountFull` callbacks, each with a unique
/// account/EventTime pair, at a fixed rate, until stopped or `max` each.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<LoadResult>>,
}

impl Load {
    /// Starts `clients` clients of `rate` requests per second each against
    /// `callback_url` (`http://127.0.0.1:port/callback`).
    pub fn start(callback_url: &str, clients: usize, rate: f64, max: usize, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|c| {
                let (stop, ok) = (stop.clone(), ok.clone());
                let url = callback_url.to_owned();
                let account = format!("@TOA#_{tag}_{c}");
                tokio::spawn(async move {
                    let client: Client<_, Full<Bytes>> =
                        Client::builder(TokioExecutor::new()).build_http();
                    let period = Duration::from_secs_f64(1.0 / rate);
                    let started = Instant::now();
                    let mut out = LoadResult::default();
                    for i in 0..max as u64 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        // Open loop: request i is due at started + i * period.
                        let due = started + period * i as u32;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            tokio::time::sleep(wait).await;
                        }
                        let event_time = 1_732_770_000_000 + i;
                        let body = format!(
                            r#"{{"CallbackCommand":"OfficialAccount.CallbackAfterOfficialAccountFull","Official_Account":"{account}","EventTime":{event_time}}}"#
                        );
                        let t = now_secs().to_string();
                        let req = hyper::Request::post(format!(
                            "{url}?SdkAppid={APP_ID}&CallbackCommand=OfficialAccount.CallbackAfterOfficialAccountFull&Sign={}&RequestTime={t}",
                            sign(TOKEN, &t)
                        ))
                        .body(Full::new(Bytes::from(body)))
                        .expect("request");
                        out.sent += 1;
                        match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
                            Ok(Ok(resp)) => {
                                let status = resp.status().as_u16();
                                *out.statuses.entry(status).or_default() += 1;
                                if status == 200 {
                                    out.acked.insert((account.clone(), event_time));
                                    ok.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            _ => {
                                out.errors += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        Load { stop, ok, tasks }
    }

    /// Callbacks answered OK so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients and merges what they saw.
    pub async fn stop(self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = LoadResult::default();
        for t in self.tasks {
            all.merge(t.await.expect("load client"));
        }
        all
    }
}

/// Acknowledged versus found in Kafka.
#[derive(Debug)]
pub struct Verdict {
    /// Records in the topic.
    pub records: usize,
    /// Distinct event ids among them.
    pub distinct: usize,
    /// Acknowledged callbacks not found.
    pub lost: usize,
    /// Records beyond the first of each id.
    pub duplicates: usize,
    /// Found but never answered OK (the client saw an error): allowed.
    pub unanswered: usize,
}

/// Reads `topic` on `brokers` and compares it with `acked`.
pub async fn verify(brokers: &str, topic: &str, acked: &HashSet<Sent>) -> Verdict {
    let (brokers, topic, expected) = (brokers.to_owned(), topic.to_owned(), acked.len());
    let records = tokio::task::spawn_blocking(move || {
        consume_blocking(&brokers, &topic, expected, Duration::from_secs(90))
    })
    .await
    .expect("consumer thread");
    let mut ids = HashSet::new();
    let mut found = HashSet::new();
    for r in &records {
        let e = r.json();
        ids.insert(e["id"].as_str().expect("id").to_owned());
        found.insert((
            e["official_account"].as_str().expect("account").to_owned(),
            e["event_time_ms"].as_u64().expect("time"),
        ));
    }
    Verdict {
        records: records.len(),
        distinct: ids.len(),
        lost: acked.difference(&found).count(),
        duplicates: records.len() - ids.len(),
        unanswered: found.difference(acked).count(),
    }
}

/// One line for the logs and for docs/reliability.md.
pub fn report(scenario: &str, load: &LoadResult, v: &Verdict) {
    eprintln!(
        "[fault] {scenario}: sent {}, answered OK {}, 5xx {}, no answer {}, in Kafka {} ({} distinct), lost {}, duplicates {}, published-but-unanswered {}",
        load.sent,
        load.acked.len(),
        load.server_errors(),
        load.errors,
        v.records,
        v.distinct,
        v.lost,
        v.duplicates,
        v.unanswered
    );
}
