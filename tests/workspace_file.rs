//! The workspace file: the issue's example loads, saving is stable, errors say where.

use hookline::core::model::{
    Auth, Body, Envelope, HmacAlgorithm, Method, Signing, WORKSPACE_VERSION,
};
use hookline::core::render::CompiledDestination;
use hookline::store::workspace::{WorkspaceError, load, migrate_with, parse, save};
use serde_json::{Value, json};

fn fixture(p: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}/tests/fixtures/{p}", env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn the_documented_example_loads_with_every_field() {
    let ws = load(&fixture("workspace.json")).expect("loads");
    assert_eq!((ws.version, ws.name.as_str()), (1, "Demo"));
    let d = &ws.destinations[0];
    assert_eq!((d.name.as_str(), d.method), ("orders", Method::Post));
    assert_eq!(
        d.headers.get("X-Source").map(String::as_str),
        Some("hookline")
    );
    assert_eq!(d.trigger.events, vec!["Order Completed".to_owned()]);
    assert_eq!(d.body, Body::Mapped);
    assert_eq!(d.mapping.len(), 5);
    assert_eq!(d.mapping[2].default, Some(json!("free")));
    assert!(
        matches!(&d.auth, Auth::Basic { username, password_secret } if username == "svc" && password_secret == "orders-password")
    );
    assert!(
        matches!(&d.signing, Signing::Hmac { algorithm: HmacAlgorithm::Sha1, header, .. } if header == "X-Signature")
    );
    assert_eq!(
        d.batching
            .as_ref()
            .map(|b| (b.max_events, b.envelope.clone())),
        Some((1000, Envelope::Array))
    );
    assert_eq!(d.delivery.max_attempts, 5);
    assert_eq!(ws.event_sets[0].events.len(), 1);
}

#[test]
fn saving_is_stable_and_round_trips() {
    let ws = load(&fixture("workspace.json")).expect("loads");
    let dir = tempfile::tempdir().expect("tmp");
    let a = dir.path().join("a.json");
    save(&a, &ws).expect("saves");
    let first = std::fs::read_to_string(&a).expect("read");
    assert!(
        first.ends_with("}\n") && first.contains("\n  \"version\": 1,"),
        "{first}"
    );
    assert!(
        first.find("\"version\"") < first.find("\"destinations\""),
        "version first"
    );
    let again = load(&a).expect("reloads");
    assert_eq!(again, ws);
    save(&a, &again).expect("saves again");
    assert_eq!(
        std::fs::read_to_string(&a).expect("read"),
        first,
        "saving twice gives identical bytes"
    );
    assert!(
        !first.contains("open sesame"),
        "no secret values, only names"
    );
}

fn err(text: &str) -> String {
    parse(text, "ws.json").expect_err("invalid").to_string()
}

#[test]
fn a_typo_in_a_field_names_its_path_line_and_column() {
    let e = err(
        "{\n  \"version\": 1,\n  \"destinations\": [\n    {\"name\": \"x\", \"url\": \"https://a.b\", \"mehtod\": \"GET\"}\n  ]\n}",
    );
    assert!(e.starts_with("ws.json:4:"), "{e}");
    assert!(
        e.contains("destinations[0]") && e.contains("unknown field `mehtod`"),
        "{e}"
    );
}

#[test]
fn a_bad_enum_value_or_type_names_its_path() {
    let e = err(
        r#"{"version": 1, "destinations": [{"name": "x", "url": "https://a.b", "auth": {"kind": "basci"}}]}"#,
    );
    assert!(
        e.contains("destinations[0].auth") && e.contains("basci"),
        "{e}"
    );
    let e = err(
        r#"{"version": 1, "destinations": [{"name": "x", "url": "https://a.b", "delivery": {"timeout_ms": "soon"}}]}"#,
    );
    assert!(
        e.contains("destinations[0].delivery.timeout_ms") && e.contains("invalid type"),
        "{e}"
    );
}

