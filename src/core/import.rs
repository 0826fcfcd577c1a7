//! Import: bytes from a file, a drop or the clipboard → events (`serde_json::Value`
//! objects). Owns format detection (one JSON object, a JSON array of objects, NDJSON,
//! HAR) and the per-item error reports.
//!
//! The rule throughout: nothing valid is dropped. A bad NDJSON line, a non-object array
//! item or a HAR entry without a JSON body is reported with where it is, and every good
//! item is kept, so a user importing 100 000 lines with three bad ones gets 99 997
//! events and three precise messages.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// How the input is read. [`import`] detects it; [`import_as`] forces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// One JSON object: one event.
    Object,
    /// A JSON array of objects: one event per item.
    Array,
    /// Newline-delimited JSON: one object per line, blank lines ignored.
    Ndjson,
    /// An HTTP Archive (`{"log":{"entries":[…]}}`): each request body is an event.
    Har,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Object => "JSON object",
            Self::Array => "JSON array",
            Self::Ndjson => "NDJSON",
            Self::Har => "HAR",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in the input a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The input as a whole (e.g. a top-level number, or a HAR without `log.entries`).
    Input,
    /// A position in a JSON document, 1-based.
    Position { line: usize, column: usize },
    /// An NDJSON line, 1-based like an editor's line numbers.
    Line(usize),
    /// A JSON array item, 0-based like a JSON path index.
    Item(usize),
    /// A HAR entry, 0-based, with its request method and URL (query and credentials
    /// removed, since HAR URLs often carry API keys).
    Entry {
        index: usize,
        method: String,
        url: String,
    },
}

/// One problem in the input. Displays as `line 3: expected value at column 1`,
/// `entry 2 (POST http://…/hook): request body is not a JSON object`, `item 4: not an
/// object`; with the file name first when it came from [`import_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The file, when the input came from one.
    pub file: Option<PathBuf>,
    pub location: Location,
    pub message: String,
}

impl ImportError {
    fn new(location: Location, message: impl Into<String>) -> Self {
        Self {
            file: None,
            location,
            message: message.into(),
        }
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        match &self.location {
            Location::Input => {}
            Location::Position { line, column } => write!(f, "line {line}, column {column}: ")?,
            Location::Line(line) => write!(f, "line {line}: ")?,
            Location::Item(index) => write!(f, "item {index}: ")?,
            Location::Entry { index, method, url } => {
                write!(f, "entry {index} ({method} {url}): ")?;
            }
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ImportError {}

/// The result of an import: the events kept, the problems found, and how the input was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// Every event that parsed, in input order. Each is a JSON object.
    pub events: Vec<Value>,
    pub errors: Vec<ImportError>,
    pub format: Format,
}

impl Imported {
    fn new(format: Format) -> Self {
        Self {
            events: Vec::new(),
            errors: Vec::new(),
            format,
        }
    }

    fn failed(format: Format, error: ImportError) -> Self {
        Self {
            events: Vec::new(),
            errors: vec![error],
            format,
        }
    }
}

/// Import with the format detected from the content.
///
/// Detection parses the whole document first, so a pretty-printed object is never
/// mistaken for NDJSON. Only when that fails, the input starts with `{`, and some line
/// is a complete JSON object on its own, is it read as NDJSON (so the good lines of an
/// NDJSON file with a broken first line are still kept). Otherwise the syntax error is
/// reported with its line and column.
pub fn import(bytes: &[u8]) -> Imported {
    let bytes = strip_bom(bytes);
    let Some(&first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Imported::new(Format::Ndjson);
    };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => from_array(items),
        Ok(value @ Value::Object(_)) => {
            if is_har(&value) {
                from_har(value)
            } else {
                let mut out = Imported::new(Format::Object);
                out.events.push(value);
                out
            }
        }
        Ok(other) => Imported::failed(
            Format::Object,
            ImportError::new(
                Location::Input,
                format!(
                    "expected a JSON object, an array of objects, NDJSON or HAR; found {}",
                    kind(&other)
                ),
            ),
        ),
        Err(e) => {
            if first == b'{' && looks_like_ndjson(bytes) {
                from_ndjson(bytes)
            } else {
                let format = if first == b'[' {
                    Format::Array
                } else {
                    Format::Object
                };
                Imported::failed(format, syntax_error(&e))
            }
        }
    }
}

/// Import reading the input as `format`, whatever it looks like.
pub fn import_as(bytes: &[u8], format: Format) -> Imported {
    let bytes = strip_bom(bytes);
    if format == Format::Ndjson {
        return from_ndjson(bytes);
    }
    let value = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        Err(e) => return Imported::failed(format, syntax_error(&e)),
    };
    match (format, value) {
        (Format::Object, value @ Value::Object(_)) => {
            let mut out = Imported::new(Format::Object);
            out.events.push(value);
            out
        }
        (Format::Array, Value::Array(items)) => from_array(items),
        (Format::Har, value) if is_har(&value) => from_har(value),
        (Format::Har, _) => Imported::failed(
            Format::Har,
            ImportError::new(
                Location::Input,
                "not a HAR file: expected {\"log\": {\"entries\": [...]}}",
            ),
        ),
        (format, other) => Imported::failed(
            format,
            ImportError::new(
                Location::Input,
                format!("expected a {format}, found {}", kind(&other)),
            ),
        ),
    }
}

