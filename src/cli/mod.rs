//! The command line: `render`, `validate`, `send`, `capture`. Errors here are
//! `anyhow` with the file, line or field a user needs; exit codes are the contract:
//! 0 all good, 1 some events failed (the rest were handled), 2 bad workspace, file
//! or argument.

pub mod authorize;
pub mod capture;
pub mod render;
pub mod send;

use std::path::{Path, PathBuf};

use crate::core::events::EventList;
use crate::core::model::{Destination, Workspace};
use crate::core::render::CompiledDestination;
use crate::store::history::History;

/// Exit code for a bad workspace, file or argument.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when some events failed.
pub const EXIT_FAILED: u8 = 1;

/// An error that ends the command with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Which workspace, destination and events a command works on.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The workspace file.
    #[arg(long, short)]
    pub workspace: PathBuf,
    /// The destination's name.
    #[arg(long, short)]
    pub destination: String,
    /// Events: a JSON object, a JSON array, NDJSON or a HAR file.
    #[arg(long, short)]
    pub events: PathBuf,
}

/// The history database at `path` (default: the user's data directory), or none when `off`.
pub fn open_history(path: Option<&Path>, off: bool) -> anyhow::Result<Option<History>> {
    if off {
        return Ok(None);
    }
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => History::default_path().map_err(|e| usage(e.to_string()))?,
    };
    Ok(Some(
        History::open(&path).map_err(|e| usage(e.to_string()))?,
    ))
}

pub fn load_workspace(path: &Path) -> anyhow::Result<Workspace> {
    crate::store::workspace::load(path).map_err(|e| usage(e.to_string()))
}

/// The destination named `name`, compiled; every configuration problem is listed.
pub fn destination(
    ws: &Workspace,
    path: &Path,
    name: &str,
) -> anyhow::Result<(Destination, CompiledDestination)> {
    let Some(d) = ws.destination(name) else {
        let names: Vec<_> = ws.destinations.iter().map(|d| d.name.as_str()).collect();
        return Err(usage(format!(
            "{}: no destination named \"{name}\" (it has: {})",
            path.display(),
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )));
    };
    let compiled = CompiledDestination::compile(d).map_err(|errs| {
        usage(format!(
            "{}:\n{}",
            path.display(),
            errs.iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        ))
    })?;
    Ok((d.clone(), compiled))
}

/// Events from a file (JSON, JSON array, NDJSON, HAR). Bad lines are returned, not fatal.
/// `as_text` keeps events as compact JSON text (large replays).
pub fn load_events(path: &Path, as_text: bool) -> anyhow::Result<(EventList, Vec<String>)> {
    let imported =
        crate::core::import::import_file(path, as_text).map_err(|e| usage(e.to_string()))?;
    let errors = imported
        .errors
        .iter()
        .map(|e| format!("{}: {e}", path.display()))
        .collect();
    Ok((imported.events, errors))
}
