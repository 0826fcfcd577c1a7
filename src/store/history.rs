//! The history: a `SQLite` database (WAL) in the user's data directory holding jobs,
//! the final state of their events, every delivery attempt (secrets already
//! redacted by the caller; kept as pages, see [`super::pages`]), and captures. Writes go through one writer thread that
//! commits whatever is queued in a single transaction (group commit; while records
//! keep coming, commits are [`COMMIT_SPACING`] apart so each holds many), so recording
//! costs sending little; a committed transaction survives the process being killed,
//! which is what lets an interrupted job resume.
//!
//! Event states are stored as index ranges (`first..=last`): one row per request for
//! a contiguous batch, and the outcomes of several requests that agree (same job,
//! state, attempts, status and error) merged into one row when they are committed
//! together, so a job at tens of thousands of requests per second writes thousands of
//! rows, not one per event.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::core::job::{
    AttemptLog, Capture, Commit, EventRow, EventState, JobFingerprint, JobLog, NewJob, Outcome,
    OutcomeKind, committed, destination_digest,
};
use crate::core::model::Destination;

use super::pages::{self, PageBuilder};

/// Response bodies are kept up to this size.
pub const MAX_BODY: usize = 64 * 1024;

/// The most events a job can have: every event takes at least two bytes (`{}`) of
/// an events file, and files are capped at 2 GiB. A count above this in the
/// database is damage, reported as such — never a size to allocate by.
pub const MAX_JOB_EVENTS: u64 = crate::core::import::MAX_IMPORT_BYTES / 2;

/// A `running` job whose heartbeat is older than this is no longer running: its
/// process died (crash, `kill -9`, power loss).
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// The least time between two commits of the writer while records keep coming. A
/// request's slot is free once it is answered (its outcome waits for the commit
/// among a bounded number of unrecorded ones), so spacing costs memory, not
/// requests per second while fewer than the bound wait; each commit costs CPU (about
/// eight WAL frames, two `pwrite`s each, whatever it holds), so fewer are better:
/// over 50 000 requests to a local sink, 1 ms spent 0.1 s less CPU than 250 µs, and
/// 3 ms half the `pwrite`s of 1 ms (≈ 6 700 instead of 13 000–15 000). At 50 000
/// requests/s, 3 ms is ≈ 150 outcomes a commit, under the 4 × concurrency bound.
const COMMIT_SPACING: Duration = Duration::from_millis(3);

/// The least time between two WAL checkpoints while commits keep coming.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// How long a write waits for another connection's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// 1: jobs, events, attempts, captures. 2: job fingerprints, pid and heartbeat.
/// 3: a capture's status and collect route; a job's destination id. 4: attempts
/// recorded as pages (`attempt_pages`, see [`super::pages`]); rows recorded before
/// stay in `attempts` and are read first.
const SCHEMA_VERSION: i64 = 4;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    /// A value in the database that cannot be right (a damaged or tampered file).
    #[error("history database {path}: {what}")]
    Damaged { path: String, what: String },
    #[error("history: {0}")]
    Other(String),
}

/// A captured request, as the capture receiver records it (the same type).
pub type CaptureRecord = Capture;

/// Told once the transaction holding a record has committed, or why it failed.
type Ack = tokio::sync::oneshot::Sender<Result<(), String>>;

/// What the writer thread is asked to do.
enum Record {
    JobCreated(Box<NewJob>, Ack),
    JobResumed(String, Ack),
    Events {
        job: String,
        ranges: Vec<(usize, usize)>,
        state: &'static str,
        attempts: u32,
        status: Option<u16>,
        error: Option<String>,
        ack: Ack,
    },
    /// Outcomes of several requests of one job, one acknowledgement for them all.
    Outcomes {
        job: String,
        rows: Vec<OutcomeRow>,
        ack: Ack,
    },
    Attempt(Box<AttemptLog>),
    Capture(Box<Capture>),
    JobFinished {
        job: String,
        state: String,
        ack: Ack,
    },
    Heartbeat(String),
    Flush(mpsc::SyncSender<()>),
}

/// One request's outcome: its events as ranges (the first inline, as a request of
/// one event has just it), its state and how it ended.
struct OutcomeRow {
    first: (usize, usize),
    more: Vec<(usize, usize)>,
    state: &'static str,
    attempts: u32,
    status: Option<u16>,
    error: Option<String>,
}

/// Queues records for the writer thread. Cheap to clone; never blocks. Records a
/// resume depends on come with a [`Commit`] that resolves once they are committed.
#[derive(Clone)]
pub struct HistoryWriter {
    tx: mpsc::Sender<Record>,
    error: Arc<Mutex<Option<String>>>,
    path: Arc<str>,
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
    c.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    c.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    // NORMAL in WAL mode: a commit survives the process dying; only an OS crash can lose the last ones.
    c.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    Ok(c)
}

/// The directory is created private (0700) and the database, its `-wal` and `-shm`
/// files are owner-only (0600): they hold request headers and response bodies.
fn prepare_files(path: &Path) -> Result<(), HistoryError> {
    let other = |what: &str, p: &Path, e: std::io::Error| {
        HistoryError::Other(format!("cannot {what} {}: {e}", p.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(|e| other("create", dir, e))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| other("create", path, e))?;
        // SQLite gives -wal and -shm the database file's mode; tighten any left wider.
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let p = PathBuf::from(p);
            if let Ok(m) = std::fs::metadata(&p)
                && m.permissions().mode() & 0o077 != 0
            {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| other("make owner-only", &p, e))?;
            }
        }
    }
    Ok(())
}

