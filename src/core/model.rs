//! The workspace file's data model: workspace, destinations, mapping rows, auth,
//! signing, batching and delivery policy. This shape is a public contract (users
//! write it by hand and keep it in git), so field names here are the file's names.
//!
//! Structs deny unknown fields: a typo such as `"mehtod"` is an error that names
//! where it is, rather than a setting silently ignored.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The workspace file format version this build writes.
pub const WORKSPACE_VERSION: u32 = 1;

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference.
fn is_true(v: &bool) -> bool {
    *v
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    pub version: u32,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub destinations: Vec<Destination>,
    #[serde(default)]
    pub event_sets: Vec<EventSet>,
}

impl Default for Workspace {
    fn default() -> Self {
        Self {
            version: WORKSPACE_VERSION,
            name: String::new(),
            destinations: Vec::new(),
            event_sets: Vec::new(),
        }
    }
}

impl Workspace {
    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }
}

/// A named list of events: samples, imports or captures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSet {
    pub name: String,
    #[serde(default)]
    pub events: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    /// GET and DELETE carry no body: the reference connectors send the payload as query parameters.
    pub fn has_body(self) -> bool {
        !matches!(self, Self::Get | Self::Delete)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Stable id (a UUID), so history and cached tokens survive a rename. Files
    /// written before ids existed have none: loading assigns one (see
    /// `store::workspace::load_assigning_ids`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub name: String,
    /// A template; must render to an `http://` or `https://` URL.
    pub url: String,
    #[serde(default)]
    pub method: Method,
    /// Header name → value template. Order is kept as written.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// Query parameter name → value template, appended to the rendered URL.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub query: IndexMap<String, String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub trigger: Trigger,
    /// Honour an event's top-level `header`, `appendPath` and `fullPath` keys.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub dynamic_overrides: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub body: Body,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mapping: Vec<MappingRow>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub auth: Auth,
    #[serde(default, skip_serializing_if = "is_default")]
    pub signing: Signing,
    /// Absent or `null`: one request per event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub delivery: Delivery,
    /// Accept invalid TLS certificates. Off by default; an explicit per-destination exception.
    #[serde(default, skip_serializing_if = "is_default")]
    pub accept_invalid_certs: bool,
}

impl Destination {
    /// What history and the token cache key this destination by: its id, or its
    /// name when it has none yet.
    pub fn key(&self) -> &str {
        if self.id.is_empty() {
            &self.name
        } else {
            &self.id
        }
    }

    /// A minimal destination: POST the whole event to `url`.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            id: String::new(),
            name: name.into(),
            url: url.into(),
            method: Method::Post,
            headers: IndexMap::new(),
            query: IndexMap::new(),
            trigger: Trigger::default(),
            dynamic_overrides: true,
            body: Body::default(),
            mapping: Vec::new(),
            auth: Auth::None,
            signing: Signing::None,
            batching: None,
            delivery: Delivery::default(),
            accept_invalid_certs: false,
        }
    }
}

/// Which events a destination takes. Empty lists match everything; all given parts must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Event types: identify, track, page, screen, group, alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Event names (the `event` field of track events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// A template expression with `event` in scope, e.g. `event.properties.price > 50`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

pub const EVENT_TYPES: [&str; 6] = ["identify", "track", "page", "screen", "group", "alias"];

fn default_field() -> String {
    "data".to_owned()
}

