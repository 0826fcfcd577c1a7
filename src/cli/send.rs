//! `hookline send`: deliver a file of events through a destination with the real
//! runtime, one NDJSON line per request, a summary line last; `--resume JOB` sends
//! only what an interrupted job had not delivered, as its history records.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{EXIT_FAILED, Target, destination, load_events, load_workspace, open_history, usage};
use crate::core::secret::Secrets;
use crate::runtime::delivery::{JobLog, NoLog, OutcomeKind, TokenProvider};
use crate::runtime::{Command, Runtime, RuntimeConfig, Update};

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
}

pub fn send(
    args: &SendArgs,
    secrets: Secrets,
    tokens: Option<Arc<dyn TokenProvider>>,
) -> anyhow::Result<u8> {
    let history = open_history(args.history.as_deref(), args.no_history)?;
    let ws = load_workspace(&args.target.workspace)?;
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
    let (events, import_errors) = load_events(&args.target.events, true)?;
    for e in &import_errors {
        eprintln!("{e}");
    }
    let (job, only, resume) = match &args.resume {
        Some(job) => {
            let h = history
                .as_ref()
                .ok_or_else(|| usage("--resume needs the history (drop --no-history)"))?;
            let info = h
                .job(job)?
                .ok_or_else(|| usage(format!("no job \"{job}\" in {}", h.path().display())))?;
            let (d, total) = (info.destination, info.total_events);
            let left = h.undelivered(job)?;
            if d != dest.name {
                return Err(usage(format!(
                    "job {job} was sent through destination \"{d}\", not \"{}\"",
                    dest.name
                )));
            }
            if total != events.len() {
                return Err(usage(format!(
                    "job {job} had {total} events but {} has {}: resume with the same events file",
                    args.target.events.display(),
                    events.len()
                )));
            }
            eprintln!(
                "hookline: resuming job {job}: {} of {total} events not yet delivered",
                left.len()
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
    rt.send(Command::Send {
        job: job.clone(),
        destination: Box::new(dest),
        events: Arc::new(events),
        only,
        source,
        resume,
    });

    let started = Instant::now();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut last_flush = Instant::now();
    let (mut requests, mut delivered, mut failed) = (0u64, 0u64, 0u64);
    let skipped = loop {
        let Ok(u) = updates.recv_timeout(Duration::from_millis(100)) else {
            out.flush()?;
            continue;
        };
        match u {
            Update::Outcome { outcome: o, .. } => {
                requests += 1;
                match o.outcome {
                    OutcomeKind::Delivered => delivered += 1,
                    OutcomeKind::Failed => failed += 1,
                    OutcomeKind::Cancelled => {}
                }
                let line = json!({"request": o.request, "events": o.events, "status": o.status, "attempts": o.attempts, "outcome": o.outcome, "error": o.error});
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            }
            Update::RenderError { index, error, .. } => {
                failed += 1;
                let line = json!({"request": null, "events": [index], "status": null, "attempts": 0, "outcome": "failed", "error": error});
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            }
            Update::JobFinished { result, .. } => {
                break result.map_err(usage)?.skipped;
            }
            Update::Error { message } => eprintln!("hookline: {message}"),
            _ => {}
        }
        if last_flush.elapsed() > Duration::from_millis(100) {
            out.flush()?;
            last_flush = Instant::now();
        }
    };
    drop(rt);
    if let Some(h) = &history
        && let Err(e) = h.writer().flush()
    {
        eprintln!("hookline: {e}");
    }
    let summary = json!({"summary": {"job": job, "requests": requests, "delivered": delivered, "failed": failed, "skipped": skipped, "elapsed_ms": started.elapsed().as_millis() as u64}});
    serde_json::to_writer(&mut out, &summary)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(if failed == 0 && import_errors.is_empty() {
        0
    } else {
        EXIT_FAILED
    })
}