/// Read `path` and import it (detected, or as `format`). Every error names the file.
pub fn import_file(path: &Path, format: Option<Format>) -> Result<Imported, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| ImportError {
        file: Some(path.to_owned()),
        location: Location::Input,
        message: format!("cannot read: {e}"),
    })?;
    let mut imported = match format {
        Some(f) => import_as(&bytes, f),
        None => import(&bytes),
    };
    for e in &mut imported.errors {
        e.file = Some(path.to_owned());
    }
    Ok(imported)
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message without its trailing " at line L column C".
fn bare_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => full,
    }
}

fn syntax_error(e: &serde_json::Error) -> ImportError {
    ImportError::new(
        Location::Position {
            line: e.line(),
            column: e.column(),
        },
        bare_message(e),
    )
}

/// Lines of `bytes` (split on `\n`; a trailing `\r` is JSON whitespace and parses away).
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
}

/// Some non-blank line is a complete JSON object by itself. Lines of a pretty-printed
/// document (`{`, `"a": 1,`) are not, so a broken pretty-printed object is reported as
/// broken JSON rather than as a hundred bad NDJSON lines. Stops at the first hit.
fn looks_like_ndjson(bytes: &[u8]) -> bool {
    lines(bytes).any(|(_, line)| {
        let trimmed = line.trim_ascii_start();
        trimmed.first() == Some(&b'{') && serde_json::from_slice::<Value>(line).is_ok()
    })
}

fn from_ndjson(bytes: &[u8]) -> Imported {
    let mut out = Imported::new(Format::Ndjson);
    for (number, line) in lines(bytes) {
        match serde_json::from_slice::<Value>(line) {
            Ok(value @ Value::Object(_)) => out.events.push(value),
            Ok(other) => out.errors.push(ImportError::new(
                Location::Line(number),
                format!("not an object (found {})", kind(&other)),
            )),
            Err(e) => out.errors.push(ImportError::new(
                Location::Line(number),
                format!("{} at column {}", bare_message(&e), e.column()),
            )),
        }
    }
    out
}

fn from_array(items: Vec<Value>) -> Imported {
    let mut out = Imported::new(Format::Array);
    out.events.reserve(items.len());
    for (index, item) in items.into_iter().enumerate() {
        if item.is_object() {
            out.events.push(item);
        } else {
            out.errors.push(ImportError::new(
                Location::Item(index),
                format!("not an object (found {})", kind(&item)),
            ));
        }
    }
    out
}

fn is_har(v: &Value) -> bool {
    v.get("log")
        .and_then(|log| log.get("entries"))
        .is_some_and(Value::is_array)
}

fn from_har(mut har: Value) -> Imported {
    let mut out = Imported::new(Format::Har);
    let entries = match har.pointer_mut("/log/entries").map(Value::take) {
        Some(Value::Array(entries)) => entries,
        _ => return out,
    };
    for (index, entry) in entries.into_iter().enumerate() {
        let request = entry.get("request");
        let method = request
            .and_then(|r| r.get("method"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let url = request
            .and_then(|r| r.get("url"))
            .and_then(Value::as_str)
            .map_or_else(|| "?".to_owned(), display_url);
        let location = Location::Entry { index, method, url };
        let text = request
            .and_then(|r| r.get("postData"))
            .and_then(|p| p.get("text"))
            .and_then(Value::as_str);
        let Some(text) = text else {
            out.errors
                .push(ImportError::new(location, "request has no body"));
            continue;
        };
        match serde_json::from_str::<Value>(text) {
            Ok(value @ Value::Object(_)) => out.events.push(value),
            Ok(other) => out.errors.push(ImportError::new(
                location,
                format!("request body is not a JSON object (found {})", kind(&other)),
            )),
            Err(e) => out.errors.push(ImportError::new(
                location,
                format!(
                    "request body is not a JSON object: {} at line {} column {}",
                    bare_message(&e),
                    e.line(),
                    e.column()
                ),
            )),
        }
    }
    out
}

/// A URL for messages: no userinfo, query or fragment (they carry keys and tokens),
/// at most 100 characters.
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
    fn display_url_drops_query_and_credentials() {
        assert_eq!(
            display_url("https://user:pw@example.com/hook?api_key=abc#x"),
            "https://example.com/hook"
        );
        assert_eq!(display_url("http://h/p"), "http://h/p");
    }

    #[test]
    fn bare_message_strips_the_position_suffix() {
        let e = serde_json::from_str::<Value>("{").expect_err("broken");
        assert_eq!(bare_message(&e), "EOF while parsing an object");
    }
}
