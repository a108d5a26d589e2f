//! Listeners and limits: where the bridge listens, who may call it, and
//! how much any one request may cost.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::cli::Cli;
use super::file::FileConfig;
use super::layer::{layered, layered_text, within};
use super::parse::{addr, cidrs, duration, number, split_list};
use super::{ConfigError, bad, settings as s};

/// The two ports, the callback path, TLS and who may send callbacks.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// Callback listener.
    pub callback: SocketAddr,
    /// Admin listener (metrics, health, readiness).
    pub admin: SocketAddr,
    /// Path Tencent posts callbacks to.
    pub callback_path: String,
    /// TLS certificate chain and private key (PEM) for the callback port.
    pub tls: Option<TlsFiles>,
    /// Source addresses allowed to send callbacks; empty means all.
    pub allowed_sources: Vec<ipnet::IpNet>,
    /// Header holding the client address, set by a trusted proxy.
    pub trusted_proxy_header: Option<http::HeaderName>,
    /// Peers whose `trusted_proxy_header` is believed; empty means any peer.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// PEM files for TLS on the callback port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// What one request or connection may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections open at once on the callback port.
    pub max_connections: usize,
    /// Largest accepted callback body.
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Deepest JSON nesting accepted in a body.
    pub max_json_depth: usize,
    /// Most items of a batched callback.
    pub max_batch_items: usize,
    /// Most JSON values in a body.
    pub max_json_values: usize,
    /// Most body bytes being read and parsed at once, process-wide.
    pub max_inflight_body_bytes: usize,
    /// Time a client has to send a request's head, from its first byte.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_read_timeout: Duration,
    /// How far `RequestTime` may be from the bridge's clock.
    pub signature_max_skew: Duration,
}

impl Listeners {
    pub(super) fn load(cli: &mut Cli, file: &mut FileConfig) -> Result<Self, ConfigError> {
        let callback = layered_text(s::LISTEN, cli.listen.take(), file.listen.take(), addr)?;
        let admin = layered_text(
            s::ADMIN_LISTEN,
            cli.admin_listen.take(),
            file.admin_listen.take(),
            addr,
        )?;
        let callback_path = cli
            .callback_path
            .take()
            .or(file.callback_path.take())
            .unwrap_or_else(|| s::CALLBACK_PATH.default_text().to_owned());
        if !callback_path.starts_with('/') || callback_path.contains(['?', '#']) {
            return Err(bad(
                s::CALLBACK_PATH.env,
                format!("{callback_path:?} must start with / and hold no ? or #"),
            ));
        }
        let list =
            |cli: Option<String>, file: Option<Vec<String>>| cli.map(|v| split_list(&v)).or(file);
        let allowed_sources = cidrs(
            s::ALLOWED_SOURCES.env,
            list(cli.allowed_sources.take(), file.allowed_sources.take()),
        )?;
        let trusted_proxies = cidrs(
            s::TRUSTED_PROXIES.env,
            list(cli.trusted_proxies.take(), file.trusted_proxies.take()),
        )?;
        let trusted_proxy_header = match cli
            .trusted_proxy_header
            .take()
            .or(file.trusted_proxy_header.take())
        {
            None => None,
            Some(h) => Some(http::HeaderName::try_from(h.trim()).map_err(|_| {
                bad(
                    s::TRUSTED_PROXY_HEADER.env,
                    format!("{h:?} is not an HTTP header name"),
                )
            })?),
        };
        if !trusted_proxies.is_empty() && trusted_proxy_header.is_none() {
            return Err(bad(
                s::TRUSTED_PROXIES.env,
                format!(
                    "is set but {} is not: name the header those proxies set",
                    s::TRUSTED_PROXY_HEADER.env
                ),
            ));
        }
        let tls = match (
            cli.tls_cert_file.take().or(file.tls_cert_file.take()),
            cli.tls_key_file.take().or(file.tls_key_file.take()),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (Some(_), None) => {
                return Err(bad(
                    s::TLS_KEY_FILE.env,
                    format!("is needed with {}", s::TLS_CERT_FILE.env),
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    s::TLS_CERT_FILE.env,
                    format!("is needed with {}", s::TLS_KEY_FILE.env),
                ));
            }
        };
        Ok(Listeners {
            callback,
            admin,
            callback_path,
            tls,
            allowed_sources,
            trusted_proxy_header,
            trusted_proxies,
        })
    }
}

