//! The preview is what gets sent, byte for byte: for every body mode, batching on and
//! off, events given as pretty JSON, compact NDJSON, spaced NDJSON and HAR, and signing
//! none / HMAC / Standard Webhooks, the request `hookline render` prints, the request a
//! real server on 127.0.0.1 receives from `hookline send`, and the request the exported
//! cURL command delivers have the same method, URL, body bytes and header values —
//! except Standard Webhooks' per-attempt timestamp and signature, which must verify.

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::any;
use hookline::core::sign;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_hookline");
const HMAC_KEY: &str = "hmac-key-1";
const WH_KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Clone, Debug)]
struct Got {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

type Seen = Arc<Mutex<Vec<Got>>>;

async fn record(
    State(s): State<Seen>,
    method: Method,
    uri: Uri,
    h: HeaderMap,
    body: Bytes,
) -> &'static str {
    s.lock().expect("lock").push(Got {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: h
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    });
    "ok"
}

fn events() -> Vec<&'static str> {
    // Spacing, escapes and a number beyond f64 that must travel as written.
    vec![
        r#"{"type": "track", "event": "Order Completed", "messageId": "m-1", "userId": "u1", "properties": {"price": 60.50, "name": "caf\u00e9 \"x\""}, "id": 123456789012345678901234567890}"#,
        r#"{"type": "track", "event": "Order Completed", "messageId": "m-2", "userId": "u2", "properties": {"price": 1e2, "name": "b"}}"#,
        r#"{"type": "identify", "messageId": "m-3", "userId": "u3", "traits": {"email": "a@b.c"}}"#,
    ]
}

fn event_files(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let evs = events();
    let compact: Vec<String> = evs
        .iter()
        .map(|e| hookline::core::events::canonical(e).into_string())
        .collect();
    let files = [
        // Pretty-printed by hand, so the numbers and escapes are the input's own.
        (
            "pretty",
            format!(
                "[\n  {}\n]\n",
                evs.iter()
                    .map(|e| e.replace(", \"", ",\n    \"").replace('{', "{\n    "))
                    .collect::<Vec<_>>()
                    .join(",\n  ")
            ),
        ),
        ("compact-ndjson", compact.join("\n") + "\n"),
        ("spaced-ndjson", evs.join("\n") + "\n"),
        (
            "har",
            json!({"log": {"entries": evs.iter().map(|e| json!({"request": {"method": "POST", "url": "https://x.example/c", "postData": {"mimeType": "application/json", "text": e}}})).collect::<Vec<_>>()}}).to_string(),
        ),
    ];
    files
        .into_iter()
        .map(|(name, text)| {
            let p = dir.join(format!("{name}.events"));
            std::fs::write(&p, text).expect("write");
            (name, p.to_string_lossy().into_owned())
        })
        .collect()
}

fn destination(name: &str, url: &str, mode: &str, batched: bool, signing: &str) -> Value {
    let body = match mode {
        "template" => {
            json!({"mode": "template", "template": "user={{ event.userId }} price={{ event.properties.price }}\n", "content_type": "text/plain"})
        }
        m => json!({"mode": m}),
    };
    let mut d = json!({
        "name": name,
        "url": url,
        "query": {"src": "hook line"},
        "headers": {"X-Static": "v 1"},
        "body": body,
        "mapping": [
            {"target": "user", "source": "$.userId"},
            {"target": "price", "source": "$.properties.price", "transforms": ["number"]},
            {"target": "label", "template": "{{ event.event }} / {{ event.properties.name }}"}
        ],
        "delivery": {"concurrency": 1, "max_attempts": 1}
    });
    if batched {
        d["batching"] = if matches!(mode, "event" | "mapped") {
            json!({"max_events": 2})
        } else {
            json!({"max_events": 2, "envelope": {"template": "{{ bodies | tojson }}"}})
        };
    }
    d["signing"] = match signing {
        "hmac" => json!({"kind": "hmac", "algorithm": "sha256", "secret": "hmac"}),
        "standard" => json!({"kind": "standard_webhooks", "secret": "wh"}),
        _ => json!({"kind": "none"}),
    };
    d
}

fn hookline(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("HOOKLINE_SECRET_HMAC", HMAC_KEY)
        .env("HOOKLINE_SECRET_WH", WH_KEY)
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .expect("runs")
}

/// Per-attempt headers: present in both, but only required to verify.
fn per_attempt(name: &str) -> bool {
    matches!(name, "webhook-timestamp" | "webhook-signature")
}

fn check(what: &str, rendered: &Value, got: &Got, signing: &str) {
    let url = url::Url::parse(rendered["url"].as_str().expect("url")).expect("url parses");
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    assert_eq!(got.method, rendered["method"], "{what}: method");
    assert_eq!(got.uri, target, "{what}: URL");
    let body = rendered["body"]
        .as_str()
        .map(str::as_bytes)
        .unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(&got.body),
        String::from_utf8_lossy(body),
        "{what}: body"
    );
    assert_eq!(got.body, body, "{what}: body bytes");
    let header = |name: &str| {
        got.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    for h in rendered["headers"].as_array().expect("headers") {
        let (n, v) = (h[0].as_str().expect("name"), h[1].as_str().expect("value"));
        if per_attempt(n) {
            assert!(header(n).is_some(), "{what}: {n} missing");
        } else {
            assert_eq!(header(n), Some(v), "{what}: header {n}");
        }
    }
    match signing {
        "hmac" => assert!(
            sign::verify_hmac(
                hookline::core::model::HmacAlgorithm::Sha256,
                HMAC_KEY.as_bytes(),
                &got.body,
                header("X-Signature").unwrap_or("")
            ),
            "{what}: HMAC verifies"
        ),
        "standard" => {
            let ts: i64 = header("webhook-timestamp")
                .and_then(|t| t.parse().ok())
                .expect("timestamp");
            assert!(
                sign::verify_standard_webhooks(
                    WH_KEY,
                    header("webhook-id").unwrap_or(""),
                    ts,
                    &got.body,
                    header("webhook-signature").unwrap_or("")
                ),
                "{what}: Standard Webhooks signature verifies"
            );
        }
        _ => {}
    }
}

