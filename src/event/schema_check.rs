//! Test support: the JSON Schema of the v1 event
//! (`deploy/schemas/event-v1.schema.json`), compiled once, and the check that
//! every event the tests produce matches it. The integration tests use this
//! same file (`tests/it/contract.rs`), so it names nothing of this crate.

use std::sync::OnceLock;

use serde_json::Value;

/// The schema file, as shipped in the repository.
pub const SCHEMA: &str = include_str!("../../deploy/schemas/event-v1.schema.json");

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
        jsonschema::draft202012::new(&schema).expect("the schema is valid draft 2020-12")
    })
}

/// Every way `event` violates the schema, one line each; empty when valid.
pub fn violations(event: &Value) -> Vec<String> {
    validator()
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Panics, naming `what` and each violation, unless `event` matches.
pub fn assert_valid(event: &Value, what: &str) {
    let v = violations(event);
    assert!(
        v.is_empty(),
        "{what}: does not match deploy/schemas/event-v1.schema.json:\n  {}\n{event}",
        v.join("\n  ")
    );
}
