//! (destination, event) → the exact request. One pipeline serves the preview, cURL
//! export and delivery: compile a destination once ([`CompiledDestination::compile`]),
//! then [`prepare`](CompiledDestination::prepare) each event (trigger, URL, headers,
//! body), group prepared events into requests ([`super::batch`]), and
//! [`finish`](CompiledDestination::finish) each request with auth and signature at a
//! given time, so the runtime can re-sign every attempt.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use sha2::Digest as _;

use super::auth::{self, AuthError};
use super::batch::{self, Batch};
use super::mapping::{self, CompiledRow, MappingError};
use super::model::{
    Auth, Body, Destination, EVENT_TYPES, Envelope, MAX_BATCH_EVENTS, Method, Signing,
};
use super::secret::{Secret, Secrets};
use super::sign;
use super::template::{self, SecretScope, TemplateError, Templates, Tpl};

/// The `User-Agent` Hookline sends unless a destination overrides it.
pub const USER_AGENT: &str = concat!("hookline/", env!("CARGO_PKG_VERSION"));
/// What previews print in place of a secret.
pub const REDACTED: &str = "***";

/// A destination setting that cannot work, found when compiling it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination \"{destination}\": {field}: {message}")]
pub struct ConfigError {
    pub destination: String,
    pub field: String,
    pub message: String,
}

/// An event that could not be rendered. The other events still render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination \"{destination}\": {message}")]
pub struct RenderError {
    pub destination: String,
    pub message: String,
}

/// Everything rendering needs besides the destination and the event.
#[derive(Debug, Clone)]
pub struct RenderCtx {
    pub secrets: Secrets,
    /// Unix seconds for timestamps, JWT `iat`/`exp`; `None` reads the clock.
    pub now: Option<i64>,
}

impl RenderCtx {
    pub fn new(secrets: Secrets) -> Self {
        Self { secrets, now: None }
    }
    pub fn now(&self) -> i64 {
        self.now.unwrap_or_else(|| chrono::Utc::now().timestamp())
    }
}

/// The request exactly as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Before auth and signing; `finish` rebuilds `url` and `headers` from these per attempt.
    base_url: String,
    base_headers: Vec<(String, String)>,
    jwt_claims: Option<Map<String, Value>>,
    /// Secret values that landed anywhere in the request.
    secret_values: Vec<String>,
    /// Names of headers derived from secrets (auth, signature).
    sensitive_headers: Vec<String>,
}

impl RenderedRequest {
    /// A copy safe to show or store: every secret value, and every header derived from one, replaced.
    #[must_use]
    pub fn redacted(&self) -> Self {
        let mut r = self.clone();
        r.url = self.redacted_url();
        r.headers = self.redacted_headers();
        if let Some(b) = &r.body
            && let Ok(text) = std::str::from_utf8(b)
            && self
                .secret_values
                .iter()
                .any(|v| !v.is_empty() && text.contains(v.as_str()))
        {
            r.body = Some(self.hide(text).into_bytes());
        }
        r.base_url.clear();
        r.base_headers.clear();
        r.jwt_claims = None;
        r.secret_values.clear();
        r
    }

    fn hide(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for v in &self.secret_values {
            if !v.is_empty() {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        out
    }

    /// The URL with secret values replaced (an API key in the query, say).
    pub fn redacted_url(&self) -> String {
        self.hide(&self.url)
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
                } else {
                    self.hide(value)
                };
                (name.clone(), v)
            })
            .collect()
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
        self.secret_values.push(token.expose().to_owned());
    }
}

/// What became of one event.
#[derive(Debug)]
pub enum Prepared {
    /// Did not match the trigger: counted, not an error.
    Skipped(String),
    Ready(Box<PreparedEvent>),
}

/// One event's part of a request, before batching, auth and signing.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    pub index: usize,
    pub route: Route,
    pub body: PreparedBody,
    pub message_id: Option<String>,
    /// For the rows envelope.
    pub primary_key: Value,
    pub(crate) jwt_claims: Option<Map<String, Value>>,
    pub(crate) secret_values: Vec<String>,
}

