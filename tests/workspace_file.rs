//! The workspace file: the public example loads, saving is stable and atomic, and every
//! kind of bad file gets an error naming the file, the position and the JSON path.

use std::path::PathBuf;

use hookline::core::model::{Auth, Body, WORKSPACE_VERSION, Workspace};
use hookline::store::workspace::{
    Migration, WorkspaceError, load, migrate, parse, parse_with_migrations, save, to_bytes,
};
use serde_json::{Value, json};

/// The example from the issue: a public contract, it must always load.
const EXAMPLE: &str = r#"{
  "version": 1,
  "name": "Demo",
  "destinations": [{
    "name": "orders",
    "url": "https://example.com/hooks/{{ event.type }}",
    "method": "POST",
    "headers": {"X-Source": "hookline"},
    "query": {"v": "2"},
    "trigger": {"types": ["track"], "events": ["Order Completed"]},
    "dynamic_overrides": true,
    "body": {"mode": "mapped"},
    "mapping": [
      {"target": "user.id", "source": "$.userId"},
      {"target": "email", "source": "$.context.traits.email", "transforms": ["lowercase", "sha256"]},
      {"target": "plan", "source": "$.properties.plan", "default": "free"},
      {"target": "channel", "literal": "web"},
      {"target": "label", "template": "{{ event.event }} by {{ event.userId }}"}
    ],
    "auth": {"kind": "basic", "username": "svc", "password_secret": "orders-password"},
    "signing": {"kind": "hmac", "algorithm": "sha1", "encoding": "hex", "header": "X-Signature", "secret": "orders-signing"},
    "batching": {"max_events": 1000, "max_bytes": 5000000, "envelope": "array"},
    "delivery": {"timeout_ms": 30000, "concurrency": 8, "max_attempts": 5}
  }],
  "event_sets": [{"name": "samples", "events": [{"type": "track", "event": "Order Completed"}]}]
}"#;

fn example_with(edit: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(EXAMPLE).expect("example is JSON");
    edit(&mut v);
    serde_json::to_string_pretty(&v).expect("json")
}

fn invalid_parts(e: &WorkspaceError) -> (Option<(usize, usize)>, &str, &str) {
    match e {
        WorkspaceError::Invalid {
            position,
            path,
            message,
            ..
        } => (*position, path.as_str(), message.as_str()),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn issue_example_loads() {
    let ws = parse(EXAMPLE, "workspace.json").expect("the example loads");
    assert_eq!(ws.name, "Demo");
    let d = ws.destination("orders").expect("orders");
    assert_eq!(d.body, Body::Mapped);
    assert!(
        matches!(&d.auth, Auth::Basic { username, password_secret } if username == "svc" && password_secret == "orders-password")
    );
    assert_eq!(d.mapping.len(), 5);
    assert_eq!(ws.event_sets[0].events[0]["event"], "Order Completed");
}

#[test]
fn example_round_trips_through_save_and_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("workspace.json");
    let ws = parse(EXAMPLE, "workspace.json").expect("loads");
    save(&path, &ws).expect("save");
    let again = load(&path).expect("reload");
    assert_eq!(again, ws);
}

#[test]
fn saving_twice_gives_identical_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("workspace.json");
    let ws = parse(EXAMPLE, "workspace.json").expect("loads");
    save(&path, &ws).expect("save");
    let first = std::fs::read(&path).expect("read");
    save(&path, &load(&path).expect("reload")).expect("save again");
    let second = std::fs::read(&path).expect("read");
    assert_eq!(first, second);
}

#[test]
fn saved_file_is_pretty_with_two_space_indent_field_order_and_trailing_newline() {
    let ws = parse(EXAMPLE, "workspace.json").expect("loads");
    let text = String::from_utf8(to_bytes(&ws).expect("encode")).expect("utf8");
    assert!(text.starts_with("{\n  \"version\": 1,\n  \"name\": \"Demo\",\n  \"destinations\": [\n    {\n      \"name\": \"orders\",\n      \"url\""), "{text}");
    assert!(text.ends_with("}\n") && !text.ends_with("\n\n"));
    // Defaults are not written back: a hand-written file stays small.
    assert!(!text.contains("dynamic_overrides"), "{text}");
}

