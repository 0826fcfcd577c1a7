//! `hookline send` of an NDJSON file read as a stream (`HOOKLINE_STREAM_MIN_MB=0`
//! streams any NDJSON file): every line is sent once with the bytes a whole import
//! sends, bad lines keep their position and fail, and `--resume` works the same.

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hookline");

/// Bodies received per (phase, messageId).
type Seen = Arc<Mutex<HashMap<(usize, String), Vec<Vec<u8>>>>>;

/// Records every body; in phase 1 answers 503 to events whose `n` is 3 mod 10.
fn receiver(phase: Arc<AtomicUsize>) -> (common::Server, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let srv = common::serve(Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let (s, phase) = (s.clone(), phase.clone());
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let id = v["messageId"].as_str().unwrap_or("").to_owned();
                let p = phase.load(Ordering::SeqCst);
                s.lock()
                    .expect("lock")
                    .entry((p, id))
                    .or_default()
                    .push(body.to_vec());
                if p == 1 && v["n"].as_u64().is_some_and(|n| n % 10 == 3) {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    ));
    (srv, seen)
}

/// `n` events written with spaces (canonical text drops them), a blank line after
/// event 9, and a line that is not JSON after event 99 (position 100).
fn events(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let _ = write!(
            s,
            "{{ \"type\": \"track\", \"messageId\": \"m-{i}\", \"n\": {i}, \"price\": 1.50, \"big\": 123456789012345678901234567890 }}\r\n"
        );
        if i == 9 {
            s.push_str("   \n");
        }
        if i == 99 {
            s.push_str("nope\n");
        }
    }
    s
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(url: &str, events: &str) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let ws = format!(
            r#"{{"version": 1, "destinations": [{{"name": "d", "url": "{url}", "delivery": {{"concurrency": 8, "max_attempts": 1}}}}]}}"#
        );
        std::fs::write(dir.path().join("ws.json"), ws).expect("ws");
        std::fs::write(dir.path().join("events.ndjson"), events).expect("events");
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// `stream_mb`: `HOOKLINE_STREAM_MIN_MB` (0 streams; a large value imports whole).
    fn send(&self, stream_mb: &str, extra: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .env("HOOKLINE_STREAM_MIN_MB", stream_mb)
            .args(["send", "-w", &self.path("ws.json"), "-d", "d", "-e"])
            .arg(self.path("events.ndjson"))
            .arg("--history")
            .arg(self.path("history.sqlite3"))
            .args(extra)
            .output()
            .expect("hookline runs")
    }
}

fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn job_id(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .find_map(|l| l.strip_prefix("hookline: job "))
        .and_then(|l| l.split_whitespace().next())
        .expect("job id on stderr")
        .to_owned()
}

#[test]
fn a_streamed_send_sends_each_line_once_with_the_bytes_of_a_whole_import() {
    const N: usize = 300;
    let phase = Arc::new(AtomicUsize::new(2));
    let (srv, seen) = receiver(phase.clone());
    let setup = Setup::new(&srv.url("/hook"), &events(N));

    let whole = setup.send("100000", &["--no-history"]);
    phase.store(3, Ordering::SeqCst);
    let streamed = setup.send("0", &["--no-history"]);
    // Both fail (exit 1) for the line that is not JSON, and only for it.
    assert_eq!(whole.status.code(), Some(1), "{whole:?}");
    assert_eq!(streamed.status.code(), Some(1), "{streamed:?}");

    let seen = seen.lock().expect("lock");
    for i in 0..N {
        let id = format!("m-{i}");
        let a = &seen[&(2, id.clone())];
        let b = &seen[&(3, id.clone())];
        assert_eq!((a.len(), b.len()), (1, 1), "{id} sent once by each");
        assert_eq!(
            a[0], b[0],
            "{id}: the stream sends the bytes a whole import sends"
        );
        let want = format!(
            "{{\"type\":\"track\",\"messageId\":\"m-{i}\",\"n\":{i},\"price\":1.50,\"big\":123456789012345678901234567890}}"
        );
        assert_eq!(String::from_utf8_lossy(&b[0]), want);
    }
    assert_eq!(seen.len(), 2 * N, "nothing else was sent");

    // The bad line keeps its position (index 100, line 102), reported as failed.
    let out = lines(&streamed.stdout);
    let bad: Vec<&Value> = out
        .iter()
        .filter(|l| l.get("request").is_some_and(Value::is_null))
        .collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0]["events"], serde_json::json!([100]));
    assert_eq!(bad[0]["outcome"], "failed");
    let error = bad[0]["error"].as_str().expect("error");
    assert!(error.starts_with("line 102: "), "{error}");
    let summary = &out.last().expect("summary")["summary"];
    assert_eq!(summary["delivered"], N);
    assert_eq!(summary["failed"], 1);
    // Every request line names the event it carried, each position once.
    let mut sent: Vec<u64> = out
        .iter()
        .filter(|l| l["request"].is_string())
        .flat_map(|l| l["events"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_u64())
        .collect();
    sent.sort_unstable();
    let want: Vec<u64> = (0..=N as u64).filter(|i| *i != 100).collect();
    assert_eq!(sent, want);
}

