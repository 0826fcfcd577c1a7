//! The desktop app: an eframe window over the same engine the CLI uses. The app
//! state ([`HooklineApp`]) is separate from the widgets so tests drive it headless
//! (`egui_kittest`); disk, keyring and network work happens on other threads (the
//! runtime, or [`work`]), never in a frame.

pub mod editor;
pub mod mapping;
pub mod preview;
pub mod sidebar;
pub mod state;
pub mod widgets;
pub mod work;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::core::job::AttemptLog;
use crate::core::model::{Destination, EventSet, Workspace};
use crate::core::secret::Secrets;
use crate::runtime::{Command, JobEnd, Runtime, RuntimeConfig, Update};
use state::{Doc, Edits, Tab};
use work::{Io, IoDone, Task};

/// The sample workspace and events a first start is given.
const SAMPLE_WORKSPACE: &str = include_str!("../../assets/sample-workspace.json");
const SAMPLE_EVENTS: &str = include_str!("../../assets/sample-events.ndjson");

/// Where the app keeps its files, and what it starts with.
pub struct AppConfig {
    /// The user's data directory for Hookline (workspace, recovery file, history).
    pub data_dir: PathBuf,
    /// The workspace to open: the last one, or `None` for the first-start sample.
    pub workspace: Option<PathBuf>,
    pub secrets: Secrets,
    /// Start the built-in capture receiver on 127.0.0.1 (a free port).
    pub start_receiver: bool,
    /// The port the receiver had last time: tried first, so destinations pointed at
    /// it (the first-start sample) keep working across restarts.
    pub receiver_port: Option<u16>,
    /// Open (and write) the history database in `data_dir`.
    pub history: bool,
}

/// File dialogs, behind a trait so tests never open one. They are shown from an I/O
/// thread: a frame never waits on a dialog.
pub trait FileDialogs: Send + Sync {
    fn open_workspace(&self) -> Option<PathBuf>;
    fn save_workspace(&self, suggested: &str) -> Option<PathBuf>;
    fn import_events(&self) -> Vec<PathBuf>;
}

/// The system's dialogs (xdg-desktop-portal on Linux).
pub struct SystemDialogs;

impl FileDialogs for SystemDialogs {
    fn open_workspace(&self) -> Option<PathBuf> {
        rfd::FileDialog::new()
            .add_filter("Hookline workspace", &["json"])
            .pick_file()
    }
    fn save_workspace(&self, suggested: &str) -> Option<PathBuf> {
        rfd::FileDialog::new()
            .add_filter("Hookline workspace", &["json"])
            .set_file_name(suggested)
            .save_file()
    }
    fn import_events(&self) -> Vec<PathBuf> {
        rfd::FileDialog::new()
            .add_filter("Events", &["json", "ndjson", "jsonl", "har"])
            .pick_files()
            .unwrap_or_default()
    }
}

/// A message in the status area.
#[derive(Debug, Clone)]
pub struct Notice {
    pub error: bool,
    pub text: String,
}

/// The last import: what was kept and which lines were not.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub set: String,
    pub kept: usize,
    pub errors: Vec<String>,
}

/// "Send this event": the job and what came back, attempt by attempt.
#[derive(Debug, Default)]
pub struct Probe {
    pub job: String,
    pub attempts: Vec<AttemptLog>,
    /// (attempt, wait, reason) for each retry the runtime scheduled.
    pub retries: Vec<(u32, Duration, String)>,
    pub end: Option<JobEnd>,
    pub error: Option<String>,
}

/// Whether a secret is set, as far as the app knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretState {
    Loading,
    Set,
    NotSet,
    /// The secret store could not be asked (no keyring on this session).
    Unavailable,
}

