//! (destination, event) → the exact request. One pipeline serves the preview, cURL
//! export and delivery: compile a destination once ([`CompiledDestination::compile`]),
//! then [`prepare`](CompiledDestination::prepare) each event (trigger, URL, headers,
//! body), group prepared events into requests ([`super::batch`]), and
//! [`finish`](CompiledDestination::finish) each request with auth and signature at a
//! given time, so the runtime can re-sign every attempt.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::auth::{self, AuthError};
use super::batch::{self, Batch, BatchTrace, ClosedBy};
use super::events::EventList;
use super::mapping::{self, CompiledRow, MappingError};
use super::model::{
    Auth, Body, Destination, EVENT_TYPES, Envelope, MAX_BATCH_EVENTS, Method, Signing,
};
pub use super::prepared::{Prepared, PreparedBody, PreparedEvent, RenderCtx, Route};
use super::redact;
use super::secret::{Secret, Secrets};
use super::sign;
use super::template::{self, SecretScope, TemplateError, Templates, Tpl};
use indexmap::IndexMap;

/// The `User-Agent` Hookline sends unless a destination overrides it.
pub const USER_AGENT: &str = concat!("hookline/", env!("CARGO_PKG_VERSION"));
/// What previews print in place of a secret.
pub const REDACTED: &str = redact::REDACTED;

/// A destination setting that cannot work, found when compiling it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination \"{destination}\": {field}: {message}")]
pub struct ConfigError {
    pub destination: String,
    /// The field as written in messages: `url`, `headers.X-Key`, `mapping[2] (email)`.
    pub field: String,
    /// The same place as data, for an editor to put the error beside its field.
    pub path: FieldPath,
    pub message: String,
}

/// Where in a destination a setting is: its section (`url`, `headers`, `query`,
/// `trigger`, `body`, `mapping`, `auth`, `signing`, `batching`, `delivery`, `name`), a
/// key inside it (a header name, `token_url`, `envelope.template`), and for mapping
/// rows the 0-based row index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath {
    pub section: String,
    pub key: Option<String>,
    pub row: Option<usize>,
}

impl FieldPath {
    /// Read a field as [`ConfigError::field`] writes it.
    pub fn parse(field: &str) -> Self {
        let (head, rest) = field
            .split_once('.')
            .map_or((field, None), |(h, r)| (h, Some(r)));
        // `mapping[2] (email)` or `mapping[2].template`
        if let Some(tail) = head.strip_prefix("mapping[")
            && let Some((n, after)) = tail.split_once(']')
        {
            let key = rest
                .map(str::to_owned)
                .or_else(|| {
                    after
                        .trim()
                        .strip_prefix('(')
                        .and_then(|t| t.strip_suffix(')'))
                        .map(|_| String::new())
                })
                .filter(|k| !k.is_empty());
            return Self {
                section: "mapping".into(),
                key,
                row: n.parse().ok(),
            };
        }
        Self {
            section: head.to_owned(),
            key: rest.map(str::to_owned),
            row: None,
        }
    }
}

/// An event that could not be rendered. The other events still render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination \"{destination}\": {message}")]
pub struct RenderError {
    pub destination: String,
    pub message: String,
    /// What failed, as data.
    pub kind: RenderErrorKind,
}

/// What kind of problem stopped an event, for the app to point at the right place.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RenderErrorKind {
    #[default]
    Other,
    /// The event's text is not a JSON object.
    Event,
    /// A mapping row (0-based, as `mapping[i]` in the workspace file).
    Mapping {
        index: usize,
        target: String,
    },
    /// A template field, with the position in it when known.
    Template {
        field: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    MissingSecret {
        name: String,
    },
    /// The URL is invalid, or event data would move it to another origin.
    Url,
    /// A header name or value that cannot be sent.
    Header {
        name: String,
    },
    Auth,
    Signing,
    /// The event does not fit a batch (`max_bytes`).
    Batch,
}

/// The secret a "secret `x` is not set" (or "… is not loaded yet") message — ours,
/// from [`super::secret::SecretError`] — names.
fn missing_secret(message: &str) -> Option<String> {
    let start = message.find("secret `")? + "secret `".len();
    let len = message[start..].find('`')?;
    let rest = &message[start + len + 1..];
    (rest.starts_with(" is not set") || rest.starts_with(" is not loaded"))
        .then(|| message[start..start + len].to_owned())
}

/// The request exactly as it goes on the wire. `Debug` shows the redacted view.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Indices of the events this request carries.
    pub events: Vec<usize>,
    /// Stays the same across attempts and resumes (`webhook-id` for Standard Webhooks).
    pub idempotency_key: String,
    /// Why these events share (or do not share) this request; empty when not batching.
    pub batch_note: String,
    /// The same as data: group, sequence, size and what closed the batch.
    pub batch: Option<batch::BatchTrace>,
    /// The route before auth and signing (shared with its events, not copied): `sign`
    /// rebuilds `url` and `headers` from it per attempt.
    base: Arc<Route>,
    jwt_claims: Option<Map<String, Value>>,
    /// Secret values used anywhere in the request (for scrubbing echoed responses).
    secret_values: Vec<Secret>,
    /// Names of headers derived from secrets (auth, signature).
    sensitive_headers: Vec<String>,
    /// Query parameters auth adds whose value is a secret (an API key).
    auth_query: Vec<String>,
    /// Before auth: URL, headers and body with every secret-derived span hidden, when
    /// a template used a secret (see [`redact`]).
    shown: Option<Box<Shown>>,
}

/// The redacted view of a request's templated parts, before auth and signing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Shown {
    fn new(real: &RenderedRequest, alts: &[Option<RenderedRequest>; 2]) -> Self {
        let url_alts: Vec<Option<&str>> = alts
            .iter()
            .map(|a| a.as_ref().map(|a| a.base.url.as_str()))
            .collect();
        let headers = real
            .base
            .headers
            .iter()
            .enumerate()
            .map(|(i, (n, v))| {
                let hv: Vec<Option<&str>> = alts
                    .iter()
                    .map(|a| {
                        a.as_ref()
                            .and_then(|a| a.base.headers.get(i))
                            .filter(|(an, _)| an == n)
                            .map(|(_, av)| av.as_str())
                    })
                    .collect();
                (n.clone(), redact::by_position(v, &hv))
            })
            .collect();
        let body = real.body.as_ref().map(|b| {
            let ba: Vec<Option<&[u8]>> = alts
                .iter()
                .map(|a| a.as_ref().map(|a| a.body.as_deref().unwrap_or(b"")))
                .collect();
            redact::bytes_by_position(b, &ba)
        });
        Self {
            url: redact::by_position(&real.base.url, &url_alts),
            headers,
            body,
        }
    }
}

impl std::fmt::Debug for RenderedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.redacted();
        f.debug_struct("RenderedRequest")
            .field("method", &r.method)
            .field("url", &r.url)
            .field("headers", &r.headers)
            .field("body", &r.body.as_deref().map(String::from_utf8_lossy))
            .field("events", &r.events)
            .field("idempotency_key", &r.idempotency_key)
            .finish_non_exhaustive()
    }
}

impl RenderedRequest {
    /// A copy safe to show or store: every span derived from a secret, and every
    /// header derived from one, replaced by `***` — by position, so text that merely
    /// equals a short secret stays visible.
    #[must_use]
    pub fn redacted(&self) -> Self {
        let mut r = self.clone();
        r.url = self.redacted_url();
        r.headers = self.redacted_headers();
        if let Some(shown) = &self.shown {
            r.body.clone_from(&shown.body);
        }
        r.base = Arc::new(Route {
            method: self.method,
            url: String::new(),
            headers: Vec::new(),
        });
        r.jwt_claims = None;
        r.secret_values.clear();
        r.shown = None;
        r
    }

    /// The URL with secret-derived spans replaced (an API key in the query, a secret
    /// rendered into the path).
    pub fn redacted_url(&self) -> String {
        let base = match &self.shown {
            Some(s) => &s.url,
            None if self.auth_query.is_empty() => return self.url.clone(),
            None => &self.base.url,
        };
        if self.auth_query.is_empty() {
            return base.clone();
        }
        let q: Vec<(String, String)> = self
            .auth_query
            .iter()
            .map(|n| (n.clone(), REDACTED.to_owned()))
            .collect();
        finish_url(base, &q).unwrap_or_else(|_| REDACTED.to_owned())
    }

