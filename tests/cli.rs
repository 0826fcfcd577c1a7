//! The `render` and `validate` commands as a user runs them: output shapes, exit
//! codes, and a cURL export that, run for real, sends the same bytes.

mod common;

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::any;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hookline");

fn fixture(p: &str) -> String {
    format!("{}/tests/fixtures/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn hookline(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("HOOKLINE_SECRET_ORDERS_PASSWORD", "open sesame")
        .env("HOOKLINE_SECRET_ORDERS_SIGNING", "s3cret")
        .output()
        .expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn no_subcommand_prints_help() {
    let o = hookline(&[]);
    assert!(o.status.success());
    for cmd in ["render", "validate", "send"] {
        assert!(stdout(&o).contains(cmd), "{}", stdout(&o));
    }
}

#[test]
fn render_json_lists_requests_skipped_and_errors() {
    let ws = fixture("workspace.json");
    let o = hookline(&[
        "render",
        "-w",
        &ws,
        "-d",
        "everything",
        "-e",
        &fixture("events/mixed.ndjson"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let reqs = doc["requests"].as_array().expect("requests");
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0]["method"], "POST");
    assert_eq!(reqs[0]["url"], "http://127.0.0.1:9/collect");
    assert_eq!(reqs[0]["events"], serde_json::json!([0]));
    let headers = reqs[0]["headers"].as_array().expect("headers");
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "Content-Type" && h[1] == "application/json")
    );
    // The signature is derived from a secret: redacted unless revealed.
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "X-Signature" && h[1] == "***"),
        "{headers:?}"
    );
    let body: Value =
        serde_json::from_str(reqs[0]["body"].as_str().expect("body")).expect("body json");
    assert_eq!(body["type"], "identify");
    assert_eq!(doc["skipped"], serde_json::json!([]));
    assert_eq!(doc["errors"], serde_json::json!([]));
}

