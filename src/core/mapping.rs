//! Mapping: event → mapped JSON value. Each row takes a source (RFC 9535 `JSONPath`,
//! literal or template), chains transforms, falls back to a default when the source
//! is missing (a `null` in the event is kept), and writes into a nested target path.

use std::sync::Arc;

use serde_json::{Map, Value};
use serde_json_path::JsonPath;
use sha2::Digest as _;

use super::dates::check_date_format;
pub use super::dates::format_date;
use super::model::MappingRow;
use super::template::{Templates, Tpl};

/// A mapping problem in one row, found when compiling or applying it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping[{index}] ({target}): {message}")]
pub struct MappingError {
    /// 0-based, as `mapping[i]` in the workspace file, at compile and at render time.
    pub index: usize,
    pub target: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    String,
    Number,
    Bool,
    Lowercase,
    Uppercase,
    Trim,
    Sha256,
    Json,
    Date(String),
}

impl Transform {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "string" => Self::String,
            "number" => Self::Number,
            "bool" => Self::Bool,
            "lowercase" | "lower" => Self::Lowercase,
            "uppercase" | "upper" => Self::Uppercase,
            "trim" => Self::Trim,
            "sha256" => Self::Sha256,
            "json" => Self::Json,
            _ => {
                if let Some(fmt) = s.strip_prefix("date:") {
                    check_date_format(fmt)?;
                    Self::Date(fmt.to_owned())
                } else {
                    return Err(format!(
                        "unknown transform \"{s}\" (expected string, number, bool, lowercase, uppercase, trim, sha256, json or date:<format>)"
                    ));
                }
            }
        })
    }

    fn apply(&self, v: Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(v); // null is kept through every transform
        }
        Ok(match self {
            Self::String => Value::String(as_text(&v)),
            Self::Number => match &v {
                Value::Number(_) => v,
                Value::Bool(b) => Value::from(u8::from(*b)),
                Value::String(s) => parse_number(s.trim())
                    .ok_or_else(|| format!("number: \"{s}\" is not a number"))?,
                _ => return Err(format!("number: cannot convert {} to a number", kind(&v))),
            },
            Self::Bool => match &v {
                Value::Bool(_) => v,
                Value::Number(n) => Value::Bool(n.as_f64().is_some_and(|f| f != 0.0)),
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "y" | "on" => Value::Bool(true),
                    "false" | "0" | "no" | "n" | "off" | "" => Value::Bool(false),
                    _ => return Err(format!("bool: \"{s}\" is not a boolean")),
                },
                _ => return Err(format!("bool: cannot convert {} to a boolean", kind(&v))),
            },
            Self::Lowercase => Value::String(as_text(&v).to_lowercase()),
            Self::Uppercase => Value::String(as_text(&v).to_uppercase()),
            Self::Trim => Value::String(as_text(&v).trim().to_owned()),
            Self::Sha256 => {
                Value::String(hex::encode(sha2::Sha256::digest(as_text(&v).as_bytes())))
            }
            Self::Json => Value::String(v.to_string()),
            Self::Date(fmt) => Value::String(format_date(&v, fmt)?),
        })
    }
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

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn parse_number(s: &str) -> Option<Value> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::from(i));
    }
    s.parse::<f64>()
        .ok()
        .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
}

/// One step of a target path: `items[0].sku` → Key(items), Index(0), Key(sku).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSeg {
    Key(String),
    Index(usize),
}

pub fn parse_target(target: &str) -> Result<Vec<TargetSeg>, String> {
    let mut segs = Vec::new();
    if target.trim().is_empty() {
        return Err("target is empty".into());
    }
    for part in target.split('.') {
        let (name, mut rest) = part
            .find('[')
            .map_or((part, ""), |i| (&part[..i], &part[i..]));
        if name.is_empty() && (segs.is_empty() || rest.is_empty()) {
            return Err(format!("target \"{target}\" has an empty segment"));
        }
        if !name.is_empty() {
            segs.push(TargetSeg::Key(name.to_owned()));
        }
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .ok_or_else(|| format!("target \"{target}\": missing ]"))?;
            let idx = rest[1..close].parse::<usize>().map_err(|_| {
                format!(
                    "target \"{target}\": \"{}\" is not an array index",
                    &rest[1..close]
                )
            })?;
            if idx > 10_000 {
                return Err(format!("target \"{target}\": index {idx} is too large"));
            }
            segs.push(TargetSeg::Index(idx));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!(
                    "target \"{target}\": unexpected \"{rest}\" after ]"
                ));
            }
        }
    }
    Ok(segs)
}

