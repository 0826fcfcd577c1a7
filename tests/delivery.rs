//! Delivery through the real runtime against real HTTP servers on 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use common::{collect, fast, run_job, serve, start_runtime};
use hookline::core::model::{Batching, Destination, Signing};
use hookline::core::secret::Secrets;
use hookline::core::sign;
use hookline::runtime::Command;
use hookline::runtime::delivery::{JobFingerprint, OutcomeKind};
use serde_json::{Value, json};

const WH: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn events(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"type": "track", "event": "Order Completed", "messageId": format!("m-{i}"), "properties": {"i": i}})).collect()
}

#[derive(Default)]
struct Flaky {
    /// id → list of (status, when)
    seen: Mutex<HashMap<String, Vec<(u16, Instant)>>>,
    bad_signatures: AtomicUsize,
}

async fn flaky(State(s): State<Arc<Flaky>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let ts: i64 = h("webhook-timestamp").parse().unwrap_or(0);
    if !sign::verify_standard_webhooks(WH, &h("webhook-id"), ts, &body, &h("webhook-signature")) {
        s.bad_signatures.fetch_add(1, Ordering::Relaxed);
    }
    let ev: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = ev["messageId"].as_str().unwrap_or("").to_owned();
    assert_eq!(
        id,
        h("webhook-id"),
        "the idempotency id is the event's messageId"
    );
    let roll: f64 = rand::random();
    let status = if roll < 0.2 {
        500
    } else if roll < 0.3 {
        429
    } else {
        200
    };
    s.seen
        .lock()
        .expect("lock")
        .entry(id)
        .or_default()
        .push((status, Instant::now()));
    match status {
        429 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("Retry-After", "1")],
            "slow down",
        )
            .into_response(),
        500 => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        _ => (StatusCode::OK, "ok").into_response(),
    }
}

#[test]
fn ten_thousand_events_through_a_flaky_receiver_are_each_delivered_once() {
    let state = Arc::new(Flaky::default());
    let srv = serve(
        Router::new()
            .route("/hook", any(flaky))
            .with_state(state.clone()),
    );
    let mut d = fast(Destination::new("flaky", srv.url("/hook")));
    d.signing = Signing::StandardWebhooks {
        secret: "wh".into(),
    };
    d.delivery.concurrency = 256;
    d.delivery.max_attempts = 25; // 0.3^25: a permanent failure would be a bug, not bad luck
    let run = run_job(
        d,
        events(10_000),
        Secrets::memory(&[("wh", WH)]),
        Duration::from_mins(4),
    );
    let totals = run.stats.expect("finished");
    assert_eq!((totals.delivered, totals.failed), (10_000, 0), "{totals:?}");
    assert_eq!(run.outcomes.len(), 10_000);
    assert_eq!(
        state.bad_signatures.load(Ordering::Relaxed),
        0,
        "every attempt is signed afresh and valid"
    );
    let seen = state.seen.lock().expect("lock");
    assert_eq!(seen.len(), 10_000, "the receiver saw every idempotency id");
    let mut retried = 0;
    let mut honoured = 0;
    for (id, hits) in seen.iter() {
        let ok = hits.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(ok, 1, "{id} delivered {ok} times");
        assert_eq!(
            hits.last().map(|h| h.0),
            Some(200),
            "{id}: nothing is sent after the success"
        );
        retried += hits.len() - 1;
        for w in hits.windows(2) {
            if w[0].0 == 429 {
                assert!(
                    w[1].1.duration_since(w[0].1) >= Duration::from_millis(950),
                    "{id}: Retry-After: 1 not honoured"
                );
                honoured += 1;
            }
        }
    }
    assert!(
        retried > 2000 && honoured > 500,
        "retried {retried}, honoured {honoured}"
    );
    assert_eq!(totals.attempts as usize, 10_000 + retried);
}

