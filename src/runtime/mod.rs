//! The delivery runtime: a tokio runtime on its own named thread, driven by
//! [`Command`]s, answering with [`Update`]s on a bounded, coalesced feed ([`feed`]) and
//! a throttled waker call (the GUI passes `ctx.request_repaint`). The only place in
//! Hookline that awaits or touches the keyring; callers never block: they `send`
//! commands and drain updates with `try_recv`.

pub mod delivery;
pub mod feed;
pub mod jobs;
pub mod oauth2;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::watch;

use crate::capture::{self, Capture, CaptureConfig, ReceiverHandle};
use crate::core::events::EventList;
use crate::core::model::{Destination, EventSet};
use crate::core::secret::{Secret, SecretError, Secrets};
use crate::store::history::{History, HistoryWriter};
use delivery::{
    Control, EventSource, EventStream, JobEnv, JobFingerprint, JobLog, JobReport, JobSpec, NoLog,
    Outcome, TokenProvider,
};
pub use feed::UpdateTx;
use stats::{FeedStats, JobStats};

/// What the UI or CLI asks the runtime to do.
pub enum Command {
    /// Send events through a destination: a selection (`only`), a whole set, or what
    /// is left of an interrupted job (`resume`, with `only` = its undelivered events).
    Send {
        job: String,
        destination: Box<Destination>,
        events: Arc<EventList>,
        only: Option<Vec<usize>>,
        source: String,
        resume: bool,
        /// What a resume of this job must match (the events file's digest; the
        /// destination's is computed by the job). `Default` records none.
        fingerprint: JobFingerprint,
    },
    /// Send again the events of a recorded job whose latest state is failed. The
    /// job's events are handed back (`total_events` long, in the same order) and
    /// checked against the history: same destination (by id), count and fingerprint.
    ResendFailed {
        job: String,
        destination: Box<Destination>,
        events: Arc<EventList>,
        fingerprint: JobFingerprint,
    },
    /// Send the events of a recorded job never delivered (failed or never sent),
    /// checked like [`Command::ResendFailed`].
    ResumeJob {
        job: String,
        destination: Box<Destination>,
        events: Arc<EventList>,
        fingerprint: JobFingerprint,
    },
    /// [`Command::Send`] of events read while they are sent (`hookline send` of a
    /// large NDJSON file): memory holds only what is in flight.
    SendStream {
        job: String,
        destination: Box<Destination>,
        events: EventStream,
        only: Option<Vec<usize>>,
        source: String,
        resume: bool,
        fingerprint: JobFingerprint,
    },
    /// "Send this event" from the app's preview: one event through the same delivery
    /// path as any job (retries, signing per attempt, history), and every attempt —
    /// request and response, secrets redacted — reported as [`Update::Attempt`].
    Probe {
        job: String,
        destination: Box<Destination>,
        event: serde_json::Value,
    },
    /// Replay a whole event set through a destination.
    ReplaySet {
        job: String,
        destination: Box<Destination>,
        set: EventSet,
    },
    Pause {
        job: String,
    },
    Resume {
        job: String,
    },
    Cancel {
        job: String,
    },
    /// Fetch (or refresh) the OAuth2 access token of a destination now.
    FetchToken {
        destination: Box<Destination>,
    },
    /// Run the OAuth2 authorization code flow. The authorization URL is reported
    /// (`Update::AuthorizeUrl`) so it can be shown or copied; with `open_browser`
    /// the system browser also opens it.
    Authorize {
        destination: Box<Destination>,
        timeout: Duration,
        open_browser: bool,
    },
    /// Store a secret (keyring or whatever the source is), off the caller's thread; on
    /// success the shared [`Secrets`] cache holds it, so the next preview sees it with
    /// no keyring call. Answered by [`Update::SecretStored`].
    SetSecret {
        name: String,
        value: Secret,
    },
    /// Delete a secret; the cache then holds "not set". Answered by [`Update::SecretDeleted`].
    DeleteSecret {
        name: String,
    },
    /// Look these secrets up in the source (again) and cache the answers, e.g. when a
    /// workspace is opened. Answered by one [`Update::SecretStatus`] per name, or an
    /// [`Update::Error`] when the source fails.
    LoadSecrets {
        names: Vec<String>,
    },
    /// Start the capture receiver (one at a time).
    StartCapture {
        config: CaptureConfig,
    },
    StopCapture,
    /// Stop everything and end the runtime thread.
    Shutdown,
}