#[test]
fn a_streamed_job_resumes_only_what_it_did_not_deliver_and_refuses_other_events() {
    const N: usize = 400;
    let phase = Arc::new(AtomicUsize::new(1));
    let (srv, seen) = receiver(phase.clone());
    let setup = Setup::new(&srv.url("/hook"), &events(N));

    let first = setup.send("0", &[]);
    assert_eq!(first.status.code(), Some(1), "{first:?}");
    let job = job_id(&first.stderr);
    let summary = lines(&first.stdout).pop().expect("summary")["summary"].clone();
    // 400 events and the bad line: 401 positions; n = 3 mod 10 failed (40).
    assert_eq!(summary["job_events"]["total"], N + 1, "{summary}");
    assert_eq!(summary["job_events"]["delivered"], N - 40, "{summary}");
    assert_eq!(summary["job_events"]["failed"], 41, "{summary}");

    phase.store(2, Ordering::SeqCst);
    let resumed = setup.send("0", &["--resume", &job]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        stderr.contains("41 of 401 events not yet delivered"),
        "{stderr}"
    );
    // The bad line fails again; everything else is delivered now.
    assert_eq!(resumed.status.code(), Some(1), "{stderr}");
    let summary = lines(&resumed.stdout).pop().expect("summary")["summary"].clone();
    assert_eq!(summary["job_events"]["delivered"], N, "{summary}");
    assert_eq!(summary["job_events"]["failed"], 1, "{summary}");
    assert_eq!(summary["job_events"]["pending"], 0, "{summary}");
    {
        let seen = seen.lock().expect("lock");
        let again: Vec<&(usize, String)> = seen.keys().filter(|(p, _)| *p == 2).collect();
        assert_eq!(again.len(), 40, "only the 40 failed events are sent again");
        for (_, id) in again {
            let n: usize = id.trim_start_matches("m-").parse().expect("n");
            assert_eq!(n % 10, 3, "{id}");
            assert_eq!(seen[&(2, id.clone())].len(), 1, "{id}");
            assert_eq!(seen[&(1, id.clone())].len(), 1, "{id}");
        }
    }

    // Same number of lines, one event changed: a resume refuses it (exit 2).
    let changed = events(N).replacen("m-5\"", "m-x\"", 1);
    std::fs::write(setup.path("events.ndjson"), changed).expect("rewrite");
    let refused = setup.send("0", &["--resume", &job]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("different content"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// While the receiver holds the first request, the stream reads no further than its
/// bounded queue: the process has read the file once (the count and the fingerprint) and
/// at most a few MB of the second read, not all of it (`/proc/PID/io` counts bytes
/// read). Then everything is delivered once released.
#[cfg(target_os = "linux")]
#[test]
fn a_stalled_receiver_stops_the_stream_reading_ahead() {
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    const N: usize = 40_000;
    let open = Arc::new(AtomicBool::new(false));
    let got = Arc::new(AtomicUsize::new(0));
    let (o, g) = (open.clone(), got.clone());
    let srv = common::serve(Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let (o, g) = (o.clone(), g.clone());
            async move {
                let deadline = Instant::now() + Duration::from_mins(1);
                while !o.load(Ordering::SeqCst) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                g.fetch_add(v.as_array().map_or(0, Vec::len), Ordering::SeqCst);
                StatusCode::OK
            }
        }),
    ));
    let pad = "x".repeat(450);
    let mut events = String::new();
    for i in 0..N {
        let _ = writeln!(
            events,
            r#"{{"type":"track","messageId":"m-{i}","pad":"{pad}"}}"#
        );
    }
    let size = events.len() as u64;
    let dir = tempfile::tempdir().expect("tmp");
    let ws = format!(
        r#"{{"version": 1, "destinations": [{{"name": "d", "url": "{}", "batching": {{"max_events": 100, "max_bytes": 1000000}}, "delivery": {{"concurrency": 1}}}}]}}"#,
        srv.url("/hook")
    );
    std::fs::write(dir.path().join("ws.json"), ws).expect("ws");
    std::fs::write(dir.path().join("events.ndjson"), &events).expect("events");
    drop(events);
    let mut child = Command::new(BIN)
        .env("HOOKLINE_STREAM_MIN_MB", "0")
        .args(["send", "-w"])
        .arg(dir.path().join("ws.json"))
        .args(["-d", "d", "-e"])
        .arg(dir.path().join("events.ndjson"))
        .arg("--no-history")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hookline runs");
    // Wait until the job is sending (the first request is held), then let the
    // reader fill its queue.
    let deadline = Instant::now() + Duration::from_mins(1);
    let io = format!("/proc/{}/io", child.id());
    let rchar = || -> u64 {
        std::fs::read_to_string(&io)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("rchar: "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    };
    while rchar() <= size && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(700));
    let read = rchar();
    open.store(true, Ordering::SeqCst);
    let status = child.wait().expect("exit");
    assert!(
        read > size,
        "the file is read once to count and fingerprint it, then again as it is sent: {read}"
    );
    assert!(
        read < size + 6 * 1024 * 1024,
        "read {read} bytes of a {size}-byte file while the receiver held the first request: the stream read ahead without bound"
    );
    assert!(status.success(), "{status:?}");
    assert_eq!(got.load(Ordering::SeqCst), N);
}