#[test]
fn redirects_are_not_followed_and_3xx_is_a_failure() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    let srv = serve(
        Router::new()
            .route(
                "/hook",
                any(|| async { (StatusCode::FOUND, [("Location", "/elsewhere")], "") }),
            )
            .route(
                "/elsewhere",
                any(move || async move {
                    h2.fetch_add(1, Ordering::Relaxed);
                    "should not be reached"
                }),
            ),
    );
    let run = run_job(
        fast(Destination::new("r", srv.url("/hook"))),
        events(1),
        Secrets::memory(&[]),
        Duration::from_secs(20),
    );
    let o = &run.outcomes[0];
    assert_eq!(
        (o.outcome.clone(), o.status, o.attempts),
        (OutcomeKind::Failed, Some(302), 1)
    );
    assert!(
        o.error.as_deref().unwrap_or("").contains("/elsewhere"),
        "{o:?}"
    );
    assert_eq!(hits.load(Ordering::Relaxed), 0);
}

fn counting(status: StatusCode, body: &'static str) -> (common::Server, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let srv = serve(Router::new().route(
        "/hook",
        any(move || async move {
            h.fetch_add(1, Ordering::Relaxed);
            (status, body)
        }),
    ));
    (srv, hits)
}

#[test]
fn client_errors_are_final_and_reported_with_status_and_body() {
    let (srv, hits) = counting(
        StatusCode::UNPROCESSABLE_ENTITY,
        "{\"error\":\"email is required\"}",
    );
    let run = run_job(
        fast(Destination::new("c", srv.url("/hook"))),
        events(1),
        Secrets::memory(&[]),
        Duration::from_secs(20),
    );
    let o = &run.outcomes[0];
    assert_eq!(
        (o.status, o.attempts, o.outcome.clone()),
        (Some(422), 1, OutcomeKind::Failed)
    );
    assert!(
        o.error
            .as_deref()
            .unwrap_or("")
            .contains("email is required"),
        "{o:?}"
    );
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    assert!(
        matches!(
            &run.end,
            Some(hookline::runtime::JobEnd::Failed { stats: Some(s), error: None }) if s.failed == 1
        ),
        "a job with a failed event ends Failed: {:?}",
        run.end
    );
}

#[test]
fn server_errors_give_up_after_max_attempts() {
    let (srv, hits) = counting(StatusCode::BAD_GATEWAY, "upstream down");
    let mut d = fast(Destination::new("s", srv.url("/hook")));
    d.delivery.max_attempts = 3;
    let run = run_job(d, events(1), Secrets::memory(&[]), Duration::from_secs(20));
    let o = &run.outcomes[0];
    assert_eq!(
        (o.status, o.attempts, o.outcome.clone()),
        (Some(502), 3, OutcomeKind::Failed)
    );
    assert!(
        o.error
            .as_deref()
            .unwrap_or("")
            .contains("gave up after 3 attempts"),
        "{o:?}"
    );
    assert_eq!(hits.load(Ordering::Relaxed), 3);
    assert_eq!(run.retries.len(), 2);
}

#[test]
fn timeouts_are_retried() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let srv = serve(Router::new().route(
        "/hook",
        any(move || async move {
            if h.fetch_add(1, Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            "ok"
        }),
    ));
    let mut d = fast(Destination::new("t", srv.url("/hook")));
    d.delivery.timeout_ms = 300;
    let run = run_job(d, events(1), Secrets::memory(&[]), Duration::from_secs(20));
    let o = &run.outcomes[0];
    assert_eq!(
        (o.outcome.clone(), o.attempts),
        (OutcomeKind::Delivered, 2),
        "{o:?}"
    );
    assert!(
        run.retries[0].3.contains("timed out after 300 ms"),
        "{:?}",
        run.retries
    );
}