#[test]
fn render_send_and_curl_agree_byte_for_byte_on_every_path() {
    let seen: Seen = Arc::default();
    let srv = common::serve(Router::new().fallback(any(record)).with_state(seen.clone()));
    let dir = tempfile::tempdir().expect("dir");
    let files = event_files(dir.path());
    let mut combos = 0;
    for mode in ["event", "event_urlencoded", "mapped", "form", "template"] {
        for batched in [false, true] {
            for signing in ["none", "hmac", "standard"] {
                let name = format!("{mode}-{batched}-{signing}");
                let url = srv.url(&format!("/{name}/hook"));
                let ws = json!({"version": 1, "destinations": [destination(&name, &url, mode, batched, signing)]});
                let ws_path = dir.path().join(format!("{name}.json"));
                std::fs::write(&ws_path, ws.to_string()).expect("write ws");
                let ws_path = ws_path.to_string_lossy().into_owned();
                let mut first_render: Option<Value> = None;
                for (fmt, file) in &files {
                    let what = format!("{name} from {fmt}");
                    let o = hookline(&[
                        "render",
                        "-w",
                        &ws_path,
                        "-d",
                        &name,
                        "-e",
                        file,
                        "--reveal-secrets",
                    ]);
                    assert_eq!(
                        o.status.code(),
                        Some(0),
                        "{what}: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    let doc: Value = serde_json::from_slice(&o.stdout).expect("render json");
                    let reqs = doc["requests"].as_array().expect("requests").clone();
                    assert_eq!(reqs.len(), if batched { 2 } else { 3 }, "{what}");
                    // Every input format renders the same requests.
                    match &first_render {
                        None => first_render = Some(doc.clone()),
                        Some(f) if signing != "standard" => {
                            assert_eq!(f, &doc, "{what}: differs by input format");
                        }
                        Some(_) => {}
                    }
                    seen.lock().expect("lock").clear();
                    let o = hookline(&[
                        "send",
                        "-w",
                        &ws_path,
                        "-d",
                        &name,
                        "-e",
                        file,
                        "--no-history",
                    ]);
                    assert_eq!(
                        o.status.code(),
                        Some(0),
                        "{what}: send: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    let got = std::mem::take(&mut *seen.lock().expect("lock"));
                    assert_eq!(got.len(), reqs.len(), "{what}: requests received");
                    for (r, g) in reqs.iter().zip(&got) {
                        check(&format!("{what}: send"), r, g, signing);
                    }
                    combos += 1;
                }
                // The exported cURL commands, run for real, deliver the same bytes.
                let o = hookline(&[
                    "render",
                    "-w",
                    &ws_path,
                    "-d",
                    &name,
                    "-e",
                    &files[2].1,
                    "--format",
                    "curl",
                    "--reveal-secrets",
                ]);
                let curl = String::from_utf8_lossy(&o.stdout).into_owned();
                let o = hookline(&[
                    "render",
                    "-w",
                    &ws_path,
                    "-d",
                    &name,
                    "-e",
                    &files[2].1,
                    "--reveal-secrets",
                ]);
                let doc: Value = serde_json::from_slice(&o.stdout).expect("render json");
                seen.lock().expect("lock").clear();
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(&curl)
                    .stdout(Stdio::null())
                    .output()
                    .expect("sh runs curl");
                assert!(
                    out.status.success(),
                    "{name}: curl: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let got = std::mem::take(&mut *seen.lock().expect("lock"));
                let reqs = doc["requests"].as_array().expect("requests");
                assert_eq!(got.len(), reqs.len(), "{name}: curl requests");
                for (r, g) in reqs.iter().zip(&got) {
                    check(&format!("{name}: curl"), r, g, signing);
                }
            }
        }
    }
    assert_eq!(combos, 5 * 2 * 3 * 4);
}

#[test]
fn a_number_beyond_f64_is_sent_as_written_batched_or_not() {
    let seen: Seen = Arc::default();
    let srv = common::serve(Router::new().fallback(any(record)).with_state(seen.clone()));
    let dir = tempfile::tempdir().expect("dir");
    let ev = dir.path().join("e.ndjson");
    std::fs::write(
        &ev,
        "{\"id\": 123456789012345678901234567890, \"f\": 0.1000000000000000055511151231257827}\n",
    )
    .expect("write");
    for batched in [false, true] {
        let mut d = json!({"name": "n", "url": srv.url("/n")});
        if batched {
            d["batching"] = json!({"max_events": 10});
        }
        let ws = dir.path().join("ws.json");
        std::fs::write(&ws, json!({"version": 1, "destinations": [d]}).to_string()).expect("ws");
        seen.lock().expect("lock").clear();
        let o = hookline(&[
            "send",
            "-w",
            &ws.to_string_lossy(),
            "-d",
            "n",
            "-e",
            &ev.to_string_lossy(),
            "--no-history",
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = seen.lock().expect("lock").clone();
        let body = String::from_utf8_lossy(&got[0].body).into_owned();
        assert!(
            body.contains("\"id\":123456789012345678901234567890")
                && body.contains("0.1000000000000000055511151231257827"),
            "batched={batched}: {body}"
        );
    }
}