/// Write `value` at `path` inside `root`, creating objects and arrays on the way.
pub fn set_path(root: &mut Value, path: &[TargetSeg], value: Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        *root = value;
        return Ok(());
    };
    match first {
        TargetSeg::Key(k) => {
            if root.is_null() {
                *root = Value::Object(Map::new());
            }
            let Value::Object(m) = root else {
                return Err(format!(
                    "cannot set \"{k}\": the target already holds {}",
                    kind(root)
                ));
            };
            set_path(m.entry(k.clone()).or_insert(Value::Null), rest, value)
        }
        TargetSeg::Index(i) => {
            if root.is_null() {
                *root = Value::Array(Vec::new());
            }
            let Value::Array(a) = root else {
                return Err(format!(
                    "cannot set [{i}]: the target already holds {}",
                    kind(root)
                ));
            };
            if a.len() <= *i {
                a.resize(i + 1, Value::Null);
            }
            set_path(&mut a[*i], rest, value)
        }
    }
}

#[derive(Debug)]
enum Source {
    Path { path: JsonPath, singular: bool },
    Literal(Value),
    Template(Tpl),
}

/// A mapping row ready to apply: parsed path, parsed transforms, compiled template.
#[derive(Debug)]
pub struct CompiledRow {
    pub index: usize,
    pub target_text: String,
    target: Vec<TargetSeg>,
    source: Source,
    transforms: Vec<Transform>,
    default: Option<Value>,
}

/// RFC 9535 singular queries (names and indices only) yield a value; others yield an array.
fn is_singular(path: &str) -> bool {
    let mut in_quote: Option<char> = None;
    let mut prev = '\0';
    for c in path.chars() {
        match in_quote {
            Some(q) => {
                if c == q && prev != '\\' {
                    in_quote = None;
                }
            }
            None => match c {
                '\'' | '"' => in_quote = Some(c),
                '*' | '?' | ':' | ',' => return false,
                '.' if prev == '.' => return false,
                _ => {}
            },
        }
        prev = c;
    }
    true
}

pub fn compile_row(
    index: usize,
    row: &MappingRow,
    templates: &mut Templates,
) -> Result<CompiledRow, MappingError> {
    let err = |message: String| MappingError {
        index,
        target: row.target.clone(),
        message,
    };
    let target = parse_target(&row.target).map_err(&err)?;
    let source = match (&row.source, &row.literal, &row.template) {
        (Some(p), None, None) => {
            let path = JsonPath::parse(p)
                .map_err(|e| err(format!("source \"{p}\" is not a valid JSONPath: {e}")))?;
            Source::Path {
                path,
                singular: is_singular(p),
            }
        }
        (None, Some(l), None) => Source::Literal(l.clone()),
        (None, None, Some(t)) => Source::Template(
            templates
                .add(&format!("mapping[{index}].template"), t)
                .map_err(|e| err(format!("template: {}{}", e.position, e.message)))?,
        ),
        (None, None, None) => {
            return Err(err(
                "needs one of \"source\", \"literal\" or \"template\"".into()
            ));
        }
        _ => {
            return Err(err(
                "has more than one of \"source\", \"literal\" and \"template\"; keep one".into(),
            ));
        }
    };
    let transforms = row
        .transforms
        .iter()
        .map(|t| Transform::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    Ok(CompiledRow {
        index,
        target_text: row.target.clone(),
        target,
        source,
        transforms,
        default: row.default.clone(),
    })
}

/// What one row gave for one event (the mapping designer shows it beside the row;
/// coverage counts it over a set).
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    /// The source gave this value (after transforms).
    Value(Value),
    /// The source was missing; the row's default was used.
    Defaulted(Value),
    /// The source was missing and there is no default: the field is omitted.
    Missing,
    /// The source held `null`, which is kept.
    Null,
    /// The row failed; the message says why.
    Error(String),
}

/// One row's outcome, named as the workspace file names it (`mapping[i]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RowTrace {
    pub index: usize,
    pub target: String,
    pub outcome: RowOutcome,
}

