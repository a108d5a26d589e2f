//! The command line and environment (clap): every setting, its flag, its
//! variable and its `--help` text.

use std::path::PathBuf;

use clap::Parser;

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
    #[arg(long, env = "BRIDGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address for Tencent's callbacks [default: 0.0.0.0:8080].
    #[arg(long, env = "BRIDGE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Address for /metrics, /healthz and /readyz [default: 0.0.0.0:9090].
    #[arg(long, env = "BRIDGE_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<String>,

    /// Path of the webhook URL configured in Tencent's console [default: /callback].
    #[arg(long, env = "BRIDGE_CALLBACK_PATH", value_name = "PATH")]
    pub callback_path: Option<String>,

    /// Largest callback body accepted, in bytes; larger ones get 413 [default: 1048576].
    #[arg(long, env = "BRIDGE_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<String>,

    /// How far RequestTime may be from the bridge's clock, e.g. 60s [default: 60s].
    #[arg(long, env = "BRIDGE_SIGNATURE_MAX_SKEW", value_name = "DURATION")]
    pub signature_max_skew: Option<String>,

    /// SdkAppid of the single app to accept (more apps: use the config file).
    #[arg(long, env = "BRIDGE_SDKAPPID", value_name = "ID")]
    pub sdk_app_id: Option<String>,

    /// Callback token of that app. Prefer the environment or a file: command
    /// lines are visible to other users of the machine.
    #[arg(
        long,
        env = "BRIDGE_CALLBACK_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub callback_token: Option<String>,

    /// File holding that app's callback token (trailing newline ignored).
    #[arg(long, env = "BRIDGE_CALLBACK_TOKEN_FILE", value_name = "FILE")]
    pub callback_token_file: Option<PathBuf>,

    /// Kafka bootstrap servers, comma-separated. Unset: embedded in-memory broker.
    #[arg(long, env = "BRIDGE_KAFKA_BROKERS", value_name = "HOST:PORT,...")]
    pub kafka_brokers: Option<String>,

    /// Topic for normalized events [default: official-account-events].
    #[arg(long, env = "BRIDGE_KAFKA_TOPIC", value_name = "TOPIC")]
    pub kafka_topic: Option<String>,

    /// Topic for the events of every command outside OfficialAccount.* (group,
    /// one-to-one, status, push, unknown ones), unless a route names another
    /// [default: chat-callback-events].
    #[arg(long, env = "BRIDGE_KAFKA_GENERAL_TOPIC", value_name = "TOPIC")]
    pub kafka_general_topic: Option<String>,

    /// Topic for authentic callbacks that could not be normalized, published raw
    /// [default: official-account-events-dlq].
    #[arg(long, env = "BRIDGE_KAFKA_DLQ_TOPIC", value_name = "TOPIC")]
    pub kafka_dlq_topic: Option<String>,

    /// A librdkafka property, name=value (repeatable); overrides the bridge's defaults.
    #[arg(long = "kafka-property", value_name = "NAME=VALUE")]
    pub kafka_properties: Vec<String>,

    /// Log format: text or json [default: text].
    #[arg(long, env = "BRIDGE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Upper bound on the drain after SIGTERM: in-flight requests, then the
    /// producer flush [default: 20s]. Keep it below the pod's termination grace period.
    #[arg(long, env = "BRIDGE_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,

    /// Most connections open at once on the callback port; more are closed at once
    /// [default: 4096].
    #[arg(long, env = "BRIDGE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,

    /// Time a client has to send a request's head (request line and headers),
    /// counted from its first byte; slower clients are disconnected [default: 10s].
    #[arg(long, env = "BRIDGE_HEADER_READ_TIMEOUT", value_name = "DURATION")]
    pub header_read_timeout: Option<String>,

    /// Time a keep-alive connection may wait for its next request [default: 60s].
    #[arg(long, env = "BRIDGE_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,

    /// Time a client has to send a request's body; slower ones get 408 [default: 10s].
    #[arg(long, env = "BRIDGE_BODY_READ_TIMEOUT", value_name = "DURATION")]
    pub body_read_timeout: Option<String>,

    /// Largest request head (request line and headers) in bytes; larger ones
    /// get 431 [default: 16384].
    #[arg(long, env = "BRIDGE_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub max_header_bytes: Option<String>,

    /// Deepest JSON nesting accepted in a body; deeper ones get 400 [default: 32].
    #[arg(long, env = "BRIDGE_MAX_JSON_DEPTH", value_name = "N")]
    pub max_json_depth: Option<String>,

    /// Comma-separated CIDRs allowed to send callbacks, e.g. Tencent's callback
    /// egress ranges; others get 403. Unset: any source.
    #[arg(long, env = "BRIDGE_ALLOWED_SOURCES", value_name = "CIDR,...")]
    pub allowed_sources: Option<String>,

    /// Header a trusted reverse proxy sets to the client's address, e.g.
    /// X-Forwarded-For (its last address is used). Unset: the socket's peer.
    #[arg(long, env = "BRIDGE_TRUSTED_PROXY_HEADER", value_name = "HEADER")]
    pub trusted_proxy_header: Option<String>,

    /// Comma-separated CIDRs of the proxies whose BRIDGE_TRUSTED_PROXY_HEADER
    /// is believed. Unset: any peer's.
    #[arg(long, env = "BRIDGE_TRUSTED_PROXIES", value_name = "CIDR,...")]
    pub trusted_proxies: Option<String>,

    /// PEM certificate chain: serve the callback port over HTTPS (needs
    /// BRIDGE_TLS_KEY_FILE). Unset: plain HTTP, for a TLS-terminating ingress.
    #[arg(long, env = "BRIDGE_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key for BRIDGE_TLS_CERT_FILE.
    #[arg(long, env = "BRIDGE_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// When a callback is answered OK: enqueued (in the producer's memory queue),
    /// spooled (fsync'd to the local spool) or delivered (acknowledged by Kafka,
    /// or spooled after BRIDGE_DELIVERY_TIMEOUT) [default: enqueued].
    #[arg(long, env = "BRIDGE_ACK_MODE", value_name = "MODE")]
    pub ack_mode: Option<String>,

    /// In delivered mode, how long to wait for Kafka before spooling and
    /// answering; must stay well under Tencent's 2 s timeout [default: 1s].
    #[arg(long, env = "BRIDGE_DELIVERY_TIMEOUT", value_name = "DURATION")]
    pub delivery_timeout: Option<String>,

    /// Directory of the local spool, where events wait while Kafka cannot take
    /// them; one per bridge process [default: spool].
    #[arg(long, env = "BRIDGE_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Most bytes the spool may use; when full, callbacks that need it get 503
    /// [default: 1073741824].
    #[arg(long, env = "BRIDGE_SPOOL_MAX_BYTES", value_name = "BYTES")]
    pub spool_max_bytes: Option<String>,

    /// Publish "Before" callbacks (CallbackBefore*, Sns.CallbackPrev*) as audit
    /// events with before=true: true or false. They are answered "allow" at
    /// once either way; false only counts them [default: true].
    #[arg(long, env = "BRIDGE_PUBLISH_BEFORE", value_name = "BOOL")]
    pub publish_before: Option<String>,

    /// De-duplication window, e.g. 10m: a callback whose event id was published
    /// within it is answered OK and counted, not published again. Per process;
    /// 0s turns it off [default: 0s (off)].
    #[arg(long, env = "BRIDGE_DEDUP_WINDOW", value_name = "DURATION")]
    pub dedup_window: Option<String>,

    /// Most event ids the de-duplication window remembers (about 100 bytes
    /// each); past it the oldest are forgotten early [default: 100000].
    #[arg(long, env = "BRIDGE_DEDUP_MAX_ENTRIES", value_name = "N")]
    pub dedup_max_entries: Option<String>,
}