/// What the runtime reports back.
#[derive(Debug, Clone)]
pub enum Update {
    JobStarted {
        job: String,
        events: usize,
    },
    /// The requests that ended since the last batch (at most ~30 batches a second per
    /// job, each at most [`feed::MAX_BATCH`] outcomes).
    Outcomes {
        job: String,
        outcomes: Vec<Outcome>,
    },
    /// The consumer did not keep up, so this many reports of the job (in total so far)
    /// were left out of the feed. The history and the job's stats still count them.
    Dropped {
        job: String,
        outcomes: u64,
        render_errors: u64,
        retries: u64,
    },
    /// One attempt of a [`Command::Probe`] job: what was sent and what came back,
    /// secrets redacted (the response body at most 64 KiB).
    Attempt {
        job: String,
        attempt: Box<crate::core::job::AttemptLog>,
    },
    Retrying {
        job: String,
        request_no: u64,
        attempt: u32,
        wait: Duration,
        reason: String,
    },
    RenderError {
        job: String,
        index: usize,
        error: String,
    },
    Progress {
        job: String,
        stats: JobStats,
    },
    /// The job ended: done, failed or cancelled (see [`JobEnd`]).
    JobFinished {
        job: String,
        end: JobEnd,
    },
    /// An OAuth2 token was fetched (and is used for this long before a refresh, when
    /// it expires), or could not be.
    Token {
        destination: String,
        result: Result<Option<Duration>, String>,
    },
    /// The URL the user must visit to authorize `destination`.
    AuthorizeUrl {
        destination: String,
        url: String,
    },
    Authorized {
        destination: String,
        result: Result<Authorized, String>,
    },
    CaptureStarted {
        addr: std::net::SocketAddr,
    },
    Captured(Box<Capture>),
    /// Captures left out of the feed (in total so far) because the consumer did not keep up.
    CapturesDropped {
        captures: u64,
    },
    CaptureStopped {
        error: Option<String>,
    },
    /// A secret was stored (never its value).
    SecretStored {
        name: String,
        result: Result<(), String>,
    },
    SecretDeleted {
        name: String,
        result: Result<(), String>,
    },
    /// Whether a secret is set, after `LoadSecrets`, `SetSecret` or `DeleteSecret`.
    SecretStatus {
        name: String,
        set: bool,
    },
    /// Something went wrong outside a job's own result; `job` names the job it is about.
    Error {
        job: Option<String>,
        message: String,
    },
}

/// The log of a probe job: everything goes to the runtime's log as for any job, and
/// each attempt is also reported to the app.
struct ProbeLog {
    inner: Arc<dyn JobLog>,
    updates: UpdateTx,
}

impl JobLog for ProbeLog {
    fn job_started(&self, job: &crate::core::job::NewJob) -> crate::core::job::Commit {
        self.inner.job_started(job)
    }
    fn job_resumed(&self, job: &str) -> crate::core::job::Commit {
        self.inner.job_resumed(job)
    }
    fn attempt(&self, a: crate::core::job::AttemptLog) {
        self.updates.send(Update::Attempt {
            job: a.job.clone(),
            attempt: Box::new(a.clone()),
        });
        if self.inner.wants_attempts() {
            self.inner.attempt(a);
        }
    }
    fn events_done(
        &self,
        job: &str,
        events: &[usize],
        outcome: &Outcome,
    ) -> crate::core::job::Commit {
        self.inner.events_done(job, events, outcome)
    }
    fn events_done_many(&self, job: &str, outcomes: &[&Outcome]) -> crate::core::job::Commit {
        self.inner.events_done_many(job, outcomes)
    }
    fn events_skipped(&self, job: &str, events: &[usize]) -> crate::core::job::Commit {
        self.inner.events_skipped(job, events)
    }
    fn job_finished(&self, job: &str, state: &str) -> crate::core::job::Commit {
        self.inner.job_finished(job, state)
    }
    fn heartbeat(&self, job: &str) {
        self.inner.heartbeat(job);
    }
}

