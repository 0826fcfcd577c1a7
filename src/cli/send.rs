//! `hookline send`: deliver a file of events through a destination with the real
//! runtime, one NDJSON line per request, a summary line last; `--resume JOB` sends
//! only what an interrupted job had not delivered, as its history records.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    EXIT_FAILED, Target, destination, load_events, load_workspace_keeping_ids, open_history, usage,
};
use crate::core::events::{NdjsonStream, StreamItem};
use crate::core::import::MAX_IMPORT_BYTES;
use crate::core::secret::Secrets;
use crate::runtime::delivery::{
    EventStream, JobFingerprint, JobLog, NoLog, OutcomeKind, TokenProvider, destination_digest,
};
use crate::runtime::{Command, Runtime, RuntimeConfig, Update};
use crate::store::history::History;

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub target: Target,
    /// Requests in flight at once (overrides the destination's delivery.concurrency).
    #[arg(long, value_parser = super::parse_concurrency)]
    pub concurrency: Option<usize>,
    /// Requests per second at most (overrides `delivery.rate_limit`).
    #[arg(long, value_parser = super::parse_rate)]
    pub rate: Option<f64>,
    /// Attempts per request, first included (overrides `delivery.max_attempts`).
    #[arg(long, value_parser = super::parse_max_attempts)]
    pub max_attempts: Option<u32>,
    /// Resume an interrupted job: send only the events it has not delivered.
    #[arg(long, value_name = "JOB")]
    pub resume: Option<String>,
    /// The history database (default: history.sqlite3 in the user's data directory).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Record nothing (a job sent this way cannot be resumed).
    #[arg(long, conflicts_with = "resume")]
    pub no_history: bool,
    /// With --resume: resume even if the events file or the destination's settings
    /// differ from the job's, or the job looks alive in another process.
    #[arg(long, requires = "resume")]
    pub force: bool,
}

/// SHA-256 (hex) of the events file, read in 64 KiB chunks on its own thread while
/// the import reads the file (it overlaps the import and holds no copy of the file).
/// `None` for what cannot be read twice or is not a regular file (a pipe,
/// `<(…)`, a device): such a job's resume cannot check its events. Stops early
/// when `stop` is set (the import failed).
fn file_sha256(path: &Path, stop: &AtomicBool, cap: u64) -> Option<String> {
    use sha2::Digest as _;
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut reader = file.take(cap);
    let mut hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 18];
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hash.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(hex::encode(hash.finalize()))
}

/// What `--resume JOB` sends: the job's undelivered events, once the job is shown to
/// be the same (destination, events, settings) and not running elsewhere.
fn resume_plan(
    h: &History,
    job: &str,
    args: &SendArgs,
    dest: &crate::core::model::Destination,
    total: usize,
    fingerprint: &JobFingerprint,
) -> anyhow::Result<Vec<usize>> {
    // A damaged database is a bad input (exit 2), like a bad events file.
    let info = h
        .job(job)
        .map_err(|e| usage(e.to_string()))?
        .ok_or_else(|| usage(format!("no job \"{job}\" in {}", h.path().display())))?;
    let file = args.target.events.display();
    if !info.is_for(dest) {
        return Err(usage(format!(
            "job {job} was sent through destination \"{}\", not \"{}\"",
            info.destination, dest.name
        )));
    }
    // Checked before anything is sized by the recorded count.
    if info.total_events != total {
        return Err(usage(format!(
            "job {job} had {} events but {file} has {total}: resume with the same events file",
            info.total_events,
        )));
    }
    let force = " (--force resumes anyway)";
    match (&info.events_sha256, &fingerprint.events_sha256) {
        (Some(was), Some(now)) if was != now && !args.force => {
            return Err(usage(format!(
                "job {job} was sent from other events: {file} has the same number of events but different content (SHA-256 {} now, {} then){force}",
                &now[..12.min(now.len())],
                &was[..12.min(was.len())]
            )));
        }
        _ => {}
    }
    match (&info.destination_sha256, &fingerprint.destination_sha256) {
        (Some(was), Some(now)) if was != now && !args.force => {
            return Err(usage(format!(
                "destination \"{}\" has changed since job {job} was sent (its URL, headers, auth, signing, body, mapping or batching; delivery settings may change): a resume would send different requests{force}",
                dest.name
            )));
        }
        _ => {}
    }
    if info.destination_sha256.is_none() {
        eprintln!(
            "hookline: job {job} has no fingerprint (recorded by an older Hookline): cannot check that {file} and destination \"{}\" are unchanged",
            dest.name
        );
    } else if info.events_sha256.is_none() || fingerprint.events_sha256.is_none() {
        eprintln!(
            "hookline: cannot check that {file} holds the same events as job {job} (only a regular file is fingerprinted); its number of events matches"
        );
    }
    if info.state == "running" && !info.interrupted && !args.force {
        return Err(usage(format!(
            "job {job} is running in another process (pid {}, alive at {}): wait for it, or stop it first{force}",
            info.pid
                .map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            info.heartbeat_at.as_deref().unwrap_or("?")
        )));
    }
    if info.state == "done" {
        eprintln!("hookline: job {job} is already done; resending its undelivered events, if any");
    }
    Ok(h.undelivered_ranges(job)
        .map_err(|e| usage(e.to_string()))?
        .into_iter()
        .flat_map(|(a, b)| a..=b)
        .filter(|i| *i < total)
        .collect())
}

