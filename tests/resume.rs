//! Kill `hookline send` with SIGKILL mid-job, then `--resume` it: every event is
//! delivered, nothing the history recorded as delivered is sent again, and the only
//! duplicates are requests in flight or not yet recorded at the kill — at most four
//! times the concurrency (same idempotency id).

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
    {
        // The killed job is told from a running one: its process is gone.
        let h = History::open(&db).expect("history");
        let info = h.job(&job).expect("read").expect("job");
        assert_eq!(info.state, "running");
        assert!(info.interrupted, "a killed job must show as interrupted");
        assert!(
            h.resumable_jobs(10)
                .expect("resumable")
                .iter()
                .any(|j| j.id == job),
            "the killed job is resumable"
        );
    }

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
    // A request keeps its place among the unrecorded (4 × concurrency of them) until
    // its outcome is committed, so only those can repeat.
    assert!(
        dupes.len() <= 4 * CONCURRENCY,
        "{} duplicates; only requests in flight or unrecorded at the kill may repeat: {dupes:?}",
        dupes.len()
    );
    println!(
        "killed after {} received; history had {} delivered; {} duplicates (in flight or unrecorded at the kill)",
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

/// A workspace, an events file and a history database in a temporary directory, and
/// a way to run `hookline send` on them.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(workspace: &str, events: &str) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("ws.json"), workspace).expect("ws");
        std::fs::write(dir.path().join("events.ndjson"), events).expect("events");
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn args(&self, dest: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "send".into(),
            "-w".into(),
            self.path("ws.json"),
            "-d".into(),
            dest.into(),
            "-e".into(),
            self.path("events.ndjson"),
            "--history".into(),
            self.path("history.sqlite3"),
        ];
        a.extend(extra.iter().map(ToString::to_string));
        a
    }

    fn send(&self, dest: &str, extra: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(self.args(dest, extra))
            .output()
            .expect("hookline runs")
    }
}

fn job_id(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .find_map(|l| l.strip_prefix("hookline: job "))
        .and_then(|l| l.split_whitespace().next())
        .expect("job id on stderr")
        .to_owned()
}

fn summary(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str::<Value>(text.lines().last().expect("summary line")).expect("json")
        ["summary"]
        .clone()
}

fn workspace(url: &str, extra: &str) -> String {
    format!(r#"{{"version": 1, "destinations": [{{"name": "d", "url": "{url}"{extra}}}]}}"#)
}

fn numbered_events(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(r#"{"type":"track","messageId":"m-"#);
        s.push_str(&i.to_string());
        s.push_str("\"}\n");
    }
    s
}

/// Counts arrivals per `messageId`; `phase` tells the first run from the resume.
type Seen = Arc<Mutex<HashMap<(usize, String), usize>>>;

fn counting_receiver(
    delay: Duration,
    phase: Arc<std::sync::atomic::AtomicUsize>,
) -> (common::Server, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let srv = common::serve(Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let (s, phase) = (s.clone(), phase.clone());
            async move {
                tokio::time::sleep(delay).await;
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let id = v["messageId"].as_str().unwrap_or("").to_owned();
                let p = phase.load(std::sync::atomic::Ordering::SeqCst);
                *s.lock().expect("lock").entry((p, id)).or_default() += 1;
                "ok"
            }
        }),
    ));
    (srv, seen)
}