#[test]
fn save_replaces_the_file_and_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ws.json");
    std::fs::write(&path, "old contents").expect("write");
    save(&path, &Workspace::default()).expect("save");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("ws.json")]);
    assert_eq!(load(&path).expect("reload"), Workspace::default());
}

#[test]
fn save_into_a_missing_directory_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such-dir").join("ws.json");
    let err = save(&path, &Workspace::default()).expect_err("no dir");
    assert!(err.to_string().contains("ws.json"), "{err}");
}

#[test]
fn load_of_a_missing_file_names_the_file() {
    let err = load(&PathBuf::from("/nonexistent/hookline/ws.json")).expect_err("missing");
    assert!(
        err.to_string()
            .starts_with("/nonexistent/hookline/ws.json: cannot read"),
        "{err}"
    );
}

#[test]
fn unknown_field_typo_is_an_error_naming_its_path() {
    let text = example_with(|v| {
        let d = &mut v["destinations"][0];
        let m = d.as_object_mut().expect("object");
        let method = m.shift_remove("method").expect("method");
        m.insert("mehtod".into(), method);
    });
    let err = parse(&text, "workspace.json").expect_err("typo");
    let (position, path, message) = invalid_parts(&err);
    assert_eq!(path, "destinations[0].mehtod");
    assert!(message.contains("unknown field `mehtod`"), "{message}");
    assert!(position.is_some());
    assert!(err.to_string().starts_with("workspace.json:"), "{err}");
}

#[test]
fn wrong_type_names_path_line_and_column() {
    let text = "{\n  \"version\": 1,\n  \"destinations\": [\n    {\"name\": \"a\", \"url\": \"http://x\", \"delivery\": {\"timeout_ms\": \"soon\"}}\n  ]\n}\n";
    let err = parse(text, "workspace.json").expect_err("wrong type");
    let (position, path, message) = invalid_parts(&err);
    assert_eq!(path, "destinations[0].delivery.timeout_ms");
    assert_eq!(position, Some((4, 70)));
    assert!(
        message.starts_with("invalid type: string \"soon\", expected u64"),
        "{message}"
    );
    assert_eq!(
        err.to_string(),
        format!("workspace.json:4:70: destinations[0].delivery.timeout_ms: {message}")
    );
}

#[test]
fn bad_enum_value_names_the_path_and_the_choices() {
    let text = example_with(|v| v["destinations"][0]["auth"]["kind"] = json!("basci"));
    let err = parse(&text, "workspace.json").expect_err("bad kind");
    let (position, path, message) = invalid_parts(&err);
    assert_eq!(path, "destinations[0].auth.kind");
    assert!(message.contains("unknown variant `basci`"), "{message}");
    assert!(message.contains("`basic`"), "{message}");
    assert!(position.is_some());
}

#[test]
fn bad_method_names_the_path() {
    let text = example_with(|v| v["destinations"][0]["method"] = json!("FETCH"));
    let err = parse(&text, "workspace.json").expect_err("bad method");
    let (_, path, message) = invalid_parts(&err);
    assert_eq!(path, "destinations[0].method");
    assert!(message.contains("unknown variant `FETCH`"), "{message}");
}

