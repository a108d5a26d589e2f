//! What the benchmark sends: signed callbacks built from the fixtures in
//! `tests/fixtures/callbacks/`, in a realistic mix, each body unique.
//!
//! A fixed set of templates is built once (seeded, so every run sends the
//! same mix). A template is a compact JSON body with three numeric slots:
//! `EventTime` (the send time in ms), `BenchSeq` (unique per request) and
//! `BenchSentUs` (the client's send time in µs). The last two are fields the
//! bridge does not know, so it keeps them in the event's `extra`: that is how
//! verification finds each request in Kafka and how end-to-end latency is
//! measured. Rendering a body is a few copies, so the client costs the same
//! for the bridge and for bare hyper.

use chat_kafka_bridge::callback::{OfficialAccountCommand, event_id, parse_body, sign};
use serde_json::{Value, json};

/// App id every benchmarked bridge accepts.
pub const APP_ID: u64 = 1_400_000_001;
/// Its callback token: signature checking is on.
pub const TOKEN: &str = "bench-secret-token";
/// Distinct `Official_Account`s (Kafka keys) in the mix.
const ACCOUNTS: u64 = 500;

/// Fixture, share of the mix in percent.
const MIX: [(&str, u32); 13] = [
    // Profile changes: 37 %.
    (
        "OfficialAccount.CallbackAfterOfficialAccountInfoChanged.json",
        22,
    ),
    (
        "variants/OfficialAccount.CallbackAfterOfficialAccountInfoChanged+name-only.json",
        10,
    ),
    (
        "variants/OfficialAccount.CallbackAfterOfficialAccountInfoChanged+eventtime-string.json",
        5,
    ),
    // Messages: 35 %.
    ("OfficialAccount.CallbackAfterSendMsg.json", 25),
    ("OfficialAccount.CallbackBeforeSendMsg.json", 10),
    // Subscribers: 19 %.
    ("OfficialAccount.CallbackAfterAddSubscriber.json", 9),
    ("OfficialAccount.CallbackBeforeAddSubscriber.json", 5),
    ("OfficialAccount.CallbackAfterDeleteSubscriber.json", 5),
    // The rest: 9 %.
    ("OfficialAccount.CallbackAfterMsgWithDraw.json", 3),
    ("OfficialAccount.CallbackAfterOfficialAccountFull.json", 2),
    ("OfficialAccount.CallbackAfterCreateOfficialAccount.json", 1),
    (
        "OfficialAccount.CallbackBeforeCreateOfficialAccount.json",
        1,
    ),
    (
        "OfficialAccount.CallbackAfterOfficialAccountDestroyed.json",
        1,
    ),
];

const SLOT_EVENT_TIME: u64 = 9_100_000_000_000_000_001;
const SLOT_SEQ: u64 = 9_100_000_000_000_000_002;
const SLOT_SENT_US: u64 = 9_100_000_000_000_000_003;

#[derive(Debug, Clone, Copy)]
enum Slot {
    EventTime,
    Seq,
    SentUs,
}

/// One body shape: literal parts with a slot between each pair.
struct Template {
    command: usize,
    parts: Vec<Vec<u8>>,
    slots: Vec<Slot>,
    len: usize,
}

/// The templates and the commands they use.
pub struct Workload {
    templates: Vec<Template>,
    commands: Vec<String>,
}

impl Workload {
    /// Builds `count` templates from the fixtures, seeded.
    pub fn new(count: usize) -> Workload {
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut commands: Vec<String> = Vec::new();
        let mut templates = Vec::with_capacity(count);
        for _ in 0..count {
            let mut pick = rng.below(u64::from(total)) as u32;
            let file = MIX
                .iter()
                .find(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .map(|(f, _)| *f)
                .expect("weights add up");
            let body = build(file, &mut rng);
            let command = body["CallbackCommand"]
                .as_str()
                .expect("every fixture names its command")
                .to_owned();
            let command = match commands.iter().position(|c| *c == command) {
                Some(i) => i,
                None => {
                    commands.push(command);
                    commands.len() - 1
                }
            };
            templates.push(Template::new(command, &body));
        }
        Workload {
            templates,
            commands,
        }
    }

    fn template(&self, seq: u64) -> &Template {
        &self.templates[(seq % self.templates.len() as u64) as usize]
    }

    /// Commands, indexed by [`Workload::command_of`].
    pub fn commands(&self) -> &[String] {
        &self.commands
    }

    /// Index into [`Workload::commands`] of request `seq`'s command.
    pub fn command_of(&self, seq: u64) -> usize {
        self.template(seq).command
    }

    /// Writes request `seq`'s body, sent at `sent_us` (Unix µs), into `out`.
    pub fn render(&self, seq: u64, sent_us: u64, out: &mut Vec<u8>) {
        let t = self.template(seq);
        out.clear();
        out.reserve(t.len + 64);
        let mut digits = itoa::Buffer::new();
        for (i, part) in t.parts.iter().enumerate() {
            out.extend_from_slice(part);
            if let Some(slot) = t.slots.get(i) {
                let n = match slot {
                    Slot::EventTime => sent_us / 1000,
                    Slot::Seq => seq,
                    Slot::SentUs => sent_us,
                };
                out.extend_from_slice(digits.format(n).as_bytes());
            }
        }
    }

    /// The event id the bridge must give request `seq` sent at `sent_us`,
    /// computed by the library from the same bytes.
    pub fn expected_id(&self, seq: u64, sent_us: u64) -> Option<String> {
        let mut body = Vec::new();
        self.render(seq, sent_us, &mut body);
        let envelope = parse_body(&body).ok()?;
        let command = OfficialAccountCommand::parse(&self.commands[self.command_of(seq)])?;
        Some(event_id(APP_ID, command.as_str(), &envelope))
    }

    /// Body sizes in bytes: (min, median, mean, max) over the templates.
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        let mut lens: Vec<usize> = self.templates.iter().map(|t| t.len + 40).collect();
        lens.sort_unstable();
        let mean = lens.iter().sum::<usize>() / lens.len().max(1);
        (lens[0], lens[lens.len() / 2], mean, lens[lens.len() - 1])
    }
}

