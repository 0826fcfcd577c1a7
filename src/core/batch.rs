//! Batching: prepared events → requests. Events share a request only when their
//! method, URL and headers are equal; within a group the caps (`max_events`,
//! `max_bytes`) split them in order. Envelopes: a JSON array, the rows envelope
//! (`{"sync_mode","rows":[{"data","operation","primary_key"}]}`), or a template.

use indexmap::IndexMap;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::model::{Batching, Envelope};
use super::prepared::{PreparedBody, PreparedEvent, RenderCtx, Route};
use super::template::{self, SecretScope, Templates, Tpl};

/// Events that go in one request, and why the batch ended where it did.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<PreparedEvent>,
    pub note: String,
    /// The same as data; `None` when not batching.
    pub trace: Option<BatchTrace>,
}

/// Why a batch ended where it did, as data (the preview's batch trace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTrace {
    /// 1-based group number, in the order groups first appeared.
    pub group: usize,
    /// What the group's events share: a digest of method, URL and headers (events
    /// that differ in any of them are never batched together).
    pub group_key: String,
    /// 1-based position of this batch within its group.
    pub seq: usize,
    pub events: usize,
    /// Bytes of the envelope as estimated while batching (array and rows envelopes
    /// are exact; a template envelope is measured when it is rendered).
    pub bytes: usize,
    pub closed_by: ClosedBy,
}

/// What closed a batch. Groups stay open side by side, so an event of another group
/// never closes one: each closes on its own caps, or at the end of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// `max_events` reached.
    EventCap,
    /// The next event would have passed `max_bytes`.
    ByteCap,
    /// A rendered template envelope measured over `max_bytes`: the batch was split.
    MeasuredBytes,
    EndOfInput,
}

impl ClosedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventCap => "event cap",
            Self::ByteCap => "byte cap",
            Self::MeasuredBytes => "byte cap (measured)",
            Self::EndOfInput => "end of input",
        }
    }
}

#[derive(Debug)]
pub enum CompiledEnvelope {
    Array,
    Rows {
        sync_mode: String,
        operation: String,
        primary_key: Option<JsonPath>,
    },
    Template(Tpl),
}

impl CompiledEnvelope {
    pub fn compile(e: &Envelope, templates: &mut Templates) -> Result<Self, (String, String)> {
        Ok(match e {
            Envelope::Array => Self::Array,
            Envelope::Rows(r) => Self::Rows {
                sync_mode: r.sync_mode.clone(),
                operation: r.operation.clone(),
                primary_key: r
                    .primary_key
                    .as_deref()
                    .map(|p| {
                        JsonPath::parse(p).map_err(|err| {
                            (
                                "batching.envelope.rows.primary_key".to_owned(),
                                format!("\"{p}\" is not a valid JSONPath: {err}"),
                            )
                        })
                    })
                    .transpose()?,
            },
            Envelope::Template(t) => Self::Template(
                templates
                    .add("batching.envelope.template", t)
                    .map_err(|e| {
                        (
                            "batching.envelope.template".to_owned(),
                            format!("{}{}", e.position, e.message),
                        )
                    })?,
            ),
        })
    }

    pub fn primary_key(&self, event: &Value) -> Value {
        match self {
            Self::Rows {
                primary_key: Some(p),
                ..
            } => p.query(event).first().map_or(Value::Null, |v| (*v).clone()),
            _ => Value::Null,
        }
    }

    fn row_prefix(&self) -> Option<(String, String)> {
        match self {
            Self::Rows {
                sync_mode,
                operation,
                ..
            } => Some((
                format!(
                    "{{\"sync_mode\":{},\"rows\":[",
                    Value::from(sync_mode.as_str())
                ),
                format!(
                    ",\"operation\":{},\"primary_key\":",
                    Value::from(operation.as_str())
                ),
            )),
            _ => None,
        }
    }

    /// Bytes one event adds to the envelope (body plus separators and row wrapper).
    fn item_size(&self, p: &PreparedEvent) -> usize {
        let body = p.body.len();
        match self {
            Self::Array | Self::Template(_) => body + 1,
            Self::Rows { operation, .. } => {
                body + 1
                    + "{\"data\":".len()
                    + ",\"operation\":,\"primary_key\":}".len()
                    + operation.len()
                    + 2
                    + p.primary_key.to_string().len()
            }
        }
    }

    fn fixed_size(&self) -> usize {
        match self {
            Self::Array | Self::Template(_) => 2,
            Self::Rows { .. } => self.row_prefix().map_or(0, |(p, _)| p.len() + 2),
        }
    }

