//! The preview (the developers' screen): the exact request for the current event or
//! the whole set, the signature explained, the batch trace, copy as cURL / HTTP,
//! "Send this event" with its response, and "Compare with saved".
//!
//! One event renders on the UI thread, through the same entry point delivery uses
//! (`render_list`), and only when the destination, the event or a secret changed;
//! anything over a set runs in a [`Task`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{RichText, Ui};
use serde_json::Value;

use super::HooklineApp;
use super::work::Task;
use crate::core::batch::BatchTrace;
use crate::core::events::EventList;
use crate::core::export;
use crate::core::mapping::RowTrace;
use crate::core::model::{Destination, EventSet, Signing};
use crate::core::render::{
    CompiledDestination, ConfigError, RenderCtx, RenderError, Rendered, RenderedRequest,
};
use crate::core::secret::Secrets;
use crate::runtime::{Command, JobEnd};

type Compiled = Result<Arc<CompiledDestination>, Vec<ConfigError>>;

/// The current event's render, recomputed only when its inputs change.
#[derive(Default)]
pub struct Live {
    dest: Option<Destination>,
    compiled: Option<Compiled>,
    dest_gen: u64,
    key: Option<(u64, usize, usize, bool, u64)>,
    /// The destination and set the set-wide results (set preview, coverage, compare)
    /// were computed for: when either changes they are stale and dropped.
    results_for: Option<(u64, usize)>,
    /// The request as shown (secrets redacted unless revealed).
    pub request: Option<RenderedRequest>,
    pub skipped: Option<String>,
    pub error: Option<RenderError>,
    pub trace: Vec<RowTrace>,
    /// How long the last render of the current event took (request and trace).
    pub took: Duration,
}

impl Live {
    pub fn compiled(&self) -> Option<&Compiled> {
        self.compiled.as_ref()
    }
}

/// Compile the selected destination if it changed, and render the current event if
/// anything it depends on changed.
pub fn refresh(app: &mut HooklineApp) {
    let Some(d) = app.destination() else {
        app.live = Live::default();
        return;
    };
    if app.live.dest.as_ref() != Some(d) {
        let d = d.clone();
        app.live.compiled = Some(CompiledDestination::compile(&d).map(Arc::new));
        app.live.dest = Some(d);
        app.live.dest_gen += 1;
    }
    let set_id = app.event_set().map_or(0, |s| Arc::as_ptr(s) as usize);
    let key = (
        app.live.dest_gen,
        set_id,
        app.event_index,
        app.reveal,
        app.secrets_gen,
    );
    if app.live.results_for != Some((key.0, key.1)) {
        app.live.results_for = Some((key.0, key.1));
        app.set_preview = None;
        app.set_request = None;
        app.coverage = None;
        app.compare = None;
    }
    if app.live.key == Some(key) {
        return;
    }
    app.live.key = Some(key);
    let started = Instant::now();
    app.live.request = None;
    app.live.skipped = None;
    app.live.error = None;
    app.live.trace.clear();
    let Some(Ok(compiled)) = app.live.compiled.clone() else {
        return;
    };
    let Some(event) = app.current_event().cloned() else {
        return;
    };
    let ctx = RenderCtx::new(app.secrets.clone());
    app.live.trace = compiled.trace_mapping(&event, &ctx);
    let report = compiled.render_list(&EventList::Values(vec![event]), &ctx);
    if let Some(r) = report.requests.into_iter().next() {
        app.live.request = Some(if app.reveal { r } else { r.redacted() });
    }
    app.live.skipped = report.skipped.into_iter().next().map(|(_, why)| why);
    app.live.error = report.errors.into_iter().next().map(|(_, e)| e);
    app.live.took = started.elapsed();
}

/// The selected destination's configuration errors (none when it compiles).
pub fn config_errors(app: &mut HooklineApp) -> Vec<ConfigError> {
    refresh(app);
    match app.live.compiled() {
        Some(Err(e)) => e.clone(),
        _ => Vec::new(),
    }
}

