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
    let doc: Value = serde_json::from_str(&saved).expect("json");
    assert_eq!(
        doc["destinations"][0]
            .as_object()
            .expect("object")
            .keys()
            .collect::<Vec<_>>(),
        ["id", "name", "url"],
        "only the id is added: no defaults written out\n{saved}"
    );
    assert!(doc.get("event_sets").is_none(), "{saved}");
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

/// A runtime that records into `h` and reads it for `ResendFailed` / `ResumeJob`.
fn runtime_with(
    h: &Arc<History>,
) -> (
    hookline::runtime::Runtime,
    std::sync::mpsc::Receiver<hookline::runtime::Update>,
) {
    let mut config =
        hookline::runtime::RuntimeConfig::new(hookline::core::secret::Secrets::memory(&[]));
    config.log = Arc::new(h.writer());
    config.history = Some(h.clone());
    hookline::runtime::Runtime::start(config, || {}).expect("runtime")
}

fn numbered(n: u64) -> Arc<hookline::core::events::EventList> {
    let v: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"type": "track", "event": "e", "properties": {"n": i}}))
        .collect();
    Arc::new(v.into())
}

fn sha(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[test]
fn resend_failed_sends_exactly_the_failed_events_and_resume_job_the_never_delivered() {
    use hookline::core::job::JobFingerprint;
    use hookline::runtime::Command as Rt;
    let phase = Arc::new(AtomicUsize::new(1));
    let (srv, seen) = odd_fail_receiver(phase.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let h = Arc::new(History::open(&dir.path().join("h.sqlite3")).expect("history"));
    let mut dest = common::fast(hookline::core::model::Destination::new(
        "d",
        srv.url("/hook"),
    ));
    dest.id = uuid::Uuid::new_v4().to_string();
    dest.delivery.max_attempts = 1;
    let fp = JobFingerprint {
        events_digest: Some(sha("the file")),
        destination_sha256: None,
    };
    let (rt, updates) = runtime_with(&h);
    // First run: only events 0..8 of 10, so 8 and 9 stay pending; odd ones fail.
    assert!(rt.send(Rt::Send {
        job: "j".into(),
        destination: Box::new(dest.clone()),
        events: numbered(10),
        only: Some((0..8).collect()),
        source: "test".into(),
        resume: false,
        fingerprint: fp.clone(),
    }));
    let first = common::collect(&updates, std::time::Duration::from_secs(30));
    let stats = first.stats.expect("stats");
    assert_eq!((stats.delivered, stats.failed), (4, 4));

    phase.store(2, Ordering::SeqCst);
    assert!(rt.send(Rt::ResendFailed {
        job: "j".into(),
        destination: Box::new(dest.clone()),
        events: numbered(10),
        fingerprint: fp.clone(),
    }));
    let resent = common::collect(&updates, std::time::Duration::from_secs(30));
    assert!(resent.error.is_none(), "{:?}", resent.error);
    let mut sent: Vec<usize> = resent
        .outcomes
        .iter()
        .flat_map(|o| o.events.clone())
        .collect();
    sent.sort_unstable();
    assert_eq!(
        sent,
        [1, 3, 5, 7],
        "exactly the failed events, not the pending ones"
    );
    let counts = h.job_counts("j").expect("counts");
    assert_eq!((counts.delivered, counts.failed, counts.pending), (8, 0, 2));

    phase.store(3, Ordering::SeqCst);
    assert!(rt.send(Rt::ResumeJob {
        job: "j".into(),
        destination: Box::new(dest.clone()),
        events: numbered(10),
        fingerprint: fp.clone(),
    }));
    let resumed = common::collect(&updates, std::time::Duration::from_secs(30));
    let mut sent: Vec<usize> = resumed
        .outcomes
        .iter()
        .flat_map(|o| o.events.clone())
        .collect();
    sent.sort_unstable();
    assert_eq!(
        sent,
        [8, 9],
        "only what was never delivered ({:?})",
        resumed.error
    );
    let seen = seen.lock().expect("lock");
    for (phase, want) in [(2, vec![1, 3, 5, 7]), (3, vec![8, 9])] {
        let mut got: Vec<u64> = seen
            .keys()
            .filter(|(p, _)| *p == phase)
            .map(|(_, n)| *n)
            .collect();
        got.sort_unstable();
        assert_eq!(got, want, "what the receiver got in phase {phase}");
    }
}

#[test]
fn resend_failed_refuses_other_events_a_changed_destination_and_an_unknown_job() {
    use hookline::core::job::JobFingerprint;
    use hookline::runtime::Command as Rt;
    let phase = Arc::new(AtomicUsize::new(1));
    let (srv, seen) = odd_fail_receiver(phase);
    let dir = tempfile::tempdir().expect("tmp");
    let h = Arc::new(History::open(&dir.path().join("h.sqlite3")).expect("history"));
    let mut dest = common::fast(hookline::core::model::Destination::new(
        "d",
        srv.url("/hook"),
    ));
    dest.delivery.max_attempts = 1;
    let fp = |what: &str| JobFingerprint {
        events_digest: Some(sha(what)),
        destination_sha256: None,
    };
    let (rt, updates) = runtime_with(&h);
    assert!(rt.send(Rt::Send {
        job: "j".into(),
        destination: Box::new(dest.clone()),
        events: numbered(4),
        only: None,
        source: "test".into(),
        resume: false,
        fingerprint: fp("file one"),
    }));
    common::collect(&updates, std::time::Duration::from_secs(30));
    let before: usize = seen.lock().expect("lock").values().sum();

    let refused = |cmd: Rt| {
        assert!(rt.send(cmd));
        let run = common::collect(&updates, std::time::Duration::from_secs(30));
        assert!(run.outcomes.is_empty(), "nothing is sent");
        run.error.expect("refused with a message")
    };
    let other_events = refused(Rt::ResendFailed {
        job: "j".into(),
        destination: Box::new(dest.clone()),
        events: numbered(4),
        fingerprint: fp("file two"),
    });
    assert!(
        other_events.contains("job j was sent from other events"),
        "{other_events}"
    );
    let other_count = refused(Rt::ResumeJob {
        job: "j".into(),
        destination: Box::new(dest.clone()),
        events: numbered(5),
        fingerprint: fp("file one"),
    });
    assert!(
        other_count.contains("job j had 4 events but 5"),
        "{other_count}"
    );
    let mut changed = dest.clone();
    changed.url = srv.url("/other");
    let changed_dest = refused(Rt::ResendFailed {
        job: "j".into(),
        destination: Box::new(changed),
        events: numbered(4),
        fingerprint: fp("file one"),
    });
    assert!(
        changed_dest.contains("destination \"d\" has changed since job j"),
        "{changed_dest}"
    );
    let unknown = refused(Rt::ResumeJob {
        job: "nope".into(),
        destination: Box::new(dest.clone()),
        events: numbered(4),
        fingerprint: fp("file one"),
    });
    assert!(unknown.contains("no job \"nope\""), "{unknown}");
    assert_eq!(
        seen.lock().expect("lock").values().sum::<usize>(),
        before,
        "the receiver got nothing more"
    );
}

fn outcome(
    kind: hookline::core::job::OutcomeKind,
    status: u16,
    attempts: u32,
    error: Option<&str>,
) -> hookline::core::job::Outcome {
    hookline::core::job::Outcome {
        request_no: 1,
        request: "POST http://127.0.0.1/x".into(),
        events: vec![],
        status: Some(status),
        attempts,
        outcome: kind,
        error: error.map(Into::into),
        latency_ms: 1.0,
        idempotency_key: "k".into(),
    }
}

/// The plan SQLite chooses for `sql`: it must search an index, never scan the table
/// or sort the job's rows (that would read the whole job for one page).
fn assert_paged_by_index(path: &std::path::Path, sql: &str) {
    let c = rusqlite::Connection::open(path).expect("sqlite");
    let mut st = c
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("plan");
    let plan: Vec<String> = st
        .query_map(rusqlite::params!["j", 0_i64, 10_i64], |r| {
            r.get::<_, String>(3)
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let text = plan.join(" | ");
    assert!(
        text.contains("USING INDEX") || text.contains("USING COVERING INDEX"),
        "{text}"
    );
    assert!(
        !text.contains("SCAN") && !text.contains("TEMP B-TREE"),
        "{text}"
    );
}

#[test]
fn a_page_of_a_100_000_event_job_reads_its_rows_by_range() {
    use hookline::core::job::{AttemptLog, EventState, JobLog, NewJob, OutcomeKind};
    const N: usize = 100_000;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("h.sqlite3");
    let h = History::open(&path).expect("history");
    let w = h.writer();
    drop(w.job_started(&NewJob {
        job: "j".into(),
        destination: "d".into(),
        destination_id: String::new(),
        source: "test".into(),
        total_events: N,
        fingerprint: hookline::core::job::JobFingerprint::default(),
    }));
    // Requests of 100 events: those ending in 3 fail (503, 2 attempts), the rest are
    // delivered; events 99 900.. stay pending; 500..599 are skipped.
    for start in (0..99_900).step_by(100) {
        let (ok, bad): (Vec<usize>, Vec<usize>) = (start..start + 100).partition(|i| i % 10 != 3);
        if (500..600).contains(&start) {
            drop(w.events_skipped("j", &(start..start + 100).collect::<Vec<_>>()));
            continue;
        }
        drop(w.events_done("j", &ok, &outcome(OutcomeKind::Delivered, 200, 1, None)));
        drop(w.events_done(
            "j",
            &bad,
            &outcome(OutcomeKind::Failed, 503, 2, Some("503 down")),
        ));
    }
    // A later resend delivers event 50 003: its latest state wins.
    drop(w.events_done(
        "j",
        &[50_003],
        &outcome(OutcomeKind::Delivered, 201, 1, None),
    ));
    for n in 0..N as u64 {
        w.attempt(AttemptLog {
            job: "j".into(),
            request_no: n / 2,
            attempt: u32::try_from(n % 2).expect("small") + 1,
            method: "POST".into(),
            url: format!("http://127.0.0.1/{n}"),
            request_headers: vec![],
            status: Some(200),
            response_headers: vec![],
            response_body: vec![],
            latency_ms: 1.0,
            error: None,
        });
    }
    w.flush().expect("flush");

    let page = h.job_events("j", 50_000, 10).expect("page");
    assert_eq!(
        page.iter().map(|r| r.index).collect::<Vec<_>>(),
        (50_000..50_010).collect::<Vec<_>>()
    );
    assert_eq!(page[0].state, EventState::Delivered);
    assert_eq!(
        (page[3].state, page[3].status, page[3].attempts),
        (EventState::Delivered, Some(201), 1),
        "resent later"
    );
    assert_eq!(
        h.job_events("j", 50_013, 1).expect("row"),
        [hookline::core::job::EventRow {
            index: 50_013,
            state: EventState::Failed,
            attempts: 2,
            status: Some(503),
            error: Some("503 down".into()),
        }]
    );
    let skipped = h.job_events("j", 550, 1).expect("row");
    assert_eq!(skipped[0].state, EventState::Skipped);
    let tail = h.job_events("j", 99_895, 200).expect("tail");
    assert_eq!(tail.len(), 105, "clipped at the job's end");
    assert!(tail[..5].iter().all(|r| r.state != EventState::Pending));
    assert!(
        tail[5..]
            .iter()
            .all(|r| r.state == EventState::Pending && r.attempts == 0)
    );
    assert!(h.job_events("j", N, 10).expect("past the end").is_empty());
    assert!(h.job_events("nope", 0, 10).is_err());

    let attempts = h.attempts_range("j", 70_000, 4).expect("attempts");
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.request_no, a.attempt))
            .collect::<Vec<_>>(),
        [(35_000, 1), (35_000, 2), (35_001, 1), (35_001, 2)]
    );
    assert_eq!(attempts[0].url, "http://127.0.0.1/70000");

    assert_paged_by_index(&path, hookline::store::history::JOB_EVENTS_PAGE_SQL);
    assert_paged_by_index(&path, hookline::store::history::ATTEMPTS_PAGE_SQL);
}

/// A small authorization server: `/authorize` sends the browser back to the
/// loopback callback with a code; `/token` counts requests and answers a token.
fn tiny_auth_server(tokens: &Arc<AtomicUsize>) -> common::Server {
    use axum::extract::RawQuery;
    use axum::response::IntoResponse;
    let t = tokens.clone();
    common::serve(
        Router::new()
            .route(
                "/authorize",
                axum::routing::get(|RawQuery(q): RawQuery| async move {
                    let p: HashMap<String, String> =
                        form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect();
                    let to = format!(
                        "{}?code=XYZ&state={}",
                        p.get("redirect_uri").cloned().unwrap_or_default(),
                        p.get("state").cloned().unwrap_or_default()
                    );
                    (StatusCode::FOUND, [("location", to)]).into_response()
                }),
            )
            .route(
                "/token",
                post(move || {
                    let n = t.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        (
                            [("content-type", "application/json")],
                            format!(
                                r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":3600,"refresh_token":"r-{n}"}}"#
                            ),
                        )
                            .into_response()
                    }
                }),
            ),
    )
}

