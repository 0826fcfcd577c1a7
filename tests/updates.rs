//! Nothing blocks a frame (issue 6 §3): the secret resolver caches misses, secrets are
//! loaded and stored through the runtime, and the update feed is bounded and coalesced —
//! a consumer that never drains (a minimised window) costs flat memory and few wakes.
//! Real runtime, real HTTP sink (the built-in capture receiver, `record: false`) on
//! 127.0.0.1:0; secret stores are counting wrappers over the in-memory store.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{CountingSecrets, wait_for};
use hookline::capture::{self, CaptureConfig, ReceiverHandle};
use hookline::core::model::{Destination, HmacAlgorithm, SignatureEncoding, Signing};
use hookline::core::render::{RenderCtx, render_request};
use hookline::core::secret::{EnvSecrets, MemorySecrets, Secret, SecretSource, Secrets};
use hookline::runtime::delivery::{JobFingerprint, JobReport};
use hookline::runtime::feed::{FLUSH_INTERVAL, UpdateTx};
use hookline::runtime::stats::JobStats;
use hookline::runtime::{Command, Runtime, RuntimeConfig, Update};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(10);

fn header_secret_destination(secret: &str) -> Destination {
    let mut d = Destination::new("d", "https://example.com/hook");
    d.headers
        .insert("X-Api-Key".into(), format!("{{{{ secret('{secret}') }}}}"));
    d
}

fn signing_destination(secret: &str) -> Destination {
    let mut d = Destination::new("d", "https://example.com/hook");
    d.signing = Signing::Hmac {
        algorithm: HmacAlgorithm::Sha256,
        encoding: SignatureEncoding::Hex,
        header: "X-Signature".into(),
        prefix: String::new(),
        secret: secret.into(),
    };
    d
}

#[test]
fn rendering_with_a_missing_secret_asks_the_store_once_per_name_not_per_render() {
    let src = CountingSecrets::new(Arc::new(MemorySecrets::default()));
    let ctx = RenderCtx::new(Secrets::new(src.clone()));
    let event = json!({"type": "track", "event": "x"});
    for (dest, name) in [
        (header_secret_destination("api"), "api"),
        (signing_destination("sig"), "sig"),
    ] {
        for i in 0..1_000 {
            let e = render_request(&dest, &event, &ctx).expect_err("the secret is missing");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("secret `{name}` is not set")),
                "render {i}: {msg}"
            );
        }
        assert_eq!(
            src.gets(name),
            1,
            "store calls for `{name}` in 1 000 renders"
        );
    }
    assert_eq!(src.all_gets(), 2);
}

/// Every update's `Debug` text, for leak checks.
fn seen_text(seen: &Mutex<Vec<String>>) -> String {
    seen.lock().map(|s| s.join("\n")).unwrap_or_default()
}

