//! The desktop app driven as a user would, by the labels on its controls
//! (`egui_kittest`, no display, no GPU), over the real runtime, real files in a
//! temporary directory and real HTTP servers on 127.0.0.1.

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{By, Queryable as _};
use hookline::core::model::{Batching, Destination, EventSet, Workspace};
use hookline::core::secret::{SecretSource as _, Secrets};
use hookline::ui::{AppConfig, FileDialogs, HooklineApp, SecretState};
use serde_json::{Value, json};

/// Dialogs that answer with prepared paths instead of opening a window.
#[derive(Default, Clone)]
struct FakeDialogs {
    import: Arc<Mutex<Vec<PathBuf>>>,
    save: Arc<Mutex<Option<PathBuf>>>,
}

impl FileDialogs for FakeDialogs {
    fn open_workspace(&self) -> Option<PathBuf> {
        None
    }
    fn save_workspace(&self, _: &str) -> Option<PathBuf> {
        self.save.lock().expect("lock").clone()
    }
    fn import_events(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *self.import.lock().expect("lock"))
    }
}

#[allow(clippy::needless_pass_by_value)]
fn event(i: usize, email: &str, price: Value) -> Value {
    json!({
        "type": "track",
        "event": "Order Completed",
        "userId": format!("user-{i}"),
        "messageId": format!("m-{i}"),
        "context": {"traits": {"email": email, "plan": "Enterprise"}},
        "properties": {"price": price}
    })
}

fn mapped(name: &str, url: &str) -> Destination {
    let mut d: Destination = serde_json::from_value(json!({
        "name": name,
        "url": url,
        "body": {"mode": "mapped"},
        "mapping": [
            {"target": "email", "source": "$.context.traits.email"},
            {"target": "price", "source": "$.properties.price", "transforms": ["number"]}
        ],
        "delivery": {"max_attempts": 3, "backoff_initial_ms": 10, "backoff_max_ms": 50, "timeout_ms": 5000}
    }))
    .expect("destination");
    d.id = format!("id-{name}");
    d
}

/// Basic auth as user `svc`, the password in the secret `secret`.
fn basic_auth(secret: &str) -> hookline::core::model::Auth {
    serde_json::from_value(json!({"kind": "basic", "username": "svc", "password_secret": secret}))
        .expect("auth")
}

fn workspace(dests: Vec<Destination>, events: Vec<Value>) -> Workspace {
    Workspace {
        name: "test".into(),
        destinations: dests,
        event_sets: vec![EventSet {
            name: "events".into(),
            events,
        }],
        ..Workspace::default()
    }
}

struct Env {
    dir: tempfile::TempDir,
    data: PathBuf,
    dialogs: FakeDialogs,
}

fn start(ws: &Workspace, secrets: Secrets, receiver: bool) -> (Harness<'static, HooklineApp>, Env) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let path = dir.path().join("ws.json");
    hookline::store::workspace::save(&path, ws).expect("save workspace");
    let dialogs = FakeDialogs::default();
    let config = AppConfig {
        data_dir: data.clone(),
        workspace: Some(path),
        secrets,
        start_receiver: receiver,
        receiver_port: None,
        history: true,
    };
    let ctx = egui::Context::default();
    let app = HooklineApp::new(config, Arc::new(dialogs.clone()), &ctx);
    let mut h = Harness::builder()
        .with_size([1400.0, 1000.0])
        .build_ui_state(|ui, app: &mut HooklineApp| app.frame_ui(ui), app);
    wait(&mut h, "the workspace to open", |a| !a.loading);
    (h, Env { dir, data, dialogs })
}