/// One request of a whole-set preview.
#[derive(Debug, Clone)]
pub struct RequestSummary {
    pub method: String,
    pub url: String,
    pub events: Vec<usize>,
    pub bytes: usize,
    pub batch: Option<BatchTrace>,
    /// The request itself, redacted, for the first [`KEEP_REQUESTS`] requests whose
    /// body is at most [`KEEP_BODY`] bytes, up to [`KEEP_TOTAL`] bytes in all (the rest
    /// are summarised only).
    pub shown: Option<Box<RenderedRequest>>,
}

/// How many requests of a set preview are kept whole, to be opened from the trace.
pub const KEEP_REQUESTS: usize = 500;
/// The largest body a kept request may have.
pub const KEEP_BODY: usize = 1 << 20;
/// The most body bytes kept over all requests of one set preview.
pub const KEEP_TOTAL: usize = 16 << 20;

/// A whole set rendered in the background.
#[derive(Debug, Default)]
pub struct SetPreview {
    pub requests: Vec<RequestSummary>,
    pub skipped: Vec<(usize, String)>,
    pub errors: Vec<(usize, String)>,
    pub events: usize,
    pub config_error: Option<String>,
}

/// Compile for work over a whole set: the configuration errors as one message.
pub fn compile(dest: &Destination) -> Result<CompiledDestination, String> {
    CompiledDestination::compile(dest).map_err(|errs| {
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Render a whole set (what `send` would send), summarised.
pub fn render_set(dest: &Destination, set: &EventSet, secrets: Secrets) -> SetPreview {
    let compiled = match compile(dest) {
        Ok(c) => c,
        Err(e) => {
            return SetPreview {
                config_error: Some(e),
                ..SetPreview::default()
            };
        }
    };
    let ctx = RenderCtx::new(secrets);
    let events = EventList::Values(set.events.clone());
    let mut out = SetPreview {
        events: set.events.len(),
        ..SetPreview::default()
    };
    let mut kept = 0usize;
    compiled.render_stream(&events, &ctx, |item| match item {
        Rendered::Request(r) => {
            let bytes = r.body.as_ref().map_or(0, Vec::len);
            let keep = out.requests.len() < KEEP_REQUESTS
                && bytes <= KEEP_BODY
                && kept + bytes <= KEEP_TOTAL;
            if keep {
                kept += bytes;
            }
            out.requests.push(RequestSummary {
                method: r.method.as_str().to_owned(),
                url: r.redacted_url(),
                bytes,
                events: r.events.clone(),
                batch: r.batch.clone(),
                shown: keep.then(|| Box::new(r.redacted())),
            });
        }
        Rendered::Skipped(i, why) => out.skipped.push((i, why)),
        Rendered::Error(i, e) => out.errors.push((i, e.to_string())),
    });
    out
}

/// One request that differs between the saved and the edited destination.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub index: usize,
    pub url: Option<(String, String)>,
    /// `- name: value` / `+ name: value` lines.
    pub headers: Vec<String>,
    /// Unified diff lines of the body.
    pub body: Vec<String>,
}

/// "Compare with saved": the set rendered by both versions of the destination.
#[derive(Debug, Default)]
pub struct Comparison {
    pub saved: (usize, usize, usize),
    pub edited: (usize, usize, usize),
    pub changes: Vec<Change>,
    pub unchanged: usize,
    pub problem: Option<String>,
}

fn render_all(
    dest: &Destination,
    events: &EventList,
    secrets: &Secrets,
    now: i64,
) -> Result<crate::core::render::RenderReport, String> {
    let compiled = compile(dest)?;
    let mut ctx = RenderCtx::new(secrets.clone());
    ctx.now = Some(now);
    Ok(compiled.render_list(events, &ctx))
}

fn body_text(r: &RenderedRequest) -> String {
    let Some(b) = &r.body else {
        return String::new();
    };
    match serde_json::from_slice::<Value>(b) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// Compare the requests two versions of a destination make from one set, at one
/// instant (so timestamps agree), redacted.
pub fn compare(
    saved: &Destination,
    edited: &Destination,
    set: &EventSet,
    secrets: &Secrets,
) -> Comparison {
    let events = EventList::Values(set.events.clone());
    let now = chrono::Utc::now().timestamp();
    let (a, b) = match (
        render_all(saved, &events, secrets, now),
        render_all(edited, &events, secrets, now),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) => {
            return Comparison {
                problem: Some(format!("the saved destination does not compile: {e}")),
                ..Comparison::default()
            };
        }
        (_, Err(e)) => {
            return Comparison {
                problem: Some(format!("the edited destination does not compile: {e}")),
                ..Comparison::default()
            };
        }
    };
    let mut out = Comparison {
        saved: (a.requests.len(), a.skipped.len(), a.errors.len()),
        edited: (b.requests.len(), b.skipped.len(), b.errors.len()),
        ..Comparison::default()
    };
    let n = a.requests.len().max(b.requests.len());
    for i in 0..n {
        let ra = a.requests.get(i).map(RenderedRequest::redacted);
        let rb = b.requests.get(i).map(RenderedRequest::redacted);
        let mut c = Change {
            index: i,
            ..Change::default()
        };
        let url = |r: &Option<RenderedRequest>| {
            r.as_ref().map_or_else(
                || "(no request)".to_owned(),
                |r| format!("{} {}", r.method.as_str(), r.url),
            )
        };
        let (ua, ub) = (url(&ra), url(&rb));
        if ua != ub {
            c.url = Some((ua, ub));
        }
        let headers = |r: &Option<RenderedRequest>| -> Vec<String> {
            r.as_ref()
                .map(|r| r.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect())
                .unwrap_or_default()
        };
        let (ha, hb) = (headers(&ra), headers(&rb));
        for h in &ha {
            if !hb.contains(h) {
                c.headers.push(format!("- {h}"));
            }
        }
        for h in &hb {
            if !ha.contains(h) {
                c.headers.push(format!("+ {h}"));
            }
        }
        let ba = ra.as_ref().map(body_text).unwrap_or_default();
        let bb = rb.as_ref().map(body_text).unwrap_or_default();
        if ba != bb {
            let diff = similar::TextDiff::from_lines(&ba, &bb);
            for change in diff.iter_all_changes() {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => "-",
                    similar::ChangeTag::Insert => "+",
                    similar::ChangeTag::Equal => continue,
                };
                c.body.push(format!("{sign} {}", change.value().trim_end()));
            }
        }
        if c.url.is_none() && c.headers.is_empty() && c.body.is_empty() {
            out.unchanged += 1;
        } else {
            out.changes.push(c);
        }
    }
    out
}

pub fn preview_ui(app: &mut HooklineApp, ui: &mut Ui) {
    refresh(app);
    egui::ScrollArea::vertical()
        .id_salt("preview")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            event_bar_ui(app, ui);
            ui.separator();
            if let Some(Err(errs)) = app.live.compiled() {
                ui.label(RichText::new("This destination has errors:").strong());
                for e in errs.clone() {
                    super::widgets::error(ui, &format!("{}: {}", e.field, e.message));
                }
            }
            ui.checkbox(&mut app.reveal, "Reveal secrets");
            one_request_ui(app, ui);
            ui.separator();
            probe_ui(app, ui);
            ui.separator();
            set_ui(app, ui);
            ui.separator();
            compare_ui(app, ui);
        });
}

