//! The workspace sidebar: destinations and event sets — new, rename, duplicate,
//! delete (undoable), search, import.

use super::HooklineApp;
use crate::core::model::{Destination, EventSet};

/// A rename in progress: of a destination or (`set`) an event set.
#[derive(Debug, Clone)]
pub struct Rename {
    pub set: bool,
    pub index: usize,
    pub name: String,
}

pub fn sidebar_ui(app: &mut HooklineApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        let l = ui.label("Workspace");
        ui.add(egui::TextEdit::singleline(&mut app.doc.name).desired_width(f32::INFINITY))
            .labelled_by(l.id);
    });
    ui.horizontal(|ui| {
        let l = ui.label("Search");
        ui.add(
            egui::TextEdit::singleline(&mut app.search)
                .id(egui::Id::new("sidebar-search"))
                .hint_text("Ctrl+F")
                .desired_width(f32::INFINITY),
        )
        .labelled_by(l.id);
    });
    ui.separator();
    ui.heading("Destinations");
    ui.horizontal_wrapped(|ui| {
        if ui.button("New destination").clicked() {
            let name = app.doc.unique_destination_name("new destination");
            let mut d = Destination::new(name, "https://example.com/webhook");
            d.id = uuid::Uuid::new_v4().to_string();
            app.doc.destinations.push(d);
            app.selected = Some(app.doc.destinations.len() - 1);
            app.tab = super::Tab::Destination;
            app.record_edit();
            app.load_secrets();
        }
        let has = app.selected.is_some();
        if ui
            .add_enabled(has, egui::Button::new("Duplicate"))
            .clicked()
            && let Some(d) = app.destination().cloned()
        {
            let mut copy = d;
            copy.name = app
                .doc
                .unique_destination_name(&format!("{} copy", copy.name));
            copy.id = uuid::Uuid::new_v4().to_string();
            app.doc.destinations.push(copy);
            app.selected = Some(app.doc.destinations.len() - 1);
            app.record_edit();
        }
        if ui.add_enabled(has, egui::Button::new("Rename")).clicked()
            && let Some(i) = app.selected
        {
            app.renaming = Some(Rename {
                set: false,
                index: i,
                name: app.doc.destinations[i].name.clone(),
            });
        }
        if ui
            .add_enabled(has, egui::Button::new("Delete destination"))
            .on_hover_text("Undo with Ctrl+Z")
            .clicked()
            && let Some(i) = app.selected
        {
            let d = app.doc.destinations.remove(i);
            app.notice(
                false,
                format!("deleted “{}” (Ctrl+Z brings it back)", d.name),
            );
            app.selected = if app.doc.destinations.is_empty() {
                None
            } else {
                Some(i.min(app.doc.destinations.len() - 1))
            };
            app.record_edit();
        }
    });
    rename_ui(app, ui, false);
    let needle = app.search.to_lowercase();
    egui::ScrollArea::vertical()
        .id_salt("destinations")
        .max_height(ui.available_height() * 0.5)
        .show(ui, |ui| {
            for (i, d) in app.doc.destinations.iter().enumerate() {
                if !needle.is_empty()
                    && !d.name.to_lowercase().contains(&needle)
                    && !d.url.to_lowercase().contains(&needle)
                {
                    continue;
                }
                if ui
                    .selectable_label(app.selected == Some(i), &d.name)
                    .on_hover_text(&d.url)
                    .clicked()
                {
                    app.selected = Some(i);
                }
            }
        });
    ui.separator();
    ui.heading("Event sets");
    ui.horizontal_wrapped(|ui| {
        if ui.button("New set").clicked() {
            let name = app.doc.unique_set_name("new events");
            app.doc.sets.push(std::sync::Arc::new(EventSet {
                name,
                events: Vec::new(),
            }));
            app.selected_set = Some(app.doc.sets.len() - 1);
            app.event_index = 0;
            app.record_edit();
        }
        let has = app.selected_set.is_some();
        if ui
            .add_enabled(has, egui::Button::new("Duplicate set"))
            .clicked()
            && let Some(s) = app.event_set().cloned()
        {
            let name = app.doc.unique_set_name(&format!("{} copy", s.name));
            app.doc.sets.push(std::sync::Arc::new(EventSet {
                name,
                events: s.events.clone(),
            }));
            app.selected_set = Some(app.doc.sets.len() - 1);
            app.record_edit();
        }
        if ui
            .add_enabled(has, egui::Button::new("Rename set"))
            .clicked()
            && let Some(i) = app.selected_set
        {
            app.renaming = Some(Rename {
                set: true,
                index: i,
                name: app.doc.sets[i].name.clone(),
            });
        }
        if ui
            .button("Import events…")
            .on_hover_text("JSON, NDJSON or HAR; or drop files on the window")
            .clicked()
        {
            app.import_dialog();
        }
        if ui
            .add_enabled(app.selected_set.is_some(), egui::Button::new("Delete set"))
            .clicked()
            && let Some(i) = app.selected_set
        {
            let s = app.doc.sets.remove(i);
            app.notice(
                false,
                format!("deleted set “{}” (Ctrl+Z brings it back)", s.name),
            );
            app.selected_set = if app.doc.sets.is_empty() {
                None
            } else {
                Some(i.min(app.doc.sets.len() - 1))
            };
            app.event_index = 0;
            app.record_edit();
        }
    });
    rename_ui(app, ui, true);
    let mut pick = None;
    for (i, s) in app.doc.sets.iter().enumerate() {
        if !needle.is_empty() && !s.name.to_lowercase().contains(&needle) {
            continue;
        }
        if ui
            .selectable_label(
                app.selected_set == Some(i),
                format!("{} ({} events)", s.name, s.events.len()),
            )
            .clicked()
        {
            pick = Some(i);
        }
    }
    if let Some(i) = pick
        && app.selected_set != Some(i)
    {
        app.selected_set = Some(i);
        app.event_index = 0;
    }
    if let Some(rep) = &app.import_report {
        ui.separator();
        ui.label(format!(
            "Imported “{}”: {} events kept, {} lines not imported",
            rep.set,
            rep.kept,
            rep.errors.len()
        ));
        let mut close = false;
        egui::ScrollArea::vertical()
            .id_salt("import-errors")
            .max_height(120.0)
            .show(ui, |ui| {
                for e in &rep.errors {
                    super::widgets::error(ui, e);
                }
            });
        if ui.small_button("Hide import report").clicked() {
            close = true;
        }
        if close {
            app.import_report = None;
        }
    }
}