#[test]
fn secrets_are_stored_deleted_and_loaded_through_the_runtime_and_the_cache_follows() {
    const VALUE: &str = "s3cr3t-value-9f1c";
    let mem = Arc::new(MemorySecrets::default());
    let src = CountingSecrets::new(mem.clone());
    let secrets = Secrets::new(src.clone());
    let (rt, updates) = common::start_runtime(secrets.clone());
    let seen = Mutex::new(Vec::new());
    let next = |want: &str| {
        wait_for(&updates, LIMIT, |u| {
            if let Ok(mut s) = seen.lock() {
                s.push(format!("{u:?}"));
            }
            let matched = matches!(
                (want, u),
                ("stored", Update::SecretStored { .. })
                    | ("deleted", Update::SecretDeleted { .. })
                    | ("status", Update::SecretStatus { .. })
            );
            matched.then(|| u.clone())
        })
    };

    // A preview before the secret exists: one store call, a clear message.
    let dest = header_secret_destination("tok");
    let event = json!({"type": "track"});
    let ctx = RenderCtx::new(secrets.clone());
    let e = render_request(&dest, &event, &ctx).expect_err("not set yet");
    assert!(e.to_string().contains("secret `tok` is not set"), "{e}");
    assert_eq!(src.gets("tok"), 1);

    assert!(rt.send(Command::SetSecret {
        name: "tok".into(),
        value: Secret::new(VALUE),
    }));
    let u = next("stored");
    assert!(
        matches!(&u, Update::SecretStored { name, result: Ok(()) } if name == "tok"),
        "{u:?}"
    );
    let u = next("status");
    assert!(
        matches!(&u, Update::SecretStatus { name, set: true } if name == "tok"),
        "{u:?}"
    );
    assert_eq!(src.sets(), 1, "stored in the store");
    assert_eq!(
        mem.get("tok").ok().flatten().map(|s| s.expose().to_owned()),
        Some(VALUE.to_owned())
    );
    // The next previews see it from the cache: no store call.
    for _ in 0..100 {
        let r = render_request(&dest, &event, &ctx)
            .expect("renders")
            .expect("not skipped");
        assert_eq!(r.header("X-Api-Key"), Some(VALUE));
    }
    assert_eq!(src.gets("tok"), 1, "no store read after SetSecret");

    assert!(rt.send(Command::DeleteSecret { name: "tok".into() }));
    let u = next("deleted");
    assert!(
        matches!(&u, Update::SecretDeleted { name, result: Ok(()) } if name == "tok"),
        "{u:?}"
    );
    let u = next("status");
    assert!(
        matches!(&u, Update::SecretStatus { set: false, .. }),
        "{u:?}"
    );
    let e = render_request(&dest, &event, &ctx).expect_err("deleted");
    assert!(e.to_string().contains("secret `tok` is not set"), "{e}");
    assert_eq!(src.gets("tok"), 1, "the delete is cached too");
    assert_eq!(mem.get("tok"), Ok(None));

    // Changed outside Hookline: LoadSecrets reads the store again (off this thread).
    mem.set("other", &Secret::new("o")).expect("set");
    // What a frame renders with never calls the store: "not loaded" until the runtime has read it.
    let ui = secrets.cache_only();
    let e = ui.get("other").expect_err("not loaded yet");
    assert!(
        e.to_string().contains("secret `other` is not loaded yet"),
        "{e}"
    );
    assert_eq!(src.gets("other"), 0);
    assert!(rt.send(Command::LoadSecrets {
        names: vec!["tok".into(), "other".into()],
    }));
    let mut statuses = vec![next("status"), next("status")];
    statuses.sort_by_key(|u| format!("{u:?}"));
    assert!(
        matches!(&statuses[0], Update::SecretStatus { name, set: true } if name == "other"),
        "{statuses:?}"
    );
    assert!(
        matches!(&statuses[1], Update::SecretStatus { name, set: false } if name == "tok"),
        "{statuses:?}"
    );
    assert_eq!((src.gets("tok"), src.gets("other")), (2, 1));
    assert!(matches!(secrets.cached("other"), Some(Ok(Some(_)))));
    assert_eq!(
        ui.get("other").map(|v| v.expose().to_owned()),
        Ok("o".into())
    );
    assert_eq!(src.gets("other"), 1);
    assert!(
        !seen_text(&seen).contains(VALUE),
        "an update showed the value"
    );
}

#[test]
fn a_store_that_cannot_write_answers_with_an_error_and_no_value() {
    let secrets = Secrets::new(Arc::new(EnvSecrets));
    let (rt, updates) = common::start_runtime(secrets.clone());
    assert!(rt.send(Command::SetSecret {
        name: "ro".into(),
        value: Secret::new("never-shown-7731"),
    }));
    let result = wait_for(&updates, LIMIT, |u| match u {
        Update::SecretStored { name, result } if name == "ro" => Some(result.clone()),
        _ => None,
    });
    let e = result.expect_err("the environment is read-only");
    assert!(e.contains("read-only") && e.contains("ro"), "{e}");
    assert!(!e.contains("never-shown-7731"), "{e}");
    assert!(
        secrets.cached("ro").is_none(),
        "a failed store caches nothing"
    );
}

#[test]
fn an_error_about_a_job_names_the_job() {
    let (rt, updates) = common::start_runtime(Secrets::memory(&[]));
    assert!(rt.send(Command::Pause { job: "nope".into() }));
    let (job, message) = wait_for(&updates, LIMIT, |u| match u {
        Update::Error { job, message } => Some((job.clone(), message.clone())),
        _ => None,
    });
    assert_eq!(job.as_deref(), Some("nope"));
    assert!(message.contains("nope"), "{message}");
}

