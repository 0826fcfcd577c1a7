//! The SQLite history: job records, event states as ranges, what a resume sends,
//! attempts with redacted headers and truncated bodies, reopening after a crash.

use hookline::runtime::delivery::{AttemptLog, JobLog, NewJob, Outcome, OutcomeKind};
use hookline::store::history::{History, MAX_BODY, ranges};

fn new_job(job: &str, destination: &str, source: &str, total_events: usize) -> NewJob {
    NewJob {
        job: job.into(),
        destination: destination.into(),
        destination_id: String::new(),
        source: source.into(),
        total_events,
        fingerprint: JobFingerprint::default(),
    }
}

fn outcome(kind: OutcomeKind) -> Outcome {
    Outcome {
        request_no: 1,
        request: "POST http://127.0.0.1/x".into(),
        events: vec![],
        status: Some(200),
        attempts: 1,
        outcome: kind,
        error: None,
        latency_ms: 1.0,
        idempotency_key: "k".into(),
    }
}

#[test]
fn consecutive_indices_are_stored_as_ranges() {
    assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), vec![(0, 2), (5, 5), (7, 8)]);
    assert_eq!(ranges(&[]), Vec::<(usize, usize)>::new());
}

#[test]
fn undelivered_is_everything_not_delivered_or_skipped() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = History::open(&dir.path().join("h.sqlite3")).expect("open");
    let w = h.writer();
    drop(w.job_started(&new_job("j", "dest", "events.ndjson", 10)));
    drop(w.events_done("j", &[0, 1, 2, 3], &outcome(OutcomeKind::Delivered)));
    drop(w.events_done("j", &[4], &outcome(OutcomeKind::Failed)));
    drop(w.events_skipped("j", &[9]));
    drop(w.events_done("j", &[5], &outcome(OutcomeKind::Cancelled)));
    w.flush().expect("flush");
    assert_eq!(h.undelivered("j").expect("job"), vec![4, 5, 6, 7, 8]);
    let info = h.job("j").expect("read").expect("job");
    assert_eq!(
        (
            info.destination.as_str(),
            info.total_events,
            info.state.as_str()
        ),
        ("dest", 10, "running")
    );
    assert_eq!(
        h.event_counts("j").expect("counts"),
        vec![
            ("delivered".into(), 4),
            ("failed".into(), 1),
            ("skipped".into(), 1)
        ]
    );
    assert!(
        h.undelivered("nope")
            .expect_err("unknown job")
            .to_string()
            .contains("no job \"nope\"")
    );
}

#[test]
fn attempts_keep_redacted_headers_and_at_most_64_kib_of_body() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("h.sqlite3");
    {
        let h = History::open(&path).expect("open");
        let w = h.writer();
        drop(w.job_started(&new_job("j", "d", "s", 1)));
        w.attempt(AttemptLog {
            job: "j".into(),
            request_no: 1,
            attempt: 1,
            method: "POST".into(),
            url: "http://127.0.0.1/x?api_key=***".into(),
            request_headers: vec![("Authorization".into(), "Basic ***".into())],
            status: Some(500),
            response_headers: vec![],
            response_body: vec![b'x'; 100_000],
            latency_ms: 3.5,
            error: Some("HTTP 500".into()),
        });
        drop(w.job_finished("j", "failed"));
        w.flush().expect("flush");
    }
    // Reopened, as after a crash or a restart.
    let h = History::open(&path).expect("reopen");
    let a = h.attempts("j", 10).expect("attempts");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].response_body.len(), MAX_BODY);
    assert_eq!(a[0].request_headers, r#"[["Authorization","Basic ***"]]"#);
    assert_eq!(a[0].status, Some(500));
    assert_eq!(h.job("j").expect("read").expect("job").state, "failed");
    assert_eq!(h.recent_jobs(5).expect("jobs").len(), 1);
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("h.sqlite3");
    let c = rusqlite::Connection::open(&path).expect("sqlite");
    c.pragma_update(None, "user_version", 99).expect("pragma");
    drop(c);
    let e = History::open(&path).err().expect("refused").to_string();
    assert!(e.contains("newer Hookline"), "{e}");
}