/// Which set and event is showing, with ←/→.
pub fn event_bar_ui(app: &mut HooklineApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        let names: Vec<String> = app.doc.sets.iter().map(|s| s.name.clone()).collect();
        let current = app
            .selected_set
            .and_then(|i| names.get(i).cloned())
            .unwrap_or_else(|| "(no event set)".into());
        let l = ui.label("Event set");
        let mut pick = app.selected_set;
        egui::ComboBox::from_id_salt("event-set")
            .selected_text(current)
            .show_ui(ui, |ui| {
                for (i, n) in names.iter().enumerate() {
                    ui.selectable_value(&mut pick, Some(i), n);
                }
            })
            .response
            .labelled_by(l.id);
        if pick != app.selected_set {
            app.selected_set = pick;
            app.event_index = 0;
        }
        let n = app.event_set().map_or(0, |s| s.events.len());
        if ui.button("◀ Previous event").clicked() {
            app.step_event(-1);
        }
        ui.label(if n == 0 {
            "no events".to_owned()
        } else {
            format!("Event {} of {n}", app.event_index + 1)
        });
        if ui.button("Next event ▶").clicked() {
            app.step_event(1);
        }
    });
}

fn one_request_ui(app: &mut HooklineApp, ui: &mut Ui) {
    if let Some(why) = &app.live.skipped {
        ui.label(format!("This event is skipped by the trigger: {why}"));
    }
    if let Some(e) = app.live.error.clone() {
        super::widgets::error(ui, &e.message);
        if let crate::core::render::RenderErrorKind::MissingSecret { name } = &e.kind {
            missing_secret_ui(app, ui, name);
        }
    }
    let Some(r) = app.live.request.clone() else {
        if app.current_event().is_none() {
            ui.label("Pick an event set with events to see the request.");
        }
        return;
    };
    ui.label(
        RichText::new(format!("{} {}", r.method.as_str(), r.url))
            .monospace()
            .strong(),
    );
    egui::Grid::new("headers").striped(true).show(ui, |ui| {
        for (k, v) in &r.headers {
            ui.label(RichText::new(k).monospace());
            ui.label(RichText::new(v).monospace());
            ui.end_row();
        }
    });
    let bytes = r.body.as_ref().map_or(0, Vec::len);
    ui.horizontal(|ui| {
        ui.label(format!("Body: {bytes} bytes"));
        ui.checkbox(&mut app.raw_body, "Raw body");
        if ui.button("Copy as cURL").clicked() {
            ui.ctx().copy_text(export::to_curl(&r));
        }
        if ui.button("Copy as HTTP").clicked() {
            ui.ctx().copy_text(export::to_http(&r));
        }
    });
    if let Some(b) = &r.body {
        let text = if app.raw_body {
            String::from_utf8_lossy(b).into_owned()
        } else {
            body_text(&r)
        };
        let mut shown = text.as_str();
        let l = ui.label("Request body");
        ui.add(
            egui::TextEdit::multiline(&mut shown)
                .code_editor()
                .desired_width(f32::INFINITY),
        )
        .labelled_by(l.id);
    }
    if let Some(b) = &r.batch {
        ui.label(format!(
            "Batch {} of group {} ({} events, {} bytes), closed by {}",
            b.seq,
            b.group,
            b.events,
            b.bytes,
            b.closed_by.as_str()
        ));
    }
    if let Some(d) = app.destination().cloned() {
        signature_ui(ui, &d, &r);
    }
}

