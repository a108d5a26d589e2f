//! `CallbackCommand` values: the eleven Official Account commands we
//! normalize, and the bounded set of families every command belongs to.

/// The family a `CallbackCommand` belongs to: its prefix before the first dot.
///
/// Used as a metric label, so the set is closed: anything unknown is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Family {
    /// `OfficialAccount.*`
    OfficialAccount,
    /// `Group.*`
    Group,
    /// `C2C.*`
    C2c,
    /// `State.*`
    State,
    /// `Profile.*`
    Profile,
    /// `Sns.*`
    Sns,
    /// `Follow.*`
    Follow,
    /// `Bot.*` and `Chatbot.*`
    Bot,
    /// `Push.*`
    Push,
    /// `Alert.*`
    Alert,
    /// `ContentCallback.*`
    ContentCallback,
    /// `Live.*` (TUILiveKit rooms)
    Live,
    /// `Mic.*` (TUILiveKit seats)
    Mic,
    /// Anything else.
    Other,
}

impl Family {
    /// Every family, in declaration order (`family as usize` indexes it).
    pub const ALL: [Family; 14] = [
        Family::OfficialAccount,
        Family::Group,
        Family::C2c,
        Family::State,
        Family::Profile,
        Family::Sns,
        Family::Follow,
        Family::Bot,
        Family::Push,
        Family::Alert,
        Family::ContentCallback,
        Family::Live,
        Family::Mic,
        Family::Other,
    ];

    /// The family of a command, from its prefix.
    pub fn of(command: &str) -> Family {
        let prefix = command.split_once('.').map_or(command, |(p, _)| p);
        match prefix {
            "OfficialAccount" => Family::OfficialAccount,
            "Group" => Family::Group,
            "C2C" => Family::C2c,
            "State" => Family::State,
            "Profile" => Family::Profile,
            "Sns" => Family::Sns,
            "Follow" => Family::Follow,
            "Bot" | "Chatbot" => Family::Bot,
            "Push" => Family::Push,
            "Alert" => Family::Alert,
            "ContentCallback" => Family::ContentCallback,
            "Live" => Family::Live,
            "Mic" => Family::Mic,
            _ => Family::Other,
        }
    }

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::OfficialAccount => "official_account",
            Family::Group => "group",
            Family::C2c => "c2c",
            Family::State => "state",
            Family::Profile => "profile",
            Family::Sns => "sns",
            Family::Follow => "follow",
            Family::Bot => "bot",
            Family::Push => "push",
            Family::Alert => "alert",
            Family::ContentCallback => "content_callback",
            Family::Live => "live",
            Family::Mic => "mic",
            Family::Other => "other",
        }
    }
}

/// The eleven Official Account (Official Channel) callback commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OfficialAccountCommand {
    /// `OfficialAccount.CallbackBeforeCreateOfficialAccount`
    BeforeCreate,
    /// `OfficialAccount.CallbackAfterCreateOfficialAccount`
    AfterCreate,
    /// `OfficialAccount.CallbackAfterOfficialAccountInfoChanged`
    AfterInfoChanged,
    /// `OfficialAccount.CallbackAfterOfficialAccountDestroyed`
    AfterDestroyed,
    /// `OfficialAccount.CallbackBeforeAddSubscriber`
    BeforeAddSubscriber,
    /// `OfficialAccount.CallbackAfterAddSubscriber`
    AfterAddSubscriber,
    /// `OfficialAccount.CallbackAfterOfficialAccountFull`
    AfterFull,
    /// `OfficialAccount.CallbackAfterDeleteSubscriber`
    AfterDeleteSubscriber,
    /// `OfficialAccount.CallbackBeforeSendMsg`
    BeforeSendMsg,
    /// `OfficialAccount.CallbackAfterSendMsg`
    AfterSendMsg,
    /// `OfficialAccount.CallbackAfterMsgWithDraw`
    AfterMsgWithdraw,
}

