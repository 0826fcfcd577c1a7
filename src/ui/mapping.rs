//! The mapping designer (the analysts' screen): the sample event as a tree (click a
//! leaf to map it), the mapping rows with what each produced for this event, the
//! rendered body, and coverage over the whole set.

use egui::{RichText, Ui};
use egui_json_tree::render::{DefaultRender, RenderContext};
use egui_json_tree::{DefaultExpand, JsonTree};
use serde_json::Value;

use super::HooklineApp;
use super::widgets;
use super::work::Task;
use crate::core::mapping::RowOutcome;
use crate::core::model::{Destination, EventSet, MappingRow};
use crate::core::render::{CompiledDestination, RenderCtx};
use crate::core::secret::Secrets;

/// The transforms the picker offers (the engine's names).
pub const TRANSFORMS: [&str; 10] = [
    "string",
    "number",
    "bool",
    "lowercase",
    "uppercase",
    "trim",
    "sha256",
    "json",
    "date:%Y-%m-%d",
    "date:%Y-%m-%dT%H:%M:%SZ",
];

/// Per-row counts over a set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowCoverage {
    pub target: String,
    pub value: usize,
    pub defaulted: usize,
    pub missing: usize,
    pub null: usize,
    pub error: usize,
    /// The first error's message, with the (1-based) event it came from.
    pub first_error: Option<(usize, String)>,
}

#[derive(Debug, Default)]
pub struct Coverage {
    pub events: usize,
    pub rows: Vec<RowCoverage>,
    pub problem: Option<String>,
}

