//! A body field by path, as routes name their key fields and the command
//! table its time fields: `Info.To_Account` is `To_Account` inside `Info`,
//! and a segment of digits indexes an array (`PairList.0.From_Account`).

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

    /// The value at this path, if there is one.
    pub fn value<'a>(&self, fields: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.0.split_first()?;
        let mut v = fields.get(first)?;
        for part in rest {
            v = match v {
                Value::Object(m) => m.get(part)?,
                Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// The field's value as a key: a non-empty string, or a number's digits.
    pub fn get(&self, fields: &Map<String, Value>) -> Option<String> {
        match self.value(fields)? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_reach_into_objects_and_arrays() {
        let body = json!({"Info": {"To_Account": "u1"}, "PairList": [{"From_Account": "a"}, {"From_Account": "b"}],
                          "N": 7, "Empty": "", "List": ["x"]});
        let fields = body.as_object().expect("object");
        let get = |p: &str| FieldPath::parse(p).expect("path").get(fields);
        assert_eq!(get("Info.To_Account").as_deref(), Some("u1"));
        assert_eq!(get("PairList.0.From_Account").as_deref(), Some("a"));
        assert_eq!(get("PairList.1.From_Account").as_deref(), Some("b"));
        assert_eq!(get("PairList.2.From_Account"), None);
        assert_eq!(get("PairList.x.From_Account"), None);
        assert_eq!(get("N").as_deref(), Some("7"));
        assert_eq!(get("Empty"), None);
        assert_eq!(get("List"), None);
        assert!(FieldPath::parse("Info..To").is_err());
    }
}