/// A bare HTTP sink on 127.0.0.1:0 (answers 200, keeps only counters).
fn sink() -> (tokio::runtime::Runtime, ReceiverHandle) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("sink runtime");
    let config = CaptureConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        record: false,
        ..CaptureConfig::default()
    };
    let h = rt
        .block_on(capture::start(config, None, None))
        .expect("sink starts");
    (rt, h)
}

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

struct Flood {
    rt: Runtime,
    updates: std::sync::mpsc::Receiver<Update>,
    wakes: Arc<AtomicU64>,
    started: Instant,
}

fn flood(n: usize, capacity: usize, sink: &ReceiverHandle) -> Flood {
    let wakes = Arc::new(AtomicU64::new(0));
    let w = wakes.clone();
    let mut config = RuntimeConfig::new(Secrets::memory(&[]));
    config.update_capacity = capacity;
    let (rt, updates) = Runtime::start(config, move || {
        w.fetch_add(1, Ordering::Relaxed);
    })
    .expect("runtime");
    let mut dest = Destination::new("flood", format!("http://{}/in", sink.addr()));
    dest.delivery.concurrency = 32;
    let events: Vec<_> = (0..n).map(|i| json!({"type": "track", "i": i})).collect();
    let started = Instant::now();
    assert!(rt.send(Command::Send {
        job: "flood".into(),
        destination: Box::new(dest),
        events: Arc::new(events.into()),
        only: None,
        source: "test".into(),
        resume: false,
        fingerprint: JobFingerprint::default(),
    }));
    Flood {
        rt,
        updates,
        wakes,
        started,
    }
}

/// What a drained feed said about one job.
#[derive(Default, Debug)]
struct Seen {
    updates: usize,
    outcomes: usize,
    outcome_batches: usize,
    progress: usize,
    dropped: u64,
    stats: Option<JobStats>,
}

impl Seen {
    fn take(&mut self, u: Update) -> bool {
        self.updates += 1;
        match u {
            Update::Outcomes { outcomes, .. } => {
                self.outcomes += outcomes.len();
                self.outcome_batches += 1;
            }
            Update::Progress { .. } => self.progress += 1,
            Update::Dropped { outcomes, .. } => self.dropped = outcomes,
            Update::JobFinished { end, .. } => {
                self.stats = Some(end.stats().cloned().expect("the job ran"));
                return true;
            }
            _ => {}
        }
        false
    }
}

