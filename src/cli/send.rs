//! `hookline send`: deliver a file of events through a destination with the real
//! runtime, one NDJSON line per request, a summary line last; `--resume JOB` sends
//! only what an interrupted job had not delivered, as its history records.

use std::io::{Read as _, Write as _};
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

/// The events file's fingerprint as the history records it:
/// `xxh3-blocks:<32 hex digits>`, the XXH3-128 of the XXH3-128s of the file's
/// [`BLOCK`]s followed by its length. It tells an edited or other file of the same
/// length from the one a job was sent from (it is not a defence against a forged
/// file: whoever can forge the file chooses what is sent anyway). It runs at memory
/// speed where SHA-256 took a third of a second per 600 MB before the first request,
/// and by blocks so halves of a large file are read on two threads.
const DIGEST_PREFIX: &str = "xxh3-blocks:";

/// The unit of the fingerprint.
const BLOCK: usize = 1 << 20;

fn fingerprint(blocks: &[u128], len: u64) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for b in blocks {
        h.update(&b.to_le_bytes());
    }
    h.update(&len.to_le_bytes());
    format!("{DIGEST_PREFIX}{:032x}", h.digest128())
}

/// A fingerprint recorded before XXH3: a SHA-256 in hex.
fn is_legacy_digest(d: &str) -> bool {
    d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Fill `buf` from `r`; fewer bytes only at the end of the input.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Read a regular file a [`BLOCK`] at a time (the last one shorter), handing each
/// to `each`; `None` for what cannot be read twice or is not a regular file (a pipe,
/// `<(…)`, a device): such a job's resume cannot check its events. Stops early when
/// `stop` is set (the import failed).
fn read_file_blocks(
    path: &Path,
    stop: &AtomicBool,
    cap: u64,
    mut each: impl FnMut(&[u8]),
) -> Option<()> {
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut reader = file.take(cap);
    let mut buf = vec![0u8; BLOCK];
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let n = read_full(&mut reader, &mut buf).ok()?;
        if n > 0 {
            each(&buf[..n]);
        }
        if n < BLOCK {
            return Some(());
        }
    }
}

/// The fingerprint of the events file (see [`DIGEST_PREFIX`]), read on its own thread
/// while the import reads the file; `None` for what is not a regular file.
fn file_digest(path: &Path, stop: &AtomicBool, cap: u64) -> Option<String> {
    let (mut blocks, mut len) = (Vec::new(), 0u64);
    read_file_blocks(path, stop, cap, |block| {
        blocks.push(xxhash_rust::xxh3::xxh3_128(block));
        len += block.len() as u64;
    })?;
    Some(fingerprint(&blocks, len))
}

/// SHA-256 (hex) of the events file: how jobs recorded before XXH3 fingerprinted
/// their events, computed only to resume such a job.
fn legacy_file_sha256(path: &Path) -> Option<String> {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    read_file_blocks(path, &AtomicBool::new(false), u64::MAX, |b| hash.update(b))?;
    Some(hex::encode(hash.finalize()))
}

/// Split what a reader gives into lines (without their `\n`) with a SIMD search, in
/// place: only a line a read cut in two is copied. `line` returns `false` to stop.
struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    partial: Vec<u8>,
}

impl<R: std::io::Read> Lines<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            buf: vec![0u8; 1 << 20],
            partial: Vec::new(),
        }
    }

    /// Feed every line to `line`. Returns `Ok(false)` when `line` stopped it.
    fn each(&mut self, mut line: impl FnMut(&[u8]) -> bool) -> std::io::Result<bool> {
        loop {
            let n = match self.reader.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let read = &self.buf[..n];
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', read) {
                let piece = &read[start..end];
                start = end + 1;
                let go = if self.partial.is_empty() {
                    line(piece)
                } else {
                    self.partial.extend_from_slice(piece);
                    let go = line(&self.partial);
                    self.partial.clear();
                    go
                };
                if !go {
                    return Ok(false);
                }
            }
            self.partial.extend_from_slice(&read[start..]);
        }
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            return Ok(line(&last));
        }
        Ok(true)
    }
}

