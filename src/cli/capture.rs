//! `hookline capture`: run the capture receiver in the foreground, printing
//! `listening on http://…` and then one NDJSON line per request; `--out FILE`
//! also appends each capture as an event, ready to replay with `send`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::{open_history, usage};
use crate::capture::{self, CaptureConfig, Faults, Verify};
use crate::core::model::HmacAlgorithm;
use crate::core::secret::Secrets;
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
}

pub fn capture(args: &CaptureArgs, secrets: &Secrets) -> anyhow::Result<u8> {
    let verify = match &args.verify_secret {
        None => None,
        Some(name) => {
            let secret = secrets.get(name).map_err(|e| usage(e.to_string()))?;
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
    };
    let history = open_history(args.history.as_deref(), args.no_history || args.no_record)?;
    let mut out_file = match &args.out {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| usage(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = capture::start(config, history.as_ref().map(History::writer), (!args.no_record).then_some(tx))
            .await
            .map_err(|e| usage(e.to_string()))?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{}", handle.addr())?;
        stdout.flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                // Without recording nothing arrives here: only a signal ends the loop.
                c = rx.recv(), if !args.no_record => {
                    let Some(c) = c else { break };
                    serde_json::to_writer(&mut stdout, &c.to_json())?;
                    stdout.write_all(b"\n")?;
                    stdout.flush()?;
                    if let (Some(f), Some(ev)) = (out_file.as_mut(), capture::capture_to_event(&c)) {
                        writeln!(f, "{ev}")?;
                    }
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            }
        }
        handle.shutdown().await;
        anyhow::Ok(())
    })?;
    if let Some(h) = &history {
        h.writer().flush().map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(0)
}