fn default_content_type() -> String {
    "text/plain; charset=utf-8".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Body {
    /// The whole event as JSON (for GET/DELETE: flattened into query parameters).
    #[default]
    Event,
    /// The whole event as a URL-encoded JSON string in `field` (form body, or query parameter for GET/DELETE).
    EventUrlencoded {
        #[serde(default = "default_field")]
        field: String,
    },
    /// A JSON object built by the mapping.
    Mapped,
    /// The mapping as `application/x-www-form-urlencoded`.
    Form,
    /// A raw text template.
    Template {
        template: String,
        #[serde(default = "default_content_type")]
        content_type: String,
    },
}

/// One mapping row: `target ← source | literal | template`, then transforms, then default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRow {
    /// Dotted path in the output, with array indices: `user.id`, `items[0].sku`.
    pub target: String,
    /// RFC 9535 `JSONPath` into the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// `string`, `number`, `bool`, `lowercase`, `uppercase`, `trim`, `sha256`, `json`, `date:<format>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<String>,
    /// Used when the source is missing. `null` in the event is kept, not defaulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

/// The name of a secret in the keyring (or `HOOKLINE_SECRET_<NAME>`); never its value.
pub type SecretName = String;

fn default_authorization() -> String {
    "Authorization".to_owned()
}

fn default_bearer_prefix() -> String {
    "Bearer ".to_owned()
}

fn default_ttl() -> u64 {
    300
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password_secret: SecretName,
    },
    Bearer {
        token_secret: SecretName,
    },
    /// A raw header, `Authorization` by default, whose whole value is a secret.
    Header {
        #[serde(default = "default_authorization")]
        name: String,
        value_secret: SecretName,
    },
    /// An API key in a header (`X-Api-Key` when neither is given) or a query parameter.
    ApiKey {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query: Option<String>,
        value_secret: SecretName,
    },
    Jwt {
        algorithm: JwtAlgorithm,
        /// HMAC key for HS*, PEM private key for RS256/ES256.
        key_secret: SecretName,
        /// Claim name → value template; `iat` and `exp` are added.
        #[serde(default)]
        claims: IndexMap<String, String>,
        #[serde(default = "default_ttl")]
        ttl_s: u64,
        #[serde(default = "default_authorization")]
        header: String,
        #[serde(default = "default_bearer_prefix")]
        prefix: String,
    },
    Oauth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: SecretName,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        scopes: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audience: Option<String>,
        #[serde(default, skip_serializing_if = "is_default")]
        client_auth: ClientAuth,
    },
    Oauth2AuthorizationCode {
        authorize_url: String,
        token_url: String,
        client_id: String,
        /// Optional: public native clients have no secret (RFC 8252).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret: Option<SecretName>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        scopes: Vec<String>,
        #[serde(default, skip_serializing_if = "is_default")]
        client_auth: ClientAuth,
        /// Keyring entry where the refresh token is kept.
        refresh_token_secret: SecretName,
        /// Loopback port for the redirect; 0 picks an ephemeral one.
        #[serde(default, skip_serializing_if = "is_default")]
        redirect_port: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// RFC 6749 §2.3.1: HTTP Basic with form-urlencoded id and secret.
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    ES256,
}

