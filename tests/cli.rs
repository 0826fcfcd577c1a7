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
fn help_lists_the_commands() {
    let o = hookline(&["--help"]);
    assert!(o.status.success());
    for cmd in ["render", "validate", "send", "capture", "authorize"] {
        assert!(stdout(&o).contains(cmd), "{}", stdout(&o));
    }
}

/// No subcommand opens the app; with no display it says so and exits non-zero,
/// without a panic and without touching the user's data directory.
#[test]
fn no_subcommand_without_a_display_fails_with_a_clear_message() {
    let data = tempfile::tempdir().expect("tempdir");
    let o = Command::new(BIN)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("HOOKLINE_DATA_DIR", data.path())
        .output()
        .expect("runs");
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("cannot open the window"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
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
            .contains("mapping[0] (n)"),
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
            && e.contains("destinations[1]: the name \"a\" is already used by destinations[0]")
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

// ---- Bad input, closed pipes and terminal safety (issue 7 §3, §5). ----

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A workspace with one destination `d` (the given JSON fields over a plain POST to
/// `url`) written to a temp dir, and an events file with `events`.
fn scratch(dest: &Value, events: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut d = serde_json::json!({"name": "d", "url": "http://127.0.0.1:9/p"});
    if let (Some(o), Some(extra)) = (d.as_object_mut(), dest.as_object()) {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    let ws = dir.path().join("ws.json");
    std::fs::write(
        &ws,
        serde_json::json!({"version": 1, "destinations": [d]}).to_string(),
    )
    .expect("write");
    let ev = dir.path().join("events.ndjson");
    std::fs::write(&ev, events).expect("write");
    let (ws, ev) = (
        ws.to_str().expect("utf8").to_owned(),
        ev.to_str().expect("utf8").to_owned(),
    );
    (dir, ws, ev)
}

/// Wait for a child at most 20 s; a child that had to be killed fails the test.
fn wait_bounded(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hookline did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_all(mut r: impl std::io::Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

#[test]
fn http_format_uses_crlf_throughout_byte_for_byte() {
    let (_dir, ws, ev) = scratch(
        &serde_json::json!({"headers": {"X-Empty": "", "X-A": "1"}}),
        "{\"type\":\"track\"}\n",
    );
    let o = hookline(&["render", "-w", &ws, "-d", "d", "-e", &ev, "-f", "http"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let expected = format!(
        "POST /p HTTP/1.1\r\nHost: 127.0.0.1:9\r\nUser-Agent: hookline/{}\r\n\
         Content-Type: application/json\r\nX-Empty:\r\nX-A: 1\r\nContent-Length: 16\r\n\r\n{{\"type\":\"track\"}}\n",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(stdout(&o), expected);
    // No bare LF anywhere in the head.
    let head = stdout(&o)
        .split("\r\n\r\n")
        .next()
        .expect("head")
        .to_owned();
    assert!(!head.replace("\r\n", "").contains('\n'), "{head:?}");
}

#[test]
fn curl_export_keeps_an_empty_header_and_curl_sends_it() {
    let got: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let g = got.clone();
    let srv = common::serve(Router::new().route(
        "/p",
        any(move |h: HeaderMap| async move {
            g.lock().expect("lock").push(h);
            "ok"
        }),
    ));
    let (_dir, ws, ev) = scratch(
        &serde_json::json!({"url": srv.url("/p"), "headers": {"X-Empty": "", "X-A": "1"}}),
        "{\"type\":\"track\"}\n",
    );
    let o = hookline(&["render", "-w", &ws, "-d", "d", "-e", &ev, "-f", "curl"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cmd = stdout(&o);
    assert!(cmd.contains(" -H 'X-Empty;' -H 'X-A: 1' "), "{cmd}");
    let run = Command::new("sh")
        .arg("-c")
        .arg(cmd.trim())
        .output()
        .expect("sh");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got = got.lock().expect("lock");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].get("x-empty").map(axum::http::HeaderValue::as_bytes),
        Some(&b""[..])
    );
    assert_eq!(
        got[0].get("x-a").map(axum::http::HeaderValue::as_bytes),
        Some(&b"1"[..])
    );
}

#[test]
fn duplicate_destination_names_are_refused_by_validate_render_and_send() {
    let dir = tempfile::tempdir().expect("tmp");
    let ws = dir.path().join("ws.json");
    std::fs::write(
        &ws,
        r#"{"version": 1, "destinations": [
            {"name": "a", "url": "http://127.0.0.1:9/1"},
            {"name": "a", "url": "http://127.0.0.1:9/2"}]}"#,
    )
    .expect("write");
    let ws = ws.to_str().expect("utf8");
    let ev = fixture("events/track.json");
    for args in [
        vec!["validate", "-w", ws],
        vec!["render", "-w", ws, "-d", "a", "-e", &ev],
        vec!["send", "-w", ws, "-d", "a", "-e", &ev, "--no-history"],
    ] {
        let o = hookline(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o)
                .contains("destinations[1]: the name \"a\" is already used by destinations[0]"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
    }
}

#[test]
fn validate_names_absurd_delivery_settings_and_bad_prefixes() {
    let (_dir, ws, _) = scratch(
        &serde_json::json!({
            "delivery": {"rate_limit": 1e-300, "concurrency": 18_446_744_073_709_551_615_u64},
            "auth": {"kind": "basic", "username": "a:b", "password_secret": "p"},
            "signing": {"kind": "hmac", "secret": "s", "prefix": "v1=\r\n"}
        }),
        "",
    );
    let o = hookline(&["validate", "-w", &ws]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    for field in [
        "delivery.rate_limit",
        "delivery.concurrency",
        "auth.username",
        "signing.prefix",
    ] {
        assert!(
            err.contains(&format!("destination \"d\": {field}: ")),
            "{field}: {err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn out_of_range_send_flags_are_usage_errors_not_panics() {
    let ev = fixture("events/track.json");
    let ws = fixture("workspace.json");
    for (flag, value) in [
        ("--rate", "1e-300"),
        ("--rate", "0"),
        ("--rate", "NaN"),
        ("--rate", "inf"),
        ("--concurrency", "18446744073709551615"),
        ("--concurrency", "0"),
        ("--max-attempts", "4294967295"),
        ("--max-attempts", "99999999999999999999"),
    ] {
        let o = hookline(&[
            "send",
            "-w",
            &ws,
            "-d",
            "everything",
            "-e",
            &ev,
            "--no-history",
            flag,
            value,
        ]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag), "{flag} {value}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

#[test]
fn an_endless_events_or_workspace_file_stops_at_the_cap() {
    let o = Command::new(BIN)
        .args([
            "render",
            "-w",
            &fixture("workspace.json"),
            "-d",
            "everything",
            "-e",
            "/dev/zero",
        ])
        .env("HOOKLINE_MAX_IMPORT_MB", "4")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "hookline: /dev/zero: larger than 4 MB (the import limit)\n"
    );
    let o = hookline(&["validate", "-w", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/dev/zero: larger than 64 MB"),
        "{}",
        stderr(&o)
    );
}

/// A pipe whose read end is already closed: every write to it gets EPIPE.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    writer
}

#[test]
fn render_and_validate_into_a_closed_stdout_exit_0_quietly() {
    for format in ["json", "curl", "http"] {
        let mut child = Command::new(BIN)
            .args([
                "render",
                "-w",
                &fixture("workspace.json"),
                "-d",
                "everything",
                "-e",
                &fixture("events/mixed.ndjson"),
                "-f",
                format,
            ])
            .env("HOOKLINE_SECRET_ORDERS_SIGNING", "s3cret")
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let err = read_all(child.stderr.take().expect("stderr"));
        let status = wait_bounded(&mut child);
        assert_eq!(status.code(), Some(0), "{format}: {status:?} {err}");
        assert_eq!(err, "", "{format}");
    }
    let mut child = Command::new(BIN)
        .args(["validate", "-w", &fixture("workspace.json")])
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let err = read_all(child.stderr.take().expect("stderr"));
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(0), "{status:?} {err}");
    assert_eq!(err, "");
}

#[test]
fn render_piped_into_head_exits_0_when_the_reader_goes_away() {
    // Far more output than a pipe buffers, so render is mid-write when `head` leaves.
    let mut events = String::new();
    let pad = "x".repeat(100);
    for i in 0..3000 {
        events.push_str(&serde_json::json!({"type": "track", "event": format!("e{i}"), "properties": {"pad": pad}}).to_string());
        events.push('\n');
    }
    let (_dir, ws, ev) = scratch(&serde_json::json!({}), &events);
    for format in ["json", "curl"] {
        let mut child = Command::new(BIN)
            .args(["render", "-w", &ws, "-d", "d", "-e", &ev, "-f", format])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first).expect("a first line");
        assert!(!first.is_empty());
        drop(out);
        let err = read_all(child.stderr.take().expect("stderr"));
        let status = wait_bounded(&mut child);
        assert_eq!(status.code(), Some(0), "{format}: {status:?} {err}");
        assert_eq!(err, "", "{format}");
    }
}

#[test]
fn a_closed_stderr_never_panics() {
    // Event 1 fails (`number` of "abc") and line 3 is not JSON, so there is something
    // to say on stderr.
    let dir = tempfile::tempdir().expect("tmp");
    let ev = dir.path().join("e.ndjson");
    std::fs::write(
        &ev,
        "{\"properties\":{\"price\":1}}\n{\"properties\":{\"price\":\"abc\"}}\nnope\n",
    )
    .expect("write");
    let mut child = Command::new(BIN)
        .args([
            "render",
            "-w",
            &fixture("workspace.json"),
            "-d",
            "strict",
            "-e",
            ev.to_str().expect("utf8"),
            "-f",
            "curl",
        ])
        .stdout(Stdio::piped())
        .stderr(closed_pipe())
        .spawn()
        .expect("spawn");
    let out = read_all(child.stdout.take().expect("stdout"));
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(1), "{status:?} {out}");
    assert!(out.contains("| curl "), "{out}");
    // `send` talks on stderr from the start (the job id) and at the end.
    let hits: Arc<Mutex<usize>> = Arc::default();
    let h = hits.clone();
    let srv = common::serve(Router::new().route(
        "/p",
        any(move || async move {
            *h.lock().expect("lock") += 1;
            "ok"
        }),
    ));
    let (_dir, ws, ev) = scratch(
        &serde_json::json!({"url": srv.url("/p")}),
        "{\"type\":\"track\"}\nnope\n",
    );
    let mut child = Command::new(BIN)
        .args(["send", "-w", &ws, "-d", "d", "-e", &ev, "--no-history"])
        .stdout(Stdio::piped())
        .stderr(closed_pipe())
        .spawn()
        .expect("spawn");
    let out = read_all(child.stdout.take().expect("stdout"));
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(1), "{status:?} {out}");
    assert!(out.contains("\"delivered\":1"), "{out}");
    assert_eq!(*hits.lock().expect("lock"), 1);
    for args in [
        vec!["validate", "-w", "/nonexistent/ws.json"],
        vec![
            "send",
            "-w",
            "/nonexistent/ws.json",
            "-d",
            "x",
            "-e",
            "/nonexistent/e",
            "--no-history",
        ],
    ] {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(closed_pipe())
            .spawn()
            .expect("spawn");
        let status = wait_bounded(&mut child);
        assert_eq!(status.code(), Some(2), "{args:?}: {status:?}");
    }
}

#[test]
fn terminal_safe_escapes_controls_but_keeps_lines() {
    use hookline::cli::{terminal_safe, terminal_safe_line};
    assert_eq!(terminal_safe("plain ünï\ttab"), "plain ünï\ttab");
    assert!(matches!(
        terminal_safe("plain"),
        std::borrow::Cow::Borrowed(_)
    ));
    assert_eq!(
        terminal_safe("a\x1b[31mb\r\nc\rd\x07\u{9b}e\u{7f}\0"),
        "a\\u{1b}[31mb\r\nc\\u{d}d\\u{7}\\u{9b}e\\u{7f}\\u{0}"
    );
    assert_eq!(terminal_safe_line("a\nb\r\n"), "a\\u{a}b\\u{d}\\u{a}");
    // Bidi overrides are escaped too; JSON keeps its layout and stays the same JSON.
    assert_eq!(terminal_safe("a\u{202e}b"), "a\\u{202e}b");
    assert_eq!(
        hookline::cli::json_terminal_safe("{\n  \"k\": \"\u{202e}\u{9b}\"\n}"),
        "{\n  \"k\": \"\\u202e\\u009b\"\n}"
    );
}

#[test]
fn control_characters_from_event_data_are_escaped_on_stderr() {
    // `strict` maps price through `number`; its error quotes the event's value.
    let dir = tempfile::tempdir().expect("tmp");
    let ev = dir.path().join("e.ndjson");
    std::fs::write(
        &ev,
        "{\"type\":\"track\",\"properties\":{\"price\":\"\\u001b]0;pwned\\u0007\\u001b[2J\"}}\n\
         {\"x\":\x01}\n",
    )
    .expect("write");
    for format in ["curl", "http", "json"] {
        let o = hookline(&[
            "render",
            "-w",
            &fixture("workspace.json"),
            "-d",
            "strict",
            "-e",
            ev.to_str().expect("utf8"),
            "-f",
            format,
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let (out, err) = (stdout(&o), stderr(&o));
        for (what, text) in [("stdout", &out), ("stderr", &err)] {
            assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t'),
                "{format}: raw control character on {what}: {text:?}"
            );
        }
        if format != "json" {
            assert!(err.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"), "{err}");
        }
    }
}

#[test]
fn a_secret_with_crlf_in_a_header_is_an_error_naming_the_secret_never_its_value() {
    let hits: Arc<Mutex<usize>> = Arc::default();
    let h = hits.clone();
    let srv = common::serve(Router::new().route(
        "/p",
        any(move || async move {
            *h.lock().expect("lock") += 1;
            "ok"
        }),
    ));
    for auth in [
        serde_json::json!({"kind": "bearer", "token_secret": "tok"}),
        serde_json::json!({"kind": "api_key", "value_secret": "tok"}),
        serde_json::json!({"kind": "header", "name": "X-Key", "value_secret": "tok"}),
    ] {
        let (_dir, ws, ev) = scratch(
            &serde_json::json!({"url": srv.url("/p"), "auth": auth}),
            "{\"type\":\"track\"}\n",
        );
        for cmd in [
            vec![
                "render",
                "-w",
                &ws,
                "-d",
                "d",
                "-e",
                &ev,
                "--reveal-secrets",
            ],
            vec![
                "send",
                "-w",
                &ws,
                "-d",
                "d",
                "-e",
                &ev,
                "--no-history",
                "--max-attempts",
                "1",
            ],
        ] {
            let o = Command::new(BIN)
                .args(&cmd)
                .env("HOOKLINE_SECRET_TOK", "leak-me\r\nX-Evil: 1")
                .output()
                .expect("runs");
            let all = format!("{}{}", stdout(&o), stderr(&o));
            assert_eq!(o.status.code(), Some(1), "{auth} {cmd:?}: {all}");
            assert!(
                all.contains("the value of secret \\\"tok\\\" contains a control character")
                    || all.contains("the value of secret \"tok\" contains a control character"),
                "{auth} {cmd:?}: {all}"
            );
            assert!(!all.contains("leak-me"), "{all}");
        }
    }
    assert_eq!(*hits.lock().expect("lock"), 0, "nothing may be sent");
}
