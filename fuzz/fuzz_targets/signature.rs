//! Signature checking: never panics; a signature made with the token always
//! verifies at its own time, and never with another token.
#![no_main]

use std::time::Duration;

use chat_kafka_bridge::callback::{SignatureError, sign, verify, verify_any};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let token = parts.next().unwrap_or_default();
    let request_time = parts.next().unwrap_or_default();
    let given = parts.next().unwrap_or_default();
    let now: i64 = parts
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let skew = Duration::from_secs(60);

    // Arbitrary input: any answer but a panic.
    let _ = verify(token, Some(given), Some(request_time), now, skew);
    let _ = verify_any(&[token, given], Some(given), Some(request_time), now, skew);

    // A real signature at its own time verifies, upper- or lowercase.
    if let Ok(t) = request_time.parse::<i64>() {
        let s = sign(token, request_time);
        assert_eq!(verify(token, Some(&s), Some(request_time), t, skew), Ok(()));
        let upper = s.to_ascii_uppercase();
        assert_eq!(
            verify(token, Some(&upper), Some(request_time), t, skew),
            Ok(())
        );
        let other = format!("{token}x");
        assert_eq!(
            verify(&other, Some(&s), Some(request_time), t, skew),
            Err(SignatureError::Mismatch)
        );
    }
});