/// Set a missing secret right where its absence shows.
fn missing_secret_ui(app: &mut HooklineApp, ui: &mut Ui, name: &str) {
    ui.horizontal(|ui| {
        let input = app.secret_input.entry(name.to_owned()).or_default();
        super::widgets::secret_value(ui, name, input);
        if ui
            .add_enabled(!input.is_empty(), egui::Button::new(format!("Set {name}")))
            .clicked()
        {
            let value = crate::core::secret::Secret::new(std::mem::take(input));
            app.secret_state
                .insert(name.to_owned(), super::SecretState::Loading);
            app.command(Command::SetSecret {
                name: name.to_owned(),
                value,
            });
        }
    });
}

/// The signature explained: algorithm, secret, the exact bytes signed, the result,
/// and a verifier to copy.
fn signature_ui(ui: &mut Ui, d: &Destination, r: &RenderedRequest) {
    let body = r.body.as_deref().unwrap_or_default();
    let body_text = String::from_utf8_lossy(body);
    match &d.signing {
        Signing::None => {}
        Signing::Hmac {
            algorithm,
            encoding,
            header,
            prefix,
            secret,
        } => {
            ui.collapsing("Signature explained", |ui| {
                let alg = match algorithm {
                    crate::core::model::HmacAlgorithm::Sha1 => "sha1",
                    crate::core::model::HmacAlgorithm::Sha256 => "sha256",
                };
                let enc = match encoding {
                    crate::core::model::SignatureEncoding::Hex => "hex",
                    crate::core::model::SignatureEncoding::Base64 => "base64",
                };
                ui.label(format!("HMAC-{} of the body, {enc}-encoded, with secret “{secret}”, in header {header}{}", alg.to_uppercase(), if prefix.is_empty() { String::new() } else { format!(" after the prefix “{prefix}”") }));
                ui.label(format!("Signed bytes ({} bytes, exactly the body):", body.len()));
                ui.label(RichText::new(body_text.as_ref()).monospace());
                ui.label(format!("Result: {}", r.header(header).unwrap_or("(not set)")));
                let digest = if enc == "hex" { ".hexdigest()" } else { ".digest()).decode()" };
                let open = if enc == "hex" { "" } else { "base64.b64encode(" };
                let snippet = format!(
                    "import hmac, hashlib, base64\n# body: the raw request body bytes; secret: the value of “{secret}”\nexpected = \"{prefix}\" + {open}hmac.new(secret.encode(), body, hashlib.{alg}){digest}\nok = hmac.compare_digest(expected, request.headers[\"{header}\"])"
                );
                ui.label(RichText::new(&snippet).monospace());
                if ui.button("Copy verifier").clicked() {
                    ui.ctx().copy_text(snippet);
                }
            });
        }
        Signing::StandardWebhooks { secret } => {
            ui.collapsing("Signature explained", |ui| {
                let id = r.header("webhook-id").unwrap_or("");
                let ts = r.header("webhook-timestamp").unwrap_or("");
                ui.label(format!("Standard Webhooks: HMAC-SHA256 with the Base64 key of “{secret}” (after whsec_), over id.timestamp.body"));
                ui.label("Signed string:");
                ui.label(RichText::new(format!("{id}.{ts}.{body_text}")).monospace());
                ui.label(format!(
                    "Result (webhook-signature): {}",
                    r.header("webhook-signature").unwrap_or("(not set)")
                ));
                let snippet = "from standardwebhooks.webhooks import Webhook\n# secret: the value of the signing secret (whsec_…)\nWebhook(secret).verify(body, request.headers)  # raises if invalid".to_owned();
                ui.label(RichText::new(&snippet).monospace());
                if ui.button("Copy verifier").clicked() {
                    ui.ctx().copy_text(snippet);
                }
            });
        }
    }
}

