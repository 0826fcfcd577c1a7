//! The update feed: how [`Update`]s get from the runtime to the UI without ever
//! blocking the runtime or flooding the UI.
//!
//! - The channel is bounded ([`RuntimeConfig::update_capacity`](super::RuntimeConfig)
//!   updates). What a job reports per request (outcomes, retries, render errors) is
//!   buffered per job and flushed at most ~30 times a second as one
//!   [`Update::Outcomes`] batch (≤ [`MAX_BATCH`] outcomes each), then the job's latest
//!   [`Update::Progress`] (only when it changed). When the consumer does not drain
//!   (a minimised window), these are dropped from the feed — the history and the
//!   job's stats stay complete — and counted in [`Update::Dropped`], so memory stays
//!   flat however long nobody reads.
//! - Everything else (job start/end, errors, tokens, secrets, capture start/stop) is
//!   never dropped: when the channel is full it waits, in order, in a small queue that
//!   is moved into the channel as soon as the consumer makes room.
//! - The waker is called at most once per [`WAKE_INTERVAL`], and always once after
//!   the last update that entered the channel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Update;
use super::delivery::{JobReport, Outcome};
use super::stats::{FeedStats, JobStats};

/// How often a job's buffered outcomes and progress are flushed (≈ 30 Hz).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(33);
/// The shortest time between two waker calls (≈ 60 Hz).
pub const WAKE_INTERVAL: Duration = Duration::from_millis(16);
/// The most outcomes in one [`Update::Outcomes`].
pub const MAX_BATCH: usize = 512;
/// Retries and render errors kept per job between two flushes; more are counted as dropped.
const MAX_OTHERS: usize = 1_024;
/// The channel's default capacity, in updates: with [`MAX_BATCH`] this bounds what an
/// undrained feed holds to ~130 000 outcomes.
pub const DEFAULT_CAPACITY: usize = 256;

/// What one job has reported since the last flush.
#[derive(Default)]
struct JobBuf {
    outcomes: Vec<Outcome>,
    /// `Retrying` and `RenderError` updates, in order.
    others: Vec<Update>,
    progress: Option<JobStats>,
    last_progress: Option<JobStats>,
    dropped: Dropped,
    reported: Dropped,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
struct Dropped {
    outcomes: u64,
    render_errors: u64,
    retries: u64,
}

impl JobBuf {
    fn has_work(&self) -> bool {
        !self.outcomes.is_empty()
            || !self.others.is_empty()
            || self.progress.is_some()
            || self.dropped != self.reported
    }
}

struct State {
    jobs: HashMap<String, JobBuf>,
    /// Jobs whose `JobFinished` went out: a late report (a progress tick racing the
    /// job's end) is ignored, so nothing about a job follows its end.
    finished: HashSet<String>,
    /// Updates that must not be dropped, waiting for room in the channel.
    pending: VecDeque<Update>,
    captures_dropped: u64,
    captures_reported: u64,
    last_flush: Instant,
    last_wake: Option<Instant>,
    /// An update entered the channel since the last waker call.
    wake_due: bool,
}

struct Feed {
    tx: mpsc::SyncSender<Update>,
    waker: Arc<dyn Fn() + Send + Sync>,
    state: Mutex<State>,
    notify: Notify,
    counters: Arc<Counters>,
}

/// The feed's counters, shared with the [`Runtime`](super::Runtime) handle (which must
/// not hold a sender: the consumer sees the channel close when the runtime ends).
#[derive(Default)]
pub struct Counters {
    updates: AtomicU64,
    wakes: AtomicU64,
    dropped_outcomes: AtomicU64,
    dropped_other: AtomicU64,
}

impl Counters {
    pub fn stats(&self) -> FeedStats {
        FeedStats {
            updates: self.updates.load(Ordering::Relaxed),
            wakes: self.wakes.load(Ordering::Relaxed),
            dropped_outcomes: self.dropped_outcomes.load(Ordering::Relaxed),
            dropped_other: self.dropped_other.load(Ordering::Relaxed),
        }
    }
}

/// Sends updates and wakes the consumer (a repaint, for the GUI). Cheap to clone.
#[derive(Clone)]
pub struct UpdateTx(Arc<Feed>);

/// Whether an update may be dropped when the consumer does not keep up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Droppable,
    Must,
}

