//! The secret-leak sweep: a distinct secret in every place one can go (URL path, query,
//! header, mapping template, batch envelope template, JWT claims and key, HMAC key,
//! OAuth2 client secret and access token), then every output is searched for each
//! secret and its Base64, URL-encoded, hex and case-changed forms: `render` as json,
//! curl and http, `send`'s stdout and stderr (with a receiver that echoes everything
//! back), error messages, the history database's files, and the runtime's `Update`s.
//! Only `--reveal-secrets` shows them.

mod common;

use std::fmt::Write as _;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use base64::Engine as _;
use hookline::core::secret::Secrets;
use hookline::runtime::delivery::JobFingerprint;
use hookline::runtime::{Command as RtCommand, Runtime, RuntimeConfig, Update};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_hookline");

const SECRETS: [(&str, &str); 11] = [
    ("path-s", "pathSecret-7f3a9q"),
    ("query-s", "querySecret-1b2cq"),
    ("hdr-s", "hdrSecret-88aa/+="),
    ("map-s", "mapSecret-x y/z+1\"q"),
    ("env-s", "envSecret-5566q"),
    ("claim-s", "claimSecret-3344q"),
    ("jwt-key", "jwtKey-abcdef0123456789"),
    ("sig-s", "sigSecret-9988q"),
    ("client-s", "clientSecret-4455q"),
    ("num-s", "notANumber-1212q"),
    ("wh-s", "whsec_c2VjcmV0LXdoLTEyMzQ1Njc4OTA="),
];
/// What the token endpoint issues: a secret Hookline learns at run time.
const ACCESS_TOKEN: &str = "accessTok-6677q";

fn forms(v: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        v.to_owned(),
        v.to_uppercase(),
        v.to_lowercase(),
        b64.encode(v).trim_end_matches('=').to_owned(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v),
        form_urlencoded::byte_serialize(v.as_bytes()).collect(),
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string(),
        hex::encode(v),
    ]
}

fn assert_clean(what: &str, text: &str) {
    let all = SECRETS.iter().map(|(_, v)| *v).chain([ACCESS_TOKEN]);
    for v in all {
        for f in forms(v) {
            assert!(
                !text.contains(&f),
                "{what} shows a form of secret {v:?}: {f:?}\n---\n{}",
                &text[text.find(&f).map_or(0, |i| i.saturating_sub(200))..][..text.len().min(400)]
            );
        }
    }
}

fn env_secrets(cmd: &mut Command) -> &mut Command {
    for (n, v) in SECRETS {
        cmd.env(hookline::core::secret::env_var_name(n), v);
    }
    cmd.env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
}

fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    env_secrets(&mut cmd).output().expect("runs")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// A receiver that echoes the whole request back, with 400 (final failure) for paths
/// containing `fail`, else 200.
async fn echo(uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let heads: Vec<String> = headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    let text = format!(
        "{uri}\n{}\n{}",
        heads.join("\n"),
        String::from_utf8_lossy(&body)
    );
    let status = if uri.path().contains("fail") {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, [("x-echo", heads.join(" | "))], text)
}

