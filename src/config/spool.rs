//! When a callback is answered OK, and the local spool behind that promise.

use std::path::PathBuf;
use std::time::Duration;

use super::cli::Cli;
use super::file::FileConfig;
use super::layer::{layered, layered_parsed, layered_text};
use super::parse::{duration, number};
use super::{AckMode, ConfigError, bad, settings as s};

/// The acknowledgement mode and the spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// When a callback is answered OK.
    pub ack_mode: AckMode,
    /// `delivered` mode: how long to wait for Kafka before spooling.
    pub delivery_timeout: Duration,
    /// Spool directory.
    pub dir: PathBuf,
    /// Spool size limit.
    pub max_bytes: u64,
}

impl SpoolConfig {
    pub(super) fn load(cli: &mut Cli, file: &mut FileConfig) -> Result<Self, ConfigError> {
        let ack_mode = layered_parsed(s::ACK_MODE, cli.ack_mode.take(), file.ack_mode.take());
        let delivery_timeout = layered_text(
            s::DELIVERY_TIMEOUT,
            cli.delivery_timeout.take(),
            file.delivery_timeout.take(),
            duration,
        )?;
        if delivery_timeout.is_zero() || delivery_timeout >= Duration::from_millis(1800) {
            return Err(bad(
                s::DELIVERY_TIMEOUT.env,
                format!(
                    "{delivery_timeout:?} must be more than 0 and under 1.8s (Tencent waits 2s)"
                ),
            ));
        }
        let dir = cli
            .spool_dir
            .take()
            .or(file.spool_dir.take())
            .unwrap_or_else(|| PathBuf::from(s::SPOOL_DIR.default_text()));
        let max_bytes: u64 = layered(
            s::SPOOL_MAX_BYTES,
            cli.spool_max_bytes.take(),
            file.spool_max_bytes.take(),
            number,
        )?;
        if max_bytes < 64 * 1024 {
            return Err(bad(
                s::SPOOL_MAX_BYTES.env,
                format!("{max_bytes} must be at least 65536"),
            ));
        }
        Ok(SpoolConfig {
            ack_mode,
            delivery_timeout,
            dir,
            max_bytes,
        })
    }
}