    /// The headers with secrets, and every header derived from one, replaced.
    pub fn redacted_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(name, value)| {
                let sensitive = self
                    .sensitive_headers
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(name));
                let v = if sensitive && value != auth::OAUTH2_PLACEHOLDER {
                    match value.split_once(' ') {
                        Some((scheme, _)) if matches!(scheme, "Basic" | "Bearer") => {
                            format!("{scheme} {REDACTED}")
                        }
                        _ => REDACTED.to_owned(),
                    }
                } else if let Some(shown) = &self.shown {
                    shown
                        .headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map_or_else(|| value.clone(), |(_, v)| v.clone())
                } else {
                    value.clone()
                };
                (name.clone(), v)
            })
            .collect()
    }

    /// Text from elsewhere (a response body, an error a server sent back) with every
    /// usual encoding of this request's secrets replaced.
    pub fn scrub<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        redact::scrub(text, &self.secret_values)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replace the `OAuth2` placeholder with a real token (the runtime calls this per attempt).
    pub fn set_bearer_token(&mut self, token: &Secret) {
        let v = format!("Bearer {}", token.expose());
        set_header(&mut self.headers, "Authorization", v);
        if !self
            .sensitive_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case("Authorization"))
        {
            self.sensitive_headers.push("Authorization".into());
        }
        push_secret(&mut self.secret_values, token);
    }
}

#[derive(Debug)]
enum CompiledBody {
    Event,
    EventUrlencoded { field: String },
    Mapped,
    Form,
    Template { tpl: Tpl, content_type: String },
}

/// A destination with every template, path and transform compiled once.
#[derive(Debug)]
pub struct CompiledDestination {
    pub dest: Destination,
    templates: Templates,
    url: Tpl,
    headers: Vec<(String, Tpl)>,
    query: Vec<(String, Tpl)>,
    condition: Option<Tpl>,
    rows: Vec<CompiledRow>,
    body: CompiledBody,
    jwt_claims: Vec<(String, Tpl)>,
    envelope: Option<batch::CompiledEnvelope>,
    uses_templates: bool,
    /// The checked URL when it is fixed text.
    static_url: Option<String>,
    /// Its origin (`https://host:port`), which event data may never change.
    static_origin: Option<String>,
    /// Some template calls `secret(...)`: renders are compared with sentinel renders.
    secret_templates: bool,
    /// The batch envelope template calls `secret(...)`.
    envelope_uses_secrets: bool,
    /// Secrets that answer every name with a sentinel (families 0 and 1).
    sentinels: [Secrets; 2],
    /// When nothing depends on the event (batched whole events, fixed URL and
    /// headers, no trigger): the prepared shape every event shares.
    passthrough: Option<Box<PreparedEvent>>,
    /// The passthrough is unbatched: an event's `messageId` (its idempotency key) and
    /// whether it has override keys are read from its text, keys unescaped as a parse
    /// sees them, without building the event.
    passthrough_reads_ids: bool,
}

