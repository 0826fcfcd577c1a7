//! `hookline`: with no subcommand, the desktop app; otherwise
//! one of the subcommands below.

use std::process::ExitCode;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use hookline::cli::{self, UsageError};

#[derive(Parser)]
#[command(
    name = "hookline",
    version,
    about = "A workbench for webhook destinations: map, preview, sign, batch, send and replay customer-data events."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the exact requests a destination would send for a file of events.
    Render(cli::render::RenderArgs),
    /// Check a workspace file: syntax, names, templates, paths, settings.
    Validate(cli::render::ValidateArgs),
    /// Send a file of events through a destination, with retries; resumable.
    Send(cli::send::SendArgs),
    /// Run the capture receiver: record what arrives, optionally failing on purpose.
    Capture(cli::capture::CaptureArgs),
    /// Run a destination's OAuth2 authorization code flow in the browser.
    Authorize(cli::authorize::AuthorizeArgs),
}

/// Secrets from the environment, then the OS keyring (when there is one).
fn secrets() -> hookline::core::secret::Secrets {
    hookline::store::keyring::default_secrets().0
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands whose product is their output stop quietly when stdout is closed
    // (`hookline render … | head -1`); Rust ignores SIGPIPE, so that arrives as EPIPE.
    let output_only = matches!(&cli.command, Some(Cmd::Render(_) | Cmd::Validate(_)));
    let result = match &cli.command {
        None => hookline::ui::run().map(|()| 0),
        Some(Cmd::Render(a)) => cli::render::render(a, secrets()),
        Some(Cmd::Validate(a)) => cli::render::validate(a),
        Some(Cmd::Send(a)) => cli::send::send(a, secrets(), None),
        Some(Cmd::Capture(a)) => cli::capture::capture(a, &secrets()),
        Some(Cmd::Authorize(a)) => cli::authorize::authorize(a, &secrets()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if output_only && cli::stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            cli::warn(format_args!(
                "hookline: {}",
                cli::terminal_safe(&format!("{e:#}"))
            ));
            ExitCode::from(if e.is::<UsageError>() {
                cli::EXIT_USAGE
            } else {
                1
            })
        }
    }
}