#[test]
fn dropped_connections_are_retried() {
    // A raw TCP server: the first connection is closed without a response.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for (n, stream) in listener.incoming().take(2).enumerate() {
            let Ok(mut s) = stream else { continue };
            let mut buf = vec![0u8; 65536];
            let _ = s.read(&mut buf);
            if n > 0 {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        }
    });
    let run = run_job(
        fast(Destination::new("d", format!("http://{addr}/hook"))),
        events(1),
        Secrets::memory(&[]),
        Duration::from_secs(20),
    );
    let o = &run.outcomes[0];
    assert_eq!(
        (o.outcome.clone(), o.attempts),
        (OutcomeKind::Delivered, 2),
        "{o:?} {:?}",
        run.retries
    );
}

#[test]
fn connection_refused_is_retried_then_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut d = fast(Destination::new(
        "d",
        format!("http://127.0.0.1:{port}/hook"),
    ));
    d.delivery.max_attempts = 2;
    let run = run_job(d, events(1), Secrets::memory(&[]), Duration::from_secs(20));
    let o = &run.outcomes[0];
    assert_eq!(
        (o.outcome.clone(), o.attempts, o.status),
        (OutcomeKind::Failed, 2, None)
    );
    assert!(
        o.error
            .as_deref()
            .unwrap_or("")
            .contains("connection failed"),
        "{o:?}"
    );
}

#[test]
fn response_cookies_are_ignored() {
    let cookies = Arc::new(Mutex::new(Vec::new()));
    let c = cookies.clone();
    let srv = serve(Router::new().route(
        "/hook",
        any(move |headers: HeaderMap| async move {
            c.lock()
                .expect("lock")
                .push(headers.get("cookie").is_some());
            ([("Set-Cookie", "session=abc; Path=/")], "ok")
        }),
    ));
    let mut d = fast(Destination::new("c", srv.url("/hook")));
    d.delivery.concurrency = 1;
    let run = run_job(d, events(3), Secrets::memory(&[]), Duration::from_secs(20));
    assert_eq!(run.stats.expect("done").delivered, 3);
    assert_eq!(*cookies.lock().expect("lock"), vec![false, false, false]);
}

#[test]
fn a_batch_succeeds_or_fails_as_a_whole() {
    let (srv, hits) = counting(StatusCode::BAD_REQUEST, "bad row 3");
    let mut d = fast(Destination::new("b", srv.url("/hook")));
    d.batching = Some(Batching {
        max_events: 10,
        ..Batching::default()
    });
    let run = run_job(d, events(25), Secrets::memory(&[]), Duration::from_secs(20));
    let stats = run.stats.expect("done");
    assert_eq!(
        (stats.failed, stats.failed_events, stats.delivered_events),
        (3, 25, 0)
    );
    assert_eq!(
        run.outcomes
            .iter()
            .map(|o| o.events.len())
            .collect::<Vec<_>>()
            .iter()
            .sum::<usize>(),
        25
    );
    assert_eq!(hits.load(Ordering::Relaxed), 3);
}

#[test]
fn rate_limit_paces_requests() {
    let (srv, _) = counting(StatusCode::OK, "ok");
    let mut d = fast(Destination::new("r", srv.url("/hook")));
    d.delivery.rate_limit = Some(50.0);
    d.delivery.concurrency = 16;
    let started = Instant::now();
    let run = run_job(d, events(21), Secrets::memory(&[]), Duration::from_secs(20));
    assert_eq!(run.stats.expect("done").delivered, 21);
    // 21 requests at 50/s need at least 20 intervals of 20 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(380),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn pause_holds_requests_and_cancel_stops_the_job() {
    let (srv, hits) = counting(StatusCode::OK, "ok");
    let mut d = fast(Destination::new("p", srv.url("/hook")));
    d.delivery.rate_limit = Some(20.0);
    d.delivery.concurrency = 1;
    let (rt, updates) = start_runtime(Secrets::memory(&[]));
    assert!(rt.send(Command::Send {
        job: "j".into(),
        destination: Box::new(d),
        events: Arc::new(events(200).into()),
        only: None,
        source: "t".into(),
        resume: false,
        fingerprint: JobFingerprint::default(),
    }));
    std::thread::sleep(Duration::from_millis(300));
    assert!(rt.send(Command::Pause { job: "j".into() }));
    std::thread::sleep(Duration::from_millis(200));
    let paused_at = hits.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        hits.load(Ordering::Relaxed) <= paused_at + 1,
        "requests continued while paused"
    );
    assert!(rt.send(Command::Resume { job: "j".into() }));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        hits.load(Ordering::Relaxed) > paused_at,
        "resume did not restart the job"
    );
    assert!(rt.send(Command::Cancel { job: "j".into() }));
    let run = collect(&updates, Duration::from_secs(10));
    assert!(
        matches!(run.end, Some(hookline::runtime::JobEnd::Cancelled(_))),
        "a cancelled job ends Cancelled, not Done: {:?}",
        run.end
    );
    let stats = run.stats.expect("finished");
    assert!(stats.delivered < 200, "{stats:?}");
    assert_eq!(stats.delivered as usize, hits.load(Ordering::Relaxed));
}

