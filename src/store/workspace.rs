//! The workspace file: load (with errors that name the file, line, column and JSON
//! path), version checks and migrations, and atomic, stable saving.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::core::model::{WORKSPACE_VERSION, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}:{line}:{column}: {path}: {message}")]
    Field {
        origin: String,
        line: usize,
        column: usize,
        path: String,
        message: String,
    },
    #[error("{origin}: {message}")]
    Version { origin: String, message: String },
    #[error(
        "{path}: larger than {} (the workspace file limit)",
        crate::core::import::human_size(MAX_WORKSPACE_BYTES)
    )]
    TooLarge { path: String },
}

/// Workspace files larger than this are refused (a workspace is hand-written
/// configuration; this stops `-w /dev/zero` from reading forever).
pub const MAX_WORKSPACE_BYTES: u64 = 64 * 1024 * 1024;

/// Load a workspace file. A UTF-8 byte order mark is ignored; bytes that are not
/// UTF-8 are an error naming their line and column.
pub fn load(path: &Path) -> Result<Workspace, WorkspaceError> {
    let p = path.display().to_string();
    let io = |source| WorkspaceError::Io {
        path: p.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let bytes = match crate::core::import::read_capped(file, MAX_WORKSPACE_BYTES) {
        Ok(b) => b,
        Err(crate::core::import::CappedReadError::Io(e)) => return Err(io(e)),
        Err(crate::core::import::CappedReadError::TooLarge) => {
            return Err(WorkspaceError::TooLarge { path: p.clone() });
        }
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let (line, column) = crate::core::import::line_column(&bytes, e.valid_up_to());
        WorkspaceError::Syntax {
            origin: p.clone(),
            line,
            column,
            message: "not UTF-8 text".into(),
        }
    })?;
    parse(text, &p)
}

/// Give every destination without a stable id (or with one another destination
/// already has, as after a copy and paste) a new UUID. Returns whether any changed.
pub fn assign_ids(ws: &mut Workspace) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut changed = false;
    for d in &mut ws.destinations {
        if d.id.is_empty() || !seen.insert(d.id.clone()) {
            d.id = uuid::Uuid::new_v4().to_string();
            seen.insert(d.id.clone());
            changed = true;
        }
    }
    changed
}

/// [`load`], then give destinations without an id one ([`assign_ids`]) and save the
/// file back so the ids stay: history and cached tokens follow a destination through
/// a rename. If the file cannot be written, the ids given are dropped again (the
/// destinations are then known by name, as before) and the error is returned
/// beside the workspace.
pub fn load_assigning_ids(
    path: &Path,
) -> Result<(Workspace, Option<WorkspaceError>), WorkspaceError> {
    let mut ws = load(path)?;
    let before: Vec<String> = ws.destinations.iter().map(|d| d.id.clone()).collect();
    if !assign_ids(&mut ws) {
        return Ok((ws, None));
    }
    let saved = match with_ids(path, &ws) {
        Some(text) => write_atomic(path, text),
        None => save(path, &ws),
    };
    match saved {
        Ok(()) => Ok((ws, None)),
        Err(e) => {
            for (d, id) in ws.destinations.iter_mut().zip(before) {
                d.id = id;
            }
            Ok((ws, Some(e)))
        }
    }
}

/// Parse workspace text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Workspace, WorkspaceError> {
    // Editors on Windows like to start files with a byte order mark; JSON has none.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value = serde_json::from_str(text).map_err(|e| WorkspaceError::Syntax {
        origin: origin.to_owned(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    let version_err = |message: String| WorkspaceError::Version {
        origin: origin.to_owned(),
        message,
    };
    if !value.is_object() {
        return Err(version_err(format!(
            "a workspace is a JSON object ({{\"version\": 1, \"destinations\": […]}}), not {}",
            match value {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )));
    }
    let version = match value.get("version") {
        None => {
            return Err(version_err(
                "missing \"version\" (this build writes version 1)".into(),
            ));
        }
        Some(v) => v
            .as_u64()
            .ok_or_else(|| version_err(format!("\"version\" must be a whole number, not {v}")))?,
    };
    if version > u64::from(WORKSPACE_VERSION) {
        return Err(version_err(format!(
            "version {version} was written by a newer Hookline; this one reads up to version {WORKSPACE_VERSION}"
        )));
    }
    if version < u64::from(WORKSPACE_VERSION) {
        let migrated = migrate(value, version).map_err(version_err)?;
        return serde_json::from_value(migrated)
            .map_err(|e| version_err(format!("after migrating from version {version}: {e}")));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        WorkspaceError::Field {
            origin: origin.to_owned(),
            line: inner.line(),
            column: inner.column(),
            path,
            message: strip_position(&inner.to_string()),
        }
    })
}

