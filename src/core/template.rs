//! Templates: one minijinja environment per compiled destination, holding every
//! template of that destination compiled once; the filters and functions a mapping
//! needs; a lazy view of the event (nothing is converted until a template reads it);
//! and error messages that name the field and the position.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use minijinja::value::{Enumerator, Object, ObjectRepr, Value as Mj};
use minijinja::{Environment, ErrorKind, State, UndefinedBehavior};
use serde_json::Value;
use sha2::Digest as _;

use super::secret::{Secret, Secrets};

/// A template that failed to compile or render, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {position}{message}")]
pub struct TemplateError {
    /// The field holding the template, e.g. `url`, `headers.X-Key`, `mapping[2].template`.
    pub field: String,
    /// `line L, column C: ` when known, else empty.
    pub position: String,
    pub message: String,
}

/// A string field that may hold a template. Plain strings skip the engine entirely.
#[derive(Debug, Clone)]
pub enum Tpl {
    Static(String),
    Compiled { name: String, field: String },
}

/// The per-render scope handed to `secret()`: where secrets come from, and which were used,
/// so the preview can redact every place a secret value landed.
#[derive(Debug)]
pub struct SecretScope {
    pub secrets: Secrets,
    pub used: Mutex<Vec<Secret>>,
}

impl Object for SecretScope {}

/// The destination's compiled templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    count: usize,
    uses_secrets: bool,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        Self {
            env: new_environment(),
            count: 0,
            uses_secrets: false,
        }
    }

    /// Compile `source` for `field`; static text (no `{{`/`{%`) is kept as is.
    pub fn add(&mut self, field: &str, source: &str) -> Result<Tpl, TemplateError> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(Tpl::Static(source.to_owned()));
        }
        check_source(field, source)?;
        self.count += 1;
        self.uses_secrets |= source.contains("secret");
        let name = format!("t{}", self.count);
        self.env
            .add_template_owned(name.clone(), source.to_owned())
            .map_err(|e| describe(field, source, &e))?;
        Ok(Tpl::Compiled {
            name,
            field: field.to_owned(),
        })
    }

    /// Compile a condition (trigger expressions): renders `1` when true.
    pub fn condition(&mut self, field: &str, expr: &str) -> Result<Tpl, TemplateError> {
        const OPEN: &str = "{% if (";
        check_source(field, expr)?;
        self.count += 1;
        self.uses_secrets |= expr.contains("secret");
        let name = format!("t{}", self.count);
        let wrapped = format!("{OPEN}{expr}\n) %}}1{{% endif %}}");
        self.env
            .add_template_owned(name.clone(), wrapped.clone())
            .map_err(|e| {
                let mut err = describe(field, &wrapped, &e);
                // Report positions in the user's expression, not the wrapper.
                if let Some(rest) = err.position.strip_prefix("line 1, column ")
                    && let Some((col, tail)) = rest.split_once(':')
                    && let Ok(c) = col.parse::<usize>()
                {
                    err.position = format!(
                        "line 1, column {}:{tail}",
                        c.saturating_sub(OPEN.len()).max(1)
                    );
                }
                err
            })?;
        Ok(Tpl::Compiled {
            name,
            field: field.to_owned(),
        })
    }

    /// Whether any template added so far may call `secret(...)`.
    pub fn uses_secrets(&self) -> bool {
        self.uses_secrets
    }

    pub fn render(&self, tpl: &Tpl, ctx: &Mj) -> Result<String, TemplateError> {
        match tpl {
            Tpl::Static(s) => Ok(s.clone()),
            Tpl::Compiled { name, field } => {
                let t = self
                    .env
                    .get_template(name)
                    .map_err(|e| describe(field, "", &e))?;
                let mut out = Capped(Vec::with_capacity(512));
                match t.render_captured_to(ctx, &mut out) {
                    Ok(_) => Ok(String::from_utf8(out.0)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
                    Err(e) if e.kind() == ErrorKind::WriteFailure => Err(TemplateError {
                        field: field.clone(),
                        position: String::new(),
                        message: format!(
                            "the output is larger than {} MiB",
                            MAX_OUTPUT / (1024 * 1024)
                        ),
                    }),
                    Err(e) => Err(describe(field, t.source(), &e)),
                }
            }
        }
    }
}

/// A writer that refuses to grow past [`MAX_OUTPUT`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            return Err(std::io::Error::other("output limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The template context for one event: `event` plus the secret scope.
pub fn context(event: &Arc<Value>, scope: &Arc<SecretScope>) -> Mj {
    minijinja::context! {
        event => json_to_mj(event, &[]),
        __hookline_secrets => Mj::from_dyn_object(scope.clone()),
    }
}