    pub fn wrap(
        &self,
        events: &[PreparedEvent],
        templates: &Templates,
        ctx: &RenderCtx,
        used: &mut Vec<crate::core::secret::Secret>,
    ) -> Result<Vec<u8>, String> {
        fn body(p: &PreparedEvent) -> &[u8] {
            match &p.body {
                PreparedBody::None => b"null",
                PreparedBody::Json(b) | PreparedBody::Raw(b) => b,
            }
        }
        let mut out = Vec::with_capacity(
            self.fixed_size() + events.iter().map(|e| self.item_size(e)).sum::<usize>(),
        );
        match self {
            Self::Array => {
                out.push(b'[');
                for (i, e) in events.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(body(e));
                }
                out.push(b']');
            }
            Self::Rows { .. } => {
                let (head, mid) = self.row_prefix().unwrap_or_default();
                out.extend_from_slice(head.as_bytes());
                for (i, e) in events.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"data\":");
                    out.extend_from_slice(body(e));
                    out.extend_from_slice(mid.as_bytes());
                    out.extend_from_slice(e.primary_key.to_string().as_bytes());
                    out.push(b'}');
                }
                out.extend_from_slice(b"]}");
            }
            Self::Template(t) => {
                let bodies: Vec<minijinja::Value> = events
                    .iter()
                    .map(|e| match &e.body {
                        PreparedBody::Json(b) => serde_json::from_slice::<Value>(b)
                            .map_or(minijinja::Value::UNDEFINED, |v| {
                                minijinja::Value::from_serialize(&v)
                            }),
                        PreparedBody::Raw(b) => {
                            minijinja::Value::from(String::from_utf8_lossy(b).into_owned())
                        }
                        PreparedBody::None => minijinja::Value::from(()),
                    })
                    .collect();
                let scope = std::sync::Arc::new(SecretScope {
                    secrets: ctx.secrets.clone(),
                    used: std::sync::Mutex::default(),
                });
                let c = template::context_with(
                    &scope,
                    vec![
                        ("bodies", minijinja::Value::from(bodies)),
                        ("count", minijinja::Value::from(events.len())),
                    ],
                );
                let rendered = templates.render(t, &c);
                used.extend(
                    scope
                        .used
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .iter()
                        .cloned(),
                );
                out = rendered.map_err(|e| e.to_string())?.into_bytes();
            }
        }
        Ok(out)
    }
}

struct Open {
    events: Vec<PreparedEvent>,
    bytes: usize,
    group: usize,
    key: String,
    seq: usize,
}

/// A short digest of what a group's events share.
fn route_key(r: &Route) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(r.method.as_str());
    h.update(b"\n");
    h.update(&r.url);
    for (n, v) in &r.headers {
        h.update(b"\n");
        h.update(n);
        h.update(b":");
        h.update(v);
    }
    hex::encode(&h.finalize()[..6])
}

/// Streams prepared events into batches; memory holds only the open batches.
pub struct Batcher {
    limits: Option<(usize, usize, CompiledEnvelope)>,
    open: IndexMap<Route, Open>,
    groups: usize,
}

impl Batcher {
    pub fn new(batching: Option<&Batching>) -> Self {
        let limits = batching.map(|b| {
            let env = match &b.envelope {
                Envelope::Array => CompiledEnvelope::Array,
                // Only sizes matter here; `wrap` uses the destination's compiled envelope.
                Envelope::Rows(r) => CompiledEnvelope::Rows {
                    sync_mode: r.sync_mode.clone(),
                    operation: r.operation.clone(),
                    primary_key: None,
                },
                Envelope::Template(_) => CompiledEnvelope::Template(Tpl::Static(String::new())),
            };
            (b.max_events.max(1), b.max_bytes, env)
        });
        Self {
            limits,
            open: IndexMap::new(),
            groups: 0,
        }
    }

    /// Add one event; returns the batches it completed. An event larger than
    /// `max_bytes` on its own is an error for that event (never silently dropped).
    pub fn push(&mut self, p: PreparedEvent) -> Result<Vec<Batch>, (usize, String)> {
        let Some((max_events, max_bytes, env)) = &self.limits else {
            return Ok(vec![Batch {
                events: vec![p],
                note: String::new(),
                trace: None,
            }]);
        };
        let size = env.item_size(&p);
        let fixed = env.fixed_size();
        if size + fixed > *max_bytes {
            return Err((
                p.index,
                format!(
                    "event is {} bytes in the envelope, more than batching.max_bytes ({max_bytes})",
                    size + fixed
                ),
            ));
        }
        let mut done = Vec::new();
        // One lookup per event; a new route is hashed again only when it opens a group.
        let at = if let Some(at) = self.open.get_index_of(&*p.route) {
            at
        } else {
            self.groups += 1;
            let key = route_key(&p.route);
            self.open
                .insert_full(
                    (*p.route).clone(),
                    Open {
                        events: Vec::new(),
                        bytes: fixed,
                        group: self.groups,
                        key,
                        seq: 0,
                    },
                )
                .0
        };
        let Some((_, open)) = self.open.get_index_mut(at) else {
            return Ok(done);
        };
        if !open.events.is_empty() && open.bytes + size > *max_bytes {
            done.push(take(
                open,
                fixed,
                &format!("max_bytes ({max_bytes}) reached"),
                ClosedBy::ByteCap,
            ));
        }
        open.bytes += size;
        open.events.push(p);
        if open.events.len() >= *max_events {
            done.push(take(
                open,
                fixed,
                &format!("max_events ({max_events}) reached"),
                ClosedBy::EventCap,
            ));
        }
        Ok(done)
    }

    /// Flush every open batch, in the order their groups first appeared.
    pub fn finish(mut self) -> Vec<Batch> {
        let fixed = self.limits.as_ref().map_or(0, |(_, _, e)| e.fixed_size());
        let many = self.groups > 1;
        self.open
            .values_mut()
            .filter(|o| !o.events.is_empty())
            .map(|o| {
                let why = if many {
                    "end of input; other events differ in URL, method or headers"
                } else {
                    "end of input"
                };
                take(o, fixed, why, ClosedBy::EndOfInput)
            })
            .collect()
    }
}

fn take(open: &mut Open, fixed: usize, why: &str, closed_by: ClosedBy) -> Batch {
    open.seq += 1;
    let events = std::mem::take(&mut open.events);
    let note = format!(
        "group {} batch {}: {} event(s), {} bytes; closed: {why}",
        open.group,
        open.seq,
        events.len(),
        open.bytes
    );
    let trace = BatchTrace {
        group: open.group,
        group_key: open.key.clone(),
        seq: open.seq,
        events: events.len(),
        bytes: open.bytes,
        closed_by,
    };
    open.bytes = fixed;
    Batch {
        events,
        note,
        trace: Some(trace),
    }
}