/// One row's value: `Ok(None)` when the field is omitted; the flag says "defaulted".
fn eval_row(
    r: &CompiledRow,
    event: &Value,
    templates: &Templates,
    ctx: &mut dyn FnMut() -> minijinja::Value,
) -> Result<Option<(Value, RowOutcomeKind)>, MappingError> {
    let err = |message: String| MappingError {
        index: r.index,
        target: r.target_text.clone(),
        message,
    };
    let found: Option<Value> = match &r.source {
        Source::Path { path, singular } => {
            let nodes = path.query(event);
            if *singular {
                nodes.first().map(|v| (*v).clone())
            } else if nodes.is_empty() {
                None
            } else {
                Some(Value::Array(nodes.all().into_iter().cloned().collect()))
            }
        }
        Source::Literal(v) => Some(v.clone()),
        Source::Template(t) => {
            Some(Value::String(templates.render(t, &ctx()).map_err(|e| {
                err(format!("template: {}{}", e.position, e.message))
            })?))
        }
    };
    Ok(match found {
        Some(Value::Null) => Some((Value::Null, RowOutcomeKind::Null)),
        Some(mut v) => {
            for t in &r.transforms {
                v = t.apply(v).map_err(&err)?;
            }
            Some((v, RowOutcomeKind::Value))
        }
        None => r
            .default
            .as_ref()
            .map(|d| (d.clone(), RowOutcomeKind::Defaulted)),
    })
}

#[derive(Clone, Copy)]
enum RowOutcomeKind {
    Value,
    Defaulted,
    Null,
}

/// Apply the rows to `event`, building the mapped object.
pub fn apply(
    rows: &[CompiledRow],
    event: &Value,
    templates: &Templates,
    ctx: &mut dyn FnMut() -> minijinja::Value,
) -> Result<Value, MappingError> {
    let mut out = Value::Object(Map::new());
    for r in rows {
        if let Some((value, _)) = eval_row(r, event, templates, ctx)? {
            set_path(&mut out, &r.target, value).map_err(|message| MappingError {
                index: r.index,
                target: r.target_text.clone(),
                message,
            })?;
        }
    }
    Ok(out)
}

/// Every row's outcome for `event` — all rows, not only up to the first error.
pub fn trace(
    rows: &[CompiledRow],
    event: &Value,
    templates: &Templates,
    ctx: &mut dyn FnMut() -> minijinja::Value,
) -> Vec<RowTrace> {
    let mut out = Value::Object(Map::new());
    rows.iter()
        .map(|r| {
            let outcome = match eval_row(r, event, templates, ctx) {
                Err(e) => RowOutcome::Error(e.message),
                Ok(None) => RowOutcome::Missing,
                Ok(Some((v, kind))) => match set_path(&mut out, &r.target, v.clone()) {
                    Err(m) => RowOutcome::Error(m),
                    Ok(()) => match kind {
                        RowOutcomeKind::Value => RowOutcome::Value(v),
                        RowOutcomeKind::Defaulted => RowOutcome::Defaulted(v),
                        RowOutcomeKind::Null => RowOutcome::Null,
                    },
                },
            };
            RowTrace {
                index: r.index,
                target: r.target_text.clone(),
                outcome,
            }
        })
        .collect()
}

