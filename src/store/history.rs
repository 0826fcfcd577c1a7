//! The history: a `SQLite` database (WAL) in the user's data directory holding jobs,
//! the final state of their events, every delivery attempt (secrets already
//! redacted by the caller), and captures. Writes go through one writer thread that
//! commits whatever is queued in a single transaction (group commit), so recording
//! never slows sending; a committed transaction survives the process being killed,
//! which is what lets an interrupted job resume.
//!
//! Event states are stored as index ranges (`first..=last`), one row per request for
//! a contiguous batch, so a batched job at a million events per second writes
//! thousands of rows, not millions.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use crate::runtime::delivery::{AttemptLog, JobLog, Outcome, OutcomeKind};

/// Response bodies are kept up to this size.
pub const MAX_BODY: usize = 64 * 1024;

const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("history: {0}")]
    Other(String),
}

/// A captured request, as the capture receiver records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRecord {
    pub at: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `Some(true)` valid, `Some(false)` invalid, `None` not checked.
    pub signature: Option<bool>,
}

/// What the writer thread is asked to do.
enum Record {
    JobCreated {
        job: String,
        destination: String,
        source: String,
        total: usize,
    },
    Events {
        job: String,
        ranges: Vec<(usize, usize)>,
        state: &'static str,
        attempts: u32,
        status: Option<u16>,
        error: Option<String>,
    },
    Attempt(Box<AttemptLog>),
    Capture(Box<CaptureRecord>),
    JobFinished {
        job: String,
        state: String,
    },
    Flush(mpsc::SyncSender<()>),
}

/// Queues records for the writer thread. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct HistoryWriter {
    tx: mpsc::Sender<Record>,
    error: Arc<Mutex<Option<String>>>,
}

/// The history database: a writer thread plus a read connection.
pub struct History {
    path: PathBuf,
    writer: HistoryWriter,
    reader: Mutex<Connection>,
}

fn open_conn(path: &Path) -> Result<Connection, HistoryError> {
    let err = |source| HistoryError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let c = Connection::open(path).map_err(err)?;
    c.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err)?;
    c.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    // NORMAL in WAL mode: a commit survives the process dying; only an OS crash can lose the last ones.
    c.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    Ok(c)
}