/// What the unbatched passthrough needs from an event's text, read by a scan of its
/// top level (values are stepped over, not parsed): its `messageId`, and whether it
/// has a key the full path treats as an override (`header`, `appendPath`,
/// `fullPath`, whatever their value). `None` when the scan cannot tell exactly as a
/// parse would — an escape in a key or in the `messageId`, a repeated `messageId`,
/// anything but one object — so the event takes the full path.
fn top_level_ids(text: &str) -> Option<(Option<String>, bool)> {
    let b = text.as_bytes();
    let ws = |mut i: usize| {
        while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            i += 1;
        }
        i
    };
    let mut i = ws(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(i + 1);
    if b.get(i) == Some(&b'}') {
        return (ws(i + 1) == b.len()).then_some((None, false));
    }
    let (mut id, mut seen_id, mut overrides) = (None, false, false);
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = plain_string_end(b, i + 1)?;
        let key = &b[i + 1..key_end - 1];
        i = ws(key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let at = ws(i + 1);
        i = skip_json_value(b, at)?;
        match key {
            b"messageId" => {
                if seen_id {
                    return None;
                }
                seen_id = true;
                if b[at] == b'"' {
                    let end = plain_string_end(b, at + 1)?;
                    id = Some(text[at + 1..end - 1].to_owned());
                }
            }
            b"header" | b"appendPath" | b"fullPath" => overrides = true,
            _ => {}
        }
        i = ws(i);
        match b.get(i) {
            Some(b',') => i = ws(i + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    (ws(i + 1) == b.len()).then_some((id, overrides))
}

/// The index just past a string whose contents start at `i`, when it has no escape.
fn plain_string_end(b: &[u8], i: usize) -> Option<usize> {
    let off = memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
    (b[i + off] == b'"').then_some(i + off + 1)
}

/// `to` becomes a copy of `from`, reusing `to`'s strings (a tuple's `clone_from` would
/// allocate them anew).
fn copy_pairs(to: &mut Vec<(String, String)>, from: &[(String, String)]) {
    to.truncate(from.len());
    for (t, f) in to.iter_mut().zip(from) {
        t.0.clone_from(&f.0);
        t.1.clone_from(&f.1);
    }
    let have = to.len();
    to.extend_from_slice(&from[have..]);
}

/// The index just past the JSON value at `i` (the text is valid JSON: only the
/// value's extent is found). Strings are stepped over with `memchr`, objects and
/// arrays with SIMD masks ([`jsoncheck::container_end`]), escapes included.
fn skip_json_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => {
            let mut j = i + 1;
            loop {
                let at = j + memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
                if b[at] == b'"' {
                    return Some(at + 1);
                }
                j = at + 2;
            }
        }
        b'{' | b'[' => super::jsoncheck::container_end(b, i),
        _ => {
            let mut j = i;
            while let Some(c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// RFC 9110 token characters, for header names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Headers that frame the message or the connection. The HTTP client sets them from
/// the request itself; taken from configuration or event data they would let a
/// template or an event cut the body short or smuggle a second request.
pub const FRAMING_HEADERS: [&str; 9] = [
    "Content-Length",
    "Transfer-Encoding",
    "Host",
    "Connection",
    "Keep-Alive",
    "Upgrade",
    "TE",
    "Trailer",
    "Proxy-Connection",
];

/// Most header keys an event's `header` object may hold.
pub const MAX_EVENT_HEADERS: usize = 256;

/// `Some(message)` when `name` is a framing header, which is never configurable.
pub fn framing_header(name: &str) -> Option<String> {
    FRAMING_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
        .then(|| {
            format!(
                "\"{name}\" frames the request and is set by Hookline itself; it cannot be set by configuration or events"
            )
        })
}

/// Header values: no CR, LF or other control characters, ever.
pub fn check_header_value(name: &str, value: &str) -> Result<(), String> {
    if let Some(c) = value
        .chars()
        .find(|c| (c.is_control() && *c != '\t') || *c == '\u{7f}')
    {
        return Err(format!(
            "header \"{name}\" contains a control character ({c:?}); CR, LF and other non-visible characters are never sent"
        ));
    }
    Ok(())
}

fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: String) {
    if let Some(h) = headers
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        h.1 = value;
    } else {
        headers.push((name.to_owned(), value));
    }
}

impl CompiledDestination {
    /// Compile and check a destination; every problem is reported, not just the first.
    pub fn compile(dest: &Destination) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: String| {
            errors.push(ConfigError {
                destination: dest.name.clone(),
                field: field.to_owned(),
                path: FieldPath::parse(field),
                message,
            });
        };
        let mut templates = Templates::new();
        let tpl =
            |templates: &mut Templates,
             field: &str,
             src: &str,
             err: &mut dyn FnMut(&str, String)| match templates.add(field, src) {
                Ok(t) => t,
                Err(e) => {
                    err(field, format!("{}{}", e.position, e.message));
                    Tpl::Static(String::new())
                }
            };

        if dest.name.trim().is_empty() {
            err("name", "is empty".into());
        }
        let url = tpl(&mut templates, "url", &dest.url, &mut err);
        // URL parsers drop tabs and line breaks silently; the user should see them.
        if dest.url.chars().any(char::is_control) {
            err(
                "url",
                "contains a line break or another control character".into(),
            );
        }
        if authority_uses_event(&dest.url) {
            err(
                "url",
                "the scheme, host and port may not come from event data (event data may change only the path)".into(),
            );
        }
        if let Tpl::Static(u) = &url
            && let Err(m) = check_url(u)
        {
            err("url", m);
        }
        let mut headers = Vec::new();
        for (name, value) in &dest.headers {
            let field = format!("headers.{name}");
            if !is_token(name) {
                err(&field, format!("\"{name}\" is not a valid header name"));
            } else if let Some(m) = framing_header(name) {
                err(&field, m);
            }
            let t = tpl(&mut templates, &field, value, &mut err);
            if let Tpl::Static(v) = &t {
                check_header_value(name, v).unwrap_or_else(|m| err(&field, m));
            }
            headers.push((name.clone(), t));
        }
        let query = dest
            .query
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    tpl(&mut templates, &format!("query.{k}"), v, &mut err),
                )
            })
            .collect();
        for t in &dest.trigger.types {
            if !EVENT_TYPES.contains(&t.as_str()) {
                err(
                    "trigger.types",
                    format!(
                        "unknown event type \"{t}\" (expected one of {})",
                        EVENT_TYPES.join(", ")
                    ),
                );
            }
        }
        let condition = dest.trigger.expression.as_ref().and_then(|e| {
            match templates.condition("trigger.expression", e) {
                Ok(t) => Some(t),
                Err(e) => {
                    err("trigger.expression", format!("{}{}", e.position, e.message));
                    None
                }
            }
        });
        let mut rows = Vec::new();
        for (i, r) in dest.mapping.iter().enumerate() {
            match mapping::compile_row(i, r, &mut templates) {
                Ok(c) => rows.push(c),
                Err(MappingError {
                    index,
                    target,
                    message,
                }) => err(&format!("mapping[{index}] ({target})"), message),
            }
        }
        let body = match &dest.body {
            Body::Event => CompiledBody::Event,
            Body::EventUrlencoded { field } => CompiledBody::EventUrlencoded {
                field: field.clone(),
            },
            Body::Mapped => CompiledBody::Mapped,
            Body::Form => CompiledBody::Form,
            Body::Template {
                template,
                content_type,
            } => {
                check_header_value("Content-Type", content_type)
                    .unwrap_or_else(|m| err("body.content_type", m));
                CompiledBody::Template {
                    tpl: tpl(&mut templates, "body.template", template, &mut err),
                    content_type: content_type.clone(),
                }
            }
        };
        if matches!(dest.body, Body::Mapped | Body::Form) && dest.mapping.is_empty() {
            err(
                "mapping",
                format!(
                    "body mode \"{}\" needs at least one mapping row",
                    if matches!(dest.body, Body::Form) {
                        "form"
                    } else {
                        "mapped"
                    }
                ),
            );
        }
        let jwt_claims = match &dest.auth {
            Auth::Jwt { claims, .. } => claims
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        tpl(&mut templates, &format!("auth.claims.{k}"), v, &mut err),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        check_auth_and_signing(dest, &mut err);
        let envelope = match &dest.batching {
            None => None,
            Some(b) => {
                if b.max_events == 0 || b.max_events > MAX_BATCH_EVENTS {
                    err(
                        "batching.max_events",
                        format!(
                            "must be between 1 and {MAX_BATCH_EVENTS}, got {}",
                            b.max_events
                        ),
                    );
                }
                if b.max_bytes < 2 {
                    err("batching.max_bytes", "must be at least 2".into());
                }
                if !dest.method.has_body() {
                    err(
                        "batching",
                        format!(
                            "{} requests carry no body, so events cannot be batched",
                            dest.method.as_str()
                        ),
                    );
                }
                if !matches!(dest.body, Body::Event | Body::Mapped)
                    && !matches!(b.envelope, Envelope::Template(_))
                {
                    err("batching.envelope", "array and rows envelopes need body mode \"event\" or \"mapped\"; use a template envelope".into());
                }
                match batch::CompiledEnvelope::compile(&b.envelope, &mut templates) {
                    Ok(e) => Some(e),
                    Err((field, m)) => {
                        err(&field, m);
                        None
                    }
                }
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let uses_templates = matches!(url, Tpl::Compiled { .. })
            || headers
                .iter()
                .any(|(_, t)| matches!(t, Tpl::Compiled { .. }))
            || dest
                .query
                .values()
                .any(|v| v.contains("{{") || v.contains("{%"))
            || condition.is_some()
            || !jwt_claims.is_empty()
            || dest.mapping.iter().any(|r| r.template.is_some())
            || matches!(body, CompiledBody::Template { .. });
        let url_tpl_static = match &url {
            Tpl::Static(u) => Some(u.clone()),
            Tpl::Compiled { .. } => None,
        };
        let secret_templates = templates.uses_secrets();
        let mut compiled = Self {
            dest: dest.clone(),
            templates,
            url,
            headers,
            query,
            condition,
            rows,
            body,
            jwt_claims,
            envelope,
            uses_templates,
            static_url: match &url_tpl_static {
                Some(u) => check_url(u).ok().map(String::from),
                None => None,
            },
            static_origin: url_tpl_static
                .as_deref()
                .and_then(|u| check_url(u).ok())
                .map(|u| u.origin().ascii_serialization()),
            secret_templates,
            envelope_uses_secrets: matches!(&dest.batching, Some(b) if matches!(&b.envelope, Envelope::Template(t) if t.contains("secret"))),
            sentinels: [
                Secrets::new(Arc::new(redact::SentinelSecrets(0))),
                Secrets::new(Arc::new(redact::SentinelSecrets(1))),
            ],
            passthrough: None,
            passthrough_reads_ids: false,
        };
        let d = &compiled.dest;
        let unbatched = d.batching.is_none();
        if (unbatched
            || d.batching
                .as_ref()
                .is_some_and(|b| b.envelope == Envelope::Array))
            && d.body == Body::Event
            && d.method.has_body()
            && d.trigger == super::model::Trigger::default()
            && !compiled.uses_templates
        {
            let ctx = RenderCtx::new(Secrets::memory(&[]));
            if let Ok(Prepared::Ready(p)) = compiled.prepare(0, &Value::Object(Map::new()), &ctx) {
                compiled.passthrough = Some(p);
                compiled.passthrough_reads_ids = unbatched;
            }
        }
        Ok(compiled)
    }

    /// The destination's origin: the URL template rendered without event data.
    fn origin(&self, ctx: &RenderCtx) -> Result<String, RenderError> {
        if let Some(o) = &self.static_origin {
            return Ok(o.clone());
        }
        let scope = Arc::new(SecretScope {
            secrets: ctx.secrets.clone(),
            used: Mutex::default(),
        });
        let empty = Arc::new(Value::Object(Map::new()));
        let u = self
            .templates
            .render(&self.url, &template::context(&empty, &scope))
            .map_err(|e| self.tfail(&e))?;
        check_url(&u)
            .map(|u| u.origin().ascii_serialization())
            .map_err(|m| {
                self.fail(format!(
                    "url: without event data the URL is not valid ({m}); the scheme, host and port must not depend on event data"
                ))
            })
    }

    fn fail(&self, message: impl Into<String>) -> RenderError {
        self.fail_as(RenderErrorKind::Other, message)
    }

    fn fail_as(&self, kind: RenderErrorKind, message: impl Into<String>) -> RenderError {
        let message = message.into();
        let kind = match missing_secret(&message) {
            Some(name) => RenderErrorKind::MissingSecret { name },
            None => kind,
        };
        RenderError {
            destination: self.dest.name.clone(),
            message,
            kind,
        }
    }

    fn tfail(&self, e: &TemplateError) -> RenderError {
        let num = |label: &str| {
            e.position
                .split(label)
                .nth(1)
                .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
        };
        self.fail_as(
            RenderErrorKind::Template {
                field: e.field.clone(),
                line: num("line "),
                column: num("column "),
            },
            e.to_string(),
        )
    }

    /// Trigger, URL, headers and body for one event. Cheap and synchronous: the
    /// mapping designer calls it on every keystroke.
    pub fn prepare(
        &self,
        index: usize,
        event: &Value,
        ctx: &RenderCtx,
    ) -> Result<Prepared, RenderError> {
        self.prepare_inner(index, event, None, ctx, None)
    }

    /// [`prepare`](Self::prepare) for an event the caller already holds in an `Arc`
    /// (the runtime parses each event anyway): templates share it instead of a copy.
    pub fn prepare_shared(
        &self,
        index: usize,
        event: &Arc<Value>,
        ctx: &RenderCtx,
    ) -> Result<Prepared, RenderError> {
        self.prepare_inner(index, event, Some(event), ctx, None)
    }

    /// Event `index` of a list, as preview, export and delivery all take it: an event
    /// held as text keeps its exact (canonical) bytes as the body wherever the body is
    /// the whole event, so big numbers and escapes go out as written. `None` past the end.
    pub fn prepare_event(
        &self,
        events: &EventList,
        index: usize,
        ctx: &RenderCtx,
    ) -> Option<Result<Prepared, RenderError>> {
        match events {
            EventList::Values(v) => v.get(index).map(|e| self.prepare(index, e, ctx)),
            EventList::Text(t) => Some(self.prepare_event_text(index, t.get(index)?, ctx)),
        }
    }

    /// [`prepare_event`](Self::prepare_event) for one event held as canonical JSON
    /// text (an event list's, or one read from a stream) at position `index`.
    pub fn prepare_event_text(
        &self,
        index: usize,
        text: &str,
        ctx: &RenderCtx,
    ) -> Result<Prepared, RenderError> {
        if let Some(p) = self.prepare_text(index, text) {
            return Ok(Prepared::Ready(Box::new(p)));
        }
        match serde_json::from_str::<Value>(text) {
            Ok(v) => {
                let v = Arc::new(v);
                self.prepare_inner(index, &v, Some(&v), ctx, Some(text))
            }
            Err(e) => Err(self.fail(format!("event {index}: {e}"))),
        }
    }

    /// Render a whole list (see [`prepare_event`](Self::prepare_event)): trigger,
    /// batching, auth, signing. Events that fail are reported by index.
    pub fn render_list(&self, events: &EventList, ctx: &RenderCtx) -> RenderReport {
        self.render_with(events.len(), |i| self.prepare_event(events, i, ctx), ctx)
    }

    /// [`prepare_core`](Self::prepare_core), and when a template used a secret, the
    /// same with sentinel secrets, so the preview can hide exactly what derives from it.
    fn prepare_inner(
        &self,
        index: usize,
        event: &Value,
        owned: Option<&Arc<Value>>,
        ctx: &RenderCtx,
        text: Option<&str>,
    ) -> Result<Prepared, RenderError> {
        let mut used = false;
        let real = self.prepare_core(index, event, owned, ctx, text, &mut used);
        if !used {
            return real;
        }
        let alt = |k: usize| {
            let mut u = false;
            self.prepare_core(index, event, owned, &self.alt_ctx(ctx, k), text, &mut u)
        };
        match real {
            Ok(Prepared::Ready(mut p)) => {
                let ready = |r: Result<Prepared, RenderError>| match r {
                    Ok(Prepared::Ready(a)) => Some(*a),
                    _ => None,
                };
                p.alts = Some(Box::new([ready(alt(0)), ready(alt(1))]));
                Ok(Prepared::Ready(p))
            }
            Ok(skipped) => Ok(skipped),
            Err(e) => Err(Self::redact_error(e, &[alt(0).err(), alt(1).err()])),
        }
    }

    /// Every mapping row's outcome for one event (value, defaulted, missing, null or
    /// error) — all rows, not only up to the first error — with values derived from a
    /// secret hidden as previews hide them.
    pub fn trace_mapping(&self, event: &Value, ctx: &RenderCtx) -> Vec<mapping::RowTrace> {
        let shared = Arc::new(event.clone());
        let run = |ctx: &RenderCtx| -> (Vec<mapping::RowTrace>, bool) {
            let scope = Arc::new(SecretScope {
                secrets: ctx.secrets.clone(),
                used: Mutex::default(),
            });
            let mut c = || template::context(&shared, &scope);
            let t = mapping::trace(&self.rows, event, &self.templates, &mut c);
            let used = !scope
                .used
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_empty();
            (t, used)
        };
        let (mut real, used) = run(ctx);
        if !used {
            return real;
        }
        let (a, _) = run(&self.alt_ctx(ctx, 0));
        let (b, _) = run(&self.alt_ctx(ctx, 1));
        for (i, row) in real.iter_mut().enumerate() {
            let alts = [a.get(i).map(|r| &r.outcome), b.get(i).map(|r| &r.outcome)];
            row.outcome = redact_outcome(&row.outcome, &alts);
        }
        real
    }

    /// The same context with sentinel secrets of family `k` and the same clock.
    fn alt_ctx(&self, ctx: &RenderCtx, k: usize) -> RenderCtx {
        RenderCtx {
            secrets: self.sentinels[k].clone(),
            now: Some(ctx.now()),
        }
    }

    /// An error raised while a secret was in use: shown with every secret-derived span
    /// hidden (by comparing it with the sentinel renders' errors), or withheld when the
    /// sentinel renders did not fail the same way.
    fn redact_error(real: RenderError, alts: &[Option<RenderError>; 2]) -> RenderError {
        let msgs: Vec<Option<&str>> = alts
            .iter()
            .map(|a| a.as_ref().map(|e| e.message.as_str()))
            .collect();
        let message = if msgs.iter().all(Option::is_some) {
            redact::by_position(&real.message, &msgs)
        } else {
            // The sentinel renders did not fail the same way (a number transform on a
            // secret that is not a number, say): keep the message's shape, hide every
            // quoted value in it.
            redact::hide_quoted(&real.message)
        };
        RenderError { message, ..real }
    }

    fn prepare_core(
        &self,
        index: usize,
        event: &Value,
        owned: Option<&Arc<Value>>,
        ctx: &RenderCtx,
        text: Option<&str>,
        used: &mut bool,
    ) -> Result<Prepared, RenderError> {
        let d = &self.dest;
        let etype = event.get("type").and_then(Value::as_str).unwrap_or("");
        if !d.trigger.types.is_empty() && !d.trigger.types.iter().any(|t| t == etype) {
            return Ok(Prepared::Skipped(format!(
                "type \"{etype}\" is not in trigger.types"
            )));
        }
        if !d.trigger.events.is_empty() {
            let name = event.get("event").and_then(Value::as_str).unwrap_or("");
            if !d.trigger.events.iter().any(|e| e == name) {
                return Ok(Prepared::Skipped(format!(
                    "event \"{name}\" is not in trigger.events"
                )));
            }
        }
        // The event is shared with templates without copying it per template.
        let scope = self.uses_templates.then(|| {
            Arc::new(SecretScope {
                secrets: ctx.secrets.clone(),
                used: Mutex::default(),
            })
        });
        let shared = if self.uses_templates {
            Some(owned.cloned().unwrap_or_else(|| Arc::new(event.clone())))
        } else {
            None
        };
        // Whatever happens below, tell the caller whether a secret was read.
        let _used = Used(scope.as_ref(), used);
        let mut tctx_cache: Option<minijinja::Value> = None;
        let mut tctx = || -> minijinja::Value {
            tctx_cache
                .get_or_insert_with(|| match (&shared, &scope) {
                    (Some(e), Some(s)) => template::context(e, s),
                    _ => minijinja::Value::UNDEFINED,
                })
                .clone()
        };
        if let Some(c) = &self.condition
            && self
                .templates
                .render(c, &tctx())
                .map_err(|e| self.tfail(&e))?
                .trim()
                != "1"
        {
            return Ok(Prepared::Skipped("trigger.expression is false".into()));
        }

        let obj = event.as_object();
        let overrides = d.dynamic_overrides
            && obj.is_some_and(|o| {
                o.contains_key("header")
                    || o.contains_key("appendPath")
                    || o.contains_key("fullPath")
            });

        // URL: template, then appendPath / fullPath, then query. Event data may move
        // the path only: the origin (scheme, host, port) is the destination's.
        let mut url = self
            .templates
            .render(&self.url, &tctx())
            .map_err(|e| self.tfail(&e))?;
        let mut moved = false;
        if d.dynamic_overrides {
            if let Some(full) = event.get("fullPath").and_then(Value::as_str) {
                url = replace_path(&url, full)
                    .map_err(|m| self.fail_as(RenderErrorKind::Url, format!("fullPath: {m}")))?;
                moved = true;
            } else if let Some(append) = event.get("appendPath").and_then(Value::as_str) {
                url = append_path(&url, append)
                    .map_err(|m| self.fail_as(RenderErrorKind::Url, format!("appendPath: {m}")))?;
                moved = true;
            }
        }
        let mut query: Vec<(String, String)> = Vec::with_capacity(self.query.len());
        for (k, t) in &self.query {
            query.push((
                k.clone(),
                self.templates
                    .render(t, &tctx())
                    .map_err(|e| self.tfail(&e))?,
            ));
        }

        // Headers: defaults, configured, then the event's own.
        let mut headers: Vec<(String, String)> = Vec::with_capacity(4 + self.headers.len());
        headers.push(("User-Agent".into(), USER_AGENT.into()));
        for (name, t) in &self.headers {
            let v = self
                .templates
                .render(t, &tctx())
                .map_err(|e| self.tfail(&e))?;
            check_header_value(name, &v).map_err(|m| {
                self.fail_as(
                    RenderErrorKind::Header { name: name.clone() },
                    format!("headers.{name}: {m}"),
                )
            })?;
            set_header(&mut headers, name, v);
        }
        if d.dynamic_overrides
            && let Some(Value::Object(h)) = event.get("header")
        {
            if h.len() > MAX_EVENT_HEADERS {
                return Err(self.fail(format!(
                    "event header object has {} keys; at most {MAX_EVENT_HEADERS} are accepted",
                    h.len()
                )));
            }
            for (name, v) in h {
                if let Value::String(v) = v {
                    if !is_token(name) {
                        return Err(self.fail_as(
                            RenderErrorKind::Header { name: name.clone() },
                            format!("event header \"{name}\" is not a valid header name"),
                        ));
                    }
                    if let Some(m) = framing_header(name) {
                        return Err(self.fail_as(
                            RenderErrorKind::Header { name: name.clone() },
                            format!("event header {m}"),
                        ));
                    }
                    check_header_value(name, v).map_err(|m| {
                        self.fail_as(
                            RenderErrorKind::Header { name: name.clone() },
                            format!("event {m}"),
                        )
                    })?;
                    set_header(&mut headers, name, v.clone());
                }
            }
        }
        let url_origin = (moved || self.static_url.is_none()).then(|| self.origin(ctx));

        // Body.
        let mut mapped = || -> Result<Value, RenderError> {
            let mut c = || tctx();
            mapping::apply(&self.rows, event, &self.templates, &mut c).map_err(|e| {
                self.fail_as(
                    RenderErrorKind::Mapping {
                        index: e.index,
                        target: e.target.clone(),
                    },
                    e.to_string(),
                )
            })
        };
        let stripped = || -> std::borrow::Cow<'_, Value> {
            if overrides {
                let mut e = event.clone();
                if let Some(o) = e.as_object_mut() {
                    o.shift_remove("header");
                    o.shift_remove("appendPath");
                    o.shift_remove("fullPath");
                }
                std::borrow::Cow::Owned(e)
            } else {
                std::borrow::Cow::Borrowed(event)
            }
        };
        let has_body = d.method.has_body();
        // The whole event as JSON: its own text when we have it (exact bytes), else
        // serialized from the value.
        let event_json = || -> Vec<u8> {
            match text {
                Some(t) if overrides => {
                    strip_override_keys(t).unwrap_or_else(|| to_json(&stripped()))
                }
                Some(t) => t.as_bytes().to_vec(),
                None => to_json(&stripped()),
            }
        };
        let (body, content_type): (PreparedBody, Option<String>) = match &self.body {
            CompiledBody::Event if has_body => (
                PreparedBody::Json(event_json()),
                Some("application/json".into()),
            ),
            CompiledBody::Event => {
                flatten_into(&mut query, "", query_source(event));
                (PreparedBody::None, None)
            }
            CompiledBody::EventUrlencoded { field } => {
                let json = String::from_utf8(event_json()).unwrap_or_default();
                if has_body {
                    let form = form_urlencoded::Serializer::new(String::new())
                        .append_pair(field, &json)
                        .finish();
                    (
                        PreparedBody::Raw(form.into_bytes()),
                        Some("application/x-www-form-urlencoded".into()),
                    )
                } else {
                    query.push((field.clone(), json));
                    (PreparedBody::None, None)
                }
            }
            CompiledBody::Mapped if has_body => (
                PreparedBody::Json(to_json(&mapped()?)),
                Some("application/json".into()),
            ),
            CompiledBody::Mapped | CompiledBody::Form if !has_body => {
                flatten_into(&mut query, "", &mapped()?);
                (PreparedBody::None, None)
            }
            CompiledBody::Mapped => unreachable!("handled above"),
            CompiledBody::Form => {
                let mut pairs = Vec::new();
                flatten_into(&mut pairs, "", &mapped()?);
                let form = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish();
                (
                    PreparedBody::Raw(form.into_bytes()),
                    Some("application/x-www-form-urlencoded".into()),
                )
            }
            CompiledBody::Template { tpl, content_type } => {
                let text = self
                    .templates
                    .render(tpl, &tctx())
                    .map_err(|e| self.tfail(&e))?;
                (
                    PreparedBody::Raw(text.into_bytes()),
                    Some(content_type.clone()),
                )
            }
        };
        if let Some(ct) = content_type
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
        {
            headers.insert(1, ("Content-Type".into(), ct));
        }

        let url = match &self.static_url {
            // The common case: a fixed URL, nothing to append. Checked once, at compile time.
            Some(fixed) if query.is_empty() && !moved => fixed.clone(),
            _ => {
                let parsed = finish_url_parsed(&url, &query)
                    .map_err(|m| self.fail_as(RenderErrorKind::Url, format!("url: {m}")))?;
                if let Some(origin) = url_origin {
                    let origin = origin?;
                    let got = parsed.origin().ascii_serialization();
                    if got != origin {
                        return Err(self.fail_as(RenderErrorKind::Url, format!(
                            "url: event data would send this request to {got} instead of {origin}; event data may change only the path (scheme, host and port come from the destination)"
                        )));
                    }
                }
                parsed.into()
            }
        };
        let jwt_claims = if self.jwt_claims.is_empty() && !matches!(d.auth, Auth::Jwt { .. }) {
            None
        } else {
            let mut m = Map::new();
            for (k, t) in &self.jwt_claims {
                m.insert(
                    k.clone(),
                    Value::String(
                        self.templates
                            .render(t, &tctx())
                            .map_err(|e| self.tfail(&e))?,
                    ),
                );
            }
            Some(m)
        };
        let primary_key = self
            .envelope
            .as_ref()
            .map_or(Value::Null, |e| e.primary_key(event));
        let secret_values = scope.as_ref().map_or_else(Vec::new, |scope| {
            scope
                .used
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        });
        Ok(Prepared::Ready(Box::new(PreparedEvent {
            index,
            route: Arc::new(Route {
                method: d.method,
                url,
                headers,
            }),
            body,
            message_id: event
                .get("messageId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            primary_key,
            jwt_claims,
            secret_values,
            alts: None,
        })))
    }

    /// The fast path for an event held as JSON text: when nothing about the request
    /// depends on the event, its text is the body as is — no parse, no re-serialize.
    /// `None` means "use [`prepare`](Self::prepare)".
    pub fn prepare_text(&self, index: usize, text: &str) -> Option<PreparedEvent> {
        let t = self.passthrough.as_ref()?;
        let message_id = self.passes_through(text)?;
        Some(Self::passthrough_event(
            t,
            index,
            text.as_bytes().to_vec(),
            message_id,
        ))
    }

    /// [`prepare_event_text`](Self::prepare_event_text) of an event the caller owns
    /// (one read from a stream): on the fast path its text becomes the body, not copied.
    pub fn prepare_event_owned(
        &self,
        index: usize,
        text: Box<str>,
        ctx: &RenderCtx,
    ) -> Result<Prepared, RenderError> {
        if let Some(t) = &self.passthrough
            && let Some(message_id) = self.passes_through(&text)
        {
            let body = text.into_boxed_bytes().into_vec();
            return Ok(Prepared::Ready(Box::new(Self::passthrough_event(
                t, index, body, message_id,
            ))));
        }
        self.prepare_event_text(index, &text, ctx)
    }

    /// Whether an event's text is its body as is (see [`prepare_text`](Self::prepare_text)),
    /// and if so its `messageId` (read only when unbatched, where it is the idempotency
    /// key). `None`: take the full path.
    #[allow(clippy::option_option)] // "not on the fast path" vs "no messageId"
    fn passes_through(&self, text: &str) -> Option<Option<String>> {
        // Two SIMD searches per event (`Path"` ends both path keys), built once.
        static HEADER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"header\""));
        static PATH: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"Path\""));
        self.passthrough.as_ref()?;
        if self.passthrough_reads_ids {
            let (message_id, overrides) = top_level_ids(text)?;
            if overrides && self.dest.dynamic_overrides {
                return None;
            }
            return Some(message_id);
        }
        let overrides = self.dest.dynamic_overrides
            && (HEADER.find(text.as_bytes()).is_some()
                || PATH.find(text.as_bytes()).is_some_and(|_| {
                    text.contains("\"appendPath\"") || text.contains("\"fullPath\"")
                }));
        (!overrides).then_some(None)
    }

    fn passthrough_event(
        t: &PreparedEvent,
        index: usize,
        body: Vec<u8>,
        message_id: Option<String>,
    ) -> PreparedEvent {
        PreparedEvent {
            index,
            route: t.route.clone(),
            body: PreparedBody::Json(body),
            message_id,
            primary_key: Value::Null,
            jwt_claims: t.jwt_claims.clone(),
            secret_values: Vec::new(),
            alts: None,
        }
    }

    /// Turn a group of prepared events into a request: envelope, idempotency key, then
    /// auth and signature at `ctx.now()`.
    #[allow(clippy::needless_pass_by_value)] // takes the batch, as callers hand it over
    pub fn finish(&self, batch: Batch, ctx: &RenderCtx) -> Result<RenderedRequest, RenderError> {
        self.finish_ref(&batch, ctx)
    }

    /// [`finish`](Self::finish), measuring template envelopes: a rendered batch over
    /// `batching.max_bytes` is split in halves until each fits (the batcher can only
    /// estimate a template's size). Each result comes with the events it carries.
    pub fn finish_measured(
        &self,
        batch: Batch,
        ctx: &RenderCtx,
    ) -> Vec<(Vec<usize>, Result<RenderedRequest, RenderError>)> {
        let measured = matches!(self.envelope, Some(batch::CompiledEnvelope::Template(_)));
        let max = self
            .dest
            .batching
            .as_ref()
            .map_or(usize::MAX, |b| b.max_bytes);
        let mut out = Vec::new();
        self.finish_split(batch, ctx, measured, max, &mut out);
        out
    }

    fn finish_split(
        &self,
        batch: Batch,
        ctx: &RenderCtx,
        measured: bool,
        max: usize,
        out: &mut Vec<(Vec<usize>, Result<RenderedRequest, RenderError>)>,
    ) {
        let idx: Vec<usize> = batch.events.iter().map(|e| e.index).collect();
        let r = self.finish_ref(&batch, ctx);
        let size = r
            .as_ref()
            .ok()
            .and_then(|r| r.body.as_ref())
            .map_or(0, Vec::len);
        if !measured || size <= max || r.is_err() {
            out.push((idx, r));
            return;
        }
        if batch.events.len() == 1 {
            out.push((
                idx,
                Err(self.fail_as(
                    RenderErrorKind::Batch,
                    format!("event is {size} bytes in the envelope, more than batching.max_bytes ({max})"),
                )),
            ));
            return;
        }
        let Batch {
            mut events,
            note,
            trace,
        } = batch;
        let second = events.split_off(events.len() / 2);
        let halves = [
            (events, ClosedBy::MeasuredBytes),
            (
                second,
                trace.as_ref().map_or(ClosedBy::EndOfInput, |t| t.closed_by),
            ),
        ];
        for (events, closed_by) in halves {
            let trace = trace.clone().map(|t| BatchTrace {
                events: events.len(),
                closed_by,
                ..t
            });
            let note =
                format!("{note}; split: the rendered envelope measured over max_bytes ({max})");
            self.finish_split(
                Batch {
                    events,
                    note,
                    trace,
                },
                ctx,
                measured,
                max,
                out,
            );
        }
    }

    fn finish_ref(&self, batch: &Batch, ctx: &RenderCtx) -> Result<RenderedRequest, RenderError> {
        let secrets_in_play = self.secret_templates
            && (self.envelope_uses_secrets || batch.events.iter().any(|e| e.alts.is_some()));
        if !secrets_in_play {
            let mut req = self.assemble(batch, ctx)?;
            self.sign(&mut req, ctx)?;
            return Ok(req);
        }
        // The same request with sentinel secrets, to tell which spans derive from them.
        let alt = |k: usize| -> Result<RenderedRequest, Option<RenderError>> {
            let events = batch
                .events
                .iter()
                .map(|e| match &e.alts {
                    None => Some(e.clone()),
                    Some(a) => a[k].clone(),
                })
                .collect::<Option<Vec<_>>>()
                .ok_or(None)?;
            let b = Batch {
                events,
                note: String::new(),
                trace: None,
            };
            self.assemble(&b, &self.alt_ctx(ctx, k)).map_err(Some)
        };
        let alts = [alt(0), alt(1)];
        match self.assemble(batch, ctx) {
            Ok(mut req) => {
                let [a, b] = alts;
                req.shown = Some(Box::new(Shown::new(&req, &[a.ok(), b.ok()])));
                self.sign(&mut req, ctx)?;
                Ok(req)
            }
            Err(e) => {
                let [a, b] = alts;
                Err(Self::redact_error(
                    e,
                    &[a.err().flatten(), b.err().flatten()],
                ))
            }
        }
    }

    /// Envelope, idempotency key and the request's fields, before auth and signing.
    fn assemble(&self, batch: &Batch, ctx: &RenderCtx) -> Result<RenderedRequest, RenderError> {
        let Batch {
            events,
            note,
            trace,
        } = batch;
        let Some(first) = events.first() else {
            return Err(self.fail("internal: empty batch"));
        };
        let mut envelope_secrets = Vec::new();
        let body = match &self.envelope {
            Some(env) => Some(
                env.wrap(events, &self.templates, ctx, &mut envelope_secrets)
                    .map_err(|m| self.fail(m))?,
            ),
            None => match &first.body {
                PreparedBody::None => None,
                PreparedBody::Json(b) | PreparedBody::Raw(b) => Some(b.clone()),
            },
        };
        let idempotency_key = idempotency_key(events, body.as_deref(), self.envelope.is_some());
        let body_len = body.as_ref().map_or(0, Vec::len);
        let mut secret_values: Vec<Secret> = Vec::new();
        for s in events
            .iter()
            .flat_map(|e| e.secret_values.iter())
            .chain(&envelope_secrets)
        {
            push_secret(&mut secret_values, s);
        }
        Ok(RenderedRequest {
            method: first.route.method,
            url: first.route.url.clone(),
            headers: first.route.headers.clone(),
            body,
            events: events.iter().map(|e| e.index).collect(),
            idempotency_key,
            batch_note: note.clone(),
            // The size actually sent, not the batcher's estimate.
            batch: trace.clone().map(|t| BatchTrace {
                bytes: body_len,
                ..t
            }),
            base: first.route.clone(),
            jwt_claims: first.jwt_claims.clone(),
            secret_values,
            sensitive_headers: Vec::new(),
            auth_query: Vec::new(),
            shown: None,
        })
    }

    /// (Re)compute auth and signature headers for an attempt at `ctx.now()`. Timestamps,
    /// JWTs and signatures change; the idempotency key does not.
    pub fn sign(&self, req: &mut RenderedRequest, ctx: &RenderCtx) -> Result<(), RenderError> {
        if matches!(self.dest.auth, Auth::None) && matches!(self.dest.signing, Signing::None) {
            // Nothing is added: the request is its base again, copied into the
            // buffers it already has (every attempt of every request comes here).
            copy_pairs(&mut req.headers, &req.base.headers);
            req.url.clone_from(&req.base.url);
            req.auth_query.clear();
            req.sensitive_headers.clear();
            return Ok(());
        }
        let now = ctx.now();
        let mut headers = req.base.headers.clone();
        let mut url = req.base.url.clone();
        let mut sensitive = Vec::new();
        let parts = auth::apply(&self.dest.auth, &ctx.secrets, req.jwt_claims.as_ref(), now)
            .map_err(|e: AuthError| self.fail_as(RenderErrorKind::Auth, e.to_string()))?;
        for (n, v) in parts.headers {
            sensitive.push(n.clone());
            set_header(&mut headers, &n, v);
        }
        if !parts.query.is_empty() {
            url = finish_url(&url, &parts.query)
                .map_err(|m| self.fail_as(RenderErrorKind::Url, format!("url: {m}")))?;
        }
        req.auth_query = parts.query.iter().map(|(n, _)| n.clone()).collect();
        for s in &parts.used {
            push_secret(&mut req.secret_values, s);
        }
        let body: &[u8] = req.body.as_deref().unwrap_or(b"");
        match &self.dest.signing {
            Signing::None => {}
            Signing::Hmac {
                algorithm,
                encoding,
                header,
                prefix,
                secret,
            } => {
                let key = ctx.secrets.get(secret).map_err(|e| {
                    self.fail_as(RenderErrorKind::Signing, format!("signing.secret: {e}"))
                })?;
                set_header(
                    &mut headers,
                    header,
                    sign::hmac_signature(
                        *algorithm,
                        *encoding,
                        prefix,
                        key.expose().as_bytes(),
                        body,
                    ),
                );
                sensitive.push(header.clone());
                push_secret(&mut req.secret_values, &key);
            }
            Signing::StandardWebhooks { secret } => {
                let key = ctx.secrets.get(secret).map_err(|e| {
                    self.fail_as(RenderErrorKind::Signing, format!("signing.secret: {e}"))
                })?;
                let sig = sign::standard_webhooks_signature(
                    key.expose(),
                    &req.idempotency_key,
                    now,
                    body,
                )
                .map_err(|e| {
                    self.fail_as(RenderErrorKind::Signing, format!("signing.secret: {e}"))
                })?;
                set_header(&mut headers, "webhook-id", req.idempotency_key.clone());
                set_header(&mut headers, "webhook-timestamp", now.to_string());
                set_header(&mut headers, "webhook-signature", sig);
                sensitive.push("webhook-signature".into());
                push_secret(&mut req.secret_values, &key);
            }
        }
        req.headers = headers;
        req.url = url;
        req.sensitive_headers = sensitive;
        Ok(())
    }

    /// Render a list of events: trigger, batching, auth, signing. Events that fail are
    /// reported by index; the rest still render.
    pub fn render_all(&self, events: &[Value], ctx: &RenderCtx) -> RenderReport {
        self.render_with(
            events.len(),
            |i| events.get(i).map(|e| self.prepare(i, e, ctx)),
            ctx,
        )
    }

    fn render_with(
        &self,
        n: usize,
        prepare: impl FnMut(usize) -> Option<Result<Prepared, RenderError>>,
        ctx: &RenderCtx,
    ) -> RenderReport {
        let mut report = RenderReport::default();
        self.stream_with(n, prepare, ctx, |r| match r {
            Rendered::Request(r) => report.requests.push(*r),
            Rendered::Skipped(i, why) => report.skipped.push((i, why)),
            Rendered::Error(i, e) => report.errors.push((i, e)),
        });
        report.errors.sort_by_key(|(i, _)| *i);
        report
    }

    /// [`render_list`](Self::render_list), handing each result to `sink` as soon as it
    /// is known, so a million events never sit in memory as requests.
    pub fn render_stream(&self, events: &EventList, ctx: &RenderCtx, sink: impl FnMut(Rendered)) {
        self.stream_with(
            events.len(),
            |i| self.prepare_event(events, i, ctx),
            ctx,
            sink,
        );
    }

    fn stream_with(
        &self,
        n: usize,
        mut prepare: impl FnMut(usize) -> Option<Result<Prepared, RenderError>>,
        ctx: &RenderCtx,
        mut sink: impl FnMut(Rendered),
    ) {
        let mut batcher = batch::Batcher::new(self.dest.batching.as_ref());
        let push = |sink: &mut dyn FnMut(Rendered), b: Vec<Batch>| {
            for b in b {
                for (idx, r) in self.finish_measured(b, ctx) {
                    match r {
                        Ok(r) => sink(Rendered::Request(Box::new(r))),
                        Err(e) => {
                            for i in idx {
                                sink(Rendered::Error(i, e.clone()));
                            }
                        }
                    }
                }
            }
        };
        for i in 0..n {
            match prepare(i) {
                None => break,
                Some(Ok(Prepared::Skipped(reason))) => sink(Rendered::Skipped(i, reason)),
                Some(Ok(Prepared::Ready(p))) => match batcher.push(*p) {
                    Ok(done) => push(&mut sink, done),
                    Err((i, m)) => {
                        sink(Rendered::Error(i, self.fail_as(RenderErrorKind::Batch, m)));
                    }
                },
                Some(Err(e)) => sink(Rendered::Error(i, e)),
            }
        }
        push(&mut sink, batcher.finish());
    }
}