/// What an authorization obtained (no token values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// The access token's lifetime, when the server said.
    pub expires_in: Option<Duration>,
    /// A refresh token came and is stored in the keyring.
    pub refresh_token_stored: bool,
}

/// How a job ended. A cancelled job is not a success, and a job with failed events
/// is not done.
#[derive(Debug, Clone)]
pub enum JobEnd {
    /// Every event was delivered or skipped by the trigger.
    Done(JobStats),
    /// Some events failed (`stats`), or the job could not run or stopped (`error`, which
    /// names the job and, for history failures, the database).
    Failed {
        stats: Option<JobStats>,
        error: Option<String>,
    },
    /// Cancelled: events not delivered stay pending (a resume sends them).
    Cancelled(JobStats),
}

impl JobEnd {
    /// The final counts, when the job ran.
    pub fn stats(&self) -> Option<&JobStats> {
        match self {
            Self::Done(s) | Self::Cancelled(s) => Some(s),
            Self::Failed { stats, .. } => stats.as_ref(),
        }
    }
    /// Why the job could not run or stopped, when it did not run to its end.
    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Failed { error, .. } => error.as_deref(),
            _ => None,
        }
    }
}

/// What the runtime is built with.
pub struct RuntimeConfig {
    pub secrets: Secrets,
    pub log: Arc<dyn JobLog>,
    pub tokens: Option<Arc<dyn TokenProvider>>,
    /// Worker threads for the tokio runtime (≥ 1).
    pub worker_threads: usize,
    /// Where captures are recorded, if anywhere.
    pub capture_history: Option<HistoryWriter>,
    /// The history `ResendFailed` and `ResumeJob` read (the same database `log` writes).
    pub history: Option<Arc<History>>,
    /// The most updates queued for the consumer (see [`feed`]).
    pub update_capacity: usize,
}

impl RuntimeConfig {
    pub fn new(secrets: Secrets) -> Self {
        Self {
            secrets,
            log: Arc::new(NoLog),
            tokens: None,
            worker_threads: 2,
            capture_history: None,
            history: None,
            update_capacity: feed::DEFAULT_CAPACITY,
        }
    }
}

/// The handle the UI/CLI holds. Dropping it shuts the runtime down.
pub struct Runtime {
    tx: tokio::sync::mpsc::UnboundedSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
    feed: Arc<feed::Counters>,
}

impl Runtime {
    /// Start the runtime thread. Updates arrive on the returned receiver (bounded:
    /// see [`feed`]); `waker` is called when there is something new, at most about 60
    /// times a second, and always after the last update.
    pub fn start(
        config: RuntimeConfig,
        waker: impl Fn() + Send + Sync + 'static,
    ) -> Result<(Self, mpsc::Receiver<Update>), String> {
        let (updates, urx) = UpdateTx::new(config.update_capacity, Arc::new(waker));
        let feed = updates.counters();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads.max(1))
            .thread_name("hookline-worker")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("hookline-runtime".into())
            .spawn(move || rt.block_on(run(config, rx, updates)))
            .map_err(|e| format!("cannot start the runtime thread: {e}"))?;
        Ok((
            Self {
                tx,
                thread: Some(thread),
                feed,
            },
            urx,
        ))
    }

    /// How many updates were queued and dropped, and how often the waker was called.
    pub fn feed_stats(&self) -> FeedStats {
        self.feed.stats()
    }

    /// Queue a command; never blocks. `false` if the runtime has stopped.
    pub fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).is_ok()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(
    config: RuntimeConfig,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Command>,
    updates: UpdateTx,
) {
    let flusher = tokio::spawn(updates.clone().run_flusher());
    serve(config, &mut rx, &updates).await;
    flusher.abort();
    updates.finish();
}

