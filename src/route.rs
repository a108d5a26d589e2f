//! Where each callback goes: the routing table from a command (or command
//! pattern) to a topic, the body field that becomes the Kafka key, and
//! whether to publish or only count.
//!
//! Configured routes (`[[routes]]` in the config file) are tried first, in
//! file order, then the built-in ones (one per command of the command
//! table, then [`Routes::fallbacks`]); the last built-in route matches every
//! command, so every callback has a route.
//! Documented, with every default, in `docs/configuration.md` ("Routing").

use std::fmt;
use std::sync::Arc;

use std::collections::HashMap;

use serde_json::{Map, Value};

pub use crate::callback::FieldPath;
use crate::callback::{Family, table};

/// The account fields tried, in order, when a route names no key field:
/// the "best account field present".
pub const AUTO_KEY: [&str; 7] = [
    "Official_Account",
    "From_Account",
    "To_Account",
    "Info.To_Account",
    "Operator_Account",
    "Member_Account",
    "Owner_Account",
];

/// Which commands a route matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this command (case-sensitive, as Tencent sends it).
    Exact(String),
    /// Every command that starts with this text (`Group.*` → `Group.`).
    Prefix(String),
}

impl Pattern {
    /// Parses `Name.Command`, `Family.*`, `Prefix*` or `*`.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("is empty".into());
        }
        match s.find('*') {
            None => Ok(Pattern::Exact(s.to_owned())),
            Some(i) if i == s.len() - 1 => Ok(Pattern::Prefix(s[..i].to_owned())),
            Some(_) => Err(format!(
                "{s:?}: '*' may only end the pattern (Group.* or *)"
            )),
        }
    }

    /// `true` when `command` matches.
    pub fn matches(&self, command: &str) -> bool {
        match self {
            Pattern::Exact(c) => c == command,
            Pattern::Prefix(p) => command.starts_with(p.as_str()),
        }
    }

    /// The pattern's literal text: what a configured route inherits its
    /// defaults by (the built-in route that matches this text).
    fn literal(&self) -> &str {
        match self {
            Pattern::Exact(c) | Pattern::Prefix(c) => c,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(c) => f.write_str(c),
            Pattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// The topic a route publishes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The app's Official Account topic (`BRIDGE_KAFKA_TOPIC`, or the app's `topic`).
    OfficialAccount,
    /// The app's general topic (`BRIDGE_KAFKA_GENERAL_TOPIC`, or the app's `general_topic`).
    General,
    /// This topic, for every app.
    Topic(Arc<str>),
}

/// What a route does with a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publish it as an event.
    Publish,
    /// Answer OK and count it (`chat_bridge_callbacks_total{outcome="counted"}`), no event.
    Count,
}

/// One row of the routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Commands it matches.
    pub pattern: Pattern,
    /// Where its events go.
    pub destination: Destination,
    /// Fields tried in order for the record key; none present: no key
    /// (the record goes to a random partition).
    pub key: Vec<FieldPath>,
    /// Publish or only count.
    pub action: Action,
    /// `built-in` or `routes[i]`, for logs and `--help`.
    pub origin: String,
}

impl Route {
    /// The record key for a body's fields (without `CallbackCommand` and `EventTime`).
    pub fn key_of(&self, fields: &Map<String, Value>) -> Option<String> {
        self.key.iter().find_map(|p| p.get(fields))
    }
}

/// A configured route as written in the file, before defaults are applied.
#[derive(Debug, Clone, Default)]
pub struct RouteSpec {
    /// `command`.
    pub command: String,
    /// `topic`; unset: the built-in route's destination.
    pub topic: Option<String>,
    /// `key`; unset: the built-in route's key fields.
    pub key: Option<Vec<String>>,
    /// `action`; unset: publish.
    pub action: Option<Action>,
}

/// The whole table: configured routes first, then one built-in route per
/// command Tencent documents (`callback/commands.toml`), then the built-in
/// family fallbacks, the last of which matches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    configured: Vec<Route>,
    /// The table's commands, by name (looked up, not scanned).
    commands: HashMap<String, Route>,
    fallbacks: Vec<Route>,
}

fn builtin(pattern: &str, destination: Destination, key: &[&str]) -> Route {
    Route {
        pattern: Pattern::parse(pattern).expect("built-in patterns parse"),
        destination,
        key: key
            .iter()
            .map(|k| FieldPath::parse(k).expect("built-in paths parse"))
            .collect(),
        action: Action::Publish,
        origin: "built-in".into(),
    }
}

