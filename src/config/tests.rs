//! Configuration tests: defaults, layering, validation errors.

use std::path::PathBuf;

use super::*;
use clap::Parser as _;

fn cli(args: &[&str]) -> Cli {
    let mut all = vec!["chat-kafka-bridge"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).expect("valid flags")
}

/// Parses and loads `args` as the binary does; a value clap refuses is a
/// [`ConfigError`] too.
fn load(args: &[&str]) -> Result<Config, ConfigError> {
    let mut all = vec!["chat-kafka-bridge"];
    all.extend_from_slice(args);
    match Config::from_args(all, Vec::<(String, String)>::new()) {
        Ok(c) => Ok(c),
        Err(CliError::Config(e)) => Err(e),
        Err(CliError::Clap(e)) => panic!("{args:?}: {e}"),
    }
}

#[test]
fn defaults_start_the_demo() {
    let c = load(&[]).expect("defaults are valid");
    assert_eq!(c.listen.callback, "0.0.0.0:8080".parse().expect("addr"));
    assert_eq!(c.listen.admin, "0.0.0.0:9090".parse().expect("addr"));
    assert_eq!(c.listen.callback_path, "/callback");
    assert_eq!(c.limits.max_body_bytes, 1 << 20);
    assert_eq!(c.limits.signature_max_skew, Duration::from_secs(60));
    assert_eq!(c.kafka.topic, "official-account-events");
    assert_eq!(c.kafka.dlq_topic, "official-account-events-dlq");
    assert!(c.kafka.brokers.is_none());
    assert!(c.is_demo());
    assert_eq!(c.spool.ack_mode, AckMode::Enqueued);
    assert_eq!(c.spool.delivery_timeout, Duration::from_secs(1));
    assert_eq!(c.spool.dir, PathBuf::from("spool"));
    assert_eq!(c.spool.max_bytes, 1 << 30);
    assert_eq!(c.kafka.general_topic, "chat-callback-events");
    assert!(c.routing.publish_before);
    assert_eq!(c.routing.dedup_window, None);
    assert_eq!(c.routing.dedup_max_entries, 100_000);
    assert_eq!(
        c.topics(),
        vec![
            "chat-callback-events",
            "official-account-events",
            "official-account-events-dlq"
        ]
    );
}