impl OfficialAccountCommand {
    /// All eleven, in the order of Tencent's documentation.
    pub const ALL: [OfficialAccountCommand; 11] = [
        Self::BeforeCreate,
        Self::AfterCreate,
        Self::AfterInfoChanged,
        Self::AfterDestroyed,
        Self::BeforeAddSubscriber,
        Self::AfterAddSubscriber,
        Self::AfterFull,
        Self::AfterDeleteSubscriber,
        Self::BeforeSendMsg,
        Self::AfterSendMsg,
        Self::AfterMsgWithdraw,
    ];

    /// Parses the exact `CallbackCommand` string (case-sensitive, as Tencent sends it).
    pub fn parse(command: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == command)
    }

    /// The `CallbackCommand` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BeforeCreate => "OfficialAccount.CallbackBeforeCreateOfficialAccount",
            Self::AfterCreate => "OfficialAccount.CallbackAfterCreateOfficialAccount",
            Self::AfterInfoChanged => "OfficialAccount.CallbackAfterOfficialAccountInfoChanged",
            Self::AfterDestroyed => "OfficialAccount.CallbackAfterOfficialAccountDestroyed",
            Self::BeforeAddSubscriber => "OfficialAccount.CallbackBeforeAddSubscriber",
            Self::AfterAddSubscriber => "OfficialAccount.CallbackAfterAddSubscriber",
            Self::AfterFull => "OfficialAccount.CallbackAfterOfficialAccountFull",
            Self::AfterDeleteSubscriber => "OfficialAccount.CallbackAfterDeleteSubscriber",
            Self::BeforeSendMsg => "OfficialAccount.CallbackBeforeSendMsg",
            Self::AfterSendMsg => "OfficialAccount.CallbackAfterSendMsg",
            Self::AfterMsgWithdraw => "OfficialAccount.CallbackAfterMsgWithDraw",
        }
    }
}

/// `true` for Tencent's "Before" callbacks, which ask for a decision (the
/// bridge always answers "allow"): those the command table marks, and for a
/// command it does not know, names containing `CallbackBefore` or starting
/// `Sns.CallbackPrev`.
pub fn is_before(command: &str) -> bool {
    match super::table().get(command) {
        Some(c) => c.kind == super::Kind::Before,
        None => command.contains("CallbackBefore") || command.starts_with("Sns.CallbackPrev"),
    }
}

/// `true` for callbacks whose answer Tencent reads as data (the command
/// table's `sync` rows, e.g. `Chatbot.OnC2CSignalMessage`): like a Before
/// callback, answered at once with Tencent's neutral answer.
pub fn is_sync(command: &str) -> bool {
    super::table()
        .get(command)
        .is_some_and(|c| c.kind == super::Kind::Sync)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_round_trips_and_is_official_account() {
        for c in OfficialAccountCommand::ALL {
            assert_eq!(OfficialAccountCommand::parse(c.as_str()), Some(c));
            assert_eq!(Family::of(c.as_str()), Family::OfficialAccount);
        }
        assert_eq!(OfficialAccountCommand::parse("OfficialAccount.Nope"), None);
    }

    #[test]
    fn before_commands_are_recognized() {
        assert!(is_before("Group.CallbackBeforeSendMsg"));
        assert!(is_before("Sns.CallbackPrevFriendAdd"));
        assert!(is_before("OfficialAccount.CallbackBeforeSendMsg"));
        assert!(!is_before("Group.CallbackAfterSendMsg"));
        assert!(!is_before("State.StateChange"));
        let official: Vec<_> = OfficialAccountCommand::ALL
            .into_iter()
            .filter(|c| is_before(c.as_str()))
            .collect();
        assert_eq!(
            official,
            [
                OfficialAccountCommand::BeforeCreate,
                OfficialAccountCommand::BeforeAddSubscriber,
                OfficialAccountCommand::BeforeSendMsg
            ]
        );
    }

    #[test]
    fn families_are_indexed_in_order() {
        for (i, f) in Family::ALL.into_iter().enumerate() {
            assert_eq!(f as usize, i);
        }
        assert_eq!(Family::of("Group.CallbackAfterSendMsg"), Family::Group);
        assert_eq!(Family::of("Chatbot.X"), Family::Bot);
        assert_eq!(Family::of("NoDot"), Family::Other);
        assert_eq!(Family::of(""), Family::Other);
    }
}
