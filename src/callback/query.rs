//! The callback's query string: `SdkAppid`, `CallbackCommand`, `contenttype`,
//! `ClientIP`, `OptPlatform`, and `Sign`/`RequestTime` when a token is set.

use std::borrow::Cow;
use std::fmt;

use super::body::has_control;

/// The parameters the bridge uses, decoded. Names are matched
/// case-insensitively (`SdkAppid`, `SdkAppId` and `sdkappid` are one name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackQuery {
    /// `SdkAppid`: the app the callback claims to come from.
    pub sdk_app_id: u64,
    /// `CallbackCommand`.
    pub command: String,
    /// `Sign`, when present.
    pub sign: Option<String>,
    /// `RequestTime`, when present (Unix seconds, as sent).
    pub request_time: Option<String>,
    /// `ClientIP`, when present and non-empty.
    pub client_ip: Option<String>,
    /// `OptPlatform`, when present and non-empty.
    pub platform: Option<String>,
}

/// Why a query string is not a callback's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// No `SdkAppid` parameter.
    MissingAppId,
    /// `SdkAppid` is not a decimal number.
    InvalidAppId(String),
    /// No `CallbackCommand` parameter, or an empty one.
    MissingCommand,
    /// A parameter that decides identity or authenticity appears twice.
    Repeated(&'static str),
    /// A parameter that becomes an event field or a record header holds a
    /// control character, or is longer than any Tencent sends.
    Unusable(&'static str),
}

/// The longest `CallbackCommand`, `ClientIP` or `OptPlatform` accepted
/// (Tencent's are a few dozen bytes at most).
pub const MAX_QUERY_VALUE_BYTES: usize = 256;

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::MissingAppId => f.write_str("query parameter SdkAppid is missing"),
            QueryError::InvalidAppId(v) => {
                let shown: String = v.chars().take(32).collect();
                write!(f, "query parameter SdkAppid is not a number: {shown:?}")
            }
            QueryError::MissingCommand => {
                f.write_str("query parameter CallbackCommand is missing or empty")
            }
            QueryError::Repeated(name) => {
                write!(f, "query parameter {name} appears more than once")
            }
            QueryError::Unusable(name) => write!(
                f,
                "query parameter {name} holds a control character or is longer than {MAX_QUERY_VALUE_BYTES} bytes"
            ),
        }
    }
}

impl std::error::Error for QueryError {}

impl CallbackQuery {
    /// Parses a raw (still percent-encoded) query string.
    pub fn parse(query: &str) -> Result<CallbackQuery, QueryError> {
        let mut app_id = None;
        let mut command = None;
        let mut sign = None;
        let mut request_time = None;
        let mut client_ip = None;
        let mut platform = None;

        fn set_once(
            slot: &mut Option<String>,
            name: &'static str,
            value: Cow<'_, str>,
        ) -> Result<(), QueryError> {
            if slot.is_some() {
                return Err(QueryError::Repeated(name));
            }
            *slot = Some(value.into_owned());
            Ok(())
        }

        let mut take = |key: Cow<'_, str>, value: Cow<'_, str>| -> Result<(), QueryError> {
            if key.eq_ignore_ascii_case("SdkAppid") {
                set_once(&mut app_id, "SdkAppid", value)
            } else if key.eq_ignore_ascii_case("CallbackCommand") {
                set_once(&mut command, "CallbackCommand", value)
            } else if key.eq_ignore_ascii_case("Sign") {
                set_once(&mut sign, "Sign", value)
            } else if key.eq_ignore_ascii_case("RequestTime") {
                set_once(&mut request_time, "RequestTime", value)
            } else if key.eq_ignore_ascii_case("ClientIP") {
                client_ip.get_or_insert_with(|| value.into_owned());
                Ok(())
            } else if key.eq_ignore_ascii_case("OptPlatform") {
                platform.get_or_insert_with(|| value.into_owned());
                Ok(())
            } else {
                Ok(())
            }
        };
        if memchr::memchr2(b'%', b'+', query.as_bytes()).is_some() {
            for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                take(key, value)?;
            }
        } else {
            // Nothing to decode (Tencent's queries): the same pairs as
            // form_urlencoded yields, without its per-pair decoding.
            for (key, value) in plain_pairs(query) {
                take(Cow::Borrowed(key), Cow::Borrowed(value))?;
            }
        }

