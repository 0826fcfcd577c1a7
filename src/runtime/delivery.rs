//! Delivery of one job: render events lazily (so memory holds only what is in
//! flight), batch them, send each request with bounded concurrency and an optional
//! rate limit, retry what is retryable with exponential backoff and full jitter
//! (honouring `Retry-After`), re-sign every attempt, and report every outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::stats::{Histogram, JobStats};
use crate::core::batch::{Batch, Batcher};
use crate::core::events::{EventList, StreamItem};
pub use crate::core::job::{
    AttemptLog, Commit, JobFingerprint, JobLog, NewJob, NoLog, Outcome, OutcomeKind, committed,
    destination_digest,
};
use crate::core::model::{Auth, Delivery, Destination};
use crate::core::render::{CompiledDestination, Prepared, RenderCtx, RenderedRequest};
use crate::core::secret::{Secret, Secrets};

/// How much of a response body is kept (history, error messages).
pub const RESPONSE_KEEP_BYTES: usize = 64 * 1024;

/// A job's run state, set by Pause / Resume / Cancel commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Run,
    Pause,
    Cancel,
}

pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Secret, TokenError>> + Send + 'a>>;

/// Why no token could be had; `fatal` when asking again cannot help (the endpoint
/// rejected the client or grant): the request fails at once instead of retrying.
#[derive(Debug, Clone)]
pub struct TokenError {
    pub message: String,
    pub fatal: bool,
}

/// `OAuth2` access tokens for destinations that need them.
pub trait TokenProvider: Send + Sync {
    fn token<'a>(&'a self, destination: &'a Destination) -> TokenFuture<'a>;
    /// After a 401: forget the cached token if it is still `rejected`, so the next call
    /// fetches a new one. Concurrent requests rejected with the same old token then
    /// share one new token instead of each fetching (and discarding) another.
    fn invalidate(&self, destination: &Destination, rejected: &Secret);
}

/// What a job needs besides its events.
pub struct JobEnv {
    pub client: reqwest::Client,
    pub secrets: Secrets,
    pub log: Arc<dyn JobLog>,
    pub tokens: Option<Arc<dyn TokenProvider>>,
}

/// Events read while they are sent (a large NDJSON file): how many positions the
/// source has (known before the job starts: the history records it and a resume
/// checks it), and the items in index order through a bounded channel, so memory
/// holds only what is in flight. Items come in chunks (one channel message per few
/// hundred events, not per event). A source that ends early leaves the rest pending
/// (its reader reports why); items past `total` are ignored.
pub struct EventStream {
    pub total: usize,
    pub items: tokio::sync::mpsc::Receiver<Vec<StreamItem>>,
}

/// Where a job's events come from: a list held in memory (the app, small files), or
/// a stream (`hookline send` of a large NDJSON file).
pub enum EventSource {
    List(Arc<EventList>),
    Stream(EventStream),
}