#[test]
fn version_is_required_and_newer_files_are_refused() {
    assert!(err(r#"{"name": "x"}"#).contains("missing \"version\""));
    let e = err(r#"{"version": 99}"#);
    assert!(
        e.contains("newer Hookline") && e.contains(&WORKSPACE_VERSION.to_string()),
        "{e}"
    );
    assert!(err(r#"{"version": 0}"#).contains("version 0 is not supported"));
}

#[test]
fn broken_json_names_line_and_column() {
    assert!(matches!(
        parse("{\n \"version\": 1,\n}", "ws.json"),
        Err(WorkspaceError::Syntax { line: 3, .. })
    ));
}

#[test]
fn migrations_run_in_order_and_stamp_the_version() {
    #[allow(clippy::unnecessary_wraps)] // the migration signature
    fn rename_events(mut v: Value) -> Result<Value, String> {
        if let Some(o) = v.as_object_mut()
            && let Some(e) = o.remove("sets")
        {
            o.insert("event_sets".into(), e);
        }
        Ok(v)
    }
    #[allow(clippy::unnecessary_wraps)] // the migration signature
    fn add_name(mut v: Value) -> Result<Value, String> {
        v["name"] = json!("migrated");
        Ok(v)
    }
    let old = json!({"version": 0, "sets": []});
    let new = migrate_with(old, 0, 2, &[(0, rename_events), (1, add_name)]).expect("migrates");
    assert_eq!(
        new,
        json!({"version": 2, "event_sets": [], "name": "migrated"})
    );
    assert!(
        migrate_with(json!({}), 0, 2, &[(0, rename_events)])
            .expect_err("gap")
            .contains("version 1")
    );
}

#[test]
fn the_shipped_sample_workspace_loads_and_compiles() {
    let path = std::path::PathBuf::from(format!(
        "{}/assets/sample-workspace.json",
        env!("CARGO_MANIFEST_DIR")
    ));
    let ws = load(&path).expect("sample loads");
    assert!(ws.destinations.len() >= 2);
    for d in &ws.destinations {
        CompiledDestination::compile(d).unwrap_or_else(|e| panic!("{e:?}"));
    }
}

#[test]
fn save_replaces_the_file_and_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ws.json");
    std::fs::write(&path, "old contents").expect("write");
    let ws = hookline::core::model::Workspace::default();
    save(&path, &ws).expect("saves");
    save(&path, &ws).expect("saves again");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("ws.json")]);
    assert_eq!(load(&path).expect("reloads"), ws);
}

#[cfg(unix)]
#[test]
fn save_keeps_the_permissions_of_the_file_it_replaces() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ws.json");
    std::fs::write(&path, "{}").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    save(&path, &hookline::core::model::Workspace::default()).expect("saves");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn save_into_a_missing_directory_names_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("no-such-dir").join("ws.json");
    let e = save(&path, &hookline::core::model::Workspace::default()).expect_err("no dir");
    assert!(e.to_string().contains("no-such-dir/ws.json"), "{e}");
}

#[test]
fn a_wrong_type_names_path_line_and_column() {
    let e = err(
        "{\n  \"version\": 1,\n  \"destinations\": [\n    {\"name\": \"a\", \"url\": \"http://x\", \"delivery\": {\"timeout_ms\": \"soon\"}}\n  ]\n}\n",
    );
    assert!(
        e.starts_with("ws.json:4:70: destinations[0].delivery.timeout_ms: invalid type: string \"soon\", expected u64"),
        "{e}"
    );
}

#[test]
fn a_workspace_with_a_utf8_byte_order_mark_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bom.json");
    std::fs::write(&p, b"\xef\xbb\xbf{\"version\": 1, \"name\": \"b\"}\n").expect("write");
    let ws = hookline::store::workspace::load(&p).expect("loads");
    assert_eq!(ws.name, "b");
}

#[test]
fn a_workspace_that_is_not_utf8_names_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.json");
    std::fs::write(&p, b"{\"version\": 1,\n \"name\": \"\xff\"}\n").expect("write");
    let e = hookline::store::workspace::load(&p).expect_err("not UTF-8");
    assert_eq!(
        e.to_string(),
        format!("{}:2:11: not UTF-8 text", p.display())
    );
}

#[test]
fn an_endless_workspace_file_stops_at_the_limit() {
    let e =
        hookline::store::workspace::load(std::path::Path::new("/dev/zero")).expect_err("endless");
    assert_eq!(
        e.to_string(),
        "/dev/zero: larger than 64 MB (the workspace file limit)"
    );
}

