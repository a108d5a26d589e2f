//! Kafka: the brokers, the three default topics and the librdkafka
//! properties that pass through.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::cli::Cli;
use super::file::FileConfig;
use super::layer::{layered, within};
use super::parse::{number, topic_name};
use super::{AppTopics, ConfigError, KAFKA_PROP_ENV_PREFIX, bad, settings as s};

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
    /// Largest record the bridge sends.
    pub max_record_bytes: usize,
    /// librdkafka properties, applied after the bridge's defaults.
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Property names whose values are secrets.
    fn is_secret(key: &str) -> bool {
        key.contains("password") || key.contains("secret") || key.ends_with(".key.pem")
    }

    /// The topics an app uses unless it names its own.
    pub fn default_topics(&self) -> AppTopics {
        AppTopics {
            official_account: Arc::from(self.topic.as_str()),
            general: Arc::from(self.general_topic.as_str()),
            dead_letter: Arc::from(self.dlq_topic.as_str()),
        }
    }

    pub(super) fn load(
        cli: &mut Cli,
        file: &mut FileConfig,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let brokers = cli
            .kafka_brokers
            .take()
            .or(file.kafka.brokers.take())
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty());
        let topic = topic_name(
            s::KAFKA_TOPIC.env,
            cli.kafka_topic
                .take()
                .or(file.kafka.topic.take())
                .unwrap_or_else(|| s::KAFKA_TOPIC.default_text().to_owned()),
        )?;
        let dlq_topic = topic_name(
            s::KAFKA_DLQ_TOPIC.env,
            cli.kafka_dlq_topic
                .take()
                .or(file.kafka.dlq_topic.take())
                .unwrap_or_else(|| format!("{topic}-dlq")),
        )?;
        let general_topic = topic_name(
            s::KAFKA_GENERAL_TOPIC.env,
            cli.kafka_general_topic
                .take()
                .or(file.kafka.general_topic.take())
                .unwrap_or_else(|| s::KAFKA_GENERAL_TOPIC.default_text().to_owned()),
        )?;
        if dlq_topic == topic || dlq_topic == general_topic {
            return Err(bad(
                s::KAFKA_DLQ_TOPIC.env,
                format!(
                    "{dlq_topic:?} must differ from {} and {}",
                    s::KAFKA_TOPIC.env,
                    s::KAFKA_GENERAL_TOPIC.env
                ),
            ));
        }
        let properties = properties(cli, file, env)?;
        let max_record_bytes = within(
            s::KAFKA_MAX_RECORD_BYTES,
            layered(
                s::KAFKA_MAX_RECORD_BYTES,
                cli.kafka_max_record_bytes.take(),
                file.kafka.max_record_bytes.take(),
                number,
            )?,
            4096..=100 * 1024 * 1024,
        )?;
        Ok(KafkaConfig {
            brokers,
            topic,
            general_topic,
            dlq_topic,
            max_record_bytes,
            properties,
        })
    }
}

/// librdkafka properties: the file's, then `BRIDGE_KAFKA_PROP_*`, then
/// `--kafka-property` (later ones win).
fn properties(
    cli: &mut Cli,
    file: &mut FileConfig,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut properties = BTreeMap::new();
    for (k, v) in std::mem::take(&mut file.kafka.properties) {
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
    for p in std::mem::take(&mut cli.kafka_properties) {
        let Some((k, v)) = p.split_once('=') else {
            return Err(bad("--kafka-property", format!("{p:?} is not NAME=VALUE")));
        };
        properties.insert(k.trim().to_owned(), v.to_owned());
    }
    if properties.contains_key("bootstrap.servers") {
        return Err(bad(
            "kafka property bootstrap.servers",
            format!("set the brokers with {} instead", s::KAFKA_BROKERS.env),
        ));
    }
    Ok(properties)
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
            .field("max_record_bytes", &self.max_record_bytes)
            .field("properties", &props)
            .finish()
    }
}