/// Plays the browser on its own thread: follow the authorization URL to the callback.
fn play_browser(url: String) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let c = hookline::runtime::delivery::http_client(false).expect("client");
            let r = c.get(&url).send().await.expect("authorize");
            let loc = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("redirect")
                .to_owned();
            c.get(&loc).send().await.expect("callback");
        });
    });
}

#[test]
fn authorize_runs_through_the_runtime_and_a_renamed_destination_keeps_its_token() {
    use hookline::core::model::{Auth, ClientAuth, Destination};
    use hookline::runtime::{Command as Rt, Update};
    let tokens = Arc::new(AtomicUsize::new(0));
    let auth_srv = tiny_auth_server(&tokens);
    let seen_auth: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen_auth.clone();
    let hook = common::serve(Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap| {
            let s = s.clone();
            async move {
                let a = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                s.lock().expect("lock").push(a.to_owned());
                "ok"
            }
        }),
    ));
    let mut dest = common::fast(Destination::new("a", hook.url("/hook")));
    dest.id = uuid::Uuid::new_v4().to_string();
    dest.auth = Auth::Oauth2AuthorizationCode {
        authorize_url: auth_srv.url("/authorize"),
        token_url: auth_srv.url("/token"),
        client_id: "client".into(),
        client_secret: Some("cs".into()),
        scopes: vec!["events".into()],
        client_auth: ClientAuth::ClientSecretBasic,
        refresh_token_secret: "a-refresh".into(),
        redirect_port: 0,
    };
    let config =
        hookline::runtime::RuntimeConfig::new(hookline::core::secret::Secrets::memory(&[(
            "cs",
            "client-secret",
        )]));
    let (rt, updates) = hookline::runtime::Runtime::start(config, || {}).expect("runtime");
    assert!(rt.send(Rt::Authorize {
        destination: Box::new(dest.clone()),
        timeout: std::time::Duration::from_secs(20),
        open_browser: false,
    }));
    let mut url_seen = false;
    let authorized = loop {
        match updates
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("an update")
        {
            Update::AuthorizeUrl { destination, url } => {
                assert_eq!(destination, "a");
                assert!(url.starts_with(&auth_srv.url("/authorize")), "{url}");
                url_seen = true;
                play_browser(url);
            }
            Update::Authorized {
                destination,
                result,
            } => {
                assert_eq!(destination, "a");
                break result.expect("authorized");
            }
            _ => {}
        }
    };
    assert!(url_seen, "the URL is reported before the flow ends");
    assert_eq!(
        authorized,
        hookline::runtime::Authorized {
            expires_in: Some(std::time::Duration::from_hours(1)),
            refresh_token_stored: true,
        }
    );
    assert_eq!(tokens.load(Ordering::SeqCst), 1);

    // Renamed, same id: the cached token is used, no new token request.
    dest.name = "renamed".into();
    assert!(rt.send(Rt::Send {
        job: "j".into(),
        destination: Box::new(dest),
        events: numbered(1),
        only: None,
        source: "test".into(),
        resume: false,
        fingerprint: hookline::core::job::JobFingerprint::default(),
    }));
    let run = common::collect(&updates, std::time::Duration::from_secs(30));
    assert_eq!(run.stats.expect("stats").delivered, 1);
    assert_eq!(*seen_auth.lock().expect("lock"), ["Bearer tok-1"]);
    assert_eq!(
        tokens.load(Ordering::SeqCst),
        1,
        "the token cache follows the id"
    );
}

