//! Work the app does off the UI thread: workspace files, imports, the recovery
//! file ([`Io`]), and computations over a whole event set ([`Task`]). Each runs on
//! its own thread and wakes the window when it is done.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use serde_json::Value;

use super::FileDialogs;
use super::state::Doc;
use crate::core::model::Workspace;

/// A computation running on another thread.
pub struct Task<T> {
    rx: mpsc::Receiver<T>,
    result: Option<T>,
    pub started: Instant,
    /// How long it took, once done.
    pub took: Option<std::time::Duration>,
}

impl<T: Send + 'static> Task<T> {
    pub fn spawn(ctx: Option<&egui::Context>, f: impl FnOnce() -> T + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        let ctx = ctx.cloned();
        let spawned = std::thread::Builder::new()
            .name("hookline-task".into())
            .spawn(move || {
                let _ = tx.send(f());
                if let Some(c) = ctx {
                    c.request_repaint();
                }
            });
        if spawned.is_err() {
            // No thread: the task never finishes; `done` stays false and the UI says so.
        }
        Self {
            rx,
            result: None,
            started: Instant::now(),
            took: None,
        }
    }

    /// The result, once there is one (checked without waiting).
    pub fn get(&mut self) -> Option<&T> {
        if self.result.is_none()
            && let Ok(r) = self.rx.try_recv()
        {
            self.result = Some(r);
            self.took = Some(self.started.elapsed());
        }
        self.result.as_ref()
    }

    pub fn done(&self) -> bool {
        self.result.is_some()
    }
}

/// What a file operation came to.
pub enum IoDone {
    Opened {
        path: PathBuf,
        doc: Workspace,
        /// Unsaved work from the recovery file, when it belongs to this workspace.
        recovered: Option<Workspace>,
        /// The event the screens open on (see [`first_sent_event`]).
        first_event: usize,
    },
    OpenFailed {
        path: PathBuf,
        error: String,
    },
    Saved {
        path: PathBuf,
        doc: Box<Doc>,
    },
    SaveFailed {
        path: PathBuf,
        error: String,
    },
    Imported {
        name: String,
        events: Vec<Value>,
        errors: Vec<String>,
    },
    ImportFailed {
        error: String,
    },
    RecoveryWritten,
}

/// The recovery file: unsaved work and the workspace it belongs to.
#[derive(serde::Serialize, serde::Deserialize)]
struct Recovery {
    path: Option<PathBuf>,
    workspace: Workspace,
}

/// File operations on background threads.
pub struct Io {
    tx: mpsc::Sender<IoDone>,
    rx: mpsc::Receiver<IoDone>,
    ctx: egui::Context,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Io {
    pub fn new(ctx: egui::Context) -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            tx,
            rx,
            ctx,
            in_flight: Arc::default(),
        }
    }

    fn spawn(&self, f: impl FnOnce() -> IoDone + Send + 'static) {
        self.spawn_many(move || vec![f()]);
    }

    /// Run `f` on an I/O thread; each result it gives is reported.
    fn spawn_many(&self, f: impl FnOnce() -> Vec<IoDone> + Send + 'static) {
        use std::sync::atomic::Ordering;
        let tx = self.tx.clone();
        let ctx = self.ctx.clone();
        let count = self.in_flight.clone();
        count.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("hookline-io".into())
            .spawn(move || {
                for done in f() {
                    let _ = tx.send(done);
                }
                count.fetch_sub(1, Ordering::SeqCst);
                ctx.request_repaint();
            });
        if let Err(e) = spawned {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = self.tx.send(IoDone::ImportFailed {
                error: format!("cannot start a thread: {e}"),
            });
        }
    }

    pub fn busy(&self) -> bool {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    pub fn poll(&self) -> Vec<IoDone> {
        self.rx.try_iter().collect()
    }

    /// Open a workspace; with `recovery`, pick up unsaved work recorded for it.
    pub fn open(&self, path: PathBuf, recovery: Option<PathBuf>) {
        self.spawn(move || open_file(path, recovery));
    }

    /// Ask for a workspace (the dialog waits on this thread, not in a frame), then open it.
    pub fn open_dialog(&self, dialogs: Arc<dyn FileDialogs>) {
        self.spawn_many(move || {
            dialogs
                .open_workspace()
                .map(|p| open_file(p, None))
                .into_iter()
                .collect()
        });
    }

    /// Ask where to save, then save `doc` there.
    pub fn save_dialog(
        &self,
        dialogs: Arc<dyn FileDialogs>,
        suggested: String,
        doc: Doc,
        recovery: PathBuf,
    ) {
        self.spawn_many(move || {
            dialogs
                .save_workspace(&suggested)
                .map(|p| save_file(p, doc, &recovery))
                .into_iter()
                .collect()
        });
    }

    /// Ask for event files, then import each.
    pub fn import_dialog(&self, dialogs: Arc<dyn FileDialogs>) {
        self.spawn_many(move || {
            dialogs
                .import_events()
                .iter()
                .map(|p| import_file(p))
                .collect()
        });
    }

    /// First start: write the sample workspace (with its events) and open it.
    pub fn first_start(&self, path: PathBuf, workspace: &'static str, events: &'static str) {
        self.spawn(move || {
            let ws = match super::sample_workspace(workspace, events) {
                Ok(ws) => ws,
                Err(error) => return IoDone::OpenFailed { path, error },
            };
            if let Some(dir) = path.parent()
                && let Err(e) = std::fs::create_dir_all(dir)
            {
                return IoDone::OpenFailed {
                    path,
                    error: e.to_string(),
                };
            }
            match crate::store::workspace::save(&path, &ws) {
                Ok(()) => IoDone::Opened {
                    path,
                    first_event: first_sent_event(&ws),
                    doc: ws,
                    recovered: None,
                },
                Err(e) => IoDone::OpenFailed {
                    path,
                    error: e.to_string(),
                },
            }
        });
    }

    pub fn save(&self, path: PathBuf, doc: Doc, recovery: PathBuf) {
        self.spawn(move || save_file(path, doc, &recovery));
    }

    pub fn write_recovery(&self, recovery: PathBuf, doc: Doc, path: Option<PathBuf>) {
        self.spawn(move || {
            let r = Recovery {
                path,
                workspace: doc.to_workspace(),
            };
            if let Ok(text) = serde_json::to_vec(&r) {
                let tmp = recovery.with_extension("json.tmp");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &recovery);
                }
            }
            IoDone::RecoveryWritten
        });
    }

    /// Remove a file (the recovery file, when its work is given up).
    pub fn remove(&self, path: PathBuf) {
        self.spawn(move || {
            let _ = std::fs::remove_file(&path);
            IoDone::RecoveryWritten
        });
    }

    pub fn import(&self, path: PathBuf) {
        self.spawn(move || import_file(&path));
    }
}