        let app_id = app_id.ok_or(QueryError::MissingAppId)?;
        let sdk_app_id = app_id
            .parse::<u64>()
            .map_err(|_| QueryError::InvalidAppId(app_id.clone()))?;
        let command = command
            .filter(|c| !c.is_empty())
            .ok_or(QueryError::MissingCommand)?;
        // These become event fields and record headers (issue 12, finding 11).
        for (name, value) in [
            ("CallbackCommand", Some(&command)),
            ("ClientIP", client_ip.as_ref()),
            ("OptPlatform", platform.as_ref()),
        ] {
            if value.is_some_and(|v| v.len() > MAX_QUERY_VALUE_BYTES || has_control(v)) {
                return Err(QueryError::Unusable(name));
            }
        }
        Ok(CallbackQuery {
            sdk_app_id,
            command,
            sign,
            request_time,
            client_ip: client_ip.filter(|v| !v.is_empty()),
            platform: platform.filter(|v| !v.is_empty()),
        })
    }
}

/// `form_urlencoded::parse`'s pairs for a query with no `%` and no `+`:
/// split at `&`, empty pieces skipped, name and value split at the first `=`.
fn plain_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, finding 11: values that become event fields and headers.
    #[test]
    fn control_characters_and_huge_values_are_refused() {
        for q in [
            "SdkAppid=1&CallbackCommand=A.B%0D%0AX",
            "SdkAppid=1&CallbackCommand=A.B&ClientIP=1.2.3.4%00",
            "SdkAppid=1&CallbackCommand=A.B&OptPlatform=%1B%5B31m",
        ] {
            assert!(
                matches!(CallbackQuery::parse(q), Err(QueryError::Unusable(_))),
                "{q}"
            );
        }
        let long = format!("SdkAppid=1&CallbackCommand={}", "A".repeat(300));
        assert_eq!(
            CallbackQuery::parse(&long),
            Err(QueryError::Unusable("CallbackCommand"))
        );
        assert!(CallbackQuery::parse("SdkAppid=1&CallbackCommand=A.B&OptPlatform=iOS").is_ok());
    }

    #[test]
    fn plain_pairs_match_form_urlencoded_without_escapes() {
        for q in [
            "",
            "&",
            "a=1&&b=2&",
            "SdkAppid=1&CallbackCommand=A.B&Sign=ab&RequestTime=1",
            "novalue&k=&=v&k2=a=b",
            "ClientIP=203.0.113.7&OptPlatform=RESTAPI&x=\u{4e2d}",
        ] {
            let ours: Vec<(String, String)> = plain_pairs(q)
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(ours, theirs, "{q:?}");
        }
    }

    #[test]
    fn parses_a_full_query() {
        let q = CallbackQuery::parse(
            "SdkAppid=1400000001&CallbackCommand=OfficialAccount.CallbackAfterOfficialAccountInfoChanged\
             &contenttype=json&ClientIP=203.0.113.7&OptPlatform=RESTAPI&Sign=abc&RequestTime=1732770000",
        )
        .expect("valid query");
        assert_eq!(
            q,
            CallbackQuery {
                sdk_app_id: 1400000001,
                command: "OfficialAccount.CallbackAfterOfficialAccountInfoChanged".into(),
                sign: Some("abc".into()),
                request_time: Some("1732770000".into()),
                client_ip: Some("203.0.113.7".into()),
                platform: Some("RESTAPI".into()),
            }
        );
    }

    #[test]
    fn names_are_case_insensitive_and_values_decoded() {
        let q = CallbackQuery::parse(
            "sdkappid=7&callbackcommand=State.StateChange&clientip=&optplatform=IOS&x=%20",
        )
        .expect("valid query");
        assert_eq!(q.sdk_app_id, 7);
        assert_eq!(q.command, "State.StateChange");
        assert_eq!(q.client_ip, None, "empty ClientIP counts as absent");
        assert_eq!(q.platform.as_deref(), Some("IOS"));
        let q = CallbackQuery::parse("SdkAppId=7&CallbackCommand=A%2EB").expect("valid query");
        assert_eq!(q.command, "A.B");
    }

    #[test]
    fn rejects_missing_bad_and_repeated_parameters() {
        assert_eq!(
            CallbackQuery::parse("CallbackCommand=A.B"),
            Err(QueryError::MissingAppId)
        );
        assert_eq!(
            CallbackQuery::parse("SdkAppid=14x&CallbackCommand=A.B"),
            Err(QueryError::InvalidAppId("14x".into()))
        );
        assert_eq!(
            CallbackQuery::parse("SdkAppid=1&CallbackCommand="),
            Err(QueryError::MissingCommand)
        );
        assert_eq!(
            CallbackQuery::parse("SdkAppid=1&sdkappid=2&CallbackCommand=A.B"),
            Err(QueryError::Repeated("SdkAppid"))
        );
        assert_eq!(
            CallbackQuery::parse("SdkAppid=1&CallbackCommand=A.B&Sign=a&SIGN=b"),
            Err(QueryError::Repeated("Sign"))
        );
        assert_eq!(CallbackQuery::parse(""), Err(QueryError::MissingAppId));
    }
}
