//! The capture receiver: an HTTP server (axum over hyper) on 127.0.0.1 that records
//! what it receives so QA can inspect, save and replay it. Tracardi-style collect
//! routes (`/collect/<event_type>/<source_id>[/<session_id>]`) turn requests into
//! events; anything else is kept as a raw capture. It can check HMAC or Standard
//! Webhooks signatures, limit body size (413), and inject faults: a failure ratio
//! with a chosen status and `Retry-After`, latency, and dropped connections.
//!
//! It is built to survive a hostile network: header, body and idle timeouts, a cap on
//! open connections, back-off when `accept` fails (EMFILE), and credentials in captured
//! headers redacted unless raw capture is asked for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper::body::Body as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

pub use crate::core::job::{Capture, Collect};
use crate::core::model::HmacAlgorithm;
use crate::core::secret::Secret;
use crate::core::sign;
use crate::store::history::HistoryWriter;

/// The receiver's default address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// Which signature to check on every request.
#[derive(Debug, Clone)]
pub enum Verify {
    Hmac {
        algorithm: HmacAlgorithm,
        secret: Secret,
        header: String,
    },
    StandardWebhooks {
        secret: Secret,
    },
}

/// Faults injected for QA.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Share of requests answered with `fail_status` (0..=1).
    pub fail_rate: f64,
    pub fail_status: u16,
    /// Sent with failing responses.
    pub retry_after: Option<u64>,
    /// Delay before answering.
    pub latency_ms: u64,
    /// Share of connections closed without an answer (0..=1).
    pub drop_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            fail_rate: 0.0,
            fail_status: 500,
            retry_after: None,
            latency_ms: 0,
            drop_rate: 0.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub listen: SocketAddr,
    pub verify: Option<Verify>,
    pub faults: Faults,
    pub max_body_bytes: usize,
    /// `false`: a bare sink for benchmarks — answer 200 at once, keep only counters.
    pub record: bool,
    /// Keep credential and signature headers as received (otherwise they are stored as `***`).
    pub raw_capture: bool,
    /// A client must send a request's whole head within this time (slowloris).
    pub header_read_timeout: Duration,
    /// A request's whole body must arrive within this time; otherwise 408.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight is closed after this time.
    pub idle_timeout: Duration,
    /// At most this many connections are served at once. At the cap a new client takes the
    /// place of the connection idle the longest (half-open or keep-alive); when all are busy
    /// it waits, and later clients wait in the listen backlog.
    pub max_connections: usize,
    /// On shutdown, connections get this long to finish their request before they are cut.
    pub shutdown_grace: Duration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            verify: None,
            faults: Faults::default(),
            max_body_bytes: 10 * 1024 * 1024,
            record: true,
            raw_capture: false,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_connections: default_max_connections(),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// 1024, or fewer when the open-file limit is lower, leaving room for the process's
/// other descriptors (history, `--out`, stdio): a full cap must not mean EMFILE.
pub fn default_max_connections() -> usize {
    const MAX: usize = 1024;
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse::<usize>().ok())
        });
    match soft {
        Some(n) => n.saturating_sub(64).clamp(16, MAX),
        None => MAX,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// Counters, readable while the receiver runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub too_large: AtomicU64,
    /// Requests answered 400 because their body was malformed (bad chunked encoding, cut short).
    pub malformed: AtomicU64,
    /// Requests answered 408 because their body did not arrive in time.
    pub timed_out: AtomicU64,
    /// Failed `accept` calls (EMFILE and the like); each one is followed by a back-off.
    pub accept_errors: AtomicU64,
    /// Connections being served right now.
    pub open_connections: AtomicU64,
    /// Idle or half-open connections cut to make room for a new client at the connection cap.
    pub evicted: AtomicU64,
}

struct Shared {
    config: CaptureConfig,
    counters: Arc<Counters>,
    next_id: AtomicU64,
    history: Option<HistoryWriter>,
    live: Option<mpsc::UnboundedSender<Capture>>,
}

/// A running receiver. Dropping it (or calling `shutdown`) stops it.
pub struct ReceiverHandle {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ReceiverHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
    /// Stop accepting and wait for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for ReceiverHandle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Marks a connection to be closed without an answer.
#[derive(Clone)]
struct DropConn(Arc<tokio::sync::Notify>);

/// What the idle timeout looks at: requests in flight on a connection, and when the last
/// one ended.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` when the last request ended.
    last_ms: AtomicU64,
}