/// Step frames until `cond` holds (bounded: 15 s), then a few more to draw.
fn wait(h: &mut Harness<'_, HooklineApp>, what: &str, cond: impl Fn(&HooklineApp) -> bool) {
    for _ in 0..1500 {
        h.step();
        if cond(h.state()) {
            h.run_steps(3);
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

fn click(h: &mut Harness<'_, HooklineApp>, label: &str) {
    h.get_by_label(label).click();
    h.run_steps(3);
}

fn tab(h: &mut Harness<'_, HooklineApp>, label: &str) {
    h.get_by_role_and_label(Role::Button, label).click();
    h.run_steps(3);
}

/// Replace a text field's contents by typing, as a user would.
fn set_text(h: &mut Harness<'_, HooklineApp>, label: &str, text: &str) {
    h.get_by_label(label).focus();
    h.run_steps(1);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.run_steps(1);
    h.get_by_label(label).type_text(text);
    h.run_steps(3);
}

fn has_text(h: &Harness<'_, HooklineApp>, needle: &str) -> bool {
    h.query_all_by_label_contains(needle).next().is_some()
}

/// `orders` and `other`, with three events.
fn two_destinations() -> Workspace {
    workspace(
        vec![
            mapped("orders", "http://127.0.0.1:9/x"),
            mapped("other", "http://127.0.0.1:9/y"),
        ],
        events3(),
    )
}

fn events3() -> Vec<Value> {
    vec![
        event(0, "a@b.c", json!(10)),
        event(1, "x@y.z", json!("abc")),
        event(2, "q@r.s", json!(7)),
    ]
}

#[test]
fn creating_a_destination_and_fixing_its_url_clears_the_error() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let (mut h, _env) = start(&ws, Secrets::memory(&[]), false);
    click(&mut h, "New destination");
    assert_eq!(h.state().doc.destinations.len(), 2);
    assert!(h.query_by_label("Destination “new destination”").is_some());
    set_text(&mut h, "URL", "example.com/no-scheme");
    assert_eq!(
        h.state().destination().map(|d| d.url.as_str()),
        Some("example.com/no-scheme")
    );
    assert!(
        has_text(&h, "⚠"),
        "a URL without a scheme shows an error beside it"
    );
    set_text(&mut h, "URL", "http://127.0.0.1:1/ok");
    assert!(!has_text(&h, "⚠"), "the error clears once the URL is valid");
    assert!(h.state().dirty());
    assert!(h.state().title().starts_with('●'), "{}", h.state().title());
}

#[test]
fn clicking_a_tree_leaf_adds_a_mapping_row_and_the_body_changes() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let (mut h, _env) = start(&ws, Secrets::memory(&[]), false);
    tab(&mut h, "Mapping");
    let before = h.get_by_label("Rendered body").value().unwrap_or_default();
    assert!(
        before.contains("a@b.c") && !before.contains("Enterprise"),
        "{before}"
    );
    click(&mut h, "\"Enterprise\"");
    let d = h.state().destination().expect("destination").clone();
    let row = d.mapping.last().expect("a new row");
    assert_eq!(row.target, "plan");
    assert_eq!(row.source.as_deref(), Some("$.context.traits.plan"));
    let after = h.get_by_label("Rendered body").value().unwrap_or_default();
    assert!(after.contains("\"plan\": \"Enterprise\""), "{after}");
}

#[test]
fn a_failing_row_shows_its_message_beside_it_and_the_others_their_values() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let (mut h, _env) = start(&ws, Secrets::memory(&[]), false);
    tab(&mut h, "Mapping");
    click(&mut h, "Next event ▶");
    assert_eq!(h.state().event_index, 1);
    assert!(has_text(&h, "is not a number"), "row 2's error is shown");
    assert!(has_text(&h, "= \"x@y.z\""), "row 1 still shows its value");
    // Coverage over the whole set: one event fails row 2.
    click(&mut h, "Coverage over the set");
    wait(&mut h, "coverage", |a| {
        a.coverage
            .as_ref()
            .is_some_and(hookline::ui::work::Task::done)
    });
    assert!(
        has_text(&h, "price failed in 1 events"),
        "coverage names the failing row"
    );
}

#[test]
fn reveal_shows_a_secret_the_preview_otherwise_hides() {
    let mut d = mapped("orders", "http://127.0.0.1:9/x");
    d.auth = basic_auth("pw");
    let ws = workspace(vec![d], events3());
    let (mut h, _env) = start(&ws, Secrets::memory(&[("pw", "hunter2-secret")]), false);
    wait(&mut h, "the secret's status", |a| {
        a.secret_state.get("pw") == Some(&SecretState::Set)
    });
    tab(&mut h, "Preview");

    let basic = base64::engine::general_purpose::STANDARD.encode("svc:hunter2-secret");
    assert!(has_text(&h, "Authorization"));
    assert!(!has_text(&h, &basic), "hidden until revealed");
    click(&mut h, "Reveal secrets");
    assert!(has_text(&h, &basic), "revealed");
    click(&mut h, "Reveal secrets");
    assert!(!has_text(&h, &basic), "hidden again");
}

