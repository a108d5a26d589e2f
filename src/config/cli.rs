//! The command line and environment (clap): every setting, its flag, its
//! variable and its `--help` text.

use std::path::PathBuf;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

use super::settings;
use super::{AckMode, ConfigError, LogFormat, bad};

const AFTER_HELP: &str = "\
Every setting can also come from the environment (shown in brackets) or from the
TOML file given with --config. Precedence: flag, environment, file, default.

Any librdkafka property (SASL, TLS, tuning) can be passed as
  BRIDGE_KAFKA_PROP_<NAME>=value   e.g. BRIDGE_KAFKA_PROP_SASL_MECHANISMS=PLAIN
                                   (NAME upper-cased, dots as underscores)
  --kafka-property name=value      (repeatable)
  [kafka.properties] in the file
Several apps, each with its own token (and, optionally, its own topics), go
in the file:
  [[apps]]
  sdk_app_id = 1400000001
  token_file = \"/run/secrets/tencent-token\"
  topic = \"app1-official-account-events\"     # optional, also general_topic, dlq_topic

Routing (docs/configuration.md, \"Routing\"): OfficialAccount.* goes to
BRIDGE_KAFKA_TOPIC keyed by Official_Account; Group.* by GroupId, C2C.* by
From_Account, State.StateChange by Info.To_Account, Push.OfflinePush (one
event per item) by To_Account, and every other command by the first account
field present, all to BRIDGE_KAFKA_GENERAL_TOPIC. Routes in the file come first:
  [[routes]]
  command = \"Group.*\"            # exact name, or a prefix ending in *
  topic = \"chat-group-events\"    # optional
  key = \"GroupId\"                # optional; a field path or a list tried in order
  action = \"publish\"             # or \"count\": answer OK, count, publish nothing

With no brokers configured, the bridge starts an in-memory Kafka-compatible
broker and, if no app is configured either, accepts the demo app
1400000001 with token \"demo-token\". Events then live only in memory.

Logs: RUST_LOG sets the filter (default \"info\").
Reference: docs/configuration.md, docs/metrics.md, docs/errors.md, docs/events.md.";

/// Command line and environment. Every field is optional so that the file
/// and the defaults can fill what is not given.
#[derive(Debug, Default, Parser)]
#[command(
    name = "chat-kafka-bridge",
    version,
    about = "Receives Tencent Cloud Chat webhooks and publishes them to Kafka as normalized, versioned events.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// TOML config file (see docs/configuration.md for its keys).
    #[arg(long, env = settings::CONFIG.env, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address for Tencent's callbacks.
    #[arg(long, env = settings::LISTEN.env, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = settings::ADMIN_LISTEN.env, value_name = "ADDR")]
    pub admin_listen: Option<String>,

    /// Path of the webhook URL configured in Tencent's console.
    #[arg(long, env = settings::CALLBACK_PATH.env, value_name = "PATH")]
    pub callback_path: Option<String>,

    /// Largest callback body accepted, in bytes; larger ones get 413.
    #[arg(long, env = settings::MAX_BODY_BYTES.env, value_name = "BYTES")]
    pub max_body_bytes: Option<String>,

    /// How far RequestTime may be from the bridge's clock, e.g. 60s.
    #[arg(long, env = settings::SIGNATURE_MAX_SKEW.env, value_name = "DURATION")]
    pub signature_max_skew: Option<String>,

    /// SdkAppid of the single app to accept (more apps: use the config file).
    #[arg(long, env = settings::SDKAPPID.env, value_name = "ID")]
    pub sdk_app_id: Option<String>,

    /// Callback token of that app. Prefer the environment or a file: command
    /// lines are visible to other users of the machine.
    #[arg(
        long,
        env = settings::CALLBACK_TOKEN.env,
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub callback_token: Option<String>,

    /// File holding that app's callback token (trailing newline ignored).
    #[arg(long, env = settings::CALLBACK_TOKEN_FILE.env, value_name = "FILE")]
    pub callback_token_file: Option<PathBuf>,

    /// Kafka bootstrap servers, comma-separated. Unset: embedded in-memory broker.
    #[arg(long, env = settings::KAFKA_BROKERS.env, value_name = "HOST:PORT,...")]
    pub kafka_brokers: Option<String>,

    /// Topic for normalized events.
    #[arg(long, env = settings::KAFKA_TOPIC.env, value_name = "TOPIC")]
    pub kafka_topic: Option<String>,

    /// Topic for the events of every command outside OfficialAccount.* (group,
    /// one-to-one, status, push, unknown ones), unless a route names another
    ///.
    #[arg(long, env = settings::KAFKA_GENERAL_TOPIC.env, value_name = "TOPIC")]
    pub kafka_general_topic: Option<String>,

    /// Topic for authentic callbacks that could not be normalized, published raw
    /// [default: BRIDGE_KAFKA_TOPIC's value followed by -dlq].
    #[arg(long, env = settings::KAFKA_DLQ_TOPIC.env, value_name = "TOPIC")]
    pub kafka_dlq_topic: Option<String>,

    /// Largest Kafka record (key, value, headers) the bridge sends; a callback
    /// whose event would be larger gets 413 record_too_large before any answer.
    /// Lowered at run time to the topics' max.message.bytes when the bridge may
    /// read them. Keep it below the brokers' and topics' limit (1048588 by
    /// default).
    #[arg(long, env = settings::KAFKA_MAX_RECORD_BYTES.env, value_name = "BYTES")]
    pub kafka_max_record_bytes: Option<String>,

    /// A librdkafka property, name=value (repeatable); overrides the bridge's defaults.
    #[arg(long = "kafka-property", value_name = "NAME=VALUE")]
    pub kafka_properties: Vec<String>,

    /// Log format: text (human-readable lines) or json (one object per line).
    #[arg(long, env = settings::LOG_FORMAT.env, value_name = "FORMAT", value_enum, hide_possible_values = true)]
    pub log_format: Option<LogFormat>,

    /// Upper bound on the drain after SIGTERM: in-flight requests, then the
    /// producer flush. Keep it below the pod's termination grace period.
    #[arg(long, env = settings::SHUTDOWN_TIMEOUT.env, value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,

    /// Most connections open at once on the callback port; more are closed at once
    ///.
    #[arg(long, env = settings::MAX_CONNECTIONS.env, value_name = "N")]
    pub max_connections: Option<String>,

    /// Time a client has to send a request's head (request line and headers),
    /// counted from its first byte; slower clients are disconnected.
    #[arg(long, env = settings::HEADER_READ_TIMEOUT.env, value_name = "DURATION")]
    pub header_read_timeout: Option<String>,

    /// Time a keep-alive connection may wait for its next request.
    #[arg(long, env = settings::IDLE_TIMEOUT.env, value_name = "DURATION")]
    pub idle_timeout: Option<String>,

    /// Time a client has to send a request's body; slower ones get 408.
    #[arg(long, env = settings::BODY_READ_TIMEOUT.env, value_name = "DURATION")]
    pub body_read_timeout: Option<String>,

    /// Largest request head (request line and headers) in bytes; larger ones
    /// get 431.
    #[arg(long, env = settings::MAX_HEADER_BYTES.env, value_name = "BYTES")]
    pub max_header_bytes: Option<String>,

    /// Deepest JSON nesting accepted in a body; deeper ones get 400.
    #[arg(long, env = settings::MAX_JSON_DEPTH.env, value_name = "N")]
    pub max_json_depth: Option<String>,

    /// Most JSON values (containers, members and elements) in a body; more get
    /// 400 body_too_complex, before parsing. Bounds the memory one body costs
    /// while parsed.
    #[arg(long, env = settings::MAX_JSON_VALUES.env, value_name = "N")]
    pub max_json_values: Option<String>,

    /// Most body bytes being read and parsed at once, over all connections; a
    /// body that does not fit gets 503 body_budget_full. Bounds the memory
    /// bodies take together (BRIDGE_MAX_BODY_BYTES bounds one).
    #[arg(long, env = settings::MAX_INFLIGHT_BODY_BYTES.env, value_name = "BYTES")]
    pub max_inflight_body_bytes: Option<String>,

    /// Most items a batched callback (Push.OfflinePush, Push.AllMemberPush:
    /// Tencent sends 1 to 100) may hold; a larger batch is dead-lettered whole.
    #[arg(long, env = settings::MAX_BATCH_ITEMS.env, value_name = "N")]
    pub max_batch_items: Option<String>,

    /// Comma-separated CIDRs allowed to send callbacks, e.g. Tencent's callback
    /// egress ranges; others get 403. Unset: any source.
    #[arg(long, env = settings::ALLOWED_SOURCES.env, value_name = "CIDR,...")]
    pub allowed_sources: Option<String>,

    /// Header a trusted reverse proxy sets to the client's address, e.g.
    /// X-Forwarded-For (its last address is used). Unset: the socket's peer.
    #[arg(long, env = settings::TRUSTED_PROXY_HEADER.env, value_name = "HEADER")]
    pub trusted_proxy_header: Option<String>,

    /// Comma-separated CIDRs of the proxies whose BRIDGE_TRUSTED_PROXY_HEADER
    /// is believed. Unset: any peer's.
    #[arg(long, env = settings::TRUSTED_PROXIES.env, value_name = "CIDR,...")]
    pub trusted_proxies: Option<String>,

    /// PEM certificate chain: serve the callback port over HTTPS (needs
    /// BRIDGE_TLS_KEY_FILE). Unset: plain HTTP, for a TLS-terminating ingress.
    #[arg(long, env = settings::TLS_CERT_FILE.env, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key for BRIDGE_TLS_CERT_FILE.
    #[arg(long, env = settings::TLS_KEY_FILE.env, value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// When a callback is answered OK: enqueued (in the producer's memory queue),
    /// spooled (fsync'd to the local spool) or delivered (acknowledged by Kafka,
    /// or spooled after BRIDGE_DELIVERY_TIMEOUT).
    #[arg(long, env = settings::ACK_MODE.env, value_name = "MODE", value_enum, hide_possible_values = true)]
    pub ack_mode: Option<AckMode>,

    /// In delivered mode, how long to wait for Kafka before spooling and
    /// answering; must stay well under Tencent's 2 s timeout.
    #[arg(long, env = settings::DELIVERY_TIMEOUT.env, value_name = "DURATION")]
    pub delivery_timeout: Option<String>,

    /// Directory of the local spool, where events wait while Kafka cannot take
    /// them; one per bridge process.
    #[arg(long, env = settings::SPOOL_DIR.env, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Most bytes the spool may use; when full, callbacks that need it get 503
    ///.
    #[arg(long, env = settings::SPOOL_MAX_BYTES.env, value_name = "BYTES")]
    pub spool_max_bytes: Option<String>,

    /// Publish "Before" callbacks (CallbackBefore*, Sns.CallbackPrev*) as audit
    /// events with before=true: true or false. They are answered "allow" at
    /// once either way; false only counts them.
    #[arg(
        long,
        env = settings::PUBLISH_BEFORE.env,
        value_name = "BOOL",
        hide_possible_values = true
    )]
    pub publish_before: Option<bool>,

    /// De-duplication window, e.g. 10m: a callback whose event id was published
    /// within it is answered OK and counted, not published again. Per process;
    /// 0s turns it off.
    #[arg(long, env = settings::DEDUP_WINDOW.env, value_name = "DURATION")]
    pub dedup_window: Option<String>,

    /// Most event ids the de-duplication window remembers (about 100 bytes
    /// each); past it the oldest are forgotten early.
    #[arg(long, env = settings::DEDUP_MAX_ENTRIES.env, value_name = "N")]
    pub dedup_max_entries: Option<String>,
}

