//! The Grafana dashboard and the Prometheus alert rules (the Helm chart's
//! `files/`, their one source) query only metrics a running bridge exports.
//! A panel or an alert on a metric that does not exist is a bug (issue 5).
//!
//! Only `chat_bridge_*` names are checked: the rules also use `up` (from
//! Prometheus itself) and the dashboard cAdvisor's `container_cpu_usage_seconds_total`
//! and `container_memory_working_set_bytes`, which the bridge does not export.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::harness::{TestBridge, get};

const DASHBOARD: &str = "helm/chat-kafka-bridge/files/dashboards/chat-kafka-bridge.json";
const RULES: &str = "helm/chat-kafka-bridge/files/prometheus/chat-kafka-bridge.rules.yml";
const PREFIX: &str = "chat_bridge_";

fn read(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Every `chat_bridge_[a-z0-9_]+` name in `text`, as a whole word (the bare
/// prefix, as in a comment's `chat_bridge_*`, is not a name).
fn metric_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices(PREFIX) {
        if text[..at].chars().next_back().is_some_and(word) {
            continue;
        }
        let rest = &text[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        if end > PREFIX.len() {
            names.insert(rest[..end].to_owned());
        }
    }
    names
}

/// Family name → type, from the `# TYPE` lines of an exposition.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// The names in `used` that no exported family provides. A histogram
/// provides `<name>_bucket`, `<name>_sum` and `<name>_count`.
fn missing(used: &BTreeSet<String>, exported: &BTreeMap<String, String>) -> Vec<String> {
    used.iter()
        .filter(|name| {
            if exported.contains_key(name.as_str()) {
                return false;
            }
            !["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .and_then(|base| exported.get(base))
                    .is_some_and(|kind| kind == "histogram")
            })
        })
        .cloned()
        .collect()
}

/// The metric names the dashboard and the rules use, after checking that the
/// dashboard is a real one: panels, each with a query, on the datasource variable.
fn used_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = read(DASHBOARD);
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert_eq!(dashboard["uid"], "chat-kafka-bridge", "stable uid");
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
        "the datasource is a template variable"
    );
    let panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(panels.len() >= 20, "only {} panels", panels.len());
    for p in &panels {
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "panel {} has an empty query",
                p["title"]
            );
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {} does not use the datasource variable",
                p["title"]
            );
        }
    }
    let in_dashboard = metric_names(&text);
    let in_rules = metric_names(&read(RULES));
    assert!(in_dashboard.len() >= 15, "dashboard: only {in_dashboard:?}");
    assert!(in_rules.len() >= 8, "rules: only {in_rules:?}");
    (in_dashboard, in_rules)
}

/// The check itself can fail: unknown names, and histogram suffixes on a
/// family that is not a histogram, are reported.
#[test]
fn a_query_on_a_metric_that_does_not_exist_is_reported() {
    let exposition = "# TYPE chat_bridge_ready gauge\nchat_bridge_ready 1\n\
                      # TYPE chat_bridge_http_request_duration_seconds histogram\n";
    let exported = families(exposition);
    let used = metric_names(
        r#"sum(rate(chat_bridge_http_request_duration_seconds_bucket[5m])) chat_bridge_ready
           chat_bridge_ready_bucket xchat_bridge_not_a_word chat_bridge_queue_depth{a="b"}
           every chat_bridge_* name"#,
    );
    assert_eq!(
        used,
        BTreeSet::from([
            "chat_bridge_http_request_duration_seconds_bucket".to_owned(),
            "chat_bridge_queue_depth".to_owned(),
            "chat_bridge_ready".to_owned(),
            "chat_bridge_ready_bucket".to_owned(),
        ])
    );
    assert_eq!(
        missing(&used, &exported),
        ["chat_bridge_queue_depth", "chat_bridge_ready_bucket"]
    );
}

/// Whether `used` queries the family `name` (a histogram through its
/// `_bucket`, `_sum` or `_count` series).
fn uses(used: &BTreeSet<String>, name: &str) -> bool {
    ["", "_bucket", "_sum", "_count"]
        .iter()
        .any(|suffix| used.contains(&format!("{name}{suffix}")))
}

/// The families the dashboard must show and the alerts must watch: the
/// spool's, and the count of acknowledged events that were dropped (issue 3).
fn spool_families(exported: &BTreeMap<String, String>) -> Vec<String> {
    exported
        .keys()
        .filter(|n| {
            n.starts_with("chat_bridge_spool_") || *n == "chat_bridge_events_discarded_total"
        })
        .cloned()
        .collect()
}

#[test]
fn the_spool_check_reports_a_family_left_off_the_dashboard() {
    let exported = families(
        "# TYPE chat_bridge_spool_events gauge\n\
         # TYPE chat_bridge_spool_write_duration_seconds histogram\n\
         # TYPE chat_bridge_events_discarded_total counter\n\
         # TYPE chat_bridge_ready gauge\n",
    );
    let used =
        metric_names("chat_bridge_spool_write_duration_seconds_bucket chat_bridge_spool_events");
    let left_off: Vec<String> = spool_families(&exported)
        .into_iter()
        .filter(|n| !uses(&used, n))
        .collect();
    assert_eq!(left_off, ["chat_bridge_events_discarded_total"]);
}

/// Every `chat_bridge_*` name in the dashboard and the alert rules is on a
/// live bridge's `/metrics`, with traffic that makes every labelled family
/// appear (as `admin::every_exported_metric_is_documented` does). And every
/// spool family the bridge exports is on the dashboard, and the alerts watch
/// the spool's fill, its age, and dropped events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_use_only_exported_metrics() {
    let (in_dashboard, in_rules) = used_names();
    let bridge = TestBridge::start(&[]).await;
    bridge.exercise_every_outcome().await;

    let used: BTreeSet<String> = in_dashboard.union(&in_rules).cloned().collect();
    let scrape = || async { get(&format!("{}/metrics", bridge.admin)).await.1 };
    // Delivery reports and librdkafka statistics (every 5 s) come later.
    assert_eventually!(
        missing(&used, &families(&scrape().await)).is_empty(),
        Duration::from_secs(20),
        "the dashboard or the alert rules use metrics the bridge does not export: {:?}\nexported: {:?}",
        missing(&used, &families(&scrape().await)),
        families(&scrape().await).keys().collect::<Vec<_>>()
    );
    let spool = spool_families(&families(&scrape().await));
    assert!(spool.len() >= 10, "spool families exported: {spool:?}");
    let left_off: Vec<&String> = spool.iter().filter(|n| !uses(&in_dashboard, n)).collect();
    assert!(
        left_off.is_empty(),
        "exported spool families the dashboard does not show: {left_off:?}"
    );
    for watched in [
        "chat_bridge_events_discarded_total",
        "chat_bridge_spool_bytes",
        "chat_bridge_spool_max_bytes",
        "chat_bridge_spool_oldest_age_seconds",
    ] {
        assert!(in_rules.contains(watched), "no alert uses {watched}");
    }
    eprintln!(
        "[it] {} chat_bridge_* names in the dashboard and {} in the alert rules, all exported; \
         the dashboard shows all {} spool families",
        in_dashboard.len(),
        in_rules.len(),
        spool.len()
    );
    bridge.stop().await;
}