/// One result of rendering a list, in the order it becomes known.
#[derive(Debug)]
pub enum Rendered {
    Request(Box<RenderedRequest>),
    Skipped(usize, String),
    Error(usize, RenderError),
}

/// The event's text without its top-level `header`, `appendPath` and `fullPath` keys,
/// every other byte as it was. `None` if the text is not an object.
fn strip_override_keys(text: &str) -> Option<Vec<u8>> {
    let map: IndexMap<String, &serde_json::value::RawValue> = serde_json::from_str(text).ok()?;
    let mut out = Vec::with_capacity(text.len());
    out.push(b'{');
    let mut first = true;
    for (k, v) in &map {
        if matches!(k.as_str(), "header" | "appendPath" | "fullPath") {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(to_json(&Value::String(k.clone())).as_slice());
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    out.push(b'}');
    Some(out)
}

/// A row outcome with every secret-derived span hidden, by comparison with the
/// outcomes of the sentinel renders.
fn redact_outcome(
    real: &mapping::RowOutcome,
    alts: &[Option<&mapping::RowOutcome>; 2],
) -> mapping::RowOutcome {
    use mapping::RowOutcome as O;
    let text = |o: &O| match o {
        O::Value(Value::String(v)) | O::Defaulted(Value::String(v)) => Some(v.clone()),
        O::Value(v) | O::Defaulted(v) => Some(v.to_string()),
        O::Error(m) => Some(m.clone()),
        O::Missing | O::Null => None,
    };
    let same_kind = |o: &O| std::mem::discriminant(o) == std::mem::discriminant(real);
    let Some(real_text) = text(real) else {
        return real.clone();
    };
    let alt_texts: Vec<Option<String>> = alts
        .iter()
        .map(|a| a.filter(|o| same_kind(o)).and_then(text))
        .collect();
    let refs: Vec<Option<&str>> = alt_texts.iter().map(Option::as_deref).collect();
    match real {
        O::Error(_) if refs.iter().any(Option::is_none) => {
            O::Error(redact::hide_quoted(&real_text))
        }
        O::Error(_) => O::Error(redact::by_position(&real_text, &refs)),
        O::Value(v) | O::Defaulted(v) => {
            let shown = redact::by_position(&real_text, &refs);
            let v = if shown == real_text {
                v.clone()
            } else {
                Value::String(shown)
            };
            if matches!(real, O::Value(_)) {
                O::Value(v)
            } else {
                O::Defaulted(v)
            }
        }
        O::Missing | O::Null => real.clone(),
    }
}

/// On drop, sets the flag to whether the scope's templates read a secret.
struct Used<'a>(Option<&'a Arc<SecretScope>>, &'a mut bool);

impl Drop for Used<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            *self.1 = !s
                .used
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_empty();
        }
    }
}

