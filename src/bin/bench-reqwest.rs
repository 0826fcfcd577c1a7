//! The baseline for `scripts/bench-send.sh`: a bare reqwest loop, 64 tasks (or the
//! given number) sharing one client built exactly as `hookline send` builds its own
//! ([`hookline::runtime::delivery::http_client`]), posting one fixed body N times.
//! Prints `{"requests": N, "ok": …, "elapsed_ms": …, "requests_per_s": …}`.
//!
//! Usage: `bench-reqwest URL BODY_FILE N [TASKS]`

use std::process::ExitCode;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-reqwest: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, body, n, rest @ ..] = args.as_slice() else {
        return Err("usage: bench-reqwest URL BODY_FILE N [TASKS]".into());
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("N must be a whole number, not {n:?}"))?;
    let tasks: u64 = match rest.first() {
        Some(t) => t
            .parse()
            .ok()
            .filter(|t| (1..=4096).contains(t))
            .ok_or_else(|| format!("TASKS must be 1 to 4096, not {t:?}"))?,
        None => 64,
    };
    let body = bytes_of(body)?;
    let client = hookline::runtime::delivery::http_client(false)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    rt.block_on(async {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let (client, url, body, next, ok) = (
                client.clone(),
                url.clone(),
                body.clone(),
                next.clone(),
                ok.clone(),
            );
            workers.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    if let Ok(resp) = sent {
                        let good = resp.status().is_success();
                        // Read the body, as hookline does, so the connection is reused.
                        if resp.bytes().await.is_ok() && good {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"requests\": {n}, \"ok\": {}, \"elapsed_ms\": {}, \"requests_per_s\": {:.0}}}",
        ok.load(Ordering::Relaxed),
        (secs * 1000.0) as u64,
        n as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn bytes_of(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}