impl Routes {
    /// One route per command of the command table: the Official Account
    /// topic for `OfficialAccount.*`, the general topic for the rest, keyed
    /// by the fields the table gives.
    fn commands() -> HashMap<String, Route> {
        table()
            .iter()
            .map(|c| {
                let destination = match c.family {
                    Family::OfficialAccount => Destination::OfficialAccount,
                    _ => Destination::General,
                };
                let route = Route {
                    pattern: Pattern::Exact(c.name.clone()),
                    destination,
                    key: c.key.clone(),
                    action: Action::Publish,
                    origin: "built-in".into(),
                };
                (c.name.clone(), route)
            })
            .collect()
    }

    /// The fallbacks for commands the table does not know, by family, in
    /// matching order; the last one matches everything.
    pub fn fallbacks() -> Vec<Route> {
        use Destination::{General, OfficialAccount};
        vec![
            builtin(
                "OfficialAccount.*",
                OfficialAccount,
                &["Official_Account", "Owner_Account"],
            ),
            builtin("Group.*", General, &["GroupId"]),
            builtin("C2C.*", General, &["From_Account"]),
            builtin(
                "Sns.*",
                General,
                &["From_Account", "PairList.0.From_Account"],
            ),
            builtin("State.*", General, &["Info.To_Account"]),
            builtin("Push.*", General, &["GroupID", "To_Account"]),
            builtin("Bot.*", General, &["GroupId", "From_Account"]),
            builtin("Live.*", General, &["RoomId", "RoomInfo.RoomId"]),
            builtin("Mic.*", General, &["RoomId"]),
            builtin(
                "ContentCallback.*",
                General,
                &["ContactItem.ToGroupId", "From_Account"],
            ),
            builtin("*", General, &AUTO_KEY),
        ]
    }

