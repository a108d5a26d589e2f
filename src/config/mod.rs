//! Configuration: plain data by group, its sources (flags, environment, a
//! TOML file) and validation.
//!
//! Precedence, highest first: command-line flag, environment variable,
//! config file, built-in default. Every setting's variable and default are
//! written once, in [`settings`], and shown by `--help`
//! ([`Cli::command`]); `docs/configuration.md` documents them. A bad
//! setting is a [`ConfigError`] that names it. Each group is loaded by its
//! own function: [`Listeners`] and [`Limits`] (`listen.rs`),
//! [`KafkaConfig`] (`kafka.rs`), the apps (`apps.rs`), [`Routing`]
//! (`routing.rs`), [`SpoolConfig`] (`spool.rs`).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

mod apps;
mod cli;
mod file;
mod kafka;
mod layer;
mod listen;
mod parse;
mod routing;
pub mod settings;
mod spool;

pub use apps::{App, AppTopics};
pub use cli::{Cli, CliError};
pub use kafka::KafkaConfig;
pub use listen::{Limits, Listeners, TlsFiles};
pub use routing::Routing;
pub use spool::SpoolConfig;

use file::{FileConfig, read_file};
use layer::{layered_parsed, layered_text};
use parse::duration;
use settings as s;

/// Environment prefix that passes any librdkafka property:
/// `BRIDGE_KAFKA_PROP_SASL_MECHANISMS=PLAIN` sets `sasl.mechanisms`.
pub const KAFKA_PROP_ENV_PREFIX: &str = "BRIDGE_KAFKA_PROP_";

/// SdkAppid and token the zero-config demo accepts (embedded Kafka only).
pub const DEMO_SDK_APP_ID: u64 = 1_400_000_001;
/// See [`DEMO_SDK_APP_ID`].
pub const DEMO_TOKEN: &str = "demo-token";

/// The bridge's configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ports, the path, TLS and who may send callbacks.
    pub listen: Listeners,
    /// What one request or connection may cost.
    pub limits: Limits,
    /// Kafka settings.
    pub kafka: KafkaConfig,
    /// Apps by SdkAppid.
    pub apps: HashMap<u64, App>,
    /// Where each command goes.
    pub routing: Routing,
    /// When a callback is answered OK, and the spool.
    pub spool: SpoolConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Upper bound on the shutdown drain (in-flight requests, then producer flush).
    pub shutdown_timeout: Duration,
}

/// When a callback is answered OK (see docs/reliability.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
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

impl std::str::FromStr for AckMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, false)
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

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, false)
    }
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
    /// Parses `args` (the first is the program name) with the process
    /// environment, and loads the configuration; `env` holds the
    /// `BRIDGE_KAFKA_PROP_*` variables. What `main` and the tests call.
    pub fn from_args<I, T>(
        args: I,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::parse_from(args)?;
        Config::load(cli, env).map_err(CliError::Config)
    }

    /// Builds the configuration from parsed flags/environment, the process
    /// environment's `BRIDGE_KAFKA_PROP_*` variables, and the file `cli.config` names.
    pub fn load(
        mut cli: Cli,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let (cli, file) = (&mut cli, &mut file);
        let listen = Listeners::load(cli, file)?;
        let limits = Limits::load(cli, file)?;
        let spool = SpoolConfig::load(cli, file)?;
        let kafka = KafkaConfig::load(cli, file, env)?;
        let routing = Routing::load(cli, file, &kafka.dlq_topic)?;
        let apps = apps::load(
            cli,
            file,
            &kafka.default_topics(),
            kafka.brokers.is_none(),
            &routing.routes,
        )?;
        let log_format =
            layered_parsed(s::LOG_FORMAT, cli.log_format.take(), file.log_format.take());
        let shutdown_timeout = layered_text(
            s::SHUTDOWN_TIMEOUT,
            cli.shutdown_timeout.take(),
            file.shutdown_timeout.take(),
            duration,
        )?;
        Ok(Config {
            listen,
            limits,
            kafka,
            apps,
            routing,
            spool,
            log_format,
            shutdown_timeout,
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
        all.extend(self.routing.routes.named_topics());
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