mod common;

use std::sync::Arc;
use std::time::Duration;

use hookline::core::model::Destination;
use hookline::core::secret::Secrets;
use hookline::runtime::delivery::{Commit, JobFingerprint};
use hookline::runtime::{Command, Runtime, RuntimeConfig, Update};
use hookline::store::history::{HistoryWriter, JobCounts};

#[test]
fn counts_and_undelivered_take_each_events_latest_state() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = History::open(&dir.path().join("h.sqlite3")).expect("open");
    let w = h.writer();
    drop(w.job_started(&new_job("j", "d", "e", 6)));
    // Run 1: 0..=3 fail, 4 delivered. Run 2 (resume): 0..=2 delivered, 3 fails again.
    drop(w.events_done("j", &[0, 1, 2, 3], &outcome(OutcomeKind::Failed)));
    drop(w.events_done("j", &[4], &outcome(OutcomeKind::Delivered)));
    drop(w.events_done("j", &[0, 1, 2], &outcome(OutcomeKind::Delivered)));
    drop(w.events_done("j", &[3], &outcome(OutcomeKind::Failed)));
    // A request in flight at a kill and then delivered twice counts once.
    drop(w.events_done("j", &[4], &outcome(OutcomeKind::Delivered)));
    w.flush().expect("flush");
    assert_eq!(
        h.job_counts("j").expect("counts"),
        JobCounts {
            total: 6,
            delivered: 4,
            failed: 1,
            skipped: 0,
            pending: 1
        }
    );
    assert_eq!(h.undelivered("j").expect("left"), vec![3, 5]);
    assert_eq!(
        h.undelivered_ranges("j").expect("left"),
        vec![(3, 3), (5, 5)]
    );
}

#[test]
fn an_absurd_event_count_in_the_database_is_a_clear_error_not_an_allocation() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("h.sqlite3");
    let h = History::open(&path).expect("open");
    let w = h.writer();
    drop(w.job_started(&new_job("big", "d", "e", 3)));
    drop(w.job_started(&new_job("neg", "d", "e", 3)));
    drop(w.job_started(&new_job("rows", "d", "e", 3)));
    w.flush().expect("flush");
    let c = rusqlite::Connection::open(&path).expect("sqlite");
    c.execute_batch(
        "UPDATE jobs SET total_events = 4611686018427387904 WHERE id = 'big';
         UPDATE jobs SET total_events = -5 WHERE id = 'neg';
         INSERT INTO job_events VALUES ('rows', 0, 4611686018427387904, 'delivered', 1, 200, NULL, 'x');
         INSERT INTO job_events VALUES ('rows', -9, -2, 'failed', 1, 500, NULL, 'x');
         INSERT INTO job_events VALUES ('rows', 9223372036854775807, 1, 'failed', 1, 500, NULL, 'x');",
    )
    .expect("tamper");
    for job in ["big", "neg"] {
        for e in [
            h.job(job).map(|_| ()).expect_err("job"),
            h.undelivered(job).map(|_| ()).expect_err("undelivered"),
            h.job_counts(job).map(|_| ()).expect_err("counts"),
        ] {
            let e = e.to_string();
            assert!(
                e.contains(&format!("job {job}: total_events")) && e.contains("out of range"),
                "{e}"
            );
            assert!(
                e.contains(&path.display().to_string()),
                "names the file: {e}"
            );
        }
    }
    assert!(
        h.recent_jobs(10).is_err(),
        "listing says the file is damaged"
    );
    // Ranges past the job's end are clamped to it, never trusted as sizes.
    assert_eq!(
        h.job_counts("rows").expect("counts"),
        JobCounts {
            total: 3,
            delivered: 3,
            failed: 0,
            skipped: 0,
            pending: 0
        }
    );
    assert!(h.undelivered("rows").expect("left").is_empty());
}

