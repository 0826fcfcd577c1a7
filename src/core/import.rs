//! Import: a JSON object, a JSON array, NDJSON or a HAR file → events. Bad items are
//! reported with where they are (line, item, entry) and every good one is kept. The
//! format is detected from the content; a pretty-printed object is never mistaken
//! for NDJSON because the whole document is tried first.
//!
//! Bytes only: reading a file is [`crate::store::import`]'s job.
//!
//! Events come out either parsed ([`import_bytes`]) or as compact JSON text
//! ([`import_text`]), which is how a 100 000-event replay stays small in memory.

use std::fmt;

use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use super::events::EventList;

/// Files larger than this are refused rather than read into memory.
pub const MAX_IMPORT_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Object,
    Array,
    Ndjson,
    Har,
}

/// Where a bad item is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// 1-based NDJSON line.
    Line(usize),
    /// 0-based index in a JSON array.
    Item(usize),
    /// 0-based HAR entry, with its method and URL.
    Entry(usize, String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ImportError {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::Item(n) => write!(f, "item {n}"),
            Self::Entry(n, what) => write!(f, "entry {n} ({what})"),
        }
    }
}

/// The whole input is unusable (unreadable, empty, not JSON at all).
#[derive(Debug, thiserror::Error)]
pub enum ImportFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// `size` is the file's size, or the cap plus one when it was found while reading.
    #[error("{path}: larger than {} (the import limit)", human_size(*cap))]
    TooLarge { path: String, size: u64, cap: u64 },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

#[derive(Debug, Default)]
pub struct Imported {
    pub format: Option<Format>,
    pub events: EventList,
    pub errors: Vec<ImportError>,
}

/// Import with events parsed (small sets, the UI).
pub fn import_bytes(bytes: &[u8], origin: &str) -> Result<Imported, ImportFileError> {
    import(bytes, origin, false)
}

/// Import with events kept as compact JSON text (large replays).
pub fn import_text(bytes: &[u8], origin: &str) -> Result<Imported, ImportFileError> {
    import(bytes, origin, true)
}

/// Why [`read_capped`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum CappedReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("more than the cap")]
    TooLarge,
}

/// Read everything, but never more than `cap` bytes: one byte past the cap is an error.
pub fn read_capped(reader: impl std::io::Read, cap: u64) -> Result<Vec<u8>, CappedReadError> {
    read_capped_sized(reader, cap, 0)
}

/// [`read_capped`] of about `size_hint` bytes (a regular file's length): the buffer
/// is allocated once instead of growing (and being copied) as it fills.
pub fn read_capped_sized(
    reader: impl std::io::Read,
    cap: u64,
    size_hint: u64,
) -> Result<Vec<u8>, CappedReadError> {
    use std::io::Read as _;
    let room = size_hint.min(cap).saturating_add(1);
    let mut bytes = Vec::with_capacity(usize::try_from(room).unwrap_or(0));
    reader.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(CappedReadError::TooLarge);
    }
    Ok(bytes)
}

/// The 1-based line and column (in bytes) of byte offset `at`.
pub fn line_column(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = &bytes[..at.min(bytes.len())];
    let mut lines = 0;
    let mut last = before;
    for l in before.split(|b| *b == b'\n') {
        lines += 1;
        last = l;
    }
    (lines, last.len() + 1)
}

/// A byte count for messages: whole MB when it is one, else bytes.
pub fn human_size(n: u64) -> String {
    const MB: u64 = 1024 * 1024;
    if n >= MB && n.is_multiple_of(MB) {
        format!("{} MB", n / MB)
    } else {
        format!("{n} bytes")
    }
}

/// Collects events in the requested representation.
struct Sink {
    text: bool,
    values: Vec<Value>,
    texts: Vec<Box<str>>,
    errors: Vec<ImportError>,
}

impl Sink {
    /// `json` is one JSON value's text; keep it if it is an object.
    fn push(&mut self, json: &str, at: Location) {
        let trimmed = json.trim_start();
        if !trimmed.starts_with('{') {
            // Valid JSON of another kind is "not an object"; anything else (`,`, `nope`)
            // is a syntax error and says so.
            if let Err(e) = serde_json::from_str::<IgnoredAny>(json) {
                self.errors.push(json_error(&e, at));
                return;
            }
            let what = match trimmed.as_bytes().first() {
                Some(b'[') => "an array",
                Some(b'"') => "a string",
                Some(b'n') => "null",
                Some(b't' | b'f') => "a boolean",
                _ => "a number",
            };
            self.errors.push(ImportError {
                location: at,
                message: format!("not a JSON object ({what})"),
            });
            return;
        }
        if self.text {
            match event_text(json, at) {
                Ok(text) => self.texts.push(text),
                Err(e) => self.errors.push(e),
            }
        } else {
            match serde_json::from_str::<Value>(json) {
                Ok(v) => self.values.push(v),
                Err(e) => self.errors.push(json_error(&e, at)),
            }
        }
    }
}