impl UpdateTx {
    /// A feed of at most `capacity` queued updates (at least 16).
    pub fn new(
        capacity: usize,
        waker: Arc<dyn Fn() + Send + Sync>,
    ) -> (Self, mpsc::Receiver<Update>) {
        let (tx, rx) = mpsc::sync_channel(capacity.max(16));
        let feed = Feed {
            tx,
            waker,
            state: Mutex::new(State {
                jobs: HashMap::new(),
                finished: HashSet::new(),
                pending: VecDeque::new(),
                captures_dropped: 0,
                captures_reported: 0,
                last_flush: Instant::now(),
                last_wake: None,
                wake_due: false,
            }),
            notify: Notify::new(),
            counters: Arc::default(),
        };
        (Self(Arc::new(feed)), rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Send an update that is never dropped. A `JobFinished` first flushes what its
    /// job still has buffered, so a job's outcomes always come before its end.
    pub fn send(&self, u: Update) {
        let mut st = self.lock();
        match &u {
            Update::JobStarted { job, .. } => {
                st.finished.remove(job);
            }
            Update::JobFinished { job, .. } => {
                if let Some(mut buf) = st.jobs.remove(job) {
                    self.flush_job(&mut st, job, &mut buf, true);
                }
                st.finished.insert(job.clone());
            }
            _ => {}
        }
        self.push(&mut st, u, Kind::Must);
        drop(st);
        self.after_send();
    }

    /// A capture, dropped (and counted in [`Update::CapturesDropped`]) when the
    /// consumer does not keep up; the capture history, if any, still has it.
    pub fn captured(&self, c: Box<crate::capture::Capture>) {
        let mut st = self.lock();
        if !self.push(&mut st, Update::Captured(c), Kind::Droppable) {
            st.captures_dropped += 1;
            self.0.notify.notify_one();
        }
        drop(st);
        self.after_send();
    }

    /// The feed's counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.0.counters.clone()
    }

    /// Try to put `u` in the channel, behind anything already waiting. `false` when a
    /// droppable update was dropped.
    fn push(&self, st: &mut State, u: Update, kind: Kind) -> bool {
        self.move_pending(st);
        if !st.pending.is_empty() {
            if kind == Kind::Must {
                st.pending.push_back(u);
                self.0.notify.notify_one();
                return true;
            }
            return false;
        }
        match self.0.tx.try_send(u) {
            Ok(()) => {
                self.0.counters.updates.fetch_add(1, Ordering::Relaxed);
                st.wake_due = true;
                true
            }
            Err(mpsc::TrySendError::Full(u)) => {
                if kind == Kind::Must {
                    st.pending.push_back(u);
                    self.0.notify.notify_one();
                    true
                } else {
                    false
                }
            }
            // Nobody listens any more: nothing to keep.
            Err(mpsc::TrySendError::Disconnected(_)) => true,
        }
    }

    fn move_pending(&self, st: &mut State) {
        while let Some(u) = st.pending.pop_front() {
            match self.0.tx.try_send(u) {
                Ok(()) => {
                    self.0.counters.updates.fetch_add(1, Ordering::Relaxed);
                    st.wake_due = true;
                }
                Err(mpsc::TrySendError::Full(u)) => {
                    st.pending.push_front(u);
                    return;
                }
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    st.pending.clear();
                    return;
                }
            }
        }
    }