async fn serve(
    config: RuntimeConfig,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Command>,
    updates: &UpdateTx,
) {
    let client = match delivery::http_client(false) {
        Ok(c) => c,
        Err(message) => {
            updates.send(Update::Error { job: None, message });
            return;
        }
    };
    let oauth = oauth2::OAuthTokens {
        cache: oauth2::TokenCache::default(),
        client: client.clone(),
        secrets: config.secrets.clone(),
    };
    let tokens: Arc<dyn TokenProvider> = config
        .tokens
        .clone()
        .unwrap_or_else(|| Arc::new(oauth.clone()));
    let env = Arc::new(JobEnv {
        client,
        secrets: config.secrets.clone(),
        log: config.log.clone(),
        tokens: Some(tokens),
    });
    let mut receiver: Option<(ReceiverHandle, tokio::task::JoinHandle<()>)> = None;
    let mut jobs: HashMap<String, watch::Sender<Control>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(mut cmd) = rx.recv().await {
        jobs.retain(|_, c| !c.is_closed());
        let mut probe = false;
        if let Command::Probe {
            job,
            destination,
            event,
        } = cmd
        {
            probe = true;
            cmd = Command::Send {
                job,
                destination,
                events: Arc::new(EventList::Values(vec![event])),
                only: None,
                source: "send this event (app)".into(),
                resume: false,
                fingerprint: JobFingerprint::default(),
            };
        }
        if let Command::ReplaySet {
            job,
            destination,
            set,
        } = cmd
        {
            let source = format!("event set \"{}\"", set.name);
            cmd = Command::Send {
                job,
                destination,
                events: Arc::new(EventList::Values(set.events)),
                only: None,
                source,
                resume: false,
                fingerprint: JobFingerprint::default(),
            };
        }
        if matches!(
            cmd,
            Command::ResendFailed { .. } | Command::ResumeJob { .. }
        ) {
            match redrive(cmd, config.history.clone()).await {
                Ok(send) => cmd = send,
                Err((job, message)) => {
                    updates.send(Update::JobFinished {
                        job,
                        end: JobEnd::Failed {
                            stats: None,
                            error: Some(message),
                        },
                    });
                    continue;
                }
            }
        }
        // A stream is sent like a list: it is set aside, and the `Send` below takes it.
        let mut stream = None;
        if let Command::SendStream {
            job,
            destination,
            events,
            only,
            source,
            resume,
            fingerprint,
        } = cmd
        {
            stream = Some(events);
            cmd = Command::Send {
                job,
                destination,
                events: Arc::default(),
                only,
                source,
                resume,
                fingerprint,
            };
        }
        match cmd {
            Command::Send {
                job,
                destination,
                events,
                only,
                source,
                resume,
                fingerprint,
            } => {
                let events = stream.map_or(EventSource::List(events), EventSource::Stream);
                let (ctl, ctl_rx) = watch::channel(Control::Run);
                jobs.insert(job.clone(), ctl);
                let env = if destination.accept_invalid_certs {
                    match delivery::http_client(true) {
                        Ok(client) => Arc::new(JobEnv {
                            client,
                            secrets: env.secrets.clone(),
                            log: env.log.clone(),
                            tokens: env.tokens.clone(),
                        }),
                        Err(message) => {
                            updates.send(Update::JobFinished {
                                job,
                                end: JobEnd::Failed {
                                    stats: None,
                                    error: Some(message),
                                },
                            });
                            continue;
                        }
                    }
                } else {
                    env.clone()
                };
                let env = if probe {
                    Arc::new(JobEnv {
                        client: env.client.clone(),
                        secrets: env.secrets.clone(),
                        log: Arc::new(ProbeLog {
                            inner: env.log.clone(),
                            updates: updates.clone(),
                        }),
                        tokens: env.tokens.clone(),
                    })
                } else {
                    env
                };
                let count = only.as_ref().map_or(events.len(), Vec::len);
                updates.send(Update::JobStarted {
                    job: job.clone(),
                    events: count,
                });
                let spec = JobSpec {
                    job: job.clone(),
                    destination: *destination,
                    events,
                    only,
                    source,
                    create: !resume,
                    fingerprint,
                };
                let report: Arc<dyn JobReport> = Arc::new(updates.clone());
                let updates = updates.clone();
                let secret_names = secret_names(&spec.destination);
                tasks.spawn(async move {
                    // Read the destination's secrets on the blocking pool first: the job
                    // renders on the async workers, which must never wait on a keyring.
                    // Misses and errors are cached too, and reported per event.
                    let secrets = env.secrets.clone();
                    let _ = blocking(move || Ok(secrets.load_missing(&secret_names))).await;
                    // The job runs in its own task so that, should it panic, it still
                    // ends: `failed` in the history and a `JobFinished` with the error,
                    // instead of a job stuck `running` and a caller waiting forever.
                    let log = env.log.clone();
                    let run = tokio::spawn(delivery::run_job(spec, env, report, ctl_rx));
                    let end = match run.await {
                        Ok(Ok((stats, delivery::EndState::Done))) => JobEnd::Done(stats),
                        Ok(Ok((stats, delivery::EndState::Cancelled))) => JobEnd::Cancelled(stats),
                        Ok(Ok((stats, delivery::EndState::Failed))) => JobEnd::Failed {
                            stats: Some(stats),
                            error: None,
                        },
                        Ok(Err(error)) => JobEnd::Failed {
                            stats: None,
                            error: Some(error),
                        },
                        Err(e) => {
                            let _ = log.job_finished(&job, "failed").await;
                            JobEnd::Failed { stats: None, error: Some(format!(
                                "job {job} stopped: internal error ({}); events not recorded as delivered are sent again by --resume {job}",
                                if e.is_panic() { "the job panicked" } else { "the job was aborted" }
                            )) }
                        }
                    };
                    updates.send(Update::JobFinished { job, end });
                });
            }
            Command::Pause { job } => set_control(&jobs, &job, Control::Pause, updates),
            Command::Resume { job } => set_control(&jobs, &job, Control::Run, updates),
            Command::Cancel { job } => set_control(&jobs, &job, Control::Cancel, updates),
            Command::FetchToken { destination } => {
                let (oauth, updates) = (oauth.clone(), updates.clone());
                tokio::spawn(async move {
                    oauth.cache.invalidate(destination.key());
                    let result = oauth
                        .cache
                        .access_token(
                            destination.key(),
                            &destination.auth,
                            &oauth.client,
                            &oauth.secrets,
                        )
                        .await
                        .map(|_| oauth.cache.fresh_for(destination.key()))
                        .map_err(|e| e.to_string());
                    updates.send(Update::Token {
                        destination: destination.name.clone(),
                        result,
                    });
                });
            }
            Command::Authorize {
                destination,
                timeout,
                open_browser,
            } => {
                let (oauth, updates) = (oauth.clone(), updates.clone());
                tokio::spawn(async move {
                    let client = if destination.accept_invalid_certs {
                        delivery::http_client(true)
                    } else {
                        Ok(oauth.client.clone())
                    };
                    let name = destination.name.clone();
                    let shown = updates.clone();
                    let open = move |url: &str| {
                        shown.send(Update::AuthorizeUrl {
                            destination: name,
                            url: url.to_owned(),
                        });
                        if open_browser {
                            oauth2::default_open_browser(url)
                        } else {
                            Ok(())
                        }
                    };
                    let result = match client {
                        Ok(client) => oauth2::authorize(
                            destination.key(),
                            &destination.auth,
                            &client,
                            &oauth.secrets,
                            &oauth.cache,
                            open,
                            timeout,
                        )
                        .await
                        .map(|set| Authorized {
                            expires_in: set.expires_in,
                            refresh_token_stored: set.refresh_token.is_some(),
                        })
                        .map_err(|e| match e {
                            oauth2::OAuthError::NotOAuth(_) => {
                                oauth2::OAuthError::NotOAuth(destination.name.clone()).to_string()
                            }
                            e => e.to_string(),
                        }),
                        Err(e) => Err(e),
                    };
                    updates.send(Update::Authorized {
                        destination: destination.name.clone(),
                        result,
                    });
                });
            }
            Command::StartCapture { config: cc } => {
                if let Some((old, fwd)) = receiver.take() {
                    old.shutdown().await;
                    fwd.abort();
                }
                let (tx, mut crx) = tokio::sync::mpsc::unbounded_channel();
                // `record: false` (a sink for benchmarks) reports no captures.
                let live = cc.record.then_some(tx);
                match capture::start(cc, config.capture_history.clone(), live).await {
                    Ok(h) => {
                        updates.send(Update::CaptureStarted { addr: h.addr() });
                        let u = updates.clone();
                        let fwd = tokio::spawn(async move {
                            while let Some(c) = crx.recv().await {
                                u.captured(Box::new(c));
                            }
                        });
                        receiver = Some((h, fwd));
                    }
                    Err(e) => updates.send(Update::CaptureStopped {
                        error: Some(e.to_string()),
                    }),
                }
            }
            Command::StopCapture => {
                if let Some((h, fwd)) = receiver.take() {
                    // In-flight requests finish; what they captured is reported
                    // before `CaptureStopped`.
                    h.shutdown().await;
                    let abort = fwd.abort_handle();
                    if tokio::time::timeout(Duration::from_secs(5), fwd)
                        .await
                        .is_err()
                    {
                        abort.abort();
                    }
                }
                updates.send(Update::CaptureStopped { error: None });
            }
            Command::SetSecret { name, value } => {
                let (secrets, updates) = (config.secrets.clone(), updates.clone());
                tokio::spawn(async move {
                    let n = name.clone();
                    let result = blocking(move || secrets.store(&n, &value)).await;
                    let ok = result.is_ok();
                    updates.send(Update::SecretStored {
                        name: name.clone(),
                        result: result.map_err(|e| e.to_string()),
                    });
                    if ok {
                        updates.send(Update::SecretStatus { name, set: true });
                    }
                });
            }
            Command::DeleteSecret { name } => {
                let (secrets, updates) = (config.secrets.clone(), updates.clone());
                tokio::spawn(async move {
                    let n = name.clone();
                    let result = blocking(move || secrets.delete(&n)).await;
                    let ok = result.is_ok();
                    updates.send(Update::SecretDeleted {
                        name: name.clone(),
                        result: result.map_err(|e| e.to_string()),
                    });
                    if ok {
                        updates.send(Update::SecretStatus { name, set: false });
                    }
                });
            }
            Command::LoadSecrets { names } => {
                let (secrets, updates) = (config.secrets.clone(), updates.clone());
                tokio::spawn(async move {
                    let loaded = blocking(move || Ok(secrets.preload(&names))).await;
                    match loaded {
                        Ok(loaded) => {
                            for (name, entry) in loaded {
                                match entry {
                                    Ok(v) => updates.send(Update::SecretStatus {
                                        name,
                                        set: v.is_some(),
                                    }),
                                    Err(e) => updates.send(Update::Error {
                                        job: None,
                                        message: secret_message(&name, &e),
                                    }),
                                }
                            }
                        }
                        Err(e) => updates.send(Update::Error {
                            job: None,
                            message: e.to_string(),
                        }),
                    }
                });
            }
            Command::ReplaySet { .. }
            | Command::Probe { .. }
            | Command::SendStream { .. }
            | Command::ResendFailed { .. }
            | Command::ResumeJob { .. } => unreachable!("turned into Send above"),
            Command::Shutdown => break,
        }
    }
    for c in jobs.values() {
        let _ = c.send(Control::Cancel);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// Turn `ResendFailed` / `ResumeJob` into the `Send` of a resume, or say why not
/// (with the job it is about).
/// A job still running (here or in another process) is refused by the history's
/// check: it ends `running` only once its last outcome is committed.
async fn redrive(cmd: Command, history: Option<Arc<History>>) -> Result<Command, (String, String)> {
    let (what, job, destination, events, fingerprint) = match cmd {
        Command::ResendFailed {
            job,
            destination,
            events,
            fingerprint,
        } => (jobs::Redrive::Failed, job, destination, events, fingerprint),
        Command::ResumeJob {
            job,
            destination,
            events,
            fingerprint,
        } => (
            jobs::Redrive::Undelivered,
            job,
            destination,
            events,
            fingerprint,
        ),
        other => return Ok(other),
    };
    let Some(history) = history else {
        return Err((
            job.clone(),
            format!("job {job}: no history to read (the runtime was started without one)"),
        ));
    };
    let args = (
        job.clone(),
        destination.clone(),
        events.clone(),
        fingerprint.clone(),
    );
    let planned = tokio::task::spawn_blocking(move || {
        let (job, destination, events, fingerprint) = args;
        jobs::plan(&history, what, &job, &destination, &events, &fingerprint)
    })
    .await;
    let plan = match planned {
        Ok(Ok(p)) => p,
        Ok(Err(message)) => return Err((job, message)),
        Err(e) => {
            return Err((
                job.clone(),
                format!("job {job}: reading the history failed: {e}"),
            ));
        }
    };
    Ok(Command::Send {
        job,
        destination,
        events,
        only: Some(plan.only),
        source: plan.source,
        resume: true,
        fingerprint,
    })
}

fn set_control(
    jobs: &HashMap<String, watch::Sender<Control>>,
    job: &str,
    c: Control,
    updates: &UpdateTx,
) {
    match jobs.get(job) {
        Some(tx) => {
            let _ = tx.send(c);
        }
        None => updates.send(Update::Error {
            job: Some(job.to_owned()),
            message: format!("no running job \"{job}\""),
        }),
    }
}

/// Run a secret-store call on tokio's blocking pool: a keyring may wait on D-Bus.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SecretError> + Send + 'static,
) -> Result<T, SecretError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(SecretError::NoKeyring(format!(
            "the secret store call did not complete: {e}"
        )))
    })
}

