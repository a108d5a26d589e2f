//! Configuration: plain data, its sources (flags, environment, a TOML file)
//! and validation.
//!
//! Precedence, highest first: command-line flag, environment variable, config
//! file, built-in default. Every setting is documented in `--help` and in
//! `docs/configuration.md`. A bad setting is a [`ConfigError`] that names it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::route::{Action, RouteSpec, Routes};

mod cli;
mod file;
mod parse;

pub use cli::Cli;
use file::{FileAction, FileConfig, FileKey, read_file};
use parse::{addr, cidrs, duration, number, split_list, tokens, topic_name};

/// Environment prefix that passes any librdkafka property:
/// `BRIDGE_KAFKA_PROP_SASL_MECHANISMS=PLAIN` sets `sasl.mechanisms`.
pub const KAFKA_PROP_ENV_PREFIX: &str = "BRIDGE_KAFKA_PROP_";

/// SdkAppid and token the zero-config demo accepts (embedded Kafka only).
pub const DEMO_SDK_APP_ID: u64 = 1_400_000_001;
/// See [`DEMO_SDK_APP_ID`].
pub const DEMO_TOKEN: &str = "demo-token";

/// The bridge's configuration, validated.
#[derive(Clone)]
pub struct Config {
    /// Callback listener.
    pub listen: SocketAddr,
    /// Admin listener (metrics, health, readiness).
    pub admin_listen: SocketAddr,
    /// Path Tencent posts callbacks to.
    pub callback_path: String,
    /// Largest accepted callback body.
    pub max_body_bytes: usize,
    /// How far `RequestTime` may be from the bridge's clock.
    pub signature_max_skew: Duration,
    /// Apps by SdkAppid.
    pub apps: HashMap<u64, App>,
    /// Kafka settings.
    pub kafka: KafkaConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Upper bound on the shutdown drain (in-flight requests, then producer flush).
    pub shutdown_timeout: Duration,
    /// Most connections open at once on the callback port.
    pub max_connections: usize,
    /// Time a client has to send a request's head, from its first byte.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_read_timeout: Duration,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Deepest JSON nesting accepted in a body.
    pub max_json_depth: usize,
    /// Source addresses allowed to send callbacks; empty means all.
    pub allowed_sources: Vec<ipnet::IpNet>,
    /// Header holding the client address, set by a trusted proxy.
    pub trusted_proxy_header: Option<http::HeaderName>,
    /// Peers whose `trusted_proxy_header` is believed; empty means any peer.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// TLS certificate chain and private key (PEM) for the callback port.
    pub tls: Option<TlsFiles>,
    /// When a callback is answered OK.
    pub ack_mode: AckMode,
    /// `delivered` mode: how long to wait for Kafka before spooling.
    pub delivery_timeout: Duration,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Spool size limit.
    pub spool_max_bytes: u64,
    /// Where each command goes.
    pub routes: Routes,
    /// Publish "Before" callbacks as audit events (they are answered "allow" either way).
    pub publish_before: bool,
    /// The de-duplication window; `None`: off.
    pub dedup_window: Option<Duration>,
    /// Most event ids the de-duplication window holds.
    pub dedup_max_entries: usize,
}

/// PEM files for TLS on the callback port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// When a callback is answered OK (see docs/reliability.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Once the event is in the producer's queue (memory).
    Enqueued,
    /// Once the event is fsync'd to the spool.
    Spooled,
    /// Once Kafka acknowledged it, or it is spooled after the deadline.
    Delivered,
}

impl AckMode {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Enqueued => "enqueued",
            AckMode::Spooled => "spooled",
            AckMode::Delivered => "delivered",
        }
    }
}

/// One Tencent Cloud Chat app.
#[derive(Clone)]
pub struct App {
    /// SdkAppid.
    pub sdk_app_id: u64,
    /// Callback tokens, any of which may sign (two during a rotation). Empty
    /// means the app has no webhook authentication.
    pub tokens: Vec<Secret>,
    /// The app's topics: its own, or the global ones.
    pub topics: AppTopics,
}

/// The topics one app's events go to (besides topics named by routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTopics {
    /// Official Account events.
    pub official_account: Arc<str>,
    /// Every other command's events.
    pub general: Arc<str>,
    /// Dead letters.
    pub dead_letter: Arc<str>,
}