#[test]
fn the_batch_trace_of_2500_events_at_cap_1000_shows_three_requests() {
    let mut d = mapped("bulk", "http://127.0.0.1:9/x");
    d.body = hookline::core::model::Body::Event;
    d.mapping.clear();
    d.batching = Some(Batching {
        max_events: 1000,
        ..Batching::default()
    });
    let events = (0..2500).map(|i| event(i, "a@b.c", json!(i))).collect();
    let (mut h, _env) = start(&workspace(vec![d], events), Secrets::memory(&[]), false);
    tab(&mut h, "Preview");
    click(&mut h, "Preview the whole set");
    wait(&mut h, "the set preview", |a| {
        a.set_preview
            .as_ref()
            .is_some_and(hookline::ui::work::Task::done)
    });
    assert!(has_text(&h, "2500 events give 3 requests"));
    assert_eq!(h.query_all_by_label("event cap").count(), 2);
    assert_eq!(h.query_all_by_label("end of input").count(), 1);
    assert!(h.query_by_label("1–1000").is_some());
    assert!(h.query_by_label("2001–2500").is_some());
    // Any request of the trace opens as the exact request.
    click(&mut h, "Request 3");
    let body = h
        .get_by_label("Body of request 3")
        .value()
        .unwrap_or_default();
    let events: Value = serde_json::from_str(&body).expect("a JSON array body");
    let events = events.as_array().expect("array");
    assert_eq!(events.len(), 500, "request 3 carries events 2001–2500");
    assert_eq!(events[0]["userId"], "user-2000");
    assert!(h.query_by_label("Copy this request as cURL").is_some());
    // An edit makes the set-wide result stale: it goes rather than mislead.
    tab(&mut h, "Destination");
    set_text(&mut h, "URL", "http://127.0.0.1:9/other");
    tab(&mut h, "Preview");
    assert!(h.query_by_label("Batch trace").is_none());
    assert!(h.state().set_preview.is_none());
}

#[test]
fn importing_a_file_with_a_bad_line_keeps_the_good_ones_and_lists_the_bad() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let (mut h, env) = start(&ws, Secrets::memory(&[]), false);
    let file = env.data.join("more.ndjson");
    std::fs::write(
        &file,
        "{\"type\":\"track\",\"n\":1}\n{\"type\": broken\n{\"type\":\"identify\"}\n",
    )
    .expect("write");
    env.dialogs.import.lock().expect("lock").push(file);
    click(&mut h, "Import events…");
    wait(&mut h, "the import", |a| a.import_report.is_some());
    assert!(has_text(
        &h,
        "Imported “more”: 2 events kept, 1 lines not imported"
    ));
    assert!(has_text(&h, "line 2"), "the bad line is named");
    let set = h.state().event_set().expect("the new set is selected");
    assert_eq!(set.name, "more");
    assert_eq!(set.events.len(), 2);
}

#[test]
fn setting_a_secret_stores_it_through_the_runtime_and_shows_only_set() {
    let store: Arc<keyring_core::CredentialStore> =
        keyring_core::mock::Store::new().expect("mock store");
    let source = Arc::new(hookline::store::keyring::KeyringSecrets::with_store(
        store,
        "hookline-ui-test",
    ));
    let secrets = Secrets::new(source.clone());
    let mut d = mapped("orders", "http://127.0.0.1:9/x");
    d.auth =
        serde_json::from_value(json!({"kind": "bearer", "token_secret": "tok"})).expect("auth");
    let (mut h, _env) = start(&workspace(vec![d], events3()), secrets, false);
    wait(&mut h, "the secret's status", |a| {
        a.secret_state.get("tok") == Some(&SecretState::NotSet)
    });
    assert!(has_text(&h, "Secret “tok”: not set"));
    set_text(&mut h, "New value for tok", "s3cr3t-value-xyz");
    click(&mut h, "Set tok");
    wait(&mut h, "the secret to be stored", |a| {
        a.secret_state.get("tok") == Some(&SecretState::Set)
    });
    assert!(has_text(&h, "Secret “tok”: set"));
    assert!(h.query_by_label("Replace tok").is_some());
    assert!(
        !has_text(&h, "s3cr3t-value-xyz"),
        "the value is never shown"
    );
    let stored = source.get("tok").expect("read back").expect("stored");
    assert_eq!(stored.expose(), "s3cr3t-value-xyz");
    // The preview now has the token (redacted).
    tab(&mut h, "Preview");
    assert!(has_text(&h, "Bearer ***"));
}

#[test]
fn a_deleted_destination_comes_back_with_undo() {
    let ws = two_destinations();
    let (mut h, _env) = start(&ws, Secrets::memory(&[]), false);
    click(&mut h, "orders");
    click(&mut h, "Delete destination");
    assert!(h.query_by_label("orders").is_none());
    assert_eq!(h.state().doc.destinations.len(), 1);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    h.run_steps(3);
    assert_eq!(h.state().doc.destinations.len(), 2);
    assert!(h.query_by_label("orders").is_some());
    assert!(!h.state().dirty(), "back to the saved state");
    h.key_press_modifiers(
        egui::Modifiers::COMMAND | egui::Modifiers::SHIFT,
        egui::Key::Z,
    );
    h.run_steps(3);
    assert_eq!(h.state().doc.destinations.len(), 1, "redo deletes it again");
}

