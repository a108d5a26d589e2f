//! A body field by path, as routes name their key fields.

use std::fmt;

use serde_json::{Map, Value};

/// A body field by path: `Info.To_Account` is `To_Account` inside `Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// Parses a dotted path; every segment must be non-empty.
    pub fn parse(s: &str) -> Result<FieldPath, String> {
        let parts: Vec<String> = s.trim().split('.').map(str::to_owned).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!(
                "{s:?} is not a field path like GroupId or Info.To_Account"
            ));
        }
        Ok(FieldPath(parts))
    }

    /// The field's value as a key: a non-empty string, or a number's digits.
    pub fn get(&self, fields: &Map<String, Value>) -> Option<String> {
        let (first, rest) = self.0.split_first()?;
        let mut v = fields.get(first)?;
        for part in rest {
            v = v.as_object()?.get(part)?;
        }
        match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}