#[test]
fn a_bad_destination_fails_the_job_with_a_clear_error() {
    let run = run_job(
        Destination::new("bad", "ftp://x"),
        events(1),
        Secrets::memory(&[]),
        Duration::from_secs(5),
    );
    assert!(
        run.error
            .as_deref()
            .unwrap_or("")
            .contains("destination \"bad\": url"),
        "{:?}",
        run.error
    );
}

#[test]
fn render_errors_are_reported_and_other_events_still_sent() {
    let (srv, hits) = counting(StatusCode::OK, "ok");
    let mut d = fast(Destination::new("h", srv.url("/hook")));
    d.headers.insert("X-Name".into(), "{{ event.name }}".into());
    let evs = vec![
        json!({"name": "ok"}),
        json!({"name": "bad\r\nx"}),
        json!({"name": "fine"}),
    ];
    let run = run_job(d, evs, Secrets::memory(&[]), Duration::from_secs(10));
    assert_eq!(run.render_errors.len(), 1);
    assert_eq!(run.render_errors[0].0, 1);
    assert_eq!(hits.load(Ordering::Relaxed), 2);
}

#[test]
fn the_runtime_runs_the_capture_receiver_and_replays_an_event_set_into_it() {
    use hookline::capture::CaptureConfig;
    use hookline::core::model::EventSet;
    use hookline::runtime::Update;
    let (rt, updates) = start_runtime(Secrets::memory(&[]));
    assert!(rt.send(Command::StartCapture {
        config: CaptureConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..CaptureConfig::default()
        }
    }));
    let addr = loop {
        match updates
            .recv_timeout(Duration::from_secs(5))
            .expect("update")
        {
            Update::CaptureStarted { addr } => break addr,
            Update::CaptureStopped { error } => panic!("capture failed: {error:?}"),
            _ => {}
        }
    };
    let set = EventSet {
        name: "samples".into(),
        events: events(5),
    };
    let dest = fast(Destination::new(
        "local",
        format!("http://{addr}/collect/track/replay"),
    ));
    assert!(rt.send(Command::ReplaySet {
        job: "r".into(),
        destination: Box::new(dest),
        set
    }));
    let (mut captured, mut finished) = (0, None);
    while finished.is_none() || captured < 5 {
        match updates
            .recv_timeout(Duration::from_secs(5))
            .expect("update")
        {
            Update::Captured(c) => {
                assert_eq!(
                    c.collect.as_ref().map(|c| c.event_type.as_str()),
                    Some("track")
                );
                captured += 1;
            }
            Update::JobFinished { end, .. } => {
                finished = Some(end.stats().cloned().expect("job ran"));
            }
            _ => {}
        }
    }
    assert_eq!(finished.map(|s| s.delivered), Some(5));
    assert!(rt.send(Command::StopCapture));
    assert!(matches!(
        updates.recv_timeout(Duration::from_secs(5)),
        Ok(Update::CaptureStopped { error: None })
    ));
}