/// Trace every row over every event of a set.
pub fn coverage(dest: &Destination, set: &EventSet, secrets: Secrets) -> Coverage {
    let compiled = match super::preview::compile(dest) {
        Ok(c) => c,
        Err(e) => {
            return Coverage {
                problem: Some(e),
                ..Coverage::default()
            };
        }
    };
    let ctx = RenderCtx::new(secrets);
    let empty: Vec<RowCoverage> = dest
        .mapping
        .iter()
        .map(|r| RowCoverage {
            target: r.target.clone(),
            ..RowCoverage::default()
        })
        .collect();
    // Chunks of the set on every core, merged in order.
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8);
    let chunk = set.events.len().div_ceil(threads).max(1);
    let parts: Vec<Vec<RowCoverage>> = std::thread::scope(|s| {
        let handles: Vec<_> = set
            .events
            .chunks(chunk)
            .enumerate()
            .map(|(n, evs)| {
                let (compiled, ctx, mut rows) = (&compiled, &ctx, empty.clone());
                s.spawn(move || {
                    count(compiled, ctx, evs, n * chunk, &mut rows);
                    rows
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut rows = empty;
    for part in parts {
        for (r, p) in rows.iter_mut().zip(part) {
            r.value += p.value;
            r.defaulted += p.defaulted;
            r.missing += p.missing;
            r.null += p.null;
            r.error += p.error;
            if r.first_error.is_none() {
                r.first_error = p.first_error;
            }
        }
    }
    Coverage {
        events: set.events.len(),
        rows,
        problem: None,
    }
}

/// Count the outcomes of `events` (the first at index `offset` of the set).
fn count(
    compiled: &CompiledDestination,
    ctx: &RenderCtx,
    events: &[Value],
    offset: usize,
    rows: &mut [RowCoverage],
) {
    for (k, ev) in events.iter().enumerate() {
        let i = offset + k;
        for t in compiled.trace_mapping(ev, ctx) {
            let Some(c) = rows.get_mut(t.index) else {
                continue;
            };
            match t.outcome {
                RowOutcome::Value(_) => c.value += 1,
                RowOutcome::Defaulted(_) => c.defaulted += 1,
                RowOutcome::Missing => c.missing += 1,
                RowOutcome::Null => c.null += 1,
                RowOutcome::Error(m) => {
                    c.error += 1;
                    if c.first_error.is_none() {
                        c.first_error = Some((i + 1, m));
                    }
                }
            }
        }
    }
}

/// A JSON pointer into `event` as an RFC 9535 path (`$.context.traits.email`,
/// `$.items[0].sku`, `$['odd key']`).
pub fn pointer_to_path(event: &Value, pointer: &str) -> String {
    let mut out = String::from("$");
    let mut at = Some(event);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(a)) if seg.parse::<usize>().is_ok() => {
                let i: usize = seg.parse().unwrap_or(0);
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
                at = a.get(i);
            }
            other => {
                let plain = !seg.is_empty()
                    && seg
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if plain {
                    out.push('.');
                    out.push_str(&seg);
                } else {
                    out.push_str("['");
                    out.push_str(&seg.replace('\\', "\\\\").replace('\'', "\\'"));
                    out.push_str("']");
                }
                at = match other {
                    Some(Value::Object(m)) => m.get(&seg),
                    _ => None,
                };
            }
        }
    }
    out
}

/// The target a new row for `pointer` gets: its last key, made unique.
fn target_for(pointer: &str, rows: &[MappingRow]) -> String {
    let base = pointer
        .rsplit('/')
        .find(|s| !s.is_empty() && s.parse::<usize>().is_err())
        .unwrap_or("field")
        .replace("~1", "_")
        .replace("~0", "_")
        .replace(['.', '[', ']'], "_");
    let taken = |t: &str| rows.iter().any(|r| r.target == t);
    if !taken(&base) {
        return base;
    }
    (2..=rows.len() + 2)
        .map(|i| format!("{base}_{i}"))
        .find(|t| !taken(t))
        .unwrap_or(base)
}

/// Text shown for an optional value (strings without quotes).
fn value_text(v: Option<&Value>) -> String {
    match v {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// A typed value back: JSON when it parses as a non-string, else the text.
fn parse_value(text: &str) -> Option<Value> {
    if text.is_empty() {
        return None;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) if !v.is_string() => Some(v),
        _ => Some(Value::String(text.to_owned())),
    }
}

pub fn mapping_ui(app: &mut HooklineApp, ui: &mut Ui) {
    super::preview::refresh(app);
    super::preview::event_bar_ui(app, ui);
    ui.separator();
    egui::Panel::left("mapping-tree")
        .resizable(true)
        .default_size(300.0)
        .show(ui, |ui| {
            egui::ScrollArea::both()
                .id_salt("tree")
                .auto_shrink([false, false])
                .show(ui, |ui| tree_ui(app, ui));
        });
    egui::Panel::right("mapping-output")
        .resizable(true)
        .default_size(320.0)
        .show(ui, |ui| {
            egui::ScrollArea::both()
                .id_salt("output")
                .auto_shrink([false, false])
                .show(ui, |ui| output_ui(app, ui));
        });
    egui::CentralPanel::default().show(ui, |ui| {
        egui::ScrollArea::both()
            .id_salt("rows")
            .auto_shrink([false, false])
            .show_viewport(ui, |ui, viewport| rows_ui(app, ui, viewport));
    });
}

fn tree_ui(app: &mut HooklineApp, ui: &mut Ui) {
    ui.label(RichText::new("Event").strong());
    ui.horizontal(|ui| {
        let l = ui.label("Search event");
        ui.text_edit_singleline(&mut app.tree_search)
            .labelled_by(l.id);
    });
    let Some(event) = app.current_event().cloned() else {
        ui.label("No event: import a file or pick an event set.");
        return;
    };
    ui.label("Click a value to map it.");
    let mut picked: Option<String> = None;
    let expand = if app.tree_search.is_empty() {
        DefaultExpand::All
    } else {
        DefaultExpand::SearchResults(&app.tree_search)
    };
    JsonTree::new(egui::Id::new("event-tree"), &event)
        .default_expand(expand)
        .on_render(|ui, ctx| {
            if let RenderContext::BaseValue(c) = ctx {
                if c.render_default(ui)
                    .on_hover_text("Click to add a mapping row")
                    .clicked()
                {
                    picked = Some(c.pointer.to_json_pointer_string());
                }
            } else {
                ctx.render_default(ui);
            }
        })
        .show(ui);
    if let Some(pointer) = picked
        && let Some(d) = app.destination_mut()
    {
        let path = pointer_to_path(&event, &pointer);
        let target = target_for(&pointer, &d.mapping);
        d.mapping.push(MappingRow {
            target,
            source: Some(path),
            ..MappingRow::default()
        });
        if !matches!(
            d.body,
            crate::core::model::Body::Mapped | crate::core::model::Body::Form
        ) && d.mapping.len() == 1
        {
            d.body = crate::core::model::Body::Mapped;
        }
        app.record_edit();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Path,
    Literal,
    Template,
}

/// The rows laid out only where the viewport shows them: a 200-row mapping costs
/// what the dozen visible rows cost. Hidden rows keep the height they last had.
fn rows_ui(app: &mut HooklineApp, ui: &mut Ui, viewport: egui::Rect) {
    ui.label(RichText::new("Mapping rows").strong());
    let errors = super::preview::config_errors(app);
    let trace = app.live.trace.clone();
    let Some(mut rows) = app.destination().map(|d| d.mapping.clone()) else {
        return;
    };
    let mut remove = None;
    let mut moved: Option<(usize, usize)> = None;
    let n = rows.len();
    app.row_heights.resize(n, 90.0);
    let origin = ui.min_rect().min.y;
    for (i, row) in rows.iter_mut().enumerate() {
        let top = ui.cursor().min.y - origin;
        let height = app.row_heights[i];
        if top + height < viewport.min.y || top > viewport.max.y {
            ui.allocate_space(egui::vec2(ui.available_width(), height));
            continue;
        }
        let frame = egui::Frame::group(ui.style()).show(ui, |ui| {
            // Wraps in a narrow column, so the row's buttons never slide out of view.
            ui.horizontal_wrapped(|ui| {
                ui.dnd_drag_source(egui::Id::new(("row-drag", i)), i, |ui| {
                    ui.label("☰").on_hover_text("Drag to reorder");
                });
                ui.label(format!("{}", i + 1));
                widgets::cell(ui, &mut row.target, &format!("Row {} target", i + 1), 110.0);
                let kind = if row.template.is_some() {
                    Kind::Template
                } else if row.literal.is_some() && row.source.is_none() {
                    Kind::Literal
                } else {
                    Kind::Path
                };
                let mut pick = kind;
                let combo = egui::ComboBox::from_id_salt(("row-kind", i))
                    .selected_text(match kind {
                        Kind::Path => "path",
                        Kind::Literal => "literal",
                        Kind::Template => "template",
                    })
                    .width(80.0)
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut pick, Kind::Path, "path");
                        ui.selectable_value(&mut pick, Kind::Literal, "literal");
                        ui.selectable_value(&mut pick, Kind::Template, "template");
                    });
                widgets::name(ui, &combo.response, &format!("Row {} source kind", i + 1));
                if pick != kind {
                    let text = row
                        .source
                        .take()
                        .or_else(|| row.template.take())
                        .or_else(|| row.literal.take().map(|v| value_text(Some(&v))))
                        .unwrap_or_default();
                    match pick {
                        Kind::Path => row.source = Some(text),
                        Kind::Literal => row.literal = Some(Value::String(text)),
                        Kind::Template => row.template = Some(text),
                    }
                }
                let label = format!("Row {} source", i + 1);
                match pick {
                    Kind::Path => {
                        let s = row.source.get_or_insert_with(String::new);
                        widgets::cell(ui, s, &label, 180.0);
                    }
                    Kind::Template => {
                        let s = row.template.get_or_insert_with(String::new);
                        widgets::cell(ui, s, &label, 180.0);
                    }
                    Kind::Literal => {
                        let mut s = value_text(row.literal.as_ref());
                        if widgets::cell(ui, &mut s, &label, 180.0).changed() {
                            row.literal =
                                Some(parse_value(&s).unwrap_or(Value::String(String::new())));
                        }
                    }
                }
                if ui
                    .add_enabled(i > 0, egui::Button::new("Up"))
                    .on_hover_text(format!("Move row {} up", i + 1))
                    .clicked()
                {
                    moved = Some((i, i - 1));
                }
                if ui
                    .add_enabled(i + 1 < n, egui::Button::new("Down"))
                    .on_hover_text(format!("Move row {} down", i + 1))
                    .clicked()
                {
                    moved = Some((i, i + 1));
                }
                if ui
                    .button("✖")
                    .on_hover_text(format!("Remove row {}", i + 1))
                    .clicked()
                {
                    remove = Some(i);
                }
            });
            ui.horizontal_wrapped(|ui| {
                let mut drop_t = None;
                for (j, t) in row.transforms.iter().enumerate() {
                    if ui
                        .small_button(format!("{t} ✖"))
                        .on_hover_text(format!("Remove transform {t} from row {}", i + 1))
                        .clicked()
                    {
                        drop_t = Some(j);
                    }
                }
                if let Some(j) = drop_t {
                    row.transforms.remove(j);
                }
                let mut add = None;
                let combo = egui::ComboBox::from_id_salt(("row-transform", i))
                    .selected_text("+ transform")
                    .width(110.0)
                    .show_ui(ui, |ui| {
                        for t in TRANSFORMS {
                            if ui.selectable_label(false, t).clicked() {
                                add = Some(t.to_owned());
                            }
                        }
                    });
                widgets::name(
                    ui,
                    &combo.response,
                    &format!("Add transform to row {}", i + 1),
                );
                if let Some(t) = add {
                    row.transforms.push(t);
                }
                let mut def = value_text(row.default.as_ref());
                if widgets::cell(ui, &mut def, &format!("Row {} default", i + 1), 100.0).changed() {
                    row.default = parse_value(&def);
                }
            });
            for e in errors
                .iter()
                .filter(|e| e.path.section == "mapping" && e.path.row == Some(i))
            {
                widgets::error(ui, &e.message);
            }
            if let Some(t) = trace.iter().find(|t| t.index == i) {
                outcome_ui(ui, &t.outcome);
            }
        });
        app.row_heights[i] = frame.response.rect.height();
        if let Some(from) = frame.response.dnd_release_payload::<usize>() {
            moved = Some((*from, i));
        }
    }
    if let Some(i) = remove {
        rows.remove(i);
    }
    if let Some((from, to)) = moved
        && from < rows.len()
        && to < rows.len()
        && from != to
    {
        let r = rows.remove(from);
        rows.insert(to, r);
    }
    if ui.button("Add row").clicked() {
        rows.push(MappingRow {
            target: target_for("/field", &rows),
            source: Some("$.".into()),
            ..MappingRow::default()
        });
    }
    let structural = remove.is_some() || moved.is_some();
    if let Some(d) = app.destination_mut()
        && d.mapping != rows
    {
        d.mapping = rows;
        if structural {
            app.record_edit();
        }
    }
    ui.separator();
    coverage_ui(app, ui);
}

fn outcome_ui(ui: &mut Ui, o: &RowOutcome) {
    let text = |v: &Value| {
        let s = v.to_string();
        if s.len() > 120 {
            format!("{}…", &s[..s.floor_char_boundary(120)])
        } else {
            s
        }
    };
    match o {
        RowOutcome::Value(v) => ui.label(format!("= {}", text(v))),
        RowOutcome::Defaulted(v) => ui.label(format!("= {} (default: source missing)", text(v))),
        RowOutcome::Missing => ui.label("missing: field omitted"),
        RowOutcome::Null => ui.label("= null"),
        RowOutcome::Error(m) => {
            ui.label(RichText::new(format!("✖ {m}")).color(ui.visuals().error_fg_color))
        }
    };
}

fn output_ui(app: &mut HooklineApp, ui: &mut Ui) {
    ui.label(RichText::new("Output").strong());
    if let Some(why) = &app.live.skipped {
        ui.label(format!("Skipped by the trigger: {why}"));
    }
    if let Some(e) = &app.live.error {
        widgets::error(ui, &e.message);
    }
    if let Some(r) = &app.live.request {
        let body = r.body.as_deref().unwrap_or_default();
        let text = match serde_json::from_slice::<Value>(body) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(body).into_owned(),
        };
        ui.label(format!(
            "{} bytes · rendered in {} µs",
            body.len(),
            app.live.took.as_micros()
        ));
        let mut shown = text.as_str();
        let l = ui.label("Rendered body");
        ui.add(
            egui::TextEdit::multiline(&mut shown)
                .code_editor()
                .desired_width(f32::INFINITY),
        )
        .labelled_by(l.id);
    }
}