    /// The built-in route for `command`: its table row's, else its family's.
    fn builtin_for<'a>(
        commands: &'a HashMap<String, Route>,
        fallbacks: &'a [Route],
        command: &str,
    ) -> &'a Route {
        commands.get(command).unwrap_or_else(|| {
            fallbacks
                .iter()
                .find(|r| r.pattern.matches(command))
                .expect("the last built-in route matches everything")
        })
    }

    /// The table for `specs` (configured routes, in order) and the built-ins.
    /// A configured route without `topic` or `key` takes them from the
    /// built-in route that matches its pattern's text (`Group.*` → `Group.*`).
    /// Errors name the route (`routes[2].key`).
    pub fn new(specs: Vec<RouteSpec>) -> Result<Routes, (String, String)> {
        let commands = Self::commands();
        let fallbacks = Self::fallbacks();
        let mut configured = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            let at = |field: &str| format!("routes[{i}].{field}");
            let pattern = Pattern::parse(&spec.command).map_err(|e| (at("command"), e))?;
            let inherited = match &pattern {
                Pattern::Exact(c) => Self::builtin_for(&commands, &fallbacks, c),
                Pattern::Prefix(p) => fallbacks
                    .iter()
                    .find(|r| r.pattern.matches(p))
                    .expect("the last built-in route matches everything"),
            };
            let destination = match spec.topic {
                Some(t) => Destination::Topic(Arc::from(t)),
                None => inherited.destination.clone(),
            };
            let key = match spec.key {
                None => inherited.key.clone(),
                Some(paths) => paths
                    .iter()
                    .map(|p| FieldPath::parse(p))
                    .collect::<Result<_, _>>()
                    .map_err(|e| (at("key"), e))?,
            };
            configured.push(Route {
                pattern,
                destination,
                key,
                action: spec.action.unwrap_or(Action::Publish),
                origin: format!("routes[{i}]"),
            });
        }
        Ok(Routes {
            configured,
            commands,
            fallbacks,
        })
    }

    /// The route of `command`: the first configured route that matches,
    /// else the built-in one.
    pub fn find(&self, command: &str) -> &Route {
        self.configured
            .iter()
            .find(|r| r.pattern.matches(command))
            .unwrap_or_else(|| Self::builtin_for(&self.commands, &self.fallbacks, command))
    }

    /// Every route: the configured ones in matching order, then the
    /// built-in ones (the table's by name, then the fallbacks in order).
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        let mut commands: Vec<&Route> = self.commands.values().collect();
        commands.sort_by(|a, b| a.pattern.literal().cmp(b.pattern.literal()));
        self.configured
            .iter()
            .chain(commands)
            .chain(self.fallbacks.iter())
    }

    /// Topics named by routes (besides the apps' own topics).
    pub fn named_topics(&self) -> impl Iterator<Item = &str> {
        self.configured.iter().filter_map(|r| match &r.destination {
            Destination::Topic(t) if r.action == Action::Publish => Some(&**t),
            _ => None,
        })
    }
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new(Vec::new()).expect("no configured routes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn builtin_defaults_route_every_family_as_documented() {
        let routes = Routes::default();
        let cases = [
            (
                "OfficialAccount.CallbackAfterSendMsg",
                Destination::OfficialAccount,
                json!({"Official_Account": "@TOA#_a", "From_Account": "u"}),
                Some("@TOA#_a"),
            ),
            (
                "OfficialAccount.CallbackBeforeCreateOfficialAccount",
                Destination::OfficialAccount,
                json!({"Owner_Account": "owner"}),
                Some("owner"),
            ),
            (
                "Group.CallbackAfterSendMsg",
                Destination::General,
                json!({"GroupId": "@TGS#1", "From_Account": "u"}),
                Some("@TGS#1"),
            ),
            (
                "C2C.CallbackAfterSendMsg",
                Destination::General,
                json!({"From_Account": "u1", "To_Account": "u2"}),
                Some("u1"),
            ),
            (
                "State.StateChange",
                Destination::General,
                json!({"Info": {"To_Account": "u3"}}),
                Some("u3"),
            ),
            (
                "Push.OfflinePush",
                Destination::General,
                json!({"From_Account": "admin", "To_Account": "u4"}),
                Some("u4"),
            ),
            (
                "Brand.NewThing",
                Destination::General,
                json!({"Operator_Account": "op", "Member_Account": "m"}),
                Some("op"),
            ),
            (
                "Alert.RequestOverLimit",
                Destination::General,
                json!({"SdkAppid": 1}),
                None,
            ),
        ];
        for (command, dest, body, key) in cases {
            let route = routes.find(command);
            assert_eq!(route.destination, dest, "{command}");
            assert_eq!(route.action, Action::Publish, "{command}");
            assert_eq!(route.key_of(&fields(body)).as_deref(), key, "{command}");
        }
    }

    #[test]
    fn configured_routes_come_first_and_inherit_unset_fields() {
        let routes = Routes::new(vec![
            RouteSpec {
                command: "Group.CallbackBefore*".into(),
                action: Some(Action::Count),
                ..RouteSpec::default()
            },
            RouteSpec {
                command: "Group.*".into(),
                topic: Some("groups".into()),
                ..RouteSpec::default()
            },
            RouteSpec {
                command: "C2C.CallbackAfterSendMsg".into(),
                key: Some(vec!["To_Account".into()]),
                ..RouteSpec::default()
            },
        ])
        .expect("valid");
        let before = routes.find("Group.CallbackBeforeSendMsg");
        assert_eq!(before.action, Action::Count);
        assert_eq!(before.origin, "routes[0]");
        let group = routes.find("Group.CallbackAfterSendMsg");
        assert_eq!(group.destination, Destination::Topic("groups".into()));
        assert_eq!(group.key, vec![FieldPath::parse("GroupId").unwrap()]);
        let c2c = routes.find("C2C.CallbackAfterSendMsg");
        assert_eq!(c2c.destination, Destination::General);
        assert_eq!(
            c2c.key_of(&fields(json!({"From_Account": "a", "To_Account": "b"})))
                .as_deref(),
            Some("b")
        );
        // Other C2C commands keep the built-in route.
        assert_eq!(routes.find("C2C.CallbackBeforeSendMsg").origin, "built-in");
        assert_eq!(routes.named_topics().collect::<Vec<_>>(), vec!["groups"]);
    }

    #[test]
    fn bad_patterns_and_paths_name_the_route() {
        for (spec, field) in [
            (
                RouteSpec {
                    command: "Gro*up".into(),
                    ..RouteSpec::default()
                },
                "routes[0].command",
            ),
            (
                RouteSpec {
                    command: " ".into(),
                    ..RouteSpec::default()
                },
                "routes[0].command",
            ),
            (
                RouteSpec {
                    command: "Group.*".into(),
                    key: Some(vec!["Info..To".into()]),
                    ..RouteSpec::default()
                },
                "routes[0].key",
            ),
        ] {
            let (at, _) = Routes::new(vec![spec]).expect_err("invalid");
            assert_eq!(at, field);
        }
    }

    #[test]
    fn keys_are_strings_or_numbers_and_never_empty() {
        let p = FieldPath::parse("Info.To_Account").unwrap();
        assert_eq!(
            p.get(&fields(json!({"Info": {"To_Account": 42}})))
                .as_deref(),
            Some("42")
        );
        assert_eq!(p.get(&fields(json!({"Info": {"To_Account": ""}}))), None);
        assert_eq!(p.get(&fields(json!({"Info": "x"}))), None);
        assert_eq!(p.get(&fields(json!({"Info": {"To_Account": ["a"]}}))), None);
    }
}