/// A secret string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Secret {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut apps: Vec<_> = self.apps.keys().collect();
        apps.sort();
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("callback_path", &self.callback_path)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("signature_max_skew", &self.signature_max_skew)
            .field("apps", &apps)
            .field("kafka", &self.kafka)
            .field("log_format", &self.log_format)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_json_depth", &self.max_json_depth)
            .field("allowed_sources", &self.allowed_sources)
            .field("trusted_proxy_header", &self.trusted_proxy_header)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("tls", &self.tls)
            .field("ack_mode", &self.ack_mode)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("routes", &self.routes)
            .field("publish_before", &self.publish_before)
            .field("dedup_window", &self.dedup_window)
            .field("dedup_max_entries", &self.dedup_max_entries)
            .finish()
    }
}

/// Kafka settings.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`; `None` starts the embedded in-memory broker.
    pub brokers: Option<String>,
    /// Topic for Official Account events.
    pub topic: String,
    /// Topic for every other command's events.
    pub general_topic: String,
    /// Topic for raw callbacks that could not be normalized.
    pub dlq_topic: String,
    /// librdkafka properties, applied after the bridge's defaults.
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Property names whose values are secrets.
    fn is_secret(key: &str) -> bool {
        key.contains("password") || key.contains("secret") || key.ends_with(".key.pem")
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: BTreeMap<_, _> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let v = if Self::is_secret(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("general_topic", &self.general_topic)
            .field("dlq_topic", &self.dlq_topic)
            .field("properties", &props)
            .finish()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A setting that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting, spelled as the user would set it (`BRIDGE_LISTEN`, `apps[0].token_file`).
    pub setting: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting {}: {}", self.setting, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn bad(setting: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        problem: problem.into(),
    }
}

impl Config {
    /// Builds the configuration from parsed flags/environment, the process
    /// environment's `BRIDGE_KAFKA_PROP_*` variables, and the file `cli.config` names.
    pub fn load(
        cli: Cli,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };

        let listen = addr(
            "BRIDGE_LISTEN",
            cli.listen
                .or(file.listen)
                .as_deref()
                .unwrap_or("0.0.0.0:8080"),
        )?;
        let admin_listen = addr(
            "BRIDGE_ADMIN_LISTEN",
            cli.admin_listen
                .or(file.admin_listen)
                .as_deref()
                .unwrap_or("0.0.0.0:9090"),
        )?;
        let callback_path = cli
            .callback_path
            .or(file.callback_path)
            .unwrap_or_else(|| "/callback".into());
        if !callback_path.starts_with('/') || callback_path.contains(['?', '#']) {
            return Err(bad(
                "BRIDGE_CALLBACK_PATH",
                format!("{callback_path:?} must start with / and hold no ? or #"),
            ));
        }
        let max_body_bytes = match cli.max_body_bytes {
            Some(s) => number("BRIDGE_MAX_BODY_BYTES", &s)?,
            None => file.max_body_bytes.unwrap_or(1024 * 1024),
        };
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            return Err(bad(
                "BRIDGE_MAX_BODY_BYTES",
                format!("{max_body_bytes} must be between 1024 and 67108864"),
            ));
        }
        let signature_max_skew = duration(
            "BRIDGE_SIGNATURE_MAX_SKEW",
            cli.signature_max_skew.or(file.signature_max_skew),
            Duration::from_secs(60),
        )?;
        let shutdown_timeout = duration(
            "BRIDGE_SHUTDOWN_TIMEOUT",
            cli.shutdown_timeout.or(file.shutdown_timeout),
            Duration::from_secs(20),
        )?;
        let header_read_timeout = duration(
            "BRIDGE_HEADER_READ_TIMEOUT",
            cli.header_read_timeout.or(file.header_read_timeout),
            Duration::from_secs(10),
        )?;
        if header_read_timeout.is_zero() {
            return Err(bad("BRIDGE_HEADER_READ_TIMEOUT", "must be more than 0s"));
        }
        let idle_timeout = duration(
            "BRIDGE_IDLE_TIMEOUT",
            cli.idle_timeout.or(file.idle_timeout),
            Duration::from_secs(60),
        )?;
        let body_read_timeout = duration(
            "BRIDGE_BODY_READ_TIMEOUT",
            cli.body_read_timeout.or(file.body_read_timeout),
            Duration::from_secs(10),
        )?;
        for (setting, d) in [
            ("BRIDGE_IDLE_TIMEOUT", idle_timeout),
            ("BRIDGE_BODY_READ_TIMEOUT", body_read_timeout),
        ] {
            if d < Duration::from_millis(100) {
                return Err(bad(setting, format!("{d:?} must be at least 100ms")));
            }
        }
        let max_header_bytes = match cli.max_header_bytes {
            Some(s) => number("BRIDGE_MAX_HEADER_BYTES", &s)?,
            None => file.max_header_bytes.unwrap_or(16 * 1024),
        };
        if !(1024..=1024 * 1024).contains(&max_header_bytes) {
            return Err(bad(
                "BRIDGE_MAX_HEADER_BYTES",
                format!("{max_header_bytes} must be between 1024 and 1048576"),
            ));
        }
        let max_json_depth = match cli.max_json_depth {
            Some(s) => number("BRIDGE_MAX_JSON_DEPTH", &s)?,
            None => file.max_json_depth.unwrap_or(32),
        };
        if !(4..=128).contains(&max_json_depth) {
            return Err(bad(
                "BRIDGE_MAX_JSON_DEPTH",
                format!("{max_json_depth} must be between 4 and 128"),
            ));
        }
        let allowed_sources = cidrs(
            "BRIDGE_ALLOWED_SOURCES",
            cli.allowed_sources
                .map(|s| split_list(&s))
                .or(file.allowed_sources),
        )?;
        let trusted_proxies = cidrs(
            "BRIDGE_TRUSTED_PROXIES",
            cli.trusted_proxies
                .map(|s| split_list(&s))
                .or(file.trusted_proxies),
        )?;
        let trusted_proxy_header = match cli.trusted_proxy_header.or(file.trusted_proxy_header) {
            None => None,
            Some(h) => Some(http::HeaderName::try_from(h.trim()).map_err(|_| {
                bad(
                    "BRIDGE_TRUSTED_PROXY_HEADER",
                    format!("{h:?} is not an HTTP header name"),
                )
            })?),
        };
        if !trusted_proxies.is_empty() && trusted_proxy_header.is_none() {
            return Err(bad(
                "BRIDGE_TRUSTED_PROXIES",
                "is set but BRIDGE_TRUSTED_PROXY_HEADER is not: name the header those proxies set",
            ));
        }
        let tls = match (
            cli.tls_cert_file.or(file.tls_cert_file),
            cli.tls_key_file.or(file.tls_key_file),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (Some(_), None) => {
                return Err(bad(
                    "BRIDGE_TLS_KEY_FILE",
                    "is needed with BRIDGE_TLS_CERT_FILE",
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    "BRIDGE_TLS_CERT_FILE",
                    "is needed with BRIDGE_TLS_KEY_FILE",
                ));
            }
        };
        let max_connections = match cli.max_connections {
            Some(s) => number("BRIDGE_MAX_CONNECTIONS", &s)?,
            None => file.max_connections.unwrap_or(4096),
        };
        if max_connections == 0 {
            return Err(bad("BRIDGE_MAX_CONNECTIONS", "must be at least 1"));
        }
        let log_format = match cli.log_format {
            Some(s) => match s.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(bad(
                        "BRIDGE_LOG_FORMAT",
                        format!("{other:?} is not one of: text, json"),
                    ));
                }
            },
            None => file.log_format.unwrap_or(LogFormat::Text),
        };

        let ack_mode = match cli.ack_mode {
            Some(s) => match s.as_str() {
                "enqueued" => AckMode::Enqueued,
                "spooled" => AckMode::Spooled,
                "delivered" => AckMode::Delivered,
                other => {
                    return Err(bad(
                        "BRIDGE_ACK_MODE",
                        format!("{other:?} is not one of: enqueued, spooled, delivered"),
                    ));
                }
            },
            None => file.ack_mode.unwrap_or(AckMode::Enqueued),
        };
        let delivery_timeout = duration(
            "BRIDGE_DELIVERY_TIMEOUT",
            cli.delivery_timeout.or(file.delivery_timeout),
            Duration::from_secs(1),
        )?;
        if delivery_timeout.is_zero() || delivery_timeout >= Duration::from_millis(1800) {
            return Err(bad(
                "BRIDGE_DELIVERY_TIMEOUT",
                format!(
                    "{delivery_timeout:?} must be more than 0 and under 1.8s (Tencent waits 2s)"
                ),
            ));
        }
        let spool_dir = cli
            .spool_dir
            .or(file.spool_dir)
            .unwrap_or_else(|| PathBuf::from("spool"));
        let spool_max_bytes = match cli.spool_max_bytes {
            Some(s) => number("BRIDGE_SPOOL_MAX_BYTES", &s)?,
            None => file.spool_max_bytes.unwrap_or(1 << 30),
        };
        if spool_max_bytes < 64 * 1024 {
            return Err(bad(
                "BRIDGE_SPOOL_MAX_BYTES",
                format!("{spool_max_bytes} must be at least 65536"),
            ));
        }

        // Kafka.
        let brokers = cli
            .kafka_brokers
            .or(file.kafka.brokers)
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty());
        let topic = topic_name(
            "BRIDGE_KAFKA_TOPIC",
            cli.kafka_topic
                .or(file.kafka.topic)
                .unwrap_or_else(|| "official-account-events".into()),
        )?;
        let dlq_topic = topic_name(
            "BRIDGE_KAFKA_DLQ_TOPIC",
            cli.kafka_dlq_topic
                .or(file.kafka.dlq_topic)
                .unwrap_or_else(|| format!("{topic}-dlq")),
        )?;
        let general_topic = topic_name(
            "BRIDGE_KAFKA_GENERAL_TOPIC",
            cli.kafka_general_topic
                .or(file.kafka.general_topic)
                .unwrap_or_else(|| "chat-callback-events".into()),
        )?;
        if dlq_topic == topic || dlq_topic == general_topic {
            return Err(bad(
                "BRIDGE_KAFKA_DLQ_TOPIC",
                format!(
                    "{dlq_topic:?} must differ from BRIDGE_KAFKA_TOPIC and BRIDGE_KAFKA_GENERAL_TOPIC"
                ),
            ));
        }
        let default_topics = AppTopics {
            official_account: Arc::from(topic.as_str()),
            general: Arc::from(general_topic.as_str()),
            dead_letter: Arc::from(dlq_topic.as_str()),
        };
        let mut route_specs = Vec::with_capacity(file.routes.len());
        for (i, r) in file.routes.into_iter().enumerate() {
            let topic = match r.topic {
                Some(t) => Some(topic_name(&format!("routes[{i}].topic"), t)?),
                None => None,
            };
            if topic.as_deref() == Some(dlq_topic.as_str()) {
                return Err(bad(
                    format!("routes[{i}].topic"),
                    format!("{dlq_topic:?} is the dead-letter topic"),
                ));
            }
            route_specs.push(RouteSpec {
                command: r.command,
                topic,
                key: r.key.map(|k| match k {
                    FileKey::One(k) => vec![k],
                    FileKey::Many(ks) => ks,
                }),
                action: r.action.map(|a| match a {
                    FileAction::Publish => Action::Publish,
                    FileAction::Count => Action::Count,
                }),
            });
        }
        let routes =
            Routes::new(route_specs).map_err(|(setting, problem)| bad(setting, problem))?;
        let publish_before = match cli.publish_before {
            Some(s) => match s.trim() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(bad(
                        "BRIDGE_PUBLISH_BEFORE",
                        format!("{other:?} is not one of: true, false"),
                    ));
                }
            },
            None => file.publish_before.unwrap_or(true),
        };
        let dedup_window = duration(
            "BRIDGE_DEDUP_WINDOW",
            cli.dedup_window.or(file.dedup_window),
            Duration::ZERO,
        )?;
        let dedup_window = (!dedup_window.is_zero()).then_some(dedup_window);
        let dedup_max_entries = match cli.dedup_max_entries {
            Some(s) => number("BRIDGE_DEDUP_MAX_ENTRIES", &s)?,
            None => file.dedup_max_entries.unwrap_or(100_000),
        };
        if !(1..=10_000_000).contains(&dedup_max_entries) {
            return Err(bad(
                "BRIDGE_DEDUP_MAX_ENTRIES",
                format!("{dedup_max_entries} must be between 1 and 10000000"),
            ));
        }
        let mut properties = BTreeMap::new();
        for (k, v) in file.kafka.properties {
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(bad(
                        format!("kafka.properties.{k}"),
                        format!("{other} is not a string, number or boolean"),
                    ));
                }
            };
            properties.insert(k, v);
        }
        for (k, v) in env {
            if let Some(name) = k.strip_prefix(KAFKA_PROP_ENV_PREFIX) {
                if name.is_empty() {
                    return Err(bad(k, "names no librdkafka property"));
                }
                properties.insert(name.to_ascii_lowercase().replace('_', "."), v);
            }
        }
        for p in cli.kafka_properties {
            let Some((k, v)) = p.split_once('=') else {
                return Err(bad("--kafka-property", format!("{p:?} is not NAME=VALUE")));
            };
            properties.insert(k.trim().to_owned(), v.to_owned());
        }
        if properties.contains_key("bootstrap.servers") {
            return Err(bad(
                "kafka property bootstrap.servers",
                "set the brokers with BRIDGE_KAFKA_BROKERS instead",
            ));
        }

        // Apps.
        let mut apps = HashMap::new();
        for (i, a) in file.apps.into_iter().enumerate() {
            let setting = format!("apps[{i}]");
            let mut inline: Vec<String> = a.token.into_iter().collect();
            inline.extend(a.tokens);
            let tokens = tokens(&setting, inline, a.token_file.as_deref())?;
            let own = |field: &str, name: Option<String>, default: &Arc<str>| match name {
                Some(t) => topic_name(&format!("{setting}.{field}"), t).map(Arc::from),
                None => Ok(default.clone()),
            };
            let topics = AppTopics {
                official_account: own("topic", a.topic, &default_topics.official_account)?,
                general: own("general_topic", a.general_topic, &default_topics.general)?,
                dead_letter: own("dlq_topic", a.dlq_topic, &default_topics.dead_letter)?,
            };
            if topics.dead_letter == topics.official_account || topics.dead_letter == topics.general
            {
                return Err(bad(
                    format!("{setting}.dlq_topic"),
                    format!(
                        "{:?} must differ from the app's other topics",
                        topics.dead_letter
                    ),
                ));
            }
            if apps
                .insert(
                    a.sdk_app_id,
                    App {
                        sdk_app_id: a.sdk_app_id,
                        tokens,
                        topics,
                    },
                )
                .is_some()
            {
                return Err(bad(
                    format!("{setting}.sdk_app_id"),
                    format!("{} is configured twice", a.sdk_app_id),
                ));
            }
        }
        match cli.sdk_app_id {
            Some(id) => {
                let sdk_app_id: u64 = number("BRIDGE_SDKAPPID", &id)?;
                let tokens = tokens(
                    "BRIDGE_CALLBACK_TOKEN",
                    cli.callback_token.into_iter().collect(),
                    cli.callback_token_file.as_deref(),
                )?;
                let app = App {
                    sdk_app_id,
                    tokens,
                    topics: default_topics.clone(),
                };
                if apps.insert(sdk_app_id, app).is_some() {
                    return Err(bad(
                        "BRIDGE_SDKAPPID",
                        format!("{sdk_app_id} is also in the config file's [[apps]]"),
                    ));
                }
            }
            None if cli.callback_token.is_some() || cli.callback_token_file.is_some() => {
                return Err(bad(
                    "BRIDGE_CALLBACK_TOKEN",
                    "is set but BRIDGE_SDKAPPID is not: say which app the token is for",
                ));
            }
            None => {}
        }
        if apps.is_empty() {
            if brokers.is_some() {
                return Err(bad(
                    "BRIDGE_SDKAPPID",
                    "no app is configured: set BRIDGE_SDKAPPID (and BRIDGE_CALLBACK_TOKEN) or [[apps]] in the config file",
                ));
            }
            apps.insert(
                DEMO_SDK_APP_ID,
                App {
                    sdk_app_id: DEMO_SDK_APP_ID,
                    tokens: vec![Secret::new(DEMO_TOKEN)],
                    topics: default_topics.clone(),
                },
            );
        }
        // Events never go to a dead-letter topic, whichever app owns it.
        for named in routes.named_topics() {
            if let Some(app) = apps.values().find(|a| &*a.topics.dead_letter == named) {
                return Err(bad(
                    "routes",
                    format!(
                        "topic {named:?} is the dead-letter topic of app {}",
                        app.sdk_app_id
                    ),
                ));
            }
        }

        Ok(Config {
            listen,
            admin_listen,
            callback_path,
            max_body_bytes,
            signature_max_skew,
            apps,
            kafka: KafkaConfig {
                brokers,
                topic,
                general_topic,
                dlq_topic,
                properties,
            },
            log_format,
            shutdown_timeout,
            max_connections,
            header_read_timeout,
            idle_timeout,
            body_read_timeout,
            max_header_bytes,
            max_json_depth,
            allowed_sources,
            trusted_proxy_header,
            trusted_proxies,
            tls,
            ack_mode,
            delivery_timeout,
            spool_dir,
            spool_max_bytes,
            routes,
            publish_before,
            dedup_window,
            dedup_max_entries,
        })
    }

    /// Every topic the bridge may write: each app's three and those routes
    /// name. Readiness asks Kafka for all of them.
    pub fn topics(&self) -> Vec<String> {
        let mut all = std::collections::BTreeSet::new();
        for app in self.apps.values() {
            all.insert(&*app.topics.official_account);
            all.insert(&*app.topics.general);
            all.insert(&*app.topics.dead_letter);
        }
        all.extend(self.routes.named_topics());
        all.into_iter().map(str::to_owned).collect()
    }

    /// `true` when the only app is the built-in demo app.
    pub fn is_demo(&self) -> bool {
        self.kafka.brokers.is_none()
            && self.apps.len() == 1
            && self
                .apps
                .get(&DEMO_SDK_APP_ID)
                .is_some_and(|a| a.tokens.len() == 1 && a.tokens[0].expose() == DEMO_TOKEN)
    }
}

#[cfg(test)]
mod tests;