async fn token() -> impl IntoResponse {
    (
        [("content-type", "application/json")],
        json!({"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 3600})
            .to_string(),
    )
}

fn workspace(base: &str) -> Value {
    json!({
        "version": 1,
        "destinations": [
            {
                "name": "everywhere",
                "url": format!("{base}/{{{{ secret(\"path-s\") }}}}/hook"),
                "headers": {"X-Custom": "{{ secret(\"hdr-s\") | base64 }}"},
                "query": {"k": "{{ secret(\"query-s\") | upper }}"},
                "body": {"mode": "mapped"},
                "mapping": [
                    {"target": "user", "source": "$.userId"},
                    {"target": "m", "template": "{{ secret(\"map-s\") }}"},
                    {"target": "h", "template": "{{ secret(\"map-s\") | sha256 }}"}
                ],
                "auth": {"kind": "jwt", "algorithm": "HS256", "key_secret": "jwt-key",
                         "claims": {"sub": "{{ secret(\"claim-s\") }}"}},
                "signing": {"kind": "hmac", "secret": "sig-s"},
                "delivery": {"max_attempts": 1}
            },
            {
                "name": "batched",
                "url": format!("{base}/fail/batch"),
                "body": {"mode": "event"},
                "batching": {"max_events": 10, "envelope": {"template": "{\"key\": \"{{ secret(\"env-s\") }}\", \"items\": [{% for b in bodies %}{{ b | tojson }}{% if not loop.last %},{% endif %}{% endfor %}]}"}},
                "signing": {"kind": "standard_webhooks", "secret": "wh-s"},
                "delivery": {"max_attempts": 1}
            },
            {
                "name": "oauth",
                "url": format!("{base}/fail/oauth"),
                "auth": {"kind": "oauth2_client_credentials", "token_url": format!("{base}/token"),
                         "client_id": "cid", "client_secret": "client-s"},
                "delivery": {"max_attempts": 1}
            },
            {
                "name": "broken",
                "url": format!("{base}/hook"),
                "body": {"mode": "mapped"},
                "mapping": [{"target": "n", "template": "{{ secret(\"num-s\") }}", "transforms": ["number"]}]
            }
        ]
    })
}

#[test]
fn no_output_shows_a_secret_unless_revealed() {
    let srv = common::serve(
        Router::new()
            .route("/token", post(token))
            .fallback(any(echo)),
    );
    let dir = tempfile::tempdir().expect("dir");
    let ws = dir.path().join("ws.json");
    std::fs::write(&ws, workspace(&srv.url("")).to_string()).expect("write ws");
    let ev = dir.path().join("events.ndjson");
    std::fs::write(
        &ev,
        "{\"type\":\"track\",\"userId\":\"u1\",\"messageId\":\"m1\"}\n{\"type\":\"track\",\"userId\":\"u2\",\"messageId\":\"m2\"}\n",
    )
    .expect("write events");
    let (ws, ev) = (
        ws.to_string_lossy().into_owned(),
        ev.to_string_lossy().into_owned(),
    );
    let history = dir.path().join("history.db");
    let hist = history.to_string_lossy().into_owned();

    for dest in ["everywhere", "batched", "oauth", "broken"] {
        for format in ["json", "curl", "http"] {
            let o = run(&[
                "render", "-w", &ws, "-d", dest, "-e", &ev, "--format", format,
            ]);
            assert_clean(&format!("render {dest} --format {format}"), &text(&o));
            assert!(!o.stdout.is_empty() || dest == "broken", "{}", text(&o));
        }
        let o = run(&["send", "-w", &ws, "-d", dest, "-e", &ev, "--history", &hist]);
        assert_clean(&format!("send {dest}"), &text(&o));
    }
    // The broken destination's error names the row but not the value.
    let o = run(&["render", "-w", &ws, "-d", "broken", "-e", &ev]);
    assert!(text(&o).contains("number"), "{}", text(&o));
    // The history database, every file of it.
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let p = entry.expect("entry").path();
        if p.to_string_lossy().contains("history") {
            let bytes = std::fs::read(&p).expect("read");
            assert_clean(&p.display().to_string(), &String::from_utf8_lossy(&bytes));
        }
    }
    // Revealed on request, and only then.
    let o = run(&[
        "render",
        "-w",
        &ws,
        "-d",
        "everywhere",
        "-e",
        &ev,
        "--reveal-secrets",
    ]);
    let t = text(&o);
    assert!(
        t.contains("pathSecret-7f3a9q") && t.contains("QUERYSECRET-1B2CQ"),
        "{t}"
    );

    // The runtime's updates, as the app would receive them.
    let workspace: hookline::core::model::Workspace =
        serde_json::from_value(workspace(&srv.url(""))).expect("ws");
    let secrets = Secrets::memory(&SECRETS);
    let (rt, updates) = Runtime::start(RuntimeConfig::new(secrets), || {}).expect("runtime");
    let events: Vec<Value> = (0..3)
        .map(|i| json!({"type": "track", "userId": format!("u{i}")}))
        .collect();
    for (i, d) in workspace.destinations.iter().enumerate() {
        assert!(rt.send(RtCommand::Send {
            job: format!("j{i}"),
            destination: Box::new(d.clone()),
            events: Arc::new(events.clone().into()),
            only: None,
            source: "sweep".into(),
            resume: false,
            fingerprint: JobFingerprint::default(),
        }));
    }
    let mut seen = String::new();
    let mut finished = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while finished < workspace.destinations.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let u = updates
            .recv_timeout(left)
            .expect("updates until every job ends");
        if matches!(u, Update::JobFinished { .. }) {
            finished += 1;
        }
        let _ = writeln!(seen, "{u:?}");
    }
    assert_clean("runtime updates", &seen);
    assert!(
        seen.contains("HTTP 400"),
        "the echoing receiver answered: {seen}"
    );
}

/// The capture receiver, fed by `hookline send` with a bearer token and an HMAC
/// signature: neither the token, the signing key, nor the signature reach its stdout,
/// its `--out` file or its history.
#[test]
fn the_capture_receiver_shows_no_credential_it_received() {
    use std::io::{BufRead as _, BufReader};
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("captured.ndjson");
    let hist = dir.path().join("capture-history.db");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "capture",
        "--listen",
        "127.0.0.1:0",
        "--verify-secret",
        "sig-s",
        "--out",
        &out.to_string_lossy(),
        "--history",
        &hist.to_string_lossy(),
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = env_secrets(&mut cmd).spawn().expect("capture starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("read");
    let url = first
        .strip_prefix("listening on ")
        .expect("listening")
        .to_owned();
    let ws = dir.path().join("ws.json");
    std::fs::write(
        &ws,
        json!({"version": 1, "destinations": [{
            "name": "to-capture",
            "url": format!("{url}/collect/track/sweep"),
            "auth": {"kind": "bearer", "token_secret": "client-s"},
            "signing": {"kind": "hmac", "secret": "sig-s"}
        }]})
        .to_string(),
    )
    .expect("ws");
    let ev = dir.path().join("e.ndjson");
    std::fs::write(&ev, "{\"type\":\"track\",\"userId\":\"u1\"}\n").expect("events");
    let o = run(&[
        "send",
        "-w",
        &ws.to_string_lossy(),
        "-d",
        "to-capture",
        "-e",
        &ev.to_string_lossy(),
        "--no-history",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let captured = lines.next().expect("capture line").expect("read");
    // Stop it the way a user does, so it flushes.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = child.wait();
    let stdout = format!("{captured}\n{}", rest.join("\n"));
    assert!(
        stdout.contains("\"valid\""),
        "the signature was checked: {stdout}"
    );
    assert!(
        stdout.contains("Bearer ***"),
        "the token is shown redacted: {stdout}"
    );
    assert_clean("capture stdout", &stdout);
    assert_clean(
        "capture --out",
        &std::fs::read_to_string(&out).unwrap_or_default(),
    );
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let p = entry.expect("entry").path();
        if p.to_string_lossy().contains("capture-history") {
            let bytes = std::fs::read(&p).expect("read");
            assert_clean(&p.display().to_string(), &String::from_utf8_lossy(&bytes));
        }
    }
}
