//! Job, attempt, outcome and capture records: what the runtime produces, the store
//! keeps and the app shows. They live in the core so `store` and `ui` need nothing
//! from `runtime` or `capture` to read them.

use std::future::Future;
use std::pin::Pin;

use serde_json::{Value, json};

use super::model::Destination;

/// Resolves once what was logged is durable (committed to the history), or with the
/// reason it is not (the message names the database). A job holds a request's
/// concurrency slot until its outcome's commit resolves, so a `kill -9` can lose at
/// most the requests in flight, and a failed write stops the job.
pub type Commit = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A commit that is already done (logs that record nothing).
pub fn committed() -> Commit {
    Box::pin(std::future::ready(Ok(())))
}

/// What identifies a job's input, so a resume can refuse a different one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFingerprint {
    /// A fingerprint of the events file's bytes, when the events came from a file
    /// (the CLI records `xxh3-blocks:<hex>`; jobs recorded before, the SHA-256 hex).
    pub events_digest: Option<String>,
    /// SHA-256 (hex) of the destination's settings (see [`destination_digest`]).
    pub destination_sha256: Option<String>,
}

/// A new job, as recorded when it starts.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job: String,
    pub destination: String,
    /// The destination's stable id (empty when it has none): a renamed destination
    /// keeps its jobs.
    pub destination_id: String,
    pub source: String,
    pub total_events: usize,
    pub fingerprint: JobFingerprint,
}

/// SHA-256 (hex) of the destination's JSON without its id, name and delivery policy:
/// what decides the bytes sent. Concurrency, rate, retries and timeouts may change
/// between a run and its resume; URL, headers, auth, body or mapping may not.
pub fn destination_digest(d: &Destination) -> String {
    use sha2::Digest as _;
    // Without its id (an empty id is not written), so the digest is the one recorded
    // before destinations had ids and a resume of such a job still matches.
    let mut v = if d.id.is_empty() {
        serde_json::to_value(d)
    } else {
        let mut d = d.clone();
        d.id.clear();
        serde_json::to_value(&d)
    }
    .unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("name");
        o.remove("delivery");
    }
    hex::encode(sha2::Sha256::digest(v.to_string().as_bytes()))
}

/// Where a job records what happened (the `SQLite` history, or nowhere). Every record
/// that a resume depends on returns a [`Commit`] the job awaits.
pub trait JobLog: Send + Sync {
    fn job_started(&self, job: &NewJob) -> Commit;
    /// An existing job runs again (`--resume`): it is `running` once more.
    fn job_resumed(&self, job: &str) -> Commit;
    fn attempt(&self, a: AttemptLog);
    /// Whether [`attempt`](Self::attempt) records anything: when not, the job does
    /// not build the (redacted) attempt records at all.
    fn wants_attempts(&self) -> bool {
        true
    }
    /// The events of one request reached a final state.
    fn events_done(&self, job: &str, events: &[usize], outcome: &Outcome) -> Commit;
    /// Several requests' outcomes at once (each for its own `events`), one commit for
    /// all: what a busy job records. Cancelled outcomes are not recorded.
    fn events_done_many(&self, job: &str, outcomes: &[&Outcome]) -> Commit {
        let commits: Vec<Commit> = outcomes
            .iter()
            .map(|o| self.events_done(job, &o.events, o))
            .collect();
        Box::pin(async move {
            for c in commits {
                c.await?;
            }
            Ok(())
        })
    }
    /// Events that need no request (skipped by the trigger): final, never re-sent.
    fn events_skipped(&self, job: &str, events: &[usize]) -> Commit;
    fn job_finished(&self, job: &str, state: &str) -> Commit;
    /// The job is alive (called every few seconds), so a crashed job can be told
    /// from a running one.
    fn heartbeat(&self, _job: &str) {}
}

/// Records nothing: `--no-history`.
pub struct NoLog;

impl JobLog for NoLog {
    fn job_started(&self, _: &NewJob) -> Commit {
        committed()
    }
    fn job_resumed(&self, _: &str) -> Commit {
        committed()
    }
    fn attempt(&self, _: AttemptLog) {}
    fn wants_attempts(&self) -> bool {
        false
    }
    fn events_done(&self, _: &str, _: &[usize], _: &Outcome) -> Commit {
        committed()
    }
    fn events_skipped(&self, _: &str, _: &[usize]) -> Commit {
        committed()
    }
    fn job_finished(&self, _: &str, _: &str) -> Commit {
        committed()
    }
}

/// One attempt, with secrets already redacted.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    pub job: String,
    pub request_no: u64,
    pub attempt: u32,
    pub method: String,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    pub status: Option<u16>,
    pub response_headers: Vec<(String, String)>,
    pub response_body: Vec<u8>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// The final state of one request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    Delivered,
    Failed,
    /// The job was cancelled before this request finished; its events stay pending.
    Cancelled,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub request_no: u64,
    /// `METHOD URL`, secrets redacted.
    pub request: String,
    pub events: Vec<usize>,
    pub status: Option<u16>,
    pub attempts: u32,
    pub outcome: OutcomeKind,
    pub error: Option<String>,
    pub latency_ms: f64,
    pub idempotency_key: String,
}

/// A `/collect` route's parts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Collect {
    pub event_type: String,
    pub source_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// One received request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub id: u64,
    pub at: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `Some(valid)` when a verify secret is configured.
    pub signature: Option<bool>,
    pub collect: Option<Collect>,
    /// What the receiver answered (an injected fault, or 200).
    pub status: u16,
}

impl Capture {
    /// The capture as a JSON line: the body as text, or base64 when it is not UTF-8.
    pub fn to_json(&self) -> Value {
        let (body, encoding) = if let Ok(s) = std::str::from_utf8(&self.body) {
            (Value::from(s), "utf8")
        } else {
            use base64::Engine as _;
            (
                Value::from(base64::engine::general_purpose::STANDARD.encode(&self.body)),
                "base64",
            )
        };
        json!({
            "id": self.id, "at": self.at, "method": self.method, "path": self.path, "query": self.query,
            "headers": self.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
            "body": body, "body_encoding": encoding, "signature": self.signature.map(|v| if v { "valid" } else { "invalid" }),
            "collect": self.collect, "status": self.status,
        })
    }
}

/// Where one event of a job stands, by its latest state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// Never sent, or its request had not finished when the job stopped.
    Pending,
    Delivered,
    Failed,
    /// Did not match the destination's trigger: final, never sent.
    Skipped,
}

/// One row of a job's event table (what the app shows for event `index`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventRow {
    pub index: usize,
    pub state: EventState,
    /// Attempts of the request that decided the state (0 when pending).
    pub attempts: u32,
    /// The last HTTP status of that request, if it got one.
    pub status: Option<u16>,
    pub error: Option<String>,
}
