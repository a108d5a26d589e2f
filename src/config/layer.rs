//! How one setting's value is chosen: the flag or environment variable,
//! else the config file, else the default from [`super::settings`], each
//! parsed by the setting's own parser so an error names the setting.

use super::ConfigError;
use super::settings::Setting;

/// The flag or environment value (`cli`, text), else the file's (`file`,
/// already typed), else the setting's default (text), parsed by `parse`.
pub(super) fn layered<T>(
    setting: Setting,
    cli: Option<String>,
    file: Option<T>,
    parse: impl Fn(&str, &str) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    match (cli, file) {
        (Some(v), _) => parse(setting.env, &v),
        (None, Some(v)) => Ok(v),
        (None, None) => parse(setting.env, setting.default_text()),
    }
}

/// [`layered`] for settings whose file value is text too (durations, addresses).
pub(super) fn layered_text<T>(
    setting: Setting,
    cli: Option<String>,
    file: Option<String>,
    parse: impl Fn(&str, &str) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let v = cli.or(file);
    parse(
        setting.env,
        v.as_deref().unwrap_or_else(|| setting.default_text()),
    )
}

/// [`layered`] for values clap has parsed already (enums, booleans).
pub(super) fn layered_parsed<T: std::str::FromStr>(
    setting: Setting,
    cli: Option<T>,
    file: Option<T>,
) -> T {
    cli.or(file).unwrap_or_else(|| {
        setting
            .default_text()
            .parse()
            .ok()
            .expect("every default parses (tested)")
    })
}

/// `value` within `range`, or an error naming the setting.
pub(super) fn within<T: PartialOrd + std::fmt::Display>(
    setting: Setting,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(super::bad(
            setting.env,
            format!(
                "{value} must be between {} and {}",
                range.start(),
                range.end()
            ),
        ))
    }
}