/// An object's canonical text (the same bytes whatever the input's spacing, numbers
/// as written), once it is known to be valid JSON — by the fast check, or by
/// `serde_json` when that check leaves it undecided (its error is the one reported).
fn event_text(json: &str, at: Location) -> Result<Box<str>, ImportError> {
    match super::jsoncheck::check(json) {
        Some(true) => Ok(json.into()),
        Some(false) => Ok(super::events::canonical(json)),
        None => match serde_json::from_str::<IgnoredAny>(json) {
            Ok(_) => Ok(super::events::canonical(json)),
            Err(e) => Err(json_error(&e, at)),
        },
    }
}

/// A parse error for one item. On an NDJSON line `serde_json`'s "at line 1" is noise
/// (`line 3: expected value at column 1` reads right); elsewhere its position is kept.
fn json_error(e: &serde_json::Error, at: Location) -> ImportError {
    let message = match at {
        Location::Line(_) => {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            match full.strip_suffix(&suffix) {
                Some(bare) => format!("{bare} at column {}", e.column()),
                None => full,
            }
        }
        _ => e.to_string(),
    };
    ImportError {
        location: at,
        message,
    }
}

/// Some non-blank line is a JSON object on its own. Lines of a pretty-printed document
/// (`{`, `"a": 1,`) are not, so a broken pretty-printed object stays one syntax error,
/// while NDJSON whose first line is bad still keeps all its good lines.
fn some_line_is_an_object(s: &str) -> bool {
    s.lines().any(|l| {
        let l = l.trim();
        l.starts_with('{') && serde_json::from_str::<IgnoredAny>(l).is_ok()
    })
}

pub(crate) fn import(bytes: &[u8], origin: &str, text: bool) -> Result<Imported, ImportFileError> {
    match std::str::from_utf8(bytes) {
        Ok(s) => import_str(s, origin, text),
        Err(e) => import_broken_utf8(bytes, origin, text, &e),
    }
}

/// Input that is not all UTF-8. NDJSON keeps its good lines and reports each bad one
/// by line and column; anything else (a document, binary data) is one error that says
/// where the first bad byte is.
fn import_broken_utf8(
    bytes: &[u8],
    origin: &str,
    text: bool,
    e: &std::str::Utf8Error,
) -> Result<Imported, ImportFileError> {
    let (line, column) = line_column(bytes, e.valid_up_to());
    let whole = || ImportFileError::Invalid {
        origin: origin.to_owned(),
        message: format!("not UTF-8 text (invalid byte at line {line}, column {column})"),
    };
    let mut clean = String::with_capacity(bytes.len());
    let mut bad = Vec::new();
    for (n, l) in bytes.split(|b| *b == b'\n').enumerate() {
        if n > 0 {
            clean.push('\n');
        }
        match std::str::from_utf8(l) {
            Ok(l) => clean.push_str(l),
            Err(e) => bad.push(ImportError {
                location: Location::Line(n + 1),
                message: format!(
                    "not UTF-8 text (invalid byte at column {})",
                    e.valid_up_to() + 1
                ),
            }),
        }
    }
    match import_str(&clean, origin, text) {
        Ok(mut imp) if imp.format == Some(Format::Ndjson) && !imp.events.is_empty() => {
            imp.errors.extend(bad);
            imp.errors.sort_by_key(|e| match e.location {
                Location::Line(n) => n,
                _ => 0,
            });
            Ok(imp)
        }
        _ => Err(whole()),
    }
}

/// The first non-blank line is a JSON value on its own (so the input is NDJSON when
/// the whole does not parse).
fn first_line_is_json(s: &str) -> bool {
    let first = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str::<IgnoredAny>(first).is_ok()
}