#[test]
fn missing_version_is_an_error() {
    let text = example_with(|v| {
        v.as_object_mut().expect("object").shift_remove("version");
    });
    let err = parse(&text, "workspace.json").expect_err("no version");
    assert!(
        matches!(err, WorkspaceError::MissingVersion { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing \"version\""), "{err}");
}

#[test]
fn non_numeric_version_is_an_error() {
    let err = parse(r#"{"version": "1"}"#, "ws.json").expect_err("string version");
    assert_eq!(
        err.to_string(),
        "ws.json: \"version\" must be a whole number, found \"1\""
    );
}

#[test]
fn future_version_says_a_newer_hookline_wrote_it() {
    let text = example_with(|v| v["version"] = json!(WORKSPACE_VERSION + 1));
    let err = parse(&text, "workspace.json").expect_err("future");
    assert!(
        matches!(err, WorkspaceError::TooNew { found, .. } if found == u64::from(WORKSPACE_VERSION) + 1)
    );
    assert!(err.to_string().contains("newer Hookline"), "{err}");
}

#[test]
fn broken_json_names_line_and_column() {
    let text = "{\n  \"version\": 1,\n  \"name\": \"x\"\n  \"destinations\": []\n}\n";
    let err = parse(text, "workspace.json").expect_err("broken");
    assert!(
        matches!(
            err,
            WorkspaceError::Syntax {
                line: 4,
                column: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "workspace.json:4:3: expected `,` or `}`");
}

#[test]
fn top_level_array_is_an_error() {
    let err = parse("[]", "ws.json").expect_err("array");
    assert_eq!(
        err.to_string(),
        "ws.json: the workspace must be a JSON object, found an array"
    );
}

/// A fake 0 → 1 step: version 0 called the workspace's name `title`.
fn rename_title(v: &mut Value) -> Result<(), String> {
    let map = v.as_object_mut().ok_or("not an object")?;
    if let Some(title) = map.shift_remove("title") {
        map.insert("name".into(), title);
    }
    Ok(())
}

const FAKE_CHAIN: &[Migration] = &[Migration {
    from: 0,
    apply: rename_title,
}];

#[test]
fn older_version_runs_the_migration_chain() {
    let text = r#"{"version": 0, "title": "Old", "destinations": []}"#;
    let ws = parse_with_migrations(text, "old.json", FAKE_CHAIN).expect("migrates");
    assert_eq!(ws.name, "Old");
    assert_eq!(ws.version, WORKSPACE_VERSION);
}

#[test]
fn migration_sets_the_version_after_each_step() {
    let out = migrate(json!({"version": 0, "title": "t"}), 0, 1, FAKE_CHAIN).expect("migrates");
    assert_eq!(out, json!({"version": 1, "name": "t"}));
}

#[test]
fn older_version_without_a_known_migration_is_an_error() {
    let err = parse(r#"{"version": 0}"#, "old.json").expect_err("no chain");
    assert!(
        matches!(err, WorkspaceError::Migration { from: 0, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("no migration from version 0"),
        "{err}"
    );
}

#[test]
fn errors_after_migration_still_name_the_path() {
    let text = r#"{"version": 0, "title": "Old", "destinations": [{"name": "a", "url": "http://x", "method": "FETCH"}]}"#;
    let err = parse_with_migrations(text, "old.json", FAKE_CHAIN).expect_err("bad method");
    let (position, path, _) = invalid_parts(&err);
    assert_eq!(path, "destinations[0].method");
    assert_eq!(position, None, "migrated text has no positions");
}

#[test]
fn sample_workspace_asset_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/sample-workspace.json");
    let ws = load(&path).expect("the shipped sample loads");
    assert!(ws.destinations.len() >= 2);
    for d in &ws.destinations {
        assert!(d.url.starts_with("http://127.0.0.1:8787/"), "{}", d.url);
    }
    assert!(ws.destinations.iter().any(|d| d.body == Body::Event
        && matches!(
            d.signing,
            hookline::core::model::Signing::StandardWebhooks { .. }
        )));
    assert_eq!(ws.event_sets[0].events.len(), 3);
}

#[test]
fn sample_workspace_asset_is_in_saved_form() {
    // Opening and saving the shipped sample must not produce a git diff.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/sample-workspace.json");
    let ws = load(&path).expect("loads");
    assert_eq!(
        to_bytes(&ws).expect("encode"),
        std::fs::read(&path).expect("read")
    );
}