#[test]
fn compare_with_saved_lists_the_change_a_new_transform_makes() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let (mut h, _env) = start(&ws, Secrets::memory(&[]), false);
    tab(&mut h, "Mapping");
    click(&mut h, "Add transform to row 1");
    click(&mut h, "uppercase");
    assert_eq!(
        h.state().destination().expect("d").mapping[0].transforms,
        vec!["uppercase".to_owned()]
    );
    tab(&mut h, "Preview");
    click(&mut h, "Compare with saved");
    wait(&mut h, "the comparison", |a| {
        a.compare
            .as_ref()
            .is_some_and(hookline::ui::work::Task::done)
    });
    // Row 2 fails on event 2 in both versions: 2 requests each, both changed.
    assert!(has_text(&h, "2 changed, 0 unchanged"), "counts");
    click(&mut h, "Request 1 changed");
    assert!(has_text(&h, "-   \"email\": \"a@b.c\""));
    assert!(has_text(&h, "+   \"email\": \"A@B.C\""));
}

#[test]
fn send_this_event_shows_the_response_from_the_built_in_receiver() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let (mut h, _env) = start(&ws, Secrets::memory(&[]), true);
    wait(&mut h, "the receiver", |a| a.receiver.is_some());
    let addr = h.state().receiver.expect("receiver");
    set_text(&mut h, "URL", &format!("http://{addr}/collect/track/src"));
    tab(&mut h, "Preview");
    click(&mut h, "Send this event");
    wait(&mut h, "the response", |a| {
        a.probe.as_ref().is_some_and(|p| p.end.is_some())
    });
    assert!(has_text(&h, "Attempt 1: HTTP 200"), "status shown");
    assert!(has_text(&h, "Delivered."));
    wait(&mut h, "the capture", |a| a.captured == 1);
}

/// A server that answers 503 + Retry-After: 1 to the first request and 200 after,
/// and keeps every body it got.
fn flaky_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().take(10).enumerate() {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let Ok(k) = s.read(&mut chunk) else {
                    break None;
                };
                if k == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..k]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    break Some(buf[end + 4..].to_vec());
                }
            };
            if let Some(b) = body {
                seen.lock().expect("lock").push(b);
            }
            let reply: &[u8] = if n == 0 {
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Answer: yes\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}"
            };
            let _ = s.write_all(reply);
        }
    });
    (addr, bodies)
}

#[test]
fn send_this_event_shows_a_503_with_retry_after_then_the_200() {
    let (addr, bodies) = flaky_server();
    let ws = workspace(
        vec![mapped("orders", &format!("http://{addr}/hook"))],
        events3(),
    );
    let (mut h, _env) = start(&ws, Secrets::memory(&[]), false);
    tab(&mut h, "Preview");
    let shown_body = h.get_by_label("Request body").value().unwrap_or_default();
    click(&mut h, "Send this event");
    wait(&mut h, "the response", |a| {
        a.probe.as_ref().is_some_and(|p| p.end.is_some())
    });
    assert!(has_text(&h, "Attempt 1: HTTP 503"), "first attempt");
    assert!(has_text(&h, "Attempt 2: HTTP 200"), "second attempt");
    assert!(
        has_text(&h, "Retried after 1.0 s"),
        "the Retry-After wait is shown"
    );
    click(&mut h, "Response headers of attempt 2");
    assert!(has_text(&h, "x-answer: yes"));
    assert!(has_text(&h, "\"ok\": true"), "the response body");
    // What arrived is what the preview showed.
    let got = bodies.lock().expect("lock").clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], got[1]);
    let pretty: Value = serde_json::from_slice(&got[1]).expect("json");
    assert_eq!(
        serde_json::to_string_pretty(&pretty).expect("text"),
        shown_body
    );
    click(&mut h, "Raw body");
    let raw = h.get_by_label("Request body").value().unwrap_or_default();
    assert_eq!(
        raw.as_bytes(),
        got[1].as_slice(),
        "the raw body is byte for byte what was sent"
    );
}