fn import_str(s: &str, origin: &str, text: bool) -> Result<Imported, ImportFileError> {
    let invalid = |message: String| ImportFileError::Invalid {
        origin: origin.to_owned(),
        message,
    };
    let s = s.strip_prefix('\u{feff}').unwrap_or(s);
    let body = s.trim_start();
    if body.is_empty() {
        return Err(invalid("no events: the input is empty".into()));
    }
    let mut sink = Sink {
        text,
        values: Vec::new(),
        texts: Vec::new(),
        errors: Vec::new(),
    };
    let format = if body.starts_with('[') {
        match serde_json::from_str::<Vec<&RawValue>>(s) {
            Ok(items) => {
                for (i, item) in items.iter().enumerate() {
                    sink.push(item.get(), Location::Item(i));
                }
                Format::Array
            }
            // `[1,2]` then objects: NDJSON whose first line is not an object.
            Err(_) if first_line_is_json(s) => {
                ndjson(s, &mut sink);
                Format::Ndjson
            }
            Err(e) => return Err(invalid(format!("not valid JSON: {e}"))),
        }
    } else {
        match serde_json::from_str::<&RawValue>(s) {
            Ok(raw) => {
                let v: Value = serde_json::from_str(raw.get())
                    .map_err(|e| invalid(format!("not valid JSON: {e}")))?;
                if let Some(entries) = v
                    .get("log")
                    .and_then(|l| l.get("entries"))
                    .and_then(Value::as_array)
                {
                    har(entries, &mut sink);
                    Format::Har
                } else {
                    sink.push(raw.get(), Location::Item(0));
                    Format::Object
                }
            }
            Err(whole) => {
                // NDJSON when the first non-blank line is a JSON value on its own, or
                // (first line broken) the input is objects and some line is one by itself.
                if !(first_line_is_json(s) || body.starts_with('{') && some_line_is_an_object(s)) {
                    return Err(invalid(format!("not valid JSON: {whole}")));
                }
                ndjson(s, &mut sink);
                Format::Ndjson
            }
        }
    };
    let events = if text {
        EventList::Text(sink.texts)
    } else {
        EventList::Values(sink.values)
    };
    Ok(Imported {
        format: Some(format),
        events,
        errors: sink.errors,
    })
}

/// One NDJSON line (without its `\n`; a trailing `\r` is dropped) as an event's
/// canonical text, or why it is not one, exactly as an NDJSON import says it.
/// `number` is the line's 1-based position.
pub fn ndjson_line(line: &str, number: usize) -> Result<Box<str>, ImportError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim_start().starts_with('{') {
        return event_text(line, Location::Line(number));
    }
    let mut sink = Sink {
        text: true,
        values: Vec::new(),
        texts: Vec::new(),
        errors: Vec::new(),
    };
    sink.push(line, Location::Line(number));
    match (sink.texts.pop(), sink.errors.pop()) {
        (Some(text), _) => Ok(text),
        (None, Some(e)) => Err(e),
        (None, None) => Err(ImportError {
            location: Location::Line(number),
            message: "not an event".into(),
        }),
    }
}

/// One event per non-blank line; a line's number is its 1-based position.
fn ndjson(s: &str, sink: &mut Sink) {
    for (n, line) in s.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !line.trim().is_empty() {
            sink.push(line, Location::Line(n + 1));
        }
    }
}

fn har(entries: &[Value], sink: &mut Sink) {
    for (i, e) in entries.iter().enumerate() {
        let req = &e["request"];
        let what = format!(
            "{} {}",
            req["method"].as_str().unwrap_or("?"),
            req["url"]
                .as_str()
                .map_or_else(|| "?".to_owned(), display_url)
        );
        match req
            .get("postData")
            .and_then(|p| p.get("text"))
            .and_then(Value::as_str)
        {
            Some(body) if !body.trim().is_empty() => sink.push(body, Location::Entry(i, what)),
            _ => sink.errors.push(ImportError {
                location: Location::Entry(i, what),
                message: "has no request body".into(),
            }),
        }
    }
}

/// A URL for messages: no userinfo, query or fragment (HAR URLs often carry API keys
/// and tokens there), at most 100 characters.
fn display_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    if shown.chars().count() > 100 {
        shown.chars().take(99).chain(std::iter::once('…')).collect()
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_url_drops_query_fragment_and_credentials() {
        assert_eq!(
            display_url("https://user:pw@example.com/hook?api_key=abc#x"),
            "https://example.com/hook"
        );
        assert_eq!(display_url("http://h/p"), "http://h/p");
    }
}
