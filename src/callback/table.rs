//! Every command Tencent documents, as data: `commands.toml`, one row per
//! command, read from that command's own Tencent page (the row names it).
//! Routing takes each command's key fields from here, the translation its
//! batch field and the unit of its time fields, the answer whether Tencent
//! reads a decision (Before) or data (sync) from it. `docs/callbacks.md` is
//! generated from this table (a test keeps the two equal).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;

use super::{Family, FieldPath};

/// The table, as shipped.
const TABLE: &str = include_str!("commands.toml");

/// What Tencent does with the answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A decision: `ErrorCode` 0 allows, 1 denies (the bridge always allows).
    Before,
    /// A notification: the answer is only acknowledged.
    After,
    /// Tencent reads data from the answer (the bridge cannot give it).
    Sync,
}

/// The unit of a time field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Unit {
    /// Unix seconds.
    #[serde(rename = "s")]
    Seconds,
    /// Unix milliseconds.
    #[serde(rename = "ms")]
    Millis,
}

impl Unit {
    /// `s` or `ms`.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::Millis => "ms",
        }
    }
}

/// One row of `commands.toml`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    name: String,
    family: String,
    kind: Kind,
    batch: String,
    batch_max: usize,
    key: Vec<String>,
    event_time: String,
    times: BTreeMap<String, Unit>,
    body_command: bool,
    answer: String,
    title: String,
    url: String,
    sample: String,
    fixture: String,
    read: bool,
    note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    command: Vec<Row>,
}

/// One command Tencent documents.
#[derive(Debug)]
pub struct Command {
    /// The exact `CallbackCommand`.
    pub name: String,
    /// Its family.
    pub family: Family,
    /// What Tencent does with the answer.
    pub kind: Kind,
    /// The field holding the items, when the body is a batch.
    pub batch: Option<String>,
    /// Most items Tencent documents for a batch.
    pub batch_max: usize,
    /// Key fields, first present wins (inside each item for a batch).
    pub key: Vec<FieldPath>,
    /// The field that says when the event happened, and its unit.
    pub event_time: Option<(String, Unit)>,
    /// Every documented time field by path, with its unit.
    pub times: BTreeMap<String, Unit>,
    /// Whether the body carries its own `CallbackCommand`.
    pub body_command: bool,
    /// The neutral answer Tencent documents, when not the usual one.
    pub answer: Option<String>,
    /// The Tencent page the row comes from.
    pub title: String,
    /// Its address.
    pub url: String,
    /// `tencent` (the fixture is Tencent's sample), `minimal` or `none`.
    pub sample: String,
    /// The fixture in `tests/fixtures/callbacks/`, if any.
    pub fixture: Option<String>,
    /// `false` when the page could not be (fully) read.
    pub read: bool,
    /// What a reader needs to know.
    pub note: String,
}

/// Every command, by name.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Command>,
    by_name: HashMap<String, usize>,
}

/// The table, parsed once. Its content is checked by the tests, so a row
/// that does not parse is a build that does not pass.
pub fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| Table::parse(TABLE).expect("commands.toml is valid (tested)"))
}

