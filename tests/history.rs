//! The SQLite history: job records, event states as ranges, what a resume sends,
//! attempts with redacted headers and truncated bodies, reopening after a crash.

use hookline::runtime::delivery::{AttemptLog, JobLog, NewJob, Outcome, OutcomeKind};
use hookline::store::history::{History, MAX_BODY, ranges};

fn new_job(job: &str, destination: &str, source: &str, total_events: usize) -> NewJob {
    NewJob {
        job: job.into(),
        destination: destination.into(),
        source: source.into(),
        total_events,
        fingerprint: Default::default(),
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
