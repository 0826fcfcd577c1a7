//! `hookline capture`: run the capture receiver in the foreground, printing
//! `listening on http://…` and then one NDJSON line per request; `--out FILE`
//! also appends each capture as an event, ready to replay with `send`.
//!
//! `--out` and the history get every capture; stdout is best-effort. Its lines go
//! through a bounded queue to a thread of their own, so a slow or stalled reader of
//! stdout skips lines (and is told how many) instead of stalling `--out` or growing
//! memory. On SIGTERM or Ctrl-C the receiver stops, finishes what is in flight, and
//! `--out` is written to the last answered request before the process exits.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::{
    UsageError, json_terminal_safe, open_history, terminal_safe_line as terminal_safe, usage,
};
use crate::capture::{self, CaptureConfig, Faults, Verify};
use crate::core::model::HmacAlgorithm;
use crate::core::secret::Secrets;
use crate::runtime::{Command, Runtime, RuntimeConfig, Update};
use crate::store::history::History;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyKind {
    /// `X-Signature`: hex HMAC-SHA1 of the body (Customer.io style).
    HmacSha1,
    /// `X-Signature`: hex HMAC-SHA256 of the body.
    HmacSha256,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
}

#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = capture::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Check each request's signature with this secret (by name: keyring or `HOOKLINE_SECRET`_<NAME>).
    #[arg(long, value_name = "NAME")]
    pub verify_secret: Option<String>,
    #[arg(
        long,
        value_enum,
        default_value = "hmac-sha1",
        requires = "verify_secret"
    )]
    pub verify_kind: VerifyKind,
    /// The header holding an HMAC signature.
    #[arg(long, default_value = "X-Signature")]
    pub verify_header: String,
    /// Share of requests to fail (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Status for failed requests.
    #[arg(long, default_value_t = 500)]
    pub fail_status: u16,
    /// `Retry-After` seconds on failed requests.
    #[arg(long, value_name = "SECS")]
    pub retry_after: Option<u64>,
    /// Delay before every answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of connections to close without an answer (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Larger bodies get 413.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Append each capture as an event (NDJSON) to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The history database for captures (default: the user's data directory).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Keep captures out of the history.
    #[arg(long)]
    pub no_history: bool,
    /// Record nothing, print nothing per request: a bare sink for benchmarks.
    #[arg(long)]
    pub no_record: bool,
    /// Record credential and signature headers (`Authorization`, `Cookie`, API keys,
    /// signatures) as received. Without it they are stored and printed as `***`.
    #[arg(long)]
    pub raw_capture: bool,
    /// Close a connection whose request head has not fully arrived after this long.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Answer 408 when a request body has not fully arrived after this long.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Close a keep-alive connection with no request for this long.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub idle_timeout_ms: u64,
    /// Serve at most this many connections at once (default: 1024, or less under a low
    /// open-file limit); more wait until one closes.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
}

/// Bytes of lines waiting for stdout; past this, lines are skipped (never `--out` or the
/// history). One line is always let through when nothing is waiting, however long.
const STDOUT_QUEUE_BYTES: usize = 1 << 20;

/// The stdout side: a byte-bounded queue to a writer thread that may block on a slow reader.
struct Printer {
    tx: Option<Sender<String>>,
    queued: Arc<AtomicUsize>,
    skipped: Arc<AtomicU64>,
    skipped_total: u64,
    closed: Arc<AtomicBool>,
}

impl Printer {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let queued = Arc::new(AtomicUsize::new(0));
        let skipped = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let (q, sk, cl) = (queued.clone(), skipped.clone(), closed.clone());
        // Not joined: at exit a stdout nobody reads must not hold the process.
        std::thread::spawn(move || {
            let mut buf = String::new();
            while let Ok(first) = rx.recv() {
                buf.clear();
                let n = sk.swap(0, Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(buf, "{{\"skipped\":{n}}}");
                }
                let mut taken = first.len();
                buf.push_str(&first);
                while buf.len() < 1 << 16
                    && let Ok(more) = rx.try_recv()
                {
                    taken += more.len();
                    buf.push_str(&more);
                }
                let mut out = std::io::stdout().lock();
                let ok = out
                    .write_all(buf.as_bytes())
                    .and_then(|()| out.flush())
                    .is_ok();
                drop(out);
                q.fetch_sub(taken, Ordering::Relaxed);
                if !ok {
                    // stdout closed: the receiver keeps recording to --out and the history.
                    cl.store(true, Ordering::Relaxed);
                    return;
                }
            }
        });
        Self {
            tx: Some(tx),
            queued,
            skipped,
            skipped_total: 0,
            closed,
        }
    }

    /// Queue one line (ending in `\n`); never blocks.
    fn line(&mut self, line: String) {
        if self.closed.load(Ordering::Relaxed) {
            self.tx = None;
        }
        let Some(tx) = &self.tx else { return };
        let waiting = self.queued.load(Ordering::Relaxed);
        if waiting > 0 && waiting + line.len() > STDOUT_QUEUE_BYTES {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            self.skipped_total += 1;
            return;
        }
        self.queued.fetch_add(line.len(), Ordering::Relaxed);
        if tx.send(line).is_err() {
            self.tx = None;
        }
    }
}