#[test]
fn an_undrained_feed_stays_bounded_and_counts_what_it_left_out() {
    const N: usize = 50_000;
    const CAPACITY: usize = 64;
    let (_sink_rt, sink) = sink();
    let rss_before = rss_kb("VmRSS:");
    let f = flood(N, CAPACITY, &sink);
    // Nobody drains until the sink has answered every request and the job has ended.
    let deadline = Instant::now() + Duration::from_mins(3);
    while sink.counters().received.load(Ordering::Relaxed) < N as u64 {
        assert!(
            Instant::now() < deadline,
            "the sink got {} of {N} requests",
            sink.counters().received.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let secs = f.started.elapsed().as_secs_f64();
    let wakes = f.wakes.load(Ordering::Relaxed);
    let rss_after = rss_kb("VmRSS:");
    let mut seen = Seen::default();
    let mut queued = 0usize;
    let mut finished = false;
    while let Ok(u) = f.updates.try_recv() {
        queued += 1;
        finished |= seen.take(u);
    }
    while !finished {
        let u = f.updates.recv_timeout(LIMIT).expect("the job ends");
        finished = seen.take(u);
    }
    let feed = f.rt.feed_stats();
    println!(
        "flood: {N} requests in {secs:.2} s; queued {queued} updates ({} in all), {} outcomes shown, {} dropped; waker {wakes}x; RSS {} -> {} kB (+{} kB), peak {} kB; {feed:?}",
        seen.updates,
        seen.outcomes,
        seen.dropped,
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before),
        rss_kb("VmHWM:"),
    );
    let stats = seen.stats.as_ref().expect("finished");
    assert_eq!(stats.delivered, N as u64, "the job's stats stay complete");
    // The channel's capacity, plus the few updates that are never dropped (the job's
    // end and its drop count) moved in as the drain made room.
    assert!(queued <= CAPACITY + 8, "{queued} updates queued");
    assert!(
        seen.updates <= CAPACITY + 8,
        "{} updates in all",
        seen.updates
    );
    assert!(
        seen.dropped > 0,
        "a {CAPACITY}-update feed must have dropped"
    );
    assert_eq!(
        seen.outcomes as u64 + seen.dropped,
        N as u64,
        "every outcome is shown or counted as dropped"
    );
    assert_eq!(feed.dropped_outcomes, seen.dropped);
    assert!(
        (wakes as f64) <= 40.0 * secs + 10.0,
        "{wakes} wakes in {secs:.2} s"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 200 * 1024,
        "RSS grew by {} kB",
        rss_after.saturating_sub(rss_before)
    );
}

#[test]
fn a_drained_feed_batches_outcomes_and_paces_progress_and_wakes() {
    const N: usize = 20_000;
    let (_sink_rt, sink) = sink();
    let f = flood(N, 256, &sink);
    let mut seen = Seen::default();
    loop {
        let u = f
            .updates
            .recv_timeout(Duration::from_mins(2))
            .expect("update");
        if seen.take(u) {
            break;
        }
    }
    let secs = f.started.elapsed().as_secs_f64();
    let wakes = f.wakes.load(Ordering::Relaxed);
    println!("drained: {N} requests in {secs:.2} s; {seen:?}; waker {wakes}x");
    assert_eq!(seen.dropped, 0, "a drained feed drops nothing");
    assert_eq!(seen.outcomes, N, "every outcome arrives");
    let ticks = secs / FLUSH_INTERVAL.as_secs_f64();
    assert!(
        (seen.outcome_batches as f64) <= ticks + (N / 512) as f64 + 3.0,
        "{} outcome batches in {secs:.2} s",
        seen.outcome_batches
    );
    assert!(
        (seen.progress as f64) <= ticks + 2.0,
        "{} progress updates in {secs:.2} s",
        seen.progress
    );
    assert!(
        (wakes as f64) <= 40.0 * secs + 10.0,
        "{wakes} wakes in {secs:.2} s"
    );
}

#[test]
fn progress_is_coalesced_per_job_the_latest_wins_and_a_wake_follows_the_last_update() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let wakes = Arc::new(AtomicU64::new(0));
    let last_wake = Arc::new(Mutex::new(None::<Instant>));
    let (w, lw) = (wakes.clone(), last_wake.clone());
    let (tx, rx) = UpdateTx::new(
        256,
        Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut l) = lw.lock() {
                *l = Some(Instant::now());
            }
        }),
    );
    rt.spawn(tx.clone().run_flusher());
    // A frame every ~8 ms drains the feed, as a GUI would.
    let consumer = std::thread::spawn(move || {
        let mut got: Vec<Update> = Vec::new();
        let quiet_since = Instant::now();
        let mut last = quiet_since;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && last.elapsed() < Duration::from_millis(400) {
            while let Ok(u) = rx.try_recv() {
                got.push(u);
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(8));
        }
        got
    });
    let started = Instant::now();
    let mut i = 0u64;
    let mut errors = 0usize;
    while started.elapsed() < Duration::from_secs(1) {
        for job in ["a", "b"] {
            let stats = JobStats {
                sent: i,
                ..JobStats::default()
            };
            tx.progress(job, &stats);
        }
        if i.is_multiple_of(1_000) {
            tx.render_error("a", usize::try_from(i).unwrap_or(usize::MAX), "bad");
            errors += 1;
        }
        i += 1;
    }
    let ended = Instant::now();
    let secs = ended.duration_since(started).as_secs_f64() + 0.1;
    let got = consumer.join().expect("consumer");
    let progress = |job: &str| -> Vec<u64> {
        got.iter()
            .filter_map(|u| match u {
                Update::Progress { job: j, stats } if j == job => Some(stats.sent),
                _ => None,
            })
            .collect()
    };
    let (a, b) = (progress("a"), progress("b"));
    let render_errors = got
        .iter()
        .filter(|u| matches!(u, Update::RenderError { .. }))
        .count();
    let wakes = wakes.load(Ordering::Relaxed);
    println!(
        "{i} progress calls per job in {secs:.2} s -> {} / {} updates; {render_errors} of {errors} render errors; waker {wakes}x",
        a.len(),
        b.len()
    );
    let per_job_cap = secs * 30.5 + 2.0;
    assert!((a.len() as f64) <= per_job_cap, "job a: {}", a.len());
    assert!((b.len() as f64) <= per_job_cap, "job b: {}", b.len());
    assert_eq!(a.last(), Some(&(i - 1)), "the latest progress arrives last");
    assert_eq!(b.last(), Some(&(i - 1)));
    assert!(a.windows(2).all(|w| w[0] < w[1]), "progress goes forward");
    assert_eq!(render_errors, errors, "a drained feed drops nothing");
    assert!(
        (wakes as f64) <= 40.0 * secs + 10.0,
        "{wakes} wakes in {secs:.2} s"
    );
    let last_wake = last_wake.lock().ok().and_then(|l| *l).expect("woken");
    assert!(
        last_wake >= ended,
        "the waker was not called after the last update"
    );
    rt.shutdown_background();
}