impl Activity {
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| self.start + Duration::from_millis(self.last_ms.load(Ordering::Acquire)))
    }
}

/// Counts a request in flight for as long as it lives (also when its connection is cut).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = self.0.start.elapsed().as_millis() as u64;
        self.0.last_ms.store(ms, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A served connection, as the accept loop sees it: whether it is idle, and how to cut it.
#[derive(Clone)]
struct Conn {
    activity: Arc<Activity>,
    kill: Arc<tokio::sync::Notify>,
}

/// The open connections, by a per-receiver id.
type Registry = Arc<std::sync::Mutex<std::collections::HashMap<u64, Conn>>>;

fn lock(r: &Registry) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Conn>> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Cut the connection with no request in flight that has been idle the longest, if it has
/// been idle for at least [`EVICT_MIN_IDLE`]. `false` when there is none.
fn evict_longest_idle(registry: &Registry) -> bool {
    let map = lock(registry);
    let oldest = map
        .values()
        .filter_map(|c| c.activity.idle_since().map(|since| (since, c)))
        .filter(|(since, _)| since.elapsed() >= EVICT_MIN_IDLE)
        .min_by_key(|(since, _)| *since);
    match oldest {
        Some((_, c)) => {
            c.kill.notify_one();
            true
        }
        None => false,
    }
}

/// A connection is only cut for a newcomer after this long without a request: a real client
/// sends its request head at once, and one just accepted has had no chance to.
const EVICT_MIN_IDLE: Duration = Duration::from_millis(250);

/// How often a client waiting for a slot retries eviction while every connection is busy.
const EVICT_RETRY: Duration = Duration::from_millis(50);

/// When a connection task ends, however it ends: the gauge goes down, the registry forgets it.
struct OpenGuard {
    counters: Arc<Counters>,
    registry: Registry,
    id: u64,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.counters
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
        lock(&self.registry).remove(&self.id);
    }
}

fn check_config(config: &CaptureConfig) -> Result<(), CaptureError> {
    for (name, r) in [
        ("fail rate", config.faults.fail_rate),
        ("drop rate", config.faults.drop_rate),
    ] {
        if !(0.0..=1.0).contains(&r) {
            return Err(CaptureError::Config(format!(
                "{name} must be between 0 and 1, got {r}"
            )));
        }
    }
    if StatusCode::from_u16(config.faults.fail_status).is_err() {
        return Err(CaptureError::Config(format!(
            "{} is not an HTTP status",
            config.faults.fail_status
        )));
    }
    for (name, d) in [
        ("header read timeout", config.header_read_timeout),
        ("body read timeout", config.body_read_timeout),
        ("idle timeout", config.idle_timeout),
        ("shutdown grace", config.shutdown_grace),
    ] {
        if d.is_zero() || d > MAX_TIMEOUT {
            return Err(CaptureError::Config(format!(
                "{name} must be between 1 ms and {} ms, got {} ms",
                MAX_TIMEOUT.as_millis(),
                d.as_millis()
            )));
        }
    }
    if !(1..=MAX_CONNECTIONS).contains(&config.max_connections) {
        return Err(CaptureError::Config(format!(
            "max connections must be between 1 and {MAX_CONNECTIONS}, got {}",
            config.max_connections
        )));
    }
    Ok(())
}

/// Timeouts beyond a day are refused: deadlines must stay representable.
const MAX_TIMEOUT: Duration = Duration::from_hours(24);
/// More than any descriptor limit allows; also within what a semaphore can count.
const MAX_CONNECTIONS: usize = 1_000_000;
/// A declared `Content-Length` reserves at most this much up front; the rest grows as it arrives.
const MAX_PREALLOC: u64 = 1 << 20;

