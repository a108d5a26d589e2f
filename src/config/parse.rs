//! Parsers for single values, each naming its setting in the error.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{ConfigError, Secret, bad};

pub(super) fn addr(setting: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| bad(setting, format!("{value:?} is not an IP:port address")))
}

pub(super) fn number<T: std::str::FromStr>(setting: &str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| {
        bad(
            setting,
            format!("{value:?} is not a non-negative whole number"),
        )
    })
}

pub(super) fn duration(setting: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        bad(
            setting,
            format!("{value:?} is not a duration like 60s or 1m30s ({e})"),
        )
    })
}

pub(super) fn topic_name(setting: &str, name: String) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(name)
    } else {
        Err(bad(
            setting,
            format!("{name:?} is not a Kafka topic name (letters, digits, . _ -, at most 249)"),
        ))
    }
}

/// The tokens of one app: inline ones, or a file's non-empty lines (so a
/// rotation can list the new token and the old one).
pub(super) fn tokens(
    setting: &str,
    inline: Vec<String>,
    file: Option<&Path>,
) -> Result<Vec<Secret>, ConfigError> {
    if !inline.is_empty() && file.is_some() {
        return Err(bad(setting, "set either tokens or a token file, not both"));
    }
    let all: Vec<String> = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                bad(
                    format!("{setting} file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
        None => inline,
    };
    if file.is_some() && all.is_empty() {
        return Err(bad(setting, "the token file holds no token"));
    }
    if all.iter().any(|t| t.trim().is_empty()) {
        return Err(bad(setting, "the token is empty"));
    }
    Ok(all.into_iter().map(Secret::new).collect())
}

pub(super) fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// CIDRs (or single addresses, as /32 and /128).
pub(super) fn cidrs(
    setting: &str,
    list: Option<Vec<String>>,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.unwrap_or_default()
        .into_iter()
        .map(|c| {
            c.parse::<ipnet::IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| bad(setting, format!("{c:?} is not a CIDR like 203.0.113.0/24")))
        })
        .collect()
}