/// A keyring that takes its time on every read (a D-Bus round trip gone slow).
struct SlowStore {
    inner: MemorySecrets,
    delay: Duration,
    /// Set when a read starts.
    reading: std::sync::atomic::AtomicBool,
}

impl SecretSource for SlowStore {
    fn get(&self, name: &str) -> Result<Option<Secret>, hookline::core::secret::SecretError> {
        self.reading.store(true, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        self.inner.get(name)
    }
    fn set(&self, name: &str, value: &Secret) -> Result<(), hookline::core::secret::SecretError> {
        self.inner.set(name, value)
    }
    fn delete(&self, name: &str) -> Result<(), hookline::core::secret::SecretError> {
        self.inner.delete(name)
    }
    fn describe(&self) -> String {
        "slow".into()
    }
}

#[test]
fn a_slow_keyring_never_stalls_the_runtime_workers() {
    let (_sink_rt, sink) = sink();
    let slow = Arc::new(SlowStore {
        inner: MemorySecrets::with(&[("slow", "v")]),
        delay: Duration::from_millis(1_500),
        reading: std::sync::atomic::AtomicBool::new(false),
    });
    let src = CountingSecrets::new(slow.clone());
    let mut config = RuntimeConfig::new(Secrets::new(src.clone()));
    config.worker_threads = 1;
    let (rt, updates) = Runtime::start(config, || {}).expect("runtime");
    let mut dest = header_secret_destination("slow");
    dest.url = format!("http://{}/in", sink.addr());
    let events: Vec<_> = (0..3).map(|i| json!({"type": "track", "i": i})).collect();
    assert!(rt.send(Command::Send {
        job: "j".into(),
        destination: Box::new(dest),
        events: Arc::new(events.into()),
        only: None,
        source: "test".into(),
        resume: false,
        fingerprint: JobFingerprint::default(),
    }));
    // While the job's secret is being read, the (single) worker still answers.
    let deadline = Instant::now() + LIMIT;
    while !slow.reading.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the job never read its secret");
        std::thread::sleep(Duration::from_millis(5));
    }
    let asked = Instant::now();
    assert!(rt.send(Command::SetSecret {
        name: "other".into(),
        value: Secret::new("o"),
    }));
    // Both answers, in whichever order they come.
    let (mut took, mut stats) = (None, None);
    let deadline = Instant::now() + Duration::from_mins(1);
    while took.is_none() || stats.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match updates
            .recv_timeout(left)
            .expect("SecretStored and JobFinished")
        {
            Update::SecretStored { name, .. } if name == "other" => took = Some(asked.elapsed()),
            Update::JobFinished { end, .. } => {
                stats = Some(end.stats().cloned().expect("the job ran"));
            }
            _ => {}
        }
    }
    let (took, stats) = (took.unwrap_or_default(), stats.unwrap_or_default());
    println!("SetSecret answered in {took:?} while the job read a 1.5 s keyring");
    assert!(
        took < Duration::from_secs(1),
        "a worker waited on the keyring: SetSecret took {took:?}"
    );
    assert_eq!(stats.delivered, 3);
    assert_eq!(src.gets("slow"), 1, "read once, before rendering");
}