impl Cli {
    /// The command line, with each setting's default (from
    /// [`settings`]) shown in its help.
    pub fn command() -> clap::Command {
        let mut cmd = <Cli as CommandFactory>::command();
        for setting in settings::ALL {
            let Some(default) = setting.default else {
                continue;
            };
            let id = cmd
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == setting.env))
                .map(|a| a.get_id().clone());
            if let Some(id) = id {
                cmd = cmd.mut_arg(id, |a| {
                    let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                    a.help(format!("{} [default: {default}]", help.trim_end()))
                });
            }
        }
        cmd
    }

    /// Parses `args` (the first is the program name) and the environment.
    /// An invalid value becomes a [`ConfigError`] naming its setting; other
    /// errors (and `--help`, `--version`) are clap's to print.
    pub fn parse_from<I, T>(args: I) -> Result<Cli, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cmd = Self::command();
        let matches: ArgMatches = match cmd.clone().try_get_matches_from(args) {
            Ok(m) => m,
            Err(e) => return Err(invalid_value(&cmd, e)),
        };
        Cli::from_arg_matches(&matches).map_err(CliError::Clap)
    }
}

/// Why the command line could not be parsed.
#[derive(Debug)]
pub enum CliError {
    /// A setting has a value it cannot take.
    Config(ConfigError),
    /// Anything else, `--help` and `--version` included: clap prints it.
    Clap(clap::Error),
}

/// clap's "invalid value" error for a setting, in our one-line form:
/// `invalid setting BRIDGE_ACK_MODE: "x" is not one of: enqueued, ...`.
fn invalid_value(cmd: &clap::Command, e: clap::Error) -> CliError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::InvalidValue {
        return CliError::Clap(e);
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return CliError::Clap(e);
    };
    let long = arg
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_start_matches("--");
    let env = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .and_then(|e| e.to_str())
        .map_or_else(|| format!("--{long}"), str::to_owned);
    let valid = match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(v)) => v.join(", "),
        _ => "true, false".to_owned(),
    };
    CliError::Config(bad(env, format!("{value:?} is not one of: {valid}")))
}