fn push_secret(values: &mut Vec<Secret>, s: &Secret) {
    if !values.contains(s) {
        values.push(s.clone());
    }
}

#[derive(Debug, Default)]
pub struct RenderReport {
    pub requests: Vec<RenderedRequest>,
    pub skipped: Vec<(usize, String)>,
    pub errors: Vec<(usize, RenderError)>,
}

/// Compile and render one event: the convenience the preview of a single event uses.
pub fn render_request(
    dest: &Destination,
    event: &Value,
    ctx: &RenderCtx,
) -> Result<Option<RenderedRequest>, RenderError> {
    let compiled = CompiledDestination::compile(dest).map_err(|errs| RenderError {
        destination: dest.name.clone(),
        kind: RenderErrorKind::Other,
        message: errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    match compiled.prepare(0, event, ctx)? {
        Prepared::Skipped(_) => Ok(None),
        Prepared::Ready(p) => {
            let b = Batch {
                events: vec![*p],
                note: String::new(),
                trace: None,
            };
            compiled.finish(b, ctx).map(Some)
        }
    }
}

fn check_auth_and_signing(dest: &Destination, err: &mut dyn FnMut(&str, String)) {
    let nonempty = |field: &str, v: &str, err: &mut dyn FnMut(&str, String)| {
        if v.trim().is_empty() {
            err(field, "is empty".into());
        }
    };
    for (field, m) in dest.delivery.problems() {
        err(&format!("delivery.{field}"), m);
    }
    match &dest.auth {
        Auth::None => {}
        Auth::Basic {
            username,
            password_secret,
        } => {
            // RFC 7617: the user-id cannot contain a colon (the first one splits it off).
            if username.contains(':') {
                err(
                    "auth.username",
                    "contains \":\", which Basic auth cannot carry (the first colon ends the user name)".into(),
                );
            }
            if let Err(m) = super::model::check_prefix(username) {
                err("auth.username", m);
            }
            nonempty("auth.password_secret", password_secret, err);
        }
        Auth::Bearer { token_secret } => nonempty("auth.token_secret", token_secret, err),
        Auth::Header { name, value_secret } => {
            if !is_token(name) {
                err(
                    "auth.name",
                    format!("\"{name}\" is not a valid header name"),
                );
            }
            nonempty("auth.value_secret", value_secret, err);
        }
        Auth::ApiKey {
            header,
            value_secret,
            ..
        } => {
            if let Some(h) = header.as_deref().filter(|h| !is_token(h)) {
                err("auth.header", format!("\"{h}\" is not a valid header name"));
            }
            nonempty("auth.value_secret", value_secret, err);
        }
        Auth::Jwt {
            key_secret,
            header,
            prefix,
            ..
        } => {
            nonempty("auth.key_secret", key_secret, err);
            if let Err(m) = super::model::check_prefix(prefix) {
                err("auth.prefix", m);
            }
            if !is_token(header) {
                err(
                    "auth.header",
                    format!("\"{header}\" is not a valid header name"),
                );
            }
        }
        Auth::Oauth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            ..
        } => {
            if let Err(m) = check_url(token_url) {
                err("auth.token_url", m);
            }
            nonempty("auth.client_id", client_id, err);
            nonempty("auth.client_secret", client_secret, err);
        }
        Auth::Oauth2AuthorizationCode {
            authorize_url,
            token_url,
            client_id,
            refresh_token_secret,
            ..
        } => {
            if let Err(m) = check_url(authorize_url) {
                err("auth.authorize_url", m);
            }
            if let Err(m) = check_url(token_url) {
                err("auth.token_url", m);
            }
            nonempty("auth.client_id", client_id, err);
            nonempty("auth.refresh_token_secret", refresh_token_secret, err);
        }
    }
    match &dest.signing {
        Signing::None => {}
        Signing::Hmac {
            header,
            secret,
            prefix,
            ..
        } => {
            if let Err(m) = super::model::check_prefix(prefix) {
                err("signing.prefix", m);
            }
            if !is_token(header) {
                err(
                    "signing.header",
                    format!("\"{header}\" is not a valid header name"),
                );
            }
            nonempty("signing.secret", secret, err);
        }
        Signing::StandardWebhooks { secret } => nonempty("signing.secret", secret, err),
    }
}

/// Whether a URL template's scheme or authority (before the path) reads `event`.
fn authority_uses_event(src: &str) -> bool {
    // The authority ends at the first `/`, `?` or `#` after `://` outside a tag.
    let start = src.find("://").map_or(0, |i| i + 3);
    let (mut depth, mut end) = (0usize, src.len());
    let b = src.as_bytes();
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'{' if b.get(i + 1).is_some_and(|c| matches!(c, b'{' | b'%')) => {
                depth += 1;
                i += 1;
            }
            b'}' | b'%' if depth > 0 && b.get(i + 1) == Some(&b'}') => {
                depth -= 1;
                i += 1;
            }
            b'/' | b'?' | b'#' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
        i += 1;
    }
    src[..end].contains("event") && (src[..end].contains("{{") || src[..end].contains("{%"))
}

