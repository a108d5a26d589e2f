//! Routing: where each command goes, whether Before callbacks are
//! published, and the de-duplication window.

use std::time::Duration;

use super::cli::Cli;
use super::file::{FileAction, FileConfig, FileKey};
use super::layer::{layered, layered_parsed, layered_text, within};
use super::parse::{duration, number, topic_name};
use super::{ConfigError, bad, settings as s};
use crate::route::{Action, RouteSpec, Routes};

/// Where each command goes, and what is published at all.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Where each command goes.
    pub routes: Routes,
    /// Publish "Before" callbacks as audit events (they are answered "allow" either way).
    pub publish_before: bool,
    /// The de-duplication window; `None`: off.
    pub dedup_window: Option<Duration>,
    /// Most event ids the de-duplication window holds.
    pub dedup_max_entries: usize,
}

impl Routing {
    /// `dlq_topic`: the default dead-letter topic, which no route may name.
    pub(super) fn load(
        cli: &mut Cli,
        file: &mut FileConfig,
        dlq_topic: &str,
    ) -> Result<Self, ConfigError> {
        let mut specs = Vec::with_capacity(file.routes.len());
        for (i, r) in std::mem::take(&mut file.routes).into_iter().enumerate() {
            let topic = match r.topic {
                Some(t) => Some(topic_name(&format!("routes[{i}].topic"), t)?),
                None => None,
            };
            if topic.as_deref() == Some(dlq_topic) {
                return Err(bad(
                    format!("routes[{i}].topic"),
                    format!("{dlq_topic:?} is the dead-letter topic"),
                ));
            }
            specs.push(RouteSpec {
                command: r.command,
                topic,
                key: r.key.map(|k| match k {
                    FileKey::One(k) => vec![k],
                    FileKey::Many(ks) => ks,
                }),
                action: r.action.map(|a| match a {
                    FileAction::Publish => Action::Publish,
                    FileAction::Count => Action::Count,
                }),
            });
        }
        let routes = Routes::new(specs).map_err(|(setting, problem)| bad(setting, problem))?;
        let publish_before = layered_parsed(
            s::PUBLISH_BEFORE,
            cli.publish_before.take(),
            file.publish_before.take(),
        );
        let dedup_window = layered_text(
            s::DEDUP_WINDOW,
            cli.dedup_window.take(),
            file.dedup_window.take(),
            duration,
        )?;
        let dedup_max_entries = within(
            s::DEDUP_MAX_ENTRIES,
            layered(
                s::DEDUP_MAX_ENTRIES,
                cli.dedup_max_entries.take(),
                file.dedup_max_entries.take(),
                number,
            )?,
            1..=10_000_000,
        )?;
        Ok(Routing {
            routes,
            publish_before,
            dedup_window: (!dedup_window.is_zero()).then_some(dedup_window),
            dedup_max_entries,
        })
    }
}