/// Every input control on every screen has an accessible name.
#[test]
fn every_control_has_an_accessible_name() {
    let mut d = mapped("orders", "http://127.0.0.1:9/x");
    d.auth = basic_auth("pw");
    d.signing = serde_json::from_value(json!({"kind": "hmac", "secret": "sig"})).expect("signing");
    d.batching = Some(Batching::default());
    let (mut h, _env) = start(&workspace(vec![d], events3()), Secrets::memory(&[]), false);
    for screen in ["Destination", "Mapping", "Preview"] {
        tab(&mut h, screen);
        let inputs = h
            .query_all(By::new().predicate(|n| {
                matches!(
                    n.role(),
                    Role::TextInput | Role::ComboBox | Role::SpinButton | Role::CheckBox
                )
            }))
            .count();
        assert!(
            inputs >= 3,
            "{screen}: the check sees the screen's inputs ({inputs})"
        );
        let unnamed: Vec<String> = h
            .query_all(By::new().predicate(|n| {
                matches!(
                    n.role(),
                    Role::TextInput
                        | Role::MultilineTextInput
                        | Role::PasswordInput
                        | Role::ComboBox
                        | Role::Button
                        | Role::CheckBox
                        | Role::RadioButton
                        | Role::SpinButton
                        | Role::Slider
                ) && n.label().is_none_or(|l| l.trim().is_empty())
            }))
            .map(|n| format!("{n:?}"))
            .collect();
        assert!(
            unnamed.is_empty(),
            "{screen}: controls without a name: {unnamed:#?}"
        );
    }
}

#[test]
fn unsaved_work_is_recovered_after_a_crash() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ws.json");
    hookline::store::workspace::save(&path, &ws).expect("save");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("dir");
    let open = |data: &Path, path: &Path| {
        let config = AppConfig {
            data_dir: data.to_path_buf(),
            workspace: Some(path.to_path_buf()),
            secrets: Secrets::memory(&[]),
            start_receiver: false,
            receiver_port: None,
            history: false,
        };
        let app = HooklineApp::new(
            config,
            Arc::new(FakeDialogs::default()),
            &egui::Context::default(),
        );
        Harness::builder()
            .with_size([1400.0, 1000.0])
            .build_ui_state(|ui, app: &mut HooklineApp| app.frame_ui(ui), app)
    };
    let mut h = open(&data, &path);
    wait(&mut h, "open", |a| !a.loading);
    set_text(&mut h, "URL", "http://127.0.0.1:9/edited");
    // The recovery file is written within a few seconds of an edit.
    let recovery = hookline::ui::recovery_path(&data);
    for _ in 0..800 {
        h.step();
        if recovery.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(recovery.exists(), "recovery file written");
    drop(h); // the "crash": nothing saved
    let mut h2 = open(&data, &path);
    wait(&mut h2, "open", |a| !a.loading);
    assert_eq!(
        h2.state().destination().map(|d| d.url.as_str()),
        Some("http://127.0.0.1:9/edited")
    );
    assert!(h2.state().dirty(), "recovered work is unsaved work");
    // Saving writes it and removes the recovery file.
    h2.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::S);
    wait(&mut h2, "the save", |a| !a.dirty());
    let saved = hookline::store::workspace::load(&path).expect("load");
    assert_eq!(saved.destinations[0].url, "http://127.0.0.1:9/edited");
    assert!(!recovery.exists());
}

#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        Err("the app must read dropped files on its import thread, by path".into())
    }
}

#[test]
fn a_file_dropped_on_the_window_becomes_an_event_set() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let (mut h, env) = start(&ws, Secrets::memory(&[]), false);
    let file = env.data.join("dropped.json");
    std::fs::write(&file, r#"[{"type":"track","a":1},{"type":"page"}]"#).expect("write");
    h.input_mut().dropped_files.push(Arc::new(Dropped(file)));
    h.run_steps(1);
    wait(&mut h, "the import", |a| a.import_report.is_some());
    assert!(has_text(&h, "dropped (2 events)"), "the new set is listed");
    assert_eq!(h.state().doc.sets.len(), 2);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    h.run_steps(3);
    assert_eq!(h.state().doc.sets.len(), 1, "an import is undoable");
}

fn request_close(h: &mut Harness<'_, HooklineApp>) {
    h.input_mut()
        .viewports
        .entry(egui::ViewportId::ROOT)
        .or_default()
        .events
        .push(egui::ViewportEvent::Close);
    h.run_steps(3);
}