fn migrate(c: &mut Connection, path: &Path) -> Result<(), HistoryError> {
    let err = |source| HistoryError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    // IMMEDIATE: two processes opening an old database at once migrate it once.
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    let v: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if v > SCHEMA_VERSION {
        return Err(HistoryError::Other(format!(
            "{} was written by a newer Hookline (schema {v})",
            path.display()
        )));
    }
    if v < 1 {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs(
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
                headers TEXT NOT NULL, body BLOB NOT NULL, signature TEXT);",
        )
        .map_err(err)?;
    }
    if v < 2 {
        // Jobs recorded before version 2 have no fingerprint (a resume says it cannot
        // check) and no heartbeat (a `running` one counts as interrupted).
        tx.execute_batch(
            "ALTER TABLE jobs ADD COLUMN events_sha256 TEXT;
             ALTER TABLE jobs ADD COLUMN destination_sha256 TEXT;
             ALTER TABLE jobs ADD COLUMN pid INTEGER;
             ALTER TABLE jobs ADD COLUMN heartbeat_at TEXT;",
        )
        .map_err(err)?;
    }
    if v < 3 {
        tx.execute_batch(
            "ALTER TABLE captures ADD COLUMN status INTEGER;
             ALTER TABLE captures ADD COLUMN collect TEXT;
             ALTER TABLE jobs ADD COLUMN destination_id TEXT;
             CREATE INDEX IF NOT EXISTS jobs_destination_id ON jobs(destination_id);",
        )
        .map_err(err)?;
    }
    if v < 4 {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS attempt_pages(
                job_id TEXT NOT NULL, first_seq INTEGER NOT NULL, n INTEGER NOT NULL,
                at TEXT NOT NULL, data BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS attempt_pages_job ON attempt_pages(job_id, first_seq);",
        )
        .map_err(err)?;
    }
    if v < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
    }
    tx.commit().map_err(err)
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

/// Sorted, disjoint, non-adjacent inclusive ranges covering the same indices.
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some((_, last)) if a <= last.saturating_add(1) => *last = (*last).max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// `a` minus `b`, both merged.
fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(mut lo, hi) in a {
        while j < b.len() && b[j].1 < lo {
            j += 1;
        }
        let mut k = j;
        while lo <= hi {
            match b.get(k) {
                Some(&(blo, bhi)) if blo <= hi => {
                    if blo > lo {
                        out.push((lo, blo - 1));
                    }
                    if bhi >= hi {
                        break;
                    }
                    lo = bhi + 1;
                    k += 1;
                }
                _ => {
                    out.push((lo, hi));
                    break;
                }
            }
        }
    }
    out
}

fn count(v: &[(u64, u64)]) -> u64 {
    v.iter()
        .fold(0u64, |n, (a, b)| n.saturating_add(b - a).saturating_add(1))
}

/// Where a job's events stand, each event counted once by its latest state: an
/// event that failed and was delivered by a resume counts as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobCounts {
    pub total: u64,
    pub delivered: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Never reached a final state (not yet sent, in flight at a crash, cancelled).
    pub pending: u64,
}

/// A job's event states as merged index ranges.
struct EventStates {
    total: u64,
    delivered: Vec<(u64, u64)>,
    failed: Vec<(u64, u64)>,
    skipped: Vec<(u64, u64)>,
}

const JOB_COLUMNS: &str = "id, destination, source, total_events, state, created_at, finished_at, events_sha256, destination_sha256, pid, heartbeat_at, destination_id";