/// URLs must be absolute `http://` or `https://` after rendering.
pub fn check_url(u: &str) -> Result<url::Url, String> {
    let lower = u.trim_start().get(..8).unwrap_or(u).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(format!("\"{u}\" must start with http:// or https://"));
    }
    let parsed =
        url::Url::parse(u.trim()).map_err(|e| format!("\"{u}\" is not a valid URL: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("\"{u}\" has no host"));
    }
    Ok(parsed)
}

fn finish_url(u: &str, query: &[(String, String)]) -> Result<String, String> {
    finish_url_parsed(u, query).map(Into::into)
}

fn finish_url_parsed(u: &str, query: &[(String, String)]) -> Result<url::Url, String> {
    let mut parsed = check_url(u)?;
    if !query.is_empty() {
        parsed.query_pairs_mut().extend_pairs(query);
    }
    Ok(parsed)
}

/// `fullPath`: replaces the path (and query). An absolute URL is accepted only when it
/// names the destination's own origin; the caller checks that for every URL.
fn replace_path(url: &str, full: &str) -> Result<String, String> {
    let mut u = check_url(url)?;
    if full.contains("://") || full.starts_with("//") {
        let target = u
            .join(full)
            .map_err(|e| format!("\"{full}\" is not a valid URL: {e}"))?;
        let (want, got) = (
            u.origin().ascii_serialization(),
            target.origin().ascii_serialization(),
        );
        if want != got {
            return Err(format!(
                "would send this request to {got} instead of {want}; event data may change only the path"
            ));
        }
        return Ok(target.into());
    }
    let (path, query) = split_query(full);
    u.set_path(
        if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        }
        .as_str(),
    );
    u.set_query(query);
    Ok(u.into())
}