fn compile_errors(dest: &serde_json::Value) -> Vec<String> {
    let ws = serde_json::json!({"version": 1, "destinations": [dest]});
    let ws = hookline::store::workspace::parse(&ws.to_string(), "t.json").expect("parses");
    match hookline::core::render::CompiledDestination::compile(&ws.destinations[0]) {
        Ok(_) => Vec::new(),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn absurd_delivery_settings_are_configuration_errors() {
    let errs = compile_errors(&serde_json::json!({
        "name": "d", "url": "http://127.0.0.1:9/",
        "delivery": {"rate_limit": 1e-300, "concurrency": 18_446_744_073_709_551_615_u64,
                     "max_attempts": 4_000_000_000_u32, "timeout_ms": 0,
                     "backoff_initial_ms": 5000, "backoff_max_ms": 1000,
                     "retry_after_cap_s": 18_446_744_073_709_551_615_u64}
    }));
    let joined = errs.join("\n");
    for field in [
        "delivery.rate_limit: must be between 0.001 and 1000000 requests per second, got 1e-300",
        "delivery.concurrency: must be between 1 and 10000, got 18446744073709551615",
        "delivery.max_attempts: must be between 1 and 100",
        "delivery.timeout_ms: must be between 1 and 3600000",
        "delivery.backoff_initial_ms: must be at most backoff_max_ms (1000), got 5000",
        "delivery.retry_after_cap_s: must be at most 86400",
    ] {
        assert!(joined.contains(field), "missing {field:?} in\n{joined}");
    }
    for rate in [0.0, -1.0, 2e6] {
        let errs = compile_errors(&serde_json::json!({
            "name": "d", "url": "http://127.0.0.1:9/", "delivery": {"rate_limit": rate}
        }));
        assert_eq!(errs.len(), 1, "{rate}: {errs:?}");
        assert!(errs[0].contains("delivery.rate_limit"), "{errs:?}");
    }
    let fine = compile_errors(&serde_json::json!({
        "name": "d", "url": "http://127.0.0.1:9/",
        "delivery": {"rate_limit": 0.001, "concurrency": 10000, "max_attempts": 100}
    }));
    assert!(fine.is_empty(), "{fine:?}");
}

#[test]
fn control_characters_in_prefixes_and_a_colon_in_a_basic_user_are_refused() {
    let errs = compile_errors(&serde_json::json!({
        "name": "d", "url": "http://127.0.0.1:9/",
        "signing": {"kind": "hmac", "secret": "s", "prefix": "sha1=\r\nX-Evil: 1"}
    }));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .starts_with("destination \"d\": signing.prefix: contains a control character (\\r)"),
        "{errs:?}"
    );
    let errs = compile_errors(&serde_json::json!({
        "name": "d", "url": "http://127.0.0.1:9/",
        "auth": {"kind": "jwt", "algorithm": "HS256", "key_secret": "k", "prefix": "Bearer\n"}
    }));
    assert!(
        errs.len() == 1 && errs[0].contains("auth.prefix: contains a control character (\\n)"),
        "{errs:?}"
    );
    let errs = compile_errors(&serde_json::json!({
        "name": "d", "url": "http://127.0.0.1:9/",
        "auth": {"kind": "basic", "username": "ann:admin", "password_secret": "p"}
    }));
    assert!(
        errs.len() == 1 && errs[0].contains("auth.username: contains \":\""),
        "{errs:?}"
    );
}

#[test]
fn duplicate_names_name_both_positions() {
    let ws = hookline::store::workspace::parse(
        r#"{"version": 1, "destinations": [
            {"name": "a", "url": "http://127.0.0.1:9/"},
            {"name": "b", "url": "http://127.0.0.1:9/"},
            {"name": "a", "url": "http://127.0.0.1:9/"}],
            "event_sets": [{"name": "s"}, {"name": "s"}]}"#,
        "t.json",
    )
    .expect("parses");
    assert_eq!(
        ws.duplicate_destination_names(),
        vec!["destinations[2]: the name \"a\" is already used by destinations[0]"]
    );
    assert_eq!(
        ws.duplicate_event_set_names(),
        vec!["event_sets[1]: the name \"s\" is already used by event_sets[0]"]
    );
}