#[test]
fn routes_app_topics_and_dedup_from_the_file() {
    let dir = std::env::temp_dir().join(format!("ckb-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bridge.toml");
    std::fs::write(
        &path,
        r#"
publish_before = false
dedup_window = "10m"
dedup_max_entries = 5000

[[apps]]
sdk_app_id = 9
topic = "nine-oa"
dlq_topic = "nine-dlq"

[[routes]]
command = "Group.*"
topic = "groups"
key = ["GroupId", "From_Account"]

[[routes]]
command = "Bot.*"
action = "count"
"#,
    )
    .expect("write");
    let c = load(&["--config", path.to_str().expect("utf-8")]).expect("valid file");
    assert!(!c.routing.publish_before);
    assert_eq!(c.routing.dedup_window, Some(Duration::from_secs(600)));
    assert_eq!(c.routing.dedup_max_entries, 5000);
    let nine = &c.apps[&9].topics;
    assert_eq!(&*nine.official_account, "nine-oa");
    assert_eq!(&*nine.general, "chat-callback-events");
    assert_eq!(&*nine.dead_letter, "nine-dlq");
    assert_eq!(
        c.topics(),
        vec!["chat-callback-events", "groups", "nine-dlq", "nine-oa"]
    );
    assert_eq!(
        c.routing.routes.find("Bot.CallbackX").action,
        crate::route::Action::Count
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_routes_and_topics_name_their_setting() {
    let dir = std::env::temp_dir().join(format!("ckb-badroutes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (i, (text, setting)) in [
        ("[[routes]]\ncommand = \"Gr*oup\"\n", "routes[0].command"),
        (
            "[[routes]]\ncommand = \"Group.*\"\ntopic = \"a b\"\n",
            "routes[0].topic",
        ),
        (
            "[[routes]]\ncommand = \"Group.*\"\ntopic = \"official-account-events-dlq\"\n",
            "routes[0].topic",
        ),
        (
            "[[routes]]\ncommand = \"Group.*\"\nkey = \"Info..To\"\n",
            "routes[0].key",
        ),
        (
            "[[apps]]\nsdk_app_id = 3\ntopic = \"x\"\ndlq_topic = \"x\"\n",
            "apps[0].dlq_topic",
        ),
        ("dedup_max_entries = 0\n", "BRIDGE_DEDUP_MAX_ENTRIES"),
        ("dedup_window = \"soon\"\n", "BRIDGE_DEDUP_WINDOW"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let e = load(&["--config", path.to_str().expect("utf-8")]).expect_err(text);
        assert_eq!(e.setting, setting, "{text}: {e}");
    }
    let path = dir.join("route-to-app-dlq.toml");
    std::fs::write(
        &path,
        "[[apps]]\nsdk_app_id = 3\ndlq_topic = \"three-dlq\"\n\n[[routes]]\ncommand = \"Group.*\"\ntopic = \"three-dlq\"\n",
    )
    .expect("write");
    let e = load(&["--config", path.to_str().expect("utf-8")]).expect_err("a DLQ as a route");
    assert_eq!(e.setting, "routes", "{e}");
    let e = load(&["--kafka-general-topic", "official-account-events-dlq"]).expect_err("clash");
    assert_eq!(e.setting, "BRIDGE_KAFKA_DLQ_TOPIC");
    let e = load(&["--publish-before", "yes"]).expect_err("not a bool");
    assert_eq!(e.setting, "BRIDGE_PUBLISH_BEFORE");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn real_brokers_need_an_app() {
    let e = load(&["--kafka-brokers", "k:9092"]).expect_err("no app");
    assert_eq!(e.setting, "BRIDGE_SDKAPPID");
    let c = load(&[
        "--kafka-brokers",
        "k:9092",
        "--sdk-app-id",
        "7",
        "--callback-token",
        "t",
    ])
    .expect("valid");
    assert_eq!(c.apps[&7].tokens, vec![Secret::new("t")]);
    assert!(!c.is_demo());
}

#[test]
fn bad_values_name_their_setting() {
    for (args, setting) in [
        (&["--listen", "nope"][..], "BRIDGE_LISTEN"),
        (&["--max-body-bytes", "12x"], "BRIDGE_MAX_BODY_BYTES"),
        (&["--max-body-bytes", "10"], "BRIDGE_MAX_BODY_BYTES"),
        (
            &["--signature-max-skew", "soon"],
            "BRIDGE_SIGNATURE_MAX_SKEW",
        ),
        (&["--callback-path", "callback"], "BRIDGE_CALLBACK_PATH"),
        (&["--kafka-topic", "a b"], "BRIDGE_KAFKA_TOPIC"),
        (
            &["--kafka-dlq-topic", "official-account-events"],
            "BRIDGE_KAFKA_DLQ_TOPIC",
        ),
        (&["--log-format", "xml"], "BRIDGE_LOG_FORMAT"),
        (&["--sdk-app-id", "abc"], "BRIDGE_SDKAPPID"),
        (&["--callback-token", "t"], "BRIDGE_CALLBACK_TOKEN"),
        (
            &["--sdk-app-id", "1", "--callback-token", ""],
            "BRIDGE_CALLBACK_TOKEN",
        ),
        (&["--kafka-property", "acks"], "--kafka-property"),
        (&["--max-connections", "0"], "BRIDGE_MAX_CONNECTIONS"),
        (&["--ack-mode", "eventually"], "BRIDGE_ACK_MODE"),
        (&["--delivery-timeout", "2s"], "BRIDGE_DELIVERY_TIMEOUT"),
        (&["--spool-max-bytes", "1000"], "BRIDGE_SPOOL_MAX_BYTES"),
    ] {
        let e = load(args).expect_err("invalid");
        assert_eq!(e.setting, setting, "{args:?}: {e}");
    }
}

#[test]
fn file_env_and_flags_layer_in_that_order() {
    let dir = std::env::temp_dir().join(format!("ckb-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "file-token\n").expect("write");
    let file = dir.join("bridge.toml");
    std::fs::write(
        &file,
        format!(
            r#"
listen = "127.0.0.1:1"
callback_path = "/tencent"
signature_max_skew = "30s"
[[apps]]
sdk_app_id = 1
token_file = "{}"
[[apps]]
sdk_app_id = 2
[kafka]
brokers = "file:9092"
topic = "t1"
[kafka.properties]
"linger.ms" = 20
"security.protocol" = "SASL_SSL"
"#,
            token_file.display()
        ),
    )
    .expect("write");
    let c = Config::load(
        cli(&[
            "--config",
            file.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:2",
            "--kafka-property",
            "linger.ms=5",
        ]),
        vec![
            ("BRIDGE_KAFKA_PROP_SASL_MECHANISMS".into(), "PLAIN".into()),
            ("UNRELATED".into(), "x".into()),
        ],
    )
    .expect("valid");
    assert_eq!(
        c.listen.callback,
        "127.0.0.1:2".parse().expect("addr"),
        "flag beats file"
    );
    assert_eq!(c.listen.callback_path, "/tencent");
    assert_eq!(c.limits.signature_max_skew, Duration::from_secs(30));
    assert_eq!(c.apps[&1].tokens, vec![Secret::new("file-token")]);
    assert!(c.apps[&2].tokens.is_empty());
    assert_eq!(c.kafka.brokers.as_deref(), Some("file:9092"));
    assert_eq!(c.kafka.topic, "t1");
    assert_eq!(c.kafka.dlq_topic, "t1-dlq");
    assert_eq!(c.kafka.properties["linger.ms"], "5", "flag beats file");
    assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
    assert_eq!(c.kafka.properties["sasl.mechanisms"], "PLAIN");
    assert_eq!(c.kafka.properties.len(), 3);

    std::fs::write(&file, "lisen = \"x\"\n").expect("write");
    let e = Config::load(
        cli(&["--config", file.to_str().expect("utf-8")]),
        Vec::new(),
    )
    .expect_err("typo");
    assert_eq!(e.setting, "BRIDGE_CONFIG");
    assert!(e.problem.contains("lisen"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_example_file_has_only_known_keys() {
    let text = include_str!("../../deploy/bridge.example.toml");
    let file: FileConfig = toml::from_str(text).expect("deploy/bridge.example.toml parses");
    assert_eq!(file.apps.len(), 1);
    assert!(file.kafka.brokers.is_some());
}

#[test]
fn secrets_never_print() {
    let c = load(&[
        "--sdk-app-id",
        "7",
        "--callback-token",
        "supersecret",
        "--kafka-property",
        "sasl.password=hunter2",
    ])
    .expect("valid");
    let shown = format!("{c:?}");
    assert!(!shown.contains("supersecret"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

/// Every setting of `settings.rs` is an argument with that variable, and
/// `--help` shows its default from there: the name and the default are
/// written once.
#[test]
fn every_setting_is_an_argument_and_help_shows_its_default() {
    let mut cmd = Cli::command();
    let help = cmd.render_help().to_string();
    for setting in settings::ALL {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == setting.env))
            .unwrap_or_else(|| panic!("{} has no argument", setting.env));
        if let Some(default) = setting.default {
            let shown = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                shown.ends_with(&format!("[default: {default}]")),
                "{}: {shown}",
                setting.env
            );
        }
    }
    let args_with_env = cmd
        .get_arguments()
        .filter(|a| a.get_env().is_some())
        .count();
    assert_eq!(args_with_env, settings::ALL.len());
    assert!(help.contains("[default: 0.0.0.0:8080]"), "{help}");
}
