//! A list of events held compactly: as parsed values (small sets the UI edits), or as
//! their JSON text, parsed one at a time when rendered. 100 000 parsed ~600-byte
//! events take ~600 MB as `serde_json::Value`; as text they take ~60 MB.

use std::borrow::Cow;

use serde_json::Value;

#[derive(Debug, Clone)]
pub enum EventList {
    Values(Vec<Value>),
    /// Compact JSON text of each event (already validated as a JSON object).
    Text(Vec<Box<str>>),
}

impl Default for EventList {
    fn default() -> Self {
        Self::Values(Vec::new())
    }
}

impl EventList {
    pub fn len(&self) -> usize {
        match self {
            Self::Values(v) => v.len(),
            Self::Text(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Event `i`, parsed if stored as text. `None` past the end.
    pub fn get(&self, i: usize) -> Option<Result<Cow<'_, Value>, String>> {
        match self {
            Self::Values(v) => v.get(i).map(|e| Ok(Cow::Borrowed(e))),
            Self::Text(t) => t.get(i).map(|s| {
                serde_json::from_str(s)
                    .map(Cow::Owned)
                    .map_err(|e| format!("event {i}: {e}"))
            }),
        }
    }

    /// Event `i`'s JSON text, when stored as text.
    pub fn text(&self, i: usize) -> Option<&str> {
        match self {
            Self::Values(_) => None,
            Self::Text(t) => t.get(i).map(|s| &**s),
        }
    }

    /// Store values as compact text, releasing each value as it goes.
    pub fn compact(values: Vec<Value>) -> Self {
        Self::Text(
            values
                .into_iter()
                .map(|v| v.to_string().into_boxed_str())
                .collect(),
        )
    }
}

impl From<Vec<Value>> for EventList {
    fn from(v: Vec<Value>) -> Self {
        Self::Values(v)
    }
}

/// The canonical text of one JSON value: the input with every whitespace outside
/// strings removed, and nothing else changed — numbers keep their digits
/// (`123456789012345678901234567890` stays as written), strings their escapes. `json`
/// must already be valid JSON (the importer checks it first).
pub fn canonical(json: &str) -> Box<str> {
    let json = json.trim();
    match first_outside_space(json.as_bytes()) {
        None => json.into(),
        Some(at) => strip_from(json, at),
    }
}

/// Where the first whitespace outside a string is, skipping strings with `memchr`
/// (the common case: compact JSON, where this finds nothing and nothing is copied).
fn first_outside_space(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\n' | b'\r' | b'\t' => return Some(i),
            b'"' => i = string_end(b, i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index just past the string whose contents start at `i`.
fn string_end(b: &[u8], mut i: usize) -> usize {
    while let Some(off) = memchr::memchr2(b'"', b'\\', &b[i..]) {
        let at = i + off;
        if b[at] == b'"' {
            return at + 1;
        }
        i = at + 2; // skip the escaped character
        if i >= b.len() {
            return b.len();
        }
    }
    b.len()
}

/// `json` with every whitespace outside strings removed, from `at` on.
fn strip_from(json: &str, at: usize) -> Box<str> {
    let b = json.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..at]);
    let mut i = at;
    while i < b.len() {
        match b[i] {
            b' ' | b'\n' | b'\r' | b'\t' => i += 1,
            b'"' => {
                let end = string_end(b, i + 1);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    // Only ASCII whitespace outside strings was removed, so this stays UTF-8.
    String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        .into_boxed_str()
}

#[cfg(test)]
mod canonical_tests {
    use super::canonical;

    #[test]
    fn canonical_text_drops_whitespace_outside_strings_only() {
        assert_eq!(
            &*canonical(
                "{ \"a b\": [1, 2.50,\n 123456789012345678901234567890 ],\t\"c\": \"x \\\" y\\u00e9\" }"
            ),
            "{\"a b\":[1,2.50,123456789012345678901234567890],\"c\":\"x \\\" y\\u00e9\"}"
        );
        assert_eq!(&*canonical("{\"a\":1}"), "{\"a\":1}");
        // An escaped backslash right before the closing quote ends the string.
        assert_eq!(
            &*canonical(r#"{"a": "b\\", "c": " \" "}"#),
            r#"{"a":"b\\","c":" \" "}"#
        );
        assert_eq!(&*canonical(r#"{"a":"x y"}"#), r#"{"a":"x y"}"#);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_and_values_give_the_same_events() {
        let vals = vec![json!({"b": 1, "a": "x"}), json!({"type": "track"})];
        let text = EventList::compact(vals.clone());
        let list = EventList::from(vals);
        assert_eq!(text.len(), 2);
        for i in 0..2 {
            assert_eq!(
                text.get(i).map(|r| r.map(Cow::into_owned)),
                list.get(i).map(|r| r.map(Cow::into_owned))
            );
        }
        assert!(text.get(2).is_none());
    }
}