impl EventSource {
    /// Event positions (indices `0..len`).
    pub fn len(&self) -> usize {
        match self {
            Self::List(l) => l.len(),
            Self::Stream(s) => s.total,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Arc<EventList>> for EventSource {
    fn from(l: Arc<EventList>) -> Self {
        Self::List(l)
    }
}

/// A job's events in the order they are sent, each prepared for its request.
enum Feed {
    List {
        events: Arc<EventList>,
        indices: std::vec::IntoIter<usize>,
    },
    Stream {
        items: tokio::sync::mpsc::Receiver<Vec<StreamItem>>,
        chunk: std::vec::IntoIter<StreamItem>,
        total: usize,
        /// Only these indices (ascending), when not all.
        only: Option<std::iter::Peekable<std::vec::IntoIter<usize>>>,
    },
}

impl Feed {
    fn new(events: EventSource, only: Option<Vec<usize>>) -> Self {
        match events {
            EventSource::List(events) => {
                let indices = only.unwrap_or_else(|| (0..events.len()).collect());
                Self::List {
                    events,
                    indices: indices.into_iter(),
                }
            }
            EventSource::Stream(s) => Self::Stream {
                items: s.items,
                chunk: Vec::new().into_iter(),
                total: s.total,
                only: only.map(|mut o| {
                    o.sort_unstable();
                    o.dedup();
                    o.into_iter().peekable()
                }),
            },
        }
    }

    /// The next event's index and its preparation (`None`: no such event in a list);
    /// `None` at the end.
    async fn next(
        &mut self,
        compiled: &CompiledDestination,
        ctx: &RenderCtx,
    ) -> Option<(usize, Option<Result<Prepared, String>>)> {
        match self {
            Self::List { events, indices } => {
                let i = indices.next()?;
                // The same entry point the preview uses: the bytes sent are the bytes shown.
                let p = compiled
                    .prepare_event(events, i, ctx)
                    .map(|r| r.map_err(|e| e.to_string()));
                Some((i, p))
            }
            Self::Stream {
                items,
                chunk,
                total,
                only,
            } => loop {
                if only.as_mut().is_some_and(|o| o.peek().is_none()) {
                    return None;
                }
                let Some(item) = chunk.next() else {
                    *chunk = items.recv().await?.into_iter();
                    continue;
                };
                let i = item.index();
                if i >= *total {
                    return None;
                }
                if let Some(o) = only.as_mut() {
                    while o.next_if(|&w| w < i).is_some() {}
                    if o.next_if_eq(&i).is_none() {
                        continue;
                    }
                }
                let p = match item {
                    StreamItem::Event { index, text } => compiled
                        .prepare_event_owned(index, text, ctx)
                        .map_err(|e| e.to_string()),
                    StreamItem::Bad { message, .. } => Err(message),
                };
                return Some((i, Some(p)));
            },
        }
    }
}

/// A job: which destination, which events.
pub struct JobSpec {
    pub job: String,
    pub destination: Destination,
    pub events: EventSource,
    /// Only these indices (a selection, or what is left on resume); `None` = all.
    pub only: Option<Vec<usize>>,
    /// Where the events came from (file or event set), for history.
    pub source: String,
    /// Record the job as new (false when resuming an existing one).
    pub create: bool,
    /// Recorded with a new job; a resume compares it.
    pub fingerprint: JobFingerprint,
}

/// How a job reports as it runs (outcome per request, periodic stats).
pub trait JobReport: Send + Sync {
    fn outcome(&self, job: &str, o: Outcome);
    fn retrying(&self, job: &str, request_no: u64, attempt: u32, wait: Duration, reason: &str);
    fn progress(&self, job: &str, stats: &JobStats);
    fn render_error(&self, job: &str, index: usize, error: &str);
}

struct Tally {
    stats: JobStats,
    hist: Histogram,
    started: Instant,
}

impl Tally {
    fn snapshot(&self) -> JobStats {
        let mut s = self.stats.clone();
        let secs = self.started.elapsed().as_secs_f64();
        s.elapsed_ms = (secs * 1000.0) as u64;
        s.requests_per_s = if secs > 0.0 {
            (s.delivered + s.failed) as f64 / secs
        } else {
            0.0
        };
        s.p50_ms = self.hist.quantile_ms(0.5);
        s.p95_ms = self.hist.quantile_ms(0.95);
        s
    }
}

/// Paces attempts to a requests-per-second ceiling.
struct RateLimiter {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimiter {
    fn new(rate: f64) -> Option<Self> {
        (rate.is_finite() && rate > 0.0).then(|| Self {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: tokio::sync::Mutex::new(Instant::now()),
        })
    }
    async fn wait(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        if *next > now {
            tokio::time::sleep_until((*next).into()).await;
        }
        *next = (*next).max(now) + self.interval;
    }
}

/// Wait while paused; `false` once cancelled.
async fn gate(rx: &mut watch::Receiver<Control>) -> bool {
    loop {
        match *rx.borrow_and_update() {
            Control::Run => return true,
            Control::Cancel => return false,
            Control::Pause => {}
        }
        if rx.changed().await.is_err() {
            return true;
        }
    }
}

async fn until_cancelled(mut rx: watch::Receiver<Control>) {
    loop {
        if *rx.borrow_and_update() == Control::Cancel {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, initial·2^(n-1))]`.
pub fn backoff(policy: &Delivery, attempt: u32) -> Duration {
    let ceiling =
        (policy.backoff_initial_ms as f64) * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let ceiling = ceiling.min(policy.backoff_max_ms as f64).max(0.0);
    Duration::from_secs_f64(rand::rng().random_range(0.0..=ceiling) / 1000.0)
}

/// `Retry-After` as seconds or an HTTP date, capped.
pub fn retry_after(value: &str, cap: Duration) -> Option<Duration> {
    let v = value.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(cap))
}

/// 5xx, 408 and 429 are worth another try; other statuses are final.
pub fn retryable_status(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

fn is_oauth(d: &Destination) -> bool {
    matches!(
        d.auth,
        Auth::Oauth2ClientCredentials { .. } | Auth::Oauth2AuthorizationCode { .. }
    )
}

/// Build the HTTP client every job shares: no redirects, no proxy, no cookies.
pub fn http_client(accept_invalid_certs: bool) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tls_danger_accept_invalid_certs(accept_invalid_certs)
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

struct Ctx {
    job: String,
    compiled: Arc<CompiledDestination>,
    env: Arc<JobEnv>,
    report: Arc<dyn JobReport>,
    tally: Arc<Mutex<Tally>>,
    limiter: Option<RateLimiter>,
    /// The job's own control: the caller's Pause/Resume/Cancel, forwarded, plus a
    /// Cancel of its own when the history fails ([`Ctx::halt`]).
    control: watch::Receiver<Control>,
    control_tx: watch::Sender<Control>,
    /// Why the job stopped by itself (a history write failed), if it did.
    halted: Mutex<Option<String>>,
    /// The last URL and headers sent, parsed: requests of one route repeat them, so
    /// most attempts clone these instead of parsing again.
    wire: Mutex<WireCache>,
    /// To the job's [`committer`]; taken (closing the channel) once every request
    /// has finished.
    done: Mutex<Option<mpsc::UnboundedSender<Finished>>>,
}

#[derive(Default)]
struct WireCache {
    url: Option<(String, reqwest::Url)>,
    /// Each header as text and parsed, in request order.
    headers: Vec<(
        String,
        String,
        reqwest::header::HeaderName,
        reqwest::header::HeaderValue,
    )>,
    /// The map built from exactly `headers` (`None` once they change): a route whose
    /// headers are the same for every request clones it instead of building one.
    map: Option<reqwest::header::HeaderMap>,
}

impl Ctx {
    /// `url` parsed (a clone of the last parse when it is the same); `None` when it
    /// does not parse (reqwest then reports it).
    fn parsed_url(&self, url: &str) -> Option<reqwest::Url> {
        if let Some((text, parsed)) = &lock(&self.wire).url
            && text == url
        {
            return Some(parsed.clone());
        }
        let parsed = reqwest::Url::parse(url).ok()?;
        lock(&self.wire).url = Some((url.to_owned(), parsed.clone()));
        Some(parsed)
    }

    /// `headers` as a header map, each name and value parsed only when it differs
    /// from the last request's at the same place (per-request ones, such as an
    /// idempotency key or a signature, are parsed; the route's static ones are not).
    /// `None` when one is not a valid header (reqwest then reports it).
    fn header_map(&self, headers: &[(String, String)]) -> Option<reqwest::header::HeaderMap> {
        use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
        let mut wire = lock(&self.wire);
        if let Some(map) = &wire.map
            && wire.headers.len() == headers.len()
            && wire
                .headers
                .iter()
                .zip(headers)
                .all(|((cn, cv, _, _), (n, v))| cn == n && cv == v)
        {
            return Some(map.clone());
        }
        wire.map = None;
        let mut map = HeaderMap::with_capacity(headers.len());
        // Whether this request's headers differ from the last one's: a route whose
        // headers change per request (a signature) never keeps a map to clone.
        let mut changed = wire.headers.len() != headers.len();
        wire.headers.truncate(headers.len());
        for (i, (n, v)) in headers.iter().enumerate() {
            match wire.headers.get_mut(i) {
                Some((cn, cv, name, value)) if cn == n => {
                    if cv != v {
                        *value = HeaderValue::from_str(v).ok()?;
                        v.clone_into(cv);
                        changed = true;
                    }
                    map.append(name.clone(), value.clone());
                }
                slot => {
                    changed = true;
                    let parsed = (
                        n.clone(),
                        v.clone(),
                        HeaderName::from_bytes(n.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    );
                    map.append(parsed.2.clone(), parsed.3.clone());
                    match slot {
                        Some(s) => *s = parsed,
                        None => wire.headers.push(parsed),
                    }
                }
            }
        }
        if !changed {
            wire.map = Some(map.clone());
        }
        Some(map)
    }
}

impl Ctx {
    fn finished(&self, f: Finished) {
        let sent = match &*lock(&self.done) {
            // The committer lives until the channel closes, which is after this.
            Some(tx) => tx.send(f).is_ok(),
            None => false,
        };
        if !sent {
            self.halt(format!(
                "internal error: job {}'s outcomes can no longer be recorded (a bug)",
                self.job
            ));
        }
    }

    /// Stop the job: nothing new is sent, requests waiting for a retry are cancelled
    /// (their events stay pending for a resume). The first reason is kept.
    fn halt(&self, error: String) {
        lock(&self.halted).get_or_insert(error);
        self.control_tx.send_modify(|c| *c = Control::Cancel);
    }

    fn halted(&self) -> Option<String> {
        lock(&self.halted).clone()
    }
}

/// A request waiting for a delivery task.
struct Queued {
    request_no: u64,
    permits: Permits,
    req: RenderedRequest,
}

/// The job's delivery tasks: one per slot of concurrency, for the whole job, each
/// taking the next request from a queue (a request holds a slot before it is queued,
/// so one is always free to take it). A request whose delivery panics has its events
/// counted as failed, and its task goes on with the next.
struct Workers {
    queue: Option<mpsc::UnboundedSender<Queued>>,
    tasks: JoinSet<()>,
}

impl Workers {
    fn start(ctx: &Arc<Ctx>, concurrency: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Queued>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut tasks = JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (ctx, rx) = (ctx.clone(), rx.clone());
            tasks.spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(Queued {
                        request_no,
                        permits,
                        req,
                    }) = next
                    else {
                        return;
                    };
                    let events = req.events.clone();
                    // The slot is given back once the request is answered; the place
                    // among the unrecorded once its outcome is committed.
                    let run = std::panic::AssertUnwindSafe(deliver(&ctx, request_no, req, permits));
                    if futures_util::FutureExt::catch_unwind(run).await.is_err() {
                        worker_died(&ctx, request_no, events);
                    }
                }
            });
        }
        Self {
            queue: Some(tx),
            tasks,
        }
    }

    fn spawn(&mut self, ctx: &Ctx, request_no: u64, permits: Permits, req: RenderedRequest) {
        let queued = Queued {
            request_no,
            permits,
            req,
        };
        let unsent = match &self.queue {
            Some(q) => q.send(queued).err().map(|e| e.0),
            None => Some(queued),
        };
        // No task is left to take it (they all ended): its events count as failed.
        if let Some(q) = unsent {
            worker_died(ctx, request_no, q.req.events);
        }
    }

    /// Let every queued request finish, then end the tasks.
    async fn join_all(&mut self, ctx: &Ctx) {
        self.queue.take();
        while let Some(r) = self.tasks.join_next().await {
            if r.is_err() {
                ctx.halt(format!(
                    "internal error: a delivery task of job {} stopped unexpectedly (a bug)",
                    ctx.job
                ));
            }
        }
    }
}

/// A delivery task panicked: its events count as failed (recorded so), and the job
/// goes on; it ends `failed`.
fn worker_died(ctx: &Ctx, request_no: u64, events: Vec<usize>) {
    let o = Outcome {
        request_no,
        request: String::new(),
        status: None,
        attempts: 0,
        outcome: OutcomeKind::Failed,
        error: Some(format!(
            "internal error: the task delivering request {request_no} stopped unexpectedly (a bug); its events count as failed"
        )),
        latency_ms: 0.0,
        idempotency_key: String::new(),
        events,
    };
    ctx.finished(Finished {
        outcome: o,
        unrecorded: None,
    });
}

/// A request's outcome on its way to the history.
struct Finished {
    outcome: Outcome,
    /// Freed once the outcome is committed (`None` for a task that died).
    unrecorded: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The job's committer: records the outcomes that have come in since it last looked
/// as one group (one history record, one commit for the group), and once a group is
/// committed — groups in the order recorded — counts and reports its outcomes and
/// frees their places among the unrecorded. A failed commit stops the job. Ends when
/// `done` is closed and every group is settled.
async fn committer(ctx: Arc<Ctx>, mut done: mpsc::UnboundedReceiver<Finished>) {
    let mut head: Option<(Commit, Vec<Finished>)> = None;
    let mut queued: std::collections::VecDeque<(Commit, Vec<Finished>)> =
        std::collections::VecDeque::new();
    let mut open = true;
    loop {
        if head.is_none() {
            head = queued.pop_front();
        }
        let mut incoming = Vec::new();
        tokio::select! {
            biased;
            r = async {
                match head.as_mut() {
                    Some((c, _)) => c.await,
                    None => std::future::pending().await,
                }
            }, if head.is_some() => {
                let (_, group) = head.take().unwrap_or_else(|| (committed(), Vec::new()));
                if let Err(e) = r {
                    ctx.halt(e);
                }
                settle(&ctx, group);
            }
            n = done.recv_many(&mut incoming, 4096), if open => {
                if n == 0 {
                    open = false;
                    continue;
                }
                let outcomes: Vec<&Outcome> = incoming.iter().map(|f| &f.outcome).collect();
                let commit = ctx.env.log.events_done_many(&ctx.job, &outcomes);
                queued.push_back((commit, incoming));
            }
            else => break,
        }
    }
}

/// Count, report and release a committed group of outcomes.
fn settle(ctx: &Ctx, group: Vec<Finished>) {
    {
        let mut t = lock(&ctx.tally);
        for f in &group {
            let o = &f.outcome;
            match o.outcome {
                OutcomeKind::Delivered => {
                    t.stats.delivered += 1;
                    t.stats.delivered_events += o.events.len() as u64;
                }
                OutcomeKind::Failed => {
                    t.stats.failed += 1;
                    t.stats.failed_events += o.events.len() as u64;
                }
                OutcomeKind::Cancelled => {}
            }
        }
    }
    for f in group {
        ctx.report.outcome(&ctx.job, f.outcome);
        drop(f.unrecorded);
    }
}

/// Await a commit off the delivery path; a failure stops the job.
fn track(acks: &mut JoinSet<()>, ctx: &Arc<Ctx>, c: Commit) {
    let ctx = ctx.clone();
    acks.spawn(async move {
        if let Err(e) = c.await {
            ctx.halt(e);
        }
    });
    while acks.try_join_next().is_some() {}
}

/// Run a job to the end (or until cancelled). Returns the final stats, or why the job
/// stopped by itself (its history could not be written).
pub async fn run_job(
    spec: JobSpec,
    env: Arc<JobEnv>,
    report: Arc<dyn JobReport>,
    control: watch::Receiver<Control>,
) -> Result<(JobStats, EndState), String> {
    let compiled = CompiledDestination::compile(&spec.destination).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let policy = spec.destination.delivery.clone();
    let total_events = spec.events.len();
    let to_send = spec.only.as_ref().map_or(total_events, Vec::len);
    // Nothing is sent before the job is on record: a history that cannot be written
    // fails the job here.
    let recorded = if spec.create {
        let mut fingerprint = spec.fingerprint.clone();
        fingerprint
            .destination_sha256
            .get_or_insert_with(|| destination_digest(&spec.destination));
        env.log.job_started(&NewJob {
            job: spec.job.clone(),
            destination: spec.destination.name.clone(),
            destination_id: spec.destination.id.clone(),
            source: spec.source.clone(),
            total_events,
            fingerprint,
        })
    } else {
        env.log.job_resumed(&spec.job)
    };
    recorded
        .await
        .map_err(|e| format!("job {}: nothing sent: {e}", spec.job))?;
    let tally = Arc::new(Mutex::new(Tally {
        stats: JobStats {
            events: to_send as u64,
            ..JobStats::default()
        },
        hist: Histogram::default(),
        started: Instant::now(),
    }));
    let (control_tx, own_control) = watch::channel(*control.borrow());
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        job: spec.job.clone(),
        compiled: Arc::new(compiled),
        env: env.clone(),
        report: report.clone(),
        tally: tally.clone(),
        limiter: policy.rate_limit.and_then(RateLimiter::new),
        control: own_control.clone(),
        control_tx,
        halted: Mutex::new(None),
        wire: Mutex::default(),
        done: Mutex::new(Some(done_tx)),
    });
    let committing = tokio::spawn(committer(ctx.clone(), done_rx));
    // The caller's Pause/Resume/Cancel, unless the job has halted by itself.
    let forward = {
        let (mut ext, ctx) = (control.clone(), ctx.clone());
        tokio::spawn(async move {
            loop {
                let c = *ext.borrow_and_update();
                ctx.control_tx.send_if_modified(|cur| {
                    if *cur == c || lock(&ctx.halted).is_some() {
                        false
                    } else {
                        *cur = c;
                        true
                    }
                });
                if ext.changed().await.is_err() {
                    break;
                }
            }
        })
    };

    // Progress a few times a second, a heartbeat every two seconds, until the job ends.
    let ticker = {
        let (tally, report, job, log) = (
            tally.clone(),
            report.clone(),
            spec.job.clone(),
            env.log.clone(),
        );
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(250));
            iv.tick().await;
            for tick in 1u64.. {
                iv.tick().await;
                let s = lock(&tally).snapshot();
                report.progress(&job, &s);
                if tick % 8 == 0 {
                    log.heartbeat(&job);
                }
            }
        })
    };

    let render_ctx = RenderCtx::new(env.secrets.clone());
    let slots = Arc::new(Semaphore::new(policy.concurrency.max(1)));
    let unrecorded = Arc::new(Semaphore::new(
        policy
            .concurrency
            .max(1)
            .saturating_mul(UNRECORDED_PER_SLOT),
    ));
    let mut workers = Workers::start(&ctx, policy.concurrency);
    let mut acks = JoinSet::new();
    let mut batcher = Batcher::new(spec.destination.batching.as_ref());
    let mut control_rx = own_control.clone();
    let mut request_no = 0u64;
    let mut cancelled = false;
    let mut skipped = Vec::new();
    let mut spawner = BatchSpawner {
        ctx: &ctx,
        slots: &slots,
        unrecorded: &unrecorded,
        render_ctx: &render_ctx,
        request_no: &mut request_no,
    };

    let mut feed = Feed::new(spec.events, spec.only);
    loop {
        if !gate(&mut control_rx).await {
            cancelled = true;
            break;
        }
        let Some((i, prepared)) = feed.next(&ctx.compiled, &render_ctx).await else {
            break;
        };
        let Some(prepared) = prepared else {
            continue;
        };
        match prepared {
            Ok(Prepared::Skipped(_)) => {
                lock(&tally).stats.skipped += 1;
                skipped.push(i);
                if skipped.len() >= 1024 {
                    let c = env
                        .log
                        .events_skipped(&spec.job, &std::mem::take(&mut skipped));
                    track(&mut acks, &ctx, c);
                }
            }
            Ok(Prepared::Ready(p)) => match batcher.push(*p) {
                Ok(done) => {
                    if !spawner.spawn(done, &mut workers, &mut acks).await {
                        break;
                    }
                }
                Err((idx, msg)) => track(
                    &mut acks,
                    &ctx,
                    fail_unsent(
                        &ctx,
                        &[idx],
                        &format!("destination \"{}\": {msg}", spec.destination.name),
                    ),
                ),
            },
            Err(e) => track(&mut acks, &ctx, fail_unsent(&ctx, &[i], &e)),
        }
    }
    drop(feed);
    if !skipped.is_empty() {
        track(&mut acks, &ctx, env.log.events_skipped(&spec.job, &skipped));
    }
    if !cancelled {
        spawner
            .spawn(batcher.finish(), &mut workers, &mut acks)
            .await;
    }
    workers.join_all(&ctx).await;
    lock(&ctx.done).take();
    if committing.await.is_err() {
        ctx.halt(format!(
            "internal error: the task recording job {}'s outcomes stopped unexpectedly (a bug)",
            spec.job
        ));
    }
    while acks.join_next().await.is_some() {}
    ticker.abort();
    forward.abort();
    let stats = lock(&tally).snapshot();
    report.progress(&spec.job, &stats);
    if let Some(e) = ctx.halted() {
        // The job stays `running` in the history (its heartbeat stops), so it shows
        // as interrupted and resumable; nothing more is written to a failing database.
        return Err(format!(
            "job {} stopped: {e}; --resume {} sends again what is not recorded as delivered (at most four times the concurrency in requests)",
            spec.job, spec.job
        ));
    }
    let cancelled = cancelled || *control.borrow() == Control::Cancel;
    let end_state = if cancelled {
        EndState::Cancelled
    } else if stats.failed > 0 || stats.render_errors > 0 {
        EndState::Failed
    } else {
        EndState::Done
    };
    let end = end_state.as_str();
    env.log
        .job_finished(&spec.job, end)
        .await
        .map_err(|e| format!("job {}: cannot record that it ended {end}: {e}", spec.job))?;
    Ok((stats, end_state))
}

/// How a job that ran came to its end (as the history records it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndState {
    Done,
    Failed,
    Cancelled,
}

impl EndState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Turns finished batches into requests and starts each when a slot is free.
struct BatchSpawner<'a> {
    ctx: &'a Arc<Ctx>,
    slots: &'a Arc<Semaphore>,
    unrecorded: &'a Arc<Semaphore>,
    render_ctx: &'a RenderCtx,
    request_no: &'a mut u64,
}

impl BatchSpawner<'_> {
    /// `false` once no more requests can start.
    async fn spawn(
        &mut self,
        batches: Vec<Batch>,
        workers: &mut Workers,
        acks: &mut JoinSet<()>,
    ) -> bool {
        let finished = batches
            .into_iter()
            .flat_map(|b| self.ctx.compiled.finish_measured(b, self.render_ctx));
        for (idx, r) in finished {
            let req = match r {
                Ok(r) => r,
                Err(e) => {
                    track(acks, self.ctx, fail_unsent(self.ctx, &idx, &e.to_string()));
                    continue;
                }
            };
            let Ok(unrecorded) = self.unrecorded.clone().acquire_owned().await else {
                return false;
            };
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                return false;
            };
            *self.request_no += 1;
            workers.spawn(
                self.ctx,
                *self.request_no,
                Permits { slot, unrecorded },
                req,
            );
        }
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Events that never became a request (render error, oversized for a batch).
fn fail_unsent(ctx: &Ctx, events: &[usize], error: &str) -> Commit {
    {
        let mut t = lock(&ctx.tally);
        t.stats.render_errors += events.len() as u64;
        t.stats.failed_events += events.len() as u64;
    }
    for &i in events {
        ctx.report.render_error(&ctx.job, i, error);
    }
    let o = Outcome {
        request_no: 0,
        request: String::new(),
        events: events.to_vec(),
        status: None,
        attempts: 0,
        outcome: OutcomeKind::Failed,
        error: Some(error.to_owned()),
        latency_ms: 0.0,
        idempotency_key: String::new(),
    };
    ctx.env.log.events_done(&ctx.job, events, &o)
}

enum Try {
    Done {
        status: u16,
        latency: Duration,
    },
    Retry {
        wait: Duration,
        reason: String,
        status: Option<u16>,
        latency: Duration,
    },
    Final {
        error: String,
        status: Option<u16>,
        latency: Duration,
    },
    Unauthorized {
        latency: Duration,
        body: String,
        token: Option<Secret>,
    },
}

/// Requests answered or in flight whose outcome the history has not yet committed,
/// per slot of concurrency. Commits come every millisecond or so, but a busy disk can
/// hold one for several: with room for four slots' worth, sending goes on meanwhile
/// (2 measured 6 % fewer requests per second than 4 against a local sink).
const UNRECORDED_PER_SLOT: usize = 4;

/// What a request holds while it runs: a slot (one of `concurrency`, given back once
/// it is answered) and a place among the requests whose outcome is not yet committed
/// (one of `4 × concurrency`, kept until it is). So the history's commits are off the
/// delivery path, and a kill still leaves at most `4 × concurrency` requests sent but
/// unrecorded (each re-sent by a resume with its idempotency key).
struct Permits {
    slot: tokio::sync::OwnedSemaphorePermit,
    unrecorded: tokio::sync::OwnedSemaphorePermit,
}

async fn deliver(ctx: &Ctx, request_no: u64, mut req: RenderedRequest, permits: Permits) {
    let Permits { slot, unrecorded } = permits;
    let policy = &ctx.compiled.dest.delivery;
    let max_attempts = policy.max_attempts.max(1);
    // The URL as shown (secrets hidden) is the same for every attempt: made once.
    let shown_url = req.redacted_url();
    let summary = format!("{} {shown_url}", req.method.as_str());
    // What the outcome takes, once: the permits and the request's identity.
    let held = Mutex::new(Some((
        slot,
        unrecorded,
        summary,
        req.events.clone(),
        req.idempotency_key.clone(),
    )));
    lock(&ctx.tally).stats.sent += 1;
    let mut control = ctx.control.clone();
    let mut attempt = 0u32;
    let mut refreshed = false;
    let mut last_status = None;
    let mut last_latency = Duration::ZERO;
    // The slot is free once the outcome is known; the outcome goes to the job's
    // committer, which frees the request's place among the unrecorded once the history
    // has committed it (a failed commit stops the job). The task ends here: no task
    // waits on its own commit.
    let finish = async |kind: OutcomeKind,
                        status: Option<u16>,
                        attempts: u32,
                        error: Option<String>,
                        latency: Duration| {
        let Some((slot, unrecorded, summary, events, key)) = lock(&held).take() else {
            return;
        };
        drop(slot);
        let o = Outcome {
            request_no,
            request: summary,
            events,
            status,
            attempts,
            outcome: kind,
            error,
            latency_ms: latency.as_secs_f64() * 1000.0,
            idempotency_key: key,
        };
        ctx.finished(Finished {
            outcome: o,
            unrecorded: Some(unrecorded),
        });
    };
    loop {
        if !gate(&mut control).await {
            return finish(
                OutcomeKind::Cancelled,
                last_status,
                attempt,
                Some("cancelled".into()),
                last_latency,
            )
            .await;
        }
        attempt += 1;
        if let Some(l) = &ctx.limiter {
            l.wait().await;
        }
        // An attempt under way is let finish (its timeout bounds it): abandoning it
        // would leave a request the receiver got but history never recorded.
        let result = attempt_once(ctx, request_no, attempt, &mut req, &shown_url).await;
        {
            let mut tally = lock(&ctx.tally);
            tally.stats.attempts += 1;
            if let Try::Done { latency, .. } | Try::Final { latency, .. } = &result {
                tally.hist.record(*latency);
            }
        }
        let (wait, reason) = match result {
            Try::Done { status, latency } => {
                return finish(OutcomeKind::Delivered, Some(status), attempt, None, latency).await;
            }
            Try::Final {
                error,
                status,
                latency,
            } => {
                return finish(OutcomeKind::Failed, status, attempt, Some(error), latency).await;
            }
            Try::Unauthorized {
                latency,
                body,
                token,
            } => {
                last_status = Some(401);
                last_latency = latency;
                match (&ctx.env.tokens, refreshed, token) {
                    (Some(t), false, Some(rejected)) => {
                        // Refresh the token once and try again at once.
                        t.invalidate(&ctx.compiled.dest, &rejected);
                        refreshed = true;
                        attempt -= 1;
                        continue;
                    }
                    _ => {
                        return finish(
                            OutcomeKind::Failed,
                            Some(401),
                            attempt,
                            Some(format!("HTTP 401: {body}")),
                            latency,
                        )
                        .await;
                    }
                }
            }
            Try::Retry {
                wait,
                reason,
                status,
                latency,
            } => {
                last_status = status;
                last_latency = latency;
                if attempt >= max_attempts {
                    return finish(
                        OutcomeKind::Failed,
                        status,
                        attempt,
                        Some(format!("{reason} (gave up after {attempt} attempts)")),
                        latency,
                    )
                    .await;
                }
                (wait, reason)
            }
        };
        lock(&ctx.tally).stats.retrying += 1;
        ctx.report
            .retrying(&ctx.job, request_no, attempt, wait, &reason);
        let slept = tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = until_cancelled(control.clone()) => false,
        };
        lock(&ctx.tally).stats.retrying -= 1;
        if !slept {
            return finish(
                OutcomeKind::Cancelled,
                last_status,
                attempt,
                Some("cancelled".into()),
                last_latency,
            )
            .await;
        }
    }
}

/// One attempt; `shown_url` is the request's URL with its secrets hidden (for the record).
async fn attempt_once(
    ctx: &Ctx,
    request_no: u64,
    attempt: u32,
    req: &mut RenderedRequest,
    shown_url: &str,
) -> Try {
    let dest = &ctx.compiled.dest;
    let policy = &dest.delivery;
    let render_ctx = RenderCtx::new(ctx.env.secrets.clone());
    // Timestamps, JWTs and signatures are fresh for every attempt.
    if let Err(e) = ctx.compiled.sign(req, &render_ctx) {
        return Try::Final {
            error: e.to_string(),
            status: None,
            latency: Duration::ZERO,
        };
    }
    let mut used_token = None;
    if is_oauth(dest) {
        match &ctx.env.tokens {
            Some(t) => match t.token(dest).await {
                Ok(tok) => {
                    req.set_bearer_token(&tok);
                    used_token = Some(tok);
                }
                Err(e) if e.fatal => {
                    return Try::Final {
                        error: format!("OAuth2 token: {}", e.message),
                        status: None,
                        latency: Duration::ZERO,
                    };
                }
                Err(e) => {
                    return Try::Retry {
                        wait: backoff(policy, attempt),
                        reason: format!("OAuth2 token: {}", e.message),
                        status: None,
                        latency: Duration::ZERO,
                    };
                }
            },
            None => {
                return Try::Final {
                    error: "OAuth2 is not available in this context".into(),
                    status: None,
                    latency: Duration::ZERO,
                };
            }
        }
    }
    let method = match req.method {
        crate::core::model::Method::Get => reqwest::Method::GET,
        crate::core::model::Method::Post => reqwest::Method::POST,
        crate::core::model::Method::Put => reqwest::Method::PUT,
        crate::core::model::Method::Patch => reqwest::Method::PATCH,
        crate::core::model::Method::Delete => reqwest::Method::DELETE,
    };
    let timeout = Duration::from_millis(policy.timeout_ms.max(1));
    // The body goes out without a copy: it is lent to the request as `Bytes` and taken
    // back once the response is in (copied only if the client still holds it), since a
    // retry signs and sends it again.
    let body = req.body.take().map(bytes::Bytes::from);
    // The usual case is built directly, URL and headers parsed (or cloned) already; a
    // URL or header that does not parse goes through reqwest's builder, which says which.
    let request = if let (Some(url), Some(headers)) =
        (ctx.parsed_url(&req.url), ctx.header_map(&req.headers))
    {
        let mut r = reqwest::Request::new(method, url);
        *r.timeout_mut() = Some(timeout);
        *r.headers_mut() = headers;
        *r.body_mut() = body.clone().map(reqwest::Body::from);
        Ok(r)
    } else {
        let mut rb = ctx.env.client.request(method, &req.url).timeout(timeout);
        for (n, v) in &req.headers {
            rb = rb.header(n.as_str(), v.as_str());
        }
        if let Some(b) = &body {
            rb = rb.body(b.clone());
        }
        rb.build()
    };
    let logging = ctx.env.log.wants_attempts();
    let started = Instant::now();
    let sent = match request {
        Ok(r) => ctx.env.client.execute(r).await,
        Err(e) => Err(e),
    };
    req.body = body.map(Vec::from);
    let mut log = AttemptLog {
        job: if logging {
            ctx.job.clone()
        } else {
            String::new()
        },
        request_no,
        attempt,
        method: req.method.as_str().to_owned(),
        url: if logging {
            shown_url.to_owned()
        } else {
            String::new()
        },
        request_headers: if logging {
            req.redacted_headers()
        } else {
            Vec::new()
        },
        status: None,
        response_headers: Vec::new(),
        response_body: Vec::new(),
        latency_ms: 0.0,
        error: None,
    };
    let result = match sent {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            log.status = Some(status);
            // A server may echo what it was sent: keep no secret of ours from it.
            if logging {
                log.response_headers = resp
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            req.scrub(&String::from_utf8_lossy(v.as_bytes()))
                                .into_owned(),
                        )
                    })
                    .collect();
            }
            let retry_after_hdr = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = Vec::new();
            while let Ok(Some(c)) = resp.chunk().await {
                let room = RESPONSE_KEEP_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&c[..c.len().min(room)]);
                if body.len() >= RESPONSE_KEEP_BYTES {
                    break;
                }
            }
            let latency = started.elapsed();
            let success = (200..300).contains(&status);
            let text = if success || body.is_empty() {
                String::new()
            } else {
                req.scrub(&snippet(&body)).into_owned()
            };
            if logging {
                log.response_body = match req.scrub(&String::from_utf8_lossy(&body)) {
                    std::borrow::Cow::Borrowed(_) => body,
                    std::borrow::Cow::Owned(clean) => clean.into_bytes(),
                };
            }
            if success {
                Try::Done { status, latency }
            } else if status == 401 && is_oauth(dest) {
                Try::Unauthorized {
                    latency,
                    body: text,
                    token: used_token,
                }
            } else if retryable_status(status) {
                let cap = Duration::from_secs(policy.retry_after_cap_s);
                let (wait, why) = match retry_after_hdr.as_deref().and_then(|v| retry_after(v, cap))
                {
                    Some(w) => (
                        w,
                        format!("HTTP {status} (Retry-After {}s)", w.as_secs_f64()),
                    ),
                    None => (backoff(policy, attempt), format!("HTTP {status}")),
                };
                Try::Retry {
                    wait,
                    reason: if text.is_empty() {
                        why
                    } else {
                        format!("{why}: {text}")
                    },
                    status: Some(status),
                    latency,
                }
            } else if (300..400).contains(&status) {
                let to = location.map_or_else(String::new, |l| format!(" to {l}"));
                Try::Final {
                    error: format!(
                        "HTTP {status}: redirect{to} not followed (only 2xx is success)"
                    ),
                    status: Some(status),
                    latency,
                }
            } else {
                Try::Final {
                    error: format!("HTTP {status}: {text}"),
                    status: Some(status),
                    latency,
                }
            }
        }
        Err(e) => {
            let latency = started.elapsed();
            // reqwest's messages quote the URL, which may carry an API key.
            let e = e.without_url();
            let what = if e.is_timeout() {
                format!("timed out after {} ms", policy.timeout_ms)
            } else if e.is_connect() {
                format!("connection failed: {}", root_cause(&e))
            } else {
                format!("request failed: {}", root_cause(&e))
            };
            if e.is_builder() {
                Try::Final {
                    error: what,
                    status: None,
                    latency,
                }
            } else {
                Try::Retry {
                    wait: backoff(policy, attempt),
                    reason: what,
                    status: None,
                    latency,
                }
            }
        }
    };
    let mut result = result;
    if let Try::Retry { reason, .. } | Try::Final { error: reason, .. } = &mut result {
        if let std::borrow::Cow::Owned(clean) = req.scrub(reason) {
            *reason = clean;
        }
        log.error = Some(reason.clone());
    }
    if logging {
        log.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        ctx.env.log.attempt(log);
    }
    result
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    let mut parts = vec![cur.to_string()];
    while let Some(next) = cur.source() {
        let s = next.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = next;
    }
    parts.join(": ")
}

/// A short, printable excerpt of a response body for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > 512 {
        s.push('…');
    }
    s.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_is_capped() {
        let cap = Duration::from_mins(5);
        assert_eq!(retry_after("7", cap), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("100000", cap), Some(cap));
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let d = retry_after(&soon, cap).expect("date");
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(retry_after("soon", cap), None);
    }

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_ceiling() {
        let p = Delivery {
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
            ..Delivery::default()
        };
        for attempt in 1..10 {
            let ceiling = (100.0 * 2f64.powi(attempt as i32 - 1)).min(1000.0);
            for _ in 0..50 {
                assert!(backoff(&p, attempt).as_secs_f64() * 1000.0 <= ceiling + 0.001);
            }
        }
    }

    #[test]
    fn only_5xx_408_429_are_retryable() {
        for s in [500, 502, 503, 599, 408, 429] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 301, 302, 400, 401, 403, 404, 409, 422] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