impl Table {
    fn parse(text: &str) -> Result<Table, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut rows = Vec::with_capacity(file.command.len());
        let mut by_name = HashMap::new();
        for row in file.command {
            let at = |what: &str| format!("{}: {what}", row.name);
            let family = Family::of(&row.name);
            if family.as_str() != Family::of(&format!("{}.x", row.family)).as_str() {
                return Err(at("family does not match the name's prefix"));
            }
            let key = row
                .key
                .iter()
                .map(|k| FieldPath::parse(k).map_err(|e| at(&e)))
                .collect::<Result<_, _>>()?;
            let event_time = match row.event_time.as_str() {
                "" => None,
                field => {
                    let unit = *row
                        .times
                        .get(field)
                        .ok_or_else(|| at("event_time has no unit in times"))?;
                    Some((field.to_owned(), unit))
                }
            };
            let batch = (!row.batch.is_empty()).then(|| row.batch.clone());
            if batch.is_some() != (row.batch_max > 0) {
                return Err(at("batch and batch_max disagree"));
            }
            if by_name.insert(row.name.clone(), rows.len()).is_some() {
                return Err(at("listed twice"));
            }
            rows.push(Command {
                name: row.name,
                family,
                kind: row.kind,
                batch,
                batch_max: row.batch_max,
                key,
                event_time,
                times: row.times,
                body_command: row.body_command,
                answer: (!row.answer.is_empty()).then_some(row.answer),
                title: row.title,
                url: row.url,
                sample: row.sample,
                fixture: (!row.fixture.is_empty()).then_some(row.fixture),
                read: row.read,
                note: row.note,
            });
        }
        Ok(Table { rows, by_name })
    }

    /// The row of `command`, if Tencent documents it.
    pub fn get(&self, command: &str) -> Option<&Command> {
        self.by_name.get(command).map(|&i| &self.rows[i])
    }

    /// Every row, in the file's order (by family).
    pub fn iter(&self) -> impl Iterator<Item = &Command> {
        self.rows.iter()
    }
}