#[test]
fn closing_with_unsaved_changes_asks_and_save_and_close_saves() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let (mut h, env) = start(&ws, Secrets::memory(&[]), false);
    let path = env.dir.path().join("ws.json");
    // Nothing to save: closing does not ask.
    request_close(&mut h);
    assert!(!has_text(&h, "Save changes before closing?"));
    assert!(h.state().closing());
    set_text(&mut h, "URL", "http://127.0.0.1:9/changed");
    request_close(&mut h);
    assert!(has_text(&h, "Save changes before closing?"), "asks");
    click(&mut h, "Cancel");
    assert!(!has_text(&h, "Save changes before closing?"));
    assert!(h.state().dirty(), "still there, unsaved");
    request_close(&mut h);
    click(&mut h, "Save and close");
    wait(&mut h, "the save", |a| !a.dirty());
    let saved = hookline::store::workspace::load(&path).expect("load");
    assert_eq!(saved.destinations[0].url, "http://127.0.0.1:9/changed");
}

/// A new user: the sample workspace, its secrets generated, its destinations pointed
/// at the built-in receiver — Send this event delivers at once.
#[test]
fn first_start_gives_a_sample_that_sends_to_the_built_in_receiver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let secrets = Secrets::new(Arc::new(hookline::core::secret::MemorySecrets::with(&[])));
    let config = AppConfig {
        data_dir: data.clone(),
        workspace: None,
        secrets: secrets.clone(),
        start_receiver: true,
        receiver_port: None,
        history: true,
    };
    let app = HooklineApp::new(
        config,
        Arc::new(FakeDialogs::default()),
        &egui::Context::default(),
    );
    let mut h = Harness::builder()
        .with_size([1400.0, 1000.0])
        .build_ui_state(|ui, app: &mut HooklineApp| app.frame_ui(ui), app);
    wait(
        &mut h,
        "the sample to open and point at the receiver",
        |a| {
            !a.loading
                && a.receiver.is_some_and(|r| {
                    a.doc.destinations[0]
                        .url
                        .starts_with(&format!("http://{r}/"))
                })
        },
    );
    assert!(
        data.join("workspace.json").exists(),
        "the sample is a file in the data directory"
    );
    assert!(
        h.state().title().contains("workspace.json"),
        "{}",
        h.state().title()
    );
    wait(&mut h, "the sample's secrets", |a| {
        ["orders-password", "orders-signing"]
            .iter()
            .all(|n| a.secret_state.get(*n) == Some(&SecretState::Set))
    });
    assert!(
        secrets
            .source()
            .get("orders-password")
            .expect("get")
            .is_some(),
        "generated and stored"
    );
    assert!(
        !h.state().dirty(),
        "pointing the sample at the receiver is not an unsaved edit"
    );
    tab(&mut h, "Preview");
    click(&mut h, "Send this event");
    wait(&mut h, "the response", |a| {
        a.probe.as_ref().is_some_and(|p| p.end.is_some())
    });
    assert!(has_text(&h, "Attempt 1: HTTP 200"));
    wait(&mut h, "the capture", |a| a.captured == 1);
}

#[test]
fn get_token_fetches_an_oauth2_token_and_shows_how_long_it_lasts() {
    use axum::routing::post;
    let server = common::serve(axum::Router::new().route(
        "/token",
        post(|| async {
            (
                [("content-type", "application/json")],
                r#"{"access_token": "tok-abc-123", "token_type": "Bearer", "expires_in": 3600}"#,
            )
        }),
    ));
    let mut d = mapped("orders", "http://127.0.0.1:9/x");
    d.auth = serde_json::from_value(json!({
        "kind": "oauth2_client_credentials",
        "token_url": server.url("/token"),
        "client_id": "app",
        "client_secret": "cs"
    }))
    .expect("auth");
    let (mut h, _env) = start(
        &workspace(vec![d], events3()),
        Secrets::memory(&[("cs", "client-secret-value")]),
        false,
    );
    click(&mut h, "Get token");
    wait(&mut h, "the token", |a| {
        a.token_status
            .get("orders")
            .is_some_and(|s| s.starts_with("token"))
    });
    let status = h
        .state()
        .token_status
        .get("orders")
        .cloned()
        .unwrap_or_default();
    assert!(status.starts_with("token fetched; used for 5"), "{status}");
    assert!(has_text(&h, "OAuth2: token fetched"));
    assert!(
        !has_text(&h, "tok-abc-123"),
        "the token itself is never shown"
    );
}