/// `appendPath`: appended to the URL's path (never to its host, even when the URL has
/// no path: `https://api.example.com` + `@evil.example/x` is `/@evil.example/x`).
fn append_path(url: &str, append: &str) -> Result<String, String> {
    let mut u = check_url(url)?;
    let (path, query) = split_query(append);
    let current = u.path().to_owned();
    let joined = match (current.ends_with('/'), path.starts_with('/')) {
        (true, true) => format!("{current}{}", &path[1..]),
        (false, false) if current.is_empty() => format!("/{path}"),
        _ => format!("{current}{path}"),
    };
    u.set_path(&joined);
    if let Some(q) = query {
        let merged = match u.query() {
            Some(existing) if !existing.is_empty() => format!("{existing}&{q}"),
            _ => q.to_owned(),
        };
        u.set_query(Some(&merged));
    }
    Ok(u.into())
}

/// `path?query#fragment` → (path, query); the fragment is never sent.
fn split_query(s: &str) -> (&str, Option<&str>) {
    let s = s.split('#').next().unwrap_or("");
    s.split_once('?').map_or((s, None), |(p, q)| (p, Some(q)))
}

/// The object GET/DELETE flatten into the query: `traits` for identify (falling back to
/// `context.traits`), `properties` for everything else.
fn query_source(event: &Value) -> &Value {
    fn pick(v: Option<&Value>) -> Option<&Value> {
        v.filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
    }
    if event.get("type").and_then(Value::as_str) == Some("identify") {
        pick(event.get("traits"))
            .or_else(|| pick(event.get("context").and_then(|c| c.get("traits"))))
            .unwrap_or(&Value::Null)
    } else {
        event.get("properties").unwrap_or(&Value::Null)
    }
}

