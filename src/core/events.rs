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

/// One item of an event stream, in file order. Every non-blank line of an NDJSON
/// file is one position (`index`, 0-based), good or bad, so an index means the same
/// event on every read of the same file (what a resume relies on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// An event's canonical text (as [`canonical`] gives it).
    Event { index: usize, text: Box<str> },
    /// A line that is not an event; `message` says why and where (`line N: …`).
    Bad { index: usize, message: String },
}

impl StreamItem {
    pub fn index(&self) -> usize {
        match self {
            Self::Event { index, .. } | Self::Bad { index, .. } => *index,
        }
    }
}

/// Decodes NDJSON one line at a time into [`StreamItem`]s, holding nothing but two
/// counters: the caller reads the lines (a file, a pipe) and keeps memory bounded.
#[derive(Debug, Default)]
pub struct NdjsonStream {
    line: usize,
    index: usize,
}

impl NdjsonStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions handed out so far (events and bad lines).
    pub fn positions(&self) -> usize {
        self.index
    }

    /// Whether a line (without its `\n`) holds an event position: not blank as an
    /// NDJSON import sees it (whitespace only, Unicode whitespace included). A line
    /// that is not UTF-8 is a position (a bad one).
    pub fn is_position(line: &[u8]) -> bool {
        if line
            .iter()
            .any(|&b| b.is_ascii() && !char::from(b).is_whitespace())
        {
            return true;
        }
        if line.is_ascii() {
            return false;
        }
        std::str::from_utf8(line).map_or(true, |s| !s.trim().is_empty())
    }

    /// [`line`](Self::line) without decoding it: whether it is a position.
    pub fn skip(&mut self, bytes: &[u8]) -> bool {
        self.line += 1;
        let bytes = if self.line == 1 {
            bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
        } else {
            bytes
        };
        let position = Self::is_position(bytes);
        self.index += usize::from(position);
        position
    }

    /// The next line (without its `\n`); `None` for a blank line. A UTF-8 byte-order
    /// mark at the very start is dropped.
    pub fn line(&mut self, bytes: &[u8]) -> Option<StreamItem> {
        self.line += 1;
        let bytes = if self.line == 1 {
            bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
        } else {
            bytes
        };
        if !Self::is_position(bytes) {
            return None;
        }
        let index = self.index;
        self.index += 1;
        let number = self.line;
        Some(match std::str::from_utf8(bytes) {
            Ok(s) => match super::import::ndjson_line(s, number) {
                Ok(text) => StreamItem::Event { index, text },
                Err(e) => StreamItem::Bad {
                    index,
                    message: e.to_string(),
                },
            },
            Err(e) => StreamItem::Bad {
                index,
                message: format!(
                    "line {number}: not UTF-8 text (invalid byte at column {})",
                    e.valid_up_to() + 1
                ),
            },
        })
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

/// Where the first whitespace outside a string is (the common case: compact JSON,
/// where this finds nothing and nothing is copied). `b` is valid JSON, so a raw tab,
/// CR or LF can only be outside a string; without a backslash, a space is outside
/// one exactly when an even number of quotes precede it — both found with SIMD
/// searches. With a backslash, strings are stepped over one by one.
fn first_outside_space(b: &[u8]) -> Option<usize> {
    if memchr::memchr(b'\\', b).is_some() {
        return first_outside_space_escaped(b);
    }
    let control = memchr::memchr3(b'\t', b'\n', b'\r', b);
    let limit = control.unwrap_or(b.len());
    let (mut quotes, mut from) = (0usize, 0usize);
    for at in memchr::memchr_iter(b' ', &b[..limit]) {
        quotes += memchr::memchr_iter(b'"', &b[from..at]).count();
        from = at;
        if quotes % 2 == 0 {
            return Some(at);
        }
    }
    control
}

/// [`first_outside_space`] stepping over each string with `memchr`.
fn first_outside_space_escaped(b: &[u8]) -> Option<usize> {
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

    #[test]
    fn the_quote_parity_scan_finds_what_the_string_scan_finds() {
        for t in [
            r#"{"a":"x y","b" :1}"#,
            "{\"a\":\"x y\",\"b\":\t1}",
            "{\"a\":\"x y\",\r\n\"b\": [1 ,2]}",
            r#"{"a":"x y","b":"z w"}"#,
            r#"{"a": "x y"}"#,
            r#"{ "a":"x"}"#,
            r#"{"a":"x"} "#,
            r#"{"a":"","b":" ","c" : ""}"#,
            "{\"a\":\"\",\"b\":\" \"}\n",
        ] {
            assert_eq!(
                super::first_outside_space(t.as_bytes()),
                super::first_outside_space_escaped(t.as_bytes()),
                "{t:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_ndjson_stream_numbers_every_non_blank_line_and_gives_canonical_text() {
        let mut s = NdjsonStream::new();
        let lines: [&[u8]; 7] = [
            b"\xef\xbb\xbf{ \"a\": 1 }",
            b"",
            b"  \r",
            b"nope",
            b"{\"b\": [1, 2]}\r",
            b"\xe3\x80\x80",
            b"{\"c\": \"\xff\"}",
        ];
        let items: Vec<StreamItem> = lines.iter().filter_map(|l| s.line(l)).collect();
        assert_eq!(s.positions(), 4);
        assert_eq!(
            items[0],
            StreamItem::Event {
                index: 0,
                text: "{\"a\":1}".into()
            }
        );
        match &items[1] {
            StreamItem::Bad { index: 1, message } => {
                assert!(message.starts_with("line 4: "), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            items[2],
            StreamItem::Event {
                index: 2,
                text: "{\"b\":[1,2]}".into()
            }
        );
        // Line 6 is an ideographic space only: blank, as the importer sees it.
        assert_eq!(items.len(), 4);
        match &items[3] {
            StreamItem::Bad { index: 3, message } => {
                assert_eq!(message, "line 7: not UTF-8 text (invalid byte at column 8)");
            }
            other => panic!("{other:?}"),
        }
    }

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