/// Broken input in the fields never panics: each gets its error beside it, and the
/// other rows keep working.
#[test]
fn broken_input_in_fields_shows_errors_and_never_panics() {
    let mut d = mapped("orders", "http://127.0.0.1:9/x");
    d.mapping.push(
        serde_json::from_value(json!({"target": "label", "template": "{{ event.userId }}"}))
            .expect("row"),
    );
    let (mut h, _env) = start(&workspace(vec![d], events3()), Secrets::memory(&[]), false);
    // Pasted CR/LF: URL parsers would drop them silently; the field says so instead.
    set_text(&mut h, "URL", "http://127.0.0.1:9/x\r\nX-Evil: 1");
    assert!(
        has_text(&h, "contains a line break"),
        "a URL with CR/LF is refused beside the field"
    );
    tab(&mut h, "Preview");
    assert!(h.query_by_label("Send this event").is_some());
    assert!(
        h.state().live.request.is_none(),
        "nothing to send while the URL is wrong"
    );
    tab(&mut h, "Destination");
    set_text(&mut h, "URL", "ftp://127.0.0.1/x");
    assert!(
        has_text(&h, "⚠"),
        "a URL that is not http(s) is refused beside the field"
    );
    set_text(&mut h, "URL", "http://127.0.0.1:9/x");
    tab(&mut h, "Mapping");
    set_text(&mut h, "Row 1 source", "$[");
    assert!(
        has_text(&h, "⚠"),
        "a broken JSONPath is named beside its row"
    );
    set_text(&mut h, "Row 1 source", "$.context.traits.email");
    set_text(&mut h, "Row 3 source", "{{ event.");
    assert!(
        has_text(&h, "⚠"),
        "a template syntax error is named beside its row"
    );
    set_text(&mut h, "Row 3 source", "{{ event.userId }}");
    set_text(&mut h, "Row 2 default", "{not json");
    set_text(&mut h, "Row 1 target", "a..b[");
    assert!(has_text(&h, "⚠"), "a bad target is named");
    set_text(&mut h, "Row 1 target", "email");
    assert!(!has_text(&h, "⚠"), "all fixed: no error left");
    let body = h.get_by_label("Rendered body").value().unwrap_or_default();
    assert!(body.contains("\"label\": \"user-0\""), "{body}");
}

#[test]
fn save_as_writes_a_new_file_and_the_title_follows_it() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let (mut h, env) = start(&ws, Secrets::memory(&[]), false);
    set_text(&mut h, "URL", "http://127.0.0.1:9/saved-as");
    assert!(h.state().title().starts_with('●'));
    // Opening another workspace with unsaved changes is refused, not a loss.
    click(&mut h, "Open…");
    assert!(has_text(&h, "before opening another workspace"));
    let target = env.dir.path().join("copy.json");
    *env.dialogs.save.lock().expect("lock") = Some(target.clone());
    h.key_press_modifiers(
        egui::Modifiers::COMMAND | egui::Modifiers::SHIFT,
        egui::Key::S,
    );
    wait(&mut h, "the save", |a| {
        a.path.as_deref() == Some(target.as_path()) && !a.dirty()
    });
    assert_eq!(h.state().title(), "copy.json — Hookline");
    let saved = hookline::store::workspace::load(&target).expect("load");
    assert_eq!(saved.destinations[0].url, "http://127.0.0.1:9/saved-as");
    assert_eq!(
        saved.event_sets[0].events.len(),
        3,
        "event sets are saved too"
    );
}

#[test]
fn dragging_a_row_by_its_handle_reorders_the_mapping() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let (mut h, _env) = start(&ws, Secrets::memory(&[]), false);
    tab(&mut h, "Mapping");
    let handle = h
        .get_all_by_label("☰")
        .next()
        .expect("row 1's handle")
        .rect()
        .center();
    let onto = h.get_by_label("Row 2 target").rect().center();
    h.hover_at(handle);
    h.run_steps(1);
    h.drag_at(handle);
    h.run_steps(1);
    for k in 1..=10 {
        h.hover_at(handle + (onto - handle) * (k as f32 / 10.0));
        h.run_steps(1);
    }
    h.drop_at(onto);
    h.run_steps(3);
    let targets: Vec<String> = h
        .state()
        .destination()
        .expect("d")
        .mapping
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(targets, ["price", "email"], "row 1 moved below row 2");
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    h.run_steps(3);
    assert_eq!(
        h.state().destination().expect("d").mapping[0].target,
        "email",
        "undoable"
    );
}