/// Convenience for callers holding the event by value.
pub fn shared(event: &Value) -> Arc<Value> {
    Arc::new(event.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(rows: &[MappingRow], event: &Value) -> Result<Value, MappingError> {
        let mut t = Templates::new();
        let compiled = rows
            .iter()
            .enumerate()
            .map(|(i, r)| compile_row(i, r, &mut t))
            .collect::<Result<Vec<_>, _>>()?;
        let ev = Arc::new(event.clone());
        let scope = Arc::new(super::super::template::SecretScope {
            secrets: super::super::secret::Secrets::memory(&[]),
            used: std::sync::Mutex::default(),
        });
        apply(&compiled, event, &t, &mut || {
            super::super::template::context(&ev, &scope)
        })
    }

    fn row(target: &str, source: &str) -> MappingRow {
        MappingRow {
            target: target.into(),
            source: Some(source.into()),
            ..MappingRow::default()
        }
    }

    #[test]
    fn nested_targets_with_array_indices() {
        let out = map(
            &[row("user.id", "$.userId"), row("items[1].sku", "$.sku")],
            &json!({"userId": "u1", "sku": "S"}),
        )
        .expect("maps");
        assert_eq!(
            out,
            json!({"user": {"id": "u1"}, "items": [null, {"sku": "S"}]})
        );
    }

    #[test]
    fn missing_source_omits_the_field_and_null_is_kept() {
        let out = map(&[row("a", "$.nope"), row("b", "$.n")], &json!({"n": null})).expect("maps");
        assert_eq!(out, json!({"b": null}));
    }

    #[test]
    fn default_applies_only_when_missing() {
        let mut r = row("plan", "$.properties.plan");
        r.default = Some(json!("free"));
        assert_eq!(
            map(&[r.clone()], &json!({})).expect("maps"),
            json!({"plan": "free"})
        );
        assert_eq!(
            map(&[r], &json!({"properties": {"plan": "pro"}})).expect("maps"),
            json!({"plan": "pro"})
        );
    }

    #[test]
    fn transforms_chain_in_order() {
        let mut r = row("email", "$.e");
        r.transforms = vec!["trim".into(), "lowercase".into(), "sha256".into()];
        let out = map(&[r], &json!({"e": "  User@Domain.com "})).expect("maps");
        assert_eq!(
            out["email"],
            json!(hex::encode(sha2::Sha256::digest(b"user@domain.com")))
        );
    }

    #[test]
    fn casts_string_number_bool_json_and_date() {
        let mut rows = vec![
            row("s", "$.n"),
            row("n", "$.s"),
            row("b", "$.y"),
            row("j", "$.o"),
            row("d", "$.t"),
        ];
        rows[0].transforms = vec!["string".into()];
        rows[1].transforms = vec!["number".into()];
        rows[2].transforms = vec!["bool".into()];
        rows[3].transforms = vec!["json".into()];
        rows[4].transforms = vec!["date:%d/%m/%Y".into()];
        let out = map(&rows, &json!({"n": 60, "s": "12.5", "y": "yes", "o": {"a": 1}, "t": "Thu Mar 24 2016 17:46:45 GMT+0000 (UTC)"})).expect("maps");
        assert_eq!(
            out,
            json!({"s": "60", "n": 12.5, "b": true, "j": "{\"a\":1}", "d": "24/03/2016"})
        );
    }

    #[test]
    fn number_transform_on_text_names_the_row() {
        let mut r = row("n", "$.s");
        r.transforms = vec!["number".into()];
        let e = map(&[row("ok", "$.s"), r], &json!({"s": "abc"})).expect_err("not a number");
        assert_eq!(e.index, 1);
        assert!(e.to_string().contains("mapping[1] (n)"), "{e}");
    }

    #[test]
    fn unknown_transform_is_an_error_naming_the_row() {
        let mut r = row("n", "$.s");
        r.transforms = vec!["md5".into()];
        let e = map(&[r], &json!({})).expect_err("unknown");
        assert!(e.message.contains("unknown transform \"md5\""), "{e}");
    }

    #[test]
    fn jsonpath_that_does_not_parse_is_an_error() {
        let e = map(&[row("a", "$.a[")], &json!({})).expect_err("bad path");
        assert!(e.message.contains("not a valid JSONPath"), "{e}");
    }

    #[test]
    fn wildcard_paths_yield_arrays() {
        let out = map(
            &[row("skus", "$.items[*].sku")],
            &json!({"items": [{"sku": "a"}]}),
        )
        .expect("maps");
        assert_eq!(out, json!({"skus": ["a"]}));
    }

    #[test]
    fn literal_and_template_sources() {
        let rows = vec![
            MappingRow {
                target: "channel".into(),
                literal: Some(json!("web")),
                ..MappingRow::default()
            },
            MappingRow {
                target: "label".into(),
                template: Some("{{ event.event }} by {{ event.userId }}".into()),
                ..MappingRow::default()
            },
        ];
        let out = map(&rows, &json!({"event": "Order Completed", "userId": "u1"})).expect("maps");
        assert_eq!(
            out,
            json!({"channel": "web", "label": "Order Completed by u1"})
        );
    }

    #[test]
    fn row_with_two_sources_is_rejected() {
        let r = MappingRow {
            target: "a".into(),
            source: Some("$.a".into()),
            literal: Some(json!(1)),
            ..MappingRow::default()
        };
        assert!(
            map(&[r], &json!({}))
                .expect_err("two sources")
                .message
                .contains("more than one")
        );
    }

    #[test]
    fn bad_targets_are_rejected() {
        for t in ["", "a..b", "a[x]", "a[1"] {
            assert!(parse_target(t).is_err(), "{t}");
        }
    }
}