/// The shortest and longest pause after a failed `accept`.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// Start the receiver. Captures go to `history` (if any) and to `live` (if any).
///
/// Every capture is handed to `history` and `live` before its request is answered, so
/// once [`ReceiverHandle::shutdown`] returns, everything that was answered is queued there.
pub async fn start(
    config: CaptureConfig,
    history: Option<HistoryWriter>,
    live: Option<mpsc::UnboundedSender<Capture>>,
) -> Result<ReceiverHandle, CaptureError> {
    check_config(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| CaptureError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CaptureError::Bind {
        addr: config.listen,
        source,
    })?;
    let counters = Arc::new(Counters::default());
    let limit = config.max_body_bytes;
    let idle = config.idle_timeout;
    let grace = config.shutdown_grace;
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let shared = Arc::new(Shared {
        config,
        counters: counters.clone(),
        next_id: AtomicU64::new(1),
        history,
        live,
    });
    let router = Router::new()
        .fallback(receive)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared);
    let (stop_tx, mut stop_rx) = oneshot::channel();
    let ctr = counters.clone();
    let task = tokio::spawn(async move {
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut conns = tokio::task::JoinSet::new();
        let mut backoff = Duration::ZERO;
        let registry: Registry = Arc::default();
        let mut next_conn = 0u64;
        loop {
            while conns.try_join_next().is_some() {}
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = &mut stop_rx => break,
            };
            let Ok((stream, _)) = accepted else {
                // EMFILE, ENFILE, ENOBUFS…: the pending connection stays in the backlog and
                // the listener stays readable, so retrying at once would spin. Back off, and
                // free a descriptor held by the connection idle the longest, if any.
                ctr.accept_errors.fetch_add(1, Ordering::Relaxed);
                if evict_longest_idle(&registry) {
                    ctr.evicted.fetch_add(1, Ordering::Relaxed);
                }
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => continue,
                    _ = &mut stop_rx => break,
                }
            };
            backoff = Duration::ZERO;
            // At the cap, a new client takes the slot of the connection idle the longest
            // (half-open or keep-alive, no request in flight); if every one is busy it waits,
            // and no further client is accepted meanwhile (they wait in the backlog).
            let permit = loop {
                if let Ok(p) = slots.clone().try_acquire_owned() {
                    break Some(p);
                }
                if evict_longest_idle(&registry) {
                    ctr.evicted.fetch_add(1, Ordering::Relaxed);
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => break p.ok(),
                    () = tokio::time::sleep(EVICT_RETRY) => {}
                    _ = &mut stop_rx => break None,
                }
            };
            let Some(permit) = permit else { break };
            let _ = stream.set_nodelay(true);
            let id = next_conn;
            next_conn += 1;
            let conn = Conn {
                activity: Arc::new(Activity {
                    start: Instant::now(),
                    in_flight: AtomicUsize::new(0),
                    last_ms: AtomicU64::new(0),
                }),
                kill: Arc::new(tokio::sync::Notify::new()),
            };
            lock(&registry).insert(id, conn.clone());
            ctr.open_connections.fetch_add(1, Ordering::Relaxed);
            let open = OpenGuard {
                counters: ctr.clone(),
                registry: registry.clone(),
                id,
            };
            let served = serve(
                stream,
                conn,
                router.clone(),
                http.clone(),
                idle,
                drain_rx.clone(),
            );
            conns.spawn(async move {
                served.await;
                drop((permit, open));
            });
        }
        drop(listener);
        // Finish what is in flight (idle keep-alive connections close at once), then cut the rest.
        let _ = drain_tx.send(true);
        let _ =
            tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
        conns.shutdown().await;
    });
    Ok(ReceiverHandle {
        addr,
        counters,
        stop: Some(stop_tx),
        task: Some(task),
    })
}

/// Serve one connection until it ends, is dropped by a fault, idles out or is drained.
async fn serve(
    stream: tokio::net::TcpStream,
    conn: Conn,
    router: Router,
    http: hyper::server::conn::http1::Builder,
    idle: Duration,
    mut drain: watch::Receiver<bool>,
) {
    let Conn { activity, kill } = conn;
    let k = DropConn(kill.clone());
    let act = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(k.clone());
        let mut router = router.clone();
        let guard = InFlight::new(act.clone());
        async move {
            let r = tower::Service::call(&mut router, req.map(Body::new)).await;
            drop(guard);
            r
        }
    });
    let conn = http.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut deadline = tokio::time::Instant::now() + idle;
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            () = kill.notified() => break, // dropping the connection closes the socket, unanswered
            _ = drain.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(deadline) => match activity.idle_since() {
                Some(since) if since + idle <= Instant::now() => break,
                Some(since) => deadline = tokio::time::Instant::from_std(since + idle),
                None => deadline = tokio::time::Instant::now() + idle,
            },
        }
    }
}