/// Post `n` requests to `addr` from a thread of its own; returns once all are answered.
fn post_n(addr: std::net::SocketAddr, n: usize) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let c = hookline::runtime::delivery::http_client(false).expect("client");
            for i in 0..n {
                c.post(format!("http://{addr}/in"))
                    .body(format!("{{\"i\":{i}}}"))
                    .send()
                    .await
                    .expect("answered");
            }
        });
    })
    .join()
    .expect("poster");
}

/// Start the receiver through the runtime, post `n` requests, stop it, and count
/// the `Captured` updates that arrived before `CaptureStopped`.
fn captured_through_the_runtime(record: bool, n: usize) -> usize {
    use hookline::runtime::{Command as Rt, Update};
    let config =
        hookline::runtime::RuntimeConfig::new(hookline::core::secret::Secrets::memory(&[]));
    let (rt, updates) = hookline::runtime::Runtime::start(config, || {}).expect("runtime");
    assert!(rt.send(Rt::StartCapture {
        config: hookline::capture::CaptureConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            record,
            ..hookline::capture::CaptureConfig::default()
        },
    }));
    let wait = std::time::Duration::from_secs(30);
    let addr = loop {
        match updates.recv_timeout(wait).expect("an update") {
            Update::CaptureStarted { addr } => break addr,
            Update::CaptureStopped { error } => panic!("did not start: {error:?}"),
            _ => {}
        }
    };
    post_n(addr, n);
    assert!(rt.send(Rt::StopCapture));
    let mut captured = 0;
    loop {
        match updates.recv_timeout(wait).expect("an update") {
            Update::Captured(_) => captured += 1,
            Update::CaptureStopped { error } => {
                assert!(error.is_none(), "{error:?}");
                return captured;
            }
            _ => {}
        }
    }
}

#[test]
fn stop_capture_reports_every_answered_request_before_capture_stopped() {
    assert_eq!(captured_through_the_runtime(true, 200), 200);
}

#[test]
fn a_capture_that_does_not_record_reports_no_captures() {
    assert_eq!(captured_through_the_runtime(false, 20), 0);
}