fn coverage_ui(app: &mut HooklineApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        if ui
            .button("Coverage over the set")
            .on_hover_text("How many events give each row a value, over the whole set")
            .clicked()
            && let (Some(d), Some(s)) = (app.destination().cloned(), app.event_set().cloned())
        {
            let secrets = app.secrets.clone();
            app.coverage = Some(Task::spawn(Some(ui.ctx()), move || {
                coverage(&d, &s, secrets)
            }));
        }
        if app.coverage.as_ref().is_some_and(|t| !t.done()) {
            ui.spinner();
        }
    });
    let Some(task) = app.coverage.as_mut() else {
        return;
    };
    let took = task.took;
    let Some(c) = task.get() else {
        return;
    };
    if let Some(p) = &c.problem {
        widgets::error(ui, p);
        return;
    }
    ui.label(format!(
        "{} events{}",
        c.events,
        took.map_or(String::new(), |t| format!(" · {} ms", t.as_millis()))
    ));
    egui::Grid::new("coverage").striped(true).show(ui, |ui| {
        for h in ["Row", "Value", "Default", "Missing", "Null", "Error"] {
            ui.label(RichText::new(h).strong());
        }
        ui.end_row();
        for r in &c.rows {
            ui.label(&r.target);
            ui.label(r.value.to_string());
            ui.label(r.defaulted.to_string());
            ui.label(r.missing.to_string());
            ui.label(r.null.to_string());
            ui.label(r.error.to_string());
            ui.end_row();
        }
    });
    for r in &c.rows {
        if r.missing > 0 {
            ui.label(format!(
                "{} missing in {} of {} events",
                r.target, r.missing, c.events
            ));
        }
        if let Some((ev, m)) = &r.first_error {
            widgets::error(
                ui,
                &format!(
                    "{} failed in {} events (first: event {ev}: {m})",
                    r.target, r.error
                ),
            );
        }
    }
}
