//! The Tencent Cloud Chat apps the bridge accepts: each one's tokens and
//! topics; the demo app when nothing is configured.

use std::collections::HashMap;
use std::sync::Arc;

use super::cli::Cli;
use super::file::{FileApp, FileConfig};
use super::parse::{number, tokens, topic_name};
use super::{ConfigError, DEMO_SDK_APP_ID, DEMO_TOKEN, Secret, bad, settings as s};
use crate::route::Routes;

/// One Tencent Cloud Chat app.
#[derive(Debug, Clone)]
pub struct App {
    /// SdkAppid.
    pub sdk_app_id: u64,
    /// Callback tokens, any of which may sign (two during a rotation). Empty
    /// means the app has no webhook authentication.
    pub tokens: Vec<Secret>,
    /// The app's topics: its own, or the global ones.
    pub topics: AppTopics,
}

/// The topics one app's events go to (besides topics named by routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTopics {
    /// Official Account events.
    pub official_account: Arc<str>,
    /// Every other command's events.
    pub general: Arc<str>,
    /// Dead letters.
    pub dead_letter: Arc<str>,
}

/// The apps from the file's `[[apps]]` and `BRIDGE_SDKAPPID`, or the demo
/// app when there are none and no brokers are set (`embedded`).
pub(super) fn load(
    cli: &mut Cli,
    file: &mut FileConfig,
    defaults: &AppTopics,
    embedded: bool,
    routes: &Routes,
) -> Result<HashMap<u64, App>, ConfigError> {
    let mut apps = HashMap::new();
    for (i, a) in std::mem::take(&mut file.apps).into_iter().enumerate() {
        let app = file_app(i, a, defaults)?;
        let id = app.sdk_app_id;
        if apps.insert(id, app).is_some() {
            return Err(bad(
                format!("apps[{i}].sdk_app_id"),
                format!("{id} is configured twice"),
            ));
        }
    }
    match cli.sdk_app_id.take() {
        Some(id) => {
            let sdk_app_id: u64 = number(s::SDKAPPID.env, &id)?;
            let tokens = tokens(
                s::CALLBACK_TOKEN.env,
                cli.callback_token.take().into_iter().collect(),
                cli.callback_token_file.take().as_deref(),
            )?;
            let app = App {
                sdk_app_id,
                tokens,
                topics: defaults.clone(),
            };
            if apps.insert(sdk_app_id, app).is_some() {
                return Err(bad(
                    s::SDKAPPID.env,
                    format!("{sdk_app_id} is also in the config file's [[apps]]"),
                ));
            }
        }
        None if cli.callback_token.is_some() || cli.callback_token_file.is_some() => {
            return Err(bad(
                s::CALLBACK_TOKEN.env,
                format!(
                    "is set but {} is not: say which app the token is for",
                    s::SDKAPPID.env
                ),
            ));
        }
        None => {}
    }
    if apps.is_empty() {
        if !embedded {
            return Err(bad(
                s::SDKAPPID.env,
                format!(
                    "no app is configured: set {} (and {}) or [[apps]] in the config file",
                    s::SDKAPPID.env,
                    s::CALLBACK_TOKEN.env
                ),
            ));
        }
        apps.insert(
            DEMO_SDK_APP_ID,
            App {
                sdk_app_id: DEMO_SDK_APP_ID,
                tokens: vec![Secret::new(DEMO_TOKEN)],
                topics: defaults.clone(),
            },
        );
    }
    // Events never go to a dead-letter topic, whichever app owns it.
    for named in routes.named_topics() {
        if let Some(app) = apps.values().find(|a| &*a.topics.dead_letter == named) {
            return Err(bad(
                "routes",
                format!(
                    "topic {named:?} is the dead-letter topic of app {}",
                    app.sdk_app_id
                ),
            ));
        }
    }
    Ok(apps)
}

/// One `[[apps]]` entry of the file (the `i`th): its tokens and topics.
fn file_app(i: usize, a: FileApp, defaults: &AppTopics) -> Result<App, ConfigError> {
    let setting = format!("apps[{i}]");
    let mut inline: Vec<String> = a.token.into_iter().collect();
    inline.extend(a.tokens);
    let tokens = tokens(&setting, inline, a.token_file.as_deref())?;
    let own = |field: &str, name: Option<String>, default: &Arc<str>| match name {
        Some(t) => topic_name(&format!("{setting}.{field}"), t).map(Arc::from),
        None => Ok(default.clone()),
    };
    let topics = AppTopics {
        official_account: own("topic", a.topic, &defaults.official_account)?,
        general: own("general_topic", a.general_topic, &defaults.general)?,
        dead_letter: own("dlq_topic", a.dlq_topic, &defaults.dead_letter)?,
    };
    if topics.dead_letter == topics.official_account || topics.dead_letter == topics.general {
        return Err(bad(
            format!("{setting}.dlq_topic"),
            format!(
                "{:?} must differ from the app's other topics",
                topics.dead_letter
            ),
        ));
    }
    Ok(App {
        sdk_app_id: a.sdk_app_id,
        tokens,
        topics,
    })
}