/// `{"company":{"id":"A"}}` → `company.id=A`; arrays use indices (`items.0.sku`).
pub fn flatten_into(out: &mut Vec<(String, String)>, prefix: &str, v: &Value) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten_into(out, &key(k), v);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten_into(out, &key(&i.to_string()), v);
            }
        }
        _ if prefix.is_empty() => {}
        Value::Null => out.push((prefix.to_owned(), String::new())),
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn to_json(v: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail (keys are strings).
    serde_json::to_vec(v).unwrap_or_default()
}

/// The event's `messageId` for an unbatched request; for a batch (or an event with no
/// id) a digest of the exact body and the events' positions. It depends only on bytes
/// every path produces alike, so preview, export and delivery agree, and a resumed job
/// re-sends with the same key.
fn idempotency_key(events: &[PreparedEvent], body: Option<&[u8]>, batched: bool) -> String {
    if !batched
        && let [one] = events
        && let Some(id) = &one.message_id
    {
        return id.clone();
    }
    // BLAKE3: collision-resistant like SHA-256 (event data is untrusted: crafted events
    // must not make two batches share a key, or a receiver would drop one as a
    // duplicate), and several times faster over batch bodies of megabytes.
    let mut h = blake3::Hasher::new();
    h.update(body.unwrap_or(b""));
    for e in events {
        h.update(&e.index.to_le_bytes());
    }
    format!("hl_{}", &h.finalize().to_hex()[..32])
}
