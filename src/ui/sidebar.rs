//! The workspace sidebar: destinations and event sets — new, rename, duplicate,
//! delete (undoable), search, import.

use super::HooklineApp;
use crate::core::model::Destination;

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
            app.renaming = Some((i, app.doc.destinations[i].name.clone()));
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
    if let Some((i, mut name)) = app.renaming.take() {
        let mut keep = true;
        ui.horizontal(|ui| {
            let l = ui.label("New name");
            let r = ui.text_edit_singleline(&mut name).labelled_by(l.id);
            let taken = app
                .doc
                .destinations
                .iter()
                .enumerate()
                .any(|(j, d)| j != i && d.name == name.trim());
            let ok = !name.trim().is_empty() && !taken;
            let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if (ui.add_enabled(ok, egui::Button::new("Apply")).clicked() || (enter && ok))
                && let Some(d) = app.doc.destinations.get_mut(i)
            {
                name.trim().clone_into(&mut d.name);
                keep = false;
                app.edits.record(&app.doc, "");
            }
            if ui.button("Cancel rename").clicked() {
                keep = false;
            }
            if taken {
                super::widgets::error(ui, "another destination has this name");
            }
        });
        if keep {
            app.renaming = Some((i, name));
        }
    }
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
