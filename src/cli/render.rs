//! `hookline render` and `hookline validate`: the exact requests for a file of
//! events, as JSON, cURL commands or raw HTTP, without sending anything.

use std::io::Write as _;
use std::path::PathBuf;

use serde_json::json;

use super::{EXIT_FAILED, Target, destination, load_events, load_workspace};
use crate::core::export;
use crate::core::render::{CompiledDestination, RenderCtx};
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
    let report = compiled.render_list(&events, &RenderCtx::new(secrets));
    let shown = |r: &crate::core::render::RenderedRequest| {
        if args.reveal_secrets {
            r.clone()
        } else {
            r.redacted()
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        Format::Json => {
            let doc = json!({
                "requests": report.requests.iter().map(|r| export::to_json(&shown(r))).collect::<Vec<_>>(),
                "skipped": report.skipped.iter().map(|(i, why)| json!({"index": i, "reason": why})).collect::<Vec<_>>(),
                "errors": report.errors.iter().map(|(i, e)| json!({"index": i, "error": e.to_string()})).collect::<Vec<_>>(),
            });
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
        Format::Curl | Format::Http => {
            for r in &report.requests {
                let r = shown(r);
                if args.format == Format::Curl {
                    writeln!(out, "{}", export::to_curl(&r))?;
                } else {
                    writeln!(out, "{}", export::to_http(&r))?;
                }
            }
            for (i, e) in &report.errors {
                eprintln!("event {i}: {e}");
            }
        }
    }
    out.flush()?;
    for e in &import_errors {
        eprintln!("{e}");
    }
    Ok(if report.errors.is_empty() && import_errors.is_empty() {
        0
    } else {
        EXIT_FAILED
    })
}

pub fn validate(args: &ValidateArgs) -> anyhow::Result<u8> {
    let ws = load_workspace(&args.workspace)?;
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, d) in ws.destinations.iter().enumerate() {
        if !seen.insert(d.name.as_str()) {
            problems.push(format!(
                "destinations[{i}]: the name \"{}\" is used twice",
                d.name
            ));
        }
        if let Err(errs) = CompiledDestination::compile(d) {
            problems.extend(errs.iter().map(ToString::to_string));
        }
    }
    let mut sets = std::collections::HashSet::new();
    for (i, s) in ws.event_sets.iter().enumerate() {
        if !sets.insert(s.name.as_str()) {
            problems.push(format!(
                "event_sets[{i}]: the name \"{}\" is used twice",
                s.name
            ));
        }
    }
    if problems.is_empty() {
        println!(
            "{}: ok ({} destinations, {} event sets)",
            args.workspace.display(),
            ws.destinations.len(),
            ws.event_sets.len()
        );
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