pub struct HooklineApp {
    pub doc: Doc,
    /// The document as last saved (or opened): "unsaved" and "compare with saved".
    pub saved: Doc,
    pub path: Option<PathBuf>,
    pub edits: Edits,
    pub data_dir: PathBuf,
    pub selected: Option<usize>,
    pub selected_set: Option<usize>,
    pub event_index: usize,
    pub tab: Tab,
    pub search: String,
    pub tree_search: String,
    pub reveal: bool,
    pub raw_body: bool,
    /// For previews: answers from the cache only, never a keyring call in a frame.
    pub secrets: Secrets,
    pub secret_state: HashMap<String, SecretState>,
    /// Bumped whenever a secret's state changes, so previews render again.
    pub secrets_gen: u64,
    pub secret_input: HashMap<String, String>,
    pub notices: Vec<Notice>,
    pub import_report: Option<ImportReport>,
    pub probe: Option<Probe>,
    pub receiver: Option<std::net::SocketAddr>,
    pub captured: u64,
    pub renaming: Option<sidebar::Rename>,
    pub confirm_close: bool,
    pub loading: bool,
    pub token_status: HashMap<String, String>,
    pub authorize_url: Option<String>,
    pub live: preview::Live,
    /// The mapping rows' heights as last drawn (rows out of view are not drawn).
    pub row_heights: Vec<f32>,
    pub set_preview: Option<Task<preview::SetPreview>>,
    /// The request of the set preview that is open (by position).
    pub set_request: Option<usize>,
    pub coverage: Option<Task<mapping::Coverage>>,
    pub compare: Option<Task<preview::Comparison>>,
    pub dialogs: Arc<dyn FileDialogs>,
    runtime: Option<Runtime>,
    updates: Option<mpsc::Receiver<Update>>,
    io: Io,
    ctx: Option<egui::Context>,
    title: String,
    /// Point the sample destinations at the receiver once it is listening.
    point_sample_at_receiver: bool,
    recovery_written: Option<Doc>,
    last_recovery: Instant,
    allow_close: bool,
    pending_close: bool,
    /// Ask to close after the save in flight succeeds.
    close_after_save: bool,
    /// First start: the sample's secrets get generated values when they are not set,
    /// so the sample previews and sends at once.
    seed_secrets: std::collections::HashSet<String>,
    /// The receiver asked for last time's port; if that is taken, it starts on another.
    receiver_retry: bool,
}

/// How often unsaved work is written to the recovery file.
const RECOVERY_EVERY: Duration = Duration::from_secs(5);

impl HooklineApp {
    /// Build the app: start the runtime (and the receiver), and begin loading the
    /// workspace in the background. `repaint` is called when the runtime has news.
    pub fn new(config: AppConfig, dialogs: Arc<dyn FileDialogs>, ctx: &egui::Context) -> Self {
        let mut rconf = RuntimeConfig::new(config.secrets.clone());
        let mut notices = Vec::new();
        if config.history {
            match crate::store::history::History::open(&config.data_dir.join("history.sqlite")) {
                Ok(h) => {
                    let h = Arc::new(h);
                    rconf.log = Arc::new(h.writer());
                    rconf.capture_history = Some(h.writer());
                    rconf.history = Some(h);
                }
                Err(e) => notices.push(Notice {
                    error: true,
                    text: format!("history is off: {e}"),
                }),
            }
        }
        let repaint = ctx.clone();
        let (runtime, updates) = match Runtime::start(rconf, move || repaint.request_repaint()) {
            Ok((rt, rx)) => (Some(rt), Some(rx)),
            Err(e) => {
                notices.push(Notice {
                    error: true,
                    text: e,
                });
                (None, None)
            }
        };
        let mut app = Self {
            doc: Doc::default(),
            saved: Doc::default(),
            path: None,
            edits: Edits::default(),
            data_dir: config.data_dir.clone(),
            selected: None,
            selected_set: None,
            event_index: 0,
            tab: Tab::default(),
            search: String::new(),
            tree_search: String::new(),
            reveal: false,
            raw_body: false,
            secrets: config.secrets.cache_only(),
            secret_state: HashMap::new(),
            secrets_gen: 0,
            secret_input: HashMap::new(),
            notices,
            import_report: None,
            probe: None,
            receiver: None,
            captured: 0,
            renaming: None,
            confirm_close: false,
            loading: true,
            token_status: HashMap::new(),
            authorize_url: None,
            live: preview::Live::default(),
            row_heights: Vec::new(),
            set_preview: None,
            set_request: None,
            coverage: None,
            compare: None,
            dialogs,
            runtime,
            updates,
            io: Io::new(ctx.clone()),
            ctx: Some(ctx.clone()),
            title: String::new(),
            point_sample_at_receiver: false,
            recovery_written: None,
            last_recovery: Instant::now(),
            allow_close: false,
            pending_close: false,
            close_after_save: false,
            seed_secrets: std::collections::HashSet::new(),
            receiver_retry: false,
        };
        if config.start_receiver {
            let port = config.receiver_port.unwrap_or(0);
            app.receiver_retry = port != 0;
            app.start_receiver(port);
        }
        if let Some(path) = config.workspace {
            app.io.open(path, Some(recovery_path(&config.data_dir)));
        } else {
            app.point_sample_at_receiver = config.start_receiver;
            app.seed_secrets = sample_workspace(SAMPLE_WORKSPACE, SAMPLE_EVENTS)
                .map(|ws| {
                    ws.destinations
                        .iter()
                        .flat_map(crate::runtime::secret_names)
                        .collect()
                })
                .unwrap_or_default();
            app.io.first_start(
                config.data_dir.join("workspace.json"),
                SAMPLE_WORKSPACE,
                SAMPLE_EVENTS,
            );
        }
        app
    }