/// The path and query of a signed callback for `command` at `request_time`.
pub fn signed_path(path: &str, command: &str, request_time: u64) -> String {
    let t = request_time.to_string();
    format!(
        "{path}?SdkAppid={APP_ID}&CallbackCommand={command}&contenttype=json\
         &ClientIP=203.0.113.7&OptPlatform=RESTAPI&Sign={}&RequestTime={t}",
        sign(TOKEN, &t)
    )
}

impl Template {
    fn new(command: usize, body: &Value) -> Template {
        let text = serde_json::to_vec(body).expect("a Value serializes");
        let mut found: Vec<(usize, Slot)> = [
            (SLOT_EVENT_TIME, Slot::EventTime),
            (SLOT_SEQ, Slot::Seq),
            (SLOT_SENT_US, Slot::SentUs),
        ]
        .into_iter()
        .map(|(n, slot)| {
            let needle = n.to_string();
            let at = text
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .expect("every slot is in the body");
            (at, slot)
        })
        .collect();
        found.sort_by_key(|(at, _)| *at);
        let width = SLOT_SEQ.to_string().len();
        let mut parts = Vec::new();
        let mut from = 0;
        for (at, _) in &found {
            parts.push(text[from..*at].to_vec());
            from = at + width;
        }
        parts.push(text[from..].to_vec());
        Template {
            command,
            len: parts.iter().map(Vec::len).sum(),
            parts,
            slots: found.into_iter().map(|(_, s)| s).collect(),
        }
    }
}

/// A fixture, varied: its account, texts and lists, plus the three slots.
fn build(file: &str, rng: &mut Rng) -> Value {
    let path = format!(
        "{}/tests/fixtures/callbacks/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut v: Value = serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("{path}: {e}"));
    let o = v.as_object_mut().expect("fixtures are objects");
    let account = format!("@TOA#_bench_{:03}", rng.below(ACCOUNTS));
    if o.contains_key("Official_Account") {
        o.insert("Official_Account".into(), json!(account));
    }
    if o.contains_key("Name") {
        o.insert("Name".into(), json!(text(rng, 8, 40)));
    }
    if o.contains_key("Introduction") {
        o.insert("Introduction".into(), json!(text(rng, 20, 400)));
    }
    if o.contains_key("Owner_Account") {
        o.insert(
            "Owner_Account".into(),
            json!(format!("owner_{}", rng.below(10_000))),
        );
    }
    if o.contains_key("MsgBody") {
        // Most messages are short; some long, a few several KB.
        let len = match rng.below(100) {
            0..=64 => (10, 160),
            65..=92 => (300, 1500),
            _ => (2000, 4000),
        };
        let mut elems = vec![
            json!({"MsgType": "TIMTextElem", "MsgContent": {"Text": text(rng, len.0, len.1)}}),
        ];
        if rng.below(4) == 0 {
            elems.push(json!({"MsgType": "TIMCustomElem", "MsgContent": {
                "Data": format!("{{\"kind\":\"card\",\"id\":{}}}", rng.below(1 << 30)),
                "Desc": text(rng, 10, 60), "Ext": "", "Sound": ""}}));
        }
        o.insert("MsgBody".into(), Value::Array(elems));
    }
    if o.contains_key("MsgKey") {
        let key = format!(
            "144115233406643804_{}_{}",
            1_732_770_000 + rng.below(1_000_000),
            rng.below(1 << 31)
        );
        o.insert("MsgKey".into(), json!(key));
    }
    if o.contains_key("SubscribeAccountList") {
        let n = match rng.below(10) {
            0..=6 => 1 + rng.below(3),
            7..=8 => 5 + rng.below(20),
            _ => 50 + rng.below(100),
        };
        let list: Vec<Value> = (0..n)
            .map(|_| json!({"Subscriber_Account": format!("user_{}", rng.below(1_000_000))}))
            .collect();
        o.insert("SubscribeAccountList".into(), Value::Array(list));
    }
    if o.contains_key("WithdrawMsgList") {
        let list: Vec<Value> = (0..1 + rng.below(3))
            .map(|_| json!({"MsgKey": format!("144115233406643804_1732770011_{}", rng.below(1 << 31))}))
            .collect();
        o.insert("WithdrawMsgList".into(), Value::Array(list));
    }
    let event_time = match o.get("EventTime") {
        Some(Value::String(_)) => json!(SLOT_EVENT_TIME.to_string()),
        _ => json!(SLOT_EVENT_TIME),
    };
    o.insert("EventTime".into(), event_time);
    o.insert("BenchSeq".into(), json!(SLOT_SEQ));
    o.insert("BenchSentUs".into(), json!(SLOT_SENT_US));
    v
}

/// Between `min` and `max` bytes of words, some of them Chinese.
fn text(rng: &mut Rng, min: u64, max: u64) -> String {
    const WORDS: [&str; 16] = [
        "rain",
        "expected",
        "after",
        "forecast",
        "morning",
        "weather",
        "update",
        "sunny",
        "明天有雨",
        "气温",
        "下午",
        "晴",
        "wind",
        "north",
        "cloudy",
        "humidity",
    ];
    let want = (min + rng.below(max - min + 1)) as usize;
    let mut s = String::with_capacity(want + 16);
    while s.len() < want {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s
}

/// xorshift64*: deterministic, good enough for a mix.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