/// The start of a fingerprint, enough to tell two apart in a message.
fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix(DIGEST_PREFIX).unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
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
    // A job recorded before XXH3 has the file's SHA-256: compare like with like.
    let legacy = info
        .events_digest
        .as_ref()
        .filter(|was| is_legacy_digest(was))
        .and(fingerprint.events_digest.as_ref())
        .and_then(|_| legacy_file_sha256(&args.target.events));
    let now = legacy.as_ref().or(fingerprint.events_digest.as_ref());
    match (&info.events_digest, now) {
        (Some(was), Some(now)) if was != now && !args.force => {
            return Err(usage(format!(
                "job {job} was sent from other events: {file} has the same number of events but different content (fingerprint {} now, {} then){force}",
                short(now),
                short(was)
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
    } else if info.events_digest.is_none() || fingerprint.events_digest.is_none() {
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

/// What a first read of an NDJSON file found: its event positions and its fingerprint.
struct Scan {
    positions: usize,
    digest: String,
}

/// What reading one byte range of a file found, to be joined with its neighbours'.
#[derive(Default)]
struct RangeScan {
    blocks: Vec<u128>,
    len: u64,
    /// The bytes before the range's first `\n` (all of them when it has none).
    head: Vec<u8>,
    newline: bool,
    /// Positions among the lines between the first and the last `\n`.
    positions: usize,
    /// Whether the first of those positions is an event (`None`: there is none).
    first: Option<bool>,
    /// The bytes after the last `\n`.
    tail: Vec<u8>,
}

/// Whether a position's line holds an event, as the stream will decode it.
fn is_event_line(bytes: &[u8]) -> bool {
    matches!(
        NdjsonStream::new().line(bytes),
        Some(StreamItem::Event { .. })
    )
}

/// Read bytes `start .. start + len` of `path` (to its end when `len` is `None`) a
/// [`BLOCK`] at a time (`start` is a multiple of it), hashing each block and counting
/// the positions of the lines wholly inside. A line a block cuts is copied, no other.
fn scan_range(path: &Path, start: u64, len: Option<u64>) -> std::io::Result<RangeScan> {
    use std::io::Seek as _;
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(start))?;
    let mut reader = file.take(len.unwrap_or(u64::MAX));
    let mut buf = vec![0u8; BLOCK];
    let mut r = RangeScan::default();
    let mut cur: Vec<u8> = Vec::new();
    loop {
        let n = read_full(&mut reader, &mut buf)?;
        let block = &buf[..n];
        if n > 0 {
            r.blocks.push(xxhash_rust::xxh3::xxh3_128(block));
            r.len += n as u64;
        }
        let mut from = 0;
        for end in memchr::memchr_iter(b'\n', block) {
            let piece = &block[from..end];
            from = end + 1;
            let line: &[u8] = if cur.is_empty() {
                piece
            } else {
                cur.extend_from_slice(piece);
                &cur
            };
            if !r.newline {
                r.head = line.to_vec();
                r.newline = true;
            } else if NdjsonStream::is_position(line) {
                r.first.get_or_insert_with(|| is_event_line(line));
                r.positions += 1;
            }
            cur.clear();
        }
        cur.extend_from_slice(&block[from..]);
        if n < BLOCK {
            break;
        }
    }
    if r.newline {
        r.tail = cur;
    } else {
        r.head = cur;
    }
    Ok(r)
}

/// Read `path` once, counting its event positions (non-blank lines) and
/// fingerprinting its bytes — its two halves on two threads. `Ok(None)` when it is
/// not NDJSON to stream (its first event line is not a JSON object on its own, or it
/// has a single event: a document), so the caller imports it whole.
fn scan_ndjson(path: &Path) -> anyhow::Result<Option<Scan>> {
    let io = |e: std::io::Error| usage(format!("{}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(io)?.len();
    let blocks = size.div_ceil(BLOCK as u64);
    let split = (blocks / 2) * BLOCK as u64;
    let (first, second) = std::thread::scope(|s| {
        let second = s.spawn(|| scan_range(path, split, None));
        let first = scan_range(path, 0, Some(split));
        (first, second.join())
    });
    let second = second.map_err(|_| {
        anyhow::anyhow!(
            "internal error: the thread reading {} stopped unexpectedly",
            path.display()
        )
    })?;
    let parts = [first.map_err(io)?, second.map_err(io)?];
    // Join the halves: a line the split cuts is the first half's tail and the second
    // half's head.
    let (mut positions, mut first_event) = (0usize, None);
    let mut pending: Vec<u8> = Vec::new();
    // The first line joined here is line 1 (the first half's head, or all of it).
    let mut line_one = true;
    let mut whole_line = |line: &[u8], positions: &mut usize, first_event: &mut Option<bool>| {
        let line = if std::mem::take(&mut line_one) {
            line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line)
        } else {
            line
        };
        if NdjsonStream::is_position(line) {
            first_event.get_or_insert_with(|| is_event_line(line));
            *positions += 1;
        }
    };
    let (mut digests, mut len) = (Vec::new(), 0u64);
    for p in parts {
        digests.extend_from_slice(&p.blocks);
        len += p.len;
        pending.extend_from_slice(&p.head);
        if !p.newline {
            continue;
        }
        whole_line(&pending, &mut positions, &mut first_event);
        if p.positions > 0 {
            first_event.get_or_insert(p.first == Some(true));
            positions += p.positions;
        }
        pending = p.tail;
    }
    if !pending.is_empty() {
        whole_line(&pending, &mut positions, &mut first_event);
    }
    Ok((first_event == Some(true) && positions >= 2).then(|| Scan {
        positions,
        digest: fingerprint(&digests, len),
    }))
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
    let mut decoder = NdjsonStream::new();
    let mut chunk = Vec::with_capacity(STREAM_CHUNK);
    let mut taken = true;
    Lines::new(file)
        .each(|bytes| {
            if decoder.positions() >= total {
                return false;
            }
            if let Some(item) = decoder.line(bytes) {
                chunk.push(item);
                if chunk.len() == STREAM_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(STREAM_CHUNK));
                    taken = tx.blocking_send(full).is_ok();
                }
            }
            taken
        })
        .map_err(io)?;
    if !taken || (!chunk.is_empty() && tx.blocking_send(chunk).is_err()) {
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

/// Writes [`RequestLine`]s: the bytes `serde_json` writes for one (a test compares
/// them), built by hand, with the request summary (the same for every request of a
/// route) escaped once, not once a line.
#[derive(Default)]
struct LineWriter {
    last_request: String,
    escaped: Vec<u8>,
    buf: Vec<u8>,
}

impl LineWriter {
    fn write(&mut self, out: &mut impl std::io::Write, line: &RequestLine) -> std::io::Result<()> {
        let Self {
            last_request,
            escaped,
            buf,
        } = self;
        let mut n = itoa::Buffer::new();
        buf.clear();
        buf.extend_from_slice(b"{\"request\":");
        match line.request {
            None => buf.extend_from_slice(b"null"),
            Some(r) => {
                if r != last_request.as_str() {
                    r.clone_into(last_request);
                    escaped.clear();
                    json_string(escaped, r);
                }
                buf.extend_from_slice(escaped);
            }
        }
        buf.extend_from_slice(b",\"events\":[");
        for (i, e) in line.events.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(n.format(*e).as_bytes());
        }
        buf.extend_from_slice(b"],\"status\":");
        match line.status {
            Some(s) => buf.extend_from_slice(n.format(s).as_bytes()),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"attempts\":");
        buf.extend_from_slice(n.format(line.attempts).as_bytes());
        buf.extend_from_slice(match line.outcome {
            OutcomeKind::Delivered => b",\"outcome\":\"delivered\",\"error\":".as_slice(),
            OutcomeKind::Failed => b",\"outcome\":\"failed\",\"error\":",
            OutcomeKind::Cancelled => b",\"outcome\":\"cancelled\",\"error\":",
        });
        match line.error {
            Some(e) => json_string(buf, e),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b"}\n");
        out.write_all(buf)
    }
}

/// `s` as a JSON string, escaped as `serde_json` escapes it: `"`, `\` and control
/// characters (`\n`, `\t`, …, else `\u00xx`); everything else as is.
fn json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let b = s.as_bytes();
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        let short = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\t' => b't',
            b'\r' => b'r',
            0x08 => b'b',
            0x0c => b'f',
            0..0x20 => 0,
            _ => continue,
        };
        out.extend_from_slice(&b[from..i]);
        from = i + 1;
        if short == 0 {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 15)]);
        } else {
            out.push(b'\\');
            out.push(short);
        }
    }
    out.extend_from_slice(&b[from..]);
    out.push(b'"');
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
    // A large NDJSON file is read twice, never held: once to count and fingerprint it (what
    // the history records before anything is sent), then as it is sent.
    let scan = match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() >= stream_min_bytes()? => scan_ndjson(path)?,
        _ => None,
    };
    let (events, import_errors, events_digest) = if let Some(scan) = &scan {
        (None, Vec::new(), Some(scan.digest.clone()))
    } else {
        let stop = AtomicBool::new(false);
        let (loaded, events_digest) = std::thread::scope(|s| {
            let hash = s.spawn(|| file_digest(path, &stop, MAX_IMPORT_BYTES + 1));
            let loaded = load_events(path, true);
            stop.store(loaded.is_err(), Ordering::Relaxed);
            (loaded, hash.join().ok().flatten())
        });
        let (events, import_errors) = loaded?;
        (Some(events), import_errors, events_digest)
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
        events_digest,
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
    let mut lines = LineWriter::default();
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
                    lines.write(&mut out, &line)?;
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
                lines.write(&mut out, &line)?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn request_lines_are_the_bytes_serde_json_writes() {
        use super::{LineWriter, OutcomeKind, RequestLine};
        let odd = "a\"b\\c\n\t\r\u{8}\u{c}\u{1}\u{1f}\u{7f} é \u{2028} 🎉";
        let url = "POST https://x.example/a?k=***";
        let cases = [
            (
                Some(url),
                vec![0],
                Some(200),
                1,
                OutcomeKind::Delivered,
                None,
            ),
            (
                Some(url),
                vec![1, 2, 30_000_000],
                Some(503),
                3,
                OutcomeKind::Failed,
                Some(odd),
            ),
            (Some(odd), vec![], None, 0, OutcomeKind::Cancelled, Some("")),
            (
                None,
                vec![7],
                None,
                0,
                OutcomeKind::Failed,
                Some("render: bad"),
            ),
            (
                Some(url),
                vec![usize::MAX],
                Some(u16::MAX),
                u32::MAX,
                OutcomeKind::Delivered,
                None,
            ),
        ];
        let (mut w, mut got, mut want) = (LineWriter::default(), Vec::new(), Vec::new());
        for (request, events, status, attempts, outcome, error) in &cases {
            let line = RequestLine {
                request: *request,
                events,
                status: *status,
                attempts: *attempts,
                outcome,
                error: *error,
            };
            w.write(&mut got, &line).expect("write to a Vec");
            serde_json::to_writer(&mut want, &line).expect("write to a Vec");
            want.push(b'\n');
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }

    use super::{BLOCK, Lines, scan_ndjson};
    use crate::core::events::{NdjsonStream, StreamItem};

    /// What one read, line by line, finds: positions, and whether the first is an event.
    fn reference(data: &[u8]) -> (usize, bool) {
        let mut d = NdjsonStream::new();
        let mut first = None;
        let body = data.strip_suffix(b"\n").unwrap_or(data);
        for line in body.split(|&b| b == b'\n') {
            if let Some(item) = d.line(line) {
                first.get_or_insert(matches!(item, StreamItem::Event { .. }));
            }
        }
        (d.positions(), first == Some(true))
    }

    fn scan(data: &[u8]) -> Option<(usize, String)> {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("e.ndjson");
        std::fs::write(&path, data).expect("write");
        let whole = super::file_digest(&path, &std::sync::atomic::AtomicBool::new(false), u64::MAX)
            .expect("digest");
        scan_ndjson(&path).expect("scan").map(|s| {
            assert_eq!(
                s.digest, whole,
                "the halves' fingerprint is the whole file's"
            );
            (s.positions, s.digest)
        })
    }

    /// Events up to `upto` bytes, then `seam` placed so the split (at 1 MiB in a file
    /// of three blocks) falls `offset` bytes into it, then more events.
    fn file(head: &[u8], seam: &[u8], offset: usize) -> Vec<u8> {
        let mut v = head.to_vec();
        let mut i = 0;
        while v.len() + 40 < BLOCK - offset {
            v.extend_from_slice(format!("{{\"i\":{i}}}\n").as_bytes());
            i += 1;
        }
        while v.len() < BLOCK - offset {
            v.push(b'\n');
        }
        v.extend_from_slice(seam);
        while v.len() < 2 * BLOCK + BLOCK / 2 {
            v.extend_from_slice(format!("{{\"j\":{i}}}\n").as_bytes());
            i += 1;
        }
        v
    }

    #[test]
    fn the_two_halves_count_what_one_read_counts_wherever_the_split_falls() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "an event cut by the split",
                file(b"", b"{\"cut\":\"here\"}\n", 5),
            ),
            (
                "blanks before the split, the event after",
                file(b"", b"        {\"late\":1}\n", 3),
            ),
            ("a blank line cut by the split", file(b"", b"   \t   \n", 2)),
            (
                "a newline just before the split",
                file(b"", b"{\"next\":1}\n", 0),
            ),
            (
                "a newline just after the split",
                file(b"", b"\n{\"n\":1}\n", 0),
            ),
            (
                "a byte-order mark and blank lines first",
                file(b"\xef\xbb\xbf\n\n  \n", b"{\"x\":1}\n", 4),
            ),
            (
                "non-ASCII blanks around the split",
                file(b"", "\u{a0}\u{a0}\u{2003}\n".as_bytes(), 3),
            ),
            ("a bad line across the split", file(b"", b"{nope\n", 2)),
            ("no final newline", {
                let mut v = file(b"", b"{\"a\":1}\n", 7);
                v.extend_from_slice(b"{\"last\":true}");
                v
            }),
            ("one line longer than the first half", {
                let mut v = format!("{{\"big\":\"{}\"}}\n", "x".repeat(BLOCK + 100)).into_bytes();
                v.extend_from_slice(&file(b"", b"{\"a\":1}\n", 1)[..BLOCK]);
                v.extend_from_slice(b"\n{\"z\":1}\n");
                v
            }),
        ];
        for (what, data) in cases {
            let (positions, streamable) = reference(&data);
            assert!(streamable, "{what}: the reference streams it");
            let got = scan(&data).unwrap_or_else(|| panic!("{what}: not streamed"));
            assert_eq!(got.0, positions, "{what}");
        }
    }

    #[test]
    fn a_file_whose_first_event_line_is_not_an_event_is_not_streamed() {
        let data = file(b"[1, 2]\n", b"{\"a\":1}\n", 3);
        assert!(scan(&data).is_none());
        let small = b"{\"only\":1}\n";
        assert!(scan(small).is_none(), "a single event is a document");
    }

    /// Gives at most `step` bytes per read, so lines are cut at every place.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn split(data: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        Lines::new(Trickle { data, step })
            .each(|l| {
                lines.push(l.to_vec());
                true
            })
            .expect("reads");
        lines
    }

    #[test]
    fn lines_are_the_same_however_the_reads_cut_them() {
        let data = b"{\"a\":1}\n\n  \r\n{\"b\":\"x\\ny\"}\r\n\xc3\xa9\n{\"last\":true}";
        let expected: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        for step in [1, 2, 3, 7, 64, 1 << 20] {
            assert_eq!(split(data, step), expected, "reads of {step} bytes");
        }
        // A final newline ends the last line; it does not start an empty one.
        assert_eq!(split(b"a\nb\n", 1), vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn lines_stop_when_told() {
        let mut n = 0;
        let done = Lines::new(Trickle {
            data: b"1\n2\n3\n",
            step: 1,
        })
        .each(|_| {
            n += 1;
            n < 2
        })
        .expect("reads");
        assert!(!done);
        assert_eq!(n, 2);
    }
}