#[test]
fn a_version_1_database_is_migrated_and_its_jobs_stay_readable() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("h.sqlite3");
    let c = rusqlite::Connection::open(&path).expect("sqlite");
    c.execute_batch(
        "CREATE TABLE jobs(id TEXT PRIMARY KEY, destination TEXT NOT NULL, source TEXT NOT NULL,
            total_events INTEGER NOT NULL, created_at TEXT NOT NULL, finished_at TEXT, state TEXT NOT NULL);
         CREATE TABLE job_events(job_id TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL, state TEXT NOT NULL,
            attempts INTEGER NOT NULL, status INTEGER, error TEXT, at TEXT NOT NULL);
         CREATE TABLE attempts(id INTEGER PRIMARY KEY, job_id TEXT NOT NULL, request_no INTEGER NOT NULL, attempt INTEGER NOT NULL,
            at TEXT NOT NULL, method TEXT NOT NULL, url TEXT NOT NULL, request_headers TEXT NOT NULL,
            status INTEGER, response_headers TEXT NOT NULL, response_body BLOB NOT NULL, latency_ms REAL NOT NULL, error TEXT);
         CREATE TABLE captures(id INTEGER PRIMARY KEY, at TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, query TEXT NOT NULL,
            headers TEXT NOT NULL, body BLOB NOT NULL, signature TEXT);
         INSERT INTO jobs VALUES ('old', 'd', 'e.ndjson', 4, '2025-01-01T00:00:00.000Z', NULL, 'running');
         INSERT INTO job_events VALUES ('old', 0, 1, 'delivered', 1, 200, NULL, '2025-01-01T00:00:01.000Z');
         PRAGMA user_version = 1;",
    )
    .expect("v1 database");
    drop(c);
    let h = History::open(&path).expect("migrates");
    let info = h.job("old").expect("read").expect("job");
    assert_eq!((info.events_digest, info.destination_sha256), (None, None));
    assert!(
        info.interrupted,
        "an old running job without heartbeat is interrupted"
    );
    assert_eq!(h.undelivered("old").expect("left"), vec![2, 3]);
    let c = rusqlite::Connection::open(&path).expect("sqlite");
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(v, 4);
    drop(h);
    // Reopening a migrated database changes nothing.
    let h = History::open(&path).expect("reopens");
    assert_eq!(h.job("old").expect("read").expect("job").total_events, 4);
}

#[cfg(unix)]
#[test]
fn the_history_directory_is_private_and_its_files_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("data/hookline/history.sqlite3");
    let h = History::open(&path).expect("open");
    let w = h.writer();
    drop(w.job_started(&new_job("j", "d", "e", 1)));
    w.flush().expect("flush");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    assert_eq!(mode(&dir.path().join("data/hookline")), 0o700);
    for f in [
        "history.sqlite3",
        "history.sqlite3-wal",
        "history.sqlite3-shm",
    ] {
        assert_eq!(
            mode(&dir.path().join("data/hookline").join(f)),
            0o600,
            "{f}"
        );
    }
    drop(h);
    // A database left readable by others is made owner-only when opened.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let _h = History::open(&path).expect("reopen");
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn resumable_jobs_lists_ended_and_crashed_jobs_but_not_running_or_done_ones() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("h.sqlite3");
    let h = History::open(&path).expect("open");
    let w = h.writer();
    for j in ["done", "failed", "live", "crashed"] {
        drop(w.job_started(&new_job(j, "d", "e", 1)));
    }
    drop(w.job_finished("done", "done"));
    drop(w.job_finished("failed", "failed"));
    w.flush().expect("flush");
    // `crashed`: its last heartbeat is old (its process is this one, so only the
    // heartbeat can tell).
    rusqlite::Connection::open(&path)
        .expect("sqlite")
        .execute_batch(
            "UPDATE jobs SET heartbeat_at = '2025-01-01T00:00:00.000Z' WHERE id = 'crashed'",
        )
        .expect("age");
    let mut ids: Vec<String> = h
        .resumable_jobs(10)
        .expect("list")
        .into_iter()
        .map(|j| j.id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["crashed", "failed"]);
    let live = h.job("live").expect("read").expect("job");
    assert_eq!(live.pid, Some(std::process::id()));
    assert!(!live.interrupted);
}

