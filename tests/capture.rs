//! The capture receiver on 127.0.0.1:0: collect routes, raw captures, signatures,
//! the body limit, fault injection, history, NDJSON export, and the CLI.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hookline::capture::{
    Capture, CaptureConfig, Faults, ReceiverHandle, Verify, capture_to_event, start,
};
use hookline::core::model::{HmacAlgorithm, SignatureEncoding};
use hookline::core::secret::Secret;
use hookline::core::sign;
use hookline::store::history::History;
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn config() -> CaptureConfig {
    CaptureConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..CaptureConfig::default()
    }
}

async fn receiver(c: CaptureConfig) -> (ReceiverHandle, mpsc::UnboundedReceiver<Capture>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (start(c, None, Some(tx)).await.expect("starts"), rx)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Capture>) -> Capture {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a capture in time")
        .expect("open")
}

#[tokio::test]
async fn collect_post_body_becomes_the_events_properties() {
    let (h, mut rx) = receiver(config()).await;
    let url = format!("http://{}/collect/purchase/web-1/sess-9", h.addr());
    let r = client()
        .post(&url)
        .body(json!({"sku": "A1", "price": 9}).to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let c = next(&mut rx).await;
    assert_eq!(
        c.collect.as_ref().map(|c| (
            c.event_type.as_str(),
            c.source_id.as_str(),
            c.session_id.as_deref()
        )),
        Some(("purchase", "web-1", Some("sess-9")))
    );
    assert_eq!(
        capture_to_event(&c),
        Some(
            json!({"type": "purchase", "properties": {"sku": "A1", "price": 9}, "context": {"source_id": "web-1", "session_id": "sess-9"}})
        )
    );
}

#[tokio::test]
async fn collect_get_query_parameters_become_properties() {
    let (h, mut rx) = receiver(config()).await;
    let r = client()
        .get(format!(
            "http://{}/collect/page-view/src?path=%2Fhome&ref=ad",
            h.addr()
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let c = next(&mut rx).await;
    assert_eq!(c.method, "GET");
    assert_eq!(
        capture_to_event(&c),
        Some(
            json!({"type": "page-view", "properties": {"path": "/home", "ref": "ad"}, "context": {"source_id": "src"}})
        )
    );
}

#[tokio::test]
async fn any_other_path_and_method_is_a_raw_capture() {
    let (h, mut rx) = receiver(config()).await;
    client()
        .put(format!("http://{}/hooks/x?y=1", h.addr()))
        .header("X-Custom", "v")
        .body("{\"type\":\"track\"}")
        .send()
        .await
        .expect("sent");
    let c = next(&mut rx).await;
    assert_eq!(
        (
            c.method.as_str(),
            c.path.as_str(),
            c.query.as_str(),
            c.collect.clone()
        ),
        ("PUT", "/hooks/x", "y=1", None)
    );
    assert!(c.headers.iter().any(|(n, v)| n == "x-custom" && v == "v"));
    assert_eq!(capture_to_event(&c), Some(json!({"type": "track"})));
    client()
        .delete(format!("http://{}/x", h.addr()))
        .body("not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(capture_to_event(&next(&mut rx).await), None);
}

#[tokio::test]
async fn hmac_signatures_are_checked_and_recorded() {
    let mut c = config();
    c.verify = Some(Verify::Hmac {
        algorithm: HmacAlgorithm::Sha1,
        secret: Secret::new("s3cret"),
        header: "X-Signature".into(),
    });
    let (h, mut rx) = receiver(c).await;
    let body = br#"{"a":1}"#;
    let good = sign::hmac_signature(
        HmacAlgorithm::Sha1,
        SignatureEncoding::Hex,
        "",
        b"s3cret",
        body,
    );
    let url = format!("http://{}/hook", h.addr());
    client()
        .post(&url)
        .header("X-Signature", good)
        .body(&body[..])
        .send()
        .await
        .expect("sent");
    assert_eq!(next(&mut rx).await.signature, Some(true));
    client()
        .post(&url)
        .header("X-Signature", "deadbeef")
        .body(&body[..])
        .send()
        .await
        .expect("sent");
    assert_eq!(
        next(&mut rx).await.signature,
        Some(false),
        "recorded, not rejected"
    );
    client()
        .post(&url)
        .body(&body[..])
        .send()
        .await
        .expect("sent");
    assert_eq!(
        next(&mut rx).await.signature,
        Some(false),
        "missing signature is invalid"
    );
}

#[tokio::test]
async fn standard_webhooks_signatures_are_checked() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut c = config();
    c.verify = Some(Verify::StandardWebhooks {
        secret: Secret::new(secret),
    });
    let (h, mut rx) = receiver(c).await;
    let body = b"{\"x\":true}";
    let sig = sign::standard_webhooks_signature(secret, "msg_1", 1_700_000_000, body).expect("sig");
    let send = |sig: String| {
        client()
            .post(format!("http://{}/h", h.addr()))
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", "1700000000")
            .header("webhook-signature", sig)
            .body(&body[..])
            .send()
    };
    send(sig).await.expect("sent");
    assert_eq!(next(&mut rx).await.signature, Some(true));
    send("v1,AAAA".into()).await.expect("sent");
    assert_eq!(next(&mut rx).await.signature, Some(false));
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let mut c = config();
    c.max_body_bytes = 1024;
    let (h, mut rx) = receiver(c).await;
    let r = client()
        .post(format!("http://{}/h", h.addr()))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 413);
    let r = client()
        .post(format!("http://{}/h", h.addr()))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    assert_eq!(next(&mut rx).await.body.len(), 1000);
    assert_eq!(
        h.counters()
            .too_large
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn injected_failures_carry_the_status_and_retry_after() {
    let mut c = config();
    c.faults = Faults {
        fail_rate: 1.0,
        fail_status: 503,
        retry_after: Some(7),
        ..Faults::default()
    };
    let (h, _rx) = receiver(c).await;
    for _ in 0..5 {
        let r = client()
            .post(format!("http://{}/h", h.addr()))
            .body("{}")
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 503);
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("7")
        );
    }
}

#[tokio::test]
async fn a_fail_rate_fails_about_that_share() {
    let mut c = config();
    c.faults = Faults {
        fail_rate: 0.3,
        ..Faults::default()
    };
    let (h, _rx) = receiver(c).await;
    let mut failed = 0;
    for _ in 0..200 {
        if client()
            .post(format!("http://{}/h", h.addr()))
            .body("{}")
            .send()
            .await
            .expect("sent")
            .status()
            == 500
        {
            failed += 1;
        }
    }
    assert!(
        (30..=90).contains(&failed),
        "{failed} of 200 failed at a 0.3 rate"
    );
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let mut c = config();
    c.faults = Faults {
        latency_ms: 150,
        ..Faults::default()
    };
    let (h, _rx) = receiver(c).await;
    let t = Instant::now();
    client()
        .post(format!("http://{}/h", h.addr()))
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn dropped_connections_give_the_client_no_response() {
    let mut c = config();
    c.faults = Faults {
        drop_rate: 1.0,
        ..Faults::default()
    };
    let (h, _rx) = receiver(c).await;
    let e = client()
        .post(format!("http://{}/h", h.addr()))
        .body("{}")
        .send()
        .await
        .expect_err("no response");
    assert!(!e.is_timeout(), "closed, not hung: {e}");
    assert_eq!(
        h.counters()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn captures_are_persisted_to_history() {
    let dir = tempfile::tempdir().expect("tmp");
    let hist = History::open(&dir.path().join("h.sqlite3")).expect("history");
    let h = start(config(), Some(hist.writer()), None)
        .await
        .expect("starts");
    for i in 0..3 {
        client()
            .post(format!("http://{}/collect/track/s", h.addr()))
            .body(format!("{{\"i\":{i}}}"))
            .send()
            .await
            .expect("sent");
    }
    hist.writer().flush().expect("flushed");
    let rows = hist.captures(0, 10).expect("read");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].body, b"{\"i\":2}");
    assert_eq!(rows[0].path, "/collect/track/s");
}

#[test]
fn the_cli_prints_listening_then_one_line_per_capture_writes_events_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("captured.ndjson");
    let child = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args([
            "capture",
            "--listen",
            "127.0.0.1:0",
            "--no-history",
            "--out",
            out.to_str().expect("utf8"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut guard = KillOnDrop(Some(child));
    let child = guard.0.as_mut().expect("child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("read");
    let url = first
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        client()
            .post(format!("{url}/collect/signup/web"))
            .body("{\"plan\":\"pro\"}")
            .send()
            .await
    })
    .expect("sent");
    let line: Value =
        serde_json::from_str(&lines.next().expect("capture line").expect("read")).expect("json");
    assert_eq!(
        (
            line["method"].as_str(),
            line["path"].as_str(),
            line["body"].as_str()
        ),
        (
            Some("POST"),
            Some("/collect/signup/web"),
            Some("{\"plan\":\"pro\"}")
        )
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "capture did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let saved: Value =
        serde_json::from_str(std::fs::read_to_string(&out).expect("out file").trim())
            .expect("event");
    assert_eq!(
        saved,
        json!({"type": "signup", "properties": {"plan": "pro"}, "context": {"source_id": "web"}})
    );
}

/// Never leave a receiver running when a test fails.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn the_cli_bare_sink_keeps_serving_until_told_to_stop() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(["capture", "--listen", "127.0.0.1:0", "--no-record"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut guard = KillOnDrop(Some(child));
    let url = lines
        .next()
        .expect("line")
        .expect("read")
        .strip_prefix("listening on ")
        .expect("listening")
        .to_owned();
    std::thread::sleep(Duration::from_millis(300));
    let rt = tokio::runtime::Runtime::new().expect("rt");
    for _ in 0..3 {
        let s = rt
            .block_on(async { client().post(format!("{url}/sink")).body("{}").send().await })
            .expect("still serving")
            .status();
        assert_eq!(s, 200);
    }
    let child = guard.0.as_mut().expect("child");
    assert!(
        child.try_wait().expect("wait").is_none(),
        "exited on its own"
    );
}

// ---- Hardening (issue 7): slowloris, bodies, paths, credentials, slow stdout, terminals ----

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Read until the peer closes (EOF or reset). `Err` if it is still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return Err(got),
        }
    }
}

/// One raw HTTP/1.1 exchange; the response is read until `{"ok":true}` or the peer closes.
async fn raw_exchange(s: &mut TcpStream, request: &[u8]) -> String {
    s.write_all(request).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("{\"ok\":true}") {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(elapsed) => panic!(
                "no answer in 5 s ({elapsed}): {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn short_timeouts(header_ms: u64, idle_ms: u64) -> CaptureConfig {
    CaptureConfig {
        header_read_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        body_read_timeout: Duration::from_millis(500),
        ..config()
    }
}

#[tokio::test]
async fn half_open_connections_are_closed_by_the_header_timeout_and_others_are_still_answered() {
    let (h, mut rx) = receiver(short_timeouts(500, 60_000)).await;
    let mut half_open = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(h.addr()).await.expect("connect");
        s.write_all(b"POST /slow HT").await.expect("partial line");
        half_open.push(s);
    }
    let t = Instant::now();
    let r = client()
        .post(format!("http://{}/collect/ok/src", h.addr()))
        .body("{}")
        .send()
        .await
        .expect("answered while 200 connections are half-open");
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(next(&mut rx).await.path, "/collect/ok/src");
    for (i, s) in half_open.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(5)).await.is_ok(),
            "half-open connection {i} still open after the 500 ms header timeout"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while h
        .counters()
        .open_connections
        .load(std::sync::atomic::Ordering::Relaxed)
        > 1
    {
        assert!(Instant::now() < deadline, "connections not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_keep_alive_connection_is_kept_between_requests_and_closed_after_the_idle_timeout() {
    let (h, _rx) = receiver(short_timeouts(60_000, 1000)).await;
    let mut s = TcpStream::connect(h.addr()).await.expect("connect");
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(raw_exchange(&mut s, req).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        raw_exchange(&mut s, req).await.starts_with("HTTP/1.1 200"),
        "kept alive within the idle timeout"
    );
    let t = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await.is_ok(),
        "idle connection still open"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "closed too early: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_the_connection_closes() {
    let (h, mut rx) = receiver(short_timeouts(60_000, 60_000)).await;
    let mut s = TcpStream::connect(h.addr()).await.expect("connect");
    s.write_all(b"POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let got = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("closed after the 500 ms body timeout");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(rx.try_recv().is_err(), "a cut body is not a capture");
}

#[tokio::test]
async fn at_the_connection_cap_a_new_client_takes_the_place_of_a_half_open_one() {
    let mut cfg = short_timeouts(60_000, 60_000);
    cfg.max_connections = 8;
    let (h, mut rx) = receiver(cfg).await;
    let mut half_open = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(h.addr()).await.expect("connect");
        s.write_all(b"GET / HT").await.expect("partial");
        half_open.push(s);
    }
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..20 {
        let open = n(&h.counters().open_connections);
        assert!(open <= 8, "{open} connections open, cap 8");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The header timeout is a minute: only eviction can make room this fast.
    let started = Instant::now();
    let answer = client()
        .post(format!("http://{}/after", h.addr()))
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(next(&mut rx).await.path, "/after");
    assert!(n(&h.counters().open_connections) <= 8);
    assert!(
        n(&h.counters().evicted) >= 22,
        "{}",
        n(&h.counters().evicted)
    );
}

#[tokio::test]
async fn at_the_connection_cap_requests_in_flight_are_never_cut_and_newcomers_wait() {
    let mut c = config();
    c.max_connections = 2;
    c.faults.latency_ms = 400;
    let (h, _rx) = receiver(c).await;
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let url = format!("http://{}/busy/{i}", h.addr());
            tokio::spawn(async move { client().post(url).body("{}").send().await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task").expect("answered, not cut").status());
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        h.counters()
            .evicted
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400_and_only_a_body_over_the_limit_is_413() {
    let mut c = config();
    c.max_body_bytes = 1024;
    let (h, mut rx) = receiver(c).await;
    let head = "POST /h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for bad in ["zz\r\nabc\r\n0\r\n\r\n", "5\r\nabcdefgh\r\n0\r\n\r\n"] {
        let mut s = TcpStream::connect(h.addr()).await.expect("connect");
        s.write_all(format!("{head}{bad}").as_bytes())
            .await
            .expect("write");
        let got = closed_within(&mut s, Duration::from_secs(5))
            .await
            .expect("closed");
        assert!(
            String::from_utf8_lossy(&got).starts_with("HTTP/1.1 400"),
            "{bad:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let big = format!("800\r\n{}\r\n0\r\n\r\n", "x".repeat(0x800));
    let mut s = TcpStream::connect(h.addr()).await.expect("connect");
    s.write_all(format!("{head}{big}").as_bytes())
        .await
        .expect("write");
    let got = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 413"));
    let ok =
        "POST /h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let mut s = TcpStream::connect(h.addr()).await.expect("connect");
    assert!(
        raw_exchange(&mut s, ok.as_bytes())
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(next(&mut rx).await.body, b"abc");
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (n(&h.counters().malformed), n(&h.counters().too_large)),
        (2, 1)
    );
}

#[tokio::test]
async fn collect_path_segments_are_percent_decoded() {
    let (h, mut rx) = receiver(config()).await;
    client()
        .post(format!(
            "http://{}/collect/Order%20Completed/src%2F1/s%C3%A9ss",
            h.addr()
        ))
        .body("{\"a\":1}")
        .send()
        .await
        .expect("sent");
    let c = next(&mut rx).await;
    assert_eq!(
        c.path, "/collect/Order%20Completed/src%2F1/s%C3%A9ss",
        "path as received"
    );
    assert_eq!(
        capture_to_event(&c),
        Some(
            json!({"type": "Order Completed", "properties": {"a": 1}, "context": {"source_id": "src/1", "session_id": "séss"}})
        )
    );
}

const CREDENTIALS: [(&str, &str, &str); 9] = [
    ("authorization", "Bearer tok-AAA111", "Bearer ***"),
    ("proxy-authorization", "Basic dXNlcjpwYXNzQkJC", "Basic ***"),
    ("cookie", "sid=cookieCCC222", "***"),
    ("x-api-key", "keyDDD333", "***"),
    ("x-auth-token", "tokEEE444", "***"),
    ("webhook-signature", "v1,sigFFF555", "***"),
    ("x-hub-signature-256", "sha256=GGG666", "***"),
    ("x-signature", "", ""),
    ("x-my-sig", "HHH777", "***"),
];

async fn send_credentials(h: &ReceiverHandle, good_sig: &str) {
    let mut r = client().post(format!("http://{}/hook", h.addr()));
    for (n, v, _) in CREDENTIALS {
        r = r.header(n, if n == "x-my-sig" { good_sig } else { v });
    }
    r.header("idempotency-key", "idem-1")
        .header("x-custom", "visible")
        .body("{\"a\":1}")
        .send()
        .await
        .expect("sent");
}

#[tokio::test]
async fn credential_and_signature_headers_are_stored_redacted_in_live_captures_and_history() {
    let dir = tempfile::tempdir().expect("tmp");
    let hist = History::open(&dir.path().join("h.sqlite3")).expect("history");
    let mut c = config();
    c.verify = Some(Verify::Hmac {
        algorithm: HmacAlgorithm::Sha256,
        secret: Secret::new("vsecret"),
        header: "X-My-Sig".into(),
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let h = start(c, Some(hist.writer()), Some(tx))
        .await
        .expect("starts");
    let sig = sign::hmac_signature(
        HmacAlgorithm::Sha256,
        SignatureEncoding::Hex,
        "",
        b"vsecret",
        b"{\"a\":1}",
    );
    send_credentials(&h, &sig).await;
    let live = next(&mut rx).await;
    assert_eq!(live.signature, Some(true), "checked on the raw header");
    hist.writer().flush().expect("flushed");
    let stored = hist.captures(0, 10).expect("read");
    for headers in [&live.headers, &stored[0].headers] {
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        for (n, _, want) in CREDENTIALS {
            assert_eq!(get(n), Some(want), "{n}");
        }
        assert_eq!(get("idempotency-key"), Some("idem-1"));
        assert_eq!(get("x-custom"), Some("visible"));
        let all = format!("{headers:?}");
        for secret in [
            "AAA111", "cGFzc0JC", "CCC222", "DDD333", "EEE444", "FFF555", "GGG666", &sig,
        ] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
    }
}

#[tokio::test]
async fn raw_capture_keeps_credential_headers_as_received() {
    let mut c = config();
    c.raw_capture = true;
    let (h, mut rx) = receiver(c).await;
    send_credentials(&h, "HHH777").await;
    let live = next(&mut rx).await;
    for (n, v, _) in CREDENTIALS {
        assert!(
            live.headers.iter().any(|(k, x)| k == n && x == v),
            "{n} kept raw"
        );
    }
}

#[test]
fn terminal_safe_escapes_control_and_bidi_characters_only() {
    use hookline::cli::{json_terminal_safe, terminal_safe_line};
    assert_eq!(terminal_safe_line("plain é ✓"), "plain é ✓");
    assert_eq!(
        terminal_safe_line("a\u{1b}[31mb\u{7}\u{9b}c\u{202e}d\r\n"),
        "a\\u{1b}[31mb\\u{7}\\u{9b}c\\u{202e}d\\u{d}\\u{a}"
    );
    let line =
        json_terminal_safe(&json!({"k": "\u{1b}x\u{7f}\u{9b}\u{2066}"}).to_string()).into_owned();
    assert!(line.is_ascii(), "{line}");
    assert_eq!(
        serde_json::from_str::<Value>(&line).expect("still JSON")["k"],
        "\u{1b}x\u{7f}\u{9b}\u{2066}"
    );
}

fn spawn_cli(args: &[&str], stderr: Stdio) -> (KillOnDrop, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .arg("capture")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    // Read the first line byte by byte: nothing after it is taken from the pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut b = [0u8; 1];
    while std::io::Read::read(&mut out, &mut b).expect("read") == 1 && b[0] != b'\n' {
        first.push(char::from(b[0]));
    }
    child.stdout = Some(out);
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("listening line: {first:?}"))
        .to_owned();
    (KillOnDrop(Some(child)), url)
}

fn sigterm_and_wait(guard: &mut KillOnDrop, within: Duration) -> std::process::ExitStatus {
    let child = guard.0.as_mut().expect("child");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_cli_writes_every_answered_request_to_out_and_history_while_stdout_is_stalled() {
    const N: usize = 3000;
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.ndjson");
    let db = dir.path().join("h.sqlite3");
    let (mut guard, url) = spawn_cli(
        &[
            "--listen",
            "127.0.0.1:0",
            "--history",
            db.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
        ],
        Stdio::piped(),
    );
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let answered: usize = rt.block_on(async {
        let c = client();
        let pad = "p".repeat(1000);
        let mut tasks = Vec::new();
        for t in 0..16 {
            let (c, url, pad) = (c.clone(), url.clone(), pad.clone());
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for i in (t..N).step_by(16) {
                    let r = c
                        .post(format!("{url}/collect/load/src"))
                        .body(json!({"i": i, "pad": pad}).to_string())
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status() == 200) {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.expect("task");
        }
        n
    });
    assert_eq!(answered, N, "every request answered");
    // Now read stdout: the lines that waited come out, and a marker says how many were skipped.
    let stdout = guard
        .0
        .as_mut()
        .expect("child")
        .stdout
        .take()
        .expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut printed, mut skipped) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while skipped == 0 {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a {\"skipped\": N} line once stdout is read again");
        let v: Value = serde_json::from_str(&line).expect("stdout is NDJSON");
        match v["skipped"].as_u64() {
            Some(n) => skipped = n,
            None => printed += 1,
        }
    }
    assert!(
        skipped > 0 && printed + skipped <= N as u64,
        "{printed} printed, {skipped} skipped"
    );
    let status = sigterm_and_wait(&mut guard, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&out).expect("out");
    let mut seen = vec![false; N];
    for (n, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {n}: {e}"));
        let i = v["properties"]["i"].as_u64().expect("i") as usize;
        seen[i] = true;
    }
    assert_eq!(text.lines().count(), N, "--out has every answered request");
    assert!(seen.iter().all(|s| *s), "each request once");
    let hist = History::open(&db).expect("history");
    assert_eq!(hist.captures(0, N + 10).expect("read").len(), N);
    let mut err = String::new();
    let child = guard.0.as_mut().expect("child");
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(
        err.contains("capture lines were not printed"),
        "the skipped stdout lines are reported: {err:?}"
    );
}

#[test]
fn the_cli_escapes_control_characters_and_redacts_credentials_on_stdout_and_out() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.ndjson");
    let (mut guard, url) = spawn_cli(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-history",
            "--out",
            out.to_str().expect("utf8"),
        ],
        Stdio::piped(),
    );
    assert!(url.is_ascii() && !url.chars().any(char::is_control));
    let addr = url.strip_prefix("http://").expect("http").to_owned();
    let body = b"{\"k\":\"\\u001b[2J\x7f\"}";
    let mut req = format!("POST /collect/%1B%5D0%3Bpwned%07/src?q=%1B HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer topsecret\r\nContent-Length: {}\r\nX-Evil: ", body.len()).into_bytes();
    req.extend_from_slice(b"\xc2\x9b31m\r\n\r\n");
    req.extend_from_slice(body);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        assert!(raw_exchange(&mut s, &req).await.starts_with("HTTP/1.1 200"));
    });
    let child = guard.0.as_mut().expect("child");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = Vec::new();
    stdout.read_until(b'\n', &mut line).expect("capture line");
    let status = sigterm_and_wait(&mut guard, Duration::from_secs(10));
    assert!(status.success());
    let saved = std::fs::read(&out).expect("out");
    for (what, bytes) in [("stdout", &line), ("--out", &saved)] {
        assert!(
            bytes
                .iter()
                .all(|b| (0x20..0x7f).contains(b) || *b == b'\n'),
            "{what} holds raw control or non-ASCII bytes: {:?}",
            String::from_utf8_lossy(bytes)
        );
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("topsecret"), "{what}: {text}");
    }
    let v: Value = serde_json::from_slice(&line).expect("json");
    assert_eq!(v["collect"]["event_type"], "\u{1b}]0;pwned\u{7}");
    let hs = v["headers"].as_array().expect("headers");
    assert!(
        hs.contains(&json!(["authorization", "Bearer ***"])),
        "{hs:?}"
    );
    assert!(hs.contains(&json!(["x-evil", "\u{9b}31m"])), "{hs:?}");
    let ev: Value = serde_json::from_slice(&saved).expect("event");
    assert_eq!(ev["type"], "\u{1b}]0;pwned\u{7}");
    assert_eq!(ev["properties"]["k"], "\u{1b}[2J\u{7f}");
    let mut err = String::new();
    std::io::Read::read_to_string(
        &mut guard
            .0
            .as_mut()
            .expect("child")
            .stderr
            .take()
            .expect("stderr"),
        &mut err,
    )
    .expect("stderr");
    assert!(
        !err.contains("warning"),
        "no network warning on loopback: {err:?}"
    );
}

#[test]
fn the_cli_warns_on_stderr_when_listening_beyond_loopback() {
    let (mut guard, url) = spawn_cli(&["--listen", "0.0.0.0:0", "--no-history"], Stdio::piped());
    assert!(url.starts_with("http://0.0.0.0:"), "{url}");
    let status = sigterm_and_wait(&mut guard, Duration::from_secs(10));
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(
        &mut guard
            .0
            .as_mut()
            .expect("child")
            .stderr
            .take()
            .expect("stderr"),
        &mut err,
    )
    .expect("stderr");
    assert!(
        err.contains("warning")
            && err.contains("reachable from the network")
            && err.contains("credentials"),
        "{err:?}"
    );
}

/// CPU time (user + system, in clock ticks) the process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

#[test]
fn accept_errors_under_a_low_descriptor_limit_back_off_instead_of_spinning() {
    // 48 descriptors and no connection cap to protect it: accept fails with EMFILE. The
    // header timeout is a minute, so only eviction of an idle connection can make room.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 48 && exec \"$0\" capture --listen 127.0.0.1:0 --no-history --max-connections 1000 --header-timeout-ms 60000",
            env!("CARGO_BIN_EXE_hookline"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let pid = child.id();
    let _guard = KillOnDrop(Some(child));
    let url = lines
        .next()
        .expect("line")
        .expect("read")
        .strip_prefix("listening on ")
        .expect("listening")
        .to_owned();
    let addr = url.strip_prefix("http://").expect("http").to_owned();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let mut half_open = Vec::new();
        for _ in 0..120 {
            let mut s = TcpStream::connect(&addr).await.expect("connect");
            s.write_all(b"GET / HT").await.expect("partial");
            half_open.push(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = cpu_ticks(pid);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let used = cpu_ticks(pid) - before;
        // A spinning accept loop burns ~150 ticks (100 Hz) in 1.5 s.
        assert!(
            used < 40,
            "{used} ticks of CPU in 1.5 s while out of descriptors"
        );
        let r = client()
            .post(format!("{url}/after"))
            .timeout(Duration::from_secs(10))
            .body("{}")
            .send()
            .await
            .expect("answered: a half-open connection's descriptor is freed for it");
        assert_eq!(r.status(), 200);
        drop(half_open);
    });
}

#[test]
fn the_cli_stops_with_an_error_naming_the_file_when_out_cannot_be_written() {
    let (mut guard, url) = spawn_cli(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-history",
            "--out",
            "/dev/full",
        ],
        Stdio::piped(),
    );
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let _ = rt.block_on(async {
        client()
            .post(format!("{url}/collect/x/y"))
            .body("{}")
            .send()
            .await
    });
    let child = guard.0.as_mut().expect("child");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "kept running with a failing --out"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(err.contains("/dev/full: cannot write"), "{err:?}");
}

#[test]
fn the_cli_refuses_out_of_range_limits_with_a_usage_error_not_a_panic() {
    for (flag, value, says) in [
        ("--idle-timeout-ms", "18446744073709551615", "idle timeout"),
        ("--header-timeout-ms", "0", "header read timeout"),
        ("--body-timeout-ms", "86400001", "body read timeout"),
        (
            "--max-connections",
            "18446744073709551615",
            "max connections",
        ),
        ("--max-connections", "0", "max connections"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_hookline"))
            .args([
                "capture",
                "--listen",
                "127.0.0.1:0",
                "--no-history",
                flag,
                value,
            ])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}

#[tokio::test]
async fn a_huge_declared_content_length_is_not_reserved_up_front() {
    let mut c = config();
    c.max_body_bytes = usize::MAX;
    let (h, _rx) = receiver(c).await;
    let mut s = TcpStream::connect(h.addr()).await.expect("connect");
    s.write_all(b"POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000000\r\n\r\nabc")
        .await
        .expect("write");
    drop(s.shutdown().await);
    let got = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("closed, process alive");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 400"),
        "a body cut short is malformed: {:?}",
        String::from_utf8_lossy(&got)
    );
}
