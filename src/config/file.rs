//! The TOML config file's shape. Unknown keys are errors (a typo must not be
//! ignored).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{AckMode, ConfigError, LogFormat, bad};

/// The config file's shape. Unknown keys are errors (a typo must not be ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) listen: Option<String>,
    pub(super) admin_listen: Option<String>,
    pub(super) callback_path: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) signature_max_skew: Option<String>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) shutdown_timeout: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) body_read_timeout: Option<String>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) max_json_depth: Option<usize>,
    pub(super) max_batch_items: Option<usize>,
    pub(super) max_json_values: Option<usize>,
    pub(super) max_inflight_body_bytes: Option<usize>,
    pub(super) allowed_sources: Option<Vec<String>>,
    pub(super) trusted_proxy_header: Option<String>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
    pub(super) ack_mode: Option<AckMode>,
    pub(super) delivery_timeout: Option<String>,
    pub(super) spool_dir: Option<PathBuf>,
    pub(super) spool_max_bytes: Option<u64>,
    pub(super) publish_before: Option<bool>,
    pub(super) dedup_window: Option<String>,
    pub(super) dedup_max_entries: Option<usize>,
    #[serde(default)]
    pub(super) apps: Vec<FileApp>,
    #[serde(default)]
    pub(super) routes: Vec<FileRoute>,
    #[serde(default)]
    pub(super) kafka: FileKafka,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileApp {
    pub(super) sdk_app_id: u64,
    pub(super) token: Option<String>,
    #[serde(default)]
    pub(super) tokens: Vec<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) topic: Option<String>,
    pub(super) general_topic: Option<String>,
    pub(super) dlq_topic: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoute {
    pub(super) command: String,
    pub(super) topic: Option<String>,
    pub(super) key: Option<FileKey>,
    pub(super) action: Option<FileAction>,
}

/// A route's key: one field path, or several tried in order.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum FileKey {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum FileAction {
    Publish,
    Count,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileKafka {
    pub(super) brokers: Option<String>,
    pub(super) topic: Option<String>,
    pub(super) general_topic: Option<String>,
    pub(super) dlq_topic: Option<String>,
    pub(super) max_record_bytes: Option<usize>,
    #[serde(default)]
    pub(super) properties: BTreeMap<String, toml::Value>,
}

pub(super) fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        bad(
            "BRIDGE_CONFIG",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    toml::from_str(&text).map_err(|e| {
        bad(
            "BRIDGE_CONFIG",
            format!("{}: {}", path.display(), e.to_string().replace('\n', " ")),
        )
    })
}
