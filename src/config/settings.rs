//! Every setting's environment variable and default, written once: `--help`
//! shows the default from here, loading parses it with the same parser as a
//! value the user gives, and errors name the variable.

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The environment variable, also the setting's name in error messages.
    pub env: &'static str,
    /// The default, as a user would write it; `None` when unset means
    /// something of its own (the setting's help says what).
    pub default: Option<&'static str>,
}

impl Setting {
    /// The default text; only for settings that have one.
    pub fn default_text(&self) -> &'static str {
        self.default
            .expect("only called for settings with a default")
    }
}

macro_rules! settings {
    ($($(#[$m:meta])* $name:ident = $env:literal $(, $default:literal)?;)*) => {
        $($(#[$m])* pub const $name: Setting = Setting {
            env: $env,
            default: settings!(@default $($default)?),
        };)*
        /// Every setting, for `--help` and the tests.
        pub const ALL: &[Setting] = &[$($name),*];
    };
    (@default) => { None };
    (@default $d:literal) => { Some($d) };
}

settings! {
    /// The TOML config file.
    CONFIG = "BRIDGE_CONFIG";
    /// Callback listener.
    LISTEN = "BRIDGE_LISTEN", "0.0.0.0:8080";
    /// Admin listener.
    ADMIN_LISTEN = "BRIDGE_ADMIN_LISTEN", "0.0.0.0:9090";
    /// Callback path.
    CALLBACK_PATH = "BRIDGE_CALLBACK_PATH", "/callback";
    /// Largest body.
    MAX_BODY_BYTES = "BRIDGE_MAX_BODY_BYTES", "1048576";
    /// Signature clock skew.
    SIGNATURE_MAX_SKEW = "BRIDGE_SIGNATURE_MAX_SKEW", "60s";
    /// The single app's id.
    SDKAPPID = "BRIDGE_SDKAPPID";
    /// Its token.
    CALLBACK_TOKEN = "BRIDGE_CALLBACK_TOKEN";
    /// Its token, from a file.
    CALLBACK_TOKEN_FILE = "BRIDGE_CALLBACK_TOKEN_FILE";
    /// Bootstrap servers; unset: the embedded broker.
    KAFKA_BROKERS = "BRIDGE_KAFKA_BROKERS";
    /// Official Account topic.
    KAFKA_TOPIC = "BRIDGE_KAFKA_TOPIC", "official-account-events";
    /// General topic.
    KAFKA_GENERAL_TOPIC = "BRIDGE_KAFKA_GENERAL_TOPIC", "chat-callback-events";
    /// Dead-letter topic; unset: BRIDGE_KAFKA_TOPIC followed by `-dlq`.
    KAFKA_DLQ_TOPIC = "BRIDGE_KAFKA_DLQ_TOPIC";
    /// Largest record.
    KAFKA_MAX_RECORD_BYTES = "BRIDGE_KAFKA_MAX_RECORD_BYTES", "1000000";
    /// Log format.
    LOG_FORMAT = "BRIDGE_LOG_FORMAT", "text";
    /// Shutdown drain bound.
    SHUTDOWN_TIMEOUT = "BRIDGE_SHUTDOWN_TIMEOUT", "20s";
    /// Connection limit.
    MAX_CONNECTIONS = "BRIDGE_MAX_CONNECTIONS", "4096";
    /// Time for a request head.
    HEADER_READ_TIMEOUT = "BRIDGE_HEADER_READ_TIMEOUT", "10s";
    /// Keep-alive idle time.
    IDLE_TIMEOUT = "BRIDGE_IDLE_TIMEOUT", "60s";
    /// Time for a body.
    BODY_READ_TIMEOUT = "BRIDGE_BODY_READ_TIMEOUT", "10s";
    /// Largest head.
    MAX_HEADER_BYTES = "BRIDGE_MAX_HEADER_BYTES", "16384";
    /// Deepest JSON.
    MAX_JSON_DEPTH = "BRIDGE_MAX_JSON_DEPTH", "32";
    /// Most JSON values in a body.
    MAX_JSON_VALUES = "BRIDGE_MAX_JSON_VALUES", "10000";
    /// Body bytes being read and parsed, process-wide.
    MAX_INFLIGHT_BODY_BYTES = "BRIDGE_MAX_INFLIGHT_BODY_BYTES", "67108864";
    /// Most items of a batch.
    MAX_BATCH_ITEMS = "BRIDGE_MAX_BATCH_ITEMS", "100";
    /// Source allow-list; unset: any.
    ALLOWED_SOURCES = "BRIDGE_ALLOWED_SOURCES";
    /// Trusted proxy header; unset: the socket's peer.
    TRUSTED_PROXY_HEADER = "BRIDGE_TRUSTED_PROXY_HEADER";
    /// Trusted proxies; unset: any peer.
    TRUSTED_PROXIES = "BRIDGE_TRUSTED_PROXIES";
    /// TLS certificate chain; unset: plain HTTP.
    TLS_CERT_FILE = "BRIDGE_TLS_CERT_FILE";
    /// TLS key.
    TLS_KEY_FILE = "BRIDGE_TLS_KEY_FILE";
    /// When a callback is answered OK.
    ACK_MODE = "BRIDGE_ACK_MODE", "enqueued";
    /// Delivered mode's wait.
    DELIVERY_TIMEOUT = "BRIDGE_DELIVERY_TIMEOUT", "1s";
    /// Spool directory.
    SPOOL_DIR = "BRIDGE_SPOOL_DIR", "spool";
    /// Spool size.
    SPOOL_MAX_BYTES = "BRIDGE_SPOOL_MAX_BYTES", "1073741824";
    /// Publish Before callbacks.
    PUBLISH_BEFORE = "BRIDGE_PUBLISH_BEFORE", "true";
    /// De-duplication window.
    DEDUP_WINDOW = "BRIDGE_DEDUP_WINDOW", "0s";
    /// De-duplication capacity.
    DEDUP_MAX_ENTRIES = "BRIDGE_DEDUP_MAX_ENTRIES", "100000";
}