fn default_signature_header() -> String {
    "X-Signature".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Signing {
    #[default]
    None,
    /// HMAC over the exact body bytes sent.
    Hmac {
        #[serde(default)]
        algorithm: HmacAlgorithm,
        #[serde(default)]
        encoding: SignatureEncoding,
        #[serde(default = "default_signature_header")]
        header: String,
        /// Prepended to the signature, e.g. `sha256=`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        prefix: String,
        secret: SecretName,
    },
    /// <https://www.standardwebhooks.com/>: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`.
    StandardWebhooks { secret: SecretName },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    #[default]
    Sha1,
    Sha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

pub const DEFAULT_BATCH_EVENTS: usize = 1000;
pub const MAX_BATCH_EVENTS: usize = 4000;
pub const DEFAULT_BATCH_BYTES: usize = 5_000_000;

fn default_batch_events() -> usize {
    DEFAULT_BATCH_EVENTS
}

fn default_batch_bytes() -> usize {
    DEFAULT_BATCH_BYTES
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    #[serde(default = "default_batch_events")]
    pub max_events: usize,
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: usize,
    #[serde(default)]
    pub envelope: Envelope,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_events: DEFAULT_BATCH_EVENTS,
            max_bytes: DEFAULT_BATCH_BYTES,
            envelope: Envelope::Array,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// `[body, body, …]`
    #[default]
    Array,
    /// `{"sync_mode", "rows": [{"data", "operation", "primary_key"}]}`
    Rows(RowsEnvelope),
    /// A template with `bodies` (the per-event bodies) and `events` in scope.
    Template(String),
}

fn default_sync_mode() -> String {
    "insert".to_owned()
}

fn default_operation() -> String {
    "added".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowsEnvelope {
    #[serde(default = "default_sync_mode")]
    pub sync_mode: String,
    #[serde(default = "default_operation")]
    pub operation: String,
    /// `JSONPath` into each event for the row's `primary_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    pub timeout_ms: u64,
    pub concurrency: usize,
    pub max_attempts: u32,
    /// Requests per second for a job; absent = unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    /// First retry delay ceiling; doubles each attempt (full jitter picks in `[0, ceiling]`).
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Cap on a server's `Retry-After`.
    pub retry_after_cap_s: u64,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            timeout_ms: 30_000,
            concurrency: 8,
            max_attempts: 5,
            rate_limit: None,
            backoff_initial_ms: 500,
            backoff_max_ms: 60_000,
            retry_after_cap_s: 300,
        }
    }
}

/// Bounds on delivery settings. Outside them a setting is a configuration error (and
/// a command-line override a usage error) instead of a panic or a job that never
/// ends: `1 / rate` must be a representable wait, a semaphore has a maximum size.
pub mod limits {
    /// Requests per second, at least: one request every 1 000 s.
    pub const MIN_RATE_LIMIT: f64 = 0.001;
    /// Requests per second, at most.
    pub const MAX_RATE_LIMIT: f64 = 1_000_000.0;
    pub const MAX_CONCURRENCY: usize = 10_000;
    pub const MAX_ATTEMPTS: u32 = 100;
    /// One hour.
    pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
    /// One day.
    pub const MAX_BACKOFF_MS: u64 = 86_400_000;
    /// One day.
    pub const MAX_RETRY_AFTER_CAP_S: u64 = 86_400;
}

/// `--rate`/`delivery.rate_limit`: a positive, finite number in the bounds.
pub fn check_rate_limit(r: f64) -> Result<(), String> {
    if r.is_finite() && (limits::MIN_RATE_LIMIT..=limits::MAX_RATE_LIMIT).contains(&r) {
        Ok(())
    } else {
        Err(format!(
            "must be between {} and {} requests per second, got {r:?}",
            limits::MIN_RATE_LIMIT,
            limits::MAX_RATE_LIMIT
        ))
    }
}

pub fn check_concurrency(c: usize) -> Result<(), String> {
    if (1..=limits::MAX_CONCURRENCY).contains(&c) {
        Ok(())
    } else {
        Err(format!(
            "must be between 1 and {}, got {c}",
            limits::MAX_CONCURRENCY
        ))
    }
}

pub fn check_max_attempts(n: u32) -> Result<(), String> {
    if (1..=limits::MAX_ATTEMPTS).contains(&n) {
        Ok(())
    } else {
        Err(format!(
            "must be between 1 and {}, got {n}",
            limits::MAX_ATTEMPTS
        ))
    }
}

impl Delivery {
    /// Every setting outside its bounds, as (field under `delivery.`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(r) = self.rate_limit
            && let Err(m) = check_rate_limit(r)
        {
            out.push(("rate_limit", m));
        }
        if let Err(m) = check_concurrency(self.concurrency) {
            out.push(("concurrency", m));
        }
        if let Err(m) = check_max_attempts(self.max_attempts) {
            out.push(("max_attempts", m));
        }
        if !(1..=limits::MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            out.push((
                "timeout_ms",
                format!(
                    "must be between 1 and {} (one hour), got {}",
                    limits::MAX_TIMEOUT_MS,
                    self.timeout_ms
                ),
            ));
        }
        if self.backoff_max_ms > limits::MAX_BACKOFF_MS {
            out.push((
                "backoff_max_ms",
                format!(
                    "must be at most {} (one day), got {}",
                    limits::MAX_BACKOFF_MS,
                    self.backoff_max_ms
                ),
            ));
        }
        if self.backoff_initial_ms > self.backoff_max_ms {
            out.push((
                "backoff_initial_ms",
                format!(
                    "must be at most backoff_max_ms ({}), got {}",
                    self.backoff_max_ms, self.backoff_initial_ms
                ),
            ));
        }
        if self.retry_after_cap_s > limits::MAX_RETRY_AFTER_CAP_S {
            out.push((
                "retry_after_cap_s",
                format!(
                    "must be at most {} (one day), got {}",
                    limits::MAX_RETRY_AFTER_CAP_S,
                    self.retry_after_cap_s
                ),
            ));
        }
        out
    }
}

impl Workspace {
    /// Destination names used twice, each naming both positions. `render` and `send`
    /// refuse such a file too, since `--destination NAME` would be ambiguous.
    pub fn duplicate_destination_names(&self) -> Vec<String> {
        duplicates(
            "destinations",
            self.destinations.iter().map(|d| d.name.as_str()),
        )
    }

    /// Event set names used twice, each naming both positions.
    pub fn duplicate_event_set_names(&self) -> Vec<String> {
        duplicates(
            "event_sets",
            self.event_sets.iter().map(|s| s.name.as_str()),
        )
    }
}

fn duplicates<'a>(kind: &str, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (i, n) in names.enumerate() {
        if let Some(j) = first.get(n) {
            out.push(format!(
                "{kind}[{i}]: the name \"{}\" is already used by {kind}[{j}]",
                n.escape_debug()
            ));
        } else {
            first.insert(n, i);
        }
    }
    out
}

/// A prefix written before a secret-derived header value (`sha256=`, `Bearer `): no
/// control characters, which would split or corrupt the header.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    match prefix.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "contains a control character ({}); CR, LF and other non-visible characters would corrupt the header",
            c.escape_debug()
        )),
        None => Ok(()),
    }
}
