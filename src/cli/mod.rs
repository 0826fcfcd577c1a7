//! The command line: `render`, `validate`, `send`, `capture`. Errors here are
//! `anyhow` with the file, line or field a user needs; exit codes are the contract:
//! 0 all good, 1 some events failed (the rest were handled), 2 bad workspace, file
//! or argument.

/// `eprintln!` for every CLI module: the same formatting, but a failed write to stderr
/// (its reader went away) is ignored instead of panicking as std's macro does. Being
/// defined before the subcommand modules, it shadows std's `eprintln!` in all of them.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod authorize;
pub mod capture;
pub mod render;
pub mod send;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
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

/// Write a line to stderr and ignore a failure: a closed stderr (or one whose reader
/// went away) must never panic the way `eprintln!` does.
pub fn warn(msg: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// Text safe to print on a terminal: C0 and C1 control characters, DEL, ESC and the
/// bidirectional overrides are written as `\u{1b}` so event data cannot move the
/// cursor, retitle the window or reorder what is shown. Newlines, tabs and CR LF pairs
/// are kept (messages and `--format http` have lines); a lone CR is escaped.
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    escape_controls(s, false)
}

/// [`terminal_safe`] for one line: a newline is escaped too.
pub fn terminal_safe_line(s: &str) -> Cow<'_, str> {
    escape_controls(s, true)
}

/// A JSON text made safe for a terminal: `serde_json` escapes the C0 controls but
/// passes DEL, the C1 controls and bidi overrides through; inside strings (the only
/// place they can be) they become `\uXXXX` escapes, so the text is the same JSON.
pub fn json_terminal_safe(json: &str) -> Cow<'_, str> {
    // Raw newlines and tabs in JSON text are layout (pretty-printing), never string content.
    let escape = |c: char| unsafe_char(c) && !matches!(c, '\n' | '\r' | '\t');
    if !json.chars().any(escape) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if escape(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Characters a terminal acts on: controls (C0, DEL, C1) and bidi overrides.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_controls(s: &str, one_line: bool) -> Cow<'_, str> {
    let mut chars = s.chars().peekable();
    let needs = |c: char, next: Option<&char>| {
        unsafe_char(c)
            && !(c == '\t'
                || (c == '\n' && !one_line)
                || (c == '\r' && !one_line && next == Some(&'\n')))
    };
    let mut probe = s.chars().peekable();
    let mut any = false;
    while let Some(c) = probe.next() {
        if needs(c, probe.peek()) {
            any = true;
            break;
        }
    }
    if !any {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    while let Some(c) = chars.next() {
        if needs(c, chars.peek()) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The command failed because stdout was closed (`hookline render … | head -1`):
/// not an error for commands whose only product is their output.
pub fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// `--rate`: requests per second, within the bounds `delivery.rate_limit` has.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("\"{s}\" is not a number"))?;
    crate::core::model::check_rate_limit(r)?;
    Ok(r)
}

/// `--concurrency`: 1 up to the bound `delivery.concurrency` has.
pub fn parse_concurrency(s: &str) -> Result<usize, String> {
    let n: usize = s.trim().parse().map_err(|_| {
        format!(
            "\"{s}\" is not a whole number (1 to {})",
            crate::core::model::limits::MAX_CONCURRENCY
        )
    })?;
    crate::core::model::check_concurrency(n)?;
    Ok(n)
}

/// `--max-attempts`: 1 up to the bound `delivery.max_attempts` has.
pub fn parse_max_attempts(s: &str) -> Result<u32, String> {
    let n: u32 = s.trim().parse().map_err(|_| {
        format!(
            "\"{s}\" is not a whole number (1 to {})",
            crate::core::model::limits::MAX_ATTEMPTS
        )
    })?;
    crate::core::model::check_max_attempts(n)?;
    Ok(n)
}

/// The events-file cap: `HOOKLINE_MAX_IMPORT_MB` when set (tests, small machines),
/// else [`crate::core::import::MAX_IMPORT_BYTES`].
pub fn import_cap() -> anyhow::Result<u64> {
    match std::env::var("HOOKLINE_MAX_IMPORT_MB") {
        Err(_) => Ok(crate::core::import::MAX_IMPORT_BYTES),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(mb) if mb >= 1 => Ok(mb.saturating_mul(1024 * 1024)),
            _ => Err(usage(format!(
                "HOOKLINE_MAX_IMPORT_MB must be a whole number of megabytes (at least 1), not \"{}\"",
                terminal_safe_line(&v)
            ))),
        },
    }
}

pub fn load_workspace(path: &Path) -> anyhow::Result<Workspace> {
    crate::store::workspace::load(path).map_err(|e| usage(e.to_string()))
}

/// [`load_workspace`] for a command that records history: with `keep_ids`,
/// destinations without a stable id get one, saved back to the file (a read-only
/// file only gets a warning: its destinations are then known by name).
pub fn load_workspace_keeping_ids(path: &Path, keep_ids: bool) -> anyhow::Result<Workspace> {
    if !keep_ids {
        return load_workspace(path);
    }
    let (ws, not_saved) =
        crate::store::workspace::load_assigning_ids(path).map_err(|e| usage(e.to_string()))?;
    if let Some(e) = not_saved {
        eprintln!(
            "hookline: warning: cannot save destination ids ({}): history follows destinations by name",
            terminal_safe_line(&e.to_string())
        );
    }
    Ok(ws)
}

/// The destination named `name`, compiled; every configuration problem is listed.
pub fn destination(
    ws: &Workspace,
    path: &Path,
    name: &str,
) -> anyhow::Result<(Destination, CompiledDestination)> {
    let dups = ws.duplicate_destination_names();
    if !dups.is_empty() {
        return Err(usage(format!(
            "{}:\n{}",
            path.display(),
            dups.iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
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

/// Events from a file (JSON, JSON array, NDJSON, HAR). Bad lines are returned, not fatal,
/// as messages safe to print on a terminal (HAR URLs and the like are event data).
/// `as_text` keeps events as compact JSON text (large replays).
pub fn load_events(path: &Path, as_text: bool) -> anyhow::Result<(EventList, Vec<String>)> {
    let imported = crate::store::import::import_file_capped(path, as_text, import_cap()?)
        .map_err(|e| usage(e.to_string()))?;
    let errors = imported
        .errors
        .iter()
        .map(|e| terminal_safe_line(&format!("{}: {e}", path.display())).into_owned())
        .collect();
    Ok((imported.events, errors))
}