/// Where a [`Panics`] log has its bug.
#[derive(Clone, Copy, PartialEq)]
enum Bug {
    /// Recording the attempt of request 4 (event 3, the events going one a request,
    /// in order): a bug in a delivery task. Resuming job `resume-panics` panics too:
    /// a bug in the job itself.
    InDelivery,
    /// Recording event 3's outcome: a bug where outcomes are recorded (the job's
    /// committer), not in a delivery task.
    InRecording,
}

/// A history log with a bug that panics.
struct Panics(HistoryWriter, Bug);

impl JobLog for Panics {
    fn job_started(&self, j: &NewJob) -> Commit {
        self.0.job_started(j)
    }
    fn job_resumed(&self, job: &str) -> Commit {
        assert!(job != "resume-panics", "injected panic in the job itself");
        self.0.job_resumed(job)
    }
    fn attempt(&self, a: AttemptLog) {
        assert!(
            !(self.1 == Bug::InDelivery && a.request_no == 4),
            "injected panic in a delivery task"
        );
        self.0.attempt(a);
    }
    fn events_done(&self, job: &str, events: &[usize], o: &Outcome) -> Commit {
        assert!(
            !(self.1 == Bug::InRecording && events.contains(&3)),
            "injected panic recording an outcome"
        );
        self.0.events_done(job, events, o)
    }
    fn events_skipped(&self, job: &str, events: &[usize]) -> Commit {
        self.0.events_skipped(job, events)
    }
    fn job_finished(&self, job: &str, state: &str) -> Commit {
        self.0.job_finished(job, state)
    }
}

/// A receiver that answers 200, a history in a temp dir, and a runtime whose
/// history writer panics where `bug` says.
struct Panicky {
    _srv: common::Server,
    _dir: tempfile::TempDir,
    h: History,
    dest: Destination,
    rt: Runtime,
    updates: std::sync::mpsc::Receiver<Update>,
}

fn panicky(bug: Bug) -> Panicky {
    let srv =
        common::serve(axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" })));
    let dir = tempfile::tempdir().expect("tmp");
    let h = History::open(&dir.path().join("h.sqlite3")).expect("open");
    let dest = common::fast(Destination::new("d", srv.url("/hook")));
    let mut config = RuntimeConfig::new(Secrets::memory(&[]));
    config.log = Arc::new(Panics(h.writer(), bug));
    let (rt, updates) = Runtime::start(config, || {}).expect("runtime");
    Panicky {
        _srv: srv,
        _dir: dir,
        h,
        dest,
        rt,
        updates,
    }
}

fn send(job: &str, dest: &Destination, n: usize, resume: bool) -> Command {
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"type": "track", "messageId": format!("m-{i}")}))
        .collect();
    Command::Send {
        job: job.into(),
        destination: Box::new(dest.clone()),
        events: Arc::new(events.into()),
        only: None,
        source: "test".into(),
        resume,
        fingerprint: JobFingerprint::default(),
    }
}

#[test]
fn a_panic_recording_outcomes_ends_the_job_failed_instead_of_hanging() {
    let p = panicky(Bug::InRecording);
    assert!(p.rt.send(send("rec", &p.dest, 10, false)));
    let run = common::collect(&p.updates, Duration::from_secs(30));
    let e = run.error.expect("the job ends with an error, not as done");
    assert!(e.contains("internal error") && e.contains("rec"), "{e}");
    drop(p.rt);
    p.h.writer().flush().expect("flush");
    let info = p.h.job("rec").expect("read").expect("job");
    assert_ne!(info.state, "done");
    assert!(
        p.h.undelivered("rec").expect("left").contains(&3),
        "what was not recorded stays to be sent by a resume"
    );
}