#[test]
fn render_reports_trigger_skips() {
    let o = hookline(&[
        "render",
        "-w",
        &fixture("workspace.json"),
        "-d",
        "orders",
        "-e",
        &fixture("events/mixed.ndjson"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(doc["requests"].as_array().map(Vec::len), Some(0));
    assert_eq!(doc["skipped"].as_array().map(Vec::len), Some(3));
    assert_eq!(doc["skipped"][2]["index"], 2);
}

#[test]
fn reveal_secrets_shows_derived_values() {
    let o = hookline(&[
        "render",
        "-w",
        &fixture("workspace.json"),
        "-d",
        "everything",
        "-e",
        &fixture("events/track.json"),
        "--reveal-secrets",
    ]);
    let doc: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let sig = doc["requests"][0]["headers"]
        .as_array()
        .expect("h")
        .iter()
        .find(|h| h[0] == "X-Signature")
        .map(|h| h[1].as_str().unwrap_or("").to_owned());
    assert_eq!(sig.map(|s| s.len()), Some(40));
}

#[test]
fn some_events_failing_exits_1_and_still_renders_the_others() {
    let dir = tempfile::tempdir().expect("tmp");
    let ev = dir.path().join("e.ndjson");
    std::fs::write(
        &ev,
        "{\"properties\":{\"price\":\"12\"}}\n{\"properties\":{\"price\":\"twelve\"}}\n",
    )
    .expect("write");
    let o = hookline(&[
        "render",
        "-w",
        &fixture("workspace.json"),
        "-d",
        "strict",
        "-e",
        ev.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let doc: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(doc["requests"].as_array().map(Vec::len), Some(1));
    assert_eq!(doc["errors"][0]["index"], 1);
    assert!(
        doc["errors"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("mapping row 1 (n)"),
        "{doc}"
    );
}

#[test]
fn bad_ndjson_lines_are_reported_with_line_numbers_and_exit_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let ev = dir.path().join("e.ndjson");
    std::fs::write(&ev, "{\"type\":\"track\"}\n{broken\n{\"type\":\"page\"}\n").expect("write");
    let o = hookline(&[
        "render",
        "-w",
        &fixture("workspace.json"),
        "-d",
        "everything",
        "-e",
        ev.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
    let doc: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(doc["requests"].as_array().map(Vec::len), Some(2));
}

#[test]
fn bad_workspace_unknown_destination_and_missing_file_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("ws.json");
    std::fs::write(&bad, "{\n  \"version\": 1,\n  \"destinations\": [{\"name\": \"x\", \"url\": \"https://a.b\", \"mehtod\": \"GET\"}]\n}\n").expect("write");
    let o = hookline(&["validate", "-w", bad.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("mehtod") && stderr(&o).contains("ws.json"),
        "{}",
        stderr(&o)
    );
    let o = hookline(&[
        "render",
        "-w",
        &fixture("workspace.json"),
        "-d",
        "nope",
        "-e",
        &fixture("events/track.json"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no destination named \"nope\"") && stderr(&o).contains("orders"),
        "{}",
        stderr(&o)
    );
    let o = hookline(&[
        "render",
        "-w",
        &fixture("workspace.json"),
        "-d",
        "orders",
        "-e",
        "/nonexistent/events.json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/events.json"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn validate_lists_every_problem_with_its_field() {
    let dir = tempfile::tempdir().expect("tmp");
    let ws = dir.path().join("ws.json");
    std::fs::write(
        &ws,
        r#"{"version": 1, "destinations": [
            {"name": "a", "url": "example.com/x", "headers": {"X-T": "{{ event.id "}},
            {"name": "a", "url": "https://ok.example", "mapping": [{"target": "x", "source": "$.a", "transforms": ["md5"]}]}
        ]}"#,
    )
    .expect("write");
    let o = hookline(&["validate", "-w", ws.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("url")
            && e.contains("headers.X-T")
            && e.contains("used twice")
            && e.contains("unknown transform \"md5\""),
        "{e}"
    );
    let o = hookline(&["validate", "-w", &fixture("workspace.json")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn http_format_prints_raw_requests() {
    let o = hookline(&[
        "render",
        "-w",
        &fixture("workspace.json"),
        "-d",
        "everything",
        "-e",
        &fixture("events/track.json"),
        "-f",
        "http",
    ]);
    let s = stdout(&o);
    assert!(
        s.starts_with("POST /collect HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"),
        "{s}"
    );
    assert!(s.contains("Content-Length: "), "{s}");
}

#[test]
fn curl_export_sends_exactly_the_rendered_bytes() {
    let got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let g = got.clone();
    let srv = common::serve(Router::new().route(
        "/collect",
        any(move |h: HeaderMap, b: Bytes| async move {
            g.lock().expect("lock").push((h, b));
            "ok"
        }),
    ));
    let dir = tempfile::tempdir().expect("tmp");
    let ws = dir.path().join("ws.json");
    let text = std::fs::read_to_string(fixture("workspace.json"))
        .expect("read")
        .replace("http://127.0.0.1:9/collect", &srv.url("/collect"));
    std::fs::write(&ws, text).expect("write");
    // An event whose body has quotes, a single quote, a leading @ in a value, unicode and a backslash.
    let ev = dir.path().join("e.json");
    std::fs::write(
        &ev,
        r#"{"type":"track","event":"it's \"quoted\"","properties":{"note":"@file \\ ünï"}}"#,
    )
    .expect("write");
    let args = [
        "render",
        "-w",
        ws.to_str().expect("utf8"),
        "-d",
        "everything",
        "-e",
        ev.to_str().expect("utf8"),
        "--reveal-secrets",
    ];
    let json: Value = serde_json::from_str(&stdout(&hookline(&args))).expect("json");
    let expected_body = json["requests"][0]["body"]
        .as_str()
        .expect("body")
        .to_owned();
    let curl = stdout(&hookline(&[&args[..], &["-f", "curl"]].concat()));
    let status = Command::new("sh")
        .arg("-c")
        .arg(curl.trim())
        .output()
        .expect("sh runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let got = got.lock().expect("lock");
    assert_eq!(got.len(), 1);
    assert_eq!(std::str::from_utf8(&got[0].1).expect("utf8"), expected_body);
    let sig = got[0]
        .0
        .get("x-signature")
        .and_then(|v| v.to_str().ok())
        .expect("signature header");
    assert!(hookline::core::sign::verify_hmac(
        hookline::core::model::HmacAlgorithm::Sha1,
        b"s3cret",
        &got[0].1,
        sig
    ));
}

#[test]
fn authorize_needs_an_authorization_code_destination() {
    let o = hookline(&[
        "authorize",
        "-w",
        &fixture("workspace.json"),
        "-d",
        "orders",
        "--no-browser",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("does not use oauth2_authorization_code"),
        "{}",
        stderr(&o)
    );
}