    fn start_receiver(&mut self, port: u16) {
        self.command(Command::StartCapture {
            config: crate::capture::CaptureConfig {
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                ..crate::capture::CaptureConfig::default()
            },
        });
    }

    /// Queue a command for the runtime.
    pub fn command(&mut self, cmd: Command) {
        let sent = self.runtime.as_ref().is_some_and(|rt| rt.send(cmd));
        if !sent {
            self.notice(true, "the background runtime is not running");
        }
    }

    pub fn notice(&mut self, error: bool, text: impl Into<String>) {
        self.notices.push(Notice {
            error,
            text: text.into(),
        });
        if self.notices.len() > 50 {
            self.notices.remove(0);
        }
    }

    pub fn dirty(&self) -> bool {
        self.doc != self.saved
    }

    pub fn destination(&self) -> Option<&Destination> {
        self.selected.and_then(|i| self.doc.destinations.get(i))
    }

    pub fn destination_mut(&mut self) -> Option<&mut Destination> {
        self.selected.and_then(|i| self.doc.destinations.get_mut(i))
    }

    pub fn event_set(&self) -> Option<&Arc<EventSet>> {
        self.selected_set.and_then(|i| self.doc.sets.get(i))
    }

    /// The event the mapping designer and preview show.
    pub fn current_event(&self) -> Option<&serde_json::Value> {
        self.event_set()
            .and_then(|s| s.events.get(self.event_index))
    }

    /// Whether a frame is waiting on background work the tests should wait for.
    pub fn busy(&self) -> bool {
        self.loading
            || self.io.busy()
            || self.set_preview.as_ref().is_some_and(|t| !t.done())
            || self.coverage.as_ref().is_some_and(|t| !t.done())
            || self.compare.as_ref().is_some_and(|t| !t.done())
    }

    /// Replace the document (a workspace was opened or recovered).
    fn set_doc(&mut self, doc: Doc, saved: Doc, path: Option<PathBuf>, event: usize) {
        self.doc = doc;
        self.saved = saved;
        self.path = path;
        self.edits.reset(&self.doc);
        self.selected = (!self.doc.destinations.is_empty()).then_some(0);
        self.selected_set = (!self.doc.sets.is_empty()).then_some(0);
        self.event_index = event;
        self.live = preview::Live::default();
        self.set_preview = None;
        self.coverage = None;
        self.compare = None;
        self.load_secrets();
    }

    /// Ask the runtime which secrets the workspace's destinations use are set.
    pub fn load_secrets(&mut self) {
        let mut names: Vec<String> = self
            .doc
            .destinations
            .iter()
            .flat_map(crate::runtime::secret_names)
            .collect();
        names.sort();
        names.dedup();
        names.retain(|n| !self.secret_state.contains_key(n));
        if names.is_empty() {
            return;
        }
        for n in &names {
            self.secret_state.insert(n.clone(), SecretState::Loading);
        }
        self.command(Command::LoadSecrets { names });
    }