fn header_map(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn verify(v: &Verify, headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    match v {
        Verify::Hmac {
            algorithm,
            secret,
            header,
        } => sign::verify_hmac(*algorithm, secret.expose().as_bytes(), body, h(header)),
        Verify::StandardWebhooks { secret } => {
            let ts = h("webhook-timestamp").parse::<i64>().unwrap_or(i64::MIN);
            sign::verify_standard_webhooks(
                secret.expose(),
                h("webhook-id"),
                ts,
                body,
                h("webhook-signature"),
            )
        }
    }
}

/// `/collect/<type>/<source>[/<session>]`, each segment percent-decoded
/// (`Order%20Completed` is `Order Completed`; invalid UTF-8 becomes U+FFFD).
fn collect_route(path: &str) -> Option<Collect> {
    let rest = path.strip_prefix("/collect/")?;
    let parts: Vec<String> = rest
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    match <[String; 2]>::try_from(parts) {
        Ok([t, s]) => Some(Collect {
            event_type: t,
            source_id: s,
            session_id: None,
        }),
        Err(parts) => match <[String; 3]>::try_from(parts) {
            Ok([t, s, x]) => Some(Collect {
                event_type: t,
                source_id: s,
                session_id: Some(x),
            }),
            Err(_) => None,
        },
    }
}

/// Why a request body could not be read.
enum BodyError {
    TooLarge,
    /// Bad chunked encoding, a connection cut before `Content-Length` bytes, …
    Malformed,
}

/// The whole body, at most `limit` bytes: over the limit is [`BodyError::TooLarge`], any
/// framing error [`BodyError::Malformed`] (so a broken chunked body is a 400, not a 413).
async fn read_body(
    mut body: Body,
    limit: usize,
    declared: Option<u64>,
) -> Result<Vec<u8>, BodyError> {
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n.min(MAX_PREALLOC) as usize));
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => return Ok(buf),
            Some(Err(_)) => return Err(BodyError::Malformed),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if buf.len().saturating_add(data.len()) > limit {
                        return Err(BodyError::TooLarge);
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
}

/// An error answer that also closes the connection: after a broken or unread body the
/// stream is out of sync.
fn refuse(status: StatusCode, msg: String) -> Response {
    (status, [("connection", "close")], msg).into_response()
}

async fn receive(State(st): State<Arc<Shared>>, req: Request) -> Response {
    let kill = req.extensions().get::<DropConn>().cloned();
    let (parts, body) = req.into_parts();
    let limit = st.config.max_body_bytes;
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match tokio::time::timeout(
        st.config.body_read_timeout,
        read_body(body, limit, declared),
    )
    .await
    {
        Ok(Ok(b)) => Bytes::from(b),
        Ok(Err(BodyError::TooLarge)) => {
            st.counters.too_large.fetch_add(1, Ordering::Relaxed);
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {limit} bytes"),
            );
        }
        Ok(Err(BodyError::Malformed)) => {
            st.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return refuse(
                StatusCode::BAD_REQUEST,
                "malformed request body (bad chunked encoding or cut short)".into(),
            );
        }
        Err(_) => {
            st.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "body not received within {} ms",
                    st.config.body_read_timeout.as_millis()
                ),
            );
        }
    };
    st.counters.received.fetch_add(1, Ordering::Relaxed);
    let f = &st.config.faults;
    if f.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
    }
    if f.drop_rate > 0.0 && rand::random::<f64>() < f.drop_rate {
        st.counters.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(k) = kill {
            k.0.notify_one();
            std::future::pending::<()>().await;
        }
    }
    let fail = f.fail_rate > 0.0 && rand::random::<f64>() < f.fail_rate;
    let status = if fail { f.fail_status } else { 200 };
    if fail {
        st.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    if st.config.record {
        record(
            &st,
            &parts.method,
            &parts.uri,
            &parts.headers,
            &body,
            status,
        );
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if fail {
        let mut r = (code, "{\"ok\":false,\"error\":\"injected failure\"}").into_response();
        if let Some(s) = f.retry_after
            && let Ok(v) = s.to_string().parse()
        {
            r.headers_mut().insert("retry-after", v);
        }
        return r;
    }
    (
        code,
        [("content-type", "application/json")],
        "{\"ok\":true}",
    )
        .into_response()
}

/// Header names that carry credentials or signatures: stored as `***` unless raw capture.
fn is_sensitive_header(name: &str, verify_header: Option<&str>) -> bool {
    const EXACT: [&str; 6] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "webhook-signature",
        "x-signature",
    ];
    /// API-key-like names: `x-api-key`, `x-auth-token`, `x-hub-signature-256`, `stripe-signature`…
    const PARTS: [&str; 10] = [
        "auth",
        "token",
        "secret",
        "signature",
        "key",
        "password",
        "passwd",
        "credential",
        "session",
        "cookie",
    ];
    let n = name.to_ascii_lowercase();
    if n == "idempotency-key" {
        return false; // an id, not a credential, and QA needs to see it
    }
    EXACT.contains(&n.as_str())
        || PARTS.iter().any(|p| n.contains(p))
        || verify_header.is_some_and(|v| v.eq_ignore_ascii_case(&n))
}

