//! Kill `hookline send` with SIGKILL mid-job, then `--resume` it: every event is
//! delivered, nothing the history recorded as delivered is sent again, and the only
//! duplicates are requests that were in flight at the kill (same idempotency id).

mod common;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use hookline::store::history::History;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hookline");
const EVENTS: usize = 3000;
const CONCURRENCY: usize = 8;

#[test]
fn a_job_killed_with_sigkill_resumes_without_resending_what_was_delivered() {
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let s = seen.clone();
    let srv = common::serve(Router::new().route(
        "/hook",
        post(move |body: Bytes| async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            *s.lock()
                .expect("lock")
                .entry(v["messageId"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
            "ok"
        }),
    ));
    let dir = tempfile::tempdir().expect("tmp");
    let ws = dir.path().join("ws.json");
    std::fs::write(
        &ws,
        format!(
            r#"{{"version": 1, "destinations": [{{"name": "d", "url": "{}"}}]}}"#,
            srv.url("/hook")
        ),
    )
    .expect("ws");
    let events = dir.path().join("events.ndjson");
    let mut f = std::fs::File::create(&events).expect("events");
    for i in 0..EVENTS {
        writeln!(
            f,
            r#"{{"type":"track","event":"E","messageId":"m-{i}","properties":{{"i":{i}}}}}"#
        )
        .expect("write");
    }
    drop(f);
    let db = dir.path().join("history.sqlite3");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "send",
            "-w",
            ws.to_str().unwrap_or(""),
            "-d",
            "d",
            "-e",
            events.to_str().unwrap_or(""),
            "--history",
            db.to_str().unwrap_or(""),
            "--concurrency",
            &CONCURRENCY.to_string(),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        a.extend(extra.iter().map(ToString::to_string));
        a
    };

    // First run: kill -9 once about a third has arrived.
    let mut child = Command::new(BIN)
        .args(args(&[]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first_line = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut first_line)
        .expect("job line");
    let job = first_line
        .split_whitespace()
        .nth(2)
        .expect("job id")
        .to_owned();
    let deadline = Instant::now() + Duration::from_mins(1);
    while seen.lock().expect("lock").len() < EVENTS / 3 {
        assert!(Instant::now() < deadline, "the first run never got going");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the first run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    std::thread::sleep(Duration::from_millis(200)); // requests in flight land at the receiver
    let before_resume: HashMap<String, usize> = seen.lock().expect("lock").clone();
    assert!(
        before_resume.len() < EVENTS,
        "killed too late to test anything"
    );

    // What the history says was delivered before the kill.
    let delivered_before: Vec<usize> = {
        let h = History::open(&db).expect("history opens after a kill");
        let left = h.undelivered(&job).expect("job recorded");
        let left: std::collections::HashSet<usize> = left.into_iter().collect();
        (0..EVENTS).filter(|i| !left.contains(i)).collect()
    };
    assert!(
        !delivered_before.is_empty(),
        "history recorded nothing before the kill"
    );

    // Resume.
    let out = Command::new(BIN)
        .args(args(&["--resume", &job]))
        .output()
        .expect("resume runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value =
        serde_json::from_str(stdout.lines().last().expect("summary")).expect("json");
    assert_eq!(summary["summary"]["failed"], 0);
    assert_eq!(
        summary["summary"]["delivered"].as_u64(),
        Some((EVENTS - delivered_before.len()) as u64)
    );

    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), EVENTS, "every event delivered");
    for i in &delivered_before {
        assert_eq!(
            seen.get(&format!("m-{i}")),
            Some(&1),
            "m-{i} was recorded as delivered before the kill and sent again"
        );
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dupes.len() <= CONCURRENCY * 2,
        "{} duplicates; only requests in flight at the kill may repeat: {dupes:?}",
        dupes.len()
    );
    println!(
        "killed after {} received; history had {} delivered; {} duplicates (in flight at the kill)",
        before_resume.len(),
        delivered_before.len(),
        dupes.len()
    );
}

#[test]
fn resume_refuses_a_different_destination_or_events_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let ws = dir.path().join("ws.json");
    std::fs::write(&ws, r#"{"version": 1, "destinations": [{"name": "a", "url": "http://127.0.0.1:9/"}, {"name": "b", "url": "http://127.0.0.1:9/"}]}"#).expect("ws");
    let ev = dir.path().join("e.ndjson");
    std::fs::write(&ev, "{\"type\":\"track\"}\n").expect("events");
    let db = dir.path().join("h.sqlite3");
    let run = |d: &str, extra: &[&str]| {
        Command::new(BIN)
            .args([
                "send",
                "-w",
                ws.to_str().unwrap_or(""),
                "-d",
                d,
                "-e",
                ev.to_str().unwrap_or(""),
                "--history",
                db.to_str().unwrap_or(""),
                "--max-attempts",
                "1",
            ])
            .args(extra)
            .output()
            .expect("runs")
    };
    let first = run("a", &[]);
    assert_eq!(first.status.code(), Some(1), "connection refused → failed");
    let err = String::from_utf8_lossy(&first.stderr).into_owned();
    let job = err.split_whitespace().nth(2).expect("job id").to_owned();
    let wrong = run("b", &["--resume", &job]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("destination \"a\""),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let unknown = run("a", &["--resume", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no job \"nope\""),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}
