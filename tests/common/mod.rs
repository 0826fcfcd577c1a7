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
            Ok(Update::JobFinished { result, .. }) => {
                match result {
                    Ok(s) => run.stats = Some(s),
                    Err(e) => run.error = Some(e),
                }
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
