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
    assert_eq!(rows[2].1.body, b"{\"i\":2}");
    assert_eq!(rows[0].1.path, "/collect/track/s");
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
