//! Webhook authentication: `Sign = hex(SHA-256(token + RequestTime))`.
//!
//! Not an HMAC, and the body is not covered: see `docs/security.md`.
//! The clock is a parameter, so the freshness window is tested without sleeping.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a callback's signature is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// `Sign` or `RequestTime` is absent although the app has a token.
    Missing,
    /// `Sign` is not 64 hex digits, or `RequestTime` is not a decimal number.
    Malformed,
    /// `RequestTime` is further from now than the allowed skew.
    Stale {
        /// Seconds between `RequestTime` and now (positive: in the past).
        age_secs: i64,
    },
    /// Well-formed and fresh, but not made with the app's token.
    Mismatch,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Missing => f.write_str("Sign or RequestTime is missing"),
            SignatureError::Malformed => {
                f.write_str("Sign is not 64 hex digits or RequestTime is not a number")
            }
            SignatureError::Stale { age_secs } => {
                write!(
                    f,
                    "RequestTime is {age_secs} s away from the bridge's clock"
                )
            }
            SignatureError::Mismatch => f.write_str("Sign does not match the app's token"),
        }
    }
}

impl std::error::Error for SignatureError {}

/// The signature Tencent sends for `token` at `request_time`: lowercase hex.
pub fn sign(token: &str, request_time: &str) -> String {
    hex::encode(digest(token.as_bytes(), request_time.as_bytes()))
}

fn digest(token: &[u8], request_time: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(token);
    h.update(request_time);
    h.finalize().into()
}

/// Checks `sign` (upper- or lowercase hex) against `token` and `request_time`,
/// and that `request_time` lies within `max_skew` of `now_unix_secs`.
///
/// Freshness is checked before the hash, so a stale request costs no SHA-256;
/// the comparison itself runs in constant time.
pub fn verify(
    token: &str,
    sign: Option<&str>,
    request_time: Option<&str>,
    now_unix_secs: i64,
    max_skew: Duration,
) -> Result<(), SignatureError> {
    verify_any(&[token], sign, request_time, now_unix_secs, max_skew)
}

/// As [`verify`], accepting a signature made with any of `tokens` (during a
/// token rotation the old and the new one are both valid).
pub fn verify_any<T: AsRef<str>>(
    tokens: &[T],
    sign: Option<&str>,
    request_time: Option<&str>,
    now_unix_secs: i64,
    max_skew: Duration,
) -> Result<(), SignatureError> {
    let (Some(sign), Some(request_time)) = (sign, request_time) else {
        return Err(SignatureError::Missing);
    };
    let mut given = [0u8; 32];
    hex::decode_to_slice(sign, &mut given).map_err(|_| SignatureError::Malformed)?;
    let sent_at: i64 = request_time
        .parse()
        .map_err(|_| SignatureError::Malformed)?;
    let age_secs = now_unix_secs.saturating_sub(sent_at);
    let max = i64::try_from(max_skew.as_secs()).unwrap_or(i64::MAX);
    if age_secs.unsigned_abs() > max.unsigned_abs() {
        return Err(SignatureError::Stale { age_secs });
    }
    // Every token is compared, so the time taken does not say which matched.
    let mut matched = subtle::Choice::from(0);
    for token in tokens {
        let expected = digest(token.as_ref().as_bytes(), request_time.as_bytes());
        matched |= expected.ct_eq(&given);
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tencent's published test vector, copied from `tests/fixtures/signature-vector.json`.
    const VECTOR: &str = include_str!("../../tests/fixtures/signature-vector.json");

    fn vector() -> (String, String, String) {
        let v: serde_json::Value = serde_json::from_str(VECTOR).expect("fixture is JSON");
        let s = |k: &str| v[k].as_str().expect("string field").to_owned();
        (s("token"), s("request_time"), s("sign"))
    }

    const SKEW: Duration = Duration::from_secs(60);

    #[test]
    fn tencent_test_vector() {
        let (token, time, expected) = vector();
        assert_eq!(sign(&token, &time), expected);
        let now: i64 = time.parse().expect("number");
        assert_eq!(
            verify(&token, Some(&expected), Some(&time), now, SKEW),
            Ok(())
        );
        let upper = expected.to_ascii_uppercase();
        assert_eq!(verify(&token, Some(&upper), Some(&time), now, SKEW), Ok(()));
    }

    #[test]
    fn wrong_token_or_time_mismatches() {
        let (token, time, expected) = vector();
        let now: i64 = time.parse().expect("number");
        assert_eq!(
            verify("xxxyyy", Some(&expected), Some(&time), now, SKEW),
            Err(SignatureError::Mismatch)
        );
        let other_time = (now + 1).to_string();
        assert_eq!(
            verify(&token, Some(&expected), Some(&other_time), now, SKEW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn skew_window_is_inclusive_on_both_sides() {
        let (token, _, _) = vector();
        let now = 1_700_000_000;
        for (offset, ok) in [
            (0, true),
            (60, true),
            (-60, true),
            (61, false),
            (-61, false),
        ] {
            let t = (now - offset).to_string();
            let s = sign(&token, &t);
            let got = verify(&token, Some(&s), Some(&t), now, SKEW);
            if ok {
                assert_eq!(got, Ok(()), "offset {offset}");
            } else {
                assert_eq!(
                    got,
                    Err(SignatureError::Stale { age_secs: offset }),
                    "offset {offset}"
                );
            }
        }
        // A zero skew accepts only the current second.
        let t = now.to_string();
        let s = sign(&token, &t);
        assert_eq!(
            verify(&token, Some(&s), Some(&t), now, Duration::ZERO),
            Ok(())
        );
        assert!(verify(&token, Some(&s), Some(&t), now + 1, Duration::ZERO).is_err());
    }

    #[test]
    fn any_of_several_tokens_may_sign() {
        let (token, time, expected) = vector();
        let now: i64 = time.parse().expect("number");
        let both = ["new-token", token.as_str()];
        assert_eq!(
            verify_any(&both, Some(&expected), Some(&time), now, SKEW),
            Ok(())
        );
        let new_sign = sign("new-token", &time);
        assert_eq!(
            verify_any(&both, Some(&new_sign), Some(&time), now, SKEW),
            Ok(())
        );
        assert_eq!(
            verify_any(&["a", "b"], Some(&expected), Some(&time), now, SKEW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_and_malformed() {
        let (token, time, expected) = vector();
        let now: i64 = time.parse().expect("number");
        assert_eq!(
            verify(&token, None, Some(&time), now, SKEW),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(&token, Some(&expected), None, now, SKEW),
            Err(SignatureError::Missing)
        );
        for bad in [
            "",
            "zz",
            &expected[..63],
            &format!("{expected}00"),
            &expected.replace('a', "g"),
        ] {
            assert_eq!(
                verify(&token, Some(bad), Some(&time), now, SKEW),
                Err(SignatureError::Malformed),
                "sign {bad:?}"
            );
        }
        assert_eq!(
            verify(&token, Some(&expected), Some("16698x"), now, SKEW),
            Err(SignatureError::Malformed)
        );
    }
}
