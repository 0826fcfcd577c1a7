//! The workspace file on disk: loading (with version checks and migrations), and
//! saving (pretty, stable, atomic). The shape itself lives in [`crate::core::model`].
//!
//! Users edit this file by hand and keep it in git, so errors point at the exact spot
//! (`workspace.json:12:20: destinations[0].auth.kind: unknown variant …`) and saving is
//! byte-for-byte stable: 2-space indent, struct field order, trailing newline.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::core::model::{WORKSPACE_VERSION, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{file}: cannot {action}: {source}")]
    Io {
        file: String,
        action: &'static str,
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: the workspace must be a JSON object, found {found}")]
    NotAnObject { file: String, found: &'static str },
    #[error("{file}: missing \"version\" (this build writes version {WORKSPACE_VERSION})")]
    MissingVersion { file: String },
    #[error("{file}: \"version\" must be a whole number, found {found}")]
    BadVersion { file: String, found: String },
    #[error(
        "{file}: written by a newer Hookline (workspace version {found}; this build reads up to version {WORKSPACE_VERSION}); upgrade Hookline to open it"
    )]
    TooNew { file: String, found: u64 },
    #[error("{file}: cannot upgrade from workspace version {from}: {message}")]
    Migration {
        file: String,
        from: u32,
        message: String,
    },
    /// Valid JSON that does not fit the model. `position` is absent only for migrated
    /// files, whose text no longer matches what was deserialized.
    #[error("{file}{}: {path}: {message}", position.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Invalid {
        file: String,
        position: Option<(usize, usize)>,
        /// The JSON path, e.g. `destinations[0].auth.kind`; `.` for the top level.
        path: String,
        message: String,
    },
    #[error("{file}: cannot encode the workspace: {message}")]
    Encode { file: String, message: String },
}

/// One migration step: turns a document of version `from` into version `from + 1`.
/// The step edits the JSON; the chain then sets `"version"`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub from: u32,
    pub apply: fn(&mut Value) -> Result<(), String>,
}

/// Every migration this build knows, oldest first. Version 1 is the first format, so
/// there is nothing to migrate yet; when version 2 arrives, add `Migration { from: 1, … }`.
pub const MIGRATIONS: &[Migration] = &[];

/// Read and parse a workspace file. Errors name the file.
pub fn load(path: &Path) -> Result<Workspace, WorkspaceError> {
    let file = display_name(path);
    let text = fs::read_to_string(path).map_err(|source| WorkspaceError::Io {
        file: file.clone(),
        action: "read",
        source,
    })?;
    parse(&text, &file)
}

/// Parse workspace JSON; `origin` (a file name) prefixes every error.
pub fn parse(text: &str, origin: &str) -> Result<Workspace, WorkspaceError> {
    parse_with_migrations(text, origin, MIGRATIONS)
}

/// [`parse`] with an explicit migration chain, so the mechanism can be tested before
/// any real migration exists.
pub fn parse_with_migrations(
    text: &str,
    origin: &str,
    migrations: &[Migration],
) -> Result<Workspace, WorkspaceError> {
    let file = origin.to_owned();
    let value: Value = serde_json::from_str(text).map_err(|e| WorkspaceError::Syntax {
        file: file.clone(),
        line: e.line(),
        column: e.column(),
        message: bare_message(&e),
    })?;
    let version = read_version(&value, &file)?;
    if version > u64::from(WORKSPACE_VERSION) {
        return Err(WorkspaceError::TooNew {
            file,
            found: version,
        });
    }
    if version == u64::from(WORKSPACE_VERSION) {
        // Deserialize from the text, not the Value, so errors carry line and column.
        let mut de = serde_json::Deserializer::from_str(text);
        return serde_path_to_error::deserialize(&mut de).map_err(|e| invalid(&file, &e, true));
    }
    // Lower than current: `read_version` guarantees it fits in u32.
    let from = u32::try_from(version).unwrap_or(0);
    let migrated =
        migrate(value, from, WORKSPACE_VERSION, migrations).map_err(|(from, message)| {
            WorkspaceError::Migration {
                file: file.clone(),
                from,
                message,
            }
        })?;
    serde_path_to_error::deserialize(migrated).map_err(|e| invalid(&file, &e, false))
}