    pub fn undo(&mut self) {
        if let Some(d) = self.edits.undo(&self.doc) {
            self.doc = d;
            self.clamp_selection();
        }
    }

    pub fn redo(&mut self) {
        if let Some(d) = self.edits.redo(&self.doc) {
            self.doc = d;
            self.clamp_selection();
        }
    }

    fn clamp_selection(&mut self) {
        let n = self.doc.destinations.len();
        self.selected = match self.selected {
            _ if n == 0 => None,
            Some(i) => Some(i.min(n - 1)),
            None => Some(0),
        };
        let m = self.doc.sets.len();
        self.selected_set = match self.selected_set {
            _ if m == 0 => None,
            Some(i) => Some(i.min(m - 1)),
            None => Some(0),
        };
        let events = self.event_set().map_or(0, |s| s.events.len());
        self.event_index = self.event_index.min(events.saturating_sub(1));
    }

    /// Record an edit made outside a text field (a button): its own undo step.
    pub fn record_edit(&mut self) {
        self.edits.record(&self.doc, "");
    }

    pub fn save(&mut self) {
        match self.path.clone() {
            Some(p) => self.save_to(p),
            None => self.save_as(),
        }
    }

    pub fn save_as(&mut self) {
        let suggested = format!(
            "{}.json",
            if self.doc.name.is_empty() {
                "workspace"
            } else {
                &self.doc.name
            }
        );
        self.io.save_dialog(
            self.dialogs.clone(),
            suggested,
            self.doc.clone(),
            recovery_path(&self.data_dir),
        );
    }

    pub fn save_to(&mut self, path: PathBuf) {
        self.io
            .save(path, self.doc.clone(), recovery_path(&self.data_dir));
    }

    /// Open another workspace. With unsaved changes it refuses, so nothing is lost.
    pub fn open_dialog(&mut self) {
        if self.dirty() {
            self.notice(
                true,
                "save (Ctrl+S) or undo your changes before opening another workspace",
            );
            return;
        }
        self.io.open_dialog(self.dialogs.clone());
    }

    pub fn open(&mut self, path: PathBuf) {
        self.loading = true;
        self.io.open(path, None);
    }

    pub fn import_dialog(&mut self) {
        self.io.import_dialog(self.dialogs.clone());
    }

    /// Import a file as a new event set (also what dropping a file does).
    pub fn import(&mut self, path: PathBuf) {
        self.io.import(path);
    }

    /// Drain what the runtime and the background threads reported. Never blocks.
    pub fn poll(&mut self) {
        let mut updates = Vec::new();
        if let Some(rx) = &self.updates {
            while let Ok(u) = rx.try_recv() {
                updates.push(u);
                if updates.len() >= 10_000 {
                    break;
                }
            }
        }
        for u in updates {
            self.apply(u);
        }
        for done in self.io.poll() {
            self.apply_io(done);
        }
    }