fn strip_position(msg: &str) -> String {
    msg.split(" at line ").next().unwrap_or(msg).to_owned()
}

/// One migration: upgrades a file of version `from` to `from + 1`.
pub type Migration = (u64, fn(Value) -> Result<Value, String>);

/// Every migration, in order. Version 1 is the first released format, so none yet.
pub const MIGRATIONS: &[Migration] = &[];

/// Bring an older file up to [`WORKSPACE_VERSION`], one version at a time.
pub fn migrate(value: Value, from: u64) -> Result<Value, String> {
    migrate_with(value, from, u64::from(WORKSPACE_VERSION), MIGRATIONS)
}

/// The migration chain, with the steps given (so tests can exercise it).
pub fn migrate_with(
    mut value: Value,
    from: u64,
    to: u64,
    steps: &[Migration],
) -> Result<Value, String> {
    let mut v = from;
    while v < to {
        let step = steps.iter().find(|(f, _)| *f == v).ok_or_else(|| {
            format!(
                "version {v} is not supported (no migration to version {})",
                v + 1
            )
        })?;
        value = (step.1)(value).map_err(|e| format!("migrating from version {v}: {e}"))?;
        v += 1;
        if let Some(o) = value.as_object_mut() {
            o.insert("version".into(), Value::from(v));
        }
    }
    Ok(value)
}

/// Save pretty-printed with a trailing newline, atomically: the bytes go to a fresh
/// temporary file in the same directory (flushed to disk, with the old file's
/// permissions), which then replaces `path`. A crash, a full disk or a second save
/// running at the same time never leaves a half-written workspace or a stray temp file.
pub fn save(path: &Path, ws: &Workspace) -> Result<(), WorkspaceError> {
    let text = serde_json::to_string_pretty(ws).map_err(|e| WorkspaceError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, text)
}

/// Write `text` and a trailing newline to `path` atomically (see [`save`]).
fn write_atomic(path: &Path, mut text: String) -> Result<(), WorkspaceError> {
    let p = path.display().to_string();
    text.push('\n');
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("workspace.json");
    let (tmp, mut file) = create_temp(dir, name).map_err(|source| WorkspaceError::Io {
        path: p.clone(),
        source,
    })?;
    let written = (|| {
        file.write_all(text.as_bytes())?;
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        WorkspaceError::Io { path: p, source }
    })
}

/// The file's own JSON with each destination's `id` set (first in its object), so
/// saving ids back changes those lines only: keys, order and omitted defaults stay
/// as the user wrote them. `None` if the file no longer matches `ws`.
fn with_ids(path: &Path, ws: &Workspace) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut value: Value =
        serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text)).ok()?;
    let dests = value.get_mut("destinations")?.as_array_mut()?;
    if dests.len() != ws.destinations.len() {
        return None;
    }
    for (v, d) in dests.iter_mut().zip(&ws.destinations) {
        let o = v.as_object_mut()?;
        if o.get("name").and_then(Value::as_str) != Some(d.name.as_str()) {
            return None;
        }
        if o.get("id").and_then(Value::as_str) != Some(d.id.as_str()) {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), Value::from(d.id.clone()));
            m.extend(std::mem::take(o).into_iter().filter(|(k, _)| k != "id"));
            *o = m;
        }
    }
    serde_json::to_string_pretty(&value).ok()
}

/// A new file `.<name>.<pid>.<n>.tmp` next to the target; `create_new` so two saves
/// (or two processes) never write into the same temporary file.
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let mut attempts = 0;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{pid}.{n}.tmp"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            // A stale file from an earlier process with the same pid: try the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 100 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