/// Run `migrations` to bring `value` from version `from` to `to`. On failure returns the
/// version whose step failed (or was missing) and why.
pub fn migrate(
    mut value: Value,
    from: u32,
    to: u32,
    migrations: &[Migration],
) -> Result<Value, (u32, String)> {
    for version in from..to {
        let step = migrations
            .iter()
            .find(|m| m.from == version)
            .ok_or_else(|| {
                (
                    version,
                    format!("no migration from version {version} is known"),
                )
            })?;
        (step.apply)(&mut value).map_err(|message| (version, message))?;
        if let Value::Object(map) = &mut value {
            map.insert("version".into(), Value::from(version + 1));
        }
    }
    Ok(value)
}

/// Write `ws` to `path` as pretty JSON with a trailing newline. Atomic: the bytes go to
/// a temporary file in the same directory, which then replaces `path`, so a crash or a
/// full disk never leaves a half-written workspace.
pub fn save(path: &Path, ws: &Workspace) -> Result<(), WorkspaceError> {
    let file = display_name(path);
    let bytes = to_bytes(ws).map_err(|e| WorkspaceError::Encode {
        file: file.clone(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes).map_err(|(action, source)| WorkspaceError::Io {
        file,
        action,
        source,
    })
}

/// The exact bytes [`save`] writes.
pub fn to_bytes(ws: &Workspace) -> Result<Vec<u8>, serde_json::Error> {
    // serde_json's pretty printer indents with two spaces; keys follow struct field order.
    let mut bytes = serde_json::to_vec_pretty(ws)?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), (&'static str, std::io::Error)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "workspace".into(), |n| n.to_string_lossy().into_owned());
    let (tmp_path, mut tmp) = create_temp(&dir, &name).map_err(|e| ("create a file in", e))?;
    let result = (|| {
        tmp.write_all(bytes).map_err(|e| ("write", e))?;
        // Keep the permissions of the file being replaced (e.g. 0600).
        if let Ok(meta) = fs::metadata(path) {
            tmp.set_permissions(meta.permissions())
                .map_err(|e| ("set permissions on", e))?;
        }
        tmp.sync_all().map_err(|e| ("flush", e))?;
        drop(tmp);
        fs::rename(&tmp_path, path).map_err(|e| ("replace", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, fs::File)> {
    let pid = std::process::id();
    let mut last = None;
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = dir.join(format!(".{name}.{pid}.{nanos}.{attempt}.tmp"));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary file name")))
}

fn display_name(path: &Path) -> String {
    path.display().to_string()
}

fn read_version(value: &Value, file: &str) -> Result<u64, WorkspaceError> {
    let Value::Object(map) = value else {
        return Err(WorkspaceError::NotAnObject {
            file: file.to_owned(),
            found: kind(value),
        });
    };
    let v = map
        .get("version")
        .ok_or_else(|| WorkspaceError::MissingVersion {
            file: file.to_owned(),
        })?;
    v.as_u64().ok_or_else(|| WorkspaceError::BadVersion {
        file: file.to_owned(),
        found: v.to_string(),
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message without its trailing " at line L column C".
fn bare_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => full,
    }
}

fn invalid(
    file: &str,
    e: &serde_path_to_error::Error<serde_json::Error>,
    positioned: bool,
) -> WorkspaceError {
    let inner = e.inner();
    WorkspaceError::Invalid {
        file: file.to_owned(),
        position: (positioned && inner.line() > 0).then(|| (inner.line(), inner.column())),
        path: e.path().to_string(),
        message: bare_message(inner),
    }
}