fn probe_ui(app: &mut HooklineApp, ui: &mut Ui) {
    // Only what the preview shows can be sent: not a skipped event, not a failed render.
    let can = app.live.request.is_some();
    let running = app.probe.as_ref().is_some_and(|p| p.end.is_none());
    ui.horizontal(|ui| {
        if ui
            .add_enabled(can && !running, egui::Button::new("Send this event"))
            .clicked()
            && let (Some(d), Some(ev)) = (app.destination().cloned(), app.current_event().cloned())
        {
            let job = uuid::Uuid::new_v4().to_string();
            app.probe = Some(super::Probe {
                job: job.clone(),
                ..super::Probe::default()
            });
            app.command(Command::Probe {
                job,
                destination: Box::new(d),
                event: ev,
            });
        }
        if running {
            ui.spinner();
            ui.label("Sending…");
        }
    });
    let Some(p) = &app.probe else {
        return;
    };
    for a in &p.attempts {
        let head = match (a.status, &a.error) {
            (Some(s), _) => format!(
                "Attempt {}: HTTP {s} in {}",
                a.attempt,
                millis(a.latency_ms)
            ),
            (None, Some(e)) => format!("Attempt {}: {e} after {}", a.attempt, millis(a.latency_ms)),
            (None, None) => format!("Attempt {}", a.attempt),
        };
        ui.label(RichText::new(head).strong());
        if let Some((_, wait, reason)) = p.retries.iter().find(|(n, _, _)| *n == a.attempt) {
            ui.label(format!(
                "Retried after {:.1} s: {reason}",
                wait.as_secs_f64()
            ));
        }
        ui.collapsing(format!("Response headers of attempt {}", a.attempt), |ui| {
            for (k, v) in &a.response_headers {
                ui.label(RichText::new(format!("{k}: {v}")).monospace());
            }
        });
        if !a.response_body.is_empty() {
            let text = match serde_json::from_slice::<Value>(&a.response_body) {
                Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
                Err(_) => String::from_utf8_lossy(&a.response_body).into_owned(),
            };
            ui.label(RichText::new(text).monospace());
        }
    }
    if let Some(e) = &p.error {
        super::widgets::error(ui, e);
    }
    match &p.end {
        Some(JobEnd::Done(_)) => {
            ui.label("Delivered.");
        }
        Some(JobEnd::Failed { error, .. }) => {
            super::widgets::error(
                ui,
                &format!(
                    "Not delivered{}",
                    error.as_ref().map_or(String::new(), |e| format!(": {e}"))
                ),
            );
        }
        Some(JobEnd::Cancelled(_)) => {
            ui.label("Cancelled.");
        }
        None => {}
    }
}