/// A secret error as a message that names the secret (a store error may not).
fn secret_message(name: &str, e: &SecretError) -> String {
    match e {
        SecretError::NoKeyring(_) => format!("secret `{name}`: {e}"),
        SecretError::NotSet { .. } | SecretError::NotLoaded { .. } | SecretError::Store { .. } => {
            e.to_string()
        }
    }
}

/// The secrets a destination names: auth and signing fields (`…_secret`, `secret`), and
/// every literal `secret('name')` / `secret("name")` in its templates. OAuth2 refresh
/// tokens are left out (the token code reads them itself, off the workers). A name built
/// at render time is not found here; it is read on first use.
pub fn secret_names(dest: &Destination) -> Vec<String> {
    fn walk(v: &serde_json::Value, key: Option<&str>, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => {
                if let Some(k) = key
                    && (k == "secret" || k.ends_with("_secret"))
                    && k != "refresh_token_secret"
                    && !s.is_empty()
                {
                    out.push(s.clone());
                }
                template_secret_names(s, out);
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, None, out)),
            serde_json::Value::Object(m) => m.iter().for_each(|(k, x)| walk(x, Some(k), out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(dest) {
        walk(&v, None, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

/// Literal names in `secret('…')` / `secret("…")` calls of a template.
fn template_secret_names(s: &str, out: &mut Vec<String>) {
    let mut rest = s;
    while let Some(i) = rest.find("secret(") {
        rest = &rest[i + "secret(".len()..];
        let arg = rest.trim_start();
        let Some(q) = arg.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        if let Some(end) = arg[1..].find(q) {
            let name = &arg[1..=end];
            if !name.is_empty() {
                out.push(name.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_finds_auth_signing_and_template_secrets() {
        let mut d = Destination::new("d", "https://example.com/{{ secret('path-s') }}");
        d.headers
            .insert("X-Key".into(), "{{ secret( \"hdr-s\" ) }}".into());
        d.signing = crate::core::model::Signing::StandardWebhooks {
            secret: "sign-s".into(),
        };
        let names = secret_names(&d);
        assert_eq!(names, ["hdr-s", "path-s", "sign-s"], "{names:?}");
    }
}