/// The rename field, under the list it belongs to. Names stay unique and non-empty.
fn rename_ui(app: &mut HooklineApp, ui: &mut egui::Ui, sets: bool) {
    let Some(mut r) = app.renaming.take() else {
        return;
    };
    if r.set != sets {
        app.renaming = Some(r);
        return;
    }
    let mut keep = true;
    ui.horizontal(|ui| {
        let l = ui.label("New name");
        let resp = ui.text_edit_singleline(&mut r.name).labelled_by(l.id);
        let wanted = r.name.trim().to_owned();
        let taken = if r.set {
            app.doc
                .sets
                .iter()
                .enumerate()
                .any(|(j, s)| j != r.index && s.name == wanted)
        } else {
            app.doc
                .destinations
                .iter()
                .enumerate()
                .any(|(j, d)| j != r.index && d.name == wanted)
        };
        let ok = !wanted.is_empty() && !taken;
        let enter = resp.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui.add_enabled(ok, egui::Button::new("Apply")).clicked() || (enter && ok) {
            if r.set {
                if let Some(s) = app.doc.sets.get_mut(r.index) {
                    std::sync::Arc::make_mut(s).name = wanted;
                }
            } else if let Some(d) = app.doc.destinations.get_mut(r.index) {
                d.name = wanted;
            }
            keep = false;
            app.record_edit();
        }
        if ui.button("Cancel rename").clicked() {
            keep = false;
        }
        if taken {
            super::widgets::error(
                ui,
                if r.set {
                    "another event set has this name"
                } else {
                    "another destination has this name"
                },
            );
        }
    });
    if keep {
        app.renaming = Some(r);
    }
}