#[test]
fn renaming_keeps_the_id_and_duplicates_get_their_own() {
    let ws = two_destinations();
    let (mut h, _env) = start(&ws, Secrets::memory(&[]), false);
    click(&mut h, "orders");
    click(&mut h, "Rename");
    set_text(&mut h, "New name", "other");
    assert!(
        has_text(&h, "another destination has this name"),
        "names stay unique"
    );
    set_text(&mut h, "New name", "orders v2");
    click(&mut h, "Apply");
    let d = h.state().destination().expect("d").clone();
    assert_eq!(
        (d.name.as_str(), d.id.as_str()),
        ("orders v2", "id-orders"),
        "history follows the id"
    );
    click(&mut h, "Duplicate");
    let copy = h.state().destination().expect("copy").clone();
    assert_eq!(copy.name, "orders v2 copy");
    assert_ne!(copy.id, d.id);
    assert_eq!(copy.mapping, d.mapping);
    click(&mut h, "Rename set");
    set_text(&mut h, "New name", "checkout events");
    click(&mut h, "Apply");
    assert!(has_text(&h, "checkout events (3 events)"));
    click(&mut h, "Duplicate set");
    assert!(has_text(&h, "checkout events copy (3 events)"));
    click(&mut h, "New set");
    assert!(has_text(&h, "new events (0 events)"));
    // Four steps back: the new set, the set copy, the set rename, the copy.
    for _ in 0..4 {
        h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
        h.run_steps(2);
    }
    assert_eq!(h.state().doc.sets[0].name, "events");
    assert_eq!(h.state().doc.sets.len(), 1);
    assert_eq!(h.state().doc.destinations.len(), 2);
}

/// The receiver comes back on last time's port (so the sample's URLs keep working);
/// when that port is taken, it starts on another and says so.
#[test]
fn the_receiver_reuses_its_port_and_falls_back_when_it_is_taken() {
    let ws = workspace(vec![mapped("orders", "http://127.0.0.1:9/x")], events3());
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let open = |port: u16| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ws.json");
        hookline::store::workspace::save(&path, &ws).expect("save");
        let config = AppConfig {
            data_dir: dir.path().to_path_buf(),
            workspace: Some(path),
            secrets: Secrets::memory(&[]),
            start_receiver: true,
            receiver_port: Some(port),
            history: false,
        };
        let app = HooklineApp::new(
            config,
            Arc::new(FakeDialogs::default()),
            &egui::Context::default(),
        );
        let h = Harness::builder()
            .with_size([1400.0, 1000.0])
            .build_ui_state(|ui, app: &mut HooklineApp| app.frame_ui(ui), app);
        (h, dir)
    };
    let (mut h, _d1) = open(port);
    wait(&mut h, "the receiver", |a| a.receiver.is_some());
    assert_eq!(
        h.state().receiver.map(|a| a.port()),
        Some(port),
        "last time's port"
    );
    // Now the port is held (by the first app): the second falls back.
    let (mut h2, _d2) = open(port);
    wait(&mut h2, "the fallback receiver", |a| a.receiver.is_some());
    assert_ne!(h2.state().receiver.map(|a| a.port()), Some(port));
    assert!(has_text(&h2, "it listens on another port"));
}

/// Click `label` and return what that frame put on the clipboard.
fn click_copy(h: &mut Harness<'_, HooklineApp>, label: &str) -> Option<String> {
    h.get_by_label(label).click();
    h.step();
    h.output()
        .platform_output
        .commands
        .iter()
        .find_map(|c| match c {
            egui::OutputCommand::CopyText(t) => Some(t.clone()),
            _ => None,
        })
}

#[test]
fn signature_explained_shows_the_exact_signed_string_and_copies_stay_redacted() {
    let mut d = mapped("orders", "http://127.0.0.1:9/x");
    d.signing = serde_json::from_value(json!({"kind": "standard_webhooks", "secret": "wh"}))
        .expect("signing");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (mut h, _env) = start(
        &workspace(vec![d], events3()),
        Secrets::memory(&[("wh", secret)]),
        false,
    );
    wait(&mut h, "the secret", |a| {
        a.secret_state.get("wh") == Some(&SecretState::Set)
    });
    tab(&mut h, "Preview");
    let r = h.state().live.request.clone().expect("a request");
    let body = String::from_utf8(r.body.clone().expect("body")).expect("utf-8");
    let id = r.header("webhook-id").expect("id").to_owned();
    let ts = r.header("webhook-timestamp").expect("timestamp").to_owned();
    click(&mut h, "Signature explained");
    assert!(
        h.query_by_label(&format!("{id}.{ts}.{body}")).is_some(),
        "the signed string is id.timestamp.body, byte for byte"
    );
    assert!(click_copy(&mut h, "Copy verifier").is_some_and(|t| t.contains("verify")));
    let curl = click_copy(&mut h, "Copy as cURL").expect("copied");
    assert!(
        curl.contains("| curl ") && curl.contains("webhook-signature: ***"),
        "{curl}"
    );
    assert!(!curl.contains(secret));
}