/// What must be equal for events to share a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum PreparedBody {
    None,
    /// Serialized JSON (event or mapped object), ready to concatenate into envelopes.
    Json(Vec<u8>),
    Raw(Vec<u8>),
}

impl PreparedBody {
    pub fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Json(b) | Self::Raw(b) => b.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    /// When nothing depends on the event (batched whole events, fixed URL and
    /// headers, no trigger): the prepared shape every event shares.
    passthrough: Option<Box<PreparedEvent>>,
}

/// RFC 9110 token characters, for header names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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
                    row,
                    target,
                    message,
                }) => err(&format!("mapping[{}] ({target})", row - 1), message),
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
            passthrough: None,
        };
        let d = &compiled.dest;
        if d.batching
            .as_ref()
            .is_some_and(|b| b.envelope == Envelope::Array)
            && d.body == Body::Event
            && d.method.has_body()
            && d.trigger == super::model::Trigger::default()
            && !compiled.uses_templates
        {
            let ctx = RenderCtx::new(Secrets::memory(&[]));
            if let Ok(Prepared::Ready(p)) = compiled.prepare(0, &Value::Object(Map::new()), &ctx) {
                compiled.passthrough = Some(p);
            }
        }
        Ok(compiled)
    }

    fn fail(&self, message: impl Into<String>) -> RenderError {
        RenderError {
            destination: self.dest.name.clone(),
            message: message.into(),
        }
    }

    fn tfail(&self, e: &TemplateError) -> RenderError {
        self.fail(e.to_string())
    }

    /// Trigger, URL, headers and body for one event. Cheap and synchronous: the
    /// mapping designer calls it on every keystroke.
    pub fn prepare(
        &self,
        index: usize,
        event: &Value,
        ctx: &RenderCtx,
    ) -> Result<Prepared, RenderError> {
        self.prepare_inner(index, event, None, ctx)
    }

    /// [`prepare`](Self::prepare) for an event the caller already holds in an `Arc`
    /// (the runtime parses each event anyway): templates share it instead of a copy.
    pub fn prepare_shared(
        &self,
        index: usize,
        event: &Arc<Value>,
        ctx: &RenderCtx,
    ) -> Result<Prepared, RenderError> {
        self.prepare_inner(index, event, Some(event), ctx)
    }

    fn prepare_inner(
        &self,
        index: usize,
        event: &Value,
        owned: Option<&Arc<Value>>,
        ctx: &RenderCtx,
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

        // URL: template, then appendPath / fullPath, then query.
        let mut url = self
            .templates
            .render(&self.url, &tctx())
            .map_err(|e| self.tfail(&e))?;
        if d.dynamic_overrides {
            if let Some(full) = event.get("fullPath").and_then(Value::as_str) {
                url = replace_path(&url, full);
            } else if let Some(append) = event.get("appendPath").and_then(Value::as_str) {
                url.push_str(append);
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
            check_header_value(name, &v).map_err(|m| self.fail(format!("headers.{name}: {m}")))?;
            set_header(&mut headers, name, v);
        }
        if d.dynamic_overrides
            && let Some(Value::Object(h)) = event.get("header")
        {
            for (name, v) in h {
                if let Value::String(v) = v {
                    if !is_token(name) {
                        return Err(self.fail(format!(
                            "event header \"{name}\" is not a valid header name"
                        )));
                    }
                    check_header_value(name, v).map_err(|m| self.fail(format!("event {m}")))?;
                    set_header(&mut headers, name, v.clone());
                }
            }
        }

        // Body.
        let mut mapped = || -> Result<Value, RenderError> {
            let mut c = || tctx();
            mapping::apply(&self.rows, event, &self.templates, &mut c)
                .map_err(|e| self.fail(e.to_string()))
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
        let (body, content_type): (PreparedBody, Option<String>) = match &self.body {
            CompiledBody::Event if has_body => (
                PreparedBody::Json(to_json(&stripped())),
                Some("application/json".into()),
            ),
            CompiledBody::Event => {
                flatten_into(&mut query, "", query_source(event));
                (PreparedBody::None, None)
            }
            CompiledBody::EventUrlencoded { field } => {
                let json = String::from_utf8(to_json(&stripped())).unwrap_or_default();
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
            Some(fixed) if query.is_empty() && url == d.url => fixed.clone(),
            _ => finish_url(&url, &query).map_err(|m| self.fail(format!("url: {m}")))?,
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
        let secret_values = scope.map_or_else(Vec::new, |scope| {
            scope
                .used
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|s| s.expose().to_owned())
                .collect()
        });
        Ok(Prepared::Ready(Box::new(PreparedEvent {
            index,
            route: Route {
                method: d.method,
                url,
                headers,
            },
            body,
            message_id: event
                .get("messageId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            primary_key,
            jwt_claims,
            secret_values,
        })))
    }

    /// The fast path for an event held as JSON text: when nothing about the request
    /// depends on the event, its text is the body as is — no parse, no re-serialize.
    /// `None` means "use [`prepare`](Self::prepare)".
    pub fn prepare_text(&self, index: usize, text: &str) -> Option<PreparedEvent> {
        let t = self.passthrough.as_ref()?;
        if self.dest.dynamic_overrides
            && (text.contains("\"header\"")
                || text.contains("\"appendPath\"")
                || text.contains("\"fullPath\""))
        {
            return None;
        }
        Some(PreparedEvent {
            index,
            route: t.route.clone(),
            body: PreparedBody::Json(text.as_bytes().to_vec()),
            message_id: None,
            primary_key: Value::Null,
            jwt_claims: t.jwt_claims.clone(),
            secret_values: Vec::new(),
        })
    }

    /// Turn a group of prepared events into a request: envelope, idempotency key, then
    /// auth and signature at `ctx.now()`.
    pub fn finish(&self, batch: Batch, ctx: &RenderCtx) -> Result<RenderedRequest, RenderError> {
        let Batch { events, note } = batch;
        let Some(first) = events.first() else {
            return Err(self.fail("internal: empty batch"));
        };
        let body = match &self.envelope {
            Some(env) => Some(
                env.wrap(&events, &self.templates, ctx)
                    .map_err(|m| self.fail(m))?,
            ),
            None => match &first.body {
                PreparedBody::None => None,
                PreparedBody::Json(b) | PreparedBody::Raw(b) => Some(b.clone()),
            },
        };
        let idempotency_key = idempotency_key(&events, body.as_deref());
        let mut secret_values: Vec<String> = events
            .iter()
            .flat_map(|e| e.secret_values.iter().cloned())
            .collect();
        secret_values.sort();
        secret_values.dedup();
        let mut req = RenderedRequest {
            method: first.route.method,
            url: first.route.url.clone(),
            headers: first.route.headers.clone(),
            body,
            events: events.iter().map(|e| e.index).collect(),
            idempotency_key,
            batch_note: note,
            base_url: first.route.url.clone(),
            base_headers: first.route.headers.clone(),
            jwt_claims: first.jwt_claims.clone(),
            secret_values,
            sensitive_headers: Vec::new(),
        };
        self.sign(&mut req, ctx)?;
        Ok(req)
    }

    /// (Re)compute auth and signature headers for an attempt at `ctx.now()`. Timestamps,
    /// JWTs and signatures change; the idempotency key does not.
    pub fn sign(&self, req: &mut RenderedRequest, ctx: &RenderCtx) -> Result<(), RenderError> {
        let now = ctx.now();
        let mut headers = req.base_headers.clone();
        let mut url = req.base_url.clone();
        let mut sensitive = Vec::new();
        let parts = auth::apply(&self.dest.auth, &ctx.secrets, req.jwt_claims.as_ref(), now)
            .map_err(|e: AuthError| self.fail(e.to_string()))?;
        for (n, v) in parts.headers {
            sensitive.push(n.clone());
            set_header(&mut headers, &n, v);
        }
        if !parts.query.is_empty() {
            url = finish_url(&url, &parts.query).map_err(|m| self.fail(format!("url: {m}")))?;
        }
        for s in &parts.used {
            if !req.secret_values.iter().any(|v| v == s.expose()) {
                req.secret_values.push(s.expose().to_owned());
            }
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
                let key = ctx
                    .secrets
                    .get(secret)
                    .map_err(|e| self.fail(format!("signing.secret: {e}")))?;
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
                let key = ctx
                    .secrets
                    .get(secret)
                    .map_err(|e| self.fail(format!("signing.secret: {e}")))?;
                let sig = sign::standard_webhooks_signature(
                    key.expose(),
                    &req.idempotency_key,
                    now,
                    body,
                )
                .map_err(|e| self.fail(format!("signing.secret: {e}")))?;
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
        let mut report = RenderReport::default();
        let mut batcher = batch::Batcher::new(self.dest.batching.as_ref());
        let push = |report: &mut RenderReport, b: Vec<Batch>| {
            for b in b {
                let idx = b.events.iter().map(|e| e.index).collect::<Vec<_>>();
                match self.finish(b, ctx) {
                    Ok(r) => report.requests.push(r),
                    Err(e) => report
                        .errors
                        .extend(idx.into_iter().map(|i| (i, e.clone()))),
                }
            }
        };
        for (i, ev) in events.iter().enumerate() {
            match self.prepare(i, ev, ctx) {
                Ok(Prepared::Skipped(reason)) => report.skipped.push((i, reason)),
                Ok(Prepared::Ready(p)) => match batcher.push(*p) {
                    Ok(done) => push(&mut report, done),
                    Err((i, m)) => report.errors.push((i, self.fail(m))),
                },
                Err(e) => report.errors.push((i, e)),
            }
        }
        push(&mut report, batcher.finish());
        report.errors.sort_by_key(|(i, _)| *i);
        report
    }
}

fn push_secret(values: &mut Vec<String>, s: &Secret) {
    if !values.iter().any(|v| v == s.expose()) {
        values.push(s.expose().to_owned());
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
    let mut parsed = check_url(u)?;
    if !query.is_empty() {
        parsed.query_pairs_mut().extend_pairs(query);
    }
    Ok(parsed.into())
}

/// `fullPath`: an absolute URL replaces the URL; otherwise it replaces the path (and query).
fn replace_path(url: &str, full: &str) -> String {
    if full.contains("://") {
        return full.to_owned();
    }
    match url::Url::parse(url) {
        Ok(mut u) => {
            let (path, query) = full
                .split_once('?')
                .map_or((full, None), |(p, q)| (p, Some(q)));
            u.set_path(path);
            u.set_query(query);
            u.into()
        }
        Err(_) => format!("{}{full}", url.trim_end_matches('/')),
    }
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

/// The event's `messageId` for a single event; a digest of the ids (or body) for a batch.
/// Deterministic, so a resumed job re-sends with the same key.
fn idempotency_key(events: &[PreparedEvent], body: Option<&[u8]>) -> String {
    if let [one] = events
        && let Some(id) = &one.message_id
    {
        return id.clone();
    }
    let mut h = sha2::Sha256::new();
    if events.iter().all(|e| e.message_id.is_some()) {
        for e in events {
            h.update(e.message_id.as_deref().unwrap_or("").as_bytes());
            h.update(b"\n");
        }
    } else {
        h.update(body.unwrap_or(b""));
        for e in events {
            h.update(e.index.to_le_bytes());
        }
    }
    format!("hl_{}", &hex::encode(h.finalize())[..32])
}