/// Files at least this large whose first event line is a JSON object on its own are
/// sent as a stream (`HOOKLINE_STREAM_MIN_MB`, default 64; 0 streams any such file).
fn stream_min_bytes() -> anyhow::Result<u64> {
    match std::env::var("HOOKLINE_STREAM_MIN_MB") {
        Err(_) => Ok(64 * 1024 * 1024),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(mb) => Ok(mb.saturating_mul(1024 * 1024)),
            _ => Err(usage(
                "HOOKLINE_STREAM_MIN_MB must be a whole number of megabytes",
            )),
        },
    }
}

/// Lines of a streamed file are read this many at a time into one channel message.
const STREAM_CHUNK: usize = 256;
/// Chunks queued between the reader and the job: what memory holds beyond the
/// requests in flight (`STREAM_CHUNK × STREAM_QUEUE` events at most).
const STREAM_QUEUE: usize = 8;

/// What a first read of an NDJSON file found: its event positions and its SHA-256.
struct Scan {
    positions: usize,
    sha256: String,
}

/// Read `path` once, line by line, holding one line at a time, and count its event
/// positions (non-blank lines), while another thread hashes its bytes. `Ok(None)`
/// when it is not NDJSON to stream (its first event line is not a JSON object on its
/// own, or it has a single event: a document), so the caller imports it whole.
fn scan_ndjson(path: &Path) -> anyhow::Result<Option<Scan>> {
    let stop = AtomicBool::new(false);
    let (positions, sha256) = std::thread::scope(|s| {
        let hash = s.spawn(|| file_sha256(path, &stop, u64::MAX));
        let positions = count_positions(path);
        stop.store(!matches!(positions, Ok(Some(_))), Ordering::Relaxed);
        (positions, hash.join().ok().flatten())
    });
    let Some(positions) = positions? else {
        return Ok(None);
    };
    let sha256 = sha256.ok_or_else(|| {
        usage(format!(
            "{}: cannot be read to take its SHA-256",
            path.display()
        ))
    })?;
    Ok((positions >= 2).then_some(Scan { positions, sha256 }))
}

/// The event positions of an NDJSON file; `None` when its first is not an event.
fn count_positions(path: &Path) -> anyhow::Result<Option<usize>> {
    let io = |e: std::io::Error| usage(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut decoder = NdjsonStream::new();
    let mut line = Vec::new();
    let mut first_checked = false;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        let bytes = line.strip_suffix(b"\n").unwrap_or(&line);
        if first_checked {
            decoder.skip(bytes);
        } else if let Some(item) = decoder.line(bytes) {
            if !matches!(item, StreamItem::Event { .. }) {
                return Ok(None);
            }
            first_checked = true;
        }
    }
    Ok(Some(decoder.positions()))
}

/// Read `path` again and hand its first `total` positions to the job, a chunk at a
/// time; blocks while the job is busy (the channel is bounded). Returns the positions
/// read (`None` when the job stopped taking them: it needed no more, or ended), or
/// why reading stopped (the message names the file).
fn read_stream(
    path: &Path,
    total: usize,
    tx: &tokio::sync::mpsc::Sender<Vec<StreamItem>>,
) -> Result<Option<usize>, String> {
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut decoder = NdjsonStream::new();
    let mut line = Vec::new();
    let mut chunk = Vec::with_capacity(STREAM_CHUNK);
    while decoder.positions() < total {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        let bytes = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Some(item) = decoder.line(bytes) {
            chunk.push(item);
            if chunk.len() == STREAM_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(STREAM_CHUNK));
                if tx.blocking_send(full).is_err() {
                    return Ok(None);
                }
            }
        }
    }
    if !chunk.is_empty() && tx.blocking_send(chunk).is_err() {
        return Ok(None);
    }
    Ok(Some(decoder.positions()))
}