/// The first event (of the first 200) of the first set that the first destination
/// would send rather than skip by its trigger, so the screens open on something to see.
/// Worked out here, on the I/O thread, not in a frame.
fn first_sent_event(ws: &Workspace) -> usize {
    let (Some(d), Some(set)) = (ws.destinations.first(), ws.event_sets.first()) else {
        return 0;
    };
    let Ok(c) = crate::core::render::CompiledDestination::compile(d) else {
        return 0;
    };
    let ctx = crate::core::render::RenderCtx::new(crate::core::secret::Secrets::memory(&[]));
    set.events
        .iter()
        .take(200)
        .position(|e| {
            !matches!(
                c.prepare(0, e, &ctx),
                Ok(crate::core::render::Prepared::Skipped(_))
            )
        })
        .unwrap_or(0)
}

fn open_file(path: PathBuf, recovery: Option<PathBuf>) -> IoDone {
    match crate::store::workspace::load_assigning_ids(&path) {
        Ok((doc, _)) => {
            let recovered = recovery.and_then(|r| read_recovery(&r, &path));
            IoDone::Opened {
                path,
                first_event: first_sent_event(recovered.as_ref().unwrap_or(&doc)),
                doc,
                recovered,
            }
        }
        Err(e) => IoDone::OpenFailed {
            path,
            error: e.to_string(),
        },
    }
}

fn save_file(path: PathBuf, doc: Doc, recovery: &std::path::Path) -> IoDone {
    match crate::store::workspace::save(&path, &doc.to_workspace()) {
        Ok(()) => {
            let _ = std::fs::remove_file(recovery);
            IoDone::Saved {
                path,
                doc: Box::new(doc),
            }
        }
        Err(e) => IoDone::SaveFailed {
            path,
            error: e.to_string(),
        },
    }
}

fn import_file(path: &std::path::Path) -> IoDone {
    let name = path.file_stem().map_or_else(
        || "imported".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    );
    match crate::store::import::import_file(path, false) {
        Ok(imported) => imported_done(name, &imported),
        Err(e) => IoDone::ImportFailed {
            error: e.to_string(),
        },
    }
}

fn imported_done(name: String, imported: &crate::core::import::Imported) -> IoDone {
    let mut events = Vec::with_capacity(imported.events.len());
    let mut errors: Vec<String> = imported.errors.iter().map(ToString::to_string).collect();
    for i in 0..imported.events.len() {
        match imported.events.get(i) {
            Some(Ok(v)) => events.push(v.into_owned()),
            Some(Err(e)) => errors.push(e),
            None => {}
        }
    }
    IoDone::Imported {
        name,
        events,
        errors,
    }
}

/// The recovery file's workspace, if it was written for `path`.
fn read_recovery(recovery: &std::path::Path, path: &std::path::Path) -> Option<Workspace> {
    let text = std::fs::read(recovery).ok()?;
    let r: Recovery = serde_json::from_slice(&text).ok()?;
    (r.path.as_deref() == Some(path)).then_some(r.workspace)
}