/// A context with extra variables (batch envelope templates: `bodies`, `events`).
pub fn context_with(scope: &Arc<SecretScope>, vars: Vec<(&'static str, Mj)>) -> Mj {
    let mut map: std::collections::BTreeMap<&str, Mj> = vars.into_iter().collect();
    map.insert("__hookline_secrets", Mj::from_dyn_object(scope.clone()));
    Mj::from(map)
}

fn describe(field: &str, source: &str, e: &minijinja::Error) -> TemplateError {
    let position = match (e.range(), e.line()) {
        (Some(r), _) if !source.is_empty() => {
            let before = &source[..r.start.min(source.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {col}: ")
        }
        (_, Some(line)) => format!("line {line}: "),
        _ => String::new(),
    };
    let mut message = match e.kind() {
        ErrorKind::SyntaxError => "syntax error".to_owned(),
        ErrorKind::UnknownFilter => "unknown filter".to_owned(),
        ErrorKind::UnknownFunction => "unknown function".to_owned(),
        ErrorKind::UnknownTest => "unknown test".to_owned(),
        k => k.to_string(),
    };
    if let Some(d) = e.detail() {
        let _ = write!(message, ": {d}");
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let _ = write!(message, ": {inner}");
        src = inner.source();
    }
    TemplateError {
        field: field.to_owned(),
        position,
        message,
    }
}

/// Instructions one render may execute: loops over a 4 000-event batch take well
/// under 100 000; a template that nests loops of 10^10 runs out and says so.
pub const FUEL: u64 = 2_000_000;
/// Bytes one render may produce.
pub const MAX_OUTPUT: usize = 64 * 1024 * 1024;
/// Largest count or width a size-taking filter accepts (`batch`, `tojson` indent).
const MAX_FILTER_COUNT: usize = 10_000;
/// How much a template may multiply the size of what it reads (see [`growth`]).
pub const MAX_GROWTH: u64 = 64;

fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    // Loop-carried state is the way to build a string exponentially in a loop.
    env.remove_global("namespace");
    env.add_filter(
        "batch",
        |state: &State, value: Mj, count: usize, fill: Option<Mj>| {
            if count > MAX_FILTER_COUNT {
                return Err(too_large("batch", count));
            }
            minijinja::filters::batch(state, value, count, fill)
        },
    );
    env.add_filter(
        "tojson",
        |value: &Mj, indent: Option<Mj>, kwargs: minijinja::value::Kwargs| {
            let width = indent
                .clone()
                .or_else(|| kwargs.peek::<Option<Mj>>("indent").ok().flatten());
            if let Some(w) = width.and_then(|w| usize::try_from(w).ok())
                && w > 16
            {
                return Err(too_large("tojson indent", w));
            }
            minijinja::filters::tojson(value, indent, kwargs)
        },
    );
    env.remove_filter("indent");
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Webhook bodies are not HTML: never auto-escape.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env.add_filter("sha256", |v: String| {
        hex::encode(sha2::Sha256::digest(v.as_bytes()))
    });
    env.add_filter("base64", |v: String| {
        base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
    });
    env.add_filter("date", date_filter);
    env.add_function("now", || chrono::Utc::now().timestamp());
    env.add_function("secret", secret_function);
    env
}

fn too_large(what: &str, n: usize) -> minijinja::Error {
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("{what}: {n} is too large (at most {MAX_FILTER_COUNT})"),
    )
}

fn secret_function(state: &State, name: &str) -> Result<String, minijinja::Error> {
    let scope = state.lookup("__hookline_secrets");
    let Some(scope) = scope
        .as_ref()
        .and_then(|v| v.downcast_object_ref::<SecretScope>())
    else {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "secret() is not available here",
        ));
    };
    let s = scope
        .secrets
        .get(name)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let value = s.expose().to_owned();
    scope
        .used
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(s);
    Ok(value)
}

fn date_filter(v: &Mj, format: Option<&str>) -> Result<String, minijinja::Error> {
    let json: Value = serde_json::to_value(v).unwrap_or(Value::Null);
    let fmt = format.unwrap_or("%Y-%m-%dT%H:%M:%S%.3fZ");
    super::dates::format_date(&json, fmt)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e))
}

/// A lazy view of a JSON node: `root` plus the path to the node, so reading
/// `event.context.traits.email` copies nothing but the final string.
#[derive(Debug)]
struct JsonView {
    root: Arc<Value>,
    path: Vec<Seg>,
}

#[derive(Debug, Clone)]
enum Seg {
    Key(Arc<str>),
    Idx(usize),
}

