//! The capture receiver: an HTTP server (axum over hyper) on 127.0.0.1 that records
//! what it receives so QA can inspect, save and replay it. Tracardi-style collect
//! routes (`/collect/<event_type>/<source_id>[/<session_id>]`) turn requests into
//! events; anything else is kept as a raw capture. It can check HMAC or Standard
//! Webhooks signatures, limit body size (413), and inject faults: a failure ratio
//! with a chosen status and `Retry-After`, latency, and dropped connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::core::model::HmacAlgorithm;
use crate::core::secret::Secret;
use crate::core::sign;
use crate::store::history::{CaptureRecord, HistoryWriter};

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
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            verify: None,
            faults: Faults::default(),
            max_body_bytes: 10 * 1024 * 1024,
            record: true,
        }
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

/// A `/collect` route's parts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

/// Counters, readable while the receiver runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub too_large: AtomicU64,
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

/// Start the receiver. Captures go to `history` (if any) and to `live` (if any).
pub async fn start(
    config: CaptureConfig,
    history: Option<HistoryWriter>,
    live: Option<mpsc::UnboundedSender<Capture>>,
) -> Result<ReceiverHandle, CaptureError> {
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
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = &mut stop_rx => break,
            };
            let Ok((stream, _)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            tokio::spawn(async move {
                let kill = Arc::new(tokio::sync::Notify::new());
                let k = DropConn(kill.clone());
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(k.clone());
                        let mut router = router.clone();
                        async move { tower::Service::call(&mut router, req.map(Body::new)).await }
                    },
                );
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    () = kill.notified() => {} // dropping the connection closes the socket, unanswered
                }
            });
        }
    });
    Ok(ReceiverHandle {
        addr,
        counters,
        stop: Some(stop_tx),
        task: Some(task),
    })
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

fn collect_route(path: &str) -> Option<Collect> {
    let rest = path.strip_prefix("/collect/")?;
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [t, s] => Some(Collect {
            event_type: (*t).to_owned(),
            source_id: (*s).to_owned(),
            session_id: None,
        }),
        [t, s, x] => Some(Collect {
            event_type: (*t).to_owned(),
            source_id: (*s).to_owned(),
            session_id: Some((*x).to_owned()),
        }),
        _ => None,
    }
}

async fn receive(State(st): State<Arc<Shared>>, req: Request) -> Response {
    let kill = req.extensions().get::<DropConn>().cloned();
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, st.config.max_body_bytes).await else {
        st.counters.too_large.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {} bytes", st.config.max_body_bytes),
        )
            .into_response();
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

fn record(st: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes, status: u16) {
    let c = Capture {
        id: st.next_id.fetch_add(1, Ordering::Relaxed),
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: header_map(headers),
        body: body.to_vec(),
        signature: st.config.verify.as_ref().map(|v| verify(v, headers, body)),
        collect: collect_route(uri.path()),
        status,
    };
    if let Some(h) = &st.history {
        h.capture(CaptureRecord {
            at: c.at.clone(),
            method: c.method.clone(),
            path: c.path.clone(),
            query: c.query.clone(),
            headers: c.headers.clone(),
            body: c.body.clone(),
            signature: c.signature,
        });
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
