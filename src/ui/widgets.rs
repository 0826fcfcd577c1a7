//! Small widgets the panels share. Every input gets an accessible name: a visible
//! label it is `labelled_by`, or, in table cells, a name set directly.

use egui::{Response, RichText, Ui};
use indexmap::IndexMap;

/// Give a widget an accessible name without a visible label (table cells).
pub fn name(ui: &Ui, resp: &Response, name: &str) {
    ui.ctx()
        .accesskit_node_builder(resp.id, |b| b.set_label(name));
}

/// A label and a one-line text field, the label naming the field.
pub fn text_row(ui: &mut Ui, label: &str, value: &mut String) -> Response {
    ui.horizontal(|ui| {
        let l = ui.label(label);
        ui.add(egui::TextEdit::singleline(value).desired_width(f32::INFINITY))
            .labelled_by(l.id)
    })
    .inner
}

/// A one-line text field with a hint and an accessible name, no visible label.
pub fn cell(ui: &mut Ui, value: &mut String, label: &str, width: f32) -> Response {
    let r = ui.add(
        egui::TextEdit::singleline(value)
            .hint_text(label)
            .desired_width(width),
    );
    name(ui, &r, label);
    r
}

/// A number field with a label.
pub fn number_row<N: egui::emath::Numeric>(
    ui: &mut Ui,
    label: &str,
    value: &mut N,
    range: std::ops::RangeInclusive<N>,
) -> Response {
    ui.horizontal(|ui| {
        let l = ui.label(label);
        ui.add(egui::DragValue::new(value).range(range))
            .labelled_by(l.id)
    })
    .inner
}

/// An error shown beside the field it is about.
pub fn error(ui: &mut Ui, text: &str) {
    ui.label(RichText::new(format!("⚠ {text}")).color(ui.visuals().error_fg_color));
}

/// Name/value rows of a map (headers, query), with add and remove. A rename that
/// would collide with another row is refused, so no row is ever lost.
pub fn map_ui(
    ui: &mut Ui,
    what: &str,
    map: &mut IndexMap<String, String>,
    errors: &[(Option<String>, String)],
) {
    let mut remove = None;
    let mut rename: Option<(usize, String)> = None;
    let mut collision = None;
    for (i, (k, v)) in map.iter_mut().enumerate() {
        ui.horizontal(|ui| {
            let mut key = k.clone();
            if cell(ui, &mut key, &format!("{what} {} name", i + 1), 180.0).changed() {
                rename = Some((i, key));
            }
            cell(ui, v, &format!("{what} {} value", i + 1), 300.0);
            if ui
                .small_button("✖")
                .on_hover_text(format!("Remove {what} {}", i + 1))
                .clicked()
            {
                remove = Some(i);
            }
        });
        for (key, msg) in errors {
            if key.as_deref() == Some(k.as_str()) {
                error(ui, msg);
            }
        }
    }
    if let Some((i, key)) = rename {
        if map.get_index_of(&key).is_some_and(|j| j != i) {
            collision = Some(key);
        } else if let Some((old, _)) = map.get_index(i).map(|(k, v)| (k.clone(), v.clone())) {
            let entries: Vec<(String, String)> = map
                .drain(..)
                .map(|(k, v)| if k == old { (key.clone(), v) } else { (k, v) })
                .collect();
            map.extend(entries);
        }
    }
    if let Some(i) = remove {
        map.shift_remove_index(i);
    }
    if let Some(k) = collision {
        error(ui, &format!("there is already a {what} named “{k}”"));
    }
    if ui.button(format!("Add {what}")).clicked() {
        let mut n = 1;
        let mut key = String::new();
        while map.contains_key(&key) {
            key = format!("{what}-{n}");
            n += 1;
        }
        map.insert(key, String::new());
    }
    for (key, msg) in errors {
        if key.is_none() {
            error(ui, msg);
        }
    }
}

/// A labelled combo box over `kinds` (auth kind, signing, envelope): the index picked.
pub fn kind_picker(ui: &mut Ui, label: &str, id: &str, kinds: &[&str], current: usize) -> usize {
    let mut pick = current;
    ui.horizontal(|ui| {
        let l = ui.label(label);
        egui::ComboBox::from_id_salt(id)
            .selected_text(kinds.get(current).copied().unwrap_or(""))
            .show_ui(ui, |ui| {
                for (i, k) in kinds.iter().enumerate() {
                    ui.selectable_value(&mut pick, i, *k);
                }
            })
            .response
            .labelled_by(l.id);
    });
    pick
}

/// A password field for a secret's new value, named "New value for NAME".
pub fn secret_value(ui: &mut Ui, name: &str, input: &mut String) {
    let l = ui.label(format!("New value for {name}"));
    ui.add(
        egui::TextEdit::singleline(input)
            .password(true)
            .desired_width(220.0),
    )
    .labelled_by(l.id);
}