/// A job's output line for one request.
#[derive(serde::Serialize)]
struct RequestLine<'a> {
    request: Option<&'a str>,
    events: &'a [usize],
    status: Option<u16>,
    attempts: u32,
    outcome: &'a OutcomeKind,
    error: Option<&'a str>,
}

pub fn send(
    args: &SendArgs,
    secrets: Secrets,
    tokens: Option<Arc<dyn TokenProvider>>,
) -> anyhow::Result<u8> {
    let history = open_history(args.history.as_deref(), args.no_history)?;
    let ws = load_workspace_keeping_ids(&args.target.workspace, history.is_some())?;
    let (mut dest, _) = destination(&ws, &args.target.workspace, &args.target.destination)?;
    if let Some(c) = args.concurrency {
        if c == 0 {
            return Err(usage("--concurrency must be at least 1"));
        }
        dest.delivery.concurrency = c;
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(usage(
                "--rate must be a positive number of requests per second",
            ));
        }
        dest.delivery.rate_limit = Some(r);
    }
    if let Some(m) = args.max_attempts {
        if m == 0 {
            return Err(usage("--max-attempts must be at least 1"));
        }
        dest.delivery.max_attempts = m;
    }
    let path = &args.target.events;
    // A large NDJSON file is read twice, never held: once to count and hash it (what
    // the history records before anything is sent), then as it is sent.
    let scan = match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() >= stream_min_bytes()? => scan_ndjson(path)?,
        _ => None,
    };
    let (events, import_errors, events_sha256) = if let Some(scan) = &scan {
        (None, Vec::new(), Some(scan.sha256.clone()))
    } else {
        let stop = AtomicBool::new(false);
        let (loaded, events_sha256) = std::thread::scope(|s| {
            let hash = s.spawn(|| file_sha256(path, &stop, MAX_IMPORT_BYTES + 1));
            let loaded = load_events(path, true);
            stop.store(loaded.is_err(), Ordering::Relaxed);
            (loaded, hash.join().ok().flatten())
        });
        let (events, import_errors) = loaded?;
        (Some(events), import_errors, events_sha256)
    };
    for e in &import_errors {
        eprintln!("{e}");
    }
    let total = match (&scan, &events) {
        (Some(scan), _) => scan.positions,
        (None, Some(events)) => events.len(),
        (None, None) => 0,
    };
    let fingerprint = JobFingerprint {
        events_sha256,
        destination_sha256: Some(destination_digest(&dest)),
    };
    let (job, only, resume) = match &args.resume {
        Some(job) => {
            let h = history
                .as_ref()
                .ok_or_else(|| usage("--resume needs the history (drop --no-history)"))?;
            let left = resume_plan(h, job, args, &dest, total, &fingerprint)?;
            eprintln!(
                "hookline: resuming job {job}: {} of {total} events not yet delivered",
                left.len(),
            );
            (job.clone(), Some(left), true)
        }
        None => (uuid::Uuid::new_v4().to_string(), None, false),
    };
    if !resume {
        eprintln!("hookline: job {job} (resume with --resume {job})");
    }
    let mut config = RuntimeConfig::new(secrets);
    config.log = history.as_ref().map_or_else(
        || Arc::new(NoLog) as Arc<dyn JobLog>,
        |h| Arc::new(h.writer()) as Arc<dyn JobLog>,
    );
    config.tokens = tokens;
    let (rt, updates) = Runtime::start(config, || {}).map_err(|e| anyhow::anyhow!(e))?;
    let source = args.target.events.display().to_string();
    let mut reader = None;
    if let Some(events) = events {
        rt.send(Command::Send {
            job: job.clone(),
            destination: Box::new(dest),
            events: Arc::new(events),
            only,
            source,
            resume,
            fingerprint,
        });
    } else {
        let (tx, items) = tokio::sync::mpsc::channel(STREAM_QUEUE);
        let file = path.clone();
        reader = Some(
            std::thread::Builder::new()
                .name("hookline-read".into())
                .spawn(move || read_stream(&file, total, &tx))?,
        );
        rt.send(Command::SendStream {
            job: job.clone(),
            destination: Box::new(dest),
            events: EventStream { total, items },
            only,
            source,
            resume,
            fingerprint,
        });
    }

    let started = Instant::now();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut last_flush = Instant::now();
    let (mut requests, mut delivered, mut failed) = (0u64, 0u64, 0u64);
    let mut job_failed = false;
    let mut dropped = 0u64;
    let skipped = loop {
        let u = match updates.recv_timeout(Duration::from_millis(100)) {
            Ok(u) => u,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                out.flush()?;
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                eprintln!(
                    "hookline: job {job}: the runtime stopped before the job ended; --resume {job} sends what is not recorded as delivered"
                );
                job_failed = true;
                break 0;
            }
        };
        match u {
            Update::Outcomes { outcomes, .. } => {
                for o in outcomes {
                    requests += 1;
                    match o.outcome {
                        OutcomeKind::Delivered => delivered += 1,
                        OutcomeKind::Failed => failed += 1,
                        OutcomeKind::Cancelled => {}
                    }
                    let line = RequestLine {
                        request: Some(&o.request),
                        events: &o.events,
                        status: o.status,
                        attempts: o.attempts,
                        outcome: &o.outcome,
                        error: o.error.as_deref(),
                    };
                    serde_json::to_writer(&mut out, &line)?;
                    out.write_all(b"\n")?;
                }
            }
            Update::Dropped {
                outcomes,
                render_errors,
                ..
            } => {
                // stdout did not keep up: lines were left out (the history has them).
                // The counts come from the job's own stats at the end instead.
                dropped = outcomes + render_errors;
            }
            Update::RenderError { index, error, .. } => {
                failed += 1;
                let line = RequestLine {
                    request: None,
                    events: &[index],
                    status: None,
                    attempts: 0,
                    outcome: &OutcomeKind::Failed,
                    error: Some(&error),
                };
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            }
            Update::JobFinished { end, .. } => {
                if let Some(stats) = end.stats().filter(|_| end.error().is_none()) {
                    if dropped > 0 {
                        delivered = stats.delivered;
                        failed = stats.failed + stats.render_errors;
                        requests = requests.max(stats.delivered + stats.failed);
                    }
                    break stats.skipped;
                }
                // The history failed or the job died: say so, and never exit 0.
                eprintln!("hookline: {}", end.error().unwrap_or("the job stopped"));
                job_failed = true;
                break 0;
            }
            Update::Error { message, .. } => eprintln!("hookline: {message}"),
            _ => {}
        }
        if last_flush.elapsed() > Duration::from_millis(100) {
            out.flush()?;
            last_flush = Instant::now();
        }
    };
    drop(rt);
    if let Some(reader) = reader {
        match reader.join() {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(read))) if read == total || job_failed => {}
            Ok(Ok(Some(read))) => {
                eprintln!(
                    "hookline: {}: {read} of {total} events could be read the second time (the file changed while being sent); --resume {job} sends what is not recorded as delivered",
                    path.display()
                );
                job_failed = true;
            }
            Ok(Err(e)) => {
                eprintln!("hookline: {e}; --resume {job} sends what is not recorded as delivered");
                job_failed = true;
            }
            Err(_) => {
                eprintln!("hookline: internal error: the events reader stopped unexpectedly");
                job_failed = true;
            }
        }
    }
    let mut summary = json!({"job": job, "requests": requests, "delivered": delivered, "failed": failed, "skipped": skipped, "elapsed_ms": started.elapsed().as_millis() as u64});
    if dropped > 0 {
        summary["lines_dropped"] = json!(dropped);
    }
    if let Some(h) = &history {
        // A write error the job already reported is not repeated.
        if let Err(e) = h.writer().flush()
            && !job_failed
        {
            eprintln!("hookline: {e}");
            job_failed = true;
        }
        // The whole job's standing (this run and the ones before it), each event once.
        match h.job_counts(&job) {
            Ok(c) => {
                summary["job_events"] = json!({"total": c.total, "delivered": c.delivered, "failed": c.failed, "skipped": c.skipped, "pending": c.pending});
            }
            Err(e) => eprintln!("hookline: {e}"),
        }
    }
    serde_json::to_writer(&mut out, &json!({ "summary": summary }))?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(if failed == 0 && import_errors.is_empty() && !job_failed {
        0
    } else {
        EXIT_FAILED
    })
}