fn migrate(c: &Connection, path: &Path) -> Result<(), HistoryError> {
    let err = |source| HistoryError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if v > SCHEMA_VERSION {
        return Err(HistoryError::Other(format!(
            "{} was written by a newer Hookline (schema {v})",
            path.display()
        )));
    }
    if v < 1 {
        c.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS jobs(
                id TEXT PRIMARY KEY, destination TEXT NOT NULL, source TEXT NOT NULL,
                total_events INTEGER NOT NULL, created_at TEXT NOT NULL, finished_at TEXT, state TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS job_events(
                job_id TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL, state TEXT NOT NULL,
                attempts INTEGER NOT NULL, status INTEGER, error TEXT, at TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS job_events_job ON job_events(job_id, first);
             CREATE TABLE IF NOT EXISTS attempts(
                id INTEGER PRIMARY KEY, job_id TEXT NOT NULL, request_no INTEGER NOT NULL, attempt INTEGER NOT NULL,
                at TEXT NOT NULL, method TEXT NOT NULL, url TEXT NOT NULL, request_headers TEXT NOT NULL,
                status INTEGER, response_headers TEXT NOT NULL, response_body BLOB NOT NULL, latency_ms REAL NOT NULL, error TEXT);
             CREATE INDEX IF NOT EXISTS attempts_job ON attempts(job_id, request_no);
             CREATE TABLE IF NOT EXISTS captures(
                id INTEGER PRIMARY KEY, at TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, query TEXT NOT NULL,
                headers TEXT NOT NULL, body BLOB NOT NULL, signature TEXT);
             PRAGMA user_version = 1;
             COMMIT;",
        )
        .map_err(err)?;
    }
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Maximal runs of consecutive indices: `[1,2,3,7]` → `[(1,3),(7,7)]`.
pub fn ranges(idx: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &i in idx {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => out.push((i, i)),
        }
    }
    out
}

impl History {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                HistoryError::Other(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let write = open_conn(path)?;
        migrate(&write, path)?;
        let reader = open_conn(path)?;
        let (tx, rx) = mpsc::channel();
        let error = Arc::new(Mutex::new(None));
        let (err2, p2) = (error.clone(), path.to_path_buf());
        std::thread::Builder::new()
            .name("hookline-history".into())
            .spawn(move || writer_loop(write, &rx, &err2, &p2))
            .map_err(|e| HistoryError::Other(format!("cannot start the history writer: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: HistoryWriter { tx, error },
            reader: Mutex::new(reader),
        })
    }

    /// `history.sqlite3` in the user's data directory.
    pub fn default_path() -> Result<PathBuf, HistoryError> {
        directories::ProjectDirs::from("dev", "hookline", "Hookline")
            .map(|d| d.data_dir().join("history.sqlite3"))
            .ok_or_else(|| {
                HistoryError::Other(
                    "no home directory to keep the history in (use --history FILE)".into(),
                )
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn writer(&self) -> HistoryWriter {
        self.writer.clone()
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, HistoryError> {
        let c = self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&c).map_err(|source| HistoryError::Sqlite {
            path: self.path.display().to_string(),
            source,
        })
    }

    /// `(destination, source, total events, state)` of a job.
    pub fn job(&self, job: &str) -> Result<Option<JobInfo>, HistoryError> {
        self.read(|c| {
            c.query_row("SELECT destination, source, total_events, state, created_at FROM jobs WHERE id = ?1", [job], |r| {
                Ok(JobInfo { id: job.to_owned(), destination: r.get(0)?, source: r.get(1)?, total_events: r.get::<_, i64>(2)? as usize, state: r.get(3)?, created_at: r.get(4)? })
            })
            .optional()
        })
    }

    pub fn recent_jobs(&self, limit: usize) -> Result<Vec<JobInfo>, HistoryError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT id, destination, source, total_events, state, created_at FROM jobs ORDER BY created_at DESC LIMIT ?1")?;
            let rows = st.query_map([limit as i64], |r| {
                Ok(JobInfo { id: r.get(0)?, destination: r.get(1)?, source: r.get(2)?, total_events: r.get::<_, i64>(3)? as usize, state: r.get(4)?, created_at: r.get(5)? })
            })?;
            rows.collect()
        })
    }

    /// Indices of a job's events that are not delivered (nor skipped by the trigger):
    /// what a resume must send.
    pub fn undelivered(&self, job: &str) -> Result<Vec<usize>, HistoryError> {
        let Some(info) = self.job(job)? else {
            return Err(HistoryError::Other(format!(
                "no job \"{job}\" in {}",
                self.path.display()
            )));
        };
        let done: Vec<(i64, i64)> = self.read(|c| {
            let mut st = c.prepare("SELECT first, last FROM job_events WHERE job_id = ?1 AND state IN ('delivered', 'skipped')")?;
            let rows = st.query_map([job], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        let mut finished = vec![false; info.total_events];
        let last = info.total_events.saturating_sub(1);
        for (a, b) in done {
            let (a, b) = (a.max(0) as usize, (b.max(0) as usize).min(last));
            if a <= b && b < finished.len() {
                finished[a..=b].fill(true);
            }
        }
        Ok(finished
            .iter()
            .enumerate()
            .filter(|(_, d)| !**d)
            .map(|(i, _)| i)
            .collect())
    }

    /// Count of events per state for a job (`delivered`, `failed`, `skipped`).
    pub fn event_counts(&self, job: &str) -> Result<Vec<(String, u64)>, HistoryError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT state, SUM(last - first + 1) FROM job_events WHERE job_id = ?1 GROUP BY state ORDER BY state")?;
            let rows = st.query_map([job], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        })
    }

    /// The attempts of a job, oldest first.
    pub fn attempts(&self, job: &str, limit: usize) -> Result<Vec<AttemptRow>, HistoryError> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT request_no, attempt, method, url, request_headers, status, response_body, latency_ms, error
                 FROM attempts WHERE job_id = ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = st.query_map(params![job, limit as i64], |r| {
                Ok(AttemptRow {
                    request_no: r.get::<_, i64>(0)? as u64,
                    attempt: r.get::<_, i64>(1)? as u32,
                    method: r.get(2)?,
                    url: r.get(3)?,
                    request_headers: r.get(4)?,
                    status: r.get::<_, Option<i64>>(5)?.map(|s| s as u16),
                    response_body: r.get(6)?,
                    latency_ms: r.get(7)?,
                    error: r.get(8)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Captures after `after_id`, oldest first.
    pub fn captures(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<(i64, CaptureRecord)>, HistoryError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT id, at, method, path, query, headers, body, signature FROM captures WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = st.query_map(params![after_id, limit as i64], |r| {
                let headers: String = r.get(5)?;
                let sig: Option<String> = r.get(7)?;
                Ok((
                    r.get(0)?,
                    CaptureRecord {
                        at: r.get(1)?,
                        method: r.get(2)?,
                        path: r.get(3)?,
                        query: r.get(4)?,
                        headers: serde_json::from_str(&headers).unwrap_or_default(),
                        body: r.get(6)?,
                        signature: sig.map(|s| s == "valid"),
                    },
                ))
            })?;
            rows.collect()
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    pub destination: String,
    pub source: String,
    pub total_events: usize,
    pub state: String,
    pub created_at: String,
}

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub request_no: u64,
    pub attempt: u32,
    pub method: String,
    pub url: String,
    /// JSON `[[name, value], …]`, redacted.
    pub request_headers: String,
    pub status: Option<u16>,
    pub response_body: Vec<u8>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

impl HistoryWriter {
    fn send(&self, r: Record) {
        // The writer thread only stops when every sender is gone, so this cannot fail while we hold one.
        let _ = self.tx.send(r);
    }

    /// Block until everything queued so far is committed. Returns the last write error, if any.
    pub fn flush(&self) -> Result<(), String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Record::Flush(tx));
        let _ = rx.recv_timeout(std::time::Duration::from_mins(1));
        match self
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn capture(&self, c: CaptureRecord) {
        self.send(Record::Capture(Box::new(c)));
    }
}

impl JobLog for HistoryWriter {
    fn job_started(&self, job: &str, destination: &str, source: &str, total_events: usize) {
        self.send(Record::JobCreated {
            job: job.to_owned(),
            destination: destination.to_owned(),
            source: source.to_owned(),
            total: total_events,
        });
    }
    fn attempt(&self, mut a: AttemptLog) {
        a.response_body.truncate(MAX_BODY);
        self.send(Record::Attempt(Box::new(a)));
    }
    fn events_done(&self, job: &str, events: &[usize], o: &Outcome) {
        let state = match o.outcome {
            OutcomeKind::Delivered => "delivered",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Cancelled => return,
        };
        let mut sorted = events.to_vec();
        sorted.sort_unstable();
        self.send(Record::Events {
            job: job.to_owned(),
            ranges: ranges(&sorted),
            state,
            attempts: o.attempts,
            status: o.status,
            error: o.error.clone(),
        });
    }
    fn events_skipped(&self, job: &str, events: &[usize]) {
        let mut sorted = events.to_vec();
        sorted.sort_unstable();
        self.send(Record::Events {
            job: job.to_owned(),
            ranges: ranges(&sorted),
            state: "skipped",
            attempts: 0,
            status: None,
            error: None,
        });
    }
    fn job_finished(&self, job: &str, state: &str) {
        self.send(Record::JobFinished {
            job: job.to_owned(),
            state: state.to_owned(),
        });
    }
}

fn writer_loop(
    mut conn: Connection,
    rx: &mpsc::Receiver<Record>,
    error: &Mutex<Option<String>>,
    path: &Path,
) {
    let mut batch = Vec::with_capacity(4096);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < 20_000 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        if let Err(e) = write_batch(&mut conn, &mut batch, &mut flushes) {
            *error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(format!("history database {}: {e}", path.display()));
        }
        batch.clear();
        for f in flushes {
            let _ = f.send(());
        }
    }
}

fn write_batch(
    conn: &mut Connection,
    batch: &mut Vec<Record>,
    flushes: &mut Vec<mpsc::SyncSender<()>>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let at = now();
        let mut ev = tx.prepare_cached("INSERT INTO job_events(job_id, first, last, state, attempts, status, error, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
        let mut att = tx.prepare_cached(
            "INSERT INTO attempts(job_id, request_no, attempt, at, method, url, request_headers, status, response_headers, response_body, latency_ms, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for r in batch.drain(..) {
            match r {
                Record::JobCreated {
                    job,
                    destination,
                    source,
                    total,
                } => {
                    tx.execute(
                        "INSERT OR IGNORE INTO jobs(id, destination, source, total_events, created_at, state) VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
                        params![job, destination, source, total as i64, at],
                    )?;
                }
                Record::Events {
                    job,
                    ranges,
                    state,
                    attempts,
                    status,
                    error,
                } => {
                    for (a, b) in ranges {
                        ev.execute(params![
                            job,
                            a as i64,
                            b as i64,
                            state,
                            i64::from(attempts),
                            status.map(i64::from),
                            error,
                            at
                        ])?;
                    }
                }
                Record::Attempt(a) => {
                    att.execute(params![
                        a.job,
                        a.request_no as i64,
                        i64::from(a.attempt),
                        at,
                        a.method,
                        a.url,
                        serde_json::to_string(&a.request_headers).unwrap_or_default(),
                        a.status.map(i64::from),
                        serde_json::to_string(&a.response_headers).unwrap_or_default(),
                        a.response_body,
                        a.latency_ms,
                        a.error
                    ])?;
                }
                Record::Capture(c) => {
                    tx.execute(
                        "INSERT INTO captures(at, method, path, query, headers, body, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![c.at, c.method, c.path, c.query, serde_json::to_string(&c.headers).unwrap_or_default(), c.body, c.signature.map(|v| if v { "valid" } else { "invalid" })],
                    )?;
                }
                Record::JobFinished { job, state } => {
                    tx.execute(
                        "UPDATE jobs SET state = ?2, finished_at = ?3 WHERE id = ?1",
                        params![job, state, at],
                    )?;
                }
                Record::Flush(f) => flushes.push(f),
            }
        }
    }
    tx.commit()
}