#[test]
fn a_worker_that_panics_counts_its_events_failed_and_the_job_ends_failed() {
    let p = panicky(Bug::InDelivery);
    assert!(p.rt.send(send("j", &p.dest, 10, false)));
    let run = common::collect(&p.updates, Duration::from_secs(30));
    let stats = run.stats.expect("the job ends with stats");
    assert_eq!((stats.delivered, stats.failed), (9, 1));
    let dead: Vec<_> = run
        .outcomes
        .iter()
        .filter(|o| o.outcome == OutcomeKind::Failed)
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].events, vec![3]);
    assert!(
        dead[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("internal error")),
        "{:?}",
        dead[0].error
    );
    drop(p.rt);
    p.h.writer().flush().expect("flush");
    let info = p.h.job("j").expect("read").expect("job");
    assert_eq!(info.state, "failed");
    assert_eq!(
        p.h.job_counts("j").expect("counts"),
        JobCounts {
            total: 10,
            delivered: 9,
            failed: 1,
            skipped: 0,
            pending: 0
        }
    );
    assert_eq!(p.h.undelivered("j").expect("left"), vec![3]);
}

#[test]
fn a_job_that_panics_ends_failed_with_an_error_instead_of_hanging() {
    let p = panicky(Bug::InDelivery);
    assert!(p.rt.send(send("resume-panics", &p.dest, 2, false)));
    assert!(
        common::collect(&p.updates, Duration::from_secs(30))
            .stats
            .is_some()
    );
    // Resuming it panics inside the job itself (not a delivery task).
    assert!(p.rt.send(send("resume-panics", &p.dest, 2, true)));
    let run = common::collect(&p.updates, Duration::from_secs(30));
    let e = run.error.expect("the job ends with an error");
    assert!(
        e.contains("internal error") && e.contains("resume-panics"),
        "{e}"
    );
    drop(p.rt);
    p.h.writer().flush().expect("flush");
    assert_eq!(
        p.h.job("resume-panics").expect("read").expect("job").state,
        "failed"
    );
}

/// A write nobody waits for (an attempt) fails while another connection holds the
/// database; the job's next acknowledged write commits, yet reports the loss, so the
/// job stops instead of finishing with part of its history missing.
#[test]
fn a_lost_unacknowledged_record_is_reported_by_the_jobs_next_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("h.sqlite3");
    let h = History::open(&path).expect("open");
    let w = h.writer();
    drop(w.job_started(&new_job("j", "d", "e", 2)));
    w.flush().expect("flush");
    let locker = rusqlite::Connection::open(&path).expect("sqlite");
    locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    w.attempt(AttemptLog {
        job: "j".into(),
        request_no: 1,
        attempt: 1,
        method: "POST".into(),
        url: "http://127.0.0.1/x".into(),
        request_headers: vec![],
        status: Some(200),
        response_headers: vec![],
        response_body: vec![],
        latency_ms: 1.0,
        error: None,
    });
    std::thread::sleep(Duration::from_millis(300));
    let commit = w.events_done("j", &[0], &outcome(OutcomeKind::Delivered));
    // The attempt's transaction gives up after the 5 s busy timeout; the events'
    // transaction then gets the lock once it is released.
    std::thread::sleep(Duration::from_secs(6));
    locker.execute_batch("ROLLBACK").expect("unlock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let r = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), commit).await })
        .expect("the commit resolves");
    let e = r.expect_err("the job learns that its history lost a record");
    assert!(
        e.contains(&path.display().to_string()) && e.contains("locked"),
        "{e}"
    );
    assert_eq!(
        h.undelivered("j").expect("left"),
        vec![1],
        "event 0 did commit"
    );
    assert!(h.attempts("j", 10).expect("attempts").is_empty());
}

fn attempt(job: &str, request_no: u64) -> AttemptLog {
    AttemptLog {
        job: job.into(),
        request_no,
        attempt: 1,
        method: "POST".into(),
        url: format!("http://127.0.0.1/{}", request_no % 3),
        request_headers: vec![("Content-Type".into(), "application/json".into())],
        status: Some(200),
        response_headers: vec![("date".into(), "Sun, 06 Dec 2026 04:31:38 GMT".into())],
        response_body: format!("ok {request_no}").into_bytes(),
        latency_ms: 1.5,
        error: None,
    }
}