    fn apply(&mut self, u: Update) {
        match u {
            Update::SecretStatus { name, set } => {
                if !set && self.seed_secrets.remove(&name) {
                    self.command(Command::SetSecret {
                        value: generated_secret(&name, &self.doc),
                        name: name.clone(),
                    });
                }
                self.secret_state.insert(
                    name,
                    if set {
                        SecretState::Set
                    } else {
                        SecretState::NotSet
                    },
                );
                self.secrets_gen += 1;
            }
            Update::SecretStored { name, result } | Update::SecretDeleted { name, result } => {
                if let Err(e) = result {
                    self.notice(true, format!("secret `{name}`: {e}"));
                }
                self.secrets_gen += 1;
            }
            Update::CaptureStarted { addr } => {
                self.receiver = Some(addr);
                // Before the sample is open, `apply_io` does it when it opens.
                if self.point_sample_at_receiver && !self.loading {
                    self.point_sample_at_receiver = false;
                    self.point_sample(addr);
                }
            }
            Update::Captured(_) => self.captured += 1,
            Update::CaptureStopped { error } => {
                self.receiver = None;
                if let Some(e) = error {
                    if std::mem::take(&mut self.receiver_retry) {
                        // Last time's port is taken: any free one, and say so.
                        self.notice(
                            true,
                            format!("capture receiver: {e}; it listens on another port"),
                        );
                        self.start_receiver(0);
                    } else {
                        self.notice(true, format!("capture receiver: {e}"));
                    }
                }
            }
            Update::Attempt { job, attempt } => {
                if let Some(p) = self.probe.as_mut().filter(|p| p.job == job) {
                    p.attempts.push(*attempt);
                }
            }
            Update::Retrying {
                job,
                attempt,
                wait,
                reason,
                ..
            } => {
                if let Some(p) = self.probe.as_mut().filter(|p| p.job == job) {
                    p.retries.push((attempt, wait, reason));
                }
            }
            Update::RenderError { job, error, .. } => {
                if let Some(p) = self.probe.as_mut().filter(|p| p.job == job) {
                    p.error = Some(error);
                }
            }
            Update::JobFinished { job, end } => {
                if let Some(p) = self.probe.as_mut().filter(|p| p.job == job) {
                    p.end = Some(end);
                }
            }
            Update::Token {
                destination,
                result,
            } => {
                let text = match result {
                    Ok(Some(d)) => format!(
                        "token fetched; used for {} more before it is refreshed",
                        human_duration(d)
                    ),
                    Ok(None) => "token fetched".to_owned(),
                    Err(e) => format!("token failed: {e}"),
                };
                self.token_status.insert(destination, text);
            }
            Update::AuthorizeUrl { url, .. } => self.authorize_url = Some(url),
            Update::Authorized {
                destination,
                result,
            } => {
                let text = match result {
                    Ok(a) => match a.expires_in {
                        Some(e) => format!("signed in; token expires in {} s", e.as_secs()),
                        None => "signed in".to_owned(),
                    },
                    Err(e) => format!("sign-in failed: {e}"),
                };
                self.token_status.insert(destination, text);
            }
            Update::Error { job, message } => {
                if job.is_none() {
                    // A secret lookup that failed: say so beside the secret.
                    for (name, state) in &mut self.secret_state {
                        if *state == SecretState::Loading && message.contains(&format!("`{name}`"))
                        {
                            *state = SecretState::Unavailable;
                        }
                    }
                }
                self.notice(true, message);
            }
            Update::JobStarted { .. }
            | Update::CapturesDropped { .. }
            | Update::Outcomes { .. }
            | Update::Dropped { .. }
            | Update::Progress { .. } => {}
        }
    }

    fn apply_io(&mut self, done: IoDone) {
        match done {
            IoDone::Opened {
                path,
                doc,
                recovered,
                first_event,
            } => {
                self.loading = false;
                let saved = Doc::from_workspace(doc);
                let current = recovered.map_or_else(|| saved.clone(), Doc::from_workspace);
                if current != saved {
                    self.notice(false, "recovered unsaved changes from the last session");
                }
                self.set_doc(current, saved, Some(path), first_event);
                if let (true, Some(addr)) = (self.point_sample_at_receiver, self.receiver) {
                    self.point_sample_at_receiver = false;
                    self.point_sample(addr);
                }
            }
            IoDone::OpenFailed { path, error } => {
                self.loading = false;
                self.notice(true, format!("cannot open {}: {error}", path.display()));
                if self.path.is_none() {
                    self.set_doc(Doc::default(), Doc::default(), None, 0);
                }
            }
            IoDone::Saved { path, doc } => {
                self.saved = *doc;
                self.path = Some(path.clone());
                self.notice(false, format!("saved {}", path.display()));
                if self.close_after_save {
                    self.allow_close = true;
                    if let Some(ctx) = &self.ctx {
                        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                    }
                }
            }
            IoDone::SaveFailed { path, error } => {
                self.close_after_save = false;
                self.notice(true, format!("cannot save {}: {error}", path.display()));
            }
            IoDone::Imported {
                name,
                events,
                errors,
            } => {
                let name = self.doc.unique_set_name(&name);
                let kept = events.len();
                self.doc.sets.push(Arc::new(EventSet {
                    name: name.clone(),
                    events,
                }));
                self.selected_set = Some(self.doc.sets.len() - 1);
                self.event_index = 0;
                self.record_edit();
                self.import_report = Some(ImportReport {
                    set: name,
                    kept,
                    errors,
                });
            }
            IoDone::ImportFailed { error } => self.notice(true, error),
            IoDone::RecoveryWritten => {}
        }
    }

