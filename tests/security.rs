//! Event data is untrusted: it may move a request's path, never its host; it may add
//! headers, never framing ones. One test per class, on real servers where "sent" matters.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::any;
use common::{fast, run_job, serve};
use hookline::core::model::{Auth, Destination};
use hookline::core::render::{CompiledDestination, RenderCtx, render_request};
use hookline::core::secret::Secrets;
use serde_json::{Value, json};

fn ctx() -> RenderCtx {
    RenderCtx {
        secrets: Secrets::memory(&[("tok", "tok-SECRET-123")]),
        now: Some(1_700_000_000),
    }
}

fn render_err(dest: &Destination, ev: &Value) -> String {
    match render_request(dest, ev, &ctx()) {
        Err(e) => e.to_string(),
        Ok(r) => panic!("expected an error, got {:?}", r.map(|r| r.url)),
    }
}

fn bearer(url: &str) -> Destination {
    let mut d = Destination::new("api", url);
    d.auth = Auth::Bearer {
        token_secret: "tok".into(),
    };
    d
}

#[test]
fn full_path_with_another_host_or_scheme_is_an_error_for_that_event() {
    let d = bearer("https://api.example.com/hooks");
    for bad in [
        "http://attacker.example/steal",
        "https://attacker.example/steal",
        "http://api.example.com/hooks",
        "https://api.example.com:8443/hooks",
        "//attacker.example/x",
    ] {
        let msg = render_err(&d, &json!({"type": "track", "fullPath": bad}));
        assert!(
            msg.contains("fullPath") && msg.contains("only the path"),
            "{bad}: {msg}"
        );
        assert!(!msg.contains("tok-SECRET-123"), "{msg}");
    }
    // The same origin, spelled out, is fine.
    let r = render_request(
        &d,
        &json!({"type": "track", "fullPath": "https://api.example.com/v2/x"}),
        &ctx(),
    )
    .expect("renders")
    .expect("not skipped");
    assert_eq!(r.url, "https://api.example.com/v2/x");
}

#[test]
fn append_path_never_moves_the_host_even_when_the_base_url_has_no_path() {
    for base in ["https://api.example.com", "https://api.example.com/"] {
        let d = bearer(base);
        for (append, want) in [
            ("@evil.example/x", "https://api.example.com/@evil.example/x"),
            (".evil.example", "https://api.example.com/.evil.example"),
            (":8443", "https://api.example.com/:8443"),
            ("/orders?x=1", "https://api.example.com/orders?x=1"),
        ] {
            let r = render_request(&d, &json!({"type": "track", "appendPath": append}), &ctx())
                .expect("renders")
                .expect("not skipped");
            assert_eq!(r.url, want, "{base} + {append}");
        }
    }
    let r = render_request(
        &bearer("https://api.example.com/hooks"),
        &json!({"appendPath": "/orders"}),
        &ctx(),
    )
    .expect("renders")
    .expect("not skipped");
    assert_eq!(r.url, "https://api.example.com/hooks/orders");
}

#[test]
fn a_url_template_cannot_let_event_data_choose_the_host() {
    // The template itself reads the event in the host: a configuration error.
    let errs = CompiledDestination::compile(&Destination::new(
        "d",
        "https://{{ event.properties.region }}.example.com/hook",
    ))
    .expect_err("event data in the host is refused");
    assert!(errs.iter().any(|e| e.field == "url"), "{errs:?}");
    let errs = CompiledDestination::compile(&Destination::new("d", "{{ event.url }}"))
        .expect_err("a URL taken from the event is refused");
    assert!(errs.iter().any(|e| e.field == "url"), "{errs:?}");
    // A path template glued to the host could move it: refused too.
    let errs = CompiledDestination::compile(&bearer("https://api.example.com{{ event.p }}"))
        .expect_err("glued to the host");
    assert!(errs.iter().any(|e| e.field == "url"), "{errs:?}");
    // After the first `/`, event data is only path.
    let d = bearer("https://api.example.com/{{ event.p }}");
    let r = render_request(&d, &json!({"p": "@evil.example/x"}), &ctx())
        .expect("renders")
        .expect("not skipped");
    assert_eq!(r.url, "https://api.example.com/@evil.example/x");
}

#[test]
fn framing_headers_are_refused_from_configuration_and_from_events() {
    for name in ["Content-Length", "transfer-encoding", "Host", "Connection"] {
        let mut d = Destination::new("d", "https://api.example.com/hooks");
        d.headers.insert(name.into(), "0".into());
        let errs = CompiledDestination::compile(&d).expect_err("refused");
        assert!(
            errs.iter()
                .any(|e| e.field == format!("headers.{name}") && e.message.contains("frames")),
            "{errs:?}"
        );
        let d = Destination::new("d", "https://api.example.com/hooks");
        let msg = render_err(&d, &json!({"header": {name: "0"}}));
        assert!(msg.contains(name) && msg.contains("frames"), "{msg}");
    }
}

#[test]
fn an_event_with_100000_header_keys_is_refused_quickly() {
    let mut h = serde_json::Map::new();
    for i in 0..100_000 {
        h.insert(format!("X-H{i}"), json!("v"));
    }
    let msg = render_err(
        &Destination::new("d", "https://api.example.com/hooks"),
        &json!({"header": h}),
    );
    assert!(msg.contains("100000 keys"), "{msg}");
}

#[derive(Default)]
struct Seen(Mutex<Vec<(String, HeaderMap, Bytes)>>);

async fn record(
    State(s): State<Arc<Seen>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    s.0.lock()
        .expect("lock")
        .push((uri.to_string(), headers, body));
    "ok"
}

#[test]
fn a_hostile_event_in_a_job_fails_alone_and_sends_nothing_elsewhere() {
    // Two servers: the destination, and an "attacker" the events point at.
    let good = Arc::new(Seen::default());
    let evil = Arc::new(Seen::default());
    let g = serve(Router::new().fallback(any(record)).with_state(good.clone()));
    let e = serve(Router::new().fallback(any(record)).with_state(evil.clone()));
    let dest = fast(bearer(&g.url("/hooks")));
    let events = vec![
        json!({"type": "track", "messageId": "ok-1"}),
        json!({"type": "track", "fullPath": e.url("/steal")}),
        json!({"type": "track", "header": {"Content-Length": "0"}}),
        json!({"type": "track", "header": {"Host": e.addr.to_string()}}),
        json!({"type": "track", "appendPath": "/orders", "messageId": "ok-2"}),
    ];
    let run = run_job(
        dest,
        events,
        Secrets::memory(&[("tok", "tok-SECRET-123")]),
        Duration::from_secs(20),
    );
    let stats = run.stats.clone().expect("job finished");
    assert_eq!(stats.delivered, 2, "{run:?}");
    assert_eq!(run.render_errors.len(), 3, "{run:?}");
    assert!(
        evil.0.lock().expect("lock").is_empty(),
        "nothing reaches the other host"
    );
    let seen = good.0.lock().expect("lock");
    let paths: Vec<&str> = seen.iter().map(|(u, _, _)| u.as_str()).collect();
    assert_eq!(paths.len(), 2);
    assert!(
        paths.contains(&"/hooks") && paths.contains(&"/hooks/orders"),
        "{paths:?}"
    );
    for (_, h, body) in seen.iter() {
        assert_eq!(
            h.get("content-length").and_then(|v| v.to_str().ok()),
            Some(body.len().to_string().as_str())
        );
    }
}
