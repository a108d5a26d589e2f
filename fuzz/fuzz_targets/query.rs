//! Query-string parsing: never panics, and what it accepts is consistent.
#![no_main]

use chat_kafka_bridge::callback::{CallbackQuery, QueryError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    match CallbackQuery::parse(query) {
        Ok(q) => {
            assert!(!q.command.is_empty());
            assert!(q.client_ip.as_deref() != Some(""));
            assert!(q.platform.as_deref() != Some(""));
        }
        Err(QueryError::InvalidAppId(v)) => assert!(v.parse::<u64>().is_err()),
        Err(_) => {}
    }
});