impl History {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        prepare_files(path)?;
        let mut write = open_conn(path)?;
        migrate(&mut write, path)?;
        // The writer never checkpoints (copying the WAL into the database and syncing
        // it stalled commits for milliseconds): a thread of its own does, nudged by the
        // writer after its commits.
        write
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|source| HistoryError::Sqlite {
                path: path.display().to_string(),
                source,
            })?;
        let checkpoints = open_conn(path)?;
        let reader = open_conn(path)?;
        let (tx, rx) = mpsc::channel();
        let error = Arc::new(Mutex::new(None));
        let shown: Arc<str> = path.display().to_string().into();
        let (err2, p2) = (error.clone(), shown.clone());
        let (nudge, nudged) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("hookline-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpoints, &nudged))
            .map_err(|e| HistoryError::Other(format!("cannot start the history writer: {e}")))?;
        std::thread::Builder::new()
            .name("hookline-history".into())
            .spawn(move || writer_loop(write, &rx, &err2, &p2, &nudge))
            .map_err(|e| HistoryError::Other(format!("cannot start the history writer: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: HistoryWriter {
                tx,
                error,
                path: shown,
            },
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

    fn damaged(&self, what: String) -> HistoryError {
        HistoryError::Damaged {
            path: self.path.display().to_string(),
            what,
        }
    }

    /// A job row, its counts checked: an absurd `total_events` is an error, not a size.
    fn job_info(&self, r: RawJob) -> Result<JobInfo, HistoryError> {
        let total = u64::try_from(r.total_events)
            .ok()
            .filter(|t| *t <= MAX_JOB_EVENTS)
            .and_then(|t| usize::try_from(t).ok())
            .ok_or_else(|| {
                self.damaged(format!(
                    "job {}: total_events {} is out of range (0 to {MAX_JOB_EVENTS})",
                    r.id, r.total_events
                ))
            })?;
        let heartbeat = r
            .heartbeat_at
            .clone()
            .unwrap_or_else(|| r.created_at.clone());
        let stale = chrono::DateTime::parse_from_rfc3339(&heartbeat).map_or(true, |t| {
            chrono::Utc::now().signed_duration_since(t)
                > chrono::Duration::from_std(STALE_AFTER).unwrap_or_default()
        });
        let pid = r.pid.and_then(|p| u32::try_from(p).ok());
        Ok(JobInfo {
            interrupted: r.state == "running" && (stale || pid.is_some_and(process_gone)),
            id: r.id,
            destination: r.destination,
            destination_id: r.destination_id,
            source: r.source,
            total_events: total,
            state: r.state,
            created_at: r.created_at,
            finished_at: r.finished_at,
            events_digest: r.events_digest,
            destination_sha256: r.destination_sha256,
            pid,
            heartbeat_at: r.heartbeat_at,
        })
    }

    fn jobs_where(
        &self,
        clause: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<JobInfo>, HistoryError> {
        let raw: Vec<RawJob> = self.read(|c| {
            let mut st = c.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs {clause}"))?;
            let rows = st.query_map(p, RawJob::from_row)?;
            rows.collect()
        })?;
        raw.into_iter().map(|r| self.job_info(r)).collect()
    }

    /// A job's record, `None` if there is no such job.
    pub fn job(&self, job: &str) -> Result<Option<JobInfo>, HistoryError> {
        let raw = self.read(|c| {
            c.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [job],
                RawJob::from_row,
            )
            .optional()
        })?;
        raw.map(|r| self.job_info(r)).transpose()
    }

    pub fn recent_jobs(&self, limit: usize) -> Result<Vec<JobInfo>, HistoryError> {
        self.jobs_where(
            "ORDER BY created_at DESC LIMIT ?1",
            [i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// Jobs that a resume can finish, newest first: those that ended `failed` or
    /// `cancelled`, and those still `running` in the database whose process is gone
    /// (no heartbeat for [`STALE_AFTER`]: a crash or `kill -9`). A job running now
    /// in another process is not listed.
    pub fn resumable_jobs(&self, limit: usize) -> Result<Vec<JobInfo>, HistoryError> {
        let mut out = self.jobs_where(
            "WHERE state IN ('failed', 'cancelled', 'running') ORDER BY created_at DESC",
            [],
        )?;
        out.retain(|j| j.state != "running" || j.interrupted);
        out.truncate(limit);
        Ok(out)
    }

    /// The jobs of one destination, newest first: matched by its stable id, or by
    /// name for jobs recorded before it had one. A renamed destination keeps its jobs.
    pub fn destination_jobs(
        &self,
        dest: &Destination,
        limit: usize,
    ) -> Result<Vec<JobInfo>, HistoryError> {
        self.jobs_where(
            "WHERE (?1 <> '' AND destination_id = ?1) OR (destination_id IS NULL AND destination = ?2)
             ORDER BY created_at DESC LIMIT ?3",
            params![dest.id, dest.name, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    fn states(&self, job: &str) -> Result<EventStates, HistoryError> {
        let Some(info) = self.job(job)? else {
            return Err(HistoryError::Other(format!(
                "no job \"{job}\" in {}",
                self.path.display()
            )));
        };
        let total = info.total_events as u64;
        let rows: Vec<(i64, i64, String)> = self.read(|c| {
            let mut st =
                c.prepare("SELECT first, last, state FROM job_events WHERE job_id = ?1")?;
            let rows = st.query_map([job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })?;
        let (mut delivered, mut failed, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for (a, b, state) in rows {
            // Rows outside the job (a damaged file) are ignored, never trusted as sizes.
            let (Ok(a), Ok(b)) = (u64::try_from(a), u64::try_from(b)) else {
                continue;
            };
            if total == 0 || a > b || a >= total {
                continue;
            }
            let r = (a, b.min(total - 1));
            match state.as_str() {
                "delivered" => delivered.push(r),
                "failed" => failed.push(r),
                "skipped" => skipped.push(r),
                _ => {}
            }
        }
        let delivered = merge(delivered);
        let skipped = subtract(&merge(skipped), &delivered);
        let failed = subtract(&subtract(&merge(failed), &delivered), &skipped);
        Ok(EventStates {
            total,
            delivered,
            failed,
            skipped,
        })
    }

    /// Each event counted once, by its latest state (see [`JobCounts`]).
    pub fn job_counts(&self, job: &str) -> Result<JobCounts, HistoryError> {
        let s = self.states(job)?;
        let (delivered, failed, skipped) =
            (count(&s.delivered), count(&s.failed), count(&s.skipped));
        Ok(JobCounts {
            total: s.total,
            delivered,
            failed,
            skipped,
            pending: s
                .total
                .saturating_sub(delivered)
                .saturating_sub(failed)
                .saturating_sub(skipped),
        })
    }

    /// What a resume must send, as inclusive index ranges: every event not delivered
    /// nor skipped. Its size is bounded by the rows recorded, not by the job's count.
    pub fn undelivered_ranges(&self, job: &str) -> Result<Vec<(usize, usize)>, HistoryError> {
        let s = self.states(job)?;
        let done = merge(s.delivered.into_iter().chain(s.skipped).collect());
        let all = if s.total == 0 {
            vec![]
        } else {
            vec![(0, s.total - 1)]
        };
        Ok(subtract(&all, &done)
            .into_iter()
            .map(|(a, b)| (a as usize, b as usize))
            .collect())
    }

    /// Events whose latest state is `failed` (not delivered since), as inclusive index
    /// ranges: what a re-send of the failures sends. Pending events are not included.
    pub fn failed_ranges(&self, job: &str) -> Result<Vec<(usize, usize)>, HistoryError> {
        Ok(self
            .states(job)?
            .failed
            .into_iter()
            .map(|(a, b)| (a as usize, b as usize))
            .collect())
    }

    /// Indices of a job's events that are not delivered (nor skipped by the trigger):
    /// what a resume must send. One `usize` per such event: check the job's
    /// `total_events` against the events at hand first (as `send --resume` does).
    pub fn undelivered(&self, job: &str) -> Result<Vec<usize>, HistoryError> {
        Ok(self
            .undelivered_ranges(job)?
            .into_iter()
            .flat_map(|(a, b)| a..=b)
            .collect())
    }

    /// Count of events per state for a job (`delivered`, `failed`, `skipped`; states
    /// with none are left out), each event counted once by its latest state.
    pub fn event_counts(&self, job: &str) -> Result<Vec<(String, u64)>, HistoryError> {
        let c = self.job_counts(job)?;
        Ok([
            ("delivered", c.delivered),
            ("failed", c.failed),
            ("skipped", c.skipped),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| (s.to_owned(), n))
        .collect())
    }

    /// The attempts of a job, oldest first.
    /// Rows `offset .. offset + limit` of a job's event table, each event by its
    /// latest state (delivered over skipped over failed, as [`History::job_counts`]
    /// counts them), with the attempts, status and error of the request that decided
    /// it. Only the recorded ranges overlapping the page are read
    /// ([`JOB_EVENTS_PAGE_SQL`], through the `(job_id, first)` index), so a page of a
    /// 100 000-event job costs the page, not the job.
    pub fn job_events(
        &self,
        job: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<EventRow>, HistoryError> {
        let Some(info) = self.job(job)? else {
            return Err(HistoryError::Other(format!(
                "no job \"{job}\" in {}",
                self.path.display()
            )));
        };
        let end = offset.saturating_add(limit).min(info.total_events);
        if offset >= end {
            return Ok(Vec::new());
        }
        let (lo, hi) = (offset as i64, (end - 1) as i64);
        let mut rows: Vec<RangeRow> = self.read(|c| {
            let mut st = c.prepare_cached(JOB_EVENTS_PAGE_SQL)?;
            let rows = st.query_map(params![job, lo, hi], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?;
            rows.collect()
        })?;
        // Oldest first, so a later record of the same rank wins.
        rows.sort_unstable_by_key(|r| r.0);
        let mut page: Vec<EventRow> = (offset..end)
            .map(|index| EventRow {
                index,
                state: EventState::Pending,
                attempts: 0,
                status: None,
                error: None,
            })
            .collect();
        let rank = |s: EventState| match s {
            EventState::Pending => 0,
            EventState::Failed => 1,
            EventState::Skipped => 2,
            EventState::Delivered => 3,
        };
        for (_, first, last, state, attempts, status, error) in rows {
            let state = match state.as_str() {
                "delivered" => EventState::Delivered,
                "failed" => EventState::Failed,
                "skipped" => EventState::Skipped,
                _ => continue,
            };
            let (Ok(first), Ok(last)) = (
                usize::try_from(first.max(lo)),
                usize::try_from(last.min(hi)),
            ) else {
                continue;
            };
            for row in page
                .get_mut(first.saturating_sub(offset)..=last.saturating_sub(offset))
                .into_iter()
                .flatten()
            {
                if rank(state) >= rank(row.state) {
                    row.state = state;
                    row.attempts = u32::try_from(attempts).unwrap_or(0);
                    row.status = status.and_then(|s| u16::try_from(s).ok());
                    row.error.clone_from(&error);
                }
            }
        }
        Ok(page)
    }

    /// Attempts `offset .. offset + limit` of a job in the order they were made
    /// (those recorded before schema 4, one row each, first). Only the pages holding
    /// the range are read and decoded ([`ATTEMPTS_PAGE_SQL`], through the
    /// `(job_id, first_seq)` index), so a page of a 100 000-attempt job costs what
    /// the first page does.
    pub fn attempts_range(
        &self,
        job: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<AttemptRow>, HistoryError> {
        let sql = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let (mut out, legacy) = self.read(|c| {
            let legacy: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM attempts WHERE job_id = ?1")?
                .query_row(params![job], |r| r.get(0))?;
            let rows = if sql(offset) < legacy {
                let mut st = c.prepare_cached(LEGACY_ATTEMPTS_SQL)?;
                let rows = st.query_map(params![job, sql(offset), sql(limit)], attempt_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            } else {
                Vec::new()
            };
            Ok((rows, usize::try_from(legacy).unwrap_or(0)))
        })?;
        let start = offset.saturating_sub(legacy);
        let end = start.saturating_add(limit - out.len().min(limit));
        if end <= start {
            return Ok(out);
        }
        let pages: Vec<(i64, i64, Vec<u8>)> = self.read(|c| {
            let mut st = c.prepare_cached(ATTEMPTS_PAGE_SQL)?;
            let rows = st.query_map(params![job, sql(start), sql(end)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect()
        })?;
        for (first, _, data) in pages {
            let first = usize::try_from(first)
                .map_err(|_| self.damaged(format!("attempt page of job {job} at {first}")))?;
            let from = start.max(first);
            if from >= end {
                break;
            }
            let got = pages::decode(&data, from - first, end - from)
                .map_err(|e| self.damaged(format!("job {job}: {e}")))?;
            out.extend(got);
        }
        Ok(out)
    }

    /// The first `limit` attempts of a job, in the order made.
    pub fn attempts(&self, job: &str, limit: usize) -> Result<Vec<AttemptRow>, HistoryError> {
        self.attempts_range(job, 0, limit)
    }

    /// Captures after `after_id`, oldest first, as the receiver produced them; `id`
    /// is the row id (pass the last one as `after_id` for the next page).
    pub fn captures(&self, after_id: i64, limit: usize) -> Result<Vec<Capture>, HistoryError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT id, at, method, path, query, headers, body, signature, status, collect FROM captures WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = st.query_map(params![after_id, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                let id: i64 = r.get(0)?;
                let headers: String = r.get(5)?;
                let sig: Option<String> = r.get(7)?;
                let status: Option<i64> = r.get(8)?;
                let collect: Option<String> = r.get(9)?;
                Ok(Capture {
                    id: u64::try_from(id).unwrap_or_default(),
                    at: r.get(1)?,
                    method: r.get(2)?,
                    path: r.get(3)?,
                    query: r.get(4)?,
                    headers: serde_json::from_str(&headers).unwrap_or_default(),
                    body: r.get(6)?,
                    signature: sig.map(|s| s == "valid"),
                    collect: collect.and_then(|c| serde_json::from_str(&c).ok()),
                    // Captures recorded before schema 3 kept no status: the receiver answered 200.
                    status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
                })
            })?;
            rows.collect()
        })
    }
}

/// The process that ran a job is known to be gone (Linux: no `/proc/<pid>`), so the
/// job was interrupted even if its last heartbeat is recent. Elsewhere only the
/// heartbeat tells.
fn process_gone(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
    } else {
        false
    }
}

/// A `jobs` row as stored, before its values are checked.
struct RawJob {
    id: String,
    destination: String,
    source: String,
    total_events: i64,
    state: String,
    created_at: String,
    finished_at: Option<String>,
    events_digest: Option<String>,
    destination_sha256: Option<String>,
    pid: Option<i64>,
    heartbeat_at: Option<String>,
    destination_id: Option<String>,
}

impl RawJob {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            destination: r.get(1)?,
            source: r.get(2)?,
            total_events: r.get(3)?,
            state: r.get(4)?,
            created_at: r.get(5)?,
            finished_at: r.get(6)?,
            events_digest: r.get(7)?,
            destination_sha256: r.get(8)?,
            pid: r.get(9)?,
            heartbeat_at: r.get(10)?,
            destination_id: r.get(11)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    /// The destination's name when the job was created (it may have been renamed since).
    pub destination: String,
    /// The destination's stable id; `None` for jobs of destinations that had none.
    pub destination_id: Option<String>,
    pub source: String,
    pub total_events: usize,
    /// As recorded: `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// The events file's fingerprint: `xxh3-blocks:<hex>` (see `cli::send`), or the SHA-256 hex of jobs
    /// recorded before (none for event sets and jobs recorded before schema 2).
    pub events_digest: Option<String>,
    /// SHA-256 of the destination's settings (see `delivery::destination_digest`).
    pub destination_sha256: Option<String>,
    /// The process that last ran the job.
    pub pid: Option<u32>,
    pub heartbeat_at: Option<String>,
    /// `running` in the database but no heartbeat for [`STALE_AFTER`]: its process
    /// died. Resumable.
    pub interrupted: bool,
}

impl JobInfo {
    /// Whether `events` (with `fingerprint`) through `dest` may drive this job again:
    /// the same destination, the same number of events, and, where both sides have
    /// one, the same events digest and the same destination settings digest. The
    /// error says which differs, naming the job.
    pub fn check_redrive(
        &self,
        dest: &Destination,
        events: usize,
        fingerprint: &JobFingerprint,
    ) -> Result<(), String> {
        let job = &self.id;
        if !self.is_for(dest) {
            return Err(format!(
                "job {job} was sent through destination \"{}\", not \"{}\"",
                self.destination, dest.name
            ));
        }
        if self.total_events != events {
            return Err(format!(
                "job {job} had {} events but {events} were given: use the same events",
                self.total_events
            ));
        }
        if let (Some(was), Some(now)) = (&self.events_digest, &fingerprint.events_digest)
            && was != now
        {
            return Err(format!(
                "job {job} was sent from other events: the same number of events but different content (fingerprint {} now, {} then)",
                &now[..12.min(now.len())],
                &was[..12.min(was.len())]
            ));
        }
        let digest = fingerprint
            .destination_sha256
            .clone()
            .unwrap_or_else(|| destination_digest(dest));
        if self
            .destination_sha256
            .as_ref()
            .is_some_and(|was| *was != digest)
        {
            return Err(format!(
                "destination \"{}\" has changed since job {job} was sent (its URL, headers, auth, signing, body, mapping or batching): it would send different requests",
                dest.name
            ));
        }
        if self.state == "running" && !self.interrupted {
            return Err(format!(
                "job {job} is still running (pid {})",
                self.pid
                    .map_or_else(|| "unknown".to_owned(), |p| p.to_string())
            ));
        }
        Ok(())
    }

    /// Whether this job was sent through `dest`: the same stable id (whatever the
    /// names, so a renamed destination resumes its jobs), or the same name (a job
    /// recorded before ids, or a file whose ids were dropped). What would be sent is
    /// checked by the fingerprint, not here.
    pub fn is_for(&self, dest: &Destination) -> bool {
        self.destination_id
            .as_deref()
            .is_some_and(|id| !dest.id.is_empty() && id == dest.id)
            || self.destination == dest.name
    }
}

/// A `job_events` row: rowid, first, last, state, attempts, status, error.
type RangeRow = (i64, i64, i64, String, i64, Option<i64>, Option<String>);

/// The query behind [`History::job_events`]: the recorded ranges overlapping a page.
pub const JOB_EVENTS_PAGE_SQL: &str =
    "SELECT rowid, first, last, state, attempts, status, error FROM job_events
     WHERE job_id = ?1 AND first <= ?3 AND last >= ?2";

/// The query behind [`History::attempts_range`]: the pages holding attempts
/// `?2 .. ?3` of job `?1` (the last page starting at or before `?2`, and those after
/// it starting before `?3`).
pub const ATTEMPTS_PAGE_SQL: &str = "SELECT first_seq, n, data FROM attempt_pages
     WHERE job_id = ?1 AND first_seq < ?3 AND first_seq >= COALESCE(
         (SELECT MAX(first_seq) FROM attempt_pages WHERE job_id = ?1 AND first_seq <= ?2), 0)
     ORDER BY first_seq";

/// Attempts recorded a row each (before schema 4), in the order made.
const LEGACY_ATTEMPTS_SQL: &str = "SELECT request_no, attempt, method, url, request_headers, status, response_body, latency_ms, error, response_headers
     FROM attempts WHERE job_id = ?1 ORDER BY id LIMIT ?3 OFFSET ?2";

fn attempt_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AttemptRow> {
    Ok(AttemptRow {
        request_no: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        attempt: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
        method: r.get(2)?,
        url: r.get(3)?,
        request_headers: r.get(4)?,
        status: r
            .get::<_, Option<i64>>(5)?
            .and_then(|s| u16::try_from(s).ok()),
        response_body: r.get(6)?,
        latency_ms: r.get(7)?,
        error: r.get(8)?,
        response_headers: r.get(9)?,
    })
}

/// One delivery attempt as the history gives it back (secrets were redacted before
/// it was written).
#[derive(Debug, Clone, PartialEq)]
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
    /// JSON `[[name, value], …]`, redacted.
    pub response_headers: String,
}

impl HistoryWriter {
    fn send(&self, r: Record) {
        // If the writer thread is gone the record is dropped with its ack, and the
        // commit resolves as failed (see `commit`).
        let _ = self.tx.send(r);
    }

    /// A record with an acknowledgement, and the [`Commit`] that awaits it.
    fn acked(&self, make: impl FnOnce(Ack) -> Record) -> Commit {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(make(tx));
        let path = self.path.clone();
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(format!(
                    "history database {path}: the history writer stopped"
                ))
            })
        })
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

    /// Record a capture; its `id` is replaced by the database's row id when read back.
    pub fn capture(&self, c: Capture) {
        self.send(Record::Capture(Box::new(c)));
    }

    fn events(
        &self,
        job: &str,
        events: &[usize],
        state: &'static str,
        o: Option<&Outcome>,
    ) -> Commit {
        let mut sorted = events.to_vec();
        sorted.sort_unstable();
        self.acked(|ack| Record::Events {
            job: job.to_owned(),
            ranges: ranges(&sorted),
            state,
            attempts: o.map_or(0, |o| o.attempts),
            status: o.and_then(|o| o.status),
            error: o.and_then(|o| o.error.clone()),
            ack,
        })
    }
}

impl JobLog for HistoryWriter {
    fn job_started(&self, job: &NewJob) -> Commit {
        self.acked(|ack| Record::JobCreated(Box::new(job.clone()), ack))
    }
    fn job_resumed(&self, job: &str) -> Commit {
        self.acked(|ack| Record::JobResumed(job.to_owned(), ack))
    }
    fn attempt(&self, mut a: AttemptLog) {
        a.response_body.truncate(MAX_BODY);
        self.send(Record::Attempt(Box::new(a)));
    }
    fn events_done(&self, job: &str, events: &[usize], o: &Outcome) -> Commit {
        let state = match o.outcome {
            OutcomeKind::Delivered => "delivered",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Cancelled => return committed(),
        };
        self.events(job, events, state, Some(o))
    }
    fn events_done_many(&self, job: &str, outcomes: &[&Outcome]) -> Commit {
        let rows: Vec<OutcomeRow> = outcomes
            .iter()
            .filter_map(|o| {
                let state = match o.outcome {
                    OutcomeKind::Delivered => "delivered",
                    OutcomeKind::Failed => "failed",
                    OutcomeKind::Cancelled => return None,
                };
                let (first, more) = match o.events.as_slice() {
                    [] => return None,
                    [one] => ((*one, *one), Vec::new()),
                    many => {
                        let mut sorted = many.to_vec();
                        sorted.sort_unstable();
                        let mut r = ranges(&sorted);
                        let first = r.remove(0);
                        (first, r)
                    }
                };
                Some(OutcomeRow {
                    first,
                    more,
                    state,
                    attempts: o.attempts,
                    status: o.status,
                    error: o.error.clone(),
                })
            })
            .collect();
        if rows.is_empty() {
            return committed();
        }
        self.acked(|ack| Record::Outcomes {
            job: job.to_owned(),
            rows,
            ack,
        })
    }
    fn events_skipped(&self, job: &str, events: &[usize]) -> Commit {
        self.events(job, events, "skipped", None)
    }
    fn job_finished(&self, job: &str, state: &str) -> Commit {
        self.acked(|ack| Record::JobFinished {
            job: job.to_owned(),
            state: state.to_owned(),
            ack,
        })
    }
    fn heartbeat(&self, job: &str) {
        self.send(Record::Heartbeat(job.to_owned()));
    }
}

/// Checkpoints the WAL (PASSIVE: never blocks the writer) when the writer has
/// committed, at most every [`CHECKPOINT_EVERY`]; ends with the writer. The last
/// connection to close checkpoints what is left and removes the WAL.
fn checkpoint_loop(conn: &Connection, nudged: &mpsc::Receiver<()>) {
    let mut last = std::time::Instant::now();
    while nudged.recv().is_ok() {
        let next = last + CHECKPOINT_EVERY;
        let now = std::time::Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        // A failed checkpoint loses nothing (the WAL keeps the commits); the next
        // one tries again.
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        last = std::time::Instant::now();
    }
}

fn writer_loop(
    mut conn: Connection,
    rx: &mpsc::Receiver<Record>,
    error: &Mutex<Option<String>>,
    path: &str,
    nudge: &mpsc::SyncSender<()>,
) {
    let mut batch = Vec::with_capacity(4096);
    // Jobs that lost records nobody was waiting for (attempts, heartbeats) in a failed
    // transaction: their next acknowledgement reports it, so the job stops.
    let mut lost: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut last_commit: Option<std::time::Instant> = None;
    let mut seqs = AttemptSeqs::default();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        // Under load, commits are spaced: what arrives meanwhile joins the next one,
        // so a busy job pays for a commit per few dozen records, not per record. A
        // record after a quiet spell is committed at once.
        if let Some(next) = last_commit.map(|at| at + COMMIT_SPACING) {
            let now = std::time::Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        while batch.len() < 20_000 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut owed = Owed::default();
        let result = write_batch(&mut conn, &mut batch, &mut owed, &mut seqs)
            .map_err(|e| format!("history database {path}: {e}"));
        if result.is_err() {
            // What the lost transaction numbered is not on record: read again.
            seqs.next.clear();
        }
        batch.clear();
        if let Err(e) = &result {
            *error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.clone());
            for job in owed.unacked {
                lost.entry(job).or_insert_with(|| e.clone());
            }
        }
        // Group commit: one transaction, then every waiting job learns its fate.
        for (job, ack) in owed.acks {
            let lost_before = if lost.is_empty() {
                None
            } else {
                lost.remove(&job)
            };
            let r = match (&result, lost_before) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), Some(e)) => Err(format!(
                    "{e} (some of the job's records could not be saved)"
                )),
                (Ok(()), None) => Ok(()),
            };
            let _ = ack.send(r);
        }
        for f in owed.flushes {
            let _ = f.send(());
        }
        // Full means a checkpoint is already due.
        let _ = nudge.try_send(());
        last_commit = Some(std::time::Instant::now());
    }
}

/// What a batch owes once it has committed or failed.
#[derive(Default)]
struct Owed {
    /// Acknowledgements, with the job each record belongs to.
    acks: Vec<(String, Ack)>,
    /// Jobs with records in the batch that nobody waits for (attempts, heartbeats).
    unacked: Vec<String>,
    flushes: Vec<mpsc::SyncSender<()>>,
}

impl Owed {
    /// Take what `r` is owed; the record's data is dropped (its transaction failed).
    fn settle(&mut self, r: Record) {
        match r {
            Record::JobCreated(j, ack) => self.acks.push((j.job, ack)),
            Record::JobResumed(job, ack)
            | Record::Events { job, ack, .. }
            | Record::Outcomes { job, ack, .. }
            | Record::JobFinished { job, ack, .. } => self.acks.push((job, ack)),
            Record::Attempt(a) => self.unacked.push(a.job),
            Record::Heartbeat(job) => self.unacked.push(job),
            Record::Flush(f) => self.flushes.push(f),
            Record::Capture(_) => {}
        }
    }
}

/// The next attempt sequence number of each job the writer has paged, read from the
/// database the first time (a resumed job goes on after its earlier attempts).
#[derive(Default)]
struct AttemptSeqs {
    next: std::collections::HashMap<String, i64>,
}

impl AttemptSeqs {
    fn take(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        job: &str,
        n: usize,
    ) -> rusqlite::Result<i64> {
        let first = match self.next.get(job) {
            Some(&s) => s,
            None => tx.query_row(
                "SELECT COALESCE(MAX(first_seq + n), 0) FROM attempt_pages WHERE job_id = ?1",
                params![job],
                |r| r.get(0),
            )?,
        };
        self.next
            .insert(job.to_owned(), first + i64::try_from(n).unwrap_or(i64::MAX));
        Ok(first)
    }
}

/// The attempt pages a transaction is filling, one per job.
#[derive(Default)]
struct OpenPages {
    pages: Vec<(String, PageBuilder)>,
}

impl OpenPages {
    /// Add an attempt; a page that is full is written first.
    fn push(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        seqs: &mut AttemptSeqs,
        at: &str,
        a: &AttemptLog,
    ) -> rusqlite::Result<()> {
        let i = if let Some(i) = self.pages.iter().position(|(job, _)| *job == a.job) {
            i
        } else {
            self.pages.push((a.job.clone(), PageBuilder::default()));
            self.pages.len() - 1
        };
        let (job, page) = &mut self.pages[i];
        if page.is_full() {
            write_page(tx, seqs, at, job, page)?;
        }
        page.push(a);
        Ok(())
    }

    fn write_all(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        seqs: &mut AttemptSeqs,
        at: &str,
    ) -> rusqlite::Result<()> {
        for (job, page) in &mut self.pages {
            if !page.is_empty() {
                write_page(tx, seqs, at, job, page)?;
            }
        }
        Ok(())
    }
}

fn write_page(
    tx: &rusqlite::Transaction<'_>,
    seqs: &mut AttemptSeqs,
    at: &str,
    job: &str,
    page: &mut PageBuilder,
) -> rusqlite::Result<()> {
    let (blob, n) = page.finish();
    let first = seqs.take(tx, job, n)?;
    tx.prepare_cached(
        "INSERT INTO attempt_pages(job_id, first_seq, n, at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        job,
        first,
        i64::try_from(n).unwrap_or(i64::MAX),
        at,
        blob
    ])?;
    Ok(())
}

fn write_batch(
    conn: &mut Connection,
    batch: &mut Vec<Record>,
    owed: &mut Owed,
    seqs: &mut AttemptSeqs,
) -> rusqlite::Result<()> {
    // IMMEDIATE: the write lock is taken (waiting out a busy database) at BEGIN; a
    // deferred transaction that read first (an attempt page's sequence number) would
    // fail at once on a locked database instead of waiting.
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            for r in batch.drain(..) {
                owed.settle(r);
            }
            return Err(e);
        }
    };
    let pid = i64::from(std::process::id());
    {
        let at = now();
        let mut ev = tx.prepare_cached("INSERT INTO job_events(job_id, first, last, state, attempts, status, error, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
        let mut pages = OpenPages::default();
        let mut failure = None;
        // Consecutive event records alike but for their indices (one request each,
        // unbatched) become one set of merged range rows: fewer rows, same states.
        let mut run: Option<EventsRun> = None;
        for r in batch.drain(..) {
            if failure.is_some() {
                // The transaction is lost: the remaining records only need settling.
                owed.settle(r);
                continue;
            }
            let r = match r {
                r @ (Record::Events { .. } | Record::Outcomes { .. }) => {
                    failure = gather_events(r, &mut run, &mut ev, &at, owed).err();
                    continue;
                }
                Record::Attempt(a) => {
                    // Nobody waits for an attempt: a failed transaction is reported
                    // to its job with the job's next acknowledgement.
                    if owed.unacked.last() != Some(&a.job) {
                        owed.unacked.push(a.job.clone());
                    }
                    failure = pages.push(&tx, seqs, &at, &a).err();
                    continue;
                }
                other => other,
            };
            // Attempts, heartbeats and captures do not touch event rows: a run goes on
            // past them.
            if !matches!(
                r,
                Record::Attempt(_) | Record::Heartbeat(_) | Record::Capture(_)
            ) && let Some(done) = run.take()
            {
                failure = done.write(&mut ev, &at).err();
            }
            if failure.is_some() {
                owed.settle(r);
                continue;
            }
            if let Err(e) = apply(&tx, &mut ev, r, owed, &at, pid) {
                failure = Some(e);
            }
        }
        if failure.is_none()
            && let Some(done) = run.take()
        {
            failure = done.write(&mut ev, &at).err();
        }
        if failure.is_none() {
            failure = pages.write_all(&tx, seqs, &at).err();
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
    tx.commit()
}

/// Add an event record (one request's, or a group's) to the open run of agreeing
/// records, writing the run it ends. Its acknowledgement is owed before anything can
/// fail: a failed write is reported as such, not as a vanished writer.
fn gather_events(
    r: Record,
    run: &mut Option<EventsRun>,
    ev: &mut rusqlite::CachedStatement<'_>,
    at: &str,
    owed: &mut Owed,
) -> rusqlite::Result<()> {
    match r {
        Record::Events {
            job,
            ranges,
            state,
            attempts,
            status,
            error,
            ack,
        } => {
            owed.acks.push((job.clone(), ack));
            let ranges = ranges.iter().map(|&(a, b)| (a as u64, b as u64));
            EventsRun::add(run, ev, at, &job, ranges, (state, attempts, status, error))
        }
        Record::Outcomes { job, rows, ack } => {
            owed.acks.push((job.clone(), ack));
            for row in rows {
                let ranges = std::iter::once(row.first)
                    .chain(row.more)
                    .map(|(a, b)| (a as u64, b as u64));
                EventsRun::add(
                    run,
                    ev,
                    at,
                    &job,
                    ranges,
                    (row.state, row.attempts, row.status, row.error),
                )?;
            }
            Ok(())
        }
        // Callers pass only the two kinds above; anything else is settled unwritten.
        other => {
            owed.settle(other);
            Ok(())
        }
    }
}

/// Event records of one job with the same outcome, gathered within a transaction.
struct EventsRun {
    job: String,
    ranges: Vec<(u64, u64)>,
    state: &'static str,
    attempts: u32,
    status: Option<u16>,
    error: Option<String>,
}

impl EventsRun {
    /// Add a record's ranges to the open run when it agrees, or write the run and
    /// open another.
    fn add(
        run: &mut Option<Self>,
        ev: &mut rusqlite::CachedStatement<'_>,
        at: &str,
        job: &str,
        ranges: impl Iterator<Item = (u64, u64)>,
        (state, attempts, status, error): (&'static str, u32, Option<u16>, Option<String>),
    ) -> rusqlite::Result<()> {
        if let Some(open) = run
            && open.is(job, state, attempts, status, error.as_deref())
        {
            open.ranges.extend(ranges);
            return Ok(());
        }
        let done = run.replace(Self {
            job: job.to_owned(),
            ranges: ranges.collect(),
            state,
            attempts,
            status,
            error,
        });
        match done {
            Some(d) => d.write(ev, at),
            None => Ok(()),
        }
    }

    fn is(
        &self,
        job: &str,
        state: &str,
        attempts: u32,
        status: Option<u16>,
        error: Option<&str>,
    ) -> bool {
        self.job == job
            && self.state == state
            && self.attempts == attempts
            && self.status == status
            && self.error.as_deref() == error
    }

    fn write(self, ev: &mut rusqlite::CachedStatement<'_>, at: &str) -> rusqlite::Result<()> {
        for (a, b) in merge(self.ranges) {
            ev.execute(params![
                self.job,
                a as i64,
                b as i64,
                self.state,
                i64::from(self.attempts),
                self.status.map(i64::from),
                self.error,
                at
            ])?;
        }
        Ok(())
    }
}

/// Write one record into the open transaction; its ack joins the batch's.
#[allow(clippy::too_many_arguments)]
fn apply(
    tx: &rusqlite::Transaction<'_>,
    ev: &mut rusqlite::CachedStatement<'_>,
    r: Record,
    owed: &mut Owed,
    at: &str,
    pid: i64,
) -> rusqlite::Result<()> {
    match r {
        Record::JobCreated(j, ack) => {
            owed.acks.push((j.job.clone(), ack));
            tx.execute(
                "INSERT OR IGNORE INTO jobs(id, destination, source, total_events, created_at, state, events_sha256, destination_sha256, pid, heartbeat_at, destination_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?5, ?9)",
                params![
                    j.job,
                    j.destination,
                    j.source,
                    j.total_events as i64,
                    at,
                    j.fingerprint.events_digest,
                    j.fingerprint.destination_sha256,
                    pid,
                    (!j.destination_id.is_empty()).then_some(&j.destination_id)
                ],
            )?;
        }
        Record::JobResumed(job, ack) => {
            owed.acks.push((job.clone(), ack));
            tx.execute(
                "UPDATE jobs SET state = 'running', finished_at = NULL, pid = ?2, heartbeat_at = ?3 WHERE id = ?1",
                params![job, pid, at],
            )?;
        }
        r @ (Record::Events { .. } | Record::Outcomes { .. }) => {
            // The commit loop gathers event records into runs itself; this is the
            // same write for a record on its own.
            let mut run = None;
            gather_events(r, &mut run, ev, at, owed)?;
            if let Some(done) = run {
                done.write(ev, at)?;
            }
        }
        // Paged by `write_batch`.
        Record::Attempt(_) => {}
        Record::Capture(c) => {
            tx.execute(
                "INSERT INTO captures(at, method, path, query, headers, body, signature, status, collect) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    c.at,
                    c.method,
                    c.path,
                    c.query,
                    serde_json::to_string(&c.headers).unwrap_or_default(),
                    c.body,
                    c.signature.map(|v| if v { "valid" } else { "invalid" }),
                    c.status,
                    c.collect.as_ref().and_then(|v| serde_json::to_string(v).ok())
                ],
            )?;
        }
        Record::JobFinished { job, state, ack } => {
            owed.acks.push((job.clone(), ack));
            tx.execute(
                "UPDATE jobs SET state = ?2, finished_at = ?3, heartbeat_at = ?3 WHERE id = ?1",
                params![job, state, at],
            )?;
        }
        Record::Heartbeat(job) => {
            owed.unacked.push(job.clone());
            tx.execute(
                "UPDATE jobs SET heartbeat_at = ?2 WHERE id = ?1 AND state = 'running'",
                params![job, at],
            )?;
        }
        Record::Flush(f) => owed.flushes.push(f),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    fn bitmap(v: &[(u64, u64)], n: u64) -> Vec<bool> {
        let mut m = vec![false; n as usize];
        for &(a, b) in v {
            for i in a..=b.min(n - 1) {
                m[i as usize] = true;
            }
        }
        m
    }

    #[test]
    fn range_merge_subtract_and_count_agree_with_a_bitmap() {
        let mut rng = rand::rng();
        for _ in 0..500 {
            let n = 40u64;
            let mut gen_ranges = || -> Vec<(u64, u64)> {
                (0..rng.random_range(0..6))
                    .map(|_| {
                        let a = rng.random_range(0..n);
                        (a, rng.random_range(a..n))
                    })
                    .collect()
            };
            let (x, y) = (gen_ranges(), gen_ranges());
            let (mx, my) = (merge(x.clone()), merge(y.clone()));
            assert_eq!(bitmap(&mx, n), bitmap(&x, n), "merge {x:?}");
            assert!(
                mx.windows(2).all(|w| w[0].1 + 1 < w[1].0),
                "disjoint {mx:?}"
            );
            let d = subtract(&mx, &my);
            let (bx, by) = (bitmap(&x, n), bitmap(&y, n));
            let want: Vec<bool> = bx.iter().zip(&by).map(|(a, b)| *a && !*b).collect();
            assert_eq!(bitmap(&d, n), want, "{x:?} - {y:?} = {d:?}");
            assert_eq!(count(&mx), bx.iter().filter(|b| **b).count() as u64);
        }
        assert_eq!(
            count(&[(0, u64::MAX)]),
            u64::MAX,
            "saturates, never overflows"
        );
    }
}