    /// First start: the sample destinations send to the built-in receiver.
    fn point_sample(&mut self, addr: std::net::SocketAddr) {
        let from = "http://127.0.0.1:8787";
        let to = format!("http://{addr}");
        let mut changed = false;
        for d in &mut self.doc.destinations {
            if let Some(rest) = d.url.strip_prefix(from) {
                d.url = format!("{to}{rest}");
                changed = true;
            }
        }
        if changed {
            // Part of the first-start workspace, not an edit to undo.
            self.saved = self.doc.clone();
            self.edits.reset(&self.doc);
            if let Some(p) = self.path.clone() {
                self.save_to(p);
            }
        }
    }

    /// Write the recovery file when there is unsaved work not yet written there.
    fn autosave(&mut self) {
        if self.last_recovery.elapsed() < RECOVERY_EVERY || !self.dirty() {
            return;
        }
        if self.recovery_written.as_ref() == Some(&self.doc) {
            return;
        }
        self.last_recovery = Instant::now();
        self.recovery_written = Some(self.doc.clone());
        self.io.write_recovery(
            recovery_path(&self.data_dir),
            self.doc.clone(),
            self.path.clone(),
        );
    }

    /// One frame: drain reports, handle keys, draw the panels, record the edit.
    pub fn frame_ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        if self.ctx.is_none() {
            self.ctx = Some(ctx.clone());
        }
        self.poll();
        self.shortcuts(&ctx);
        self.dropped_files(&ctx);

        egui::Panel::top("toolbar").show(ui, |ui| self.toolbar_ui(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_ui(ui));
        egui::Panel::left("sidebar")
            .resizable(true)
            .default_size(240.0)
            .show(ui, |ui| sidebar::sidebar_ui(self, ui));
        egui::CentralPanel::default().show(ui, |ui| self.main_ui(ui));

        if self.confirm_close {
            self.confirm_close_ui(&ctx);
        }
        self.handle_close(&ctx);
        // Typing in one field is one undo step: the focused widget is the key.
        let key = ctx
            .memory(egui::Memory::focused)
            .map_or_else(String::new, |id| format!("{id:?}"));
        self.edits.record(&self.doc, &key);
        self.autosave();
        self.update_title(&ctx);
        if self.busy() {
            ctx.request_repaint_after(Duration::from_millis(50));
        }
    }