#[test]
fn nothing_about_a_job_follows_its_end_and_its_reports_come_before_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (tx, rx) = UpdateTx::new(64, Arc::new(|| {}));
    rt.spawn(tx.clone().run_flusher());
    let stats = |sent| JobStats {
        sent,
        ..JobStats::default()
    };
    tx.send(Update::JobStarted {
        job: "j".into(),
        events: 1,
    });
    tx.render_error("j", 0, "bad");
    tx.progress("j", &stats(1));
    tx.send(Update::JobFinished {
        job: "j".into(),
        end: hookline::runtime::JobEnd::Done(stats(1)),
    });
    // A progress tick racing the job's end.
    tx.progress("j", &stats(2));
    std::thread::sleep(FLUSH_INTERVAL * 4);
    let got: Vec<Update> = rx.try_iter().collect();
    let kinds: Vec<&str> = got
        .iter()
        .map(|u| match u {
            Update::JobStarted { .. } => "started",
            Update::RenderError { .. } => "render_error",
            Update::Progress { .. } => "progress",
            Update::JobFinished { .. } => "finished",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["started", "render_error", "progress", "finished"]);
    // The same name started again reports again.
    tx.send(Update::JobStarted {
        job: "j".into(),
        events: 1,
    });
    tx.progress("j", &stats(3));
    std::thread::sleep(FLUSH_INTERVAL * 4);
    let got: Vec<Update> = rx.try_iter().collect();
    assert!(
        matches!(got.last(), Some(Update::Progress { stats, .. }) if stats.sent == 3),
        "{got:?}"
    );
    rt.shutdown_background();
}

#[test]
fn captures_left_undrained_are_dropped_from_the_feed_and_counted() {
    const N: usize = 2_000;
    const CAPACITY: usize = 16;
    // Runtime A runs the capture receiver; nobody drains its feed while it receives.
    let mut config = RuntimeConfig::new(Secrets::memory(&[]));
    config.update_capacity = CAPACITY;
    let (a, a_updates) = Runtime::start(config, || {}).expect("runtime");
    assert!(a.send(Command::StartCapture {
        config: CaptureConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..CaptureConfig::default()
        },
    }));
    let addr = wait_for(&a_updates, LIMIT, |u| match u {
        Update::CaptureStarted { addr } => Some(*addr),
        Update::CaptureStopped { error } => panic!("capture failed: {error:?}"),
        _ => None,
    });
    // Runtime B sends to it and is drained; once its job ends, every capture was made.
    let mut dest = Destination::new("to-capture", format!("http://{addr}/in"));
    dest.delivery.concurrency = 16;
    let events: Vec<_> = (0..N).map(|i| json!({"type": "track", "i": i})).collect();
    let run = common::run_job(dest, events, Secrets::memory(&[]), Duration::from_mins(2));
    assert_eq!(run.stats.as_ref().map(|s| s.delivered), Some(N as u64));
    std::thread::sleep(Duration::from_millis(300));
    let (mut captured, mut dropped, mut updates) = (0u64, 0u64, 0usize);
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(300) {
        if let Ok(u) = a_updates.recv_timeout(Duration::from_millis(50)) {
            updates += 1;
            quiet_since = Instant::now();
            match u {
                Update::Captured(_) => captured += 1,
                Update::CapturesDropped { captures } => dropped = captures,
                _ => {}
            }
        }
    }
    println!("{N} captures: {captured} in the feed, {dropped} dropped, {updates} updates");
    assert!(
        dropped > 0,
        "a {CAPACITY}-update feed must have dropped captures"
    );
    assert_eq!(
        captured + dropped,
        N as u64,
        "every capture shown or counted"
    );
    assert!(updates <= CAPACITY + 8, "{updates} updates were queued");
}
