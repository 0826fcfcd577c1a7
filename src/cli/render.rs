//! `hookline render` and `hookline validate`: the exact requests for a file of
//! events, as JSON, cURL commands or raw HTTP, without sending anything.

use std::io::Write as _;
use std::path::PathBuf;

use serde_json::json;

use super::{
    EXIT_FAILED, Target, destination, json_terminal_safe, load_events, load_workspace,
    terminal_safe, terminal_safe_line, warn,
};
use crate::core::export;
use crate::core::render::{CompiledDestination, RenderCtx, Rendered};
use crate::core::secret::Secrets;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Curl,
    Http,
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, short, value_enum, default_value = "json")]
    pub format: Format,
    /// Print secrets and the values derived from them instead of `***`.
    #[arg(long)]
    pub reveal_secrets: bool,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The workspace file.
    #[arg(long, short)]
    pub workspace: PathBuf,
}

pub fn render(args: &RenderArgs, secrets: Secrets) -> anyhow::Result<u8> {
    let ws = load_workspace(&args.target.workspace)?;
    let (_, compiled) = destination(&ws, &args.target.workspace, &args.target.destination)?;
    // Events as `send` holds them (canonical text), through the same entry point.
    let (events, import_errors) = load_events(&args.target.events, true)?;
    let ctx = RenderCtx::new(secrets);
    let shown = |r: crate::core::render::RenderedRequest| {
        if args.reveal_secrets { r } else { r.redacted() }
    };
    // Requests are written as they are rendered: a million events never sit in memory
    // as requests. Skipped events and errors are short and kept for the end.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (mut skipped, mut errors) = (Vec::new(), Vec::new());
    let mut written = 0usize;
    let mut failure: Option<std::io::Error> = None;
    if args.format == Format::Json {
        out.write_all(b"{\n  \"requests\": [")?;
    }
    compiled.render_stream(&events, &ctx, |item| {
        if failure.is_some() {
            return;
        }
        let r = match item {
            Rendered::Request(r) => shown(*r),
            Rendered::Skipped(i, why) => return skipped.push((i, why)),
            Rendered::Error(i, e) => return errors.push((i, e)),
        };
        let res = match args.format {
            Format::Json => write_json_item(&mut out, written, &export::to_json(&r)),
            Format::Curl => writeln!(out, "{}", export::to_curl(&for_terminal(r, tty))),
            Format::Http => writeln!(out, "{}", export::to_http(&for_terminal(r, tty))),
        };
        written += 1;
        if let Err(e) = res {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        return Err(e.into());
    }
    errors.sort_by_key(|(i, _)| *i);
    match args.format {
        Format::Json => {
            out.write_all(if written > 0 { b"\n  ],\n" } else { b"],\n" })?;
            let tail = json!({
                "skipped": skipped.iter().map(|(i, why)| json!({"index": i, "reason": why})).collect::<Vec<_>>(),
                "errors": errors.iter().map(|(i, e)| json!({"index": i, "error": e.to_string()})).collect::<Vec<_>>(),
            });
            let text = serde_json::to_string_pretty(&tail)?;
            // `{ "skipped": …, "errors": … }` without its braces, indented as members.
            let inner = text
                .trim()
                .strip_prefix('{')
                .and_then(|t| t.strip_suffix('}'))
                .unwrap_or("")
                .trim_matches('\n');
            out.write_all(json_terminal_safe(inner).as_bytes())?;
            out.write_all(b"\n}\n")?;
        }
        Format::Curl | Format::Http => {
            for (i, e) in &errors {
                warn(format_args!(
                    "event {i}: {}",
                    terminal_safe_line(&e.to_string())
                ));
            }
        }
    }
    out.flush()?;
    for e in &import_errors {
        warn(e);
    }
    Ok(if errors.is_empty() && import_errors.is_empty() {
        0
    } else {
        EXIT_FAILED
    })
}

/// One element of the `requests` array, pretty-printed and indented in place.
fn write_json_item(
    out: &mut impl std::io::Write,
    index: usize,
    item: &serde_json::Value,
) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(item).map_err(std::io::Error::other)?;
    out.write_all(if index == 0 { b"\n    " } else { b",\n    " })?;
    out.write_all(json_terminal_safe(&text.replace('\n', "\n    ")).as_bytes())
}

/// The request's head (URL, header values) with control characters escaped, and its
/// body too when `body` is set. Rendering refuses controls in header values already;
/// this keeps the terminal safe whatever a later change lets through.
fn for_terminal(
    mut r: crate::core::render::RenderedRequest,
    body: bool,
) -> crate::core::render::RenderedRequest {
    r.url = terminal_safe_line(&r.url).into_owned();
    for (n, v) in &mut r.headers {
        *n = terminal_safe_line(n).into_owned();
        *v = terminal_safe_line(v).into_owned();
    }
    if body && let Some(b) = &mut r.body {
        let text = String::from_utf8_lossy(b);
        if let std::borrow::Cow::Owned(safe) = terminal_safe(&text) {
            *b = safe.into_bytes();
        }
    }
    r
}

pub fn validate(args: &ValidateArgs) -> anyhow::Result<u8> {
    let ws = load_workspace(&args.workspace)?;
    let mut problems = ws.duplicate_destination_names();
    for d in &ws.destinations {
        if let Err(errs) = CompiledDestination::compile(d) {
            problems.extend(errs.iter().map(ToString::to_string));
        }
    }
    problems.extend(ws.duplicate_event_set_names());
    if problems.is_empty() {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}: ok ({} destinations, {} event sets)",
            terminal_safe_line(&args.workspace.display().to_string()),
            ws.destinations.len(),
            ws.event_sets.len()
        )?;
        out.flush()?;
        Ok(0)
    } else {
        Err(super::usage(format!(
            "{}:\n{}",
            args.workspace.display(),
            problems
                .iter()
                .map(|p| format!("  {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )))
    }
}