impl Limits {
    pub(super) fn load(cli: &mut Cli, file: &mut FileConfig) -> Result<Self, ConfigError> {
        let max_body_bytes = within(
            s::MAX_BODY_BYTES,
            layered(
                s::MAX_BODY_BYTES,
                cli.max_body_bytes.take(),
                file.max_body_bytes.take(),
                number,
            )?,
            1024..=64 * 1024 * 1024,
        )?;
        let max_header_bytes = within(
            s::MAX_HEADER_BYTES,
            layered(
                s::MAX_HEADER_BYTES,
                cli.max_header_bytes.take(),
                file.max_header_bytes.take(),
                number,
            )?,
            1024..=1024 * 1024,
        )?;
        let max_json_depth = within(
            s::MAX_JSON_DEPTH,
            layered(
                s::MAX_JSON_DEPTH,
                cli.max_json_depth.take(),
                file.max_json_depth.take(),
                number,
            )?,
            4..=128,
        )?;
        let max_batch_items = within(
            s::MAX_BATCH_ITEMS,
            layered(
                s::MAX_BATCH_ITEMS,
                cli.max_batch_items.take(),
                file.max_batch_items.take(),
                number,
            )?,
            1..=10_000,
        )?;
        let max_json_values = within(
            s::MAX_JSON_VALUES,
            layered(
                s::MAX_JSON_VALUES,
                cli.max_json_values.take(),
                file.max_json_values.take(),
                number,
            )?,
            100..=10_000_000,
        )?;
        let max_inflight_body_bytes = layered(
            s::MAX_INFLIGHT_BODY_BYTES,
            cli.max_inflight_body_bytes.take(),
            file.max_inflight_body_bytes.take(),
            number,
        )?;
        if max_inflight_body_bytes < max_body_bytes {
            return Err(bad(
                s::MAX_INFLIGHT_BODY_BYTES.env,
                format!(
                    "{max_inflight_body_bytes} must be at least {} ({max_body_bytes}): one body must fit",
                    s::MAX_BODY_BYTES.env
                ),
            ));
        }
        let max_connections = layered(
            s::MAX_CONNECTIONS,
            cli.max_connections.take(),
            file.max_connections.take(),
            number,
        )?;
        if max_connections == 0 {
            return Err(bad(s::MAX_CONNECTIONS.env, "must be at least 1"));
        }
        let (header_read_timeout, idle_timeout, body_read_timeout, signature_max_skew) =
            Self::timeouts(cli, file)?;
        Ok(Limits {
            max_connections,
            max_body_bytes,
            max_header_bytes,
            max_json_depth,
            max_batch_items,
            max_json_values,
            max_inflight_body_bytes,
            header_read_timeout,
            idle_timeout,
            body_read_timeout,
            signature_max_skew,
        })
    }

    /// The four timeouts: head, idle, body, signature skew.
    fn timeouts(
        cli: &mut Cli,
        file: &mut FileConfig,
    ) -> Result<(Duration, Duration, Duration, Duration), ConfigError> {
        let header_read_timeout = layered_text(
            s::HEADER_READ_TIMEOUT,
            cli.header_read_timeout.take(),
            file.header_read_timeout.take(),
            duration,
        )?;
        if header_read_timeout.is_zero() {
            return Err(bad(s::HEADER_READ_TIMEOUT.env, "must be more than 0s"));
        }
        let idle_timeout = layered_text(
            s::IDLE_TIMEOUT,
            cli.idle_timeout.take(),
            file.idle_timeout.take(),
            duration,
        )?;
        let body_read_timeout = layered_text(
            s::BODY_READ_TIMEOUT,
            cli.body_read_timeout.take(),
            file.body_read_timeout.take(),
            duration,
        )?;
        for (setting, d) in [
            (s::IDLE_TIMEOUT, idle_timeout),
            (s::BODY_READ_TIMEOUT, body_read_timeout),
        ] {
            if d < Duration::from_millis(100) {
                return Err(bad(setting.env, format!("{d:?} must be at least 100ms")));
            }
        }
        let signature_max_skew = layered_text(
            s::SIGNATURE_MAX_SKEW,
            cli.signature_max_skew.take(),
            file.signature_max_skew.take(),
            duration,
        )?;
        Ok((
            header_read_timeout,
            idle_timeout,
            body_read_timeout,
            signature_max_skew,
        ))
    }
}