fn set_ui(app: &mut HooklineApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        if ui.button("Preview the whole set").clicked()
            && let (Some(d), Some(s)) = (app.destination().cloned(), app.event_set().cloned())
        {
            let secrets = app.secrets.clone();
            app.set_request = None;
            app.set_preview = Some(Task::spawn(Some(ui.ctx()), move || {
                render_set(&d, &s, secrets)
            }));
        }
        if app.set_preview.as_ref().is_some_and(|t| !t.done()) {
            ui.spinner();
        }
    });
    let Some(task) = app.set_preview.as_mut() else {
        return;
    };
    let took = task.took;
    let Some(p) = task.get() else {
        return;
    };
    if let Some(e) = &p.config_error {
        super::widgets::error(ui, e);
        return;
    }
    ui.label(format!(
        "{} events give {} requests, {} skipped, {} failed{}",
        p.events,
        p.requests.len(),
        p.skipped.len(),
        p.errors.len(),
        took.map_or(String::new(), |t| format!(
            " (rendered in {} ms)",
            t.as_millis()
        ))
    ));
    ui.label(RichText::new("Batch trace").strong());
    egui::Grid::new("batch-trace").striped(true).show(ui, |ui| {
        ui.label("Request");
        ui.label("Events");
        ui.label("Bytes");
        ui.label("Group");
        ui.label("Closed by");
        ui.end_row();
        for (i, r) in p.requests.iter().take(KEEP_REQUESTS).enumerate() {
            if ui
                .selectable_label(app.set_request == Some(i), format!("Request {}", i + 1))
                .on_hover_text("Show this request")
                .clicked()
            {
                app.set_request = (app.set_request != Some(i)).then_some(i);
            }
            ui.label(event_range(&r.events));
            ui.label(r.bytes.to_string());
            if let Some(b) = &r.batch {
                ui.label(format!("{} #{}", b.group, b.seq));
                ui.label(b.closed_by.as_str());
            } else {
                ui.label("-");
                ui.label("one event per request");
            }
            ui.end_row();
        }
    });
    if p.requests.len() > KEEP_REQUESTS {
        ui.label(format!(
            "… and {} more requests",
            p.requests.len() - KEEP_REQUESTS
        ));
    }
    if let Some(i) = app.set_request
        && let Some(r) = p.requests.get(i)
    {
        ui.label(RichText::new(format!("Request {} of the set", i + 1)).strong());
        match &r.shown {
            Some(req) => request_ui(ui, req, &format!("Body of request {}", i + 1)),
            None => {
                ui.label(format!(
                    "{} {} — {} bytes, too large to keep here; Copy as cURL from a single event, or `hookline render`.",
                    r.method, r.url, r.bytes
                ));
            }
        }
    }
    for (i, why) in p.skipped.iter().take(100) {
        ui.label(format!("Event {}: skipped: {why}", i + 1));
    }
    for (i, e) in p.errors.iter().take(100) {
        super::widgets::error(ui, &format!("Event {}: {e}", i + 1));
    }
}