impl JsonView {
    fn node(&self) -> &Value {
        let mut v = &*self.root;
        for s in &self.path {
            v = match s {
                Seg::Key(k) => v.get(&**k).unwrap_or(&Value::Null),
                Seg::Idx(i) => v.get(*i).unwrap_or(&Value::Null),
            };
        }
        v
    }

    fn child(&self, seg: Seg) -> Mj {
        let mut path = self.path.clone();
        path.push(seg);
        json_to_mj(&self.root, &path)
    }
}

fn json_to_mj(root: &Arc<Value>, path: &[Seg]) -> Mj {
    let view = JsonView {
        root: root.clone(),
        path: path.to_vec(),
    };
    match view.node() {
        Value::Null => Mj::from(()),
        Value::Bool(b) => Mj::from(*b),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| Mj::from(n.as_f64().unwrap_or(f64::NAN)), Mj::from),
        Value::String(s) => Mj::from(s.as_str()),
        Value::Array(_) | Value::Object(_) => Mj::from_object(view),
    }
}

impl Object for JsonView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        if self.node().is_array() {
            ObjectRepr::Seq
        } else {
            ObjectRepr::Map
        }
    }

    fn get_value(self: &Arc<Self>, key: &Mj) -> Option<Mj> {
        match self.node() {
            Value::Object(m) => {
                let k = key.as_str()?;
                let (k, _) = m.get_key_value(k)?;
                Some(self.child(Seg::Key(Arc::from(k.as_str()))))
            }
            Value::Array(a) => {
                let i = usize::try_from(key.as_i64()?).ok()?;
                (i < a.len()).then(|| self.child(Seg::Idx(i)))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.node() {
            Value::Object(m) => {
                Enumerator::Values(m.keys().map(|k| Mj::from(k.as_str())).collect())
            }
            Value::Array(a) => Enumerator::Seq(a.len()),
            _ => Enumerator::Empty,
        }
    }
}

/// Refuse, when compiling, what no render could finish with bounded memory.
fn check_source(field: &str, src: &str) -> Result<(), TemplateError> {
    let g = growth(src);
    if g > MAX_GROWTH {
        return Err(TemplateError {
            field: field.to_owned(),
            position: String::new(),
            message: format!(
                "this template can multiply the size of what it reads {g} times or more (at most {MAX_GROWTH}): `set` chains that reuse a growing value, loops captured into a variable, `range`, `replace` and `*` on strings are limited so a render cannot exhaust memory"
            ),
        });
    }
    Ok(())
}

/// A conservative estimate of how many times a template can multiply the size of
/// its inputs in a variable before it outputs anything. Plain output (`{{ … }}`) is
/// bounded by [`MAX_OUTPUT`] and loops by [`FUEL`]; what escapes both is a value
/// built in memory: `{% set s = s ~ s %}` repeated, or a loop captured by
/// `{% set x %}…{% endset %}`. Each variable's factor is the sum of the factors of
/// what its expression reads (inputs and literals count 1); `replace` and `*` square
/// it, `range` multiplies by 1000, a loop inside a captured block by 1000.
pub fn growth(src: &str) -> u64 {
    use std::collections::HashMap;
    let mut vars: HashMap<String, u64> = HashMap::new();
    let mut worst = 1u64;
    // Open `{% set x %}` captures: (name, sum so far, loop depth at start).
    let mut captures: Vec<(String, u64)> = Vec::new();
    let mut loops = 0u32;
    let mut rest = src;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = match after.as_bytes().first() {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            Some(b'#') => "#}",
            _ => {
                rest = after;
                continue;
            }
        };
        let body_start = &after[1..];
        let end = body_start.find(close).unwrap_or(body_start.len());
        let tag =
            body_start[..end].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        rest = body_start.get(end + close.len()..).unwrap_or("");
        let in_loop_capture = loops > 0 && !captures.is_empty();
        match close {
            "}}" => {
                // Plain output is bounded by MAX_OUTPUT; only what a capture keeps counts.
                if let Some(c) = captures.last_mut() {
                    let m = expr_growth(tag, &vars).saturating_mul(if in_loop_capture {
                        1000
                    } else {
                        1
                    });
                    c.1 = c.1.saturating_add(m);
                }
            }
            "%}" => {
                let (kw, tail) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
                match kw {
                    "set" => {
                        if let Some((lhs, rhs)) = tail.split_once('=') {
                            let m = expr_growth(rhs, &vars);
                            worst = worst.max(m);
                            for name in lhs.split(',') {
                                vars.insert(name.trim().to_owned(), m);
                            }
                        } else {
                            captures.push((tail.trim().to_owned(), 0));
                        }
                    }
                    "endset" => {
                        if let Some((name, m)) = captures.pop() {
                            worst = worst.max(m);
                            vars.insert(name, m.max(1));
                        }
                    }
                    "for" => loops += 1,
                    "endfor" => loops = loops.saturating_sub(1),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    worst
}

fn expr_growth(expr: &str, vars: &std::collections::HashMap<String, u64>) -> u64 {
    const WORDS: [&str; 14] = [
        "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False",
        "None", "loop",
    ];
    let b = expr.as_bytes();
    let mut sum = 0u64;
    let mut i = 0;
    let mut prev = b' ';
    let (mut squares, mut ranges) = (false, false);
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' {
            let q = c;
            i += 1;
            while i < b.len() && b[i] != q {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            sum = sum.saturating_add(1);
            i += 1;
            prev = q;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &expr[start..i];
            let callee = b.get(i) == Some(&b'(');
            squares |= prev == b'|' && word == "replace";
            ranges |= prev != b'.' && callee && word == "range";
            // Attribute and filter names, and keywords, are not values.
            if prev != b'.' && prev != b'|' && !WORDS.contains(&word) && !callee {
                sum = sum.saturating_add(vars.get(word).copied().unwrap_or(1));
            }
            prev = b'a';
            continue;
        }
        squares |= c == b'*';
        if !c.is_ascii_whitespace() {
            prev = c;
        }
        i += 1;
    }
    let mut m = sum.max(1);
    if squares {
        m = m.saturating_mul(m).max(m.saturating_mul(2));
    }
    if ranges {
        m = m.saturating_mul(1000);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, event: Value) -> Result<String, TemplateError> {
        let mut t = Templates::new();
        let tpl = t.add("body.template", src)?;
        let scope = Arc::new(SecretScope {
            secrets: Secrets::memory(&[("k", "s3cr3t")]),
            used: Mutex::default(),
        });
        t.render(&tpl, &context(&Arc::new(event), &scope))
    }

    #[test]
    fn templates_read_nested_event_fields() {
        let out = render(
            "{{ event.context.traits.email }}|{{ event.items[1].sku }}",
            json!({"context": {"traits": {"email": "a@b.c"}}, "items": [{"sku": "x"}, {"sku": "y"}]}),
        );
        assert_eq!(out.expect("renders"), "a@b.c|y");
    }

    #[test]
    fn tojson_serializes_the_event_with_its_key_order() {
        let out =
            render("{{ event | tojson }}", json!({"b": 1, "a": [true, null]})).expect("renders");
        assert_eq!(out, r#"{"b":1,"a":[true,null]}"#);
    }

    #[test]
    fn filters_sha256_base64_urlencode_lower_upper_default() {
        let out = render(
            "{{ event.e | lower | sha256 }} {{ 'a:b' | base64 }} {{ 'a b&c' | urlencode }} {{ event.missing | default('free') | upper }}",
            json!({"e": "A@B.C"}),
        )
        .expect("renders");
        let sha = hex::encode(sha2::Sha256::digest(b"a@b.c"));
        assert_eq!(out, format!("{sha} YTpi a%20b%26c FREE"));
    }

    #[test]
    fn date_filter_formats_rfc3339_and_epoch() {
        let out = render(
            "{{ event.t | date('%Y-%m-%d') }} {{ 0 | date('%Y') }}",
            json!({"t": "2020-04-22T08:06:20.337Z"}),
        )
        .expect("renders");
        assert_eq!(out, "2020-04-22 1970");
    }

    #[test]
    fn syntax_error_names_the_field_line_and_column() {
        let e = render("ok\n{{ event.x ", json!({})).expect_err("syntax error");
        assert_eq!(e.field, "body.template");
        assert!(e.position.starts_with("line 2"), "{e}");
        assert!(e.message.contains("syntax error"), "{e}");
    }

    #[test]
    fn unknown_filter_is_a_compile_error() {
        let e = render("{{ event.x | nope }}", json!({})).expect_err("unknown filter");
        assert!(e.to_string().contains("unknown filter"), "{e}");
    }

    #[test]
    fn secret_function_resolves_and_missing_secret_is_an_error() {
        assert_eq!(
            render("Key {{ secret('k') }}", json!({})).expect("renders"),
            "Key s3cr3t"
        );
        let e = render("{{ secret('nope') }}", json!({})).expect_err("missing");
        assert!(e.message.contains("HOOKLINE_SECRET_NOPE"), "{e}");
    }

    #[test]
    fn static_text_skips_the_engine() {
        let mut t = Templates::new();
        assert!(matches!(
            t.add("url", "https://x.test/a").expect("static"),
            Tpl::Static(_)
        ));
    }
}