    fn update_title(&mut self, ctx: &egui::Context) {
        let name = self.path.as_deref().and_then(Path::file_name).map_or_else(
            || "untitled".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let title = format!("{}{name} — Hookline", if self.dirty() { "● " } else { "" });
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
    }

    /// The window title as last set.
    pub fn title(&self) -> &str {
        &self.title
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        use egui::{Key, KeyboardShortcut, Modifiers};
        let cmd = |k| KeyboardShortcut::new(Modifiers::COMMAND, k);
        let cmd_shift = |k| KeyboardShortcut::new(Modifiers::COMMAND | Modifiers::SHIFT, k);
        let (save_as, save, redo, undo, open, quit, search) = ctx.input_mut(|i| {
            (
                i.consume_shortcut(&cmd_shift(Key::S)),
                i.consume_shortcut(&cmd(Key::S)),
                i.consume_shortcut(&cmd_shift(Key::Z)) || i.consume_shortcut(&cmd(Key::Y)),
                i.consume_shortcut(&cmd(Key::Z)),
                i.consume_shortcut(&cmd(Key::O)),
                i.consume_shortcut(&cmd(Key::Q)),
                i.consume_shortcut(&cmd(Key::F)),
            )
        });
        if save_as {
            self.save_as();
        } else if save {
            self.save();
        }
        if redo {
            self.redo();
        } else if undo {
            self.undo();
        }
        if open {
            self.open_dialog();
        }
        if quit {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        if search {
            ctx.memory_mut(|m| m.request_focus(egui::Id::new("sidebar-search")));
        }
        // ←/→ step through events when no text field has the keyboard.
        if ctx.memory(egui::Memory::focused).is_none() {
            let (prev, next) = ctx.input(|i| {
                (
                    i.key_pressed(Key::ArrowLeft),
                    i.key_pressed(Key::ArrowRight),
                )
            });
            if prev {
                self.step_event(-1);
            }
            if next {
                self.step_event(1);
            }
        }
    }

    pub fn step_event(&mut self, by: isize) {
        let n = self.event_set().map_or(0, |s| s.events.len());
        if n == 0 {
            return;
        }
        self.event_index = self.event_index.saturating_add_signed(by).min(n - 1);
    }

    fn dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        for f in dropped {
            // The file is read on the import thread, never in the frame.
            self.import(f.path().to_path_buf());
        }
    }

    fn handle_close(&mut self, ctx: &egui::Context) {
        if ctx.input(|i| i.viewport().close_requested()) {
            if self.dirty() && !self.allow_close {
                ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
                self.confirm_close = true;
            } else {
                self.pending_close = true;
            }
        }
    }

    fn confirm_close_ui(&mut self, ctx: &egui::Context) {
        let modal = egui::Modal::new(egui::Id::new("confirm-close")).show(ctx, |ui| {
            ui.heading("Save changes before closing?");
            ui.label("Your unsaved changes are kept in a recovery file until you decide.");
            ui.horizontal(|ui| {
                if ui.button("Save and close").clicked() {
                    self.close_after_save = true;
                    self.confirm_close = false;
                    self.save();
                }
                if ui.button("Close without saving").clicked() {
                    self.confirm_close = false;
                    self.allow_close = true;
                    self.io.remove(recovery_path(&self.data_dir));
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
                if ui.button("Cancel").clicked() {
                    self.confirm_close = false;
                }
            });
        });
        if modal.should_close() {
            self.confirm_close = false;
        }
    }

    fn toolbar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if ui.button("Open…").on_hover_text("Ctrl+O").clicked() {
                self.open_dialog();
            }
            if ui.button("Save").on_hover_text("Ctrl+S").clicked() {
                self.save();
            }
            if ui
                .button("Save as…")
                .on_hover_text("Ctrl+Shift+S")
                .clicked()
            {
                self.save_as();
            }
            ui.separator();
            if ui
                .add_enabled(self.edits.can_undo(), egui::Button::new("Undo"))
                .on_hover_text("Ctrl+Z")
                .clicked()
            {
                self.undo();
            }
            if ui
                .add_enabled(self.edits.can_redo(), egui::Button::new("Redo"))
                .on_hover_text("Ctrl+Shift+Z")
                .clicked()
            {
                self.redo();
            }
            ui.separator();
            ui.selectable_value(&mut self.tab, Tab::Destination, "Destination");
            ui.selectable_value(&mut self.tab, Tab::Mapping, "Mapping");
            ui.selectable_value(&mut self.tab, Tab::Preview, "Preview");
        });
    }

    fn status_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            match self.receiver {
                Some(a) => ui.label(format!("Receiver: http://{a} · {} captured", self.captured)),
                None => ui.label("Receiver: off"),
            };
            ui.separator();
            if self.dirty() {
                ui.label("Unsaved changes");
            } else {
                ui.label("Saved");
            }
            if let Some(n) = self.notices.last() {
                ui.separator();
                let text = egui::RichText::new(&n.text);
                ui.label(if n.error {
                    text.color(ui.visuals().error_fg_color)
                } else {
                    text
                });
                if ui.small_button("Dismiss").clicked() {
                    self.notices.pop();
                }
            }
        });
    }

    fn main_ui(&mut self, ui: &mut egui::Ui) {
        if self.loading {
            ui.spinner();
            ui.label("Opening the workspace…");
            return;
        }
        if self.destination().is_none() {
            ui.heading("No destination");
            ui.label("Create one with “New destination” in the sidebar.");
            return;
        }
        match self.tab {
            Tab::Destination => editor::editor_ui(self, ui),
            Tab::Mapping => mapping::mapping_ui(self, ui),
            Tab::Preview => preview::preview_ui(self, ui),
        }
    }

    /// Whether the window may close now (tests and the close dialog).
    pub fn closing(&self) -> bool {
        self.pending_close
    }
}

