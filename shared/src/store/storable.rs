//! The one boundary where text becomes storable: Postgres refuses U+0000 in `text` and in `jsonb`
//! (`\u0000`), so a web page, a program's output, a SQL result or the model's own words holding
//! one would make every write of its step fail, and the step fail forever. Every string the
//! store writes goes through here and has each NUL replaced by U+FFFD (the replacement
//! character), so content can never wedge a session. Nothing else in Rust's UTF-8 strings is
//! refused by a UTF-8 database. SQLite would keep a NUL; the embedded store scrubs the same way,
//! so a session reads the same on either back end.

use std::borrow::Cow;

use serde_json::Value;

/// What a NUL becomes.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// `text` with every NUL replaced; borrowed when there is none (the common case).
pub fn text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// `text` for an optional value.
pub fn opt_text(value: Option<&str>) -> Option<Cow<'_, str>> {
    value.map(text)
}

/// A JSON value whose strings and object keys hold no NUL; borrowed when it has none.
pub fn json(value: &Value) -> Cow<'_, Value> {
    if has_nul(value) {
        let mut owned = value.clone();
        scrub(&mut owned);
        Cow::Owned(owned)
    } else {
        Cow::Borrowed(value)
    }
}

/// Any serializable value as storable JSON.
pub fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<Value> {
    let mut value = serde_json::to_value(value)?;
    scrub(&mut value);
    Ok(value)
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn scrub(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) if map.keys().any(|k| k.contains('\0')) => {
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                scrub(&mut item);
                // Two keys differing only by NUL collapse into one: the later wins, as in a
                // JSON object written with a duplicate key.
                map.insert(key.replace('\0', "\u{FFFD}"), item);
            }
        }
        Value::Object(map) => map.values_mut().for_each(scrub),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character_everywhere() {
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(text("clean"), Cow::Borrowed(_)));
        let dirty = json!({"k\u{0}": ["x\u{0}", {"y": "\u{0}"}], "n": 1});
        assert_eq!(
            json(&dirty).into_owned(),
            json!({"k\u{FFFD}": ["x\u{FFFD}", {"y": "\u{FFFD}"}], "n": 1})
        );
        let clean = json!({"a": ["b"]});
        assert!(matches!(json(&clean), Cow::Borrowed(_)));
        assert_eq!(to_json(&"z\0").unwrap(), json!("z\u{FFFD}"));
    }
}