/// Attempts are kept as pages; rows recorded one each before (schema 3) are read
/// first, and a job written again after a reopen (a resume in another process) goes
/// on after its earlier attempts: ranges read across rows, pages and reopenings give
/// every attempt once, in the order made.
#[test]
fn attempts_read_by_range_span_old_rows_pages_and_reopenings() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("h.sqlite3");
    {
        let h = History::open(&path).expect("open");
        drop(h.writer().job_started(&new_job("j", "d", "e", 1000)));
        h.writer().flush().expect("flush");
    }
    // One attempt as an older Hookline recorded it: a row of its own.
    rusqlite::Connection::open(&path)
        .expect("sqlite")
        .execute(
            "INSERT INTO attempts(job_id, request_no, attempt, at, method, url, request_headers, status, response_headers, response_body, latency_ms, error)
             VALUES ('j', 0, 1, 'then', 'POST', 'http://127.0.0.1/old', '[]', 500, '[]', x'6f6c64', 2.0, 'HTTP 500')",
            [],
        )
        .expect("legacy row");
    for (from, to) in [(1u64, 301u64), (301, 601)] {
        let h = History::open(&path).expect("reopen");
        let w = h.writer();
        for n in from..to {
            w.attempt(attempt("j", n));
            if n % 97 == 0 {
                w.flush().expect("flush");
            }
        }
        // Another job's attempts interleave without taking its numbers.
        w.attempt(attempt("other", 7));
        w.flush().expect("flush");
    }
    let h = History::open(&path).expect("reopen");
    let all = h.attempts_range("j", 0, 10_000).expect("all");
    assert_eq!(
        all.iter().map(|a| a.request_no).collect::<Vec<_>>(),
        (0..601).collect::<Vec<_>>(),
        "every attempt once, in the order made"
    );
    assert_eq!(
        (all[0].url.as_str(), all[0].status, all[0].error.as_deref()),
        ("http://127.0.0.1/old", Some(500), Some("HTTP 500"))
    );
    let a = &all[400];
    assert_eq!(
        (
            a.url.as_str(),
            a.request_headers.as_str(),
            a.response_headers.as_str(),
            a.response_body.as_slice(),
            a.latency_ms
        ),
        (
            "http://127.0.0.1/1",
            r#"[["Content-Type","application/json"]]"#,
            r#"[["date","Sun, 06 Dec 2026 04:31:38 GMT"]]"#,
            &b"ok 400"[..],
            1.5
        )
    );
    for (offset, limit) in [
        (0, 1),
        (0, 3),
        (1, 2),
        (95, 10),
        (255, 3),
        (299, 5),
        (590, 50),
    ] {
        let page = h.attempts_range("j", offset, limit).expect("page");
        let want = &all[offset.min(all.len())..(offset + limit).min(all.len())];
        assert_eq!(
            page.iter().map(|a| a.request_no).collect::<Vec<_>>(),
            want.iter().map(|a| a.request_no).collect::<Vec<_>>(),
            "offset {offset} limit {limit}"
        );
    }
    assert!(h.attempts_range("j", 601, 5).expect("past").is_empty());
    assert_eq!(h.attempts_range("other", 0, 10).expect("other").len(), 2);
}

/// A damaged page is reported as damage, naming the database, not a panic.
#[test]
fn a_damaged_attempt_page_is_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("h.sqlite3");
    let h = History::open(&path).expect("open");
    h.writer().attempt(attempt("j", 1));
    h.writer().flush().expect("flush");
    rusqlite::Connection::open(&path)
        .expect("sqlite")
        .execute("UPDATE attempt_pages SET data = x'ffffffff'", [])
        .expect("damage");
    let e = h
        .attempts_range("j", 0, 5)
        .expect_err("damaged")
        .to_string();
    assert!(e.contains("h.sqlite3") && e.contains("attempt page"), "{e}");
}
