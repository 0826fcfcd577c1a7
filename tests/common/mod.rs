//! Shared test plumbing: a tokio runtime on its own thread serving axum routers on
//! 127.0.0.1:0, and helpers to run a job through the real runtime.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookline::core::model::Destination;
use hookline::core::secret::Secrets;
use hookline::runtime::delivery::{JobFingerprint, Outcome};
use hookline::runtime::stats::JobStats;
use hookline::runtime::{Command, Runtime, RuntimeConfig, Update};
use serde_json::Value;

/// A server on its own runtime; stopped when dropped (also inside async tests).
pub struct Server {
    pub addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

pub fn serve(router: axum::Router) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let addr = std_listener.local_addr().expect("addr");
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
        let _ = axum::serve(listener, router).await;
    });
    Server { addr, rt: Some(rt) }
}

/// Everything a job reported.
#[derive(Debug, Default)]
pub struct JobRun {
    pub outcomes: Vec<Outcome>,
    pub retries: Vec<(u64, u32, Duration, String)>,
    pub render_errors: Vec<(usize, String)>,
    pub stats: Option<JobStats>,
    pub error: Option<String>,
    /// Outcomes the feed left out (the consumer was too slow); 0 in a drained run.
    pub dropped: u64,
    /// How the job ended.
    pub end: Option<hookline::runtime::JobEnd>,
}

pub fn start_runtime(secrets: Secrets) -> (Runtime, std::sync::mpsc::Receiver<Update>) {
    Runtime::start(RuntimeConfig::new(secrets), || {}).expect("runtime starts")
}

/// Send `events` through `dest` and collect every update until the job finishes.
pub fn run_job(dest: Destination, events: Vec<Value>, secrets: Secrets, limit: Duration) -> JobRun {
    let (rt, updates) = start_runtime(secrets);
    assert!(rt.send(Command::Send {
        job: "j1".into(),
        destination: Box::new(dest),
        events: Arc::new(events.into()),
        only: None,
        source: "test".into(),
        resume: false,
        fingerprint: JobFingerprint::default(),
    }));
    collect(&updates, limit)
}

pub fn collect(updates: &std::sync::mpsc::Receiver<Update>, limit: Duration) -> JobRun {
    let deadline = Instant::now() + limit;
    let mut run = JobRun::default();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "job did not finish within {limit:?}: {} outcomes so far",
            run.outcomes.len()
        );
        match updates.recv_timeout(left) {
            Ok(Update::Outcomes { outcomes, .. }) => run.outcomes.extend(outcomes),
            Ok(Update::Dropped { outcomes, .. }) => run.dropped = outcomes,
            Ok(Update::Retrying {
                request_no,
                attempt,
                wait,
                reason,
                ..
            }) => run.retries.push((request_no, attempt, wait, reason)),
            Ok(Update::RenderError { index, error, .. }) => run.render_errors.push((index, error)),
            Ok(Update::JobFinished { end, .. }) => {
                run.stats = end.stats().cloned();
                run.error = end.error().map(str::to_owned);
                run.end = Some(end);
                return run;
            }
            Ok(_) => {}
            Err(e) => panic!("no update: {e}"),
        }
    }
}

/// A fast retry policy so tests run in milliseconds.
pub fn fast(mut d: Destination) -> Destination {
    d.delivery.backoff_initial_ms = 5;
    d.delivery.backoff_max_ms = 20;
    d.delivery.timeout_ms = 5_000;
    d
}

/// A secret source that counts its calls, over any other source (memory, keyring): how
/// tests prove a render or a runtime command did not reach the store.
pub struct CountingSecrets {
    inner: Arc<dyn hookline::core::secret::SecretSource>,
    gets: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    sets: std::sync::atomic::AtomicUsize,
}

impl CountingSecrets {
    pub fn new(inner: Arc<dyn hookline::core::secret::SecretSource>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            gets: std::sync::Mutex::default(),
            sets: std::sync::atomic::AtomicUsize::new(0),
        })
    }
    /// `get` calls for `name` so far.
    pub fn gets(&self, name: &str) -> usize {
        self.gets
            .lock()
            .map_or(usize::MAX, |g| g.get(name).copied().unwrap_or(0))
    }
    /// `get` calls for any name so far.
    pub fn all_gets(&self) -> usize {
        self.gets.lock().map_or(usize::MAX, |g| g.values().sum())
    }
    pub fn sets(&self) -> usize {
        self.sets.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl hookline::core::secret::SecretSource for CountingSecrets {
    fn get(
        &self,
        name: &str,
    ) -> Result<Option<hookline::core::secret::Secret>, hookline::core::secret::SecretError> {
        if let Ok(mut g) = self.gets.lock() {
            *g.entry(name.to_owned()).or_default() += 1;
        }
        self.inner.get(name)
    }
    fn set(
        &self,
        name: &str,
        value: &hookline::core::secret::Secret,
    ) -> Result<(), hookline::core::secret::SecretError> {
        self.sets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.set(name, value)
    }
    fn delete(&self, name: &str) -> Result<(), hookline::core::secret::SecretError> {
        self.inner.delete(name)
    }
    fn describe(&self) -> String {
        format!("counting {}", self.inner.describe())
    }
}

/// Wait (bounded) for the first update `pick` accepts; panics with what came instead.
pub fn wait_for<T>(
    updates: &std::sync::mpsc::Receiver<Update>,
    limit: Duration,
    mut pick: impl FnMut(&Update) -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match updates.recv_timeout(left) {
            Ok(u) => {
                if let Some(t) = pick(&u) {
                    return t;
                }
                seen.push(format!("{u:?}"));
            }
            Err(e) => panic!("no matching update within {limit:?} ({e}); got {seen:?}"),
        }
    }
}