/// `***`, keeping a known scheme word (`Bearer ***`, `Basic ***`) so QA still sees which
/// kind of credential arrived. An empty value stays empty.
fn redact_value(v: &str) -> String {
    const SCHEMES: [&str; 12] = [
        "Basic",
        "Bearer",
        "Digest",
        "Token",
        "Negotiate",
        "NTLM",
        "DPoP",
        "HOBA",
        "Mutual",
        "OAuth",
        "Hawk",
        "AWS4-HMAC-SHA256",
    ];
    let t = v.trim();
    if t.is_empty() {
        return String::new();
    }
    if let Some((scheme, rest)) = t.split_once(' ')
        && !rest.trim().is_empty()
        && let Some(known) = SCHEMES.iter().find(|s| s.eq_ignore_ascii_case(scheme))
    {
        return format!("{known} ***");
    }
    "***".into()
}

/// The headers as stored: credentials and signatures redacted unless `raw`.
fn stored_headers(h: &HeaderMap, raw: bool, verify: Option<&Verify>) -> Vec<(String, String)> {
    let verify_header = match verify {
        Some(Verify::Hmac { header, .. }) => Some(header.as_str()),
        _ => None,
    };
    let mut out = header_map(h);
    if !raw {
        for (n, v) in &mut out {
            if is_sensitive_header(n, verify_header) {
                *v = redact_value(v);
            }
        }
    }
    out
}

fn record(st: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes, status: u16) {
    let c = Capture {
        id: st.next_id.fetch_add(1, Ordering::Relaxed),
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: stored_headers(headers, st.config.raw_capture, st.config.verify.as_ref()),
        body: body.to_vec(),
        signature: st.config.verify.as_ref().map(|v| verify(v, headers, body)),
        collect: collect_route(uri.path()),
        status,
    };
    if let Some(h) = &st.history {
        h.capture(c.clone());
    }
    if let Some(l) = &st.live {
        let _ = l.send(c);
    }
}

/// A capture as an event for replay: collect routes become `{"type", "properties",
/// "context": {"source_id", "session_id"}}` (properties from the JSON body, or the
/// query for GET); a raw capture whose body is a JSON object is that object.
pub fn capture_to_event(c: &Capture) -> Option<Value> {
    let body: Option<Value> = serde_json::from_slice(&c.body)
        .ok()
        .filter(Value::is_object);
    match &c.collect {
        Some(col) => {
            let properties = match body {
                Some(b) => b,
                None => Value::Object(
                    form_urlencoded::parse(c.query.as_bytes())
                        .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
                        .collect::<Map<_, _>>(),
                ),
            };
            let mut context = Map::new();
            context.insert("source_id".into(), Value::from(col.source_id.clone()));
            if let Some(s) = &col.session_id {
                context.insert("session_id".into(), Value::from(s.clone()));
            }
            Some(json!({"type": col.event_type, "properties": properties, "context": context}))
        }
        None => body,
    }
}