/// `docs/callbacks.md`, rendered from the table: what the docs say is
/// what the code does.
#[cfg(test)]
fn render_docs(table: &Table) -> String {
    let mut out = String::from(
        "# Callback commands\n\n\
         <!-- Generated from src/callback/commands.toml by `UPDATE_DOCS=1 cargo test --lib callbacks_md`; edit the table, not this page. -->\n\n\
         Every command Tencent Cloud Chat documents, one row each, as the bridge handles it.\n\
         Each row was read from the command's own Tencent page (the last column links it);\n\
         the fixture `tests/fixtures/callbacks/<Command>.json` is that page's sample request.\n\n\
         - **Key**: the body fields tried, in order, for the Kafka record key (first present wins;\n  \
         `a.b` is `b` inside `a`, a number indexes an array). `PairList.0.From_Account` is the first\n  \
         account of the first pair: friend and blocklist callbacks carry only pairs. `-`: no key\n  \
         (the record goes to a random partition). A route in the config file can override it.\n\
         - **Time**: the field giving `event_time_ms`, and its unit as Tencent documents it (`s` or\n  \
         `ms`; converted to milliseconds). `-`: none; the receive time is used. The original value\n  \
         stays in the event's body. A command not listed here has its `EventTime` read as seconds\n  \
         when it has up to 11 digits and as milliseconds otherwise, and its event says\n  \
         `event_time_unit_assumed: true`.\n\
         - **Kind**: `before`, a decision (the bridge always answers allow, `ErrorCode` 0); `after`, a\n  \
         notification; `sync`, Tencent reads data from the answer, which the bridge cannot give: it\n  \
         answers the neutral answer, publishes the event, and the app must not rely on a reply.\n\
         - **Batch**: the field holding the items; each item becomes its own event (at most\n  \
         `BRIDGE_MAX_BATCH_ITEMS`, Tencent sends up to the number shown).\n\n\
         | Command | Kind | Batch | Key | Time | Other time fields | Tencent page |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for c in table.iter() {
        let key = if c.key.is_empty() {
            "-".to_owned()
        } else {
            c.key
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let time = match &c.event_time {
            Some((field, unit)) => format!("`{field}` ({})", unit.as_str()),
            None => "-".to_owned(),
        };
        let others: Vec<String> = c
            .times
            .iter()
            .filter(|(f, _)| c.event_time.as_ref().is_none_or(|(e, _)| e != *f))
            .map(|(f, u)| format!("`{f}` ({})", u.as_str()))
            .collect();
        let others = if others.is_empty() {
            "-".to_owned()
        } else {
            others.join(", ")
        };
        let batch = match &c.batch {
            Some(field) => format!("`{field}`, 1-{}", c.batch_max),
            None => "-".to_owned(),
        };
        let kind = match c.kind {
            Kind::Before => "before",
            Kind::After => "after",
            Kind::Sync => "sync",
        };
        let page = if c.read {
            format!("[{}]({})", c.title, c.url)
        } else {
            "**not read**: see below".to_owned()
        };
        out.push_str(&format!(
            "| `{}` | {kind} | {batch} | {key} | {time} | {others} | {page} |\n",
            c.name
        ));
    }
    out.push_str("\n## Rows not (fully) read, and what was assumed\n\n");
    for c in table.iter().filter(|c| !c.read) {
        out.push_str(&format!("- `{}`: {}\n", c.name, c.note));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/callbacks.md` is the table rendered (`UPDATE_DOCS=1` rewrites it).
    #[test]
    fn callbacks_md_is_generated_from_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/callbacks.md");
        let rendered = render_docs(table());
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &rendered).expect("write docs/callbacks.md");
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == rendered,
            "docs/callbacks.md is not the table rendered: run UPDATE_DOCS=1 cargo test --lib callbacks_md"
        );
    }

    #[test]
    fn the_table_parses_and_every_row_is_whole() {
        let t = Table::parse(TABLE).expect("valid");
        assert!(t.rows.len() >= 70, "{} rows", t.rows.len());
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/callbacks");
        for c in t.iter() {
            // A row read from a page names it; an unread one says what was assumed.
            if c.read {
                assert!(c.url.starts_with("https://"), "{}", c.name);
                assert!(!c.title.is_empty(), "{}", c.name);
            } else {
                assert!(c.note.len() > 20, "{}: unread without a note", c.name);
            }
            match (&c.fixture, c.sample.as_str()) {
                (Some(f), "tencent" | "minimal") => {
                    assert_eq!(f, &format!("{}.json", c.name), "{}", c.name);
                    assert!(std::path::Path::new(&format!("{dir}/{f}")).exists(), "{f}");
                }
                (None, "none") => assert!(!c.read, "{}: read but no fixture", c.name),
                other => panic!("{}: fixture/sample {other:?}", c.name),
            }
            if let Some(answer) = &c.answer {
                let v: serde_json::Value = serde_json::from_str(answer).expect("answer is JSON");
                assert_eq!(v["ActionStatus"], "OK", "{}", c.name);
                assert_eq!(v["ErrorCode"], 0, "{}: a neutral answer allows", c.name);
            }
            if c.kind == Kind::Sync {
                assert!(
                    !c.note.is_empty(),
                    "{}: say what the neutral answer is",
                    c.name
                );
            }
        }
        // Every fixture file is some row's.
        for entry in std::fs::read_dir(dir).expect("dir") {
            let name = entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8");
            if let Some(command) = name.strip_suffix(".json") {
                assert!(t.get(command).is_some(), "{name} has no row");
            }
        }
    }

    #[test]
    fn bad_rows_are_refused_with_the_command_named() {
        let row = |extra: &str| {
            format!(
                "[[command]]\nname = \"Group.X\"\nfamily = \"Group\"\nkind = \"after\"\nbatch = \"\"\nbatch_max = 0\n\
                 key = [\"GroupId\"]\nevent_time = \"EventTime\"\ntimes = {{ EventTime = \"ms\" }}\nbody_command = true\n\
                 answer = \"\"\ntitle = \"t\"\nurl = \"https://x\"\nsample = \"none\"\nfixture = \"\"\nread = false\nnote = \"\"\n{extra}"
            )
        };
        assert!(Table::parse(&row("")).is_ok());
        assert!(Table::parse(&row("unknown = 1\n")).is_err());
        let twice = format!("{}\n{}", row(""), row(""));
        assert!(Table::parse(&twice).expect_err("twice").contains("Group.X"));
        let no_unit = row("").replace("times = { EventTime = \"ms\" }", "times = {}");
        assert!(
            Table::parse(&no_unit)
                .expect_err("no unit")
                .contains("unit")
        );
        let wrong_family = row("").replace("family = \"Group\"", "family = \"C2C\"");
        assert!(Table::parse(&wrong_family).is_err());
    }
}