/// A kept request of a set preview: line, headers, pretty body, copy.
fn request_ui(ui: &mut Ui, r: &RenderedRequest, body_label: &str) {
    ui.label(RichText::new(format!("{} {}", r.method.as_str(), r.url)).monospace());
    for (k, v) in &r.headers {
        ui.label(RichText::new(format!("{k}: {v}")).monospace());
    }
    let text = body_text(r);
    let mut shown = text.as_str();
    let l = ui.label(body_label);
    ui.add(
        egui::TextEdit::multiline(&mut shown)
            .code_editor()
            .desired_width(f32::INFINITY),
    )
    .labelled_by(l.id);
    if ui.button("Copy this request as cURL").clicked() {
        ui.ctx().copy_text(export::to_curl(r));
    }
}

/// `1–1000` for consecutive indices (shown 1-based), else a short list.
fn event_range(events: &[usize]) -> String {
    match (events.first(), events.last()) {
        (Some(a), Some(b))
            if b.checked_sub(*a).map(|d| d + 1) == Some(events.len()) && events.len() > 1 =>
        {
            format!("{}–{}", a + 1, b + 1)
        }
        _ => events
            .iter()
            .take(5)
            .map(|i| (i + 1).to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn compare_ui(app: &mut HooklineApp, ui: &mut Ui) {
    let saved = app.destination().and_then(|d| {
        app.saved
            .destinations
            .iter()
            .find(|s| (!d.id.is_empty() && s.id == d.id) || (d.id.is_empty() && s.name == d.name))
            .cloned()
    });
    ui.horizontal(|ui| {
        let ok = saved.is_some() && app.event_set().is_some();
        if ui
            .add_enabled(ok, egui::Button::new("Compare with saved"))
            .on_disabled_hover_text("needs a saved version of this destination and an event set")
            .clicked()
            && let (Some(old), Some(new), Some(set)) = (
                saved.clone(),
                app.destination().cloned(),
                app.event_set().cloned(),
            )
        {
            let secrets = app.secrets.clone();
            app.compare = Some(Task::spawn(Some(ui.ctx()), move || {
                compare(&old, &new, &set, &secrets)
            }));
        }
        if app.compare.as_ref().is_some_and(|t| !t.done()) {
            ui.spinner();
        }
    });
    let Some(task) = app.compare.as_mut() else {
        return;
    };
    let Some(c) = task.get() else {
        return;
    };
    if let Some(p) = &c.problem {
        super::widgets::error(ui, p);
        return;
    }
    ui.label(format!(
        "Saved: {} requests, {} skipped, {} failed · Edited: {} requests, {} skipped, {} failed · {} changed, {} unchanged",
        c.saved.0, c.saved.1, c.saved.2, c.edited.0, c.edited.1, c.edited.2, c.changes.len(), c.unchanged
    ));
    for ch in c.changes.iter().take(200) {
        ui.collapsing(format!("Request {} changed", ch.index + 1), |ui| {
            if let Some((a, b)) = &ch.url {
                ui.label(RichText::new(format!("- {a}\n+ {b}")).monospace());
            }
            for h in &ch.headers {
                ui.label(RichText::new(h).monospace());
            }
            for l in &ch.body {
                ui.label(RichText::new(l).monospace());
            }
        });
    }
}

/// A latency as people read it: whole milliseconds, and "< 1 ms" for a local answer
/// rather than a puzzling "0 ms".
fn millis(ms: f64) -> String {
    if ms < 1.0 {
        "< 1 ms".to_owned()
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod latency_tests {
    #[test]
    fn sub_millisecond_latencies_do_not_read_as_zero() {
        assert_eq!(super::millis(0.3), "< 1 ms");
        assert_eq!(super::millis(1.4), "1 ms");
        assert_eq!(super::millis(1015.0), "1015 ms");
    }
}