impl eframe::App for HooklineApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.frame_ui(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if let Some(p) = &self.path {
            storage.set_string("last_workspace", p.display().to_string());
        }
        if let Some(a) = self.receiver {
            storage.set_string("receiver_port", a.port().to_string());
        }
    }
}

/// A value for a sample secret: random, in the form its use needs (Standard Webhooks
/// keys are `whsec_` + Base64).
fn generated_secret(name: &str, doc: &Doc) -> crate::core::secret::Secret {
    use base64::Engine as _;
    let bytes = uuid::Uuid::new_v4();
    let webhooks = doc.destinations.iter().any(|d| {
        matches!(&d.signing, crate::core::model::Signing::StandardWebhooks { secret } if secret == name)
    });
    crate::core::secret::Secret::new(if webhooks {
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes.as_bytes())
        )
    } else {
        format!("sample-{}", bytes.simple())
    })
}

/// `42 s`, `12 min`, `3 h`.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

/// The recovery file for unsaved work.
pub fn recovery_path(data_dir: &Path) -> PathBuf {
    data_dir.join("recovery.json")
}

/// The app's data directory: `HOOKLINE_DATA_DIR`, or the platform's.
pub fn data_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("HOOKLINE_DATA_DIR") {
        return Ok(PathBuf::from(d));
    }
    directories::ProjectDirs::from("dev", "hookline", "Hookline")
        .map(|p| p.data_dir().to_path_buf())
        .ok_or_else(|| anyhow::anyhow!("no home directory to keep Hookline's data in"))
}

/// Open the app's window. Returns when it closes.
pub fn run() -> anyhow::Result<()> {
    let data_dir = data_dir()?;
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Hookline")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([720.0, 480.0])
            // The app id matches packaging/hookline.desktop.
            .with_app_id("hookline"),
        persistence_path: Some(data_dir.join("app-state.ron")),
        ..Default::default()
    };
    eframe::run_native(
        "Hookline",
        options,
        Box::new(move |cc| {
            let last = cc
                .storage
                .and_then(|s| s.get_string("last_workspace"))
                .map(PathBuf::from);
            let receiver_port = cc
                .storage
                .and_then(|s| s.get_string("receiver_port"))
                .and_then(|p| p.parse().ok());
            let default_ws = data_dir.join("workspace.json");
            // The sample is created only when there is no workspace yet.
            // A last workspace that was moved away: the default one, or a first start.
            let workspace = last
                .filter(|p| p.exists())
                .or_else(|| default_ws.exists().then_some(default_ws));
            let config = AppConfig {
                data_dir: data_dir.clone(),
                workspace,
                secrets: crate::store::keyring::default_secrets().0,
                start_receiver: true,
                receiver_port,
                history: true,
            };
            Ok(Box::new(HooklineApp::new(
                config,
                Arc::new(SystemDialogs),
                &cc.egui_ctx,
            )))
        }),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot open the window: {e} (the commands work without a display: `hookline --help`)"
        )
    })
}

/// A workspace for a first start: the sample destinations and its events.
pub fn sample_workspace(workspace: &str, events: &str) -> Result<Workspace, String> {
    let mut ws =
        crate::store::workspace::parse(workspace, "sample workspace").map_err(|e| e.to_string())?;
    crate::store::workspace::assign_ids(&mut ws);
    let imported = crate::core::import::import_bytes(events.as_bytes(), "sample events")
        .map_err(|e| e.to_string())?;
    let values: Vec<serde_json::Value> = (0..imported.events.len())
        .filter_map(|i| {
            imported
                .events
                .get(i)
                .and_then(Result::ok)
                .map(std::borrow::Cow::into_owned)
        })
        .collect();
    if !values.is_empty() && ws.event_sets.is_empty() {
        ws.event_sets.push(EventSet {
            name: "sample events".into(),
            events: values,
        });
    }
    Ok(ws)
}