pub fn capture(args: &CaptureArgs, secrets: &Secrets) -> anyhow::Result<u8> {
    let verify = match &args.verify_secret {
        None => None,
        Some(name) => {
            let secret = secrets
                .get(name)
                .map_err(|e| usage(terminal_safe(&e.to_string()).into_owned()))?;
            Some(match args.verify_kind {
                VerifyKind::HmacSha1 => Verify::Hmac {
                    algorithm: HmacAlgorithm::Sha1,
                    secret,
                    header: args.verify_header.clone(),
                },
                VerifyKind::HmacSha256 => Verify::Hmac {
                    algorithm: HmacAlgorithm::Sha256,
                    secret,
                    header: args.verify_header.clone(),
                },
                VerifyKind::StandardWebhooks => Verify::StandardWebhooks { secret },
            })
        }
    };
    let config = CaptureConfig {
        listen: args.listen,
        verify,
        faults: Faults {
            fail_rate: args.fail_rate,
            fail_status: args.fail_status,
            retry_after: args.retry_after,
            latency_ms: args.latency_ms,
            drop_rate: args.drop_rate,
        },
        max_body_bytes: args.max_body_bytes,
        record: !args.no_record,
        raw_capture: args.raw_capture,
        header_read_timeout: Duration::from_millis(args.header_timeout_ms),
        body_read_timeout: Duration::from_millis(args.body_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        max_connections: args
            .max_connections
            .unwrap_or_else(capture::default_max_connections),
        ..CaptureConfig::default()
    };
    let history = open_history(args.history.as_deref(), args.no_history || args.no_record)
        .map_err(|e| {
            if e.is::<UsageError>() {
                usage(terminal_safe(&e.to_string()).into_owned())
            } else {
                anyhow::anyhow!("{}", terminal_safe(&format!("{e:#}")))
            }
        })?;
    let mut out_file = match &args.out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| usage(terminal_safe(&format!("{}: {e}", p.display())).into_owned()))?,
        )),
        None => None,
    };
    // The receiver runs in the engine's runtime, as the app runs it: StartCapture in,
    // CaptureStarted / Captured / CaptureStopped out. This thread waits for those
    // updates and for signals on a small runtime of its own.
    let mut rconf = RuntimeConfig::new(secrets.clone());
    rconf.capture_history = history.as_ref().map(History::writer);
    let (engine, updates) = Runtime::start(rconf, || {}).map_err(|e| anyhow::anyhow!(e))?;
    let (utx, mut urx) = tokio::sync::mpsc::unbounded_channel();
    // Ends when the engine is dropped (its update sender goes with it).
    std::thread::spawn(move || {
        while let Ok(u) = updates.recv() {
            if utx.send(u).is_err() {
                break;
            }
        }
    });
    let sig = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut printer = None;
    let run = sig.block_on(async {
        if !engine.send(Command::StartCapture { config }) {
            anyhow::bail!("the runtime stopped before the receiver started");
        }
        let addr = loop {
            match urx.recv().await {
                Some(Update::CaptureStarted { addr }) => break addr,
                Some(Update::CaptureStopped { error }) => {
                    return Err(usage(
                        terminal_safe(error.as_deref().unwrap_or("the receiver stopped")).into_owned(),
                    ));
                }
                Some(Update::Error { message, .. }) => anyhow::bail!("{}", terminal_safe(&message)),
                Some(_) => {}
                None => anyhow::bail!("the runtime stopped before the receiver started"),
            }
        };
        // Before `listening on`: a SIGTERM sent as soon as that line is read must be caught.
        let mut term = Terminate::new()?;
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "listening on http://{addr}")?;
            stdout.flush()?;
        }
        if !addr.ip().is_loopback() {
            eprintln!(
                "hookline: warning: listening on {addr}, reachable from the network: captures record what \
                 senders send, including credentials{}",
                if args.raw_capture {
                    " (and --raw-capture keeps Authorization, cookies, API keys and signatures as received)"
                } else {
                    " (Authorization, cookies, API keys and signatures are stored as ***)"
                }
            );
        }
        let p = printer.insert(Printer::start());
        let mut take = |c: capture::Capture, out: &mut Option<std::io::BufWriter<std::fs::File>>| -> anyhow::Result<()> {
            if let (Some(f), Some(ev)) = (out.as_mut(), capture::capture_to_event(&c)) {
                let line = json_terminal_safe(&ev.to_string()).into_owned();
                writeln!(f, "{line}").map_err(|e| out_error(args, &e))?;
            }
            let mut line = json_terminal_safe(&c.to_json().to_string()).into_owned();
            line.push('\n');
            p.line(line);
            Ok(())
        };
        // What one update means here: `Ok(true)` once the receiver has stopped.
        let mut apply = |u: Update, out: &mut Option<std::io::BufWriter<std::fs::File>>| -> anyhow::Result<bool> {
            match u {
                Update::Captured(c) => take(*c, out).map(|()| false),
                Update::CaptureStopped { error: Some(e) } => {
                    anyhow::bail!("receiver: {}", terminal_safe(&e))
                }
                Update::CaptureStopped { error: None } => Ok(true),
                _ => Ok(false),
            }
        };
        let mut stopped = false;
        loop {
            tokio::select! {
                u = urx.recv() => {
                    let Some(u) = u else { break };
                    stopped = apply(u, &mut out_file)?;
                    // Write what is queued, then flush once, so a burst costs one write.
                    while !stopped && let Ok(u) = urx.try_recv() {
                        stopped = apply(u, &mut out_file)?;
                    }
                    if let Some(f) = out_file.as_mut() {
                        f.flush().map_err(|e| out_error(args, &e))?;
                    }
                    if stopped {
                        break;
                    }
                }
                _ = tokio::signal::ctrl_c() => break,
                () = term.recv() => break,
            }
        }
        // Stop accepting and let in-flight requests finish; every answered request is
        // reported before `CaptureStopped`, so taking updates until then puts the last
        // one in --out.
        if !stopped && engine.send(Command::StopCapture) {
            while let Some(u) = urx.recv().await {
                if apply(u, &mut out_file)? {
                    break;
                }
            }
        }
        if let Some(f) = out_file.as_mut() {
            f.flush().map_err(|e| out_error(args, &e))?;
            f.get_ref().sync_data().map_err(|e| out_error(args, &e))?;
        }
        anyhow::Ok(())
    });
    drop(engine);
    // Whatever ended the run (a signal, or --out failing), what reached the history stays.
    let flushed = history.as_ref().map(|h| h.writer().flush());
    run?;
    if let Some(Err(e)) = flushed {
        return Err(anyhow::anyhow!("history: {}", terminal_safe(&e)));
    }
    if let Some(p) = printer {
        if p.skipped_total > 0 {
            let kept = match (args.out.is_some(), history.is_some()) {
                (true, true) => " (--out and the history have them all)",
                (true, false) => " (--out has them all)",
                (false, true) => " (the history has them all)",
                (false, false) => "",
            };
            eprintln!(
                "hookline: stdout did not keep up: {} capture lines were not printed{kept}",
                p.skipped_total
            );
        }
        if p.closed.load(Ordering::Relaxed) {
            eprintln!("hookline: stdout was closed; capture lines after that were not printed");
        }
    }
    Ok(0)
}

fn out_error(args: &CaptureArgs, e: &std::io::Error) -> anyhow::Error {
    let path = args
        .out
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    anyhow::anyhow!("{}: cannot write: {e}", terminal_safe(&path))
}

/// SIGTERM on Unix; elsewhere a wait that never ends (Ctrl-C still stops the run).
struct Terminate(#[cfg(unix)] tokio::signal::unix::Signal);

impl Terminate {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            Ok(Self(tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            )?))
        }
        #[cfg(not(unix))]
        {
            Ok(Self())
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            self.0.recv().await;
        }
        #[cfg(not(unix))]
        {
            std::future::pending::<()>().await;
        }
    }
}
