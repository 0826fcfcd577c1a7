//! The job and history API the app drives: stable destination ids (a rename keeps
//! history), re-sending only what failed, resuming only what was never delivered,
//! and reading a job's rows by range. Real servers on 127.0.0.1, a real SQLite file.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use hookline::store::history::History;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hookline");

/// Arrivals per (phase, event number).
type Seen = Arc<Mutex<HashMap<(usize, u64), usize>>>;

/// A receiver that answers 503 to odd event numbers while `phase` is 1, 200 otherwise.
fn odd_fail_receiver(phase: Arc<AtomicUsize>) -> (common::Server, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let srv = common::serve(Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let (s, phase) = (s.clone(), phase.clone());
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let n = v["properties"]["n"].as_u64().unwrap_or(u64::MAX);
                let p = phase.load(Ordering::SeqCst);
                *s.lock().expect("lock").entry((p, n)).or_default() += 1;
                if p == 1 && n % 2 == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    ));
    (srv, seen)
}

fn events(n: u64) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for i in 0..n {
        let _ = writeln!(
            s,
            r#"{{"type":"track","event":"e","properties":{{"n":{i}}}}}"#
        );
    }
    s
}

fn job_id(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .find_map(|l| l.strip_prefix("hookline: job "))
        .and_then(|l| l.split_whitespace().next())
        .expect("job id on stderr")
        .to_owned()
}

fn send(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("hookline runs")
}

#[test]
fn a_renamed_destination_keeps_its_jobs_and_a_resume_by_the_new_name_finds_them() {
    let phase = Arc::new(AtomicUsize::new(1));
    let (srv, seen) = odd_fail_receiver(phase.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let ws = dir.path().join("ws.json");
    let ev = dir.path().join("events.ndjson");
    let db = dir.path().join("history.sqlite3");
    std::fs::write(
        &ws,
        format!(
            r#"{{"version": 1, "destinations": [{{"name": "orders", "url": "{}", "delivery": {{"max_attempts": 1}}}}]}}"#,
            srv.url("/hook")
        ),
    )
    .expect("ws");
    std::fs::write(&ev, events(6)).expect("events");
    let (ws_s, ev_s, db_s) = (
        ws.to_string_lossy().into_owned(),
        ev.to_string_lossy().into_owned(),
        db.to_string_lossy().into_owned(),
    );
    let first = send(&[
        "send",
        "-w",
        &ws_s,
        "-d",
        "orders",
        "-e",
        &ev_s,
        "--history",
        &db_s,
    ]);
    assert_eq!(
        first.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let job = job_id(&first.stderr);

    // The id was given and saved back; rename the destination, keeping the id.
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&ws).expect("read")).expect("json");
    let id = doc["destinations"][0]["id"]
        .as_str()
        .expect("an id was saved")
        .to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).map(|u| u.get_version_num()),
        Ok(4),
        "{id}"
    );
    doc["destinations"][0]["name"] = "orders-v2".into();
    std::fs::write(&ws, serde_json::to_string_pretty(&doc).expect("json")).expect("write");

    let loaded = hookline::store::workspace::load(&ws).expect("loads");
    let dest = loaded.destination("orders-v2").expect("renamed");
    assert_eq!(dest.id, id, "the id survives the rename");
    let h = History::open(&db).expect("history");
    let jobs = h.destination_jobs(dest, 10).expect("jobs");
    assert_eq!(
        jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [job.as_str()]
    );
    assert_eq!(jobs[0].destination, "orders", "the name it had then");
    // A different destination with the old name is not the same destination.
    let mut other = dest.clone();
    other.id = uuid::Uuid::new_v4().to_string();
    other.name = "orders".into();
    assert!(h.destination_jobs(&other, 10).expect("jobs").is_empty());
    assert!(jobs[0].is_for(dest));
    drop(h);

    phase.store(2, Ordering::SeqCst);
    let resumed = send(&[
        "send",
        "-w",
        &ws_s,
        "-d",
        "orders-v2",
        "-e",
        &ev_s,
        "--history",
        &db_s,
        "--resume",
        &job,
    ]);
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let seen = seen.lock().expect("lock");
    let mut second: Vec<u64> = seen
        .keys()
        .filter(|(p, _)| *p == 2)
        .map(|(_, n)| *n)
        .collect();
    second.sort_unstable();
    assert_eq!(second, [1, 3, 5], "only the failed events are sent again");
}

#[test]
fn ids_are_given_once_saved_back_and_a_duplicated_id_is_replaced() {
    let dir = tempfile::tempdir().expect("tmp");
    let ws = dir.path().join("ws.json");
    std::fs::write(
        &ws,
        r#"{"version": 1, "destinations": [
            {"name": "a", "url": "http://127.0.0.1:9/a"},
            {"id": "11111111-1111-4111-8111-111111111111", "name": "b", "url": "http://127.0.0.1:9/b"},
            {"id": "11111111-1111-4111-8111-111111111111", "name": "c", "url": "http://127.0.0.1:9/c"}]}"#,
    )
    .expect("ws");
    let (first, err) = hookline::store::workspace::load_assigning_ids(&ws).expect("loads");
    assert!(err.is_none());
    let ids: Vec<&str> = first.destinations.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids[1], "11111111-1111-4111-8111-111111111111",
        "a present id is kept"
    );
    assert!(
        !ids[0].is_empty() && ids[0] != ids[1] && ids[2] != ids[1] && ids[0] != ids[2],
        "{ids:?}"
    );
    let saved = std::fs::read_to_string(&ws).expect("read");
    let (again, _) = hookline::store::workspace::load_assigning_ids(&ws).expect("reloads");
    assert_eq!(again, first, "the saved ids are read back");
    assert_eq!(
        std::fs::read_to_string(&ws).expect("read"),
        saved,
        "nothing to save the second time"
    );
}

#[test]
fn a_saved_workspace_reads_back_equal() {
    let dir = tempfile::tempdir().expect("tmp");
    let ws = dir.path().join("ws.json");
    std::fs::write(
        &ws,
        r#"{"version": 1, "destinations": [{"name": "d", "url": "http://127.0.0.1:9/hook"}]}"#,
    )
    .expect("ws");
    let (first, _) = hookline::store::workspace::load_assigning_ids(&ws).expect("loads");
    let again = hookline::store::workspace::load(&ws).expect("reloads");
    assert_eq!(
        again,
        first,
        "{}",
        std::fs::read_to_string(&ws).expect("read")
    );
}

#[test]
fn the_destination_digest_ignores_the_id_so_jobs_from_before_ids_still_resume() {
    let mut d = hookline::core::model::Destination::new("d", "http://127.0.0.1:9/hook");
    d.headers.insert("X-A".into(), "1".into());
    let before = hookline::core::job::destination_digest(&d);
    d.id = uuid::Uuid::new_v4().to_string();
    assert_eq!(hookline::core::job::destination_digest(&d), before);
    d.url = "http://127.0.0.1:9/other".into();
    assert_ne!(hookline::core::job::destination_digest(&d), before);
}