#[test]
fn a_history_that_cannot_be_written_stops_the_job_and_the_resume_sends_exactly_the_unrecorded_events()
 {
    const N: usize = 3000;
    let phase = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let (srv, seen) = counting_receiver(Duration::from_millis(3), phase.clone());
    let setup = Setup::new(&workspace(&srv.url("/hook"), ""), &numbered_events(N));
    let db = setup.path("history.sqlite3");
    let mut child = Command::new(BIN)
        .args(setup.args("d", &["--concurrency", "8"]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first_line = String::new();
    stderr.read_line(&mut first_line).expect("job line");
    let job = job_id(first_line.as_bytes());

    // Mid-job, another connection takes the database's write lock and keeps it.
    let deadline = Instant::now() + Duration::from_mins(1);
    while seen.lock().expect("lock").len() < N / 3 {
        assert!(Instant::now() < deadline, "the job never got going");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the job ended before the database could be locked"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let locker = rusqlite::Connection::open(&db).expect("second connection");
    locker
        .busy_timeout(Duration::from_secs(10))
        .expect("timeout");
    locker
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("exclusive lock");
    let deadline = Instant::now() + Duration::from_mins(1);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "send did not stop while its history was locked"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("stderr");
    locker.execute_batch("ROLLBACK").expect("unlock");
    drop(locker);
    assert_eq!(status.code(), Some(1), "stderr: {rest}");
    assert!(
        rest.contains(&format!("history database {db}")) && rest.contains("locked"),
        "the error names the database and the cause: {rest}"
    );
    std::thread::sleep(Duration::from_millis(100));
    let first: HashMap<String, usize> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|((_, id), n)| (id.clone(), *n))
        .collect();
    assert!(first.len() < N, "the job went on after its history failed");

    // Never `done` with events unrecorded; the process is gone, so it is interrupted.
    let (unrecorded, recorded): (Vec<usize>, Vec<usize>) = {
        let h = History::open(std::path::Path::new(&db)).expect("history");
        let info = h.job(&job).expect("read").expect("job");
        assert_ne!(info.state, "done");
        assert!(info.interrupted || info.state == "failed", "{info:?}");
        let left = h.undelivered(&job).expect("undelivered");
        let set: std::collections::HashSet<usize> = left.iter().copied().collect();
        (left, (0..N).filter(|i| !set.contains(i)).collect())
    };
    assert!(!recorded.is_empty(), "nothing was recorded before the lock");
    for i in &recorded {
        assert!(
            first.contains_key(&format!("m-{i}")),
            "m-{i} recorded as delivered but never arrived"
        );
    }
    let unrecorded_but_sent = unrecorded
        .iter()
        .filter(|i| first.contains_key(&format!("m-{i}")))
        .count();
    assert!(
        unrecorded_but_sent <= 32,
        "{unrecorded_but_sent} delivered events went unrecorded; at most 4 × 8 (in flight or awaiting their commit) may"
    );

    // The resume sends exactly what is not recorded, each once.
    phase.store(2, std::sync::atomic::Ordering::SeqCst);
    let out = setup.send("d", &["--concurrency", "8", "--resume", &job]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut resent: Vec<(String, usize)> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|((p, _), _)| *p == 2)
        .map(|((_, id), n)| (id.clone(), *n))
        .collect();
    resent.sort();
    let mut expected: Vec<(String, usize)> =
        unrecorded.iter().map(|i| (format!("m-{i}"), 1)).collect();
    expected.sort();
    assert_eq!(
        resent, expected,
        "the resume sends exactly the unrecorded events"
    );
    let s = summary(&out.stdout);
    assert_eq!(s["job_events"]["delivered"], N);
    assert_eq!(s["job_events"]["pending"], 0);
    println!(
        "locked after {} arrived: {} recorded, {} unrecorded ({} of them delivered before the lock held), resume sent {}",
        first.len(),
        recorded.len(),
        unrecorded.len(),
        unrecorded_but_sent,
        resent.len()
    );
}

#[test]
fn counts_after_a_resume_count_each_event_once_by_its_latest_state() {
    let ok = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let o = ok.clone();
    let srv = common::serve(Router::new().route(
        "/hook",
        post(move || {
            let o = o.clone();
            async move {
                if o.load(std::sync::atomic::Ordering::SeqCst) {
                    (axum::http::StatusCode::OK, "ok")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down")
                }
            }
        }),
    ));
    let setup = Setup::new(&workspace(&srv.url("/hook"), ""), &numbered_events(2));
    let first = setup.send("d", &["--max-attempts", "1"]);
    assert_eq!(first.status.code(), Some(1));
    let job = job_id(&first.stderr);
    let s = summary(&first.stdout);
    assert_eq!(
        (s["failed"].as_u64(), s["job_events"]["failed"].as_u64()),
        (Some(2), Some(2))
    );

    ok.store(true, std::sync::atomic::Ordering::SeqCst);
    let second = setup.send("d", &["--resume", &job]);
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let s = summary(&second.stdout);
    assert_eq!(
        s["job_events"],
        serde_json::json!({"total": 2, "delivered": 2, "failed": 0, "skipped": 0, "pending": 0})
    );
    let h = History::open(std::path::Path::new(&setup.path("history.sqlite3"))).expect("history");
    assert_eq!(
        h.event_counts(&job).expect("counts"),
        vec![("delivered".to_owned(), 2)]
    );
    assert_eq!(h.job(&job).expect("read").expect("job").state, "done");
}

/// A job of three events whose every request was refused (nothing listens there).
fn refused_job_of_3() -> (Setup, String) {
    let setup = Setup::new(
        &workspace("http://127.0.0.1:9/hook", ""),
        &numbered_events(3),
    );
    let first = setup.send("d", &["--max-attempts", "1"]);
    assert_eq!(first.status.code(), Some(1), "connection refused → failed");
    let job = job_id(&first.stderr);
    (setup, job)
}

#[test]
fn resume_refuses_other_events_of_the_same_length_and_changed_destination_settings() {
    let (setup, job) = refused_job_of_3();
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // The job records the events file's fingerprint: XXH3-128 over the XXH3-128 of
    // each MiB (here one) and the length.
    let events = setup.path("events.ndjson");
    let original = std::fs::read(&events).expect("events");
    {
        let h =
            History::open(std::path::Path::new(&setup.path("history.sqlite3"))).expect("history");
        let info = h.job(&job).expect("read").expect("job");
        let mut tree = xxhash_rust::xxh3::xxh3_128(&original)
            .to_le_bytes()
            .to_vec();
        tree.extend_from_slice(&(original.len() as u64).to_le_bytes());
        assert_eq!(
            info.events_digest,
            Some(format!(
                "xxh3-blocks:{:032x}",
                xxhash_rust::xxh3::xxh3_128(&tree)
            ))
        );
        assert!(info.destination_sha256.is_some());
    }

    // Same number of events, other content.
    std::fs::write(&events, numbered_events(3).replace("m-1", "x-1")).expect("edit");
    let other = setup.send("d", &["--resume", &job]);
    assert_eq!(other.status.code(), Some(2), "{}", stderr(&other));
    assert!(
        stderr(&other).contains("different content"),
        "{}",
        stderr(&other)
    );
    std::fs::write(&events, &original).expect("restore");

    // The destination's URL changed.
    std::fs::write(
        setup.path("ws.json"),
        workspace("http://127.0.0.1:9/other", ""),
    )
    .expect("ws");
    let changed = setup.send("d", &["--resume", &job]);
    assert_eq!(changed.status.code(), Some(2), "{}", stderr(&changed));
    assert!(
        stderr(&changed).contains("destination \"d\" has changed"),
        "{}",
        stderr(&changed)
    );
    // --force resumes anyway (and fails again here: nothing listens).
    let forced = setup.send("d", &["--resume", &job, "--force", "--max-attempts", "1"]);
    assert_eq!(forced.status.code(), Some(1), "{}", stderr(&forced));
    assert!(
        stderr(&forced).contains("resuming job"),
        "{}",
        stderr(&forced)
    );

    // Delivery settings (concurrency, retries, timeouts) may change between runs.
    std::fs::write(
        setup.path("ws.json"),
        workspace(
            "http://127.0.0.1:9/hook",
            r#", "delivery": {"concurrency": 3, "max_attempts": 1, "timeout_ms": 2000}"#,
        ),
    )
    .expect("ws");
    let retuned = setup.send("d", &["--resume", &job]);
    assert_eq!(retuned.status.code(), Some(1), "{}", stderr(&retuned));
    assert!(
        stderr(&retuned).contains("resuming job"),
        "{}",
        stderr(&retuned)
    );
}

/// A job recorded before XXH3 fingerprints has its file's SHA-256: its resume compares
/// SHA-256 with SHA-256, so the same file resumes and another is refused.
#[test]
fn a_job_with_a_sha256_fingerprint_resumes_with_its_file_and_refuses_another() {
    use sha2::Digest as _;
    let (setup, job) = refused_job_of_3();
    let events = setup.path("events.ndjson");
    let original = std::fs::read(&events).expect("events");
    rusqlite::Connection::open(setup.path("history.sqlite3"))
        .expect("sqlite")
        .execute(
            "UPDATE jobs SET events_sha256 = ?1 WHERE id = ?2",
            rusqlite::params![hex::encode(sha2::Sha256::digest(&original)), job],
        )
        .expect("record as an older Hookline did");
    let same = setup.send("d", &["--resume", &job, "--max-attempts", "1"]);
    let err = String::from_utf8_lossy(&same.stderr).into_owned();
    assert_eq!(same.status.code(), Some(1), "{err}");
    assert!(err.contains("resuming job"), "{err}");

    std::fs::write(&events, numbered_events(3).replace("m-1", "x-1")).expect("edit");
    let other = setup.send("d", &["--resume", &job]);
    let err = String::from_utf8_lossy(&other.stderr).into_owned();
    assert_eq!(other.status.code(), Some(2), "{err}");
    assert!(err.contains("different content"), "{err}");
}

#[test]
fn resume_of_a_job_whose_recorded_count_is_absurd_is_refused_clearly() {
    let setup = Setup::new(
        &workspace("http://127.0.0.1:9/hook", ""),
        &numbered_events(2),
    );
    let first = setup.send("d", &["--max-attempts", "1"]);
    let job = job_id(&first.stderr);
    rusqlite::Connection::open(setup.path("history.sqlite3"))
        .expect("sqlite")
        .execute(
            "UPDATE jobs SET total_events = ?1 WHERE id = ?2",
            rusqlite::params![1i64 << 62, job],
        )
        .expect("tamper");
    let out = setup.send("d", &["--resume", &job]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("total_events 4611686018427387904 is out of range")
            && err.contains("history.sqlite3"),
        "{err}"
    );
}

/// The history lags (another connection holds its lock, as a slow disk would make
/// it) while the receiver keeps answering, and the process is killed then: since an
/// answered request keeps its place among the unrecorded (4 × concurrency) until its
/// outcome is committed, no more than that can go unrecorded, however far behind the
/// history is.
#[test]
fn a_kill_while_the_history_lags_resends_at_most_four_times_the_concurrency() {
    const N: usize = 3000;
    let phase = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let (srv, seen) = counting_receiver(Duration::from_millis(1), phase.clone());
    let setup = Setup::new(&workspace(&srv.url("/hook"), ""), &numbered_events(N));
    let mut child = Command::new(BIN)
        .args(setup.args("d", &["--concurrency", "8"]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first_line = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut first_line)
        .expect("job line");
    let job = job_id(first_line.as_bytes());
    let deadline = Instant::now() + Duration::from_mins(1);
    while seen.lock().expect("lock").len() < N / 4 {
        assert!(Instant::now() < deadline, "the job never got going");
        assert!(child.try_wait().expect("wait").is_none(), "ended too soon");
        std::thread::sleep(Duration::from_millis(2));
    }
    let locker = rusqlite::Connection::open(setup.path("history.sqlite3")).expect("sqlite");
    locker
        .busy_timeout(Duration::from_secs(10))
        .expect("timeout");
    locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let at_lock = seen.lock().expect("lock").len();
    std::thread::sleep(Duration::from_millis(700));
    let answered_while_locked = seen.lock().expect("lock").len() - at_lock;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    locker.execute_batch("ROLLBACK").expect("unlock");
    drop(locker);
    std::thread::sleep(Duration::from_millis(100));

    phase.store(2, std::sync::atomic::Ordering::SeqCst);
    let out = setup.send("d", &["--concurrency", "8", "--resume", &job]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = seen.lock().expect("lock");
    let first: std::collections::HashSet<&String> = seen
        .keys()
        .filter(|(p, _)| *p == 1)
        .map(|(_, id)| id)
        .collect();
    let resent: Vec<&String> = seen
        .keys()
        .filter(|(p, id)| *p == 2 && first.contains(id))
        .map(|(_, id)| id)
        .collect();
    let all: std::collections::HashSet<&String> = seen.keys().map(|(_, id)| id).collect();
    assert_eq!(all.len(), N, "every event delivered");
    println!(
        "{answered_while_locked} answered while the history was locked; {} re-sent by the resume",
        resent.len()
    );
    assert!(
        resent.len() <= 32,
        "{} events delivered before the kill were sent again; at most 4 × 8 unrecorded may be",
        resent.len()
    );
}

#[test]
fn a_corrupt_history_database_is_refused_before_anything_is_sent() {
    let phase = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let (srv, seen) = counting_receiver(Duration::ZERO, phase);
    let setup = Setup::new(&workspace(&srv.url("/hook"), ""), &numbered_events(5));
    let db = setup.path("history.sqlite3");
    std::fs::write(&db, vec![0x5a_u8; 8192]).expect("garbage");
    let out = setup.send("d", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&db) && err.contains("not a database"), "{err}");
    assert!(seen.lock().expect("lock").is_empty(), "nothing may be sent");
}