    /// Flush one job's buffer. `last`: the job is ending, so its drop counts must arrive.
    fn flush_job(&self, st: &mut State, job: &str, buf: &mut JobBuf, last: bool) {
        // Retries first: a request's retry always happened before its final outcome.
        for u in std::mem::take(&mut buf.others) {
            let retry = matches!(u, Update::Retrying { .. });
            if !self.push(st, u, Kind::Droppable) {
                if retry {
                    buf.dropped.retries += 1;
                } else {
                    buf.dropped.render_errors += 1;
                }
                self.0
                    .counters
                    .dropped_other
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let outcomes = std::mem::take(&mut buf.outcomes);
        let mut rest = outcomes.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<Outcome> = rest.by_ref().take(MAX_BATCH).collect();
            let n = chunk.len() as u64;
            let u = Update::Outcomes {
                job: job.to_owned(),
                outcomes: chunk,
            };
            if !self.push(st, u, Kind::Droppable) {
                buf.dropped.outcomes += n;
                self.0
                    .counters
                    .dropped_outcomes
                    .fetch_add(n, Ordering::Relaxed);
            }
        }
        if let Some(p) = buf.progress.take()
            && buf.last_progress.as_ref() != Some(&p)
        {
            let u = Update::Progress {
                job: job.to_owned(),
                stats: p.clone(),
            };
            if self.push(st, u, Kind::Droppable) {
                buf.last_progress = Some(p);
            } else if !last {
                // Superseded by the next one anyway; keep the latest for when there is room.
                buf.progress = Some(p);
            }
        }
        if buf.dropped != buf.reported {
            let u = Update::Dropped {
                job: job.to_owned(),
                outcomes: buf.dropped.outcomes,
                render_errors: buf.dropped.render_errors,
                retries: buf.dropped.retries,
            };
            let kind = if last { Kind::Must } else { Kind::Droppable };
            if self.push(st, u, kind) {
                buf.reported = buf.dropped;
            }
        }
    }

    fn flush_all(&self, st: &mut State) {
        let mut jobs = std::mem::take(&mut st.jobs);
        for (job, buf) in &mut jobs {
            if buf.has_work() {
                self.flush_job(st, job, buf, false);
            }
        }
        // A job's buffer (with its drop counts) lives until its `JobFinished`.
        st.jobs = jobs;
        if st.captures_dropped != st.captures_reported {
            let u = Update::CapturesDropped {
                captures: st.captures_dropped,
            };
            if self.push(st, u, Kind::Droppable) {
                st.captures_reported = st.captures_dropped;
            }
        }
        st.last_flush = Instant::now();
    }

    /// Call the waker now if it may be called; otherwise leave it to the flusher.
    fn after_send(&self) {
        let wake = {
            let mut st = self.lock();
            let now = Instant::now();
            if st.wake_due && st.last_wake.is_none_or(|t| now >= t + WAKE_INTERVAL) {
                st.wake_due = false;
                st.last_wake = Some(now);
                true
            } else {
                if st.wake_due {
                    self.0.notify.notify_one();
                }
                false
            }
        };
        if wake {
            self.wake();
        }
    }

    fn wake(&self) {
        self.0.counters.wakes.fetch_add(1, Ordering::Relaxed);
        (self.0.waker)();
    }

    /// Do what is due at `now`; the next time there is something to do, if any.
    fn tick(&self, now: Instant) -> Option<Instant> {
        let mut st = self.lock();
        let busy =
            st.jobs.values().any(JobBuf::has_work) || st.captures_dropped != st.captures_reported;
        if busy && now >= st.last_flush + FLUSH_INTERVAL {
            self.flush_all(&mut st);
        }
        self.move_pending(&mut st);
        let mut wake = false;
        if st.wake_due && st.last_wake.is_none_or(|t| now >= t + WAKE_INTERVAL) {
            st.wake_due = false;
            st.last_wake = Some(now);
            wake = true;
        }
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if st.jobs.values().any(JobBuf::has_work) || st.captures_dropped != st.captures_reported {
            at(st.last_flush + FLUSH_INTERVAL);
        }
        if !st.pending.is_empty() {
            at(now + WAKE_INTERVAL);
        }
        if st.wake_due {
            at(st.last_wake.map_or(now, |t| t + WAKE_INTERVAL));
        }
        drop(st);
        if wake {
            self.wake();
        }
        next
    }

    /// The flusher: runs on the runtime until it stops, idle when nothing is buffered.
    pub async fn run_flusher(self) {
        loop {
            match self.tick(Instant::now()) {
                Some(t) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(t.into()) => {}
                        () = self.0.notify.notified() => {}
                    }
                }
                None => self.0.notify.notified().await,
            }
        }
    }

    /// Flush everything that fits and wake the consumer once more: the runtime is stopping.
    pub fn finish(&self) {
        let wake = {
            let mut st = self.lock();
            self.flush_all(&mut st);
            self.move_pending(&mut st);
            std::mem::take(&mut st.wake_due)
        };
        if wake {
            self.wake();
        }
    }

    fn buffer(&self, job: &str, f: impl FnOnce(&mut JobBuf)) {
        let mut st = self.lock();
        if st.finished.contains(job) {
            return;
        }
        let idle = !st.jobs.values().any(JobBuf::has_work);
        if let Some(b) = st.jobs.get_mut(job) {
            f(b);
        } else {
            f(st.jobs.entry(job.to_owned()).or_default());
        }
        drop(st);
        if idle {
            self.0.notify.notify_one();
        }
    }
}

impl JobReport for UpdateTx {
    fn outcome(&self, job: &str, o: Outcome) {
        self.buffer(job, |b| b.outcomes.push(o));
    }
    fn retrying(&self, job: &str, request_no: u64, attempt: u32, wait: Duration, reason: &str) {
        let dropped = &self.0.counters.dropped_other;
        self.buffer(job, |b| {
            if b.others.len() < MAX_OTHERS {
                b.others.push(Update::Retrying {
                    job: job.to_owned(),
                    request_no,
                    attempt,
                    wait,
                    reason: reason.to_owned(),
                });
            } else {
                b.dropped.retries += 1;
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    fn progress(&self, job: &str, stats: &JobStats) {
        self.buffer(job, |b| b.progress = Some(stats.clone()));
    }
    fn render_error(&self, job: &str, index: usize, error: &str) {
        let dropped = &self.0.counters.dropped_other;
        self.buffer(job, |b| {
            if b.others.len() < MAX_OTHERS {
                b.others.push(Update::RenderError {
                    job: job.to_owned(),
                    index,
                    error: error.to_owned(),
                });
            } else {
                b.dropped.render_errors += 1;
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}
