//! Headless figures for the app's screens (no window, no GPU): CPU per frame of the
//! mapping designer (200-row mapping, ~5 KB event) and of the preview of one event,
//! the frame that follows a keystroke (the updated body), and coverage over 10 000
//! events (which the app runs off the UI thread). A frame here is egui's pass plus
//! tessellation, as eframe runs it; painting on the GPU is not included.
//! Run: `cargo bench --bench ui`. Prints figures; asserts nothing about time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookline::core::model::{Destination, EventSet, MappingRow, Workspace};
use hookline::core::secret::Secrets;
use hookline::ui::state::Tab;
use hookline::ui::{AppConfig, FileDialogs, HooklineApp};
use serde_json::{Value, json};

struct NoDialogs;
impl FileDialogs for NoDialogs {
    fn open_workspace(&self) -> Option<std::path::PathBuf> {
        None
    }
    fn save_workspace(&self, _: &str) -> Option<std::path::PathBuf> {
        None
    }
    fn import_events(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
}

/// A ~5 KB track event: 100 properties.
fn big_event(i: usize) -> Value {
    let mut props = serde_json::Map::new();
    for k in 0..120 {
        props.insert(
            format!("field_{k:03}"),
            json!(format!("value number {k} of event {i}")),
        );
    }
    json!({
        "type": "track", "event": "Order Completed", "userId": format!("user-{i}"),
        "messageId": format!("m-{i}"), "timestamp": "2020-04-22T08:06:20.338Z",
        "context": {"traits": {"email": "User@Domain.com", "plan": "Enterprise"}},
        "properties": props
    })
}

fn mapping_200() -> Vec<MappingRow> {
    (0..200)
        .map(|k| MappingRow {
            target: format!("out.f{k}"),
            source: Some(format!("$.properties.field_{:03}", k % 120)),
            transforms: if k % 3 == 0 {
                vec!["uppercase".into()]
            } else {
                Vec::new()
            },
            default: (k % 7 == 0).then(|| json!("none")),
            ..MappingRow::default()
        })
        .collect()
}

fn frame(ctx: &egui::Context, app: &mut HooklineApp) -> Duration {
    let raw = egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(1600.0, 1000.0),
        )),
        ..Default::default()
    };
    let t = Instant::now();
    let mut out = ctx.run_ui(raw, |ui| app.frame_ui(ui));
    let _ = ctx.tessellate(out.shapes, out.pixels_per_point);
    let took = t.elapsed();
    // No GPU here: the font atlas uploads are dropped, as a renderer would consume them.
    out.textures_delta.clear();
    took
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.2} ms, p95 {:.2} ms, max {:.2} ms ({} frames)",
        ms(v[v.len() / 2]),
        ms(v[v.len() * 95 / 100]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

fn main() {
    // `cargo test --all-targets` runs this without `--bench`: then a quick pass that
    // only checks the bench still works.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (frames, keystrokes, big) = if quick {
        (5, 5, 200)
    } else {
        (200, 100, 10_000)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = Destination::new("bench", "http://127.0.0.1:9/hook");
    d.id = "bench".into();
    d.body = hookline::core::model::Body::Mapped;
    d.mapping = mapping_200();
    let event = big_event(0);
    println!(
        "event size: {} bytes, mapping rows: {}",
        event.to_string().len(),
        d.mapping.len()
    );
    let ws = Workspace {
        name: "bench".into(),
        destinations: vec![d.clone()],
        event_sets: vec![EventSet {
            name: "one".into(),
            events: vec![event],
        }],
        ..Workspace::default()
    };
    let path = dir.path().join("ws.json");
    hookline::store::workspace::save(&path, &ws).expect("save");
    let ctx = egui::Context::default();
    let config = AppConfig {
        data_dir: dir.path().to_path_buf(),
        workspace: Some(path),
        secrets: Secrets::memory(&[]),
        start_receiver: false,
        receiver_port: None,
        history: false,
    };
    let mut app = HooklineApp::new(config, Arc::new(NoDialogs), &ctx);
    for _ in 0..500 {
        frame(&ctx, &mut app);
        if !app.loading {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!app.loading, "workspace opened");

    for (name, tab) in [
        ("mapping designer", Tab::Mapping),
        ("preview (one event)", Tab::Preview),
        ("destination editor", Tab::Destination),
    ] {
        app.tab = tab;
        for _ in 0..10 {
            frame(&ctx, &mut app);
        }
        let v: Vec<Duration> = (0..frames).map(|_| frame(&ctx, &mut app)).collect();
        assert!(app.live.request.is_some(), "the event renders a request");
        println!("{name}: CPU per frame {}", stats(v));
    }

    // A keystroke in a row's target: the next frame recompiles, renders and shows the body.
    app.tab = Tab::Mapping;
    let mut keystroke = Vec::new();
    for k in 0..keystrokes {
        if let Some(dest) = app.doc.destinations.get_mut(0) {
            dest.mapping[0].target = format!("out.typed{k}");
        }
        keystroke.push(frame(&ctx, &mut app));
        let body = app
            .live
            .request
            .as_ref()
            .and_then(|r| r.body.clone())
            .unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&body).contains(&format!("typed{k}")),
            "the body follows the keystroke"
        );
    }
    println!(
        "keystroke to updated preview body (the frame after the edit, 200 rows): {}",
        stats(keystroke)
    );

    // Coverage over 10 000 events (off the UI thread in the app).
    let set = Arc::new(EventSet {
        name: "10k".into(),
        events: (0..big).map(big_event).collect(),
    });
    let mut small = d.clone();
    small.mapping.truncate(8);
    for (label, dest) in [("8-row mapping", &small), ("200-row mapping", &d)] {
        let t = Instant::now();
        let c = hookline::ui::mapping::coverage(dest, &set, Secrets::memory(&[]));
        println!(
            "coverage over {} events, {label}: {:.0} ms ({} rows traced)",
            c.events,
            t.elapsed().as_secs_f64() * 1000.0,
            c.rows.len()
        );
    }
}
